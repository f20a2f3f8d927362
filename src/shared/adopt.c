/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adopt.h"
#include "log.h"
#include "macro.h"

/* The spool directory and one level of pop-by-name subdirectories below it. */
#define ADOPT_MAX_DEPTH 1

typedef struct Adoption {
        uid_t uid;
        gid_t gid;
        const char *user;
        AdoptReport report;
        bool scanning;          /* the first walk: count the links of root's multi-link files */
        GHashTable *links;      /* inode -> links found inside the spool */
} Adoption;

/* A root file with several links is the spool's own when all its links are in the spool (a
 * pop-by-name copy made with copy:hardlink); one link outside could be another file's. */
static guint links_inside(const Adoption *a, const struct stat *st) {
        return GPOINTER_TO_UINT(g_hash_table_lookup(a->links, GSIZE_TO_POINTER((gsize) st->st_ino)));
}

/* Every directory from / down to path's parent must be root's and writable by nobody else
 * (the sticky bit makes /tmp-like directories safe: others cannot rename our entries). */
static int check_ancestors(const char *path) {
        g_autofree char *dir = g_path_get_dirname(path);
        for (;;) {
                struct stat st;
                if (lstat(dir, &st) < 0)
                        return log_error_errno(-errno, "cannot take over the spool: cannot examine %s: %m", dir);
                if (st.st_uid != 0)
                        return log_error_errno(-EPERM, "cannot take over the spool %s: its parent directory %s is not root's (uid %u)",
                                               path, dir, (unsigned) st.st_uid);
                if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
                        return log_error_errno(-EPERM, "cannot take over the spool %s: its parent directory %s is writable by others (mode %04o)",
                                               path, dir, (unsigned) (st.st_mode & 07777));
                if (streq(dir, "/"))
                        return 0;
                char *up = g_path_get_dirname(dir);
                g_free(dir);
                dir = up;
        }
}

/* Give one open file or directory (fd, already fstat'ed as st) to the user. */
static int give(Adoption *a, int fd, const struct stat *st, const char *path, bool is_dir) {
        /* Set-id bits never survive on a file (chown clears them; so must we), and a
         * directory keeps its setgid, as tmpfiles.d's 2770 spool has it. */
        mode_t want = (st->st_mode & (is_dir ? 07777 : 01777)) | (is_dir ? S_IRWXU : (S_IRUSR | S_IWUSR));
        if (fchown(fd, a->uid, a->gid) < 0)
                return log_error_errno(-errno, "cannot give %s to user %s: %m", path, a->user);
        if (fchmod(fd, want) < 0)
                return log_error_errno(-errno, "cannot change the mode of %s: %m", path);
        if (is_dir)
                log_info("spool directory %s: owner %u:%u mode %04o -> %s (%u:%u) mode %04o", path, (unsigned) st->st_uid,
                         (unsigned) st->st_gid, (unsigned) (st->st_mode & 07777), a->user, (unsigned) a->uid, (unsigned) a->gid,
                         (unsigned) want);
        return 0;
}

