/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Child processes for filters and address verifiers: posix_spawn, stdout collection, timeout,
 * process-group kill, reaping through sd-event. */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "macro.h"

#define USEC_PER_MSEC UINT64_C(1000)
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"
/* Reads per wakeup: a chatty child must not starve the other sessions on the loop. */
#define READ_BURST 16U

struct Child {
        sd_event *event;
        ChildDoneCallback callback;
        void *userdata;

        pid_t pid;
        bool exited;
        int exit_code;
        int signal;
        int exec_error;

        sd_event_source *child_source;
        sd_event_source *stdout_source;
        sd_event_source *timer_source;
        sd_event_source *defer_source;       /* reports an exec error from the loop */
        int stdout_fd;
        int stdin_fd;                        /* child_spawn_session(): our end of its stdin */

        char *output;
        size_t output_len, output_size, output_max;

        ChildLineCallback line_callback;     /* child_spawn_session(): each line as it comes */
        bool released;                       /* child_release(): nobody waits for the result */
        bool in_line_callback;               /* child_free() now only asks, for on_stdout() */
        bool free_requested;
        bool skipping;                       /* the rest of a line longer than output_max */
};

/* child_release()d children still running: freed as they finish, or by child_free_released(). */
static GPtrArray *released_children;

int child_block_sigchld(void) {
        sigset_t mask;

        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        return -pthread_sigmask(SIG_BLOCK, &mask, NULL);
}

char **child_make_envp(void) {
        const char *path = getenv("PATH");
        char **envp = g_new0(char *, 3);

        envp[0] = g_strconcat("PATH=", isempty(path) ? DEFAULT_PATH : path, NULL);
        envp[1] = g_strdup("IFS= \t\n");
        return envp;
}

/* Stop whatever is going on: afterwards no process, no fd, no source is left. */
static void child_stop(Child *c) {
        c->timer_source = sd_event_source_disable_unref(c->timer_source);
        c->defer_source = sd_event_source_disable_unref(c->defer_source);

        /* The whole process group, so that a script's children go too. The group id cannot
         * belong to a stranger yet: until we reap the child its pid stays taken, and after that
         * the group lives on while any member does, which an open stdout suggests. */
        if (c->pid > 0 && (!c->exited || c->stdout_fd >= 0))
                (void) kill(-c->pid, SIGKILL);
        /* The child source owns the process, so this reaps it (after SIGKILL if need be). */
        c->child_source = sd_event_source_disable_unref(c->child_source);
        c->pid = 0;

        c->stdout_source = sd_event_source_disable_unref(c->stdout_source);
        c->stdout_fd = safe_close(c->stdout_fd);
        c->stdin_fd = safe_close(c->stdin_fd);
}

Child *child_free(Child *c) {
        if (!c)
                return NULL;
        if (c->in_line_callback) {
                /* A line's callback let go of it (the next request found it dead): on_stdout()
                 * frees it when the callback returns. */
                c->free_requested = true;
                return NULL;
        }
        if (c->released && released_children)
                g_ptr_array_remove_fast(released_children, c);

        child_stop(c);
        sd_event_unref(c->event);
        g_free(c->output);
        g_free(c);
        return NULL;
}

/* Report and go quiet. The callback comes last: it may free c. */
static void child_finish(Child *c, bool timed_out) {
        ChildResult r = {
                .exec_error = c->exec_error,
                .timed_out = timed_out,
                .exit_code = timed_out ? -1 : c->exec_error != 0 ? 127 : c->exit_code,
                .signal = timed_out ? 0 : c->signal,
                .output = c->output_len > 0 ? c->output : NULL,
                .output_len = c->output_len,
        };

        child_stop(c);
        if (c->released) {
                child_free(c);   /* off the list of released ones too */
                return;
        }
        c->callback(&r, c->userdata);
}

