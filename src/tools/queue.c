/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-queue: list, show, retry, delete and flush the messages in the spool, as text or
 * JSON, in the manner of Postfix's postqueue and postsuper; replaces emailrelay-resubmit. */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gi18n.h>
#include <locale.h>
#include <pwd.h>
#include <spawn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "adopt.h"
#include "config.h"
#include "envelope.h"
#include "log.h"
#include "macro.h"
#include "options.h"
#include "requeue.h"
#include "spool.h"
#include "wakeup.h"

#define PROGRAM "emailrelay-queue"
#define EXIT_USAGE 2
#define FORWARD_PROGRAM "emailrelay-forward"
#define FORWARD_UNIT "emailrelay-forward.service"
#define RETRY_LIMIT_MAX 1000000u
/* show prints the content's header section, within these bounds (a header block can be
 * anything a client sent). */
#define HEADERS_MAX_BYTES (64u * 1024u)
#define HEADERS_MAX_LINES 200u
/* list pads its From and To columns up to this width; longer values just push the line on. */
#define COLUMN_PAD_MAX 40u

static const OptionDef queue_options[] = {
        { "spool-dir", 's', OPTION_ARG_REQUIRED, "<dir>", PROG_QUEUE, false, false, false, N_("Spool directory (default: spool-dir in the config file, else the built-in spool)") },
        { "config", 0, OPTION_ARG_REQUIRED, "<file>", PROG_QUEUE, false, false, false, N_("Config file to read spool-dir from (default: " CONFIG_FILE " if it exists)") },
        { "json", 'j', OPTION_ARG_NONE, NULL, PROG_QUEUE, false, false, false, N_("list and show: print JSON") },
        { "all-failed", 0, OPTION_ARG_NONE, NULL, PROG_QUEUE, false, false, false, N_("retry: every failed message") },
        { "retry-limit", 0, OPTION_ARG_REQUIRED, "<count>", PROG_QUEUE, false, false, false, N_("retry: only messages with fewer failed attempts than this") },
        { "user", 'u', OPTION_ARG_REQUIRED, "<username>", PROG_QUEUE, false, false, false, N_("adopt: the user to give the spool to (default " SERVICE_USER ")") },
        { "min-age", 0, OPTION_ARG_REQUIRED, "<seconds>", PROG_QUEUE, false, false, false, N_("recover: remove unfinished incoming messages only when this old (default 60)") },
        { "version", 'V', OPTION_ARG_NONE, NULL, PROG_QUEUE, false, false, false, N_("Print the version and exit") },
        { "help", 'h', OPTION_ARG_NONE, NULL, PROG_QUEUE, false, false, false, N_("Print this help and exit") },
        {}
};

static const char usage_text[] =
        "[<option> ...] list | show <id> | retry <id> ... | retry --all-failed | delete <id> ... | flush | recover | adopt";

/* ---- reading the spool ---- */

/* What list and show know about one envelope file. */
typedef struct Entry {
        char *id;
        SpoolState state;
        char *error;            /* the envelope could not be read: why, naming file and line */
        Envelope envelope;      /* read, unless error is set */
        char *envelope_file;
        char *content_file;
        long long size;         /* content bytes; -1 when there is no content file */
        long long age;          /* seconds since the content was written; -1 likewise */
        unsigned attempts;      /* X-MailRelay-Reason lines */
        bool has_next_retry;    /* a valid X-MailRelay-NextRetry line */
        long long next_retry;
        const char *last_reason;        /* borrowed from the trailer; NULL if none */
        const char *last_reason_code;   /* the ReasonCode that follows it; NULL if none */
} Entry;

static void entry_done(Entry *e) {
        g_free(e->id);
        g_free(e->error);
        envelope_done(&e->envelope);
        g_free(e->envelope_file);
        g_free(e->content_file);
        *e = (Entry){};
}

static void entry_clear(gpointer p) {
        entry_done(p);
}

/* The value of a trailer line "<key>: value", or NULL if the line has another key. */
static const char *trailer_value(const char *line, const char *key) {
        size_t n = strlen(key);
        if (strncmp(line, key, n) != 0 || line[n] != ':')
                return NULL;
        line += n + 1;
        while (*line == ' ' || *line == '\t')
                line++;
        return line;
}

/* The last Reason line and the ReasonCode written with it (the next ReasonCode before any
 * further Reason), so that a stray line cannot pair one attempt's text with another's code. */
static void last_reason(const Envelope *e, const char **ret_reason, const char **ret_code) {
        const char *reason = NULL, *code = NULL;
        for (guint i = 0; i < e->trailer->len; i++) {
                const char *v;
                if ((v = trailer_value(e->trailer->pdata[i], "X-MailRelay-Reason"))) {
                        reason = v;
                        code = NULL;
                } else if (reason && !code && (v = trailer_value(e->trailer->pdata[i], "X-MailRelay-ReasonCode")))
                        code = v;
        }
        *ret_reason = reason;
        *ret_code = code;
}

/* Load one envelope file. A file that cannot be read or parsed still gives an entry, with the
 * error; only -ENOENT (it moved on since the listing) is returned. */
