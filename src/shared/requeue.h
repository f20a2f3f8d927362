/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Putting queued messages up for forwarding now: a message waiting for its retry time made due,
 * a failed one put back. Shared by emailrelay-queue (retry, flush) and the front-end's admin
 * interface (flush, unfail-all). Each change is made under the forwarder's lock and synced. */
#pragma once

#include "spool.h"

/* Make a ready message due now (an X-MailRelay-NextRetry line of now appended, in the file's own
 * line ending). Returns 1 when it had to wait, 0 when it was due already, -EBUSY or -ENOENT
 * when a forwarder has it, -EBADMSG with *ret_error (may be NULL) for a malformed envelope. */
int requeue_make_due(Spool *spool, const char *id, long long now, char **ret_error);

/* Every ready message that waits for its retry time, made due now. Messages a forwarder holds
 * are left to it; other problems are logged. Returns how many were made due, or a negative
 * errno when the spool cannot be listed. */
int requeue_all_due(Spool *spool, long long now);

/* A failed message back in the queue (.envelope.bad -> .envelope), and due now. */
int requeue_unfail(Spool *spool, const char *id, long long now);
