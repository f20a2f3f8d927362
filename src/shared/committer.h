/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Group commit of spool messages: sessions hand finished messages to a worker thread, which
 * makes a whole batch durable at once and reports back on the event loop. The loop never
 * blocks on a sync, and the cost per message falls as concurrency rises.
 *
 * A batch of one is made durable with fdatasync of its two files; a larger batch with one
 * syncfs(2) of the spool's filesystem, which costs about one journal commit whatever the batch
 * size. Then the envelopes are renamed into place and the directory is fsync'ed once. */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include "spool.h"

typedef struct Committer Committer;
typedef struct CommitRequest CommitRequest;

/* Called on the event loop when the message is durable (result 0; the message is committed)
 * or failed (negative errno; the caller frees the message, which removes its files). */
typedef void (*CommitCallback)(SpoolMessage *m, int result, void *userdata);

typedef struct CommitterStats {
        uint64_t messages;       /* committed so far */
        uint64_t batches;
        uint64_t failures;
        uint64_t last_latency_us;   /* submit to callback, last message */
        uint64_t max_latency_us;
} CommitterStats;

int committer_new(sd_event *event, Spool *spool, Committer **ret);
/* Waits for the batch in progress; requests not yet done are failed with -ECANCELED without
 * calling their callbacks. */
Committer *committer_free(Committer *c);

/* Queue a message whose content and envelope are written. The message stays owned by the
 * caller, who must not touch it until the callback. Returns a handle for cancelling. */
int committer_submit(Committer *c, SpoolMessage *m, CommitCallback callback, void *userdata,
                     CommitRequest **ret);
/* The session went away: the callback will not be called. The commit itself still happens
 * or has happened; the message is then freed by the committer. */
void committer_cancel(Committer *c, CommitRequest *req);

void committer_get_stats(const Committer *c, CommitterStats *ret);
