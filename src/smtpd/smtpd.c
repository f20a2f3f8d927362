/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-smtpd: main(). Reads E-MailRelay's options and config file, adopts or binds its
 * listeners, recovers the spool, and runs the event loop until SIGTERM. */

#include <errno.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "macro.h"
#include "options.h"
#include "smtpd-server.h"
#include "wakeup.h"

#define PROGRAM "emailrelay-smtpd"

/* Options of the table that concern smtpd but that this version does not implement yet: an
 * error rather than silently running without them (most are security settings). */
static const char *const unimplemented[] = {
        "delivery-dir", "admin", "admin-terminate", "pop",
};

/* The forwarder beside this program (an installed suite), else in the build tree, else on $PATH. */
static char *find_forwarder(void) {
        static const char *const candidates[] = { "emailrelay-forward", "../forward/emailrelay-forward" };
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
        if (self) {
                g_autofree char *dir = g_path_get_dirname(self);
                for (size_t i = 0; i < ELEMENTSOF(candidates); i++) {
                        char *path = g_build_filename(dir, candidates[i], NULL);
                        if (access(path, X_OK) == 0)
                                return path;
                        g_free(path);
                }
        }
        return g_find_program_in_path("emailrelay-forward");
}

/* --immediate: the forwarder gets the configuration smtpd read (the units' shared file), or what
 * --immediate-config names (the front-end's file of forwarder options). */
static int configure_immediate(SmtpdConfig *c, const Options *o) {
        c->immediate = options_has(o, "immediate");
        if (!c->immediate)
                return 0;
        c->forwarder = find_forwarder();
        if (!c->forwarder) {
                log_error("--immediate: cannot find emailrelay-forward beside " PROGRAM " or on $PATH");
                return -ENOENT;
        }
        const char *config = options_get(o, "immediate-config");
        if (!config)
                config = o->n_args == 1 ? o->args[0] : (access(CONFIG_FILE, F_OK) == 0 ? CONFIG_FILE : "/dev/null");
        c->immediate_config = g_strdup(config);
        return 0;
}

static int parse_anonymous(SmtpdConfig *c, const Options *o) {
        if (!options_has(o, "anonymous"))
                return 0;
        const char *scope = options_get(o, "anonymous");
        if (isempty(scope)) {
                c->anonymous_server = c->anonymous_vrfy = c->anonymous_content = true;
                return 0;
        }
        g_auto(GStrv) items = g_strsplit(scope, ",", -1);
        for (char **it = items; *it; it++) {
                if (streq(*it, "vrfy"))
                        c->anonymous_vrfy = true;
                else if (streq(*it, "server"))
                        c->anonymous_server = true;
                else if (streq(*it, "content"))
                        c->anonymous_content = true;
                else if (streq(*it, "client"))
                        ;   /* the forwarder's */
                else {
                        log_error("--anonymous: unknown scope \"%s\" (vrfy, server, content, client)", *it);
                        return -EINVAL;
                }
        }
        return 0;
}

static char *default_domain(void) {
        char name[256] = "";
        /* No blocking DNS look-up for the canonical name: the host name, as configured. */
        if (gethostname(name, sizeof name - 1) < 0 || !*name)
                return g_strdup("localhost");
        return g_strdup(name);
}

static int configure_auth(Server *server, const Options *o) {
        SmtpdConfig *c = &server->config;
        g_autofree char *error = NULL;
        int r;

        r = sasl_config_parse(options_get(o, "server-auth-config"), &c->auth_config, &error);
        if (r < 0) {
                log_error("--server-auth-config: %s", error);
                return r;
        }
        const char *path = options_get(o, "server-auth");
        if (!path) {
                if (options_has(o, "server-auth-config"))
                        log_warning("--server-auth-config has no effect without --server-auth");
                return 0;
        }
        r = daemon_auth_is_pam("server-auth", path);
        if (r < 0)
                return r;
        if (r > 0) {
                /* No secrets file: no trusted addresses, and PLAIN only. */
                c->auth = c->pam = true;
                return 0;
        }
        if (isempty(path)) {
                log_error("--server-auth: a secrets file is required");
                return -EINVAL;
        }
        r = secrets_load(path, &server->secrets, &error);
        if (r < 0) {
                log_error("--server-auth: %s", error);
                return r;
        }
        for (const char *const *w = secrets_warnings(server->secrets); *w; w++)
                log_warning("%s", *w);
        if (!secrets_server_has_accounts(server->secrets))
                log_warning("%s: no \"server\" accounts: only trusted addresses (\"server none\") can send mail", path);
        c->auth = true;
        return 0;
}

