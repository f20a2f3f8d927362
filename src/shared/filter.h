/* SPDX-License-Identifier: GPL-3.0-or-later */
/* E-MailRelay's filters (--filter, --client-filter): external programs, exit:N, net:, spam:,
 * spam-edit:, copy: and msgid:, run asynchronously on an sd-event loop with a timeout, with
 * E-MailRelay's exit codes and <<response>>/[[reason]] output. deliver:, split: and mx: are not
 * supported yet.
 *
 * Programs are spawned without a shell (child.h): argv is the words of the spec (split on
 * spaces and tabs, no quoting) followed by the content and envelope paths; stdin and stderr are
 * /dev/null, stdout is read (the first 64 KiB kept, the first 4 KiB searched for <<...>> and
 * [[...]] lines, the rest drained); the environment is PATH (the daemon's, or /usr/local/bin:
 * /usr/bin:/bin) and IFS only; no other fds, default signal dispositions, an empty signal mask,
 * and a process group of its own, which is killed with SIGKILL on timeout or cancel. The result
 * is taken when the program has exited and its stdout has reached EOF.
 *
 * SIGCHLD: children are reaped through sd-event child sources, which need SIGCHLD blocked.
 * filter_chain_run() blocks it in the calling thread when the chain has programs; a program
 * that creates threads must block SIGCHLD before doing so, so that every thread inherits it.
 *
 * copy:[pop;hardlink;nodelete] (or p, h, n) copies the message into every sub-directory of the
 * spool directory (the content file's directory) but "postmaster" and names starting with '.'
 * (links to directories count): the content as <id>.content (link()ed with hardlink, copied
 * where a link cannot cross file systems; not at all with pop), then the envelope file as it
 * stands (.envelope.new or .busy) as <id>.envelope, each through <name>.tmp, fsync and rename,
 * then the sub-directory is fsync'ed. By default the original envelope (and, unless pop, the
 * content: with pop the POP server reads the content from the spool directory) is then
 * deleted and the result is abandon; with nodelete the original stays and the result is ok.
 * With no sub-directories the result is ok with the reason "copy: no sub-directories", a
 * warning for the log. A failure undoes the copies made so far, leaves the original, and fails
 * with response "error". <id> is the content file's name without ".content".
 *
 * msgid:[<domain>] adds "Message-ID: <time.usec.random@domain>" (domain "emailrelay.local" by
 * default) unless the header section (up to the first blank line) has a Message-ID field
 * (any case, continuation lines aside). It goes after the first field if that is a Received
 * field (ours, which stays first), else on top, with the line ending of the first line. The
 * content is rewritten through <content>.tmp, fsync and rename, keeping its mode.
 *
 * copy: and msgid: run synchronously on the loop (local file work), from a deferred event like
 * exit:, never inside the caller's stack.
 *
 * net: connects afresh for every message (E-MailRelay keeps one persistent connection; a
 * connection per message is simpler and survives the filter server restarting), sends
 * "<content path>\n" and reads one reply line. spam: sends "CHECK SPAMC/1.5", spam-edit:
 * "PROCESS SPAMC/1.5", with Content-length and the content; spam-edit: replaces the content
 * file atomically (<content>.tmp, fsync, rename) with spamd's message. Addresses must be
 * numeric (a.b.c.d:port, [v6]:port) or a unix socket path: names would need a resolver. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

typedef enum FilterSide {
        FILTER_SERVER,    /* --filter: runs on <id>.envelope.new before the 250 */
        FILTER_CLIENT,    /* --client-filter: runs on <id>.envelope.busy before forwarding */
        _FILTER_SIDE_MAX,
} FilterSide;

typedef enum FilterResult {
        FILTER_OK,
        FILTER_ABANDON,   /* drop silently: the filter took care of the message */
        FILTER_FAIL,
        _FILTER_RESULT_MAX,
} FilterResult;

typedef struct FilterOutcome {
        FilterResult result;
        int exit_code;           /* the program's exit code (or exit:N; 128 + the signal when
                                  * killed; 127 when it could not be run), -1 for other kinds
                                  * and for a program stopped by the timeout */
        int smtp_code;           /* 4xx/5xx taken from the response, 0 if none (E-MailRelay
                                  * then replies 452) */
        char *response;          /* text for the SMTP client, WITHOUT the code: a filter's
                                  * "<<550 go away>>" gives smtp_code 550 and response "go
                                  * away", so the server composes "<code> <response>".
                                  * "rejected" by default on fail; NULL on ok. Errors of the
                                  * runner itself (timeout, connection failures, spamd protocol
                                  * errors) give "error". */
        char *reason;            /* for the log and X-MailRelay-Reason: the second marked line
                                  * (or after the TAB for net:); if none, the response as the
                                  * filter wrote it, code included. A program that cannot be
                                  * executed gives response "rejected", reason "filter exec
                                  * error: <strerror>", exit code 127 (E-MailRelay's reply).
                                  * On ok usually NULL; if set, a warning to log (the last one
                                  * of the chain), e.g. "copy: no sub-directories". */
        bool rescan;             /* server side: 102, 103, 104 ask for a forwarding pass */
        bool stop_scanning;      /* client side: 102, 104, 105 stop this forwarding pass */
} FilterOutcome;

