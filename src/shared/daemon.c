/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Start-up steps shared by the programs (see daemon.h). */

#include <errno.h>
#include <glib.h>
#include <glib/gi18n.h>
#include <locale.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "child.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "pamauth.h"
#include "secrets.h"
#include "tls.h"
#include "macro.h"

void daemon_process_setup(bool loop_signals) {
        sigset_t mask;

        setlocale(LC_ALL, "");
        bindtextdomain(GETTEXT_PACKAGE, LOCALEDIR);
        textdomain(GETTEXT_PACKAGE);
        /* Before any thread starts (PAM checks run in threads), so that they inherit the mask. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        if (loop_signals) {
                sigaddset(&mask, SIGTERM);
                sigaddset(&mask, SIGINT);
        }
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        umask(007);
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

void daemon_handle_termination(void (*handler)(int)) {
        /* SA_RESTART: a transaction in hand completes; poll() in a wait still returns. */
        struct sigaction sa = { .sa_handler = handler, .sa_flags = SA_RESTART };
        sigset_t mask;

        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        child_suite_sigmask(&mask);
        sigprocmask(SIG_UNBLOCK, &mask, NULL);
}

int daemon_parse_options(Options *o, int argc, char **argv) {
        g_autofree char *error = NULL;
        Options first;
        int r;

        options_init(&first, o->table, o->program);
        r = options_parse_argv(&first, argc, argv, &error);
        if (r >= 0 && first.n_args > 1) {
                log_error("too many arguments: only one config file may be given");
                r = -EINVAL;
        }
        if (r >= 0) {
                const char *config = first.n_args == 1 ? first.args[0] : (access(CONFIG_FILE, F_OK) == 0 ? CONFIG_FILE : NULL);
                if (config)
                        r = options_parse_config_file(o, config, &error);
        }
        if (r >= 0)
                r = options_parse_argv(o, argc, argv, &error);
        if (r < 0 && error)
                log_error("%s", error);
        options_done(&first);
        return r;
}

