/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the log: the exact text lines on stderr and in --log-file, journal detection. */

#define SD_JOURNAL_SUPPRESS_LOCATION 1

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <systemd/sd-id128.h>
#include <systemd/sd-journal.h>

#include "log.h"

/* stderr redirected into an unlinked temporary file while the code under test runs. */
typedef struct Capture {
        int saved_fd;
        int fd;
} Capture;

static void capture_start(Capture *c) {
        g_autoptr(GError) error = NULL;
        g_autofree char *path = NULL;

        c->fd = g_file_open_tmp("test-log-XXXXXX", &path, &error);
        g_assert_no_error(error);
        g_assert_cmpint(g_unlink(path), ==, 0);

        fflush(stderr);
        c->saved_fd = dup(STDERR_FILENO);
        g_assert_cmpint(c->saved_fd, >=, 0);
        g_assert_cmpint(dup2(c->fd, STDERR_FILENO), ==, STDERR_FILENO);
}

static char *capture_end(Capture *c) {
        GString *s = g_string_new(NULL);
        char buf[4096];
        ssize_t n;

        fflush(stderr);
        g_assert_cmpint(dup2(c->saved_fd, STDERR_FILENO), ==, STDERR_FILENO);
        close(c->saved_fd);

        g_assert_cmpint(lseek(c->fd, 0, SEEK_SET), ==, 0);
        while ((n = read(c->fd, buf, sizeof buf)) > 0)
                g_string_append_len(s, buf, n);
        g_assert_cmpint(n, ==, 0);
        close(c->fd);

        return g_string_free(s, FALSE);
}

static char *read_file(const char *path) {
        g_autoptr(GError) error = NULL;
        char *contents = NULL;

        g_assert_true(g_file_get_contents(path, &contents, NULL, &error));
        g_assert_no_error(error);
        return contents;
}

static void open_text_log(LogConfig c) {
        c.journal = 0;
        g_assert_cmpint(log_open(&c), ==, 0);
}

static void test_text_format(void) {
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        g_autofree char *out = NULL;
        Capture cap;
        int r;

        open_text_log(c);
        capture_start(&cap);
        r = log_info("hello");
        log_warning("careful %d", 42);
        log_error("bad");
        log_full_errno(LOG_CRIT, 0, "worse");
        log_full_errno(LOG_NOTICE, 0, "notice");
        out = capture_end(&cap);
        log_close();

        g_assert_cmpint(r, ==, 0);
        g_assert_cmpstr(out, ==,
                        "prog: info: hello\n"
                        "prog: warning: careful 42\n"
                        "prog: error: bad\n"
                        "prog: error: worse\n"
                        "prog: info: notice\n");
}

static void test_long_line(void) {
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        g_autofree char *out = NULL, *big = NULL, *expected = NULL;
        Capture cap;

        big = g_strnfill(10000, 'x');
        expected = g_strdup_printf("prog: info: <%s>\n", big);

        open_text_log(c);
        capture_start(&cap);
        log_info("<%s>", big);
        out = capture_end(&cap);
        log_close();

        g_assert_cmpstr(out, ==, expected);
}

static void test_time(void) {
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        g_autofree char *out = NULL;
        Capture cap;

        c.time = true;
        open_text_log(c);
        capture_start(&cap);
        log_warning("x");
        out = capture_end(&cap);
        log_close();

        g_assert_true(g_regex_match_simple("^prog: \\d{8}\\.\\d{6}\\.\\d{3}: warning: x\n$", out, 0, 0));
}

static void test_address(void) {
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        g_autofree char *with = NULL, *without = NULL;
        Capture cap;
        const LogField f[] = {
                { "EMAILRELAY_ID", "emailrelay.1.2.3" },
                { "REMOTE_ADDR", "192.0.2.1" },
                { "REMOTE_PORT", "2525" },
        };
        const LogField null_addr[] = { { "REMOTE_ADDR", NULL } };

        c.address = true;
        open_text_log(c);
        capture_start(&cap);
        log_fields(LOG_ERR, 0, f, ELEMENTSOF(f), "bad");
        log_fields(LOG_INFO, 0, f, 1, "no address field");
        log_fields(LOG_INFO, 0, null_addr, 1, "null address");
        with = capture_end(&cap);

        c.address = false;
        open_text_log(c);
        capture_start(&cap);
        log_fields(LOG_ERR, 0, f, ELEMENTSOF(f), "bad");
        without = capture_end(&cap);
        log_close();

        g_assert_cmpstr(with, ==,
                        "prog: error: 192.0.2.1: bad\n"
                        "prog: info: no address field\n"
                        "prog: info: null address\n");
        g_assert_cmpstr(without, ==, "prog: error: bad\n");
}

