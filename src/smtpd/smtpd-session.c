/* SPDX-License-Identifier: GPL-3.0-or-later */
/* One SMTP session of emailrelay-smtpd: RFC 5321 with PIPELINING, SIZE, 8BITMIME, CHUNKING,
 * BINARYMIME, SMTPUTF8, ENHANCEDSTATUSCODES, AUTH (RFC 4954) and STARTTLS (RFC 3207), storing
 * each message through the filters and the group committer into the spool. Replies use
 * E-MailRelay's texts. */

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "child.h"
#include "daemon.h"
#include "lineio.h"
#include "log.h"
#include "pamauth.h"
#include "macro.h"
#include "smtpd.h"
#include "wakeup.h"
#include "xtext.h"

#define WRITE_CHUNK (64u * 1024u)

typedef enum SessionState {
        STATE_START,        /* greeted, no HELO/EHLO yet */
        STATE_READY,        /* after HELO/EHLO, no transaction */
        STATE_MAIL,         /* MAIL accepted, no recipient yet */
        STATE_RCPT,         /* at least one recipient */
        STATE_DATA,         /* receiving DATA lines */
        STATE_BDAT,         /* receiving BDAT chunks (between chunks too) */
        STATE_FILTERING,    /* end of data: filters running */
        STATE_COMMITTING,   /* waiting for the group committer */
        STATE_FORWARDING,   /* --immediate: waiting for the next hop's answer */
        STATE_CLOSING,      /* QUIT or 421 sent, flushing */
        _STATE_MAX,
} SessionState;

static const char *const state_names[_STATE_MAX] = {
        [STATE_START] = "start",
        [STATE_READY] = "ready",
        [STATE_MAIL] = "mail",
        [STATE_RCPT] = "rcpt",
        [STATE_DATA] = "data",
        [STATE_BDAT] = "bdat",
        [STATE_FILTERING] = "filtering",
        [STATE_COMMITTING] = "committing",
        [STATE_FORWARDING] = "forwarding",
        [STATE_CLOSING] = "closing",
};

/* What MAIL..end of data collects; cleared by RSET and after each message. */
typedef struct Transaction {
        char *from;
        GPtrArray *rcpts;           /* remote addresses */
        GPtrArray *local;           /* local mailbox names from the verifier */
        EnvelopeBody body;
        bool smtputf8;
        bool utf8_names;
        char *auth_in;
        uint64_t declared_size;
        SpoolMessage *message;
        GString *buffer;            /* content not yet written */
        uint64_t size;
        bool too_big;
        bool line_too_long;
        int write_error;
        bool space_low;             /* --min-free-space crossed while the content came */
        bool pending_cr;            /* BDAT: a CR ended the last chunk; CRLF or bare? */
        uint64_t bdat_remaining;
        bool bdat_last;
        FilterRun *filter_run;
        CommitRequest *commit;
        bool forwarding;            /* --immediate: the session's forwarder has the message */
        bool rescan;                /* a filter asked for a forwarding pass once this one is stored */
        char *failed_reply;         /* --immediate: the client filter failed it; kept as .bad, this
                                     * text goes with the 452 */
} Transaction;

struct Session {
        Server *server;
        LineIo *io;
        SessionState state;
        char host[64];
        uint16_t port;
        bool logged_open;           /* "connection from" said: "connection closed" will be */
        char *helo;
        bool esmtp;
        Transaction tx;
        sd_event_source *idle_timer;
        sd_event_source *session_timer;
        sd_event_source *flush_source;
        bool shutting_down;
        unsigned bad_commands;
        VerifyRun *verify_run;      /* RCPT or VRFY waiting for --address-verifier */
        char *verify_path;
        bool verify_is_vrfy;
        /* SMTP AUTH (RFC 4954) */
        SaslServer *sasl;           /* an AUTH exchange is going on: lines are its responses */
        char *auth_id;              /* authenticated as, or NULL */
        char *auth_mech;            /* its mechanism, lower-case */
        unsigned auth_failures;
        sd_event_source *auth_delay;
        PamCheck *pam_check;        /* --server-auth=pam: a password being checked */
        bool over_limit;            /* a per-address limit was passed: 421 at the next flush */
        AcceptorEvent over_limit_event;
        bool tls;                   /* the connection is encrypted */
        Tls *tls_session;
        bool greeted;               /* implicit TLS: the greeting waits for the handshake */
        char *cipher;               /* "TLS1.3-AES-256-GCM" */
        char *peer_certificate;     /* PEM, with --server-tls-verify */
        Child *forwarder;           /* --immediate: emailrelay-forward --immediate-session */
};

static void session_free(Session *s);

/* With STARTTLS configured, AUTH waits for it (ARCHITECTURE's "AUTH only over TLS unless
 * configured otherwise"): unless --server-auth-config names what may be used before TLS (m:),
 * nothing is offered nor accepted in the clear. */
static bool auth_needs_starttls(const Session *s) {
        const SmtpdConfig *c = &s->server->config;
        return !s->tls && c->starttls && (c->tls_required || !c->auth_config.allow);
}

/* The AUTH mechanisms for this session: from the secrets, or PLAIN with PAM. */
static char *offered_mechanisms(Session *s) {
        const SmtpdConfig *c = &s->server->config;
        return c->pam ? sasl_server_mechanisms_pam(&c->auth_config, s->tls) :
                        sasl_server_mechanisms(server_secrets(s->server), &c->auth_config, s->tls);
}

static void session_set_state(Session *s, SessionState state) {
        if (s->state == state)
                return;
        log_debug("%s:%u: state %s -> %s", s->host, s->port, state_names[s->state], state_names[state]);
        s->state = state;
}

/* ---- replies ---- */

/* Batch replies: they go out when every buffered command has been handled (RFC 2920), by a
 * defer source that runs after the input callback returns. */
static void schedule_flush(Session *s) {
        if (s->flush_source)
                (void) sd_event_source_set_enabled(s->flush_source, SD_EVENT_ONESHOT);
}

