/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The spool directory in E-MailRelay's layout: <id>.content and <id>.envelope[.new|.busy|.bad].
 *
 * Writing (smtpd, submit): spool_new_message() creates <id>.content (flock'ed for as long as the
 * writer lives, so recovery can tell it from an orphan); the caller writes the content through
 * the returned fd; spool_message_write_envelope() writes <id>.envelope.new; spool_message_sync()
 * makes both durable (fdatasync; may run on a worker thread); spool_message_commit() renames
 * .new to .envelope; spool_sync_dir() makes the renames durable. Only after that may a 250 be
 * sent. spool_commit_message() does the three last steps for a single message; a daemon batches
 * them (group commit: many syncs, one directory fsync).
 *
 * Forwarding: spool_lock() flock()s <id>.envelope and renames it to <id>.envelope.busy; the lock
 * is held until spool_locked_done(), so two forwarders never take the same message and a stale
 * .busy (its owner died) is recognised by spool_recover() because nobody holds its flock.
 *
 * All names are relative to the spool directory's fd. Functions return 0 or a negative errno.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>

#include "envelope.h"

typedef enum SpoolState {
        SPOOL_STATE_NEW,        /* <id>.envelope.new: being filtered, not acknowledged */
        SPOOL_STATE_READY,      /* <id>.envelope */
        SPOOL_STATE_BUSY,       /* <id>.envelope.busy: locked by a forwarder */
        SPOOL_STATE_BAD,        /* <id>.envelope.bad: failed */
        _SPOOL_STATE_MAX,
        _SPOOL_STATE_INVALID = -EINVAL,
} SpoolState;

const char *spool_state_suffix(SpoolState s);   /* ".envelope.new", ".envelope", ... */
const char *spool_state_to_string(SpoolState s); /* "new", "ready", "busy", "bad" */

typedef struct Spool Spool;

/* Open (not create) a spool directory. */
int spool_open(const char *path, Spool **ret);
/* Open a sub-directory of a spool (a --pop-by-name maildrop) as a spool of its own, by the
 * parent's descriptor. A symbolic link is refused with -ELOOP, a non-directory -ENOTDIR. */
int spool_open_sub(const Spool *parent, const char *name, Spool **ret);
Spool *spool_free(Spool *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Spool, spool_free)
const char *spool_path(const Spool *s);
int spool_dir_fd(const Spool *s);

/* Whether a name is a usable message id: non-empty, no '/', no leading '.', printable. */
bool spool_id_is_valid(const char *id);

/* A new id "emailrelay.<pid>.<unix-seconds>.<seq>", seq counting from 1 per Spool. */
char *spool_make_id(Spool *s);

typedef struct SpoolMessage SpoolMessage;

/* Start a message: allocate an id, create <id>.content (mode 0660, O_EXCL) and lock it. */
int spool_new_message(Spool *s, SpoolMessage **ret);
const char *spool_message_id(const SpoolMessage *m);
int spool_message_content_fd(const SpoolMessage *m);
/* Write all of buf to the content file (a convenience over write(2) on the fd). */
int spool_message_write(SpoolMessage *m, const void *buf, size_t len);
/* Write <id>.envelope.new (O_EXCL) from e. May be called once. */
int spool_message_write_envelope(SpoolMessage *m, const Envelope *e);
/* A filter was given the file names: from now on sync by name, since it may have renamed new
 * files into place (E-MailRelay's SpamAssassin recipe does). */
void spool_message_set_replaceable(SpoolMessage *m);
/* fdatasync content and envelope (by name once replaceable). Thread-safe with respect to other
 * messages. */
int spool_message_sync(SpoolMessage *m);
/* rename .envelope.new -> .envelope. After this, freeing the message no longer deletes it. */
int spool_message_commit(SpoolMessage *m);
/* Make the commit rename to .envelope.bad instead: the message failed but is kept, as
 * E-MailRelay keeps one whose client filter failed in --immediate mode (its reason lines
 * already appended, spool_append_reason()). */
