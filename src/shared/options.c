/* SPDX-License-Identifier: GPL-3.0-or-later */
/* E-MailRelay's command line and config file parsed against one option table, and the --help and
 * --version output built from it. */

#include "config.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <glib/gi18n-lib.h>
#if HAVE_TLS
#include <gnutls/gnutls.h>
#endif

#include "macro.h"
#include "options.h"

#define ORIGIN_COMMAND_LINE "command line"

/* A config file is a few dozen lines; anything this big is a mistake (e.g. a binary). */
#define CONFIG_FILE_MAX (1024u * 1024u)

/* Help layout: the text column follows the widest option, within these bounds. */
#define HELP_WIDTH 79
#define HELP_COLUMN_MAX 40
#define HELP_TEXT_MIN 30

static const char *program_name_of(unsigned program) {
        switch (program) {
        case PROG_SMTPD:    return "emailrelay-smtpd";
        case PROG_POP3D:    return "emailrelay-pop3d";
        case PROG_FORWARD:  return "emailrelay-forward";
        case PROG_FRONTEND: return "emailrelay";
        case PROG_SUBMIT:   return "emailrelay-submit";
        case PROG_QUEUE:    return "emailrelay-queue";
        case PROG_PASSWD:   return "emailrelay-passwd";
        default:            return "this program";
        }
}

static bool option_applies(const Options *o, const OptionDef *def) {
        return (def->programs & o->program) != 0;
}

static const OptionDef *find_long(const OptionDef *table, const char *name, size_t len) {
        for (const OptionDef *d = table; d->name; d++)
                if (strlen(d->name) == len && strneq(d->name, name, len))
                        return d;
        return NULL;
}

static const OptionDef *find_short(const OptionDef *table, char c) {
        if (c == 0)
                return NULL;
        for (const OptionDef *d = table; d->name; d++)
                if (d->short_name == c)
                        return d;
        return NULL;
}

static const OptionDef *find_def(const Options *o, const char *name) {
        const OptionDef *def;

        assert(o);
        assert(name);
        def = find_long(o->table, name, strlen(name));
        assert(def); /* a look-up of a name not in the table is a programming error */
        return def;
}

static void option_value_clear(OptionValue *v) {
        g_free(v->value);
        g_free(v->origin);
        *v = (OptionValue) {};
}

static void option_value_clear_func(void *p) {
        option_value_clear(p);
}

/* One parse collects into a batch that is applied only when the whole input is good, so that a
 * failed parse leaves the Options as they were. */
typedef struct Batch {
        GArray *values;   /* OptionValue */
        GPtrArray *args;  /* char* */
} Batch;

static void batch_init(Batch *b) {
        b->values = g_array_new(false, true, sizeof(OptionValue));
        g_array_set_clear_func(b->values, option_value_clear_func);
        b->args = g_ptr_array_new_with_free_func(g_free);
}

static void batch_done(Batch *b) {
        g_clear_pointer(&b->values, g_array_unref);
        g_clear_pointer(&b->args, g_ptr_array_unref);
}

static void batch_add(Batch *b, const OptionDef *def, const char *value, char *origin_owned) {
        OptionValue v = {
                .def = def,
                .value = g_strdup(value),
                .origin = origin_owned,
        };
        g_array_append_val(b->values, v);
}

static void options_remove_all_of(Options *o, const OptionDef *def) {
        size_t j = 0;

        for (size_t i = 0; i < o->n_values; i++) {
                if (o->values[i].def == def)
                        option_value_clear(&o->values[i]);
                else
                        o->values[j++] = o->values[i];
        }
        o->n_values = j;
}

static void batch_commit(Batch *b, Options *o) {
        for (guint i = 0; i < b->values->len; i++) {
                OptionValue *v = &g_array_index(b->values, OptionValue, i);

                /* Last one wins: drop the earlier value, so that values[] holds what is in force. */
                if (!v->def->many)
                        options_remove_all_of(o, v->def);
                o->values = g_renew(OptionValue, o->values, o->n_values + 1);
                o->values[o->n_values++] = *v;
                *v = (OptionValue) {}; /* moved */
        }

        if (b->args->len > 0) {
                o->args = g_renew(char *, o->args, o->n_args + b->args->len + 1);
                for (guint i = 0; i < b->args->len; i++) {
                        o->args[o->n_args++] = b->args->pdata[i];
                        b->args->pdata[i] = NULL; /* moved */
                }
                o->args[o->n_args] = NULL;
        }
}