/* Control characters from the peer never reach a reply line or a header we write. */
static char *sanitize(char *text) {
        for (char *p = text; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = '?';
        return text;
}

/* Every reply line goes out through here, queued for the next flush, and into the --verbose
 * protocol trace. */
_printf_(2, 3) static int send_line(Session *s, const char *format, ...) {
        char buf[512];
        g_autofree char *big = NULL;
        va_list ap, again;

        va_start(ap, format);
        va_copy(again, ap);
        int n = vsnprintf(buf, sizeof buf, format, ap);
        va_end(ap);
        const char *line = buf;
        if (n >= 0 && (size_t) n >= sizeof buf) {
                big = g_strdup_vprintf(format, again);
                line = big;
        }
        va_end(again);
        if (n < 0)
                return -EINVAL;
        log_protocol_peer(true, line, (size_t) n, false, s->host, s->port);
        return lineio_write(s->io, line, (size_t) n);
}

/* Send what is queued now and go on batching. */
static void flush_now(Session *s) {
        (void) lineio_flush(s->io);
        lineio_cork(s->io);
}

/* Reply with an enhanced status code when the client used EHLO and the extension is on. */
_printf_(4, 5) static void reply(Session *s, int code, const char *enhanced, const char *format, ...) {
        char text[1024];
        va_list ap;

        va_start(ap, format);
        vsnprintf(text, sizeof text, format, ap);
        va_end(ap);
        sanitize(text);   /* replies may quote the client, whose lines may hold a bare LF */
        if (enhanced && s->esmtp && s->server->config.enhanced)
                (void) send_line(s, "%d %s %s\r\n", code, enhanced, text);
        else
                (void) send_line(s, "%d %s\r\n", code, text);
        /* Rejected commands count against the client's address (failed AUTH counts apart;
         * 554 ends a connection or a message rather than refusing a command). */
        if (code >= 500 && code <= 553 && code != 535 && s->state != STATE_CLOSING && !s->over_limit &&
            acceptor_note(&s->server->acceptor, s->host, ACCEPTOR_REJECTED_COMMAND)) {
                s->over_limit = true;
                s->over_limit_event = ACCEPTOR_REJECTED_COMMAND;
        }
        schedule_flush(s);
}

/* A reply of the next hop's (--immediate), as it came: its enhanced code is in its text. Not
 * counted against the client's address as a command of its own would be. */
static void reply_passed_on(Session *s, int code, const char *text) {
        g_autofree char *safe = g_strdup(text);
        sanitize(safe);
        (void) send_line(s, "%d %s\r\n", code, safe);
        schedule_flush(s);
}

/* The client as E-MailRelay's log lines show it: 192.0.2.1:4321, [2001:db8::1]:4321. */
static const char *peer_display(const Session *s, char *buf, size_t size) {
        bool v6 = strchr(s->host, ':') != NULL;
        snprintf(buf, size, "%s%s%s:%u", v6 ? "[" : "", s->host, v6 ? "]" : "", s->port);
        return buf;
}

static void log_event(Session *s, int level, const char *message_id, int code, const char *format, ...)
        _printf_(5, 6);
static void log_event(Session *s, int level, const char *message_id, int code, const char *format, ...) {
        char text[1024], port[8], smtp_code[8];
        va_list ap;

        va_start(ap, format);
        vsnprintf(text, sizeof text, format, ap);
        va_end(ap);
        snprintf(port, sizeof port, "%u", s->port);
        snprintf(smtp_code, sizeof smtp_code, "%d", code);
        LogField fields[] = {
                { "REMOTE_ADDR", s->host },
                { "REMOTE_PORT", port },
                { "SMTP_CODE", code ? smtp_code : NULL },
                { "MESSAGE_ID", message_id },
                { "EMAILRELAY_ID", s->tx.message ? spool_message_id(s->tx.message) : NULL },
        };
        log_fields(level, 0, fields, ELEMENTSOF(fields), "%s", text);
}

static void close_with(Session *s, int code, const char *enhanced, const char *text) {
        reply(s, code, enhanced, "%s", text);
        session_set_state(s, STATE_CLOSING);
        (void) lineio_flush(s->io);
        (void) lineio_close_after_flush(s->io);
}

/* ---- transaction ---- */

static void transaction_reset(Session *s) {
        Transaction *t = &s->tx;

        if (t->filter_run)
                t->filter_run = filter_run_cancel(t->filter_run);
        if (t->forwarding) {   /* the client is gone: so is the answer, and the message */
                s->forwarder = child_free(s->forwarder);
                t->forwarding = false;
        }
        if (t->commit) {
                /* The committer owns the message from here and frees it when done. */
                committer_cancel(s->server->committer, t->commit);
                t->commit = NULL;
                t->message = NULL;
        }
        g_clear_pointer(&t->message, spool_message_free);   /* unlinks uncommitted files */
        g_clear_pointer(&t->from, g_free);
        g_clear_pointer(&t->auth_in, g_free);
        if (t->rcpts)
                g_ptr_array_set_size(t->rcpts, 0);
        if (t->local)
                g_ptr_array_set_size(t->local, 0);
        if (t->buffer)
                g_string_truncate(t->buffer, 0);
        t->body = ENVELOPE_BODY_UNKNOWN;
        t->smtputf8 = t->utf8_names = t->too_big = t->line_too_long = t->bdat_last = false;
        t->declared_size = t->size = t->bdat_remaining = 0;
        t->write_error = 0;
        t->space_low = t->pending_cr = t->rescan = false;
        g_clear_pointer(&t->failed_reply, g_free);
        lineio_set_max_line(s->io, SMTP_MAX_COMMAND_LINE);
}

static bool spool_space_low(Session *s);

static void content_flush(Session *s) {
        Transaction *t = &s->tx;
        if (t->buffer->len == 0 || t->write_error || t->too_big)
                return;
        /* The floor holds while the content comes, not only at MAIL: one client's big message
         * must not take the last of the disk. Crossed, what was written goes at once and the
         * rest is read and dropped; the answer at the end is 452. */
        if (spool_space_low(s)) {
                t->space_low = true;
                t->write_error = -ENOSPC;
                (void) ftruncate(spool_message_content_fd(t->message), 0);
                g_string_truncate(t->buffer, 0);
                return;
        }
        int r = spool_message_write(t->message, t->buffer->str, t->buffer->len);
        if (r < 0)
                t->write_error = r;
        g_string_truncate(t->buffer, 0);
}

static void content_append(Session *s, const char *data, size_t len) {
        Transaction *t = &s->tx;
        uint64_t max = s->server->config.max_size;

        t->size += len;
        if (max > 0 && t->size > max) {
                /* Keep reading to the end, store nothing more: the answer is 552. */
                t->too_big = true;
                g_string_truncate(t->buffer, 0);
                return;
        }
        if (t->write_error || t->too_big)
                return;
        g_string_append_len(t->buffer, data, len);
        if (t->buffer->len >= WRITE_CHUNK)
                content_flush(s);
}

/* Text content, canonical: a bare CR or a bare LF is stored as CRLF (Postfix's
 * smtpd_forbid_bare_newline=normalize, extended to CR), so that the spool holds only CRLF
 * lines and no byte sequence in it can end the data for a next hop that takes <CR>.<CR> or
 * <LF>.<LF> for the end. A CR at the end of the input waits in t->pending_cr: the next
 * byte, in the next BDAT chunk perhaps, tells a CRLF from a bare CR. */
static void content_append_text(Session *s, const char *data, size_t len) {
        Transaction *t = &s->tx;
        const char *p = data, *end = data + len;

        if (t->pending_cr && p < end) {
                t->pending_cr = false;
                content_append(s, "\r\n", 2);
                if (*p == '\n')
                        p++;
        }
        const char *cr = memchr(p, '\r', end - p), *lf = memchr(p, '\n', end - p);
        while (p < end) {
                const char *q = !cr ? lf : !lf ? cr : MIN(cr, lf);
                if (!q) {
                        content_append(s, p, end - p);
                        break;
                }
                content_append(s, p, q - p);
                if (q == cr && q + 1 == end) {
                        t->pending_cr = true;
                        break;
                }
                content_append(s, "\r\n", 2);
                p = q + (q == cr && q[1] == '\n' ? 2 : 1);
                if (cr && cr < p)
                        cr = memchr(p, '\r', end - p);
                if (lf && lf < p)
                        lf = memchr(p, '\n', end - p);
        }
}

static void content_end_text(Session *s) {
        if (s->tx.pending_cr) {
                s->tx.pending_cr = false;
                content_append(s, "\r\n", 2);
        }
}

static char *received_line(Session *s) {
        g_autofree char *date = smtp_date_now();
        /* RFC 3848: ESMTPS with TLS, ESMTPA when authenticated. */
        const char *with = !s->esmtp ? "SMTP" : s->tls && s->auth_id ? "ESMTPSA" : s->tls ? "ESMTPS" : s->auth_id ? "ESMTPA" : "ESMTP";
        /* The client as an RFC 5321 address literal: [192.0.2.1], [IPv6:2001:db8::1]. */
        bool v6 = strchr(s->host, ':') != NULL;
        return g_strdup_printf("Received: from %s ([%s%s]) by %s with %s%s%s ; %s\r\n", s->helo ? s->helo : "unknown",
                               v6 ? "IPv6:" : "", s->host, s->server->config.domain, with, s->cipher ? " tls " : "",
                               s->cipher ? s->cipher : "", date);
}

/* Create the spool files when the first content arrives. */
static int transaction_open(Session *s) {
        Transaction *t = &s->tx;
        int r = spool_new_message(s->server->spool, &t->message);
        if (r < 0)
                return r;
        if (!s->server->config.anonymous_content) {
                g_autofree char *line = received_line(s);
                g_string_append(t->buffer, line);   /* not counted against --size */
        }
        return 0;
}

/* ---- end of data: envelope, filters, commit ---- */

static void finish_message(Session *s);
static void discard(Session *s, int code, const char *enhanced, const char *text);
static void start_verify(Session *s, const char *path, bool vrfy);

/* The end of data answered: ready for the next transaction, or closing if shutting down. */
static void transaction_done(Session *s) {
        transaction_reset(s);
        session_set_state(s, STATE_READY);
        if (s->shutting_down) {
                close_with(s, 421, "4.3.2", "service shutting down");
                return;
        }
        (void) lineio_resume(s->io);
}

/* Filter exit 102, 103 or 104: a forwarding pass now, as E-MailRelay starts one, which also
 * picks up messages the filter put in the spool. */
static void request_rescan(Session *s, const char *id) {
        const char *path = s->server->config.rescan_file;
        if (!path) {
                log_event(s, LOG_DEBUG, NULL, 0, "message %s: the filter asked for a rescan, but no forwarder is watching", id);
                return;
        }
        int r = wakeup_raise(path);
        if (r < 0)
                log_event(s, LOG_WARNING, NULL, 0, "message %s: cannot ask for a forwarding pass (%s): %s", id, path, g_strerror(-r));
        else
                log_event(s, LOG_INFO, NULL, 0, "message %s: the filter asked for a rescan: forwarding pass requested", id);
}

static void on_committed(SpoolMessage *m, int result, void *userdata) {
        Session *s = userdata;
        Transaction *t = &s->tx;

        t->commit = NULL;
        if (result < 0) {
                log_event(s, LOG_ERR, NULL, 452, "cannot commit message %s to the spool: %s",
                          spool_message_id(m), g_strerror(-result));
                reply(s, 452, "4.3.0", "message not stored: %s", result == -ENOSPC ? "insufficient system storage" : "local error");
        } else if (t->failed_reply) {
                s->server->n_rejected++;
                log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, 452, "message %s from %s failed: %s: kept as %s.envelope.bad",
                          spool_message_id(m), s->host, t->failed_reply, spool_message_id(m));
                reply(s, 452, "4.3.0", "%s", t->failed_reply);
        } else {
                s->server->n_accepted++;
                log_event(s, LOG_INFO, LOG_MESSAGE_ACCEPTED, 250, "message %s accepted from %s: %s, %u recipient%s, %" PRIu64 " bytes",
                          spool_message_id(m), s->host, t->from, t->rcpts->len, t->rcpts->len == 1 ? "" : "s", t->size);
                reply(s, 250, "2.0.0", "message processed");
        }
        /* After the commit is durable: the pass must find this message too. */
        if (t->rescan)
                request_rescan(s, spool_message_id(m));
        transaction_done(s);   /* frees the message: committed files stay */
}