static int adopt_dir(Adoption *a, int dfd, const char *path, int depth) {
        int fd = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return log_error_errno(-errno, "cannot read %s: %m", path);
        }
        rewinddir(d);   /* the dup shares dfd's offset, where the first walk left it */
        int ret = 0;
        struct dirent *de;
        while ((errno = 0, de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                g_autofree char *child = g_build_filename(path, de->d_name, NULL);
                struct stat st;
                if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno == ENOENT)
                                continue;   /* gone meanwhile */
                        ret = log_error_errno(-errno, "cannot examine %s: %m", child);
                        continue;
                }
                if (a->scanning) {
                        if (S_ISREG(st.st_mode) && st.st_uid == 0 && st.st_nlink > 1) {
                                gpointer key = GSIZE_TO_POINTER((gsize) st.st_ino);
                                g_hash_table_insert(a->links, key, GUINT_TO_POINTER(links_inside(a, &st) + 1));
                        }
                        if (!S_ISDIR(st.st_mode) || depth >= ADOPT_MAX_DEPTH)
                                continue;
                        _cleanup_close_ int sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub >= 0)
                                (void) adopt_dir(a, sub, child, depth + 1);
                        continue;
                }
                if (st.st_uid == a->uid && S_ISREG(st.st_mode) && (st.st_mode & (S_IRUSR | S_IWUSR)) == (S_IRUSR | S_IWUSR)) {
                        a->report.files_already++;
                        continue;
                }
                if (st.st_uid != 0 && st.st_uid != a->uid)
                        continue;   /* a third user's: not ours to change */
                if (!(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
                        if (st.st_uid != 0)
                                continue;   /* the user's own link or socket: nothing to give */
                        log_error("spool directory %s: %s is not a regular file or a directory: left alone", path, de->d_name);
                        a->report.refused++;
                        continue;
                }
                bool is_dir = S_ISDIR(st.st_mode);
                if (is_dir && depth >= ADOPT_MAX_DEPTH)
                        continue;   /* deeper than any spool layout: not the spool's */
                _cleanup_close_ int cfd = openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC |
                                                                     (is_dir ? O_DIRECTORY : 0));
                if (cfd < 0) {
                        if (errno == ENOENT)
                                continue;
                        ret = log_error_errno(-errno, "cannot open %s: %m", child);
                        continue;
                }
                /* Checked again on what was opened: the name may have been replaced meanwhile. */
                if (fstat(cfd, &st) < 0 || (is_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) ||
                    (st.st_uid != 0 && st.st_uid != a->uid)) {
                        log_error("spool directory %s: %s changed while being taken over: left alone", path, de->d_name);
                        a->report.refused++;
                        continue;
                }
                if (!is_dir && st.st_uid == 0 && st.st_nlink > 1 && links_inside(a, &st) < st.st_nlink) {
                        log_error("spool directory %s: %s has %u links, not all in the spool: left to root (another "
                                  "file's link would be given away too)", path, de->d_name, (unsigned) st.st_nlink);
                        a->report.refused++;
                        continue;
                }
                if (st.st_uid != a->uid || (is_dir && (st.st_mode & S_IRWXU) != S_IRWXU) ||
                    (!is_dir && (st.st_mode & (S_IRUSR | S_IWUSR)) != (S_IRUSR | S_IWUSR))) {
                        int r = give(a, cfd, &st, child, is_dir);
                        if (r < 0) {
                                ret = r;
                                continue;
                        }
                        if (is_dir)
                                a->report.dirs_changed++;
                        else
                                a->report.files_changed++;
                } else if (!is_dir)
                        a->report.files_already++;
                if (is_dir) {
                        int r = adopt_dir(a, cfd, child, depth + 1);
                        if (r < 0 && ret == 0)
                                ret = r;
                }
        }
        if (errno != 0 && ret == 0)
                ret = log_error_errno(-errno, "cannot read %s: %m", path);
        closedir(d);
        return ret;
}

int spool_adopt(const char *dir, uid_t uid, gid_t gid, const char *user, AdoptReport *ret_report) {
        Adoption a = { .uid = uid, .gid = gid, .user = user };
        g_autoptr(GHashTable) links = g_hash_table_new(g_direct_hash, g_direct_equal);
        a.links = links;
        g_autofree char *path = realpath(dir, NULL);
        int r;

        if (ret_report)
                *ret_report = a.report;
        if (!path)
                return log_error_errno(-errno, "cannot take over the spool %s: %m", dir);
        if ((r = check_ancestors(path)) < 0)
                return r;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(-errno, "cannot take over the spool %s: %m", path);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return log_error_errno(-errno, "cannot take over the spool %s: %m", path);
        if (st.st_uid != 0 && st.st_uid != uid)
                return log_error_errno(-EPERM, "cannot take over the spool %s for user %s: it belongs to uid %u, not root",
                                       path, user, (unsigned) st.st_uid);
        if (st.st_uid != uid || (st.st_mode & S_IRWXU) != S_IRWXU) {
                if ((r = give(&a, fd, &st, path, true)) < 0)
                        return r;
                a.report.dirs_changed++;
        }
        a.scanning = true;
        (void) adopt_dir(&a, fd, path, 0);
        a.scanning = false;
        r = adopt_dir(&a, fd, path, 0);
        if (a.report.dirs_changed || a.report.files_changed || a.report.refused)
                log_info("spool %s taken over for user %s: %u director%s and %u file%s changed, %u already theirs, %u refused",
                         path, user, a.report.dirs_changed, a.report.dirs_changed == 1 ? "y" : "ies", a.report.files_changed,
                         a.report.files_changed == 1 ? "" : "s", a.report.files_already, a.report.refused);
        if (ret_report)
                *ret_report = a.report;
        return r;
}

bool spool_needs_adoption(const char *dir, uid_t uid) {
        struct stat st;
        if (stat(dir, &st) < 0)
                return false;
        if (st.st_uid == 0 && uid != 0)
                return true;
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return false;
        DIR *d = fdopendir(fd);
        if (!d)
                return false;
        fd = -EBADF;   /* the DIR's now */
        bool needs = false;
        struct dirent *de;
        while (!needs && (de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, "..") &&
                    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        needs = st.st_uid == 0;
        closedir(d);
        return needs;
}
