/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Buffered non-blocking line I/O on sd-event: CRLF-only line splitting, overflow recovery, raw
 * (BDAT) reads, backpressure, corkable output queue. */

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lineio.h"
#include "macro.h"

/* What one step of the dispatcher did. */
enum {
        DISPATCH_IDLE,  /* nothing to deliver now */
        DISPATCH_AGAIN, /* did something, look again */
        DISPATCH_FREED, /* the handler freed the LineIo: touch nothing */
};

struct LineIo {
        sd_event *event;
        sd_event_source *io_source;
        /* Runs the dispatcher outside of the caller's stack (resume, errors, drained, close), so
         * that lineio_* calls made from inside the handler never re-enter the handler. */
        sd_event_source *defer_source;
        int fd;
        LineIoLimits limits;
        LineIoHandler handler;
        void *userdata;
        LineIoTransport transport;

        /* Input: bytes [in_start, in_end) are buffered and not yet delivered. [in_start,
         * in_scan) is known to hold no CRLF, so it is never searched twice. The buffer is
         * allocated only while it holds something: an idle connection costs no buffer. */
        char *in;
        size_t in_start, in_end, in_scan;
        size_t raw_remaining;    /* raw mode: bytes still to hand out as LINEIO_RAW */
        bool discarding;         /* dropping the rest of an overflowed line up to its CRLF */
        bool eof_seen;           /* the transport read returned 0 */
        bool maybe_more;         /* the kernel may hold input we have not read (no EAGAIN yet) */
        bool eof_delivered;      /* LINEIO_EOF for input given; no more input events */
        bool paused;

        /* Output: bytes [out_start, out_end) of out are queued. Allocated only while needed:
         * most replies are written straight from the caller's buffer. */
        char *out;
        size_t out_start, out_end, out_size;
        bool corked;
        bool want_drained;

        /* Transport switch (STARTTLS): the new transport waits in next_transport until the
         * output queue is empty, then its handshake runs. */
        LineIoTransport next_transport;
        bool switch_pending;
        size_t clear_left;       /* queued bytes that still go out through the old transport */
        bool handshaking;
        bool handshake_want_write;

        bool closing;            /* lineio_close_after_flush() was called */
        bool closed;             /* ... and its LINEIO_EOF was delivered */
        int error;               /* first read/write failure, to be reported once */
        bool failed;             /* LINEIO_ERROR was delivered; nothing more happens */
        bool not_socket;         /* default transport: fd is not a socket, use write(2) */

        uint32_t io_events;      /* what io_source currently waits for; 0 means disabled */
};

static ssize_t default_read(void *ctx, void *buf, size_t len) {
        LineIo *io = ctx;

        return read(io->fd, buf, len);
}

static ssize_t default_write(void *ctx, const void *buf, size_t len) {
        LineIo *io = ctx;

        /* send() with MSG_NOSIGNAL so that a vanished peer is EPIPE, not a SIGPIPE that kills
         * the whole daemon; pipes (tests, inetd-style use) only take write(). */
        if (!io->not_socket) {
                ssize_t n = send(io->fd, buf, len, MSG_NOSIGNAL);
                if (n >= 0 || errno != ENOTSOCK)
                        return n;
                io->not_socket = true;
        }
        return write(io->fd, buf, len);
}

static size_t queued(const LineIo *io) {
        return io->out_end - io->out_start;
}

static bool output_high(const LineIo *io) {
        return queued(io) > io->limits.high_water;
}

static bool in_handshake(const LineIo *io) {
        return io->switch_pending || io->handshaking;
}

static bool input_blocked(const LineIo *io) {
        return io->failed || io->closing || io->eof_delivered || io->paused || output_high(io) ||
               io->error < 0 || in_handshake(io);
}

static bool can_read(const LineIo *io) {
        return !input_blocked(io) && !io->eof_seen;
}

static void schedule(LineIo *io) {
        (void) sd_event_source_set_enabled(io->defer_source, SD_EVENT_ONESHOT);
}

