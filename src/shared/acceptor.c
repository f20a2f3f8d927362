/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The daemons' accept loop, limits and shutdown (see acceptor.h). */

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "acceptor.h"
#include "log.h"
#include "macro.h"
#include "proxyproto.h"

static void address_gc(Acceptor *a);

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Acceptor *a = userdata;
        a->hooks.status(a->userdata);
        if (++a->gc_ticks % 60 == 0)
                address_gc(a);
        return sd_event_source_set_time_relative(s, 1000000u);
}

static void accepting(Acceptor *a, bool on) {
        for (size_t i = 0; i < a->listeners.n; i++)
                if (a->accept_sources[i])
                        (void) sd_event_source_set_enabled(a->accept_sources[i], on ? SD_EVENT_ON : SD_EVENT_OFF);
}

static bool may_accept(const Acceptor *a) {
        return !a->draining && !a->single_session && a->n_sessions + a->n_pending < a->max_sessions;
}

/* Out of file descriptors: the listener would stay readable and the loop spin, so stop
 * accepting until a session ends or a second has passed. */
static int on_accept_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Acceptor *a = userdata;
        a->accept_paused = false;
        if (may_accept(a))
                accepting(a, true);
        return 0;
}

static void pause_accepting(Acceptor *a, int error) {
        if (a->accept_paused)
                return;
        a->accept_paused = true;
        accepting(a, false);
        /* Once per episode: retried every second while it lasts. */
        if (!a->accept_warned)
                log_warning_errno(error, "cannot accept more connections (%u open): %m; retrying every second", a->n_sessions);
        a->accept_warned = true;
        if (!a->accept_timer)
                (void) sd_event_add_time_relative(a->event, &a->accept_timer, CLOCK_MONOTONIC, 1000000u, 100000u,
                                                  on_accept_retry, a);
        else {
                (void) sd_event_source_set_time_relative(a->accept_timer, 1000000u);
                (void) sd_event_source_set_enabled(a->accept_timer, SD_EVENT_ONESHOT);
        }
}

static void maybe_exit(Acceptor *a) {
        if ((a->draining || a->single_session) && a->n_sessions == 0 && a->n_pending == 0)
                (void) sd_event_exit(a->event, 0);
}

static void capacity_freed(Acceptor *a) {
        if (may_accept(a)) {
                a->accept_paused = false;
                accepting(a, true);
        }
        maybe_exit(a);
}

/* ---- per-address records ---- */

#define WINDOW_USEC (60u * 1000000u)

typedef struct Address {
        unsigned connections;         /* open now, pending ones admitted included */
        bool exempt;
        uint64_t window_start;        /* CLOCK_MONOTONIC usec */
        unsigned new_connections, auth_failures, rejected;   /* in this window */
        uint64_t blocked_until;       /* refused until then; 0: not */
        const char *blocked_for;      /* what it did */
} Address;

static uint64_t now_usec(const Acceptor *a) {
        uint64_t now = 0;
        (void) sd_event_now(a->event, CLOCK_MONOTONIC, &now);
        return now;
}

static bool net_contains(const struct AcceptorNet *n, int family, const uint8_t *addr) {
        if (n->family != family)
                return false;
        unsigned bits = n->prefix;
        for (size_t i = 0; bits > 0; i++, bits = bits >= 8 ? bits - 8 : 0) {
                uint8_t mask = bits >= 8 ? 0xff : (uint8_t) (0xff << (8 - bits));
                if ((addr[i] & mask) != (n->addr[i] & mask))
                        return false;
        }
        return true;
}

