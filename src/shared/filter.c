/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The filter runner: parses --filter specs into chains and runs them on an sd-event loop, one
 * filter at a time, each with its own timeout. */

#include <arpa/inet.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "filter.h"
#include "log.h"
#include "macro.h"

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC UINT64_C(1000000)

/* Program output: what we keep, and how much of that is searched for <<response>> lines. The
 * rest is read and thrown away, so that a chatty filter never blocks on a full pipe. */
#define OUTPUT_MAX (64U * 1024U)
#define OUTPUT_SCAN_MAX 4096U
/* A net: reply is one line. */
#define NET_REPLY_MAX 4096U
/* spamd's reply to CHECK is a few header lines; to PROCESS it is the message again, grown by
 * the report headers (or by a whole report with the original attached). */
#define SPAM_CHECK_REPLY_MAX (64U * 1024U)
#define SPAM_PROCESS_REPLY_EXTRA (1024U * 1024U)
#define SPAM_HEADER_MAX (64U * 1024U)
#define IO_CHUNK (64U * 1024U)
/* Reads or writes per wakeup: a busy filter must not starve the other sessions on the loop. */
#define IO_BURST 16U
#define SLEEP_MAX_MS (24U * 3600U * 1000U)
#define MSGID_DEFAULT_DOMAIN "emailrelay.local"
#define DOMAIN_MAX 253U

typedef enum FilterKind {
        FILTER_KIND_EXIT,
        FILTER_KIND_SLEEP,
        FILTER_KIND_PROGRAM,
        FILTER_KIND_NET,
        FILTER_KIND_SPAM,
        FILTER_KIND_SPAM_EDIT,
        FILTER_KIND_COPY,
        FILTER_KIND_MSGID,
        _FILTER_KIND_MAX,
} FilterKind;

typedef union SockaddrUnion {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
} SockaddrUnion;

/* net:: how many idle connections a filter keeps for the runs that come next. */
#define NET_IDLE_MAX 4

typedef struct Filter {
        FilterKind kind;
        char *spec;              /* as written, to name the filter in failure reasons */
        int exit_code;           /* exit: */
        uint64_t sleep_usec;     /* sleepms: */
        char **argv;             /* program: the words, the first made absolute */
        SockaddrUnion address;   /* net:, spam:, spam-edit: */
        socklen_t address_len;
        bool copy_pop;           /* copy: the envelope only */
        bool copy_hardlink;      /* copy: link() the content rather than copy it */
        bool copy_nodelete;      /* copy: keep the original, and pass */
        char *msgid_domain;      /* msgid: */
        /* net: connections kept open between requests, as E-MailRelay keeps its one: the
         * protocol is a line each way, for as long as the connection lasts. */
        int idle_fds[NET_IDLE_MAX];
        size_t n_idle;
} Filter;

struct FilterChain {
        unsigned n_ref;          /* the owner's reference plus one per run in flight */
        FilterSide side;
        Filter *filters;
        size_t n_filters;
        char **envp;             /* for programs: child_make_envp() */
        bool has_programs;
};

typedef enum SocketState {
        SOCKET_CONNECTING,
        SOCKET_SENDING,
        SOCKET_RECEIVING,
} SocketState;

struct FilterRun {
        FilterChain *chain;
        sd_event *event;
        char *content_path;
        char *envelope_path;
        uint64_t timeout_usec;              /* per filter; 0 for none */
        FilterDoneCallback callback;
        void *userdata;
        bool in_callback;

        size_t index;                       /* the filter running */
        bool rescan;                        /* ORed over the filters run so far */
        bool stop_scanning;
        char *warning;                      /* the last passing filter's reason, for the log */

        sd_event_source *defer_source;      /* starts the chain; completes exit:N, copy:,
                                             * msgid: */
        sd_event_source *timer_source;      /* the timeout (a program's child keeps its own) */
        sd_event_source *sleep_source;      /* sleepms: */

        Child *child;                       /* a program; it keeps its own timeout */

        /* A net:, spam: or spam-edit: connection. */
        int sock_fd;
        sd_event_source *sock_source;
        SocketState sock_state;
        char *out;                          /* what is being sent */
        size_t out_len, out_sent, out_size;
        int content_fd;                     /* spam: the content, streamed after the header */
        uint64_t content_left;
        char *in;                           /* the reply so far */
        size_t in_len, in_size, in_max;
        bool sock_reused;                   /* net:: a kept connection, which may have gone stale */
};

static const char *const unsupported_kinds[] = { "deliver:", "split:", "mx:" };

/* net:: forget the kept connections (at the end, or when one turned out stale). */
static void net_drop_idle(Filter *f) {
        while (f->n_idle > 0)
                safe_close(f->idle_fds[--f->n_idle]);
}

static void filter_done(Filter *f) {
        net_drop_idle(f);
        g_free(f->spec);
        g_strfreev(f->argv);
        g_free(f->msgid_domain);
        *f = (Filter){};
}

static void filter_donep(Filter *f) {
        filter_done(f);
}

FilterChain *filter_chain_free(FilterChain *chain) {
        if (!chain)
                return NULL;

        /* Runs in flight hold references, so that the owner may drop the chain (say on a
         * configuration reload) without waiting for them. */
        assert(chain->n_ref > 0);
        if (--chain->n_ref > 0)
                return NULL;

        for (size_t i = 0; i < chain->n_filters; i++)
                filter_done(&chain->filters[i]);
        g_free(chain->filters);
        g_strfreev(chain->envp);
        g_free(chain);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(FilterChain *, filter_chain_free);

bool filter_chain_is_empty(const FilterChain *chain) {
        return !chain || chain->n_filters == 0;
}

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

/* Plain decimal only: no sign, no white space, no base prefix. */
static int parse_uint(const char *s, unsigned max, unsigned *ret) {
        unsigned long v;
        char *end;

        if (!g_ascii_isdigit(*s))
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || *end != '\0' || v > max)
                return -ERANGE;
        *ret = (unsigned) v;
        return 0;
}

/* Only numeric addresses: a name would need a resolver, and a blocking one has no place in a
 * daemon's loop. */
static int parse_address(const char *s, SockaddrUnion *ret, socklen_t *ret_len, const char **ret_error) {
        static const char numeric_error[] = "filter address must be numeric or a unix socket path";
        SockaddrUnion a = {};
        g_autofree char *host = NULL;
        const char *port;
        unsigned p;

        if (isempty(s)) {
                *ret_error = "missing address";
                return -EINVAL;
        }

        if (s[0] == '/') {
                size_t n = strlen(s);

                if (n >= sizeof(a.un.sun_path)) {
                        *ret_error = "unix socket path too long";
                        return -EINVAL;
                }
                a.un.sun_family = AF_UNIX;
                memcpy(a.un.sun_path, s, n);
                *ret = a;
                *ret_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1);
                return 0;
        }

        if (s[0] == '[') {
                const char *e = strchr(s, ']');

                if (!e) {
                        *ret_error = numeric_error;
                        return -EINVAL;
                }
                if (e[1] != ':') {
                        *ret_error = "missing port";
                        return -EINVAL;
                }
                host = g_strndup(s + 1, e - s - 1);
                port = e + 2;
        } else {
                /* The last colon, so that an unbracketed IPv6 address works too. */
                const char *c = strrchr(s, ':');

                if (!c) {
                        struct in_addr probe;

                        *ret_error = inet_pton(AF_INET, s, &probe) == 1 ? "missing port" : numeric_error;
                        return -EINVAL;
                }
                host = g_strndup(s, c - s);
                port = c + 1;
        }

        if (inet_pton(AF_INET, host, &a.in.sin_addr) == 1) {
                a.in.sin_family = AF_INET;
                *ret_len = sizeof(a.in);
        } else if (inet_pton(AF_INET6, host, &a.in6.sin6_addr) == 1) {
                a.in6.sin6_family = AF_INET6;
                *ret_len = sizeof(a.in6);
        } else {
                *ret_error = numeric_error;
                return -EINVAL;
        }

        if (parse_uint(port, 65535, &p) < 0 || p == 0) {
                *ret_error = isempty(port) ? "missing port" : "invalid port";
                return -EINVAL;
        }
        if (a.sa.sa_family == AF_INET)
                a.in.sin_port = htons((uint16_t) p);
        else
                a.in6.sin6_port = htons((uint16_t) p);

        *ret = a;
        return 0;
}

