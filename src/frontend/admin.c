/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The front-end's admin interface: E-MailRelay's --admin line protocol. */

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "lineio.h"
#include "log.h"
#include "macro.h"
#include "requeue.h"
#include "spool.h"

#define ADMIN_PROMPT "E-MailRelay> "
#define ADMIN_MAX_LINE 1024
#define ADMIN_MAX_CLIENTS 16
#define ADMIN_MAX_ERRORS 10

struct AdminClient {
        Admin *admin;
        LineIo *io;
        char line[ADMIN_MAX_LINE];
        size_t len;
        bool too_long;          /* the rest of an overlong line is being skipped */
        unsigned errors;
        bool flushing;          /* a flush runs for this client: no other command until it ends */
        GString *pending;       /* input that came behind the flush command */
        char host[64];
};

struct Admin {
        sd_event *event;
        ListenerSet listeners;
        sd_event_source **accept_sources;
        GList *clients;
        unsigned n_clients;
        char *spool_dir;
        bool terminate, remote_clients;
        AdminHooks hooks;
        void *userdata;
};

static void client_free(AdminClient *c) {
        Admin *a = c->admin;
        if (c->flushing && a->hooks.flush_abandoned)
                a->hooks.flush_abandoned(a->userdata, c);
        a->clients = g_list_remove(a->clients, c);
        a->n_clients--;
        lineio_free(c->io);
        if (c->pending)
                g_string_free(c->pending, true);
        g_free(c);
}

/* The reply's lines (LF-separated in text) with CRLF, then the prompt. */
static void reply(AdminClient *c, const char *text) {
        g_autoptr(GString) out = g_string_new(NULL);
        for (const char *p = text; *p;) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t) (nl - p) : strlen(p);
                g_string_append_len(out, p, n);
                g_string_append(out, "\r\n");
                p += n + (nl ? 1 : 0);
        }
        g_string_append(out, ADMIN_PROMPT);
        (void) lineio_write(c->io, out->str, out->len);
}