bool acceptor_nets_contain(const AcceptorNets *nets, const struct sockaddr *sa, socklen_t len) {
        uint8_t v4[4];

        if (nets->any)
                return true;
        if (nets->local && sockaddr_is_local(sa, len))
                return true;
        switch (sa->sa_family) {
        case AF_UNIX:
                return nets->local || nets->n > 0;
        case AF_INET:
                if (len < (socklen_t) sizeof(struct sockaddr_in))
                        return false;
                memcpy(v4, &((const struct sockaddr_in *) sa)->sin_addr, 4);
                break;
        case AF_INET6: {
                if (len < (socklen_t) sizeof(struct sockaddr_in6))
                        return false;
                const struct in6_addr *a6 = &((const struct sockaddr_in6 *) sa)->sin6_addr;
                if (IN6_IS_ADDR_V4MAPPED(a6)) {
                        memcpy(v4, a6->s6_addr + 12, 4);
                        break;
                }
                for (size_t i = 0; i < nets->n; i++)
                        if (net_contains(&nets->items[i], AF_INET6, a6->s6_addr))
                                return true;
                return false;
        }
        default:
                return false;
        }
        for (size_t i = 0; i < nets->n; i++)
                if (net_contains(&nets->items[i], AF_INET, v4))
                        return true;
        return false;
}

int acceptor_nets_parse(AcceptorNets *nets, const char *list, char **error) {
        g_auto(GStrv) items = g_strsplit(list, ",", -1);
        acceptor_nets_done(nets);
        if (g_strv_length(items) == 1 && streq(g_strstrip(items[0]), "none"))
                return 0;
        if (g_strv_length(items) == 1 && streq(g_strstrip(items[0]), "any")) {
                nets->any = true;
                return 0;
        }
        nets->items = g_new0(struct AcceptorNet, g_strv_length(items));
        for (char **i = items; *i; i++) {
                char *item = g_strstrip(*i);
                if (!*item)
                        continue;
                if (streq(item, "local")) {
                        nets->local = true;
                        continue;
                }
                struct AcceptorNet n = {};
                char *slash = strchr(item, '/');
                if (slash)
                        *slash = '\0';
                if (inet_pton(AF_INET, item, n.addr) == 1) {
                        n.family = AF_INET;
                        n.prefix = 32;
                } else if (inet_pton(AF_INET6, item, n.addr) == 1) {
                        n.family = AF_INET6;
                        n.prefix = 128;
                } else {
                        *error = g_strdup_printf("\"%s\" is not an IP address, a network, local, any or none", item);
                        return -EINVAL;
                }
                if (slash) {
                        char *end = NULL;
                        unsigned long p = strtoul(slash + 1, &end, 10);
                        if (!g_ascii_isdigit(slash[1]) || *end || p > n.prefix) {
                                *error = g_strdup_printf("\"%s/%s\" has a bad prefix length", item, slash + 1);
                                return -EINVAL;
                        }
                        n.prefix = (unsigned) p;
                }
                nets->items[nets->n++] = n;
        }
        return 0;
}

void acceptor_nets_done(AcceptorNets *nets) {
        g_free(nets->items);
        *nets = (AcceptorNets){};
}

#define ADDRESS_KEY_MAX 64            /* as the hosts' buffers: a key is never cut short */

/* What the limits count under: the address itself, or for IPv6 its network of
 * --limits-ipv6-prefix bits ("2001:db8:1:2::/64"), because one IPv6 host may use every
 * address of its /64. Exempt addresses keep their own records. Returns true for a network. */