static void commit_message(Session *s) {
        int r;

        session_set_state(s, STATE_COMMITTING);
        r = committer_submit(s->server->committer, s->tx.message, on_committed, s, &s->tx.commit);
        if (r < 0)
                on_committed(s->tx.message, r, s);
}

/* --immediate: the forwarder's outcome is the client's answer: its exit status for the message
 * (forward.c's --immediate-message), and "<code> <text>". The message goes either way:
 * delivered, it is the next hop's; refused, the client was told. */
static void forward_outcome(Session *s, int status, bool timed_out, const char *answer) {
        Transaction *t = &s->tx;
        g_autofree char *id = g_strdup(spool_message_id(t->message));
        char *text = NULL;
        long code = strtol(answer, &text, 10);
        text = text && *text == ' ' ? text + 1 : (char *) "";

        if (status == 5) {
                commit_message(s);   /* only local recipients left after the filters */
                return;
        }
        if (status == 6) {
                /* The client filter failed it: a temporary answer, and a copy kept as E-MailRelay
                 * keeps one, committed durably like any other before the client hears 452. */
                t->failed_reply = g_strdup(*text ? text : "client filter failed");
                spool_message_commit_as_failed(t->message);
                commit_message(s);
                return;
        }
        if (status == 0 && code >= 200 && code < 300) {
                s->server->n_accepted++;
                log_event(s, LOG_INFO, LOG_MESSAGE_ACCEPTED, (int) code,
                          "message %s from %s forwarded immediately: %s, %u recipient%s, %" PRIu64 " bytes: %ld %s",
                          id, s->host, t->from, t->rcpts->len, t->rcpts->len == 1 ? "" : "s", t->size, code, text);
                reply_passed_on(s, (int) code, text);
        } else if (code >= 400 && code < 600) {
                s->server->n_rejected++;
                log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, (int) code, "message %s from %s refused by the next hop: %ld %s",
                          id, s->host, code, text);
                reply_passed_on(s, (int) code, text);
        } else {
                const char *why = timed_out ? "timed out" : *text ? text : "forwarder failed (see the log)";
                log_event(s, LOG_WARNING, NULL, 451, "message %s from %s not forwarded: %s", id, s->host, why);
                reply(s, 451, "4.4.1", "next hop not available: %s", why);
        }
        transaction_done(s);   /* removes the message: never committed */
}

/* The session's forwarder answered: "<exit status> <code> <text>". */
static void on_forwarder_line(const char *line, size_t len, void *userdata) {
        Session *s = userdata;
        if (!s->tx.forwarding) {
                log_debug("%s:%u: forwarder said \"%s\" unasked", s->host, s->port, line);
                return;
        }
        char *rest = NULL;
        long status = strtol(line, &rest, 10);
        s->tx.forwarding = false;
        (void) child_set_timeout(s->forwarder, 0);
        forward_outcome(s, (int) status, false, rest && *rest == ' ' ? rest + 1 : "");
}

/* The session's forwarder is gone: with a message in hand, that is the message's outcome; between
 * messages, the next one starts another. */
static void on_forwarder_done(const ChildResult *res, void *userdata) {
        Session *s = userdata;
        s->forwarder = child_free(s->forwarder);
        if (!s->tx.forwarding)
                return;
        s->tx.forwarding = false;
        forward_outcome(s, -1, res->timed_out, "");   /* no answer: 451 */
}

/* One emailrelay-forward --immediate-session for the whole client session: one connection to
 * the next hop however many messages come, as E-MailRelay keeps one. */
static int start_forwarder(Session *s) {
        const SmtpdConfig *c = &s->server->config;
        char *argv[] = { c->forwarder, (char *) "--spool-dir", (char *) spool_path(s->server->spool),
                         (char *) "--immediate-session", c->immediate_config, NULL };
        g_auto(GStrv) envp = child_make_envp();
        /* Under systemd: relative --client-auth and certificate names are credentials, and the
         * forwarder's log lines go to the journal as this unit's, with their fields. */
        static const char *const pass[] = { "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM" };
        for (size_t i = 0; i < ELEMENTSOF(pass); i++) {
                const char *v = getenv(pass[i]);
                if (v)
                        envp = g_environ_setenv(envp, pass[i], v, true);
        }
        return child_spawn_session(s->server->event, argv, envp, 2048, on_forwarder_line, on_forwarder_done, s,
                                   &s->forwarder);
}

static void forward_immediately(Session *s) {
        const SmtpdConfig *c = &s->server->config;
        Transaction *t = &s->tx;
        g_autofree char *request = g_strdup_printf("%s\n", spool_message_id(t->message));
        int r = 0;

        session_set_state(s, STATE_FORWARDING);
        /* A forwarder that exited since the last message (its pipe closed) is started again. */
        for (int attempt = 0; attempt < 2; attempt++) {
                if (!s->forwarder && (r = start_forwarder(s)) < 0)
                        break;
                r = child_send(s->forwarder, request);
                if (r != -EPIPE)
                        break;
                s->forwarder = child_free(s->forwarder);
        }
        /* RFC 5321 4.5.3.2.6: the client waits ten minutes for the reply to its end of data. */
        if (r >= 0)
                r = child_set_timeout(s->forwarder, 600 * 1000000ull);
        if (r < 0) {
                s->forwarder = child_free(s->forwarder);
                log_event(s, LOG_ERR, NULL, 451, "cannot run %s: %s", c->forwarder, g_strerror(-r));
                discard(s, 451, "4.3.0", "local error");
                return;
        }
        t->forwarding = true;
}

/* Committed to the spool for the forwarder, or with --immediate forwarded now. Local-only mail
 * (no remote recipient) is stored either way. */
static void store_message(Session *s) {
        if (s->server->config.immediate && s->tx.rcpts->len > 0)
                forward_immediately(s);
        else
                commit_message(s);
}

static void on_filtered(const FilterOutcome *o, void *userdata) {
        Session *s = userdata;
        Transaction *t = &s->tx;
        g_autofree char *id = g_strdup(spool_message_id(t->message));

        t->filter_run = NULL;
        t->rescan = o->rescan;
        /* Nothing is committed on these paths: the pass can start now. */
        if (o->rescan && (o->result == FILTER_FAIL || (o->result == FILTER_ABANDON && !spool_message_has_envelope(t->message))))
                request_rescan(s, id);
        switch (o->result) {
        case FILTER_OK:
                if (o->reason)   /* a warning from a passing filter, e.g. copy: with no maildrops */
                        log_event(s, LOG_WARNING, NULL, 0, "filter: %s", o->reason);
                if (t->rescan && s->server->config.immediate && t->rcpts->len > 0) {
                        request_rescan(s, id);   /* this one goes now, not through the spool */
                        t->rescan = false;
                }
                store_message(s);
                return;
        case FILTER_ABANDON:
                /* The filter took the message over. What it left is kept: an envelope still
                 * there is committed as E-MailRelay does (nothing is lost), and a content file
                 * alone stays for the envelopes copy:pop put in the POP maildrops. */
                log_event(s, LOG_INFO, NULL, 250, "message %s abandoned by filter", id);
                if (spool_message_has_envelope(t->message)) {
                        commit_message(s);
                        return;
                }
                spool_message_disown(t->message);
                discard(s, 250, "2.0.0", "message processed");
                return;
        case FILTER_FAIL:
        default: {
                int code = o->smtp_code ? o->smtp_code : 452;
                s->server->n_rejected++;
                log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, code, "message %s rejected by filter: [%s]",
                          id, o->reason ? o->reason : "");
                discard(s, code, code >= 500 ? "5.7.1" : "4.7.1", o->response ? o->response : "rejected");
                return;
        }
        }
}

/* The message will not be stored: remove its files, then answer. */
static void discard(Session *s, int code, const char *enhanced, const char *text) {
        transaction_reset(s);
        session_set_state(s, STATE_READY);
        reply(s, code, enhanced, "%s", text);
        (void) lineio_resume(s->io);
}

