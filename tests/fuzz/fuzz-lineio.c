/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The line reader under the SMTP and POP3 sessions, fed the input in pieces whose sizes the
 * input chooses, with the owner switching to raw mode (BDAT), pausing and resuming, and writing
 * replies, as the sessions do. Lines must end at CRLF only and never exceed the limit. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lineio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Feed {
        const uint8_t *data;
        size_t size, pos;
        unsigned pieces;
        bool eof;
        unsigned raw_left;
} Feed;

static ssize_t feed_read(void *ctx, void *buf, size_t len) {
        Feed *f = ctx;
        if (f->pos >= f->size)
                return 0;
        /* Piece sizes from the data itself: 1..64 bytes, or everything left. */
        size_t n = (f->pieces++ % 3 == 0) ? f->size - f->pos : 1 + f->data[f->pos] % 64;
        if (n > len)
                n = len;
        if (n > f->size - f->pos)
                n = f->size - f->pos;
        memcpy(buf, f->data + f->pos, n);
        f->pos += n;
        return (ssize_t) n;
}

static ssize_t feed_write(void *ctx, const void *buf, size_t len) {
        return (ssize_t) len;
}

static int handler(LineIo *io, LineIoEvent event, char *line, size_t len, int error, void *userdata) {
        Feed *f = userdata;
        switch (event) {
        case LINEIO_LINE:
                if (len > 100)
                        abort();   /* longer than max_line: must have been LINEIO_OVERFLOW */
                if (len >= 5 && memcmp(line, "BDAT ", 5) == 0) {
                        unsigned n = (unsigned) strtoul(line + 5, NULL, 10) % 4096;
                        f->raw_left = n;
                        if (n)
                                lineio_read_raw(io, n);
                } else if (len >= 4 && memcmp(line, "STLS", 4) == 0) {
                        (void) lineio_discard_input(io);
                } else if (len >= 4 && memcmp(line, "QUIT", 4) == 0) {
                        (void) lineio_printf(io, "221 bye\r\n");
                        (void) lineio_close_after_flush(io);
                } else {
                        (void) lineio_printf(io, "250 %zu\r\n", len);
                        if (len % 7 == 3) {
                                lineio_pause(io);
                                (void) lineio_resume(io);
                        }
                }
                break;
        case LINEIO_RAW:
                if (len > f->raw_left)
                        abort();   /* more raw bytes than asked for */
                f->raw_left -= (unsigned) len;
                break;
        case LINEIO_OVERFLOW:
                if (len != 100)
                        abort();
                (void) lineio_printf(io, "500 too long\r\n");
                break;
        case LINEIO_EOF:
        case LINEIO_ERROR:
                f->eof = true;
                break;
        default:
                break;
        }
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        sd_event *event = NULL;
        LineIo *io = NULL;
        int sv[2];
        Feed f = { .data = data, .size = size };

        if (sd_event_new(&event) < 0)
                abort();
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        /* One byte makes the socket readable; the transport serves the fuzz input instead. */
        if (write(sv[1], "x", 1) != 1)
                abort();
        LineIoLimits limits = { .max_line = 100, .buffer_size = 256, .high_water = 1024, .low_water = 128 };
        if (lineio_new(event, sv[0], &limits, handler, &f, &io) < 0)
                abort();
        lineio_set_transport(io, &(LineIoTransport){ .read = feed_read, .write = feed_write, .ctx = &f });
        for (int i = 0; i < 100000 && !f.eof; i++)
                if (sd_event_run(event, 0) < 0)
                        break;
        lineio_free(io);
        close(sv[1]);
        sd_event_unref(event);
        return 0;
}
