/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The forwarder's SMTP client: one connection to the next hop, used for many messages. It is
 * blocking with poll(2) timeouts: the forwarder is a one-shot that talks to one server at a
 * time, so an event loop would buy nothing here. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "sasl.h"
#include "tls.h"

typedef struct SmtpClient {
        int fd;
        char *peer;                 /* "host:port" or the socket path, for logs */
        char buf[16384];
        size_t start, end;
        unsigned response_timeout;  /* seconds */
        bool esmtp, pipelining, eightbitmime, smtputf8, chunking, binarymime;
        uint64_t size_limit;        /* SIZE from EHLO, 0 if none */
        char *auth_mechs;           /* AUTH from EHLO, space-separated, or NULL */
        char *auth_id;              /* authenticated as, or NULL */
        bool tls;                   /* the connection is encrypted */
        bool starttls_offered;
        Tls *tls_session;
        char *cipher;               /* "TLS1.3-AES-256-GCM" once encrypted */
        bool secret;                /* sending SASL responses: --verbose shows none of them */
} SmtpClient;

typedef struct SmtpClientOptions {
        unsigned connect_timeout;   /* also the TLS handshake's */
        unsigned prompt_timeout;
        unsigned response_timeout;
        TlsContext *tls;            /* NULL: never TLS */
        bool starttls;              /* --client-tls: STARTTLS when offered */
        bool tls_required;          /* --client-tls-required: fail without TLS */
        bool tls_connection;        /* --client-tls-connection: implicit TLS */
        /* --client-interface: bind outgoing connections to this address (port 0), and look up
         * only its family; the wildcard 0.0.0.0 or :: only selects the family. NULL: any. */
        const struct sockaddr *client_interface;
        socklen_t client_interface_len;
} SmtpClientOptions;

/* --verbose: one line of the dialogue for the protocol trace (log_protocol), with the next hop
 * as REMOTE_ADDR. smtp_client_printf and the replies are traced already; pipelined commands sent
 * together with smtp_client_send are traced with this, one by one. */
void smtp_client_trace(SmtpClient *c, bool sent, const char *line, size_t len);

/* Whether a connection kept between messages is still as we left it: nothing has arrived on
 * it (a 421 on timeout) and the next hop has not closed it. */
bool smtp_client_is_idle(SmtpClient *c);

/* A reply: code and its text (lines joined by "; ", the code and its separator removed). */
typedef struct SmtpReply {
        int code;
        char text[1024];
} SmtpReply;

/* TLS (options->tls): with tls_connection the handshake comes first; with starttls or
 * tls_required, STARTTLS after EHLO when offered (then EHLO again); tls_required fails when
 * it is not. A TLS failure is -EACCES (the certificate did not verify) or -EPROTO with code 0
 * and GnuTLS's reason in ret_reply->text.
 *
 * Connect to "host:port", "[v6]:port", "ipv4:port" or "/unix/path", or through a SOCKS4a
 * proxy with "far-host:far-port@socks-host:socks-port" (the far host a name the proxy
 * resolves, or an IPv4 literal; both within connect_timeout), wait up to prompt_timeout for
 * the greeting, then EHLO (HELO if EHLO fails). Returns 0, or a negative errno (-ETIMEDOUT,
 * -ECONNREFUSED, -EHOSTUNREACH...), or -EPROTO with the server's refusal in *ret_reply (a
 * 4xx/5xx greeting or EHLO reply). A failure before any greeting leaves ret_reply->code 0, with
 * ret_reply->text the reason if it came from the SOCKS stage (the proxy's reply code, ...),
 * else empty. */
int smtp_client_connect(const char *address, const char *ehlo_name, const SmtpClientOptions *options,
                        SmtpClient **ret, SmtpReply *ret_reply);
/* The same on a socket already connected (fd, taken over) to the next hop, or to a SOCKS4a
 * proxy when socks_far ("host:port") is given: what the fuzz target drives, with a hostile
 * peer's bytes waiting in a socketpair. */
int smtp_client_open_fd(int fd, const char *socks_far, const char *ehlo_name, const SmtpClientOptions *options,
                        SmtpClient **ret, SmtpReply *ret_reply);

/* The forwarder's stop request (its SIGTERM flag). While cancellable is on, a wait for the next
 * hop gives up with -EINTR as soon as *flag is set: for the connection, greeting, EHLO, STARTTLS
 * and AUTH, when no message is in hand. Off (the default) during a transaction, which finishes
 * or times out. The blocking waits are per process, and so is this. */
void smtp_client_set_cancel(volatile sig_atomic_t *flag);
void smtp_client_set_cancellable(bool on);
/* 0 if address is usable: an address without '@' always is; a SOCKS one needs both
 * host:port parts and no IPv6 far host. Else -EINVAL and a static message in *ret_error. */
int smtp_client_check_address(const char *address, const char **ret_error);
void smtp_client_free(SmtpClient *c);
/* QUIT, wait briefly for 221, close. */
void smtp_client_quit(SmtpClient *c);

int smtp_client_send(SmtpClient *c, const void *data, size_t len);
int smtp_client_printf(SmtpClient *c, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Read one whole reply. -ETIMEDOUT, -ECONNRESET (closed), -EPROTO (garbage). */
int smtp_client_reply(SmtpClient *c, SmtpReply *ret);
/* Send a file's content as DATA payload: dot-stuffed, bare LF sent as CRLF, a final CRLF added
 * if missing, then ".". */
int smtp_client_send_data(SmtpClient *c, int fd);
/* SMTP AUTH (RFC 4954) with the first mechanism of the plan that works, trying the next one
 * after a 5xx. Returns 0 when authenticated (c->auth_id set); -ENOENT when the server offers
 * no mechanism the accounts and config allow; -EACCES when every one failed, the last reply in
 * *ret_reply; or a connection error. */
int smtp_client_auth(SmtpClient *c, const SaslAccount *accounts, size_t n_accounts, const SaslConfig *config,
                     SmtpReply *ret_reply);
/* Send a file as one BDAT LAST chunk, as stored. */
int smtp_client_send_bdat(SmtpClient *c, int fd);