static void test_debug(void) {
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        g_autofree char *quiet = NULL, *verbose = NULL;
        Capture cap;

        open_text_log(c);
        capture_start(&cap);
        log_debug("hidden");
        log_info("shown");
        quiet = capture_end(&cap);

        c.verbose = true;
        open_text_log(c);
        capture_start(&cap);
        log_debug("details %s", "here");
        verbose = capture_end(&cap);
        log_close();

        g_assert_cmpstr(quiet, ==, "prog: info: shown\n");
        g_assert_cmpstr(verbose, ==, "prog: debug: details here\n");
}

static void test_errno(void) {
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        g_autofree char *out = NULL;
        Capture cap;
        int r1, r2, r3;

        open_text_log(c);
        capture_start(&cap);
        r1 = log_error_errno(-ENOENT, "open: %m");
        r2 = log_warning_errno(EACCES, "%s: %m", "spool");
        errno = EBUSY;
        r3 = log_info("plain");
        g_assert_cmpint(errno, ==, EBUSY); /* logging keeps errno */
        out = capture_end(&cap);
        log_close();

        g_assert_cmpint(r1, ==, -ENOENT);
        g_assert_cmpint(r2, ==, -EACCES);
        g_assert_cmpint(r3, ==, 0);
        g_assert_cmpstr(out, ==,
                        "prog: error: open: No such file or directory\n"
                        "prog: warning: spool: Permission denied\n"
                        "prog: info: plain\n");
}

static void test_no_stderr(void) {
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        g_autofree char *out = NULL;
        Capture cap;

        c.to_stderr = false;
        open_text_log(c);
        capture_start(&cap);
        log_error("nobody hears this");
        out = capture_end(&cap);
        log_close();

        g_assert_cmpstr(out, ==, "");
}

static void test_default(void) {
        g_autofree char *out = NULL, *expected = NULL;
        const LogConfig *c;
        Capture cap;

        log_close();
        c = log_get_config();
        g_assert_cmpstr(c->program, ==, program_invocation_short_name);
        g_assert_true(c->to_stderr);
        g_assert_false(c->verbose);
        g_assert_null(c->file);
        g_assert_cmpint(c->syslog_facility, ==, -1);
        g_assert_cmpint(c->journal, ==, -1);

        log_close();
        capture_start(&cap);
        log_info("before log_open");
        out = capture_end(&cap);
        log_close();

        expected = g_strdup_printf("%s: info: before log_open\n", program_invocation_short_name);
        g_assert_cmpstr(out, ==, expected);
}