static void finish_message(Session *s) {
        Transaction *t = &s->tx;
        g_auto(Envelope) e = {};
        int r;

        content_flush(s);
        lineio_pause(s->io);
        lineio_set_max_line(s->io, SMTP_MAX_COMMAND_LINE);

        if (t->too_big) {
                s->server->n_rejected++;
                log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, 552, "message rejected: larger than %" PRIu64 " bytes", s->server->config.max_size);
                return discard(s, 552, "5.3.4", "message size exceeds fixed maximum message size");
        }
        if (t->line_too_long) {
                s->server->n_rejected++;
                log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, 500, "message rejected: a line longer than %u octets", SMTP_MAX_TEXT_LINE + 2);
                return discard(s, 500, "5.5.6", "message line too long");
        }
        if (t->space_low) {
                log_event(s, LOG_WARNING, NULL, 452, "spool space fell below --min-free-space (%" PRIu64
                          " bytes) during the message: discarded", s->server->config.min_free_bytes);
                return discard(s, 452, "4.3.1", "insufficient system storage");
        }
        if (t->write_error) {
                log_event(s, LOG_ERR, NULL, 452, "cannot write to the spool: %s", g_strerror(-t->write_error));
                return discard(s, 452, "4.3.1", "insufficient system storage");
        }

        envelope_init(&e);
        e.body = t->body;
        e.from = g_strdup(t->from);
        for (guint i = 0; i < t->rcpts->len; i++)
                g_ptr_array_add(e.to_remote, g_strdup(t->rcpts->pdata[i]));
        for (guint i = 0; i < t->local->len; i++)
                g_ptr_array_add(e.to_local, g_strdup(t->local->pdata[i]));
        e.client = g_strdup(s->host);
        if (s->auth_id)
                e.authentication = xtext_encode(s->auth_id, strlen(s->auth_id));
        e.client_certificate = g_strdup(s->peer_certificate);
        e.mail_from_auth_in = g_strdup(t->auth_in);
        e.utf8_mailbox_names = t->utf8_names;
        r = spool_message_write_envelope(t->message, &e);
        if (r < 0) {
                log_event(s, LOG_ERR, NULL, 452, "cannot write the envelope: %s", g_strerror(-r));
                return discard(s, 452, "4.3.1", "insufficient system storage");
        }

        if (s->server->config.filters && !filter_chain_is_empty(s->server->config.filters)) {
                g_autofree char *content = spool_file_path(s->server->spool, spool_message_id(t->message), ".content");
                g_autofree char *envelope = spool_file_path(s->server->spool, spool_message_id(t->message), ".envelope.new");
                session_set_state(s, STATE_FILTERING);
                spool_message_set_replaceable(t->message);
                r = filter_chain_run(s->server->config.filters, s->server->event, content, envelope,
                                     s->server->config.filter_timeout, on_filtered, s, &t->filter_run);
                if (r < 0) {
                        log_event(s, LOG_ERR, NULL, 451, "cannot run the filter: %s", g_strerror(-r));
                        return discard(s, 451, "4.3.0", "filter error");
                }
                return;
        }
        store_message(s);
}

/* ---- command parsing ---- */

static bool is_verb(const char *line, size_t len, const char *verb, const char **ret_args) {
        size_t n = strlen(verb);
        if (len < n || g_ascii_strncasecmp(line, verb, n) != 0)
                return false;
        if (len > n && line[n] != ' ')
                return false;
        const char *a = line + n;
        while (*a == ' ')
                a++;
        *ret_args = a;
        return true;
}

/* Parse "FROM:<path> params" (prefix "FROM:" or "TO:"). With strict parsing the angle brackets
 * are required. Returns the path (possibly empty) and the rest after it. */
static int parse_path(Session *s, const char *args, const char *prefix, char **ret_path, const char **ret_params) {
        size_t n = strlen(prefix);
        const char *p;

        if (g_ascii_strncasecmp(args, prefix, n) != 0)
                return -EINVAL;
        p = args + n;
        while (*p == ' ')   /* "MAIL FROM: <a@b>" is common enough to allow */
                p++;
        if (*p == '<') {
                const char *end = p + 1;
                bool quoted = false;
                for (; *end; end++) {
                        if (quoted && *end == '\\' && end[1])
                                end++;
                        else if (*end == '"')
                                quoted = !quoted;
                        else if (!quoted && *end == '>')
                                break;
                }
                if (*end != '>')
                        return -EBADMSG;
                *ret_path = g_strndup(p + 1, end - p - 1);
                *ret_params = end + 1;
        } else {
                if (s->server->config.strictparsing)
                        return -EBADMSG;
                const char *end = strchr(p, ' ');
                if (!end)
                        end = p + strlen(p);
                *ret_path = g_strndup(p, end - p);
                *ret_params = end;
        }
        /* A source route "@a,@b:user@c" (RFC 5321 C.) is accepted and dropped. */
        if ((*ret_path)[0] == '@') {
                char *colon = strchr(*ret_path, ':');
                if (colon) {
                        char *rest = g_strdup(colon + 1);
                        g_free(*ret_path);
                        *ret_path = rest;
                }
        }
        return 0;
}

static bool path_is_valid(const char *path, bool *ret_utf8) {
        bool utf8 = false;
        if (strlen(path) > SMTP_MAX_PATH)
                return false;
        for (const char *p = path; *p; p++) {
                unsigned char c = (unsigned char) *p;
                if (c < 0x20 || c == 0x7f || c == ' ' || c == '<' || c == '>')
                        return false;
                if (c >= 0x80)
                        utf8 = true;
        }
        if (utf8 && !g_utf8_validate(path, -1, NULL))
                return false;
        *ret_utf8 = utf8;
        return true;
}

static bool spool_space_low(Session *s) {
        struct statvfs st;
        if (s->server->config.min_free_bytes == 0 || fstatvfs(spool_dir_fd(s->server->spool), &st) < 0)
                return false;
        return (uint64_t) st.f_bavail * st.f_frsize < s->server->config.min_free_bytes;
}

static void cmd_helo(Session *s, const char *args, bool ehlo) {
        const SmtpdConfig *c = &s->server->config;

        if (isempty(args)) {
                reply(s, 501, NULL, "%s requires a domain or address", ehlo ? "EHLO" : "HELO");
                return;
        }
        if (s->state > STATE_READY && s->state != STATE_MAIL && s->state != STATE_RCPT) {
                reply(s, 503, "5.5.1", "command out of sequence -- use RSET to resynchronise");
                return;
        }
        transaction_reset(s);
        g_free(s->helo);
        s->helo = sanitize(g_strndup(args, strcspn(args, " ")));
        s->esmtp = ehlo;
        session_set_state(s, STATE_READY);
        if (!ehlo) {
                reply(s, 250, NULL, "%s says hello", c->anonymous_server ? "smtp" : c->domain);
                return;
        }
        (void) send_line(s, "250-%s says hello\r\n", c->anonymous_server ? "smtp" : c->domain);
        if (c->max_size > 0)
                (void) send_line(s, "250-SIZE %" PRIu64 "\r\n", c->max_size);
        if (c->auth && !s->auth_id && !auth_needs_starttls(s)) {
                g_autofree char *mechs = offered_mechanisms(s);
                if (*mechs)
                        (void) send_line(s, "250-AUTH %s\r\n", mechs);
        }
        if (c->starttls && !s->tls)
                (void) send_line(s, "250-STARTTLS\r\n");
        if (!c->anonymous_vrfy)
                (void) send_line(s, "250-VRFY\r\n");
        if (c->chunking)
                (void) send_line(s, "250-CHUNKING\r\n250-BINARYMIME\r\n");
        if (c->pipelining)
                (void) send_line(s, "250-PIPELINING\r\n");
        if (c->smtputf8)
                (void) send_line(s, "250-SMTPUTF8\r\n");
        if (c->enhanced)
                (void) send_line(s, "250-ENHANCEDSTATUSCODES\r\n");
        (void) send_line(s, "250 8BITMIME\r\n");
        schedule_flush(s);
}

/* ---- --address-verifier ---- */

static void on_verified(VerifyOutcome *o, void *userdata) {
        Session *s = userdata;
        Transaction *t = &s->tx;
        g_autofree char *path = TAKE_PTR(s->verify_path);
        bool vrfy = s->verify_is_vrfy;

        s->verify_run = NULL;
        switch (o->result) {
        case VERIFY_LOCAL:
                if (vrfy)
                        reply(s, 250, "2.1.5", "%s", isempty(o->full_name) ? path : o->full_name);
                else {
                        g_ptr_array_add(t->local, g_strdup(isempty(o->mailbox) ? path : o->mailbox));
                        session_set_state(s, STATE_RCPT);
                        /* E-MailRelay's two spaces mark a local recipient. */
                        reply(s, 250, "2.1.5", "recipient <%s>  OK", path);
                }
                break;
        case VERIFY_REMOTE:
                if (vrfy)
                        reply(s, 252, "2.5.0", "cannot verify but will accept: %.256s", path);
                else {
                        g_ptr_array_add(t->rcpts, g_strdup(isempty(o->address) ? path : o->address));
                        session_set_state(s, STATE_RCPT);
                        reply(s, 250, "2.1.5", "recipient <%s> OK", path);
                }
                break;
        case VERIFY_INVALID:
                log_event(s, LOG_INFO, LOG_MESSAGE_REJECTED, 550, "recipient <%s> rejected by the address verifier: %s",
                          path, o->reason ? o->reason : "");
                reply(s, 550, "5.1.1", "%s", isempty(o->response) ? "invalid address" : o->response);
                break;
        case VERIFY_TEMPORARY:
                log_event(s, LOG_INFO, NULL, 450, "recipient <%s> deferred by the address verifier: %s",
                          path, o->reason ? o->reason : "");
                reply(s, 450, "4.1.1", "%s", isempty(o->response) ? "cannot verify" : o->response);
                break;
        case VERIFY_ABORT:
        default:
                log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, 0, "address verifier asked to drop the connection");
                transaction_reset(s);
                session_set_state(s, STATE_CLOSING);
                (void) lineio_close_after_flush(s->io);
                return;
        }
        if (s->shutting_down && s->state <= STATE_READY) {
                close_with(s, 421, "4.3.2", "service shutting down");
                return;
        }
        (void) lineio_resume(s->io);
}

