/* SPDX-License-Identifier: GPL-3.0-or-later */
/* One POP3 session of emailrelay-pop3d: RFC 1939 with CAPA, TOP, UIDL, USER (RFC 2449), APOP,
 * SASL (RFC 5034) and STLS (RFC 2595) against the secrets file. The maildrop is the spool (or
 * <spool>/<user>/ with --pop-by-name); replies use E-MailRelay's texts. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "daemon.h"
#include "lineio.h"
#include "log.h"
#include "pamauth.h"
#include "macro.h"
#include "pop3d.h"

#define RETR_CHUNK (64u * 1024u)
#define RETR_QUEUE_LIMIT (256u * 1024u)   /* stop reading the file while this much is queued */
#define MAX_BAD_COMMANDS 20

typedef enum SessionState {
        STATE_AUTHORIZATION,
        STATE_TRANSACTION,
        STATE_UPDATE,
        STATE_CLOSING,
        _STATE_MAX,
} SessionState;

static const char *const state_names[_STATE_MAX] = {
        [STATE_AUTHORIZATION] = "AUTHORIZATION",
        [STATE_TRANSACTION] = "TRANSACTION",
        [STATE_UPDATE] = "UPDATE",
        [STATE_CLOSING] = "closing",
};

typedef struct Message {
        char *id;
        uint64_t size;
        bool deleted;
        bool shared;                /* --pop-by-name: the content is in the main spool directory */
} Message;

/* A RETR or TOP being streamed from the content file. */
typedef struct Retrieval {
        int fd;
        char *buffer;
        bool top;
        uint64_t lines_left;        /* TOP: body lines still to send */
        bool in_body;
        bool line_start;
        bool last_cr;
        size_t line_len;
} Retrieval;

struct Session {
        Server *server;
        LineIo *io;
        SessionState state;
        char host[64];
        uint16_t port;
        bool logged_open;           /* "connection from" said: "connection closed" will be */
        char challenge[256];        /* APOP: "<pid.time@domain>" */
        char *user;                 /* USER given, or the authenticated user */
        SaslServer *sasl;           /* an AUTH exchange: lines are its responses */
        unsigned auth_failures;
        sd_event_source *auth_delay;
        PamCheck *pam_check;        /* --pop-auth=pam: a password being checked */
        char *pam_user;             /* for whom, */
        const char *pam_mechanism;  /* and how (a static string) */
        sd_event_source *idle_timer;
        unsigned bad_commands;
        bool over_limit;            /* a per-address limit was passed */
        AcceptorEvent over_limit_event;
        bool shutting_down;
        /* the maildrop */
        int lock_fd;                /* the maildrop directory, flock'ed */
        Spool *own_spool;           /* --pop-by-name: the sub-directory */
        Spool *maildrop;            /* own_spool or the server's */
        GArray *messages;           /* Message */
        Retrieval retr;
        /* TLS */
        Tls *tls_session;
        bool tls;                   /* the connection is encrypted */
        bool greeted;               /* POP3S: the greeting waits for the handshake */
};

static void session_free(Session *s);

static void session_set_state(Session *s, SessionState state) {
        if (s->state == state)
                return;
        log_debug("%s:%u: state %s -> %s", s->host, s->port, state_names[s->state], state_names[state]);
        s->state = state;
}

_printf_(2, 3) static void reply(Session *s, const char *format, ...) {
        char text[512];
        va_list ap;

        va_start(ap, format);
        vsnprintf(text, sizeof text, format, ap);
        va_end(ap);
        log_protocol_peer(true, text, strlen(text), false, s->host, s->port);
        (void) lineio_printf(s->io, "%s\r\n", text);
}

/* The client as E-MailRelay's log lines show it: 192.0.2.1:4321, [2001:db8::1]:4321. */
static const char *peer_display(const Session *s, char *buf, size_t size) {
        bool v6 = strchr(s->host, ':') != NULL;
        snprintf(buf, size, "%s%s%s:%u", v6 ? "[" : "", s->host, v6 ? "]" : "", s->port);
        return buf;
}

_printf_(4, 5) static void log_event(Session *s, int level, const char *message_id, const char *format, ...) {
        char text[1024], port[8];
        va_list ap;

        va_start(ap, format);
        vsnprintf(text, sizeof text, format, ap);
        va_end(ap);
        snprintf(port, sizeof port, "%u", s->port);
        LogField fields[] = {
                { "REMOTE_ADDR", s->host },
                { "REMOTE_PORT", port },
                { "MESSAGE_ID", message_id },
                { "EMAILRELAY_POP_USER", s->state == STATE_TRANSACTION ? s->user : NULL },
        };
        log_fields(level, 0, fields, ELEMENTSOF(fields), "%s", text);
}

static void close_with(Session *s, const char *text) {
        if (text)
                reply(s, "%s", text);
        session_set_state(s, STATE_CLOSING);
        (void) lineio_close_after_flush(s->io);
}

/* Over a per-address limit (see acceptor.h): say so, log it and close. */
static bool end_if_over_limit(Session *s) {
        if (!s->over_limit || s->state == STATE_CLOSING)
                return false;
        bool auth = s->over_limit_event == ACCEPTOR_AUTH_FAILURE;
        char detail[128];
        log_event(s, LOG_WARNING, auth ? LOG_MESSAGE_AUTH_FAIL : LOG_MESSAGE_REJECTED,
                  "session closed: too many %s from %s (%s)",
                  auth ? "failed logins" : "rejected commands", s->host,
                  acceptor_limit_detail(&s->server->acceptor, s->host, s->over_limit_event, detail, sizeof detail));
        close_with(s, "-ERR too many errors from your address, try later");
        return true;
}

