/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the option table, the command-line and config-file parsers, and --help/--version. */

#include "config.h"

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

#include "options.h"

#define EVERY_PROGRAM (PROG_ALL_DAEMONS | PROG_SUBMIT | PROG_QUEUE | PROG_PASSWD)

/* Options that clean themselves up, so that a failed assertion does not leak. */
typedef Options TestOptions;
static void test_options_done(TestOptions *o) {
        options_done(o);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(TestOptions, test_options_done)

static int parse(Options *o, char **ret_error, ...) G_GNUC_NULL_TERMINATED;
static int parse(Options *o, char **ret_error, ...) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        va_list ap;

        g_ptr_array_add(argv, (char *) "prog");
        va_start(ap, ret_error);
        for (const char *a; (a = va_arg(ap, const char *));)
                g_ptr_array_add(argv, (char *) a);
        va_end(ap);
        g_ptr_array_add(argv, NULL);
        return options_parse_argv(o, (int) argv->len - 1, (char *const *) argv->pdata, ret_error);
}

/* Expects the argv to fail with exactly this message, leaving o unchanged. */
static void assert_argv_error(unsigned program, const char *expected, ...) G_GNUC_NULL_TERMINATED;
static void assert_argv_error(unsigned program, const char *expected, ...) {
        g_auto(TestOptions) o = {};
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autofree char *error = NULL;
        va_list ap;

        options_init(&o, emailrelay_options, program);
        g_assert_cmpint(parse(&o, NULL, "--spool-dir", "/before", NULL), ==, 0);

        g_ptr_array_add(argv, (char *) "prog");
        va_start(ap, expected);
        for (const char *a; (a = va_arg(ap, const char *));)
                g_ptr_array_add(argv, (char *) a);
        va_end(ap);
        g_ptr_array_add(argv, NULL);

        g_assert_cmpint(options_parse_argv(&o, (int) argv->len - 1, (char *const *) argv->pdata,
                                           &error),
                        ==, -EINVAL);
        g_assert_cmpstr(error, ==, expected);
        /* Nothing of the failed command line was applied. */
        g_assert_cmpuint(o.n_values, ==, 1);
        g_assert_cmpstr(options_get(&o, "spool-dir"), ==, "/before");
        g_assert_cmpuint(o.n_args, ==, 0);
}

static void assert_config_error(unsigned program, const char *text, const char *expected) {
        g_auto(TestOptions) o = {};
        g_autofree char *error = NULL;

        options_init(&o, emailrelay_options, program);
        g_assert_cmpint(options_parse_config_string(&o, text, "/etc/emailrelay.conf", &error), ==,
                        -EINVAL);
        g_assert_cmpstr(error, ==, expected);
        g_assert_cmpuint(o.n_values, ==, 0);
}

static const OptionDef *lookup(const char *name) {
        for (const OptionDef *d = emailrelay_options; d->name; d++)
                if (strcmp(d->name, name) == 0)
                        return d;
        return NULL;
}

static void test_table_sanity(void) {
        g_autoptr(GHashTable) longs = g_hash_table_new(g_str_hash, g_str_equal);
        bool shorts[256] = {};
        size_t n = 0;

        for (const OptionDef *d = emailrelay_options; d->name; d++, n++) {
                g_test_message("option %s", d->name);
                g_assert_cmpuint(strlen(d->name), >, 1);
                for (const char *c = d->name; *c; c++)
                        g_assert_true(g_ascii_islower(*c) || g_ascii_isdigit(*c) || *c == '-');
                g_assert_false(d->name[0] == '-');
                g_assert_true(g_hash_table_add(longs, (char *) d->name)); /* unique */

                if (d->short_name) {
                        g_assert_true(g_ascii_isalnum(d->short_name));
                        g_assert_false(shorts[(unsigned char) d->short_name]);
                        shorts[(unsigned char) d->short_name] = true;
                }

                g_assert_nonnull(d->help);
                g_assert_cmpuint(strlen(d->help), >, 5);
                g_assert_null(strchr(d->help, '\n'));

                g_assert_cmpint(d->arg, >=, OPTION_ARG_NONE);
                g_assert_cmpint(d->arg, <, _OPTION_ARG_MAX);
                if (d->arg == OPTION_ARG_NONE)
                        g_assert_null(d->arg_name);
                else {
                        g_assert_nonnull(d->arg_name);
                        g_assert_cmpint(d->arg_name[0], ==, '<');
                        g_assert_cmpint(d->arg_name[strlen(d->arg_name) - 1], ==, '>');
                }

                g_assert_cmpuint(d->programs, !=, 0);
                g_assert_cmpuint(d->programs & ~(unsigned) EVERY_PROGRAM, ==, 0);
                /* The front-end accepts everything and hands it on. */
                g_assert_true(d->programs & PROG_FRONTEND);
        }
        g_assert_cmpuint(n, >=, 80);
}

