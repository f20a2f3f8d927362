/* SPDX-License-Identifier: GPL-3.0-or-later */
/* SMTP client for emailrelay-forward: connect, greeting, EHLO, replies, DATA and BDAT. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "forward-client.h"
#include "log.h"
#include "macro.h"

#define MAX_REPLY_LINES 100

static long long now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* smtp_client_set_cancel(): while cancellable, a set flag ends every wait with -EINTR. */
static volatile sig_atomic_t *cancel_flag;
static bool cancellable;

void smtp_client_set_cancel(volatile sig_atomic_t *flag) {
        cancel_flag = flag;
}

void smtp_client_set_cancellable(bool on) {
        cancellable = on;
}

static bool cancelled(void) {
        return cancellable && cancel_flag && *cancel_flag;
}

static int wait_fd(int fd, short events, long long deadline_ms) {
        for (;;) {
                long long left = deadline_ms - now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                /* A signal between this look and poll() waits out the timeout: the window is
                 * a few instructions, the cost a slower stop, never a wrong one. */
                if (cancelled())
                        return -EINTR;
                struct pollfd p = { .fd = fd, .events = events };
                int n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int) left);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n > 0)
                        return 0;
        }
}

static bool is_wildcard(const struct sockaddr *sa) {
        if (sa->sa_family == AF_INET)
                return ((const struct sockaddr_in *) sa)->sin_addr.s_addr == htonl(INADDR_ANY);
        return sa->sa_family == AF_INET6 &&
               IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *) sa)->sin6_addr);
}

