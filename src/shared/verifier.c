/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The address verifier: parses --address-verifier and runs exit:, net: and program verifiers on
 * an sd-event loop, one recipient per run. */

#include <assert.h>
#include <errno.h>
#include <glib.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "filter.h"
#include "macro.h"
#include "verifier.h"

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC UINT64_C(1000000)
/* Two short lines are expected; more is read and dropped. */
#define OUTPUT_MAX 4096U
#define NET_REPLY_MAX 4096U
/* Per text: they end up in SMTP replies and envelope lines. */
#define TEXT_MAX 1024U

#define DEFAULT_RESPONSE "mailbox unavailable"
#define CANNOT_VERIFY "cannot verify"

typedef enum VerifierKind {
        VERIFIER_KIND_EXIT,
        VERIFIER_KIND_PROGRAM,
        VERIFIER_KIND_NET,
        _VERIFIER_KIND_MAX,
} VerifierKind;

struct Verifier {
        unsigned n_ref;          /* the owner's reference plus one per run in flight */
        VerifierKind kind;
        char *spec;              /* as written, to name the verifier in reasons */
        char *path;              /* program */
        char **envp;             /* program: child_make_envp() */
        struct sockaddr_storage address;   /* net: */
        socklen_t address_len;
};

/* The program's arguments, in order; also the fields of a net: request. */
enum {
        ARG_RECIPIENT,
        ARG_FROM,
        ARG_PEER,
        ARG_DOMAIN,
        ARG_MECHANISM,
        ARG_AUTH_ID,
        _ARG_MAX,
};

struct VerifyRun {
        Verifier *verifier;
        sd_event *event;
        char *args[_ARG_MAX];
        uint64_t timeout_usec;
        VerifyDoneCallback callback;
        void *userdata;
        bool in_callback;

        sd_event_source *defer_source;      /* starts the run from the loop */
        Child *child;                       /* a program; it keeps its own timeout */

        /* net: */
        sd_event_source *timer_source;
        int sock_fd;
        sd_event_source *sock_source;
        bool connected;
        bool sent;
        char *out;
        size_t out_len, out_sent;
        char *in;
        size_t in_len;
};

Verifier *verifier_free(Verifier *v) {
        if (!v)
                return NULL;

        assert(v->n_ref > 0);
        if (--v->n_ref > 0)
                return NULL;

        g_free(v->spec);
        g_free(v->path);
        g_strfreev(v->envp);
        g_free(v);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Verifier *, verifier_free);

static int parse_error(char **ret_error, const char *format, ...) _printf_(2, 3);
static int parse_error(char **ret_error, const char *format, ...) {
        va_list ap;

        if (ret_error) {
                va_start(ap, format);
                *ret_error = g_strdup_vprintf(format, ap);
                va_end(ap);
        }
        return -EINVAL;
}

/* exit:'s number is ignored, but a typo should not pass unnoticed. */
static bool exit_code_is_valid(const char *s) {
        size_t n = strspn(s, "0123456789");

        return *s == '\0' || (n == strlen(s) && n <= 3 && atoi(s) <= 255);
}