static int entry_load(Spool *spool, const char *id, SpoolState state, long long now, Entry *ret) {
        g_autofree char *content = g_strconcat(id, ".content", NULL);
        g_autofree char *error = NULL;
        Entry e = {
                .id = g_strdup(id),
                .state = state,
                .envelope_file = spool_file_path(spool, id, spool_state_suffix(state)),
                .content_file = spool_file_path(spool, id, ".content"),
                .size = -1,
                .age = -1,
        };
        struct stat st;
        int r;

        r = spool_read_envelope(spool, id, state, &e.envelope, &error);
        if (r == -ENOENT) {
                entry_done(&e);
                return r;
        }
        if (r < 0)
                e.error = TAKE_PTR(error);
        else {
                e.attempts = envelope_count_reasons(&e.envelope);
                e.has_next_retry = envelope_next_retry(&e.envelope, &e.next_retry) >= 0;
                last_reason(&e.envelope, &e.last_reason, &e.last_reason_code);
        }
        if (fstatat(spool_dir_fd(spool), content, &st, AT_SYMLINK_NOFOLLOW) >= 0 && S_ISREG(st.st_mode)) {
                e.size = (long long) st.st_size;
                e.age = MAX(now - (long long) st.st_mtime, 0LL);
        }
        *ret = e;
        return 0;
}

static const char *entry_state(const Entry *e) {
        return e->error ? "error" : spool_state_to_string(e->state);
}

/* A ready message waits for its NextRetry time; everything else has no next retry. */
static bool entry_waiting(const Entry *e, long long now) {
        return !e->error && e->state == SPOOL_STATE_READY && e->has_next_retry && e->next_retry > now;
}

static bool parse_code(const char *s, long long *ret) {
        if (isempty(s) || strlen(s) > 9)
                return false;
        for (const char *p = s; *p; p++)
                if (!g_ascii_isdigit(*p))
                        return false;
        *ret = g_ascii_strtoll(s, NULL, 10);
        return true;
}

typedef struct Row {
        char *id;
        SpoolState state;
} Row;

static void row_clear(gpointer p) {
        g_free(((Row *) p)->id);
}

static int row_compare(gconstpointer a, gconstpointer b) {
        const Row *x = a, *y = b;
        int c = strcmp(x->id, y->id);
        return c != 0 ? c : (int) x->state - (int) y->state;
}

/* Every envelope file, in name order (E-MailRelay's forwarding order). A message that moves on
 * between the listing and the read (ready -> busy -> gone or bad) is looked for under its
 * other names, so that a busy queue is not listed with holes. */
static int load_all(Spool *spool, long long now, GArray *entries) {
        static const SpoolState order[] = { SPOOL_STATE_READY, SPOOL_STATE_BUSY, SPOOL_STATE_BAD, SPOOL_STATE_NEW };
        g_autoptr(GArray) rows = g_array_new(false, true, sizeof(Row));
        g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        int r;

        g_array_set_clear_func(rows, row_clear);
        for (int s = 0; s < _SPOOL_STATE_MAX; s++) {
                g_autoptr(GPtrArray) ids = NULL;
                r = spool_list(spool, (SpoolState) s, &ids);
                if (r < 0)
                        return r;
                for (guint i = 0; i < ids->len; i++) {
                        Row row = { .id = g_strdup(ids->pdata[i]), .state = (SpoolState) s };
                        g_array_append_val(rows, row);
                        g_hash_table_add(seen, g_strconcat(row.id, spool_state_suffix(row.state), NULL));
                }
        }
        g_array_sort(rows, row_compare);

        for (guint i = 0; i < rows->len; i++) {
                const Row *row = &g_array_index(rows, Row, i);
                Entry e;
                r = entry_load(spool, row->id, row->state, now, &e);
                for (size_t j = 0; r == -ENOENT && j < ELEMENTSOF(order); j++) {
                        g_autofree char *name = g_strconcat(row->id, spool_state_suffix(order[j]), NULL);
                        if (g_hash_table_contains(seen, name))
                                continue;
                        r = entry_load(spool, row->id, order[j], now, &e);
                        if (r >= 0)
                                g_hash_table_add(seen, TAKE_PTR(name));
                }
                if (r == -ENOENT)
                        continue;  /* delivered or deleted meanwhile */
                g_array_append_val(entries, e);
        }
        return 0;
}

/* The state a message is in now: the first of its envelope files that exists. */
static int locate(Spool *spool, const char *id, SpoolState *ret) {
        static const SpoolState order[] = { SPOOL_STATE_READY, SPOOL_STATE_BUSY, SPOOL_STATE_BAD, SPOOL_STATE_NEW };
        for (size_t i = 0; i < ELEMENTSOF(order); i++) {
                g_autofree char *name = g_strconcat(id, spool_state_suffix(order[i]), NULL);
                if (faccessat(spool_dir_fd(spool), name, F_OK, AT_SYMLINK_NOFOLLOW) >= 0) {
                        *ret = order[i];
                        return 0;
                }
        }
        return -ENOENT;
}

/* ---- text and JSON output ---- */

/* Text from the spool (addresses, reasons, headers from the network) for a terminal: control
 * characters and bytes that are not UTF-8 print as '?', so that they cannot drive it. */
static char *terminal_safe_len(const char *s, size_t len) {
        GString *out = g_string_sized_new(len);
        const char *p = s, *end = s + len;

        while (p < end) {
                gunichar c = g_utf8_get_char_validated(p, end - p);
                if ((gint32) c < 0 || c == 0) {
                        g_string_append_c(out, '?');
                        p++;
                        continue;
                }
                const char *next = g_utf8_next_char(p);
                if (c == '\t')
                        g_string_append_c(out, ' ');
                else if (c < 0x20 || (c >= 0x7f && c < 0xa0))
                        g_string_append_c(out, '?');
                else
                        g_string_append_len(out, p, next - p);
                p = next;
        }
        return g_string_free(out, false);
}

static char *terminal_safe(const char *s) {
        return terminal_safe_len(s ? s : "", s ? strlen(s) : 0);
}

/* A JSON string: quotes, backslashes and control characters escaped; bytes that are not UTF-8
 * become U+FFFD, so the output is always valid JSON whatever the spool holds. */
