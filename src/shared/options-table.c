/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The option table: every E-MailRelay 2.6.1 option (reference section 1), this suite's own, and
 * which program each concerns. The front-end accepts them all and hands them on. */

#include "config.h"

#include <glib/gi18n-lib.h>

#include "options.h"

/* Short names for the masks; "ALL" also covers the tools, for --help and --version. */
#define SMTPD    PROG_SMTPD
#define POP3D    PROG_POP3D
#define FORWARD  PROG_FORWARD
#define FRONTEND PROG_FRONTEND
#define DAEMONS  PROG_ALL_DAEMONS
#define ALL      (PROG_ALL_DAEMONS | PROG_SUBMIT | PROG_QUEUE | PROG_PASSWD)

/* Keep the fields in one order so that the table reads like the reference. */
#define FLAG(n, s, prog, ...) \
        { .name = (n), .short_name = (s), .arg = OPTION_ARG_NONE, .programs = (prog), __VA_ARGS__ }
#define VALUE(n, s, a, prog, ...) \
        { .name = (n), .short_name = (s), .arg = OPTION_ARG_REQUIRED, .arg_name = (a), \
          .programs = (prog), __VA_ARGS__ }
#define OPTIONAL(n, s, a, prog, ...) \
        { .name = (n), .short_name = (s), .arg = OPTION_ARG_OPTIONAL, .arg_name = (a), \
          .programs = (prog), __VA_ARGS__ }

