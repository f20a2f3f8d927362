/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the filter runner: real shell-script filters, a fake net: server and a fake spamd
 * in a thread, the copy: and msgid: built-ins on real files, all on a real sd-event loop. */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "filter.h"
#include "macro.h"

static char *tmpdir;
static char *content_path;
static char *envelope_path;
static sd_event *event;

static const char content_text[] = "Subject: test\r\n\r\nhello\r\n";
static const char envelope_text[] = "X-MailRelay-Format: #2821.8\r\nX-MailRelay-To-Remote: a@example.com\r\n";

static char *tmp_path(const char *name) {
        return g_build_filename(tmpdir, name, NULL);
}

static void write_file(const char *path, const char *data, gssize len) {
        g_autoptr(GError) error = NULL;

        g_assert_true(g_file_set_contents(path, data, len, &error));
        g_assert_no_error(error);
}

static char *read_file(const char *path, size_t *ret_len) {
        g_autoptr(GError) error = NULL;
        char *data = NULL;
        gsize len = 0;

        g_assert_true(g_file_get_contents(path, &data, &len, &error));
        g_assert_no_error(error);
        if (ret_len)
                *ret_len = len;
        return data;
}

static char *read_tmp(const char *name) {
        g_autofree char *path = tmp_path(name);

        return read_file(path, NULL);
}

static bool tmp_exists(const char *name) {
        g_autofree char *path = tmp_path(name);

        return access(path, F_OK) == 0;
}

static void reset_message(void) {
        write_file(content_path, content_text, -1);
        write_file(envelope_path, envelope_text, -1);
}

/* A shell-script filter in the temp dir; "$D" in the body is the temp dir. */
static char *script(const char *name, const char *body) {
        g_autofree char *text = g_strdup_printf("#!/bin/sh\nD='%s'\n%s\n", tmpdir, body);
        char *path = tmp_path(name);

        write_file(path, text, -1);
        g_assert_cmpint(chmod(path, 0755), ==, 0);
        return path;
}

typedef struct Done {
        unsigned n_calls;
        FilterOutcome o;
        FilterRun *run;
        bool cancel_in_callback;
} Done;

static void on_done(const FilterOutcome *o, void *userdata) {
        Done *d = userdata;

        d->n_calls++;
        d->o = *o;
        d->o.response = g_strdup(o->response);
        d->o.reason = g_strdup(o->reason);
        if (d->cancel_in_callback)
                g_assert_null(filter_run_cancel(d->run));
}

static void done_clear(Done *d) {
        filter_outcome_done(&d->o);
        *d = (Done){};
}

static void loop_until_called(Done *d, unsigned max_ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) max_ms * 1000;

        while (d->n_calls == 0) {
                g_assert_cmpint(g_get_monotonic_time(), <, deadline);
                g_assert_cmpint(sd_event_run(event, 100 * 1000), >=, 0);
        }
}

static void loop_for(unsigned ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) ms * 1000;

        while (g_get_monotonic_time() < deadline)
                g_assert_cmpint(sd_event_run(event, 10 * 1000), >=, 0);
}