static void start_verify(Session *s, const char *path, bool vrfy) {
        char peer[96];
        snprintf(peer, sizeof peer, "%s:%u", s->host, s->port);
        /* The trusted keyword of a "server none" line stands in for the id (reference 5.4). */
        const char *trusted = s->auth_id ? NULL : secrets_server_trusted(server_secrets(s->server), s->host);
        VerifyRequest req = {
                .recipient = path,
                .from = vrfy ? "" : s->tx.from,
                .peer = peer,
                .domain = s->server->config.domain,
                .mechanism = s->auth_mech ? s->auth_mech : "none",
                .auth_id = s->auth_id ? s->auth_id : trusted ? trusted : "",
        };
        lineio_pause(s->io);
        s->verify_path = g_strdup(path);
        s->verify_is_vrfy = vrfy;
        int r = verifier_run(s->server->config.verifier, s->server->event, &req, s->server->config.filter_timeout,
                             on_verified, s, &s->verify_run);
        if (r < 0) {
                log_event(s, LOG_ERR, NULL, 450, "cannot run the address verifier: %s", g_strerror(-r));
                g_clear_pointer(&s->verify_path, g_free);
                reply(s, 450, "4.3.0", "cannot verify");
                (void) lineio_resume(s->io);
        }
}

/* ---- SMTP AUTH ---- */

#define AUTH_MAX_LINE 4000   /* a SASL response line; the input buffer holds 4 KiB */

/* MAIL and VRFY need an authenticated or trusted client when --server-auth is on. Replies
 * and returns false when not. */
static bool auth_allows(Session *s) {
        if (s->server->config.tls_required && !s->tls) {
                reply(s, 530, "5.7.0", "encryption required");
                return false;
        }
        if (!s->server->config.auth || s->auth_id)
                return true;
        if (secrets_server_trusted(server_secrets(s->server), s->host))
                return true;
        if (auth_needs_starttls(s))
                reply(s, 530, "5.7.0", "must issue a STARTTLS command first");
        else
                reply(s, 530, "5.7.0", "authentication required");
        return false;
}

static void auth_end(Session *s) {
        s->sasl = sasl_server_free(s->sasl);
        lineio_set_max_line(s->io, SMTP_MAX_COMMAND_LINE);
}

static int on_auth_delay(sd_event_source *source, uint64_t usec, void *userdata) {
        Session *s = userdata;

        s->auth_delay = sd_event_source_disable_unref(s->auth_delay);
        if (s->auth_failures >= s->server->config.max_auth_failures) {
                log_event(s, LOG_WARNING, LOG_MESSAGE_AUTH_FAIL, 421, "too many authentication failures from %s: disconnecting", s->host);
                reply(s, 535, "5.7.8", "authentication failed");
                close_with(s, 421, "4.7.0", "too many authentication failures");
                return 0;
        }
        reply(s, 535, "5.7.8", "authentication failed");
        (void) lineio_resume(s->io);
        return 0;
}

/* A wrong password: logged with the client's address (fail2ban), answered late, and the
 * connection dropped after a few. No commands are read meanwhile. */
static void auth_failed(Session *s, const char *mech, const char *id) {
        s->auth_failures++;
        s->server->n_auth_failures++;
        if (!s->over_limit && acceptor_note(&s->server->acceptor, s->host, ACCEPTOR_AUTH_FAILURE)) {
                s->over_limit = true;
                s->over_limit_event = ACCEPTOR_AUTH_FAILURE;
        }
        _cleanup_free_ char *quoted = log_quotable(id, 64);
        log_event(s, LOG_WARNING, LOG_MESSAGE_AUTH_FAIL, 535, "authentication failed for \"%s\" from %s (%s)",
                  quoted, s->host, mech);
        lineio_pause(s->io);
        int r = sd_event_add_time_relative(s->server->event, &s->auth_delay, CLOCK_MONOTONIC,
                                           (uint64_t) s->server->config.auth_delay_ms * 1000u, 1000u, on_auth_delay, s);
        if (r < 0)
                (void) on_auth_delay(NULL, 0, s);
}

static void auth_result(Session *s, int r, char *challenge);

/* --server-auth=pam: PAM's answer. */
static void on_pam_checked(int result, const char *error, void *userdata) {
        Session *s = userdata;
        const char *mech = sasl_mech_to_string(sasl_server_mech(s->sasl));

        s->pam_check = NULL;
        if (result == -EAGAIN) {
                /* Not the client's doing: no failed login for the limits and fail2ban. */
                _cleanup_free_ char *quoted = log_quotable(sasl_server_id(s->sasl), 64);
                log_event(s, LOG_ERR, NULL, 454, "PAM could not check \"%s\" from %s (%s): %s", quoted, s->host,
                          mech, error ? error : "unknown error");
                auth_end(s);
                reply(s, 454, "4.7.0", "temporary authentication failure");
                (void) lineio_resume(s->io);
                return;
        }
        if (result < 0) {
                log_event(s, LOG_DEBUG, NULL, 0, "PAM: %s", error ? error : "no");
                auth_result(s, -EACCES, NULL);       /* input stays held until the delayed 535 */
                return;
        }
        auth_result(s, SASL_DONE, NULL);
        (void) lineio_resume(s->io);
}

static void auth_result(Session *s, int r, char *challenge) {
        const char *mech = sasl_mech_to_string(sasl_server_mech(s->sasl));

        switch (r) {
        case SASL_CONTINUE:
                (void) send_line(s, "334 %s\r\n", challenge);
                schedule_flush(s);
                return;
        case SASL_CHECK:
                /* PAM may take seconds: in a thread, with this session's input held meanwhile. */
                lineio_pause(s->io);
                r = pamauth_check(s->server->event, sasl_server_id(s->sasl), sasl_server_password(s->sasl), s->host,
                                  on_pam_checked, s, &s->pam_check);
                if (r < 0)
                        on_pam_checked(-EAGAIN, g_strerror(-r), s);
                return;
        case SASL_DONE: {
                g_free(s->auth_id);
                s->auth_id = sanitize(g_strdup(sasl_server_id(s->sasl)));
                g_free(s->auth_mech);
                s->auth_mech = g_ascii_strdown(mech, -1);
                _cleanup_free_ char *quoted = log_quotable(s->auth_id, 64);
                log_event(s, LOG_INFO, NULL, 235, "authenticated as \"%s\" from %s (%s)", quoted, s->host, mech);
                auth_end(s);
                reply(s, 235, "2.7.0", "authentication successful");
                return;
        }
        case -ECANCELED:
                auth_end(s);
                reply(s, 501, "5.7.0", "authentication cancelled");
                return;
        case -EINVAL:
                log_event(s, LOG_INFO, NULL, 501, "invalid %s response from %s", mech, s->host);
                auth_end(s);
                reply(s, 501, "5.5.2", "invalid authentication response: bad base64 or format");
                return;
        default: {
                g_autofree char *id = sanitize(g_strdup(sasl_server_id(s->sasl)));
                auth_end(s);
                auth_failed(s, mech, id);
                return;
        }
        }
}

static void auth_response(Session *s, char *line) {
        g_autofree char *challenge = NULL;
        int r = sasl_server_step(s->sasl, line, &challenge);
        /* The response may hold a password: leave nothing of it in the input buffer. */
        explicit_bzero(line, strlen(line));
        auth_result(s, r, challenge);
}

static void cmd_auth(Session *s, const char *args) {
        const SmtpdConfig *c = &s->server->config;
        g_autofree char *challenge = NULL;

        if (!c->auth) {
                reply(s, 503, "5.5.1", "authentication not enabled");
                return;
        }
        if (s->state == STATE_START || !s->esmtp) {
                reply(s, 503, "5.5.1", "command out of sequence -- send EHLO first");
                return;
        }
        if (s->auth_id) {
                reply(s, 503, "5.5.1", "already authenticated");
                return;
        }
        if (s->state != STATE_READY) {
                reply(s, 503, "5.5.1", "command out of sequence -- use RSET to resynchronise");
                return;
        }
        if (c->tls_required && !s->tls) {
                reply(s, 530, "5.7.0", "encryption required");
                return;
        }
        if (auth_needs_starttls(s)) {
                reply(s, 530, "5.7.0", "must issue a STARTTLS command first");   /* RFC 3207 */
                return;
        }
        g_autofree char *mech = g_strndup(args, strcspn(args, " "));
        const char *initial = args + strlen(mech);
        while (*initial == ' ')
                initial++;
        if (!*mech) {
                reply(s, 501, "5.5.4", "syntax error: AUTH <mechanism> [<initial-response>]");
                return;
        }
        g_autofree char *offered = offered_mechanisms(s);
        int r = sasl_server_new(mech, offered, c->pam ? NULL : server_secrets(s->server), c->domain, &s->sasl);
        if (r < 0) {
                log_event(s, LOG_INFO, NULL, 504, "unsupported authentication mechanism \"%.32s\" from %s", sanitize(mech), s->host);
                reply(s, 504, "5.5.4", "unsupported authentication mechanism");
                return;
        }
        lineio_set_max_line(s->io, AUTH_MAX_LINE);
        r = sasl_server_step(s->sasl, *initial ? initial : NULL, &challenge);
        auth_result(s, r, challenge);
}

/* ---- TLS ---- */

static void greet(Session *s);
static bool talked_first(Session *s);
static int arm_idle_timer(Session *s);