static int connect_one(const struct sockaddr *sa, socklen_t len, unsigned timeout, const struct sockaddr *local,
                       socklen_t local_len, int *ret_fd) {
        _cleanup_close_ int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        if (local && !is_wildcard(local) && bind(fd, local, local_len) < 0)
                return negative_errno();
        if (connect(fd, sa, len) < 0) {
                if (errno != EINPROGRESS)
                        return negative_errno();
                int r = wait_fd(fd, POLLOUT, now_ms() + (long long) timeout * 1000);
                if (r < 0)
                        return r;
                int err = 0;
                socklen_t el = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
                        return negative_errno();
                if (err)
                        return -err;
        }
        if (sa->sa_family != AF_UNIX) {
                int one = 1;
                /* Commands go out whole; never wait on delayed ACKs (ARCHITECTURE: 23 vs 1,200
                 * messages/s in E-MailRelay). */
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int connect_address(const char *address, unsigned timeout, const struct sockaddr *local, socklen_t local_len,
                           int *ret_fd) {
        if (address[0] == '/') {
                struct sockaddr_un sun = { .sun_family = AF_UNIX };
                if (strlen(address) >= sizeof sun.sun_path)
                        return -ENAMETOOLONG;
                strcpy(sun.sun_path, address);
                return connect_one((struct sockaddr *) &sun, sizeof sun, timeout, NULL, 0, ret_fd);
        }

        g_autofree char *host = NULL;
        const char *port;
        if (address[0] == '[') {
                const char *end = strchr(address, ']');
                if (!end || end[1] != ':')
                        return -EINVAL;
                host = g_strndup(address + 1, end - address - 1);
                port = end + 2;
        } else {
                const char *colon = strrchr(address, ':');
                if (!colon)
                        return -EINVAL;
                host = g_strndup(address, colon - address);
                port = colon + 1;
        }
        if (!*host || !*port)
                return -EINVAL;

        /* The forwarder is a one-shot program, not a daemon serving sessions: a blocking name
         * look-up only delays its own pass. AF_UNSPEC without AI_ADDRCONFIG so that names work
         * in a network namespace with only loopback. */
        struct addrinfo hints = { .ai_family = local ? local->sa_family : AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        struct addrinfo *res = NULL;
        int gr = getaddrinfo(host, port, &hints, &res);
        if (gr != 0)
                return gr == EAI_SYSTEM ? negative_errno() : -EHOSTUNREACH;
        int r = -EHOSTUNREACH;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                r = connect_one(ai->ai_addr, ai->ai_addrlen, timeout, local, local_len, ret_fd);
                if (r >= 0)
                        break;
        }
        freeaddrinfo(res);
        return r;
}

/* ---- SOCKS4a: "far-host:far-port@socks-host:socks-port" ---- */

typedef struct SocksSpec {
        char *far_host;     /* a name, or an IPv4 literal (then plain SOCKS4) */
        uint16_t far_port;  /* host order */
        char *proxy;        /* "socks-host:socks-port" */
} SocksSpec;

static void socks_spec_done(SocksSpec *s) {
        g_free(s->far_host);
        g_free(s->proxy);
        *s = (SocksSpec) {};
}

static bool parse_port(const char *s, uint16_t *ret) {
        if (g_ascii_isdigit(*s)) {
                char *end = NULL;
                unsigned long v = strtoul(s, &end, 10);
                if (*end || v == 0 || v > 65535)
                        return false;
                *ret = (uint16_t) v;
                return true;
        }
        struct servent *se = getservbyname(s, "tcp");
        if (!se)
                return false;
        *ret = ntohs((uint16_t) se->s_port);
        return true;
}

/* Split and check a SOCKS address; *ret_error is a static message on -EINVAL. */
static int socks_parse(const char *address, SocksSpec *ret, const char **ret_error) {
        const char *at = strchr(address, '@');
        SocksSpec s = {};

        if (!at) {
                *ret_error = "no '@' in a SOCKS address";
                return -EINVAL;
        }
        if (strchr(at + 1, '@')) {
                *ret_error = "more than one '@': use far-host:far-port@socks-host:socks-port";
                return -EINVAL;
        }
        g_autofree char *far = g_strndup(address, at - address);
        const char *proxy = at + 1;

        if (far[0] == '[' || strchr(far, ':') != strrchr(far, ':')) {
                *ret_error = "SOCKS4a cannot carry an IPv6 address";
                return -EINVAL;
        }
        const char *colon = strrchr(far, ':');
        if (!colon || colon == far) {
                *ret_error = "missing far host: use far-host:far-port@socks-host:socks-port";
                return -EINVAL;
        }
        if (!colon[1]) {
                *ret_error = "missing far port: use far-host:far-port@socks-host:socks-port";
                return -EINVAL;
        }
        if (!parse_port(colon + 1, &s.far_port)) {
                *ret_error = "the far port is not a port number or a service name";
                return -EINVAL;
        }
        if ((size_t) (colon - far) > 255) {
                *ret_error = "the far host name is too long for SOCKS4a";
                return -EINVAL;
        }

        const char *pcolon = strrchr(proxy, ':');
        if (!*proxy || proxy[0] == '/') {
                *ret_error = "missing SOCKS server: use far-host:far-port@socks-host:socks-port";
                return -EINVAL;
        }
        if (!pcolon || pcolon == proxy || (proxy[0] == '[' && pcolon[-1] != ']') || (proxy[0] == '[' && pcolon == proxy + 2)) {
                *ret_error = "missing SOCKS host or port: use far-host:far-port@socks-host:socks-port";
                return -EINVAL;
        }
        if (!pcolon[1]) {
                *ret_error = "missing SOCKS port: use far-host:far-port@socks-host:socks-port";
                return -EINVAL;
        }
        uint16_t unused;
        if (!parse_port(pcolon + 1, &unused)) {
                *ret_error = "the SOCKS port is not a port number or a service name";
                return -EINVAL;
        }
        s.far_host = g_strndup(far, colon - far);
        s.proxy = g_strdup(proxy);
        *ret = s;
        return 0;
}

int smtp_client_check_address(const char *address, const char **ret_error) {
        SocksSpec s = {};
        if (!strchr(address, '@'))
                return 0;
        int r = socks_parse(address, &s, ret_error);
        socks_spec_done(&s);
        return r;
}

static const char *socks4_reply_text(uint8_t code) {
        switch (code) {
        case 91:
                return "request rejected or failed";
        case 92:
                return "rejected: the proxy cannot reach the client's identd";
        case 93:
                return "rejected: identd reports a different user id";
        default:
                return "unknown reply code";
        }
}

/* Connect to the SOCKS server and ask it for the far host (RFC-less SOCKS 4 and 4A,
 * openssh.com/txt/socks4.protocol and socks4a.protocol). Leaves c->fd connected through the
 * proxy, anything the far side already sent kept in c->buf; or a reason in why. */
static int socks4a_request(SmtpClient *c, const SocksSpec *sp, unsigned timeout, char *why, size_t why_size);

static int socks4a_connect(SmtpClient *c, const char *address, unsigned timeout, const SmtpClientOptions *o,
                           char *why, size_t why_size) {
        SocksSpec s = {};
        const char *error = NULL;
        int r;

        r = socks_parse(address, &s, &error);
        if (r < 0) {
                snprintf(why, why_size, "%s", error);
                return r;
        }
        r = connect_address(s.proxy, timeout, o->client_interface, o->client_interface_len, &c->fd);
        if (r < 0)
                snprintf(why, why_size, "SOCKS server %s: %s", s.proxy, g_strerror(-r));
        else
                r = socks4a_request(c, &s, timeout, why, why_size);
        socks_spec_done(&s);
        return r;
}

/* The CONNECT request and the proxy's reply, on c->fd already connected to the proxy. */
static int socks4a_request(SmtpClient *c, const SocksSpec *sp, unsigned timeout, char *why, size_t why_size) {
        const SocksSpec s = *sp;
        uint8_t req[8 + 1 + 256 + 1];
        size_t len = 0;
        struct in_addr in4;
        int r = 0;

        req[len++] = 4;                   /* VN */
        req[len++] = 1;                   /* CD: CONNECT */
        req[len++] = (uint8_t) (s.far_port >> 8);
        req[len++] = (uint8_t) (s.far_port & 0xff);
        bool literal = inet_pton(AF_INET, s.far_host, &in4) == 1;
        if (literal) {
                memcpy(req + len, &in4, 4);   /* already in network order */
                len += 4;
        } else {
                /* SOCKS4a: DSTIP 0.0.0.x with x non-zero, the name after the user id. */
                static const uint8_t four_a[4] = { 0, 0, 0, 1 };
                memcpy(req + len, four_a, 4);
                len += 4;
        }
        req[len++] = 0;                   /* USERID "" */
        if (!literal) {
                size_t n = strlen(s.far_host);
                memcpy(req + len, s.far_host, n + 1);
                len += n + 1;
        }

        long long deadline = now_ms() + (long long) timeout * 1000;
        const uint8_t *p = req;
        while (len > 0) {
                ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                r = wait_fd(c->fd, POLLOUT, deadline);
                                if (r < 0)
                                        break;
                                continue;
                        }
                        r = negative_errno();
                        break;
                }
                p += n;
                len -= (size_t) n;
        }
        if (r < 0) {
                snprintf(why, why_size, "SOCKS server %s: cannot send the request: %s", s.proxy, g_strerror(-r));
                return r;
        }

        /* The 8-byte reply; bytes after it (the far server's greeting) stay in the buffer. */
        while (c->end < 8) {
                r = wait_fd(c->fd, POLLIN, deadline);
                if (r < 0) {
                        snprintf(why, why_size, "SOCKS server %s: no reply: %s", s.proxy, g_strerror(-r));
                        return r;
                }
                ssize_t n = recv(c->fd, c->buf + c->end, sizeof c->buf - c->end, 0);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        r = negative_errno();
                        snprintf(why, why_size, "SOCKS server %s: %s", s.proxy, g_strerror(-r));
                        return r;
                }
                if (n == 0) {
                        r = -ECONNRESET;
                        snprintf(why, why_size, "SOCKS server %s closed the connection without a reply", s.proxy);
                        return r;
                }
                c->end += (size_t) n;
        }
        uint8_t vn = (uint8_t) c->buf[0], cd = (uint8_t) c->buf[1];
        if (vn != 0) {
                snprintf(why, why_size, "SOCKS server %s: not a SOCKS4 reply (version %u)", s.proxy, vn);
                return -EPROTO;
        }
        if (cd != 90) {
                snprintf(why, why_size, "SOCKS server %s refused %s:%u: reply code %u (%s)", s.proxy, s.far_host,
                         s.far_port, cd, socks4_reply_text(cd));
                return -ECONNREFUSED;
        }
        c->start = 8;
        return 0;
}