int verifier_parse(const char *spec, Verifier **ret, char **ret_error) {
        _cleanup_(verifier_freep) Verifier *v = NULL;
        g_autofree char *s = NULL;
        const char *arg, *error = NULL;

        assert(ret);

        s = g_strstrip(g_strdup(spec ? spec : ""));
        if (*s == '\0')
                return parse_error(ret_error, "invalid address verifier \"\": empty");
        if (g_str_has_prefix(s, "account:"))
                return parse_error(ret_error, "address verifier \"account:\" is not supported yet");

        v = g_new0(Verifier, 1);
        v->n_ref = 1;
        v->spec = g_strdup(s);

        if ((arg = g_str_has_prefix(s, "exit:") ? s + 5 : NULL)) {
                if (!exit_code_is_valid(arg))
                        return parse_error(ret_error, "invalid address verifier \"%s\": exit code must be a number "
                                           "from 0 to 255", s);
                v->kind = VERIFIER_KIND_EXIT;

        } else if ((arg = g_str_has_prefix(s, "net:") ? s + 4 : NULL)) {
                if (filter_parse_address(arg, &v->address, &v->address_len, &error) < 0)
                        return parse_error(ret_error, "invalid address verifier \"%s\": %s", s, error);
                v->kind = VERIFIER_KIND_NET;

        } else {
                /* E-MailRelay runs the path as it is: no words are split off. */
                arg = g_str_has_prefix(s, "file:") ? s + 5 : s;
                if (*arg == '\0')
                        return parse_error(ret_error, "invalid address verifier \"%s\": missing program", s);
                if (arg[0] == '/')
                        v->path = g_strdup(arg);
                else {
                        /* The startup directory, as for filters: not wherever we are later. */
                        _cleanup_free_ char *cwd = getcwd(NULL, 0);

                        if (!cwd)
                                return negative_errno();
                        v->path = g_build_filename(cwd, arg, NULL);
                }
                v->envp = child_make_envp();
                v->kind = VERIFIER_KIND_PROGRAM;
        }

        *ret = TAKE_PTR(v);
        return 0;
}

void verify_outcome_done(VerifyOutcome *o) {
        if (!o)
                return;
        g_clear_pointer(&o->full_name, g_free);
        g_clear_pointer(&o->mailbox, g_free);
        g_clear_pointer(&o->address, g_free);
        g_clear_pointer(&o->response, g_free);
        g_clear_pointer(&o->reason, g_free);
}

/* A verifier's text made fit for replies, envelopes and the log: control characters dropped
 * (tabs become spaces), white space trimmed, at most TEXT_MAX bytes without splitting a UTF-8
 * character. NULL stays NULL. */
static char *clean_text(const char *s, size_t len) {
        GString *t;

        if (!s)
                return NULL;

        t = g_string_sized_new(MIN(len, (size_t) TEXT_MAX) + 1);
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];

                if (c == '\t')
                        c = ' ';
                else if (c < 0x20 || c == 0x7f)
                        continue;
                if (t->len == TEXT_MAX) {
                        /* A continuation byte next means the last character was cut: drop
                         * its start too (at most three bytes, whatever the input). */
                        for (unsigned k = 0; k < 3 && t->len > 0 && (c & 0xC0) == 0x80; k++) {
                                c = (unsigned char) t->str[t->len - 1];
                                g_string_truncate(t, t->len - 1);
                        }
                        break;
                }
                g_string_append_c(t, (char) c);
        }
        return g_strstrip(g_string_free(t, FALSE));
}

static void outcome_temporary(VerifyOutcome *o, const char *response, char *reason) {
        *o = (VerifyOutcome){ .result = VERIFY_TEMPORARY, .response = g_strdup(response), .reason = reason };
}

/* E-MailRelay's table, from a code and the two texts a verifier gave (cleaned, NULL when
 * missing; both taken over). */
static void outcome_from_code(const char *recipient, int code, char *line1, char *line2, VerifyOutcome *ret) {
        VerifyOutcome o = {};

        switch (code) {
        case 0:
                if (isempty(line2)) {
                        /* A local recipient without a mailbox cannot be delivered; say "try
                         * later" rather than bounce while someone fixes the verifier. */
                        outcome_temporary(&o, CANNOT_VERIFY,
                                          g_strdup("the verifier gave no mailbox for a local address"));
                        break;
                }
                o.result = VERIFY_LOCAL;
                o.full_name = line1 ? g_steal_pointer(&line1) : g_strdup("");
                o.mailbox = g_steal_pointer(&line2);
                o.address = g_strdup(recipient);
                break;

        case 1:
                o.result = VERIFY_REMOTE;
                o.address = !isempty(line2) ? g_steal_pointer(&line2) : g_strdup(recipient);
                break;

        case 100:
                o.result = VERIFY_ABORT;
                o.reason = g_strdup("the verifier asked to drop the connection");
                break;

        default:
                o.result = code == 3 ? VERIFY_TEMPORARY : VERIFY_INVALID;
                o.response = !isempty(line1) ? g_steal_pointer(&line1) : g_strdup(DEFAULT_RESPONSE);
                o.reason = !isempty(line2) ? g_steal_pointer(&line2) : g_strdup(o.response);
                break;
        }

        g_free(line1);
        g_free(line2);
        *ret = o;
}