static bool address_key(const Acceptor *a, const char *host, char key[static ADDRESS_KEY_MAX]) {
        struct sockaddr_in6 sa6 = { .sin6_family = AF_INET6 };
        unsigned prefix = a->limits.ipv6_prefix;
        char text[INET6_ADDRSTRLEN];

        if (prefix == 0 || prefix >= 128 || inet_pton(AF_INET6, host, &sa6.sin6_addr) != 1 ||
            IN6_IS_ADDR_V4MAPPED(&sa6.sin6_addr) ||
            acceptor_nets_contain(&a->limits.exempt, (const struct sockaddr *) &sa6, sizeof sa6)) {
                g_strlcpy(key, host, ADDRESS_KEY_MAX);
                return false;
        }
        uint8_t *b = sa6.sin6_addr.s6_addr;
        for (unsigned i = prefix; i < 128; i++)
                b[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
        if (!inet_ntop(AF_INET6, b, text, sizeof text)) {
                g_strlcpy(key, host, ADDRESS_KEY_MAX);
                return false;
        }
        (void) snprintf(key, ADDRESS_KEY_MAX, "%s/%u", text, prefix);
        return true;
}

static Address *address_find(const Acceptor *a, const char *host) {
        char key[ADDRESS_KEY_MAX];
        (void) address_key(a, host, key);
        return g_hash_table_lookup(a->per_address, key);
}

static Address *address_get(Acceptor *a, const char *host, const struct sockaddr *peer, socklen_t len) {
        char key[ADDRESS_KEY_MAX];
        (void) address_key(a, host, key);
        Address *r = g_hash_table_lookup(a->per_address, key);
        uint64_t now = now_usec(a);
        if (!r) {
                r = g_new0(Address, 1);
                r->exempt = peer ? acceptor_nets_contain(&a->limits.exempt, peer, len) : true;
                r->window_start = now;
                g_hash_table_insert(a->per_address, g_strdup(key), r);
        }
        if (now >= r->window_start + WINDOW_USEC) {
                r->window_start = now;
                r->new_connections = r->auth_failures = r->rejected = 0;
        }
        return r;
}

static void address_block(Acceptor *a, Address *r, const char *what) {
        r->blocked_until = r->window_start + WINDOW_USEC;
        r->blocked_for = what;
}

/* Forget addresses with nothing open and nothing to remember, once a minute. */
static void address_gc(Acceptor *a) {
        GHashTableIter i;
        gpointer value;
        uint64_t now = now_usec(a);

        g_hash_table_iter_init(&i, a->per_address);
        while (g_hash_table_iter_next(&i, NULL, &value)) {
                Address *r = value;
                if (r->connections == 0 && now >= r->window_start + WINDOW_USEC && now >= r->blocked_until)
                        g_hash_table_iter_remove(&i);
        }
}

bool acceptor_note(Acceptor *a, const char *host, AcceptorEvent event) {
        Address *r = address_find(a, host);
        if (!r || r->exempt)
                return false;
        r = address_get(a, host, NULL, 0);      /* rolls the window */
        switch (event) {
        case ACCEPTOR_AUTH_FAILURE:
                if (a->limits.max_auth_failures > 0 && ++r->auth_failures > a->limits.max_auth_failures) {
                        address_block(a, r, "too many failed AUTH attempts");
                        return true;
                }
                return false;
        case ACCEPTOR_REJECTED_COMMAND:
                if (a->limits.max_rejected > 0 && ++r->rejected > a->limits.max_rejected) {
                        address_block(a, r, "too many rejected commands");
                        return true;
                }
                return false;
        }
        return false;
}

/* "limit N", and ", counted for <network>" when an IPv6 address was counted with its
 * network: the address in the line went over, perhaps not alone. */
static const char *limit_detail(const Acceptor *a, const char *host, unsigned limit, const char *per,
                                char *buf, size_t size) {
        char key[ADDRESS_KEY_MAX];
        bool network = address_key(a, host, key);
        (void) snprintf(buf, size, "limit %u%s%s%s", limit, per, network ? ", counted for " : "", network ? key : "");
        return buf;
}

const char *acceptor_limit_detail(const Acceptor *a, const char *host, AcceptorEvent event, char *buf, size_t size) {
        unsigned limit = event == ACCEPTOR_AUTH_FAILURE ? a->limits.max_auth_failures : a->limits.max_rejected;
        return limit_detail(a, host, limit, " a minute", buf, size);
}

void acceptor_session_ended(Acceptor *a, void *session, const char *host) {
        a->sessions = g_list_remove(a->sessions, session);
        a->n_sessions--;
        Address *r = address_find(a, host);
        if (r && r->connections > 0)
                r->connections--;
        capacity_freed(a);
}

/* ---- pending connections: PROXY header, limits, DNSBL ---- */

#define PROXY_HEADER_TIMEOUT_USEC (10u * 1000000u)

typedef struct Pending {
        Acceptor *a;
        int fd;
        const char *listener;         /* its name, owned by the listener set */
        struct sockaddr_storage peer;
        socklen_t len;
        char host[64];
        sd_event_source *io, *timer;
        DnsblCheck *dnsbl;
        bool counted;                 /* in its Address's connections */
        bool balancer;                /* a PROXY LOCAL/UNKNOWN header: the balancer's own
                                       * connection (a health check), not a client's */
} Pending;

static void pending_free(Pending *p, bool close_fd) {
        Acceptor *a = p->a;
        a->pending = g_list_remove(a->pending, p);
        a->n_pending--;
        sd_event_source_disable_unref(p->io);
        sd_event_source_disable_unref(p->timer);
        dnsbl_cancel(p->dnsbl);
        if (p->counted) {
                Address *r = address_find(a, p->host);
                if (r && r->connections > 0)
                        r->connections--;
        }
        if (close_fd)
                safe_close(p->fd);
        g_free(p);
}

/* Log, tell the client (prefix + reason) and close. */
static void refuse(Pending *p, const char *prefix, const char *reason, const char *format, ...) _printf_(4, 5);
static void refuse(Pending *p, const char *prefix, const char *reason, const char *format, ...) {
        Acceptor *a = p->a;
        char text[512];
        va_list ap;

        va_start(ap, format);
        vsnprintf(text, sizeof text, format, ap);
        va_end(ap);
        LogField f[] = { { "REMOTE_ADDR", p->host }, { "MESSAGE_ID", LOG_MESSAGE_REJECTED } };
        log_fields(LOG_WARNING, 0, f, ELEMENTSOF(f), "%s", text);
        a->n_refused++;
        if (prefix) {
                g_autofree char *line = g_strdup_printf("%s%s\r\n", prefix, reason);
                (void) !send(p->fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        pending_free(p, true);
        capacity_freed(a);
}

static void start_session(Pending *p) {
        Acceptor *a = p->a;
        void *session = NULL;
        int fd = p->fd;
        bool counted = p->counted;

        a->serving = p->listener;
        p->counted = false;                 /* the session's now */
        p->fd = -EBADF;
        struct sockaddr_storage peer = p->peer;
        socklen_t len = p->len;
        char host[64];
        memcpy(host, p->host, sizeof host);
        pending_free(p, false);
        int r = a->hooks.start(a->userdata, fd, (struct sockaddr *) &peer, len, &session);
        a->serving = NULL;
        if (r < 0) {
                log_error_errno(r, "cannot start a session for %s: %m", host);
                Address *rec = address_find(a, host);
                if (counted && rec && rec->connections > 0)
                        rec->connections--;
                capacity_freed(a);
                return;
        }
        a->sessions = g_list_prepend(a->sessions, session);
        a->n_sessions++;
        a->n_connections++;
}

static void on_dnsbl(void *userdata, const DnsblResult *result) {
        Pending *p = userdata;
        const DnsblConfig *c = p->a->dnsbl;

        p->dnsbl = NULL;
        if (result->refused > 0)
                log_warning("DNS block list%s %s refused the query for %s (an answer in 127.255.255.0/24: "
                            "a public resolver, or over the list's quota?): not counted as a listing",
                            result->refused == 1 ? "" : "s", result->refused_by, p->host);
        if (result->blocked) {
                if (result->listed > 0)
                        refuse(p, p->a->hooks.perm_refusal, "client address listed by a DNS block list",
                               "connection refused: listed by DNS block lists from %s (%s)", p->host, result->listed_by);
                else
                        refuse(p, p->a->hooks.temp_refusal, "DNS block lists did not answer",
                               "connection refused: DNS block lists did not answer in time from %s (%u of %u)",
                               p->host, result->timed_out, g_strv_length(c->zones));
                return;
        }
        if (result->listed > 0) {
                LogField f[] = { { "REMOTE_ADDR", p->host } };
                log_fields(LOG_NOTICE, 0, f, ELEMENTSOF(f), "connection allowed: listed by %u DNS block list%s (%s), threshold %u, from %s",
                           result->listed, result->listed == 1 ? "" : "s", result->listed_by, c->threshold, p->host);
        } else if (result->timed_out > 0)
                log_info("DNS block lists did not answer in time for %s (%u of %u): allowed", p->host,
                         result->timed_out, g_strv_length(c->zones));
        start_session(p);
}

/* The client's address is known: apply the per-address limits, then DNSBL. */
static void admit(Pending *p) {
        Acceptor *a = p->a;
        const AcceptorLimits *l = &a->limits;

        Address *r = address_get(a, p->host, (struct sockaddr *) &p->peer, p->len);
        uint64_t now = now_usec(a);
        /* A balancer health-checks every few seconds: never limit it for that. */
        if (!r->exempt && !p->balancer) {
                if (r->blocked_until > now) {
                        unsigned left = (unsigned) ((r->blocked_until - now + 999999u) / 1000000u);
                        refuse(p, a->hooks.temp_refusal, "too many errors from your address, try later",
                               "connection refused: address blocked for %u s more from %s (%s)", left, p->host, r->blocked_for);
                        return;
                }
                char detail[128];
                if (l->max_connections > 0 && r->connections >= l->max_connections) {
                        refuse(p, a->hooks.temp_refusal, "too many connections from your address",
                               "connection refused: too many concurrent connections from %s (%s)", p->host,
                               limit_detail(a, p->host, l->max_connections, "", detail, sizeof detail));
                        return;
                }
                if (l->max_connection_rate > 0 && ++r->new_connections > l->max_connection_rate) {
                        address_block(a, r, "too many connections in a minute");
                        refuse(p, a->hooks.temp_refusal, "too many connections from your address, try later",
                               "connection refused: too many connections in a minute from %s (%s)", p->host,
                               limit_detail(a, p->host, l->max_connection_rate, "", detail, sizeof detail));
                        return;
                }
        }
        r->connections++;
        p->counted = true;
        if (a->dnsbl && dnsbl_applies((struct sockaddr *) &p->peer, p->len)) {
                int k = dnsbl_check(a->event, a->dnsbl, (struct sockaddr *) &p->peer, p->len, on_dnsbl, p, &p->dnsbl);
                if (k >= 0)
                        return;
                log_warning_errno(k, "cannot check DNS block lists for %s: %m; allowed", p->host);
        }
        start_session(p);
}

static int on_proxy_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Pending *p = userdata;
        refuse(p, NULL, NULL, "connection closed: no PROXY protocol header in time on listener %s from %s",
               p->listener ? p->listener : "unknown", p->host);
        return 0;
}

static int on_proxy_readable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Pending *p = userdata;
        uint8_t buf[PROXY_HEADER_MAX];
        ProxyHeader h = {};
        const char *error = NULL;

        /* Edge-triggered: look at everything there is, take only the header. What follows
         * (a TLS ClientHello, a pipelined command) stays in the socket for the session. */
        ssize_t n = recv(fd, buf, sizeof buf, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                Acceptor *a = p->a;
                log_debug("connection from %s closed before its PROXY protocol header", p->host);
                pending_free(p, true);
                capacity_freed(a);
                return 0;
        }
        int r = proxy_header_parse(buf, (size_t) n, &h, &error);
        if (r == 0 && (size_t) n < sizeof buf)
                return 0;
        if (r <= 0) {
                refuse(p, NULL, NULL, "connection closed: bad PROXY protocol header on listener %s from %s: %s",
                       p->listener ? p->listener : "unknown", p->host, error ? error : "too long");
                return 0;
        }
        if (recv(fd, buf, (size_t) r, 0) != r) {
                refuse(p, NULL, NULL, "connection closed: cannot read the PROXY protocol header from %s: %s",
                       p->host, errno ? g_strerror(errno) : "short read");
                return 0;
        }
        p->io = sd_event_source_disable_unref(p->io);
        p->timer = sd_event_source_disable_unref(p->timer);
        if (!h.local) {
                memcpy(&p->peer, &h.source, h.source_len);
                p->len = h.source_len;
                if (sockaddr_to_host((struct sockaddr *) &p->peer, p->len, p->host, sizeof p->host, NULL) < 0)
                        g_strlcpy(p->host, "unknown", sizeof p->host);
        } else
                p->balancer = true;
        admit(p);
        return 0;
}

static int serve_fd(Acceptor *a, int fd, const struct sockaddr *peer, socklen_t len, const Listener *l) {
        Pending *p = g_new0(Pending, 1);
        int r;

        p->a = a;
        p->fd = fd;
        p->listener = l ? l->name : NULL;
        if (len > (socklen_t) sizeof p->peer)
                len = sizeof p->peer;
        memcpy(&p->peer, peer, len);
        p->len = len;
        if (sockaddr_to_host(peer, len, p->host, sizeof p->host, NULL) < 0)
                g_strlcpy(p->host, "unknown", sizeof p->host);
        a->pending = g_list_prepend(a->pending, p);
        a->n_pending++;
        if (a->n_sessions + a->n_pending >= a->max_sessions)
                accepting(a, false);
        if (!l || !l->proxy) {
                admit(p);
                return 0;
        }
        if (!acceptor_nets_contain(&a->proxy_from, peer, len)) {
                /* Whoever can send the header chooses the client address: only the balancer. */
                refuse(p, NULL, NULL, "connection refused: a PROXY protocol listener (%s) is not for %s "
                       "(see --proxy-protocol-from)", l->name, p->host);
                return 0;
        }
        r = sd_event_add_io(a->event, &p->io, fd, EPOLLIN | EPOLLET, on_proxy_readable, p);
        if (r >= 0)
                r = sd_event_add_time_relative(a->event, &p->timer, CLOCK_MONOTONIC, PROXY_HEADER_TIMEOUT_USEC, 100000u,
                                               on_proxy_timeout, p);
        if (r < 0) {
                log_error_errno(r, "cannot wait for the PROXY header from %s: %m", p->host);
                pending_free(p, true);
                return r;
        }
        return 0;
}

static int on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Acceptor *a = userdata;

        /* Accept until EAGAIN: with a burst of connections one wakeup serves them all. */
        for (unsigned i = 0; i < 256; i++) {
                struct sockaddr_storage peer;
                socklen_t len = sizeof peer;
                int cfd = accept4(fd, (struct sockaddr *) &peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                pause_accepting(a, errno);
                                return 0;
                        }
                        return log_error_errno(errno, "accept failed: %m");
                }
                if (peer.ss_family == AF_INET || peer.ss_family == AF_INET6) {
                        int one = 1;
                        /* Replies are written whole; no reason to wait for delayed ACKs. */
                        (void) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                }
                if (a->accept_warned) {
                        log_info("accepting connections again (%u open)", a->n_sessions);
                        a->accept_warned = false;
                }
                const Listener *l = NULL;
                for (size_t k = 0; k < a->listeners.n; k++)
                        if (a->listeners.items[k].fd == fd)
                                l = &a->listeners.items[k];
                (void) serve_fd(a, cfd, (struct sockaddr *) &peer, len, l);
                if (a->n_sessions + a->n_pending >= a->max_sessions || a->draining)
                        return 0;
        }
        return 0;
}

