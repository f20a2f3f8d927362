/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The daemons' accept loop, limits and shutdown (see acceptor.h). */

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "acceptor.h"
#include "log.h"
#include "macro.h"

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Acceptor *a = userdata;
        a->hooks.status(a->userdata);
        return sd_event_source_set_time_relative(s, 1000000u);
}

static void accepting(Acceptor *a, bool on) {
        for (size_t i = 0; i < a->listeners.n; i++)
                if (a->accept_sources[i])
                        (void) sd_event_source_set_enabled(a->accept_sources[i], on ? SD_EVENT_ON : SD_EVENT_OFF);
}

static bool may_accept(const Acceptor *a) {
        return !a->draining && !a->single_session && a->n_sessions < a->max_sessions;
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
        if ((a->draining || a->single_session) && a->n_sessions == 0)
                (void) sd_event_exit(a->event, 0);
}

void acceptor_session_ended(Acceptor *a, void *session, const char *host) {
        a->sessions = g_list_remove(a->sessions, session);
        a->n_sessions--;
        unsigned count = GPOINTER_TO_UINT(g_hash_table_lookup(a->per_address, host));
        if (count <= 1)
                g_hash_table_remove(a->per_address, host);
        else
                g_hash_table_insert(a->per_address, g_strdup(host), GUINT_TO_POINTER(count - 1));
        if (may_accept(a)) {
                a->accept_paused = false;
                accepting(a, true);
        }
        maybe_exit(a);
}

static int serve_fd(Acceptor *a, int fd, const struct sockaddr *peer, socklen_t len) {
        char host[64] = "unknown";
        uint16_t port = 0;
        void *session = NULL;
        int r;

        (void) sockaddr_to_host(peer, len, host, sizeof host, &port);
        unsigned count = GPOINTER_TO_UINT(g_hash_table_lookup(a->per_address, host));
        if (a->max_per_address > 0 && count >= a->max_per_address) {
                LogField f[] = { { "REMOTE_ADDR", host }, { "MESSAGE_ID", LOG_MESSAGE_REJECTED } };
                log_fields(LOG_WARNING, 0, f, ELEMENTSOF(f), "too many connections from %s (limit %u): refused",
                           host, a->max_per_address);
                a->n_refused++;
                (void) !send(fd, a->hooks.refusal, strlen(a->hooks.refusal), MSG_NOSIGNAL | MSG_DONTWAIT);
                safe_close(fd);
                return 0;
        }
        r = a->hooks.start(a->userdata, fd, peer, len, &session);
        if (r < 0)
                return log_error_errno(r, "cannot start a session for %s: %m", host);
        a->sessions = g_list_prepend(a->sessions, session);
        a->n_sessions++;
        a->n_connections++;
        g_hash_table_insert(a->per_address, g_strdup(host), GUINT_TO_POINTER(count + 1));
        if (a->n_sessions >= a->max_sessions)
                accepting(a, false);
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
                a->serving = NULL;
                for (size_t k = 0; k < a->listeners.n; k++)
                        if (a->listeners.items[k].fd == fd)
                                a->serving = a->listeners.items[k].name;
                (void) serve_fd(a, cfd, (struct sockaddr *) &peer, len);
                a->serving = NULL;
                if (a->n_sessions >= a->max_sessions)
                        return 0;
        }
        return 0;
}

static void shutdown_all(Acceptor *a, bool abort) {
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

        a->per_address = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
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
                        a->serving = l->name;
                        r = serve_fd(a, fd, (struct sockaddr *) &peer, len);
                        a->serving = NULL;
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
        g_list_free(a->sessions);
        a->sessions = NULL;
        listener_set_done(&a->listeners);
}
