/* SPDX-License-Identifier: GPL-3.0-or-later */
/* DNS block lists: parses --dnsbl, and checks a peer with one UDP socket and one A query per list
 * on the event loop, with a small bounds-checked DNS reader of its own. */

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <glib.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dnsbl.h"
#include "listen.h"
#include "macro.h"

#define USEC_PER_MSEC UINT64_C(1000)

#define DEFAULT_THRESHOLD 1U
#define DEFAULT_TIMEOUT_MS 5000U
#define TIMEOUT_MS_MAX 3600000U
#define ZONES_MAX 64U
/* 253 for a whole name, less "x.x." * 32 for a reversed IPv6 address. */
#define ZONE_MAX 189U
#define LABEL_MAX 63U
/* An uncompressed name on the wire, length bytes and final zero included. */
#define WIRE_NAME_MAX 255U
#define DNS_HEADER_SIZE 12U
#define DNS_TYPE_A 1U
#define DNS_TYPE_CNAME 5U
#define DNS_CLASS_IN 1U
#define DNS_RCODE_NOERROR 0U
#define DNS_RCODE_NXDOMAIN 3U
/* Enough for any query we build (a 253-character name). */
#define QUERY_MAX (DNS_HEADER_SIZE + WIRE_NAME_MAX + 4U)
/* Without EDNS a reply is at most 512 bytes; more is read so that a longer one is seen whole. */
#define REPLY_MAX 4096U
/* Datagrams read per wake-up, so that a flood on our port cannot hold the loop. */
#define READS_PER_WAKEUP 16U
/* CNAMEs followed within one reply. */
#define CNAME_MAX 8U
/* Compression pointers followed within one name. */
#define POINTERS_MAX 32U

/* ---- configuration ---- */

