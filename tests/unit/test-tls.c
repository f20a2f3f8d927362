/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the TLS layer's pieces that need no certificates: --tls-config keywords as GnuTLS
 * priority strings, configuration errors, and lineio's transport switch (STARTTLS) with a fake
 * handshake on a socketpair. Real handshakes are in tests/integration/test_tls.py. */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lineio.h"
#include "macro.h"
#include "tls.h"

static char *priority_of(const char *const *config, size_t n, int *ret_r) {
        TlsSettings s = { .server = false, .config = config, .n_config = n };
        g_autoptr(TlsContext) c = NULL;
        g_autofree char *error = NULL;
        *ret_r = tls_context_new(&s, &c, &error);
        return *ret_r < 0 ? TAKE_PTR(error) : g_strdup(tls_context_priority(c));
}

static void test_priority(void) {
        static const struct { const char *config; int r; const char *out; } cases[] = {
                { "", 0, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2" },
                { "tlsv1.3", 0, "NORMAL:-VERS-ALL:+VERS-TLS1.3" },
                { "-tlsv1.2", 0, "NORMAL:-VERS-ALL:+VERS-TLS1.2" },
                { "tlsv1.0,-tlsv1.1", 0, "NORMAL:-VERS-ALL:+VERS-TLS1.1:+VERS-TLS1.0" },
                { "TLSv1.2, op_no_ticket,op_server_preference", 0,
                  "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:%NO_TICKETS:%SERVER_PRECEDENCE" },
                { "openssl,op_all,ignoreextra,-sslv3,noverify", 0, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2" },
                { "tlsv1.3,-tlsv1.2", -EINVAL, "--tls-config: the minimum version TLS 1.3 is above the maximum TLS 1.2" },
                { "tlsv2", -EINVAL, "--tls-config: unknown keyword \"tlsv2\" (tlsv1.2, -tlsv1.3, noverify, ...)" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                const char *config[] = { cases[i].config };
                int r = 0;
                g_autofree char *out = priority_of(config, 1, &r);
                g_assert_cmpint(r, ==, cases[i].r);
                g_assert_cmpstr(out, ==, cases[i].out);
        }
        /* several options add up */
        const char *two[] = { "tlsv1.1", "-tlsv1.2" };
        int r = 0;
        g_autofree char *out = priority_of(two, 2, &r);
        g_assert_cmpstr(out, ==, "NORMAL:-VERS-ALL:+VERS-TLS1.2:+VERS-TLS1.1");
}

static void test_settings_errors(void) {
        g_autoptr(TlsContext) c = NULL;
        g_autofree char *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;
        TlsSettings server = { .server = true };
        g_assert_cmpint(tls_context_new(&server, &c, &e1), ==, -EINVAL);
        g_assert_cmpstr(e1, ==, "TLS needs a certificate: use --server-tls-certificate");

        const char *missing[] = { "/nonexistent/key.pem" };
        TlsSettings bad = { .server = true, .certificate_files = missing, .n_certificate_files = 1 };
        g_assert_cmpint(tls_context_new(&bad, &c, &e2), ==, -EINVAL);
        g_assert_true(g_str_has_prefix(e2, "TLS key and certificate /nonexistent/key.pem: "));

        TlsSettings name = { .verify_name = "x.example" };
        g_assert_cmpint(tls_context_new(&name, &c, &e3), ==, -EINVAL);
        g_assert_cmpstr(e3, ==, "--client-tls-verify-name needs --client-tls-verify");

        TlsSettings ca = { .verify = "/nonexistent/ca.pem" };
        g_assert_cmpint(tls_context_new(&ca, &c, &e4), <, 0);
        g_assert_true(g_str_has_prefix(e4, "CA certificates /nonexistent/ca.pem: "));

        TlsSettings system = { .verify = "<default>" };
        g_autofree char *e5 = NULL;
        g_assert_cmpint(tls_context_new(&system, &c, &e5), ==, 0);
}

/* ---- lineio's transport switch ---- */

typedef struct Switch {
        sd_event *event;
        LineIo *io;
        int fd, peer;
        GPtrArray *log;
        bool fail_handshake;
        bool handshake_done;
} Switch;

/* The fake "TLS": its handshake waits for "HELLO\n"; reads come out upper-cased and writes go
 * out lower-cased, so that the test sees which transport carried what. */
static int fake_handshake(void *ctx, bool *ret_want_write) {
        Switch *x = ctx;
        char buf[6];
        if (x->fail_handshake)
                return -EPROTO;
        ssize_t n = recv(x->fd, buf, sizeof buf, MSG_PEEK);
        if (n < 0 && errno == EAGAIN) {
                *ret_want_write = false;
                return -EAGAIN;
        }
        if (n < (ssize_t) sizeof buf)
                return n == 0 ? -ECONNRESET : -EAGAIN;
        g_assert_cmpmem(buf, sizeof buf, "HELLO\n", 6);
        g_assert_cmpint(recv(x->fd, buf, sizeof buf, 0), ==, 6);
        x->handshake_done = true;
        return 0;
}

static ssize_t fake_read(void *ctx, void *buf, size_t len) {
        Switch *x = ctx;
        ssize_t n = read(x->fd, buf, len);
        for (ssize_t i = 0; i < n; i++)
                ((char *) buf)[i] = g_ascii_toupper(((char *) buf)[i]);
        return n;
}

static ssize_t fake_write(void *ctx, const void *buf, size_t len) {
        Switch *x = ctx;
        g_autofree char *low = g_ascii_strdown(buf, (gssize) len);
        return write(x->fd, low, len);
}

static int switch_handler(LineIo *io, LineIoEvent event, char *data, size_t len, int error, void *userdata) {
        Switch *x = userdata;
        switch (event) {
        case LINEIO_LINE:
                g_ptr_array_add(x->log, g_strdup_printf("L:%s", data));
                if (streq(data, "STARTTLS")) {
                        g_ptr_array_add(x->log, g_strdup_printf("N:%zu", lineio_discard_input(io)));
                        g_assert_cmpint(lineio_printf(io, "220 GO\r\n"), ==, 0);
                        LineIoTransport t = { .read = fake_read, .write = fake_write, .handshake = fake_handshake, .ctx = x };
                        g_assert_cmpint(lineio_start_handshake(io, &t), ==, 0);
                        g_assert_true(lineio_is_handshaking(io));
                        /* written during the handshake: held, then sent through the new transport */
                        g_assert_cmpint(lineio_printf(io, "HELD\r\n"), ==, 0);
                } else
                        g_assert_cmpint(lineio_printf(io, "250 OK %s\r\n", data), ==, 0);
                break;
        case LINEIO_HANDSHAKE:
                g_ptr_array_add(x->log, g_strdup("H"));
                break;
        case LINEIO_ERROR:
                g_ptr_array_add(x->log, g_strdup_printf("E:%d", error));
                x->io = lineio_free(io);
                return LINEIO_FREED;
        case LINEIO_EOF:
                g_ptr_array_add(x->log, g_strdup("EOF"));
                x->io = lineio_free(io);
                return LINEIO_FREED;
        default:
                break;
        }
        return 0;
}

static void switch_setup(Switch *x) {
        int sv[2];
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), ==, 0);
        x->fd = sv[0];
        x->peer = sv[1];
        g_assert_cmpint(fcntl(x->peer, F_SETFL, 0), ==, 0);   /* the test's end blocks */
        g_assert_cmpint(sd_event_new(&x->event), >=, 0);
        x->log = g_ptr_array_new_with_free_func(g_free);
        g_assert_cmpint(lineio_new(x->event, x->fd, NULL, switch_handler, x, &x->io), ==, 0);
}

static void switch_teardown(Switch *x) {
        lineio_free(x->io);
        safe_close(x->peer);
        g_ptr_array_unref(x->log);
        sd_event_unref(x->event);
}

static void run_until(Switch *x, size_t n_log) {
        for (int i = 0; i < 200 && x->log->len < n_log; i++)
                g_assert_cmpint(sd_event_run(x->event, 10000), >=, 0);
        g_assert_cmpuint(x->log->len, >=, n_log);
}

static void peer_expect(Switch *x, const char *text) {
        size_t len = strlen(text), got = 0;
        char buf[256];
        while (got < len) {
                g_assert_cmpint(sd_event_run(x->event, 1000), >=, 0);
                ssize_t n = recv(x->peer, buf + got, len - got, MSG_DONTWAIT);
                if (n > 0)
                        got += (size_t) n;
        }
        buf[len] = '\0';
        g_assert_cmpstr(buf, ==, text);
}

static void test_transport_switch(void) {
        Switch x = {};
        switch_setup(&x);
        /* plaintext pipelined behind STARTTLS (CVE-2011-0411) must vanish */
        g_assert_cmpint(write(x.peer, "STARTTLS\r\nINJECTED\r\n", 20), ==, 20);
        run_until(&x, 2);
        peer_expect(&x, "220 GO\r\n");   /* in the clear: not lower-cased */
        g_assert_false(x.handshake_done);
        g_assert_cmpint(write(x.peer, "HEL", 3), ==, 3);
        for (int i = 0; i < 5; i++)
                g_assert_cmpint(sd_event_run(x.event, 10000), >=, 0);
        g_assert_false(x.handshake_done);
        g_assert_cmpint(write(x.peer, "LO\n", 3), ==, 3);
        run_until(&x, 3);
        g_assert_true(x.handshake_done);
        peer_expect(&x, "held\r\n");     /* through the new transport */
        g_assert_cmpint(write(x.peer, "ehlo\r\n", 6), ==, 6);
        run_until(&x, 4);
        peer_expect(&x, "250 ok ehlo\r\n");
        g_assert_cmpstr(x.log->pdata[0], ==, "L:STARTTLS");
        g_assert_cmpstr(x.log->pdata[1], ==, "N:10");
        g_assert_cmpstr(x.log->pdata[2], ==, "H");
        g_assert_cmpstr(x.log->pdata[3], ==, "L:EHLO");
        switch_teardown(&x);
}

static void test_handshake_failure(void) {
        Switch x = { .fail_handshake = true };
        switch_setup(&x);
        g_assert_cmpint(write(x.peer, "STARTTLS\r\n", 10), ==, 10);
        run_until(&x, 3);
        peer_expect(&x, "220 GO\r\n");
        g_assert_cmpstr(x.log->pdata[2], ==, "E:-71");   /* -EPROTO */
        g_assert_null(x.io);
        switch_teardown(&x);
}

static void test_peer_gone_during_handshake(void) {
        Switch x = {};
        switch_setup(&x);
        g_assert_cmpint(write(x.peer, "STARTTLS\r\n", 10), ==, 10);
        run_until(&x, 2);
        peer_expect(&x, "220 GO\r\n");
        x.peer = safe_close(x.peer);
        run_until(&x, 3);
        g_assert_cmpstr(x.log->pdata[2], ==, "E:-104");   /* -ECONNRESET */
        switch_teardown(&x);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/tls/priority", test_priority);
        g_test_add_func("/tls/settings-errors", test_settings_errors);
        g_test_add_func("/tls/lineio-transport-switch", test_transport_switch);
        g_test_add_func("/tls/lineio-handshake-failure", test_handshake_failure);
        g_test_add_func("/tls/lineio-peer-gone", test_peer_gone_during_handshake);
        return g_test_run();
}
