/* SPDX-License-Identifier: GPL-3.0-or-later */
/* E-MailRelay envelope files: writer for #2821.8, reader for #2821.3 to #2821.8. */

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "macro.h"

#define ENVELOPE_PREFIX "X-MailRelay-"
#define ENVELOPE_MAX_RECIPIENTS 1000000u
#define ENVELOPE_MAX_REASON 1000u

static const char *const body_names[_ENVELOPE_BODY_MAX] = {
        [ENVELOPE_BODY_7BIT] = "7bit",
        [ENVELOPE_BODY_8BIT] = "8bit",
        [ENVELOPE_BODY_BINARYMIME] = "binarymime",
        [ENVELOPE_BODY_UNKNOWN] = "unknown",
};

const char *envelope_body_to_string(EnvelopeBody b) {
        if (b < 0 || b >= _ENVELOPE_BODY_MAX)
                return "unknown";
        return body_names[b];
}

EnvelopeBody envelope_body_from_string(const char *s) {
        for (int i = 0; i < _ENVELOPE_BODY_MAX; i++)
                if (g_ascii_strcasecmp(s, body_names[i]) == 0)
                        return (EnvelopeBody) i;
        return _ENVELOPE_BODY_INVALID;
}

void envelope_init(Envelope *e) {
        *e = (Envelope){
                .format = 8,
                .body = ENVELOPE_BODY_UNKNOWN,
                .to_local = g_ptr_array_new_with_free_func(g_free),
                .to_remote = g_ptr_array_new_with_free_func(g_free),
                .trailer = g_ptr_array_new_with_free_func(g_free),
        };
}

void envelope_done(Envelope *e) {
        if (!e)
                return;
        g_free(e->from);
        g_free(e->authentication);
        g_free(e->client);
        g_free(e->client_name);
        g_free(e->client_certificate);
        g_free(e->mail_from_auth_in);
        g_free(e->mail_from_auth_out);
        g_free(e->forward_to);
        g_free(e->forward_to_address);
        g_free(e->client_account_selector);
        if (e->to_local)
                g_ptr_array_unref(e->to_local);
        if (e->to_remote)
                g_ptr_array_unref(e->to_remote);
        if (e->trailer)
                g_ptr_array_unref(e->trailer);
        *e = (Envelope){};
}

Envelope *envelope_new(void) {
        Envelope *e = g_new0(Envelope, 1);
        envelope_init(e);
        return e;
}

Envelope *envelope_free(Envelope *e) {
        if (e) {
                envelope_done(e);
                g_free(e);
        }
        return NULL;
}

/* Append "X-MailRelay-<key>: <value>" with folding: a '\n' in the value becomes a line break
 * followed by a space, as E-MailRelay folds the client certificate. */
static void put_field(GString *out, const char *key, const char *value, const char *eol) {
        g_string_append(out, ENVELOPE_PREFIX);
        g_string_append(out, key);
        g_string_append(out, ": ");
        for (const char *p = value ? value : ""; *p; p++) {
                if (*p == '\n') {
                        g_string_append(out, eol);
                        g_string_append_c(out, ' ');
                } else if (*p != '\r')
                        g_string_append_c(out, *p);
        }
        g_string_append(out, eol);
}

GString *envelope_to_string(const Envelope *e) {
        const char *eol = e->lf_only ? "\n" : "\r\n";
        GString *out = g_string_sized_new(512);
        char count[32];

        put_field(out, "Format", "#2821.8", eol);
        put_field(out, "Content", envelope_body_to_string(e->body), eol);
        put_field(out, "From", e->from, eol);
        g_snprintf(count, sizeof count, "%u", e->to_local->len + e->to_remote->len);
        put_field(out, "ToCount", count, eol);
        for (guint i = 0; i < e->to_local->len; i++)
                put_field(out, "To-Local", e->to_local->pdata[i], eol);
        for (guint i = 0; i < e->to_remote->len; i++)
                put_field(out, "To-Remote", e->to_remote->pdata[i], eol);
        put_field(out, "Authentication", e->authentication, eol);
        put_field(out, "Client", e->client, eol);
        put_field(out, "ClientCertificate", e->client_certificate, eol);
        put_field(out, "MailFromAuthIn", e->mail_from_auth_in, eol);
        put_field(out, "MailFromAuthOut", e->mail_from_auth_out, eol);
        put_field(out, "ForwardTo", e->forward_to, eol);
        put_field(out, "ForwardToAddress", e->forward_to_address, eol);
        put_field(out, "ClientAccountSelector", e->client_account_selector, eol);
        put_field(out, "Utf8MailboxNames", e->utf8_mailbox_names ? "1" : "0", eol);
        put_field(out, "End", "1", eol);
        for (guint i = 0; i < e->trailer->len; i++) {
                g_string_append(out, e->trailer->pdata[i]);
                g_string_append(out, eol);
        }
        return out;
}

