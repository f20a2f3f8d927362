/* SPDX-License-Identifier: GPL-3.0-or-later */
/* What every daemon of the suite does with its listeners: accept until EAGAIN, refuse past the
 * per-address and total limits, pause when out of file descriptors, serve an inherited
 * connection (Accept=yes) and exit, keep STATUS= fresh, and drain on SIGTERM/SIGINT. The
 * protocol is supplied as hooks. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <glib.h>
#include <systemd/sd-event.h>

#include "listen.h"

typedef struct AcceptorHooks {
        /* Start a session on fd (taken over whatever the result). */
        int (*start)(void *userdata, int fd, const struct sockaddr *peer, socklen_t len, void **ret_session);
        /* End a session: at once if idle; in a transaction only when abort is set. */
        void (*shutdown)(void *userdata, void *session, bool abort);
        /* Send STATUS= (called every second and on shutdown). */
        void (*status)(void *userdata);
        /* One line sent before closing a connection over the per-address limit. */
        const char *refusal;
} AcceptorHooks;

typedef struct Acceptor {
        sd_event *event;
        ListenerSet listeners;
        AcceptorHooks hooks;
        void *userdata;
        unsigned max_sessions;        /* all connections */
        unsigned max_per_address;     /* 0: no limit */
        unsigned drain_timeout;       /* seconds sessions may finish after SIGTERM */

        unsigned n_sessions;
        uint64_t n_connections;
        uint64_t n_refused;
        bool draining;
        bool single_session;          /* Accept=yes: exit after the one connection */
        const char *serving;          /* during hooks.start: the listener's name ("smtps"...) */

        /* private */
        GList *sessions;
        GHashTable *per_address;
        sd_event_source **accept_sources;
        sd_event_source *status_timer, *drain_timer, *accept_timer;
        bool accept_paused, accept_warned;
} Acceptor;

/* Watch the listeners (already in a->listeners), SIGTERM and SIGINT, and the status timer. */
int acceptor_start(Acceptor *a);
/* A session has ended and freed itself. */
void acceptor_session_ended(Acceptor *a, void *session, const char *host);
void acceptor_done(Acceptor *a);