static void step_reset(VerifyRun *run) {
        run->defer_source = sd_event_source_disable_unref(run->defer_source);
        run->timer_source = sd_event_source_disable_unref(run->timer_source);
        /* Kills the program's process group and reaps it. */
        run->child = child_free(run->child);
        run->sock_source = sd_event_source_disable_unref(run->sock_source);
        run->sock_fd = safe_close(run->sock_fd);
}

static VerifyRun *run_free(VerifyRun *run) {
        if (!run)
                return NULL;

        step_reset(run);
        for (size_t i = 0; i < _ARG_MAX; i++)
                g_free(run->args[i]);
        g_free(run->out);
        g_free(run->in);
        verifier_free(run->verifier);
        sd_event_unref(run->event);
        g_free(run);
        return NULL;
}

VerifyRun *verifier_run_cancel(VerifyRun *run) {
        if (!run)
                return NULL;

        /* From inside its own callback: the run is freed as soon as the callback returns. */
        if (run->in_callback)
                return NULL;

        return run_free(run);
}

/* Report o (taken over) and free the run: the caller must return without touching it. */
static void run_finish(VerifyRun *run, VerifyOutcome *o) {
        step_reset(run);
        run->in_callback = true;
        run->callback(o, run->userdata);
        verify_outcome_done(o);
        run_free(run);
}

static void run_fail(VerifyRun *run, const char *response, const char *format, ...) _printf_(3, 4);
static void run_fail(VerifyRun *run, const char *response, const char *format, ...) {
        VerifyOutcome o;
        va_list ap;

        va_start(ap, format);
        outcome_temporary(&o, response, g_strdup_vprintf(format, ap));
        va_end(ap);
        run_finish(run, &o);
}

/* ---- programs ---- */

static void on_program_done(const ChildResult *result, void *userdata) {
        VerifyRun *run = userdata;
        const char *p = result->output, *end = result->output + result->output_len;
        char *lines[2] = {};
        VerifyOutcome o;

        if (result->timed_out) {
                /* E-MailRelay's "450 timeout". */
                run_fail(run, "timeout", "timeout");
                return;
        }
        if (result->exec_error != 0) {
                run_fail(run, CANNOT_VERIFY, "%s: cannot execute: %s", run->verifier->path,
                         g_strerror(result->exec_error));
                return;
        }
        if (result->signal != 0) {
                run_fail(run, CANNOT_VERIFY, "%s: killed by signal %d", run->verifier->path, result->signal);
                return;
        }

        for (size_t i = 0; p && p < end && i < ELEMENTSOF(lines); i++) {
                const char *nl = memchr(p, '\n', end - p);

                lines[i] = clean_text(p, (nl ? nl : end) - p);
                p = nl ? nl + 1 : NULL;
        }

        outcome_from_code(run->args[ARG_RECIPIENT], result->exit_code, lines[0], lines[1], &o);
        run_finish(run, &o);
}

static int program_start(VerifyRun *run) {
        char *argv[_ARG_MAX + 2];

        argv[0] = run->verifier->path;
        for (size_t i = 0; i < _ARG_MAX; i++)
                argv[i + 1] = run->args[i];
        argv[_ARG_MAX + 1] = NULL;

        return child_spawn(run->event, argv, run->verifier->envp, OUTPUT_MAX, run->timeout_usec, on_program_done,
                           run, &run->child);
}

/* ---- net: ---- */

