/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The forwarder's SMTP client: one connection to the next hop, used for many messages. It is
 * blocking with poll(2) timeouts: the forwarder is a one-shot that talks to one server at a
 * time, so an event loop would buy nothing here. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct SmtpClient {
        int fd;
        char *peer;                 /* "host:port" or the socket path, for logs */
        char buf[16384];
        size_t start, end;
        unsigned response_timeout;  /* seconds */
        bool esmtp, pipelining, eightbitmime, smtputf8, chunking, binarymime;
        uint64_t size_limit;        /* SIZE from EHLO, 0 if none */
} SmtpClient;

/* A reply: code and its text (lines joined by "; ", the code and its separator removed). */
typedef struct SmtpReply {
        int code;
        char text[1024];
} SmtpReply;

/* Connect to "host:port", "[v6]:port", "ipv4:port" or "/unix/path", or through a SOCKS4a
 * proxy with "far-host:far-port@socks-host:socks-port" (the far host a name the proxy
 * resolves, or an IPv4 literal; both within connect_timeout), wait up to prompt_timeout for
 * the greeting, then EHLO (HELO if EHLO fails). Returns 0, or a negative errno (-ETIMEDOUT,
 * -ECONNREFUSED, -EHOSTUNREACH...), or -EPROTO with the server's refusal in *ret_reply (a
 * 4xx/5xx greeting or EHLO reply). A failure before any greeting leaves ret_reply->code 0, with
 * ret_reply->text the reason if it came from the SOCKS stage (the proxy's reply code, ...),
 * else empty. */
int smtp_client_connect(const char *address, const char *ehlo_name, unsigned connect_timeout,
                        unsigned prompt_timeout, unsigned response_timeout, SmtpClient **ret,
                        SmtpReply *ret_reply);
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
/* Send a file as one BDAT LAST chunk, as stored. */
int smtp_client_send_bdat(SmtpClient *c, int fd);