static ssize_t raw_send(SmtpClient *c, const void *p, size_t len) {
        return c->tls_session ? tls_write(c->tls_session, p, len) : send(c->fd, p, len, MSG_NOSIGNAL);
}

static ssize_t raw_recv(SmtpClient *c, void *p, size_t len) {
        return c->tls_session ? tls_read(c->tls_session, p, len) : recv(c->fd, p, len, 0);
}

/* Which way to wait after EAGAIN: TLS may need to write to read, and the reverse. */
static short wait_events(SmtpClient *c, short plain) {
        if (!c->tls_session)
                return plain;
        return tls_want_write(c->tls_session) ? POLLOUT : POLLIN;
}

int smtp_client_send(SmtpClient *c, const void *data, size_t len) {
        const char *p = data;
        long long deadline = now_ms() + (long long) c->response_timeout * 1000;
        while (len > 0) {
                ssize_t n = raw_send(c, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                int r = wait_fd(c->fd, wait_events(c, POLLOUT), deadline);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        return negative_errno();
                }
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

void smtp_client_trace(SmtpClient *c, bool sent, const char *line, size_t len) {
        LogField fields[] = { { "REMOTE_ADDR", c->peer } };
        log_protocol(sent, line, len, sent && c->secret, fields, ELEMENTSOF(fields));
}

bool smtp_client_is_idle(SmtpClient *c) {
        if (c->fd < 0 || c->end > c->start || (c->tls_session && tls_pending(c->tls_session) > 0))
                return false;
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        return poll(&pfd, 1, 0) == 0;
}

int smtp_client_printf(SmtpClient *c, const char *format, ...) {
        char line[2048];
        va_list ap;
        va_start(ap, format);
        int n = vsnprintf(line, sizeof line, format, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof line)
                return -E2BIG;
        smtp_client_trace(c, true, line, (size_t) n);
        return smtp_client_send(c, line, (size_t) n);
}

/* One line without CRLF into line (NUL-terminated, truncated to size). */
static int read_line(SmtpClient *c, char *line, size_t size, long long deadline) {
        short events = POLLIN;
        for (;;) {
                char *crlf = c->end > c->start ? memmem(c->buf + c->start, c->end - c->start, "\r\n", 2) : NULL;
                if (crlf) {
                        size_t n = (size_t) (crlf - (c->buf + c->start));
                        size_t k = MIN(n, size - 1);
                        memcpy(line, c->buf + c->start, k);
                        line[k] = '\0';
                        c->start += n + 2;
                        return 0;
                }
                if (c->start > 0) {
                        memmove(c->buf, c->buf + c->start, c->end - c->start);
                        c->end -= c->start;
                        c->start = 0;
                }
                if (c->end == sizeof c->buf)
                        return -EPROTO;   /* a line longer than the buffer: not SMTP */
                if (!c->tls_session || tls_pending(c->tls_session) == 0) {
                        int r = wait_fd(c->fd, events, deadline);
                        if (r < 0)
                                return r;
                }
                ssize_t n = raw_recv(c, c->buf + c->end, sizeof c->buf - c->end);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                events = wait_events(c, POLLIN);
                                continue;
                        }
                        return negative_errno();
                }
                events = POLLIN;
                if (n == 0)
                        return -ECONNRESET;
                c->end += (size_t) n;
        }
}