void spool_message_commit_as_failed(SpoolMessage *m);
/* sync + commit + spool_sync_dir, for programs that handle one message at a time. */
int spool_commit_message(SpoolMessage *m);
/* A filter took the message over (abandon): keep whatever files it left, commit nothing. */
void spool_message_disown(SpoolMessage *m);
/* Whether <id>.envelope.new still exists (a filter may have removed it). */
bool spool_message_has_envelope(const SpoolMessage *m);
/* Forget the message: unless committed, unlink its files. Closes fds, releases the lock. */
SpoolMessage *spool_message_free(SpoolMessage *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SpoolMessage, spool_message_free)

/* fsync the directory. */
int spool_sync_dir(Spool *s);

/* The wake-up file (wakeup.h) raised after every commit and unfail; NULL or "" for none.
 * spool_wakeup() raises it now (committer.c calls it once per group commit). */
void spool_set_wakeup_file(Spool *s, const char *path);
const char *spool_wakeup_file(const Spool *s);
void spool_wakeup(Spool *s);

/* Ids of messages in a state, sorted by name (byte order, as E-MailRelay). */
int spool_list(Spool *s, SpoolState state, GPtrArray **ret_ids);

/* Read and parse an envelope. On a malformed file returns -EBADMSG with *ret_error =
 * "<spool>/<file>: line N: <what>". */
int spool_read_envelope(Spool *s, const char *id, SpoolState state, Envelope *ret, char **ret_error);

/* Open a message's <id>.content for reading: a regular file, never through a symbolic link
 * (-ELOOP) nor anything else that is not a regular file (-EFTYPE's stand-in, -EINVAL), so that
 * a planted link cannot mail out or serve a file of the service user's. */
int spool_open_content(const Spool *s, const char *id);

/* Path of a message file, e.g. spool_file_path(s, id, ".content"). */
char *spool_file_path(const Spool *s, const char *id, const char *suffix);

typedef struct SpoolLock SpoolLock;

/* Lock a ready message for forwarding: flock <id>.envelope, rename it to .envelope.busy.
 * -EBUSY if another process holds it, -ENOENT if it is gone (taken or deleted). */
int spool_lock(Spool *s, const char *id, SpoolLock **ret);
const char *spool_lock_id(const SpoolLock *l);
int spool_lock_envelope_fd(const SpoolLock *l);
/* Re-read the locked envelope (a client filter may have edited it). */
int spool_lock_read_envelope(SpoolLock *l, Envelope *ret, char **ret_error);
/* Replace the locked envelope's content atomically (via .busy.tmp), e.g. after
 * --forward-to-some removed the accepted recipients. */
int spool_lock_rewrite_envelope(SpoolLock *l, const Envelope *e);
/* Delivered: unlink the envelope and the content. */
int spool_lock_delete(SpoolLock *l);
/* Failed: append the reason lines, fsync, rename to .envelope.bad. */
int spool_lock_fail(SpoolLock *l, const char *reason, int code);
/* Append the reason lines of spool_lock_fail() to <id>'s envelope in the given state, without
 * renaming it (for a message still being received: .envelope.new). Synced. */
int spool_append_reason(Spool *s, const char *id, SpoolState state, const char *reason, int code);
/* Put back: rename .busy -> .envelope. */
int spool_lock_release(SpoolLock *l);
/* Free the handle; a lock neither deleted, failed nor released is released. */
SpoolLock *spool_lock_free(SpoolLock *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SpoolLock, spool_lock_free)

/* write(2) until all of buf is written (EINTR retried): 0 or a negative errno. */
int spool_write_all(int fd, const void *buf, size_t len);

/* Un-fail: rename <id>.envelope.bad -> <id>.envelope. */
int spool_unfail(Spool *s, const char *id);
/* Remove a message in any unlocked state (ready or bad) and its content. */
int spool_delete(Spool *s, const char *id);

typedef struct SpoolRecoverStats {
        unsigned busy_released;    /* stale .busy put back to .envelope */
        unsigned new_removed;      /* stale .new removed with their content (never acknowledged) */
        unsigned orphans_removed;  /* .content with no envelope, unlocked and older than min_age */
} SpoolRecoverStats;

/* Recover what a crash left behind. Only files nobody holds a flock on are touched; orphan
 * content files must also be older than min_age_seconds (a writer creates the content before
 * it locks it). */
int spool_recover(Spool *s, unsigned min_age_seconds, SpoolRecoverStats *ret_stats);
