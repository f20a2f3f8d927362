/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the DNSBL client: --dnsbl parsing in both forms, the names looked up, DNS queries
 * and replies byte by byte (malformed ones too), and whole checks against a DNS server played
 * by the test on the same sd-event loop. */

#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "dnsbl.h"
#include "macro.h"

static char *tmpdir;
static sd_event *event;

/* ---- helpers ---- */

static struct sockaddr_storage ip(const char *text, uint16_t port, socklen_t *ret_len) {
        struct sockaddr_storage ss = {};

        if (strchr(text, ':')) {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &ss;

                s6->sin6_family = AF_INET6;
                s6->sin6_port = htons(port);
                g_assert_cmpint(inet_pton(AF_INET6, text, &s6->sin6_addr), ==, 1);
                *ret_len = sizeof(*s6);
        } else {
                struct sockaddr_in *s4 = (struct sockaddr_in *) &ss;

                s4->sin_family = AF_INET;
                s4->sin_port = htons(port);
                g_assert_cmpint(inet_pton(AF_INET, text, &s4->sin_addr), ==, 1);
                *ret_len = sizeof(*s4);
        }
        return ss;
}

/* "1.2.3.4:53" or "[::1]:53". */
static char *server_text(const DnsblConfig *c) {
        char host[INET6_ADDRSTRLEN];

        if (c->server.ss_family == AF_INET) {
                const struct sockaddr_in *s4 = (const struct sockaddr_in *) &c->server;

                g_assert_cmpuint(c->server_len, ==, sizeof(*s4));
                inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
                return g_strdup_printf("%s:%u", host, ntohs(s4->sin_port));
        }
        g_assert_cmpint(c->server.ss_family, ==, AF_INET6);
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *) &c->server;

        g_assert_cmpuint(c->server_len, ==, sizeof(*s6));
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        return g_strdup_printf("[%s]:%u", host, ntohs(s6->sin6_port));
}

static char *resolv_conf(const char *text) {
        char *path = g_build_filename(tmpdir, "resolv.conf", NULL);
        g_autoptr(GError) error = NULL;

        g_assert_true(g_file_set_contents(path, text, -1, &error));
        return path;
}

static DnsblConfig *parse_ok(const char *spec, const char *resolv) {
        DnsblConfig *c = NULL;
        g_autofree char *error = NULL;

        if (dnsbl_config_parse(spec, resolv, &c, &error) < 0)
                g_error("\"%s\": %s", spec, error);
        g_assert_null(error);
        g_assert_nonnull(c);
        return c;
}

static void assert_config(const char *spec, const char *zones, unsigned threshold, unsigned timeout_ms,
                          bool block_on_timeout, const char *server) {
        g_autofree char *resolv = resolv_conf("# none here\nsearch example.net\n");
        DnsblConfig *c = parse_ok(spec, resolv);
        g_autofree char *joined = g_strjoinv(",", c->zones);
        g_autofree char *s = server_text(c);

        g_assert_cmpstr(joined, ==, zones);
        g_assert_cmpuint(c->threshold, ==, threshold);
        g_assert_cmpuint(c->timeout_ms, ==, timeout_ms);
        g_assert_cmpint(c->block_on_timeout, ==, block_on_timeout);
        g_assert_cmpstr(s, ==, server);
        dnsbl_config_free(c);
}

static void assert_config_error(const char *spec, const char *expected) {
        DnsblConfig *c = NULL;
        g_autofree char *error = NULL;

        g_assert_cmpint(dnsbl_config_parse(spec, "/nonexistent/resolv.conf", &c, &error), ==, -EINVAL);
        g_assert_null(c);
        g_assert_nonnull(error);
        g_assert_null(strchr(error, '\n'));
        if (expected)
                g_assert_cmpstr(error, ==, expected);
        else
                g_assert_true(g_str_has_prefix(error, "--dnsbl: "));
}

/* ---- configuration ---- */

static void test_config_new_form(void) {
        assert_config("zen.example", "zen.example", 1, 5000, false, "127.0.0.1:53");
        assert_config("a.example,b.example", "a.example,b.example", 1, 5000, false, "127.0.0.1:53");
        assert_config("a.example,b.example,2", "a.example,b.example", 2, 5000, false, "127.0.0.1:53");
        assert_config("a.example,0,250", "a.example", 0, 250, false, "127.0.0.1:53");
        assert_config("a.example,1,-3000", "a.example", 1, 3000, true, "127.0.0.1:53");
        assert_config("a.example,b.example,2,3000,192.0.2.53:5353", "a.example,b.example", 2, 3000, false,
                      "192.0.2.53:5353");
        /* Spaces around fields, a final dot, a port-less server. */
        assert_config(" a.example. , 1 , 100 , 192.0.2.53 ", "a.example", 1, 100, false, "192.0.2.53:53");
        /* IPv6 servers: bracketed with or without a port; unbracketed is one whole address. */
        assert_config("a.example,1,100,[2001:db8::53]:5353", "a.example", 1, 100, false, "[2001:db8::53]:5353");
        assert_config("a.example,1,100,[::1]", "a.example", 1, 100, false, "[::1]:53");
        assert_config("a.example,1,100,::1", "a.example", 1, 100, false, "[::1]:53");
        assert_config("a.example,1,100,2001:db8::1:53", "a.example", 1, 100, false, "[2001:db8::1:53]:53");
        /* A numeric label inside a zone is fine, only the last one counts. */
        assert_config("127.0.0.2.example,1", "127.0.0.2.example", 1, 5000, false, "127.0.0.1:53");
}