static int start_tls(Session *s) {
        g_autofree char *error = NULL;
        LineIoTransport t;

        daemon_refresh_tls(s->server->config.tls, s->server->event);
        int r = tls_new(s->server->config.tls, lineio_get_fd(s->io), &s->tls_session, &error);
        if (r < 0) {
                log_event(s, LOG_ERR, NULL, 0, "%s", error);
                return r;
        }
        tls_lineio_transport(s->tls_session, &t);
        (void) sd_event_source_set_time_relative(s->idle_timer, (uint64_t) s->server->config.handshake_timeout * 1000000u);
        return lineio_start_handshake(s->io, &t);
}

static void on_handshake(Session *s) {
        s->tls = true;
        s->cipher = tls_cipher_name(s->tls_session);
        s->peer_certificate = tls_peer_certificate_pem(s->tls_session);
        char peer[96];
        log_event(s, LOG_INFO, NULL, 0, "TLS session with %s: %s%s (tls/ssl protocol established with %s)", s->host,
                  s->cipher, s->peer_certificate ? ", client certificate verified" : "", peer_display(s, peer, sizeof peer));
        (void) arm_idle_timer(s);
        if (!s->greeted) {
                greet(s);
                return;
        }
        /* RFC 3207 4.2: forget everything learnt in the clear; the client starts with EHLO. */
        transaction_reset(s);
        g_clear_pointer(&s->helo, g_free);
        g_clear_pointer(&s->auth_id, g_free);
        g_clear_pointer(&s->auth_mech, g_free);
        s->esmtp = false;
        session_set_state(s, STATE_START);
}

static void cmd_starttls(Session *s, const char *args) {
        if (!s->server->config.starttls) {
                reply(s, 502, "5.5.1", "command not implemented");
                return;
        }
        if (s->tls) {
                reply(s, 503, "5.5.1", "command out of sequence -- TLS is already active");
                return;
        }
        if (!isempty(args)) {
                reply(s, 501, "5.5.4", "STARTTLS takes no parameters");
                return;
        }
        if (s->state != STATE_START && s->state != STATE_READY) {
                reply(s, 503, "5.5.1", "command out of sequence -- use RSET to resynchronise");
                return;
        }
        /* CVE-2011-0411: commands pipelined after STARTTLS came in the clear; they must not be
         * taken as if they had come over TLS. */
        size_t dropped = lineio_discard_input(s->io);
        if (dropped > 0)
                log_event(s, LOG_WARNING, NULL, 0, "discarded %zu bytes sent in the clear after STARTTLS by %s", dropped, s->host);
        reply(s, 220, "2.0.0", "ready to start TLS");
        flush_now(s);
        if (start_tls(s) < 0)
                close_with(s, 454, "4.7.0", "TLS not available");
}

static void cmd_mail(Session *s, const char *args) {
        const SmtpdConfig *c = &s->server->config;
        Transaction *t = &s->tx;
        g_autofree char *path = NULL;
        const char *params = NULL;
        bool utf8 = false;

        if (s->state == STATE_START) {
                reply(s, 503, "5.5.1", "command out of sequence -- use RSET to resynchronise");
                return;
        }
        if (s->state != STATE_READY) {
                reply(s, 503, "5.5.1", "command out of sequence -- use RSET to resynchronise");
                return;
        }
        if (!auth_allows(s))
                return;
        int r = parse_path(s, args, "FROM:", &path, &params);
        if (r == -EINVAL) {
                reply(s, 501, "5.5.4", "syntax error: MAIL FROM:<address>");
                return;
        }
        if (r < 0) {
                reply(s, 550, "5.1.7", "missing angle brackets in mailbox name");
                return;
        }
        if (!path_is_valid(path, &utf8)) {
                reply(s, 553, "5.1.7", "mailbox name not allowed");
                return;
        }

        EnvelopeBody body = ENVELOPE_BODY_UNKNOWN;
        bool smtputf8 = false;
        uint64_t size = 0;
        g_autofree char *auth = NULL;
        g_auto(GStrv) words = g_strsplit(params, " ", -1);
        for (char **w = words; *w; w++) {
                if (!**w)
                        continue;
                char *eq = strchr(*w, '=');
                g_autofree char *key = g_ascii_strup(*w, eq ? eq - *w : -1);
                const char *val = eq ? eq + 1 : NULL;
                if (streq(key, "BODY") && val) {
                        if (g_ascii_strcasecmp(val, "7BIT") == 0)
                                body = ENVELOPE_BODY_7BIT;
                        else if (g_ascii_strcasecmp(val, "8BITMIME") == 0)
                                body = ENVELOPE_BODY_8BIT;
                        else if (g_ascii_strcasecmp(val, "BINARYMIME") == 0 && c->chunking)
                                body = ENVELOPE_BODY_BINARYMIME;
                        else {
                                reply(s, 501, "5.5.4", "invalid BODY parameter");
                                return;
                        }
                } else if (streq(key, "SIZE") && val) {
                        char *end = NULL;
                        errno = 0;
                        size = g_ascii_strtoull(val, &end, 10);
                        if (!g_ascii_isdigit(*val) || *end || errno) {
                                reply(s, 501, "5.5.4", "invalid SIZE parameter");
                                return;
                        }
                } else if (streq(key, "AUTH") && val) {
                        if (!streq(val, "<>") && !xtext_is_valid(val)) {
                                reply(s, 501, "5.5.4", "invalid AUTH parameter");
                                return;
                        }
                        g_free(auth);
                        auth = g_strdup(val);
                } else if (streq(key, "SMTPUTF8") && !val && c->smtputf8)
                        smtputf8 = true;
                else {
                        reply(s, 555, "5.5.4", "unsupported parameter: %.64s", *w);
                        return;
                }
        }
        if (utf8 && c->smtputf8strict && !smtputf8) {
                reply(s, 553, "5.6.7", "mailbox name not allowed: non-ASCII address without SMTPUTF8");
                return;
        }
        if (c->max_size > 0 && size > c->max_size) {
                reply(s, 552, "5.3.4", "message size exceeds fixed maximum message size");
                return;
        }
        if (spool_space_low(s)) {
                log_event(s, LOG_WARNING, NULL, 452, "spool space is low: refusing mail");
                reply(s, 452, "4.3.1", "insufficient system storage");
                return;
        }

        t->from = TAKE_PTR(path);
        t->body = body;
        t->smtputf8 = smtputf8;
        t->utf8_names = utf8;
        t->declared_size = size;
        /* AUTH= is recorded as given only for an authenticated session; otherwise RFC 4954
         * 5 says treat it as "<>". */
        t->auth_in = !auth ? NULL : s->auth_id ? TAKE_PTR(auth) : g_strdup("<>");
        session_set_state(s, STATE_MAIL);
        reply(s, 250, "2.1.0", "sender <%s> OK", t->from);
}

static void cmd_rcpt(Session *s, const char *args) {
        Transaction *t = &s->tx;
        g_autofree char *path = NULL;
        const char *params = NULL;
        bool utf8 = false;

        if (s->state != STATE_MAIL && s->state != STATE_RCPT) {
                reply(s, 503, "5.5.1", "command out of sequence -- use RSET to resynchronise");
                return;
        }
        int r = parse_path(s, args, "TO:", &path, &params);
        if (r == -EINVAL) {
                reply(s, 501, "5.5.4", "syntax error: RCPT TO:<address>");
                return;
        }
        if (r < 0) {
                reply(s, 550, "5.1.3", "missing angle brackets in mailbox name");
                return;
        }
        if (isempty(path) || !path_is_valid(path, &utf8)) {
                reply(s, 553, "5.1.3", "mailbox name not allowed");
                return;
        }
        for (const char *p = params; *p; p++)
                if (*p != ' ') {
                        reply(s, 555, "5.5.4", "unsupported parameter: %.64s", p);
                        return;
                }
        if (utf8 && s->server->config.smtputf8strict && !t->smtputf8) {
                reply(s, 553, "5.6.7", "mailbox name not allowed: non-ASCII address without SMTPUTF8");
                return;
        }
        if (t->rcpts->len + t->local->len >= s->server->config.max_recipients) {
                reply(s, 452, "4.5.3", "too many recipients");
                return;
        }
        t->utf8_names |= utf8;
        if (s->server->config.verifier) {
                start_verify(s, path, false);
                return;
        }
        g_ptr_array_add(t->rcpts, g_strdup(path));
        session_set_state(s, STATE_RCPT);
        reply(s, 250, "2.1.5", "recipient <%s> OK", path);
}

static int begin_content(Session *s) {
        int r = transaction_open(s);
        if (r < 0) {
                log_event(s, LOG_ERR, NULL, 452, "cannot create a spool file in %s: %s",
                          spool_path(s->server->spool), g_strerror(-r));
                reply(s, 452, "4.3.1", "insufficient system storage");
                return r;
        }
        return 0;
}

static void cmd_data(Session *s, const char *args) {
        if (!isempty(args)) {
                reply(s, 501, "5.5.4", "DATA takes no parameters");
                return;
        }
        if (s->state == STATE_MAIL) {
                reply(s, 554, "5.5.1", "no valid recipients");
                return;
        }
        if (s->state != STATE_RCPT) {
                reply(s, 503, "5.5.1", "command out of sequence -- use RSET to resynchronise");
                return;
        }
        if (s->tx.body == ENVELOPE_BODY_BINARYMIME) {
                reply(s, 503, "5.5.1", "invalid data command with binarymime");
                return;
        }
        if (begin_content(s) < 0)
                return;
        session_set_state(s, STATE_DATA);
        lineio_set_max_line(s->io, SMTP_MAX_TEXT_LINE);
        (void) send_line(s, "354 start mail input -- end with <CRLF>.<CRLF>\r\n");
        flush_now(s);
}