/* ---- reader ---- */

typedef enum Field {
        F_FORMAT,
        F_CONTENT,
        F_FROM,
        F_TO_COUNT,
        F_TO_LOCAL,
        F_TO_REMOTE,
        F_AUTHENTICATION,
        F_CLIENT,
        F_CLIENT_NAME,
        F_CLIENT_CERTIFICATE,
        F_MAIL_FROM_AUTH_IN,
        F_MAIL_FROM_AUTH_OUT,
        F_FORWARD_TO,
        F_FORWARD_TO_ADDRESS,
        F_CLIENT_ACCOUNT_SELECTOR,
        F_UTF8_MAILBOX_NAMES,
        F_END,
        _F_MAX,
        _F_INVALID = -1,
} Field;

static const char *const field_names[_F_MAX] = {
        [F_FORMAT] = "Format",
        [F_CONTENT] = "Content",
        [F_FROM] = "From",
        [F_TO_COUNT] = "ToCount",
        [F_TO_LOCAL] = "To-Local",
        [F_TO_REMOTE] = "To-Remote",
        [F_AUTHENTICATION] = "Authentication",
        [F_CLIENT] = "Client",
        [F_CLIENT_NAME] = "ClientName",
        [F_CLIENT_CERTIFICATE] = "ClientCertificate",
        [F_MAIL_FROM_AUTH_IN] = "MailFromAuthIn",
        [F_MAIL_FROM_AUTH_OUT] = "MailFromAuthOut",
        [F_FORWARD_TO] = "ForwardTo",
        [F_FORWARD_TO_ADDRESS] = "ForwardToAddress",
        [F_CLIENT_ACCOUNT_SELECTOR] = "ClientAccountSelector",
        [F_UTF8_MAILBOX_NAMES] = "Utf8MailboxNames",
        [F_END] = "End",
};

/* The fields each format must carry between Format and End, in the order E-MailRelay wrote
 * them (To-Local/To-Remote are counted by ToCount and not listed). #2821.3 and .4 files from
 * 1.x may or may not carry Content, so it is optional there. */
static const Field format_fields[][16] = {
        [3] = { F_FROM, F_TO_COUNT, F_AUTHENTICATION, F_CLIENT, F_END },
        [4] = { F_FROM, F_TO_COUNT, F_AUTHENTICATION, F_CLIENT, F_CLIENT_NAME, F_CLIENT_CERTIFICATE, F_END },
        [5] = { F_CONTENT, F_FROM, F_TO_COUNT, F_AUTHENTICATION, F_CLIENT, F_CLIENT_CERTIFICATE,
                F_MAIL_FROM_AUTH_IN, F_MAIL_FROM_AUTH_OUT, F_END },
        [6] = { F_CONTENT, F_FROM, F_TO_COUNT, F_AUTHENTICATION, F_CLIENT, F_CLIENT_CERTIFICATE,
                F_MAIL_FROM_AUTH_IN, F_MAIL_FROM_AUTH_OUT, F_FORWARD_TO, F_FORWARD_TO_ADDRESS, F_END },
        [7] = { F_CONTENT, F_FROM, F_TO_COUNT, F_AUTHENTICATION, F_CLIENT, F_CLIENT_CERTIFICATE,
                F_MAIL_FROM_AUTH_IN, F_MAIL_FROM_AUTH_OUT, F_FORWARD_TO, F_FORWARD_TO_ADDRESS,
                F_UTF8_MAILBOX_NAMES, F_END },
        [8] = { F_CONTENT, F_FROM, F_TO_COUNT, F_AUTHENTICATION, F_CLIENT, F_CLIENT_CERTIFICATE,
                F_MAIL_FROM_AUTH_IN, F_MAIL_FROM_AUTH_OUT, F_FORWARD_TO, F_FORWARD_TO_ADDRESS,
                F_CLIENT_ACCOUNT_SELECTOR, F_UTF8_MAILBOX_NAMES, F_END },
};