static void test_config_old_form(void) {
        assert_config("127.0.0.1:53,2000,2,a.example,b.example", "a.example,b.example", 2, 2000, false, "127.0.0.1:53");
        assert_config("192.0.2.53:5353,-1000,1,a.example", "a.example", 1, 1000, true, "192.0.2.53:5353");
        assert_config("192.0.2.53,1000,0,a.example", "a.example", 0, 1000, false, "192.0.2.53:53");
        assert_config("[2001:db8::53]:53,1000,1,a.example", "a.example", 1, 1000, false, "[2001:db8::53]:53");
}

static void test_config_resolv_conf(void) {
        g_autofree char *path = NULL;
        DnsblConfig *c;
        char *s;

        path = resolv_conf("# comment\nsearch example.net\nnameserver   192.0.2.53\nnameserver 192.0.2.54\n");
        c = parse_ok("a.example", path);
        s = server_text(c);
        g_assert_cmpstr(s, ==, "192.0.2.53:53");
        g_free(s);
        dnsbl_config_free(c);
        g_free(path);

        /* An unusable line is skipped; IPv6 works. */
        path = resolv_conf("nameserver bogus\nnameserver\tfd00::53\n");
        c = parse_ok("a.example", path);
        s = server_text(c);
        g_assert_cmpstr(s, ==, "[fd00::53]:53");
        g_free(s);
        dnsbl_config_free(c);

        /* No file: 127.0.0.1:53. An explicit server wins over the file. */
        c = parse_ok("a.example", "/nonexistent/resolv.conf");
        s = server_text(c);
        g_assert_cmpstr(s, ==, "127.0.0.1:53");
        g_free(s);
        dnsbl_config_free(c);
        c = parse_ok("a.example,1,100,192.0.2.1:99", path);
        s = server_text(c);
        g_assert_cmpstr(s, ==, "192.0.2.1:99");
        g_free(s);
        dnsbl_config_free(c);
}

static void test_config_errors(void) {
        g_autofree char *long_zone = NULL;
        g_autoptr(GString) many = g_string_new(NULL);

        assert_config_error("", "--dnsbl: no lists given");
        assert_config_error(NULL, "--dnsbl: no lists given");
        assert_config_error("a.example,1,abc", "--dnsbl: \"abc\" is not a valid timeout");
        assert_config_error("a.example,1,0", "--dnsbl: \"0\" is not a valid timeout");
        assert_config_error("a.example,1,-0", "--dnsbl: \"-0\" is not a valid timeout");
        assert_config_error("a.example,1,3600001", "--dnsbl: \"3600001\" is not a valid timeout");
        assert_config_error("a.example,1,--5", "--dnsbl: \"--5\" is not a valid timeout");
        assert_config_error("a.example,-1", "--dnsbl: \"-1\" is not a valid threshold");
        assert_config_error("a.example,99999999999999999999", "--dnsbl: \"99999999999999999999\" is not a valid threshold");
        assert_config_error("a.example,1,1000,dns.example:53",
                            "--dnsbl: \"dns.example:53\" is not a valid DNS server address "
                            "(a numeric address, with an optional port)");
        assert_config_error("a.example,1,1000,192.0.2.1:0", NULL);
        assert_config_error("a.example,1,1000,192.0.2.1:65536", NULL);
        assert_config_error("a.example,1,1000,[192.0.2.1]:53", NULL);
        assert_config_error("a.example,1,1000,[::1", NULL);
        assert_config_error("a.example,1,1000,[::1]x", NULL);
        assert_config_error("a.example,1,1000,127.0.0.1:53,b.example",
                            "--dnsbl: unexpected \"b.example\" after the DNS server (the lists come first)");
        assert_config_error("a.example,,1", "--dnsbl: empty field in \"a.example,,1\"");
        assert_config_error("a.example,", NULL);
        assert_config_error("a..example", "--dnsbl: \"a..example\" is not a valid list name");
        assert_config_error("bad!zone.example", "--dnsbl: \"bad!zone.example\" is not a valid list name");
        assert_config_error(".", "--dnsbl: \".\" is not a valid list name");
        /* Old form: too short, a bad list, a bad number. */
        assert_config_error("127.0.0.1:53,1000,1", NULL);
        assert_config_error("127.0.0.1:53,1000,1,a.example,bad zone", "--dnsbl: \"bad zone\" is not a valid list name");
        assert_config_error("127.0.0.1:53,soon,1,a.example", "--dnsbl: \"soon\" is not a valid timeout");
        assert_config_error("dns.example:53,1000,1,a.example", NULL);
        /* Control characters do not break the message's line. */
        assert_config_error("a.exa\nmple,1", "--dnsbl: \"a.exa\\x0ample\" is not a valid list name");
        assert_config_error("a.example,1,\t5\r\n7", "--dnsbl: \"5\\x0d\\x0a7\" is not a valid timeout");
        /* A number alone is no list. */
        assert_config_error("5", NULL);

        /* A zone long enough that a reversed IPv6 address no longer fits under it. */
        long_zone = g_strdup_printf("%060d.%060d.%060d.example", 1, 2, 3);
        assert_config_error(long_zone, NULL);
        /* 189 characters fit. */
        long_zone[strlen(long_zone) - 1] = '\0';
        g_assert_cmpuint(strlen(long_zone), ==, 189);
        dnsbl_config_free(parse_ok(long_zone, NULL));
        /* A label of 64. */
        assert_config_error("a234567890123456789012345678901234567890123456789012345678901234.example", NULL);
        for (unsigned i = 0; i < 65; i++)
                g_string_append_printf(many, "%sz%u.example", i ? "," : "", i);
        assert_config_error(many->str, "--dnsbl: more than 64 lists");
}

/* ---- addresses ---- */

static void assert_applies(const char *text, bool expected) {
        socklen_t len;
        struct sockaddr_storage ss = ip(text, 25, &len);

        if (dnsbl_applies((struct sockaddr *) &ss, len) != expected)
                g_error("dnsbl_applies(%s) is not %d", text, expected);
}