static void json_string_len(GString *out, const char *s, size_t len) {
        const char *p = s, *end = s + len;

        g_string_append_c(out, '"');
        while (p < end) {
                unsigned char b = (unsigned char) *p;
                if (b < 0x80) {
                        switch (b) {
                        case '"':  g_string_append(out, "\\\""); break;
                        case '\\': g_string_append(out, "\\\\"); break;
                        case '\n': g_string_append(out, "\\n"); break;
                        case '\r': g_string_append(out, "\\r"); break;
                        case '\t': g_string_append(out, "\\t"); break;
                        case '\b': g_string_append(out, "\\b"); break;
                        case '\f': g_string_append(out, "\\f"); break;
                        default:
                                if (b < 0x20 || b == 0x7f)
                                        g_string_append_printf(out, "\\u%04x", b);
                                else
                                        g_string_append_c(out, (char) b);
                        }
                        p++;
                        continue;
                }
                gunichar c = g_utf8_get_char_validated(p, end - p);
                if ((gint32) c < 0) {
                        g_string_append(out, "\\ufffd");
                        p++;
                        continue;
                }
                const char *next = g_utf8_next_char(p);
                g_string_append_len(out, p, next - p);
                p = next;
        }
        g_string_append_c(out, '"');
}

static void json_string(GString *out, const char *s) {
        if (s)
                json_string_len(out, s, strlen(s));
        else
                g_string_append(out, "null");
}

static const char *or_empty(const char *s) {
        return s ? s : "";
}

static void json_key(GString *out, const char *key) {
        if (out->len > 0 && out->str[out->len - 1] != '{')
                g_string_append(out, ", ");
        json_string(out, key);
        g_string_append(out, ": ");
}

static void json_number(GString *out, bool present, long long n) {
        if (present)
                g_string_append_printf(out, "%lld", n);
        else
                g_string_append(out, "null");
}

static void json_array(GString *out, GPtrArray *strings) {
        g_string_append_c(out, '[');
        for (guint i = 0; strings && i < strings->len; i++) {
                if (i > 0)
                        g_string_append(out, ", ");
                json_string(out, strings->pdata[i]);
        }
        g_string_append_c(out, ']');
}

/* The list fields (see emailrelay-queue(8), JSON OUTPUT), as one object body without braces. */
static void json_entry_fields(GString *out, const Entry *e) {
        const Envelope *env = &e->envelope;
        long long code = 0;
        bool has_code = !e->error && parse_code(e->last_reason_code, &code);

        json_key(out, "id");
        json_string(out, e->id);
        json_key(out, "state");
        json_string(out, entry_state(e));
        json_key(out, "from");
        json_string(out, e->error ? NULL : or_empty(env->from));
        json_key(out, "to");
        json_array(out, e->error ? NULL : env->to_remote);
        json_key(out, "local_to");
        json_array(out, e->error ? NULL : env->to_local);
        json_key(out, "size");
        json_number(out, e->size >= 0, e->size);
        json_key(out, "age_seconds");
        json_number(out, e->age >= 0, e->age);
        json_key(out, "attempts");
        json_number(out, !e->error, e->attempts);
        json_key(out, "next_retry");
        json_number(out, !e->error && e->state == SPOOL_STATE_READY && e->has_next_retry, e->next_retry);
        json_key(out, "last_reason");
        json_string(out, e->error ? e->error : e->last_reason);
        json_key(out, "last_reason_code");
        json_number(out, has_code, code);
        json_key(out, "content_file");
        json_string(out, e->content_file);
        json_key(out, "envelope_file");
        json_string(out, e->envelope_file);
}

/* "45s", "12m", "3h", "2d": the largest whole unit. */
static char *format_duration(long long s) {
        if (s < 60)
                return g_strdup_printf("%llds", s);
        if (s < 3600)
                return g_strdup_printf("%lldm", s / 60);
        if (s < 86400)
                return g_strdup_printf("%lldh", s / 3600);
        return g_strdup_printf("%lldd", s / 86400);
}

static char *format_time(long long t) {
        g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local(t);
        return dt ? g_date_time_format(dt, "%Y-%m-%d %H:%M:%S %z") : g_strdup_printf("@%lld", t);
}

static char *next_retry_text(const Entry *e, long long now) {
        if (e->error || e->state != SPOOL_STATE_READY)
                return g_strdup("-");
        if (!entry_waiting(e, now))
                return g_strdup(_("now"));
        g_autofree char *d = format_duration(e->next_retry - now);
        return g_strdup_printf(_("in %s"), d);
}

/* "554 5.6.0 content rejected", the reason alone without a code, or the read error. */
static char *reason_text(const Entry *e) {
        if (e->error)
                return terminal_safe(e->error);
        if (!e->last_reason)
                return g_strdup("-");
        if (isempty(e->last_reason_code))
                return terminal_safe(e->last_reason);
        g_autofree char *both = g_strdup_printf("%s %s", e->last_reason_code, e->last_reason);
        return terminal_safe(both);
}

/* "bob@example.org,local:alice": remote and local recipients in one column. */
static char *recipients_text(const Entry *e) {
        g_autoptr(GString) s = g_string_new(NULL);
        if (e->error)
                return g_strdup("-");
        for (guint i = 0; i < e->envelope.to_local->len; i++)
                g_string_append_printf(s, "%slocal:%s", s->len ? "," : "", (char *) e->envelope.to_local->pdata[i]);
        for (guint i = 0; i < e->envelope.to_remote->len; i++)
                g_string_append_printf(s, "%s%s", s->len ? "," : "", (char *) e->envelope.to_remote->pdata[i]);
        return terminal_safe(s->len ? s->str : "-");
}

enum {
        COL_ID,
        COL_STATE,
        COL_SIZE,
        COL_AGE,
        COL_TRIES,
        COL_NEXT,
        COL_FROM,
        COL_TO,
        COL_REASON,
        _COL_MAX,
};