static int reply_within(SmtpClient *c, SmtpReply *ret, unsigned timeout) {
        long long deadline = now_ms() + (long long) timeout * 1000;
        SmtpReply reply = {};
        size_t used = 0;

        for (unsigned i = 0; i < MAX_REPLY_LINES; i++) {
                char line[1024];
                int r = read_line(c, line, sizeof line, deadline);
                if (r < 0)
                        return r;
                smtp_client_trace(c, false, line, strlen(line));
                /* RFC 5321 4.2: the first digit is 2 to 5; anything else (a 907, a 100) is not an
                 * SMTP reply, and must not be taken for a verdict on the message. */
                if (strlen(line) < 3 || line[0] < '2' || line[0] > '5' || !g_ascii_isdigit(line[1]) ||
                    !g_ascii_isdigit(line[2]) || (line[3] && line[3] != ' ' && line[3] != '-'))
                        return -EPROTO;
                int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
                if (reply.code && code != reply.code)
                        return -EPROTO;
                reply.code = code;
                const char *text = line[3] ? line + 4 : "";
                int n = snprintf(reply.text + used, sizeof reply.text - used, "%s%s", used ? "; " : "", text);
                if (n > 0)
                        used = MIN(used + (size_t) n, sizeof reply.text - 1);
                if (line[3] != '-') {
                        *ret = reply;
                        return 0;
                }
        }
        return -EPROTO;
}