typedef struct FilterChain FilterChain;

/* Parse --filter values: each may itself be a comma-separated chain; several options chain
 * too. An empty list or "" gives an empty chain (always ok). Errors name the spec:
 * "invalid filter \"net:\": missing address". deliver:, split: and mx: are recognised and
 * reported as "not supported yet" errors until implemented ("filter \"mx:\" is not supported
 * yet"). A relative program is made absolute with the current directory now. Returns 0,
 * -EINVAL with *ret_error (if not NULL) set to a message for g_free(), or another negative
 * errno. */
int filter_chain_parse(const char *const *specs, size_t n_specs, FilterSide side, FilterChain **ret,
                       char **ret_error);
/* Runs in flight keep the chain alive: the owner may free it at any time. */
FilterChain *filter_chain_free(FilterChain *chain);
bool filter_chain_is_empty(const FilterChain *chain);

typedef void (*FilterDoneCallback)(const FilterOutcome *outcome, void *userdata);
typedef struct FilterRun FilterRun;

/* Run the chain on a message: each filter in turn, stopping at the first that does not pass.
 * The callback is called exactly once, on the loop (never from inside filter_chain_run()),
 * unless the run is cancelled first; it gets the outcome of the filter that stopped the chain,
 * or ok with response NULL, with rescan and stop_scanning ORed over all filters run. The
 * outcome is valid during the callback only. After the callback the run frees itself: the
 * caller must forget the handle then (filter_run_cancel() on it from inside the callback is a
 * harmless no-op). A filter that does not finish within timeout_seconds (each filter has its
 * own; 0 for none) is stopped (a program's process group is killed) and the result is fail
 * with response "error" and reason "timeout". ret may be NULL. */
int filter_chain_run(FilterChain *chain, sd_event *event, const char *content_path,
                     const char *envelope_path, unsigned timeout_seconds, FilterDoneCallback callback,
                     void *userdata, FilterRun **ret);
/* Stop a run (SIGKILL the child's process group and reap it, close connections, free
 * everything); the callback is not called. Safe from inside any other callback. Returns
 * NULL. */
FilterRun *filter_run_cancel(FilterRun *run);

/* Map a program's exit code and output to an outcome for a side (E-MailRelay's table; exposed
 * for tests). ok outcomes carry no texts. Free the texts with filter_outcome_done(). */
void filter_outcome_from_exit(FilterSide side, int exit_code, const char *output, size_t output_len,
                              FilterOutcome *ret);
void filter_outcome_done(FilterOutcome *o);

/* A net:, spam: or spam-edit: address: a.b.c.d:port, [v6]:port (or v6:port, split at the
 * last colon), or a unix socket path (starting with '/'). Names are refused: resolving them
 * would block the loop. Shared with the address verifier's net:. Returns 0, or -EINVAL with
 * *ret_error (if not NULL) set to a static message ("missing port", ...). */
/* What the copy: filter does, for emailrelay-filter-copy: the message (only its envelope with
 * pop) into every sub-directory of its spool directory but postmaster and dot-directories,
 * the original removed unless nodelete. 1 when copied, 0 when there are no sub-directories, or a
 * negative errno with *ret_error. */
int filter_copy_to_subdirs(const char *content_path, const char *envelope_path, bool pop, bool hardlink,
                           bool nodelete, char **ret_error);

int filter_parse_address(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len, const char **ret_error);

/* The spam: filter's reading of spamd's reply to CHECK (process false) or PROCESS, for the
 * fuzzer: 1 when complete, with the Spam: header's value (*ret_spam, to free; NULL if none)
 * and, for PROCESS, where the rewritten message lies in `in`; 0 when more is needed (eof
 * false); -EBADMSG with *ret_error (to free). */
int filter_spamd_reply_parse(const char *in, size_t len, bool eof, bool process, char **ret_spam,
                             size_t *ret_body_offset, size_t *ret_body_len, char **ret_error);
