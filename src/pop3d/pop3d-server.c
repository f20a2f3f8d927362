/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The emailrelay-pop3d server: the shared acceptor with the POP3 hooks, and re-reading the
 * secrets file. */

#include <errno.h>
#include <systemd/sd-daemon.h>

#include "daemon.h"
#include "log.h"
#include "macro.h"
#include "pop3d.h"

static void status(void *userdata) {
        Server *server = userdata;
        const Acceptor *a = &server->acceptor;
        (void) sd_notifyf(false, "STATUS=%u session%s, %" PRIu64 " login%s, %" PRIu64 " message%s deleted%s",
                          a->n_sessions, a->n_sessions == 1 ? "" : "s", server->n_logins,
                          server->n_logins == 1 ? "" : "s", server->n_deleted, server->n_deleted == 1 ? "" : "s",
                          a->draining ? ", shutting down" : "");
}

const Secrets *server_secrets(Server *server) {
        uint64_t now = 0;
        (void) sd_event_now(server->event, CLOCK_MONOTONIC, &now);
        daemon_refresh_secrets(server->secrets, now, &server->secrets_checked);
        return server->secrets;
}

static int start(void *userdata, int fd, const struct sockaddr *peer, socklen_t len, void **ret_session) {
        Session *s = NULL;
        int r = session_start(userdata, fd, peer, len, &s);
        if (r < 0)
                return r;
        *ret_session = s;
        return 0;
}

static void shutdown_session(void *userdata, void *session, bool abort) {
        session_shutdown(session, abort);
}

int server_start(Server *server) {
        Acceptor *a = &server->acceptor;

        a->event = server->event;
        a->userdata = server;
        a->hooks = (AcceptorHooks){
                .start = start,
                .shutdown = shutdown_session,
                .status = status,
                .temp_refusal = "-ERR ",
                .perm_refusal = "-ERR ",
        };
        a->max_sessions = server->config.max_sessions;
        a->limits = server->config.limits;
        server->config.limits.exempt = (AcceptorNets){};   /* the acceptor's now */
        a->drain_timeout = server->config.drain_timeout;
        return acceptor_start(a);
}

void server_done(Server *server) {
        acceptor_done(&server->acceptor);
}