int filter_parse_address(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len, const char **ret_error) {
        SockaddrUnion a;
        socklen_t len;
        const char *error = NULL;

        assert(ret);
        assert(ret_len);

        if (parse_address(s, &a, &len, &error) < 0) {
                if (ret_error)
                        *ret_error = error;
                return -EINVAL;
        }
        assert(len <= sizeof(*ret));
        memset(ret, 0, sizeof(*ret));
        memcpy(ret, &a, len);
        *ret_len = len;
        return 0;
}

/* copy:[pop;hardlink;nodelete], each also by its initial; an empty list is the default. */
static int parse_copy(const char *spec, const char *arg, Filter *f, char **ret_error) {
        g_auto(GStrv) options = g_strsplit(arg, ";", -1);

        for (char **o = options; *o; o++) {
                g_strstrip(*o);
                if (**o == '\0')
                        continue;
                if (streq(*o, "pop") || streq(*o, "p"))
                        f->copy_pop = true;
                else if (streq(*o, "hardlink") || streq(*o, "h"))
                        f->copy_hardlink = true;
                else if (streq(*o, "nodelete") || streq(*o, "n"))
                        f->copy_nodelete = true;
                else
                        return parse_error(ret_error, "invalid filter \"%s\": unknown copy option \"%s\"", spec, *o);
        }
        f->kind = FILTER_KIND_COPY;
        return 0;
}

/* msgid:[<domain>]: the domain goes into a header line, so only what a host name is made of. */
static int parse_msgid(const char *spec, const char *arg, Filter *f, char **ret_error) {
        if (isempty(arg))
                arg = MSGID_DEFAULT_DOMAIN;
        if (strlen(arg) > DOMAIN_MAX || arg[0] == '.' || arg[0] == '-')
                return parse_error(ret_error, "invalid filter \"%s\": invalid domain", spec);
        for (const char *p = arg; *p; p++)
                if (!g_ascii_isalnum(*p) && *p != '.' && *p != '-' && *p != '_')
                        return parse_error(ret_error, "invalid filter \"%s\": invalid domain", spec);
        f->kind = FILTER_KIND_MSGID;
        f->msgid_domain = g_strdup(arg);
        return 0;
}

/* E-MailRelay splits a program spec on white space, with no quoting, so that
 * "/usr/bin/spamassassin -e" works; a relative program is taken from the startup directory. */
static int parse_program(const char *spec, const char *command, char **cwd, Filter *f, char **ret_error) {
        g_autoptr(GPtrArray) words = g_ptr_array_new_with_free_func(g_free);

        for (const char *p = command;;) {
                size_t n;

                p += strspn(p, " \t");
                if (!*p)
                        break;
                n = strcspn(p, " \t");
                g_ptr_array_add(words, g_strndup(p, n));
                p += n;
        }
        if (words->len == 0)
                return parse_error(ret_error, "invalid filter \"%s\": missing program", spec);

        if (((char *) words->pdata[0])[0] != '/') {
                char *absolute;

                if (!*cwd) {
                        *cwd = getcwd(NULL, 0);
                        if (!*cwd)
                                return negative_errno();
                }
                absolute = g_build_filename(*cwd, (char *) words->pdata[0], NULL);
                g_free(words->pdata[0]);
                words->pdata[0] = absolute;
        }

        g_ptr_array_add(words, NULL);
        g_ptr_array_set_free_func(words, NULL);
        f->kind = FILTER_KIND_PROGRAM;
        f->argv = (char **) g_ptr_array_free(g_steal_pointer(&words), FALSE);
        return 0;
}

/* One element of a chain, already trimmed. */
static int parse_one(const char *spec, char **cwd, Filter *ret, char **ret_error) {
        _cleanup_(filter_donep) Filter f = {};
        const char *arg, *error = NULL;
        unsigned n;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(unsupported_kinds); i++)
                if (g_str_has_prefix(spec, unsupported_kinds[i]))
                        return parse_error(ret_error, "filter \"%s\" is not supported yet", unsupported_kinds[i]);

        f.spec = g_strdup(spec);

        if ((arg = g_str_has_prefix(spec, "exit:") ? spec + 5 : NULL)) {
                if (parse_uint(arg, 255, &n) < 0)
                        return parse_error(ret_error, "invalid filter \"%s\": exit code must be a number from 0 to 255",
                                           spec);
                f.kind = FILTER_KIND_EXIT;
                f.exit_code = (int) n;

        } else if ((arg = g_str_has_prefix(spec, "sleepms:") ? spec + 8 : NULL)) {
                if (parse_uint(arg, SLEEP_MAX_MS, &n) < 0)
                        return parse_error(ret_error, "invalid filter \"%s\": invalid number of milliseconds", spec);
                f.kind = FILTER_KIND_SLEEP;
                f.sleep_usec = n * USEC_PER_MSEC;

        } else if ((arg = g_str_has_prefix(spec, "net:") ? spec + 4 : NULL) ||
                   (arg = g_str_has_prefix(spec, "spam:") ? spec + 5 : NULL) ||
                   (arg = g_str_has_prefix(spec, "spam-edit:") ? spec + 10 : NULL)) {
                f.kind = spec[0] == 'n' ? FILTER_KIND_NET : spec[4] == ':' ? FILTER_KIND_SPAM : FILTER_KIND_SPAM_EDIT;
                if (parse_address(arg, &f.address, &f.address_len, &error) < 0)
                        return parse_error(ret_error, "invalid filter \"%s\": %s", spec, error);

        } else if ((arg = g_str_has_prefix(spec, "copy:") ? spec + 5 : NULL)) {
                r = parse_copy(spec, arg, &f, ret_error);
                if (r < 0)
                        return r;

        } else if ((arg = g_str_has_prefix(spec, "msgid:") ? spec + 6 : NULL)) {
                r = parse_msgid(spec, arg, &f, ret_error);
                if (r < 0)
                        return r;

        } else {
                r = parse_program(spec, g_str_has_prefix(spec, "file:") ? spec + 5 : spec, cwd, &f, ret_error);
                if (r < 0)
                        return r;
        }

        *ret = f;
        f = (Filter){};
        return 0;
}

static bool is_blank(const char *s) {
        return s[strspn(s, " \t\r\n")] == '\0';
}