static void set_error(LineIo *io, int error) {
        assert(error < 0);

        if (io->error == 0)
                io->error = error;
        schedule(io);
}

/* Make the epoll registration match what we want: EPOLLIN only when we would read, EPOLLOUT
 * only while output waits. With nothing wanted the source is turned off rather than left with
 * an empty mask, because epoll reports EPOLLHUP/EPOLLERR regardless and would spin. */
static void update_events(LineIo *io) {
        uint32_t events = 0;
        int r;

        if (!io->failed && !io->closed && io->error == 0) {
                if (io->handshaking)
                        events |= io->handshake_want_write ? EPOLLOUT : EPOLLIN;
                else {
                        if (can_read(io))
                                events |= EPOLLIN;
                        if (io->switch_pending ? io->clear_left > 0 : queued(io) > 0 && !io->corked)
                                events |= EPOLLOUT;
                }
        }
        /* Edge-triggered: with level-triggered sources, every loop iteration's epoll_wait
         * re-reported every readable socket, so thousands of peers closing at once cost
         * quadratic time (10,000 took 10-30 s in the benchmark). Input is read until EAGAIN
         * instead, and maybe_more remembers when we stopped before it. */
        if (events)
                events |= EPOLLET;

        if (events == io->io_events)
                return;

        if (events == 0)
                r = sd_event_source_set_enabled(io->io_source, SD_EVENT_OFF);
        else {
                r = sd_event_source_set_io_events(io->io_source, events);
                if (r >= 0 && io->io_events == 0)
                        r = sd_event_source_set_enabled(io->io_source, SD_EVENT_ON);
        }
        if (r < 0) {
                set_error(io, r);
                return;
        }
        io->io_events = events;
}

static void release_output_if_empty(LineIo *io) {
        if (io->out_start < io->out_end)
                return;
        free(io->out);
        io->out = NULL;
        io->out_start = io->out_end = io->out_size = 0;
}

/* Write from buf until done or the transport would block. Returns bytes written, or a negative
 * errno. */