static void on_data_line(Session *s, char *line, size_t len) {
        if (len == 1 && line[0] == '.') {
                finish_message(s);
                return;
        }
        if (len > 0 && line[0] == '.') {  /* dot-unstuffing */
                line++;
                len--;
        }
        /* A bare CR or LF inside a line is stored as a line break, so that the forwarder
         * dot-stuffs what follows it: "\n.\n" or "\r.\r" can never end a message further down
         * the line; so is a CR that came just before the line's own CRLF. */
        content_append_text(s, line, len);
        content_end_text(s);
        content_append(s, "\r\n", 2);
}

static void cmd_bdat(Session *s, const char *args) {
        Transaction *t = &s->tx;
        char *end = NULL;

        if (!s->server->config.chunking) {
                reply(s, 500, "5.5.1", "command unrecognized");
                return;
        }
        errno = 0;
        uint64_t n = g_ascii_strtoull(args, &end, 10);
        if (!g_ascii_isdigit(*args) || errno || (*end && *end != ' ')) {
                reply(s, 501, "5.5.4", "syntax error: BDAT <size> [LAST]");
                return;
        }
        while (*end == ' ')
                end++;
        bool last = g_ascii_strcasecmp(end, "LAST") == 0;
        if (*end && !last) {
                reply(s, 501, "5.5.4", "syntax error: BDAT <size> [LAST]");
                return;
        }
        if (s->state == STATE_MAIL) {
                /* The chunk must still be read off the wire before answering. */
                reply(s, 554, "5.5.1", "no valid recipients");
                if (n > 0)
                        lineio_read_raw(s->io, n);
                t->bdat_remaining = n;
                t->write_error = -EINVAL;
                session_set_state(s, STATE_BDAT);
                return;
        }
        if (s->state != STATE_RCPT && s->state != STATE_BDAT) {
                reply(s, 503, "5.5.1", "command out of sequence -- use RSET to resynchronise");
                return;
        }
        if (!t->message && begin_content(s) < 0)
                return;
        session_set_state(s, STATE_BDAT);
        t->bdat_remaining = n;
        t->bdat_last = last;
        if (n > 0)
                lineio_read_raw(s->io, n);
        else if (last) {
                if (t->body != ENVELOPE_BODY_BINARYMIME)
                        content_end_text(s);
                finish_message(s);
        } else
                reply(s, 250, "2.0.0", "%" PRIu64 " octets received", n);
}

static void on_bdat_data(Session *s, const char *data, size_t len) {
        Transaction *t = &s->tx;

        g_assert(len <= t->bdat_remaining);
        t->bdat_remaining -= len;
        if (t->write_error == -EINVAL) {   /* a chunk without recipients: discard */
                if (t->bdat_remaining == 0) {
                        t->write_error = 0;
                        session_set_state(s, STATE_MAIL);
                }
                return;
        }
        /* BINARYMIME is octets as they come (RFC 3030); any other body is text lines. */
        if (t->body == ENVELOPE_BODY_BINARYMIME)
                content_append(s, data, len);
        else
                content_append_text(s, data, len);
        if (t->bdat_remaining > 0)
                return;
        if (t->bdat_last) {
                content_end_text(s);
                finish_message(s);
        }
        else
                reply(s, 250, "2.0.0", "%" PRIu64 " octets received", t->size);
}

static void cmd_vrfy(Session *s, const char *args) {
        if (s->server->config.anonymous_vrfy) {
                reply(s, 502, "5.5.1", "command not implemented");
                return;
        }
        if (!auth_allows(s))
                return;
        if (isempty(args)) {
                reply(s, 501, "5.5.4", "VRFY requires an address");
                return;
        }
        if (s->server->config.verifier) {
                g_autofree char *path = g_strndup(args, strcspn(args, " "));
                if (path[0] == '<' && g_str_has_suffix(path, ">")) {
                        char *inner = g_strndup(path + 1, strlen(path) - 2);
                        g_free(path);
                        path = inner;
                }
                start_verify(s, path, true);
                return;
        }
        reply(s, 252, "2.5.0", "cannot verify but will accept: %.256s", args);
}

/* An HTTP request line or header: a web page can make a browser POST an SMTP dialogue to a
 * relay's port, one command per line, and the lines it cannot help sending first tell. A
 * header is a token directly followed by a colon, which no SMTP command is. */
static bool is_http(const char *line) {
        static const char *const methods[] = { "GET ", "POST ", "HEAD ", "PUT ", "CONNECT ", "OPTIONS ",
                                               "DELETE ", "PATCH ", "TRACE " };
        for (size_t i = 0; i < ELEMENTSOF(methods); i++)
                if (g_str_has_prefix(line, methods[i]))
                        return true;
        size_t n = strspn(line, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-");
        return n > 0 && line[n] == ':';
}

static void handle_command(Session *s, char *line, size_t len) {
        const char *args = NULL;

        if (is_http(line)) {
                log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, 554, "non-SMTP command from %s: \"%.40s\": disconnecting",
                          s->host, line);
                s->server->n_rejected++;
                close_with(s, 554, "5.7.0", "non-SMTP command, closing connection");
                return;
        }
        if (is_verb(line, len, "EHLO", &args))
                cmd_helo(s, args, true);
        else if (is_verb(line, len, "HELO", &args))
                cmd_helo(s, args, false);
        else if (is_verb(line, len, "MAIL", &args))
                cmd_mail(s, args);
        else if (is_verb(line, len, "RCPT", &args))
                cmd_rcpt(s, args);
        else if (is_verb(line, len, "DATA", &args))
                cmd_data(s, args);
        else if (is_verb(line, len, "BDAT", &args))
                cmd_bdat(s, args);
        else if (is_verb(line, len, "RSET", &args)) {
                transaction_reset(s);
                if (s->state != STATE_START)
                        session_set_state(s, STATE_READY);
                reply(s, 250, "2.0.0", "state reset");
        } else if (is_verb(line, len, "NOOP", &args))
                reply(s, 250, "2.0.0", "noop");
        else if (is_verb(line, len, "VRFY", &args))
                cmd_vrfy(s, args);
        else if (is_verb(line, len, "AUTH", &args))
                cmd_auth(s, args);
        else if (is_verb(line, len, "STARTTLS", &args))
                cmd_starttls(s, args);
        else if (is_verb(line, len, "EXPN", &args) || is_verb(line, len, "HELP", &args))
                reply(s, 502, "5.5.1", "command not implemented");
        else if (is_verb(line, len, "QUIT", &args)) {
                transaction_reset(s);
                close_with(s, 221, "2.0.0", "OK");
        } else {
                s->bad_commands++;
                log_event(s, LOG_INFO, NULL, 500, "command unrecognized: \"%.40s\"",
                          log_looks_like_a_response(line, len) ? "[not logged]" : line);
                if (s->bad_commands > 20) {
                        log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, 421, "too many bad commands: disconnecting");
                        close_with(s, 421, "4.7.0", "too many errors");
                        return;
                }
                reply(s, 500, "5.5.1", "command unrecognized");
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
                if (s->sasl) {
                        log_protocol_peer(false, data, len, true, s->host, s->port);
                        auth_response(s, data);
                } else if (s->state == STATE_DATA)
                        on_data_line(s, data, len);
                else if (s->state == STATE_CLOSING)
                        ;
                else {
                        log_protocol_peer(false, data, len, false, s->host, s->port);
                        handle_command(s, data, len);
                }
                return 0;
        case LINEIO_OVERFLOW:
                (void) arm_idle_timer(s);
                if (s->sasl) {
                        auth_end(s);
                        reply(s, 500, "5.5.6", "authentication exchange line too long");
                } else if (s->state == STATE_DATA)
                        s->tx.line_too_long = true;
                else {
                        s->bad_commands++;
                        reply(s, 500, "5.5.2", "line too long");
                }
                return 0;
        case LINEIO_RAW:
                (void) arm_idle_timer(s);
                on_bdat_data(s, data, len);
                return 0;
        case LINEIO_HANDSHAKE:
                on_handshake(s);
                return 0;
        case LINEIO_ERROR:
                if (s->tls_session && !s->tls) {
                        log_event(s, LOG_WARNING, NULL, 0, "TLS handshake with %s failed: %s", s->host, tls_error(s->tls_session));
                        session_free(s);
                        return LINEIO_FREED;
                }
                _fallthrough_;
        case LINEIO_EOF:
                if (s->state != STATE_CLOSING && s->state >= STATE_MAIL && s->state <= STATE_BDAT)
                        log_event(s, LOG_INFO, NULL, 0, "client disconnected in the middle of a transaction: nothing stored");
                if (s->state == STATE_COMMITTING || s->state == STATE_FILTERING || s->state == STATE_FORWARDING) {
                        /* Let the committer finish: what it commits was complete; the client
                         * only misses the 250 and will send again (a duplicate, never a loss). */
                }
                session_free(s);
                return LINEIO_FREED;
        case LINEIO_DRAINED:
        default:
                return 0;
        }
}

