/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The emailrelay-smtpd server: the committer and the shared acceptor, with the SMTP hooks. */

#include <errno.h>
#include <systemd/sd-daemon.h>

#include "child.h"
#include "daemon.h"
#include "log.h"
#include "macro.h"
#include "smtpd-server.h"

static void status(void *userdata) {
        Server *server = userdata;
        const Acceptor *a = &server->acceptor;
        CommitterStats st;

        committer_get_stats(server->committer, &st);
        (void) sd_notifyf(false, "STATUS=%u session%s, %" PRIu64 " accepted, %" PRIu64 " rejected, commit latency %" PRIu64 " ms (max %" PRIu64 " ms)%s",
                          a->n_sessions, a->n_sessions == 1 ? "" : "s", server->n_accepted, server->n_rejected + a->n_refused,
                          st.last_latency_us / 1000, st.max_latency_us / 1000, a->draining ? ", shutting down" : "");
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

const Secrets *server_secrets(Server *server) {
        uint64_t now = 0;
        if (!server->secrets)
                return NULL;
        (void) sd_event_now(server->event, CLOCK_MONOTONIC, &now);
        daemon_refresh_secrets(server->secrets, now, &server->secrets_checked);
        return server->secrets;
}

int server_start(Server *server) {
        Acceptor *a = &server->acceptor;
        int r;

        r = committer_new(server->event, server->spool, &server->committer);
        if (r < 0)
                return log_error_errno(r, "cannot start the commit thread: %m");
        a->event = server->event;
        a->userdata = server;
        a->hooks = (AcceptorHooks){
                .start = start,
                .shutdown = shutdown_session,
                .status = status,
                .temp_refusal = "421 4.7.0 ",
                .perm_refusal = "554 5.7.1 ",
        };
        a->max_sessions = server->config.max_sessions;
        a->limits = server->config.limits;
        server->config.limits.exempt = (AcceptorNets){};   /* the acceptor's now */
        a->dnsbl = server->config.dnsbl;
        a->drain_timeout = server->config.drain_timeout;
        return acceptor_start(a);
}

void server_done(Server *server) {
        acceptor_done(&server->acceptor);
        committer_free(server->committer);
        child_free_released();   /* --immediate forwarders still saying QUIT */
}
