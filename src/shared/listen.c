/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Listening sockets from systemd socket activation or bound by hand, and peer address helpers. */

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "listen.h"
#include "macro.h"

static void strv_freep(char ***p) {
        char **l = *p;

        if (!l)
                return;
        for (char **s = l; *s; s++)
                free(*s);
        free(l);
}

static int fd_set_nonblock_cloexec(int fd) {
        int flags;

        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return negative_errno();
        if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return negative_errno();

        flags = fcntl(fd, F_GETFD);
        if (flags < 0)
                return negative_errno();
        if (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
                return negative_errno();
        return 0;
}

/* Append listeners to set in one step, so that set is untouched on failure. On success the
 * fds and names belong to set. */
static int set_append(ListenerSet *set, const Listener *items, size_t n) {
        Listener *p;

        if (n == 0)
                return 0;
        if (set->n > SIZE_MAX / sizeof(Listener) - n)
                return -ENOMEM;
        p = realloc(set->items, (set->n + n) * sizeof(Listener));
        if (!p)
                return -ENOMEM;
        memcpy(p + set->n, items, n * sizeof(Listener));
        set->items = p;
        set->n += n;
        return 0;
}

static void listeners_free_array(Listener *items, size_t n) {
        for (size_t i = 0; i < n; i++) {
                safe_close(items[i].fd);
                free(items[i].name);
        }
        free(items);
}

/* Whether a stream socket passed to us is one we can serve: listening, or already connected
 * (Accept=yes). Returns 1 if listening, 0 if connected, or a negative errno. */
static int check_passed_fd(int fd) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int r;

        r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, -1);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOTSOCK;

        r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1);
        if (r < 0)
                return r;
        if (r > 0)
                return 1;

        /* Neither listening nor connected would never produce a connection. */
        if (getpeername(fd, (struct sockaddr *) &sa, &len) < 0)
                return negative_errno();
        return 0;
}

int listeners_adopt(ListenerSet *set) {
        _cleanup_(strv_freep) char **names = NULL;
        Listener *items;
        int n, r;

        assert(set);

        /* Unsets LISTEN_* so that children (filters) do not think they were activated too. */
        n = sd_listen_fds_with_names(1, &names);
        if (n <= 0)
                return n;

        items = calloc((size_t) n, sizeof(Listener));
        if (!items) {
                r = -ENOMEM;
                goto fail_close;
        }
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";

                r = check_passed_fd(fd);
                if (r < 0)
                        goto fail;
                items[i].connected = r == 0;

                r = fd_set_nonblock_cloexec(fd);
                if (r < 0)
                        goto fail;

                items[i].name = strdup(name);
                if (!items[i].name) {
                        r = -ENOMEM;
                        goto fail;
                }
                items[i].fd = fd;
        }

        r = set_append(set, items, (size_t) n);
        if (r < 0)
                goto fail;
        free(items);
        return n;

fail:
        for (int i = 0; i < n; i++)
                free(items[i].name);
        free(items);
fail_close:
        /* The passed fds are ours alone now that the environment is gone; do not leak them. */
        for (int i = 0; i < n; i++)
                (void) close(SD_LISTEN_FDS_START + i);
        return r;
}

