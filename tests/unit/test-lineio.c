/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for lineio: a LineIo on one end of a socketpair, a real sd-event loop, the test as peer. */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lineio.h"
#include "macro.h"

typedef struct Harness {
        sd_event *event;
        LineIo *io;
        int peer;
        GPtrArray *log;          /* one string per event: "L:line", "O:first", "R:raw", "E:0" ... */
        bool last_was_raw;       /* merge consecutive LINEIO_RAW events, however the input split */
        size_t raw_expected;     /* what lineio_read_raw() was last asked for, minus delivered */
        size_t max_line;
        unsigned n_reads;        /* reads through the counting transport */
        bool log_reads;          /* append "@<n_reads>" to logged lines */
        size_t reply_size;       /* answer every line with this many bytes */
        bool free_on_eof;
        bool free_on_error;
} Harness;

static void log_event(Harness *h, char *s) {
        g_ptr_array_add(h->log, s);
        h->last_was_raw = false;
}

static int handler(LineIo *io, LineIoEvent event, char *data, size_t len, int error, void *userdata) {
        Harness *h = userdata;

        g_assert_true(io == h->io);

        switch (event) {
        case LINEIO_LINE:
                /* Lines come NUL-terminated in place of their CR. */
                g_assert_cmpint(data[len], ==, '\0');
                g_assert_cmpuint(len, <=, h->max_line);
                g_assert_cmpuint(h->raw_expected, ==, 0);
                if (h->log_reads)
                        log_event(h, g_strdup_printf("L:%.*s@%u", (int) len, data, h->n_reads));
                else
                        log_event(h, g_strdup_printf("L:%.*s", (int) len, data));

                if (g_str_has_prefix(data, "BDAT ")) {
                        h->raw_expected = strtoul(data + 5, NULL, 10);
                        lineio_read_raw(io, h->raw_expected);
                } else if (streq(data, "PAUSE"))
                        lineio_pause(io);
                else if (streq(data, "FREE")) {
                        h->io = lineio_free(io);
                        return LINEIO_FREED;
                } else if (streq(data, "DISCARD"))
                        log_event(h, g_strdup_printf("N:%zu", lineio_discard_input(io)));
                else if (streq(data, "CLOSE")) {
                        g_assert_cmpint(lineio_printf(io, "221 %s\r\n", "bye"), ==, 0);
                        g_assert_cmpint(lineio_close_after_flush(io), ==, 0);
                }

                if (h->reply_size > 0) {
                        g_autofree char *reply = g_malloc(h->reply_size);
                        memset(reply, 'r', h->reply_size);
                        g_assert_cmpint(lineio_write(io, reply, h->reply_size), ==, 0);
                }
                break;

        case LINEIO_OVERFLOW:
                g_assert_cmpuint(len, ==, h->max_line);
                g_assert_cmpint(data[len], ==, '\0');
                log_event(h, g_strdup_printf("O:%.*s", (int) len, data));
                break;

        case LINEIO_RAW:
                g_assert_cmpuint(len, >, 0);
                g_assert_cmpuint(len, <=, h->raw_expected);
                h->raw_expected -= len;
                if (h->last_was_raw) {
                        char *prev = h->log->pdata[h->log->len - 1];
                        h->log->pdata[h->log->len - 1] = g_strdup_printf("%s%.*s", prev, (int) len, data);
                        g_free(prev);
                } else {
                        log_event(h, g_strdup_printf("R:%.*s", (int) len, data));
                        h->last_was_raw = true;
                }
                break;

        case LINEIO_EOF:
                log_event(h, g_strdup_printf("E:%d", error));
                if (h->free_on_eof) {
                        h->io = lineio_free(io);
                        return LINEIO_FREED;
                }
                break;

        case LINEIO_ERROR:
                g_assert_cmpint(error, <, 0);
                log_event(h, g_strdup_printf("X:%d", error));
                if (h->free_on_error) {
                        h->io = lineio_free(io);
                        return LINEIO_FREED;
                }
                break;

        case LINEIO_DRAINED:
                log_event(h, g_strdup("D"));
                break;

        default:
                g_assert_not_reached();
        }
        return 0;
}

static ssize_t counting_read(void *ctx, void *buf, size_t len) {
        Harness *h = ctx;

        h->n_reads++;
        return read(lineio_get_fd(h->io), buf, len);
}

