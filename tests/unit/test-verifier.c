/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the address verifier: shell-script verifiers and a net: server in a forked child,
 * on a real sd-event loop. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "verifier.h"

static char *tmpdir;
static sd_event *event;

#define RECIPIENT "alice@example.com"

static const VerifyRequest default_request = {
        .recipient = RECIPIENT,
        .from = "bob@example.org",
        .peer = "192.0.2.1:54321",
        .domain = "relay.example.net",
        .mechanism = "PLAIN",
        .auth_id = "bob",
};

static char *tmp_path(const char *name) {
        return g_build_filename(tmpdir, name, NULL);
}

static void write_file(const char *path, const char *data) {
        g_autoptr(GError) error = NULL;

        g_assert_true(g_file_set_contents(path, data, -1, &error));
        g_assert_no_error(error);
}

static char *read_tmp(const char *name) {
        g_autofree char *path = tmp_path(name);
        g_autoptr(GError) error = NULL;
        char *data = NULL;

        g_assert_true(g_file_get_contents(path, &data, NULL, &error));
        g_assert_no_error(error);
        return data;
}

/* A shell-script verifier in the temp dir; "$D" in the body is the temp dir. */
static char *script(const char *name, const char *body) {
        g_autofree char *text = g_strdup_printf("#!/bin/sh\nD='%s'\n%s\n", tmpdir, body);
        char *path = tmp_path(name);

        write_file(path, text);
        g_assert_cmpint(chmod(path, 0755), ==, 0);
        return path;
}

typedef struct Done {
        unsigned n_calls;
        VerifyOutcome o;
        VerifyRun *run;
        bool cancel_in_callback;
} Done;

static void on_done(VerifyOutcome *o, void *userdata) {
        Done *d = userdata;

        d->n_calls++;
        /* Taking the strings is allowed: the run frees what is left. */
        d->o = *o;
        *o = (VerifyOutcome){ .result = o->result };
        if (d->cancel_in_callback)
                g_assert_null(verifier_run_cancel(d->run));
}

static void done_clear(Done *d) {
        verify_outcome_done(&d->o);
        *d = (Done){};
}

static void loop_for(unsigned ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) ms * 1000;

        while (g_get_monotonic_time() < deadline)
                g_assert_cmpint(sd_event_run(event, 10 * 1000), >=, 0);
}

static void loop_until_called(Done *d, unsigned max_ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) max_ms * 1000;

        while (d->n_calls == 0) {
                g_assert_cmpint(g_get_monotonic_time(), <, deadline);
                g_assert_cmpint(sd_event_run(event, 100 * 1000), >=, 0);
        }
}

