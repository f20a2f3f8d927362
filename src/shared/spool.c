/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The spool directory: durable message writes, flock-guarded locking by rename, ordered scans
 * and crash recovery, in E-MailRelay's file layout. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "spool.h"
#include "wakeup.h"

#define SPOOL_FILE_MODE 0660
#define ENVELOPE_MAX_SIZE (64u * 1024u * 1024u)

struct Spool {
        char *path;
        int dir_fd;
        atomic_uint seq;
        char *wakeup_file;   /* raised after each commit; see wakeup.h */
        atomic_bool wakeup_warned;
};

struct SpoolMessage {
        Spool *spool;
        char *id;
        int content_fd;
        int envelope_fd;     /* the .envelope.new, once written */
        bool committed;
        bool replaceable;    /* a filter ran: the files may be new inodes */
        bool commit_failed;  /* commit to .envelope.bad: failed, kept for the administrator */
};

struct SpoolLock {
        Spool *spool;
        char *id;
        int fd;              /* the .busy envelope, flock'ed */
        bool done;
};

static const char *const state_suffixes[_SPOOL_STATE_MAX] = {
        [SPOOL_STATE_NEW] = ".envelope.new",
        [SPOOL_STATE_READY] = ".envelope",
        [SPOOL_STATE_BUSY] = ".envelope.busy",
        [SPOOL_STATE_BAD] = ".envelope.bad",
};

static const char *const state_names[_SPOOL_STATE_MAX] = {
        [SPOOL_STATE_NEW] = "new",
        [SPOOL_STATE_READY] = "ready",
        [SPOOL_STATE_BUSY] = "busy",
        [SPOOL_STATE_BAD] = "bad",
};

const char *spool_state_suffix(SpoolState s) {
        g_assert(s >= 0 && s < _SPOOL_STATE_MAX);
        return state_suffixes[s];
}

const char *spool_state_to_string(SpoolState s) {
        g_assert(s >= 0 && s < _SPOOL_STATE_MAX);
        return state_names[s];
}

int spool_open(const char *path, Spool **ret) {
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();

        Spool *s = g_new0(Spool, 1);
        s->path = g_strdup(path);
        s->dir_fd = fd;
        atomic_init(&s->seq, 0);
        *ret = s;
        return 0;
}

/* fd, or the error for a name that did not open as wanted: -ELOOP if it is a symbolic link
 * (Linux says ENOTDIR or ELOOP, depending on the flags, for a link opened with O_NOFOLLOW). */
static int opened_nofollow(int dir_fd, const char *name, int fd) {
        if (fd >= 0)
                return fd;
        int r = negative_errno();
        struct stat st;
        if ((r == -ENOTDIR || r == -ELOOP) && fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(st.st_mode))
                return -ELOOP;
        return r;
}