void options_init(Options *o, const OptionDef *table, unsigned program) {
        assert(o);
        assert(table);
        assert(program != 0);

        *o = (Options) {
                .table = table,
                .program = program,
                .args = g_new0(char *, 1),
        };
}

void options_done(Options *o) {
        if (!o)
                return;
        for (size_t i = 0; i < o->n_values; i++)
                option_value_clear(&o->values[i]);
        g_free(o->values);
        g_strfreev(o->args);
        *o = (Options) {};
}

static void set_error(char **ret_error, char *message) {
        if (ret_error)
                *ret_error = message;
        else
                g_free(message);
}

/* A short option letter as it can be shown in a message. */
static char *short_display(char c) {
        if (g_ascii_isgraph(c))
                return g_strdup_printf("-%c", c);
        return g_strdup_printf("-\\x%02x", (unsigned char) c);
}

int options_parse_argv(Options *o, int argc, char *const *argv, char **ret_error) {
        _cleanup_(batch_done) Batch b = {};
        bool only_args = false;

        assert(o);
        assert(argc >= 0);
        assert(argc == 0 || argv);

        batch_init(&b);

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];

                if (only_args || a[0] != '-' || a[1] == 0) { /* "-" alone is an argument too */
                        g_ptr_array_add(b.args, g_strdup(a));
                        continue;
                }
                if (streq(a, "--")) {
                        only_args = true;
                        continue;
                }

                if (a[1] == '-') {
                        const char *name = a + 2, *eq = strchr(name, '=');
                        size_t len = eq ? (size_t) (eq - name) : strlen(name);
                        const OptionDef *def = find_long(o->table, name, len);
                        const char *value = NULL;

                        if (!def) {
                                set_error(ret_error, g_strdup_printf(_("unknown option: --%.*s"),
                                                                     (int) len, name));
                                return -EINVAL;
                        }
                        if (!option_applies(o, def)) {
                                set_error(ret_error,
                                          g_strdup_printf(_("option --%s does not apply to %s"),
                                                          def->name, program_name_of(o->program)));
                                return -EINVAL;
                        }

                        switch (def->arg) {
                        case OPTION_ARG_NONE:
                                if (eq) {
                                        set_error(ret_error,
                                                  g_strdup_printf(_("option --%s takes no value"),
                                                                  def->name));
                                        return -EINVAL;
                                }
                                break;
                        case OPTION_ARG_OPTIONAL:
                                value = eq ? eq + 1 : NULL;
                                break;
                        case OPTION_ARG_REQUIRED:
                                if (eq)
                                        value = eq + 1;
                                else if (i + 1 < argc)
                                        value = argv[++i];
                                else {
                                        set_error(ret_error,
                                                  g_strdup_printf(_("option --%s needs a value"),
                                                                  def->name));
                                        return -EINVAL;
                                }
                                break;
                        default:
                                assert(!"bad OptionArg in option table");
                                return -EINVAL;
                        }
                        batch_add(&b, def, value, g_strdup(ORIGIN_COMMAND_LINE));
                        continue;
                }

                /* One or more short options: flags may be bundled ("-lv"); an option that takes
                 * a value takes the rest of the word ("-p25") or else the next one ("-p 25"). */
                for (const char *p = a + 1; *p; p++) {
                        const OptionDef *def = find_short(o->table, *p);
                        const char *value = NULL;

                        if (!def) {
                                g_autofree char *shown = short_display(*p);
                                set_error(ret_error,
                                          g_strdup_printf(_("unknown option: %s"), shown));
                                return -EINVAL;
                        }
                        if (!option_applies(o, def)) {
                                set_error(ret_error,
                                          g_strdup_printf(_("option --%s does not apply to %s"),
                                                          def->name, program_name_of(o->program)));
                                return -EINVAL;
                        }
                        if (def->arg == OPTION_ARG_REQUIRED) {
                                if (p[1])
                                        value = p + 1;
                                else if (i + 1 < argc)
                                        value = argv[++i];
                                else {
                                        set_error(ret_error,
                                                  g_strdup_printf(_("option --%s needs a value"),
                                                                  def->name));
                                        return -EINVAL;
                                }
                                batch_add(&b, def, value, g_strdup(ORIGIN_COMMAND_LINE));
                                break;
                        }
                        assert(def->arg == OPTION_ARG_NONE || def->arg == OPTION_ARG_OPTIONAL);
                        /* An optional value attaches only with '=', which a short option lacks. */
                        batch_add(&b, def, NULL, g_strdup(ORIGIN_COMMAND_LINE));
                }
        }

        batch_commit(&b, o);
        return 0;
}