void dnsbl_config_free(DnsblConfig *c) {
        if (!c)
                return;
        g_strfreev(c->zones);
        g_free(c);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(DnsblConfig *, dnsbl_config_free);

static int config_error(char **ret_error, const char *format, ...) _printf_(2, 3);
static int config_error(char **ret_error, const char *format, ...) {
        va_list ap;

        if (ret_error) {
                g_autofree char *text = NULL;
                GString *line = g_string_new("--dnsbl: ");

                va_start(ap, format);
                text = g_strdup_vprintf(format, ap);
                va_end(ap);
                /* One line, whatever the value quoted in it holds. */
                for (const char *p = text; *p; p++) {
                        unsigned char c = (unsigned char) *p;

                        if (c < 0x20 || c == 0x7f)
                                g_string_append_printf(line, "\\x%02x", c);
                        else
                                g_string_append_c(line, (char) c);
                }
                *ret_error = g_string_free(line, FALSE);
        }
        return -EINVAL;
}

/* Digits with an optional sign, as E-MailRelay's "numeric". */
static bool is_number(const char *s) {
        if (*s == '-' || *s == '+')
                s++;
        return *s != '\0' && strspn(s, "0123456789") == strlen(s);
}

/* E-MailRelay's test: not numeric, and the last label ("TLD") not numeric either; and no ':',
 * which no host name has and every address with a port does. */
static bool is_zone(const char *s) {
        const char *dot = strrchr(s, '.');
        const char *last = dot ? dot + 1 : s;

        if (is_number(s) || strpbrk(s, ":[]"))
                return false;
        return *last == '\0' || strspn(last, "0123456789") != strlen(last);
}

/* A host name: labels of letters, digits, '-' and '_', 1 to 63 long; a final dot is dropped. */
static char *zone_normalize(const char *s) {
        g_autofree char *z = g_strdup(s);
        size_t n = strlen(z), label = 0;

        if (n > 0 && z[n - 1] == '.')
                z[--n] = '\0';
        if (n == 0 || n > ZONE_MAX)
                return NULL;
        for (size_t i = 0; i <= n; i++) {
                if (i == n || z[i] == '.') {
                        if (label == 0 || label > LABEL_MAX)
                                return NULL;
                        label = 0;
                } else if (g_ascii_isalnum(z[i]) || z[i] == '-' || z[i] == '_')
                        label++;
                else
                        return NULL;
        }
        return TAKE_PTR(z);
}

static int parse_uint(const char *s, unsigned max, unsigned *ret) {
        unsigned long v;
        char *end;

        if (*s == '+')
                s++;
        if (!g_ascii_isdigit(*s))
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || *end != '\0' || v > max)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

static int parse_timeout(const char *s, DnsblConfig *c) {
        bool negative = *s == '-';
        unsigned v;

        if (parse_uint(negative ? s + 1 : s, TIMEOUT_MS_MAX, &v) < 0 || v == 0 || (negative && s[1] == '+'))
                return -EINVAL;
        c->timeout_ms = v;
        c->block_on_timeout = negative;
        return 0;
}

/* An IP address with an optional %scope (IPv6) into sa, on port. */
static int parse_ip(const char *host, uint16_t port, struct sockaddr_storage *ret, socklen_t *ret_len) {
        struct sockaddr_storage sa = {};
        g_autofree char *h = g_strdup(host);
        char *scope = strchr(h, '%');

        if (scope)
                *scope++ = '\0';

        if (!scope) {
                struct sockaddr_in *sin = (struct sockaddr_in *) &sa;

                if (inet_pton(AF_INET, h, &sin->sin_addr) == 1) {
                        sin->sin_family = AF_INET;
                        sin->sin_port = htons(port);
                        *ret = sa;
                        *ret_len = sizeof(*sin);
                        return 0;
                }
        }

        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &sa;

        if (inet_pton(AF_INET6, h, &sin6->sin6_addr) != 1)
                return -EINVAL;
        if (scope) {
                unsigned index = if_nametoindex(scope);

                if (index == 0 && parse_uint(scope, UINT_MAX, &index) < 0)
                        return -EINVAL;
                sin6->sin6_scope_id = index;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *ret = sa;
        *ret_len = sizeof(*sin6);
        return 0;
}

/* "1.2.3.4:53", "1.2.3.4", "[::1]:53", "[::1]", "::1". */
static int parse_server(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len) {
        g_autofree char *host = NULL;
        unsigned port = 53;
        const char *colon;

        if (s[0] == '[') {
                const char *e = strchr(s, ']');

                if (!e || !strchr(s + 1, ':'))
                        return -EINVAL;
                host = g_strndup(s + 1, e - s - 1);
                if (e[1] == ':') {
                        if (parse_uint(e + 2, 65535, &port) < 0 || port == 0)
                                return -EINVAL;
                } else if (e[1] != '\0')
                        return -EINVAL;
                return parse_ip(host, (uint16_t) port, ret, ret_len) < 0 || ((struct sockaddr *) ret)->sa_family != AF_INET6
                               ? -EINVAL
                               : 0;
        }

        colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':'))
                /* More than one colon: an IPv6 address, whole. */
                return parse_ip(s, 53, ret, ret_len);
        if (colon) {
                if (parse_uint(colon + 1, 65535, &port) < 0 || port == 0)
                        return -EINVAL;
                host = g_strndup(s, colon - s);
        } else
                host = g_strdup(s);
        if (strchr(host, '%'))
                return -EINVAL;
        return parse_ip(host, (uint16_t) port, ret, ret_len);
}

/* The first "nameserver" line of resolv.conf that we can use. */
static int server_from_resolv_conf(const char *path, struct sockaddr_storage *ret, socklen_t *ret_len) {
        g_autofree char *text = NULL;
        g_auto(GStrv) lines = NULL;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return -ENOENT;
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_auto(GStrv) words = g_strsplit_set(g_strstrip(*l), " \t", -1);
                char **w = words;

                if (!w[0] || !streq(w[0], "nameserver"))
                        continue;
                /* Several blanks make empty words. */
                for (w++; *w && **w == '\0'; w++)
                        ;
                if (*w && parse_ip(*w, 53, ret, ret_len) == 0)
                        return 0;
        }
        return -ENOENT;
}