static int on_flush(sd_event_source *source, void *userdata) {
        Session *s = userdata;
        /* Over a per-address limit: end the session once nothing of ours is in flight. */
        if (s->over_limit && s->state <= STATE_RCPT && !s->auth_delay && !s->pam_check && !s->verify_run) {
                bool auth = s->over_limit_event == ACCEPTOR_AUTH_FAILURE;
                char detail[128];
                log_event(s, LOG_WARNING, auth ? LOG_MESSAGE_AUTH_FAIL : LOG_MESSAGE_REJECTED, 421,
                          "session closed: too many %s from %s (%s)",
                          auth ? "failed AUTH attempts" : "rejected commands", s->host,
                          acceptor_limit_detail(&s->server->acceptor, s->host, s->over_limit_event, detail, sizeof detail));
                s->server->n_rejected++;
                transaction_reset(s);
                close_with(s, 421, "4.7.0", "too many errors from your address, try later");
                return 0;
        }
        flush_now(s);
        return 0;
}

static int on_idle_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        Session *s = userdata;
        if (lineio_is_handshaking(s->io)) {
                log_event(s, LOG_INFO, NULL, 0, "TLS handshake with %s timed out: disconnecting", s->host);
                session_free(s);
                return 0;
        }
        if (s->state == STATE_COMMITTING || s->state == STATE_FILTERING || s->state == STATE_FORWARDING || s->verify_run)
                return arm_idle_timer(s);   /* waiting on us, not on the client */
        log_event(s, LOG_INFO, NULL, 421, "idle timeout: disconnecting");
        transaction_reset(s);
        close_with(s, 421, "4.4.2", "idle timeout, closing connection");
        (void) sd_event_source_set_enabled(s->idle_timer, SD_EVENT_OFF);
        return 0;
}

static int on_session_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        Session *s = userdata;
        if (s->state == STATE_COMMITTING || s->state == STATE_FILTERING || s->state == STATE_FORWARDING)
                return 0;   /* the filter and the forwarder have their own timeouts; the commit ends soon */
        log_event(s, LOG_INFO, NULL, 421, "session time limit reached: disconnecting");
        transaction_reset(s);
        close_with(s, 421, "4.4.2", "session time limit reached, closing connection");
        return 0;
}

void session_shutdown(Session *s, bool abort) {
        s->shutting_down = true;
        if (s->verify_run && !abort)
                return;   /* on_verified closes if the session is then idle */
        if (s->verify_run)
                s->verify_run = verifier_run_cancel(s->verify_run);
        switch (s->state) {
        case STATE_START:
        case STATE_READY:
                close_with(s, 421, "4.3.2", "service shutting down");
                break;
        case STATE_MAIL:
        case STATE_RCPT:
        case STATE_DATA:
        case STATE_BDAT:
                if (abort) {
                        log_event(s, LOG_INFO, NULL, 421, "aborting the transaction: shutting down");
                        transaction_reset(s);
                        close_with(s, 421, "4.3.2", "service shutting down");
                }
                break;
        default:
                break;   /* filtering or committing: on_committed closes after the reply */
        }
}

/* E-MailRelay's words, which monitoring scripts grep: "smtp connection from 192.0.2.1:4321" once the
 * connection is accepted, "smtp connection closed: 192.0.2.1:4321" when it ends. */
static void log_connection(Session *s, bool opened) {
        char peer[96];
        s->logged_open = opened;
        log_event(s, LOG_INFO, NULL, 0, "smtp connection %s%s", opened ? "from " : "closed: ",
                  peer_display(s, peer, sizeof peer));
}

static void session_free(Session *s) {
        Server *server = s->server;
        char host[sizeof s->host];

        if (s->logged_open)
                log_connection(s, false);

        transaction_reset(s);
        /* The end of its input: it says QUIT to the next hop and exits. */
        s->forwarder = child_release(s->forwarder, 60 * 1000000ull);
        if (s->verify_run)
                verifier_run_cancel(s->verify_run);
        g_free(s->verify_path);
        sasl_server_free(s->sasl);
        g_free(s->auth_id);
        g_free(s->auth_mech);
        sd_event_source_disable_unref(s->auth_delay);
        pamauth_cancel(s->pam_check);
        if (s->tx.rcpts)
                g_ptr_array_unref(s->tx.rcpts);
        if (s->tx.local)
                g_ptr_array_unref(s->tx.local);
        if (s->tx.buffer)
                g_string_free(s->tx.buffer, true);
        sd_event_source_disable_unref(s->idle_timer);
        sd_event_source_disable_unref(s->session_timer);
        sd_event_source_disable_unref(s->flush_source);
        lineio_free(s->io);
        tls_free(s->tls_session);
        g_free(s->cipher);
        g_free(s->peer_certificate);
        g_free(s->helo);
        memcpy(host, s->host, sizeof host);
        g_free(s);
        server_session_ended(server, s, host);
}

int session_start(Server *server, int fd, const struct sockaddr *peer, socklen_t peer_len, Session **ret) {
        const SmtpdConfig *c = &server->config;
        LineIoLimits limits = LINEIO_LIMITS_DEFAULT;
        Session *s = g_new0(Session, 1);
        int r;

        s->server = server;
        s->state = STATE_START;
        s->tx.rcpts = g_ptr_array_new_with_free_func(g_free);
        s->tx.local = g_ptr_array_new_with_free_func(g_free);
        s->tx.buffer = g_string_new(NULL);
        s->tx.body = ENVELOPE_BODY_UNKNOWN;
        if (sockaddr_to_host(peer, peer_len, s->host, sizeof s->host, &s->port) < 0)
                g_strlcpy(s->host, "unknown", sizeof s->host);

        limits.max_line = SMTP_MAX_COMMAND_LINE;
        limits.buffer_size = 4096;
        r = lineio_new(server->event, fd, &limits, on_io, s, &s->io);
        if (r < 0) {
                safe_close(fd);
                goto fail;
        }
        r = sd_event_add_time_relative(server->event, &s->idle_timer, CLOCK_MONOTONIC,
                                       (uint64_t) c->idle_timeout * 1000000u, 1000000u, on_idle_timeout, s);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(server->event, &s->session_timer, CLOCK_MONOTONIC,
                                       (uint64_t) c->session_timeout * 1000000u, 1000000u, on_session_timeout, s);
        if (r < 0)
                goto fail;
        r = sd_event_add_defer(server->event, &s->flush_source, on_flush, s);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_enabled(s->flush_source, SD_EVENT_OFF);
        /* Replies from the input callback go out together once it has run (RFC 2920). */
        lineio_cork(s->io);

        bool implicit = c->tls && (c->tls_connection || (server->acceptor.serving && streq(server->acceptor.serving, "smtps")));
        if (!c->remote_clients && !sockaddr_is_local(peer, peer_len)) {
                log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, 554,
                          "configured to reject non-local smtp connection: connection from %s rejected: "
                          "not a local address (see --remote-clients)", s->host);
                server->n_rejected++;
                s->greeted = true;
                close_with(s, 554, NULL, "5.7.1 remote clients are not allowed");
        } else {
                log_connection(s, true);
                if (implicit) {
                        r = start_tls(s);
                        if (r < 0)
                                goto fail;
                } else if (!talked_first(s))
                        greet(s);
        }
        *ret = s;
        return 0;
fail:
        if (s->io)
                lineio_free(s->io);
        tls_free(s->tls_session);
        sd_event_source_disable_unref(s->idle_timer);
        sd_event_source_disable_unref(s->session_timer);
        sd_event_source_disable_unref(s->flush_source);
        g_ptr_array_unref(s->tx.rcpts);
        g_ptr_array_unref(s->tx.local);
        g_string_free(s->tx.buffer, true);
        g_free(s);
        return r;
}

/* Pregreet: a client that sends before the greeting is no SMTP client (RFC 5321 3.1 has it
 * wait), but a script or a browser fed a page; Postfix's postscreen drops them. What was sent
 * is peeked at, named in the log and left unread. Returns true when the session is closing. */
static bool talked_first(Session *s) {
        char buf[64];
        ssize_t n = recv(lineio_get_fd(s->io), buf, sizeof buf - 1, MSG_PEEK | MSG_DONTWAIT);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        sanitize(buf);
        log_event(s, LOG_WARNING, LOG_MESSAGE_REJECTED, 554, "%s sent before the greeting: \"%.40s\": disconnecting",
                  s->host, buf);
        s->server->n_rejected++;
        s->greeted = true;
        close_with(s, 554, "5.5.1", "protocol error: talking before the greeting, closing connection");
        return true;
}

static void greet(Session *s) {
        const SmtpdConfig *c = &s->server->config;
        s->greeted = true;
        if (c->anonymous_server)
                reply(s, 220, NULL, "greeting");
        else
                reply(s, 220, NULL, "%s -- emailrelay V" PACKAGE_VERSION " -- Service ready", c->domain);
}

char *smtp_date_now(void) {
        static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
        static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        long off = tm.tm_gmtoff / 60;
        return g_strdup_printf("%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday], tm.tm_mday,
                               months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
                               off < 0 ? '-' : '+', labs(off) / 60, labs(off) % 60);
}