static void shutdown_all(Acceptor *a, bool abort) {
        /* Connections not yet served are simply closed: they were told nothing. */
        while (a->pending)
                pending_free(a->pending->data, true);
        GList *copy = g_list_copy(a->sessions);
        for (GList *l = copy; l; l = l->next)
                a->hooks.shutdown(a->userdata, l->data, abort);
        g_list_free(copy);
}

static int on_drain_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Acceptor *a = userdata;
        log_info("drain time over: aborting %u session%s", a->n_sessions, a->n_sessions == 1 ? "" : "s");
        shutdown_all(a, true);
        return 0;
}

static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Acceptor *a = userdata;

        if (a->draining)
                return 0;
        a->draining = true;
        (void) sd_notify(false, "STOPPING=1");
        log_info("shutting down: %u session%s open", a->n_sessions, a->n_sessions == 1 ? "" : "s");
        accepting(a, false);
        shutdown_all(a, false);
        a->hooks.status(a->userdata);
        (void) sd_event_add_time_relative(a->event, &a->drain_timer, CLOCK_MONOTONIC,
                                          (uint64_t) a->drain_timeout * 1000000u, 100000u, on_drain_timeout, a);
        maybe_exit(a);
        return 0;
}

int acceptor_start(Acceptor *a) {
        int r;

        a->per_address = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        r = sd_event_add_signal(a->event, NULL, SIGTERM, on_terminate, a);
        if (r >= 0)
                r = sd_event_add_signal(a->event, NULL, SIGINT, on_terminate, a);
        if (r < 0)
                return log_error_errno(r, "cannot watch SIGTERM and SIGINT (are they blocked?): %m");

        a->accept_sources = g_new0(sd_event_source *, a->listeners.n + 1);
        for (size_t i = 0; i < a->listeners.n; i++) {
                Listener *l = &a->listeners.items[i];
                if (l->connected) {
                        /* Accept=yes: systemd accepted for us; serve this one and exit. */
                        struct sockaddr_storage peer;
                        socklen_t len = sizeof peer;
                        if (getpeername(l->fd, (struct sockaddr *) &peer, &len) < 0)
                                return log_error_errno(errno, "getpeername on the inherited connection failed: %m");
                        a->single_session = true;
                        int fd = l->fd;
                        l->fd = -EBADF;
                        r = serve_fd(a, fd, (struct sockaddr *) &peer, len, l);
                        if (r < 0)
                                return r;
                        continue;
                }
                r = sd_event_add_io(a->event, &a->accept_sources[i], l->fd, EPOLLIN, on_accept, a);
                if (r < 0)
                        return log_error_errno(r, "cannot watch listener %s: %m", l->name);
        }
        r = sd_event_add_time_relative(a->event, &a->status_timer, CLOCK_MONOTONIC, 1000000u, 100000u, on_status_timer, a);
        if (r < 0)
                return r;
        maybe_exit(a);
        return 0;
}

void acceptor_done(Acceptor *a) {
        if (a->accept_sources) {
                for (size_t i = 0; i < a->listeners.n; i++)
                        sd_event_source_disable_unref(a->accept_sources[i]);
                g_free(a->accept_sources);
                a->accept_sources = NULL;
        }
        sd_event_source_disable_unref(a->status_timer);
        sd_event_source_disable_unref(a->drain_timer);
        sd_event_source_disable_unref(a->accept_timer);
        a->status_timer = a->drain_timer = a->accept_timer = NULL;
        if (a->per_address)
                g_hash_table_unref(a->per_address);
        a->per_address = NULL;
        while (a->pending)
                pending_free(a->pending->data, true);
        g_list_free(a->sessions);
        a->sessions = NULL;
        acceptor_nets_done(&a->limits.exempt);
        acceptor_nets_done(&a->proxy_from);
        listener_set_done(&a->listeners);
}
