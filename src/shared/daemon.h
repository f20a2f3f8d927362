/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Start-up steps every program of the suite shares: options from the config file and then the
 * command line, the log from the logging options, and checked numbers. These log their errors:
 * they are the programs' edge. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "acceptor.h"
#include "dnsbl.h"
#include "listen.h"
#include "options.h"
#include "secrets.h"

/* What each daemon does before anything else: the locale, SIGPIPE ignored, umask 007, SIGCHLD
 * blocked (children are reaped through the event loop) and, with loop_signals, SIGTERM and
 * SIGINT too (the loop takes them through a signalfd), and the soft limit on open files raised
 * to the hard one: a session holds a socket, a POP3 session a lock and a message as well, and
 * outside systemd (LimitNOFILE=) the soft limit is usually 1024. */
void daemon_process_setup(bool loop_signals);

/* For a program that takes SIGTERM and SIGINT through a handler rather than its event loop
 * (the forwarder): install the handler for both, then unblock them. Started by the front-end or
 * smtpd, it came with them blocked (child_suite_sigmask()), so a stop request that arrived
 * earlier is handled now. */
void daemon_handle_termination(void (*handler)(int));

/* The config file is the last non-option argument, else CONFIG_FILE if it exists; its options
 * are read first, then the command line's, which override them. Errors are logged. */
int daemon_parse_options(Options *o, int argc, char **argv);

/* --verbose, --debug, --log-time, --log-address, --log-format, --log-file, --syslog[=facility].
 * -EINVAL, logged, for an unknown --log-format field. */
int daemon_open_log(const Options *o, const char *program);

/* options_get_uint() with the error logged. */
int daemon_get_uint(const Options *o, const char *name, unsigned min, unsigned max, unsigned *v);

/* The listeners of a daemon: the sockets the service manager passed (LISTEN_FDS), or else
 * E-MailRelay's --interface list (entries with another daemon's prefix skipped: kind is
 * "smtp" or "pop") on the port option's value. A passed socket named tls_name is refused (pass
 * NULL when TLS is configured). Logs "<kind> server on port N" for each bound socket. Exit code 2 territory: the
 * caller reports failure as "cannot bind". */
int daemon_open_listeners(ListenerSet *set, const Options *o, const char *kind, const char *port_option,
                          unsigned default_port, const char *socket_name, const char *tls_name);

/* The server TLS options shared by smtpd and pop3d: --server-tls (STARTTLS/STLS),
 * --server-tls-connection, --server-tls-required, --server-tls-certificate (once or twice),
 * --server-tls-verify and --tls-config. ret->tls stays NULL without a certificate. Errors are
 * logged. */
typedef struct DaemonServerTls {
        struct TlsContext *tls;
        bool starttls, connection, required;
} DaemonServerTls;
int daemon_server_tls(const Options *o, DaemonServerTls *ret);

/* --help [--verbose] and --version [--verbose]: print and return 1 when one was given, else 0. */
int daemon_help_version(const Options *o, const char *program, const char *usage);

/* A switch of a list such as --server-smtp-config; flag NULL: accepted and ignored. */
typedef struct DaemonSwitch {
        const char *name;
        bool *flag;
} DaemonSwitch;

/* Apply every item of every value of the option (comma lists) to the table; unknown items are
 * warned about and ignored, as E-MailRelay does. */
void daemon_apply_switches(const Options *o, const char *option, const DaemonSwitch *table, size_t n);

/* One item of E-MailRelay's switch lists (--server-smtp-config, --client-smtp-config): "x",
 * "+x" and "with-x" turn x on; "-x", "nox" and "without-x" turn it off. Returns whether on and
 * the bare name. */
bool daemon_switch_item(const char *item, const char **ret_name);

/* Re-read a secrets file that changed, at most once a second by the caller's monotonic clock
 * (*checked_usec keeps the time of the last look; 0 at first). A bad new file is logged and the
 * previous secrets stay in force. */
void daemon_refresh_secrets(Secrets *secrets, uint64_t now_usec, uint64_t *checked_usec);

/* tls_context_refresh() for a new session, with its outcome logged: a renewed certificate is
 * served from the next connection on. */
void daemon_refresh_tls(struct TlsContext *tls, sd_event *event);

/* --server-auth or --pop-auth (option) given as "pam:", or E-MailRelay's older "/pam" (with a
 * warning): 1 for PAM, 0 for a secrets file, -EOPNOTSUPP (logged) in a build without PAM. */
int daemon_auth_is_pam(const char *option, const char *value);

/* The per-address limits smtpd and pop3d share: --max-connections-per-address,
 * --max-connection-rate-per-address, --max-auth-failures-per-address,
 * --max-rejected-commands-per-address, --limits-exempt (default: loopback) and
 * --limits-ipv6-prefix (default 64). *l holds the
 * program's defaults on entry. Errors are logged. */
int daemon_acceptor_limits(const Options *o, AcceptorLimits *l);

/* --proxy-protocol: mark the named listeners (comma list; "all") as expecting a PROXY protocol
 * header, from the peers in --proxy-protocol-from (default "local": loopback and private
 * networks). kind is "smtp" or "pop": a name of this kind that no listener has is warned
 * about, not an error (the socket unit may not pass that socket); the other kind's names are
 * the other daemon's. */
int daemon_proxy_listeners(const Options *o, ListenerSet *set, const char *kind, AcceptorNets *from);

/* --dnsbl (and --remote-clients, which it needs): *ret stays NULL without it. */
int daemon_dnsbl(const Options *o, DnsblConfig **ret);