/* Every option of the reference, section 1, with E-MailRelay's short letter. */
static void test_table_reference(void) {
        static const struct {
                const char *name;
                char short_name;
                OptionArg arg;
        } ref[] = {
                { "as-server", 'd', OPTION_ARG_NONE },
                { "as-client", 'q', OPTION_ARG_REQUIRED },
                { "as-proxy", 'y', OPTION_ARG_REQUIRED },
                { "spool-dir", 's', OPTION_ARG_REQUIRED },
                { "help", 'h', OPTION_ARG_NONE },
                { "version", 'V', OPTION_ARG_NONE },
                { "port", 'p', OPTION_ARG_REQUIRED },
                { "remote-clients", 'r', OPTION_ARG_NONE },
                { "interface", 'I', OPTION_ARG_REQUIRED },
                { "domain", 'D', OPTION_ARG_REQUIRED },
                { "filter", 'z', OPTION_ARG_REQUIRED },
                { "filter-timeout", 'W', OPTION_ARG_REQUIRED },
                { "address-verifier", 0, OPTION_ARG_REQUIRED },
                { "anonymous", 'A', OPTION_ARG_OPTIONAL },
                { "delivery-dir", 0, OPTION_ARG_REQUIRED }, /* E-MailRelay's -s clashes */
                { "dnsbl", 0, OPTION_ARG_REQUIRED },
                { "prompt-timeout", 'w', OPTION_ARG_REQUIRED },
                { "server-smtp-config", 'Z', OPTION_ARG_REQUIRED },
                { "size", 'M', OPTION_ARG_REQUIRED },
                { "immediate", 'm', OPTION_ARG_NONE },
                { "forward-to", 'o', OPTION_ARG_REQUIRED },
                { "forward", 'f', OPTION_ARG_NONE },
                { "forward-on-disconnect", '1', OPTION_ARG_NONE },
                { "poll", 'O', OPTION_ARG_REQUIRED },
                { "client-filter", 'Y', OPTION_ARG_REQUIRED },
                { "client-interface", '6', OPTION_ARG_REQUIRED },
                { "connection-timeout", 'U', OPTION_ARG_REQUIRED },
                { "response-timeout", 'T', OPTION_ARG_REQUIRED },
                { "idle-timeout", 0, OPTION_ARG_REQUIRED },
                { "forward-to-all", 0, OPTION_ARG_NONE },
                { "forward-to-some", 0, OPTION_ARG_NONE },
                { "client-smtp-config", 'c', OPTION_ARG_REQUIRED },
                { "client-auth", 'C', OPTION_ARG_REQUIRED },
                { "client-auth-config", 0, OPTION_ARG_REQUIRED },
                { "client-tls", 'j', OPTION_ARG_NONE },
                { "client-tls-connection", 'b', OPTION_ARG_NONE },
                { "client-tls-required", 0, OPTION_ARG_NONE },
                { "client-tls-certificate", 0, OPTION_ARG_REQUIRED },
                { "client-tls-verify", 0, OPTION_ARG_REQUIRED },
                { "client-tls-verify-name", 0, OPTION_ARG_REQUIRED },
                { "client-tls-server-name", 0, OPTION_ARG_REQUIRED },
                { "pop", 'B', OPTION_ARG_NONE },
                { "pop-port", 'E', OPTION_ARG_REQUIRED },
                { "pop-auth", 'F', OPTION_ARG_REQUIRED },
                { "pop-no-delete", 'G', OPTION_ARG_NONE },
                { "pop-by-name", 'J', OPTION_ARG_NONE },
                { "admin", 'a', OPTION_ARG_REQUIRED },
                { "admin-terminate", 'Q', OPTION_ARG_NONE },
                { "server-auth", 'S', OPTION_ARG_REQUIRED },
                { "server-auth-config", 0, OPTION_ARG_REQUIRED },
                { "server-tls", 'K', OPTION_ARG_NONE },
                { "server-tls-connection", 0, OPTION_ARG_NONE },
                { "server-tls-required", 0, OPTION_ARG_NONE },
                { "server-tls-certificate", 0, OPTION_ARG_REQUIRED },
                { "server-tls-verify", 0, OPTION_ARG_REQUIRED },
                { "tls-config", '9', OPTION_ARG_REQUIRED },
                { "no-daemon", 't', OPTION_ARG_NONE },
                { "dont-serve", 'x', OPTION_ARG_NONE },
                { "no-smtp", 'X', OPTION_ARG_NONE },
                { "pid-file", 'i', OPTION_ARG_REQUIRED },
                { "user", 'u', OPTION_ARG_REQUIRED },
                { "localedir", 0, OPTION_ARG_REQUIRED },
                { "hidden", 0, OPTION_ARG_NONE },
                { "show", 0, OPTION_ARG_REQUIRED },
                { "close-stderr", 'e', OPTION_ARG_NONE },
                { "log", 'l', OPTION_ARG_NONE },
                { "verbose", 'v', OPTION_ARG_NONE },
                { "debug", 'g', OPTION_ARG_NONE },
                { "no-syslog", 'n', OPTION_ARG_NONE },
                { "syslog", 'k', OPTION_ARG_OPTIONAL },
                { "log-file", 'N', OPTION_ARG_REQUIRED },
                { "log-time", 'L', OPTION_ARG_NONE },
                { "log-address", 0, OPTION_ARG_NONE },
                { "log-format", 0, OPTION_ARG_REQUIRED },
                { "test", 0, OPTION_ARG_REQUIRED },
        };
        static const char *const many[] = {
                "filter", "client-filter", "interface", "pid-file", "tls-config",
                "server-smtp-config", "client-smtp-config", "server-tls-certificate",
                "client-tls-certificate", "dnsbl", "log-format",
        };
        static const char *const own[] = {
                "retry-schedule", "retry-give-up", "max-recipients",
                "max-connections-per-address", "session-timeout",
        };
        static const char *const hidden[] = { "test", "hidden", "show" };

        for (size_t i = 0; i < G_N_ELEMENTS(ref); i++) {
                const OptionDef *d = lookup(ref[i].name);
                g_test_message("option %s", ref[i].name);
                g_assert_nonnull(d);
                g_assert_cmpint(d->short_name, ==, ref[i].short_name);
                g_assert_cmpint(d->arg, ==, ref[i].arg);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(many); i++)
                g_assert_true(lookup(many[i])->many);
        for (const char *const *s = (const char *const[]) { "port", "spool-dir", "forward-to",
                                                            "domain", "log-file", NULL };
             *s; s++)
                g_assert_false(lookup(*s)->many);
        for (size_t i = 0; i < G_N_ELEMENTS(own); i++) {
                const OptionDef *d = lookup(own[i]);
                g_assert_nonnull(d);
                g_assert_cmpint(d->arg, ==, OPTION_ARG_REQUIRED);
                g_assert_nonnull(strstr(d->help, "not in E-MailRelay"));
        }
        for (size_t i = 0; i < G_N_ELEMENTS(hidden); i++)
                g_assert_true(lookup(hidden[i])->hidden);
        /* Hidden: E-MailRelay's own, what emailrelay-smtpd --immediate tells its forwarder, and the
         * front-end's rescan flag for its smtpd. */
        for (const OptionDef *d = emailrelay_options; d->name; d++)
                if (d->hidden)
                        g_assert_true(lookup("test") == d || lookup("hidden") == d || lookup("show") == d ||
                                      lookup("immediate-message") == d || lookup("immediate-config") == d ||
                                      lookup("immediate-session") == d || lookup("rescan-file") == d);
}

