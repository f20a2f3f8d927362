/* SPDX-License-Identifier: GPL-3.0-or-later */
/* E-MailRelay's options: one table saying which program uses each, a command-line parser
 * (--opt=value, --opt value, -x value, bundled short flags where they take no value) and a
 * config-file parser (/etc/emailrelay.conf: one option a line without the dashes, then white
 * space and the value, # comments), plus --help, --help --verbose and --version output. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Programs an option concerns (bit mask). */
typedef enum OptionProgram {
        PROG_SMTPD    = 1u << 0,
        PROG_POP3D    = 1u << 1,
        PROG_FORWARD  = 1u << 2,
        PROG_FRONTEND = 1u << 3, /* the `emailrelay` front-end itself (mode, process options) */
        PROG_SUBMIT   = 1u << 4,
        PROG_QUEUE    = 1u << 5,
        PROG_PASSWD   = 1u << 6,
        PROG_ALL_DAEMONS = PROG_SMTPD | PROG_POP3D | PROG_FORWARD | PROG_FRONTEND,
} OptionProgram;

typedef enum OptionArg {
        OPTION_ARG_NONE,      /* a flag */
        OPTION_ARG_REQUIRED,  /* --opt=value or --opt value */
        OPTION_ARG_OPTIONAL,  /* only --opt=value attaches a value, e.g. --anonymous[=scope] */
        _OPTION_ARG_MAX,
} OptionArg;

typedef struct OptionDef {
        const char *name;       /* long name without dashes, e.g. "spool-dir" */
        char short_name;        /* 0 if none */
        OptionArg arg;
        const char *arg_name;   /* for help: "<dir>" */
        unsigned programs;      /* OptionProgram mask */
        bool many;              /* may repeat; otherwise the last one wins */
        bool verbose_help;      /* only listed by --help --verbose */
        bool hidden;            /* never listed (test options) */
        const char *help;       /* one line, translatable (N_()) */
} OptionDef;

/* E-MailRelay's options (reference section 1) plus this suite's own (e.g. retry schedule),
 * terminated by an entry with name NULL. */
extern const OptionDef emailrelay_options[];

typedef struct OptionValue {
        const OptionDef *def;
        char *value;            /* NULL for a flag or an optional value not given */
        char *origin;           /* "command line" or "<file>:<line>", for error messages */
} OptionValue;

typedef struct Options {
        const OptionDef *table;
        unsigned program;       /* the running program's bit */
        OptionValue *values;    /* in order of appearance; config file first, then argv */
        size_t n_values;
        char **args;            /* non-option arguments, NULL-terminated */
        size_t n_args;
} Options;

void options_init(Options *o, const OptionDef *table, unsigned program);
void options_done(Options *o);

/* Parse argv[1..]. "--" ends the options. An unknown option, a missing or unexpected value, or an
 * option of the table that does not concern this program is an error: returns -EINVAL and sets
 * *ret_error to a one-line message naming the option, e.g. "unknown option: --frobnicate". */
int options_parse_argv(Options *o, int argc, char *const *argv, char **ret_error);

/* Parse a config file. Options of the table that do not concern this program are skipped
 * silently (the file is shared by every program); unknown names are errors. Errors name the
 * file and line: "/etc/emailrelay.conf:12: unknown option: frobnicate". A missing file is
 * -ENOENT with a message. Values given on the command line later override single options. */
int options_parse_config_file(Options *o, const char *path, char **ret_error);

/* Same, from a string (tests, fuzzing); origin names it in errors. */
int options_parse_config_string(Options *o, const char *text, const char *origin, char **ret_error);

/* Look-ups by long name. The name must exist in the table (assert). */
bool options_has(const Options *o, const char *name);
const char *options_get(const Options *o, const char *name);   /* last value, or NULL */
const char *options_get_default(const Options *o, const char *name, const char *fallback);
/* All values of a repeatable option, in order; returns the count and a NULL-terminated array
 * the caller frees with g_free (the strings are borrowed). For a flag (e.g. -v -v) only the
 * count matters, the entries are NULL; ret_values may be NULL to count only. */
size_t options_get_all(const Options *o, const char *name, const char ***ret_values);
/* Unsigned number with range check; -ERANGE/-EINVAL with *ret_error naming the option (and the
 * config file line it came from). Leaves *ret untouched and returns 0 when the option is absent,
 * 1 when it was set. */
int options_get_uint(const Options *o, const char *name, unsigned min, unsigned max, unsigned *ret,
                     char **ret_error);

/* --help [--verbose] for the running program, to f. usage is the first line's tail, e.g.
 * "[<option> ...] [<config-file>]". */
void options_print_help(const Options *o, FILE *f, const char *program_name, const char *usage,
                        bool verbose);
/* --version [--verbose]. */
void options_print_version(FILE *f, const char *program_name, bool verbose);