static VerifyRun *start(const char *spec, const VerifyRequest *req, unsigned timeout, Done *d) {
        Verifier *v = NULL;
        g_autofree char *error = NULL;

        g_assert_cmpint(verifier_parse(spec, &v, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpint(verifier_run(v, event, req, timeout, on_done, d, &d->run), ==, 0);
        g_assert_nonnull(d->run);
        /* Never from inside verifier_run(). */
        g_assert_cmpuint(d->n_calls, ==, 0);
        /* The run keeps the verifier alive. */
        verifier_free(v);
        return d->run;
}

static void run_verifier(const char *spec, const VerifyRequest *req, unsigned timeout, Done *d) {
        start(spec, req, timeout, d);
        loop_until_called(d, 20000);
        /* Exactly once, even if the loop goes on. */
        loop_for(20);
        g_assert_cmpuint(d->n_calls, ==, 1);
}

/* Run a script verifier with the given body on the default request. */
static void run_script(const char *body, Done *d) {
        g_autofree char *p = script("verifier.sh", body);

        run_verifier(p, &default_request, 10, d);
}

static void assert_outcome(const Done *d, VerifyResult result, const char *full_name, const char *mailbox,
                           const char *address, const char *response, const char *reason) {
        g_assert_cmpint(d->o.result, ==, result);
        g_assert_cmpstr(d->o.full_name, ==, full_name);
        g_assert_cmpstr(d->o.mailbox, ==, mailbox);
        g_assert_cmpstr(d->o.address, ==, address);
        g_assert_cmpstr(d->o.response, ==, response);
        if (reason)
                g_assert_cmpstr(d->o.reason, ==, reason);
}

/* ---- programs ---- */

static void test_program_local(void) {
        Done d = {};

        run_script("printf 'Alice Smith\\nalice\\n'; exit 0", &d);
        assert_outcome(&d, VERIFY_LOCAL, "Alice Smith", "alice", RECIPIENT, NULL, NULL);
        g_assert_null(d.o.reason);
        done_clear(&d);

        /* CRLF lines, and a missing last newline. */
        run_script("printf 'Alice Smith\\r\\nalice'; exit 0", &d);
        assert_outcome(&d, VERIFY_LOCAL, "Alice Smith", "alice", RECIPIENT, NULL, NULL);
        done_clear(&d);

        /* An empty full name is fine... */
        run_script("printf '\\nalice\\n'; exit 0", &d);
        assert_outcome(&d, VERIFY_LOCAL, "", "alice", RECIPIENT, NULL, NULL);
        done_clear(&d);

        /* ...a missing mailbox is not: try later rather than bounce. */
        run_script("echo 'Alice Smith'; exit 0", &d);
        assert_outcome(&d, VERIFY_TEMPORARY, NULL, NULL, NULL, "cannot verify",
                       "the verifier gave no mailbox for a local address");
        done_clear(&d);
}

static void test_program_remote(void) {
        Done d = {};

        /* Re-addressed: the second line is what is stored. */
        run_script("printf 'ignored\\nAlice@Example.COM\\n'; exit 1", &d);
        assert_outcome(&d, VERIFY_REMOTE, NULL, NULL, "Alice@Example.COM", NULL, NULL);
        g_assert_null(d.o.reason);
        done_clear(&d);

        /* No second line, an empty one, no output at all: the recipient as it was. */
        run_script("echo ignored; exit 1", &d);
        assert_outcome(&d, VERIFY_REMOTE, NULL, NULL, RECIPIENT, NULL, NULL);
        done_clear(&d);
        run_script("printf 'ignored\\n\\n'; exit 1", &d);
        assert_outcome(&d, VERIFY_REMOTE, NULL, NULL, RECIPIENT, NULL, NULL);
        done_clear(&d);
        run_script("exit 1", &d);
        assert_outcome(&d, VERIFY_REMOTE, NULL, NULL, RECIPIENT, NULL, NULL);
        done_clear(&d);
}

static void test_program_invalid(void) {
        static const int codes[] = { 2, 4, 50, 99, 101, 126, 127, 200, 255 };
        Done d = {};

        for (size_t i = 0; i < ELEMENTSOF(codes); i++) {
                g_autofree char *body = g_strdup_printf("printf 'no such user\\nnot in the table\\n'; exit %d", codes[i]);

                g_test_message("exit %d", codes[i]);
                run_script(body, &d);
                assert_outcome(&d, VERIFY_INVALID, NULL, NULL, NULL, "no such user", "not in the table");
                done_clear(&d);
        }

        /* Without a reason the response is the reason; without either, a default. */
        run_script("echo 'no such user'; exit 2", &d);
        assert_outcome(&d, VERIFY_INVALID, NULL, NULL, NULL, "no such user", "no such user");
        done_clear(&d);
        run_script("exit 2", &d);
        assert_outcome(&d, VERIFY_INVALID, NULL, NULL, NULL, "mailbox unavailable", "mailbox unavailable");
        done_clear(&d);
        /* Only two lines count. */
        run_script("printf 'one\\ntwo\\nthree\\n'; exit 2", &d);
        assert_outcome(&d, VERIFY_INVALID, NULL, NULL, NULL, "one", "two");
        done_clear(&d);
}

static void test_program_temporary_abort(void) {
        Done d = {};

        run_script("printf 'try later\\ndirectory down\\n'; exit 3", &d);
        assert_outcome(&d, VERIFY_TEMPORARY, NULL, NULL, NULL, "try later", "directory down");
        done_clear(&d);

        run_script("echo busy; exit 3", &d);
        assert_outcome(&d, VERIFY_TEMPORARY, NULL, NULL, NULL, "busy", "busy");
        done_clear(&d);

        run_script("printf 'whatever\\nelse\\n'; exit 100", &d);
        assert_outcome(&d, VERIFY_ABORT, NULL, NULL, NULL, NULL, NULL);
        g_assert_nonnull(d.o.reason);
        done_clear(&d);

        /* Killed by a signal: not an exit code; try later. */
        run_script("kill -TERM $$; sleep 5", &d);
        g_assert_cmpint(d.o.result, ==, VERIFY_TEMPORARY);
        g_assert_cmpstr(d.o.response, ==, "cannot verify");
        g_assert_true(g_str_has_suffix(d.o.reason, ": killed by signal 15"));
        done_clear(&d);
}

static void test_program_argv(void) {
        g_autofree char *p = script("argv.sh", "{ echo \"$#\"; for a in \"$@\"; do echo \"[$a]\"; done; } > \"$D/args\"\n"
                                               "env > \"$D/env\"\nexit 1");
        g_autofree char *args = NULL, *env = NULL;
        VerifyRequest req = default_request;
        Done d = {};

        g_assert_cmpint(setenv("SECRET_TEST_VAR", "hush", 1), ==, 0);
        run_verifier(p, &req, 10, &d);
        g_assert_cmpint(unsetenv("SECRET_TEST_VAR"), ==, 0);
        g_assert_cmpint(d.o.result, ==, VERIFY_REMOTE);
        done_clear(&d);
        args = read_tmp("args");
        /* The mechanism in lower case. */
        g_assert_cmpstr(args, ==, "6\n[alice@example.com]\n[bob@example.org]\n[192.0.2.1:54321]\n[relay.example.net]\n"
                                  "[plain]\n[bob]\n");
        env = read_tmp("env");
        g_assert_null(strstr(env, "SECRET_TEST_VAR"));
        g_assert_nonnull(strstr(env, "PATH="));
        g_clear_pointer(&args, g_free);

        /* Not authenticated, no sender (VRFY): empty arguments keep their places. */
        req.from = NULL;
        req.mechanism = NULL;
        req.auth_id = NULL;
        run_verifier(p, &req, 10, &d);
        done_clear(&d);
        args = read_tmp("args");
        g_assert_cmpstr(args, ==, "6\n[alice@example.com]\n[]\n[192.0.2.1:54321]\n[relay.example.net]\n[none]\n[]\n");
        g_clear_pointer(&args, g_free);

        /* A trusted address: the daemon's keyword goes through as one argument. */
        req.from = "";
        req.mechanism = "";
        req.auth_id = "server none";
        run_verifier(p, &req, 10, &d);
        done_clear(&d);
        args = read_tmp("args");
        g_assert_cmpstr(args, ==,
                        "6\n[alice@example.com]\n[]\n[192.0.2.1:54321]\n[relay.example.net]\n[none]\n[server none]\n");
}

static void test_program_path(void) {
        g_autofree char *cwd = g_get_current_dir();
        g_autofree char *dir = tmp_path("with space");
        g_autofree char *path = g_build_filename(dir, "v.sh", NULL);
        g_autofree char *spec = g_strconcat("file:", path, NULL);
        Verifier *v = NULL;
        Done d = {};

        /* The whole spec is the path: no words split off. */
        g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
        write_file(path, "#!/bin/sh\nprintf 'x\\nspaced@example.com\\n'; exit 1\n");
        g_assert_cmpint(chmod(path, 0755), ==, 0);
        run_verifier(spec, &default_request, 10, &d);
        assert_outcome(&d, VERIFY_REMOTE, NULL, NULL, "spaced@example.com", NULL, NULL);
        done_clear(&d);

        /* A relative path is taken from the directory at parse time. */
        g_assert_cmpint(chdir(dir), ==, 0);
        g_assert_cmpint(verifier_parse("v.sh", &v, NULL), ==, 0);
        g_assert_cmpint(chdir("/"), ==, 0);
        g_assert_cmpint(verifier_run(v, event, &default_request, 10, on_done, &d, NULL), ==, 0);
        loop_until_called(&d, 20000);
        assert_outcome(&d, VERIFY_REMOTE, NULL, NULL, "spaced@example.com", NULL, NULL);
        done_clear(&d);
        verifier_free(v);
        g_assert_cmpint(chdir(cwd), ==, 0);
        (void) g_unlink(path);
        (void) g_rmdir(dir);
}

static void test_program_sanitize(void) {
        g_autofree char *long_line = g_strnfill(3000, 'x');
        g_autofree char *cut = g_strnfill(1023, 'y');
        g_autofree char *body = NULL;
        Done d = {};

        /* Control characters go (a tab becomes a space); so do outer spaces. */
        run_script("printf '  bad\\001char\\ttab\\033[0m\\177 \\nwhy\\000 not\\n'; exit 2", &d);
        assert_outcome(&d, VERIFY_INVALID, NULL, NULL, NULL, "badchar tab[0m", "why not");
        done_clear(&d);

        /* 1 KiB per line, the rest of the line dropped. */
        body = g_strdup_printf("printf '%s\\nreason\\n'; exit 2", long_line);
        run_script(body, &d);
        g_assert_cmpint(d.o.result, ==, VERIFY_INVALID);
        g_assert_cmpuint(strlen(d.o.response), ==, 1024);
        g_assert_cmpstr(d.o.reason, ==, "reason");
        done_clear(&d);
        g_clear_pointer(&body, g_free);

        /* Never half a UTF-8 character: a two-byte character across the limit goes whole. */
        body = g_strdup_printf("printf '%s\\303\\251z\\n'; exit 3", cut);
        run_script(body, &d);
        g_assert_cmpint(d.o.result, ==, VERIFY_TEMPORARY);
        g_assert_cmpstr(d.o.response, ==, cut);
        g_assert_true(g_utf8_validate(d.o.response, -1, NULL));
        done_clear(&d);
        g_clear_pointer(&body, g_free);

        /* A mailbox is cleaned too. */
        run_script("printf 'A\\tB\\nal\\rice\\n'; exit 0", &d);
        assert_outcome(&d, VERIFY_LOCAL, "A B", "alice", RECIPIENT, NULL, NULL);
        done_clear(&d);
}

static pid_t read_pid(const char *name) {
        g_autofree char *s = read_tmp(name);
        pid_t pid = (pid_t) atoi(s);

        g_assert_cmpint(pid, >, 1);
        return pid;
}

static void test_program_timeout(void) {
        g_autofree char *p = script("slow.sh", "echo $$ > \"$D/slow.pid\"\nexec sleep 30");
        gint64 begin = g_get_monotonic_time(), elapsed;
        pid_t pid;
        Done d = {};

        run_verifier(p, &default_request, 1, &d);
        elapsed = g_get_monotonic_time() - begin;
        g_assert_cmpint(elapsed, >=, 900 * 1000);
        g_assert_cmpint(elapsed, <, 10 * 1000 * 1000);
        /* E-MailRelay's "450 timeout". */
        assert_outcome(&d, VERIFY_TEMPORARY, NULL, NULL, NULL, "timeout", "timeout");
        done_clear(&d);

        /* Killed and reaped before the callback. */
        pid = read_pid("slow.pid");
        g_assert_cmpint(kill(pid, 0), ==, -1);
        g_assert_cmpint(errno, ==, ESRCH);
}

static void test_program_exec_error(void) {
        g_autofree char *missing = tmp_path("no-such-verifier");
        g_autofree char *noexec = script("noexec.sh", "exit 0");
        Done d = {};

        run_verifier(missing, &default_request, 10, &d);
        g_assert_cmpint(d.o.result, ==, VERIFY_TEMPORARY);
        g_assert_cmpstr(d.o.response, ==, "cannot verify");
        g_assert_nonnull(strstr(d.o.reason, g_strerror(ENOENT)));
        done_clear(&d);

        g_assert_cmpint(chmod(noexec, 0644), ==, 0);
        run_verifier(noexec, &default_request, 10, &d);
        g_assert_cmpint(d.o.result, ==, VERIFY_TEMPORARY);
        g_assert_nonnull(strstr(d.o.reason, g_strerror(EACCES)));
        done_clear(&d);
}

/* ---- exit: ---- */

static void test_exit(void) {
        static const char *const specs[] = { "exit:", "exit:0", "exit:2", " exit:255 " };
        Done d = {};

        /* Every address is remote, whatever the number. */
        for (size_t i = 0; i < ELEMENTSOF(specs); i++) {
                run_verifier(specs[i], &default_request, 10, &d);
                assert_outcome(&d, VERIFY_REMOTE, NULL, NULL, RECIPIENT, NULL, NULL);
                done_clear(&d);
        }
}

/* ---- cancel ---- */

typedef struct CancelLater {
        VerifyRun *run;
        char *pidfile;
        bool cancelled;
} CancelLater;

static int on_cancel_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        CancelLater *c = userdata;

        /* Once the verifier is surely running. */
        if (access(c->pidfile, F_OK) < 0) {
                g_assert_cmpint(sd_event_source_set_time_relative(s, 20 * 1000), >=, 0);
                g_assert_cmpint(sd_event_source_set_enabled(s, SD_EVENT_ONESHOT), >=, 0);
                return 0;
        }
        g_assert_null(verifier_run_cancel(c->run));
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

        c.run = start(p, &default_request, 30, &d);
        g_assert_cmpint(sd_event_add_time_relative(event, &timer, CLOCK_MONOTONIC, 20 * 1000, 1000, on_cancel_timer, &c),
                        >=, 0);
        deadline = g_get_monotonic_time() + 10 * 1000 * 1000;
        while (!c.cancelled) {
                g_assert_cmpint(g_get_monotonic_time(), <, deadline);
                g_assert_cmpint(sd_event_run(event, 100 * 1000), >=, 0);
        }
        timer = sd_event_source_unref(timer);
        pid = read_pid("cancel.pid");
        g_assert_cmpint(kill(pid, 0), ==, -1);
        g_assert_cmpint(errno, ==, ESRCH);
        loop_for(200);
        g_assert_cmpuint(d.n_calls, ==, 0);

        /* Before the loop ever ran it. */
        start("exit:", &default_request, 10, &d);
        g_assert_null(verifier_run_cancel(d.run));
        loop_for(100);
        g_assert_cmpuint(d.n_calls, ==, 0);
        g_assert_null(verifier_run_cancel(NULL));

        /* From inside the run's own callback: a no-op. */
        d.cancel_in_callback = true;
        run_verifier("exit:", &default_request, 10, &d);
        g_assert_cmpint(d.o.result, ==, VERIFY_REMOTE);
        done_clear(&d);
}

/* ---- net: against a server in a forked child ---- */

typedef struct NetServer {
        pid_t pid;
        char *address;           /* for the spec */
        int request_fd;          /* what the server read, written back by the child */
} NetServer;

static ssize_t read_with_deadline(int fd, char *buf, size_t size, int timeout_ms) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        if (poll(&pfd, 1, timeout_ms) <= 0)
                return -1;
        return read(fd, buf, size);
}