static void test_applies(void) {
        struct sockaddr_un un = { .sun_family = AF_UNIX, .sun_path = "/run/x" };
        socklen_t len;
        struct sockaddr_storage ss;

        assert_applies("192.0.2.10", true);
        assert_applies("198.51.100.7", true);
        assert_applies("8.8.8.8", true);
        assert_applies("2001:db8::1", true);
        assert_applies("::ffff:192.0.2.10", true);

        assert_applies("127.0.0.1", false);
        assert_applies("127.1.2.3", false);
        assert_applies("10.1.2.3", false);
        assert_applies("172.16.0.1", false);
        assert_applies("172.31.255.255", false);
        assert_applies("192.168.1.1", false);
        assert_applies("169.254.1.1", false);
        assert_applies("::1", false);
        assert_applies("fe80::1", false);
        assert_applies("fd00::1", false);
        assert_applies("fc00::1", false);
        assert_applies("::ffff:10.0.0.1", false);
        assert_applies("::ffff:127.0.0.1", false);
        g_assert_false(dnsbl_applies((struct sockaddr *) &un, sizeof(un)));
        g_assert_false(dnsbl_applies(NULL, 0));
        /* Too short for its family. */
        ss = ip("192.0.2.10", 25, &len);
        g_assert_false(dnsbl_applies((struct sockaddr *) &ss, len - 1));
}

static void assert_reversed(const char *text, const char *zone, const char *expected) {
        socklen_t len;
        struct sockaddr_storage ss = ip(text, 25, &len);
        g_autofree char *name = NULL;

        g_assert_cmpint(dnsbl_reversed_name((struct sockaddr *) &ss, len, zone, &name), ==, 0);
        g_assert_cmpstr(name, ==, expected);
}