static ssize_t counting_write(void *ctx, const void *buf, size_t len) {
        Harness *h = ctx;

        return send(lineio_get_fd(h->io), buf, len, MSG_NOSIGNAL);
}

static void harness_init(Harness *h, const LineIoLimits *limits) {
        int sv[2];

        *h = (Harness){ .log = g_ptr_array_new_with_free_func(g_free) };
        h->max_line = limits ? limits->max_line : LINEIO_LIMITS_DEFAULT.max_line;
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), ==, 0);
        h->peer = sv[1];
        g_assert_cmpint(sd_event_new(&h->event), >=, 0);
        g_assert_cmpint(lineio_new(h->event, sv[0], limits, handler, h, &h->io), ==, 0);
}

static void harness_count_reads(Harness *h) {
        lineio_set_transport(h->io, &(LineIoTransport){ .read = counting_read, .write = counting_write, .ctx = h });
        h->log_reads = true;
}

static void harness_done(Harness *h) {
        h->io = lineio_free(h->io);
        h->peer = safe_close(h->peer);
        h->event = sd_event_unref(h->event);
        g_ptr_array_unref(h->log);
}

/* Run the loop until nothing is pending. The peer is an AF_UNIX socket, so whatever it wrote
 * is readable at once: an idle loop means lineio has done all it can. */
static void drain(Harness *h) {
        for (unsigned i = 0;; i++) {
                int r = sd_event_run(h->event, 0);
                g_assert_cmpint(r, >=, 0);
                if (r == 0)
                        return;
                g_assert_cmpuint(i, <, 1000000);
        }
}

static void peer_write(Harness *h, const void *data, size_t len) {
        const char *p = data;

        for (unsigned i = 0; len > 0; i++) {
                ssize_t n = write(h->peer, p, len);
                if (n < 0) {
                        g_assert_cmpint(errno, ==, EAGAIN);
                        drain(h);
                        g_assert_cmpuint(i, <, 100000);
                        continue;
                }
                p += n;
                len -= (size_t) n;
        }
}

static void peer_write_str(Harness *h, const char *s) {
        peer_write(h, s, strlen(s));
}

/* Read what the peer has been sent so far, without blocking. Returns false on EOF. */
static bool peer_read(Harness *h, GString *into) {
        char buf[65536];

        for (;;) {
                ssize_t n = read(h->peer, buf, sizeof(buf));
                if (n < 0) {
                        g_assert_cmpint(errno, ==, EAGAIN);
                        return true;
                }
                if (n == 0)
                        return false;
                if (into)
                        g_string_append_len(into, buf, n);
        }
}

/* Let the loop and the reading peer take turns until want bytes (or EOF) have arrived. */
static bool peer_read_until(Harness *h, GString *into, size_t want) {
        for (unsigned i = 0; i < 100000; i++) {
                bool open;

                drain(h);
                open = peer_read(h, into);
                if (!open || into->len >= want)
                        return open;
        }
        g_assert_not_reached();
}

static char *log_joined(Harness *h) {
        g_ptr_array_add(h->log, NULL);
        char *s = g_strjoinv("|", (char **) h->log->pdata);
        g_ptr_array_remove_index(h->log, h->log->len - 1);
        return s;
}

static void assert_log(Harness *h, const char *expected) {
        g_autofree char *got = log_joined(h);
        g_assert_cmpstr(got, ==, expected);
}

/* Feed input as pieces ending at the given cut positions, then end the stream; compare. */
static void run_pieces(const LineIoLimits *limits, const char *input, size_t len, const size_t *cuts,
                       size_t n_cuts, const char *expected) {
        Harness h;
        size_t at = 0;

        harness_init(&h, limits);
        for (size_t i = 0; i <= n_cuts; i++) {
                size_t end = i < n_cuts ? cuts[i] : len;
                peer_write(&h, input + at, end - at);
                drain(&h);
                at = end;
        }
        g_assert_cmpint(shutdown(h.peer, SHUT_WR), ==, 0);
        drain(&h);
        assert_log(&h, expected);
        harness_done(&h);
}

/* The same events whatever the read boundaries: one write, every split in two (including between
 * CR and LF, and across the overflow boundary), and one byte at a time. */
static void check_stream(const LineIoLimits *limits, const char *input, const char *expected) {
        size_t len = strlen(input);
        g_autofree size_t *cuts = g_new(size_t, len + 1);

        run_pieces(limits, input, len, NULL, 0, expected);
        for (size_t k = 0; k <= len; k++)
                run_pieces(limits, input, len, &k, 1, expected);
        for (size_t k = 0; k < len; k++)
                cuts[k] = k + 1;
        run_pieces(limits, input, len, cuts, len, expected);
}