int filter_chain_parse(const char *const *specs, size_t n_specs, FilterSide side, FilterChain **ret,
                       char **ret_error) {
        _cleanup_(filter_chain_freep) FilterChain *chain = NULL;
        _cleanup_free_ char *cwd = NULL;
        size_t n_max = 0;
        int r;

        assert(specs || n_specs == 0);
        assert(side >= 0 && side < _FILTER_SIDE_MAX);
        assert(ret);

        /* Elements are at most the commas plus one per spec. */
        for (size_t i = 0; i < n_specs; i++)
                if (specs[i]) {
                        n_max++;
                        for (const char *p = specs[i]; (p = strchr(p, ',')); p++)
                                n_max++;
                }

        chain = g_new0(FilterChain, 1);
        chain->n_ref = 1;
        chain->side = side;
        chain->filters = g_new0(Filter, n_max);

        for (size_t i = 0; i < n_specs; i++) {
                g_auto(GStrv) elements = NULL;

                /* An empty option is "exit:0", which changes nothing in a chain. */
                if (!specs[i] || is_blank(specs[i]))
                        continue;

                elements = g_strsplit(specs[i], ",", -1);
                for (char **e = elements; *e; e++) {
                        g_strstrip(*e);
                        if (**e == '\0')
                                return parse_error(ret_error, "invalid filter \"%s\": empty filter in the chain",
                                                   specs[i]);

                        assert(chain->n_filters < n_max);
                        r = parse_one(*e, &cwd, &chain->filters[chain->n_filters], ret_error);
                        if (r < 0)
                                return r;
                        if (chain->filters[chain->n_filters].kind == FILTER_KIND_PROGRAM)
                                chain->has_programs = true;
                        chain->n_filters++;
                }
        }

        /* Taken now rather than at each run: the daemon's environment does not change. */
        chain->envp = child_make_envp();

        *ret = TAKE_PTR(chain);
        return 0;
}

void filter_outcome_done(FilterOutcome *o) {
        if (!o)
                return;
        g_free(o->response);
        g_free(o->reason);
        o->response = o->reason = NULL;
}

/* Both texts end up in SMTP replies and in envelope lines: no control characters but tab. */
static char *sanitize(char *s) {
        if (s)
                for (char *p = s; *p; p++)
                        if (((unsigned char) *p < 0x20 && *p != '\t') || *p == 0x7f)
                                *p = ' ';
        return s;
}

/* "550 go away" gives 550 and leaves "go away". Only 4xx and 5xx count (and 100 where abandon
 * is meant), followed by a space, a tab or the end, which is removed with the code. */
static int take_reply_code(char *s, bool allow_100) {
        int code;

        if (!s || !g_ascii_isdigit(s[0]) || !g_ascii_isdigit(s[1]) || !g_ascii_isdigit(s[2]))
                return 0;
        if (s[3] != '\0' && s[3] != ' ' && s[3] != '\t')
                return 0;
        code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
        if (!(code >= 400 && code <= 599) && !(allow_100 && code == 100))
                return 0;
        memmove(s, s + 3 + (s[3] != '\0'), strlen(s + 3 + (s[3] != '\0')) + 1);
        return code;
}

/* Fill response, reason and smtp_code from the texts a filter gave (both taken over, either
 * may be NULL). The default reason is the response as the filter wrote it, code included. */
static void outcome_set_texts(FilterOutcome *o, char *response, char *reason) {
        g_autofree char *as_written = NULL;

        sanitize(response);
        sanitize(reason);

        if (response) {
                as_written = g_strdup(response);
                o->smtp_code = take_reply_code(response, false);
                if (*response == '\0')
                        g_clear_pointer(&response, g_free);
        }
        if (!response && o->result == FILTER_FAIL)
                response = g_strdup("rejected");

        if (isempty(reason)) {
                g_free(reason);
                reason = !isempty(as_written) ? g_steal_pointer(&as_written) : g_strdup(response);
        }

        o->response = response;
        o->reason = reason;
}

/* The text between the markers of a "<<...>>" or "[[...]]" line, or NULL for any other line. */
static char *marked_text(const char *line, size_t len) {
        const char *close, *end;

        if (len < 4)
                return NULL;
        if (memcmp(line, "<<", 2) == 0)
                close = ">>";
        else if (memcmp(line, "[[", 2) == 0)
                close = "]]";
        else
                return NULL;

        end = memmem(line + 2, len - 2, close, 2);
        if (!end)
                return NULL;
        return g_strndup(line + 2, end - line - 2);
}

void filter_outcome_from_exit(FilterSide side, int exit_code, const char *output, size_t output_len,
                              FilterOutcome *ret) {
        FilterOutcome o = { .exit_code = exit_code, .result = FILTER_FAIL };
        char *kept[2] = {};
        size_t n_kept = 0;
        const char *p, *end;

        assert(side >= 0 && side < _FILTER_SIDE_MAX);
        assert(output || output_len == 0);
        assert(ret);

        if (exit_code == 0 || exit_code == 101)
                o.result = FILTER_OK;
        else if (exit_code == 100)
                o.result = FILTER_ABANDON;
        else if (side == FILTER_SERVER)
                switch (exit_code) {
                case 102:
                        o.result = FILTER_ABANDON;
                        o.rescan = true;
                        break;
                case 103:
                        o.result = FILTER_OK;
                        o.rescan = true;
                        break;
                case 104:
                        o.rescan = true;
                        break;
                default:
                        break;
                }
        else
                switch (exit_code) {
                case 102:
                        o.result = FILTER_OK;
                        o.stop_scanning = true;
                        break;
                case 103:
                        o.result = FILTER_OK;
                        break;
                case 104:
                        o.result = FILTER_ABANDON;
                        o.stop_scanning = true;
                        break;
                case 105:
                        o.stop_scanning = true;
                        break;
                default:
                        break;
                }

        /* A passing filter's words go nowhere. */
        if (o.result == FILTER_OK) {
                *ret = o;
                return;
        }

        p = output;
        end = output ? output + MIN(output_len, OUTPUT_SCAN_MAX) : NULL;
        while (p && p < end && n_kept < ELEMENTSOF(kept)) {
                const char *nl = memchr(p, '\n', end - p);
                size_t len = (nl ? nl : end) - p;
                char *text;

                if (len > 0 && p[len - 1] == '\r')
                        len--;
                text = marked_text(p, len);
                if (text)
                        kept[n_kept++] = text;
                p = nl ? nl + 1 : NULL;
        }

        /* What the exec error of a program looks like (below); the reply is then a plain
         * "rejected" and the error goes to the log. */
        if (exit_code == 127 && kept[0] && g_str_has_prefix(kept[0], "filter exec error")) {
                g_free(kept[1]);
                kept[1] = kept[0];
                kept[0] = g_strdup("rejected");
        }

        outcome_set_texts(&o, kept[0], kept[1]);
        *ret = o;
}

/* A net: reply line: "ok...", or "[<4xx|5xx|100> ]<response>[<TAB><reason>]"; 100 abandons. */
static void net_outcome_from_reply(const char *line, size_t len, FilterOutcome *ret) {
        FilterOutcome o = { .exit_code = -1, .result = FILTER_FAIL };
        char *text, *reason = NULL, *tab;
        size_t skip = 0;

        if (len > 0 && line[len - 1] == '\r')
                len--;
        if (len >= 2 && memcmp(line, "ok", 2) == 0) {
                o.result = FILTER_OK;
                *ret = o;
                return;
        }

        if (len >= 3 && memcmp(line, "100", 3) == 0) {
                o.result = FILTER_ABANDON;
                skip = len > 3 && (line[3] == ' ' || line[3] == '\t') ? 4 : 3;
        }
        text = g_strndup(line + skip, len - skip);

        tab = strchr(text, '\t');
        if (tab) {
                reason = g_strdup(tab + 1);
                *tab = '\0';
        }
        outcome_set_texts(&o, text, reason);
        *ret = o;
}

