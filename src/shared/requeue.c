/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Putting queued messages up for forwarding now. */

#include <errno.h>
#include <glib.h>
#include <string.h>
#include <unistd.h>

#include "envelope.h"
#include "log.h"
#include "macro.h"
#include "requeue.h"

/* Append "X-MailRelay-NextRetry: <now>" to a locked envelope, after whatever is there and in
 * the file's own line ending. Appending rather than rewriting keeps the file as its writer
 * left it; the last NextRetry line is the one that counts. */
static int append_due_now(SpoolLock *l, bool lf_only, long long now) {
        int fd = spool_lock_envelope_fd(l);
        g_autoptr(GString) text = g_string_new(NULL);
        g_autoptr(GString) line = envelope_retry_lines(NULL, 0, now, lf_only);
        char last = '\n';
        off_t size;
        int r;

        size = lseek(fd, 0, SEEK_END);
        if (size < 0)
                return negative_errno();
        if (size > 0 && pread(fd, &last, 1, size - 1) != 1)
                return -EIO;
        if (last != '\n')
                g_string_append(text, lf_only ? "\n" : "\r\n");
        g_string_append_len(text, line->str, line->len);
        r = spool_write_all(fd, text->str, text->len);
        if (r < 0)
                return r;
        if (fdatasync(fd) < 0)
                return negative_errno();
        return 0;
}

/* Under the forwarder's lock, so that no forwarder appends its own lines at the same moment; the
 * lock is the rename to .busy and back. */
int requeue_make_due(Spool *spool, const char *id, long long now, char **ret_error) {
        g_autoptr(SpoolLock) l = NULL;
        g_auto(Envelope) e = {};
        long long next = 0;
        int r;

        r = spool_lock(spool, id, &l);
        if (r < 0)
                return r;
        r = spool_lock_read_envelope(l, &e, ret_error);
        if (r < 0)
                return r;  /* freeing the lock puts the file back */
        r = envelope_next_retry(&e, &next);
        /* A malformed NextRetry is replaced too: the forwarder then reads a clear value. */
        if (r == -ENOENT || (r >= 0 && next <= now)) {
                r = spool_lock_release(l);
                return r < 0 ? r : 0;
        }
        r = append_due_now(l, e.lf_only, now);
        if (r < 0)
                return r;
        r = spool_lock_release(l);
        return r < 0 ? r : 1;
}

int requeue_all_due(Spool *spool, long long now) {
        g_autoptr(GPtrArray) ready = NULL;
        int r, n = 0;

        r = spool_list(spool, SPOOL_STATE_READY, &ready);
        if (r < 0)
                return r;
        for (guint i = 0; i < ready->len; i++) {
                const char *id = ready->pdata[i];
                g_auto(Envelope) e = {};
                long long next = 0;
                /* Look first without the lock: most messages are due and need nothing. */
                if (spool_read_envelope(spool, id, SPOOL_STATE_READY, &e, NULL) < 0)
                        continue;
                r = envelope_next_retry(&e, &next);
                if (r == -ENOENT || (r >= 0 && next <= now))
                        continue;
                r = requeue_make_due(spool, id, now, NULL);
                if (r > 0)
                        n++;
                else if (r < 0 && r != -EBUSY && r != -ENOENT && r != -EBADMSG)
                        log_warning("cannot make message %s due: %s", id, g_strerror(-r));
        }
        return n;
}

int requeue_unfail(Spool *spool, const char *id, long long now) {
        int r = spool_unfail(spool, id);
        if (r < 0)
                return r;
        /* A message that gave up while waiting keeps its last NextRetry: clear it too. A
         * forwarder that takes it meanwhile is what we want anyway. */
        r = requeue_make_due(spool, id, now, NULL);
        if (r < 0 && r != -EBUSY && r != -ENOENT)
                log_warning("message %s is queued but may wait for its retry time: %s", id, g_strerror(-r));
        return 0;
}