static const LineIoLimits small_limits = {
        .max_line = 8, .buffer_size = 16, .high_water = 65536, .low_water = 4096,
};

static void test_lines_split_everywhere(void) {
        check_stream(NULL,
                     "HELO a\r\nMAIL FROM:<a@b>\r\n\r\nRCPT TO:<c@d>\r\n",
                     "L:HELO a|L:MAIL FROM:<a@b>|L:|L:RCPT TO:<c@d>|E:0");
}

static void test_bare_cr_lf_are_data(void) {
        /* SMTP smuggling: only CRLF.CRLF may end a message, so "\n.\n", "\r.\r" and "\n.\r\n"
         * must reach the protocol as parts of lines. */
        check_stream(NULL,
                     "DATA\r\nline1\n.\nline2\r.\r\nx\n.\r\n\r\r\n\n\r\nend\r\n.\r\n",
                     "L:DATA|L:line1\n.\nline2\r.|L:x\n.|L:\r|L:\n|L:end|L:.|E:0");
}

static void test_eof_drops_partial_line(void) {
        check_stream(NULL, "A\r\npartial", "L:A|E:0");
        check_stream(NULL, "A\r\npartial\r", "L:A|E:0");
        check_stream(NULL, "", "E:0");
}

static void test_overflow(void) {
        /* max_line 8: 8 is a line, 9 overflows once and the next line is fine; a line longer
         * than the whole buffer; a bare CR inside the discarded part; a line of exactly
         * max_line + 1 bytes whose last byte is a CR (overflow, not a line of 8). */
        check_stream(&small_limits,
                     "12345678\r\n"
                     "123456789\r\n"
                     "ok\r\n"
                     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"
                     "ok2\r\n"
                     "yyyyyyyyyyyy\rz\r\n"
                     "a\r\n"
                     "12345678\r\r\n"
                     "b\r\n"
                     "zzzzzzzzz", /* too long already: reported before its CRLF */
                     "L:12345678|O:12345678|L:ok|O:xxxxxxxx|L:ok2|O:yyyyyyyy|L:a|O:12345678|L:b|"
                     "O:zzzzzzzz|E:0");
}

static void test_overflow_crlf_across_reads(void) {
        static const char *cases[] = {
                "123456789\r",      /* overflow decided before the LF arrives */
                "12345678\r",       /* exactly max_line + 1 ending in CR: undecided until the LF */
                "1234567890123456\r", /* a full buffer ending in CR */
        };
        static const char *expected[] = { "O:12345678|L:ok", "L:12345678|L:ok", "O:12345678|L:ok" };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Harness h;

                harness_init(&h, &small_limits);
                peer_write_str(&h, cases[i]);
                drain(&h);
                peer_write_str(&h, "\nok\r\n");
                drain(&h);
                assert_log(&h, expected[i]);
                harness_done(&h);
        }
}

static void test_raw(void) {
        check_stream(NULL,
                     "BDAT 7\r\na\r\n.\r\nbQUIT\r\nBDAT 0\r\nNOOP\r\nBDAT 3\r\nxyz",
                     "L:BDAT 7|R:a\r\n.\r\nb|L:QUIT|L:BDAT 0|L:NOOP|L:BDAT 3|R:xyz|E:0");
        /* Raw data larger than the whole input buffer, then line mode again. */
        check_stream(&small_limits,
                     "BDAT 40\r\n0123456789012345678901234567890123456789QUIT\r\n",
                     "L:BDAT 40|R:0123456789012345678901234567890123456789|L:QUIT|E:0");
}

static void test_raw_buffered_then_more(void) {
        Harness h;

        harness_init(&h, NULL);
        /* Raw bytes already in the buffer with the BDAT line, the rest arriving later. */
        peer_write_str(&h, "BDAT 10\r\n01234");
        drain(&h);
        assert_log(&h, "L:BDAT 10|R:01234");
        g_assert_cmpuint(lineio_pending_input(h.io), ==, 0);
        peer_write_str(&h, "56789NOOP\r\n");
        drain(&h);
        assert_log(&h, "L:BDAT 10|R:0123456789|L:NOOP");
        harness_done(&h);

        /* lineio_read_raw() from outside a callback: buffered bytes count. */
        harness_init(&h, NULL);
        peer_write_str(&h, "A\r\nPAUSE\r\nabcdefB\r\n");
        drain(&h);
        assert_log(&h, "L:A|L:PAUSE");
        h.raw_expected = 6;
        lineio_read_raw(h.io, 6);
        g_assert_cmpint(lineio_resume(h.io), ==, 0);
        drain(&h);
        assert_log(&h, "L:A|L:PAUSE|R:abcdef|L:B");
        harness_done(&h);
}

