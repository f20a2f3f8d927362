/* SPDX-License-Identifier: GPL-3.0-or-later */
/* A whole emailrelay-smtpd session on whatever a client sends: the input is written to one end
 * of a socket pair whose other end is served exactly as an Accept=yes connection is (the real
 * acceptor, session, AUTH, committer and spool on tmpfs), then the client end is shut. The
 * session must end by itself, leave no .new file behind, and never crash; every message it
 * stored must have both files. Only the SMTP parser and session logic are exercised: no TLS,
 * no filters. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>
#include <systemd/sd-event.h>

#include "log.h"
#include "smtpd-server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT (256u * 1024u)

static char *spool_dir;
static char *secrets_file;

static void setup_once(void) {
        sigset_t mask;
        LogConfig lc = LOG_CONFIG_DEFAULT("fuzz-smtp");

        if (spool_dir)
                return;
        lc.to_stderr = false;
        lc.journal = 0;
        (void) log_open(&lc);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        /* tmpfs: the committer's fsyncs cost nothing there. */
        spool_dir = g_strdup("/dev/shm/fuzz-smtp-XXXXXX");
        if (!g_mkdtemp(spool_dir))
                abort();
        secrets_file = g_build_filename(spool_dir, "secrets", NULL);
        if (!g_file_set_contents(secrets_file, "server plain alice secret\nserver none 127.0.0.2 trusted\n", -1, NULL))
                abort();
        g_autofree char *spool = g_build_filename(spool_dir, "spool", NULL);
        if (g_mkdir_with_parents(spool, 0700) < 0)
                abort();
}

/* Remove what the session stored; report a .new file (an unfinished commit) or a half message. */
static void check_and_clean_spool(const char *spool) {
        DIR *d = opendir(spool);
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
        if (getenv("FUZZ_SMTP_VERBOSE"))
                fprintf(stderr, "stored %u message(s)\n", envelopes);
        if (contents != envelopes) {
                fprintf(stderr, "%u content files for %u envelopes\n", contents, envelopes);
                abort();
        }
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Server server = {};
        sd_event_source *client_source = NULL;
        int sv[2];

        if (size > FUZZ_MAX_INPUT)
                return 0;
        setup_once();
        g_autofree char *spool = g_build_filename(spool_dir, "spool", NULL);

        if (sd_event_new(&server.event) < 0 || spool_open(spool, &server.spool) < 0)
                abort();
        server.config = (SmtpdConfig){
                .domain = (char *) "fuzz.test",
                .remote_clients = true,
                .max_size = 100000,
                .idle_timeout = 60,
                .session_timeout = 60,
                .max_recipients = 20,
                .max_sessions = 10,
                .drain_timeout = 1,
                .filter_timeout = 5,
                .pipelining = true,
                .chunking = true,
                .smtputf8 = true,
                .strictparsing = true,
                .enhanced = true,
                .auth = true,
                .auth_delay_ms = 0,
                .max_auth_failures = 3,
                .handshake_timeout = 5,
        };
        server.config.limits = (AcceptorLimits){ .max_connections = 5, .max_connection_rate = 60,
                                                 .max_auth_failures = 10, .max_rejected = 50 };
        g_autofree char *error = NULL;
        if (secrets_load(secrets_file, &server.secrets, &error) < 0)
                abort();

        /* The client end gets the input in its send buffer at once: make room for it all. */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        int big = (int) FUZZ_MAX_INPUT * 2;
        (void) setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        (void) setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        server.acceptor.listeners.items = g_new0(Listener, 1);
        server.acceptor.listeners.items[0] = (Listener){ .fd = sv[0], .name = g_strdup("smtp"), .connected = true };
        server.acceptor.listeners.n = 1;

        size_t sent = 0;
        while (sent < size) {
                ssize_t n = write(sv[1], data + sent, size - sent);
                if (n <= 0)
                        break;      /* the rest is lost, as if the client gave up */
                sent += (size_t) n;
        }
        (void) shutdown(sv[1], SHUT_WR);
        if (sd_event_add_io(server.event, &client_source, sv[1], EPOLLIN, on_client, NULL) < 0)
                abort();

        if (server_start(&server) < 0)
                abort();
        /* The session must end by itself once the client has gone: a loop that waits on it
         * for more than a few seconds of nothing happening is a hang. */
        unsigned idle = 0;
        while (sd_event_get_state(server.event) != SD_EVENT_FINISHED) {
                int r = sd_event_run(server.event, 1000000u);
                if (r < 0)
                        abort();
                if (r == 0 && ++idle > 10) {
                        fprintf(stderr, "session did not end after its client left\n");
                        abort();
                }
        }

        sd_event_source_disable_unref(client_source);
        server_done(&server);
        safe_close(sv[1]);
        secrets_free(server.secrets);
        sasl_config_done(&server.config.auth_config);
        spool_free(server.spool);
        sd_event_unref(server.event);
        check_and_clean_spool(spool);
        return 0;
}