static void rejected(Session *s) {
        s->bad_commands++;
        if (!s->over_limit && acceptor_note(&s->server->acceptor, s->host, ACCEPTOR_REJECTED_COMMAND)) {
                s->over_limit = true;
                s->over_limit_event = ACCEPTOR_REJECTED_COMMAND;
        }
}

/* ---- the maildrop ---- */

static void message_clear(gpointer p) {
        g_free(((Message *) p)->id);
}

static int compare_messages(gconstpointer a, gconstpointer b) {
        return strcmp(((const Message *) a)->id, ((const Message *) b)->id);
}

static bool content_size(int dir_fd, const char *id, uint64_t *ret) {
        g_autofree char *name = g_strconcat(id, ".content", NULL);
        struct stat st;
        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                return false;
        *ret = (uint64_t) st.st_size;
        return true;
}

/* Only "<id>.envelope" (never .new, .busy or .bad) whose content is there and not empty, by
 * name. Sizes come from the file system; no content is read. */
static int maildrop_list(Session *s) {
        int dir_fd = spool_dir_fd(s->maildrop);
        int main_fd = spool_dir_fd(s->server->spool);
        _cleanup_close_ int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return negative_errno();
        DIR *d = fdopendir(fd);
        if (!d)
                return negative_errno();
        fd = -EBADF;
        rewinddir(d);

        s->messages = g_array_new(false, true, sizeof(Message));
        g_array_set_clear_func(s->messages, message_clear);
        struct dirent *de;
        while ((de = readdir(d)) && s->messages->len < POP3_MAX_MESSAGES) {
                if (!g_str_has_suffix(de->d_name, ".envelope"))
                        continue;
                g_autofree char *id = g_strndup(de->d_name, strlen(de->d_name) - strlen(".envelope"));
                Message m = { 0 };
                if (!spool_id_is_valid(id))
                        continue;
                if (content_size(dir_fd, id, &m.size))
                        m.shared = false;
                else if (s->own_spool && content_size(main_fd, id, &m.size))
                        m.shared = true;
                else
                        continue;
                if (m.size == 0)
                        continue;
                m.id = TAKE_PTR(id);
                g_array_append_val(s->messages, m);
        }
        closedir(d);
        g_array_sort(s->messages, compare_messages);
        return 0;
}

/* A user name usable as a sub-directory of the spool. */
static bool user_is_valid_dir(const char *user) {
        return spool_id_is_valid(user) && !streq(user, "postmaster");
}

static int maildrop_open(Session *s) {
        Server *server = s->server;
        int r;

        if (server->config.by_name) {
                if (!user_is_valid_dir(s->user))
                        return -EINVAL;
                if (mkdirat(spool_dir_fd(server->spool), s->user, 0770) < 0 && errno != EEXIST)
                        return negative_errno();
                /* By the spool's descriptor and never through a symbolic link: a link planted
                 * in the spool would serve a directory outside it. */
                r = spool_open_sub(server->spool, s->user, &s->own_spool);
                if (r == -ELOOP)
                        log_event(s, LOG_WARNING, NULL, "the maildrop %s/%s is a symbolic link: refused",
                                  spool_path(server->spool), s->user);
                if (r < 0)
                        return r;
                s->maildrop = s->own_spool;
        } else
                s->maildrop = server->spool;

        /* A fresh open file description of the directory: flock conflicts with every other
         * session's, in this process or another. */
        s->lock_fd = openat(spool_dir_fd(s->maildrop), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->lock_fd < 0)
                return negative_errno();
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EBUSY : negative_errno();
        return maildrop_list(s);
}

static void maildrop_close(Session *s) {
        s->lock_fd = safe_close(s->lock_fd);
        if (s->messages) {
                g_array_unref(s->messages);
                s->messages = NULL;
        }
        s->own_spool = spool_free(s->own_spool);
        s->maildrop = NULL;
}