static bool is_blank(char c) {
        return c == ' ' || c == '\t';
}

static int parse_config_buffer(Options *o, const char *text, size_t size, const char *origin,
                               char **ret_error) {
        _cleanup_(batch_done) Batch b = {};
        const char *p = text, *end = text + size;
        unsigned line_no = 0;

        assert(o);
        assert(text || size == 0);
        assert(origin);

        batch_init(&b);

        while (p < end) {
                const char *eol = memchr(p, '\n', end - p);
                const char *line = p, *line_end = eol ? eol : end;
                const char *name, *name_end, *value = NULL, *value_end = NULL;
                const OptionDef *def;

                p = eol ? eol + 1 : end;
                line_no++;

                if (memchr(line, '\0', line_end - line)) {
                        set_error(ret_error, g_strdup_printf(_("%s:%u: line contains a NUL byte"),
                                                             origin, line_no));
                        return -EINVAL;
                }

                /* Trim: trailing white space and a CR (CRLF files), leading white space. */
                while (line_end > line && (is_blank(line_end[-1]) || line_end[-1] == '\r'))
                        line_end--;
                while (line < line_end && is_blank(*line))
                        line++;
                if (line == line_end || *line == '#')
                        continue;

                /* E-MailRelay 2.6.1 accepts lines written like the command line: "--port 25". */
                if (line_end - line >= 2 && line[0] == '-' && line[1] == '-')
                        line += 2;

                name = line;
                name_end = name;
                while (name_end < line_end && !is_blank(*name_end) && *name_end != '=')
                        name_end++;

                if (name_end < line_end && *name_end == '=') {
                        /* "name=value", as on the command line: the value may be empty. */
                        value = name_end + 1;
                        value_end = line_end;
                } else {
                        const char *v = name_end;
                        while (v < line_end && is_blank(*v))
                                v++;
                        if (v < line_end) {
                                value = v;
                                value_end = line_end;
                        }
                }

                def = find_long(o->table, name, name_end - name);
                if (!def) {
                        set_error(ret_error, g_strdup_printf(_("%s:%u: unknown option: %.*s"),
                                                             origin, line_no,
                                                             (int) (name_end - name), name));
                        return -EINVAL;
                }

                /* The file is shared by every program: each takes what concerns it. */
                if (!option_applies(o, def))
                        continue;

                switch (def->arg) {
                case OPTION_ARG_NONE:
                        if (value) {
                                set_error(ret_error,
                                          g_strdup_printf(_("%s:%u: option %s takes no value"),
                                                          origin, line_no, def->name));
                                return -EINVAL;
                        }
                        break;
                case OPTION_ARG_REQUIRED:
                        if (!value) {
                                set_error(ret_error,
                                          g_strdup_printf(_("%s:%u: option %s needs a value"),
                                                          origin, line_no, def->name));
                                return -EINVAL;
                        }
                        break;
                case OPTION_ARG_OPTIONAL:
                        break;
                default:
                        assert(!"bad OptionArg in option table");
                        return -EINVAL;
                }

                {
                        g_autofree char *v = value ? g_strndup(value, value_end - value) : NULL;
                        batch_add(&b, def, v, g_strdup_printf("%s:%u", origin, line_no));
                }
        }

        batch_commit(&b, o);
        return 0;
}