static int add_zone(GPtrArray *zones, const char *field, char **ret_error) {
        char *z = zone_normalize(field);

        if (!z)
                return config_error(ret_error, "\"%s\" is not a valid list name", field);
        if (zones->len >= ZONES_MAX) {
                g_free(z);
                return config_error(ret_error, "more than %u lists", ZONES_MAX);
        }
        g_ptr_array_add(zones, z);
        return 0;
}

int dnsbl_config_parse(const char *spec, const char *resolv_conf, DnsblConfig **ret, char **ret_error) {
        _cleanup_(dnsbl_config_freep) DnsblConfig *c = NULL;
        g_autoptr(GPtrArray) zones = g_ptr_array_new_with_free_func(g_free);
        g_auto(GStrv) fields = NULL;
        const char *threshold = NULL, *timeout = NULL, *server = NULL;
        size_t n, i = 0;
        int r;

        assert(ret);

        if (isempty(spec))
                return config_error(ret_error, "no lists given");
        fields = g_strsplit(spec, ",", -1);
        n = g_strv_length(fields);
        for (i = 0; i < n; i++)
                if (*g_strstrip(fields[i]) == '\0')
                        return config_error(ret_error, "empty field in \"%s\"", spec);

        c = g_new0(DnsblConfig, 1);
        c->threshold = DEFAULT_THRESHOLD;
        c->timeout_ms = DEFAULT_TIMEOUT_MS;

        if (!is_zone(fields[0])) {
                /* The old form: dns-addr:port,timeout,threshold,zone... */
                server = fields[0];
                if (n < 4)
                        return config_error(ret_error, "\"%s\" is not a list name, and the old form "
                                            "\"dns-addr:port,timeout,threshold,list...\" needs four fields or more", fields[0]);
                timeout = fields[1];
                threshold = fields[2];
                for (i = 3; i < n; i++) {
                        r = add_zone(zones, fields[i], ret_error);
                        if (r < 0)
                                return r;
                }
        } else {
                /* zone...[,threshold[,timeout[,dns-addr:port]]] */
                for (i = 0; i < n && is_zone(fields[i]); i++) {
                        r = add_zone(zones, fields[i], ret_error);
                        if (r < 0)
                                return r;
                }
                threshold = i < n ? fields[i++] : NULL;
                timeout = i < n ? fields[i++] : NULL;
                server = i < n ? fields[i++] : NULL;
                if (i < n)
                        return config_error(ret_error, "unexpected \"%s\" after the DNS server (the lists come first)",
                                            fields[i]);
        }

        if (threshold && parse_uint(threshold, ZONES_MAX, &c->threshold) < 0)
                return config_error(ret_error, "\"%s\" is not a valid threshold", threshold);
        if (timeout && parse_timeout(timeout, c) < 0)
                return config_error(ret_error, "\"%s\" is not a valid timeout", timeout);
        if (server) {
                if (parse_server(server, &c->server, &c->server_len) < 0)
                        return config_error(ret_error, "\"%s\" is not a valid DNS server address "
                                            "(a numeric address, with an optional port)", server);
        } else if (server_from_resolv_conf(resolv_conf ? resolv_conf : "/etc/resolv.conf", &c->server,
                                           &c->server_len) < 0) {
                struct sockaddr_in *sin = (struct sockaddr_in *) &c->server;

                memset(&c->server, 0, sizeof(c->server));
                sin->sin_family = AF_INET;
                sin->sin_port = htons(53);
                sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                c->server_len = sizeof(*sin);
        }

        g_ptr_array_add(zones, NULL);
        c->zones = (char **) g_ptr_array_free(g_steal_pointer(&zones), FALSE);
        *ret = TAKE_PTR(c);
        return 0;
}

