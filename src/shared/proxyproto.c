/* SPDX-License-Identifier: GPL-3.0-or-later */
/* PROXY protocol header parsing (see proxyproto.h). Written from HAProxy's specification,
 * proxy-protocol.txt: version 1 is one text line, version 2 a binary block with a signature. */

#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <netinet/in.h>
#include <string.h>

#include "macro.h"
#include "proxyproto.h"

#define V1_MAX 107                        /* "PROXY UNKNOWN" + the longest TCP6 line + CRLF */

static const uint8_t v2_signature[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

static int fail(const char **error, const char *why) {
        if (error)
                *error = why;
        return -EBADMSG;
}

/* One decimal port, 0-65535, at most 5 digits. */
static bool parse_port(const char *s, uint16_t *ret) {
        unsigned v = 0;
        size_t n = strlen(s);
        if (n == 0 || n > 5)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v > 65535)
                return false;
        *ret = (uint16_t) v;
        return true;
}

static int parse_v1(const uint8_t *buf, size_t len, ProxyHeader *ret, const char **error) {
        const uint8_t *end = memchr(buf, '\n', MIN(len, (size_t) V1_MAX));
        if (!end)
                return len >= V1_MAX ? fail(error, "PROXY v1 line too long") : 0;
        size_t n = (size_t) (end - buf) + 1;
        if (n < 2 || buf[n - 2] != '\r')
                return fail(error, "PROXY v1 line not ended by CRLF");

        char line[V1_MAX + 1];
        memcpy(line, buf, n - 2);
        line[n - 2] = '\0';
        if (memchr(line, '\0', n - 2))
                return fail(error, "PROXY v1 line contains NUL");

        /* "PROXY" SP proto [SP src SP dst SP sport SP dport] */
        char *fields[6];
        size_t k = 0;
        char *p = line;
        for (;;) {
                char *sp = strchr(p, ' ');
                if (k == ELEMENTSOF(fields))
                        break;
                fields[k++] = p;
                if (!sp)
                        break;
                *sp = '\0';
                p = sp + 1;
        }
        ret->version = 1;
        if (k >= 2 && streq(fields[1], "UNKNOWN")) {
                /* The rest of the line is to be ignored. */
                ret->local = true;
                return (int) n;
        }
        if (k != 6 || p != fields[5])
                return fail(error, "PROXY v1 line does not have 6 fields");
        uint16_t sport, dport;
        if (!parse_port(fields[4], &sport) || !parse_port(fields[5], &dport))
                return fail(error, "PROXY v1 port is not a number from 0 to 65535");

        memset(&ret->source, 0, sizeof ret->source);
        if (streq(fields[1], "TCP4")) {
                struct sockaddr_in *sin = (struct sockaddr_in *) &ret->source;
                struct in_addr dst;
                if (inet_pton(AF_INET, fields[2], &sin->sin_addr) != 1 || inet_pton(AF_INET, fields[3], &dst) != 1)
                        return fail(error, "PROXY v1 TCP4 address is not an IPv4 address");
                sin->sin_family = AF_INET;
                sin->sin_port = htons(sport);
                ret->source_len = sizeof *sin;
        } else if (streq(fields[1], "TCP6")) {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ret->source;
                struct in6_addr dst;
                if (inet_pton(AF_INET6, fields[2], &sin6->sin6_addr) != 1 || inet_pton(AF_INET6, fields[3], &dst) != 1)
                        return fail(error, "PROXY v1 TCP6 address is not an IPv6 address");
                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons(sport);
                ret->source_len = sizeof *sin6;
        } else
                return fail(error, "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN");
        ret->local = false;
        return (int) n;
}

/* CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), for the PP2_TYPE_CRC32C TLV. */
static uint32_t crc32c(const uint8_t *p, size_t n) {
        uint32_t c = 0xffffffffu;
        for (size_t i = 0; i < n; i++) {
                c ^= p[i];
                for (int k = 0; k < 8; k++)
                        c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
        }
        return ~c;
}

/* The TLVs after the address block: each whole, and a CRC32C one (type 0x03) matching the
 * header it is in, computed with its own value zeroed, as the specification says. */