int options_parse_config_string(Options *o, const char *text, const char *origin, char **ret_error) {
        assert(text);
        return parse_config_buffer(o, text, strlen(text), origin ?: "config", ret_error);
}

static int read_config_file(const char *path, char **ret_text, size_t *ret_size) {
        _cleanup_fclose_ FILE *f = NULL;
        g_autoptr(GString) s = NULL;
        char buf[4096];
        size_t n;

        f = fopen(path, "re");
        if (!f)
                return negative_errno();

        s = g_string_new(NULL);
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
                if (s->len + n > CONFIG_FILE_MAX)
                        return -EFBIG;
                g_string_append_len(s, buf, n);
        }
        if (ferror(f))
                return negative_errno();

        *ret_size = s->len;
        *ret_text = g_string_free(TAKE_PTR(s), false);
        return 0;
}

int options_parse_config_file(Options *o, const char *path, char **ret_error) {
        g_autofree char *text = NULL;
        size_t size = 0;
        int r;

        assert(o);
        assert(path);

        r = read_config_file(path, &text, &size);
        if (r < 0) {
                set_error(ret_error, g_strdup_printf("%s: %s", path, g_strerror(-r)));
                return r;
        }

        return parse_config_buffer(o, text, size, path, ret_error);
}

static const OptionValue *find_last(const Options *o, const OptionDef *def) {
        for (size_t i = o->n_values; i > 0; i--)
                if (o->values[i - 1].def == def)
                        return &o->values[i - 1];
        return NULL;
}

bool options_has(const Options *o, const char *name) {
        return find_last(o, find_def(o, name)) != NULL;
}

const char *options_get(const Options *o, const char *name) {
        const OptionValue *v = find_last(o, find_def(o, name));
        return v ? v->value : NULL;
}

const char *options_get_default(const Options *o, const char *name, const char *fallback) {
        const char *v = options_get(o, name);
        return v ?: fallback;
}

size_t options_get_all(const Options *o, const char *name, const char ***ret_values) {
        const OptionDef *def = find_def(o, name);
        size_t n = 0;

        for (size_t i = 0; i < o->n_values; i++)
                if (o->values[i].def == def)
                        n++;

        if (ret_values) {
                const char **values = g_new0(const char *, n + 1);
                size_t j = 0;

                for (size_t i = 0; i < o->n_values; i++)
                        if (o->values[i].def == def)
                                values[j++] = o->values[i].value;
                *ret_values = values;
        }
        return n;
}

static char *number_error(const OptionValue *v, const char *s, unsigned min, unsigned max) {
        g_autofree char *msg = g_strdup_printf(
                _("option --%s: value \"%s\" is not a number from %u to %u"), v->def->name, s,
                min, max);

        /* A value from a config file names its line: the user has to find it there. */
        if (v->origin && !streq(v->origin, ORIGIN_COMMAND_LINE))
                return g_strdup_printf("%s: %s", v->origin, msg);
        return TAKE_PTR(msg);
}

int options_get_uint(const Options *o, const char *name, unsigned min, unsigned max, unsigned *ret,
                     char **ret_error) {
        const OptionValue *v;
        const char *s;
        unsigned long long n;

        assert(min <= max);

        v = find_last(o, find_def(o, name));
        if (!v)
                return 0;

        s = v->value ?: "";
        /* Decimal digits only: no sign, no white space, no 0x, nothing after. */
        bool digits = s[0] != 0;
        for (const char *c = s; *c; c++)
                if (!g_ascii_isdigit(*c))
                        digits = false;
        if (!digits) {
                set_error(ret_error, number_error(v, s, min, max));
                return -EINVAL;
        }

        errno = 0;
        n = strtoull(s, NULL, 10);
        if (errno == ERANGE || n < min || n > max) {
                set_error(ret_error, number_error(v, s, min, max));
                return -ERANGE;
        }

        if (ret)
                *ret = (unsigned) n;
        return 1;
}

static bool listed_in_help(const Options *o, const OptionDef *def, bool verbose) {
        return option_applies(o, def) && !def->hidden && (verbose || !def->verbose_help);
}