bool dnsbl_applies(const struct sockaddr *peer, socklen_t len) {
        if (!peer)
                return false;
        if (peer->sa_family == AF_INET && len >= (socklen_t) sizeof(struct sockaddr_in))
                return !sockaddr_is_local(peer, len);
        if (peer->sa_family == AF_INET6 && len >= (socklen_t) sizeof(struct sockaddr_in6))
                return !sockaddr_is_local(peer, len);
        return false;
}

int dnsbl_reversed_name(const struct sockaddr *peer, socklen_t len, const char *zone, char **ret) {
        static const char hex[] = "0123456789abcdef";
        const uint8_t *b;
        GString *s;

        assert(zone);
        assert(ret);

        if (!peer)
                return -EAFNOSUPPORT;
        if (peer->sa_family == AF_INET && len >= (socklen_t) sizeof(struct sockaddr_in))
                b = (const uint8_t *) &((const struct sockaddr_in *) peer)->sin_addr.s_addr;
        else if (peer->sa_family == AF_INET6 && len >= (socklen_t) sizeof(struct sockaddr_in6)) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *) peer)->sin6_addr;

                if (IN6_IS_ADDR_V4MAPPED(a))
                        b = a->s6_addr + 12;
                else {
                        s = g_string_sized_new(64 + strlen(zone) + 1);
                        for (int i = 15; i >= 0; i--)
                                g_string_append_printf(s, "%c.%c.", hex[a->s6_addr[i] & 0xf], hex[a->s6_addr[i] >> 4]);
                        g_string_append(s, zone);
                        *ret = g_string_free(s, FALSE);
                        return 0;
                }
        } else
                return -EAFNOSUPPORT;

        *ret = g_strdup_printf("%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0], zone);
        return 0;
}

/* ---- DNS messages ---- */

static uint16_t get16(const uint8_t *p) {
        return (uint16_t) ((p[0] << 8) | p[1]);
}

static void put16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) (v >> 8);
        p[1] = (uint8_t) v;
}

/* name as length-prefixed labels with the final zero; a final dot is allowed. */
static int encode_name(const char *name, uint8_t ret[static WIRE_NAME_MAX], size_t *ret_len) {
        size_t n = strlen(name), out = 0;
        const char *p = name, *end;

        if (n > 0 && name[n - 1] == '.')
                n--;
        if (n == 0)
                return -ENAMETOOLONG;
        end = name + n;
        while (p < end) {
                const char *dot = memchr(p, '.', (size_t) (end - p));
                size_t label = (size_t) ((dot ? dot : end) - p);

                if (label == 0 || label > LABEL_MAX || out + 1 + label + 1 > WIRE_NAME_MAX)
                        return -ENAMETOOLONG;
                ret[out++] = (uint8_t) label;
                memcpy(ret + out, p, label);
                out += label;
                p += label + (dot ? 1 : 0);
                if (dot && p == end)
                        return -ENAMETOOLONG;   /* "a..": an empty label */
        }
        ret[out++] = 0;
        *ret_len = out;
        return 0;
}

static void lower_labels(uint8_t *name, size_t len) {
        for (size_t i = 0; i < len; i++)
                name[i] = (uint8_t) g_ascii_tolower((char) name[i]);
}

int dnsbl_build_query(uint8_t *buf, size_t size, uint16_t id, const char *name) {
        uint8_t wire[WIRE_NAME_MAX];
        size_t wire_len;
        int r;

        assert(buf);
        assert(name);

        r = encode_name(name, wire, &wire_len);
        if (r < 0)
                return r;
        if (size < DNS_HEADER_SIZE + wire_len + 4)
                return -ENOBUFS;

        memset(buf, 0, DNS_HEADER_SIZE);
        put16(buf, id);
        put16(buf + 2, 0x0100);   /* a standard query, recursion desired */
        put16(buf + 4, 1);        /* one question */
        memcpy(buf + DNS_HEADER_SIZE, wire, wire_len);
        put16(buf + DNS_HEADER_SIZE + wire_len, DNS_TYPE_A);
        put16(buf + DNS_HEADER_SIZE + wire_len + 2, DNS_CLASS_IN);
        return (int) (DNS_HEADER_SIZE + wire_len + 4);
}