static void test_reversed_name(void) {
        struct sockaddr_un un = { .sun_family = AF_UNIX, .sun_path = "/run/x" };
        char *name = NULL;

        assert_reversed("192.0.2.10", "zen.example", "10.2.0.192.zen.example");
        assert_reversed("1.2.3.4", "a.b", "4.3.2.1.a.b");
        assert_reversed("::ffff:192.0.2.10", "zen.example", "10.2.0.192.zen.example");
        assert_reversed("2001:db8::1", "zen.example",
                        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example");
        assert_reversed("2001:db8:abcd:12::ff00", "x.example",
                        "0.0.f.f.0.0.0.0.0.0.0.0.0.0.0.0.2.1.0.0.d.c.b.a.8.b.d.0.1.0.0.2.x.example");
        g_assert_cmpint(dnsbl_reversed_name((struct sockaddr *) &un, sizeof(un), "z", &name), ==, -EAFNOSUPPORT);
        g_assert_null(name);
}

/* ---- DNS messages ---- */

#define NAME "10.2.0.192.zen.example"
#define ID 0x1234

static const uint8_t expected_query[] = {
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        2, '1', '0', 1, '2', 1, '0', 3, '1', '9', '2', 3, 'z', 'e', 'n', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0,
        0x00, 0x01, 0x00, 0x01,
};

static void test_build_query(void) {
        uint8_t buf[600];
        g_autofree char *long_label = g_strnfill(64, 'a');
        g_autoptr(GString) long_name = g_string_new(NULL);
        int n;

        n = dnsbl_build_query(buf, sizeof(buf), ID, NAME);
        g_assert_cmpint(n, ==, sizeof(expected_query));
        g_assert_cmpmem(buf, n, expected_query, sizeof(expected_query));
        /* A final dot changes nothing. */
        n = dnsbl_build_query(buf, sizeof(buf), ID, NAME ".");
        g_assert_cmpmem(buf, n, expected_query, sizeof(expected_query));
        /* Exactly big enough, one byte short. */
        g_assert_cmpint(dnsbl_build_query(buf, sizeof(expected_query), ID, NAME), ==, sizeof(expected_query));
        g_assert_cmpint(dnsbl_build_query(buf, sizeof(expected_query) - 1, ID, NAME), ==, -ENOBUFS);

        g_assert_cmpint(dnsbl_build_query(buf, sizeof(buf), ID, long_label), ==, -ENAMETOOLONG);
        long_label[63] = '\0';
        g_assert_cmpint(dnsbl_build_query(buf, sizeof(buf), ID, long_label), ==, 12 + 65 + 4);
        g_assert_cmpint(dnsbl_build_query(buf, sizeof(buf), ID, "a..b"), ==, -ENAMETOOLONG);
        g_assert_cmpint(dnsbl_build_query(buf, sizeof(buf), ID, ".a"), ==, -ENAMETOOLONG);
        g_assert_cmpint(dnsbl_build_query(buf, sizeof(buf), ID, "a.."), ==, -ENAMETOOLONG);
        g_assert_cmpint(dnsbl_build_query(buf, sizeof(buf), ID, ""), ==, -ENAMETOOLONG);
        /* 253 characters fit (255 on the wire), 255 do not. */
        while (long_name->len < 253)
                g_string_append(long_name, long_name->len + 2 < 253 ? "a." : "a");
        g_assert_cmpuint(long_name->len, ==, 253);
        g_assert_cmpint(dnsbl_build_query(buf, sizeof(buf), ID, long_name->str), ==, 12 + 255 + 4);
        g_string_append(long_name, ".a");
        g_assert_cmpint(dnsbl_build_query(buf, sizeof(buf), ID, long_name->str), ==, -ENAMETOOLONG);
}

/* A reply to expected_query, made up piece by piece. */
typedef struct Reply {
        uint8_t b[1024];
        size_t n;
} Reply;

static void reply_start(Reply *r, uint16_t flags, uint16_t n_answers) {
        memcpy(r->b, expected_query, sizeof(expected_query));
        r->n = sizeof(expected_query);
        r->b[2] = (uint8_t) (flags >> 8);
        r->b[3] = (uint8_t) flags;
        r->b[6] = (uint8_t) (n_answers >> 8);
        r->b[7] = (uint8_t) n_answers;
}

static void reply_add(Reply *r, const void *data, size_t n) {
        g_assert_cmpuint(r->n + n, <=, sizeof(r->b));
        memcpy(r->b + r->n, data, n);
        r->n += n;
}

/* An answer owned by the question's name (a pointer to offset 12). */
static void reply_add_rr(Reply *r, uint16_t type, const void *rdata, uint16_t rdlength) {
        const uint8_t head[] = { 0xC0, 0x0C, type >> 8, type & 0xFF, 0x00, 0x01, 0, 0, 0x0E, 0x10, rdlength >> 8,
                                 rdlength & 0xFF };

        reply_add(r, head, sizeof(head));
        reply_add(r, rdata, rdlength);
}

static void reply_add_a(Reply *r, uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
        const uint8_t addr[] = { a, b, c, d };

        reply_add_rr(r, 1, addr, 4);
}

static int parse(const Reply *r) {
        return dnsbl_parse_reply(r->b, r->n, ID, NAME);
}

static void test_parse_reply(void) {
        Reply r;

        /* Listed: 127.0.0.2. With a TXT record first, and a non-127 A beside. */
        reply_start(&r, 0x8180, 1);
        reply_add_a(&r, 127, 0, 0, 2);
        g_assert_cmpint(parse(&r), ==, 1);
        /* The same name asked in another case, or with a final dot. */
        g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, ID, "10.2.0.192.ZEN.Example"), ==, 1);
        g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, ID, NAME "."), ==, 1);
        /* Wrong id, wrong name. */
        g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, ID + 1, NAME), ==, -EBADMSG);
        g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, ID, "11.2.0.192.zen.example"), ==, -EBADMSG);
        g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, ID, "10.2.0.192.zen.example.org"), ==, -EBADMSG);
        g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, ID, "2.0.192.zen.example"), ==, -EBADMSG);
        /* Trailing bytes (an authority section we do not read) are fine. */
        reply_add(&r, "\0\0\0", 3);
        g_assert_cmpint(parse(&r), ==, 1);

        reply_start(&r, 0x8180, 3);
        reply_add_rr(&r, 16, "\x06listed", 7);
        reply_add_a(&r, 192, 0, 2, 1);
        reply_add_a(&r, 127, 0, 0, 4);
        g_assert_cmpint(parse(&r), ==, 1);

        /* Spamhaus's refusals (127.255.255.252/254/255) are not listings, unless a real code
         * comes with them. */
        reply_start(&r, 0x8180, 1);
        reply_add_a(&r, 127, 255, 255, 254);
        g_assert_cmpint(parse(&r), ==, 2);
        reply_start(&r, 0x8180, 2);
        reply_add_a(&r, 127, 255, 255, 255);
        reply_add_a(&r, 127, 0, 0, 2);
        g_assert_cmpint(parse(&r), ==, 1);
        reply_start(&r, 0x8180, 1);
        reply_add_a(&r, 127, 255, 254, 1);             /* outside the /24: a listing */
        g_assert_cmpint(parse(&r), ==, 1);

        /* Answers, but none in 127/8. */
        reply_start(&r, 0x8180, 2);
        reply_add_a(&r, 192, 0, 2, 1);
        reply_add_rr(&r, 16, "\x03txt", 4);
        g_assert_cmpint(parse(&r), ==, 0);

        /* NOERROR with no answers, NXDOMAIN: not listed. Question case from the server. */
        reply_start(&r, 0x8180, 0);
        g_assert_cmpint(parse(&r), ==, 0);
        reply_start(&r, 0x8183, 0);
        g_assert_cmpint(parse(&r), ==, 0);
        r.b[12 + 12] = 'Z';
        g_assert_cmpint(parse(&r), ==, 0);

        /* Server failures, other rcodes. */
        reply_start(&r, 0x8182, 0);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        reply_start(&r, 0x8185, 0);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        reply_start(&r, 0x8184, 0);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);

        /* Not a response; truncated (TC); another opcode. */
        reply_start(&r, 0x0180, 1);
        reply_add_a(&r, 127, 0, 0, 2);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        reply_start(&r, 0x8380, 1);
        reply_add_a(&r, 127, 0, 0, 2);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        reply_start(&r, 0x8980, 1);
        reply_add_a(&r, 127, 0, 0, 2);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);

        /* No question, two questions; a question for another type or class. */
        reply_start(&r, 0x8180, 1);
        reply_add_a(&r, 127, 0, 0, 2);
        r.b[5] = 0;
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        r.b[5] = 2;
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        r.b[5] = 1;
        r.b[sizeof(expected_query) - 3] = 16;
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        r.b[sizeof(expected_query) - 3] = 1;
        r.b[sizeof(expected_query) - 1] = 3;
        g_assert_cmpint(parse(&r), ==, -EBADMSG);

        /* An A record of the wrong size; of another class; for another name. */
        reply_start(&r, 0x8180, 1);
        reply_add_rr(&r, 1, "\x7f\0\0\x02\0", 5);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        reply_start(&r, 0x8180, 1);
        reply_add_a(&r, 127, 0, 0, 2);
        r.b[sizeof(expected_query) + 5] = 3;
        g_assert_cmpint(parse(&r), ==, 0);
        reply_start(&r, 0x8180, 1);
        reply_add(&r, "\x05other\xC0\x17\0\x01\0\x01\0\0\0\0\0\x04\x7f\0\0\x02", 22);
        g_assert_cmpint(parse(&r), ==, 0);
        /* ...the same A under the question's name spelled out (uncompressed) counts. */
        reply_start(&r, 0x8180, 1);
        reply_add(&r, expected_query + 12, sizeof(expected_query) - 16);
        reply_add(&r, "\0\x01\0\x01\0\0\0\0\0\x04\x7f\0\0\x02", 14);
        g_assert_cmpint(parse(&r), ==, 1);
        /* ...and one that is half spelled out and then points to "zen.example" (offset 23). */
        reply_start(&r, 0x8180, 1);
        reply_add(&r, "\x02" "10\x01" "2\x01" "0\x03" "192\xC0\x17", 13);
        reply_add(&r, "\0\x01\0\x01\0\0\0\0\0\x04\x7f\0\0\x02", 14);
        g_assert_cmpint(parse(&r), ==, 1);

        /* A CNAME to a name that has the A record. */
        reply_start(&r, 0x8180, 2);
        reply_add_rr(&r, 5, "\x05" "alias\xC0\x1B", 8);
        reply_add(&r, "\x05" "alias\xC0\x1B\0\x01\0\x01\0\0\0\0\0\x04\x7f\0\0\x02", 22);
        g_assert_cmpint(parse(&r), ==, 1);
        /* ...whose rdata length does not match its name. */
        reply_start(&r, 0x8180, 2);
        reply_add_rr(&r, 5, "\x05" "alias\xC0\x1B\0", 9);
        reply_add(&r, "\x05" "alias\xC0\x1B\0\x01\0\x01\0\0\0\0\0\x04\x7f\0\0\x02", 22);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);

        /* Compression pointers: to itself, forwards, in a loop, past the end. */
        reply_start(&r, 0x8180, 1);
        reply_add(&r, "\xC0\x28\0\x01\0\x01\0\0\0\0\0\x04\x7f\0\0\x02", 16);
        g_assert_cmpint(r.n, ==, 0x28 + 16);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        reply_start(&r, 0x8180, 1);
        reply_add(&r, "\xC0\x2A\0\x01\0\x01\0\0\0\0\0\x04\x7f\0\0\x02", 16);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        /* A label at 0x28 and a pointer back to it after: "a.a.a..." forever. */
        reply_start(&r, 0x8180, 1);
        reply_add(&r, "\x01" "a\xC0\x28\0\x01\0\x01\0\0\0\0\0\x04\x7f\0\0\x02", 18);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        reply_start(&r, 0x8180, 1);
        reply_add(&r, "\xC0", 1);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        /* The obsolete label types 0x40 and 0x80. */
        reply_start(&r, 0x8180, 1);
        reply_add(&r, "\x41\0\0\x01\0\x01\0\0\0\0\0\x04\x7f\0\0\x02", 16);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);
        /* A question whose name points into the header. */
        reply_start(&r, 0x8180, 0);
        r.b[12] = 0xC0;
        r.b[13] = 0x02;
        g_assert_cmpint(parse(&r), ==, -EBADMSG);

        /* More answers announced than there are. */
        reply_start(&r, 0x8180, 2);
        reply_add_a(&r, 127, 0, 0, 2);
        g_assert_cmpint(parse(&r), ==, -EBADMSG);

        /* Every truncation of a good reply is an error (NXDOMAIN too, short of its question). */
        reply_start(&r, 0x8180, 2);
        reply_add_a(&r, 192, 0, 2, 1);
        reply_add_a(&r, 127, 0, 0, 2);
        g_assert_cmpint(parse(&r), ==, 1);
        for (size_t n = 0; n < r.n; n++) {
                g_autofree uint8_t *copy = g_memdup2(r.b, n);

                g_assert_cmpint(dnsbl_parse_reply(copy, n, ID, NAME), ==, -EBADMSG);
        }
        reply_start(&r, 0x8183, 0);
        for (size_t n = 0; n < r.n; n++) {
                g_autofree uint8_t *copy = g_memdup2(r.b, n);

                g_assert_cmpint(dnsbl_parse_reply(copy, n, ID, NAME), ==, -EBADMSG);
        }
}