static const struct {
        const char *header;
        bool right;
        unsigned pad_max;       /* 0: no cap */
} columns[_COL_MAX] = {
        [COL_ID] = { N_("ID"), false, 0 },
        [COL_STATE] = { N_("STATE"), false, 0 },
        [COL_SIZE] = { N_("SIZE"), true, 0 },
        [COL_AGE] = { N_("AGE"), true, 0 },
        [COL_TRIES] = { N_("TRIES"), true, 0 },
        [COL_NEXT] = { N_("NEXT"), false, 0 },
        [COL_FROM] = { N_("FROM"), false, COLUMN_PAD_MAX },
        [COL_TO] = { N_("TO"), false, COLUMN_PAD_MAX },
        [COL_REASON] = { N_("REASON"), false, 0 },
};

static void print_row(char *const cells[_COL_MAX], const size_t widths[_COL_MAX]) {
        g_autoptr(GString) line = g_string_new(NULL);
        for (int c = 0; c < _COL_MAX; c++) {
                size_t len = g_utf8_strlen(cells[c], -1);
                size_t pad = widths[c] > len ? widths[c] - len : 0;
                if (c > 0)
                        g_string_append_c(line, ' ');
                if (columns[c].right)
                        g_string_append_printf(line, "%*s%s", (int) pad, "", cells[c]);
                else if (c == _COL_MAX - 1)
                        g_string_append(line, cells[c]);
                else
                        g_string_append_printf(line, "%s%*s", cells[c], (int) pad, "");
        }
        puts(line->str);
}

static void print_list_text(const char *spool_dir, GArray *entries, long long now) {
        g_autoptr(GPtrArray) cells = g_ptr_array_new_with_free_func(g_free);
        size_t widths[_COL_MAX] = {};
        unsigned counts[_SPOOL_STATE_MAX + 1] = {};
        long long bytes = 0;

        if (entries->len == 0) {
                g_autofree char *dir = terminal_safe(spool_dir);
                printf(_("The queue in %s is empty.\n"), dir);
                return;
        }
        for (int c = 0; c < _COL_MAX; c++)
                g_ptr_array_add(cells, g_strdup(_(columns[c].header)));
        for (guint i = 0; i < entries->len; i++) {
                const Entry *e = &g_array_index(entries, Entry, i);
                g_ptr_array_add(cells, g_strdup(e->id));
                g_ptr_array_add(cells, g_strdup(entry_state(e)));
                g_ptr_array_add(cells, e->size >= 0 ? g_strdup_printf("%lld", e->size) : g_strdup("-"));
                g_ptr_array_add(cells, e->age >= 0 ? format_duration(e->age) : g_strdup("-"));
                g_ptr_array_add(cells, e->error ? g_strdup("-") : g_strdup_printf("%u", e->attempts));
                g_ptr_array_add(cells, next_retry_text(e, now));
                g_ptr_array_add(cells, e->error ? g_strdup("-") :
                                isempty(e->envelope.from) ? g_strdup("<>") : terminal_safe(e->envelope.from));
                g_ptr_array_add(cells, recipients_text(e));
                g_ptr_array_add(cells, reason_text(e));
                counts[e->error ? _SPOOL_STATE_MAX : e->state]++;
                bytes += MAX(e->size, 0LL);
        }
        for (guint i = 0; i < cells->len; i++) {
                int c = (int) (i % _COL_MAX);
                size_t len = g_utf8_strlen(cells->pdata[i], -1);
                if (columns[c].pad_max)
                        len = MIN(len, (size_t) columns[c].pad_max);
                widths[c] = MAX(widths[c], len);
        }
        for (guint i = 0; i < cells->len; i += _COL_MAX)
                print_row((char *const *) &cells->pdata[i], widths);

        /* "-- 3 messages, 2048 bytes: 1 ready, 1 bad, 1 error", as postqueue ends its list. */
        g_autoptr(GString) tail = g_string_new(NULL);
        g_string_append_printf(tail, ngettext("-- %u message, %lld bytes:", "-- %u messages, %lld bytes:", entries->len),
                               entries->len, bytes);
        static const int shown[] = { SPOOL_STATE_READY, SPOOL_STATE_BUSY, SPOOL_STATE_NEW, SPOOL_STATE_BAD, _SPOOL_STATE_MAX };
        bool first = true;
        for (size_t i = 0; i < ELEMENTSOF(shown); i++) {
                int k = shown[i];
                if (counts[k] == 0)
                        continue;
                g_string_append_printf(tail, "%s %u %s", first ? "" : ",", counts[k],
                                       k == _SPOOL_STATE_MAX ? "error" : spool_state_to_string((SpoolState) k));
                first = false;
        }
        puts(tail->str);
}

