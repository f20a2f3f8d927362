/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The DNSBL client's parsers on anything: a DNS reply from whoever can reach our UDP port (first
 * byte even), or a --dnsbl value (first byte odd). A reply is read against its own id and one of
 * a few names, the second byte choosing; what parses must be consistent with what it claims. */
#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dnsbl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {
        "2.0.0.127.zen.example",
        "10.2.0.192.a.example",
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example",
        "x",
};

static void fuzz_reply(const uint8_t *data, size_t size) {
        const char *name = names[data[0] % (sizeof names / sizeof names[0])];
        const uint8_t *reply = data + 1;
        size_t len = size - 1;
        uint16_t id = len >= 2 ? (uint16_t) ((reply[0] << 8) | reply[1]) : 0;
        uint8_t query[512];
        int r, q;

        r = dnsbl_parse_reply(reply, len, id, name);
        if (r != 0 && r != 1 && r != 2 && r != -EBADMSG)
                abort();
        if (r >= 0) {
                /* A header and a question at least; a response; and no other id matches. */
                if (len < 12 + 2 + 4 || !(reply[2] & 0x80))
                        abort();
                if (dnsbl_parse_reply(reply, len, (uint16_t) (id + 1), name) != -EBADMSG)
                        abort();
                /* Same bytes, same answer. */
                if (dnsbl_parse_reply(reply, len, id, name) != r)
                        abort();
        }

        /* Our own query is never taken for a reply to itself. */
        q = dnsbl_build_query(query, sizeof query, id, name);
        if (q <= 0 || dnsbl_parse_reply(query, (size_t) q, id, name) != -EBADMSG)
                abort();
}

static void fuzz_config(const uint8_t *data, size_t size) {
        char *spec = g_strndup((const char *) data, size);
        DnsblConfig *c = NULL;
        char *error = NULL;
        int r;

        r = dnsbl_config_parse(spec, "/nonexistent/resolv.conf", &c, &error);
        if (r < 0) {
                if (r != -EINVAL || c || !error || strchr(error, '\n') || strncmp(error, "--dnsbl: ", 9) != 0)
                        abort();
        } else {
                struct sockaddr_in6 peer = { .sin6_family = AF_INET6 };

                if (error || !c || !c->zones || !c->zones[0] || c->timeout_ms == 0)
                        abort();
                if (!(c->server.ss_family == AF_INET && c->server_len == sizeof(struct sockaddr_in)) &&
                    !(c->server.ss_family == AF_INET6 && c->server_len == sizeof(struct sockaddr_in6)))
                        abort();
                /* Every list accepted makes a name that a query can carry, even for IPv6. */
                memset(&peer.sin6_addr, 0xAB, sizeof peer.sin6_addr);
                for (char **z = c->zones; *z; z++) {
                        uint8_t query[512];
                        char *name = NULL;

                        if (dnsbl_reversed_name((struct sockaddr *) &peer, sizeof peer, *z, &name) < 0 ||
                            dnsbl_build_query(query, sizeof query, 1, name) <= 0)
                                abort();
                        g_free(name);
                }
        }
        dnsbl_config_free(c);
        g_free(error);
        g_free(spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        if (data[0] & 1)
                fuzz_config(data + 1, size - 1);
        else if (size >= 2)
                fuzz_reply(data + 1, size - 1);
        return 0;
}