static void test_pause_resume(void) {
        Harness h;
        unsigned reads;

        harness_init(&h, NULL);
        harness_count_reads(&h);
        peer_write_str(&h, "A\r\nPAUSE\r\nB\r\nC\r\n");
        drain(&h);
        /* Pausing from inside the handler stops the lines already buffered. */
        assert_log(&h, "L:A@1|L:PAUSE@1");
        g_assert_true(lineio_is_paused(h.io));
        g_assert_cmpuint(lineio_pending_input(h.io), ==, 6);
        reads = h.n_reads;

        /* More input while paused is left in the socket. */
        peer_write_str(&h, "D\r\n");
        drain(&h);
        g_assert_cmpuint(h.n_reads, ==, reads);
        g_assert_cmpuint(lineio_pending_input(h.io), ==, 6);
        assert_log(&h, "L:A@1|L:PAUSE@1");

        /* Resume hands out the buffered lines before reading again. */
        g_assert_cmpint(lineio_resume(h.io), ==, 0);
        g_assert_false(lineio_is_paused(h.io));
        drain(&h);
        assert_log(&h, "L:A@1|L:PAUSE@1|L:B@1|L:C@1|L:D@2");
        harness_done(&h);
}

static void test_free_in_handler(void) {
        Harness h;
        char c;

        harness_init(&h, NULL);
        peer_write_str(&h, "A\r\nFREE\r\nB\r\n");
        drain(&h);
        assert_log(&h, "L:A|L:FREE");
        g_assert_null(h.io);
        /* The fd went with it: the peer sees the connection end. */
        g_assert_cmpint(read(h.peer, &c, 1), ==, 0);
        harness_done(&h);

        harness_init(&h, NULL);
        h.free_on_eof = true;
        peer_write_str(&h, "A\r\n");
        g_assert_cmpint(shutdown(h.peer, SHUT_WR), ==, 0);
        drain(&h);
        assert_log(&h, "L:A|E:0");
        g_assert_null(h.io);
        harness_done(&h);

        /* Freed while output is still queued and an error is pending. */
        harness_init(&h, NULL);
        h.free_on_error = true;
        h.peer = safe_close(h.peer);
        g_assert_cmpint(lineio_write(h.io, "x\r\n", 3), <, 0);
        drain(&h);
        assert_log(&h, "X:-32");
        g_assert_null(h.io);
        harness_done(&h);
}

static void test_backpressure(void) {
        LineIoLimits limits = LINEIO_LIMITS_DEFAULT;
        g_autoptr(GString) got = g_string_new(NULL);
        Harness h;
        unsigned reads;

        limits.high_water = 16;
        limits.low_water = 0;
        harness_init(&h, &limits);
        harness_count_reads(&h);
        h.reply_size = 1024 * 1024; /* more than the socket buffer takes */

        peer_write_str(&h, "A\r\nB\r\nC\r\n");
        drain(&h);
        assert_log(&h, "L:A@1");
        g_assert_cmpuint(lineio_queued_output(h.io), >, 16);
        g_assert_cmpuint(lineio_pending_input(h.io), ==, 6);
        reads = h.n_reads;

        /* The peer keeps sending but does not read: nothing more is read or delivered. */
        peer_write_str(&h, "D\r\n");
        drain(&h);
        g_assert_cmpuint(h.n_reads, ==, reads);
        g_assert_cmpuint(lineio_pending_input(h.io), ==, 6);
        assert_log(&h, "L:A@1");

        /* Once the peer reads, the rest follows, one reply's worth at a time. */
        g_assert_true(peer_read_until(&h, got, 4 * h.reply_size));
        g_assert_cmpuint(got->len, ==, 4 * h.reply_size);
        assert_log(&h, "L:A@1|L:B@1|L:C@1|L:D@2");
        harness_done(&h);
}