static void test_table_programs(void) {
        static const char *const logging[] = {
                "log", "verbose", "no-syslog", "syslog", "log-file", "log-time",
                "log-address", "log-format", "debug", "spool-dir",
        };
        static const struct {
                const char *name;
                unsigned programs; /* exactly, among the daemons */
        } cases[] = {
                { "port", PROG_SMTPD | PROG_FRONTEND },
                { "filter", PROG_SMTPD | PROG_FRONTEND },
                { "size", PROG_SMTPD | PROG_FRONTEND },
                { "dnsbl", PROG_SMTPD | PROG_FRONTEND },
                { "server-auth", PROG_SMTPD | PROG_FRONTEND },
                { "interface", PROG_SMTPD | PROG_POP3D | PROG_FRONTEND },
                { "remote-clients", PROG_SMTPD | PROG_POP3D | PROG_FRONTEND },
                { "idle-timeout", PROG_SMTPD | PROG_POP3D | PROG_FRONTEND },
                { "server-tls", PROG_SMTPD | PROG_POP3D | PROG_FRONTEND },
                { "server-tls-certificate", PROG_SMTPD | PROG_POP3D | PROG_FRONTEND },
                { "pop-port", PROG_POP3D | PROG_FRONTEND },
                { "pop-auth", PROG_POP3D | PROG_FRONTEND },
                { "pop-by-name", PROG_POP3D | PROG_FRONTEND },
                { "forward-to", PROG_FORWARD | PROG_FRONTEND },
                { "client-tls", PROG_FORWARD | PROG_FRONTEND },
                { "client-auth", PROG_FORWARD | PROG_FRONTEND },
                { "connection-timeout", PROG_SMTPD | PROG_POP3D | PROG_FORWARD | PROG_FRONTEND },
                { "response-timeout", PROG_FORWARD | PROG_FRONTEND },
                { "prompt-timeout", PROG_FORWARD | PROG_FRONTEND },
                { "forward-to-some", PROG_FORWARD | PROG_FRONTEND },
                { "domain", PROG_SMTPD | PROG_FORWARD | PROG_FRONTEND },
                { "as-server", PROG_FRONTEND },
                { "as-client", PROG_FRONTEND },
                { "as-proxy", PROG_FRONTEND },
                { "no-daemon", PROG_FRONTEND },
                { "pid-file", PROG_FRONTEND },
                { "user", PROG_FRONTEND },
                { "poll", PROG_FRONTEND },
                { "forward", PROG_FRONTEND },
                { "forward-on-disconnect", PROG_FRONTEND },
                { "admin", PROG_FRONTEND },
                { "immediate", PROG_SMTPD | PROG_FRONTEND },
                { "close-stderr", PROG_FRONTEND },
                { "retry-schedule", PROG_FORWARD | PROG_FRONTEND },
                { "retry-give-up", PROG_FORWARD | PROG_FRONTEND },
                { "max-recipients", PROG_SMTPD | PROG_FRONTEND },
                { "max-connections-per-address", PROG_SMTPD | PROG_POP3D | PROG_FRONTEND },
                { "session-timeout", PROG_SMTPD | PROG_FRONTEND },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(logging); i++)
                g_assert_cmpuint(lookup(logging[i])->programs & PROG_ALL_DAEMONS, ==,
                                 PROG_ALL_DAEMONS);
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_test_message("option %s", cases[i].name);
                g_assert_cmpuint(lookup(cases[i].name)->programs & PROG_ALL_DAEMONS, ==,
                                 cases[i].programs);
        }
        g_assert_cmpuint(lookup("help")->programs, ==, EVERY_PROGRAM);
        g_assert_cmpuint(lookup("version")->programs, ==, EVERY_PROGRAM);
}

static void test_long_forms(void) {
        g_auto(TestOptions) o = {};
        char *error = (char *) "untouched";

        options_init(&o, emailrelay_options, PROG_SMTPD);
        g_assert_cmpint(parse(&o, &error, "--port=2525", "--spool-dir", "/var/spool/x",
                              "--domain=", "--log", "--server-smtp-config", "-pipelining", NULL),
                        ==, 0);
        g_assert_cmpstr(error, ==, "untouched");
        g_assert_cmpstr(options_get(&o, "port"), ==, "2525");
        g_assert_cmpstr(options_get(&o, "spool-dir"), ==, "/var/spool/x");
        g_assert_cmpstr(options_get(&o, "domain"), ==, ""); /* empty, not absent */
        g_assert_true(options_has(&o, "domain"));
        g_assert_true(options_has(&o, "log"));
        g_assert_null(options_get(&o, "log"));
        /* A separate value is taken even when it starts with a dash. */
        g_assert_cmpstr(options_get(&o, "server-smtp-config"), ==, "-pipelining");
        /* A value may contain '='. */
        g_assert_cmpint(parse(&o, NULL, "--filter=net:127.0.0.1:10025", "--filter=a=b", NULL), ==,
                        0);
        const char **all = NULL;
        g_assert_cmpuint(options_get_all(&o, "filter", &all), ==, 2);
        g_assert_cmpstr(all[1], ==, "a=b");
        g_free(all);
        g_assert_false(options_has(&o, "remote-clients"));
        g_assert_null(options_get(&o, "interface"));
        g_assert_cmpuint(o.n_args, ==, 0);
        g_assert_nonnull(o.args);
        g_assert_null(o.args[0]);
        for (size_t i = 0; i < o.n_values; i++)
                g_assert_cmpstr(o.values[i].origin, ==, "command line");
}