static int cmd_list(Spool *spool, bool json, long long now) {
        g_autoptr(GArray) entries = g_array_new(false, true, sizeof(Entry));
        int r;

        g_array_set_clear_func(entries, entry_clear);
        r = load_all(spool, now, entries);
        if (r < 0) {
                log_error(_("cannot list the spool directory %s: %s"), spool_path(spool), g_strerror(-r));
                return EXIT_FAILURE;
        }
        /* A malformed envelope is listed, never the end of the listing: the user must see it. */
        for (guint i = 0; i < entries->len; i++) {
                const Entry *e = &g_array_index(entries, Entry, i);
                if (e->error) {
                        g_autofree char *safe = terminal_safe(e->error);
                        log_warning("%s", safe);
                }
        }
        if (json) {
                g_autoptr(GString) out = g_string_new("[");
                for (guint i = 0; i < entries->len; i++) {
                        g_autoptr(GString) obj = g_string_new("{");
                        json_entry_fields(obj, &g_array_index(entries, Entry, i));
                        g_string_append_printf(out, "%s\n  %s}", i > 0 ? "," : "", obj->str);
                }
                g_string_append(out, entries->len > 0 ? "\n]\n" : "]\n");
                fputs(out->str, stdout);
        } else
                print_list_text(spool_path(spool), entries, now);
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- show ---- */

/* The content's header section: physical lines without their line ends, up to the blank line,
 * within HEADERS_MAX_BYTES and HEADERS_MAX_LINES. */
static int read_headers(Spool *spool, const char *id, GPtrArray *ret_lines) {
        g_autofree char *name = g_strconcat(id, ".content", NULL);
        _cleanup_close_ int fd = openat(spool_dir_fd(spool), name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        g_autofree char *buf = NULL;
        size_t len = 0;

        if (fd < 0)
                return negative_errno();
        buf = g_malloc(HEADERS_MAX_BYTES);
        while (len < HEADERS_MAX_BYTES) {
                ssize_t n = read(fd, buf + len, HEADERS_MAX_BYTES - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        for (const char *p = buf, *end = buf + len; p < end && ret_lines->len < HEADERS_MAX_LINES;) {
                const char *nl = memchr(p, '\n', end - p);
                if (!nl)
                        break;  /* cut by the limit, or an unterminated last line */
                size_t n = (size_t) (nl - p);
                if (n > 0 && p[n - 1] == '\r')
                        n--;
                if (n == 0)
                        break;
                g_ptr_array_add(ret_lines, g_strndup(p, n));
                p = nl + 1;
        }
        return 0;
}

/* "Key:         value", with a multi-line value (a folded certificate) indented under it. */
static void show_field(const char *key, const char *value) {
        const char *p = or_empty(value);
        do {
                const char *nl = strchrnul(p, '\n');
                g_autofree char *safe = terminal_safe_len(p, nl - p);
                if (*safe)
                        printf("%-22s %s\n", p == or_empty(value) ? key : "", safe);
                else
                        puts(key);
                p = *nl ? nl + 1 : nl;
        } while (*p);
}

static void show_text(const Entry *e, GPtrArray *headers, long long now) {
        const Envelope *env = &e->envelope;
        g_autofree char *size = e->size >= 0 ? g_strdup_printf("%lld", e->size) : g_strdup("-");
        g_autofree char *age = e->age >= 0 ? format_duration(e->age) : g_strdup("-");
        g_autofree char *next = next_retry_text(e, now);

        show_field("Id:", e->id);
        show_field("State:", entry_state(e));
        show_field("EnvelopeFile:", e->envelope_file);
        show_field("ContentFile:", e->content_file);
        show_field("Size:", size);
        show_field("Age:", age);
        if (e->error)
                show_field("Error:", e->error);
        else {
                g_autofree char *attempts = g_strdup_printf("%u", e->attempts);
                g_autofree char *reason = reason_text(e);
                g_autofree char *when = NULL;
                if (entry_waiting(e, now)) {
                        g_autofree char *t = format_time(e->next_retry);
                        when = g_strdup_printf("%s (%s)", next, t);
                }
                g_autofree char *format = g_strdup_printf("#2821.%d", env->format);
                show_field("Attempts:", attempts);
                show_field("NextRetry:", when ? when : next);
                show_field("LastReason:", reason);
                show_field("Format:", format);
                show_field("Content:", envelope_body_to_string(env->body));
                show_field("From:", env->from);
                for (guint i = 0; i < env->to_local->len; i++)
                        show_field("To-Local:", env->to_local->pdata[i]);
                for (guint i = 0; i < env->to_remote->len; i++)
                        show_field("To-Remote:", env->to_remote->pdata[i]);
                show_field("Authentication:", env->authentication);
                show_field("Client:", env->client);
                if (env->format == 4)
                        show_field("ClientName:", env->client_name);
                show_field("ClientCertificate:", env->client_certificate);
                show_field("MailFromAuthIn:", env->mail_from_auth_in);
                show_field("MailFromAuthOut:", env->mail_from_auth_out);
                show_field("ForwardTo:", env->forward_to);
                show_field("ForwardToAddress:", env->forward_to_address);
                show_field("ClientAccountSelector:", env->client_account_selector);
                show_field("Utf8MailboxNames:", env->utf8_mailbox_names ? "1" : "0");
                for (guint i = 0; i < env->trailer->len; i++)
                        show_field("Trailer:", env->trailer->pdata[i]);
        }
        putchar('\n');
        for (guint i = 0; i < headers->len; i++) {
                g_autofree char *safe = terminal_safe(headers->pdata[i]);
                puts(safe);
        }
}

static void show_json(const Entry *e, GPtrArray *headers) {
        const Envelope *env = &e->envelope;
        bool ok = !e->error;
        g_autoptr(GString) out = g_string_new("{");

        json_entry_fields(out, e);
        json_key(out, "format");
        json_number(out, ok, env->format);
        json_key(out, "body");
        json_string(out, ok ? envelope_body_to_string(env->body) : NULL);
        json_key(out, "authentication");
        json_string(out, ok ? or_empty(env->authentication) : NULL);
        json_key(out, "client");
        json_string(out, ok ? or_empty(env->client) : NULL);
        json_key(out, "client_certificate");
        json_string(out, ok ? or_empty(env->client_certificate) : NULL);
        json_key(out, "mail_from_auth_in");
        json_string(out, ok ? or_empty(env->mail_from_auth_in) : NULL);
        json_key(out, "mail_from_auth_out");
        json_string(out, ok ? or_empty(env->mail_from_auth_out) : NULL);
        json_key(out, "forward_to");
        json_string(out, ok ? or_empty(env->forward_to) : NULL);
        json_key(out, "forward_to_address");
        json_string(out, ok ? or_empty(env->forward_to_address) : NULL);
        json_key(out, "client_account_selector");
        json_string(out, ok ? or_empty(env->client_account_selector) : NULL);
        json_key(out, "utf8_mailbox_names");
        g_string_append(out, !ok ? "null" : env->utf8_mailbox_names ? "true" : "false");
        json_key(out, "trailer");
        json_array(out, ok ? env->trailer : NULL);
        json_key(out, "headers");
        json_array(out, headers);
        g_string_append(out, "}\n");
        fputs(out->str, stdout);
}

static int cmd_show(Spool *spool, const char *id, bool json, long long now) {
        g_autoptr(GPtrArray) headers = g_ptr_array_new_with_free_func(g_free);
        _cleanup_(entry_done) Entry e = {};
        SpoolState state;
        int r = -ENOENT;

        if (!spool_id_is_valid(id)) {
                g_autofree char *safe = terminal_safe(id);
                log_error(_("invalid message id: \"%s\""), safe);
                return EXIT_FAILURE;
        }
        /* Twice: the message may move on (ready -> busy -> bad) between the look and the read. */
        for (int attempt = 0; attempt < 2 && r == -ENOENT; attempt++)
                if (locate(spool, id, &state) >= 0)
                        r = entry_load(spool, id, state, now, &e);
        if (r < 0) {
                log_error(_("no such message: %s"), id);
                return EXIT_FAILURE;
        }
        if (e.error) {
                g_autofree char *safe = terminal_safe(e.error);
                log_warning("%s", safe);
        }
        r = read_headers(spool, id, headers);
        if (r < 0 && r != -ENOENT)
                log_warning(_("cannot read %s: %s"), e.content_file, g_strerror(-r));
        if (json)
                show_json(&e, headers);
        else
                show_text(&e, headers, now);
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- retry, delete, flush ---- */

static void log_busy_or_missing(Spool *spool, const char *id, int r) {
        SpoolState state;
        if (r == -ENOENT && locate(spool, id, &state) >= 0 && state == SPOOL_STATE_NEW)
                log_error(_("message %s is still being received"), id);
        else if (r == -EBUSY || (r == -ENOENT && locate(spool, id, &state) >= 0 && state == SPOOL_STATE_BUSY))
                log_error(_("message %s is being forwarded"), id);
        else if (r == -ENOENT)
                log_error(_("no such message: %s"), id);
        else
                log_error(_("message %s: %s"), id, g_strerror(-r));
}

/* Retry one message: a failed one goes back to the queue, a waiting one is made due now.
 * Returns 0 when done or deliberately skipped (the limit), negative when it failed (logged). */
static int retry_one(Spool *spool, const char *id, unsigned limit, long long now, bool *ret_renamed) {
        g_auto(Envelope) e = {};
        g_autofree char *error = NULL;
        SpoolState state;
        int r;

        if (!spool_id_is_valid(id)) {
                g_autofree char *safe = terminal_safe(id);
                log_error(_("invalid message id: \"%s\""), safe);
                return -EINVAL;
        }
        r = locate(spool, id, &state);
        if (r < 0 || state == SPOOL_STATE_BUSY || state == SPOOL_STATE_NEW) {
                log_busy_or_missing(spool, id, r < 0 ? r : -ENOENT);
                return r < 0 ? r : -EBUSY;
        }
        r = spool_read_envelope(spool, id, state, &e, &error);
        if (r < 0) {
                if (r == -ENOENT)
                        log_busy_or_missing(spool, id, r);
                else {
                        g_autofree char *safe = terminal_safe(error);
                        log_error("%s", safe);
                }
                return r;
        }
        unsigned attempts = envelope_count_reasons(&e);
        if (limit > 0 && attempts >= limit) {
                printf(_("%s: not retried: %u attempts, the limit is %u\n"), id, attempts, limit);
                return 0;
        }

        if (state == SPOOL_STATE_BAD) {
                r = requeue_unfail(spool, id, now);
                if (r < 0) {
                        log_busy_or_missing(spool, id, r);
                        return r;
                }
                *ret_renamed = true;
                printf(_("%s: moved back to the queue\n"), id);
                return 0;
        }

        g_clear_pointer(&error, g_free);
        r = requeue_make_due(spool, id, now, &error);
        if (r == -EBADMSG) {
                g_autofree char *safe = terminal_safe(error);
                log_error("%s", safe);
                return r;
        }
        if (r < 0) {
                log_busy_or_missing(spool, id, r);
                return r;
        }
        printf(r > 0 ? _("%s: due now\n") : _("%s: already due\n"), id);
        return 0;
}

static int cmd_retry(Spool *spool, char **ids, bool all_failed, unsigned limit, long long now) {
        g_autoptr(GPtrArray) failed = NULL;
        bool renamed = false, ok = true;
        int r;

        if (all_failed) {
                r = spool_list(spool, SPOOL_STATE_BAD, &failed);
                if (r < 0) {
                        log_error(_("cannot list the spool directory %s: %s"), spool_path(spool), g_strerror(-r));
                        return EXIT_FAILURE;
                }
                g_ptr_array_add(failed, NULL);
                ids = (char **) failed->pdata;
        }
        for (size_t i = 0; ids[i]; i++)
                if (retry_one(spool, ids[i], limit, now, &renamed) < 0)
                        ok = false;
        if (renamed) {
                r = spool_sync_dir(spool);
                if (r < 0) {
                        log_error(_("cannot sync the spool directory %s: %s"), spool_path(spool), g_strerror(-r));
                        ok = false;
                }
        }
        if (fflush(stdout) != 0)
                ok = false;
        return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int cmd_delete(Spool *spool, char **ids) {
        bool deleted = false, ok = true;
        int r;

        for (size_t i = 0; ids[i]; i++) {
                if (!spool_id_is_valid(ids[i])) {
                        g_autofree char *safe = terminal_safe(ids[i]);
                        log_error(_("invalid message id: \"%s\""), safe);
                        ok = false;
                        continue;
                }
                r = spool_delete(spool, ids[i]);
                if (r < 0) {
                        log_busy_or_missing(spool, ids[i], r);
                        ok = false;
                        continue;
                }
                deleted = true;
                printf(_("%s: deleted\n"), ids[i]);
        }
        if (deleted) {
                r = spool_sync_dir(spool);
                if (r < 0) {
                        log_error(_("cannot sync the spool directory %s: %s"), spool_path(spool), g_strerror(-r));
                        ok = false;
                }
        }
        if (fflush(stdout) != 0)
                ok = false;
        return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* systemctl start --no-block: the forwarder runs as its unit says (user, sandbox, config). */
static int start_unit(void) {
        extern char **environ;
        char *argv[] = { (char *) "systemctl", (char *) "start", (char *) "--no-block", (char *) FORWARD_UNIT, NULL };
        pid_t pid;
        int status, r;

        fflush(NULL);
        r = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
        if (r != 0) {
                log_error(_("cannot run systemctl: %s"), g_strerror(r));
                return EXIT_FAILURE;
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        log_error(_("cannot wait for systemctl: %s"), g_strerror(errno));
                        return EXIT_FAILURE;
                }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                log_error(_("cannot start %s: systemctl failed"), FORWARD_UNIT);
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

/* The forwarder installed beside this program, else the one in $PATH. */
static char *find_forwarder(void) {
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
        if (self) {
                g_autofree char *dir = g_path_get_dirname(self);
                g_autofree char *path = g_build_filename(dir, FORWARD_PROGRAM, NULL);
                if (access(path, X_OK) == 0)
                        return TAKE_PTR(path);
        }
        return g_find_program_in_path(FORWARD_PROGRAM);
}

static int cmd_flush(Spool *spool, bool use_unit, const char *config, long long now) {
        int r = requeue_all_due(spool, now);
        if (r < 0) {
                log_error(_("cannot list the spool directory %s: %s"), spool_path(spool), g_strerror(-r));
                return EXIT_FAILURE;
        }

        if (use_unit && sd_booted() > 0)
                return start_unit();

        g_autofree char *forwarder = find_forwarder();
        if (!forwarder) {
                log_error(_("cannot start the forwarder: %s is neither installed beside this program nor "
                            "in $PATH"), FORWARD_PROGRAM);
                return EXIT_FAILURE;
        }
        /* The forwarder takes its config file as the last argument, as E-MailRelay does. */
        char *argv[] = { forwarder, (char *) "--spool-dir", (char *) spool_path(spool), (char *) config, NULL };
        fflush(NULL);
        execv(forwarder, argv);
        log_error(_("cannot run %s: %s"), forwarder, g_strerror(errno));
        return EXIT_FAILURE;
}

/* What emailrelay-smtpd and emailrelay-forward do at start-up, on demand: put back .busy
 * envelopes no forwarder holds, and remove unfinished incoming messages (.new, and content with no
 * envelope) that nobody holds and that are at least min_age old. A writer that does not lock
 * (E-MailRelay, a script) is protected by the age only: lower it only when none is running. */
static int cmd_recover(Spool *spool, unsigned min_age) {
        SpoolRecoverStats st;
        int r = spool_recover(spool, min_age, &st);
        if (r < 0) {
                log_error(_("cannot recover the spool directory %s: %s"), spool_path(spool), g_strerror(-r));
                return EXIT_FAILURE;
        }
        printf(_("%u stale lock%s released, %u unfinished message%s removed, %u orphan content file%s removed\n"),
               st.busy_released, st.busy_released == 1 ? "" : "s", st.new_removed, st.new_removed == 1 ? "" : "s",
               st.orphans_removed, st.orphans_removed == 1 ? "" : "s");
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- main ---- */

static int usage_error(const char *format, ...) _printf_(1, 2);
static int usage_error(const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        g_autofree char *text = g_strdup_vprintf(format, ap);
        va_end(ap);
        log_error("%s", text);
        fprintf(stderr, _("Try '%s --help' for more information.\n"), PROGRAM);
        return EXIT_USAGE;
}

/* spool-dir and wakeup-file from the shared config file; everything else in it concerns other
 * programs. */
static int spool_dir_from_config(const char *path, char **ret, char **ret_wakeup) {
        g_autofree char *error = NULL;
        Options c;
        int r;

        options_init(&c, emailrelay_options, PROG_QUEUE);
        r = options_parse_config_file(&c, path, &error);
        if (r < 0)
                log_error("%s", error);
        else {
                *ret = g_strdup(options_get(&c, "spool-dir"));
                *ret_wakeup = g_strdup(options_get(&c, "wakeup-file"));
        }
        options_done(&c);
        return r;
}

/* ---- adopt ---- */

/* An E-MailRelay spool, root's, given to the service user (adopt.h says what is refused). */
static int cmd_adopt(const char *spool_dir, const char *user) {
        if (geteuid() != 0) {
                log_error(_("adopt changes owners: run it as root"));
                return EXIT_FAILURE;
        }
        struct passwd *pw = getpwnam(user);
        if (!pw) {
                log_error(_("--user %s: no such user"), user);
                return EXIT_FAILURE;
        }
        AdoptReport rep;
        int r = spool_adopt(spool_dir, pw->pw_uid, pw->pw_gid, user, &rep);
        if (r == 0 && rep.dirs_changed == 0 && rep.files_changed == 0 && rep.refused == 0)
                printf(_("%s is already user %s's: nothing changed\n"), spool_dir, user);
        return r < 0 || rep.refused > 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

static int run(Options *op, int argc, char **argv) {
        g_autofree char *error = NULL;
        g_autofree char *config_spool = NULL;
        g_autofree char *config_wakeup = NULL;
        g_autofree char *spool_dir = NULL;
        g_autoptr(Spool) spool = NULL;
        unsigned limit = 0;
        long long now = (long long) time(NULL);
        int r;

        r = options_parse_argv(op, argc, argv, &error);
        if (r < 0)
                return usage_error("%s", error);
        if (options_has(op, "help")) {
                options_print_help(op, stdout, PROGRAM, usage_text, false);
                return EXIT_SUCCESS;
        }
        if (options_has(op, "version")) {
                options_print_version(stdout, PROGRAM, false);
                return EXIT_SUCCESS;
        }

        /* Whoever may run this may delete anybody's mail: it is no set-id helper. */
        if (getuid() != geteuid() || getgid() != getegid()) {
                log_error(_("%s must not be installed set-user-ID or set-group-ID"), PROGRAM);
                return EXIT_FAILURE;
        }

        if (op->n_args == 0)
                return usage_error(_("no command given: list, show, retry, delete, flush, recover or adopt"));
        const char *cmd = op->args[0];
        char **ids = op->args + 1;
        size_t n_ids = op->n_args - 1;
        bool json = options_has(op, "json"), all_failed = options_has(op, "all-failed");

        if (!streq(cmd, "list") && !streq(cmd, "show") && !streq(cmd, "retry") && !streq(cmd, "delete") && !streq(cmd, "flush") &&
            !streq(cmd, "recover") && !streq(cmd, "adopt")) {
                g_autofree char *safe = terminal_safe(cmd);
                return usage_error(_("unknown command: %s"), safe);
        }
        if (json && !streq(cmd, "list") && !streq(cmd, "show"))
                return usage_error(_("option --json applies to list and show only"));
        if ((all_failed || options_has(op, "retry-limit")) && !streq(cmd, "retry"))
                return usage_error(_("options --all-failed and --retry-limit apply to retry only"));
        r = options_get_uint(op, "retry-limit", 1, RETRY_LIMIT_MAX, &limit, &error);
        if (r < 0)
                return usage_error("%s", error);
        if (options_has(op, "min-age") && !streq(cmd, "recover"))
                return usage_error(_("--min-age is for recover"));
        if (options_has(op, "user") && !streq(cmd, "adopt"))
                return usage_error(_("--user is for adopt"));
        if ((streq(cmd, "list") || streq(cmd, "flush") || streq(cmd, "recover") || streq(cmd, "adopt")) && n_ids > 0)
                return usage_error(_("%s takes no arguments"), cmd);
        if (streq(cmd, "show") && n_ids != 1)
                return usage_error(_("show takes one message id"));
        if (streq(cmd, "delete") && n_ids == 0)
                return usage_error(_("delete takes one or more message ids"));
        if (streq(cmd, "retry") && (n_ids == 0) == !all_failed)
                return usage_error(_("retry takes message ids or --all-failed, not both"));

        /* The spool: --spool-dir, else spool-dir in the config file, else the built-in one. */
        const char *config = options_get(op, "config");
        if (!options_get(op, "spool-dir")) {
                const char *file = config ? config : access(CONFIG_FILE, F_OK) == 0 ? CONFIG_FILE : NULL;
                if (file && spool_dir_from_config(file, &config_spool, &config_wakeup) < 0)
                        return EXIT_FAILURE;
        }
        spool_dir = g_canonicalize_filename(options_get(op, "spool-dir") ?: config_spool ?: SPOOLDIR, NULL);
        if (streq(cmd, "adopt"))
                return cmd_adopt(spool_dir, options_get_default(op, "user", SERVICE_USER));
        r = spool_open(spool_dir, &spool);
        if (r < 0) {
                log_error(_("cannot open the spool directory %s: %s"), spool_dir, g_strerror(-r));
                return EXIT_FAILURE;
        }
        spool_set_wakeup_file(spool, wakeup_choose(config_wakeup));

        if (streq(cmd, "list"))
                return cmd_list(spool, json, now);
        if (streq(cmd, "show"))
                return cmd_show(spool, ids[0], json, now);
        if (streq(cmd, "retry"))
                return cmd_retry(spool, ids, all_failed, limit, now);
        if (streq(cmd, "delete"))
                return cmd_delete(spool, ids);
        if (streq(cmd, "recover")) {
                unsigned min_age = 60;
                r = options_get_uint(op, "min-age", 0, 86400 * 366, &min_age, &error);
                if (r < 0)
                        return usage_error("%s", error);
                return cmd_recover(spool, min_age);
        }
        /* The service reads its own configuration: only the configured spool is its to flush. */
        return cmd_flush(spool, !options_get(op, "spool-dir") && !config, config, now);
}

int main(int argc, char **argv) {
        LogConfig lc = LOG_CONFIG_DEFAULT(PROGRAM);

        setlocale(LC_ALL, "");
        bindtextdomain(GETTEXT_PACKAGE, LOCALEDIR);
        bind_textdomain_codeset(GETTEXT_PACKAGE, "UTF-8");
        textdomain(GETTEXT_PACKAGE);
        lc.journal = 0;  /* a user's command: errors go to the terminal */
        log_open(&lc);

        Options o;
        options_init(&o, queue_options, PROG_QUEUE);
        int ret = run(&o, argc, argv);
        options_done(&o);
        return ret;
}