static void test_cork_flush(void) {
        g_autoptr(GString) got = g_string_new(NULL);
        g_autofree char *big = g_strnfill(2000, 'b');
        Harness h;
        char c;

        harness_init(&h, NULL);
        lineio_cork(h.io);
        g_assert_cmpint(lineio_write(h.io, "250-a\r\n", 7), ==, 0);
        g_assert_cmpint(lineio_printf(h.io, "250 %s\r\n", "b"), ==, 0);
        drain(&h);
        g_assert_cmpint(read(h.peer, &c, 1), ==, -1);
        g_assert_cmpint(errno, ==, EAGAIN);
        g_assert_cmpuint(lineio_queued_output(h.io), ==, 14);

        g_assert_cmpint(lineio_flush(h.io), ==, 0);
        g_assert_cmpuint(lineio_queued_output(h.io), ==, 0);
        g_assert_true(peer_read(&h, got));
        g_assert_cmpstr(got->str, ==, "250-a\r\n250 b\r\n");

        /* Uncorked output goes straight out; a long printf takes the slow path. */
        g_string_truncate(got, 0);
        g_assert_cmpint(lineio_printf(h.io, "%s\r\n", big), ==, 0);
        g_assert_true(peer_read(&h, got));
        g_assert_cmpuint(got->len, ==, 2002);
        g_assert_true(g_str_has_prefix(got->str, big));
        harness_done(&h);
}

static void test_drained(void) {
        g_autoptr(GString) got = g_string_new(NULL);
        g_autofree char *big = g_malloc0(1024 * 1024);
        Harness h;

        harness_init(&h, NULL);
        g_assert_cmpint(lineio_write(h.io, big, 1024 * 1024), ==, 0);
        g_assert_cmpuint(lineio_queued_output(h.io), >, LINEIO_LIMITS_DEFAULT.low_water);
        lineio_notify_drained(h.io);
        drain(&h);
        assert_log(&h, "");

        g_assert_true(peer_read_until(&h, got, 1024 * 1024));
        drain(&h);
        assert_log(&h, "D");
        g_assert_cmpuint(got->len, ==, 1024 * 1024);

        /* Already drained when asked: reported from the loop, once. */
        lineio_notify_drained(h.io);
        drain(&h);
        drain(&h);
        assert_log(&h, "D|D");
        harness_done(&h);
}

static void test_close_after_flush(void) {
        g_autoptr(GString) got = g_string_new(NULL);
        g_autofree char *big = g_malloc0(1024 * 1024);
        Harness h;

        harness_init(&h, NULL);
        g_assert_cmpint(lineio_write(h.io, big, 1024 * 1024), ==, 0);
        g_assert_cmpint(lineio_close_after_flush(h.io), ==, 0);
        g_assert_cmpint(lineio_write(h.io, "x", 1), ==, -EPIPE);
        /* Input after the close request is not delivered. */
        peer_write_str(&h, "NOOP\r\n");
        g_assert_false(peer_read_until(&h, got, SIZE_MAX));
        g_assert_cmpuint(got->len, ==, 1024 * 1024);
        drain(&h);
        assert_log(&h, "E:0");
        harness_done(&h);

        /* From the handler, with more lines pipelined behind. */
        harness_init(&h, NULL);
        g_string_truncate(got, 0);
        peer_write_str(&h, "A\r\nCLOSE\r\nB\r\n");
        g_assert_false(peer_read_until(&h, got, SIZE_MAX));
        g_assert_cmpstr(got->str, ==, "221 bye\r\n");
        drain(&h);
        assert_log(&h, "L:A|L:CLOSE|E:0");
        harness_done(&h);
}

static void test_errors(void) {
        Harness h;

        /* Writing to a vanished peer: EPIPE as an event, never SIGPIPE. */
        harness_init(&h, NULL);
        h.peer = safe_close(h.peer);
        g_assert_cmpint(lineio_write(h.io, "250 ok\r\n", 8), ==, -EPIPE);
        g_assert_cmpint(lineio_write(h.io, "250 ok\r\n", 8), ==, -EPIPE);
        drain(&h);
        assert_log(&h, "X:-32");
        /* Nothing more after an error. */
        drain(&h);
        assert_log(&h, "X:-32");
        harness_done(&h);

        /* The peer resets the connection (closes with our data unread): a read error. */
        harness_init(&h, NULL);
        g_assert_cmpint(lineio_write(h.io, "220 hi\r\n", 8), ==, 0);
        h.peer = safe_close(h.peer);
        drain(&h);
        assert_log(&h, "X:-104");
        harness_done(&h);
}