int smtp_client_reply(SmtpClient *c, SmtpReply *ret) {
        return reply_within(c, ret, c->response_timeout);
}

static void parse_ehlo(SmtpClient *c, const char *text) {
        /* text is the reply lines joined with "; "; the first is the greeting line. */
        g_auto(GStrv) items = g_strsplit(text, "; ", -1);
        for (char **it = items + (items[0] ? 1 : 0); *it; it++) {
                g_autofree char *kw = g_ascii_strup(*it, -1);
                if (streq(kw, "PIPELINING"))
                        c->pipelining = true;
                else if (streq(kw, "8BITMIME"))
                        c->eightbitmime = true;
                else if (streq(kw, "SMTPUTF8"))
                        c->smtputf8 = true;
                else if (streq(kw, "CHUNKING"))
                        c->chunking = true;
                else if (streq(kw, "BINARYMIME"))
                        c->binarymime = true;
                else if (g_str_has_prefix(kw, "SIZE ") || streq(kw, "SIZE"))
                        c->size_limit = g_ascii_strtoull(kw + 4, NULL, 10);
                else if (streq(kw, "STARTTLS"))
                        c->starttls_offered = true;
                else if (g_str_has_prefix(kw, "AUTH ") || g_str_has_prefix(kw, "AUTH=")) {
                        g_free(c->auth_mechs);
                        c->auth_mechs = g_strdup(g_strstrip(kw + 5));
                }
        }
}

int smtp_client_auth(SmtpClient *c, const SaslAccount *accounts, size_t n_accounts, const SaslConfig *config,
                     SmtpReply *ret_reply) {
        SaslAttempt plan[_SASL_MECH_MAX];
        SmtpReply reply = {};
        int r;

        size_t n = sasl_client_plan(accounts, n_accounts, c->auth_mechs, config, c->tls, plan, ELEMENTSOF(plan));
        if (n == 0)
                return -ENOENT;
        for (size_t i = 0; i < n; i++) {
                g_autoptr(SaslClient) x = NULL;
                const char *mech = sasl_mech_to_string(plan[i].mech);
                if (sasl_client_new(plan[i].mech, &accounts[plan[i].account], &x) < 0)
                        continue;
                g_autofree char *initial = sasl_client_initial(x);
                if (initial)
                        r = smtp_client_printf(c, "AUTH %s %s\r\n", mech, *initial ? initial : "=");
                else
                        r = smtp_client_printf(c, "AUTH %s\r\n", mech);
                if (initial)
                        explicit_bzero(initial, strlen(initial));
                for (unsigned steps = 0; r >= 0; steps++) {
                        r = smtp_client_reply(c, &reply);
                        if (r < 0 || reply.code != 334)
                                break;
                        g_autofree char *response = NULL;
                        if (steps >= 8 || sasl_client_step(x, reply.text, &response) < 0) {
                                /* Cancel a dialogue we cannot follow; the server answers 501. */
                                r = smtp_client_printf(c, "*\r\n");
                                continue;
                        }
                        c->secret = true;
                        r = smtp_client_printf(c, "%s\r\n", response);
                        c->secret = false;
                        explicit_bzero(response, strlen(response));
                }
                if (r < 0)
                        return r;
                if (reply.code == 235) {
                        g_free(c->auth_id);
                        c->auth_id = g_strdup(accounts[plan[i].account].id);
                        return 0;
                }
                *ret_reply = reply;
                /* 535: the credentials are wrong, and would be by any other mechanism too (and
                 * each try counts against us at the server); 4xx: temporary. Anything else
                 * (504, 501, 534...) is about the mechanism: try the next. */
                if (reply.code == 535 || reply.code / 100 == 4)
                        break;
        }
        return -EACCES;
}