static void test_short_forms(void) {
        g_auto(TestOptions) o = {};

        options_init(&o, emailrelay_options, PROG_FRONTEND);
        g_assert_cmpint(parse(&o, NULL, "-p", "25", "-s/var/spool", "-lv", "-rnI127.0.0.1",
                              "-tA", "-ek", "-o", "smarthost:25", NULL),
                        ==, 0);
        g_assert_cmpstr(options_get(&o, "port"), ==, "25");
        g_assert_cmpstr(options_get(&o, "spool-dir"), ==, "/var/spool");
        g_assert_true(options_has(&o, "log"));
        g_assert_true(options_has(&o, "verbose"));
        g_assert_true(options_has(&o, "remote-clients"));
        g_assert_true(options_has(&o, "no-syslog"));
        g_assert_cmpstr(options_get(&o, "interface"), ==, "127.0.0.1");
        g_assert_true(options_has(&o, "no-daemon"));
        /* An optional value never attaches to a short option. */
        g_assert_true(options_has(&o, "anonymous"));
        g_assert_null(options_get(&o, "anonymous"));
        g_assert_true(options_has(&o, "close-stderr"));
        g_assert_true(options_has(&o, "syslog"));
        g_assert_null(options_get(&o, "syslog"));
        g_assert_cmpstr(options_get(&o, "forward-to"), ==, "smarthost:25");
        g_assert_cmpuint(o.n_args, ==, 0);

        /* A value-taking letter inside a bundle takes the next word when it ends the bundle. */
        options_done(&o);
        options_init(&o, emailrelay_options, PROG_FRONTEND);
        g_assert_cmpint(parse(&o, NULL, "-lvp", "10025", "-qhost:1", NULL), ==, 0);
        g_assert_cmpstr(options_get(&o, "port"), ==, "10025");
        g_assert_cmpstr(options_get(&o, "as-client"), ==, "host:1");
        g_assert_true(options_has(&o, "log"));
        g_assert_cmpuint(o.n_args, ==, 0);
}

static void test_optional_values(void) {
        g_auto(TestOptions) o = {};

        options_init(&o, emailrelay_options, PROG_SMTPD);
        g_assert_cmpint(parse(&o, NULL, "--anonymous", "vrfy", "--syslog=local0", NULL), ==, 0);
        g_assert_true(options_has(&o, "anonymous"));
        g_assert_null(options_get(&o, "anonymous"));
        g_assert_cmpstr(options_get_default(&o, "anonymous", "all"), ==, "all");
        /* Without '=' the next word is not the option's value. */
        g_assert_cmpuint(o.n_args, ==, 1);
        g_assert_cmpstr(o.args[0], ==, "vrfy");
        g_assert_cmpstr(options_get(&o, "syslog"), ==, "local0");

        g_assert_cmpint(parse(&o, NULL, "--anonymous=vrfy,content", NULL), ==, 0);
        g_assert_cmpstr(options_get(&o, "anonymous"), ==, "vrfy,content");
        g_assert_cmpint(parse(&o, NULL, "--anonymous=", NULL), ==, 0);
        g_assert_cmpstr(options_get(&o, "anonymous"), ==, "");
}

static void test_repeated(void) {
        g_auto(TestOptions) o = {};
        const char **all = NULL;

        options_init(&o, emailrelay_options, PROG_SMTPD);
        g_assert_cmpint(parse(&o, NULL, "--filter", "/bin/one", "-z/bin/two", "--filter=three",
                              "--port", "1", "--port=2", "-p3", "--interface", "127.0.0.1",
                              "-I", "::1", "-v", "-vv", NULL),
                        ==, 0);

        g_assert_cmpuint(options_get_all(&o, "filter", &all), ==, 3);
        g_assert_cmpstr(all[0], ==, "/bin/one");
        g_assert_cmpstr(all[1], ==, "/bin/two");
        g_assert_cmpstr(all[2], ==, "three");
        g_assert_null(all[3]);
        g_clear_pointer(&all, g_free);
        g_assert_cmpstr(options_get(&o, "filter"), ==, "three"); /* the last one */

        /* Last one wins, and only the one in force is kept. */
        g_assert_cmpstr(options_get(&o, "port"), ==, "3");
        g_assert_cmpuint(options_get_all(&o, "port", NULL), ==, 1);

        g_assert_cmpuint(options_get_all(&o, "interface", &all), ==, 2);
        g_assert_cmpstr(all[0], ==, "127.0.0.1");
        g_assert_cmpstr(all[1], ==, "::1");
        g_clear_pointer(&all, g_free);

        /* -v -v counts. */
        g_assert_cmpuint(options_get_all(&o, "verbose", NULL), ==, 3);

        g_assert_cmpuint(options_get_all(&o, "dnsbl", &all), ==, 0);
        g_assert_nonnull(all);
        g_assert_null(all[0]);
        g_clear_pointer(&all, g_free);

        /* 3 filters + 1 port + 2 interfaces + 3 verbose */
        g_assert_cmpuint(o.n_values, ==, 9);
}

static void test_arguments(void) {
        g_auto(TestOptions) o = {};

        options_init(&o, emailrelay_options, PROG_FRONTEND);
        g_assert_cmpint(parse(&o, NULL, "first", "--log", "-", "--port", "25", "--", "--no-daemon",
                              "-p", "/etc/emailrelay.conf", NULL),
                        ==, 0);
        g_assert_true(options_has(&o, "log"));
        g_assert_false(options_has(&o, "no-daemon"));
        g_assert_cmpstr(options_get(&o, "port"), ==, "25");
        g_assert_cmpuint(o.n_args, ==, 5);
        g_assert_cmpstr(o.args[0], ==, "first");
        g_assert_cmpstr(o.args[1], ==, "-");
        g_assert_cmpstr(o.args[2], ==, "--no-daemon");
        g_assert_cmpstr(o.args[3], ==, "-p");
        g_assert_cmpstr(o.args[4], ==, "/etc/emailrelay.conf");
        g_assert_null(o.args[5]);

        /* Arguments accumulate over several parses. */
        g_assert_cmpint(parse(&o, NULL, "more", NULL), ==, 0);
        g_assert_cmpuint(o.n_args, ==, 6);
        g_assert_cmpstr(o.args[5], ==, "more");
        g_assert_null(o.args[6]);

        /* No arguments at all. */
        options_done(&o);
        options_init(&o, emailrelay_options, PROG_FRONTEND);
        g_assert_cmpint(options_parse_argv(&o, 0, NULL, NULL), ==, 0);
        g_assert_cmpint(parse(&o, NULL, NULL), ==, 0);
        g_assert_cmpuint(o.n_values, ==, 0);
        g_assert_cmpuint(o.n_args, ==, 0);
}