static int check_tlvs(const uint8_t *buf, size_t n, size_t at, const char **error) {
        while (at < n) {
                if (n - at < 3)
                        return fail(error, "PROXY v2 header has a truncated TLV");
                uint8_t type = buf[at];
                size_t len = (size_t) buf[at + 1] << 8 | buf[at + 2];
                if (len > n - at - 3)
                        return fail(error, "PROXY v2 header has a TLV longer than the header");
                if (type == 0x03) {
                        if (len != 4)
                                return fail(error, "PROXY v2 header has a CRC32C TLV of the wrong size");
                        uint8_t copy[PROXY_HEADER_MAX];
                        memcpy(copy, buf, n);
                        memset(copy + at + 3, 0, 4);
                        uint32_t want = (uint32_t) buf[at + 3] << 24 | (uint32_t) buf[at + 4] << 16 |
                                        (uint32_t) buf[at + 5] << 8 | buf[at + 6];
                        if (crc32c(copy, n) != want)
                                return fail(error, "PROXY v2 header fails its CRC32C check");
                }
                at += 3 + len;
        }
        return 0;
}

static int parse_v2(const uint8_t *buf, size_t len, ProxyHeader *ret, const char **error) {
        if (len < 16)
                return 0;
        if ((buf[12] >> 4) != 2)
                return fail(error, "PROXY v2 header has an unknown version");
        size_t body = (size_t) buf[14] << 8 | buf[15];
        size_t n = 16 + body;
        if (n > PROXY_HEADER_MAX)
                return fail(error, "PROXY v2 header too long");
        if (len < n)
                return 0;

        ret->version = 2;
        ret->local = true;
        unsigned command = buf[12] & 0x0f;
        if (command == 0x0)                     /* LOCAL: the balancer's own health check; the */
                return (int) n;                 /* rest of the block is to be ignored */
        if (command != 0x1)
                return fail(error, "PROXY v2 header has an unknown command");

        /* UNSPEC, then TCP, UDP and unix stream and datagram over each family: other values
         * must be rejected. Of these a mail relay takes TCP and UNSPEC (the real connection's
         * address stands); a datagram or a unix-socket client cannot have made an SMTP
         * connection, so such a header is refused too. */
        if (!memchr("\x00\x11\x12\x21\x22\x31\x32", buf[13], 7))
                return fail(error, "PROXY v2 header has an unknown address family or protocol");
        const uint8_t *a = buf + 16;
        size_t addresses = 0;
        memset(&ret->source, 0, sizeof ret->source);
        switch (buf[13]) {
        case 0x00:                              /* UNSPEC: the real connection's address */
                break;
        case 0x11: {                            /* TCP over IPv4: src, dst, sport, dport */
                struct sockaddr_in *sin = (struct sockaddr_in *) &ret->source;
                if (body < 12)
                        return fail(error, "PROXY v2 IPv4 address block too short");
                sin->sin_family = AF_INET;
                memcpy(&sin->sin_addr, a, 4);
                memcpy(&sin->sin_port, a + 8, 2);
                ret->source_len = sizeof *sin;
                ret->local = false;
                addresses = 12;
                break;
        }
        case 0x21: {                            /* TCP over IPv6 */
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ret->source;
                if (body < 36)
                        return fail(error, "PROXY v2 IPv6 address block too short");
                sin6->sin6_family = AF_INET6;
                memcpy(&sin6->sin6_addr, a, 16);
                memcpy(&sin6->sin6_port, a + 32, 2);
                ret->source_len = sizeof *sin6;
                ret->local = false;
                addresses = 36;
                break;
        }
        default:
                return fail(error, "PROXY v2 header names a client that is not a TCP connection");
        }
        int r = check_tlvs(buf, n, 16 + addresses, error);
        if (r < 0) {
                ret->local = true;
                return r;
        }
        return (int) n;
}

int proxy_header_parse(const uint8_t *buf, size_t len, ProxyHeader *ret, const char **error) {
        static const char v1_prefix[] = "PROXY ";

        if (len == 0)
                return 0;
        if (buf[0] == 'P') {
                size_t k = MIN(len, sizeof v1_prefix - 1);
                if (memcmp(buf, v1_prefix, k) != 0)
                        return fail(error, "not a PROXY protocol header");
                return k < sizeof v1_prefix - 1 ? 0 : parse_v1(buf, len, ret, error);
        }
        size_t k = MIN(len, sizeof v2_signature);
        if (memcmp(buf, v2_signature, k) != 0)
                return fail(error, "not a PROXY protocol header");
        return parse_v2(buf, len, ret, error);
}