/* The handshake, within the connection timeout; the reason for a failure in why. */
static int client_handshake(SmtpClient *c, TlsContext *ctx, unsigned timeout, char *why, size_t why_size) {
        g_autofree char *error = NULL;
        long long deadline = now_ms() + (long long) timeout * 1000;
        int r;

        /* Whatever came in the clear after "220 ready" must not be read as if encrypted. */
        c->start = c->end = 0;
        r = tls_new(ctx, c->fd, &c->tls_session, &error);
        if (r < 0) {
                snprintf(why, why_size, "%s", error);
                return r;
        }
        for (;;) {
                bool want_write = false;
                r = tls_handshake(c->tls_session, &want_write);
                if (r != -EAGAIN)
                        break;
                r = wait_fd(c->fd, want_write ? POLLOUT : POLLIN, deadline);
                if (r < 0) {
                        snprintf(why, why_size, "TLS handshake with %s timed out", c->peer);
                        return r;
                }
        }
        if (r < 0) {
                snprintf(why, why_size, "%s", tls_error(c->tls_session));
                return r == -EACCES ? -EACCES : -EPROTO;
        }
        c->tls = true;
        c->cipher = tls_cipher_name(c->tls_session);
        return 0;
}

static int client_ehlo(SmtpClient *c, const char *ehlo_name, SmtpReply *reply) {
        int r;

        c->esmtp = c->pipelining = c->eightbitmime = c->smtputf8 = c->chunking = c->binarymime = false;
        c->size_limit = 0;
        g_clear_pointer(&c->auth_mechs, g_free);
        c->starttls_offered = false;
        r = smtp_client_printf(c, "EHLO %s\r\n", ehlo_name);
        if (r >= 0)
                r = smtp_client_reply(c, reply);
        if (r < 0)
                return r;
        if (reply->code == 250) {
                c->esmtp = true;
                parse_ehlo(c, reply->text);
                return 0;
        }
        r = smtp_client_printf(c, "HELO %s\r\n", ehlo_name);
        if (r >= 0)
                r = smtp_client_reply(c, reply);
        if (r < 0)
                return r;
        return reply->code == 250 ? 0 : -EPROTO;
}

static int client_start(SmtpClient *c, const char *ehlo_name, const SmtpClientOptions *o, SmtpClient **ret,
                        SmtpReply *ret_reply, SmtpReply reply);

int smtp_client_connect(const char *address, const char *ehlo_name, const SmtpClientOptions *o,
                        SmtpClient **ret, SmtpReply *ret_reply) {
        SmtpClient *c = g_new0(SmtpClient, 1);
        SmtpReply reply = {};
        int r;

        c->fd = -EBADF;
        c->peer = g_strdup(address);
        c->response_timeout = o->response_timeout;
        if (strchr(address, '@'))
                r = socks4a_connect(c, address, o->connect_timeout, o, reply.text, sizeof reply.text);
        else
                r = connect_address(address, o->connect_timeout, o->client_interface, o->client_interface_len, &c->fd);
        if (r < 0) {
                if (ret_reply)
                        *ret_reply = reply;
                smtp_client_free(c);
                return r;
        }
        return client_start(c, ehlo_name, o, ret, ret_reply, reply);
}