static bool envelope_exists(int dir_fd, const char *id) {
        static const SpoolState states[] = { SPOOL_STATE_READY, SPOOL_STATE_BUSY, SPOOL_STATE_BAD, SPOOL_STATE_NEW };
        for (size_t i = 0; i < ELEMENTSOF(states); i++) {
                g_autofree char *name = g_strconcat(id, spool_state_suffix(states[i]), NULL);
                if (faccessat(dir_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                        return true;
        }
        return false;
}

/* Whether another envelope with this id is in the main spool directory or another user's
 * sub-directory: then the shared content stays. */
static bool shared_content_in_use(Session *s, const char *id) {
        int main_fd = spool_dir_fd(s->server->spool);
        bool used = envelope_exists(main_fd, id);
        _cleanup_close_ int fd = fcntl(main_fd, F_DUPFD_CLOEXEC, 3);
        if (used || fd < 0)
                return true;
        DIR *d = fdopendir(fd);
        if (!d)
                return true;
        fd = -EBADF;
        rewinddir(d);
        struct dirent *de;
        while (!used && (de = readdir(d))) {
                if (de->d_name[0] == '.' || streq(de->d_name, s->user))
                        continue;
                if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                        continue;
                _cleanup_close_ int sub = openat(main_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (sub >= 0)
                        used = envelope_exists(sub, id);
        }
        closedir(d);
        return used;
}

/* UPDATE state: remove what was DELEted. Returns the number that could not be removed. */
static unsigned maildrop_commit(Session *s) {
        Server *server = s->server;
        unsigned failed = 0, removed = 0;

        for (guint i = 0; i < s->messages->len; i++) {
                Message *m = &g_array_index(s->messages, Message, i);
                if (!m->deleted)
                        continue;
                if (server->config.no_delete) {
                        log_event(s, LOG_INFO, NULL, "message %s not removed (--pop-no-delete)", m->id);
                        continue;
                }
                int r = spool_delete(s->maildrop, m->id);
                if (r == -ENOENT)
                        r = 0;   /* gone already (forwarded meanwhile): what the client wanted */
                if (r < 0) {
                        failed++;
                        log_event(s, LOG_WARNING, NULL, "cannot remove message %s: %s", m->id,
                                  r == -EBUSY ? "it is being forwarded" : g_strerror(-r));
                        continue;
                }
                if (m->shared && !shared_content_in_use(s, m->id)) {
                        g_autofree char *name = g_strconcat(m->id, ".content", NULL);
                        if (unlinkat(spool_dir_fd(server->spool), name, 0) < 0 && errno != ENOENT)
                                log_event(s, LOG_WARNING, NULL, "cannot remove %s: %s", name, g_strerror(errno));
                }
                removed++;
                log_event(s, LOG_INFO, NULL, "message %s deleted", m->id);
        }
        if (removed > 0) {
                (void) spool_sync_dir(s->maildrop);
                if (s->own_spool)
                        (void) spool_sync_dir(server->spool);
        }
        server->n_deleted += removed;
        return failed;
}

/* ---- arguments ---- */

static bool parse_number(const char *s, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;
        if (!s || !*s || strlen(s) > 10)
                return false;
        for (const char *p = s; *p; p++) {
                if (!g_ascii_isdigit(*p))
                        return false;
                v = v * 10 + (uint64_t) (*p - '0');
        }
        if (v > max)
                return false;
        *ret = v;
        return true;
}

/* A message number argument: replies and returns NULL when it is not usable. */
static Message *get_message(Session *s, const char *arg) {
        uint64_t n = 0;
        if (!parse_number(arg, UINT32_MAX, &n) || n == 0) {
                reply(s, "-ERR invalid message number");
                return NULL;
        }
        if (n > s->messages->len) {
                reply(s, "-ERR no such message");
                return NULL;
        }
        Message *m = &g_array_index(s->messages, Message, n - 1);
        if (m->deleted) {
                reply(s, "-ERR message deleted");
                return NULL;
        }
        return m;
}

/* ---- authentication ---- */

static void login(Session *s) {
        int r = maildrop_open(s);
        if (r < 0) {
                if (r == -EBUSY) {
                        log_event(s, LOG_INFO, NULL, "maildrop of \"%s\" locked by another session", s->user);
                        reply(s, "-ERR maildrop locked");
                } else {
                        log_event(s, LOG_ERR, NULL, "cannot open the maildrop of \"%s\": %s", s->user, g_strerror(-r));
                        reply(s, "-ERR cannot open maildrop");
                }
                maildrop_close(s);
                g_clear_pointer(&s->user, g_free);
                return;
        }
        session_set_state(s, STATE_TRANSACTION);
        s->server->n_logins++;
        log_event(s, LOG_INFO, NULL, "pop authentication of \"%s\" from %s: %u message%s", s->user, s->host,
                  s->messages->len, s->messages->len == 1 ? "" : "s");
        reply(s, "+OK authenticated");
}

static int on_auth_delay(sd_event_source *source, uint64_t usec, void *userdata) {
        Session *s = userdata;
        s->auth_delay = sd_event_source_disable_unref(s->auth_delay);
        reply(s, "-ERR authentication failed");
        if (end_if_over_limit(s))
                return 0;
        if (s->auth_failures >= POP3_MAX_AUTH_FAILURES) {
                log_event(s, LOG_WARNING, LOG_MESSAGE_AUTH_FAIL, "too many authentication failures: disconnecting");
                close_with(s, NULL);
                return 0;
        }
        (void) lineio_resume(s->io);
        return 0;
}

/* Answer after a delay, taking no commands meanwhile: guessing gets slow. */
static void auth_failed(Session *s, const char *user, const char *mechanism) {
        s->auth_failures++;
        s->server->n_auth_failures++;
        if (!s->over_limit && acceptor_note(&s->server->acceptor, s->host, ACCEPTOR_AUTH_FAILURE)) {
                s->over_limit = true;
                s->over_limit_event = ACCEPTOR_AUTH_FAILURE;
        }
        _cleanup_free_ char *quoted = log_quotable(user, 64);
        log_event(s, LOG_WARNING, LOG_MESSAGE_AUTH_FAIL, "pop authentication failed for \"%s\" from %s (%s)",
                  quoted, s->host, mechanism);
        g_clear_pointer(&s->user, g_free);
        lineio_pause(s->io);
        int r = sd_event_add_time_relative(s->server->event, &s->auth_delay, CLOCK_MONOTONIC,
                                           (uint64_t) s->server->config.auth_delay_ms * 1000u, 1000u, on_auth_delay, s);
        if (r < 0)
                (void) on_auth_delay(NULL, 0, s);
}

static bool password_ok(Session *s, const char *user, const char *password, size_t len) {
        const char *secret = secrets_server_plain(server_secrets(s->server), user);
        return secret && secrets_equal(secret, strlen(secret), password, len);
}

/* --pop-auth=pam: PAM's answer. */
static void on_pam_checked(int result, const char *error, void *userdata) {
        Session *s = userdata;
        g_autofree char *user = TAKE_PTR(s->pam_user);

        s->pam_check = NULL;
        if (result == -EAGAIN) {
                /* Not the client's doing: no failed login for the limits and fail2ban. */
                _cleanup_free_ char *quoted = log_quotable(user, 64);
                log_event(s, LOG_ERR, NULL, "PAM could not check \"%s\" from %s (%s): %s", quoted, s->host,
                          s->pam_mechanism, error ? error : "unknown error");
                g_clear_pointer(&s->user, g_free);
                reply(s, "-ERR [SYS/TEMP] temporary authentication failure");
                (void) lineio_resume(s->io);
                return;
        }
        if (result < 0) {
                log_event(s, LOG_DEBUG, NULL, "PAM: %s", error ? error : "no");
                auth_failed(s, user, s->pam_mechanism);   /* input stays held until the delayed -ERR */
                return;
        }
        g_free(s->user);
        s->user = TAKE_PTR(user);
        login(s);
        (void) lineio_resume(s->io);
}

/* PAM may take seconds: in a thread, with this session's input held meanwhile. */
static void pam_check(Session *s, const char *user, const char *password, const char *mechanism) {
        g_free(s->pam_user);
        s->pam_user = g_strdup(user);
        s->pam_mechanism = mechanism;
        lineio_pause(s->io);
        int r = pamauth_check(s->server->event, user, password, s->host, on_pam_checked, s, &s->pam_check);
        if (r < 0)
                on_pam_checked(-EAGAIN, g_strerror(-r), s);
}

/* PLAIN (and with it USER/PASS) works with "server plain" secrets, or PAM, where
 * --server-auth-config allows it for this session's TLS state; APOP needs the secret. */
static bool plain_offered(Session *s) {
        const Pop3dConfig *c = &s->server->config;
        return (c->pam || secrets_server_has_plain(server_secrets(s->server))) &&
               sasl_config_allows(&c->auth_config, "PLAIN", s->tls);
}

static bool apop_offered(Session *s) {
        return !s->server->config.pam && secrets_server_has_plain(server_secrets(s->server)) &&
               sasl_config_allows(&s->server->config.auth_config, "APOP", s->tls);
}

/* Credentials only over TLS where TLS is there to be had: with STLS configured, logins in the
 * clear (USER/PASS, APOP and SASL alike) wait for it, unless --server-auth-config names what
 * may be used before TLS (m:); --server-tls-required allows no exception. */
static bool login_needs_stls(const Session *s) {
        const Pop3dConfig *c = &s->server->config;
        return !s->tls && (c->tls_required || (c->stls && !c->auth_config.allow));
}

/* Replies and returns false when a login must wait for STLS. */
static bool tls_allows_login(Session *s) {
        if (login_needs_stls(s)) {
                reply(s, "-ERR must use STLS before authentication");
                return false;
        }
        return true;
}

static void cmd_user(Session *s, const char *args) {
        if (!tls_allows_login(s))
                return;
        if (!plain_offered(s)) {
                reply(s, "-ERR no SASL PLAIN mechanism to do USER/PASS authentication");
                return;
        }
        if (isempty(args)) {
                reply(s, "-ERR missing user name");
                return;
        }
        g_free(s->user);
        s->user = g_strdup(args);
        reply(s, "+OK user: %.200s", s->user);
}

static void cmd_pass(Session *s, const char *args) {
        if (!tls_allows_login(s))
                return;
        if (!s->user) {
                reply(s, "-ERR no user name given");
                return;
        }
        if (!args)
                args = "";
        if (s->server->config.pam) {
                g_autofree char *user = g_strdup(s->user);
                pam_check(s, user, args, "USER/PASS");
                return;
        }
        if (!password_ok(s, s->user, args, strlen(args))) {
                g_autofree char *user = g_strdup(s->user);
                auth_failed(s, user, "USER/PASS");
                return;
        }
        login(s);
}

static void cmd_apop(Session *s, const char *args) {
        if (!tls_allows_login(s))
                return;
        if (!apop_offered(s)) {
                reply(s, "-ERR APOP not available");
                return;
        }
        const char *space = args ? strrchr(args, ' ') : NULL;
        if (!space || space == args || strlen(space + 1) != 32) {
                reply(s, "-ERR invalid APOP arguments");
                return;
        }
        g_autofree char *user = g_strndup(args, (size_t) (space - args));
        g_autofree char *digest = g_ascii_strdown(space + 1, -1);
        const char *secret = secrets_server_plain(server_secrets(s->server), user);
        bool ok = false;
        if (secret) {
                g_autofree char *text = g_strconcat(s->challenge, secret, NULL);
                g_autofree char *expect = g_compute_checksum_for_string(G_CHECKSUM_MD5, text, -1);
                ok = secrets_equal(expect, strlen(expect), digest, strlen(digest));
                explicit_bzero(text, strlen(text));
        }
        if (!ok) {
                auth_failed(s, user, "APOP");
                return;
        }
        g_free(s->user);
        s->user = TAKE_PTR(user);
        login(s);
}

/* SASL (RFC 5034) through the shared mechanisms: what the secrets allow and
 * --server-auth-config lets through for this session's TLS state. */
static char *sasl_offered(Session *s) {
        const Pop3dConfig *c = &s->server->config;
        if (login_needs_stls(s))
                return g_strdup("");
        return c->pam ? sasl_server_mechanisms_pam(&c->auth_config, s->tls) :
                        sasl_server_mechanisms(server_secrets(s->server), &c->auth_config, s->tls);
}

static void auth_end(Session *s) {
        s->sasl = sasl_server_free(s->sasl);
        lineio_set_max_line(s->io, POP3_MAX_COMMAND_LINE);
}

static void auth_result(Session *s, int r, const char *challenge) {
        const char *mech = sasl_mech_to_string(sasl_server_mech(s->sasl));
        g_autofree char *user = g_strdup(sasl_server_id(s->sasl));

        if (r == SASL_CONTINUE) {
                reply(s, "+ %s", challenge);
                return;
        }
        if (r == SASL_CHECK) {
                g_autofree char *password = g_strdup(sasl_server_password(s->sasl));
                auth_end(s);
                pam_check(s, user, password, mech);
                explicit_bzero(password, strlen(password));
                return;
        }
        auth_end(s);
        switch (r) {
        case SASL_DONE:
                g_free(s->user);
                s->user = TAKE_PTR(user);
                login(s);
                break;
        case -ECANCELED:
                reply(s, "-ERR authentication cancelled");
                break;
        case -EINVAL:
                reply(s, "-ERR invalid authentication response");
                break;
        default:
                auth_failed(s, user, mech);
                break;
        }
}

static void auth_response(Session *s, char *line) {
        g_autofree char *challenge = NULL;
        int r = sasl_server_step(s->sasl, line, &challenge);
        explicit_bzero(line, strlen(line));
        auth_result(s, r, challenge);
}

static void cmd_auth(Session *s, const char *args) {
        g_autofree char *offered = sasl_offered(s);
        g_autofree char *challenge = NULL;

        if (isempty(args)) {
                /* RFC 1734's list form: one mechanism a line. */
                g_auto(GStrv) mechs = g_strsplit(offered, " ", -1);
                g_autofree char *list = g_strjoinv("\r\n", mechs);
                reply(s, "+OK%s%s\r\n.", *offered ? "\r\n" : "", list);
                return;
        }
        if (!tls_allows_login(s))
                return;
        g_autofree char *mechanism = g_strndup(args, strcspn(args, " "));
        const char *initial = args + strlen(mechanism);
        while (*initial == ' ')
                initial++;
        if (sasl_server_new(mechanism, offered, s->server->config.pam ? NULL : server_secrets(s->server),
                            s->server->config.domain, &s->sasl) < 0) {
                reply(s, "-ERR unsupported SASL mechanism");
                return;
        }
        lineio_set_max_line(s->io, POP3_MAX_AUTH_LINE);
        int r = sasl_server_step(s->sasl, *initial ? initial : NULL, &challenge);
        auth_result(s, r, challenge);
}

/* ---- retrieval ---- */

static void retrieval_end(Session *s) {
        s->retr.fd = safe_close(s->retr.fd);
        g_clear_pointer(&s->retr.buffer, g_free);
}

/* Byte-stuff one chunk (RFC 1939 3) and, for TOP, stop after the wanted body lines. Returns
 * true when TOP has sent enough. */
static bool retrieval_chunk(Session *s, const char *p, size_t n) {
        Retrieval *t = &s->retr;
        size_t seg = 0;

        for (size_t i = 0; i < n; i++) {
                char c = p[i];
                if (t->line_start) {
                        t->line_start = false;
                        t->line_len = 0;
                        t->last_cr = false;
                        if (c == '.') {
                                (void) lineio_write(s->io, p + seg, i - seg);
                                (void) lineio_write(s->io, ".", 1);
                                seg = i;
                        }
                }
                if (c != '\n') {
                        t->line_len++;
                        t->last_cr = c == '\r';
                        continue;
                }
                t->line_start = true;
                if (!t->top)
                        continue;
                if (!t->in_body) {
                        if (t->line_len == 0 || (t->line_len == 1 && t->last_cr))
                                t->in_body = true;
                        else
                                continue;
                } else
                        t->lines_left--;
                if (t->lines_left == 0) {
                        (void) lineio_write(s->io, p + seg, i + 1 - seg);
                        return true;
                }
        }
        (void) lineio_write(s->io, p + seg, n - seg);
        return false;
}

static void retrieval_continue(Session *s) {
        Retrieval *t = &s->retr;

        while (lineio_queued_output(s->io) < RETR_QUEUE_LIMIT) {
                ssize_t n = read(t->fd, t->buffer, RETR_CHUNK);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        /* Too late for -ERR: the client would take it for content. */
                        log_event(s, LOG_ERR, NULL, "cannot read a message for %s: %s", s->user, g_strerror(errno));
                        retrieval_end(s);
                        close_with(s, NULL);
                        return;
                }
                if (n == 0 || retrieval_chunk(s, t->buffer, (size_t) n)) {
                        if (!t->line_start)
                                (void) lineio_write(s->io, "\r\n", 2);
                        (void) lineio_write(s->io, ".\r\n", 3);
                        retrieval_end(s);
                        if (s->shutting_down)
                                close_with(s, NULL);
                        else
                                (void) lineio_resume(s->io);
                        return;
                }
        }
        lineio_notify_drained(s->io);
}

static int open_content(Session *s, const Message *m) {
        return spool_open_content(m->shared ? s->server->spool : s->maildrop, m->id);
}

static void retrieval_start(Session *s, Message *m, bool top, uint64_t lines) {
        int fd = open_content(s, m);
        if (fd < 0) {
                log_event(s, LOG_WARNING, NULL, "cannot open the content of %s: %s", m->id, g_strerror(-fd));
                reply(s, "-ERR no such message");
                return;
        }
        s->retr = (Retrieval){
                .fd = fd,
                .buffer = g_malloc(RETR_CHUNK),
                .top = top,
                .lines_left = lines,
                .line_start = true,
        };
        if (top)
                reply(s, "+OK top of message follows");
        else
                reply(s, "+OK %" PRIu64 " octets", m->size);
        /* No further commands until the message is out: replies must not interleave. */
        lineio_pause(s->io);
        retrieval_continue(s);
}

/* ---- transaction commands ---- */

static void cmd_stat(Session *s) {
        unsigned n = 0;
        uint64_t size = 0;
        for (guint i = 0; i < s->messages->len; i++) {
                const Message *m = &g_array_index(s->messages, Message, i);
                if (!m->deleted) {
                        n++;
                        size += m->size;
                }
        }
        reply(s, "+OK %u %" PRIu64, n, size);
}

static void cmd_list(Session *s, const char *args, bool uidl) {
        if (!isempty(args)) {
                Message *m = get_message(s, args);
                if (!m)
                        return;
                unsigned n = (unsigned) (m - &g_array_index(s->messages, Message, 0)) + 1;
                if (uidl)
                        reply(s, "+OK %u %s.content", n, m->id);
                else
                        reply(s, "+OK %u %" PRIu64, n, m->size);
                return;
        }
        unsigned count = 0;
        for (guint i = 0; i < s->messages->len; i++)
                count += !g_array_index(s->messages, Message, i).deleted;
        if (uidl)
                reply(s, "+OK unique-id listing follows");
        else
                reply(s, "+OK %u message(s)", count);
        for (guint i = 0; i < s->messages->len; i++) {
                const Message *m = &g_array_index(s->messages, Message, i);
                if (m->deleted)
                        continue;
                if (uidl)
                        (void) lineio_printf(s->io, "%u %s.content\r\n", i + 1, m->id);
                else
                        (void) lineio_printf(s->io, "%u %" PRIu64 "\r\n", i + 1, m->size);
        }
        reply(s, ".");
}

static void cmd_retr(Session *s, const char *args) {
        Message *m = get_message(s, args);
        if (m)
                retrieval_start(s, m, false, 0);
}

static void cmd_top(Session *s, const char *args) {
        g_autofree char *number = g_strdup(args ? args : "");
        char *lines = strchr(number, ' ');
        uint64_t n = 0;
        if (lines)
                *lines++ = '\0';
        if (!lines || !parse_number(lines, UINT64_MAX / 10, &n)) {
                reply(s, "-ERR invalid TOP arguments");
                return;
        }
        Message *m = get_message(s, number);
        if (m)
                retrieval_start(s, m, true, n);
}

static void cmd_dele(Session *s, const char *args) {
        Message *m = get_message(s, args);
        if (!m)
                return;
        m->deleted = true;
        reply(s, "+OK message %s deleted", args);
}

static void cmd_rset(Session *s) {
        for (guint i = 0; i < s->messages->len; i++)
                g_array_index(s->messages, Message, i).deleted = false;
        reply(s, "+OK");
}

static void cmd_quit(Session *s) {
        if (s->state != STATE_TRANSACTION) {
                close_with(s, "+OK signing off");
                return;
        }
        session_set_state(s, STATE_UPDATE);
        unsigned failed = maildrop_commit(s);
        maildrop_close(s);
        close_with(s, failed > 0 ? "-ERR some deleted messages not removed" : "+OK signing off");
}

/* ---- TLS ---- */

static void greet(Session *s);
static int arm_idle_timer(Session *s);

static int start_tls(Session *s) {
        g_autofree char *error = NULL;
        LineIoTransport t;

        daemon_refresh_tls(s->server->config.tls, s->server->event);
        int r = tls_new(s->server->config.tls, lineio_get_fd(s->io), &s->tls_session, &error);
        if (r < 0) {
                log_event(s, LOG_ERR, NULL, "%s", error);
                return r;
        }
        tls_lineio_transport(s->tls_session, &t);
        (void) sd_event_source_set_time_relative(s->idle_timer, (uint64_t) s->server->config.handshake_timeout * 1000000u);
        return lineio_start_handshake(s->io, &t);
}

static void on_handshake(Session *s) {
        g_autofree char *cipher = tls_cipher_name(s->tls_session);
        s->tls = true;
        char peer[96];
        log_event(s, LOG_INFO, NULL, "TLS session with %s: %s (tls/ssl protocol established with %s)", s->host, cipher,
                  peer_display(s, peer, sizeof peer));
        (void) arm_idle_timer(s);
        /* RFC 2595 4: what the client said in the clear is forgotten. */
        g_clear_pointer(&s->user, g_free);
        if (!s->greeted)
                greet(s);
}

static void cmd_stls(Session *s, const char *args) {
        if (!s->server->config.stls) {
                reply(s, "-ERR STLS not available");
                return;
        }
        if (s->tls) {
                reply(s, "-ERR command not permitted when TLS active");
                return;
        }
        if (!isempty(args)) {
                reply(s, "-ERR STLS takes no arguments");
                return;
        }
        /* CVE-2011-0411: nothing sent in the clear after STLS counts. */
        size_t dropped = lineio_discard_input(s->io);
        if (dropped > 0)
                log_event(s, LOG_WARNING, NULL, "discarded %zu bytes sent in the clear after STLS by %s", dropped, s->host);
        reply(s, "+OK begin TLS negotiation");
        if (start_tls(s) < 0)
                close_with(s, "-ERR TLS not available");
}

/* ---- commands ---- */

typedef enum CommandClass {
        CMD_ANY,
        CMD_AUTHORIZATION,
        CMD_TRANSACTION,
} CommandClass;

static void handle_command(Session *s, char *line, size_t len) {
        static const struct { const char *verb; CommandClass class; } verbs[] = {
                { "USER", CMD_AUTHORIZATION }, { "PASS", CMD_AUTHORIZATION }, { "APOP", CMD_AUTHORIZATION },
                { "AUTH", CMD_AUTHORIZATION }, { "STAT", CMD_TRANSACTION }, { "LIST", CMD_TRANSACTION },
                { "RETR", CMD_TRANSACTION }, { "TOP", CMD_TRANSACTION }, { "DELE", CMD_TRANSACTION },
                { "RSET", CMD_TRANSACTION }, { "UIDL", CMD_TRANSACTION }, { "NOOP", CMD_TRANSACTION },
                { "CAPA", CMD_ANY }, { "QUIT", CMD_ANY }, { "STLS", CMD_AUTHORIZATION },
        };
        if (memchr(line, '\0', len)) {
                rejected(s);
                reply(s, "-ERR unknown command");
                return;
        }
        char *args = memchr(line, ' ', len);
        if (args)
                *args++ = '\0';
        const char *verb = line;
        size_t i;

        for (i = 0; i < ELEMENTSOF(verbs); i++)
                if (g_ascii_strcasecmp(verb, verbs[i].verb) == 0)
                        break;
        if (i == ELEMENTSOF(verbs)) {
                rejected(s);
                log_event(s, LOG_INFO, NULL, "unknown command: \"%.40s\"",
                          log_looks_like_a_response(verb, strlen(verb)) ? "[not logged]" : verb);
                if (s->bad_commands > MAX_BAD_COMMANDS) {
                        log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, "too many bad commands: disconnecting");
                        close_with(s, "-ERR too many errors");
                        return;
                }
                reply(s, "-ERR unknown command");
                return;
        }
        if ((verbs[i].class == CMD_AUTHORIZATION && s->state != STATE_AUTHORIZATION) ||
            (verbs[i].class == CMD_TRANSACTION && s->state != STATE_TRANSACTION)) {
                rejected(s);
                reply(s, "-ERR invalid command in %s state", state_names[s->state]);
                return;
        }

        switch (i) {
        case 0: cmd_user(s, args); break;
        case 1: cmd_pass(s, args); break;
        case 2: cmd_apop(s, args); break;
        case 3: cmd_auth(s, args); break;
        case 4: cmd_stat(s); break;
        case 5: cmd_list(s, args, false); break;
        case 6: cmd_retr(s, args); break;
        case 7: cmd_top(s, args); break;
        case 8: cmd_dele(s, args); break;
        case 9: cmd_rset(s); break;
        case 10: cmd_list(s, args, true); break;
        case 11: reply(s, "+OK"); break;
        case 12: {
                g_autofree char *offered = sasl_offered(s);
                reply(s, "+OK capability list follows%s\r\nCAPA\r\nTOP\r\nUIDL%s%s%s\r\n.",
                      login_needs_stls(s) ? "" : "\r\nUSER", *offered ? "\r\nSASL " : "", offered,
                      s->server->config.stls && !s->tls && s->state == STATE_AUTHORIZATION ? "\r\nSTLS" : "");
                break;
        }
        case 13: cmd_quit(s); break;
        case 14: cmd_stls(s, args); break;
        default: break;
        }
}

/* ---- I/O and timers ---- */

static int arm_idle_timer(Session *s) {
        return sd_event_source_set_time_relative(s->idle_timer, (uint64_t) s->server->config.idle_timeout * 1000000u);
}

static int on_io(LineIo *io, LineIoEvent event, char *data, size_t len, int error, void *userdata) {
        Session *s = userdata;

        switch (event) {
        case LINEIO_LINE:
                (void) arm_idle_timer(s);
                if (s->state == STATE_CLOSING)
                        ;
                else if (s->sasl) {
                        log_protocol_peer(false, data, len, true, s->host, s->port);
                        auth_response(s, data);
                } else {
                        log_protocol_peer(false, data, len, false, s->host, s->port);
                        handle_command(s, data, len);
                }
                if (!s->auth_delay && !s->pam_check)
                        (void) end_if_over_limit(s);
                return 0;
        case LINEIO_OVERFLOW:
                (void) arm_idle_timer(s);
                rejected(s);
                if (s->sasl)
                        auth_end(s);
                reply(s, "-ERR line too long");
                return 0;
        case LINEIO_DRAINED:
                if (s->retr.fd >= 0)
                        retrieval_continue(s);
                return 0;
        case LINEIO_HANDSHAKE:
                on_handshake(s);
                return 0;
        case LINEIO_ERROR:
                if (s->tls_session && !s->tls) {
                        log_event(s, LOG_WARNING, NULL, "TLS handshake with %s failed: %s", s->host, tls_error(s->tls_session));
                        session_free(s);
                        return LINEIO_FREED;
                }
                _fallthrough_;
        case LINEIO_EOF:
                if (s->state == STATE_TRANSACTION)
                        log_event(s, LOG_INFO, NULL, "client disconnected without QUIT: nothing deleted");
                session_free(s);
                return LINEIO_FREED;
        default:
                return 0;
        }
}

static int on_idle_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        Session *s = userdata;
        if (lineio_is_handshaking(s->io)) {
                log_event(s, LOG_INFO, NULL, "TLS handshake with %s timed out: disconnecting", s->host);
                session_free(s);
                return 0;
        }
        if (s->retr.fd >= 0)
                return arm_idle_timer(s);   /* the client is reading */
        /* RFC 1939 3: an autologout timer; the session ends without entering UPDATE. */
        log_event(s, LOG_INFO, NULL, "idle timeout: disconnecting");
        close_with(s, NULL);
        (void) sd_event_source_set_enabled(s->idle_timer, SD_EVENT_OFF);
        return 0;
}