/* The query built is what a reply is checked against: round trips for both families. */
static void test_round_trip(void) {
        static const char *const peers[] = { "192.0.2.10", "2001:db8::1", "::ffff:198.51.100.7" };

        for (size_t i = 0; i < ELEMENTSOF(peers); i++) {
                socklen_t len;
                struct sockaddr_storage ss = ip(peers[i], 25, &len);
                g_autofree char *name = NULL;
                Reply r = {};
                int n;

                g_assert_cmpint(dnsbl_reversed_name((struct sockaddr *) &ss, len, "Zen.Example", &name), ==, 0);
                n = dnsbl_build_query(r.b, sizeof(r.b), (uint16_t) (0xF00D + i), name);
                g_assert_cmpint(n, >, 12);
                r.n = (size_t) n;
                /* The query itself is no reply. */
                g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, (uint16_t) (0xF00D + i), name), ==, -EBADMSG);
                r.b[2] = 0x81;
                r.b[3] = 0x80;
                g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, (uint16_t) (0xF00D + i), name), ==, 0);
                r.b[7] = 1;
                reply_add_a(&r, 127, 0, 0, 10);
                g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, (uint16_t) (0xF00D + i), name), ==, 1);
                g_assert_cmpint(dnsbl_parse_reply(r.b, r.n, (uint16_t) (0xF00D + i + 1), name), ==, -EBADMSG);
        }
}

/* ---- checks, against a DNS server played by the test ---- */

typedef enum Answer {
        ANSWER_LISTED,       /* 127.0.0.2 */
        ANSWER_NOT_LISTED,   /* NXDOMAIN */
        ANSWER_SILENT,
        ANSWER_SERVFAIL,
} Answer;

