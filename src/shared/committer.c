/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Group commit worker: batches spool commits off the event loop (see committer.h). */

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "committer.h"
#include "macro.h"

struct CommitRequest {
        CommitRequest *next;
        SpoolMessage *message;
        CommitCallback callback;
        void *userdata;
        uint64_t submitted_us;
        int result;
        bool cancelled;      /* only touched on the loop thread */
};

struct Committer {
        sd_event_source *source;
        Spool *spool;
        int event_fd;
        pthread_t thread;
        bool thread_started;

        pthread_mutex_t lock;
        pthread_cond_t wake;
        bool stopping;
        CommitRequest *pending, **pending_tail;   /* loop -> worker */
        CommitRequest *done, **done_tail;         /* worker -> loop */

        CommitterStats stats;   /* loop thread only */
};

static uint64_t now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static void commit_batch(Committer *c, CommitRequest *batch) {
        unsigned n = 0;
        int r = 0;

        for (CommitRequest *q = batch; q; q = q->next)
                n++;

        if (n == 1)
                batch->result = spool_message_sync(batch->message);
        else if (syncfs(spool_dir_fd(c->spool)) < 0) {
                /* syncfs reports write-back errors of the whole filesystem; fall back to
                 * each message's own files to find out which of ours failed. */
                for (CommitRequest *q = batch; q; q = q->next)
                        q->result = spool_message_sync(q->message);
        }

        for (CommitRequest *q = batch; q; q = q->next)
                if (q->result >= 0)
                        q->result = spool_message_commit(q->message);

        r = spool_sync_dir(c->spool);
        if (r < 0)
                for (CommitRequest *q = batch; q; q = q->next)
                        if (q->result >= 0)
                                q->result = r;
        for (CommitRequest *q = batch; q; q = q->next)
                if (q->result >= 0) {
                        spool_wakeup(c->spool);   /* once a batch, after it is durable */
                        break;
                }
}

static void *worker(void *userdata) {
        Committer *c = userdata;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                while (!c->pending && !c->stopping)
                        pthread_cond_wait(&c->wake, &c->lock);
                if (!c->pending && c->stopping)
                        break;
                CommitRequest *batch = c->pending;
                c->pending = NULL;
                c->pending_tail = &c->pending;
                pthread_mutex_unlock(&c->lock);

                commit_batch(c, batch);

                pthread_mutex_lock(&c->lock);
                CommitRequest *last = batch;
                while (last->next)
                        last = last->next;
                *c->done_tail = batch;
                c->done_tail = &last->next;
                uint64_t one = 1;
                (void) !write(c->event_fd, &one, sizeof one);
        }
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

static int on_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Committer *c = userdata;
        uint64_t count;
        CommitRequest *list;

        (void) !read(fd, &count, sizeof count);
        pthread_mutex_lock(&c->lock);
        list = c->done;
        c->done = NULL;
        c->done_tail = &c->done;
        pthread_mutex_unlock(&c->lock);

        if (list)
                c->stats.batches++;
        uint64_t t = now_us();
        while (list) {
                CommitRequest *q = list;
                list = q->next;
                uint64_t latency = t - q->submitted_us;
                c->stats.last_latency_us = latency;
                if (latency > c->stats.max_latency_us)
                        c->stats.max_latency_us = latency;
                if (q->result >= 0)
                        c->stats.messages++;
                else
                        c->stats.failures++;
                if (q->cancelled)
                        spool_message_free(q->message);
                else
                        q->callback(q->message, q->result, q->userdata);
                free(q);
        }
        return 0;
}

int committer_new(sd_event *event, Spool *spool, Committer **ret) {
        Committer *c = calloc(1, sizeof *c);
        int r;

        if (!c)
                return -ENOMEM;
        c->spool = spool;
        c->pending_tail = &c->pending;
        c->done_tail = &c->done;
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->wake, NULL);
        c->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (c->event_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        r = sd_event_add_io(event, &c->source, c->event_fd, EPOLLIN, on_done, c);
        if (r < 0)
                goto fail;
        r = pthread_create(&c->thread, NULL, worker, c);
        if (r > 0) {
                r = -r;
                goto fail;
        }
        c->thread_started = true;
        *ret = c;
        return 0;
fail:
        committer_free(c);
        return r;
}

Committer *committer_free(Committer *c) {
        if (!c)
                return NULL;
        if (c->thread_started) {
                pthread_mutex_lock(&c->lock);
                c->stopping = true;
                pthread_cond_signal(&c->wake);
                pthread_mutex_unlock(&c->lock);
                pthread_join(c->thread, NULL);
        }
        /* The worker drained everything pending before it stopped; what is done but not yet
         * reported is freed here (committed messages stay in the spool). */
        for (CommitRequest *q = c->done; q;) {
                CommitRequest *next = q->next;
                spool_message_free(q->message);
                free(q);
                q = next;
        }
        sd_event_source_disable_unref(c->source);
        safe_close(c->event_fd);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->wake);
        free(c);
        return NULL;
}

int committer_submit(Committer *c, SpoolMessage *m, CommitCallback callback, void *userdata,
                     CommitRequest **ret) {
        CommitRequest *q = calloc(1, sizeof *q);
        if (!q)
                return -ENOMEM;
        q->message = m;
        q->callback = callback;
        q->userdata = userdata;
        q->submitted_us = now_us();

        pthread_mutex_lock(&c->lock);
        *c->pending_tail = q;
        c->pending_tail = &q->next;
        pthread_cond_signal(&c->wake);
        pthread_mutex_unlock(&c->lock);
        if (ret)
                *ret = q;
        return 0;
}

void committer_cancel(Committer *c, CommitRequest *req) {
        /* The request is in the pending list, the worker's batch or the done list; the flag is
         * read only on the loop thread when it is reported. */
        pthread_mutex_lock(&c->lock);
        req->cancelled = true;
        pthread_mutex_unlock(&c->lock);
}

void committer_get_stats(const Committer *c, CommitterStats *ret) {
        *ret = c->stats;
}