const OptionDef emailrelay_options[] = {
        /* 1.1 Basic / mode */
        FLAG("as-server", 'd', FRONTEND,
             .help = N_("runs as a server: same as --log --close-stderr")),
        VALUE("as-client", 'q', "<host:port>", FRONTEND,
              .help = N_("forwards the spool once and exits: same as --log --no-syslog --no-daemon "
                         "--dont-serve --forward --forward-to")),
        VALUE("as-proxy", 'y', "<host:port>", FRONTEND,
              .help = N_("store-and-forward as soon as mail is committed: same as --log "
                         "--close-stderr --forward-on-disconnect --forward-to")),
        VALUE("spool-dir", 's', "<dir>", DAEMONS | PROG_SUBMIT | PROG_QUEUE,
              .help = N_("spool directory")),
        FLAG("help", 'h', ALL,
             .help = N_("prints this help and exits (add --verbose for the full list)")),
        FLAG("version", 'V', ALL,
             .help = N_("prints the version and exits (add --verbose for the built-in features)")),

        /* 1.2 SMTP server */
        VALUE("port", 'p', "<port>", SMTPD | FRONTEND,
              .help = N_("SMTP listening port (default 25)")),
        FLAG("remote-clients", 'r', SMTPD | POP3D | FRONTEND,
             .help = N_("allows connections from outside the local and private networks")),
        VALUE("interface", 'I', "<addr-list>", SMTPD | POP3D | FRONTEND, .many = true,
              .help = N_("listening addresses, interface names, socket paths or fd#N, each "
                         "optionally smtp=, pop= or admin= (default all)")),
        VALUE("domain", 'D', "<fqdn>", SMTPD | FORWARD | FRONTEND,
              .help = N_("domain name used in the greeting, EHLO and Received lines "
                         "(default the host's canonical name)")),
        VALUE("filter", 'z', "<program>", SMTPD | FRONTEND, .many = true,
              .help = N_("filter run on each message as it is received")),
        VALUE("filter-timeout", 'W', "<seconds>", SMTPD | FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("timeout for filters and address verifiers (default 60)")),
        VALUE("address-verifier", 0, "<program>", SMTPD | FRONTEND, .verbose_help = true,
              .help = N_("verifies recipient addresses on RCPT TO and VRFY")),
        /* Its "client" scope changes what the SMTP client sends, so the forwarder reads it too. */
        OPTIONAL("anonymous", 'A', "<scope>", SMTPD | FORWARD | FRONTEND, .verbose_help = true,
                 .help = N_("reduces the information given away: vrfy, server, content, client "
                            "(default all)")),
        /* E-MailRelay gives this -s too, which clashes with --spool-dir: no short name here. */
        VALUE("delivery-dir", 0, "<dir>", SMTPD | FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("base directory for local mailbox delivery (default the spool directory)")),
        VALUE("dnsbl", 0, "<config>", SMTPD | FRONTEND, .many = true, .verbose_help = true,
              .help = N_("rejects clients listed by DNS block lists (needs --remote-clients)")),
        /* Listed among the server options by E-MailRelay, but it is the SMTP client's timeout. */
        VALUE("prompt-timeout", 'w', "<seconds>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("timeout for the next hop's greeting (default 20)")),
        VALUE("server-smtp-config", 'Z', "<list>", SMTPD | FRONTEND, .many = true,
              .verbose_help = true,
              .help = N_("SMTP server switches: pipelining, chunking, smtputf8, smtputf8strict, "
                         "strictparsing, alabels, linger")),
        VALUE("size", 'M', "<bytes>", SMTPD | FRONTEND,
              .help = N_("maximum message size (default 0, unlimited)")),
        FLAG("immediate", 'm', SMTPD | FRONTEND, .verbose_help = true,
             .help = N_("forwards each message to the next hop as it is received, and answers "
                        "the client with the next hop's reply")),

        /* 1.3 SMTP client / forwarding */
        VALUE("forward-to", 'o', "<host:port>", FORWARD | FRONTEND,
              .help = N_("next hop to forward messages to")),
        FLAG("forward", 'f', FRONTEND,
             .help = N_("forwards the spool at startup")),
        FLAG("forward-on-disconnect", '1', FRONTEND,
             .help = N_("forwards the spool as soon as mail is committed (E-MailRelay: when a client disconnects)")),
        VALUE("poll", 'O', "<seconds>", FRONTEND,
              .help = N_("forwards the spool at this interval")),
        VALUE("client-filter", 'Y', "<program>", FORWARD | FRONTEND, .many = true,
              .help = N_("filter run on each message as it is forwarded")),
        VALUE("client-interface", '6', "<ip>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("local address for outgoing connections")),
        /* Also the TLS handshake timeout, on both sides (as in E-MailRelay). */
        VALUE("connection-timeout", 'U', "<seconds>", SMTPD | POP3D | FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("timeout for connecting to the next hop and for TLS handshakes (default 40)")),
        VALUE("response-timeout", 'T', "<seconds>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("timeout for the next hop's replies (default 1800)")),
        VALUE("idle-timeout", 0, "<seconds>", SMTPD | POP3D | FRONTEND, .verbose_help = true,
              .help = N_("timeout for idle SMTP and POP clients (default 1800)")),
        FLAG("forward-to-all", 0, FORWARD | FRONTEND, .verbose_help = true,
             .help = N_("fails a message unless the next hop accepts every recipient (default)")),
        FLAG("forward-to-some", 0, FORWARD | FRONTEND, .verbose_help = true,
             .help = N_("delivers to the accepted recipients and fails only the rejected ones")),
        VALUE("client-smtp-config", 'c', "<list>", FORWARD | FRONTEND, .many = true,
              .verbose_help = true,
              .help = N_("SMTP client switches: pipelining, smtputf8strict, eightbitstrict, "
                         "binarymimestrict, linger")),
        VALUE("client-auth", 'C', "<file>", FORWARD | FRONTEND,
              .help = N_("secrets file for authenticating with the next hop")),
        VALUE("client-auth-config", 0, "<config>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("mechanisms the client may use, e.g. m:cram-sha1,plain")),
        FLAG("client-tls", 'j', FORWARD | FRONTEND,
             .help = N_("uses STARTTLS when the next hop offers it")),
        FLAG("client-tls-connection", 'b', FORWARD | FRONTEND,
             .help = N_("connects to the next hop with implicit TLS (SMTPS)")),
        FLAG("client-tls-required", 0, FORWARD | FRONTEND, .verbose_help = true,
             .help = N_("fails rather than forward without TLS")),
        VALUE("client-tls-certificate", 0, "<pem-file>", FORWARD | FRONTEND, .many = true,
              .verbose_help = true,
              .help = N_("client private key and certificate chain (or twice: key, then "
                         "certificate)")),
        VALUE("client-tls-verify", 0, "<ca-list>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("verifies the next hop's certificate against these CAs or <default>")),
        VALUE("client-tls-verify-name", 0, "<cname>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("name the next hop's certificate must carry (needs --client-tls-verify)")),
        VALUE("client-tls-server-name", 0, "<hostname>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("server name sent with TLS SNI")),

        /* 1.4 POP server */
        FLAG("pop", 'B', POP3D | FRONTEND,
             .help = N_("enables the POP3 server (needs --pop-auth)")),
        VALUE("pop-port", 'E', "<port>", POP3D | FRONTEND,
              .help = N_("POP3 listening port (default 110)")),
        VALUE("pop-auth", 'F', "<file>", POP3D | FRONTEND,
              .help = N_("secrets file or pam: for POP3 logins")),
        FLAG("pop-no-delete", 'G', POP3D | FRONTEND, .verbose_help = true,
             .help = N_("ignores POP3 DELE commands")),
        FLAG("pop-by-name", 'J', POP3D | FRONTEND, .verbose_help = true,
             .help = N_("serves each POP3 user the spool sub-directory of that name")),

        /* 1.5 Admin */
        VALUE("admin", 'a', "<port>", FRONTEND, .verbose_help = true,
              .help = N_("enables the admin interface on this port")),
        FLAG("admin-terminate", 'Q', FRONTEND, .verbose_help = true,
             .help = N_("enables the admin terminate command")),

        /* 1.6 Authentication */
        VALUE("server-auth", 'S', "<file>", SMTPD | FRONTEND,
              .help = N_("secrets file or pam: requiring SMTP clients to authenticate")),
        VALUE("server-auth-config", 0, "<config>", SMTPD | POP3D | FRONTEND, .verbose_help = true,
              .help = N_("mechanisms the server offers, e.g. m:;a:plain")),

        /* 1.7 TLS */
        FLAG("server-tls", 'K', SMTPD | POP3D | FRONTEND,
             .help = N_("offers STARTTLS and STLS (needs --server-tls-certificate)")),
        FLAG("server-tls-connection", 0, SMTPD | POP3D | FRONTEND, .verbose_help = true,
             .help = N_("implicit TLS on every connection (SMTPS)")),
        FLAG("server-tls-required", 0, SMTPD | POP3D | FRONTEND, .verbose_help = true,
             .help = N_("requires STARTTLS before AUTH or MAIL")),
        VALUE("server-tls-certificate", 0, "<pem-file>", SMTPD | POP3D | FRONTEND, .many = true,
              .help = N_("server private key and certificate chain (or twice: key, then "
                         "certificate)")),
        VALUE("server-tls-verify", 0, "<ca-list>", SMTPD | POP3D | FRONTEND, .verbose_help = true,
              .help = N_("requires and verifies client certificates against these CAs")),
        VALUE("tls-config", '9', "<list>", SMTPD | POP3D | FORWARD | FRONTEND, .many = true,
              .verbose_help = true,
              .help = N_("TLS settings, e.g. tlsv1.2 for the minimum protocol version")),

        /* 1.8 Process */
        FLAG("no-daemon", 't', FRONTEND,
             .help = N_("stays in the foreground")),
        FLAG("dont-serve", 'x', FRONTEND, .verbose_help = true,
             .help = N_("opens no listening sockets")),
        FLAG("no-smtp", 'X', FRONTEND, .verbose_help = true,
             .help = N_("opens no SMTP listening socket")),
        VALUE("pid-file", 'i', "<path>", FRONTEND, .many = true,
              .help = N_("writes the process id to this file")),
        VALUE("user", 'u', "<username>", FRONTEND, .verbose_help = true,
              .help = N_("user to run as when started by root (root: do not switch)")),
        VALUE("localedir", 0, "<dir>", DAEMONS, .verbose_help = true,
              .help = N_("directory of the message translations")),
        FLAG("hidden", 0, FRONTEND, .hidden = true,
             .help = N_("Windows only: no window (ignored)")),
        VALUE("show", 0, "<style>", FRONTEND, .hidden = true,
              .help = N_("Windows only: window style (ignored)")),
        FLAG("close-stderr", 'e', FRONTEND, .verbose_help = true,
             .help = N_("closes the standard error stream soon after startup")),

        /* 1.9 Logging */
        FLAG("log", 'l', DAEMONS,
             .help = N_("logs to the standard error stream and syslog")),
        FLAG("verbose", 'v', DAEMONS, .many = true, /* -v -v: even more */
             .help = N_("more logging, or more --help and --version")),
        FLAG("debug", 'g', DAEMONS, .verbose_help = true,
             .help = N_("debug logging")),
        FLAG("no-syslog", 'n', DAEMONS,
             .help = N_("does not log to syslog")),
        OPTIONAL("syslog", 'k', "<facility>", DAEMONS, .verbose_help = true,
                 .help = N_("logs to syslog, overriding --no-syslog (default facility mail)")),
        VALUE("log-file", 'N', "<path>", DAEMONS,
              .help = N_("logs to this file instead of the standard error stream (%d: date, "
                         "%h: hour)")),
        FLAG("log-time", 'L', DAEMONS,
             .help = N_("adds a timestamp to each log line")),
        FLAG("log-address", 0, DAEMONS, .verbose_help = true,
             .help = N_("adds the client's address to each log line")),
        VALUE("log-format", 0, "<list>", DAEMONS, .many = true, .verbose_help = true,
              .help = N_("log line fields: time, unit, address, port, msgid")),

        /* 1.10 Hidden / test */
        VALUE("test", 0, "<x>", DAEMONS, .hidden = true,
              .help = N_("testing only")),

        /* This suite's own options. */
        VALUE("retry-schedule", 0, "<list>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("delays in seconds between retries after temporary failures, e.g. "
                         "300,600,1200,2400,3600 (not in E-MailRelay)")),
        VALUE("retry-give-up", 0, "<seconds>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("age after which a message that keeps failing temporarily is failed "
                         "(not in E-MailRelay)")),
        VALUE("max-recipients", 0, "<count>", SMTPD | FRONTEND, .verbose_help = true,
              .help = N_("maximum number of recipients of one message (not in E-MailRelay)")),
        VALUE("max-connections-per-address", 0, "<count>", SMTPD | POP3D | FRONTEND,
              .verbose_help = true,
              .help = N_("maximum number of concurrent connections from one client address "
                         "(not in E-MailRelay)")),
        VALUE("max-connection-rate-per-address", 0, "<count>", SMTPD | POP3D | FRONTEND,
              .verbose_help = true,
              .help = N_("maximum number of new connections from one client address in a minute; "
                         "more are refused until the minute is over (not in E-MailRelay)")),
        VALUE("max-auth-failures-per-address", 0, "<count>", SMTPD | POP3D | FRONTEND,
              .verbose_help = true,
              .help = N_("maximum number of failed authentications from one client address in a "
                         "minute (not in E-MailRelay)")),
        VALUE("max-rejected-commands-per-address", 0, "<count>", SMTPD | POP3D | FRONTEND,
              .verbose_help = true,
              .help = N_("maximum number of rejected commands from one client address in a minute "
                         "(not in E-MailRelay)")),
        VALUE("limits-exempt", 0, "<addr-list>", SMTPD | POP3D | FRONTEND, .verbose_help = true,
              .help = N_("addresses and networks the per-address limits never apply to, or none "
                         "(default 127.0.0.0/8,::1; not in E-MailRelay)")),
        VALUE("limits-ipv6-prefix", 0, "<bits>", SMTPD | POP3D | FRONTEND, .verbose_help = true,
              .help = N_("counts IPv6 clients for the per-address limits by their network of this "
                         "many bits (default 64; 128: each address; not in E-MailRelay)")),
        VALUE("proxy-protocol", 0, "<listener-list>", SMTPD | POP3D | FRONTEND, .verbose_help = true,
              .help = N_("listeners (smtp, submission, smtps, pop3, pop3s or all) whose connections "
                         "start with a PROXY protocol v1 or v2 header from a load balancer "
                         "(not in E-MailRelay)")),
        VALUE("proxy-protocol-from", 0, "<addr-list>", SMTPD | POP3D | FRONTEND, .verbose_help = true,
              .help = N_("the only peers a --proxy-protocol listener takes connections from: addresses, "
                         "networks, local or any (default local: loopback and private networks; "
                         "not in E-MailRelay)")),
        VALUE("session-timeout", 0, "<seconds>", SMTPD | FRONTEND, .verbose_help = true,
              .help = N_("maximum duration of one SMTP session (not in E-MailRelay)")),
        VALUE("wakeup-file", 0, "<path>", SMTPD | FORWARD | FRONTEND | PROG_QUEUE, .verbose_help = true,
              .help = N_("file created after each message is committed, and removed by the forwarder "
                         "before its last scan: what emailrelay-forward.path watches (not in E-MailRelay)")),
        VALUE("immediate-message", 0, "<id>", FORWARD | FRONTEND, .hidden = true,
              .help = N_("forwards this one message, still being received, for emailrelay-smtpd --immediate")),
        FLAG("immediate-session", 0, FORWARD | FRONTEND, .hidden = true,
             .help = N_("forwards the message ids read from stdin over one connection, for one emailrelay-smtpd "
                        "--immediate session")),
        VALUE("rescan-file", 0, "<path>", SMTPD | FRONTEND, .hidden = true,
              .help = N_("file created when a filter exits 102, 103 or 104 (rescan) to ask for a forwarding "
                         "pass (default the wake-up file)")),
        VALUE("immediate-config", 0, "<file>", SMTPD | FRONTEND, .hidden = true,
              .help = N_("the config file emailrelay-smtpd --immediate gives the forwarder (default its own)")),
        VALUE("wakeup-linger", 0, "<seconds>", FORWARD | FRONTEND, .verbose_help = true,
              .help = N_("forwarder: wait this long for the wake-up file before exiting, so a "
                         "trickle of mail does not start one forwarder per message (default 0; not in E-MailRelay)")),
        VALUE("min-free-space", 0, "<bytes>", SMTPD | FRONTEND, .verbose_help = true,
              .help = N_("refuse mail with 452 while the spool has less free space (default 16 MiB, 0: off; not in E-MailRelay)")),

        {}
};