typedef struct FakeServer {
        int fd;
        sd_event_source *source;
        struct sockaddr_storage address;
        socklen_t address_len;
        Answer (*answer)(const char *zone);
        unsigned n_queries;
        GHashTable *queries_by_name;   /* name -> count */
        bool bad_first;                /* answer each query first with a wrong id, and from elsewhere */
        int spoof_fd;                  /* another socket, to send forged replies from */
} FakeServer;

static const char *zone_of(const char *name) {
        /* The zones used here are "<word>.example": the last two labels. */
        const char *p = name + strlen(name);
        unsigned dots = 0;

        while (p > name && dots < 2)
                if (*--p == '.')
                        dots++;
        return dots == 2 ? p + 1 : name;
}

static void server_reply(FakeServer *s, const uint8_t *q, size_t n, Answer a, uint16_t id_delta,
                         const struct sockaddr_storage *to, socklen_t to_len, int fd) {
        Reply r;

        g_assert_cmpuint(n, <=, sizeof(r.b) - 16);
        memcpy(r.b, q, n);
        r.n = n;
        r.b[1] = (uint8_t) (r.b[1] + id_delta);
        r.b[2] = 0x81;
        r.b[3] = a == ANSWER_NOT_LISTED ? 0x83 : a == ANSWER_SERVFAIL ? 0x82 : 0x80;
        if (a == ANSWER_LISTED) {
                r.b[7] = 1;
                reply_add_a(&r, 127, 0, 0, 2);
        }
        g_assert_cmpint(sendto(fd, r.b, r.n, 0, (struct sockaddr *) to, to_len), ==, (ssize_t) r.n);
}

static int on_server(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        FakeServer *s = userdata;
        uint8_t q[1024];
        struct sockaddr_storage from;
        socklen_t from_len = sizeof(from);
        ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *) &from, &from_len);
        GString *name = g_string_new(NULL);
        Answer a;

        g_assert_cmpint(n, >, 12 + 5);
        /* Uncompressed labels from offset 12. */
        for (size_t i = 12; q[i] != 0; i += 1 + q[i]) {
                if (name->len > 0)
                        g_string_append_c(name, '.');
                g_string_append_len(name, (const char *) q + i + 1, q[i]);
        }
        s->n_queries++;
        g_hash_table_insert(s->queries_by_name, g_strdup(name->str),
                            GUINT_TO_POINTER(GPOINTER_TO_UINT(g_hash_table_lookup(s->queries_by_name, name->str)) + 1));
        a = s->answer(zone_of(name->str));
        if (a != ANSWER_SILENT) {
                if (s->bad_first) {
                        /* Wrong id from the right place; the right id from the wrong place. */
                        server_reply(s, q, (size_t) n, ANSWER_LISTED, 1, &from, from_len, fd);
                        server_reply(s, q, (size_t) n, ANSWER_LISTED, 0, &from, from_len, s->spoof_fd);
                }
                server_reply(s, q, (size_t) n, a, 0, &from, from_len, fd);
        }
        g_string_free(name, TRUE);
        return 0;
}

static void server_start(FakeServer *s, Answer (*answer)(const char *zone)) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

        *s = (FakeServer){ .answer = answer };
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        g_assert_cmpint(s->fd, >=, 0);
        g_assert_cmpint(bind(s->fd, (struct sockaddr *) &sin, sizeof(sin)), ==, 0);
        s->address_len = sizeof(s->address);
        g_assert_cmpint(getsockname(s->fd, (struct sockaddr *) &s->address, &s->address_len), ==, 0);
        g_assert_cmpint(sd_event_add_io(event, &s->source, s->fd, EPOLLIN, on_server, s), >=, 0);
        s->queries_by_name = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        s->spoof_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(bind(s->spoof_fd, (struct sockaddr *) &(struct sockaddr_in){ .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) }, sizeof(sin)), ==, 0);
}

static void server_stop(FakeServer *s) {
        s->source = sd_event_source_disable_unref(s->source);
        s->fd = safe_close(s->fd);
        s->spoof_fd = safe_close(s->spoof_fd);
        g_hash_table_unref(s->queries_by_name);
}

static unsigned server_count(FakeServer *s, const char *name) {
        return GPOINTER_TO_UINT(g_hash_table_lookup(s->queries_by_name, name));
}

typedef struct Done {
        unsigned n_calls;
        bool blocked;
        unsigned listed, timed_out;
        char *listed_by;
        DnsblCheck *check;
        gint64 at;
} Done;

static void on_done(void *userdata, const DnsblResult *result) {
        Done *d = userdata;

        d->n_calls++;
        d->blocked = result->blocked;
        d->listed = result->listed;
        d->timed_out = result->timed_out;
        g_free(d->listed_by);
        d->listed_by = g_strdup(result->listed_by);
        d->at = g_get_monotonic_time();
        /* Allowed, and harmless, from inside. */
        dnsbl_cancel(d->check);
        d->check = NULL;
}

static void loop_for(unsigned ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) ms * 1000;

        while (g_get_monotonic_time() < deadline)
                g_assert_cmpint(sd_event_run(event, 5 * 1000), >=, 0);
}

static void loop_until_called(Done *d, unsigned max_ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) max_ms * 1000;

        while (d->n_calls == 0) {
                g_assert_cmpint(g_get_monotonic_time(), <, deadline);
                g_assert_cmpint(sd_event_run(event, 50 * 1000), >=, 0);
        }
}