static bool format_allows(int format, Field f) {
        if (f == F_CONTENT || f == F_TO_LOCAL || f == F_TO_REMOTE)
                return true;
        if (f == F_END)
                return true;
        for (const Field *p = format_fields[format]; *p != F_END; p++)
                if (*p == f)
                        return true;
        return false;
}

/* One logical (unfolded) line and where it started. */
typedef struct Line {
        char *text;
        unsigned number;
        bool terminated;
} Line;

static void line_clear(gpointer p) {
        g_free(((Line *) p)->text);
}

/* Split into logical lines: CRLF or LF ends a physical line; a physical line starting with a
 * space or tab continues the previous logical line (joined with '\n'). Continuations are only
 * recognised before the End line: trailer lines are kept as they are. */
static int split_lines(const char *data, size_t len, GArray *lines, bool *ret_lf_only,
                       unsigned *ret_bad_line) {
        bool lf_only = false, first = true, in_trailer = false;
        unsigned number = 0;
        size_t pos = 0;

        while (pos < len) {
                const char *start = data + pos;
                const char *nl = memchr(start, '\n', len - pos);
                size_t n = nl ? (size_t) (nl - start) : len - pos;
                bool terminated = nl != NULL;

                pos += n + (terminated ? 1 : 0);
                number++;
                if (memchr(start, '\0', n)) {
                        *ret_bad_line = number;
                        return -EBADMSG;
                }
                if (n > 0 && start[n - 1] == '\r')
                        n--;
                else if (first && terminated)
                        lf_only = true;
                first = false;

                if (!in_trailer && lines->len > 0 && n > 0 && (start[0] == ' ' || start[0] == '\t')) {
                        Line *prev = &g_array_index(lines, Line, lines->len - 1);
                        char *joined = g_strdup_printf("%s\n%.*s", prev->text, (int) (n - 1), start + 1);
                        g_free(prev->text);
                        prev->text = joined;
                        prev->terminated = terminated;
                        continue;
                }
                Line l = { .text = g_strndup(start, n), .number = number, .terminated = terminated };
                g_array_append_val(lines, l);
                if (g_str_has_prefix(l.text, ENVELOPE_PREFIX "End:"))
                        in_trailer = true;
        }
        *ret_lf_only = lf_only;
        return 0;
}

/* "X-MailRelay-Key: value" -> field and value (leading blanks skipped). */
static Field parse_line(const char *text, const char **ret_value) {
        if (!g_str_has_prefix(text, ENVELOPE_PREFIX))
                return _F_INVALID;
        text += strlen(ENVELOPE_PREFIX);
        const char *colon = strchr(text, ':');
        if (!colon)
                return _F_INVALID;
        for (int f = 0; f < _F_MAX; f++)
                if (strlen(field_names[f]) == (size_t) (colon - text) &&
                    strncmp(field_names[f], text, colon - text) == 0) {
                        const char *v = colon + 1;
                        while (*v == ' ' || *v == '\t')
                                v++;
                        *ret_value = v;
                        return (Field) f;
                }
        return _F_INVALID;
}

static char *error_text(unsigned number, const char *what) {
        return g_strdup_printf("line %u: %s", number, what);
}