int daemon_open_log(const Options *o, const char *program) {
        static const struct {
                const char *name;
                int value;
        } facilities[] = {
                { "mail", LOG_MAIL },     { "user", LOG_USER },     { "daemon", LOG_DAEMON }, { "local0", LOG_LOCAL0 },
                { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 },
                { "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
        };
        LogConfig lc = LOG_CONFIG_DEFAULT(program);
        g_autofree const char **formats = NULL;

        /* --debug: E-MailRelay's debug output, which here is the debug level of --verbose. */
        lc.verbose = options_get_all(o, "verbose", NULL) > 0 || options_has(o, "debug");
        lc.time = options_has(o, "log-time");
        lc.address = options_has(o, "log-address");
        lc.file = options_get(o, "log-file");
        /* --log-format=time,address,...: each may repeat, as a list or as many options. */
        size_t n = options_get_all(o, "log-format", &formats);
        for (size_t i = 0; i < n; i++) {
                g_auto(GStrv) items = g_strsplit(formats[i], ",", -1);
                for (char **it = items; *it; it++) {
                        const char *f = g_strstrip(*it);
                        if (streq(f, "time"))
                                lc.time = true;
                        else if (streq(f, "address"))
                                lc.address = true;
                        else if (streq(f, "port"))
                                lc.port = true;
                        else if (streq(f, "msgid"))
                                lc.msgid = true;
                        else if (!streq(f, "unit") && *f) {  /* unit: no named instances yet */
                                (void) log_open(&lc);
                                log_error("unknown --log-format field \"%s\": use time, unit, address, port "
                                          "or msgid", f);
                                return -EINVAL;
                        }
                }
        }
        if (options_has(o, "syslog")) {
                const char *f = options_get(o, "syslog");
                lc.syslog_facility = LOG_MAIL;
                for (size_t i = 0; f && i < ELEMENTSOF(facilities); i++)
                        if (streq(f, facilities[i].name))
                                lc.syslog_facility = facilities[i].value;
        }
        /* As before: a log file that cannot be opened sends the lines to stderr, not an error. */
        (void) log_open(&lc);
        return 0;
}

int daemon_get_uint(const Options *o, const char *name, unsigned min, unsigned max, unsigned *v) {
        g_autofree char *error = NULL;
        int r = options_get_uint(o, name, min, max, v, &error);
        if (r < 0)
                log_error("%s", error);
        return r;
}

bool daemon_switch_item(const char *item, const char **ret_name) {
        static const struct {
                const char *prefix;
                bool on;
        } prefixes[] = { { "+", true }, { "-", false }, { "with-", true }, { "without-", false }, { "no", false } };

        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                if (g_str_has_prefix(item, prefixes[i].prefix) && item[strlen(prefixes[i].prefix)]) {
                        *ret_name = item + strlen(prefixes[i].prefix);
                        return prefixes[i].on;
                }
        *ret_name = item;
        return true;
}

int daemon_server_tls(const Options *o, DaemonServerTls *ret) {
        g_autofree const char **certs = NULL, **config = NULL;
        g_autofree char *error = NULL;
        DaemonServerTls t = {
                .starttls = options_has(o, "server-tls"),
                .connection = options_has(o, "server-tls-connection"),
                .required = options_has(o, "server-tls-required"),
        };
        size_t n_certs = options_get_all(o, "server-tls-certificate", &certs);
        size_t n_config = options_get_all(o, "tls-config", &config);

        if (t.starttls && t.connection) {
                log_error("--server-tls and --server-tls-connection cannot be combined");
                return -EINVAL;
        }
        if (t.required && !t.starttls && !t.connection) {
                log_error("--server-tls-required needs --server-tls");
                return -EINVAL;
        }
        if ((t.starttls || t.connection) && n_certs == 0) {
                log_error("--server-tls%s needs --server-tls-certificate", t.starttls ? "" : "-connection");
                return -EINVAL;
        }
        if (n_certs > 0) {
                TlsSettings settings = {
                        .server = true,
                        .certificate_files = certs,
                        .n_certificate_files = n_certs,
                        .verify = options_get(o, "server-tls-verify"),
                        .config = config,
                        .n_config = n_config,
                };
                int r = tls_context_new(&settings, &t.tls, &error);
                if (r < 0) {
                        log_error("%s", error);
                        return r;
                }
        } else if (options_has(o, "server-tls-verify"))
                log_warning("--server-tls-verify has no effect without TLS");
        *ret = t;
        return 0;
}

int daemon_open_listeners(ListenerSet *set, const Options *o, const char *kind, const char *port_option,
                          unsigned default_port, const char *socket_name, const char *tls_name) {
        static const char *const prefixes[] = { "smtp=", "pop=", "admin=" };
        g_autofree char *own = g_strconcat(kind, "=", NULL);
        g_autofree const char **interfaces = NULL;
        unsigned port = default_port;
        bool any = false;
        int r;

        r = listeners_adopt(set);
        if (r < 0)
                return log_error_errno(r, "cannot use the sockets passed by the service manager: %m");
        if (r > 0) {
                for (size_t i = 0; i < set->n; i++)
                        if (tls_name && streq(set->items[i].name, tls_name))
                                return log_error_errno(-EOPNOTSUPP, "socket \"%s\" needs TLS: give a TLS certificate option",
                                                       tls_name);
                return 0;
        }

        if ((r = daemon_get_uint(o, port_option, 0, 65535, &port)) < 0)
                return r;
        size_t n = options_get_all(o, "interface", &interfaces);
        for (size_t i = 0; i < n; i++) {
                g_auto(GStrv) items = g_strsplit(interfaces[i], ",", -1);
                for (char **it = items; *it; it++) {
                        const char *addr = g_strstrip(*it);
                        bool other = false;
                        if (!*addr)
                                continue;
                        if (g_str_has_prefix(addr, "client=")) {
                                log_error("--interface: the client= prefix is no longer supported");
                                return -EINVAL;
                        }
                        if (g_str_has_prefix(addr, own))
                                addr += strlen(own);
                        else
                                for (size_t k = 0; k < ELEMENTSOF(prefixes); k++)
                                        other |= g_str_has_prefix(addr, prefixes[k]);
                        if (other)
                                continue;   /* another daemon's */
                        r = listeners_bind(set, addr, (uint16_t) port, socket_name);
                        if (r == -EINVAL && addr[0] != '/')
                                return log_error_errno(r, "--interface %s: not an IP address or an absolute path "
                                                       "(E-MailRelay's interface names and fd#N are not supported)", addr);
                        if (r < 0)
                                return log_error_errno(r, "cannot listen on %s port %u: %m", addr, port);
                        any = true;
                }
        }
        if (!any) {
                r = listeners_bind(set, NULL, (uint16_t) port, socket_name);
                if (r < 0)
                        return log_error_errno(r, "cannot listen on port %u: %m", port);
        }
        for (size_t i = 0; i < set->n; i++)
                log_info("%s server on port %d", kind, socket_local_port(set->items[i].fd));
        return 0;
}

int daemon_help_version(const Options *o, const char *program, const char *usage) {
        bool verbose = options_get_all(o, "verbose", NULL) > 0;

        if (options_has(o, "help")) {
                options_print_help(o, stdout, program, usage, verbose);
                return 1;
        }
        if (options_has(o, "version")) {
                options_print_version(stdout, program, verbose);
                return 1;
        }
        return 0;
}

void daemon_apply_switches(const Options *o, const char *option, const DaemonSwitch *table, size_t n) {
        g_autofree const char **values = NULL;
        size_t n_values = options_get_all(o, option, &values);

        for (size_t i = 0; i < n_values; i++) {
                g_auto(GStrv) items = g_strsplit(values[i], ",", -1);
                for (char **it = items; *it; it++) {
                        const char *name = NULL;
                        size_t k;
                        if (!*g_strstrip(*it))
                                continue;
                        bool on = daemon_switch_item(*it, &name);
                        for (k = 0; k < n && !streq(table[k].name, name); k++)
                                ;
                        if (k == n)
                                log_warning("--%s: unknown item \"%s\" ignored", option, *it);
                        else if (table[k].flag)
                                *table[k].flag = on;
                }
        }
}

void daemon_refresh_secrets(Secrets *secrets, uint64_t now_usec, uint64_t *checked_usec) {
        if (*checked_usec != 0 && now_usec - *checked_usec < 1000000u)
                return;
        *checked_usec = now_usec;
        g_autofree char *error = NULL;
        int r = secrets_reload_if_changed(secrets, &error);
        if (r < 0)
                log_warning("cannot re-read the secrets file: %s (the previous secrets stay in force)", error);
        else if (r > 0) {
                log_info("re-read the secrets file %s", secrets_path(secrets));
                for (const char *const *w = secrets_warnings(secrets); *w; w++)
                        log_warning("%s", *w);
        }
}

void daemon_refresh_tls(TlsContext *tls, sd_event *event) {
        g_autofree char *error = NULL;
        uint64_t now = 0;
        (void) sd_event_now(event, CLOCK_MONOTONIC, &now);
        int r = tls_context_refresh(tls, now, &error);
        if (r < 0)
                log_warning("cannot re-read the TLS credentials: %s (the previous ones stay in force)", error);
        else if (r > 0)
                log_info("re-read the TLS credentials from %s", tls_context_file(tls));
}

int daemon_auth_is_pam(const char *option, const char *value) {
        if (!g_str_has_prefix(value, "pam:") && !streq(value, "/pam"))
                return 0;
        if (!pamauth_available()) {
                log_error("--%s=%s: this build has no PAM (meson -Dpam=enabled, libpam0g-dev)", option, value);
                return -EOPNOTSUPP;
        }
        if (streq(value, "/pam"))
                log_warning("--%s=/pam: the old spelling; use pam:", option);
        else if (!streq(value, "pam:"))
                log_warning("--%s=%s: only the PAM service \"" PAMAUTH_SERVICE "\" is used", option, value);
        return 1;
}

int daemon_acceptor_limits(const Options *o, AcceptorLimits *l) {
        int r;

        if ((r = daemon_get_uint(o, "max-connections-per-address", 0, 1000000, &l->max_connections)) < 0 ||
            (r = daemon_get_uint(o, "max-connection-rate-per-address", 0, 1000000, &l->max_connection_rate)) < 0 ||
            (r = daemon_get_uint(o, "max-auth-failures-per-address", 0, 1000000, &l->max_auth_failures)) < 0 ||
            (r = daemon_get_uint(o, "max-rejected-commands-per-address", 0, 1000000, &l->max_rejected)) < 0)
                return r;
        l->ipv6_prefix = 64;
        if ((r = daemon_get_uint(o, "limits-ipv6-prefix", 16, 128, &l->ipv6_prefix)) < 0)
                return r;
        g_autofree char *error = NULL;
        r = acceptor_nets_parse(&l->exempt, options_get_default(o, "limits-exempt", "127.0.0.0/8,::1"), &error);
        if (r < 0)
                log_error("--limits-exempt: %s", error);
        return r;
}

int daemon_proxy_listeners(const Options *o, ListenerSet *set, const char *kind, AcceptorNets *from) {
        const char *value = options_get(o, "proxy-protocol");
        if (!value)
                return 0;
        g_autofree char *error = NULL;
        if (acceptor_nets_parse(from, options_get_default(o, "proxy-protocol-from", "local"), &error) < 0) {
                log_error("--proxy-protocol-from: %s", error);
                return -EINVAL;
        }
        g_auto(GStrv) names = g_strsplit(value, ",", -1);
        for (char **n = names; *n; n++) {
                const char *name = g_strstrip(*n);
                bool found = false;
                if (!*name) {
                        log_error("--proxy-protocol: an empty listener name");
                        return -EINVAL;
                }
                for (size_t i = 0; i < set->n; i++)
                        if (streq(name, "all") || streq(name, set->items[i].name)) {
                                set->items[i].proxy = true;
                                found = true;
                        }
                static const char *const known[] = { "smtp", "submission", "smtps", "pop3", "pop3s", "all" };
                bool is_known = false;
                for (size_t i = 0; i < ELEMENTSOF(known); i++)
                        is_known = is_known || streq(name, known[i]);
                /* The front-end hands the option to smtpd and pop3d alike: the other daemon's
                 * names are not worth a warning, but one of ours that is missing is (e.g.
                 * "smtp" when --server-tls-connection makes the listener "smtps"). */
                bool ours = streq(kind, "pop") == g_str_has_prefix(name, "pop");
                if (!found) {
                        g_autoptr(GString) have = g_string_new(NULL);
                        for (size_t i = 0; i < set->n; i++)
                                g_string_append_printf(have, "%s%s", i ? ", " : "", set->items[i].name);
                        log_full_errno(is_known && !ours ? LOG_DEBUG : LOG_WARNING, 0,
                                       "--proxy-protocol: no listener named \"%s\" here (listeners: %s)",
                                       name, have->str);
                }
        }
        for (size_t i = 0; i < set->n; i++)
                if (set->items[i].proxy)
                        log_info("listener %s expects a PROXY protocol header on each connection", set->items[i].name);
        return 0;
}

int daemon_dnsbl(const Options *o, DnsblConfig **ret) {
        const char *spec = options_get(o, "dnsbl");
        *ret = NULL;
        if (!spec)
                return 0;
        if (!options_has(o, "remote-clients")) {
                log_error("--dnsbl needs --remote-clients: without it only local and private "
                          "addresses connect, and those are never checked");
                return -EINVAL;
        }
        g_autofree char *error = NULL;
        int r = dnsbl_config_parse(spec, "/etc/resolv.conf", ret, &error);
        if (r < 0)
                log_error("%s", error ? error : g_strerror(-r));   /* it names --dnsbl */
        return r;
}