/* Check 192.0.2.10 under spec (lists first, the server's address is added) and wait. */
static gint64 run_check(FakeServer *s, const char *spec, Done *d) {
        g_autofree char *full = NULL;
        char host[INET_ADDRSTRLEN];
        const struct sockaddr_in *sin = (const struct sockaddr_in *) &s->address;
        DnsblConfig *c;
        socklen_t len;
        struct sockaddr_storage peer = ip("192.0.2.10", 4567, &len);
        gint64 start;

        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        full = g_strdup_printf("%s,%s:%u", spec, host, ntohs(sin->sin_port));
        c = parse_ok(full, NULL);

        g_free(d->listed_by);
        *d = (Done){};
        start = g_get_monotonic_time();
        g_assert_cmpint(dnsbl_check(event, c, (struct sockaddr *) &peer, len, on_done, d, &d->check), ==, 0);
        g_assert_nonnull(d->check);
        /* The check keeps what it needs. */
        dnsbl_config_free(c);
        /* Never from inside dnsbl_check(). */
        g_assert_cmpuint(d->n_calls, ==, 0);
        loop_until_called(d, 10000);
        /* Exactly once. */
        loop_for(30);
        g_assert_cmpuint(d->n_calls, ==, 1);
        return (d->at - start) / 1000;
}

static Answer answer_a_listed(const char *zone) {
        return streq(zone, "a.example") ? ANSWER_LISTED : ANSWER_NOT_LISTED;
}

static Answer answer_all_listed(const char *zone) {
        return ANSWER_LISTED;
}

static Answer answer_none(const char *zone) {
        return ANSWER_NOT_LISTED;
}

static Answer answer_silent(const char *zone) {
        return ANSWER_SILENT;
}

static Answer answer_a_listed_b_silent(const char *zone) {
        return streq(zone, "a.example") ? ANSWER_LISTED : streq(zone, "b.example") ? ANSWER_SILENT : ANSWER_NOT_LISTED;
}

static Answer answer_a_servfail(const char *zone) {
        return streq(zone, "a.example") ? ANSWER_SERVFAIL : ANSWER_NOT_LISTED;
}

static void test_check_listed(void) {
        FakeServer s;
        Done d = {};

        server_start(&s, answer_a_listed);

        /* One of two lists: blocked at threshold 1, allowed (and reported) at 2 and 0. */
        run_check(&s, "a.example,b.example,1,5000", &d);
        g_assert_true(d.blocked);
        g_assert_cmpuint(d.listed, ==, 1);
        g_assert_cmpstr(d.listed_by, ==, "a.example");
        g_assert_cmpuint(d.timed_out, ==, 0);
        g_assert_cmpuint(server_count(&s, "10.2.0.192.a.example"), ==, 1);

        run_check(&s, "a.example,b.example,2,5000", &d);
        g_assert_false(d.blocked);
        g_assert_cmpuint(d.listed, ==, 1);
        g_assert_cmpstr(d.listed_by, ==, "a.example");
        /* Both asked, neither twice. */
        g_assert_cmpuint(server_count(&s, "10.2.0.192.a.example"), ==, 2);
        g_assert_cmpuint(server_count(&s, "10.2.0.192.b.example"), ==, 2);

        run_check(&s, "a.example,b.example,0,5000", &d);
        g_assert_false(d.blocked);
        g_assert_cmpuint(d.listed, ==, 1);

        server_stop(&s);

        /* Both lists: the order of the config in listed_by. */
        server_start(&s, answer_all_listed);
        run_check(&s, "b.example,a.example,2,5000", &d);
        g_assert_true(d.blocked);
        g_assert_cmpuint(d.listed, ==, 2);
        g_assert_cmpstr(d.listed_by, ==, "b.example,a.example");
        server_stop(&s);

        /* Not listed anywhere. */
        server_start(&s, answer_none);
        run_check(&s, "a.example,b.example,c.example,1,-5000", &d);
        g_assert_false(d.blocked);
        g_assert_cmpuint(d.listed, ==, 0);
        g_assert_cmpstr(d.listed_by, ==, "");
        g_assert_cmpuint(d.timed_out, ==, 0);
        server_stop(&s);
        g_free(d.listed_by);
}

static void test_check_timeout(void) {
        FakeServer s;
        Done d = {};
        gint64 ms;

        server_start(&s, answer_silent);

        /* A silent server: allowed after the timeout, each query sent twice. */
        ms = run_check(&s, "a.example,b.example,1,300", &d);
        g_assert_cmpint(ms, >=, 290);
        g_assert_false(d.blocked);
        g_assert_cmpuint(d.listed, ==, 0);
        g_assert_cmpuint(d.timed_out, ==, 2);
        g_assert_cmpuint(server_count(&s, "10.2.0.192.a.example"), ==, 2);
        g_assert_cmpuint(server_count(&s, "10.2.0.192.b.example"), ==, 2);

        /* Negative: blocked. */
        run_check(&s, "a.example,b.example,1,-300", &d);
        g_assert_true(d.blocked);
        g_assert_cmpuint(d.timed_out, ==, 2);
        /* Threshold 0 never blocks. */
        run_check(&s, "a.example,0,-300", &d);
        g_assert_false(d.blocked);
        g_assert_cmpuint(d.timed_out, ==, 1);
        server_stop(&s);

        /* One list answers "not listed", one is silent: with threshold 2 the silent one could
         * not have made it, so even a negative timeout allows; with threshold 1 it blocks. */
        server_start(&s, answer_a_listed_b_silent);
        run_check(&s, "c.example,b.example,2,-300", &d);
        g_assert_false(d.blocked);
        g_assert_cmpuint(d.timed_out, ==, 1);
        run_check(&s, "c.example,b.example,1,-300", &d);
        g_assert_true(d.blocked);
        g_assert_cmpuint(d.listed, ==, 0);
        /* Listed by a, b silent, threshold 2, negative timeout: a + the timeout is enough. */
        run_check(&s, "a.example,b.example,2,-300", &d);
        g_assert_true(d.blocked);
        g_assert_cmpuint(d.listed, ==, 1);
        g_assert_cmpuint(d.timed_out, ==, 1);

        /* Early: threshold 1 is reached by a, so b's silence does not hold the client. */
        ms = run_check(&s, "a.example,b.example,1,5000", &d);
        g_assert_cmpint(ms, <, 2500);
        g_assert_true(d.blocked);
        g_assert_cmpuint(d.timed_out, ==, 0);
        server_stop(&s);

        /* SERVFAIL is no answer: it ends as a timeout. */
        server_start(&s, answer_a_servfail);
        run_check(&s, "a.example,b.example,1,300", &d);
        g_assert_false(d.blocked);
        g_assert_cmpuint(d.timed_out, ==, 1);
        g_assert_cmpuint(server_count(&s, "10.2.0.192.a.example"), ==, 2);
        g_assert_cmpuint(server_count(&s, "10.2.0.192.b.example"), ==, 1);
        server_stop(&s);
        g_free(d.listed_by);
}