static void test_discard_input(void) {
        Harness h;

        harness_init(&h, NULL);
        /* STARTTLS: what was pipelined behind the command must not survive the handshake. */
        peer_write_str(&h, "DISCARD\r\nMAIL FROM:<x>\r\n");
        drain(&h);
        assert_log(&h, "L:DISCARD|N:15");
        peer_write_str(&h, "EHLO x\r\n");
        drain(&h);
        assert_log(&h, "L:DISCARD|N:15|L:EHLO x");
        harness_done(&h);
}

static void test_many_lines(void) {
        g_autoptr(GString) in = g_string_new(NULL);
        g_autoptr(GString) want = g_string_new(NULL);
        Harness h;

        /* Far more pipelined input than the buffer holds: compaction keeps order and content. */
        for (unsigned i = 0; i < 3000; i++) {
                g_string_append_printf(in, "RCPT TO:<%u@example.org>\r\n", i);
                g_string_append_printf(want, "%sL:RCPT TO:<%u@example.org>", i ? "|" : "", i);
        }
        g_string_append(want, "|E:0");
        harness_init(&h, NULL);
        peer_write(&h, in->str, in->len);
        g_assert_cmpint(shutdown(h.peer, SHUT_WR), ==, 0);
        drain(&h);
        assert_log(&h, want->str);
        harness_done(&h);
}

static void test_set_max_line(void) {
        Harness h;

        harness_init(&h, &small_limits);
        lineio_set_max_line(h.io, 4);
        h.max_line = 4;
        peer_write_str(&h, "1234\r\n12345\r\n");
        drain(&h);
        assert_log(&h, "L:1234|O:1234");

        /* Clamped to what the buffer can hold with its CRLF. */
        lineio_set_max_line(h.io, 1000);
        h.max_line = small_limits.buffer_size - 3;
        peer_write_str(&h, "1234567890123\r\n12345678901234\r\n");
        drain(&h);
        assert_log(&h, "L:1234|O:1234|L:1234567890123|O:1234567890123");
        harness_done(&h);
}

static void test_invalid_limits(void) {
        LineIoLimits limits = small_limits;
        _cleanup_close_ int fd = -EBADF;
        sd_event *event = NULL;
        LineIo *io = NULL;
        int sv[2];

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), ==, 0);
        fd = sv[0];
        safe_close(sv[1]);
        g_assert_cmpint(sd_event_new(&event), >=, 0);

        limits.buffer_size = limits.max_line + 2;
        g_assert_cmpint(lineio_new(event, fd, &limits, handler, NULL, &io), ==, -EINVAL);
        limits = small_limits;
        limits.low_water = limits.high_water + 1;
        g_assert_cmpint(lineio_new(event, fd, &limits, handler, NULL, &io), ==, -EINVAL);
        g_assert_null(io);
        /* The fd is still ours after a failure. */
        g_assert_cmpint(fcntl(fd, F_GETFD), >=, 0);
        sd_event_unref(event);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/lineio/lines-split-everywhere", test_lines_split_everywhere);
        g_test_add_func("/lineio/bare-cr-lf-are-data", test_bare_cr_lf_are_data);
        g_test_add_func("/lineio/eof-drops-partial-line", test_eof_drops_partial_line);
        g_test_add_func("/lineio/overflow", test_overflow);
        g_test_add_func("/lineio/overflow-crlf-across-reads", test_overflow_crlf_across_reads);
        g_test_add_func("/lineio/raw", test_raw);
        g_test_add_func("/lineio/raw-buffered-then-more", test_raw_buffered_then_more);
        g_test_add_func("/lineio/pause-resume", test_pause_resume);
        g_test_add_func("/lineio/free-in-handler", test_free_in_handler);
        g_test_add_func("/lineio/backpressure", test_backpressure);
        g_test_add_func("/lineio/cork-flush", test_cork_flush);
        g_test_add_func("/lineio/drained", test_drained);
        g_test_add_func("/lineio/close-after-flush", test_close_after_flush);
        g_test_add_func("/lineio/errors", test_errors);
        g_test_add_func("/lineio/discard-input", test_discard_input);
        g_test_add_func("/lineio/many-lines", test_many_lines);
        g_test_add_func("/lineio/set-max-line", test_set_max_line);
        g_test_add_func("/lineio/invalid-limits", test_invalid_limits);

        return g_test_run();
}