static void test_argv_errors(void) {
        assert_argv_error(PROG_SMTPD, "unknown option: --frobnicate", "--frobnicate", NULL);
        assert_argv_error(PROG_SMTPD, "unknown option: --frobnicate", "--log", "--frobnicate=1",
                          NULL);
        assert_argv_error(PROG_SMTPD, "unknown option: --", "--=x", NULL);
        assert_argv_error(PROG_SMTPD, "unknown option: --por", "--por", "25", NULL); /* no prefixes */
        assert_argv_error(PROG_SMTPD, "unknown option: -P", "-P", NULL);
        assert_argv_error(PROG_SMTPD, "unknown option: -P", "-lP", NULL);
        assert_argv_error(PROG_SMTPD, "option --port needs a value", "--port", NULL);
        assert_argv_error(PROG_SMTPD, "option --port needs a value", "--log", "-p", NULL);
        assert_argv_error(PROG_SMTPD, "option --port needs a value", "-lp", NULL);
        assert_argv_error(PROG_SMTPD, "option --log takes no value", "--log=yes", NULL);
        assert_argv_error(PROG_SMTPD, "option --log takes no value", "--log=", NULL);
        assert_argv_error(PROG_SMTPD, "option --forward-to does not apply to emailrelay-smtpd",
                          "--forward-to", "host:25", NULL);
        assert_argv_error(PROG_SMTPD, "option --forward-to does not apply to emailrelay-smtpd",
                          "-o", "host:25", NULL);
        assert_argv_error(PROG_SMTPD, "option --no-daemon does not apply to emailrelay-smtpd",
                          "-lt", NULL);
        assert_argv_error(PROG_POP3D, "option --port does not apply to emailrelay-pop3d",
                          "--port=25", NULL);
        assert_argv_error(PROG_FORWARD, "option --filter does not apply to emailrelay-forward",
                          "--filter=x", NULL);
        assert_argv_error(PROG_QUEUE, "option --log does not apply to emailrelay-queue", "--log",
                          NULL);
        /* The mask is checked before the value: the user learns what is really wrong. */
        assert_argv_error(PROG_SMTPD, "option --forward-to does not apply to emailrelay-smtpd",
                          "--forward-to", NULL);

        /* ret_error may be NULL. */
        g_auto(TestOptions) o = {};
        options_init(&o, emailrelay_options, PROG_SMTPD);
        g_assert_cmpint(parse(&o, NULL, "--frobnicate", NULL), ==, -EINVAL);
}

static void test_help_version_everywhere(void) {
        const unsigned programs[] = { PROG_SMTPD, PROG_POP3D, PROG_FORWARD, PROG_FRONTEND,
                                      PROG_SUBMIT, PROG_QUEUE, PROG_PASSWD };

        for (size_t i = 0; i < G_N_ELEMENTS(programs); i++) {
                g_auto(TestOptions) o = {};
                options_init(&o, emailrelay_options, programs[i]);
                g_assert_cmpint(parse(&o, NULL, "-h", "--version", NULL), ==, 0);
                g_assert_true(options_has(&o, "help"));
                g_assert_true(options_has(&o, "version"));
        }
}

static void test_config_string(void) {
        g_auto(TestOptions) o = {};
        const char **all = NULL;
        char *error = (char *) "untouched";
        const char *text =
                "# E-MailRelay config\n"
                "\n"
                "   \t\n"
                "   # indented comment\n"
                "port 10025\r\n"
                "spool-dir\t\t/var/spool/emailrelay   \t\n"
                "  log\n"
                "--log-time\n"
                "--filter /usr/local/bin/filter --with args\n"
                "filter=net:127.0.0.1:10030\n"
                "domain   example.com\r\n"
                "anonymous\n"
                "syslog local0\n"
                "forward-to smarthost:25\n" /* not for smtpd: skipped */
                "no-daemon\n"
                "as-client whatever\n"
                "server-smtp-config -pipelining\n"
                "verbose"; /* no final newline */

        options_init(&o, emailrelay_options, PROG_SMTPD);
        g_assert_cmpint(options_parse_config_string(&o, text, "/etc/emailrelay.conf", &error), ==,
                        0);
        g_assert_cmpstr(error, ==, "untouched");

        g_assert_cmpstr(options_get(&o, "port"), ==, "10025");
        g_assert_cmpstr(options_get(&o, "spool-dir"), ==, "/var/spool/emailrelay");
        g_assert_true(options_has(&o, "log"));
        g_assert_true(options_has(&o, "log-time"));
        g_assert_cmpuint(options_get_all(&o, "filter", &all), ==, 2);
        g_assert_cmpstr(all[0], ==, "/usr/local/bin/filter --with args");
        g_assert_cmpstr(all[1], ==, "net:127.0.0.1:10030");
        g_free(all);
        g_assert_cmpstr(options_get(&o, "domain"), ==, "example.com");
        g_assert_true(options_has(&o, "anonymous"));
        g_assert_null(options_get(&o, "anonymous"));
        g_assert_cmpstr(options_get(&o, "syslog"), ==, "local0");
        g_assert_false(options_has(&o, "forward-to"));
        g_assert_false(options_has(&o, "no-daemon"));
        g_assert_false(options_has(&o, "as-client"));
        g_assert_cmpstr(options_get(&o, "server-smtp-config"), ==, "-pipelining");
        g_assert_true(options_has(&o, "verbose"));
        g_assert_cmpuint(o.n_args, ==, 0);

        /* Each value remembers its line. */
        for (size_t i = 0; i < o.n_values; i++)
                if (strcmp(o.values[i].def->name, "domain") == 0)
                        g_assert_cmpstr(o.values[i].origin, ==, "/etc/emailrelay.conf:11");
                else if (strcmp(o.values[i].def->name, "port") == 0)
                        g_assert_cmpstr(o.values[i].origin, ==, "/etc/emailrelay.conf:5");

        /* The same file is good for the forwarder, which takes other lines. */
        g_auto(TestOptions) f = {};
        options_init(&f, emailrelay_options, PROG_FORWARD);
        g_assert_cmpint(options_parse_config_string(&f, text, "/etc/emailrelay.conf", NULL), ==, 0);
        g_assert_cmpstr(options_get(&f, "forward-to"), ==, "smarthost:25");
        g_assert_cmpstr(options_get(&f, "domain"), ==, "example.com");
        g_assert_false(options_has(&f, "port"));
        g_assert_false(options_has(&f, "filter"));

        /* Empty text and text of only comments. */
        g_auto(TestOptions) e = {};
        options_init(&e, emailrelay_options, PROG_SMTPD);
        g_assert_cmpint(options_parse_config_string(&e, "", "x", NULL), ==, 0);
        g_assert_cmpint(options_parse_config_string(&e, "#\n\n#port 1\r\n", "x", NULL), ==, 0);
        g_assert_cmpuint(e.n_values, ==, 0);
}

