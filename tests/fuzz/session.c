/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The whole-session fuzz targets' harness (see session.h). */
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>

#include "log.h"
#include "macro.h"
#include "session.h"

#define SOCKET_BUFFER (512 * 1024)

static char *work_dir;

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

/* libFuzzer ends with exit(): take the work directory with it. */
static void remove_dir(void) {
        (void) nftw(work_dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_session_setup(const char *prefix) {
        sigset_t mask;

        if (work_dir)
                return work_dir;
        LogConfig lc = LOG_CONFIG_DEFAULT(prefix);
        lc.to_stderr = false;
        lc.journal = 0;
        (void) log_open(&lc);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        work_dir = g_strdup_printf("/dev/shm/%s-XXXXXX", prefix);
        if (!g_mkdtemp(work_dir))
                abort();
        atexit(remove_dir);
        return work_dir;
}

int fuzz_session_connect(ListenerSet *set, const char *name, const uint8_t *data, size_t size) {
        int sv[2], big = SOCKET_BUFFER;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        (void) setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        (void) setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        set->items = g_new0(Listener, 1);
        set->items[0] = (Listener){ .fd = sv[0], .name = g_strdup(name), .connected = true };
        set->n = 1;
        for (size_t sent = 0; sent < size;) {
                ssize_t n = write(sv[1], data + sent, size - sent);
                if (n <= 0)
                        break;      /* the rest is lost, as if the client gave up */
                sent += (size_t) n;
        }
        (void) shutdown(sv[1], SHUT_WR);
        return sv[1];
}

static int on_client(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        char buf[65536];
        /* Read and drop the replies, so that the session never waits on a full socket. */
        while (read(fd, buf, sizeof buf) > 0)
                ;
        if (revents & (EPOLLHUP | EPOLLERR))
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

void fuzz_session_run(sd_event *event, int client_fd) {
        sd_event_source *source = NULL;
        unsigned idle = 0;

        if (sd_event_add_io(event, &source, client_fd, EPOLLIN, on_client, NULL) < 0)
                abort();
        while (sd_event_get_state(event) != SD_EVENT_FINISHED) {
                int r = sd_event_run(event, 1000000u);
                if (r < 0)
                        abort();
                if (r == 0 && ++idle > 10) {
                        fprintf(stderr, "session did not end after its client left\n");
                        abort();
                }
        }
        sd_event_source_disable_unref(source);
        safe_close(client_fd);
}

unsigned fuzz_session_clean_spool(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *e;
        unsigned contents = 0, envelopes = 0;

        if (!d)
                abort();
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                if (g_str_has_suffix(e->d_name, ".new") || g_str_has_suffix(e->d_name, ".busy")) {
                        fprintf(stderr, "left behind: %s\n", e->d_name);
                        abort();
                }
                if (g_str_has_suffix(e->d_name, ".content"))
                        contents++;
                else if (g_str_has_suffix(e->d_name, ".envelope"))
                        envelopes++;
                (void) unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
        if (getenv("FUZZ_SESSION_VERBOSE"))
                fprintf(stderr, "%u message(s) in %s\n", envelopes, dir);
        if (contents != envelopes) {
                fprintf(stderr, "%u content files for %u envelopes\n", contents, envelopes);
                abort();
        }
        return envelopes;
}
