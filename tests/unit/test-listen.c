/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for listen: binding (port 0 only), socket activation in a forked child, address helpers. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "listen.h"
#include "macro.h"

static void assert_nonblock_cloexec(int fd) {
        g_assert_cmpint(fcntl(fd, F_GETFL) & O_NONBLOCK, !=, 0);
        g_assert_cmpint(fcntl(fd, F_GETFD) & FD_CLOEXEC, !=, 0);
}

/* Connect a client to sa and accept it on listen_fd; returns the accepted fd. */
static int connect_and_accept(int listen_fd, const struct sockaddr *sa, socklen_t len, int *ret_client) {
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };
        int client, conn;

        client = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(client, >=, 0);
        g_assert_cmpint(connect(client, sa, len), ==, 0);
        g_assert_cmpint(poll(&p, 1, 5000), ==, 1);
        conn = accept(listen_fd, NULL, NULL);
        g_assert_cmpint(conn, >=, 0);
        *ret_client = client;
        return conn;
}

static void test_bind_ipv4(void) {
        ListenerSet set = {};
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        _cleanup_close_ int client = -EBADF, conn = -EBADF;
        char host[64];
        uint16_t port = 0;
        int p;

        g_assert_cmpint(listeners_bind(&set, "127.0.0.1", 0, "smtp"), ==, 0);
        g_assert_cmpuint(set.n, ==, 1);
        g_assert_cmpstr(set.items[0].name, ==, "smtp");
        g_assert_false(set.items[0].connected);
        assert_nonblock_cloexec(set.items[0].fd);
        g_assert_true(listener_set_find(&set, "smtp") == &set.items[0]);
        g_assert_null(listener_set_find(&set, "pop3"));

        p = socket_local_port(set.items[0].fd);
        g_assert_cmpint(p, >, 0);
        sin.sin_port = htons((uint16_t) p);
        conn = connect_and_accept(set.items[0].fd, (struct sockaddr *) &sin, sizeof(sin), &client);

        /* The peer as the server sees it: loopback, with the client's own port. */
        g_assert_cmpint(getpeername(conn, (struct sockaddr *) &peer, &peer_len), ==, 0);
        g_assert_cmpint(sockaddr_to_host((struct sockaddr *) &peer, peer_len, host, sizeof(host), &port), ==, 0);
        g_assert_cmpstr(host, ==, "127.0.0.1");
        g_assert_cmpint(port, ==, socket_local_port(client));
        g_assert_true(sockaddr_is_local((struct sockaddr *) &peer, peer_len));

        listener_set_done(&set);
        g_assert_cmpuint(set.n, ==, 0);
        g_assert_null(set.items);
}

static bool ipv6_loopback_works(void) {
        struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
        _cleanup_close_ int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

        return fd >= 0 && bind(fd, (struct sockaddr *) &sin6, sizeof(sin6)) == 0;
}

static void test_bind_wildcards(void) {
        ListenerSet set = {};
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
        int p, v6only = 0;
        socklen_t l = sizeof(v6only);

        g_assert_cmpint(listeners_bind(&set, "", 0, "submission"), ==, 0);
        g_assert_cmpuint(set.n, >=, 1);
        p = socket_local_port(set.items[0].fd);
        g_assert_cmpint(p, >, 0);
        for (size_t i = 0; i < set.n; i++) {
                g_assert_cmpstr(set.items[i].name, ==, "submission");
                assert_nonblock_cloexec(set.items[i].fd);
        }

        {
                _cleanup_close_ int client = -EBADF, conn = -EBADF;

                sin.sin_port = htons((uint16_t) p);
                conn = connect_and_accept(set.items[0].fd, (struct sockaddr *) &sin, sizeof(sin), &client);
        }

        if (!ipv6_loopback_works()) {
                g_test_message("no IPv6 loopback here, IPv6 part skipped");
                listener_set_done(&set);
                return;
        }

        /* Both wildcards on the same port; the IPv6 one IPv6-only, or it would clash. */
        g_assert_cmpuint(set.n, ==, 2);
        g_assert_cmpint(socket_local_port(set.items[1].fd), ==, p);
        g_assert_cmpint(getsockopt(set.items[1].fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &l), ==, 0);
        g_assert_cmpint(v6only, ==, 1);
        {
                _cleanup_close_ int client = -EBADF, conn = -EBADF;

                sin6.sin6_port = htons((uint16_t) p);
                conn = connect_and_accept(set.items[1].fd, (struct sockaddr *) &sin6, sizeof(sin6), &client);
        }
        listener_set_done(&set);

        /* NULL means the same; names accumulate in one set. */
        g_assert_cmpint(listeners_bind(&set, NULL, 0, "smtp"), ==, 0);
        g_assert_cmpint(listeners_bind(&set, "127.0.0.1", 0, "pop3"), ==, 0);
        g_assert_cmpuint(set.n, ==, 3);
        g_assert_cmpstr(listener_set_find(&set, "pop3")->name, ==, "pop3");
        g_assert_true(listener_set_find(&set, "smtp") == &set.items[0]);
        listener_set_done(&set);
}

