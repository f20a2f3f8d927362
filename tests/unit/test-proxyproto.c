/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the PROXY protocol header parser: HAProxy's examples for both versions, every
 * prefix of a header (the parser must ask for more, never fail or overrun), and bad headers. */

#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <netinet/in.h>
#include <string.h>

#include "proxyproto.h"

static const uint8_t sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

static char *source_text(const ProxyHeader *h) {
        char host[INET6_ADDRSTRLEN];
        if (h->source.ss_family == AF_INET) {
                const struct sockaddr_in *s = (const struct sockaddr_in *) &h->source;
                inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
                return g_strdup_printf("%s:%u", host, ntohs(s->sin_port));
        }
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *) &h->source;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        return g_strdup_printf("[%s]:%u", host, ntohs(s6->sin6_port));
}

/* Every strict prefix needs more; the whole parses to its own length. */
static void check_prefixes(const uint8_t *buf, size_t len) {
        for (size_t i = 0; i < len; i++) {
                ProxyHeader h = {};
                const char *error = NULL;
                g_assert_cmpint(proxy_header_parse(buf, i, &h, &error), ==, 0);
        }
}

static void test_v1(void) {
        static const struct { const char *line, *source; bool local; } cases[] = {
                { "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n", "192.0.2.10:56324", false },
                { "PROXY TCP6 2001:db8::7 2001:db8::1 4000 587\r\n", "[2001:db8::7]:4000", false },
                { "PROXY UNKNOWN\r\n", NULL, true },
                { "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", NULL, true },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *buf = g_strconcat(cases[i].line, "EHLO x\r\n", NULL);
                ProxyHeader h = {};
                const char *error = NULL;
                check_prefixes((const uint8_t *) cases[i].line, strlen(cases[i].line));
                /* What follows the header is not part of it. */
                g_assert_cmpint(proxy_header_parse((const uint8_t *) buf, strlen(buf), &h, &error), ==,
                                (int) strlen(cases[i].line));
                g_assert_cmpint(h.version, ==, 1);
                g_assert_cmpint(h.local, ==, cases[i].local);
                if (cases[i].source) {
                        g_autofree char *s = source_text(&h);
                        g_assert_cmpstr(s, ==, cases[i].source);
                }
        }
}

static void test_v1_bad(void) {
        static const char *const bad[] = {
                "EHLO x\r\n", "PROXX TCP4", "PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n",
                "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25 9\r\n", "PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
                "PROXY TCP6 192.0.2.10 2001:db8::1 1 2\r\n", "PROXY TCP4 192.0.2.10 198.51.100.1 65536 25\r\n",
                "PROXY TCP4 192.0.2.10 198.51.100.1 -1 25\r\n", "PROXY TCP4 192.0.2.10 198.51.100.1 1 25\n",
                "PROXY UDP4 192.0.2.10 198.51.100.1 1 25\r\n", "PROXY TCP4  192.0.2.10 198.51.100.1 1 25\r\n",
                "PROXY TCP4 192.0.2.10 198.51.100.1 1 25 \r\n",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                ProxyHeader h = {};
                const char *error = NULL;
                g_assert_cmpint(proxy_header_parse((const uint8_t *) bad[i], strlen(bad[i]), &h, &error), ==, -EBADMSG);
                g_assert_nonnull(error);
        }
        /* No line end within 107 bytes. */
        char longline[200];
        memset(longline, 'x', sizeof longline);
        memcpy(longline, "PROXY ", 6);
        ProxyHeader h = {};
        const char *error = NULL;
        g_assert_cmpint(proxy_header_parse((const uint8_t *) longline, 106, &h, &error), ==, 0);
        g_assert_cmpint(proxy_header_parse((const uint8_t *) longline, sizeof longline, &h, &error), ==, -EBADMSG);
        g_assert_cmpstr(error, ==, "PROXY v1 line too long");
}

static size_t v2(uint8_t *buf, uint8_t ver_cmd, uint8_t family, const uint8_t *body, size_t n) {
        memcpy(buf, sig, 12);
        buf[12] = ver_cmd;
        buf[13] = family;
        buf[14] = (uint8_t) (n >> 8);
        buf[15] = (uint8_t) n;
        memcpy(buf + 16, body, n);
        return 16 + n;
}

static void test_v2(void) {
        uint8_t buf[256], body[64] = {};
        ProxyHeader h = {};
        const char *error = NULL;

        /* TCP over IPv4 with a TLV after the addresses (HAProxy sends some). */
        const uint8_t v4[] = { 192, 0, 2, 10, 127, 0, 0, 1, 0xdc, 0x04, 0x00, 0x19, 0x04, 0x00, 0x01, 'x' };
        size_t n = v2(buf, 0x21, 0x11, v4, sizeof v4);
        check_prefixes(buf, n);
        buf[n] = 'E';    /* the client's first byte */
        g_assert_cmpint(proxy_header_parse(buf, n + 1, &h, &error), ==, (int) n);
        g_assert_cmpint(h.version, ==, 2);
        g_assert_false(h.local);
        g_autofree char *s4 = source_text(&h);
        g_assert_cmpstr(s4, ==, "192.0.2.10:56324");

        /* TCP over IPv6. */
        g_assert_cmpint(inet_pton(AF_INET6, "2001:db8::7", body), ==, 1);
        g_assert_cmpint(inet_pton(AF_INET6, "2001:db8::1", body + 16), ==, 1);
        body[32] = 0x0f; body[33] = 0xa0; body[34] = 0x00; body[35] = 0x19;
        n = v2(buf, 0x21, 0x21, body, 36);
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, (int) n);
        g_autofree char *s6 = source_text(&h);
        g_assert_cmpstr(s6, ==, "[2001:db8::7]:4000");

        /* LOCAL (health checks), whatever its block says, and PROXY with UNSPEC: the real
         * peer stands. */
        n = v2(buf, 0x20, 0x00, body, 0);
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, 16);
        g_assert_true(h.local);
        n = v2(buf, 0x20, 0xff, body, 5);
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, 21);
        g_assert_true(h.local);
        n = v2(buf, 0x21, 0x00, body, 0);
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, 16);
        g_assert_true(h.local);
}

