/* SPDX-License-Identifier: GPL-3.0-or-later */
/* All-or-nothing replacement of a set of files (see setup-write.h). */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "setup-write.h"

typedef struct Pending {
        char *target;     /* root + path */
        char *temporary;  /* the new content, synced; NULL when removing */
        char *backup;     /* hard link to the old file; NULL if there was none */
        bool done;        /* renamed (or removed) into place */
} Pending;

int setup_mkdir_p(const char *path, mode_t mode) {
        g_autofree char *p = g_strdup(path);

        for (char *s = p + 1; ; s++) {
                bool end = *s == '\0';
                if (*s == '/' || end) {
                        *s = '\0';
                        if (mkdir(p, mode) < 0 && errno != EEXIST)
                                return -errno;
                        if (end)
                                break;
                        *s = '/';
                }
        }
        return 0;
}

static int fsync_dir(const char *path) {
        g_autofree char *dir = g_path_get_dirname(path);
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fsync(fd) < 0 ? -errno : 0;
}

static int write_temporary(const char *target, const char *content, mode_t mode, char **ret_path) {
        g_autofree char *dir = g_path_get_dirname(target);
        g_autofree char *base = g_path_get_basename(target);
        g_autofree char *tmp = g_strdup_printf("%s/.%s.setup-XXXXXX", dir, base);
        size_t len = strlen(content);
        int r = 0;

        _cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        /* Before any content: a secret is never readable by others, not even for a moment. */
        if (fchmod(fd, mode) < 0)
                r = -errno;
        for (size_t done = 0; r == 0 && done < len;) {
                ssize_t k = write(fd, content + done, len - done);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        r = -errno;
                else
                        done += (size_t) k;
        }
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlink(tmp);
                return r;
        }
        *ret_path = TAKE_PTR(tmp);
        return 0;
}

static void pending_clear(Pending *p, size_t n) {
        for (size_t i = 0; i < n; i++) {
                if (p[i].temporary)
                        (void) unlink(p[i].temporary);
                if (p[i].backup)
                        (void) unlink(p[i].backup);
                g_free(p[i].target);
                g_free(p[i].temporary);
                g_free(p[i].backup);
        }
        g_free(p);
}

/* Put back what was there before each file that was already replaced. */
static void roll_back(Pending *p, size_t n) {
        for (size_t i = 0; i < n; i++) {
                if (!p[i].done)
                        continue;
                if (p[i].backup) {
                        if (rename(p[i].backup, p[i].target) == 0)
                                g_clear_pointer(&p[i].backup, g_free);
                } else
                        (void) unlink(p[i].target);
                (void) fsync_dir(p[i].target);
        }
}

int setup_write_all(const char *root, const SetupFile *files, size_t n, char **ret_error) {
        Pending *p = g_new0(Pending, n);
        const char *r_root = root && strcmp(root, "/") != 0 ? root : "";
        int r = 0;
        size_t i;

        /* 1: every new content in a synced temporary beside its target. */
        for (i = 0; i < n; i++) {
                p[i].target = g_strconcat(r_root, files[i].path, NULL);
                if (!files[i].content)
                        continue;
                g_autofree char *dir = g_path_get_dirname(p[i].target);
                r = setup_mkdir_p(dir, files[i].dir_mode ? files[i].dir_mode : 0755);
                if (r < 0) {
                        *ret_error = g_strdup_printf("cannot create %s: %s", dir, g_strerror(-r));
                        goto fail;
                }
                r = write_temporary(p[i].target, files[i].content, files[i].mode, &p[i].temporary);
                if (r < 0) {
                        *ret_error = g_strdup_printf("cannot write a temporary beside %s: %s", p[i].target,
                                                     g_strerror(-r));
                        goto fail;
                }
        }

        /* 2: the old files stay reachable under a second name until everything is in place. */
        for (i = 0; i < n; i++) {
                struct stat st;
                if (lstat(p[i].target, &st) < 0 || !S_ISREG(st.st_mode))
                        continue;
                g_autofree char *dir = g_path_get_dirname(p[i].target);
                g_autofree char *base = g_path_get_basename(p[i].target);
                g_autofree char *backup = g_strdup_printf("%s/.%s.setup-old", dir, base);
                (void) unlink(backup);
                if (link(p[i].target, backup) < 0) {
                        r = -errno;
                        *ret_error = g_strdup_printf("cannot keep a copy of %s: %s", p[i].target, g_strerror(-r));
                        goto fail;
                }
                p[i].backup = TAKE_PTR(backup);
        }

        /* 3: into place, one by one; the first failure undoes the others. */
        for (i = 0; i < n; i++) {
                if (p[i].temporary) {
                        if (rename(p[i].temporary, p[i].target) < 0) {
                                r = -errno;
                                *ret_error = g_strdup_printf("cannot replace %s: %s", p[i].target, g_strerror(-r));
                                roll_back(p, n);
                                goto fail;
                        }
                        g_clear_pointer(&p[i].temporary, g_free);
                } else if (unlink(p[i].target) < 0 && errno != ENOENT) {
                        r = -errno;
                        *ret_error = g_strdup_printf("cannot remove %s: %s", p[i].target, g_strerror(-r));
                        roll_back(p, n);
                        goto fail;
                }
                p[i].done = true;
        }
        for (i = 0; i < n; i++) {
                r = fsync_dir(p[i].target);
                if (r < 0 && r != -ENOENT) {
                        *ret_error = g_strdup_printf("cannot sync the directory of %s: %s", p[i].target,
                                                     g_strerror(-r));
                        roll_back(p, n);
                        goto fail;
                }
        }
        r = 0;
fail:
        pending_clear(p, n);  /* removes the temporaries and, after success, the old copies */
        return r;
}
