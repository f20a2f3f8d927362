/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The forwarder's SMTP client against a hostile next hop (or SOCKS proxy): the input is what
 * the peer sends, waiting in a socketpair, and the client goes as far as it will: the SOCKS4a
 * reply (when the first byte is odd), the greeting, EHLO and its extensions, AUTH with every
 * mechanism a plain account allows (the server's challenges), MAIL, RCPT and the DATA
 * replies. Nothing it reads may crash it, overrun a buffer or make it wait: the input ends in
 * EOF, which every read must take as the connection closing. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forward-client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        int sv[2];
        if (size == 0 || size > 65536 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return 0;
        /* The client's own writes go into sv[0]'s send buffer, unread: plenty for a few lines. */
        int big = 1 << 20;
        (void) setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        const char *socks = (data[0] & 1) ? "relay.example:25" : NULL;
        size_t off = 1;
        while (off < size) {
                ssize_t n = write(sv[1], data + off, size - off);
                if (n <= 0)
                        break;
                off += (size_t) n;
        }
        (void) shutdown(sv[1], SHUT_WR);

        SmtpClientOptions o = { .connect_timeout = 1, .prompt_timeout = 1, .response_timeout = 1 };
        SmtpClient *c = NULL;
        SmtpReply reply = {};
        if (smtp_client_open_fd(sv[0], socks, "fuzz.example", &o, &c, &reply) == 0) {
                SaslAccount account = { .type = SECRET_PLAIN, .id = (char *) "user", .secret = (char *) "pw",
                                        .secret_len = 2 };
                SaslConfig config = {};
                (void) smtp_client_auth(c, &account, 1, &config, &reply);
                if (smtp_client_printf(c, "MAIL FROM:<a@fuzz.example>\r\nRCPT TO:<b@fuzz.example>\r\nDATA\r\n") >= 0)
                        for (int i = 0; i < 4 && smtp_client_reply(c, &reply) == 0; i++)
                                if (reply.code < 200 || reply.code > 599)
                                        abort();   /* the parser let a code out of range through */
                smtp_client_free(c);   /* closes sv[0] */
        }
        close(sv[1]);
        return 0;
}
