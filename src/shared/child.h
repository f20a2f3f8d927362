/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Helper programs (filters, address verifiers) as child processes on an sd-event loop: spawned
 * without a shell, stdout collected, killed with their process group on timeout or free.
 *
 * A child gets argv as given (argv[0] is the path to run, no PATH search), the environment
 * given (child_make_envp(): PATH and IFS only), stdin and stderr on /dev/null, stdout on a pipe
 * that we read, no other fds, default signal dispositions, an empty signal mask, and a process
 * group of its own. The first output_max bytes of stdout are kept; the rest is read and thrown
 * away, so that a chatty program never blocks on a full pipe. The result is taken when the
 * program has exited and its stdout has reached EOF (a grandchild that keeps stdout open keeps
 * the child running, until the timeout).
 *
 * SIGCHLD: children are reaped through sd-event child sources, which need SIGCHLD blocked.
 * child_spawn() blocks it in the calling thread; a program that creates threads must block
 * SIGCHLD before doing so, so that every thread inherits it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <systemd/sd-event.h>

typedef struct ChildResult {
        int exec_error;          /* errno when the program could not be run at all (no such
                                  * file, not executable); exit_code is then 127, as a shell
                                  * would say, and no process ran */
        bool timed_out;          /* stopped by the timeout and killed; exit_code is -1 */
        int exit_code;           /* the exit status, or 128 + the signal that killed it */
        int signal;              /* the signal that killed it, 0 if it exited */
        const char *output;      /* the first output_max bytes of stdout (not NUL-terminated;
                                  * NULL when empty) */
        size_t output_len;
} ChildResult;

typedef struct Child Child;

/* Called exactly once, on the loop (never from inside child_spawn()), unless the child is freed
 * first. By then the process is reaped and every fd closed. The result is valid during the
 * callback only; the callback may child_free() the child. */
typedef void (*ChildDoneCallback)(const ChildResult *result, void *userdata);

/* sd-event reaps children through pidfds or waitid() and insists that no SIGCHLD handler reaps
 * them first: block it in the calling thread. */
int child_block_sigchld(void);

/* The reduced environment helpers get: "PATH=<the daemon's PATH, or /usr/local/bin:/usr/bin:
 * /bin>", "IFS= \t\n", NULL. Free with g_strfreev(). */
char **child_make_envp(void);

/* Start argv[0] with argv and envp (both copied as needed by the spawn; the caller keeps
 * them). timeout_usec 0 for none; on timeout the process group gets SIGKILL. Returns 0 with
 * *ret set, or a negative errno when nothing could be set up (then there is no callback); a
 * program that cannot be executed is not an error here but a result (exec_error). */
int child_spawn(sd_event *event, char *const *argv, char *const *envp, size_t output_max, uint64_t timeout_usec,
                ChildDoneCallback callback, void *userdata, Child **ret);

/* The same, for a program of the suite (suite_program true): the daemon's stderr is left to it,
 * since its log lines belong with the daemon's, and it starts with child_suite_sigmask(). */
int child_spawn_logging(sd_event *event, char *const *argv, char *const *envp, size_t output_max, uint64_t timeout_usec,
                        bool suite_program, ChildDoneCallback callback, void *userdata, Child **ret);

/* A long-lived helper of the suite that takes requests, one line each on its stdin, and answers
 * each with one line on its stdout (emailrelay-forward --immediate-session for one SMTP
 * session). line_callback gets every line as it arrives, without its LF and NUL-terminated; it
 * may send the next request, release the child or free it (freed once the callback returns).
 * callback once, when the program has exited and its stdout is at EOF, or on timeout
 * (child_set_timeout()). Lines longer than line_max are dropped. Started as
 * child_spawn_logging() with suite_program. */
typedef void (*ChildLineCallback)(const char *line, size_t len, void *userdata);
int child_spawn_session(sd_event *event, char *const *argv, char *const *envp, size_t line_max,
                        ChildLineCallback line_callback, ChildDoneCallback callback, void *userdata, Child **ret);
/* Write a request (at most PIPE_BUF bytes, written whole) to its stdin. 0, -EPIPE when its
 * stdin is closed, -ENOBUFS when the pipe is full (it is not reading), or another negative errno. */
int child_send(Child *c, const char *line);
/* (Re)arm the timeout from now: when it passes, the process group is killed and the callback
 * reports timed_out. 0 disarms it. */
int child_set_timeout(Child *c, uint64_t timeout_usec);
/* Let it finish on its own: close its stdin (the end of the requests) and free it once it has
 * exited, killing it if that takes longer than timeout_usec; no callback any more. Returns NULL. */
Child *child_release(Child *c, uint64_t timeout_usec);
/* At exit, once the loop has stopped: kill and free the released children still running. */
void child_free_released(void);

/* The signal mask a program of the suite is started with (by the front-end, or by smtpd for
 * --immediate): SIGTERM and SIGINT blocked. A stop request that comes before the program has its
 * handlers or signalfd in place then waits for them, instead of killing it half-started (status
 * 143, nothing logged, a message it was about to put back left to the crash recovery). Each
 * program either keeps them blocked for its event loop (daemon_process_setup(true)) or unblocks
 * them once its handler is installed (daemon_handle_termination()). A user's filter gets the
 * empty mask. */
void child_suite_sigmask(sigset_t *ret);

/* SIGKILL the process group if it may still run, reap the child, close everything; the
 * callback is not called (any more). Returns NULL. */
Child *child_free(Child *c);