/* Read the (possibly compressed) name at *offset into ret, uncompressed and lower case, and
 * move *offset past it. Every pointer must lead further back than the one before, so a reply
 * cannot make us loop; the name must fit WIRE_NAME_MAX. */
static int read_name(const uint8_t *buf, size_t len, size_t *offset, uint8_t ret[static WIRE_NAME_MAX], size_t *ret_len) {
        size_t pos = *offset, out = 0, limit = pos, next = 0;
        unsigned pointers = 0;

        for (;;) {
                uint8_t c;

                if (pos >= len)
                        return -EBADMSG;
                c = buf[pos];
                if ((c & 0xC0) == 0xC0) {
                        size_t target;

                        if (pos + 1 >= len || ++pointers > POINTERS_MAX)
                                return -EBADMSG;
                        target = (size_t) (((c & 0x3F) << 8) | buf[pos + 1]);
                        if (target >= limit)
                                return -EBADMSG;
                        if (next == 0)
                                next = pos + 2;
                        limit = pos = target;
                        continue;
                }
                if ((c & 0xC0) != 0)
                        return -EBADMSG;   /* the obsolete extended label types */
                if (out + 1 + c > WIRE_NAME_MAX || pos + 1 + c > len)
                        return -EBADMSG;
                memcpy(ret + out, buf + pos, 1 + (size_t) c);
                out += 1 + (size_t) c;
                pos += 1 + (size_t) c;
                if (c == 0)
                        break;
        }

        lower_labels(ret, out);
        *ret_len = out;
        *offset = next != 0 ? next : pos;
        return 0;
}

static bool names_equal(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
        return a_len == b_len && memcmp(a, b, a_len) == 0;
}

int dnsbl_parse_reply(const uint8_t *buf, size_t len, uint16_t id, const char *name) {
        uint8_t want[WIRE_NAME_MAX], got[WIRE_NAME_MAX], target[WIRE_NAME_MAX];
        size_t want_len, got_len, target_len, off = DNS_HEADER_SIZE;
        unsigned flags, n_answers, n_cnames = 0;
        bool listed = false, refused = false;

        assert(buf || len == 0);
        assert(name);

        if (encode_name(name, want, &want_len) < 0)
                return -EBADMSG;
        lower_labels(want, want_len);

        if (len < DNS_HEADER_SIZE || get16(buf) != id)
                return -EBADMSG;
        flags = get16(buf + 2);
        /* A response, to a standard query, whole. */
        if (!(flags & 0x8000) || ((flags >> 11) & 0xF) != 0 || (flags & 0x0200))
                return -EBADMSG;
        if (get16(buf + 4) != 1)
                return -EBADMSG;
        n_answers = get16(buf + 6);

        if (read_name(buf, len, &off, got, &got_len) < 0 || !names_equal(got, got_len, want, want_len))
                return -EBADMSG;
        if (off + 4 > len || get16(buf + off) != DNS_TYPE_A || get16(buf + off + 2) != DNS_CLASS_IN)
                return -EBADMSG;
        off += 4;

        switch (flags & 0xF) {
        case DNS_RCODE_NOERROR:
                break;
        case DNS_RCODE_NXDOMAIN:
                return 0;
        default:
                return -EBADMSG;
        }

        /* The A records of the name, or of what it is an alias for. */
        memcpy(target, want, want_len);
        target_len = want_len;
        for (unsigned i = 0; i < n_answers; i++) {
                unsigned type, class, rdlength;

                if (read_name(buf, len, &off, got, &got_len) < 0 || off + 10 > len)
                        return -EBADMSG;
                type = get16(buf + off);
                class = get16(buf + off + 2);
                rdlength = get16(buf + off + 8);
                off += 10;
                if (off + rdlength > len)
                        return -EBADMSG;

                if (class == DNS_CLASS_IN && names_equal(got, got_len, target, target_len)) {
                        if (type == DNS_TYPE_A) {
                                if (rdlength != 4)
                                        return -EBADMSG;
                                if (buf[off] == 127 && buf[off + 1] == 255 && buf[off + 2] == 255)
                                        refused = true;
                                else if (buf[off] == 127)
                                        listed = true;
                        } else if (type == DNS_TYPE_CNAME) {
                                size_t end = off;

                                if (++n_cnames > CNAME_MAX || read_name(buf, len, &end, target, &target_len) < 0 ||
                                    end != off + rdlength)
                                        return -EBADMSG;
                        }
                }
                off += rdlength;
        }

        return listed ? 1 : refused ? 2 : 0;
}

