/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Buffered non-blocking line I/O on an sd-event loop, for the SMTP and POP3 protocols.
 *
 * Input: one bounded buffer with a scan cursor; lines are handed to the owner in place (no
 * copy), ending at CRLF only: a bare LF or a bare CR is data, never a line end (no SMTP
 * smuggling). A line longer than the limit is reported once as overflowing and its remainder is
 * discarded up to the next CRLF, so that the protocol can answer 500 and carry on. No new reads
 * happen while the owner has paused the connection or while the output queue is above its high
 * water mark (backpressure).
 *
 * Output: a queue of bytes written as the socket allows; the owner can ask to be told when it
 * drains below the low water mark, and can close after flushing.
 *
 * A transport seam (LineIoTransport) lets TLS slot in under the buffers: lineio_start_handshake()
 * switches to it once the output queued so far has gone out in the clear, runs its handshake
 * on the loop, then reports LINEIO_HANDSHAKE. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

typedef struct LineIo LineIo;

typedef enum LineIoEvent {
        LINEIO_LINE,      /* a complete line; data/len exclude the CRLF */
        LINEIO_OVERFLOW,  /* a line exceeded max_line; data/len are its first max_line bytes */
        LINEIO_RAW,       /* raw bytes in raw mode (lineio_read_raw); len <= what was asked */
        LINEIO_EOF,       /* the peer closed its side; no more input events follow */
        LINEIO_ERROR,     /* a read or write failed; error holds the negative errno */
        LINEIO_DRAINED,   /* the output queue fell to the low water mark (if requested) */
        LINEIO_HANDSHAKE, /* the transport's handshake finished; input flows again */
        _LINEIO_EVENT_MAX,
} LineIoEvent;

/* Called for every event. data is valid only during the call. The owner may call any lineio_
 * function from inside, including lineio_free() (then it must return LINEIO_FREED). */
typedef int (*LineIoHandler)(LineIo *io, LineIoEvent event, char *data, size_t len, int error,
                             void *userdata);
#define LINEIO_FREED 1

/* How bytes get in and out; the default is read(2)/write(2) on the fd. Return like read/write,
 * or -1 with errno (EAGAIN when they would block). TLS fills this in. */
typedef struct LineIoTransport {
        ssize_t (*read)(void *ctx, void *buf, size_t len);
        ssize_t (*write)(void *ctx, const void *buf, size_t len);
        /* Optional: one non-blocking handshake step: 0 done, -EAGAIN (waiting for the socket
         * to become writable if *ret_want_write, else readable), or a negative errno that is
         * reported as LINEIO_ERROR. */
        int (*handshake)(void *ctx, bool *ret_want_write);
        /* Optional: called before the socket is shut down after lineio_close_after_flush(). */
        void (*bye)(void *ctx);
        void *ctx;
} LineIoTransport;

typedef struct LineIoLimits {
        size_t max_line;      /* longest accepted line without CRLF */
        size_t buffer_size;   /* input buffer size, > max_line + 2 */
        size_t high_water;    /* stop reading input while more than this is queued for output */
        size_t low_water;     /* LINEIO_DRAINED when output falls to this */
} LineIoLimits;

#define LINEIO_LIMITS_DEFAULT \
        ((LineIoLimits){ .max_line = 998, .buffer_size = 16384, .high_water = 65536, .low_water = 4096 })

/* Takes ownership of fd (closed by lineio_free). fd must be non-blocking. */
int lineio_new(sd_event *event, int fd, const LineIoLimits *limits, LineIoHandler handler,
               void *userdata, LineIo **ret);
LineIo *lineio_free(LineIo *io);

int lineio_get_fd(const LineIo *io);
void lineio_set_transport(LineIo *io, const LineIoTransport *transport);
void lineio_set_max_line(LineIo *io, size_t max_line);
/* Flush what is queued through the current transport, then switch to this one and run its
 * handshake. No input is delivered until LINEIO_HANDSHAKE (or LINEIO_ERROR). Call
 * lineio_discard_input() first when plaintext read so far must not count (STARTTLS). */
int lineio_start_handshake(LineIo *io, const LineIoTransport *transport);
bool lineio_is_handshaking(const LineIo *io);

/* Stop or restart delivering input events. Buffered lines are delivered after resume. */
void lineio_pause(LineIo *io);
int lineio_resume(LineIo *io);
bool lineio_is_paused(const LineIo *io);

/* Raw mode: the next n bytes of input are delivered as LINEIO_RAW events (possibly in several
 * pieces), then line mode resumes. For BDAT. */
void lineio_read_raw(LineIo *io, size_t n);

/* Discard any buffered and not yet delivered input (STARTTLS: CVE-2011-0411). Returns the
 * number of bytes discarded. */
size_t lineio_discard_input(LineIo *io);
/* Bytes of input buffered and not yet delivered (to tell whether a client pipelined). */
size_t lineio_pending_input(const LineIo *io);

/* Queue output. Never blocks; the queue is bounded only by the caller stopping at high water. */
int lineio_write(LineIo *io, const void *data, size_t len);
int lineio_printf(LineIo *io, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Hold queued output back until lineio_flush() (PIPELINING: batch replies, RFC 2920). */
void lineio_cork(LineIo *io);
int lineio_flush(LineIo *io);
size_t lineio_queued_output(const LineIo *io);
/* Ask for one LINEIO_DRAINED event when the output queue falls to the low water mark. */
void lineio_notify_drained(LineIo *io);
/* Close once all queued output is written; no more input events. The handler gets LINEIO_EOF
 * (error 0) when it is done. */
int lineio_close_after_flush(LineIo *io);