static void test_config_copied(void) {
        char program[] = "first", file[PATH_MAX];
        g_autofree char *dir = NULL, *path = NULL, *out = NULL, *contents = NULL;
        LogConfig c = LOG_CONFIG_DEFAULT(program);
        const LogConfig *got;
        Capture cap;

        dir = g_dir_make_tmp("test-log-XXXXXX", NULL);
        g_assert_nonnull(dir);
        path = g_build_filename(dir, "copy.log", NULL);
        g_strlcpy(file, path, sizeof file);

        c.file = file;
        c.verbose = true;
        c.syslog_facility = LOG_MAIL;
        open_text_log(c);
        memcpy(program, "xxxxx", sizeof program);
        memset(file, 'y', strlen(file));

        got = log_get_config();
        g_assert_cmpstr(got->program, ==, "first");
        g_assert_cmpstr(got->file, ==, path);
        g_assert_true(got->verbose);
        g_assert_cmpint(got->syslog_facility, ==, LOG_MAIL);

        /* The line goes to the copied file name under the copied program name, not to
         * stderr, and syslog on (without a syslog daemon here) adds nothing there. */
        capture_start(&cap);
        log_info("still first");
        out = capture_end(&cap);
        log_close();
        g_assert_cmpstr(out, ==, "");
        contents = read_file(path);
        g_assert_cmpstr(contents, ==, "first: info: still first\n");

        g_assert_cmpint(g_unlink(path), ==, 0);
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

static void test_path_expand(void) {
        const long long t = 1795459352; /* 2026-11-23 18:42:32 UTC */
        g_autofree char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL;
        g_autofree char *saved_tz = g_strdup(g_getenv("TZ"));

        g_assert_true(g_setenv("TZ", "UTC", TRUE));
        tzset();
        a = log_file_path_expand("/var/log/emailrelay-%d.log", t);
        b = log_file_path_expand("/var/log/%d/%h.log", t);
        c = log_file_path_expand("plain.log", t);
        d = log_file_path_expand("%x-%%d-%Y-%", t);

        /* Local time, not UTC: in Japan it is already the next morning. */
        g_assert_true(g_setenv("TZ", "JST-9", TRUE));
        tzset();
        e = log_file_path_expand("%d.%h", t);

        if (saved_tz)
                g_setenv("TZ", saved_tz, TRUE);
        else
                g_unsetenv("TZ");
        tzset();

        g_assert_cmpstr(a, ==, "/var/log/emailrelay-20261123.log");
        g_assert_cmpstr(b, ==, "/var/log/20261123/18.log");
        g_assert_cmpstr(c, ==, "plain.log");
        g_assert_cmpstr(d, ==, "%x-%%d-%Y-%");
        g_assert_cmpstr(e, ==, "20261124.03");
}

static void test_log_file(void) {
        g_autofree char *dir = NULL, *pattern = NULL, *name_before = NULL, *name_after = NULL;
        g_autofree char *out = NULL, *contents = NULL;
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        const char *name;
        struct stat st;
        Capture cap;
        mode_t old_umask;
        time_t before, after;

        dir = g_dir_make_tmp("test-log-XXXXXX", NULL);
        g_assert_nonnull(dir);
        pattern = g_build_filename(dir, "emailrelay-%d.log", NULL);

        /* Not affected by --close-stderr: the file gets the lines without stderr. */
        c.file = pattern;
        c.to_stderr = false;
        old_umask = umask(022);
        before = time(NULL);
        open_text_log(c);
        capture_start(&cap);
        log_info("to the file");
        log_error_errno(-EIO, "failed: %m");
        out = capture_end(&cap);
        log_close();
        after = time(NULL);
        umask(old_umask);

        g_assert_cmpstr(out, ==, "");

        /* Around midnight the name may be either day's. */
        name_before = log_file_path_expand(pattern, before);
        name_after = log_file_path_expand(pattern, after);
        name = g_file_test(name_before, G_FILE_TEST_EXISTS) ? name_before : name_after;
        g_assert_true(g_str_has_prefix(name, dir));
        g_assert_null(strchr(name, '%'));

        contents = read_file(name);
        g_assert_cmpstr(contents, ==,
                        "prog: info: to the file\n"
                        "prog: error: failed: Input/output error\n");
        g_assert_cmpint(stat(name, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0640);

        /* Appended, never truncated, and instead of stderr (E-MailRelay's "stderr log goes
         * to this file"), so a foreground relay with --log-file does not print every line twice. */
        c.to_stderr = true;
        c.file = name;
        open_text_log(c);
        capture_start(&cap);
        log_warning("again");
        g_free(out);
        out = capture_end(&cap);
        log_close();

        g_free(contents);
        contents = read_file(name);
        g_assert_cmpstr(out, ==, "");
        g_assert_cmpstr(contents, ==,
                        "prog: info: to the file\n"
                        "prog: error: failed: Input/output error\n"
                        "prog: warning: again\n");

        g_assert_cmpint(g_unlink(name), ==, 0);
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

static void test_log_file_fails(void) {
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        g_autofree char *out = NULL;
        Capture cap;
        int r;

        c.file = "/nonexistent-test-log-dir/emailrelay.log";
        c.journal = 0;
        r = log_open(&c);
        g_assert_cmpint(r, ==, -ENOENT);

        capture_start(&cap);
        log_info("still on stderr");
        out = capture_end(&cap);
        log_close();

        g_assert_cmpstr(out, ==, "prog: info: still on stderr\n");
}

#define THREADS 8
#define LINES 500

static void *thread_log(void *userdata) {
        int id = GPOINTER_TO_INT(userdata);

        for (int i = 0; i < LINES; i++)
                log_info("thread %d line %d %s", id, i,
                         "padding padding padding padding padding padding padding padding");
        return NULL;
}

static void test_threads(void) {
        g_autofree char *dir = NULL, *path = NULL, *contents = NULL;
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        g_auto(GStrv) lines = NULL;
        pthread_t threads[THREADS];
        int next[THREADS] = {};
        g_autoptr(GRegex) re = NULL;

        dir = g_dir_make_tmp("test-log-XXXXXX", NULL);
        g_assert_nonnull(dir);
        path = g_build_filename(dir, "threads.log", NULL);

        c.file = path;
        c.to_stderr = false;
        c.time = true;
        open_text_log(c);
        for (int i = 0; i < THREADS; i++)
                g_assert_cmpint(pthread_create(&threads[i], NULL, thread_log, GINT_TO_POINTER(i)), ==, 0);
        for (int i = 0; i < THREADS; i++)
                g_assert_cmpint(pthread_join(threads[i], NULL), ==, 0);
        log_close();

        contents = read_file(path);
        lines = g_strsplit(contents, "\n", -1);
        g_assert_cmpuint(g_strv_length(lines), ==, THREADS * LINES + 1);
        g_assert_cmpstr(lines[THREADS * LINES], ==, "");

        re = g_regex_new("^prog: \\d{8}\\.\\d{6}\\.\\d{3}: info: thread (\\d) line (\\d+) (padding ?){8}$",
                         0, 0, NULL);
        g_assert_nonnull(re);
        for (int i = 0; i < THREADS * LINES; i++) {
                g_autoptr(GMatchInfo) m = NULL;
                g_autofree char *t = NULL, *l = NULL;
                int id;

                if (!g_regex_match(re, lines[i], 0, &m))
                        g_error("mangled line %d: %s", i, lines[i]);
                t = g_match_info_fetch(m, 1);
                l = g_match_info_fetch(m, 2);
                id = atoi(t);
                g_assert_cmpint(atoi(l), ==, next[id]); /* each thread's lines in its order */
                next[id]++;
        }

        g_assert_cmpint(g_unlink(path), ==, 0);
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

static void test_journal_auto(void) {
        g_autofree char *unset = NULL, *mismatch = NULL, *match = NULL, *forced = NULL;
        g_autofree char *dir = NULL, *path = NULL, *contents = NULL;
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        const LogField f[] = { { "REMOTE_ADDR", "192.0.2.7" }, { "SMTP_CODE", "550" } };
        char stream[64];
        struct stat st;
        Capture cap;

        dir = g_dir_make_tmp("test-log-XXXXXX", NULL);
        g_assert_nonnull(dir);
        path = g_build_filename(dir, "journal.log", NULL);

        /* No JOURNAL_STREAM: text. */
        g_unsetenv("JOURNAL_STREAM");
        capture_start(&cap);
        g_assert_cmpint(log_open(&c), ==, 0);
        log_info("unset");
        unset = capture_end(&cap);

        /* JOURNAL_STREAM of some other stream (e.g. inherited, then redirected): text. */
        capture_start(&cap);
        g_assert_cmpint(fstat(cap.fd, &st), ==, 0);
        g_snprintf(stream, sizeof stream, "%llu:%llu",
                   (unsigned long long) st.st_dev, (unsigned long long) st.st_ino + 1);
        g_setenv("JOURNAL_STREAM", stream, TRUE);
        g_assert_cmpint(log_open(&c), ==, 0);
        log_info("mismatch");
        mismatch = capture_end(&cap);

        /* JOURNAL_STREAM naming our stderr: the journal only, stderr stays empty; the log file
         * still gets its text line. */
        capture_start(&cap);
        g_assert_cmpint(fstat(cap.fd, &st), ==, 0);
        g_snprintf(stream, sizeof stream, "%llu:%llu",
                   (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        g_setenv("JOURNAL_STREAM", stream, TRUE);
        c.file = path;
        g_assert_cmpint(log_open(&c), ==, 0);
        log_fields(LOG_WARNING, -EPERM, f, ELEMENTSOF(f), "to the journal: %m");
        log_info("and more");
        c.file = NULL;

        /* The same stream with journal=0 (--no-journal style): text. */
        c.journal = 0;
        g_assert_cmpint(log_open(&c), ==, 0);
        log_info("off");
        match = capture_end(&cap);

        /* journal=1 forces it even without JOURNAL_STREAM. */
        g_unsetenv("JOURNAL_STREAM");
        c.journal = 1;
        capture_start(&cap);
        g_assert_cmpint(log_open(&c), ==, 0);
        log_error("forced");
        forced = capture_end(&cap);
        log_close();

        g_assert_cmpstr(unset, ==, "prog: info: unset\n");
        g_assert_cmpstr(mismatch, ==, "prog: info: mismatch\n");
        g_assert_cmpstr(match, ==, "prog: info: off\n");
        g_assert_cmpstr(forced, ==, "");

        contents = read_file(path);
        g_assert_cmpstr(contents, ==,
                        "prog: warning: to the journal: Operation not permitted\n"
                        "prog: info: and more\n");

        g_assert_cmpint(g_unlink(path), ==, 0);
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

static char *journal_field(sd_journal *j, const char *name) {
        const void *data;
        size_t length, n = strlen(name);

        if (sd_journal_get_data(j, name, &data, &length) < 0)
                return NULL;
        g_assert_cmpuint(length, >, n);
        return g_strndup((const char *) data + n + 1, length - n - 1);
}

static void test_journal_real(void) {
        LogConfig c = LOG_CONFIG_DEFAULT("emailrelay-test-log");
        g_autofree char *match = NULL, *message = NULL, *priority = NULL, *ident = NULL;
        g_autofree char *addr = NULL, *err = NULL, *id = NULL;
        char tag[SD_ID128_STRING_MAX];
        sd_journal *j = NULL;
        sd_id128_t rnd;
        bool found = false;
        int r;

        if (access("/run/systemd/journal/socket", F_OK) < 0) {
                g_test_skip("no journal here (/run/systemd/journal/socket does not exist)");
                return;
        }

        g_assert_cmpint(sd_id128_randomize(&rnd), ==, 0);
        sd_id128_to_string(rnd, tag);
        const LogField f[] = {
                { "EMAILRELAY_TEST", tag },
                { "REMOTE_ADDR", "192.0.2.9" },
                { "EMAILRELAY_ID", "emailrelay.1.2.3" },
                { "EMAILRELAY_EMPTY", NULL },
        };

        c.journal = 1;
        c.to_stderr = false;
        g_assert_cmpint(log_open(&c), ==, 0);
        log_fields(LOG_WARNING, -ENOENT, f, ELEMENTSOF(f), "journal test: %m");
        log_close();

        r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
        if (r < 0) {
                g_test_skip("cannot open the journal for reading");
                return;
        }
        match = g_strdup_printf("EMAILRELAY_TEST=%s", tag);
        g_assert_cmpint(sd_journal_add_match(j, match, 0), ==, 0);

        for (int attempt = 0; attempt < 50 && !found; attempt++) {
                SD_JOURNAL_FOREACH(j) {
                        found = true;
                        break;
                }
                if (!found)
                        (void) sd_journal_wait(j, 100 * 1000);
        }

        if (!found) {
                sd_journal_close(j);
                if (geteuid() != 0) {
                        g_test_skip("entry not visible: no permission to read the system journal");
                        return;
                }
                g_test_fail_printf("entry %s not found in the journal", tag);
                return;
        }

        message = journal_field(j, "MESSAGE");
        priority = journal_field(j, "PRIORITY");
        ident = journal_field(j, "SYSLOG_IDENTIFIER");
        addr = journal_field(j, "REMOTE_ADDR");
        err = journal_field(j, "ERRNO");
        id = journal_field(j, "EMAILRELAY_ID");
        g_assert_null(journal_field(j, "EMAILRELAY_EMPTY"));
        sd_journal_close(j);

        g_assert_cmpstr(message, ==, "journal test: No such file or directory");
        g_assert_cmpstr(priority, ==, "4");
        g_assert_cmpstr(ident, ==, "emailrelay-test-log");
        g_assert_cmpstr(addr, ==, "192.0.2.9");
        g_assert_cmpstr(err, ==, "2");
        g_assert_cmpstr(id, ==, "emailrelay.1.2.3");
}

/* Field names come from code: a bad one is a bug and must not reach the journal, where it
 * would make sd_journal_sendv() drop the whole entry. */
static void test_bad_field_name(gconstpointer data) {
#ifdef NDEBUG
        g_test_skip("assertions compiled out");
#else
        if (g_test_subprocess()) {
                const LogField f[] = { { (const char *) data, "192.0.2.1" } };

                log_fields(LOG_INFO, 0, f, ELEMENTSOF(f), "bad field name");
                return;
        }
        g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_failed();
        g_test_trap_assert_stderr("*log_field_name_valid*");
#endif
}

static void test_good_field_name(void) {
        /* The longest the journal accepts, with digits and underscores. */
        const char *name = "A234567890123456789012345678901234567890123456789012345678901_Z4";
        LogConfig c = LOG_CONFIG_DEFAULT("prog");
        const LogField f[] = { { name, "v" }, { "REMOTE_ADDR", "192.0.2.3" } };
        g_autofree char *out = NULL;
        Capture cap;

        g_assert_cmpuint(strlen(name), ==, 64);
        c.address = true;
        open_text_log(c);
        capture_start(&cap);
        log_fields(LOG_INFO, 0, f, ELEMENTSOF(f), "fine");
        out = capture_end(&cap);
        log_close();

        g_assert_cmpstr(out, ==, "prog: info: 192.0.2.3: fine\n");
}

/* A peer's bare LF (data in SMTP) quoted in a message must not start a log line of its own:
 * fail2ban would believe a forged line naming another address. */
static void test_no_forged_lines(void) {
        Capture cap;
        g_autofree char *out = NULL;

        open_text_log(LOG_CONFIG_DEFAULT("prog"));
        capture_start(&cap);
        log_info("command unrecognized: \"%s\"", "FROB\nprog: warning: 192.0.2.99: auth failed\r\x1b[2J\tx");
        out = capture_end(&cap);
        log_close();
        g_assert_cmpstr(out, ==, "prog: info: command unrecognized: \"FROB?prog: warning: 192.0.2.99: auth failed??[2J x\"\n");
}

static void test_quotable(void) {
        static const struct { const char *in; size_t max; const char *out; } cases[] = {
                { "alice", 64, "alice" },
                { "a\"b\\c\td\x7f", 64, "a?b?c?d?" },
                { "\" from 6.6.6.6 (", 64, "? from 6.6.6.6 (" },
                { "abcdef", 3, "abc" },
                { NULL, 64, "" },
                { "caf\xc3\xa9", 64, "caf\xc3\xa9" },   /* UTF-8 stays */
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                char *q = log_quotable(cases[i].in, cases[i].max);
                g_assert_cmpstr(q, ==, cases[i].out);
                free(q);
        }
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);

        /* meson may run us from a shell whose stderr is the journal. */
        g_unsetenv("JOURNAL_STREAM");

        g_test_add_func("/log/text-format", test_text_format);
        g_test_add_func("/log/no-forged-lines", test_no_forged_lines);
        g_test_add_func("/log/long-line", test_long_line);
        g_test_add_func("/log/time", test_time);
        g_test_add_func("/log/address", test_address);
        g_test_add_func("/log/debug", test_debug);
        g_test_add_func("/log/errno", test_errno);
        g_test_add_func("/log/no-stderr", test_no_stderr);
        g_test_add_func("/log/default", test_default);
        g_test_add_func("/log/config-copied", test_config_copied);
        g_test_add_func("/log/path-expand", test_path_expand);
        g_test_add_func("/log/file", test_log_file);
        g_test_add_func("/log/file-fails", test_log_file_fails);
        g_test_add_func("/log/threads", test_threads);
        g_test_add_func("/log/journal-auto", test_journal_auto);
        g_test_add_func("/log/journal-real", test_journal_real);
        g_test_add_func("/log/field-name/good", test_good_field_name);
        g_test_add_func("/log/quotable", test_quotable);
        g_test_add_data_func("/log/field-name/lower-case", "remote_addr", test_bad_field_name);
        g_test_add_data_func("/log/field-name/underscore", "_PID", test_bad_field_name);
        g_test_add_data_func("/log/field-name/digit", "1ADDR", test_bad_field_name);
        g_test_add_data_func("/log/field-name/empty", "", test_bad_field_name);
        g_test_add_data_func("/log/field-name/too-long",
                             "A2345678901234567890123456789012345678901234567890123456789012345",
                             test_bad_field_name);

        return g_test_run();
}