/* child_spawn_session(): hand over each complete line, and keep what follows. */
static void deliver_lines(Child *c) {
        size_t start = 0;
        if (c->skipping) {
                char *nl = memchr(c->output, '\n', c->output_len);
                if (!nl) {
                        c->output_len = 0;
                        return;
                }
                start = (size_t) (nl - c->output) + 1;
                c->skipping = false;
        }
        for (;;) {
                char *nl = memchr(c->output + start, '\n', c->output_len - start);
                if (!nl)
                        break;
                size_t len = (size_t) (nl - (c->output + start));
                *nl = '\0';
                if (!c->released && !c->free_requested) {
                        c->in_line_callback = true;
                        c->line_callback(c->output + start, len, c->userdata);
                        c->in_line_callback = false;
                }
                start += len + 1;
        }
        memmove(c->output, c->output + start, c->output_len - start);
        c->output_len -= start;
        if (c->output_len == c->output_max) {
                /* A line longer than we keep: dropped whole, never taken for one of its own. */
                c->output_len = 0;
                c->skipping = true;
        }
}

static int on_exec_error(sd_event_source *s, void *userdata) {
        child_finish(userdata, false);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        /* child_stop() kills the process group and reaps the child before the callback. */
        child_finish(userdata, true);
        return 0;
}

static int on_child(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Child *c = userdata;

        c->exited = true;
        /* Killed by a signal: reported as a shell would, 128 + the signal. */
        if (si->si_code == CLD_EXITED)
                c->exit_code = si->si_status;
        else {
                c->signal = si->si_status;
                c->exit_code = 128 + si->si_status;
        }

        /* Both the exit and the end of the output, in whichever order they come. */
        if (c->stdout_fd < 0)
                child_finish(c, false);
        return 0;
}

static int on_stdout(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Child *c = userdata;
        char discard[16384];

        for (unsigned i = 0; i < READ_BURST; i++) {
                char *buf = discard;
                size_t size = sizeof(discard);
                ssize_t n;

                if (c->output_len < c->output_max) {
                        if (c->output_len == c->output_size) {
                                c->output_size = MIN(MAX(c->output_size * 2, 4096U), c->output_max);
                                c->output = g_realloc(c->output, c->output_size);
                        }
                        buf = c->output + c->output_len;
                        size = c->output_size - c->output_len;
                }

                n = read(fd, buf, size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        /* Nothing more will come; the exit code decides. */
                        n = 0;
                }
                if (n == 0) {
                        c->stdout_source = sd_event_source_disable_unref(c->stdout_source);
                        c->stdout_fd = safe_close(c->stdout_fd);
                        if (c->exited)
                                child_finish(c, false);
                        return 0;
                }
                if (buf != discard)
                        c->output_len += (size_t) n;
                if (c->line_callback && buf != discard) {
                        deliver_lines(c);
                        if (c->free_requested) {
                                c->free_requested = false;
                                child_free(c);
                                return 0;
                        }
                }
        }
        return 0;
}

void child_suite_sigmask(sigset_t *ret) {
        sigemptyset(ret);
        sigaddset(ret, SIGTERM);
        sigaddset(ret, SIGINT);
}