static void test_bind_ipv6_literal(void) {
        ListenerSet set = {};
        struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
        _cleanup_close_ int client = -EBADF, conn = -EBADF;
        int p;

        if (!ipv6_loopback_works()) {
                g_test_skip("no IPv6 loopback");
                return;
        }
        g_assert_cmpint(listeners_bind(&set, "::1", 0, "smtp"), ==, 0);
        g_assert_cmpint(listeners_bind(&set, "[::1]", 0, "smtp"), ==, 0);
        g_assert_cmpuint(set.n, ==, 2);
        p = socket_local_port(set.items[1].fd);
        g_assert_cmpint(p, >, 0);
        sin6.sin6_port = htons((uint16_t) p);
        conn = connect_and_accept(set.items[1].fd, (struct sockaddr *) &sin6, sizeof(sin6), &client);
        listener_set_done(&set);
}

static void test_bind_errors(void) {
        ListenerSet set = {};
        int p;

        g_assert_cmpint(listeners_bind(&set, "127.0.0.1", 0, "smtp"), ==, 0);
        p = socket_local_port(set.items[0].fd);
        g_assert_cmpint(p, >, 0);

        /* SO_REUSEADDR must not let a second listener share a port. */
        g_assert_cmpint(listeners_bind(&set, "127.0.0.1", (uint16_t) p, "smtp"), ==, -EADDRINUSE);
        g_assert_cmpint(listeners_bind(&set, "", (uint16_t) p, "smtp"), ==, -EADDRINUSE);
        g_assert_cmpuint(set.n, ==, 1);

        g_assert_cmpint(listeners_bind(&set, "localhost", 0, "smtp"), ==, -EINVAL);
        g_assert_cmpint(listeners_bind(&set, "1.2.3", 0, "smtp"), ==, -EINVAL);
        g_assert_cmpint(listeners_bind(&set, "[::1", 0, "smtp"), ==, -EINVAL);
        g_assert_cmpuint(set.n, ==, 1);
        listener_set_done(&set);
}

static void test_bind_unix(void) {
        g_autoptr(GError) error = NULL;
        g_autofree char *dir = g_dir_make_tmp("test-listen-XXXXXX", &error);
        g_autofree char *path = NULL, *file = NULL, *longpath = NULL;
        ListenerSet set = {};
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        struct stat st;
        char host[64];
        uint16_t port = 1;

        g_assert_no_error(error);
        path = g_build_filename(dir, "smtp.socket", NULL);
        g_assert_cmpint(listeners_bind(&set, path, 0, "smtp"), ==, 0);
        g_assert_cmpuint(set.n, ==, 1);
        assert_nonblock_cloexec(set.items[0].fd);
        g_assert_cmpint(socket_local_port(set.items[0].fd), ==, -EAFNOSUPPORT);
        g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
        {
                _cleanup_close_ int client = -EBADF, conn = -EBADF;

                conn = connect_and_accept(set.items[0].fd, (struct sockaddr *) &sa, sizeof(sa), &client);
                g_assert_cmpint(getpeername(conn, (struct sockaddr *) &peer, &peer_len), ==, 0);
                g_assert_cmpint(sockaddr_to_host((struct sockaddr *) &peer, peer_len, host, sizeof(host), &port), ==, 0);
                g_assert_cmpstr(host, ==, "local");
                g_assert_cmpint(port, ==, 0);
                g_assert_true(sockaddr_is_local((struct sockaddr *) &peer, peer_len));
        }
        listener_set_done(&set);

        /* The socket file left behind is stale: a restart replaces it. */
        g_assert_cmpint(lstat(path, &st), ==, 0);
        g_assert_true(S_ISSOCK(st.st_mode));
        g_assert_cmpint(listeners_bind(&set, path, 0, "smtp"), ==, 0);
        listener_set_done(&set);
        g_assert_cmpint(unlink(path), ==, 0);

        /* Anything that is not a socket is left alone. */
        file = g_build_filename(dir, "not-a-socket", NULL);
        g_assert_true(g_file_set_contents(file, "keep", -1, NULL));
        g_assert_cmpint(listeners_bind(&set, file, 0, "smtp"), ==, -EADDRINUSE);
        g_assert_cmpint(lstat(file, &st), ==, 0);
        g_assert_true(S_ISREG(st.st_mode));
        g_assert_cmpint(unlink(file), ==, 0);

        longpath = g_strnfill(sizeof(sa.sun_path) + 10, 'x');
        longpath[0] = '/';
        g_assert_cmpint(listeners_bind(&set, longpath, 0, "smtp"), ==, -ENAMETOOLONG);
        g_assert_cmpuint(set.n, ==, 0);

        g_assert_cmpint(rmdir(dir), ==, 0);
}