static int bind_listen(int family, const struct sockaddr *sa, socklen_t len, bool v6only,
                       int *ret_fd) {
        _cleanup_close_ int fd = -EBADF;
        int one = 1;

        fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();

        if (family != AF_UNIX) {
                /* Restart without waiting out TIME_WAIT; not SO_REUSEPORT, which would let a
                 * second daemon share the port silently. */
                if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                        return negative_errno();
                /* Without this :: would also take IPv4 and clash with the 0.0.0.0 socket. */
                if (v6only && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
                        return negative_errno();
        }

        if (bind(fd, sa, len) < 0)
                return negative_errno();
        if (listen(fd, LISTEN_BACKLOG) < 0)
                return negative_errno();

        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int bind_unix(const char *path, int *ret_fd) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        struct stat st;
        size_t l = strlen(path);

        if (l >= sizeof(addr.sun_path))
                return -ENAMETOOLONG;
        memcpy(addr.sun_path, path, l + 1);

        /* A socket file left by a previous run would make bind fail; anything else at that
         * path is not ours to remove, and bind reports it as in use. */
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                (void) unlink(path);

        return bind_listen(AF_UNIX, (const struct sockaddr *) &addr,
                           (socklen_t) (offsetof(struct sockaddr_un, sun_path) + l + 1), false, ret_fd);
}

/* Parse "1.2.3.4", "::1", "[::1]" or "fe80::1%eth0" into a socket address. */
static int parse_ip(const char *s, uint16_t port, struct sockaddr_storage *ret, socklen_t *ret_len) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
        struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
        char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
        size_t l = strlen(s);
        char *pct;

        if (inet_pton(AF_INET, s, &sin.sin_addr) == 1) {
                memcpy(ret, &sin, sizeof(sin));
                *ret_len = sizeof(sin);
                return 0;
        }

        if (l >= 2 && s[0] == '[' && s[l - 1] == ']') {
                s++;
                l -= 2;
        }
        if (l >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, s, l);
        buf[l] = '\0';

        pct = strchr(buf, '%');
        if (pct) {
                *pct++ = '\0';
                sin6.sin6_scope_id = if_nametoindex(pct);
                if (sin6.sin6_scope_id == 0)
                        return -ENODEV;
        }
        if (inet_pton(AF_INET6, buf, &sin6.sin6_addr) != 1)
                return -EINVAL;

        memcpy(ret, &sin6, sizeof(sin6));
        *ret_len = sizeof(sin6);
        return 0;
}

static int bind_wildcards(uint16_t port, int *ret_fd4, int *ret_fd6) {
        /* With port 0 the IPv6 socket must follow the port the kernel gave IPv4, and that port
         * may be taken on IPv6 by someone else: then try again with a new one. */
        for (unsigned attempt = 0;; attempt++) {
                struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                                           .sin_addr.s_addr = htonl(INADDR_ANY) };
                struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT };
                _cleanup_close_ int fd4 = -EBADF;
                int fd6 = -EBADF, r;

                r = bind_listen(AF_INET, (const struct sockaddr *) &sin, sizeof(sin), false, &fd4);
                if (r < 0)
                        return r;

                r = socket_local_port(fd4);
                if (r < 0)
                        return r;
                sin6.sin6_port = htons((uint16_t) r);

                r = bind_listen(AF_INET6, (const struct sockaddr *) &sin6, sizeof(sin6), true, &fd6);
                if (r == -EAFNOSUPPORT || r == -EADDRNOTAVAIL) {
                        /* No IPv6 on this host (disabled or not built): IPv4 alone will do. */
                        *ret_fd4 = TAKE_FD(fd4);
                        *ret_fd6 = -EBADF;
                        return 0;
                }
                if (r == -EADDRINUSE && port == 0 && attempt < 16)
                        continue;
                if (r < 0)
                        return r;

                *ret_fd4 = TAKE_FD(fd4);
                *ret_fd6 = fd6;
                return 0;
        }
}

int listeners_bind(ListenerSet *set, const char *interface, uint16_t port, const char *name) {
        Listener items[2] = { { .fd = -EBADF }, { .fd = -EBADF } };
        size_t n = 0;
        int r;

        assert(set);

        if (!name)
                name = "unknown";

        if (isempty(interface)) {
                int fd4, fd6;

                r = bind_wildcards(port, &fd4, &fd6);
                if (r < 0)
                        return r;
                items[n++].fd = fd4;
                if (fd6 >= 0)
                        items[n++].fd = fd6;
        } else if (interface[0] == '/') {
                r = bind_unix(interface, &items[0].fd);
                if (r < 0)
                        return r;
                n = 1;
        } else {
                struct sockaddr_storage ss;
                socklen_t len;

                r = parse_ip(interface, port, &ss, &len);
                if (r < 0)
                        return r;
                /* An explicit IPv6 address means IPv6 only: IPv4 gets its own --interface. */
                r = bind_listen(ss.ss_family, (const struct sockaddr *) &ss, len,
                                ss.ss_family == AF_INET6, &items[0].fd);
                if (r < 0)
                        return r;
                n = 1;
        }

        for (size_t i = 0; i < n; i++) {
                items[i].name = strdup(name);
                if (!items[i].name) {
                        r = -ENOMEM;
                        goto fail;
                }
        }

        r = set_append(set, items, n);
        if (r < 0)
                goto fail;
        return 0;

fail:
        for (size_t i = 0; i < n; i++) {
                safe_close(items[i].fd);
                free(items[i].name);
        }
        return r;
}