static const Filter *run_filter(const FilterRun *run) {
        assert(run->index < run->chain->n_filters);
        return &run->chain->filters[run->index];
}

/* Stop whatever the running filter has going. */
static void step_reset(FilterRun *run) {
        run->defer_source = sd_event_source_disable_unref(run->defer_source);
        run->timer_source = sd_event_source_disable_unref(run->timer_source);
        run->sleep_source = sd_event_source_disable_unref(run->sleep_source);

        /* Kills the program's process group and reaps it. */
        run->child = child_free(run->child);

        run->sock_source = sd_event_source_disable_unref(run->sock_source);
        run->sock_fd = safe_close(run->sock_fd);
        run->sock_state = SOCKET_CONNECTING;
        run->sock_reused = false;
        g_clear_pointer(&run->out, g_free);
        run->out_len = run->out_sent = run->out_size = 0;
        run->content_fd = safe_close(run->content_fd);
        run->content_left = 0;
        g_clear_pointer(&run->in, g_free);
        run->in_len = run->in_size = run->in_max = 0;
}

static FilterRun *run_free(FilterRun *run) {
        if (!run)
                return NULL;

        step_reset(run);
        filter_chain_free(run->chain);
        sd_event_unref(run->event);
        g_free(run->warning);
        g_free(run->content_path);
        g_free(run->envelope_path);
        g_free(run);
        return NULL;
}

FilterRun *filter_run_cancel(FilterRun *run) {
        if (!run)
                return NULL;

        /* From inside its own callback: the run is freed as soon as the callback returns. */
        if (run->in_callback)
                return NULL;

        return run_free(run);
}

static void run_finish(FilterRun *run, FilterOutcome *o) {
        run->in_callback = true;
        run->callback(o, run->userdata);
        filter_outcome_done(o);
        run_free(run);
}

static void step_start(FilterRun *run);

/* The running filter has come to o (taken over): go on to the next filter, or report. Either
 * way the caller must return without touching run: it may be gone. */
static void step_done(FilterRun *run, FilterOutcome *o) {
        step_reset(run);

        run->rescan = run->rescan || o->rescan;
        run->stop_scanning = run->stop_scanning || o->stop_scanning;

        if (o->result == FILTER_OK) {
                /* A passing filter's only words are a warning for the log (copy: with nowhere
                 * to copy to); the last one is reported if the whole chain passes. */
                if (o->reason) {
                        g_free(run->warning);
                        run->warning = g_steal_pointer(&o->reason);
                }
                filter_outcome_done(o);
                o->smtp_code = 0;

                if (run->index + 1 < run->chain->n_filters) {
                        run->index++;
                        step_start(run);
                        return;
                }
                o->reason = g_steal_pointer(&run->warning);
        }
        o->rescan = run->rescan;
        o->stop_scanning = run->stop_scanning;
        run_finish(run, o);
}

static void step_fail(FilterRun *run, const char *response, const char *format, ...) _printf_(3, 4);
static void step_fail(FilterRun *run, const char *response, const char *format, ...) {
        FilterOutcome o = { .result = FILTER_FAIL, .exit_code = -1 };
        va_list ap;

        va_start(ap, format);
        o.reason = g_strdup_vprintf(format, ap);
        va_end(ap);
        o.response = g_strdup(response);
        step_done(run, &o);
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        FilterRun *run = userdata;

        /* step_reset() kills the program's process group. */
        step_fail(run, "error", "timeout");
        return 0;
}

static int timeout_start(FilterRun *run) {
        if (run->timeout_usec == 0)
                return 0;
        return sd_event_add_time_relative(run->event, &run->timer_source, CLOCK_MONOTONIC, run->timeout_usec,
                                          USEC_PER_MSEC, on_timeout, run);
}

static int on_exit_code(sd_event_source *s, void *userdata) {
        FilterRun *run = userdata;
        FilterOutcome o;

        filter_outcome_from_exit(run->chain->side, run_filter(run)->exit_code, NULL, 0, &o);
        step_done(run, &o);
        return 0;
}

static int on_sleep_done(sd_event_source *s, uint64_t usec, void *userdata) {
        FilterRun *run = userdata;
        FilterOutcome o;

        filter_outcome_from_exit(run->chain->side, 0, NULL, 0, &o);
        step_done(run, &o);
        return 0;
}

static void on_program_done(const ChildResult *result, void *userdata) {
        FilterRun *run = userdata;
        g_autofree char *exec_output = NULL;
        FilterOutcome o;

        if (result->timed_out) {
                /* The child has killed the process group and reaped the program already. */
                step_fail(run, "error", "timeout");
                return;
        }

        if (result->exec_error != 0) {
                /* Exactly what a forked child would have said before _exit(127). */
                exec_output = g_strdup_printf("<<filter exec error: %s>>\n", g_strerror(result->exec_error));
                filter_outcome_from_exit(run->chain->side, 127, exec_output, strlen(exec_output), &o);
        } else
                filter_outcome_from_exit(run->chain->side, result->exit_code, result->output, result->output_len, &o);
        step_done(run, &o);
}

static int program_start(FilterRun *run, const Filter *f) {
        g_autofree char **argv = NULL;
        size_t n;

        n = g_strv_length(f->argv);
        argv = g_new(char *, n + 3);
        memcpy(argv, f->argv, n * sizeof(char *));
        argv[n] = run->content_path;
        argv[n + 1] = run->envelope_path;
        argv[n + 2] = NULL;

        return child_spawn(run->event, argv, run->chain->envp, OUTPUT_MAX, run->timeout_usec, on_program_done, run,
                           &run->child);
}

/* 1 when everything is sent, 0 when the socket is full, or a negative errno with what failed. */
static int socket_send(FilterRun *run, const char **ret_what) {
        for (unsigned i = 0; i < IO_BURST; i++) {
                ssize_t n;

                if (run->out_sent == run->out_len) {
                        if (run->content_left == 0)
                                return 1;

                        if (run->out_size < IO_CHUNK) {
                                g_free(run->out);
                                run->out = g_malloc(IO_CHUNK);
                                run->out_size = IO_CHUNK;
                        }
                        /* A local file: a synchronous read does not hold the loop for long. */
                        n = read(run->content_fd, run->out, (size_t) MIN(run->content_left, (uint64_t) IO_CHUNK));
                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                *ret_what = "reading the content";
                                return negative_errno();
                        }
                        if (n == 0) {
                                *ret_what = "reading the content";
                                return -ENODATA;
                        }
                        run->content_left -= (uint64_t) n;
                        run->out_len = (size_t) n;
                        run->out_sent = 0;
                }

                n = send(run->sock_fd, run->out + run->out_sent, run->out_len - run->out_sent, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        *ret_what = "send";
                        return negative_errno();
                }
                run->out_sent += (size_t) n;
        }
        return 0;
}

/* spamd's answer, pointing into the reply buffer. */
typedef struct SpamReply {
        char *spam;              /* the Spam: header's value, if any */
        const char *body;        /* PROCESS: the rewritten message */
        size_t body_len;
} SpamReply;

/* 1 with *ret when the reply is complete, 0 when more is needed, or -EBADMSG with
 * *ret_error. */
