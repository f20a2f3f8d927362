/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-pop3d: main(). Reads E-MailRelay's options and config file, loads the --pop-auth
 * secrets, adopts or binds its listeners, and runs the event loop until SIGTERM. */

#include <errno.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "macro.h"
#include "options.h"
#include "pop3d.h"

#define PROGRAM "emailrelay-pop3d"

static char *default_domain(void) {
        char name[256] = "";
        if (gethostname(name, sizeof name - 1) < 0 || !*name)
                return g_strdup("localhost");
        return g_strdup(name);
}

static int configure(Server *server, const Options *o) {
        Pop3dConfig *c = &server->config;
        int r;

        *c = (Pop3dConfig){
                .idle_timeout = 1800,     /* E-MailRelay's code default */
                .limits = { .max_connections = 20, .max_connection_rate = 60, .max_auth_failures = 10,
                            .max_rejected = 50 },
                .max_sessions = 1000,
                .drain_timeout = 20,
                .auth_delay_ms = 1000,
                .handshake_timeout = 40,
        };
        c->domain = default_domain();
        c->remote_clients = options_has(o, "remote-clients");
        c->no_delete = options_has(o, "pop-no-delete");
        c->by_name = options_has(o, "pop-by-name");
        if ((r = daemon_acceptor_limits(o, &c->limits)) < 0)
                return r;
        if ((r = daemon_get_uint(o, "idle-timeout", 1, 86400, &c->idle_timeout)) < 0 ||
            (r = daemon_get_uint(o, "connection-timeout", 1, 3600, &c->handshake_timeout)) < 0)
                return r;
        DaemonServerTls t;
        if ((r = daemon_server_tls(o, &t)) < 0)
                return r;
        {
                g_autofree char *error = NULL;
                if ((r = sasl_config_parse(options_get(o, "server-auth-config"), &c->auth_config, &error)) < 0) {
                        log_error("--server-auth-config: %s", error);
                        return r;
                }
        }
        c->tls = t.tls;
        c->stls = t.starttls;
        c->tls_connection = t.connection;
        c->tls_required = t.required;

        const char *auth = options_get(o, "pop-auth");
        if (isempty(auth)) {
                log_error("--pop-auth is required: the POP server needs a secrets file");
                return -EINVAL;
        }
        r = daemon_auth_is_pam("pop-auth", auth);
        if (r < 0)
                return r;
        if (r > 0) {
                c->pam = true;         /* USER/PASS and PLAIN; APOP needs the secret itself */
                return 0;
        }
        g_autofree char *error = NULL;
        r = secrets_load(auth, &server->secrets, &error);
        if (r < 0) {
                log_error("--pop-auth: %s", error);
                return r;
        }
        for (const char *const *w = secrets_warnings(server->secrets); *w; w++)
                log_warning("%s", *w);
        if (!secrets_server_has_plain(server->secrets))
                log_warning("%s: no \"server plain\" secrets: no POP client can log in", auth);
        return 0;
}

static int run(Options *op, int argc, char **argv) {
        Server server = {};
        int r;

        r = daemon_parse_options(op, argc, argv);
        if (r < 0)
                return 2;
        if (daemon_help_version(op, PROGRAM, "[<option> ...] [<config-file>]"))
                return 0;
        if (daemon_open_log(op, PROGRAM) < 0)
                return 2;

        r = configure(&server, op);
        if (r < 0) {
                r = 1;
                goto out;
        }
        const char *spool_dir = options_get_default(op, "spool-dir", SPOOLDIR);
        r = spool_open(spool_dir, &server.spool);
        if (r < 0) {
                log_error_errno(r, "cannot open the spool directory %s: %m", spool_dir);
                r = 1;
                goto out;
        }
        r = sd_event_default(&server.event);
        if (r < 0) {
                log_error_errno(r, "cannot create the event loop: %m");
                r = 1;
                goto out;
        }
        (void) sd_event_set_watchdog(server.event, true);

        r = daemon_open_listeners(&server.acceptor.listeners, op, "pop", "pop-port", 110,
                                  server.config.tls_connection ? "pop3s" : "pop3",
                                  server.config.tls ? NULL : "pop3s");
        if (r < 0) {
                r = 2;   /* E-MailRelay: exit 2 when a listening socket cannot be bound */
                goto out;
        }
        if (daemon_proxy_listeners(op, &server.acceptor.listeners, "pop", &server.acceptor.proxy_from) < 0) {
                r = 1;
                goto out;
        }
        if (server_start(&server) < 0) {
                r = 1;
                goto out;
        }
        (void) sd_notify(false, "READY=1\nSTATUS=ready");
        r = sd_event_loop(server.event);
        r = r < 0 ? 1 : 0;
        log_info("stopped: %" PRIu64 " login%s, %" PRIu64 " message%s deleted", server.n_logins,
                 server.n_logins == 1 ? "" : "s", server.n_deleted, server.n_deleted == 1 ? "" : "s");
out:
        server_done(&server);
        acceptor_nets_done(&server.config.limits.exempt);
        secrets_free(server.secrets);
        tls_context_free(server.config.tls);
        sasl_config_done(&server.config.auth_config);
        g_free(server.config.domain);
        spool_free(server.spool);
        sd_event_unref(server.event);
        return r;
}

int main(int argc, char **argv) {
        daemon_process_setup(true);
        Options o;
        options_init(&o, emailrelay_options, PROG_POP3D);
        int r = run(&o, argc, argv);
        options_done(&o);
        return r;
}