void listener_set_done(ListenerSet *set) {
        if (!set)
                return;
        listeners_free_array(set->items, set->n);
        set->items = NULL;
        set->n = 0;
}

Listener *listener_set_find(ListenerSet *set, const char *name) {
        assert(set);
        assert(name);

        for (size_t i = 0; i < set->n; i++)
                if (set->items[i].name && streq(set->items[i].name, name))
                        return &set->items[i];
        return NULL;
}

int socket_local_port(int fd) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                return negative_errno();

        switch (ss.ss_family) {
        case AF_INET:
                return ntohs(((const struct sockaddr_in *) &ss)->sin_port);
        case AF_INET6:
                return ntohs(((const struct sockaddr_in6 *) &ss)->sin6_port);
        default:
                return -EAFNOSUPPORT;
        }
}

int sockaddr_to_host(const struct sockaddr *sa, socklen_t len, char *ret_host, size_t host_size,
                     uint16_t *ret_port) {
        char buf[INET6_ADDRSTRLEN];
        uint16_t port;

        assert(sa);
        assert(ret_host);

        if (len < (socklen_t) sizeof(sa_family_t))
                return -EINVAL;

        switch (sa->sa_family) {
        case AF_INET: {
                const struct sockaddr_in *sin = (const struct sockaddr_in *) sa;

                if (len < (socklen_t) sizeof(*sin))
                        return -EINVAL;
                if (!inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)))
                        return negative_errno();
                port = ntohs(sin->sin_port);
                break;
        }
        case AF_INET6: {
                const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) sa;

                if (len < (socklen_t) sizeof(*sin6))
                        return -EINVAL;
                /* A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d; log them as IPv4
                 * so that they match what the operator wrote in policy and fail2ban. */
                if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
                        if (!inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], buf, sizeof(buf)))
                                return negative_errno();
                } else if (!inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf)))
                        return negative_errno();
                port = ntohs(sin6->sin6_port);
                break;
        }
        case AF_UNIX:
                strcpy(buf, "local");
                port = 0;
                break;
        default:
                return -EAFNOSUPPORT;
        }

        if (strlen(buf) >= host_size)
                return -ENOBUFS;
        strcpy(ret_host, buf);
        if (ret_port)
                *ret_port = port;
        return 0;
}

static bool ipv4_is_local(const uint8_t a[4]) {
        return a[0] == 127 ||                             /* 127/8 loopback */
               a[0] == 10 ||                              /* 10/8 private */
               (a[0] == 169 && a[1] == 254) ||            /* 169.254/16 link-local */
               (a[0] == 172 && (a[1] & 0xf0) == 16) ||    /* 172.16/12 private */
               (a[0] == 192 && a[1] == 168);              /* 192.168/16 private */
}

bool sockaddr_is_local(const struct sockaddr *sa, socklen_t len) {
        if (!sa || len < (socklen_t) sizeof(sa_family_t))
                return false;

        switch (sa->sa_family) {
        case AF_UNIX:
                return true;
        case AF_INET: {
                const struct sockaddr_in *sin = (const struct sockaddr_in *) sa;

                if (len < (socklen_t) sizeof(*sin))
                        return false;
                return ipv4_is_local((const uint8_t *) &sin->sin_addr.s_addr);
        }
        case AF_INET6: {
                const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) sa;
                const uint8_t *b = sin6->sin6_addr.s6_addr;

                if (len < (socklen_t) sizeof(*sin6))
                        return false;
                if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
                        return ipv4_is_local(b + 12);
                return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
                       (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
                       (b[0] & 0xfe) == 0xfc;                     /* fc00::/7 unique local */
        }
        default:
                return false;
        }
}