/* "0|<mailbox>|<full name>", "1|<address>", "2|<response>[|<reason>]", "3|...", "100": mapped
 * onto a program's two lines. 0 with the outcome, or -EBADMSG. */
static int net_outcome_from_reply(const char *recipient, const char *line, size_t len, VerifyOutcome *ret) {
        g_auto(GStrv) fields = NULL;
        g_autofree char *text = NULL;
        size_t n_digits;
        char *a, *b;
        int code;

        if (len > 0 && line[len - 1] == '\r')
                len--;
        text = g_strndup(line, len);
        fields = g_strsplit(text, "|", 3);
        if (!fields[0])
                return -EBADMSG;
        n_digits = strspn(fields[0], "0123456789");
        if (n_digits == 0 || n_digits > 3 || fields[0][n_digits] != '\0')
                return -EBADMSG;
        code = atoi(fields[0]);

        a = fields[1] ? clean_text(fields[1], strlen(fields[1])) : NULL;
        b = fields[1] && fields[2] ? clean_text(fields[2], strlen(fields[2])) : NULL;
        if (code == 0)
                outcome_from_code(recipient, code, b, a, ret);
        else if (code == 1) {
                g_free(b);
                outcome_from_code(recipient, code, NULL, a, ret);
        } else
                outcome_from_code(recipient, code, a, b, ret);
        return 0;
}

static void net_fail(VerifyRun *run, const char *format, ...) _printf_(2, 3);
static void net_fail(VerifyRun *run, const char *format, ...) {
        g_autofree char *what = NULL;
        va_list ap;

        va_start(ap, format);
        what = g_strdup_vprintf(format, ap);
        va_end(ap);
        run_fail(run, CANNOT_VERIFY, "%s: %s", run->verifier->spec, what);
}

static void net_receive(VerifyRun *run) {
        for (;;) {
                const char *nl;
                VerifyOutcome o;
                size_t line_len;
                ssize_t n;

                if (run->in_len == NET_REPLY_MAX) {
                        net_fail(run, "reply too long");
                        return;
                }
                n = recv(run->sock_fd, run->in + run->in_len, NET_REPLY_MAX - run->in_len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return;
                        net_fail(run, "receive: %s", g_strerror(errno));
                        return;
                }
                run->in_len += (size_t) n;

                nl = memchr(run->in, '\n', run->in_len);
                if (!nl && n > 0)
                        continue;
                if (!nl && run->in_len == 0) {
                        net_fail(run, "connection closed without a reply");
                        return;
                }
                /* A last line without its newline still counts. */
                line_len = nl ? (size_t) (nl - run->in) : run->in_len;
                if (net_outcome_from_reply(run->args[ARG_RECIPIENT], run->in, line_len, &o) < 0) {
                        g_autofree char *shown = clean_text(run->in, MIN(line_len, (size_t) 200));

                        net_fail(run, "invalid reply: %s", shown);
                        return;
                }
                run_finish(run, &o);
                return;
        }
}

static int on_net_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        VerifyRun *run = userdata;
        int r;

        if (!run->connected) {
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0) {
                        net_fail(run, "connect: %s", g_strerror(error));
                        return 0;
                }
                run->connected = true;
        }

        if (!run->sent) {
                while (run->out_sent < run->out_len) {
                        ssize_t n = send(fd, run->out + run->out_sent, run->out_len - run->out_sent, MSG_NOSIGNAL);

                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno == EAGAIN)
                                        return 0;
                                net_fail(run, "send: %s", g_strerror(errno));
                                return 0;
                        }
                        run->out_sent += (size_t) n;
                }
                run->sent = true;
                r = sd_event_source_set_io_events(s, EPOLLIN);
                if (r < 0)
                        net_fail(run, "%s", g_strerror(-r));
                return 0;
        }

        net_receive(run);
        return 0;
}

static int on_net_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        net_fail(userdata, "timeout");
        return 0;
}

