/* SPDX-License-Identifier: GPL-3.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "macro.h"
#include "wakeup.h"

const char *wakeup_choose(const char *option_value) {
        if (option_value)
                return *option_value && !streq(option_value, "none") ? option_value : NULL;
        g_autofree char *dir = g_path_get_dirname(WAKEUP_FILE);
        struct stat st;
        return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? WAKEUP_FILE : NULL;
}

int wakeup_raise(const char *path) {
        /* O_EXCL: an existing flag is left alone, so a busy intake makes no inotify events (each
         * one would count towards the path unit's trigger limit). */
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0660);
        if (fd >= 0) {
                close(fd);
                return 0;
        }
        return errno == EEXIST ? 0 : -errno;
}

int wakeup_clear(const char *path) {
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

bool wakeup_is_raised(const char *path) {
        return access(path, F_OK) == 0;
}

static long long now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int wakeup_wait(const char *path, unsigned timeout_ms) {
        g_autofree char *dir = g_path_get_dirname(path);
        int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (fd < 0)
                return -errno;
        int r = 0;
        if (inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR) < 0) {
                r = -errno;
                goto out;
        }
        /* Checked after the watch is in place: a flag created in between is not missed. */
        long long deadline = now_ms() + timeout_ms;
        for (;;) {
                if (wakeup_is_raised(path)) {
                        r = 1;
                        break;
                }
                long long left = deadline - now_ms();
                if (left <= 0)
                        break;
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                int n = poll(&pfd, 1, (int) MIN(left, 60000));
                if (n < 0) {
                        r = -errno;   /* -EINTR too: a signal is for the caller to look at */
                        break;
                }
                char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
                while (read(fd, buf, sizeof buf) > 0)
                        ;
        }
out:
        close(fd);
        return r;
}
