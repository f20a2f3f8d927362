/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-smtpd: the server (configuration, spool, committer) and its SMTP sessions. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <glib.h>
#include <systemd/sd-event.h>

#include "acceptor.h"
#include "committer.h"
#include "filter.h"
#include "listen.h"
#include "sasl.h"
#include "secrets.h"
#include "tls.h"
#include "spool.h"
#include "verifier.h"

#define SMTP_MAX_COMMAND_LINE 510   /* RFC 5321 4.5.3.1.4: 512 octets with CRLF */
#define SMTP_MAX_TEXT_LINE 998      /* RFC 5321 4.5.3.1.6: 1000 octets with CRLF */
#define SMTP_MAX_PATH 256           /* RFC 5321 4.5.3.1.3 */

typedef struct SmtpdConfig {
        char *domain;
        bool remote_clients;
        bool anonymous_server;      /* terse greeting and EHLO text */
        bool anonymous_vrfy;        /* VRFY disabled */
        bool anonymous_content;     /* no Received line */
        uint64_t max_size;          /* --size; 0: unlimited */
        unsigned idle_timeout;      /* seconds */
        unsigned session_timeout;   /* seconds, whole session */
        unsigned max_recipients;
        AcceptorLimits limits;      /* per client address */
        DnsblConfig *dnsbl;         /* --dnsbl, or NULL */
        unsigned max_sessions;      /* all connections */
        unsigned drain_timeout;     /* on SIGTERM, how long sessions may finish */
        uint64_t min_free_bytes;    /* temp-fail MAIL below this much free spool space */
        bool pipelining, chunking, smtputf8, smtputf8strict, strictparsing, enhanced;
        FilterChain *filters;       /* --filter, may be NULL */
        unsigned filter_timeout;    /* --filter-timeout, seconds; also the verifier's */
        Verifier *verifier;         /* --address-verifier, may be NULL */
        bool auth;                  /* --server-auth: AUTH offered, required for MAIL and VRFY */
        bool pam;                   /* --server-auth=pam: passwords checked by PAM */
        SaslConfig auth_config;     /* --server-auth-config */
        unsigned auth_delay_ms;     /* before answering a failed AUTH */
        unsigned max_auth_failures; /* per connection, then it is dropped */
        TlsContext *tls;            /* server credentials, NULL without TLS */
        bool starttls;              /* --server-tls */
        bool tls_connection;        /* --server-tls-connection: every connection is TLS */
        bool tls_required;          /* --server-tls-required */
        unsigned handshake_timeout; /* seconds */
        /* --immediate: each message goes to the next hop before its end of data is answered,
         * by emailrelay-forward --immediate-session with this config file. */
        bool immediate;
        char *forwarder;            /* the emailrelay-forward to run */
        char *immediate_config;     /* --immediate-config, else smtpd's own config file */
        /* Raised when a filter asks for a rescan (exit 102, 103, 104): --rescan-file (the
         * front-end's flag), else the wake-up file, which the units' forwarder watches. */
        char *rescan_file;
} SmtpdConfig;

typedef struct Session Session;

typedef struct Server {
        sd_event *event;
        SmtpdConfig config;
        Spool *spool;
        Committer *committer;
        Acceptor acceptor;          /* listeners, limits, draining */
        uint64_t n_accepted, n_rejected, n_auth_failures;
        Secrets *secrets;           /* --server-auth, or NULL */
        uint64_t secrets_checked;   /* CLOCK_MONOTONIC usec of the last mtime check */
} Server;

/* The --server-auth secrets in force, re-read if the file changed (checked at most once a
 * second); NULL without --server-auth. */
const Secrets *server_secrets(Server *server);

/* Start a session on an accepted (or inherited connected) socket; takes the fd. */
int session_start(Server *server, int fd, const struct sockaddr *peer, socklen_t peer_len, Session **ret);
/* Ask a session to end: idle ones are told 421 at once, ones in a transaction when abort is
 * true (the drain timeout passed); a message being committed is always waited for. */
void session_shutdown(Session *s, bool abort);
/* Called by the session when it has ended and freed itself. */
static inline void server_session_ended(Server *server, Session *s, const char *host) {
        acceptor_session_ended(&server->acceptor, s, host);
}

/* "Mon, 2 Jan 2006 15:04:05 +0000" in the C locale (RFC 5322 date-time). */
char *smtp_date_now(void);