static int spawn_setup(posix_spawn_file_actions_t *actions, posix_spawnattr_t *attr, int stdin_fd, int stdout_fd,
                       bool suite_program) {
        sigset_t mask;
        int r;

        /* dup2 first: the pipe may sit on fd 0 or 2 if the daemon was started without them. */
        r = posix_spawn_file_actions_adddup2(actions, stdout_fd, STDOUT_FILENO);
        if (r == 0 && stdin_fd >= 0)
                r = posix_spawn_file_actions_adddup2(actions, stdin_fd, STDIN_FILENO);
        else if (r == 0)
                r = posix_spawn_file_actions_addopen(actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        if (r == 0 && !suite_program)
                r = posix_spawn_file_actions_addopen(actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        /* Whatever a library left open without O_CLOEXEC stays ours. */
        if (r == 0)
                r = posix_spawn_file_actions_addclosefrom_np(actions, STDERR_FILENO + 1);
        if (r != 0)
                return -r;

        /* Own process group, for the kill on timeout; the daemon's blocked SIGCHLD and any
         * ignored signals (SIGPIPE) must not leak into the program. A program of the suite gets
         * the termination signals blocked until it is ready for them. */
        r = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        if (r == 0)
                r = posix_spawnattr_setpgroup(attr, 0);
        if (r == 0) {
                if (suite_program)
                        child_suite_sigmask(&mask);
                else
                        sigemptyset(&mask);
                r = posix_spawnattr_setsigmask(attr, &mask);
        }
        if (r == 0) {
                sigfillset(&mask);
                sigdelset(&mask, SIGKILL);
                sigdelset(&mask, SIGSTOP);
                r = posix_spawnattr_setsigdefault(attr, &mask);
        }
        return -r;
}

/* posix_spawn(): 0 with *ret_pid, a negative errno if the spawn could not be set up, or a
 * positive errno if the program could not be executed (glibc's posix_spawn() reports a failed
 * execve() as its result, so there is no child to speak for it). */
static int spawn(char *const *argv, char *const *envp, int stdin_fd, int stdout_fd, bool suite_program, pid_t *ret_pid) {
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        pid_t pid;
        int r;

        r = posix_spawn_file_actions_init(&actions);
        if (r != 0)
                return -r;
        r = posix_spawnattr_init(&attr);
        if (r != 0) {
                posix_spawn_file_actions_destroy(&actions);
                return -r;
        }
        r = spawn_setup(&actions, &attr, stdin_fd, stdout_fd, suite_program);
        if (r == 0)
                r = posix_spawn(&pid, argv[0], &actions, &attr, argv, envp);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        if (r == 0)
                *ret_pid = pid;
        return r;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Child *, child_free);

int child_spawn(sd_event *event, char *const *argv, char *const *envp, size_t output_max, uint64_t timeout_usec,
                ChildDoneCallback callback, void *userdata, Child **ret) {
        return child_spawn_logging(event, argv, envp, output_max, timeout_usec, false, callback, userdata, ret);
}

static int spawn_child(sd_event *event, char *const *argv, char *const *envp, size_t output_max, uint64_t timeout_usec,
                       bool suite_program, ChildLineCallback line_callback, ChildDoneCallback callback, void *userdata,
                       Child **ret) {
        _cleanup_(child_freep) Child *c = NULL;
        _cleanup_close_ int out_r = -EBADF, out_w = -EBADF, in_r = -EBADF, in_w = -EBADF;
        int fds[2], flags, r;
        pid_t pid = 0;

        assert(event);
        assert(argv && argv[0]);
        assert(envp);
        assert(callback);
        assert(ret);

        r = child_block_sigchld();
        if (r < 0)
                return r;

        /* Non-blocking on our end only: the program's writes must block, not fail. */
        if (pipe2(fds, O_CLOEXEC) < 0)
                return negative_errno();
        out_r = fds[0];
        out_w = fds[1];
        flags = fcntl(out_r, F_GETFL);
        if (flags < 0 || fcntl(out_r, F_SETFL, flags | O_NONBLOCK) < 0)
                return negative_errno();
        if (line_callback) {
                /* Requests are short lines, written whole (PIPE_BUF) without blocking the loop. */
                if (pipe2(fds, O_CLOEXEC) < 0)
                        return negative_errno();
                in_r = fds[0];
                in_w = fds[1];
                flags = fcntl(in_w, F_GETFL);
                if (flags < 0 || fcntl(in_w, F_SETFL, flags | O_NONBLOCK) < 0)
                        return negative_errno();
        }

        c = g_new0(Child, 1);
        c->event = sd_event_ref(event);
        c->callback = callback;
        c->line_callback = line_callback;
        c->userdata = userdata;
        c->stdout_fd = -EBADF;
        c->stdin_fd = -EBADF;
        c->output_max = output_max;

        r = spawn(argv, envp, in_r, out_w, suite_program, &pid);
        if (r < 0)
                return r;
        if (r > 0) {
                /* A result, not an error: reported from the loop like any other. */
                c->exec_error = r;
                r = sd_event_add_defer(event, &c->defer_source, on_exec_error, c);
                if (r < 0)
                        return r;
                *ret = TAKE_PTR(c);
                return 0;
        }

        /* Ours must go, or the end of the output never comes. */
        out_w = safe_close(out_w);
        in_r = safe_close(in_r);
        c->stdin_fd = TAKE_FD(in_w);

        r = sd_event_add_child(event, &c->child_source, pid, WEXITED, on_child, c);
        if (r >= 0)
                r = sd_event_source_set_child_process_own(c->child_source, true);
        if (r < 0) {
                /* Nobody owns the process yet: reap it here. */
                c->child_source = sd_event_source_disable_unref(c->child_source);
                (void) kill(-pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                return r;
        }
        c->pid = pid;

        r = sd_event_add_io(event, &c->stdout_source, out_r, EPOLLIN, on_stdout, c);
        if (r < 0)
                return r;
        c->stdout_fd = TAKE_FD(out_r);

        if (timeout_usec > 0) {
                r = sd_event_add_time_relative(event, &c->timer_source, CLOCK_MONOTONIC, timeout_usec,
                                               USEC_PER_MSEC, on_timeout, c);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(c);
        return 0;
}

int child_spawn_logging(sd_event *event, char *const *argv, char *const *envp, size_t output_max, uint64_t timeout_usec,
                        bool suite_program, ChildDoneCallback callback, void *userdata, Child **ret) {
        return spawn_child(event, argv, envp, output_max, timeout_usec, suite_program, NULL, callback, userdata, ret);
}

int child_spawn_session(sd_event *event, char *const *argv, char *const *envp, size_t line_max,
                        ChildLineCallback line_callback, ChildDoneCallback callback, void *userdata, Child **ret) {
        assert(line_callback);
        return spawn_child(event, argv, envp, line_max, 0, true, line_callback, callback, userdata, ret);
}

int child_send(Child *c, const char *line) {
        size_t len = strlen(line);
        assert(c);
        if (c->stdin_fd < 0)
                return -EPIPE;
        if (len > PIPE_BUF)
                return -E2BIG;
        ssize_t n = write(c->stdin_fd, line, len);
        if (n < 0)
                return errno == EAGAIN ? -ENOBUFS : negative_errno();
        return (size_t) n == len ? 0 : -EIO;
}

int child_set_timeout(Child *c, uint64_t timeout_usec) {
        assert(c);
        if (timeout_usec == 0) {
                if (c->timer_source)
                        (void) sd_event_source_set_enabled(c->timer_source, SD_EVENT_OFF);
                return 0;
        }
        if (c->timer_source) {
                int r = sd_event_source_set_time_relative(c->timer_source, timeout_usec);
                return r < 0 ? r : sd_event_source_set_enabled(c->timer_source, SD_EVENT_ONESHOT);
        }
        return sd_event_add_time_relative(c->event, &c->timer_source, CLOCK_MONOTONIC, timeout_usec, USEC_PER_MSEC,
                                          on_timeout, c);
}

Child *child_release(Child *c, uint64_t timeout_usec) {
        if (!c)
                return NULL;
        c->stdin_fd = safe_close(c->stdin_fd);
        if (c->exec_error != 0 || !c->child_source || child_set_timeout(c, timeout_usec) < 0) {
                child_free(c);
                return NULL;
        }
        c->released = true;   /* child_finish() frees it */
        if (!released_children)
                released_children = g_ptr_array_new();
        g_ptr_array_add(released_children, c);
        return NULL;
}

void child_free_released(void) {
        if (!released_children)
                return;
        while (released_children->len > 0)
                child_free(released_children->pdata[released_children->len - 1]);
        g_clear_pointer(&released_children, g_ptr_array_unref);
}