static int compare_ids(gconstpointer a, gconstpointer b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The spool and the ids of its messages in one state; an error is the client's reply. */
static int spool_ids(AdminClient *c, SpoolState state, Spool **ret_spool, GPtrArray **ret_ids) {
        int r = spool_open(c->admin->spool_dir, ret_spool);
        if (r >= 0)
                r = spool_list(*ret_spool, state, ret_ids);
        if (r < 0) {
                g_autofree char *text = g_strdup_printf("error: cannot list the spool directory: %s", g_strerror(-r));
                reply(c, text);
        }
        return r;
}

/* Ids of the messages in one state, one a line, or "<none>". */
static void list_state(AdminClient *c, SpoolState state) {
        g_autoptr(Spool) spool = NULL;
        g_autoptr(GPtrArray) ids = NULL;
        if (spool_ids(c, state, &spool, &ids) < 0)
                return;
        if (ids->len == 0) {
                reply(c, "<none>");
                return;
        }
        g_ptr_array_sort(ids, compare_ids);
        g_autoptr(GString) out = g_string_new(NULL);
        for (guint i = 0; i < ids->len; i++)
                g_string_append_printf(out, "%s%s", i ? "\n" : "", (const char *) ids->pdata[i]);
        reply(c, out->str);
}

static void unfail_all(AdminClient *c) {
        g_autoptr(Spool) spool = NULL;
        g_autoptr(GPtrArray) ids = NULL;
        if (spool_ids(c, SPOOL_STATE_BAD, &spool, &ids) < 0)
                return;
        unsigned n = 0;
        for (guint i = 0; i < ids->len; i++) {
                int r = requeue_unfail(spool, ids->pdata[i], (long long) time(NULL));
                if (r < 0)
                        log_warning("admin unfail-all: message %s: %s", (const char *) ids->pdata[i], g_strerror(-r));
                else
                        n++;
        }
        log_info("admin unfail-all from %s: %u failed message%s back in the queue", c->host, n, n == 1 ? "" : "s");
        reply(c, "OK");
}

static const char *help_text(const Admin *a) {
        return a->terminate ? "commands: failures, flush, forward, help, info, list, pid, quit, status, terminate, unfail-all" :
                              "commands: failures, flush, forward, help, info, list, pid, quit, status, unfail-all";
}

/* Returns false when the client is to be closed. */
static bool command(AdminClient *c, char *line) {
        Admin *a = c->admin;
        char *word = g_strstrip(line), *args = word;
        while (*args && !g_ascii_isspace(*args))
                args++;
        if (*args)
                *args++ = '\0';
        args = g_strstrip(args);

        if (!*word) {
                reply(c, "");
                return true;
        }
        if (!g_ascii_strcasecmp(word, "help"))
                reply(c, help_text(a));
        else if (!g_ascii_strcasecmp(word, "quit"))
                return false;
        else if (!g_ascii_strcasecmp(word, "pid")) {
                g_autofree char *text = g_strdup_printf("%d", (int) getpid());
                reply(c, text);
        } else if (!g_ascii_strcasecmp(word, "info")) {
                if (!*args || !g_ascii_strcasecmp(args, "version"))
                        reply(c, "emailrelay " PACKAGE_VERSION " (E-MailRelay compatible)");
                else if (!g_ascii_strcasecmp(args, "warranty") || !g_ascii_strcasecmp(args, "copyright"))
                        reply(c, "emailrelay is free software under the GNU General Public License, version 3 or later.\n"
                                 "It comes with ABSOLUTELY NO WARRANTY, to the extent permitted by law.");
                else
                        reply(c, "usage: info [version|copyright|warranty]");
        } else if (!g_ascii_strcasecmp(word, "list"))
                list_state(c, SPOOL_STATE_READY);
        else if (!g_ascii_strcasecmp(word, "failures"))
                list_state(c, SPOOL_STATE_BAD);
        else if (!g_ascii_strcasecmp(word, "unfail-all"))
                unfail_all(c);
        else if (!g_ascii_strcasecmp(word, "status")) {
                g_autoptr(GString) out = g_string_new(NULL);
                a->hooks.status(a->userdata, out);
                reply(c, out->str);
        } else if (!g_ascii_strcasecmp(word, "forward")) {
                const char *error = a->hooks.forward(a->userdata);
                g_autofree char *text = error ? g_strdup_printf("error: %s", error) : NULL;
                reply(c, text ? text : "OK");
        } else if (!g_ascii_strcasecmp(word, "flush")) {
                c->flushing = true;
                const char *error = a->hooks.flush(a->userdata, c);
                if (error) {
                        c->flushing = false;
                        g_autofree char *text = g_strdup_printf("error: %s", error);
                        reply(c, text);
                } else {
                        log_info("admin flush from %s", c->host);
                        lineio_pause(c->io);   /* the next command waits for the answer */
                }
        } else if (!g_ascii_strcasecmp(word, "terminate") && a->terminate) {
                log_info("admin terminate from %s", c->host);
                reply(c, "OK");
                a->hooks.terminate(a->userdata);
        } else if (!g_ascii_strcasecmp(word, "notify") || !g_ascii_strcasecmp(word, "dnsbl") ||
                   !g_ascii_strcasecmp(word, "smtp")) {
                /* Each would reach into emailrelay-smtpd, a process of its own here. */
                reply(c, "error: not supported by this relay: see journalctl or the log for events");
        } else {
                reply(c, "error: unrecognised command");
                if (++c->errors >= ADMIN_MAX_ERRORS)
                        return false;
        }
        return true;
}

/* Input bytes, split into commands: lines end at LF (netcat) or CRLF (telnet, E-MailRelay's
 * poke). While a flush runs, what follows it waits in c->pending. Returns false when the client
 * is to be closed (after what is queued is written). */
static bool feed(AdminClient *c, const char *data, size_t len) {
        for (size_t i = 0; i < len; i++) {
                if (c->flushing) {
                        if (!c->pending)
                                c->pending = g_string_new(NULL);
                        g_string_append_len(c->pending, data + i, len - i);
                        return true;
                }
                if (data[i] != '\n') {
                        if (c->len < sizeof c->line - 1)
                                c->line[c->len++] = data[i];
                        else
                                c->too_long = true;
                        continue;
                }
                c->line[c->len] = '\0';
                bool go_on;
                if (c->too_long) {
                        reply(c, "error: line too long");
                        go_on = ++c->errors < ADMIN_MAX_ERRORS;
                } else
                        go_on = command(c, c->line);
                c->len = 0;
                c->too_long = false;
                if (!go_on)
                        return false;
        }
        return true;
}

static int on_io(LineIo *io, LineIoEvent event, char *data, size_t len, int error, void *userdata) {
        AdminClient *c = userdata;

        switch (event) {
        case LINEIO_RAW:
                if (!feed(c, data, len))
                        (void) lineio_close_after_flush(io);
                else
                        lineio_read_raw(io, ADMIN_MAX_LINE);
                return 0;
        case LINEIO_EOF:
        case LINEIO_ERROR:
                client_free(c);
                return LINEIO_FREED;
        default:
                return 0;
        }
}

void admin_flush_done(Admin *a, AdminClient *client, const char *error) {
        if (!g_list_find(a->clients, client) || !client->flushing)
                return;
        client->flushing = false;
        g_autofree char *text = error ? g_strdup_printf("error: %s", error) : NULL;
        reply(client, text ? text : "OK");
        (void) lineio_resume(client->io);
        if (client->pending) {
                GString *pending = TAKE_PTR(client->pending);
                bool go_on = feed(client, pending->str, pending->len);
                g_string_free(pending, true);
                if (!go_on)
                        (void) lineio_close_after_flush(client->io);
        }
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Admin *a = userdata;

        for (unsigned i = 0; i < 64; i++) {
                struct sockaddr_storage ss;
                socklen_t sl = sizeof ss;
                int cfd = accept4(fd, (struct sockaddr *) &ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(-errno, "admin interface: cannot accept: %m");
                        return 0;
                }
                char host[64];
                uint16_t port = 0;
                if (sockaddr_to_host((struct sockaddr *) &ss, sl, host, sizeof host, &port) < 0)
                        g_strlcpy(host, "unknown", sizeof host);
                if (!a->remote_clients && !sockaddr_is_local((struct sockaddr *) &ss, sl)) {
                        log_warning("admin connection from %s refused: not a local address (see --remote-clients)", host);
                        close(cfd);
                        continue;
                }
                if (a->n_clients >= ADMIN_MAX_CLIENTS) {
                        log_warning("admin connection from %s refused: %u admin connections already", host, a->n_clients);
                        close(cfd);
                        continue;
                }
                AdminClient *c = g_new0(AdminClient, 1);
                c->admin = a;
                g_strlcpy(c->host, host, sizeof c->host);
                LineIoLimits limits = LINEIO_LIMITS_DEFAULT;
                limits.buffer_size = ADMIN_MAX_LINE * 4;
                limits.max_line = ADMIN_MAX_LINE;
                int r = lineio_new(a->event, cfd, &limits, on_io, c, &c->io);
                if (r < 0) {
                        log_warning_errno(r, "admin interface: cannot serve %s: %m", host);
                        close(cfd);
                        g_free(c);
                        continue;
                }
                lineio_read_raw(c->io, ADMIN_MAX_LINE);
                a->clients = g_list_prepend(a->clients, c);
                a->n_clients++;
                log_debug("admin connection from %s", host);
        }
        return 0;
}

int admin_new(sd_event *event, ListenerSet *set, const AdminConfig *config, const AdminHooks *hooks, void *userdata,
              Admin **ret) {
        Admin *a = g_new0(Admin, 1);
        int r = 0;

        a->event = sd_event_ref(event);
        a->listeners = *set;
        *set = (ListenerSet) {};
        a->spool_dir = g_strdup(config->spool_dir);
        a->terminate = config->terminate;
        a->remote_clients = config->remote_clients;
        a->hooks = *hooks;
        a->userdata = userdata;
        a->accept_sources = g_new0(sd_event_source *, a->listeners.n);
        for (size_t i = 0; i < a->listeners.n && r >= 0; i++)
                r = sd_event_add_io(event, &a->accept_sources[i], a->listeners.items[i].fd, EPOLLIN, on_accept, a);
        if (r < 0) {
                admin_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

Admin *admin_free(Admin *a) {
        if (!a)
                return NULL;
        while (a->clients)
                client_free(a->clients->data);
        for (size_t i = 0; i < a->listeners.n; i++)
                sd_event_source_disable_unref(a->accept_sources[i]);
        g_free(a->accept_sources);
        listener_set_done(&a->listeners);
        g_free(a->spool_dir);
        sd_event_unref(a->event);
        g_free(a);
        return NULL;
}