int envelope_parse(const char *data, size_t len, Envelope *ret, char **ret_error) {
        g_autoptr(GArray) lines = g_array_new(false, true, sizeof(Line));
        g_array_set_clear_func(lines, line_clear);
        g_auto(Envelope) e = {};
        bool seen[_F_MAX] = {};
        unsigned bad_line = 0, to_count = 0, i = 0;
        bool lf_only = false;
        const char *value = NULL;
        g_autofree char *what = NULL;
        int r;

        envelope_init(&e);

        r = split_lines(data, len, lines, &lf_only, &bad_line);
        if (r < 0) {
                what = g_strdup("NUL byte in envelope");
                goto fail_at;
        }
        e.lf_only = lf_only;

        if (lines->len == 0) {
                bad_line = 1;
                what = g_strdup("empty envelope");
                goto fail_at;
        }

        Line *l = &g_array_index(lines, Line, 0);
        if (parse_line(l->text, &value) != F_FORMAT) {
                bad_line = l->number;
                what = g_strdup("expected X-MailRelay-Format");
                goto fail_at;
        }
        {
                static const char prefix[] = "#2821.";
                char *end = NULL;
                long n = -1;
                if (g_str_has_prefix(value, prefix))
                        n = strtol(value + strlen(prefix), &end, 10);
                if (n < 3 || n > 8 || !end || *end != '\0') {
                        bad_line = l->number;
                        what = g_strdup_printf("unsupported envelope format \"%s\"", value);
                        goto fail_at;
                }
                e.format = (int) n;
        }
        seen[F_FORMAT] = true;

        for (i = 1; i < lines->len; i++) {
                l = &g_array_index(lines, Line, i);
                Field f = parse_line(l->text, &value);
                bad_line = l->number;

                if (f == _F_INVALID) {
                        what = g_strdup_printf("unexpected line \"%.40s\"", l->text);
                        goto fail_at;
                }
                if (!format_allows(e.format, f)) {
                        what = g_strdup_printf("field X-MailRelay-%s not allowed in format #2821.%d",
                                               field_names[f], e.format);
                        goto fail_at;
                }
                if (f == F_TO_LOCAL || f == F_TO_REMOTE) {
                        if (!seen[F_TO_COUNT] || seen[F_AUTHENTICATION]) {
                                what = g_strdup_printf("X-MailRelay-%s outside the recipient list", field_names[f]);
                                goto fail_at;
                        }
                        if (e.to_local->len + e.to_remote->len >= to_count) {
                                what = g_strdup_printf("more recipients than X-MailRelay-ToCount (%u)", to_count);
                                goto fail_at;
                        }
                        g_ptr_array_add(f == F_TO_LOCAL ? e.to_local : e.to_remote, g_strdup(value));
                        continue;
                }
                if (seen[f]) {
                        what = g_strdup_printf("duplicate X-MailRelay-%s", field_names[f]);
                        goto fail_at;
                }
                if (f != F_TO_COUNT && seen[F_TO_COUNT] && e.to_local->len + e.to_remote->len != to_count) {
                        what = g_strdup_printf("%u recipients where X-MailRelay-ToCount says %u",
                                               e.to_local->len + e.to_remote->len, to_count);
                        goto fail_at;
                }
                seen[f] = true;

                switch (f) {
                case F_CONTENT: {
                        EnvelopeBody b = envelope_body_from_string(value);
                        e.body = b < 0 ? ENVELOPE_BODY_UNKNOWN : b;
                        break;
                }
                case F_FROM:
                        e.from = g_strdup(value);
                        break;
                case F_TO_COUNT: {
                        char *end = NULL;
                        unsigned long n = g_ascii_isdigit(value[0]) ? strtoul(value, &end, 10) : ULONG_MAX;
                        if (!end || *end != '\0' || n > ENVELOPE_MAX_RECIPIENTS) {
                                what = g_strdup_printf("invalid X-MailRelay-ToCount \"%s\"", value);
                                goto fail_at;
                        }
                        to_count = (unsigned) n;
                        break;
                }
                case F_AUTHENTICATION:
                        e.authentication = g_strdup(value);
                        break;
                case F_CLIENT:
                        e.client = g_strdup(value);
                        break;
                case F_CLIENT_NAME:
                        e.client_name = g_strdup(value);
                        break;
                case F_CLIENT_CERTIFICATE:
                        e.client_certificate = g_strdup(value);
                        break;
                case F_MAIL_FROM_AUTH_IN:
                        e.mail_from_auth_in = g_strdup(value);
                        break;
                case F_MAIL_FROM_AUTH_OUT:
                        e.mail_from_auth_out = g_strdup(value);
                        break;
                case F_FORWARD_TO:
                        e.forward_to = g_strdup(value);
                        break;
                case F_FORWARD_TO_ADDRESS:
                        e.forward_to_address = g_strdup(value);
                        break;
                case F_CLIENT_ACCOUNT_SELECTOR:
                        e.client_account_selector = g_strdup(value);
                        break;
                case F_UTF8_MAILBOX_NAMES:
                        if (!streq(value, "0") && !streq(value, "1")) {
                                what = g_strdup_printf("invalid X-MailRelay-Utf8MailboxNames \"%s\"", value);
                                goto fail_at;
                        }
                        e.utf8_mailbox_names = streq(value, "1");
                        break;
                case F_END:
                        if (!l->terminated) {
                                what = g_strdup("truncated envelope (End line not terminated)");
                                goto fail_at;
                        }
                        break;
                default:
                        g_assert_not_reached();
                }
                if (f == F_END)
                        break;
        }

        if (!seen[F_END]) {
                bad_line = lines->len > 0 ? g_array_index(lines, Line, lines->len - 1).number + 1 : 1;
                what = g_strdup("truncated envelope (no X-MailRelay-End line)");
                goto fail_at;
        }
        for (const Field *p = format_fields[e.format]; *p != F_END; p++)
                if (!seen[*p]) {
                        what = g_strdup_printf("missing X-MailRelay-%s", field_names[*p]);
                        goto fail_at;
                }

        /* Everything after End: reason lines and other additions, kept verbatim. A final empty
         * line is just the file's last line ending. */
        for (i = i + 1; i < lines->len; i++) {
                l = &g_array_index(lines, Line, i);
                if (i == lines->len - 1 && l->text[0] == '\0')
                        break;
                g_ptr_array_add(e.trailer, g_strdup(l->text));
        }

        *ret = e;
        e = (Envelope){};
        return 0;

fail_at:
        if (ret_error)
                *ret_error = error_text(bad_line, what);
        return -EBADMSG;
}

