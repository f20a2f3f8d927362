/* SPDX-License-Identifier: GPL-3.0-or-later */
/* A whole emailrelay-smtpd session on whatever a client sends: the input is written to one end
 * of a socket pair whose other end is served exactly as an Accept=yes connection is (the real
 * acceptor, session, AUTH, committer and spool on tmpfs), then the client end is shut. The
 * session must end by itself, leave no .new file behind, and never crash; every message it
 * stored must have both files. Only the SMTP parser and session logic are exercised: no TLS,
 * no filters. */
#include <stdint.h>
#include <stdlib.h>
#include <glib.h>

#include "session.h"
#include "smtpd-server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Server server = {};
        g_autofree char *error = NULL;

        if (size > 256 * 1024)
                return 0;
        const char *dir = fuzz_session_setup("fuzz-smtp");
        g_autofree char *secrets = g_build_filename(dir, "secrets", NULL);
        g_autofree char *spool = g_build_filename(dir, "spool", NULL);
        if (!g_file_test(secrets, G_FILE_TEST_EXISTS) &&
            !g_file_set_contents(secrets, "server plain alice secret\nserver none 127.0.0.2 trusted\n", -1, NULL))
                abort();
        if (g_mkdir_with_parents(spool, 0700) < 0 || sd_event_new(&server.event) < 0 ||
            spool_open(spool, &server.spool) < 0 || secrets_load(secrets, &server.secrets, &error) < 0)
                abort();
        server.config = (SmtpdConfig){
                .domain = (char *) "fuzz.test",
                .remote_clients = true,
                .max_size = 100000,
                .idle_timeout = 60,
                .session_timeout = 60,
                .max_recipients = 20,
                .limits = { .max_connections = 5, .max_connection_rate = 60, .max_auth_failures = 10,
                            .max_rejected = 50 },
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

        int client = fuzz_session_connect(&server.acceptor.listeners, "smtp", data, size);
        if (server_start(&server) < 0)
                abort();
        fuzz_session_run(server.event, client);

        server_done(&server);
        secrets_free(server.secrets);
        sasl_config_done(&server.config.auth_config);
        spool_free(server.spool);
        sd_event_unref(server.event);
        (void) fuzz_session_clean_spool(spool);
        return 0;
}