static void test_check_spoofed(void) {
        FakeServer s;
        Done d = {};

        /* Each real answer ("not listed") comes after a "listed" with the wrong id, and a
         * "listed" with the right id from another port: both are ignored. */
        server_start(&s, answer_none);
        s.bad_first = true;
        run_check(&s, "a.example,b.example,1,5000", &d);
        g_assert_false(d.blocked);
        g_assert_cmpuint(d.listed, ==, 0);
        g_assert_cmpuint(d.timed_out, ==, 0);
        server_stop(&s);
        g_free(d.listed_by);
}

static void test_check_cancel(void) {
        FakeServer s;
        Done d = {};
        DnsblConfig *c;
        socklen_t len;
        struct sockaddr_storage peer = ip("2001:db8::1", 4567, &len);
        g_autofree char *spec = NULL;

        server_start(&s, answer_all_listed);
        spec = g_strdup_printf("a.example,b.example,1,5000,127.0.0.1:%u",
                               ntohs(((struct sockaddr_in *) &s.address)->sin_port));
        c = parse_ok(spec, NULL);

        /* Cancelled at once: no callback, even though the answers come. */
        g_assert_cmpint(dnsbl_check(event, c, (struct sockaddr *) &peer, len, on_done, &d, &d.check), ==, 0);
        dnsbl_cancel(d.check);
        loop_for(100);
        g_assert_cmpuint(d.n_calls, ==, 0);
        g_assert_cmpuint(s.n_queries, ==, 2);
        g_assert_cmpuint(server_count(&s, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.a.example"), ==, 1);
        dnsbl_cancel(NULL);

        /* An IPv6 peer, listed. */
        d = (Done){};
        g_assert_cmpint(dnsbl_check(event, c, (struct sockaddr *) &peer, len, on_done, &d, &d.check), ==, 0);
        loop_until_called(&d, 5000);
        g_assert_true(d.blocked);
        g_assert_cmpstr(d.listed_by, ==, "a.example");

        /* A unix peer cannot be checked. */
        struct sockaddr_un un = { .sun_family = AF_UNIX, .sun_path = "/x" };
        DnsblCheck *check = NULL;
        g_assert_cmpint(dnsbl_check(event, c, (struct sockaddr *) &un, sizeof(un), on_done, &d, &check), ==,
                        -EAFNOSUPPORT);
        g_assert_null(check);

        dnsbl_config_free(c);
        server_stop(&s);
        g_free(d.listed_by);
}

/* A server that cannot even be sent to: every list timed out, at once, from the loop. */
static void test_check_unreachable(void) {
        Done d = {};
        DnsblConfig *c;
        socklen_t len;
        struct sockaddr_storage peer = ip("192.0.2.10", 4567, &len);

        /* A link-local address without an interface: connect() refuses it. */
        c = parse_ok("a.example,b.example,1,-5000,[fe80::1]:53", NULL);
        g_assert_cmpint(dnsbl_check(event, c, (struct sockaddr *) &peer, len, on_done, &d, &d.check), ==, 0);
        g_assert_cmpuint(d.n_calls, ==, 0);
        loop_until_called(&d, 1000);
        g_assert_true(d.blocked);
        g_assert_cmpuint(d.timed_out, ==, 2);
        dnsbl_config_free(c);
        g_free(d.listed_by);
}

int main(int argc, char *argv[]) {
        g_autoptr(GError) error = NULL;
        int r;

        g_test_init(&argc, &argv, NULL);
        tmpdir = g_dir_make_tmp("test-dnsbl-XXXXXX", &error);
        g_assert_no_error(error);
        g_assert_cmpint(sd_event_new(&event), >=, 0);

        g_test_add_func("/dnsbl/config/new-form", test_config_new_form);
        g_test_add_func("/dnsbl/config/old-form", test_config_old_form);
        g_test_add_func("/dnsbl/config/resolv-conf", test_config_resolv_conf);
        g_test_add_func("/dnsbl/config/errors", test_config_errors);
        g_test_add_func("/dnsbl/applies", test_applies);
        g_test_add_func("/dnsbl/reversed-name", test_reversed_name);
        g_test_add_func("/dnsbl/build-query", test_build_query);
        g_test_add_func("/dnsbl/parse-reply", test_parse_reply);
        g_test_add_func("/dnsbl/round-trip", test_round_trip);
        g_test_add_func("/dnsbl/check/listed", test_check_listed);
        g_test_add_func("/dnsbl/check/timeout", test_check_timeout);
        g_test_add_func("/dnsbl/check/spoofed", test_check_spoofed);
        g_test_add_func("/dnsbl/check/cancel", test_check_cancel);
        g_test_add_func("/dnsbl/check/unreachable", test_check_unreachable);

        r = g_test_run();

        sd_event_unref(event);
        {
                g_autofree char *path = g_build_filename(tmpdir, "resolv.conf", NULL);

                (void) g_unlink(path);
        }
        (void) g_rmdir(tmpdir);
        g_free(tmpdir);
        return r;
}