/* Socket activation needs fds 3.. and the process environment: run it in a child, which
 * reports failures through its exit status. */
#define CHILD_ASSERT(expr)                                                                       \
        do {                                                                                     \
                if (!(expr)) {                                                                   \
                        fprintf(stderr, "child: %s:%d: assertion failed: %s\n", __FILE__,      \
                                __LINE__, #expr);                                                \
                        return 1;                                                                \
                }                                                                                \
        } while (0)

/* Move fds to 3, 4, ..., out of the way of whatever the test harness had there. */
static int install_fds(int *fds, size_t n) {
        int high[8];

        CHILD_ASSERT(n <= ELEMENTSOF(high));
        for (size_t i = 0; i < n; i++) {
                high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 100);
                CHILD_ASSERT(high[i] >= 100);
                close(fds[i]);
        }
        for (size_t i = 0; i < n; i++) {
                CHILD_ASSERT(dup2(high[i], 3 + (int) i) == 3 + (int) i);
                close(high[i]);
                /* Clear O_NONBLOCK so that adopting visibly sets it. */
                CHILD_ASSERT(fcntl(3 + (int) i, F_SETFL, 0) == 0);
        }
        return 0;
}

static void set_listen_env(size_t n, const char *names) {
        char buf[32];

        snprintf(buf, sizeof(buf), "%d", (int) getpid());
        setenv("LISTEN_PID", buf, 1);
        snprintf(buf, sizeof(buf), "%zu", n);
        setenv("LISTEN_FDS", buf, 1);
        if (names)
                setenv("LISTEN_FDNAMES", names, 1);
        else
                unsetenv("LISTEN_FDNAMES");
}