/* ---- checks ---- */

typedef struct DnsblQuery {
        char *zone;
        char *name;
        uint16_t id;
        bool done;       /* answered, or given up */
        bool listed;
        bool refused;    /* answered with an error code, counted as not listed */
        bool timed_out;  /* no answer in time, or the query could not be sent */
} DnsblQuery;

struct DnsblCheck {
        sd_event *event;
        DnsblCallback callback;
        void *userdata;
        unsigned threshold;
        bool block_on_timeout;
        struct sockaddr_storage server;
        socklen_t server_len;
        uint64_t timeout_usec;

        DnsblQuery *queries;
        size_t n_queries;

        int fd;
        sd_event_source *io_source;
        sd_event_source *timer_source;
        sd_event_source *defer_source;   /* reports an outcome known before any reply */
        bool resent;
        bool in_callback;
};

static void check_free(DnsblCheck *check) {
        if (!check)
                return;
        check->io_source = sd_event_source_disable_unref(check->io_source);
        check->timer_source = sd_event_source_disable_unref(check->timer_source);
        check->defer_source = sd_event_source_disable_unref(check->defer_source);
        check->fd = safe_close(check->fd);
        for (size_t i = 0; i < check->n_queries; i++) {
                g_free(check->queries[i].zone);
                g_free(check->queries[i].name);
        }
        g_free(check->queries);
        sd_event_unref(check->event);
        g_free(check);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(DnsblCheck *, check_free);

void dnsbl_cancel(DnsblCheck *check) {
        /* From inside its callback: it is freed as soon as the callback returns. */
        if (!check || check->in_callback)
                return;
        check_free(check);
}

static unsigned count_listed(const DnsblCheck *check) {
        unsigned n = 0;

        for (size_t i = 0; i < check->n_queries; i++)
                n += check->queries[i].listed;
        return n;
}

static bool outcome_known(const DnsblCheck *check) {
        if (check->threshold > 0 && count_listed(check) >= check->threshold)
                return true;
        for (size_t i = 0; i < check->n_queries; i++)
                if (!check->queries[i].done)
                        return false;
        return true;
}

/* Report and free the check: the caller must return without touching it. */
static void check_finish(DnsblCheck *check) {
        g_autoptr(GString) listed_by = g_string_new(NULL), refused_by = g_string_new(NULL);
        DnsblResult result = {};

        for (size_t i = 0; i < check->n_queries; i++) {
                const DnsblQuery *q = &check->queries[i];

                if (q->listed) {
                        if (listed_by->len > 0)
                                g_string_append_c(listed_by, ',');
                        g_string_append(listed_by, q->zone);
                        result.listed++;
                }
                if (q->refused) {
                        if (refused_by->len > 0)
                                g_string_append_c(refused_by, ',');
                        g_string_append(refused_by, q->zone);
                        result.refused++;
                }
                result.timed_out += q->timed_out;
        }
        result.listed_by = listed_by->str;
        result.refused_by = refused_by->str;
        result.blocked = check->threshold > 0 &&
                         (result.listed >= check->threshold ||
                          (check->block_on_timeout && result.listed + result.timed_out >= check->threshold));

        check->io_source = sd_event_source_disable_unref(check->io_source);
        check->timer_source = sd_event_source_disable_unref(check->timer_source);
        check->defer_source = sd_event_source_disable_unref(check->defer_source);
        check->in_callback = true;
        check->callback(check->userdata, &result);
        check_free(check);
}

static void query_send(DnsblCheck *check, DnsblQuery *q) {
        uint8_t packet[QUERY_MAX];
        int n;

        if (check->fd < 0) {
                q->done = q->timed_out = true;
                return;
        }
        n = dnsbl_build_query(packet, sizeof(packet), q->id, q->name);
        if (n < 0) {
                q->done = q->timed_out = true;
                return;
        }
        for (;;) {
                if (send(check->fd, packet, (size_t) n, MSG_NOSIGNAL) >= 0)
                        return;
                if (errno == EINTR)
                        continue;
                /* A full buffer, or an ICMP error left over from the other query: the
                 * resend may still get through. Anything else will not. */
                if (errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED) {
                        q->done = q->timed_out = true;
                }
                return;
        }
}

static bool same_address(const struct sockaddr_storage *a, socklen_t a_len, const struct sockaddr_storage *b) {
        if (a_len < (socklen_t) sizeof(sa_family_t) || a->ss_family != b->ss_family)
                return false;
        if (a->ss_family == AF_INET) {
                const struct sockaddr_in *x = (const struct sockaddr_in *) a, *y = (const struct sockaddr_in *) b;

                return a_len >= (socklen_t) sizeof(*x) && x->sin_port == y->sin_port &&
                       x->sin_addr.s_addr == y->sin_addr.s_addr;
        }
        if (a->ss_family == AF_INET6) {
                const struct sockaddr_in6 *x = (const struct sockaddr_in6 *) a, *y = (const struct sockaddr_in6 *) b;

                return a_len >= (socklen_t) sizeof(*x) && x->sin6_port == y->sin6_port &&
                       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
        }
        return false;
}

static void reply_received(DnsblCheck *check, const uint8_t *buf, size_t len) {
        uint16_t id;

        if (len < 2)
                return;
        id = get16(buf);
        for (size_t i = 0; i < check->n_queries; i++) {
                DnsblQuery *q = &check->queries[i];
                int r;

                if (q->done || q->id != id)
                        continue;
                r = dnsbl_parse_reply(buf, len, q->id, q->name);
                if (r < 0)
                        continue;
                q->done = true;
                q->listed = r == 1;
                q->refused = r == 2;
                return;
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        DnsblCheck *check = userdata;

        for (unsigned k = 0; k < READS_PER_WAKEUP; k++) {
                uint8_t buf[REPLY_MAX];
                struct sockaddr_storage from;
                socklen_t from_len = sizeof(from);
                ssize_t n;

                n = recvfrom(fd, buf, sizeof(buf), MSG_TRUNC, (struct sockaddr *) &from, &from_len);
                if (n < 0) {
                        if (errno == EAGAIN)
                                return 0;
                        /* EINTR, and ICMP errors (ECONNREFUSED...), which anyone can forge:
                         * keep waiting for a real answer or the timeout. */
                        continue;
                }
                if ((size_t) n > sizeof(buf) || !same_address(&from, from_len, &check->server))
                        continue;
                reply_received(check, buf, (size_t) n);
                if (outcome_known(check)) {
                        check_finish(check);
                        return 0;
                }
        }
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        DnsblCheck *check = userdata;
        int r;

        if (!check->resent) {
                /* Half the time gone: UDP may have lost a query or its answer. */
                check->resent = true;
                for (size_t i = 0; i < check->n_queries; i++)
                        if (!check->queries[i].done)
                                query_send(check, &check->queries[i]);
                if (!outcome_known(check)) {
                        r = sd_event_source_set_time_relative(s, check->timeout_usec - check->timeout_usec / 2);
                        if (r >= 0)
                                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                        if (r >= 0)
                                return 0;
                }
                /* Every query failed to go out again, or the timer cannot be set: stop now. */
        }

        for (size_t i = 0; i < check->n_queries; i++) {
                DnsblQuery *q = &check->queries[i];

                if (!q->done)
                        q->done = q->timed_out = true;
        }
        check_finish(check);
        return 0;
}

static int on_defer(sd_event_source *s, void *userdata) {
        check_finish(userdata);
        return 0;
}

static void random_ids(DnsblQuery *queries, size_t n) {
        g_autofree uint16_t *ids = g_new(uint16_t, n);
        size_t size = n * sizeof(uint16_t);
        ssize_t got = getrandom(ids, size, GRND_NONBLOCK);

        if (got != (ssize_t) size)
                /* Early at boot: GLib's generator, seeded from /dev/urandom. */
                for (size_t i = 0; i < n; i++)
                        ids[i] = (uint16_t) g_random_int();

        for (size_t i = 0; i < n; i++) {
                /* Distinct within the check, so that one reply can answer only one query. */
                for (bool again = true; again;) {
                        again = false;
                        for (size_t j = 0; j < i; j++)
                                if (ids[j] == ids[i]) {
                                        ids[i]++;
                                        again = true;
                                }
                }
                queries[i].id = ids[i];
        }
}

int dnsbl_check(sd_event *event, const DnsblConfig *c, const struct sockaddr *peer, socklen_t len,
                DnsblCallback cb, void *userdata, DnsblCheck **ret) {
        _cleanup_(check_freep) DnsblCheck *check = NULL;
        size_t n = 0;
        int r;

        assert(event);
        assert(c);
        assert(c->zones && c->zones[0]);
        assert(cb);

        while (c->zones[n])
                n++;

        check = g_new0(DnsblCheck, 1);
        check->fd = -EBADF;
        check->event = sd_event_ref(event);
        check->callback = cb;
        check->userdata = userdata;
        check->threshold = c->threshold;
        check->block_on_timeout = c->block_on_timeout;
        check->server = c->server;
        check->server_len = c->server_len;
        check->timeout_usec = (uint64_t) MAX(c->timeout_ms, 1U) * USEC_PER_MSEC;
        check->queries = g_new0(DnsblQuery, n);
        check->n_queries = n;

        for (size_t i = 0; i < n; i++) {
                check->queries[i].zone = g_strdup(c->zones[i]);
                r = dnsbl_reversed_name(peer, len, c->zones[i], &check->queries[i].name);
                if (r < 0)
                        return r;
        }
        random_ids(check->queries, n);

        /* Connected, so that the kernel drops datagrams from anyone but the server; a socket
         * that cannot be made, or a server that cannot be reached, makes every list time out
         * (and so a negative timeout blocks). */
        check->fd = socket(c->server.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (check->fd >= 0 && connect(check->fd, (const struct sockaddr *) &c->server, c->server_len) < 0)
                check->fd = safe_close(check->fd);

        if (check->fd >= 0) {
                r = sd_event_add_io(event, &check->io_source, check->fd, EPOLLIN, on_io, check);
                if (r < 0)
                        return r;
        }
        r = sd_event_add_time_relative(event, &check->timer_source, CLOCK_MONOTONIC,
                                       MAX(check->timeout_usec / 2, USEC_PER_MSEC), USEC_PER_MSEC, on_timer, check);
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++)
                query_send(check, &check->queries[i]);

        if (outcome_known(check)) {
                r = sd_event_add_defer(event, &check->defer_source, on_defer, check);
                if (r < 0)
                        return r;
        }

        if (ret)
                *ret = check;
        TAKE_PTR(check);
        return 0;
}