static int configure_tls(Server *server, const Options *o) {
        SmtpdConfig *c = &server->config;
        DaemonServerTls t;
        int r = daemon_server_tls(o, &t);
        if (r < 0)
                return r;
        c->tls = t.tls;
        c->starttls = t.starttls;
        c->tls_connection = t.connection;
        c->tls_required = t.required;
        return 0;
}

static int configure(Server *server, const Options *o) {
        SmtpdConfig *c = &server->config;
        unsigned size = 0;
        int r;

        *c = (SmtpdConfig){
                .idle_timeout = 1800,         /* E-MailRelay's code default */
                .session_timeout = 3600,
                .max_recipients = 1000,
                .limits = { .max_connections = 50, .max_connection_rate = 60, .max_auth_failures = 10,
                            .max_rejected = 50 },
                .max_sessions = 10000,
                .drain_timeout = 20,
                .min_free_bytes = 16u * 1024u * 1024u,
                .filter_timeout = 60,
                .pipelining = true,
                .strictparsing = true,
                .enhanced = true,
                .auth_delay_ms = 1000,
                .max_auth_failures = 3,
                .handshake_timeout = 40,      /* E-MailRelay: --connection-timeout's default */
        };
        for (size_t i = 0; i < ELEMENTSOF(unimplemented); i++)
                if (options_has(o, unimplemented[i])) {
                        log_error("option --%s is not supported by this version of " PROGRAM, unimplemented[i]);
                        return -EOPNOTSUPP;
                }

        c->domain = g_strdup(options_get(o, "domain"));
        if (options_has(o, "domain") && isempty(c->domain)) {
                log_error("--domain: an empty domain is not allowed");
                return -EINVAL;
        }
        if (!c->domain)
                c->domain = default_domain();
        c->remote_clients = options_has(o, "remote-clients");
        if ((r = daemon_acceptor_limits(o, &c->limits)) < 0 || (r = daemon_dnsbl(o, &c->dnsbl)) < 0)
                return r;
        if ((r = parse_anonymous(c, o)) < 0)
                return r;
        if ((r = daemon_get_uint(o, "size", 0, UINT32_MAX, &size)) < 0)
                return r;
        c->max_size = size;
        if ((r = daemon_get_uint(o, "idle-timeout", 1, 86400, &c->idle_timeout)) < 0 ||
            (r = daemon_get_uint(o, "session-timeout", 1, 7 * 86400, &c->session_timeout)) < 0 ||
            (r = daemon_get_uint(o, "max-recipients", 1, 100000, &c->max_recipients)) < 0 ||
            (r = daemon_get_uint(o, "filter-timeout", 1, 86400, &c->filter_timeout)) < 0 ||
            (r = daemon_get_uint(o, "connection-timeout", 1, 3600, &c->handshake_timeout)) < 0)
                return r;
        if (options_has(o, "min-free-space")) {
                const char *v = options_get(o, "min-free-space");
                char *end = NULL;
                errno = 0;
                c->min_free_bytes = g_ascii_strtoull(v, &end, 10);
                if (!g_ascii_isdigit(*v) || *end || errno) {
                        log_error("option --min-free-space: value \"%s\" is not a number of bytes", v);
                        return -EINVAL;
                }
        }
        const DaemonSwitch switches[] = {
                { "pipelining", &c->pipelining }, { "chunking", &c->chunking }, { "smtputf8", &c->smtputf8 },
                { "smtputf8strict", &c->smtputf8strict }, { "strictparsing", &c->strictparsing },
                { "enhancedstatuscodes", &c->enhanced },
                { "alabels", NULL }, { "linger", NULL },   /* accepted for compatibility; see the man page */
        };
        daemon_apply_switches(o, "server-smtp-config", switches, ELEMENTSOF(switches));

        if ((r = configure_auth(server, o)) < 0 || (r = configure_tls(server, o)) < 0)
                return r;

        if ((r = configure_immediate(c, o)) < 0)
                return r;

        const char *verifier = options_get(o, "address-verifier");
        if (verifier) {
                g_autofree char *error = NULL;
                r = verifier_parse(verifier, &c->verifier, &error);
                if (r < 0) {
                        log_error("--address-verifier: %s", error ? error : g_strerror(-r));
                        return r;
                }
        }

        g_autofree const char **filters = NULL;
        size_t n_filters = options_get_all(o, "filter", &filters);
        if (n_filters > 0) {
                g_autofree char *error = NULL;
                r = filter_chain_parse(filters, n_filters, FILTER_SERVER, &c->filters, &error);
                if (r < 0) {
                        log_error("%s", error);
                        return r;
                }
        }
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
        spool_set_wakeup_file(server.spool, wakeup_choose(options_get(op, "wakeup-file")));
        server.config.rescan_file = g_strdup(options_has(op, "rescan-file") ? wakeup_choose(options_get(op, "rescan-file"))
                                                                          : spool_wakeup_file(server.spool));
        SpoolRecoverStats rs;
        r = spool_recover(server.spool, 60, &rs);
        if (r < 0)
                log_warning_errno(r, "spool recovery in %s failed: %m", spool_dir);
        else if (rs.new_removed + rs.orphans_removed + rs.busy_released > 0)
                log_info("spool recovery: removed %u unacknowledged message%s and %u orphan content file%s; released %u stale lock%s",
                         rs.new_removed, rs.new_removed == 1 ? "" : "s", rs.orphans_removed, rs.orphans_removed == 1 ? "" : "s",
                         rs.busy_released, rs.busy_released == 1 ? "" : "s");

        r = sd_event_default(&server.event);
        if (r < 0) {
                log_error_errno(r, "cannot create the event loop: %m");
                r = 1;
                goto out;
        }
        (void) sd_event_set_watchdog(server.event, true);

        r = daemon_open_listeners(&server.acceptor.listeners, op, "smtp", "port", 25,
                                  server.config.tls_connection ? "smtps" : "smtp",
                                  server.config.tls ? NULL : "smtps");
        if (r < 0) {
                r = 2;   /* E-MailRelay: exit 2 when a listening socket cannot be bound */
                goto out;
        }
        if (daemon_proxy_listeners(op, &server.acceptor.listeners, "smtp", &server.acceptor.proxy_from) < 0) {
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
        log_info("stopped: %" PRIu64 " message%s accepted", server.n_accepted, server.n_accepted == 1 ? "" : "s");
out:
        server_done(&server);
        acceptor_nets_done(&server.config.limits.exempt);
        filter_chain_free(server.config.filters);
        verifier_free(server.config.verifier);
        dnsbl_config_free(server.config.dnsbl);
        sasl_config_done(&server.config.auth_config);
        secrets_free(server.secrets);
        tls_context_free(server.config.tls);
        g_free(server.config.domain);
        g_free(server.config.forwarder);
        g_free(server.config.immediate_config);
        g_free(server.config.rescan_file);
        spool_free(server.spool);
        sd_event_unref(server.event);
        return r;
}

int main(int argc, char **argv) {
        daemon_process_setup(true);
        Options o;
        options_init(&o, emailrelay_options, PROG_SMTPD);
        int r = run(&o, argc, argv);
        options_done(&o);
        return r;
}
