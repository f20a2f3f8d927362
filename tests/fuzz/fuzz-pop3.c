/* SPDX-License-Identifier: GPL-3.0-or-later */
/* A whole emailrelay-pop3d session on whatever a client sends, served as an Accept=yes
 * connection through the real acceptor and session, against a maildrop of three messages on
 * tmpfs (made afresh for each input: DELE and QUIT really delete). The session must end by
 * itself once the client has gone and never crash; what it deleted must be whole messages. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "envelope.h"
#include "pop3d.h"
#include "session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Server server = {};
        g_autofree char *error = NULL;

        if (size > 64 * 1024)
                return 0;
        const char *dir = fuzz_session_setup("fuzz-pop3");
        g_autofree char *secrets = g_build_filename(dir, "pop.auth", NULL);
        g_autofree char *maildrop = g_build_filename(dir, "spool", NULL);
        if (!g_file_test(secrets, G_FILE_TEST_EXISTS) &&
            !g_file_set_contents(secrets, "server plain alice secret\n", -1, NULL))
                abort();
        if (g_mkdir_with_parents(maildrop, 0700) < 0 || sd_event_new(&server.event) < 0 ||
            spool_open(maildrop, &server.spool) < 0 || secrets_load(secrets, &server.secrets, &error) < 0)
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

        int client = fuzz_session_connect(&server.acceptor.listeners, "pop3", data, size);
        if (server_start(&server) < 0)
                abort();
        fuzz_session_run(server.event, client);

        server_done(&server);
        secrets_free(server.secrets);
        sasl_config_done(&server.config.auth_config);
        spool_free(server.spool);
        sd_event_unref(server.event);
        (void) fuzz_session_clean_spool(maildrop);
        return 0;
}