static int child_adopt_listening(void) {
        ListenerSet tmp = {}, set = {};
        int fds[2];

        CHILD_ASSERT(listeners_bind(&tmp, "127.0.0.1", 0, "x") == 0);
        CHILD_ASSERT(listeners_bind(&tmp, "127.0.0.1", 0, "y") == 0);
        fds[0] = tmp.items[0].fd;
        fds[1] = tmp.items[1].fd;
        CHILD_ASSERT(install_fds(fds, 2) == 0);

        set_listen_env(2, "smtp:pop3");
        CHILD_ASSERT(listeners_adopt(&set) == 2);
        CHILD_ASSERT(set.n == 2);
        CHILD_ASSERT(set.items[0].fd == 3 && set.items[1].fd == 4);
        CHILD_ASSERT(streq(set.items[0].name, "smtp") && streq(set.items[1].name, "pop3"));
        CHILD_ASSERT(!set.items[0].connected && !set.items[1].connected);
        CHILD_ASSERT(listener_set_find(&set, "pop3") == &set.items[1]);
        for (size_t i = 0; i < 2; i++) {
                CHILD_ASSERT(fcntl(set.items[i].fd, F_GETFL) & O_NONBLOCK);
                CHILD_ASSERT(fcntl(set.items[i].fd, F_GETFD) & FD_CLOEXEC);
        }
        /* Unset, so that filters started later do not think they were activated too. */
        CHILD_ASSERT(!getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES"));
        /* And a second call finds nothing. */
        CHILD_ASSERT(listeners_adopt(&set) == 0);
        CHILD_ASSERT(set.n == 2);
        listener_set_done(&set);
        free(tmp.items[0].name);
        free(tmp.items[1].name);
        free(tmp.items);
        return 0;
}

static int child_adopt_connected(void) {
        ListenerSet set = {};
        int sv[2];

        /* Accept=yes: one connected socket, no FileDescriptorName=. */
        CHILD_ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        CHILD_ASSERT(install_fds(sv, 1) == 0);
        set_listen_env(1, NULL);
        CHILD_ASSERT(listeners_adopt(&set) == 1);
        CHILD_ASSERT(set.items[0].fd == 3);
        CHILD_ASSERT(set.items[0].connected);
        CHILD_ASSERT(streq(set.items[0].name, "unknown"));
        CHILD_ASSERT(fcntl(3, F_GETFL) & O_NONBLOCK);
        listener_set_done(&set);
        close(sv[1]);
        return 0;
}

static int child_adopt_not_stream(void) {
        ListenerSet set = {};
        int p[2], d[2];

        /* A pipe is refused, and the passed fds are not leaked. */
        CHILD_ASSERT(pipe(p) == 0);
        CHILD_ASSERT(install_fds(p, 1) == 0);
        set_listen_env(1, "smtp");
        CHILD_ASSERT(listeners_adopt(&set) == -ENOTSOCK);
        CHILD_ASSERT(set.n == 0 && !set.items);
        CHILD_ASSERT(fcntl(3, F_GETFD) < 0 && errno == EBADF);
        CHILD_ASSERT(!getenv("LISTEN_FDS"));
        close(p[1]);

        /* So is a datagram socket, even after a good one. */
        CHILD_ASSERT(socketpair(AF_UNIX, SOCK_DGRAM, 0, d) == 0);
        {
                ListenerSet tmp = {};
                int fds[2];

                CHILD_ASSERT(listeners_bind(&tmp, "127.0.0.1", 0, "x") == 0);
                fds[0] = tmp.items[0].fd;
                fds[1] = d[0];
                CHILD_ASSERT(install_fds(fds, 2) == 0);
                free(tmp.items[0].name);
                free(tmp.items);
        }
        set_listen_env(2, "smtp:pop3");
        CHILD_ASSERT(listeners_adopt(&set) == -ENOTSOCK);
        CHILD_ASSERT(set.n == 0);
        CHILD_ASSERT(fcntl(3, F_GETFD) < 0 && fcntl(4, F_GETFD) < 0);
        return 0;
}

static int child_not_activated(void) {
        ListenerSet set = {};

        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        CHILD_ASSERT(listeners_adopt(&set) == 0);

        /* Meant for another process (our parent, say): not ours to take. */
        setenv("LISTEN_PID", "1", 1);
        setenv("LISTEN_FDS", "1", 1);
        CHILD_ASSERT(listeners_adopt(&set) == 0);
        CHILD_ASSERT(set.n == 0);
        return 0;
}

static void run_in_child(int (*fn)(void)) {
        int status;
        pid_t pid;

        fflush(NULL);
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0)
                _exit(fn());
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

static void test_adopt(void) {
        run_in_child(child_adopt_listening);
        run_in_child(child_adopt_connected);
        run_in_child(child_adopt_not_stream);
        run_in_child(child_not_activated);
}

/* Build a socket address from text. */
static socklen_t make_addr(const char *s, struct sockaddr_storage *ss) {
        struct sockaddr_in *sin = (struct sockaddr_in *) ss;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) ss;

        memset(ss, 0, sizeof(*ss));
        if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
                sin->sin_family = AF_INET;
                sin->sin_port = htons(25);
                return sizeof(*sin);
        }
        g_assert_cmpint(inet_pton(AF_INET6, s, &sin6->sin6_addr), ==, 1);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(587);
        return sizeof(*sin6);
}