/* The child: one connection, one request line, then the reply (NULL: hang up at once), then
 * wait for the client to go unless hang_up. Plain system calls only, then _exit(). */
static _noreturn_ void net_server_child(int listen_fd, int report_fd, const char *reply, bool hang_up) {
        struct pollfd pfd = { .fd = listen_fd, .events = POLLIN };
        char buf[4096];
        size_t len = 0;
        int fd;

        if (poll(&pfd, 1, 10000) <= 0)
                _exit(1);
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
                _exit(1);
        while (len < sizeof(buf) && !memchr(buf, '\n', len)) {
                ssize_t n = read_with_deadline(fd, buf + len, sizeof(buf) - len, 10000);

                if (n <= 0)
                        break;
                len += (size_t) n;
        }
        (void) !write(report_fd, buf, len);
        close(report_fd);

        if (reply)
                (void) !send(fd, reply, strlen(reply), MSG_NOSIGNAL);
        if (!hang_up)
                while (read_with_deadline(fd, buf, sizeof(buf), 10000) > 0)
                        ;
        close(fd);
        _exit(0);
}

static void net_server_start(NetServer *s, const char *reply, bool hang_up, bool tcp) {
        int fd, fds[2];

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

                s->address = tmp_path("verifier.sock");
                (void) unlink(s->address);
                g_assert_cmpuint(strlen(s->address), <, sizeof(sa.sun_path));
                strcpy(sa.sun_path, s->address);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        }
        /* Listening before the fork: the client may connect before the child runs. */
        g_assert_cmpint(listen(fd, 8), ==, 0);
        g_assert_cmpint(pipe2(fds, O_CLOEXEC), ==, 0);

        s->pid = fork();
        g_assert_cmpint(s->pid, >=, 0);
        if (s->pid == 0) {
                close(fds[0]);
                net_server_child(fd, fds[1], reply, hang_up);
        }
        close(fd);
        close(fds[1]);
        s->request_fd = fds[0];
}