int spool_open_sub(const Spool *parent, const char *name, Spool **ret) {
        int fd = opened_nofollow(parent->dir_fd, name,
                                 openat(parent->dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (fd < 0)
                return fd;
        Spool *s = g_new0(Spool, 1);
        s->path = g_build_filename(parent->path, name, NULL);
        s->dir_fd = fd;
        atomic_init(&s->seq, 0);
        *ret = s;
        return 0;
}

Spool *spool_free(Spool *s) {
        if (!s)
                return NULL;
        safe_close(s->dir_fd);
        g_free(s->path);
        g_free(s->wakeup_file);
        g_free(s);
        return NULL;
}

const char *spool_path(const Spool *s) {
        return s->path;
}

int spool_dir_fd(const Spool *s) {
        return s->dir_fd;
}

bool spool_id_is_valid(const char *id) {
        if (isempty(id) || id[0] == '.' || strlen(id) > 200)
                return false;
        for (const char *p = id; *p; p++)
                if (*p == '/' || (unsigned char) *p <= ' ' || (unsigned char) *p >= 0x7f)
                        return false;
        return true;
}

char *spool_make_id(Spool *s) {
        unsigned seq = atomic_fetch_add(&s->seq, 1) + 1;
        return g_strdup_printf("emailrelay.%ld.%lld.%u", (long) getpid(), (long long) time(NULL), seq);
}

char *spool_file_path(const Spool *s, const char *id, const char *suffix) {
        return g_strdup_printf("%s/%s%s", s->path, id, suffix);
}

static char *file_name(const char *id, const char *suffix) {
        return g_strconcat(id, suffix, NULL);
}

int spool_write_all(int fd, const void *buf, size_t len) {
        const char *p = buf;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Create a spool file with the spool's mode whatever the umask (E-MailRelay: 0660, so that
 * the group shares the spool). */
static int create_file(Spool *s, const char *name, int flags) {
        int fd = openat(s->dir_fd, name, flags | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, SPOOL_FILE_MODE);
        if (fd < 0)
                return negative_errno();
        if (fchmod(fd, SPOOL_FILE_MODE) < 0) {
                int r = negative_errno();
                (void) unlinkat(s->dir_fd, name, 0);
                safe_close(fd);
                return r;
        }
        return fd;
}

int spool_new_message(Spool *s, SpoolMessage **ret) {
        for (unsigned attempt = 0; attempt < 100; attempt++) {
                g_autofree char *id = spool_make_id(s);
                g_autofree char *name = file_name(id, ".content");
                int fd = create_file(s, name, O_WRONLY);
                if (fd == -EEXIST)
                        continue;  /* same pid and second as a predecessor: next sequence number */
                if (fd < 0)
                        return fd;
                /* Held until the message is freed: recovery leaves locked files alone. */
                if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                        int r = negative_errno();
                        (void) unlinkat(s->dir_fd, name, 0);
                        safe_close(fd);
                        return r;
                }
                SpoolMessage *m = g_new0(SpoolMessage, 1);
                m->spool = s;
                m->id = TAKE_PTR(id);
                m->content_fd = fd;
                m->envelope_fd = -EBADF;
                *ret = m;
                return 0;
        }
        return -EEXIST;
}

const char *spool_message_id(const SpoolMessage *m) {
        return m->id;
}

int spool_message_content_fd(const SpoolMessage *m) {
        return m->content_fd;
}

int spool_message_write(SpoolMessage *m, const void *buf, size_t len) {
        return spool_write_all(m->content_fd, buf, len);
}

int spool_message_write_envelope(SpoolMessage *m, const Envelope *e) {
        g_autofree char *name = file_name(m->id, ".envelope.new");
        g_autoptr(GString) text = NULL;
        int fd, r;

        g_assert(m->envelope_fd < 0);
        fd = create_file(m->spool, name, O_WRONLY);
        if (fd < 0)
                return fd;
        m->envelope_fd = fd;
        text = envelope_to_string(e);
        r = spool_write_all(fd, text->str, text->len);
        if (r < 0)
                return r;  /* freeing the message removes the partial file */
        return 0;
}

/* Sync a file by name, not through the fd we wrote it with: a server filter may have replaced
 * it by renaming a new file over it (E-MailRelay's own SpamAssassin recipe does), and then it
 * is the new inode that must reach the disk. */
static int sync_by_name(int dir_fd, const char *name) {
        _cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        if (fdatasync(fd) < 0)
                return negative_errno();
        return 0;
}

void spool_message_set_replaceable(SpoolMessage *m) {
        m->replaceable = true;
}

int spool_message_sync(SpoolMessage *m) {
        if (!m->replaceable) {
                /* Nobody else had the names: the fds we wrote through are the files. */
                if (fdatasync(m->content_fd) < 0)
                        return negative_errno();
                if (m->envelope_fd >= 0 && fdatasync(m->envelope_fd) < 0)
                        return negative_errno();
                return 0;
        }
        g_autofree char *content = file_name(m->id, ".content");
        int r = sync_by_name(m->spool->dir_fd, content);
        if (r < 0)
                return r;
        if (m->envelope_fd >= 0) {
                g_autofree char *envelope = file_name(m->id, ".envelope.new");
                r = sync_by_name(m->spool->dir_fd, envelope);
                if (r < 0)
                        return r;
        }
        return 0;
}

void spool_message_commit_as_failed(SpoolMessage *m) {
        m->commit_failed = true;
}

int spool_message_commit(SpoolMessage *m) {
        g_autofree char *from = file_name(m->id, ".envelope.new");
        g_autofree char *to = file_name(m->id, m->commit_failed ? ".envelope.bad" : ".envelope");

        g_assert(m->envelope_fd >= 0);
        if (renameat(m->spool->dir_fd, from, m->spool->dir_fd, to) < 0)
                return negative_errno();
        m->committed = true;
        return 0;
}

void spool_message_disown(SpoolMessage *m) {
        m->committed = true;   /* for spool_message_free: the files are not ours to remove */
}

bool spool_message_has_envelope(const SpoolMessage *m) {
        g_autofree char *name = file_name(m->id, ".envelope.new");
        return faccessat(m->spool->dir_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

int spool_sync_dir(Spool *s) {
        if (fsync(s->dir_fd) < 0)
                return negative_errno();
        return 0;
}

int spool_commit_message(SpoolMessage *m) {
        int r = spool_message_sync(m);
        if (r < 0)
                return r;
        r = spool_message_commit(m);
        if (r < 0)
                return r;
        r = spool_sync_dir(m->spool);
        if (r < 0)
                return r;
        spool_wakeup(m->spool);
        return 0;
}

void spool_set_wakeup_file(Spool *s, const char *path) {
        g_free(s->wakeup_file);
        s->wakeup_file = path && *path ? g_strdup(path) : NULL;
}

const char *spool_wakeup_file(const Spool *s) {
        return s->wakeup_file;
}

void spool_wakeup(Spool *s) {
        if (!s->wakeup_file)
                return;
        int r = wakeup_raise(s->wakeup_file);
        /* The message is safe either way; only its forwarding waits for the timer. Say so once. */
        if (r < 0 && !atomic_exchange(&s->wakeup_warned, true))
                log_warning_errno(r, "cannot create the wake-up file %s (forwarding waits for the timer): %m",
                                  s->wakeup_file);
}

SpoolMessage *spool_message_free(SpoolMessage *m) {
        if (!m)
                return NULL;
        if (!m->committed) {
                /* Envelope first: a crash in between leaves an orphan content file, which
                 * recovery removes, never an envelope without content. */
                if (m->envelope_fd >= 0) {
                        g_autofree char *name = file_name(m->id, ".envelope.new");
                        (void) unlinkat(m->spool->dir_fd, name, 0);
                }
                g_autofree char *content = file_name(m->id, ".content");
                (void) unlinkat(m->spool->dir_fd, content, 0);
        }
        safe_close(m->envelope_fd);
        safe_close(m->content_fd);
        g_free(m->id);
        g_free(m);
        return NULL;
}

static int id_compare(gconstpointer a, gconstpointer b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* Directory entries that end in suffix exactly, as ids, sorted. */
static int list_suffix(int dir_fd, const char *suffix, GPtrArray **ret) {
        int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        DIR *d = fdopendir(fd);
        if (!d) {
                int r = negative_errno();
                safe_close(fd);
                return r;
        }

        GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);
        size_t slen = strlen(suffix);
        struct dirent *de;
        errno = 0;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (n <= slen || !streq(de->d_name + n - slen, suffix))
                        continue;
                g_autofree char *id = g_strndup(de->d_name, n - slen);
                if (!spool_id_is_valid(id))
                        continue;
                g_ptr_array_add(ids, TAKE_PTR(id));
                errno = 0;
        }
        int r = errno > 0 ? -errno : 0;
        closedir(d);
        if (r < 0) {
                g_ptr_array_unref(ids);
                return r;
        }
        g_ptr_array_sort(ids, id_compare);
        *ret = ids;
        return 0;
}

int spool_list(Spool *s, SpoolState state, GPtrArray **ret_ids) {
        return list_suffix(s->dir_fd, spool_state_suffix(state), ret_ids);
}

static int read_fd_all(int fd, size_t limit, GString **ret) {
        g_autoptr(GString) buf = g_string_sized_new(1024);
        char chunk[8192];

        for (;;) {
                ssize_t n = read(fd, chunk, sizeof chunk);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                if (buf->len + (size_t) n > limit)
                        return -EFBIG;
                g_string_append_len(buf, chunk, n);
        }
        *ret = TAKE_PTR(buf);
        return 0;
}

static int parse_envelope_fd(const Spool *s, int fd, const char *name, Envelope *ret, char **ret_error) {
        g_autoptr(GString) text = NULL;
        g_autofree char *error = NULL;
        int r;

        if (lseek(fd, 0, SEEK_SET) < 0)
                return negative_errno();
        r = read_fd_all(fd, ENVELOPE_MAX_SIZE, &text);
        if (r < 0) {
                if (ret_error)
                        *ret_error = g_strdup_printf("%s/%s: %s", s->path, name, g_strerror(-r));
                return r;
        }
        r = envelope_parse(text->str, text->len, ret, &error);
        if (r < 0 && ret_error)
                *ret_error = g_strdup_printf("%s/%s: %s", s->path, name, error);
        return r;
}

int spool_open_content(const Spool *s, const char *id) {
        g_autofree char *name = file_name(id, ".content");
        /* O_NONBLOCK: a FIFO planted in its place must not hang the open. */
        int fd = opened_nofollow(s->dir_fd, name, openat(s->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
                                                                            O_NOCTTY | O_NONBLOCK));
        if (fd < 0)
                return fd;
        struct stat st;
        int r = fstat(fd, &st) < 0 ? negative_errno() : S_ISREG(st.st_mode) ? 0 : -EINVAL;
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        return fd;
}

int spool_read_envelope(Spool *s, const char *id, SpoolState state, Envelope *ret, char **ret_error) {
        g_autofree char *name = file_name(id, spool_state_suffix(state));
        _cleanup_close_ int fd = openat(s->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
                int r = negative_errno();
                if (ret_error)
                        *ret_error = g_strdup_printf("%s/%s: %s", s->path, name, g_strerror(-r));
                return r;
        }
        return parse_envelope_fd(s, fd, name, ret, ret_error);
}

/* Whether fd is still the file at name (nobody renamed another file into its place). */
static bool same_file(int dir_fd, const char *name, int fd) {
        struct stat a, b;
        if (fstat(fd, &a) < 0 || fstatat(dir_fd, name, &b, AT_SYMLINK_NOFOLLOW) < 0)
                return false;
        return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int spool_lock(Spool *s, const char *id, SpoolLock **ret) {
        g_autofree char *ready = file_name(id, ".envelope");
        g_autofree char *busy = file_name(id, ".envelope.busy");
        _cleanup_close_ int fd = openat(s->dir_fd, ready, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EBUSY : negative_errno();
        /* Between our open and flock another forwarder may have taken, finished and replaced
         * the file: only rename what we hold the lock on. */
        if (!same_file(s->dir_fd, ready, fd))
                return -ENOENT;
        if (renameat(s->dir_fd, ready, s->dir_fd, busy) < 0)
                return negative_errno();

        SpoolLock *l = g_new0(SpoolLock, 1);
        l->spool = s;
        l->id = g_strdup(id);
        l->fd = TAKE_FD(fd);
        *ret = l;
        return 0;
}

const char *spool_lock_id(const SpoolLock *l) {
        return l->id;
}

int spool_lock_envelope_fd(const SpoolLock *l) {
        return l->fd;
}

int spool_lock_read_envelope(SpoolLock *l, Envelope *ret, char **ret_error) {
        g_autofree char *busy = file_name(l->id, ".envelope.busy");
        /* A client filter may have replaced the file rather than edited it in place: read by
         * name, and take over the new inode's lock if it changed. */
        if (!same_file(l->spool->dir_fd, busy, l->fd)) {
                _cleanup_close_ int fd = openat(l->spool->dir_fd, busy, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0)
                        return negative_errno();
                if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                        return errno == EWOULDBLOCK ? -EBUSY : negative_errno();
                safe_close(l->fd);
                l->fd = TAKE_FD(fd);
        }
        return parse_envelope_fd(l->spool, l->fd, busy, ret, ret_error);
}

int spool_lock_rewrite_envelope(SpoolLock *l, const Envelope *e) {
        g_autofree char *tmp = file_name(l->id, ".envelope.busy.tmp");
        g_autofree char *busy = file_name(l->id, ".envelope.busy");
        g_autoptr(GString) text = envelope_to_string(e);
        int r;

        (void) unlinkat(l->spool->dir_fd, tmp, 0);
        _cleanup_close_ int fd = create_file(l->spool, tmp, O_RDWR);
        if (fd < 0)
                return fd;
        /* The new inode is locked before it takes the .busy name, so the message is never
         * seen unlocked under that name. */
        if (flock(fd, LOCK_EX | LOCK_NB) < 0 || spool_write_all(fd, text->str, text->len) < 0 || fdatasync(fd) < 0) {
                r = negative_errno();
                (void) unlinkat(l->spool->dir_fd, tmp, 0);
                return r;
        }
        if (renameat(l->spool->dir_fd, tmp, l->spool->dir_fd, busy) < 0) {
                r = negative_errno();
                (void) unlinkat(l->spool->dir_fd, tmp, 0);
                return r;
        }
        safe_close(l->fd);
        l->fd = TAKE_FD(fd);
        return 0;
}

int spool_lock_delete(SpoolLock *l) {
        g_autofree char *busy = file_name(l->id, ".envelope.busy");
        g_autofree char *content = file_name(l->id, ".content");

        g_assert(!l->done);
        /* Envelope first: a crash in between leaves only an orphan content file. */
        if (unlinkat(l->spool->dir_fd, busy, 0) < 0)
                return negative_errno();
        l->done = true;
        if (unlinkat(l->spool->dir_fd, content, 0) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}

/* Append X-MailRelay-Reason and -ReasonCode to an envelope, in the file's own line ending,
 * after whatever reason lines are there, and sync it. */
static int append_reason(int fd, const char *reason, int code) {
        g_autoptr(GString) lines = NULL;
        char last[2] = {};
        bool lf_only = false;
        off_t size = lseek(fd, 0, SEEK_END);
        if (size < 0)
                return negative_errno();
        if (size >= 2 && pread(fd, last, 2, size - 2) == 2)
                lf_only = last[1] == '\n' && last[0] != '\r';
        lines = envelope_reason_lines(reason, code, lf_only);
        int r = spool_write_all(fd, lines->str, lines->len);
        if (r < 0)
                return r;
        return fdatasync(fd) < 0 ? negative_errno() : 0;
}

int spool_append_reason(Spool *s, const char *id, SpoolState state, const char *reason, int code) {
        g_autofree char *name = file_name(id, state_suffixes[state]);
        _cleanup_close_ int fd = openat(s->dir_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        return append_reason(fd, reason, code);
}

int spool_lock_fail(SpoolLock *l, const char *reason, int code) {
        g_autofree char *busy = file_name(l->id, ".envelope.busy");
        g_autofree char *bad = file_name(l->id, ".envelope.bad");

        g_assert(!l->done);
        int r = append_reason(l->fd, reason, code);
        if (r < 0)
                return r;
        if (renameat(l->spool->dir_fd, busy, l->spool->dir_fd, bad) < 0)
                return negative_errno();
        l->done = true;
        return spool_sync_dir(l->spool);
}

int spool_lock_release(SpoolLock *l) {
        g_autofree char *busy = file_name(l->id, ".envelope.busy");
        g_autofree char *ready = file_name(l->id, ".envelope");

        g_assert(!l->done);
        /* Rename while still holding the flock, so nobody sees an unlocked .busy. */
        if (renameat(l->spool->dir_fd, busy, l->spool->dir_fd, ready) < 0)
                return negative_errno();
        l->done = true;
        return 0;
}

SpoolLock *spool_lock_free(SpoolLock *l) {
        if (!l)
                return NULL;
        if (!l->done)
                (void) spool_lock_release(l);
        safe_close(l->fd);
        g_free(l->id);
        g_free(l);
        return NULL;
}

int spool_unfail(Spool *s, const char *id) {
        g_autofree char *bad = file_name(id, ".envelope.bad");
        g_autofree char *ready = file_name(id, ".envelope");

        if (!spool_id_is_valid(id))
                return -EINVAL;
        /* Never replace a ready envelope of the same name (a copy put back by hand). */
        if (renameat2(s->dir_fd, bad, s->dir_fd, ready, RENAME_NOREPLACE) < 0)
                return negative_errno();
        int r = spool_sync_dir(s);
        if (r < 0)
                return r;
        spool_wakeup(s);
        return 0;
}

int spool_delete(Spool *s, const char *id) {
        static const SpoolState states[] = { SPOOL_STATE_READY, SPOOL_STATE_BAD };
        g_autofree char *content = file_name(id, ".content");

        if (!spool_id_is_valid(id))
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(states); i++) {
                g_autofree char *name = file_name(id, spool_state_suffix(states[i]));
                _cleanup_close_ int fd = openat(s->dir_fd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0) {
                        if (errno == ENOENT)
                                continue;
                        return negative_errno();
                }
                /* A forwarder locks before renaming: if it holds the lock, it owns the message. */
                if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                        return errno == EWOULDBLOCK ? -EBUSY : negative_errno();
                if (!same_file(s->dir_fd, name, fd))
                        return -EBUSY;
                if (unlinkat(s->dir_fd, name, 0) < 0)
                        return negative_errno();
                if (unlinkat(s->dir_fd, content, 0) < 0 && errno != ENOENT)
                        return negative_errno();
                return 0;
        }
        return -ENOENT;
}

/* Try to take the flock of a file; true (with the fd in *ret_fd) when nobody holds it. */
static bool unlocked(int dir_fd, const char *name, int *ret_fd) {
        int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return false;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                safe_close(fd);
                return false;
        }
        *ret_fd = fd;
        return true;
}

static bool older_than(int dir_fd, const char *name, unsigned seconds) {
        struct stat st;
        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return false;
        return st.st_mtime + (time_t) seconds <= time(NULL);
}

/* Ids that have an envelope in any state in the spool or in a first-level sub-directory
 * (--pop-by-name maildrops keep their content in the main directory). */
static int collect_envelope_ids(Spool *s, GHashTable *ids) {
        static const char *const suffixes[] = { ".envelope", ".envelope.new", ".envelope.busy",
                                                ".envelope.bad", ".envelope.busy.tmp", ".envelope.new.tmp" };
        g_autoptr(GPtrArray) dirs = g_ptr_array_new_with_free_func(g_free);
        int r;

        g_ptr_array_add(dirs, g_strdup("."));
        {
                int fd = openat(s->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
                if (!d) {
                        r = negative_errno();
                        safe_close(fd);
                        return r;
                }
                struct dirent *de;
                while ((de = readdir(d)))
                        if (de->d_type == DT_DIR && de->d_name[0] != '.')
                                g_ptr_array_add(dirs, g_strdup(de->d_name));
                closedir(d);
        }
        for (guint i = 0; i < dirs->len; i++) {
                _cleanup_close_ int dfd = openat(s->dir_fd, dirs->pdata[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd < 0)
                        continue;
                for (size_t j = 0; j < ELEMENTSOF(suffixes); j++) {
                        g_autoptr(GPtrArray) list = NULL;
                        r = list_suffix(dfd, suffixes[j], &list);
                        if (r < 0)
                                return r;
                        for (guint k = 0; k < list->len; k++)
                                g_hash_table_add(ids, g_strdup(list->pdata[k]));
                }
        }
        return 0;
}

int spool_recover(Spool *s, unsigned min_age_seconds, SpoolRecoverStats *ret_stats) {
        SpoolRecoverStats stats = {};
        g_autoptr(GPtrArray) busy = NULL, news = NULL, contents = NULL;
        g_autoptr(GHashTable) ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        int r;

        /* A .busy nobody holds the flock of belongs to a forwarder that died: put it back. */
        r = spool_list(s, SPOOL_STATE_BUSY, &busy);
        if (r < 0)
                return r;
        for (guint i = 0; i < busy->len; i++) {
                g_autofree char *name = file_name(busy->pdata[i], ".envelope.busy");
                g_autofree char *ready = file_name(busy->pdata[i], ".envelope");
                _cleanup_close_ int fd = -EBADF;
                if (!unlocked(s->dir_fd, name, &fd) || !same_file(s->dir_fd, name, fd))
                        continue;
                if (renameat(s->dir_fd, name, s->dir_fd, ready) == 0)
                        stats.busy_released++;
        }

        /* A .new whose content nobody holds locked was never acknowledged: remove it. */
        r = spool_list(s, SPOOL_STATE_NEW, &news);
        if (r < 0)
                return r;
        for (guint i = 0; i < news->len; i++) {
                g_autofree char *name = file_name(news->pdata[i], ".envelope.new");
                g_autofree char *content = file_name(news->pdata[i], ".content");
                _cleanup_close_ int fd = -EBADF;
                if (!unlocked(s->dir_fd, content, &fd) && faccessat(s->dir_fd, content, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                        continue;
                if (unlinkat(s->dir_fd, name, 0) == 0) {
                        (void) unlinkat(s->dir_fd, content, 0);
                        stats.new_removed++;
                }
        }

        /* Content with no envelope anywhere: a writer that died before its envelope. Writers
         * create the file a moment before they lock it, hence the age condition. */
        r = collect_envelope_ids(s, ids);
        if (r < 0)
                return r;
        r = list_suffix(s->dir_fd, ".content", &contents);
        if (r < 0)
                return r;
        for (guint i = 0; i < contents->len; i++) {
                const char *id = contents->pdata[i];
                g_autofree char *content = file_name(id, ".content");
                _cleanup_close_ int fd = -EBADF;
                if (g_hash_table_contains(ids, id) || !older_than(s->dir_fd, content, min_age_seconds))
                        continue;
                if (!unlocked(s->dir_fd, content, &fd))
                        continue;
                /* Re-check under the lock: the envelope may have appeared meanwhile. */
                bool has_envelope = false;
                for (int st = 0; st < _SPOOL_STATE_MAX && !has_envelope; st++) {
                        g_autofree char *e = file_name(id, state_suffixes[st]);
                        has_envelope = faccessat(s->dir_fd, e, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
                }
                if (!has_envelope && unlinkat(s->dir_fd, content, 0) == 0)
                        stats.orphans_removed++;
        }

        if (stats.busy_released + stats.new_removed + stats.orphans_removed > 0) {
                r = spool_sync_dir(s);
                if (r < 0)
                        return r;
        }
        if (ret_stats)
                *ret_stats = stats;
        return 0;
}