int smtp_client_open_fd(int fd, const char *socks_far, const char *ehlo_name, const SmtpClientOptions *o,
                        SmtpClient **ret, SmtpReply *ret_reply) {
        SmtpClient *c = g_new0(SmtpClient, 1);
        SmtpReply reply = {};
        int r = 0;

        c->fd = fd;
        c->peer = g_strdup(socks_far ? socks_far : "a socket");
        c->response_timeout = o->response_timeout;
        if (socks_far) {
                g_autofree char *address = g_strconcat(socks_far, "@socks.invalid:1080", NULL);
                SocksSpec s = {};
                const char *error = NULL;
                r = socks_parse(address, &s, &error);
                if (r >= 0)
                        r = socks4a_request(c, &s, o->connect_timeout, reply.text, sizeof reply.text);
                socks_spec_done(&s);
        }
        if (r < 0) {
                if (ret_reply)
                        *ret_reply = reply;
                smtp_client_free(c);
                return r;
        }
        return client_start(c, ehlo_name, o, ret, ret_reply, reply);
}

/* RFC 5321 4.1.4: a client without a fully qualified name sends an address literal, the local
 * address of the connection ("[192.0.2.1]", "[IPv6:2001:db8::1]"). NULL on a unix socket. */
static char *local_address_literal(int fd) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        char text[INET6_ADDRSTRLEN];

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                return NULL;
        if (ss.ss_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *) &ss;
                if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
                        if (!inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], text, sizeof text))
                                return NULL;
                        return g_strdup_printf("[%s]", text);
                }
                if (!inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text))
                        return NULL;
                return g_strdup_printf("[IPv6:%s]", text);
        }
        if (ss.ss_family == AF_INET) {
                const struct sockaddr_in *a = (const struct sockaddr_in *) &ss;
                if (!inet_ntop(AF_INET, &a->sin_addr, text, sizeof text))
                        return NULL;
                return g_strdup_printf("[%s]", text);
        }
        return NULL;
}

/* From the connection up: implicit TLS, greeting, EHLO, STARTTLS. Frees c on failure. */
static int client_start(SmtpClient *c, const char *ehlo_name, const SmtpClientOptions *o, SmtpClient **ret,
                        SmtpReply *ret_reply, SmtpReply reply) {
        unsigned connect_timeout = o->connect_timeout, prompt_timeout = o->prompt_timeout;
        bool implicit = o->tls && o->tls_connection;
        g_autofree char *literal = strchr(ehlo_name, '.') ? NULL : local_address_literal(c->fd);
        int r;

        if (literal)
                ehlo_name = literal;
        if (implicit && (r = client_handshake(c, o->tls, connect_timeout, reply.text, sizeof reply.text)) < 0)
                goto fail;

        /* E-MailRelay carries on without a greeting after --prompt-timeout. */
        r = reply_within(c, &reply, prompt_timeout);
        if (r == -ETIMEDOUT)
                reply.code = 220;
        else if (r < 0)
                goto fail;
        if (reply.code != 220) {
                r = -EPROTO;
                goto fail;
        }

        r = client_ehlo(c, ehlo_name, &reply);
        if (r < 0)
                goto fail;

        if (o->tls && !implicit && (o->starttls || o->tls_required)) {
                if (c->starttls_offered) {
                        r = smtp_client_printf(c, "STARTTLS\r\n");
                        if (r >= 0)
                                r = smtp_client_reply(c, &reply);
                        if (r < 0)
                                goto fail;
                        if (reply.code == 220) {
                                r = client_handshake(c, o->tls, connect_timeout, reply.text, sizeof reply.text);
                                if (r < 0)
                                        goto tls_fail;
                                r = client_ehlo(c, ehlo_name, &reply);
                                if (r < 0)
                                        goto fail;
                        } else if (o->tls_required) {
                                g_autofree char *text = g_strdup(reply.text);
                                snprintf(reply.text, sizeof reply.text, "STARTTLS refused: %d %s", reply.code, text);
                                r = -EPROTO;
                                goto tls_fail;
                        }
                } else if (o->tls_required) {
                        snprintf(reply.text, sizeof reply.text, "the next hop does not offer STARTTLS (--client-tls-required)");
                        r = -EPROTO;
                        goto tls_fail;
                }
        }
        *ret = c;
        return 0;
tls_fail:
        /* A TLS problem is temporary whatever the code of the last reply. */
        reply.code = 0;
fail:
        /* code 0: failed before the greeting, with a reason only from the SOCKS stage. */
        if ((r == -EPROTO || reply.code == 0) && ret_reply)
                *ret_reply = reply;
        smtp_client_free(c);
        return r;
}