static void test_is_local(void) {
        static const struct {
                const char *addr;
                bool local;
        } table[] = {
                { "126.255.255.255", false }, { "127.0.0.0", true },      { "127.0.0.1", true },
                { "127.255.255.255", true },  { "128.0.0.0", false },     { "9.255.255.255", false },
                { "10.0.0.0", true },         { "10.255.255.255", true }, { "11.0.0.0", false },
                { "169.253.255.255", false }, { "169.254.0.0", true },    { "169.254.255.255", true },
                { "169.255.0.0", false },     { "172.15.255.255", false },{ "172.16.0.0", true },
                { "172.31.255.255", true },   { "172.32.0.0", false },    { "192.167.255.255", false },
                { "192.168.0.0", true },      { "192.168.255.255", true },{ "192.169.0.0", false },
                { "192.0.2.1", false },       { "8.8.8.8", false },       { "0.0.0.0", false },
                { "255.255.255.255", false },
                { "::1", true },              { "::", false },            { "::2", false },
                { "fe80::1", true },          { "febf:ffff::1", true },   { "fec0::1", false },
                { "fe7f::1", false },         { "fc00::1", true },        { "fd00::1", true },
                { "fdff:ffff::1", true },     { "fbff::1", false },       { "fe00::1", false },
                { "2001:db8::1", false },     { "::ffff:10.0.0.1", true },{ "::ffff:127.0.0.1", true },
                { "::ffff:172.31.0.1", true },{ "::ffff:172.32.0.0", false }, { "::ffff:8.8.8.8", false },
                { "::10.0.0.1", false },      /* IPv4-compatible, not mapped */
        };
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        struct sockaddr_storage ss;

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                socklen_t len = make_addr(table[i].addr, &ss);

                if (sockaddr_is_local((struct sockaddr *) &ss, len) != table[i].local)
                        g_error("sockaddr_is_local(%s) should be %s", table[i].addr,
                                table[i].local ? "true" : "false");
                /* A truncated address is never trusted. */
                g_assert_false(sockaddr_is_local((struct sockaddr *) &ss, len - 1));
        }
        g_assert_true(sockaddr_is_local((struct sockaddr *) &un, sizeof(sa_family_t)));
        ss.ss_family = AF_PACKET;
        g_assert_false(sockaddr_is_local((struct sockaddr *) &ss, sizeof(ss)));
}

static void test_to_host(void) {
        static const struct {
                const char *addr;
                const char *host;
                uint16_t port;
        } table[] = {
                { "1.2.3.4", "1.2.3.4", 25 },
                { "::1", "::1", 587 },
                { "2001:db8::1", "2001:db8::1", 587 },
                { "::ffff:192.0.2.7", "192.0.2.7", 587 },
                { "fe80::1:2", "fe80::1:2", 587 },
        };
        struct sockaddr_storage ss;
        char host[64];
        uint16_t port;
        socklen_t len;

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                len = make_addr(table[i].addr, &ss);
                port = 0;
                g_assert_cmpint(sockaddr_to_host((struct sockaddr *) &ss, len, host, sizeof(host), &port), ==, 0);
                g_assert_cmpstr(host, ==, table[i].host);
                g_assert_cmpint(port, ==, table[i].port);
        }

        /* Failures leave the outputs alone. */
        strcpy(host, "untouched");
        port = 7;
        len = make_addr("2001:db8::1", &ss);
        g_assert_cmpint(sockaddr_to_host((struct sockaddr *) &ss, len, host, 8, &port), ==, -ENOBUFS);
        g_assert_cmpint(sockaddr_to_host((struct sockaddr *) &ss, len - 1, host, sizeof(host), &port), ==, -EINVAL);
        ss.ss_family = AF_PACKET;
        g_assert_cmpint(sockaddr_to_host((struct sockaddr *) &ss, sizeof(ss), host, sizeof(host), &port), ==, -EAFNOSUPPORT);
        g_assert_cmpstr(host, ==, "untouched");
        g_assert_cmpint(port, ==, 7);

        /* The port is optional. */
        len = make_addr("10.1.2.3", &ss);
        g_assert_cmpint(sockaddr_to_host((struct sockaddr *) &ss, len, host, sizeof(host), NULL), ==, 0);
        g_assert_cmpstr(host, ==, "10.1.2.3");
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/listen/bind-ipv4", test_bind_ipv4);
        g_test_add_func("/listen/bind-wildcards", test_bind_wildcards);
        g_test_add_func("/listen/bind-ipv6-literal", test_bind_ipv6_literal);
        g_test_add_func("/listen/bind-errors", test_bind_errors);
        g_test_add_func("/listen/bind-unix", test_bind_unix);
        g_test_add_func("/listen/adopt", test_adopt);
        g_test_add_func("/listen/is-local", test_is_local);
        g_test_add_func("/listen/to-host", test_to_host);

        return g_test_run();
}
