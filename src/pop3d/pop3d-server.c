/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The emailrelay-pop3d server: accepting on adopted or bound listeners, per-address and total
 * connection limits, status for systemd, re-reading the secrets, and draining on SIGTERM. */

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "macro.h"
#include "pop3d.h"

static void update_status(Server *server) {
        (void) sd_notifyf(false, "STATUS=%u session%s, %" PRIu64 " login%s, %" PRIu64 " message%s deleted%s",
                          server->n_sessions, server->n_sessions == 1 ? "" : "s", server->n_logins,
                          server->n_logins == 1 ? "" : "s", server->n_deleted, server->n_deleted == 1 ? "" : "s",
                          server->draining ? ", shutting down" : "");
}

const Secrets *server_secrets(Server *server) {
        uint64_t now = 0;
        (void) sd_event_now(server->event, CLOCK_MONOTONIC, &now);
        if (now - server->secrets_checked >= 1000000u || server->secrets_checked == 0) {
                g_autofree char *error = NULL;
                server->secrets_checked = now;
                int r = secrets_reload_if_changed(server->secrets, &error);
                if (r < 0)
                        log_warning("cannot re-read the secrets file: %s (the previous secrets stay in force)", error);
                else if (r > 0) {
                        log_info("re-read the secrets file %s", secrets_path(server->secrets));
                        for (const char *const *w = secrets_warnings(server->secrets); *w; w++)
                                log_warning("%s", *w);
                }
        }
        return server->secrets;
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        update_status(userdata);
        return sd_event_source_set_time_relative(s, 5 * 1000000u);
}

static void accepting(Server *server, bool on) {
        for (size_t i = 0; i < server->listeners.n; i++)
                if (server->accept_sources[i])
                        (void) sd_event_source_set_enabled(server->accept_sources[i], on ? SD_EVENT_ON : SD_EVENT_OFF);
}

/* Out of file descriptors: stop accepting (the listener would stay readable and the loop
 * would spin) until a session ends or a second has passed. */
static int on_accept_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Server *server = userdata;
        server->accept_paused = false;
        if (!server->draining && !server->single_session && server->n_sessions < server->config.max_sessions)
                accepting(server, true);
        return 0;
}

static void pause_accepting(Server *server, int error) {
        if (server->accept_paused)
                return;
        server->accept_paused = true;
        accepting(server, false);
        /* Once per episode: retried every second while it lasts. */
        if (!server->accept_warned)
                log_warning_errno(error, "cannot accept more connections (%u open): %m; retrying every second",
                                  server->n_sessions);
        server->accept_warned = true;
        if (!server->accept_timer)
                (void) sd_event_add_time_relative(server->event, &server->accept_timer, CLOCK_MONOTONIC, 1000000u, 100000u,
                                                  on_accept_retry, server);
        else {
                (void) sd_event_source_set_time_relative(server->accept_timer, 1000000u);
                (void) sd_event_source_set_enabled(server->accept_timer, SD_EVENT_ONESHOT);
        }
}

static void maybe_exit(Server *server) {
        if ((server->draining || server->single_session) && server->n_sessions == 0)
                (void) sd_event_exit(server->event, 0);
}

void server_session_ended(Server *server, Session *s, const char *host) {
        server->sessions = g_list_remove(server->sessions, s);
        server->n_sessions--;
        gpointer count = g_hash_table_lookup(server->per_address, host);
        if (GPOINTER_TO_UINT(count) <= 1)
                g_hash_table_remove(server->per_address, host);
        else
                g_hash_table_insert(server->per_address, g_strdup(host), GUINT_TO_POINTER(GPOINTER_TO_UINT(count) - 1));
        if (server->n_sessions < server->config.max_sessions && !server->draining && !server->single_session) {
                server->accept_paused = false;
                accepting(server, true);
        }
        maybe_exit(server);
}