static int net_start(VerifyRun *run) {
        const Verifier *v = run->verifier;
        _cleanup_close_ int fd = -EBADF;
        GString *out = g_string_new(NULL);
        int r;

        /* One line, fields between bars. A field cannot end the line early. */
        for (size_t i = 0; i < _ARG_MAX; i++) {
                if (i > 0)
                        g_string_append_c(out, '|');
                for (const char *p = run->args[i]; *p; p++)
                        if (*p != '\r' && *p != '\n')
                                g_string_append_c(out, *p);
        }
        g_string_append_c(out, '\n');
        run->out_len = out->len;
        run->out = g_string_free(out, FALSE);
        run->in = g_malloc(NET_REPLY_MAX);

        fd = socket(v->address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        if (connect(fd, (const struct sockaddr *) &v->address, v->address_len) < 0) {
                if (errno != EINPROGRESS)
                        return negative_errno();
        } else
                run->connected = true;

        r = sd_event_add_io(run->event, &run->sock_source, fd, EPOLLOUT, on_net_io, run);
        if (r < 0)
                return r;
        run->sock_fd = TAKE_FD(fd);

        if (run->timeout_usec > 0) {
                r = sd_event_add_time_relative(run->event, &run->timer_source, CLOCK_MONOTONIC, run->timeout_usec,
                                               USEC_PER_MSEC, on_net_timeout, run);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- runs ---- */

static int on_start(sd_event_source *s, void *userdata) {
        VerifyRun *run = userdata;
        VerifyOutcome o;
        int r;

        run->defer_source = sd_event_source_disable_unref(run->defer_source);

        switch (run->verifier->kind) {
        case VERIFIER_KIND_EXIT:
                outcome_from_code(run->args[ARG_RECIPIENT], 1, NULL, NULL, &o);
                run_finish(run, &o);
                return 0;

        case VERIFIER_KIND_PROGRAM:
                r = program_start(run);
                if (r < 0)
                        run_fail(run, CANNOT_VERIFY, "%s: %s", run->verifier->path, g_strerror(-r));
                return 0;

        case VERIFIER_KIND_NET:
                r = net_start(run);
                if (r < 0)
                        net_fail(run, "connect: %s", g_strerror(-r));
                return 0;

        default:
                assert(false);
                return 0;
        }
}

int verifier_run(Verifier *v, sd_event *e, const VerifyRequest *req, unsigned timeout_seconds, VerifyDoneCallback cb,
                 void *userdata, VerifyRun **ret) {
        VerifyRun *run;
        int r;

        assert(v);
        assert(e);
        assert(req);
        assert(req->recipient);
        assert(cb);

        if (v->kind == VERIFIER_KIND_PROGRAM) {
                r = child_block_sigchld();
                if (r < 0)
                        return r;
        }

        run = g_new0(VerifyRun, 1);
        run->verifier = v;
        v->n_ref++;
        run->event = sd_event_ref(e);
        run->args[ARG_RECIPIENT] = g_strdup(req->recipient);
        run->args[ARG_FROM] = g_strdup(req->from ? req->from : "");
        run->args[ARG_PEER] = g_strdup(req->peer ? req->peer : "");
        run->args[ARG_DOMAIN] = g_strdup(req->domain ? req->domain : "");
        run->args[ARG_MECHANISM] = g_ascii_strdown(!isempty(req->mechanism) ? req->mechanism : "none", -1);
        run->args[ARG_AUTH_ID] = g_strdup(req->auth_id ? req->auth_id : "");
        run->timeout_usec = (uint64_t) timeout_seconds * USEC_PER_SEC;
        run->callback = cb;
        run->userdata = userdata;
        run->sock_fd = -EBADF;

        /* Even exit: answers from the loop: callers need not handle a callback that runs before
         * verifier_run() has returned. */
        r = sd_event_add_defer(e, &run->defer_source, on_start, run);
        if (r < 0) {
                run_free(run);
                return r;
        }

        if (ret)
                *ret = run;
        return 0;
}