static FilterRun *start_specs(const char *const *specs, size_t n, FilterSide side, unsigned timeout, Done *d) {
        FilterChain *chain = NULL;
        g_autofree char *error = NULL;

        g_assert_cmpint(filter_chain_parse(specs, n, side, &chain, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpint(filter_chain_run(chain, event, content_path, envelope_path, timeout, on_done, d, &d->run), ==, 0);
        g_assert_nonnull(d->run);
        /* Never from inside filter_chain_run(). */
        g_assert_cmpuint(d->n_calls, ==, 0);
        /* The run keeps the chain alive. */
        filter_chain_free(chain);
        return d->run;
}

static void run_specs(const char *const *specs, size_t n, FilterSide side, unsigned timeout, Done *d) {
        start_specs(specs, n, side, timeout, d);
        loop_until_called(d, 20000);
        /* Exactly once, even if the loop goes on. */
        loop_for(20);
        g_assert_cmpuint(d->n_calls, ==, 1);
}

static void run_spec(const char *spec, FilterSide side, unsigned timeout, Done *d) {
        run_specs(&spec, 1, side, timeout, d);
}

static pid_t read_pid(const char *path) {
        g_autofree char *s = read_file(path, NULL);
        pid_t pid = (pid_t) atoi(s);

        g_assert_cmpint(pid, >, 1);
        return pid;
}

/* Gone, or a zombie waiting for its new parent (init) to reap it: dead either way. */
static bool process_is_dead(pid_t pid) {
        g_autofree char *stat_path = g_strdup_printf("/proc/%d/stat", (int) pid);
        g_autofree char *stat = NULL;
        const char *p;

        if (kill(pid, 0) < 0 && errno == ESRCH)
                return true;
        if (!g_file_get_contents(stat_path, &stat, NULL, NULL))
                return true;
        p = strrchr(stat, ')');
        return p && p[1] == ' ' && p[2] == 'Z';
}

static void assert_dead_soon(pid_t pid) {
        for (unsigned i = 0; i < 500 && !process_is_dead(pid); i++)
                g_usleep(10 * 1000);
        g_assert_true(process_is_dead(pid));
}

/* ---- the exit code table and the output format, without running anything ---- */

static void test_exit_table(void) {
        static const struct {
                int code;
                FilterResult server;
                bool rescan;
                FilterResult client;
                bool stop;
        } table[] = {
                { 0, FILTER_OK, false, FILTER_OK, false },
                { 1, FILTER_FAIL, false, FILTER_FAIL, false },
                { 50, FILTER_FAIL, false, FILTER_FAIL, false },
                { 99, FILTER_FAIL, false, FILTER_FAIL, false },
                { 100, FILTER_ABANDON, false, FILTER_ABANDON, false },
                { 101, FILTER_OK, false, FILTER_OK, false },
                { 102, FILTER_ABANDON, true, FILTER_OK, true },
                { 103, FILTER_OK, true, FILTER_OK, false },
                { 104, FILTER_FAIL, true, FILTER_ABANDON, true },
                { 105, FILTER_FAIL, false, FILTER_FAIL, true },
                { 106, FILTER_FAIL, false, FILTER_FAIL, false },
                { 115, FILTER_FAIL, false, FILTER_FAIL, false },
                { 116, FILTER_FAIL, false, FILTER_FAIL, false },
                { 127, FILTER_FAIL, false, FILTER_FAIL, false },
                { 143, FILTER_FAIL, false, FILTER_FAIL, false },
                { 255, FILTER_FAIL, false, FILTER_FAIL, false },
                { -1, FILTER_FAIL, false, FILTER_FAIL, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                FilterOutcome s, c;

                filter_outcome_from_exit(FILTER_SERVER, table[i].code, NULL, 0, &s);
                filter_outcome_from_exit(FILTER_CLIENT, table[i].code, NULL, 0, &c);

                g_test_message("exit %d", table[i].code);
                g_assert_cmpint(s.exit_code, ==, table[i].code);
                g_assert_cmpint(s.result, ==, table[i].server);
                g_assert_cmpint(s.rescan, ==, table[i].rescan);
                g_assert_false(s.stop_scanning);
                g_assert_cmpint(c.result, ==, table[i].client);
                g_assert_cmpint(c.stop_scanning, ==, table[i].stop);
                g_assert_false(c.rescan);

                if (s.result == FILTER_FAIL) {
                        g_assert_cmpstr(s.response, ==, "rejected");
                        g_assert_cmpstr(s.reason, ==, "rejected");
                } else
                        g_assert_null(s.response);
                if (c.result == FILTER_OK)
                        g_assert_null(c.response);
                g_assert_cmpint(s.smtp_code, ==, 0);

                filter_outcome_done(&s);
                filter_outcome_done(&c);
        }
}

static void check_output(int code, const char *output, FilterResult result, int smtp_code, const char *response,
                         const char *reason) {
        FilterOutcome o;

        g_test_message("output %s", output);
        filter_outcome_from_exit(FILTER_SERVER, code, output, strlen(output), &o);
        g_assert_cmpint(o.result, ==, result);
        g_assert_cmpint(o.smtp_code, ==, smtp_code);
        g_assert_cmpstr(o.response, ==, response);
        g_assert_cmpstr(o.reason, ==, reason);
        filter_outcome_done(&o);
        filter_outcome_done(&o);   /* harmless twice */
}

static void test_output_format(void) {
        g_autofree char *late = NULL;
        GString *s;

        check_output(1, "noise\n<<550 go away>>\nmore noise\n[[extra]]\n<<third>>\n", FILTER_FAIL, 550, "go away",
                     "extra");
        check_output(2, "<<temporary problem>>\n", FILTER_FAIL, 0, "temporary problem", "temporary problem");
        /* The default reason is the response as written, code and all. */
        check_output(1, "<<550 go away>>", FILTER_FAIL, 550, "go away", "550 go away");
        check_output(1, "[[square first]]\n<<angle second>>\n", FILTER_FAIL, 0, "square first", "angle second");
        check_output(1, "<<550 crlf>>\r\n[[why]]\r\n", FILTER_FAIL, 550, "crlf", "why");
        check_output(1, "<<452\tbusy>>\n", FILTER_FAIL, 452, "busy", "452\tbusy");
        check_output(1, "<<550>>\n", FILTER_FAIL, 550, "rejected", "550");
        check_output(1, "<<5500 not a code>>\n", FILTER_FAIL, 0, "5500 not a code", "5500 not a code");
        check_output(1, "<<250 not a failure code>>\n", FILTER_FAIL, 0, "250 not a failure code",
                     "250 not a failure code");
        check_output(1, "<<550go>>\n", FILTER_FAIL, 0, "550go", "550go");
        check_output(1, " <<indented>>\n<<unclosed\n[[mismatched>>\n", FILTER_FAIL, 0, "rejected", "rejected");
        check_output(1, "<<>>\n[[]]\n", FILTER_FAIL, 0, "rejected", "rejected");
        check_output(1, "<<a>>b>>\n", FILTER_FAIL, 0, "a", "a");
        check_output(1, "<<bad\x01" "char\x7f>>\n", FILTER_FAIL, 0, "bad char ", "bad char ");
        check_output(100, "<<gone>>\n", FILTER_ABANDON, 0, "gone", "gone");
        check_output(100, "", FILTER_ABANDON, 0, NULL, NULL);
        /* A passing filter's words are not used. */
        check_output(0, "<<550 fine really>>\n", FILTER_OK, 0, NULL, NULL);
        /* E-MailRelay's exec error: the client sees a plain "rejected". */
        check_output(127, "<<filter exec error: No such file or directory>>\n", FILTER_FAIL, 0, "rejected",
                     "filter exec error: No such file or directory");
        check_output(127, "<<127 other>>\n", FILTER_FAIL, 0, "127 other", "127 other");

        /* Only the first 4 KiB are searched. */
        s = g_string_new(NULL);
        for (unsigned i = 0; i < 5000; i++)
                g_string_append_c(s, 'x');
        g_string_append(s, "\n<<late>>\n");
        late = g_string_free(s, FALSE);
        check_output(1, late, FILTER_FAIL, 0, "rejected", "rejected");
}

/* ---- program filters ---- */

static void test_program_ok(void) {
        g_autofree char *p = script("ok.sh", "echo '<<ignored>>'; exit 0");
        Done d = {};

        reset_message();
        run_spec(p, FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        g_assert_cmpint(d.o.exit_code, ==, 0);
        g_assert_null(d.o.response);
        g_assert_null(d.o.reason);
        done_clear(&d);
}

static void test_program_fail(void) {
        g_autofree char *p = script("fail.sh", "echo noise\necho '<<550 go away>>'\necho more noise\n"
                                               "echo '[[extra]]'\nexit 1");
        g_autofree char *t = script("temp.sh", "echo '<<temporary problem>>'\nexit 2");
        g_autofree char *a = script("abandon.sh", "exit 100");
        g_autofree char *k = script("killed.sh", "kill -TERM $$\nsleep 5");
        Done d = {};

        reset_message();
        run_spec(p, FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpint(d.o.exit_code, ==, 1);
        g_assert_cmpint(d.o.smtp_code, ==, 550);
        g_assert_cmpstr(d.o.response, ==, "go away");
        g_assert_cmpstr(d.o.reason, ==, "extra");
        done_clear(&d);

        run_spec(t, FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpint(d.o.exit_code, ==, 2);
        g_assert_cmpint(d.o.smtp_code, ==, 0);
        g_assert_cmpstr(d.o.response, ==, "temporary problem");
        g_assert_cmpstr(d.o.reason, ==, "temporary problem");
        done_clear(&d);

        run_spec(a, FILTER_CLIENT, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_ABANDON);
        g_assert_cmpint(d.o.exit_code, ==, 100);
        done_clear(&d);

        run_spec(k, FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpint(d.o.exit_code, ==, 128 + SIGTERM);
        g_assert_cmpstr(d.o.response, ==, "rejected");
        done_clear(&d);
}

static void test_program_special_codes(void) {
        /* Also shows that the spec's extra words reach the program. */
        g_autofree char *p = script("code.sh", "exit \"$1\"");
        static const struct {
                int code;
                FilterSide side;
                FilterResult result;
                bool rescan, stop;
        } table[] = {
                { 102, FILTER_SERVER, FILTER_ABANDON, true, false },
                { 103, FILTER_SERVER, FILTER_OK, true, false },
                { 104, FILTER_SERVER, FILTER_FAIL, true, false },
                { 105, FILTER_SERVER, FILTER_FAIL, false, false },
                { 102, FILTER_CLIENT, FILTER_OK, false, true },
                { 103, FILTER_CLIENT, FILTER_OK, false, false },
                { 104, FILTER_CLIENT, FILTER_ABANDON, false, true },
                { 105, FILTER_CLIENT, FILTER_FAIL, false, true },
        };

        reset_message();
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                g_autofree char *spec = g_strdup_printf("%s %d", p, table[i].code);
                Done d = {};

                run_spec(spec, table[i].side, 10, &d);
                g_assert_cmpint(d.o.exit_code, ==, table[i].code);
                g_assert_cmpint(d.o.result, ==, table[i].result);
                g_assert_cmpint(d.o.rescan, ==, table[i].rescan);
                g_assert_cmpint(d.o.stop_scanning, ==, table[i].stop);
                done_clear(&d);
        }
}

static void test_program_timeout(void) {
        g_autofree char *p = script("slow.sh", "echo $$ > \"$D/slow.pid\"\nsleep 30 &\necho $! > \"$D/slow-child.pid\"\n"
                                               "wait");
        g_autofree char *pidfile = tmp_path("slow.pid");
        g_autofree char *childfile = tmp_path("slow-child.pid");
        gint64 start = g_get_monotonic_time(), elapsed;
        pid_t pid, child;
        Done d = {};

        reset_message();
        run_spec(p, FILTER_SERVER, 1, &d);
        elapsed = g_get_monotonic_time() - start;
        g_assert_cmpint(elapsed, >=, 900 * 1000);
        g_assert_cmpint(elapsed, <, 10 * 1000 * 1000);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_assert_cmpstr(d.o.reason, ==, "timeout");
        g_assert_cmpint(d.o.exit_code, ==, -1);
        g_assert_cmpint(d.o.smtp_code, ==, 0);

        /* Our child is killed and reaped before the callback... */
        pid = read_pid(pidfile);
        g_assert_cmpint(kill(pid, 0), ==, -1);
        g_assert_cmpint(errno, ==, ESRCH);
        /* ...and its own child went with the process group. */
        child = read_pid(childfile);
        assert_dead_soon(child);
        done_clear(&d);
}

static void test_program_exec_error(void) {
        g_autofree char *missing = tmp_path("no-such-program");
        g_autofree char *noexec = script("noexec.sh", "exit 0");
        g_autofree char *expected = NULL;
        Done d = {};

        reset_message();
        run_spec(missing, FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpint(d.o.exit_code, ==, 127);
        g_assert_cmpint(d.o.smtp_code, ==, 0);
        g_assert_cmpstr(d.o.response, ==, "rejected");
        expected = g_strdup_printf("filter exec error: %s", g_strerror(ENOENT));
        g_assert_cmpstr(d.o.reason, ==, expected);
        done_clear(&d);

        g_assert_cmpint(chmod(noexec, 0644), ==, 0);
        run_spec(noexec, FILTER_CLIENT, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpint(d.o.exit_code, ==, 127);
        g_clear_pointer(&expected, g_free);
        expected = g_strdup_printf("filter exec error: %s", g_strerror(EACCES));
        g_assert_cmpstr(d.o.reason, ==, expected);
        done_clear(&d);
}


static bool env_name_allowed(const char *line) {
        /* Ours, and what a shell adds by itself. */
        static const char *const allowed[] = { "PATH=", "IFS=", "PWD=", "OLDPWD=", "SHLVL=", "_=" };

        for (size_t i = 0; i < ELEMENTSOF(allowed); i++)
                if (g_str_has_prefix(line, allowed[i]))
                        return true;
        return false;
}

static void test_program_environment(void) {
        g_autofree char *p = script(
                "env.sh",
                "{ echo \"$#\"; for a in \"$@\"; do echo \"$a\"; done; } > \"$D/args\"\n"
                "env > \"$D/env\"\n"
                "readlink /proc/$$/fd/0 > \"$D/fd0\"\n"
                "readlink /proc/$$/fd/2 > \"$D/fd2\"\n"
                "if [ -e /proc/$$/fd/50 ]; then echo open; else echo closed; fi > \"$D/fd50\"\n"
                "cut -d' ' -f5 /proc/$$/stat > \"$D/pgrp\"\n"
                /* Builtins only: around an external command dash blocks every signal. */
                "while read -r name value; do case $name in SigBlk:|SigIgn:) echo \"$name$value\";; esac; "
                "done < /proc/$$/status > \"$D/sigs\"\n"
                "echo $$ > \"$D/env.pid\"\n"
                "cat > \"$D/stdin\"\n");
        g_autofree char *spec = g_strdup_printf("  %s  one\ttwo ", p);
        g_autofree char *args = NULL, *env = NULL, *expected_args = NULL, *fd0 = NULL, *fd2 = NULL, *fd50 = NULL,
                        *pgrp = NULL, *sigs = NULL, *pid = NULL, *stdin_text = NULL, *path_line = NULL;
        g_auto(GStrv) lines = NULL;
        const char *path = getenv("PATH");
        bool seen_path = false, seen_ifs = false;
        uint64_t ignored;
        Done d = {};
        int fd;

        /* What the filter must not inherit: our environment, a stray fd, an ignored signal, our
         * blocked SIGCHLD. */
        g_assert_cmpint(setenv("SECRET_TEST_VAR", "hush", 1), ==, 0);
        fd = open("/dev/null", O_RDONLY);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(dup2(fd, 50), ==, 50);
        close(fd);
        g_assert_true(signal(SIGPIPE, SIG_IGN) != SIG_ERR);

        reset_message();
        run_spec(spec, FILTER_SERVER, 10, &d);

        g_assert_cmpint(unsetenv("SECRET_TEST_VAR"), ==, 0);
        close(50);
        g_assert_true(signal(SIGPIPE, SIG_DFL) != SIG_ERR);

        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        done_clear(&d);

        /* argv: the spec's words, then the content and the envelope. */
        args = read_tmp("args");
        expected_args = g_strdup_printf("4\none\ntwo\n%s\n%s\n", content_path, envelope_path);
        g_assert_cmpstr(args, ==, expected_args);

        env = read_tmp("env");
        g_test_message("filter environment:\n%s", env);
        g_assert_null(strstr(env, "SECRET_TEST_VAR"));
        g_assert_nonnull(strstr(env, "IFS= \t\n"));
        path_line = g_strconcat("PATH=", path ? path : "/usr/local/bin:/usr/bin:/bin", NULL);
        lines = g_strsplit(env, "\n", -1);
        for (char **l = lines; *l; l++) {
                if (**l == '\0')
                        continue;     /* IFS's newline */
                g_assert_true(env_name_allowed(*l));
                seen_path = seen_path || streq(*l, path_line);
                seen_ifs = seen_ifs || g_str_has_prefix(*l, "IFS=");
        }
        g_assert_true(seen_path);
        g_assert_true(seen_ifs);

        fd0 = read_tmp("fd0");
        g_assert_cmpstr(fd0, ==, "/dev/null\n");
        fd2 = read_tmp("fd2");
        g_assert_cmpstr(fd2, ==, "/dev/null\n");
        fd50 = read_tmp("fd50");
        g_assert_cmpstr(fd50, ==, "closed\n");
        stdin_text = read_tmp("stdin");
        g_assert_cmpstr(stdin_text, ==, "");

        /* Its own process group. */
        pgrp = read_tmp("pgrp");
        pid = read_tmp("env.pid");
        g_assert_cmpstr(pgrp, ==, pid);

        /* Nothing blocked, no standard signal ignored. (glibc's posix_spawn() leaves its own
         * internal signals 32 and 33 ignored: a program that uses them installs handlers.) */
        sigs = read_tmp("sigs");
        g_assert_true(g_str_has_prefix(sigs, "SigBlk:0000000000000000\nSigIgn:"));
        ignored = g_ascii_strtoull(strstr(sigs, "SigIgn:") + 7, NULL, 16);
        g_assert_cmphex(ignored & UINT64_C(0x7fffffff), ==, 0);
}

static void test_program_edits_content(void) {
        g_autofree char *p = script("edit.sh", "printf 'Subject: edited\\r\\n\\r\\nnew\\r\\n' > \"$1\"\n"
                                               "printf 'X-MailRelay-Format: edited\\r\\n' > \"$2\"");
        g_autofree char *content = NULL, *envelope = NULL;
        Done d = {};

        reset_message();
        run_spec(p, FILTER_CLIENT, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        content = read_file(content_path, NULL);
        g_assert_cmpstr(content, ==, "Subject: edited\r\n\r\nnew\r\n");
        envelope = read_file(envelope_path, NULL);
        g_assert_cmpstr(envelope, ==, "X-MailRelay-Format: edited\r\n");
        done_clear(&d);
}

static void test_program_big_output(void) {
        /* 1 MiB after the response: drained, not kept, and the filter runs to its end. */
        g_autofree char *p = script("big.sh", "echo '<<first>>'\n"
                                              "head -c 1048576 /dev/zero | tr '\\000' x\n"
                                              "echo\necho '[[too late to count]]'\n"
                                              "touch \"$D/big.done\"\nexit 3");
        Done d = {};

        reset_message();
        run_spec(p, FILTER_SERVER, 20, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpint(d.o.exit_code, ==, 3);
        g_assert_cmpstr(d.o.response, ==, "first");
        g_assert_cmpstr(d.o.reason, ==, "first");
        g_assert_true(tmp_exists("big.done"));
        done_clear(&d);
}

static void test_program_relative(void) {
        g_autofree char *cwd = g_get_current_dir();
        const char *spec = "relative.sh";
        FilterChain *chain = NULL;
        Done d = {};

        g_free(script("relative.sh", "touch \"$D/relative.done\""));

        /* Taken from the directory at parse time, not at run time. */
        g_assert_cmpint(chdir(tmpdir), ==, 0);
        g_assert_cmpint(filter_chain_parse(&spec, 1, FILTER_SERVER, &chain, NULL), ==, 0);
        g_assert_cmpint(chdir("/"), ==, 0);

        reset_message();
        g_assert_cmpint(filter_chain_run(chain, event, content_path, envelope_path, 10, on_done, &d, NULL), ==, 0);
        loop_until_called(&d, 20000);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        g_assert_true(tmp_exists("relative.done"));
        done_clear(&d);
        filter_chain_free(chain);
        g_assert_cmpint(chdir(cwd), ==, 0);
}

/* ---- built-ins ---- */

static void test_exit_builtin(void) {
        static const struct {
                const char *spec;
                FilterSide side;
                FilterResult result;
                int exit_code;
                bool rescan, stop;
        } table[] = {
                { "exit:0", FILTER_SERVER, FILTER_OK, 0, false, false },
                { "exit:1", FILTER_SERVER, FILTER_FAIL, 1, false, false },
                { "exit:100", FILTER_SERVER, FILTER_ABANDON, 100, false, false },
                { "exit:101", FILTER_CLIENT, FILTER_OK, 101, false, false },
                { "exit:102", FILTER_SERVER, FILTER_ABANDON, 102, true, false },
                { "exit:103", FILTER_SERVER, FILTER_OK, 103, true, false },
                { "exit:102", FILTER_CLIENT, FILTER_OK, 102, false, true },
                { "exit:104", FILTER_CLIENT, FILTER_ABANDON, 104, false, true },
                { "exit:105", FILTER_CLIENT, FILTER_FAIL, 105, false, true },
                { "exit:255", FILTER_CLIENT, FILTER_FAIL, 255, false, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                Done d = {};

                g_test_message("%s", table[i].spec);
                run_spec(table[i].spec, table[i].side, 10, &d);
                g_assert_cmpint(d.o.result, ==, table[i].result);
                g_assert_cmpint(d.o.exit_code, ==, table[i].exit_code);
                g_assert_cmpint(d.o.rescan, ==, table[i].rescan);
                g_assert_cmpint(d.o.stop_scanning, ==, table[i].stop);
                if (table[i].result == FILTER_FAIL) {
                        g_assert_cmpstr(d.o.response, ==, "rejected");
                        g_assert_cmpstr(d.o.reason, ==, "rejected");
                } else if (table[i].result == FILTER_OK)
                        g_assert_null(d.o.response);
                done_clear(&d);
        }
}

static void test_empty_chain(void) {
        const char *blank[] = { "", " ", NULL };
        FilterChain *chain = NULL;
        Done d = {};

        g_assert_cmpint(filter_chain_parse(NULL, 0, FILTER_SERVER, &chain, NULL), ==, 0);
        g_assert_true(filter_chain_is_empty(chain));
        g_assert_cmpint(filter_chain_run(chain, event, content_path, envelope_path, 10, on_done, &d, &d.run), ==, 0);
        g_assert_cmpuint(d.n_calls, ==, 0);
        loop_until_called(&d, 5000);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        g_assert_cmpint(d.o.exit_code, ==, 0);
        g_assert_null(d.o.response);
        done_clear(&d);
        filter_chain_free(chain);

        g_assert_cmpint(filter_chain_parse(blank, ELEMENTSOF(blank), FILTER_CLIENT, &chain, NULL), ==, 0);
        g_assert_true(filter_chain_is_empty(chain));
        filter_chain_free(chain);

        run_specs(blank, ELEMENTSOF(blank), FILTER_CLIENT, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        done_clear(&d);
}

static void test_sleepms(void) {
        gint64 start = g_get_monotonic_time();
        Done d = {};

        run_spec("sleepms:100", FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        g_assert_cmpint(g_get_monotonic_time() - start, >=, 100 * 1000);
        done_clear(&d);

        run_spec("sleepms:5000", FILTER_SERVER, 1, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_assert_cmpstr(d.o.reason, ==, "timeout");
        done_clear(&d);
}

/* ---- chains ---- */

static void test_chain(void) {
        g_autofree char *a = script("chain-a.sh", "echo A >> \"$D/chain.log\"");
        g_autofree char *b = script("chain-b.sh", "echo B >> \"$D/chain.log\"");
        g_autofree char *fail = script("chain-fail.sh", "echo '<<550 stop here>>'; echo F >> \"$D/chain.log\"; exit 1");
        g_autofree char *touch = script("chain-touch.sh", "touch \"$D/chain.touched\"");
        g_autofree char *first = g_strdup_printf("exit:0,%s", fail);
        g_autofree char *ab = g_strdup_printf("%s , %s", a, b);
        g_autofree char *log = NULL;
        g_autofree char *log_path = tmp_path("chain.log");
        Done d = {};

        reset_message();

        /* A failure stops the chain: the second option's filter never runs. */
        {
                const char *specs[] = { first, touch };

                run_specs(specs, ELEMENTSOF(specs), FILTER_SERVER, 10, &d);
                g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
                g_assert_cmpint(d.o.smtp_code, ==, 550);
                g_assert_cmpstr(d.o.response, ==, "stop here");
                g_assert_false(tmp_exists("chain.touched"));
                done_clear(&d);
        }

        /* In order, each in turn, across comma lists and options. */
        {
                const char *specs[] = { ab, "exit:101", a };

                (void) unlink(log_path);
                run_specs(specs, ELEMENTSOF(specs), FILTER_SERVER, 10, &d);
                g_assert_cmpint(d.o.result, ==, FILTER_OK);
                g_assert_null(d.o.response);
                g_assert_null(d.o.reason);
                log = read_file(log_path, NULL);
                g_assert_cmpstr(log, ==, "A\nB\nA\n");
                g_clear_pointer(&log, g_free);
                done_clear(&d);
        }

        /* Flags of the filters that passed carry over. */
        run_spec("exit:103,exit:0", FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        g_assert_true(d.o.rescan);
        g_assert_cmpint(d.o.exit_code, ==, 0);
        done_clear(&d);

        run_spec("exit:103,exit:1", FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_true(d.o.rescan);
        g_assert_cmpstr(d.o.response, ==, "rejected");
        g_assert_cmpint(d.o.exit_code, ==, 1);
        done_clear(&d);

        {
                const char *specs[] = { "exit:102", "exit:0 ,  exit:100" };

                run_specs(specs, ELEMENTSOF(specs), FILTER_CLIENT, 10, &d);
                g_assert_cmpint(d.o.result, ==, FILTER_ABANDON);
                g_assert_true(d.o.stop_scanning);
                g_assert_false(d.o.rescan);
                done_clear(&d);
        }

        /* A failed exec stops a chain like any failure. */
        {
                g_autofree char *missing = tmp_path("missing-in-chain");
                g_autofree char *spec = g_strdup_printf("%s,%s", missing, touch);

                run_spec(spec, FILTER_CLIENT, 10, &d);
                g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
                g_assert_cmpint(d.o.exit_code, ==, 127);
                g_assert_false(tmp_exists("chain.touched"));
                done_clear(&d);
        }
}

/* ---- parsing ---- */

static void check_parse_error(const char *spec, const char *message) {
        FilterChain *chain = (FilterChain *) 0x1;
        char *error = NULL;

        g_test_message("spec %s", spec);
        g_assert_cmpint(filter_chain_parse(&spec, 1, FILTER_SERVER, &chain, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, message);
        /* Untouched on failure. */
        g_assert_true(chain == (FilterChain *) 0x1);
        g_free(error);

        /* Also as the second option, and without a place for the message. */
        {
                const char *specs[] = { "exit:0", spec };

                g_assert_cmpint(filter_chain_parse(specs, 2, FILTER_CLIENT, &chain, NULL), ==, -EINVAL);
                g_assert_true(chain == (FilterChain *) 0x1);
        }
}

static void test_parse(void) {
        static const char *const good[] = {
                "exit:0", "exit:255", " exit:7 ", "sleepms:0", "net:127.0.0.1:10025", "net:[::1]:25",
                "net:::1:25", "net:/run/filter.sock", "spam:/run/spamd.sock", "spam:127.0.0.1:783",
                "spam-edit:[2001:db8::1]:783", "/bin/true", "file:/bin/true -x", "file:relative",
                "anything:else", "exit:0,exit:1,/bin/true", "copy:", "copy:pop;hardlink;nodelete", "copy:p;h;n",
                "copy: pop ; n", "msgid:", "msgid:example.com", "msgid:mail-1.example_x.org",
        };
        g_autofree char *long_path = NULL, *long_spec = NULL, *long_message = NULL;

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                FilterChain *chain = NULL;
                char *error = NULL;

                g_test_message("spec %s", good[i]);
                g_assert_cmpint(filter_chain_parse(&good[i], 1, FILTER_SERVER, &chain, &error), ==, 0);
                g_assert_null(error);
                g_assert_false(filter_chain_is_empty(chain));
                filter_chain_free(chain);
        }

        check_parse_error("net:", "invalid filter \"net:\": missing address");
        check_parse_error("spam:", "invalid filter \"spam:\": missing address");
        check_parse_error("net:localhost:25",
                          "invalid filter \"net:localhost:25\": filter address must be numeric or a unix socket path");
        check_parse_error("spam:localhost",
                          "invalid filter \"spam:localhost\": filter address must be numeric or a unix socket path");
        check_parse_error("spam-edit:spamd.example.com:783",
                          "invalid filter \"spam-edit:spamd.example.com:783\": filter address must be numeric or a "
                          "unix socket path");
        check_parse_error("net:run/filter.sock",
                          "invalid filter \"net:run/filter.sock\": filter address must be numeric or a unix socket "
                          "path");
        check_parse_error("spam-edit:127.0.0.1", "invalid filter \"spam-edit:127.0.0.1\": missing port");
        check_parse_error("net:127.0.0.1:", "invalid filter \"net:127.0.0.1:\": missing port");
        check_parse_error("net:[::1]", "invalid filter \"net:[::1]\": missing port");
        check_parse_error("net:127.0.0.1:0", "invalid filter \"net:127.0.0.1:0\": invalid port");
        check_parse_error("net:127.0.0.1:65536", "invalid filter \"net:127.0.0.1:65536\": invalid port");
        check_parse_error("net:127.0.0.1:+25", "invalid filter \"net:127.0.0.1:+25\": invalid port");
        check_parse_error("exit:", "invalid filter \"exit:\": exit code must be a number from 0 to 255");
        check_parse_error("exit:256", "invalid filter \"exit:256\": exit code must be a number from 0 to 255");
        check_parse_error("exit:-1", "invalid filter \"exit:-1\": exit code must be a number from 0 to 255");
        check_parse_error("exit:1x", "invalid filter \"exit:1x\": exit code must be a number from 0 to 255");
        check_parse_error("sleepms:soon", "invalid filter \"sleepms:soon\": invalid number of milliseconds");
        check_parse_error("file:", "invalid filter \"file:\": missing program");
        check_parse_error("file: \t", "invalid filter \"file:\": missing program");
        check_parse_error("deliver:pop", "filter \"deliver:\" is not supported yet");
        check_parse_error("split:raw;25", "filter \"split:\" is not supported yet");
        check_parse_error("mx:", "filter \"mx:\" is not supported yet");
        check_parse_error("exit:0,mx:", "filter \"mx:\" is not supported yet");
        check_parse_error("copy:bogus", "invalid filter \"copy:bogus\": unknown copy option \"bogus\"");
        check_parse_error("copy:pop;x", "invalid filter \"copy:pop;x\": unknown copy option \"x\"");
        check_parse_error("msgid:bad domain", "invalid filter \"msgid:bad domain\": invalid domain");
        check_parse_error("msgid:<x@y>", "invalid filter \"msgid:<x@y>\": invalid domain");
        check_parse_error("msgid:-x.org", "invalid filter \"msgid:-x.org\": invalid domain");
        check_parse_error("exit:0,,exit:1", "invalid filter \"exit:0,,exit:1\": empty filter in the chain");
        check_parse_error("exit:0,", "invalid filter \"exit:0,\": empty filter in the chain");

        long_path = g_strnfill(120, 'x');
        long_spec = g_strdup_printf("net:/%s", long_path);
        long_message = g_strdup_printf("invalid filter \"%s\": unix socket path too long", long_spec);
        check_parse_error(long_spec, long_message);
}

/* ---- cancel ---- */

typedef struct CancelLater {
        FilterRun *run;
        char *pidfile;
        bool cancelled;
} CancelLater;

static int on_cancel_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        CancelLater *c = userdata;

        /* Once the filter is surely running. */
        if (access(c->pidfile, F_OK) < 0) {
                g_assert_cmpint(sd_event_source_set_time_relative(s, 20 * 1000), >=, 0);
                g_assert_cmpint(sd_event_source_set_enabled(s, SD_EVENT_ONESHOT), >=, 0);
                return 0;
        }
        g_assert_null(filter_run_cancel(c->run));
        c->cancelled = true;
        return 0;
}

static void test_cancel(void) {
        g_autofree char *p = script("cancel.sh", "echo $$ > \"$D/cancel.pid\"\nexec sleep 30");
        g_autofree char *pidfile = tmp_path("cancel.pid");
        sd_event_source *timer = NULL;
        CancelLater c = { .pidfile = pidfile };
        gint64 deadline;
        pid_t pid;
        Done d = {};

        reset_message();

        /* From inside another callback on the loop, with the program running. */
        c.run = start_specs((const char *[]){ p }, 1, FILTER_SERVER, 30, &d);
        g_assert_cmpint(sd_event_add_time_relative(event, &timer, CLOCK_MONOTONIC, 20 * 1000, 1000, on_cancel_timer, &c),
                        >=, 0);
        deadline = g_get_monotonic_time() + 10 * 1000 * 1000;
        while (!c.cancelled) {
                g_assert_cmpint(g_get_monotonic_time(), <, deadline);
                g_assert_cmpint(sd_event_run(event, 100 * 1000), >=, 0);
        }
        timer = sd_event_source_unref(timer);
        /* Killed and reaped by the cancel itself. */
        pid = read_pid(pidfile);
        g_assert_cmpint(kill(pid, 0), ==, -1);
        g_assert_cmpint(errno, ==, ESRCH);
        loop_for(200);
        g_assert_cmpuint(d.n_calls, ==, 0);

        /* Before the loop ever ran it. */
        start_specs((const char *[]){ "exit:1" }, 1, FILTER_SERVER, 10, &d);
        g_assert_null(filter_run_cancel(d.run));
        loop_for(100);
        g_assert_cmpuint(d.n_calls, ==, 0);
        g_assert_null(filter_run_cancel(NULL));

        /* From inside the run's own callback: a no-op, the run frees itself after. */
        d.cancel_in_callback = true;
        run_spec("exit:1", FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        done_clear(&d);
}

/* ---- net: and spam: against fake servers ---- */

typedef struct FakeServer {
        int listen_fd;
        char *address;           /* for the spec */
        bool spamd;              /* read a spamd request: headers, then Content-length bytes */
        const char *reply;       /* NULL: say nothing */
        size_t reply_len;
        bool close_after_reply;  /* don't wait for the client to go */
        GString *request;
        bool saw_eof;
        GThread *thread;
} FakeServer;

/* Read with a deadline: the thread must never outlive a failed test by much. */
static ssize_t read_some(int fd, char *buf, size_t size, int timeout_ms) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        if (poll(&pfd, 1, timeout_ms) <= 0)
                return -1;
        return read(fd, buf, size);
}

static bool spamd_request_complete(GString *r) {
        const char *end = strstr(r->str, "\r\n\r\n"), *cl;

        if (!end)
                return false;
        cl = strstr(r->str, "Content-length: ");
        if (!cl || cl > end)
                return true;
        return r->len >= (size_t) (end + 4 - r->str) + strtoull(cl + 16, NULL, 10);
}

static gpointer fake_server_thread(gpointer userdata) {
        FakeServer *s = userdata;
        char buf[65536];
        int fd;

        fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
                return NULL;

        for (;;) {
                ssize_t n;

                if (s->spamd ? spamd_request_complete(s->request) : strchr(s->request->str, '\n') != NULL)
                        break;
                n = read_some(fd, buf, sizeof(buf), 10000);
                if (n <= 0)
                        break;
                g_string_append_len(s->request, buf, n);
        }

        /* spamd: the client says it is done sending, like spamc. */
        if (s->spamd && read_some(fd, buf, sizeof(buf), 5000) == 0)
                s->saw_eof = true;

        for (size_t sent = 0; s->reply && sent < s->reply_len;) {
                ssize_t n = send(fd, s->reply + sent, s->reply_len - sent, MSG_NOSIGNAL);

                if (n <= 0)
                        break;
                sent += (size_t) n;
        }

        if (!s->close_after_reply && !s->saw_eof)
                for (;;) {
                        ssize_t n = read_some(fd, buf, sizeof(buf), 10000);

                        if (n == 0)
                                s->saw_eof = true;
                        if (n <= 0)
                                break;
                }
        close(fd);
        return NULL;
}

static void fake_server_start(FakeServer *s, bool tcp) {
        int fd;

        s->request = g_string_new(NULL);
        if (tcp) {
                struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                socklen_t len = sizeof(sa);

                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
                g_assert_cmpint(getsockname(fd, (struct sockaddr *) &sa, &len), ==, 0);
                s->address = g_strdup_printf("127.0.0.1:%u", ntohs(sa.sin_port));
        } else {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };

                s->address = tmp_path("fake.sock");
                (void) unlink(s->address);
                g_assert_cmpuint(strlen(s->address), <, sizeof(sa.sun_path));
                strcpy(sa.sun_path, s->address);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        }
        g_assert_cmpint(listen(fd, 8), ==, 0);
        s->listen_fd = fd;
        if (!s->reply_len && s->reply)
                s->reply_len = strlen(s->reply);
        s->thread = g_thread_new("fake-server", fake_server_thread, s);
}

/* Wait for the server to finish; the request stays for checking. */
static void fake_server_join(FakeServer *s) {
        g_thread_join(s->thread);
        s->thread = NULL;
        close(s->listen_fd);
        if (s->address[0] == '/')
                (void) unlink(s->address);
}

static void fake_server_done(FakeServer *s) {
        g_free(s->address);
        g_string_free(s->request, TRUE);
}

static void run_net(const char *reply, bool close_after_reply, bool tcp, unsigned timeout, Done *d, bool *ret_saw_eof) {
        FakeServer s = { .reply = reply, .close_after_reply = close_after_reply };
        g_autofree char *spec = NULL, *expected = NULL;

        fake_server_start(&s, tcp);
        spec = g_strdup_printf("net:%s", s.address);
        run_spec(spec, FILTER_SERVER, timeout, d);
        fake_server_join(&s);

        /* The request is the content path on a line; the envelope is not sent. */
        expected = g_strdup_printf("%s\n", content_path);
        g_assert_cmpstr(s.request->str, ==, expected);
        if (ret_saw_eof)
                *ret_saw_eof = s.saw_eof;
        fake_server_done(&s);
}

static void test_net(void) {
        static const struct {
                const char *reply;
                FilterResult result;
                int smtp_code;
                const char *response, *reason;
        } table[] = {
                { "ok\n", FILTER_OK, 0, NULL, NULL },
                { "ok, fine by me\r\n", FILTER_OK, 0, NULL, NULL },
                { "550 no\tbecause\n", FILTER_FAIL, 550, "no", "because" },
                { "452 busy\r\n", FILTER_FAIL, 452, "busy", "452 busy" },
                { "rejected by policy\n", FILTER_FAIL, 0, "rejected by policy", "rejected by policy" },
                { "\tonly a reason\n", FILTER_FAIL, 0, "rejected", "only a reason" },
                { "\n", FILTER_FAIL, 0, "rejected", "rejected" },
                { "100\n", FILTER_ABANDON, 0, NULL, NULL },
                { "100 taken\tby me\n", FILTER_ABANDON, 0, "taken", "by me" },
                { "550 two\nlines\n", FILTER_FAIL, 550, "two", "550 two" },
        };
        Done d = {};
        bool saw_eof;

        reset_message();
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                g_test_message("reply %s", table[i].reply);
                run_net(table[i].reply, false, false, 10, &d, &saw_eof);
                g_assert_cmpint(d.o.result, ==, table[i].result);
                g_assert_cmpint(d.o.exit_code, ==, -1);
                g_assert_cmpint(d.o.smtp_code, ==, table[i].smtp_code);
                g_assert_cmpstr(d.o.response, ==, table[i].response);
                g_assert_cmpstr(d.o.reason, ==, table[i].reason);
                g_assert_false(d.o.rescan);
                g_assert_false(d.o.stop_scanning);
                /* We hang up when done. */
                g_assert_true(saw_eof);
                done_clear(&d);
        }

        /* Over TCP. */
        run_net("ok\n", false, true, 10, &d, NULL);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        done_clear(&d);

        /* A last line without its newline still counts. */
        run_net("550 no newline", true, false, 10, &d, NULL);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpint(d.o.smtp_code, ==, 550);
        g_assert_cmpstr(d.o.response, ==, "no newline");
        done_clear(&d);

        /* Hung up without a word. */
        run_net(NULL, true, false, 10, &d, NULL);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_assert_true(g_str_has_suffix(d.o.reason, "connection closed without a reply"));
        done_clear(&d);

        /* Silent: the timeout. */
        run_net(NULL, false, false, 1, &d, &saw_eof);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_assert_cmpstr(d.o.reason, ==, "timeout");
        g_assert_true(saw_eof);
        done_clear(&d);

        /* Endless line. */
        {
                g_autofree char *endless = g_strnfill(10000, 'z');

                run_net(endless, false, false, 10, &d, NULL);
                g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
                g_assert_cmpstr(d.o.response, ==, "error");
                g_assert_true(g_str_has_suffix(d.o.reason, ": reply too long"));
                done_clear(&d);
        }
}

static void test_net_unreachable(void) {
        g_autofree char *missing = tmp_path("nobody-listens.sock");
        g_autofree char *spec = g_strdup_printf("net:%s", missing);
        g_autofree char *expected = g_strdup_printf("%s: %s", spec, g_strerror(ENOENT));
        g_autofree char *tcp_spec = NULL;
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        Done d = {};
        int fd;

        reset_message();
        run_spec(spec, FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_assert_cmpstr(d.o.reason, ==, expected);
        done_clear(&d);

        /* A port nobody listens on: bound, not listening. */
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        g_assert_cmpint(getsockname(fd, (struct sockaddr *) &sa, &len), ==, 0);
        tcp_spec = g_strdup_printf("net:127.0.0.1:%u", ntohs(sa.sin_port));
        run_spec(tcp_spec, FILTER_CLIENT, 10, &d);
        close(fd);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_assert_nonnull(strstr(d.o.reason, g_strerror(ECONNREFUSED)));
        done_clear(&d);
}

/* A message big enough to go out in several chunks. */
static GString *big_message(void) {
        GString *m = g_string_new("Subject: big\r\n\r\n");

        for (unsigned i = 0; m->len < 200 * 1024; i++)
                g_string_append_printf(m, "line %u of the message body\r\n", i);
        return m;
}

/* Check a spamd request: method line, Content-length equal to the file's size, then the file. */
static void check_spamd_request(const GString *request, const char *method, const GString *content) {
        g_autofree char *head = g_strdup_printf("%s SPAMC/1.5\r\nContent-length: %zu\r\n\r\n", method, content->len);

        g_assert_true(g_str_has_prefix(request->str, head));
        g_assert_cmpuint(request->len, ==, strlen(head) + content->len);
        g_assert_true(memcmp(request->str + strlen(head), content->str, content->len) == 0);
}

static void run_spam(const char *kind, const char *reply, size_t reply_len, Done *d, FakeServer *s) {
        g_autofree char *spec = NULL;

        *s = (FakeServer){ .spamd = true, .reply = reply, .reply_len = reply_len, .close_after_reply = true };
        fake_server_start(s, false);
        spec = g_strdup_printf("%s:%s", kind, s->address);
        run_spec(spec, FILTER_SERVER, 10, d);
        fake_server_join(s);
}

static void test_spam_check(void) {
        g_autoptr(GString) content = big_message();
        g_autofree char *after = NULL;
        FakeServer s;
        size_t len;
        Done d = {};

        write_file(content_path, content->str, content->len);

        run_spam("spam", "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n", 0, &d, &s);
        check_spamd_request(s.request, "CHECK", content);
        g_assert_true(s.saw_eof);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpint(d.o.exit_code, ==, -1);
        g_assert_cmpint(d.o.smtp_code, ==, 0);
        g_assert_cmpstr(d.o.response, ==, "rejected");
        g_assert_cmpstr(d.o.reason, ==, "spam: True ; 1000.0 / 5.0");
        fake_server_done(&s);
        done_clear(&d);

        /* Read-only: the content is as it was. */
        after = read_file(content_path, &len);
        g_assert_cmpuint(len, ==, content->len);
        g_assert_true(memcmp(after, content->str, len) == 0);

        run_spam("spam", "SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.3 / 5.0\r\n\r\n", 0, &d, &s);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        g_assert_null(d.o.response);
        fake_server_done(&s);
        done_clear(&d);

        /* Some spamd versions close without the empty line. */
        run_spam("spam", "SPAMD/1.1 0 EX_OK\r\nSpam: Yes ; 9.0 / 5.0\r\n", 0, &d, &s);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.reason, ==, "spam: Yes ; 9.0 / 5.0");
        fake_server_done(&s);
        done_clear(&d);

        run_spam("spam", "SPAMD/1.0 76 Bad header line: x\r\n", 0, &d, &s);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_assert_true(g_str_has_suffix(d.o.reason, ": spamd error: SPAMD/1.0 76 Bad header line: x"));
        fake_server_done(&s);
        done_clear(&d);

        run_spam("spam", "SPAMD/1.1 0 EX_OK\r\n\r\n", 0, &d, &s);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_assert_true(g_str_has_suffix(d.o.reason, ": no Spam header in spamd reply"));
        fake_server_done(&s);
        done_clear(&d);

        run_spam("spam", "HTTP/1.0 200 OK\r\n\r\n", 0, &d, &s);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_true(g_str_has_suffix(d.o.reason, ": not a spamd reply: HTTP/1.0 200 OK"));
        fake_server_done(&s);
        done_clear(&d);
}

static void test_spam_edit(void) {
        g_autoptr(GString) content = big_message();
        g_autoptr(GString) edited = NULL, reply = NULL;
        g_autofree char *after = NULL, *tmp = g_strconcat(content_path, ".tmp", NULL);
        struct stat st;
        FakeServer s;
        size_t len;
        Done d = {};

        edited = g_string_new("X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=1000.0\r\n");
        g_string_append_len(edited, content->str, content->len);
        reply = g_string_new(NULL);
        g_string_append_printf(reply, "SPAMD/1.1 0 EX_OK\r\nContent-length: %zu\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n",
                               edited->len);
        g_string_append_len(reply, edited->str, edited->len);

        write_file(content_path, content->str, content->len);
        g_assert_cmpint(chmod(content_path, 0640), ==, 0);

        run_spam("spam-edit", reply->str, reply->len, &d, &s);
        check_spamd_request(s.request, "PROCESS", content);
        g_assert_true(s.saw_eof);
        /* Always passes: spamd's verdict is in the headers it added. */
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        fake_server_done(&s);
        done_clear(&d);

        after = read_file(content_path, &len);
        g_assert_cmpuint(len, ==, edited->len);
        g_assert_true(memcmp(after, edited->str, len) == 0);
        g_assert_cmpint(stat(content_path, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0640);
        g_assert_cmpint(access(tmp, F_OK), ==, -1);
        g_clear_pointer(&after, g_free);

        /* Without Content-length: the message runs to the end of the connection. */
        write_file(content_path, content->str, content->len);
        run_spam("spam-edit", "SPAMD/1.1 0 EX_OK\r\n\r\nSubject: short\r\n\r\nnew body\r\n", 0, &d, &s);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        fake_server_done(&s);
        done_clear(&d);
        after = read_file(content_path, NULL);
        g_assert_cmpstr(after, ==, "Subject: short\r\n\r\nnew body\r\n");
        g_clear_pointer(&after, g_free);

        /* Cut short: fails, and the content is left alone. */
        write_file(content_path, content->str, content->len);
        run_spam("spam-edit", "SPAMD/1.1 0 EX_OK\r\nContent-length: 1000\r\n\r\nSubject: cut", 0, &d, &s);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_assert_true(g_str_has_suffix(d.o.reason, ": truncated message in spamd reply"));
        fake_server_done(&s);
        done_clear(&d);
        after = read_file(content_path, &len);
        g_assert_cmpuint(len, ==, content->len);
        g_assert_cmpint(access(tmp, F_OK), ==, -1);

        run_spam("spam-edit", "SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\n", 0, &d, &s);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_true(g_str_has_suffix(d.o.reason, ": truncated spamd reply"));
        fake_server_done(&s);
        done_clear(&d);
}

/* ---- copy: ---- */

#define COPY_ID "emailrelay.9.8.7"

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static void rm_rf(const char *path) {
        (void) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A spool directory of its own, with one message (a big content, so that copies take several
 * reads) and the given sub-directories. */
typedef struct CopySpool {
        char *dir;
        char *content;
        char *envelope;
        GString *content_data;
} CopySpool;

static void copy_spool_init(CopySpool *s, const char *name, const char *envelope_suffix, const char *const *subdirs) {
        s->dir = tmp_path(name);
        rm_rf(s->dir);
        g_assert_cmpint(mkdir(s->dir, 0755), ==, 0);
        s->content = g_build_filename(s->dir, COPY_ID ".content", NULL);
        s->envelope = g_strconcat(s->dir, "/" COPY_ID, envelope_suffix, NULL);
        s->content_data = big_message();
        write_file(s->content, s->content_data->str, s->content_data->len);
        g_assert_cmpint(chmod(s->content, 0640), ==, 0);
        write_file(s->envelope, envelope_text, -1);
        g_assert_cmpint(chmod(s->envelope, 0600), ==, 0);
        for (const char *const *d = subdirs; *d; d++) {
                g_autofree char *path = g_build_filename(s->dir, *d, NULL);

                g_assert_cmpint(mkdir(path, 0755), ==, 0);
        }
}

static void copy_spool_done(CopySpool *s) {
        rm_rf(s->dir);
        g_free(s->dir);
        g_free(s->content);
        g_free(s->envelope);
        g_string_free(s->content_data, TRUE);
        *s = (CopySpool){};
}

static void run_copy(CopySpool *s, const char *spec, FilterSide side, Done *d) {
        char *saved_content = content_path, *saved_envelope = envelope_path;

        content_path = s->content;
        envelope_path = s->envelope;
        run_spec(spec, side, 10, d);
        content_path = saved_content;
        envelope_path = saved_envelope;
}

static int compare_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The names in a directory, sorted, joined by spaces. */
static char *dir_names(const char *dir, const char *sub) {
        g_autofree char *path = sub ? g_build_filename(dir, sub, NULL) : g_strdup(dir);
        g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        const char *name;

        g_assert_nonnull(d);
        while ((name = g_dir_read_name(d)))
                g_ptr_array_add(names, g_strdup(name));
        g_ptr_array_sort(names, compare_names);
        g_ptr_array_add(names, NULL);
        return g_strjoinv(" ", (char **) names->pdata);
}

static void assert_same_file(const char *path, const char *data, size_t len, mode_t mode) {
        g_autofree char *got = NULL;
        struct stat st;
        size_t got_len;

        got = read_file(path, &got_len);
        g_assert_cmpuint(got_len, ==, len);
        g_assert_true(memcmp(got, data, len) == 0);
        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, mode);
}

static void assert_copied(const CopySpool *s, const char *sub, bool with_content) {
        g_autofree char *content = g_build_filename(s->dir, sub, COPY_ID ".content", NULL);
        g_autofree char *envelope = g_build_filename(s->dir, sub, COPY_ID ".envelope", NULL);
        g_autofree char *names = dir_names(s->dir, sub);

        g_test_message("copy in %s: %s", sub, names);
        /* Nothing else: no temporary files left behind. */
        g_assert_cmpstr(names, ==, with_content ? COPY_ID ".content " COPY_ID ".envelope" : COPY_ID ".envelope");
        if (with_content)
                assert_same_file(content, s->content_data->str, s->content_data->len, 0640);
        assert_same_file(envelope, envelope_text, strlen(envelope_text), 0600);
}

static void test_copy(void) {
        static const char *const subdirs[] = { "alice", "bob", "postmaster", ".hidden", NULL };
        g_autofree char *names = NULL, *notes = NULL;
        CopySpool s;
        Done d = {};

        copy_spool_init(&s, "copy-spool", ".envelope.new", subdirs);
        /* Plain files are not mailboxes. */
        notes = g_build_filename(s.dir, "notes", NULL);
        write_file(notes, "x", -1);
        /* Nor is a symbolic link to a directory, which would take the copy out of the spool. */
        g_autofree char *outside = tmp_path("copy-outside");
        rm_rf(outside);
        g_assert_cmpint(mkdir(outside, 0755), ==, 0);
        g_autofree char *mallory = g_build_filename(s.dir, "mallory", NULL);
        g_assert_cmpint(symlink(outside, mallory), ==, 0);

        run_copy(&s, "copy:", FILTER_SERVER, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_ABANDON);
        g_assert_cmpint(d.o.exit_code, ==, -1);
        g_assert_null(d.o.response);
        done_clear(&d);

        assert_copied(&s, "alice", true);
        assert_copied(&s, "bob", true);
        names = dir_names(outside, NULL);
        g_assert_cmpstr(names, ==, "");
        g_clear_pointer(&names, g_free);
        rm_rf(outside);
        names = dir_names(s.dir, "postmaster");
        g_assert_cmpstr(names, ==, "");
        g_clear_pointer(&names, g_free);
        names = dir_names(s.dir, ".hidden");
        g_assert_cmpstr(names, ==, "");
        g_clear_pointer(&names, g_free);

        /* The original is gone: the copies are the message now. */
        names = dir_names(s.dir, NULL);
        g_assert_cmpstr(names, ==, ".hidden alice bob mallory notes postmaster");
        copy_spool_done(&s);
}

static void test_copy_pop(void) {
        static const char *const subdirs[] = { "alice", "bob", NULL };
        const char *const specs[] = { "copy:pop", "copy:p" };

        for (size_t i = 0; i < ELEMENTSOF(specs); i++) {
                g_autofree char *names = NULL;
                CopySpool s;
                Done d = {};

                copy_spool_init(&s, "copy-pop", ".envelope.new", subdirs);
                run_copy(&s, specs[i], FILTER_SERVER, &d);
                g_assert_cmpint(d.o.result, ==, FILTER_ABANDON);
                done_clear(&d);

                assert_copied(&s, "alice", false);
                assert_copied(&s, "bob", false);
                /* The envelope went; the content stays for the POP server. */
                names = dir_names(s.dir, NULL);
                g_assert_cmpstr(names, ==, "alice bob " COPY_ID ".content");
                assert_same_file(s.content, s.content_data->str, s.content_data->len, 0640);
                copy_spool_done(&s);
        }
}

static void test_copy_hardlink(void) {
        static const char *const subdirs[] = { "alice", "bob", NULL };
        g_autofree char *a = NULL, *b = NULL, *names = NULL;
        struct stat before, st_a, st_b;
        CopySpool s;
        Done d = {};

        copy_spool_init(&s, "copy-hardlink", ".envelope.new", subdirs);
        g_assert_cmpint(stat(s.content, &before), ==, 0);

        run_copy(&s, "copy:hardlink", FILTER_SERVER, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_ABANDON);
        done_clear(&d);

        assert_copied(&s, "alice", true);
        assert_copied(&s, "bob", true);
        a = g_build_filename(s.dir, "alice", COPY_ID ".content", NULL);
        b = g_build_filename(s.dir, "bob", COPY_ID ".content", NULL);
        g_assert_cmpint(stat(a, &st_a), ==, 0);
        g_assert_cmpint(stat(b, &st_b), ==, 0);
        g_assert_cmpuint(st_a.st_ino, ==, before.st_ino);
        g_assert_cmpuint(st_b.st_ino, ==, before.st_ino);
        g_assert_cmpuint(st_a.st_dev, ==, before.st_dev);
        /* The original's link is gone with it. */
        g_assert_cmpuint(st_a.st_nlink, ==, 2);
        names = dir_names(s.dir, NULL);
        g_assert_cmpstr(names, ==, "alice bob");
        copy_spool_done(&s);
}

static void test_copy_nodelete(void) {
        static const char *const subdirs[] = { "alice", "postmaster", NULL };
        static const struct {
                const char *spec;
                FilterSide side;
                const char *suffix;
                bool with_content;
        } table[] = {
                { "copy:nodelete", FILTER_SERVER, ".envelope.new", true },
                { "copy:n", FILTER_SERVER, ".envelope.new", true },
                /* A client filter's envelope is the locked .busy one. */
                { "copy:nodelete", FILTER_CLIENT, ".envelope.busy", true },
                { "copy:p;h;n", FILTER_SERVER, ".envelope.new", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                g_autofree char *names = NULL, *expected = NULL;
                CopySpool s;
                Done d = {};

                g_test_message("%s", table[i].spec);
                copy_spool_init(&s, "copy-nodelete", table[i].suffix, subdirs);
                run_copy(&s, table[i].spec, table[i].side, &d);
                g_assert_cmpint(d.o.result, ==, FILTER_OK);
                g_assert_null(d.o.response);
                g_assert_null(d.o.reason);
                done_clear(&d);

                assert_copied(&s, "alice", table[i].with_content);
                /* The original stays, untouched. */
                names = dir_names(s.dir, NULL);
                expected = g_strconcat("alice " COPY_ID ".content " COPY_ID, table[i].suffix, " postmaster", NULL);
                g_assert_cmpstr(names, ==, expected);
                assert_same_file(s.content, s.content_data->str, s.content_data->len, 0640);
                assert_same_file(s.envelope, envelope_text, strlen(envelope_text), 0600);
                copy_spool_done(&s);
        }
}

static void test_copy_no_subdirs(void) {
        static const char *const subdirs[] = { "postmaster", ".hidden", NULL };
        g_autofree char *names = NULL;
        CopySpool s;
        Done d = {};

        copy_spool_init(&s, "copy-none", ".envelope.new", subdirs);

        /* Passes, with a warning for the log, and leaves the message alone. */
        run_copy(&s, "copy:", FILTER_SERVER, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        g_assert_null(d.o.response);
        g_assert_cmpstr(d.o.reason, ==, "copy: no sub-directories");
        done_clear(&d);
        names = dir_names(s.dir, NULL);
        g_assert_cmpstr(names, ==, ".hidden " COPY_ID ".content " COPY_ID ".envelope.new postmaster");
        g_clear_pointer(&names, g_free);
        names = dir_names(s.dir, "postmaster");
        g_assert_cmpstr(names, ==, "");

        /* The warning outlives the rest of a passing chain, not a failing one. */
        run_copy(&s, "copy:,exit:0", FILTER_SERVER, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        g_assert_cmpstr(d.o.reason, ==, "copy: no sub-directories");
        done_clear(&d);
        run_copy(&s, "copy:,exit:1", FILTER_SERVER, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.reason, ==, "rejected");
        done_clear(&d);
        copy_spool_done(&s);
}

static void test_copy_failure(void) {
        static const char *const subdirs[] = { "alice", "bob", "carol", NULL };
        g_autofree char *blocker = NULL, *names = NULL;
        CopySpool s;
        Done d = {};

        /* bob's copy cannot be renamed into place: a directory has the name (this works as
         * root too, unlike a permission). */
        copy_spool_init(&s, "copy-fail", ".envelope.new", subdirs);
        blocker = g_build_filename(s.dir, "bob", COPY_ID ".envelope", NULL);
        g_assert_cmpint(mkdir(blocker, 0755), ==, 0);

        run_copy(&s, "copy:", FILTER_SERVER, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
        g_assert_cmpstr(d.o.response, ==, "error");
        g_test_message("reason: %s", d.o.reason);
        g_assert_true(g_str_has_prefix(d.o.reason, "copy: bob/" COPY_ID ".envelope: "));
        done_clear(&d);

        /* Undone: alice's copy is gone, bob has only what was there, carol was never reached,
         * and the original is intact. */
        names = dir_names(s.dir, "alice");
        g_assert_cmpstr(names, ==, "");
        g_clear_pointer(&names, g_free);
        names = dir_names(s.dir, "bob");
        g_assert_cmpstr(names, ==, COPY_ID ".envelope");
        g_clear_pointer(&names, g_free);
        names = dir_names(s.dir, "carol");
        g_assert_cmpstr(names, ==, "");
        g_clear_pointer(&names, g_free);
        assert_same_file(s.content, s.content_data->str, s.content_data->len, 0640);
        assert_same_file(s.envelope, envelope_text, strlen(envelope_text), 0600);

        /* Not a spool content file name: nothing to call the copies. */
        {
                g_autofree char *odd = g_build_filename(s.dir, "message.txt", NULL);
                char *saved = s.content;

                write_file(odd, "x", -1);
                s.content = odd;
                run_copy(&s, "copy:", FILTER_SERVER, &d);
                s.content = saved;
                g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
                g_assert_true(strstr(d.o.reason, "not a spool content file") != NULL);
                done_clear(&d);
        }
        copy_spool_done(&s);
}

/* ---- msgid: ---- */

/* Run msgid on content and check that the result is prefix, one Message-ID line for domain
 * ending in eol, then suffix. Returns the result. */
static char *check_msgid_added(const char *spec, const char *content, const char *prefix, const char *domain,
                               const char *eol, const char *suffix) {
        g_autofree char *id_suffix = g_strconcat("@", domain, ">", NULL);
        g_autofree char *line = NULL;
        char *after;
        const char *p, *end;
        size_t len;
        Done d = {};

        g_test_message("msgid on %s", content);
        write_file(content_path, content, -1);
        run_spec(spec, FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        g_assert_null(d.o.reason);
        done_clear(&d);

        after = read_file(content_path, &len);
        g_assert_cmpuint(len, ==, strlen(after));
        g_assert_true(g_str_has_prefix(after, prefix));
        p = after + strlen(prefix);
        g_assert_true(g_str_has_prefix(p, "Message-ID: <"));
        end = strstr(p, eol);
        g_assert_nonnull(end);
        line = g_strndup(p, end - p);
        g_assert_true(g_str_has_suffix(line, id_suffix));
        /* One angle-bracketed id with a unique part. */
        g_assert_cmpuint(strlen(line), >, strlen("Message-ID: <") + strlen(id_suffix) + 8);
        g_assert_null(strchr(line + strlen("Message-ID: <"), '<'));
        g_assert_null(strchr(line, '\r'));
        g_assert_cmpstr(end + strlen(eol), ==, suffix);
        return after;
}

static void check_msgid_kept(const char *content) {
        g_autofree char *after = NULL;
        Done d = {};

        g_test_message("msgid keeps %s", content);
        write_file(content_path, content, -1);
        run_spec("msgid:", FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        done_clear(&d);
        after = read_file(content_path, NULL);
        g_assert_cmpstr(after, ==, content);
}

static void test_msgid(void) {
        g_autofree char *tmp = g_strconcat(content_path, ".tmp", NULL);
        g_autofree char *first = NULL, *again = NULL, *other = NULL;
        struct stat st;
        Done d = {};

        /* On top; a Message-ID in the body does not count. */
        first = check_msgid_added("msgid:", "Subject: x\r\n\r\nMessage-ID: <in-body@x>\r\n", "", "emailrelay.local",
                                  "\r\n", "Subject: x\r\n\r\nMessage-ID: <in-body@x>\r\n");

        /* Added once: a second run leaves it as it is. */
        run_spec("msgid:", FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        done_clear(&d);
        again = read_file(content_path, NULL);
        g_assert_cmpstr(again, ==, first);

        /* Unique. */
        other = check_msgid_added("msgid:", "Subject: x\r\n\r\nMessage-ID: <in-body@x>\r\n", "", "emailrelay.local",
                                  "\r\n", "Subject: x\r\n\r\nMessage-ID: <in-body@x>\r\n");
        g_assert_cmpstr(other, !=, first);
        g_clear_pointer(&first, g_free);

        /* Present already, in any case and spacing. */
        check_msgid_kept("Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n");
        check_msgid_kept("Subject: x\r\nmessage-id: <a@b>\r\n\r\nbody\r\n");
        check_msgid_kept("MESSAGE-ID : <a@b>\r\nSubject: x\r\n\r\nbody\r\n");
        check_msgid_kept("Received: from a\r\n\tby b\r\nSubject: x\r\nMessage-Id:\r\n <folded@b>\r\n\r\nbody\r\n");

        /* A folded line is part of the field before it, not a field. Neither is a longer name. */
        first = check_msgid_added("msgid:", "Subject: a\r\n Message-ID: <fake@x>\r\nMessage-IDs: <x>\r\n\r\nb\r\n", "",
                                  "emailrelay.local", "\r\n",
                                  "Subject: a\r\n Message-ID: <fake@x>\r\nMessage-IDs: <x>\r\n\r\nb\r\n");
        g_clear_pointer(&first, g_free);

        /* Our Received line stays first, folds and all. */
        first = check_msgid_added("msgid:", "Received: from a\r\n\tby b\r\n\twith ESMTP\r\nSubject: s\r\n\r\nbody\r\n",
                                  "Received: from a\r\n\tby b\r\n\twith ESMTP\r\n", "emailrelay.local", "\r\n",
                                  "Subject: s\r\n\r\nbody\r\n");
        g_clear_pointer(&first, g_free);
        first = check_msgid_added("msgid:", "received: from a\r\nReceived: from b\r\n\r\nbody\r\n",
                                  "received: from a\r\n", "emailrelay.local", "\r\n",
                                  "Received: from b\r\n\r\nbody\r\n");
        g_clear_pointer(&first, g_free);
        /* Only the first field counts as ours. */
        first = check_msgid_added("msgid:", "Subject: s\r\nReceived: from a\r\n\r\nbody\r\n", "", "emailrelay.local",
                                  "\r\n", "Subject: s\r\nReceived: from a\r\n\r\nbody\r\n");
        g_clear_pointer(&first, g_free);

        /* The domain from the spec; LF-only content gets an LF line. */
        first = check_msgid_added("msgid:example.com", "Subject: lf\n\nbody\n", "", "example.com", "\n",
                                  "Subject: lf\n\nbody\n");
        g_clear_pointer(&first, g_free);
        /* Headers only, no blank line; empty content. */
        first = check_msgid_added("msgid:", "Subject: only\r\n", "", "emailrelay.local", "\r\n", "Subject: only\r\n");
        g_clear_pointer(&first, g_free);
        first = check_msgid_added("msgid:", "", "", "emailrelay.local", "\r\n", "");
        g_clear_pointer(&first, g_free);
        /* A lone Received line without a line end gets one before ours. */
        first = check_msgid_added("msgid:", "Received: x", "Received: x\r\n", "emailrelay.local", "\r\n", "");
        g_clear_pointer(&first, g_free);

        /* The mode survives the rewrite, and no temporary file is left. */
        write_file(content_path, "Subject: mode\r\n\r\nbody\r\n", -1);
        g_assert_cmpint(chmod(content_path, 0604), ==, 0);
        run_spec("msgid:", FILTER_SERVER, 10, &d);
        g_assert_cmpint(d.o.result, ==, FILTER_OK);
        done_clear(&d);
        g_assert_cmpint(stat(content_path, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0604);
        g_assert_cmpint(access(tmp, F_OK), ==, -1);
        first = read_file(content_path, NULL);
        g_assert_true(g_str_has_prefix(first, "Message-ID: <"));
        g_assert_cmpint(chmod(content_path, 0644), ==, 0);

        /* In a chain, before a program that sees the new header. */
        {
                g_autofree char *p = script("msgid-check.sh", "grep -q '^Message-ID: <.*@emailrelay.local>' \"$1\"");
                g_autofree char *spec = g_strdup_printf("msgid:,%s", p);

                write_file(content_path, content_text, -1);
                run_spec(spec, FILTER_CLIENT, 10, &d);
                g_assert_cmpint(d.o.result, ==, FILTER_OK);
                done_clear(&d);
        }

        /* A missing content file fails. */
        {
                g_autofree char *missing = tmp_path("no-such.content");
                char *saved = content_path;

                content_path = missing;
                run_spec("msgid:", FILTER_SERVER, 10, &d);
                content_path = saved;
                g_assert_cmpint(d.o.result, ==, FILTER_FAIL);
                g_assert_cmpstr(d.o.response, ==, "error");
                g_assert_true(g_str_has_prefix(d.o.reason, "msgid: "));
                done_clear(&d);
        }
}

static void remove_tmpdir(void) {
        g_autoptr(GDir) dir = g_dir_open(tmpdir, 0, NULL);
        const char *name;

        if (!dir)
                return;
        while ((name = g_dir_read_name(dir))) {
                g_autofree char *path = tmp_path(name);

                (void) g_unlink(path);
        }
        (void) g_rmdir(tmpdir);
}

int main(int argc, char *argv[]) {
        g_autoptr(GError) error = NULL;
        sigset_t mask;
        int r;

        g_test_init(&argc, &argv, NULL);

        /* As filter.h asks: before any thread, so that every thread has it blocked. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        g_assert_cmpint(pthread_sigmask(SIG_BLOCK, &mask, NULL), ==, 0);

        tmpdir = g_dir_make_tmp("test-filter-XXXXXX", &error);
        g_assert_no_error(error);
        content_path = g_build_filename(tmpdir, "emailrelay.1.2.3.content", NULL);
        envelope_path = g_build_filename(tmpdir, "emailrelay.1.2.3.envelope.new", NULL);
        g_assert_cmpint(sd_event_new(&event), >=, 0);

        g_test_add_func("/filter/exit-table", test_exit_table);
        g_test_add_func("/filter/output-format", test_output_format);
        g_test_add_func("/filter/program/ok", test_program_ok);
        g_test_add_func("/filter/program/fail", test_program_fail);
        g_test_add_func("/filter/program/special-codes", test_program_special_codes);
        g_test_add_func("/filter/program/timeout", test_program_timeout);
        g_test_add_func("/filter/program/exec-error", test_program_exec_error);
        g_test_add_func("/filter/program/environment", test_program_environment);
        g_test_add_func("/filter/program/edits-content", test_program_edits_content);
        g_test_add_func("/filter/program/big-output", test_program_big_output);
        g_test_add_func("/filter/program/relative", test_program_relative);
        g_test_add_func("/filter/exit-builtin", test_exit_builtin);
        g_test_add_func("/filter/empty-chain", test_empty_chain);
        g_test_add_func("/filter/sleepms", test_sleepms);
        g_test_add_func("/filter/chain", test_chain);
        g_test_add_func("/filter/parse", test_parse);
        g_test_add_func("/filter/cancel", test_cancel);
        g_test_add_func("/filter/net", test_net);
        g_test_add_func("/filter/net-unreachable", test_net_unreachable);
        g_test_add_func("/filter/spam-check", test_spam_check);
        g_test_add_func("/filter/spam-edit", test_spam_edit);
        g_test_add_func("/filter/copy", test_copy);
        g_test_add_func("/filter/copy-pop", test_copy_pop);
        g_test_add_func("/filter/copy-hardlink", test_copy_hardlink);
        g_test_add_func("/filter/copy-nodelete", test_copy_nodelete);
        g_test_add_func("/filter/copy-no-subdirs", test_copy_no_subdirs);
        g_test_add_func("/filter/copy-failure", test_copy_failure);
        g_test_add_func("/filter/msgid", test_msgid);

        r = g_test_run();

        event = sd_event_unref(event);
        remove_tmpdir();
        g_free(content_path);
        g_free(envelope_path);
        g_free(tmpdir);
        return r;
}