void smtp_client_free(SmtpClient *c) {
        if (!c)
                return;
        tls_free(c->tls_session);
        safe_close(c->fd);
        g_free(c->peer);
        g_free(c->cipher);
        g_free(c->auth_mechs);
        g_free(c->auth_id);
        g_free(c);
}

void smtp_client_quit(SmtpClient *c) {
        SmtpReply reply;
        if (!c)
                return;
        if (smtp_client_printf(c, "QUIT\r\n") >= 0)
                (void) reply_within(c, &reply, 5);
        if (c->tls_session)
                tls_bye(c->tls_session);
        smtp_client_free(c);
}

/* The content as DATA: canonical CRLF lines, each dot at a line start stuffed. Bare CR and
 * bare LF go out as CRLF, whatever the spool holds (a file from a filter, an older spool),
 * so that nothing here can end the data early for a next hop that takes <CR>.<CR> or
 * <LF>.<LF> for the end (the SMTP smuggling of 2023): a CR or LF never leaves alone, and
 * every line that starts with a dot is stuffed, wherever the line break came from. */
int smtp_client_send_data(SmtpClient *c, int fd) {
        GString *out = g_string_sized_new(65536 + 1024);
        char chunk[65536];
        bool at_line_start = true, pending_cr = false;
        int r = 0;

        if (lseek(fd, 0, SEEK_SET) < 0) {
                r = negative_errno();
                goto done;
        }
        for (;;) {
                ssize_t n = read(fd, chunk, sizeof chunk);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        goto done;
                }
                if (n == 0)
                        break;
                for (ssize_t i = 0; i < n; i++) {
                        char ch = chunk[i];
                        if (pending_cr) {
                                pending_cr = false;
                                g_string_append_len(out, "\r\n", 2);
                                at_line_start = true;
                                if (ch == '\n')
                                        continue;       /* it was a CRLF */
                        }
                        if (ch == '\r') {
                                pending_cr = true;      /* CRLF or a bare CR: the next byte says */
                                continue;
                        }
                        if (ch == '\n') {                /* a bare LF */
                                g_string_append_len(out, "\r\n", 2);
                                at_line_start = true;
                                continue;
                        }
                        if (at_line_start && ch == '.')
                                g_string_append_c(out, '.');
                        g_string_append_c(out, ch);
                        at_line_start = false;
                }
                if (out->len >= 65536) {
                        r = smtp_client_send(c, out->str, out->len);
                        if (r < 0)
                                goto done;
                        g_string_truncate(out, 0);
                }
        }
        if (pending_cr || !at_line_start)
                g_string_append(out, "\r\n");
        g_string_append(out, ".\r\n");
        r = smtp_client_send(c, out->str, out->len);
done:
        g_string_free(out, true);
        return r;
}

int smtp_client_send_bdat(SmtpClient *c, int fd) {
        struct stat st;
        char chunk[65536];
        int r;

        if (fstat(fd, &st) < 0 || lseek(fd, 0, SEEK_SET) < 0)
                return negative_errno();
        r = smtp_client_printf(c, "BDAT %lld LAST\r\n", (long long) st.st_size);
        if (r < 0)
                return r;
        for (off_t left = st.st_size; left > 0;) {
                ssize_t n = read(fd, chunk, MIN((off_t) sizeof chunk, left));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -EIO;   /* the file shrank under us */
                r = smtp_client_send(c, chunk, (size_t) n);
                if (r < 0)
                        return r;
                left -= n;
        }
        return 0;
}