static ssize_t write_some(LineIo *io, const char *buf, size_t len) {
        size_t done = 0;

        while (done < len) {
                ssize_t n = io->transport.write(io->transport.ctx, buf + done, len - done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                break;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                done += (size_t) n;
        }
        return (ssize_t) done;
}

static void flush_output(LineIo *io) {
        size_t len = queued(io);
        ssize_t n;

        /* While a transport switch waits, only what was queued before it goes out (in the
         * clear); the rest waits for the new transport. */
        if (io->switch_pending)
                len = len < io->clear_left ? len : io->clear_left;
        else if (io->corked || io->handshaking)
                return;
        if (io->error < 0 || len == 0)
                return;

        n = write_some(io, io->out + io->out_start, len);
        if (n < 0) {
                set_error(io, (int) n);
                return;
        }
        io->out_start += (size_t) n;
        if (io->switch_pending)
                io->clear_left -= (size_t) n;
        release_output_if_empty(io);
}

static int append_output(LineIo *io, const char *data, size_t len) {
        if (io->out_size - io->out_end < len) {
                size_t need, size;
                char *p;

                /* Reuse the space already written out before growing. */
                if (io->out_start > 0) {
                        memmove(io->out, io->out + io->out_start, queued(io));
                        io->out_end -= io->out_start;
                        io->out_start = 0;
                }
                if (io->out_size - io->out_end < len) {
                        if (len > SIZE_MAX - io->out_end)
                                return -ENOMEM;
                        need = io->out_end + len;
                        size = io->out_size > 0 ? io->out_size : 1024;
                        while (size < need)
                                size = size > SIZE_MAX / 2 ? need : size * 2;
                        p = realloc(io->out, size);
                        if (!p)
                                return -ENOMEM;
                        io->out = p;
                        io->out_size = size;
                }
        }
        memcpy(io->out + io->out_end, data, len);
        io->out_end += len;
        return 0;
}

/* Calls the owner; afterwards io may be gone. */
static int call(LineIo *io, LineIoEvent event, char *data, size_t len, int error) {
        if (io->handler(io, event, data, len, error, io->userdata) == LINEIO_FREED)
                return DISPATCH_FREED;
        return DISPATCH_AGAIN;
}

/* Look for CRLF in the undelivered input, starting where the last search stopped. On success
 * *ret_pos is the index of the CR. On failure in_scan is left at the end of the data, or at a
 * trailing CR whose LF may still come. */
static bool find_crlf(LineIo *io, size_t *ret_pos) {
        size_t p = io->in_scan > io->in_start ? io->in_scan : io->in_start;

        while (p < io->in_end) {
                const char *cr = memchr(io->in + p, '\r', io->in_end - p);
                size_t i;

                if (!cr)
                        break;
                i = (size_t) (cr - io->in);
                if (i + 1 >= io->in_end) {
                        io->in_scan = i;
                        return false;
                }
                if (io->in[i + 1] == '\n') {
                        io->in_scan = i;
                        *ret_pos = i;
                        return true;
                }
                p = i + 1;
        }
        io->in_scan = io->in_end;
        return false;
}

/* Hand out the next input event that the buffer holds, if any. */
static int dispatch_input(LineIo *io) {
        size_t pending = io->in_end - io->in_start, pos, len, max_line = io->limits.max_line;
        char *data;

        if (pending == 0)
                return DISPATCH_IDLE;

        if (io->raw_remaining > 0) {
                len = pending < io->raw_remaining ? pending : io->raw_remaining;
                data = io->in + io->in_start;
                io->in_start += len;
                io->raw_remaining -= len;
                return call(io, LINEIO_RAW, data, len, 0);
        }

        if (io->discarding) {
                if (find_crlf(io, &pos)) {
                        io->in_start = io->in_scan = pos + 2;
                        io->discarding = false;
                        return DISPATCH_AGAIN;
                }
                /* Drop what was searched, but keep a trailing CR: the LF that ends this line may
                 * be in the next read. */
                io->in_start = io->in_scan;
                return DISPATCH_IDLE;
        }

        data = io->in + io->in_start;
        if (find_crlf(io, &pos)) {
                len = pos - io->in_start;
                /* Consume before calling, so that lineio_discard_input() from inside the
                 * handler affects only what follows. The CR becomes a terminator: handy for
                 * parsers, harmless since it has been consumed. */
                io->in_start = io->in_scan = pos + 2;
                if (len > max_line) {
                        data[max_line] = '\0';
                        return call(io, LINEIO_OVERFLOW, data, max_line, 0);
                }
                data[len] = '\0';
                return call(io, LINEIO_LINE, data, len, 0);
        }

        /* No CRLF yet. A line is known to be too long once max_line + 1 bytes are here, unless
         * the last of exactly max_line + 1 is a CR that an LF may still complete. Since the
         * buffer is larger than max_line + 2, a full buffer always gets here, so input never
         * stalls on a full buffer. */
        if (pending > max_line + 1 || (pending == max_line + 1 && io->in[io->in_end - 1] != '\r')) {
                io->in_start = io->in_scan;
                io->discarding = true;
                data[max_line] = '\0';
                return call(io, LINEIO_OVERFLOW, data, max_line, 0);
        }
        return DISPATCH_IDLE;
}

/* Switch transports once the clear output is out, then step the handshake. */
static int progress_handshake(LineIo *io) {
        bool want_write = false;
        int r;

        if (io->switch_pending) {
                flush_output(io);
                if (io->clear_left > 0)
                        return DISPATCH_IDLE;
                io->transport = io->next_transport;
                io->switch_pending = false;
                io->handshaking = true;
        }
        r = io->transport.handshake(io->transport.ctx, &want_write);
        if (r == -EAGAIN) {
                io->handshake_want_write = want_write;
                return DISPATCH_IDLE;
        }
        if (r < 0) {
                set_error(io, r);
                return DISPATCH_AGAIN;
        }
        io->handshaking = false;
        io->maybe_more = true;   /* the handshake may have read application data too */
        return call(io, LINEIO_HANDSHAKE, NULL, 0, 0);
}

static int dispatch_one(LineIo *io) {
        int r;

        if (io->failed || io->closed)
                return DISPATCH_IDLE;

        if (io->error < 0) {
                io->failed = true;
                (void) sd_event_source_set_enabled(io->io_source, SD_EVENT_OFF);
                io->io_events = 0;
                return call(io, LINEIO_ERROR, NULL, 0, io->error);
        }

        if (in_handshake(io) && !io->closing)
                return progress_handshake(io);

        if (io->want_drained && queued(io) <= io->limits.low_water) {
                io->want_drained = false;
                return call(io, LINEIO_DRAINED, NULL, 0, 0);
        }

        if (io->closing) {
                /* Mid-handshake nothing more can be said to the peer: close at once. */
                if (queued(io) > 0 && !in_handshake(io))
                        return DISPATCH_IDLE;
                /* Tell the peer we are done while it can still send its FIN; on a pipe there is
                 * nothing to shut down, and an already gone peer is no longer our concern. */
                if (io->transport.bye && !in_handshake(io))
                        io->transport.bye(io->transport.ctx);
                (void) shutdown(io->fd, SHUT_WR);
                io->closed = true;
                return call(io, LINEIO_EOF, NULL, 0, 0);
        }

        if (input_blocked(io))
                return DISPATCH_IDLE;

        r = dispatch_input(io);
        if (r != DISPATCH_IDLE)
                return r;

        if (io->eof_seen) {
                /* An unterminated last line is not a line. */
                io->in_start = io->in_end = io->in_scan = 0;
                io->eof_delivered = true;
                return call(io, LINEIO_EOF, NULL, 0, 0);
        }
        return DISPATCH_IDLE;
}

static int dispatch(LineIo *io) {
        for (;;) {
                int r = dispatch_one(io);
                if (r != DISPATCH_AGAIN)
                        return r;
        }
}

/* Read once into the buffer. */
static void read_input(LineIo *io) {
        size_t size = io->limits.buffer_size, room;
        ssize_t n;

        if (!io->in) {
                io->in = malloc(size);
                if (!io->in) {
                        set_error(io, -ENOMEM);
                        return;
                }
                io->in_start = io->in_end = io->in_scan = 0;
        } else if (io->in_start == io->in_end) {
                io->in_start = io->in_end = io->in_scan = 0;
        } else if (io->in_start > 0 && size - io->in_end <= size / 4) {
                /* Compact only when the space left at the end gets short: lines are small next
                 * to the buffer, so this moves little and happens rarely. */
                size_t pending = io->in_end - io->in_start;

                memmove(io->in, io->in + io->in_start, pending);
                io->in_scan -= io->in_scan > io->in_start ? io->in_start : io->in_scan;
                io->in_start = 0;
                io->in_end = pending;
        }

        room = size - io->in_end;
        if (room == 0)
                return;   /* full: maybe_more stays as it is until the lines are used up */

        n = io->transport.read(io->transport.ctx, io->in + io->in_end, room);
        if (n > 0)
                io->in_end += (size_t) n;
        else if (n == 0) {
                io->eof_seen = true;
                io->maybe_more = false;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK)
                io->maybe_more = false;
        else if (errno != EINTR) {
                io->maybe_more = false;
                set_error(io, negative_errno());
        }
}

/* Read and deliver until the kernel has nothing more (edge-triggered: nothing will say so
 * again) or input is blocked. A burst is cut after a few reads and continued from the defer
 * source, so that one fast peer cannot starve the others. */
static int read_and_dispatch(LineIo *io) {
        for (unsigned i = 0; i < 8 && io->maybe_more && can_read(io); i++) {
                read_input(io);
                if (dispatch(io) == DISPATCH_FREED)
                        return DISPATCH_FREED;
        }
        return DISPATCH_IDLE;
}

static void release_input_if_empty(LineIo *io) {
        if (io->in && io->in_start == io->in_end) {
                free(io->in);
                io->in = NULL;
                io->in_start = io->in_end = io->in_scan = 0;
        }
}

/* Common tail of both event callbacks. */
static int finish(LineIo *io) {
        if (io->maybe_more && can_read(io))
                schedule(io);   /* input left in the kernel: no edge will come for it */
        update_events(io);
        release_input_if_empty(io);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        LineIo *io = userdata;

        if (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                flush_output(io);

        /* Buffered input first (after a resume): a read happens only once it is used up. */
        if (dispatch(io) == DISPATCH_FREED)
                return 0;

        if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                io->maybe_more = true;
                if (read_and_dispatch(io) == DISPATCH_FREED)
                        return 0;
        }

        return finish(io);
}

static int on_defer(sd_event_source *s, void *userdata) {
        LineIo *io = userdata;

        if (dispatch(io) == DISPATCH_FREED)
                return 0;
        if (read_and_dispatch(io) == DISPATCH_FREED)
                return 0;
        return finish(io);
}

static bool limits_valid(const LineIoLimits *l) {
        return l->max_line > 0 && l->max_line < SIZE_MAX - 3 && l->buffer_size > l->max_line + 2 &&
               l->low_water <= l->high_water;
}

int lineio_new(sd_event *event, int fd, const LineIoLimits *limits, LineIoHandler handler,
               void *userdata, LineIo **ret) {
        const LineIoLimits defaults = LINEIO_LIMITS_DEFAULT;
        LineIo *io;
        int r;

        assert(event);
        assert(handler);
        assert(ret);

        if (fd < 0)
                return -EBADF;
        if (!limits)
                limits = &defaults;
        if (!limits_valid(limits))
                return -EINVAL;

        io = calloc(1, sizeof(*io));
        if (!io)
                return -ENOMEM;

        *io = (LineIo){
                .fd = fd,
                .limits = *limits,
                .handler = handler,
                .userdata = userdata,
                .transport = { .read = default_read, .write = default_write, .ctx = io },
                .io_events = EPOLLIN | EPOLLET,
                .maybe_more = true,
        };

        r = sd_event_add_io(event, &io->io_source, fd, EPOLLIN | EPOLLET, on_io, io);
        if (r < 0)
                goto fail;
        r = sd_event_add_defer(event, &io->defer_source, on_defer, io);
        if (r < 0)
                goto fail;
        /* Defer sources start enabled; this one only runs when scheduled. */
        r = sd_event_source_set_enabled(io->defer_source, SD_EVENT_OFF);
        if (r < 0)
                goto fail;

        io->event = sd_event_ref(event);
        *ret = io;
        return 0;

fail:
        /* The fd stays the caller's on failure. */
        sd_event_source_disable_unref(io->io_source);
        sd_event_source_disable_unref(io->defer_source);
        free(io);
        return r;
}

LineIo *lineio_free(LineIo *io) {
        if (!io)
                return NULL;

        /* Safe from inside our own callbacks: sd-event keeps a dispatching source alive until
         * its callback returns, and both are disconnected here before the fd goes. */
        sd_event_source_disable_unref(io->io_source);
        sd_event_source_disable_unref(io->defer_source);
        sd_event_unref(io->event);
        safe_close(io->fd);
        free(io->in);
        free(io->out);
        free(io);
        return NULL;
}

int lineio_start_handshake(LineIo *io, const LineIoTransport *transport) {
        assert(io);
        assert(transport && transport->handshake);

        io->next_transport = *transport;
        io->switch_pending = true;
        io->clear_left = queued(io);
        io->handshake_want_write = false;
        schedule(io);
        update_events(io);
        return 0;
}

bool lineio_is_handshaking(const LineIo *io) {
        assert(io);
        return in_handshake(io);
}

int lineio_get_fd(const LineIo *io) {
        assert(io);
        return io->fd;
}

void lineio_set_transport(LineIo *io, const LineIoTransport *transport) {
        assert(io);

        if (transport)
                io->transport = *transport;
        else
                io->transport = (LineIoTransport){ .read = default_read, .write = default_write, .ctx = io };
}

void lineio_set_max_line(LineIo *io, size_t max_line) {
        assert(io);
        assert(max_line > 0);

        /* The buffer never grows: a longer limit than it can hold (with CRLF) is clamped. */
        if (max_line > io->limits.buffer_size - 3)
                max_line = io->limits.buffer_size - 3;
        io->limits.max_line = max_line;
}

void lineio_pause(LineIo *io) {
        assert(io);

        io->paused = true;
        update_events(io);
}

int lineio_resume(LineIo *io) {
        assert(io);

        if (!io->paused)
                return 0;
        io->paused = false;
        /* Buffered lines go out from the defer source, not from here: the caller may be inside
         * the handler, and there may be no new input to wake us up. */
        return sd_event_source_set_enabled(io->defer_source, SD_EVENT_ONESHOT);
}

bool lineio_is_paused(const LineIo *io) {
        assert(io);
        return io->paused;
}

void lineio_read_raw(LineIo *io, size_t n) {
        assert(io);

        io->raw_remaining = n;
        /* Bytes already buffered count: from outside a callback nothing else would get them
         * delivered before the next read. */
        if (n > 0 && io->in_end > io->in_start)
                schedule(io);
}

size_t lineio_discard_input(LineIo *io) {
        size_t n;

        assert(io);

        n = io->in_end - io->in_start;
        /* Keep the buffer itself: the handler may be looking at a line in it right now. */
        io->in_start = io->in_end = io->in_scan = 0;
        io->discarding = false;
        return n;
}

size_t lineio_pending_input(const LineIo *io) {
        assert(io);
        return io->in_end - io->in_start;
}

int lineio_write(LineIo *io, const void *data, size_t len) {
        bool was_high;
        int r;

        assert(io);
        assert(data || len == 0);

        if (io->error < 0)
                return io->error;
        if (io->closing)
                return -EPIPE;
        if (len == 0)
                return 0;

        was_high = output_high(io);

        /* The common case: nothing queued, so write straight from the caller's buffer. */
        if (queued(io) == 0 && !io->corked && !in_handshake(io)) {
                ssize_t n = write_some(io, data, len);
                if (n < 0) {
                        set_error(io, (int) n);
                        return (int) n;
                }
                data = (const char *) data + n;
                len -= (size_t) n;
        }

        if (len > 0) {
                r = append_output(io, data, len);
                if (r < 0)
                        return r;
        }

        if (io->want_drained || (was_high && !output_high(io)))
                schedule(io);
        update_events(io);
        return 0;
}

int lineio_printf(LineIo *io, const char *format, ...) {
        char buf[512];
        va_list ap;
        int n, r;

        assert(io);
        assert(format);

        va_start(ap, format);
        n = vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        if ((size_t) n < sizeof(buf))
                return lineio_write(io, buf, (size_t) n);

        _cleanup_free_ char *p = malloc((size_t) n + 1);
        if (!p)
                return -ENOMEM;
        va_start(ap, format);
        r = vsnprintf(p, (size_t) n + 1, format, ap);
        va_end(ap);
        if (r != n)
                return -EINVAL;
        return lineio_write(io, p, (size_t) n);
}

void lineio_cork(LineIo *io) {
        assert(io);

        io->corked = true;
        update_events(io);
}

int lineio_flush(LineIo *io) {
        bool was_high;

        assert(io);

        was_high = output_high(io);
        io->corked = false;
        flush_output(io);
        if (io->error < 0)
                return io->error;
        if (io->want_drained || io->closing || (was_high && !output_high(io)))
                schedule(io);
        update_events(io);
        return 0;
}

size_t lineio_queued_output(const LineIo *io) {
        assert(io);
        return queued(io);
}

void lineio_notify_drained(LineIo *io) {
        assert(io);

        io->want_drained = true;
        schedule(io);
}

int lineio_close_after_flush(LineIo *io) {
        assert(io);

        if (io->closing)
                return 0;
        io->closing = true;
        /* Completion (or a write error) is reported from the loop, never from this call. */
        schedule(io);
        return lineio_flush(io);
}