static void test_config_errors(void) {
        assert_config_error(PROG_SMTPD, "port 25\n\n# comment\nfrobnicate 1\n",
                            "/etc/emailrelay.conf:4: unknown option: frobnicate");
        assert_config_error(PROG_SMTPD, "--frobnicate\n",
                            "/etc/emailrelay.conf:1: unknown option: frobnicate");
        /* Unknown names are errors even though the option would not concern this program. */
        assert_config_error(PROG_POP3D, "\n\nforward-too smarthost:25\n",
                            "/etc/emailrelay.conf:3: unknown option: forward-too");
        assert_config_error(PROG_SMTPD, "log\nport\n",
                            "/etc/emailrelay.conf:2: option port needs a value");
        assert_config_error(PROG_SMTPD, "port   \t \r\n",
                            "/etc/emailrelay.conf:1: option port needs a value");
        assert_config_error(PROG_SMTPD, "log yes\n",
                            "/etc/emailrelay.conf:1: option log takes no value");
        assert_config_error(PROG_SMTPD, "remote-clients=\n",
                            "/etc/emailrelay.conf:1: option remote-clients takes no value");
        /* Short letters mean nothing in a config file. */
        assert_config_error(PROG_SMTPD, "-p 25\n", "/etc/emailrelay.conf:1: unknown option: -p");
        /* A bad line after good ones: nothing applied (checked in assert_config_error). */
        assert_config_error(PROG_SMTPD, "port 25\nlog\nspool-dir /x\nsize\n",
                            "/etc/emailrelay.conf:4: option size needs a value");
}

