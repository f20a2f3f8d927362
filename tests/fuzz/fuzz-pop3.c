/* SPDX-License-Identifier: GPL-3.0-or-later */
/* A whole emailrelay-pop3d session on whatever a client sends, served as an Accept=yes
 * connection through the real acceptor and session, against a maildrop of three messages on
 * tmpfs (made afresh for each input: DELE and QUIT really delete). The session must end by
 * itself once the client has gone and never crash; what it deleted must be whole messages. */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>
#include <systemd/sd-event.h>

#include "envelope.h"
#include "log.h"
#include "pop3d.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT (64u * 1024u)

static char *work_dir;
static char *secrets_file;

static void setup_once(void) {
        sigset_t mask;
        LogConfig lc = LOG_CONFIG_DEFAULT("fuzz-pop3");

        if (work_dir)
                return;
        lc.to_stderr = false;
        lc.journal = 0;
        (void) log_open(&lc);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        work_dir = g_strdup("/dev/shm/fuzz-pop3-XXXXXX");
        if (!g_mkdtemp(work_dir))
                abort();
        secrets_file = g_build_filename(work_dir, "pop.auth", NULL);
        if (!g_file_set_contents(secrets_file, "server plain alice secret\n", -1, NULL))
                abort();
}

static void fill_maildrop(Spool *spool) {
        static const char *const contents[] = {
                "Subject: one\r\n\r\nfirst\r\n.leading dot\r\n",
                "Subject: two\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n\r\n",
                "no header, no final line end",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(contents); i++) {
                SpoolMessage *m = NULL;
                Envelope e;
                envelope_init(&e);
                e.from = g_strdup("a@b.test");
                g_ptr_array_add(e.to_remote, g_strdup("alice@c.test"));
                if (spool_new_message(spool, &m) < 0 || spool_message_write(m, contents[i], strlen(contents[i])) < 0 ||
                    spool_message_write_envelope(m, &e) < 0 || spool_commit_message(m) < 0)
                        abort();
                spool_message_free(m);
                envelope_done(&e);
        }
}

/* Every message left must still have both files; then remove them all. */
static void check_and_clean(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *e;
        unsigned contents = 0, envelopes = 0;

        if (!d)
                abort();
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                if (g_str_has_suffix(e->d_name, ".content"))
                        contents++;
                else if (g_str_has_suffix(e->d_name, ".envelope"))
                        envelopes++;
                (void) unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
        if (getenv("FUZZ_POP3_VERBOSE"))
                fprintf(stderr, "%u message(s) left of 3\n", envelopes);
        if (contents != envelopes) {
                fprintf(stderr, "%u content files for %u envelopes\n", contents, envelopes);
                abort();
        }
}

static int on_client(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        char buf[65536];
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
        g_autofree char *maildrop = g_build_filename(work_dir, "spool", NULL);
        if (g_mkdir_with_parents(maildrop, 0700) < 0)
                abort();
        if (sd_event_new(&server.event) < 0 || spool_open(maildrop, &server.spool) < 0)
                abort();
        fill_maildrop(server.spool);
        server.config = (Pop3dConfig){
                .domain = (char *) "fuzz.test",
                .remote_clients = true,
                .idle_timeout = 60,
                .limits = { .max_connections = 5, .max_connection_rate = 60, .max_auth_failures = 10, .max_rejected = 50 },
                .max_sessions = 10,
                .drain_timeout = 1,
                .auth_delay_ms = 0,
                .handshake_timeout = 5,
        };
        g_autofree char *error = NULL;
        if (secrets_load(secrets_file, &server.secrets, &error) < 0)
                abort();

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        int big = (int) FUZZ_MAX_INPUT * 2;
        (void) setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        server.acceptor.listeners.items = g_new0(Listener, 1);
        server.acceptor.listeners.items[0] = (Listener){ .fd = sv[0], .name = g_strdup("pop3"), .connected = true };
        server.acceptor.listeners.n = 1;

        size_t sent = 0;
        while (sent < size) {
                ssize_t n = write(sv[1], data + sent, size - sent);
                if (n <= 0)
                        break;
                sent += (size_t) n;
        }
        (void) shutdown(sv[1], SHUT_WR);
        if (sd_event_add_io(server.event, &client_source, sv[1], EPOLLIN, on_client, NULL) < 0)
                abort();
        if (server_start(&server) < 0)
                abort();
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
        check_and_clean(maildrop);
        return 0;
}
