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

        /* LOCAL (health checks) and families the spec says to ignore: the real peer stands. */
        n = v2(buf, 0x20, 0x00, body, 0);
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, 16);
        g_assert_true(h.local);
        n = v2(buf, 0x21, 0x31, body, 64);             /* AF_UNIX */
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, 80);
        g_assert_true(h.local);
        n = v2(buf, 0x21, 0x12, v4, 12);               /* UDP over IPv4 */
        g_assert_cmpint(proxy_header_parse(buf, n, &h, &error), ==, 28);
        g_assert_true(h.local);
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
        return g_test_run();
}