/* Wait for the child; returns what it read. */
static char *net_server_finish(NetServer *s) {
        GString *request = g_string_new(NULL);
        char buf[4096];
        int status;
        ssize_t n;

        while ((n = read_with_deadline(s->request_fd, buf, sizeof(buf), 15000)) > 0)
                g_string_append_len(request, buf, n);
        close(s->request_fd);
        g_assert_cmpint(waitpid(s->pid, &status, 0), ==, s->pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        if (s->address[0] == '/')
                (void) unlink(s->address);
        g_free(s->address);
        return g_string_free(request, FALSE);
}

static void run_net(const char *reply, bool hang_up, bool tcp, const VerifyRequest *req, unsigned timeout, Done *d,
                    char **ret_request) {
        g_autofree char *spec = NULL, *request = NULL;
        NetServer s = {};

        net_server_start(&s, reply, hang_up, tcp);
        spec = g_strdup_printf("net:%s", s.address);
        run_verifier(spec, req, timeout, d);
        request = net_server_finish(&s);
        if (ret_request)
                *ret_request = g_steal_pointer(&request);
        else
                g_assert_cmpstr(request, ==, "alice@example.com|bob@example.org|192.0.2.1:54321|relay.example.net|plain|bob\n");
}

static void test_net(void) {
        static const struct {
                const char *reply;
                VerifyResult result;
                const char *full_name, *mailbox, *address, *response, *reason;
        } table[] = {
                { "0|alice|Alice Smith\n", VERIFY_LOCAL, "Alice Smith", "alice", RECIPIENT, NULL, NULL },
                { "0|alice\r\n", VERIFY_LOCAL, "", "alice", RECIPIENT, NULL, NULL },
                { "0|\n", VERIFY_TEMPORARY, NULL, NULL, NULL, "cannot verify",
                  "the verifier gave no mailbox for a local address" },
                { "1|Alice@Example.COM\n", VERIFY_REMOTE, NULL, NULL, "Alice@Example.COM", NULL, NULL },
                { "1\n", VERIFY_REMOTE, NULL, NULL, RECIPIENT, NULL, NULL },
                { "1|\n", VERIFY_REMOTE, NULL, NULL, RECIPIENT, NULL, NULL },
                { "2|no such user|not in the table\n", VERIFY_INVALID, NULL, NULL, NULL, "no such user",
                  "not in the table" },
                { "2|no such user\n", VERIFY_INVALID, NULL, NULL, NULL, "no such user", "no such user" },
                { "2|a|b|c\n", VERIFY_INVALID, NULL, NULL, NULL, "a", "b|c" },
                { "2\n", VERIFY_INVALID, NULL, NULL, NULL, "mailbox unavailable", "mailbox unavailable" },
                { "3|busy|try later\r\n", VERIFY_TEMPORARY, NULL, NULL, NULL, "busy", "try later" },
                { "7|odd\n", VERIFY_INVALID, NULL, NULL, NULL, "odd", "odd" },
                { "100\n", VERIFY_ABORT, NULL, NULL, NULL, NULL, NULL },
                /* Only the first line counts. */
                { "1|first@example.com\n2|second\n", VERIFY_REMOTE, NULL, NULL, "first@example.com", NULL, NULL },
                /* A last line without its newline, then a hang-up. */
                { "1|nonl@example.com", VERIFY_REMOTE, NULL, NULL, "nonl@example.com", NULL, NULL },
        };
        Done d = {};

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                g_test_message("reply %s", table[i].reply);
                run_net(table[i].reply, true, false, &default_request, 10, &d, NULL);
                assert_outcome(&d, table[i].result, table[i].full_name, table[i].mailbox, table[i].address,
                               table[i].response, table[i].reason);
                done_clear(&d);
        }

        /* Over TCP, with the server waiting for us to hang up. */
        run_net("1|tcp@example.com\n", false, true, &default_request, 10, &d, NULL);
        assert_outcome(&d, VERIFY_REMOTE, NULL, NULL, "tcp@example.com", NULL, NULL);
        done_clear(&d);
}