static void test_config_file(void) {
        g_autoptr(GError) gerror = NULL;
        g_autofree char *dir = g_dir_make_tmp("test-options-XXXXXX", &gerror);
        g_autofree char *path = NULL, *bad = NULL, *missing = NULL, *nul = NULL, *error = NULL;
        g_auto(TestOptions) o = {};

        g_assert_no_error(gerror);
        path = g_build_filename(dir, "emailrelay.conf", NULL);
        bad = g_build_filename(dir, "bad.conf", NULL);
        missing = g_build_filename(dir, "missing.conf", NULL);
        nul = g_build_filename(dir, "nul.conf", NULL);

        g_assert_true(g_file_set_contents(path,
                                          "# test\r\n"
                                          "port 10025\r\n"
                                          "filter /bin/a\r\n"
                                          "log\r\n",
                                          -1, &gerror));
        g_assert_true(g_file_set_contents(bad, "port 25\n\n\tsize\n", -1, &gerror));
        g_assert_true(g_file_set_contents(nul, "port 25\nlog\0x\n", 13, &gerror));
        g_assert_no_error(gerror);

        options_init(&o, emailrelay_options, PROG_SMTPD);
        g_assert_cmpint(options_parse_config_file(&o, path, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpstr(options_get(&o, "port"), ==, "10025");
        g_assert_cmpstr(options_get(&o, "filter"), ==, "/bin/a");
        g_assert_true(options_has(&o, "log"));

        g_assert_cmpint(options_parse_config_file(&o, missing, &error), ==, -ENOENT);
        g_autofree char *expected = g_strdup_printf("%s: No such file or directory", missing);
        g_assert_cmpstr(error, ==, expected);
        g_clear_pointer(&error, g_free);

        g_assert_cmpint(options_parse_config_file(&o, bad, &error), ==, -EINVAL);
        g_autofree char *expected_bad = g_strdup_printf("%s:3: option size needs a value", bad);
        g_assert_cmpstr(error, ==, expected_bad);
        g_clear_pointer(&error, g_free);

        g_assert_cmpint(options_parse_config_file(&o, nul, &error), ==, -EINVAL);
        g_autofree char *expected_nul = g_strdup_printf("%s:2: line contains a NUL byte", nul);
        g_assert_cmpstr(error, ==, expected_nul);
        g_clear_pointer(&error, g_free);

        g_assert_cmpint(options_parse_config_file(&o, dir, &error), ==, -EISDIR);
        g_assert_nonnull(error);
        g_assert_true(g_str_has_prefix(error, dir));
        g_clear_pointer(&error, g_free);

        /* The failures changed nothing. */
        g_assert_cmpstr(options_get(&o, "port"), ==, "10025");
        g_assert_cmpuint(o.n_values, ==, 3);

        /* A value out of range names the config line. */
        unsigned port = 7;
        g_assert_cmpint(options_get_uint(&o, "port", 1, 1024, &port, &error), ==, -ERANGE);
        g_autofree char *expected_range = g_strdup_printf(
                "%s:2: option --port: value \"10025\" is not a number from 1 to 1024", path);
        g_assert_cmpstr(error, ==, expected_range);
        g_assert_cmpuint(port, ==, 7);
        g_clear_pointer(&error, g_free);

        g_assert_cmpint(g_unlink(path), ==, 0);
        g_assert_cmpint(g_unlink(bad), ==, 0);
        g_assert_cmpint(g_unlink(nul), ==, 0);
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

static void test_argv_overrides_config(void) {
        g_auto(TestOptions) o = {};
        const char **all = NULL;

        options_init(&o, emailrelay_options, PROG_SMTPD);
        g_assert_cmpint(options_parse_config_string(&o,
                                                    "port 25\n"
                                                    "spool-dir /var/spool/emailrelay\n"
                                                    "filter /bin/from-config\n"
                                                    "log\n",
                                                    "emailrelay.conf", NULL),
                        ==, 0);
        g_assert_cmpint(parse(&o, NULL, "--port=2525", "--filter", "/bin/from-argv", NULL), ==, 0);

        g_assert_cmpstr(options_get(&o, "port"), ==, "2525");
        g_assert_cmpuint(options_get_all(&o, "port", NULL), ==, 1);
        g_assert_cmpstr(options_get(&o, "spool-dir"), ==, "/var/spool/emailrelay");
        g_assert_true(options_has(&o, "log"));
        g_assert_cmpuint(options_get_all(&o, "filter", &all), ==, 2);
        g_assert_cmpstr(all[0], ==, "/bin/from-config");
        g_assert_cmpstr(all[1], ==, "/bin/from-argv");
        g_free(all);

        for (size_t i = 0; i < o.n_values; i++)
                if (strcmp(o.values[i].def->name, "port") == 0)
                        g_assert_cmpstr(o.values[i].origin, ==, "command line");
                else if (strcmp(o.values[i].def->name, "spool-dir") == 0)
                        g_assert_cmpstr(o.values[i].origin, ==, "emailrelay.conf:2");
}

static void test_get_uint(void) {
        g_auto(TestOptions) o = {};
        g_autofree char *error = NULL;
        unsigned u = 42;

        options_init(&o, emailrelay_options, PROG_SMTPD);

        /* Absent: 0, nothing touched. */
        g_assert_cmpint(options_get_uint(&o, "port", 0, 65535, &u, &error), ==, 0);
        g_assert_cmpuint(u, ==, 42);
        g_assert_null(error);

        static const struct {
                const char *value;
                unsigned min, max;
                int r;
                unsigned expected;
        } cases[] = {
                { "25", 0, 65535, 1, 25 },
                { "0", 0, 65535, 1, 0 },
                { "65535", 0, 65535, 1, 65535 },
                { "0025", 0, 65535, 1, 25 },
                { "4294967295", 0, 4294967295u, 1, 4294967295u },
                { "65536", 0, 65535, -ERANGE, 0 },
                { "0", 1, 65535, -ERANGE, 0 },
                { "4294967296", 0, 4294967295u, -ERANGE, 0 },
                { "99999999999999999999999999", 0, 65535, -ERANGE, 0 },
                { "x", 0, 65535, -EINVAL, 0 },
                { "", 0, 65535, -EINVAL, 0 },
                { "-1", 0, 65535, -EINVAL, 0 },
                { "+1", 0, 65535, -EINVAL, 0 },
                { " 1", 0, 65535, -EINVAL, 0 },
                { "1 ", 0, 65535, -EINVAL, 0 },
                { "0x10", 0, 65535, -EINVAL, 0 },
                { "1e3", 0, 65535, -EINVAL, 0 },
                { "25s", 0, 65535, -EINVAL, 0 },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *arg = g_strdup_printf("--port=%s", cases[i].value);
                g_autofree char *err = NULL;
                unsigned v = 4242;

                g_test_message("value \"%s\"", cases[i].value);
                g_assert_cmpint(parse(&o, NULL, arg, NULL), ==, 0);
                g_assert_cmpint(options_get_uint(&o, "port", cases[i].min, cases[i].max, &v, &err),
                                ==, cases[i].r);
                if (cases[i].r > 0) {
                        g_assert_cmpuint(v, ==, cases[i].expected);
                        g_assert_null(err);
                } else {
                        g_autofree char *expected = g_strdup_printf(
                                "option --port: value \"%s\" is not a number from %u to %u",
                                cases[i].value, cases[i].min, cases[i].max);
                        g_assert_cmpuint(v, ==, 4242);
                        g_assert_cmpstr(err, ==, expected);
                }
        }

        /* The exact text of the brief. */
        g_assert_cmpint(parse(&o, NULL, "--port", "x", NULL), ==, 0);
        g_assert_cmpint(options_get_uint(&o, "port", 0, 65535, &u, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, "option --port: value \"x\" is not a number from 0 to 65535");
        g_assert_cmpuint(u, ==, 42);

        /* An optional option given without a value is not a number either. */
        g_assert_cmpint(parse(&o, NULL, "--anonymous", NULL), ==, 0);
        g_assert_cmpint(options_get_uint(&o, "anonymous", 0, 10, &u, NULL), ==, -EINVAL);
}

static void test_get_default(void) {
        g_auto(TestOptions) o = {};

        options_init(&o, emailrelay_options, PROG_SMTPD);
        g_assert_cmpstr(options_get_default(&o, "spool-dir", "/var/spool/emailrelay"), ==,
                        "/var/spool/emailrelay");
        g_assert_null(options_get_default(&o, "spool-dir", NULL));
        g_assert_cmpint(parse(&o, NULL, "-s", "/tmp/spool", NULL), ==, 0);
        g_assert_cmpstr(options_get_default(&o, "spool-dir", "/var/spool/emailrelay"), ==,
                        "/tmp/spool");
        /* Options of other programs are simply absent. */
        g_assert_false(options_has(&o, "forward-to"));
        g_assert_cmpstr(options_get_default(&o, "forward-to", "none"), ==, "none");
}

static void test_init_done(void) {
        Options o;

        options_init(&o, emailrelay_options, PROG_POP3D);
        g_assert_true(o.table == emailrelay_options);
        g_assert_cmpuint(o.program, ==, PROG_POP3D);
        g_assert_cmpuint(o.n_values, ==, 0);
        g_assert_nonnull(o.args);
        g_assert_null(o.args[0]);
        g_assert_cmpint(parse(&o, NULL, "--pop-port", "1110", "x", NULL), ==, 0);
        options_done(&o);
        g_assert_null(o.values);
        g_assert_null(o.args);
        g_assert_cmpuint(o.n_values, ==, 0);
        options_done(&o); /* twice is fine */
        options_done(NULL);
}

static char *capture_help(unsigned program, bool verbose) {
        g_auto(TestOptions) o = {};
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        g_assert_nonnull(f);
        options_init(&o, emailrelay_options, program);
        options_print_help(&o, f, "emailrelay-test", "[<option> ...] [<config-file>]", verbose);
        g_assert_cmpint(fclose(f), ==, 0);
        return buf;
}

static const char *find_line(char **lines, const char *needle) {
        for (char **l = lines; *l; l++)
                if (strstr(*l, needle))
                        return *l;
        return NULL;
}

static void test_help(void) {
        g_autofree char *smtpd = capture_help(PROG_SMTPD, false);
        g_autofree char *smtpd_verbose = capture_help(PROG_SMTPD, true);
        g_autofree char *forward = capture_help(PROG_FORWARD, true);
        g_auto(GStrv) lines = g_strsplit(smtpd_verbose, "\n", -1);
        const char *port, *log, *verifier;
        size_t column;

        g_assert_true(g_str_has_prefix(smtpd, "Usage: emailrelay-test [<option> ...] [<config-file>]\n"));
        g_assert_nonnull(strstr(smtpd, "\n  -p, --port <port> "));
        g_assert_nonnull(strstr(smtpd, "SMTP listening port (default 25)\n"));
        g_assert_nonnull(strstr(smtpd, "\n  -h, --help "));
        g_assert_nonnull(strstr(smtpd, "\n  -s, --spool-dir <dir> "));
        /* Not for smtpd. */
        g_assert_null(strstr(smtpd_verbose, "--forward-to"));
        g_assert_null(strstr(smtpd_verbose, "--pop-port"));
        g_assert_null(strstr(smtpd_verbose, "--as-server"));
        /* Hidden. */
        g_assert_null(strstr(smtpd_verbose, "--test"));
        /* Verbose only. */
        g_assert_null(strstr(smtpd, "--address-verifier"));
        g_assert_null(strstr(smtpd, "--max-recipients"));
        g_assert_nonnull(strstr(smtpd, "--help --verbose"));
        g_assert_nonnull(strstr(smtpd_verbose, "      --address-verifier <program> "));
        g_assert_nonnull(strstr(smtpd_verbose, "  -A, --anonymous[=<scope>] "));
        g_assert_nonnull(strstr(smtpd_verbose, "--max-recipients <count>"));
        g_assert_null(strstr(smtpd_verbose, "--help --verbose"));

        /* The text column is the same on every option line. */
        port = find_line(lines, "--port <port>");
        log = find_line(lines, "-l, --log ");
        verifier = find_line(lines, "--address-verifier <program>");
        g_assert_nonnull(port);
        g_assert_nonnull(log);
        g_assert_nonnull(verifier);
        column = strstr(port, "SMTP listening port") - port;
        g_assert_cmpuint(column, >, strlen("  -p, --port <port>"));
        g_assert_cmpuint(strstr(log, "logs to") - log, ==, column);
        g_assert_cmpuint(strstr(verifier, "verifies") - verifier, ==, column);
        for (char **l = lines; *l; l++) {
                g_assert_cmpuint(strlen(*l), <=, 79);
                if (g_str_has_prefix(*l, "   ") && !g_str_has_prefix(*l, "      --")) {
                        /* A continuation line starts at the column too. */
                        g_assert_cmpuint(strspn(*l, " "), ==, column);
                }
        }

        g_assert_nonnull(strstr(forward, "  -o, --forward-to <host:port> "));
        g_assert_nonnull(strstr(forward, "--retry-schedule <list>"));
        g_assert_null(strstr(forward, "--port <port>"));
        g_assert_null(strstr(forward, "--filter <program>"));
}

static void test_version(void) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        g_assert_nonnull(f);
        options_print_version(f, "emailrelay-smtpd", false);
        g_assert_cmpint(fflush(f), ==, 0);
        g_assert_cmpstr(buf, ==, "emailrelay-smtpd " PACKAGE_VERSION "\n");
        options_print_version(f, "emailrelay", true);
        g_assert_cmpint(fclose(f), ==, 0);
        g_assert_nonnull(strstr(buf, "\nemailrelay " PACKAGE_VERSION "\n"));
#if HAVE_TLS
        g_assert_nonnull(strstr(buf, "TLS: GnuTLS\n"));
#else
        g_assert_nonnull(strstr(buf, "TLS: none\n"));
#endif
        g_assert_nonnull(strstr(buf, "systemd: socket activation, journal\n"));
        free(buf);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/options/table/sanity", test_table_sanity);
        g_test_add_func("/options/table/reference", test_table_reference);
        g_test_add_func("/options/table/programs", test_table_programs);
        g_test_add_func("/options/argv/long", test_long_forms);
        g_test_add_func("/options/argv/short", test_short_forms);
        g_test_add_func("/options/argv/optional", test_optional_values);
        g_test_add_func("/options/argv/repeated", test_repeated);
        g_test_add_func("/options/argv/arguments", test_arguments);
        g_test_add_func("/options/argv/errors", test_argv_errors);
        g_test_add_func("/options/argv/help-version-everywhere", test_help_version_everywhere);
        g_test_add_func("/options/config/string", test_config_string);
        g_test_add_func("/options/config/errors", test_config_errors);
        g_test_add_func("/options/config/file", test_config_file);
        g_test_add_func("/options/config/argv-overrides", test_argv_overrides_config);
        g_test_add_func("/options/get/uint", test_get_uint);
        g_test_add_func("/options/get/default", test_get_default);
        g_test_add_func("/options/init-done", test_init_done);
        g_test_add_func("/options/help", test_help);
        g_test_add_func("/options/version", test_version);

        return g_test_run();
}