static int spam_parse_reply(const char *in, size_t len, bool eof, bool process, SpamReply *ret, char **ret_error) {
        const char *p = in, *end = in + len, *header_end = in + MIN(len, SPAM_HEADER_MAX);
        g_autofree char *spam = NULL;
        bool have_status = false, have_length = false, headers_done = false;
        uint64_t length = 0;

        while (!headers_done) {
                const char *nl = memchr(p, '\n', header_end - p), *line = p, *colon;
                size_t l;

                if (!nl) {
                        if (len > SPAM_HEADER_MAX) {
                                *ret_error = g_strdup("spamd reply headers too long");
                                return -EBADMSG;
                        }
                        if (!eof)
                                return 0;
                        /* A CHECK reply cut short of its empty line is still whole. */
                        if (!have_status || p != end || process) {
                                *ret_error = g_strdup("truncated spamd reply");
                                return -EBADMSG;
                        }
                        break;
                }

                l = nl - p;
                p = nl + 1;
                if (l > 0 && line[l - 1] == '\r')
                        l--;

                if (!have_status) {
                        /* "SPAMD/1.1 0 EX_OK" */
                        const char *code = memchr(line, ' ', l);

                        if (l < 6 || memcmp(line, "SPAMD/", 6) != 0 || !code) {
                                *ret_error = g_strdup_printf("not a spamd reply: %.*s", (int) MIN(l, 200U), line);
                                return -EBADMSG;
                        }
                        code++;
                        if (code >= line + l || *code != '0' || (code + 1 < line + l && code[1] != ' ')) {
                                *ret_error = g_strdup_printf("spamd error: %.*s", (int) MIN(l, 200U), line);
                                return -EBADMSG;
                        }
                        have_status = true;
                        continue;
                }

                if (l == 0) {
                        headers_done = true;
                        break;
                }

                colon = memchr(line, ':', l);
                if (!colon)
                        continue;
                if ((size_t) (colon - line) == 4 && g_ascii_strncasecmp(line, "Spam", 4) == 0) {
                        g_free(spam);
                        spam = g_strstrip(g_strndup(colon + 1, line + l - colon - 1));
                } else if ((size_t) (colon - line) == 14 && g_ascii_strncasecmp(line, "Content-length", 14) == 0) {
                        g_autofree char *v = g_strstrip(g_strndup(colon + 1, line + l - colon - 1));
                        char *e;

                        errno = 0;
                        length = g_ascii_strtoull(v, &e, 10);
                        if (!g_ascii_isdigit(*v) || *e != '\0' || errno != 0) {
                                *ret_error = g_strdup("invalid Content-length in spamd reply");
                                return -EBADMSG;
                        }
                        have_length = true;
                }
        }

        if (!process) {
                if (!spam) {
                        *ret_error = g_strdup("no Spam header in spamd reply");
                        return -EBADMSG;
                }
                *ret = (SpamReply){ .spam = sanitize(g_steal_pointer(&spam)) };
                return 1;
        }

        if (have_length) {
                if ((uint64_t) (end - p) < length) {
                        if (!eof)
                                return 0;
                        *ret_error = g_strdup("truncated message in spamd reply");
                        return -EBADMSG;
                }
        } else {
                if (!eof)
                        return 0;
                length = (uint64_t) (end - p);
        }

        *ret = (SpamReply){ .spam = sanitize(g_steal_pointer(&spam)), .body = p, .body_len = (size_t) length };
        return 1;
}

int filter_spamd_reply_parse(const char *in, size_t len, bool eof, bool process, char **ret_spam,
                             size_t *ret_body_offset, size_t *ret_body_len, char **ret_error) {
        SpamReply reply = {};
        int r = spam_parse_reply(in, len, eof, process, &reply, ret_error);
        if (r <= 0)
                return r;
        *ret_spam = reply.spam;
        *ret_body_offset = reply.body ? (size_t) (reply.body - in) : 0;
        *ret_body_len = reply.body_len;
        return 1;
}

/* ---- local file work: spam-edit:, copy:, msgid: ---- */

/* A piece of a file being written: bytes in memory, or a range of another file. */
typedef struct Piece {
        const char *data;        /* NULL: from fd */
        size_t len;
        int fd;
        uint64_t offset;
        uint64_t length;         /* UINT64_MAX: to the end of the file */
} Piece;

static int write_all(int fd, const char *data, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, data, len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                data += n;
                len -= (size_t) n;
        }
        return 0;
}

static int copy_range(int in_fd, uint64_t offset, uint64_t length, int out_fd) {
        g_autofree char *buf = g_malloc(IO_CHUNK);

        while (length > 0) {
                ssize_t n = pread(in_fd, buf, (size_t) MIN(length, (uint64_t) IO_CHUNK), (off_t) offset);
                int r;

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return length == UINT64_MAX ? 0 : -ENODATA;
                r = write_all(out_fd, buf, (size_t) n);
                if (r < 0)
                        return r;
                offset += (uint64_t) n;
                if (length != UINT64_MAX)
                        length -= (uint64_t) n;
        }
        return 0;
}

/* Write name (relative to dir_fd) through <name>.tmp beside it, fsync, rename: a reader sees
 * the old file or the new one, whole. The mode is set exactly, whatever the umask. */
static int write_file_atomic(int dir_fd, const char *name, mode_t mode, const Piece *pieces, size_t n_pieces) {
        g_autofree char *tmp = g_strconcat(name, ".tmp", NULL);
        _cleanup_close_ int fd = -EBADF;
        int r = 0;

        fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return negative_errno();

        if (fchmod(fd, mode) < 0)
                r = negative_errno();
        for (size_t i = 0; r == 0 && i < n_pieces; i++)
                r = pieces[i].data ? write_all(fd, pieces[i].data, pieces[i].len)
                                   : copy_range(pieces[i].fd, pieces[i].offset, pieces[i].length, fd);
        if (r == 0 && fsync(fd) < 0)
                r = negative_errno();
        if (r == 0 && close(TAKE_FD(fd)) < 0)
                r = negative_errno();
        if (r == 0 && renameat(dir_fd, tmp, dir_fd, name) < 0)
                r = negative_errno();
        if (r < 0)
                (void) unlinkat(dir_fd, tmp, 0);
        return r;
}

/* Swap the content for spamd's version. */
static int replace_content(const char *path, const char *data, size_t len) {
        Piece piece = { .data = data, .len = len };
        struct stat st;

        if (stat(path, &st) < 0)
                return negative_errno();
        return write_file_atomic(AT_FDCWD, path, st.st_mode & 07777, &piece, 1);
}

static void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

static int compare_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The spool's sub-directories that copy: serves, sorted: every directory (or link to one)
 * but postmaster and hidden ones. */
static int list_subdirs(int dir_fd, GPtrArray **ret) {
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        int fd;

        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return negative_errno();
        }

        for (;;) {
                struct stat st;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return negative_errno();
                        break;
                }
                if (de->d_name[0] == '.' || streq(de->d_name, "postmaster"))
                        continue;
                /* Real directories only: a symbolic link is no POP user's maildrop (pop3d refuses
                 * one) and would have the copy written outside the spool. */
                if (de->d_type != DT_DIR) {
                        if (de->d_type != DT_LNK && de->d_type != DT_UNKNOWN)
                                continue;
                        if (fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        if (S_ISLNK(st.st_mode))
                                log_warning("copy: %s in the spool is a symbolic link: not copied into", de->d_name);
                        if (!S_ISDIR(st.st_mode))
                                continue;
                }
                g_ptr_array_add(names, g_strdup(de->d_name));
        }

        g_ptr_array_sort(names, compare_names);
        *ret = g_steal_pointer(&names);
        return 0;
}