static void test_net_request(void) {
        VerifyRequest req = default_request;
        g_autofree char *request = NULL;
        Done d = {};

        /* Missing values leave empty fields; the mechanism is "none". */
        req.from = NULL;
        req.mechanism = NULL;
        req.auth_id = NULL;
        run_net("1\n", true, false, &req, 10, &d, &request);
        g_assert_cmpstr(request, ==, "alice@example.com||192.0.2.1:54321|relay.example.net|none|\n");
        done_clear(&d);
        g_clear_pointer(&request, g_free);

        /* No field can end the request line early. */
        req.from = "evil\r\n2|x";
        req.mechanism = "CRAM-MD5";
        req.auth_id = "server none";
        run_net("1\n", true, false, &req, 10, &d, &request);
        g_assert_cmpstr(request, ==, "alice@example.com|evil2|x|192.0.2.1:54321|relay.example.net|cram-md5|server none\n");
        done_clear(&d);
}

static void test_net_failures(void) {
        g_autofree char *missing = tmp_path("nobody-listens.sock");
        g_autofree char *spec = g_strdup_printf("net:%s", missing);
        g_autofree char *endless = g_strnfill(10000, 'z');
        Done d = {};

        /* A disconnect without a word. */
        run_net(NULL, true, false, &default_request, 10, &d, NULL);
        g_assert_cmpint(d.o.result, ==, VERIFY_TEMPORARY);
        g_assert_cmpstr(d.o.response, ==, "cannot verify");
        g_assert_true(g_str_has_suffix(d.o.reason, ": connection closed without a reply"));
        done_clear(&d);

        /* Silence: the timeout. */
        run_net(NULL, false, false, &default_request, 1, &d, NULL);
        g_assert_cmpint(d.o.result, ==, VERIFY_TEMPORARY);
        g_assert_cmpstr(d.o.response, ==, "cannot verify");
        g_assert_true(g_str_has_suffix(d.o.reason, ": timeout"));
        done_clear(&d);

        /* Not the protocol. */
        run_net("ok\n", true, false, &default_request, 10, &d, NULL);
        g_assert_cmpint(d.o.result, ==, VERIFY_TEMPORARY);
        g_assert_cmpstr(d.o.response, ==, "cannot verify");
        g_assert_true(g_str_has_suffix(d.o.reason, ": invalid reply: ok"));
        done_clear(&d);
        run_net(endless, true, false, &default_request, 10, &d, NULL);
        g_assert_cmpint(d.o.result, ==, VERIFY_TEMPORARY);
        g_assert_true(g_str_has_suffix(d.o.reason, ": reply too long"));
        done_clear(&d);

        /* Nobody there. */
        run_verifier(spec, &default_request, 10, &d);
        g_assert_cmpint(d.o.result, ==, VERIFY_TEMPORARY);
        g_assert_cmpstr(d.o.response, ==, "cannot verify");
        g_assert_nonnull(strstr(d.o.reason, g_strerror(ENOENT)));
        done_clear(&d);
}