void session_shutdown(Session *s, bool abort) {
        s->shutting_down = true;
        if (s->state == STATE_CLOSING)
                return;
        bool sending = s->retr.fd >= 0;
        if (sending && !abort)
                return;   /* retrieval_continue closes when the message is out */
        retrieval_end(s);
        s->auth_delay = sd_event_source_disable_unref(s->auth_delay);
        /* In the middle of a message any text would be taken for content: just close. */
        close_with(s, sending ? NULL : "-ERR server shutting down");
}

/* E-MailRelay's words, which monitoring scripts grep: "pop connection from 192.0.2.1:4321" once the
 * connection is accepted, "pop connection closed: 192.0.2.1:4321" when it ends. */
static void log_connection(Session *s, bool opened) {
        char peer[96];
        s->logged_open = opened;
        log_event(s, LOG_INFO, NULL, "pop connection %s%s", opened ? "from " : "closed: ",
                  peer_display(s, peer, sizeof peer));
}

static void session_free(Session *s) {
        Server *server = s->server;
        char host[sizeof s->host];

        if (s->logged_open)
                log_connection(s, false);

        retrieval_end(s);
        maildrop_close(s);
        sd_event_source_disable_unref(s->idle_timer);
        sd_event_source_disable_unref(s->auth_delay);
        pamauth_cancel(s->pam_check);
        g_free(s->pam_user);
        lineio_free(s->io);
        tls_free(s->tls_session);
        sasl_server_free(s->sasl);
        g_free(s->user);
        memcpy(host, s->host, sizeof host);
        g_free(s);
        server_session_ended(server, s, host);
}