static char *help_left(const OptionDef *def) {
        GString *s = g_string_new("  ");

        if (def->short_name)
                g_string_append_printf(s, "-%c, ", def->short_name);
        else
                g_string_append(s, "    ");
        g_string_append_printf(s, "--%s", def->name);
        if (def->arg == OPTION_ARG_REQUIRED)
                g_string_append_printf(s, " %s", def->arg_name ?: "<value>");
        else if (def->arg == OPTION_ARG_OPTIONAL)
                g_string_append_printf(s, "[=%s]", def->arg_name ?: "<value>");
        return g_string_free(s, false);
}

static size_t text_width(const char *s) {
        return g_utf8_validate(s, -1, NULL) ? (size_t) g_utf8_strlen(s, -1) : strlen(s);
}

/* Prints text from the current position `col`, wrapped at word boundaries to HELP_WIDTH with
 * continuation lines indented to `indent`. */
static void print_wrapped(FILE *f, const char *text, size_t col, size_t indent) {
        g_auto(GStrv) words = g_strsplit_set(text, " ", -1);
        bool first = true;

        for (char **w = words; *w; w++) {
                size_t len = text_width(*w);

                if (**w == 0)
                        continue;
                if (!first && col + 1 + len > HELP_WIDTH) {
                        fprintf(f, "\n%*s", (int) indent, "");
                        col = indent;
                        first = true;
                }
                if (!first) {
                        fputc(' ', f);
                        col++;
                }
                fputs(*w, f);
                col += len;
                first = false;
        }
        fputc('\n', f);
}

void options_print_help(const Options *o, FILE *f, const char *program_name, const char *usage,
                        bool verbose) {
        size_t column = 0;
        bool more = false;

        assert(o);
        assert(f);

        if (!program_name)
                program_name = program_name_of(o->program);

        if (isempty(usage))
                fprintf(f, _("Usage: %s\n"), program_name);
        else
                fprintf(f, _("Usage: %s %s\n"), program_name, usage);
        fputc('\n', f);

        for (const OptionDef *d = o->table; d->name; d++) {
                if (listed_in_help(o, d, verbose)) {
                        g_autofree char *left = help_left(d);
                        column = MAX(column, strlen(left) + 2);
                } else if (!verbose && option_applies(o, d) && !d->hidden)
                        more = true;
        }
        column = MIN(column, (size_t) HELP_COLUMN_MAX);
        column = MIN(column, (size_t) (HELP_WIDTH - HELP_TEXT_MIN));

        for (const OptionDef *d = o->table; d->name; d++) {
                g_autofree char *left = NULL;
                size_t len;

                if (!listed_in_help(o, d, verbose))
                        continue;

                left = help_left(d);
                len = strlen(left);
                fputs(left, f);
                if (len + 2 > column) {
                        /* Too wide to align: the text goes on its own line. */
                        fprintf(f, "\n%*s", (int) column, "");
                } else
                        fprintf(f, "%*s", (int) (column - len), "");
                print_wrapped(f, d->help ? _(d->help) : "", column, column);
        }

        if (more) {
                fputc('\n', f);
                fprintf(f, _("For the full list of options: %s --help --verbose\n"), program_name);
        }
}

void options_print_version(FILE *f, const char *program_name, bool verbose) {
        assert(f);
        assert(program_name);

        fprintf(f, "%s %s\n", program_name, PACKAGE_VERSION);
        if (!verbose)
                return;

        /* E-MailRelay's feature lines first, word for word: scripts parse them to decide what
         * to use. The suite has every one of them built in. */
        fputs("Multi-threading: enabled\n", f);
        fputs("Unix domain sockets: enabled\n", f);
        fputs("POP server: enabled\n", f);
        fputs("Admin server: enabled\n", f);
#if HAVE_TLS
        fprintf(f, "TLS library: gnutls-%s\n", gnutls_check_version(NULL));
        fputs("TLS: GnuTLS\n", f);
#else
        fputs("TLS library: none\n", f);
        fputs("TLS: none\n", f);
#endif
        fputs("systemd: socket activation, journal\n", f);
        fputs("License: GPL-3.0-or-later\n", f);
}