/* ---- parsing ---- */

static void check_parse_error(const char *spec, const char *message) {
        Verifier *v = (Verifier *) 0x1;
        char *error = NULL;

        g_test_message("spec %s", spec);
        g_assert_cmpint(verifier_parse(spec, &v, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, message);
        /* Untouched on failure. */
        g_assert_true(v == (Verifier *) 0x1);
        g_free(error);
        g_assert_cmpint(verifier_parse(spec, &v, NULL), ==, -EINVAL);
}

static void test_parse(void) {
        static const char *const good[] = {
                "exit:", "exit:0", "exit:255", "net:127.0.0.1:10025", "net:[::1]:25", "net:/run/verifier.sock",
                "/usr/lib/emailrelay/verify", "file:/bin/true", "file:relative", "relative", "  /bin/true  ",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                Verifier *v = NULL;
                char *error = NULL;

                g_test_message("spec %s", good[i]);
                g_assert_cmpint(verifier_parse(good[i], &v, &error), ==, 0);
                g_assert_null(error);
                g_assert_nonnull(v);
                g_assert_null(verifier_free(v));
        }
        g_assert_null(verifier_free(NULL));

        check_parse_error("", "invalid address verifier \"\": empty");
        check_parse_error(" \t", "invalid address verifier \"\": empty");
        check_parse_error(NULL, "invalid address verifier \"\": empty");
        check_parse_error("account:", "address verifier \"account:\" is not supported yet");
        check_parse_error("account:1000-2000;check", "address verifier \"account:\" is not supported yet");
        check_parse_error("net:", "invalid address verifier \"net:\": missing address");
        check_parse_error("net:localhost:25",
                          "invalid address verifier \"net:localhost:25\": filter address must be numeric or a unix "
                          "socket path");
        check_parse_error("net:127.0.0.1", "invalid address verifier \"net:127.0.0.1\": missing port");
        check_parse_error("file:", "invalid address verifier \"file:\": missing program");
        check_parse_error("exit:x", "invalid address verifier \"exit:x\": exit code must be a number from 0 to 255");
        check_parse_error("exit:256", "invalid address verifier \"exit:256\": exit code must be a number from 0 to 255");
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

        /* As child.h asks: before any thread, so that every thread has it blocked. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        g_assert_cmpint(pthread_sigmask(SIG_BLOCK, &mask, NULL), ==, 0);

        tmpdir = g_dir_make_tmp("test-verifier-XXXXXX", &error);
        g_assert_no_error(error);
        g_assert_cmpint(sd_event_new(&event), >=, 0);

        g_test_add_func("/verifier/parse", test_parse);
        g_test_add_func("/verifier/program/local", test_program_local);
        g_test_add_func("/verifier/program/remote", test_program_remote);
        g_test_add_func("/verifier/program/invalid", test_program_invalid);
        g_test_add_func("/verifier/program/temporary-abort", test_program_temporary_abort);
        g_test_add_func("/verifier/program/argv", test_program_argv);
        g_test_add_func("/verifier/program/path", test_program_path);
        g_test_add_func("/verifier/program/sanitize", test_program_sanitize);
        g_test_add_func("/verifier/program/timeout", test_program_timeout);
        g_test_add_func("/verifier/program/exec-error", test_program_exec_error);
        g_test_add_func("/verifier/exit", test_exit);
        g_test_add_func("/verifier/cancel", test_cancel);
        g_test_add_func("/verifier/net", test_net);
        g_test_add_func("/verifier/net-request", test_net_request);
        g_test_add_func("/verifier/net-failures", test_net_failures);

        r = g_test_run();

        event = sd_event_unref(event);
        remove_tmpdir();
        g_free(tmpdir);
        return r;
}