/* A header with a CRC32C TLV after the IPv4 addresses; the checksum is over the whole header
 * with the TLV's value zeroed. The value of the standard check vector, "123456789", is
 * 0xe3069283 (RFC 3720, B.4): the test's own CRC is checked against it first. */
static uint32_t crc32c_reference(const uint8_t *p, size_t n) {
        uint32_t c = ~0u;
        while (n--) {
                c ^= *p++;
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
        return ~c;
}

static void test_v2_crc32c(void) {
        uint8_t buf[256], body[19] = { 192, 0, 2, 10, 127, 0, 0, 1, 0xdc, 0x04, 0x00, 0x19, 0x03, 0x00, 0x04 };
        ProxyHeader h = {};
        const char *error = NULL;

        g_assert_cmphex(crc32c_reference((const uint8_t *) "123456789", 9), ==, 0xe3069283u);
        size_t n = v2(buf, 0x21, 0x11, body, sizeof body);
        uint32_t c = crc32c_reference(buf, n);
        buf[n - 4] = (uint8_t) (c >> 24); buf[n - 3] = (uint8_t) (c >> 16);
        buf[n - 2] = (uint8_t) (c >> 8); buf[n - 1] = (uint8_t) c;
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, (int) n);
        g_assert_false(h.local);
        buf[16] ^= 1;                                  /* the client's address changed in transit */
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, -EBADMSG);
        g_assert_cmpstr(error, ==, "PROXY v2 header fails its CRC32C check");
}

/* What the specification says to reject, and what no SMTP client can be. */
static void test_v2_refused(void) {
        uint8_t buf[256], body[240] = {};
        ProxyHeader h = {};
        const char *error = NULL;
        static const struct { uint8_t family; size_t n; const char *why; } cases[] = {
                { 0xff, 12, "PROXY v2 header has an unknown address family or protocol" },
                { 0x41, 12, "PROXY v2 header has an unknown address family or protocol" },
                { 0x13, 12, "PROXY v2 header has an unknown address family or protocol" },
                { 0x31, 216, "PROXY v2 header names a client that is not a TCP connection" },   /* AF_UNIX */
                { 0x12, 12, "PROXY v2 header names a client that is not a TCP connection" },    /* UDP */
                { 0x22, 36, "PROXY v2 header names a client that is not a TCP connection" },
                { 0x01, 0, "PROXY v2 header has an unknown address family or protocol" },       /* UNSPEC, STREAM */
                { 0x10, 12, "PROXY v2 header has an unknown address family or protocol" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                size_t n = v2(buf, 0x21, cases[i].family, body, cases[i].n);
                error = NULL;
                g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, -EBADMSG);
                g_assert_cmpstr(error, ==, cases[i].why);
        }

        /* Malformed TLVs after good IPv4 addresses. */
        static const struct { uint8_t tlv[8]; size_t n; const char *why; } tlvs[] = {
                { { 0x04, 0x00 }, 2, "PROXY v2 header has a truncated TLV" },
                { { 0x04, 0x00, 0x05, 'x' }, 4, "PROXY v2 header has a TLV longer than the header" },
                { { 0x03, 0x00, 0x02, 0, 0 }, 5, "PROXY v2 header has a CRC32C TLV of the wrong size" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(tlvs); i++) {
                memcpy(body + 12, tlvs[i].tlv, tlvs[i].n);
                size_t n = v2(buf, 0x21, 0x11, body, 12 + tlvs[i].n);
                error = NULL;
                g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, -EBADMSG);
                g_assert_cmpstr(error, ==, tlvs[i].why);
        }
}

static void test_v2_bad(void) {
        uint8_t buf[256], body[64] = {};
        ProxyHeader h = {};
        const char *error = NULL;
        size_t n;

        n = v2(buf, 0x11, 0x11, body, 12);             /* version 1 in a v2 block */
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, -EBADMSG);
        n = v2(buf, 0x22, 0x11, body, 12);             /* command 2 */
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, -EBADMSG);
        n = v2(buf, 0x21, 0x11, body, 8);              /* IPv4 block too short */
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, -EBADMSG);
        n = v2(buf, 0x21, 0x21, body, 20);             /* IPv6 block too short */
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, -EBADMSG);
        v2(buf, 0x21, 0x11, body, 0);
        buf[14] = 0xff;                                /* 65 KiB announced */
        g_assert_cmpint(proxy_header_parse(buf, 16, &h, &error), ==, -EBADMSG);
        g_assert_cmpstr(error, ==, "PROXY v2 header too long");
        memcpy(buf, sig, 12);
        buf[5] = 'x';                                  /* signature broken */
        g_assert_cmpint(proxy_header_parse(buf, 12, &h, &error), ==, -EBADMSG);
        g_assert_cmpint(proxy_header_parse(buf, 5, &h, &error), ==, 0);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/proxyproto/v1", test_v1);
        g_test_add_func("/proxyproto/v1-bad", test_v1_bad);
        g_test_add_func("/proxyproto/v2", test_v2);
        g_test_add_func("/proxyproto/v2-bad", test_v2_bad);
        g_test_add_func("/proxyproto/v2-crc32c", test_v2_crc32c);
        g_test_add_func("/proxyproto/v2-refused", test_v2_refused);
        return g_test_run();
}
