/* SPDX-License-Identifier: GPL-3.0-or-later */
/* What every daemon of the suite does with its listeners: accept until EAGAIN, read the PROXY
 * protocol header on the listeners that expect one, refuse past the per-address and total
 * limits, check DNS block lists, pause when out of file descriptors, serve an inherited
 * connection (Accept=yes) and exit, keep STATUS= fresh, and drain on SIGTERM/SIGINT. The
 * protocol is supplied as hooks.
 *
 * A connection is "pending" from accept until the session starts: while its PROXY header is
 * read and its DNSBL lookups run. Pending connections count against max_sessions. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <glib.h>
#include <systemd/sd-event.h>

#include "dnsbl.h"
#include "listen.h"

typedef struct AcceptorHooks {
        /* Start a session on fd (taken over whatever the result). */
        int (*start)(void *userdata, int fd, const struct sockaddr *peer, socklen_t len, void **ret_session);
        /* End a session: at once if idle; in a transaction only when abort is set. */
        void (*shutdown)(void *userdata, void *session, bool abort);
        /* Send STATUS= (called every second and on shutdown). */
        void (*status)(void *userdata);
        /* What a refused connection is told before it is closed, followed by the reason and
         * CRLF: for a temporary refusal (limits) "421 4.7.0 " or "-ERR [SYS/TEMP] ", for a
         * permanent one (DNSBL) "554 5.7.1 "; NULL to close without a word. */
        const char *temp_refusal, *perm_refusal;
} AcceptorHooks;

/* A set of addresses: "none", "any", or a comma list of addresses, CIDR networks and "local"
 * (what sockaddr_is_local() lets in: loopback, private, link-local, ULA). Unix peers are in
 * every set but "none". */
typedef struct AcceptorNets {
        struct AcceptorNet {
                int family;
                uint8_t addr[16];
                unsigned prefix;
        } *items;
        size_t n;
        bool any, local;
} AcceptorNets;

int acceptor_nets_parse(AcceptorNets *nets, const char *list, char **error);
bool acceptor_nets_contain(const AcceptorNets *nets, const struct sockaddr *sa, socklen_t len);
void acceptor_nets_done(AcceptorNets *nets);

/* Per client address. Counts run over one-minute windows, as Postfix's anvil does; going over
 * a rate refuses the address with 421 until its minute is over. Addresses in the exempt set
 * (loopback by default) are never limited. */
typedef struct AcceptorLimits {
        unsigned max_connections;     /* concurrent; 0: no limit */
        unsigned max_connection_rate; /* new connections a minute */
        unsigned max_auth_failures;   /* failed AUTH a minute */
        unsigned max_rejected;        /* rejected commands a minute */
        unsigned ipv6_prefix;         /* IPv6 clients counted by their network of this many
                                       * bits; 0 or 128: by address */
        AcceptorNets exempt;
} AcceptorLimits;

typedef enum AcceptorEvent {
        ACCEPTOR_AUTH_FAILURE,
        ACCEPTOR_REJECTED_COMMAND,
} AcceptorEvent;

typedef struct Acceptor {
        sd_event *event;
        ListenerSet listeners;
        AcceptorHooks hooks;
        void *userdata;
        unsigned max_sessions;        /* all connections, pending ones included */
        AcceptorLimits limits;
        AcceptorNets proxy_from;      /* who may send a PROXY header (--proxy-protocol-from) */
        const DnsblConfig *dnsbl;     /* NULL: no DNSBL checks */
        unsigned drain_timeout;       /* seconds sessions may finish after SIGTERM */

        unsigned n_sessions;
        unsigned n_pending;
        uint64_t n_connections;
        uint64_t n_refused;
        bool draining;
        bool single_session;          /* Accept=yes: exit after the one connection */
        const char *serving;          /* during hooks.start: the listener's name ("smtps"...) */

        /* private */
        GList *sessions;
        GList *pending;
        GHashTable *per_address;
        sd_event_source **accept_sources;
        sd_event_source *status_timer, *drain_timer, *accept_timer;
        bool accept_paused, accept_warned;
        unsigned gc_ticks;
} Acceptor;

/* Watch the listeners (already in a->listeners), SIGTERM and SIGINT, and the status timer. */
int acceptor_start(Acceptor *a);
/* A session has ended and freed itself. */
void acceptor_session_ended(Acceptor *a, void *session, const char *host);
/* Count an event against a client address (host as the session was started with). Returns
 * true when the address is now over its limit: the session should log it, answer 421 and
 * close; the address is refused until its minute is over. */
bool acceptor_note(Acceptor *a, const char *host, AcceptorEvent event);
/* "limit N a minute" for an event, with ", counted for <network>" when host was counted with
 * its IPv6 network: the detail of the session's log line. Returns buf. */
const char *acceptor_limit_detail(const Acceptor *a, const char *host, AcceptorEvent event, char *buf, size_t size);
void acceptor_done(Acceptor *a);