/* Link the content into a sub-directory under its final name, through a temporary name like
 * a copy, so that a reader never sees a half-made message. */
static int link_file_at(int from_dir_fd, const char *from, int dir_fd, const char *name) {
        g_autofree char *tmp = g_strconcat(name, ".tmp", NULL);
        int r = 0;

        (void) unlinkat(dir_fd, tmp, 0);
        if (linkat(from_dir_fd, from, dir_fd, tmp, 0) < 0)
                return negative_errno();
        if (renameat(dir_fd, tmp, dir_fd, name) < 0)
                r = negative_errno();
        /* rename() between two links to one file does nothing and leaves tmp. */
        (void) unlinkat(dir_fd, tmp, 0);
        return r;
}

/* Take back the copies made so far (the first n sub-directories), so that a failed copy: can
 * be retried without doubling the message in some mailboxes. */
static void copy_rollback(int dir_fd, GPtrArray *subdirs, size_t n, const char *content_name,
                          const char *envelope_name) {
        for (size_t i = 0; i < n; i++) {
                _cleanup_close_ int sub_fd = openat(dir_fd, subdirs->pdata[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

                if (sub_fd < 0)
                        continue;
                /* The envelope first: without it the content is an orphan, not a message. */
                (void) unlinkat(sub_fd, envelope_name, 0);
                if (content_name)
                        (void) unlinkat(sub_fd, content_name, 0);
                (void) fsync(sub_fd);
        }
}

/* copy: 1 when copied into every sub-directory (and the original deleted unless nodelete), 0
 * when there are none, or a negative errno with *ret_error. */
static int copy_message(const Filter *f, const char *content_path, const char *envelope_path, char **ret_error) {
        g_autofree char *dir = g_path_get_dirname(content_path);
        g_autofree char *content_name = g_path_get_basename(content_path);
        g_autofree char *id = NULL, *envelope_name = NULL, *envelope = NULL;
        g_autoptr(GPtrArray) subdirs = NULL;
        g_autoptr(GError) error = NULL;
        _cleanup_close_ int dir_fd = -EBADF, content_fd = -EBADF;
        struct stat content_st = {}, envelope_st;
        bool with_content = !f->copy_pop;
        gsize envelope_len;
        int r;

        if (!g_str_has_suffix(content_name, ".content") || streq(content_name, ".content")) {
                *ret_error = g_strdup_printf("%s: not a spool content file", content_path);
                return -EINVAL;
        }
        /* The copies are ready messages: <id>.envelope beside <id>.content. */
        id = g_strndup(content_name, strlen(content_name) - strlen(".content"));
        envelope_name = g_strconcat(id, ".envelope", NULL);

        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0) {
                r = negative_errno();
                *ret_error = g_strdup_printf("%s: %s", dir, g_strerror(-r));
                return r;
        }
        r = list_subdirs(dir_fd, &subdirs);
        if (r < 0) {
                *ret_error = g_strdup_printf("%s: %s", dir, g_strerror(-r));
                return r;
        }
        if (subdirs->len == 0)
                return 0;

        /* The envelope as the filter sees it (.new or .busy); envelopes are small. */
        if (stat(envelope_path, &envelope_st) < 0 ||
            !g_file_get_contents(envelope_path, &envelope, &envelope_len, &error)) {
                r = error ? -EIO : negative_errno();
                *ret_error = g_strdup_printf("%s: %s", envelope_path, error ? error->message : g_strerror(-r));
                return r;
        }

        if (with_content) {
                content_fd = open(content_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (content_fd < 0 || fstat(content_fd, &content_st) < 0) {
                        r = negative_errno();
                        *ret_error = g_strdup_printf("%s: %s", content_path, g_strerror(-r));
                        return r;
                }
                /* Links share the inode: once synced, every link is durable. */
                if (f->copy_hardlink && fsync(content_fd) < 0) {
                        r = negative_errno();
                        *ret_error = g_strdup_printf("%s: %s", content_path, g_strerror(-r));
                        return r;
                }
        }

        for (size_t i = 0; i < subdirs->len; i++) {
                const char *sub = subdirs->pdata[i];
                _cleanup_close_ int sub_fd = -EBADF;
                const char *what = NULL;
                Piece piece;

                sub_fd = openat(dir_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub_fd < 0) {
                        r = negative_errno();
                        what = "";
                }

                /* The content first: an envelope is what makes a message visible. */
                if (!what && with_content) {
                        r = -EXDEV;
                        if (f->copy_hardlink)
                                r = link_file_at(dir_fd, content_name, sub_fd, content_name);
                        /* A mailbox on another file system (a link to a directory elsewhere)
                         * gets a copy rather than no message. */
                        if (r == -EXDEV) {
                                piece = (Piece){ .fd = content_fd, .length = UINT64_MAX };
                                r = write_file_atomic(sub_fd, content_name, content_st.st_mode & 07777, &piece, 1);
                        }
                        if (r < 0)
                                what = content_name;
                }
                if (!what) {
                        piece = (Piece){ .data = envelope, .len = envelope_len };
                        r = write_file_atomic(sub_fd, envelope_name, envelope_st.st_mode & 07777, &piece, 1);
                        if (r < 0)
                                what = envelope_name;
                }
                if (!what && fsync(sub_fd) < 0) {
                        r = negative_errno();
                        what = "";
                }

                if (what) {
                        copy_rollback(dir_fd, subdirs, i + 1, with_content ? content_name : NULL, envelope_name);
                        *ret_error = g_strdup_printf("%s%s%s: %s", sub, *what ? "/" : "", what, g_strerror(-r));
                        return r;
                }
        }

        if (f->copy_nodelete)
                return 1;

        /* The envelope decides: while it is there, the message is there. pop: keeps the
         * content, which the POP server reads from the spool directory. */
        if (unlink(envelope_path) < 0) {
                r = negative_errno();
                copy_rollback(dir_fd, subdirs, subdirs->len, with_content ? content_name : NULL, envelope_name);
                *ret_error = g_strdup_printf("cannot remove %s: %s", envelope_path, g_strerror(-r));
                return r;
        }
        /* Without its envelope the content is an orphan that spool recovery removes, so a
         * failure here costs nothing but space. */
        if (with_content)
                (void) unlink(content_path);
        (void) fsync(dir_fd);
        return 1;
}

int filter_copy_to_subdirs(const char *content_path, const char *envelope_path, bool pop, bool hardlink,
                           bool nodelete, char **ret_error) {
        Filter f = { .copy_pop = pop, .copy_hardlink = hardlink, .copy_nodelete = nodelete };
        return copy_message(&f, content_path, envelope_path, ret_error);
}

/* Whether a header line (not a continuation) names the field: "Name:" or "Name :". */
static bool header_is(const char *line, size_t len, const char *name) {
        const char *colon = memchr(line, ':', len);
        size_t n;

        if (!colon)
                return false;
        n = colon - line;
        while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
                n--;
        return n == strlen(name) && g_ascii_strncasecmp(line, name, n) == 0;
}

static bool line_is_blank(const char *line, size_t len) {
        return (len == 1 && line[0] == '\n') || (len == 2 && line[0] == '\r' && line[1] == '\n');
}

/* msgid: 1 when a Message-ID header was added, 0 when the content has one. */
static int msgid_add(const char *path, const char *domain) {
        _cleanup_fclose_ FILE *in = NULL;
        _cleanup_free_ char *line = NULL;
        g_autofree char *header = NULL;
        bool first = true, in_received = false, crlf = true, eol_before = false;
        uint64_t offset = 0, insert_at = 0, random_bits;
        size_t size = 0;
        struct timespec now;
        struct stat st;
        Piece pieces[3];
        ssize_t n;
        int fd, r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        in = fdopen(fd, "r");
        if (!in) {
                safe_close(fd);
                return negative_errno();
        }
        if (fstat(fileno(in), &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EBADFD;

        /* The header section only: up to the first blank line. */
        while ((n = getline(&line, &size, in)) > 0) {
                size_t len = (size_t) n;
                bool has_eol = line[len - 1] == '\n';

                if (first)
                        /* Our line ends as the message's do; CRLF if it has no line end. */
                        crlf = !has_eol || (len >= 2 && line[len - 2] == '\r');
                if (line_is_blank(line, len))
                        break;

                if (line[0] == ' ' || line[0] == '\t') {
                        /* A folded line belongs to the field before it. */
                        if (in_received) {
                                insert_at = offset + len;
                                eol_before = !has_eol;
                        }
                } else {
                        if (header_is(line, len, "Message-ID"))
                                return 0;
                        /* Our own Received line stays on top, as trace fields must. */
                        in_received = first && g_ascii_strncasecmp(line, "Received:", 9) == 0;
                        if (in_received) {
                                insert_at = offset + len;
                                eol_before = !has_eol;
                        }
                }
                first = false;
                offset += len;
        }
        if (ferror(in))
                return -EIO;

        if (getrandom(&random_bits, sizeof(random_bits), GRND_NONBLOCK) != (ssize_t) sizeof(random_bits))
                random_bits = (uint64_t) g_random_int() << 32 | g_random_int();
        (void) clock_gettime(CLOCK_REALTIME, &now);
        header = g_strdup_printf("%sMessage-ID: <%" PRIu64 ".%06" PRIu64 ".%016" PRIx64 "@%s>%s",
                                 eol_before ? (crlf ? "\r\n" : "\n") : "", (uint64_t) now.tv_sec,
                                 (uint64_t) now.tv_nsec / 1000U, random_bits, domain, crlf ? "\r\n" : "\n");

        pieces[0] = (Piece){ .fd = fileno(in), .offset = 0, .length = insert_at };
        pieces[1] = (Piece){ .data = header, .len = strlen(header) };
        pieces[2] = (Piece){ .fd = fileno(in), .offset = insert_at, .length = UINT64_MAX };
        r = write_file_atomic(AT_FDCWD, path, st.st_mode & 07777, pieces, ELEMENTSOF(pieces));
        return r < 0 ? r : 1;
}

/* copy: and msgid: do local file work: done synchronously, on the loop, like exit:. */
static int on_builtin(sd_event_source *s, void *userdata) {
        FilterRun *run = userdata;
        const Filter *f = run_filter(run);
        FilterOutcome o = { .result = FILTER_OK, .exit_code = -1 };
        g_autofree char *error = NULL;
        int r;

        if (f->kind == FILTER_KIND_COPY) {
                r = copy_message(f, run->content_path, run->envelope_path, &error);
                if (r < 0) {
                        step_fail(run, "error", "%s %s", f->spec, error);
                        return 0;
                }
                if (r == 0)
                        /* E-MailRelay passes and warns: copy: is not wrong, just useless. */
                        o.reason = g_strdup("copy: no sub-directories");
                else if (!f->copy_nodelete)
                        o.result = FILTER_ABANDON;
        } else {
                r = msgid_add(run->content_path, f->msgid_domain);
                if (r < 0) {
                        step_fail(run, "error", "%s %s: %s", f->spec, run->content_path, g_strerror(-r));
                        return 0;
                }
        }

        step_done(run, &o);
        return 0;
}

/* True when the step has ended (run may be gone). */
static bool spam_try_finish(FilterRun *run, bool eof) {
        const Filter *f = run_filter(run);
        FilterOutcome o = { .result = FILTER_OK, .exit_code = -1 };
        g_autofree char *error = NULL;
        SpamReply reply;
        int r;

        r = spam_parse_reply(run->in, run->in_len, eof, f->kind == FILTER_KIND_SPAM_EDIT, &reply, &error);
        if (r == 0)
                return false;
        if (r < 0) {
                step_fail(run, "error", "%s: %s", f->spec, error);
                return true;
        }

        if (f->kind == FILTER_KIND_SPAM) {
                /* spamd says "True" (older versions "Yes") for spam. */
                if (g_ascii_strncasecmp(reply.spam, "True", 4) == 0 || g_ascii_strncasecmp(reply.spam, "Yes", 3) == 0) {
                        o.result = FILTER_FAIL;
                        o.response = g_strdup("rejected");
                        o.reason = g_strconcat("spam: ", reply.spam, NULL);
                }
                g_free(reply.spam);
                step_done(run, &o);
                return true;
        }

        g_free(reply.spam);
        r = replace_content(run->content_path, reply.body, reply.body_len);
        if (r < 0) {
                step_fail(run, "error", "%s: cannot replace the content: %s", f->spec, g_strerror(-r));
                return true;
        }
        step_done(run, &o);
        return true;
}

/* True when the step has ended (run may be gone). */
static int socket_start(FilterRun *run, Filter *f, bool use_idle);

/* net:: a kept connection that the filter closed while idle: once more on a new one. */
static bool net_retry_fresh(FilterRun *run) {
        Filter *f = &run->chain->filters[run->index];
        if (!run->sock_reused)
                return false;
        net_drop_idle(f);   /* the others are as old */
        run->sock_source = sd_event_source_disable_unref(run->sock_source);
        run->sock_fd = safe_close(run->sock_fd);
        g_clear_pointer(&run->out, g_free);
        g_clear_pointer(&run->in, g_free);
        run->in_len = run->in_size = 0;
        run->sock_reused = false;
        int r = socket_start(run, f, false);
        if (r < 0)
                step_fail(run, "error", "%s: %s", f->spec, g_strerror(-r));
        return true;
}

static bool net_try_finish(FilterRun *run, bool eof) {
        Filter *f = &run->chain->filters[run->index];
        const char *nl = memchr(run->in, '\n', run->in_len);
        FilterOutcome o;

        if (!nl && !eof)
                return false;
        if (!nl && run->in_len == 0) {
                if (!net_retry_fresh(run))
                        step_fail(run, "error", "%s: connection closed without a reply", f->spec);
                return true;
        }

        /* One line and nothing more: the connection is ready for the next request. */
        if (nl && !eof && (size_t) (nl - run->in) + 1 == run->in_len && f->n_idle < NET_IDLE_MAX) {
                run->sock_source = sd_event_source_disable_unref(run->sock_source);
                f->idle_fds[f->n_idle++] = TAKE_FD(run->sock_fd);
        }
        net_outcome_from_reply(run->in, nl ? (size_t) (nl - run->in) : run->in_len, &o);
        step_done(run, &o);
        return true;
}

static void socket_receive(FilterRun *run) {
        const Filter *f = run_filter(run);

        for (unsigned i = 0; i < IO_BURST; i++) {
                bool eof = false, finished;
                ssize_t n;

                if (run->in_len == run->in_size) {
                        if (run->in_size >= run->in_max) {
                                step_fail(run, "error", "%s: reply too long", f->spec);
                                return;
                        }
                        run->in_size = MIN(MAX(run->in_size * 2, 4096U), run->in_max);
                        run->in = g_realloc(run->in, run->in_size);
                }

                n = recv(run->sock_fd, run->in + run->in_len, run->in_size - run->in_len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return;
                        if (errno == ECONNRESET && run->in_len == 0 && f->kind == FILTER_KIND_NET && net_retry_fresh(run))
                                return;
                        step_fail(run, "error", "%s: receive: %s", f->spec, g_strerror(errno));
                        return;
                }
                if (n == 0)
                        eof = true;
                run->in_len += (size_t) n;

                finished = f->kind == FILTER_KIND_NET ? net_try_finish(run, eof) : spam_try_finish(run, eof);
                if (finished)
                        return;
                assert(!eof);
        }
}

static int on_socket(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        FilterRun *run = userdata;
        const Filter *f = run_filter(run);
        const char *what = NULL;
        int r;

        if (run->sock_state == SOCKET_CONNECTING) {
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0) {
                        step_fail(run, "error", "%s: connect: %s", f->spec, g_strerror(error));
                        return 0;
                }
                run->sock_state = SOCKET_SENDING;
        }

        if (run->sock_state == SOCKET_SENDING) {
                r = socket_send(run, &what);
                if (r == -ENODATA) {
                        step_fail(run, "error", "%s: the content file shrank while being sent", f->spec);
                        return 0;
                }
                if (r < 0) {
                        if ((r == -EPIPE || r == -ECONNRESET) && net_retry_fresh(run))
                                return 0;
                        step_fail(run, "error", "%s: %s: %s", f->spec, what, g_strerror(-r));
                        return 0;
                }
                if (r == 0)
                        return 0;

                /* spamd knows the length, but like spamc we say we are done; the net: protocol
                 * is E-MailRelay's persistent line protocol, where a half-close means goodbye. */
                if (f->kind != FILTER_KIND_NET)
                        (void) shutdown(fd, SHUT_WR);
                run->sock_state = SOCKET_RECEIVING;
                r = sd_event_source_set_io_events(s, EPOLLIN);
                if (r < 0)
                        step_fail(run, "error", "%s: %s", f->spec, g_strerror(-r));
                return 0;
        }

        socket_receive(run);
        return 0;
}

static int socket_start(FilterRun *run, Filter *f, bool use_idle) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (f->kind == FILTER_KIND_NET) {
                /* The envelope is not sent: E-MailRelay's net: protocol names the content only. */
                run->out = g_strconcat(run->content_path, "\n", NULL);
                run->in_max = NET_REPLY_MAX;
        } else {
                _cleanup_close_ int content_fd = -EBADF;
                struct stat st;

                content_fd = open(run->content_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (content_fd < 0)
                        return negative_errno();
                if (fstat(content_fd, &st) < 0)
                        return negative_errno();
                if (!S_ISREG(st.st_mode))
                        return -EBADFD;

                run->out = g_strdup_printf("%s SPAMC/1.5\r\nContent-length: %" PRIu64 "\r\n\r\n",
                                           f->kind == FILTER_KIND_SPAM ? "CHECK" : "PROCESS", (uint64_t) st.st_size);
                run->content_left = (uint64_t) st.st_size;
                if (f->kind == FILTER_KIND_SPAM)
                        run->in_max = SPAM_CHECK_REPLY_MAX;
                else if ((uint64_t) st.st_size > SIZE_MAX - SPAM_PROCESS_REPLY_EXTRA)
                        return -EFBIG;
                else
                        run->in_max = (size_t) st.st_size + SPAM_PROCESS_REPLY_EXTRA;
                run->content_fd = TAKE_FD(content_fd);
        }
        run->out_len = run->out_size = strlen(run->out);
        run->out_sent = 0;

        /* net:: a kept connection if one is still quiet (nothing to read: no EOF, no stray
         * data), else a new one. */
        while (use_idle && f->kind == FILTER_KIND_NET && f->n_idle > 0 && fd < 0) {
                fd = f->idle_fds[--f->n_idle];
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                if (poll(&pfd, 1, 0) != 0)
                        fd = safe_close(fd);
        }
        if (fd >= 0) {
                run->sock_reused = true;
                run->sock_state = SOCKET_SENDING;
        } else {
                fd = socket(f->address.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return negative_errno();
                if (connect(fd, &f->address.sa, f->address_len) < 0) {
                        if (errno != EINPROGRESS)
                                return negative_errno();
                        run->sock_state = SOCKET_CONNECTING;
                } else
                        run->sock_state = SOCKET_SENDING;
        }

        r = sd_event_add_io(run->event, &run->sock_source, fd, EPOLLOUT, on_socket, run);
        if (r < 0)
                return r;
        run->sock_fd = TAKE_FD(fd);
        return 0;
}

static void step_start(FilterRun *run) {
        const Filter *f = run_filter(run);
        int r;

        switch (f->kind) {
        case FILTER_KIND_EXIT:
                /* On the loop, never inside the caller's stack. */
                r = sd_event_add_defer(run->event, &run->defer_source, on_exit_code, run);
                break;

        case FILTER_KIND_COPY:
        case FILTER_KIND_MSGID:
                r = sd_event_add_defer(run->event, &run->defer_source, on_builtin, run);
                break;

        case FILTER_KIND_SLEEP:
                r = sd_event_add_time_relative(run->event, &run->sleep_source, CLOCK_MONOTONIC, f->sleep_usec,
                                               USEC_PER_MSEC, on_sleep_done, run);
                if (r >= 0)
                        r = timeout_start(run);
                break;

        case FILTER_KIND_PROGRAM:
                r = program_start(run, f);
                break;

        case FILTER_KIND_NET:
        case FILTER_KIND_SPAM:
        case FILTER_KIND_SPAM_EDIT:
                r = socket_start(run, &run->chain->filters[run->index], true);
                if (r >= 0)
                        r = timeout_start(run);
                break;

        default:
                assert(false);
                r = -EINVAL;
        }

        if (r < 0)
                step_fail(run, "error", "%s: %s", f->spec, g_strerror(-r));
}

static int on_start(sd_event_source *s, void *userdata) {
        FilterRun *run = userdata;

        run->defer_source = sd_event_source_disable_unref(run->defer_source);

        if (run->chain->n_filters == 0) {
                FilterOutcome o = { .result = FILTER_OK };
                run_finish(run, &o);
                return 0;
        }

        step_start(run);
        return 0;
}

int filter_chain_run(FilterChain *chain, sd_event *event, const char *content_path,
                     const char *envelope_path, unsigned timeout_seconds, FilterDoneCallback callback,
                     void *userdata, FilterRun **ret) {
        FilterRun *run;
        int r;

        assert(chain);
        assert(event);
        assert(content_path);
        assert(envelope_path);
        assert(callback);

        if (chain->has_programs) {
                r = child_block_sigchld();
                if (r < 0)
                        return r;
        }

        run = g_new0(FilterRun, 1);
        run->chain = chain;
        chain->n_ref++;
        run->event = sd_event_ref(event);
        run->content_path = g_strdup(content_path);
        run->envelope_path = g_strdup(envelope_path);
        run->timeout_usec = (uint64_t) timeout_seconds * USEC_PER_SEC;
        run->callback = callback;
        run->userdata = userdata;
        run->sock_fd = run->content_fd = -EBADF;

        /* Even an empty chain answers from the loop: callers need not handle a callback that
         * runs before filter_chain_run() has returned. */
        r = sd_event_add_defer(event, &run->defer_source, on_start, run);
        if (r < 0) {
                run_free(run);
                return r;
        }

        if (ret)
                *ret = run;
        return 0;
}