/* Refuse a connection before any session exists: one line, then close. */
static void refuse(int fd, const char *text) {
        (void) !send(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
        safe_close(fd);
}

static int serve_fd(Server *server, int fd, const struct sockaddr *peer, socklen_t len) {
        char host[64] = "unknown";
        uint16_t port = 0;
        Session *s = NULL;
        int r;

        (void) sockaddr_to_host(peer, len, host, sizeof host, &port);
        unsigned count = GPOINTER_TO_UINT(g_hash_table_lookup(server->per_address, host));
        if (server->config.max_per_address > 0 && count >= server->config.max_per_address) {
                LogField f[] = { { "REMOTE_ADDR", host }, { "MESSAGE_ID", LOG_MESSAGE_REJECTED } };
                log_fields(LOG_WARNING, 0, f, ELEMENTSOF(f), "too many connections from %s (limit %u): refused",
                           host, server->config.max_per_address);
                server->n_rejected++;
                refuse(fd, "-ERR too many connections from your address\r\n");
                return 0;
        }
        r = session_start(server, fd, peer, len, &s);
        if (r < 0)
                return log_error_errno(r, "cannot start a session for %s: %m", host);
        server->sessions = g_list_prepend(server->sessions, s);
        server->n_sessions++;
        server->n_connections++;
        g_hash_table_insert(server->per_address, g_strdup(host), GUINT_TO_POINTER(count + 1));
        if (server->n_sessions >= server->config.max_sessions)
                accepting(server, false);
        return 0;
}

static int on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Server *server = userdata;

        /* Accept until EAGAIN: with a burst of connections one wakeup serves them all. */
        for (unsigned i = 0; i < 256; i++) {
                struct sockaddr_storage peer;
                socklen_t len = sizeof peer;
                int cfd = accept4(fd, (struct sockaddr *) &peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                pause_accepting(server, errno);
                                return 0;
                        }
                        return log_error_errno(errno, "accept failed: %m");
                }
                if (peer.ss_family == AF_INET || peer.ss_family == AF_INET6) {
                        int one = 1;
                        /* Replies are written whole; no reason to wait for delayed ACKs. */
                        (void) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                }
                if (server->accept_warned) {
                        log_info("accepting connections again (%u open)", server->n_sessions);
                        server->accept_warned = false;
                }
                (void) serve_fd(server, cfd, (struct sockaddr *) &peer, len);
                if (server->n_sessions >= server->config.max_sessions)
                        return 0;
        }
        return 0;
}

int server_start(Server *server) {
        int r;

        server->per_address = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

        server->accept_sources = g_new0(sd_event_source *, server->listeners.n + 1);
        for (size_t i = 0; i < server->listeners.n; i++) {
                Listener *l = &server->listeners.items[i];
                if (l->connected) {
                        /* Accept=yes: systemd accepted for us; serve this one and exit. */
                        struct sockaddr_storage peer;
                        socklen_t len = sizeof peer;
                        if (getpeername(l->fd, (struct sockaddr *) &peer, &len) < 0)
                                return log_error_errno(errno, "getpeername on the inherited connection failed: %m");
                        server->single_session = true;
                        int fd = l->fd;
                        l->fd = -EBADF;
                        r = serve_fd(server, fd, (struct sockaddr *) &peer, len);
                        if (r < 0)
                                return r;
                        continue;
                }
                r = sd_event_add_io(server->event, &server->accept_sources[i], l->fd, EPOLLIN, on_accept, server);
                if (r < 0)
                        return log_error_errno(r, "cannot watch listener %s: %m", l->name);
        }
        r = sd_event_add_time_relative(server->event, &server->status_timer, CLOCK_MONOTONIC, 5 * 1000000u, 1000000u,
                                       on_status_timer, server);
        if (r < 0)
                return r;
        maybe_exit(server);
        return 0;
}

static int on_drain_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Server *server = userdata;
        log_info("drain time over: aborting %u session%s", server->n_sessions, server->n_sessions == 1 ? "" : "s");
        GList *copy = g_list_copy(server->sessions);
        for (GList *l = copy; l; l = l->next)
                session_shutdown(l->data, true);
        g_list_free(copy);
        return 0;
}

static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Server *server = userdata;

        if (server->draining)
                return 0;
        server->draining = true;
        (void) sd_notify(false, "STOPPING=1");
        log_info("shutting down: %u session%s open", server->n_sessions, server->n_sessions == 1 ? "" : "s");
        accepting(server, false);
        GList *copy = g_list_copy(server->sessions);
        for (GList *l = copy; l; l = l->next)
                session_shutdown(l->data, false);
        g_list_free(copy);
        update_status(server);
        (void) sd_event_add_time_relative(server->event, &server->drain_timer, CLOCK_MONOTONIC,
                                          (uint64_t) server->config.drain_timeout * 1000000u, 100000u, on_drain_timeout, server);
        maybe_exit(server);
        return 0;
}

int server_watch_signals(Server *server) {
        int r;
        r = sd_event_add_signal(server->event, NULL, SIGTERM, on_terminate, server);
        if (r < 0)
                return r;
        r = sd_event_add_signal(server->event, NULL, SIGINT, on_terminate, server);
        if (r < 0)
                return r;
        return 0;
}

void server_done(Server *server) {
        if (server->accept_sources) {
                for (size_t i = 0; i < server->listeners.n; i++)
                        sd_event_source_disable_unref(server->accept_sources[i]);
                g_free(server->accept_sources);
        }
        sd_event_source_disable_unref(server->status_timer);
        sd_event_source_disable_unref(server->drain_timer);
        sd_event_source_disable_unref(server->accept_timer);
        if (server->per_address)
                g_hash_table_unref(server->per_address);
        g_list_free(server->sessions);
        listener_set_done(&server->listeners);
}