int session_start(Server *server, int fd, const struct sockaddr *peer, socklen_t peer_len, Session **ret) {
        const Pop3dConfig *c = &server->config;
        LineIoLimits limits = LINEIO_LIMITS_DEFAULT;
        Session *s = g_new0(Session, 1);
        static unsigned sequence;
        int r;

        s->server = server;
        s->state = STATE_AUTHORIZATION;
        s->lock_fd = -EBADF;
        s->retr.fd = -EBADF;
        if (sockaddr_to_host(peer, peer_len, s->host, sizeof s->host, &s->port) < 0)
                g_strlcpy(s->host, "unknown", sizeof s->host);
        /* Unique per greeting (RFC 1939 7): pid, time and a sequence number. */
        snprintf(s->challenge, sizeof s->challenge, "<%d.%lld.%u@%s>", (int) getpid(), (long long) time(NULL),
                 ++sequence, c->domain);

        limits.max_line = POP3_MAX_COMMAND_LINE;
        limits.buffer_size = POP3_MAX_AUTH_LINE + 512;
        r = lineio_new(server->event, fd, &limits, on_io, s, &s->io);
        if (r < 0) {
                safe_close(fd);
                goto fail;
        }
        r = sd_event_add_time_relative(server->event, &s->idle_timer, CLOCK_MONOTONIC,
                                       (uint64_t) c->idle_timeout * 1000000u, 1000000u, on_idle_timeout, s);
        if (r < 0)
                goto fail;

        bool implicit = c->tls && (c->tls_connection || (server->acceptor.serving && streq(server->acceptor.serving, "pop3s")));
        if (!c->remote_clients && !sockaddr_is_local(peer, peer_len)) {
                log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED,
                          "configured to reject non-local pop connection: connection from %s rejected: "
                          "not a local address (see --remote-clients)", s->host);
                server->n_rejected++;
                s->greeted = true;
                close_with(s, "-ERR remote clients are not allowed");
        } else {
                log_connection(s, true);
                if (implicit) {
                        r = start_tls(s);
                        if (r < 0)
                                goto fail;
                } else
                        greet(s);
        }
        *ret = s;
        return 0;
fail:
        if (s->io)
                lineio_free(s->io);
        tls_free(s->tls_session);
        sd_event_source_disable_unref(s->idle_timer);
        g_free(s);
        return r;
}

static void greet(Session *s) {
        s->greeted = true;
        reply(s, "+OK POP3 server ready %s", s->challenge);
}
