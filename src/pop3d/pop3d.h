/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-pop3d: the server (configuration, spool, secrets) and its POP3 sessions. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <glib.h>
#include <systemd/sd-event.h>

#include "acceptor.h"
#include "listen.h"
#include "sasl.h"
#include "secrets.h"
#include "spool.h"
#include "tls.h"

#define POP3_MAX_COMMAND_LINE 253   /* RFC 2449 4: 255 octets with CRLF */
#define POP3_MAX_AUTH_LINE 2048     /* an AUTH PLAIN response on its own line */
#define POP3_MAX_AUTH_FAILURES 3
#define POP3_MAX_MESSAGES 100000    /* a maildrop longer than this is served in part */

typedef struct Pop3dConfig {
        char *domain;               /* for the APOP challenge */
        bool remote_clients;
        bool no_delete;             /* --pop-no-delete */
        bool by_name;               /* --pop-by-name */
        unsigned idle_timeout;      /* seconds */
        AcceptorLimits limits;      /* per client address */
        unsigned max_sessions;
        unsigned drain_timeout;
        unsigned auth_delay_ms;     /* after a failed authentication */
        bool pam;                   /* --pop-auth=pam: passwords checked by PAM */
        SaslConfig auth_config;     /* --server-auth-config: PLAIN (and USER/PASS) and APOP */
        TlsContext *tls;            /* NULL without TLS */
        bool stls;                  /* --server-tls: STLS (RFC 2595) */
        bool tls_connection;        /* --server-tls-connection: POP3S on every connection */
        bool tls_required;          /* --server-tls-required: no login in the clear */
        unsigned handshake_timeout; /* seconds */
} Pop3dConfig;

typedef struct Session Session;

typedef struct Server {
        sd_event *event;
        Pop3dConfig config;
        Spool *spool;
        Secrets *secrets;
        uint64_t secrets_checked;   /* CLOCK_MONOTONIC usec of the last mtime check */
        Acceptor acceptor;          /* listeners, limits, draining */
        uint64_t n_logins, n_auth_failures, n_deleted, n_rejected;
} Server;

/* The server (pop3d-server.c). */
int server_start(Server *server);
void server_done(Server *server);
/* Called by the session when it has ended and freed itself. */
static inline void server_session_ended(Server *server, Session *s, const char *host) {
        acceptor_session_ended(&server->acceptor, s, host);
}
/* The secrets in force, re-read if the file changed (checked at most once a second). */
const Secrets *server_secrets(Server *server);

/* A session (pop3d-session.c). Takes the fd. */
int session_start(Server *server, int fd, const struct sockaddr *peer, socklen_t peer_len, Session **ret);
/* Ask a session to end (SIGTERM): at once when idle, after a message being sent otherwise;
 * abort when the drain timeout passed. Deletions are not committed. */
void session_shutdown(Session *s, bool abort);