/* E-MailRelay keeps reason text to printable ASCII; so do we, so that a reason can never break
 * the line structure of the file. */
static char *printable(const char *s) {
        size_t n = MIN(strlen(s), ENVELOPE_MAX_REASON);
        char *out = g_strndup(s, n);
        for (char *p = out; *p; p++) {
                unsigned char c = (unsigned char) *p;
                if (c < 0x20 || c == 0x7f)
                        *p = ' ';
                else if (c > 0x7f)
                        *p = '?';
        }
        return g_strstrip(out);
}

static void reason_lines(GPtrArray *lines, const char *reason, int code) {
        g_autofree char *text = printable(reason ? reason : "");
        g_ptr_array_add(lines, g_strdup_printf(ENVELOPE_PREFIX "Reason: %s", text));
        if (code != 0)
                g_ptr_array_add(lines, g_strdup_printf(ENVELOPE_PREFIX "ReasonCode: %d", code));
        else
                g_ptr_array_add(lines, g_strdup(ENVELOPE_PREFIX "ReasonCode:"));
}

void envelope_add_reason(Envelope *e, const char *reason, int code) {
        reason_lines(e->trailer, reason, code);
}

GString *envelope_reason_lines(const char *reason, int code, bool lf_only) {
        g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
        GString *out = g_string_new(NULL);

        reason_lines(lines, reason, code);
        for (guint i = 0; i < lines->len; i++) {
                g_string_append(out, lines->pdata[i]);
                g_string_append(out, lf_only ? "\n" : "\r\n");
        }
        return out;
}

static void retry_lines(GPtrArray *lines, const char *reason, int code, long long next_retry) {
        if (reason)
                reason_lines(lines, reason, code);
        g_ptr_array_add(lines, g_strdup_printf(ENVELOPE_NEXT_RETRY_KEY ": %lld", next_retry));
}

void envelope_add_retry(Envelope *e, const char *reason, int code, long long next_retry) {
        retry_lines(e->trailer, reason, code, next_retry);
}

GString *envelope_retry_lines(const char *reason, int code, long long next_retry, bool lf_only) {
        g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
        GString *out = g_string_new(NULL);

        retry_lines(lines, reason, code, next_retry);
        for (guint i = 0; i < lines->len; i++) {
                g_string_append(out, lines->pdata[i]);
                g_string_append(out, lf_only ? "\n" : "\r\n");
        }
        return out;
}

int envelope_next_retry(const Envelope *e, long long *ret_seconds) {
        const char *v = envelope_trailer_get(e, ENVELOPE_NEXT_RETRY_KEY);
        char *end = NULL;
        long long n;

        if (!v)
                return -ENOENT;
        /* Digits only: no sign, no blanks, no hex; a value past the range is malformed too. */
        if (!g_ascii_isdigit(v[0]))
                return -EINVAL;
        errno = 0;
        n = strtoll(v, &end, 10);
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        *ret_seconds = n;
        return 0;
}

unsigned envelope_count_reasons(const Envelope *e) {
        unsigned n = 0;
        for (guint i = 0; i < e->trailer->len; i++)
                if (g_str_has_prefix(e->trailer->pdata[i], ENVELOPE_PREFIX "Reason:"))
                        n++;
        return n;
}

const char *envelope_trailer_get(const Envelope *e, const char *key) {
        size_t n = strlen(key);
        for (guint i = e->trailer->len; i > 0; i--) {
                const char *line = e->trailer->pdata[i - 1];
                if (strncmp(line, key, n) == 0 && line[n] == ':') {
                        line += n + 1;
                        while (*line == ' ' || *line == '\t')
                                line++;
                        return line;
                }
        }
        return NULL;
}
