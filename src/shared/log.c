/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Logging: the journal with structured fields, or E-MailRelay's text lines on stderr and a log
 * file, plus syslog; one process-wide state behind a mutex. */

/* CODE_FILE= would always name this file, which tells nobody anything. */
#define SD_JOURNAL_SUPPRESS_LOCATION 1

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "log.h"

/* Most lines fit here; longer ones go to the heap. */
#define LOG_STACK_LINE 2048
/* The journal's own limit on field names. */
#define LOG_FIELD_NAME_MAX 64

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static struct {
        bool initialized;
        LogConfig config;       /* program and file point to the copies below (or a static) */
        char *program;
        char *file;
        bool file_dynamic;      /* the pattern has %d or %h: check the name on every write */
        char *file_name;        /* expanded name last tried; if opening it failed, file_fd
                                 * is still the previous file (or -EBADF) */
        int file_fd;
        bool journal;
        bool syslog_open;
} log_state = {
        .file_fd = -EBADF,
};

/* A child forked while another thread logs would otherwise inherit a held lock. */
static void log_atfork_prepare(void) {
        pthread_mutex_lock(&log_lock);
}

static void log_atfork_release(void) {
        pthread_mutex_unlock(&log_lock);
}

static void log_register_atfork(void) {
        (void) pthread_atfork(log_atfork_prepare, log_atfork_release, log_atfork_release);
}

static void log_lock_state(void) {
        (void) pthread_once(&log_once, log_register_atfork);
        pthread_mutex_lock(&log_lock);
}

static void log_unlock_state(void) {
        pthread_mutex_unlock(&log_lock);
}

/* systemd sets JOURNAL_STREAM=<dev>:<ino> for a stderr connected to the journal; it is only
 * trustworthy while fd 2 is still that very stream (not inherited by something redirected). */
static bool log_stderr_is_journal(void) {
        unsigned long long dev, ino;
        const char *e, *p;
        char *end;
        struct stat st;

        e = getenv("JOURNAL_STREAM");
        if (isempty(e) || *e < '0' || *e > '9')
                return false;

        errno = 0;
        dev = strtoull(e, &end, 10);
        if (errno != 0 || *end != ':')
                return false;
        p = end + 1;
        if (*p < '0' || *p > '9')
                return false;
        ino = strtoull(p, &end, 10);
        if (errno != 0 || *end != '\0')
                return false;

        if (fstat(STDERR_FILENO, &st) < 0)
                return false;

        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

static bool log_field_name_valid(const char *key) {
        size_t n = 0;

        if (isempty(key) || key[0] == '_' || (key[0] >= '0' && key[0] <= '9'))
                return false;

        for (const char *p = key; *p; p++, n++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
                        return false;

        return n <= LOG_FIELD_NAME_MAX;
}

static const char *log_level_name(int level) {
        if (level <= LOG_ERR)
                return "error";
        if (level == LOG_WARNING)
                return "warning";
        if (level == LOG_DEBUG)
                return "debug";
        return "info";
}

static void log_reset_locked(void) {
        log_state.file_fd = safe_close(log_state.file_fd);
        free(log_state.file_name);
        log_state.file_name = NULL;
        if (log_state.syslog_open) {
                closelog();
                log_state.syslog_open = false;
        }
        /* Only now: openlog() kept a pointer to the program name. */
        free(log_state.program);
        log_state.program = NULL;
        free(log_state.file);
        log_state.file = NULL;
        log_state.file_dynamic = false;
        log_state.journal = false;
        log_state.config = (LogConfig) {};
        log_state.initialized = false;
}

static void log_init_default_locked(void) {
        if (log_state.initialized)
                return;

        log_state.config = LOG_CONFIG_DEFAULT(program_invocation_short_name);
        log_state.journal = log_stderr_is_journal();
        log_state.initialized = true;
}

/* Opens the log file if its expanded name differs from the last one tried. A failed open keeps
 * writing to the previous file (if any) and is not retried until the name changes, so that a
 * bad path costs one open() per day or hour rather than one per line. */
static int log_file_update_locked(time_t now) {
        _cleanup_free_ char *name = NULL;
        int fd;

        if (!log_state.file)
                return 0;
        if (log_state.file_name && !log_state.file_dynamic)
                return log_state.file_fd >= 0 ? 0 : -EBADF;

        name = log_file_path_expand(log_state.file, (long long) now);
        if (!name)
                return -ENOMEM;
        if (log_state.file_name && streq(name, log_state.file_name))
                return log_state.file_fd >= 0 ? 0 : -EBADF;

        fd = open(name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);
        free(log_state.file_name);
        log_state.file_name = TAKE_PTR(name);
        if (fd < 0)
                return negative_errno();

        safe_close(log_state.file_fd);
        log_state.file_fd = fd;
        return 0;
}

int log_open(const LogConfig *config) {
        _cleanup_free_ char *program = NULL, *file = NULL;
        int r = 0;

        assert(config);

        program = strdup(config->program ?: program_invocation_short_name);
        if (!program)
                return -ENOMEM;
        if (!isempty(config->file)) {
                file = strdup(config->file);
                if (!file)
                        return -ENOMEM;
        }

        log_lock_state();
        log_reset_locked();

        log_state.config = *config;
        log_state.program = TAKE_PTR(program);
        log_state.config.program = log_state.program;
        log_state.file = TAKE_PTR(file);
        log_state.config.file = log_state.file;
        log_state.file_dynamic = log_state.file &&
                (strstr(log_state.file, "%d") || strstr(log_state.file, "%h"));
        log_state.journal = config->journal > 0 || (config->journal < 0 && log_stderr_is_journal());
        log_state.initialized = true;

        if (config->syslog_facility >= 0) {
                openlog(log_state.program, LOG_PID, config->syslog_facility);
                log_state.syslog_open = true;
        }

        r = log_file_update_locked(time(NULL));

        log_unlock_state();
        return r;
}

void log_close(void) {
        log_lock_state();
        log_reset_locked();
        log_unlock_state();
}

const LogConfig *log_get_config(void) {
        log_lock_state();
        log_init_default_locked();
        log_unlock_state();
        return &log_state.config;
}

char *log_file_path_expand(const char *pattern, long long unix_seconds) {
        time_t t = (time_t) unix_seconds;
        struct tm tm;
        size_t n;
        char *ret, *q;

        assert(pattern);

        if (!localtime_r(&t, &tm))
                return strdup(pattern);

        /* Each two-character sequence grows to at most a few dozen characters. */
        n = strlen(pattern);
        ret = malloc(n * 16 + 1);
        if (!ret)
                return NULL;

        q = ret;
        for (const char *p = pattern; *p; p++) {
                if (p[0] == '%' && p[1] == 'd') {
                        q += sprintf(q, "%04d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
                        p++;
                } else if (p[0] == '%' && p[1] == 'h') {
                        q += sprintf(q, "%02d", tm.tm_hour);
                        p++;
                } else if (p[0] == '%' && p[1] == '%') {
                        /* Kept as it is, but "%%d" must not expand. */
                        *q++ = *p++;
                        *q++ = *p;
                } else
                        *q++ = *p;
        }
        *q = '\0';

        return ret;
}

/* Formats into buf if it fits, else into a new allocation that the caller frees (anything but
 * buf). errno is set to error first so that %m works. Returns the string and its length, or
 * NULL for a bad format. */
_printf_(5, 0) static const char *log_vformat(
                char *buf, size_t size, int error, size_t *ret_len, const char *format, va_list ap) {
        va_list aq;
        char *heap;
        int n;

        va_copy(aq, ap);
        errno = error;
        n = vsnprintf(buf, size, format, aq);
        va_end(aq);
        if (n < 0)
                return NULL;
        if ((size_t) n < size) {
                *ret_len = (size_t) n;
                return buf;
        }

        heap = malloc((size_t) n + 1);
        if (!heap) {
                *ret_len = size - 1; /* truncated rather than lost */
                return buf;
        }
        errno = error;
        (void) vsnprintf(heap, (size_t) n + 1, format, ap);
        *ret_len = (size_t) n;
        return heap;
}

_printf_(4, 5) static const char *log_format(
                char *buf, size_t size, size_t *ret_len, const char *format, ...) {
        const char *s;
        va_list ap;

        va_start(ap, format);
        s = log_vformat(buf, size, 0, ret_len, format, ap);
        va_end(ap);
        return s;
}

static void log_free_unless(const char *s, const char *buf) {
        if (s && s != buf)
                free((char *) s);
}

static void log_write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return; /* nowhere left to complain to */
                }
                p += k;
                n -= (size_t) k;
        }
}

/* Appends KEY=value at *p as the next iovec; *p must have room for it. */
static void log_iov_put(struct iovec *iov, size_t *n_iov, char **p, const char *key, const char *value) {
        size_t k = strlen(key), v = strlen(value);

        memcpy(*p, key, k);
        (*p)[k] = '=';
        memcpy(*p + k + 1, value, v);
        iov[(*n_iov)++] = (struct iovec) { .iov_base = *p, .iov_len = k + 1 + v };
        *p += k + 1 + v;
}

static void log_send_journal(
                int level, int error, const LogField *fields, size_t n_fields, const char *program,
                const char *text) {
        char priority[12], errno_value[12];
        const LogField fixed[] = {
                { "MESSAGE", text },
                { "PRIORITY", priority },
                { "SYSLOG_IDENTIFIER", program },
                { "ERRNO", error != 0 ? errno_value : NULL },
        };
        _cleanup_free_ struct iovec *iov = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t n_iov = 0, size = 0;
        char *p;

        (void) snprintf(priority, sizeof priority, "%d", level);
        (void) snprintf(errno_value, sizeof errno_value, "%d", error);

        for (size_t i = 0; i < ELEMENTSOF(fixed); i++)
                if (fixed[i].value)
                        size += strlen(fixed[i].key) + 1 + strlen(fixed[i].value);
        for (size_t i = 0; i < n_fields; i++)
                if (fields[i].value && log_field_name_valid(fields[i].key))
                        size += strlen(fields[i].key) + 1 + strlen(fields[i].value);

        iov = calloc(ELEMENTSOF(fixed) + n_fields, sizeof(struct iovec));
        p = buf = malloc(size);
        if (!iov || !buf) {
                (void) sd_journal_print(level, "%s", text);
                return;
        }

        for (size_t i = 0; i < ELEMENTSOF(fixed); i++)
                if (fixed[i].value)
                        log_iov_put(iov, &n_iov, &p, fixed[i].key, fixed[i].value);
        for (size_t i = 0; i < n_fields; i++)
                if (fields[i].value && log_field_name_valid(fields[i].key))
                        log_iov_put(iov, &n_iov, &p, fields[i].key, fields[i].value);

        /* Without a journal there is nothing better to do; stderr would only duplicate. */
        (void) sd_journal_sendv(iov, (int) n_iov);
}

#define LOG_PREFIX_MAX 256

/* The --log-format fields before the text, each followed by ": ": the client's address
 * (address; with port, address:port or [v6]:port) and the spool's message id (msgid). A field
 * the entry does not have is left out (unit has none until named instances exist). Called with
 * the state locked. */
static void log_prefix(char *buf, size_t size, const char *address, const char *port, const char *msgid) {
        const LogConfig *c = &log_state.config;
        size_t n = 0;
#define PUT(...) do { int k_ = snprintf(buf + n, size - n, __VA_ARGS__); \
                      if (k_ > 0) n = n + (size_t) k_ < size ? n + (size_t) k_ : size - 1; } while (0)
        if ((c->address || c->port) && address) {
                bool v6 = strchr(address, ':') != NULL;
                if (c->port && port)
                        PUT("%s%s%s:%s: ", v6 ? "[" : "", address, v6 ? "]" : "", port);
                else
                        PUT("%s: ", address);
        }
        if (c->msgid && msgid)
                PUT("%s: ", msgid);
#undef PUT
}

int log_fields(int level, int error, const LogField *fields, size_t n_fields, const char *format, ...) {
        int saved_errno = errno, abs_error = error < 0 ? -error : error;
        char text_buf[LOG_STACK_LINE], line_buf[LOG_STACK_LINE], time_buf[128] = "";
        const char *text = NULL, *line = NULL, *address = NULL, *port = NULL, *msgid = NULL;
        char prefix[LOG_PREFIX_MAX] = "";
        size_t text_len = 0, line_len = 0;
        struct timespec ts;
        va_list ap;

        assert(format);
        assert(fields || n_fields == 0);

        level &= LOG_PRIMASK;

        /* Field names come from code, so a bad one is a bug; skipped too in case of NDEBUG. */
        for (size_t i = 0; i < n_fields; i++) {
                assert(log_field_name_valid(fields[i].key));
                if (fields[i].value && fields[i].key && streq(fields[i].key, "REMOTE_ADDR"))
                        address = fields[i].value;
                else if (fields[i].value && fields[i].key && streq(fields[i].key, "REMOTE_PORT"))
                        port = fields[i].value;
                else if (fields[i].value && fields[i].key && streq(fields[i].key, "EMAILRELAY_ID"))
                        msgid = fields[i].value;
        }

        log_lock_state();
        log_init_default_locked();

        if (level >= LOG_DEBUG && !log_state.config.verbose)
                goto finish;

        va_start(ap, format);
        text = log_vformat(text_buf, sizeof text_buf, abs_error ?: saved_errno, &text_len, format, ap);
        va_end(ap);
        if (!text)
                text = "(invalid log format)";
        else
                /* Messages quote what peers send (a bare LF is data in SMTP): never let it start
                 * a line of its own, or a client could forge log lines for fail2ban to act on. */
                for (char *p = (char *) text; *p; p++)
                        if ((unsigned char) *p < 0x20 || *p == 0x7f)
                                *p = *p == '\t' ? ' ' : '?';

        (void) clock_gettime(CLOCK_REALTIME, &ts);
        log_prefix(prefix, sizeof prefix, address, port, msgid);

        if (log_state.journal)
                log_send_journal(level, abs_error, fields, n_fields, log_state.config.program, text);

        if ((log_state.config.to_stderr && !log_state.journal) || log_state.file) {
                if (log_state.config.time) {
                        struct tm tm;

                        if (localtime_r(&ts.tv_sec, &tm))
                                (void) snprintf(time_buf, sizeof time_buf,
                                                "%04d%02d%02d.%02d%02d%02d.%03ld: ",
                                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                                                tm.tm_hour, tm.tm_min, tm.tm_sec,
                                                ts.tv_nsec / 1000000L);
                }

                /* One buffer, one write(2): lines from concurrent writers do not interleave. */
                line = log_format(line_buf, sizeof line_buf, &line_len, "%s: %s%s: %s%s\n",
                                  log_state.config.program, time_buf, log_level_name(level), prefix, text);
        }

        if (line) {
                bool to_file = false;

                /* --log-file redirects the stderr log, as E-MailRelay's does; while the
                 * file cannot be opened the lines go to stderr rather than nowhere. */
                if (log_state.file) {
                        (void) log_file_update_locked(ts.tv_sec);
                        if (log_state.file_fd >= 0) {
                                log_write_all(log_state.file_fd, line, line_len);
                                to_file = true;
                        }
                }

                if (log_state.config.to_stderr && !log_state.journal && !to_file)
                        log_write_all(STDERR_FILENO, line, line_len);
        }

        if (log_state.syslog_open)
                syslog(level, "%s%s", prefix, text);

finish:
        log_unlock_state();
        log_free_unless(text, text_buf);
        log_free_unless(line, line_buf);
        errno = saved_errno;
        return -abs_error;
}

bool log_protocol_enabled(void) {
        log_lock_state();
        log_init_default_locked();
        bool on = log_state.config.verbose;
        log_unlock_state();
        return on;
}

/* Where a command's secret starts (see log_protocol), or len for none. */
static size_t secret_offset(const char *line, size_t len) {
        size_t i;
        if (len > 5 && strncasecmp(line, "PASS ", 5) == 0)
                return 5;
        bool apop = len > 5 && strncasecmp(line, "APOP ", 5) == 0;
        if (!apop && !(len > 5 && strncasecmp(line, "AUTH ", 5) == 0))
                return len;
        for (i = 5; i < len && line[i] != ' '; i++)   /* the mechanism, or APOP's user */
                ;
        return i + 1 < len ? i + 1 : len;
}

bool log_looks_like_a_response(const char *line, size_t len) {
        if (len == 0 || memchr(line, ' ', len))
                return false;
        if (len > 8)
                return true;
        for (size_t i = 0; i < len; i++)
                if (!((line[i] >= 'A' && line[i] <= 'Z') || (line[i] >= 'a' && line[i] <= 'z')))
                        return true;
        return false;
}

void log_protocol(bool sent, const char *line, size_t len, bool secret, const LogField *fields, size_t n_fields) {
        char text[1024];
        LogField all[16];

        if (!log_protocol_enabled())
                return;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                len--;
        if (!sent && log_looks_like_a_response(line, len))
                secret = true;
        size_t keep = secret ? 0 : secret_offset(line, len);
        size_t n = keep < sizeof text - 1 ? keep : sizeof text - 1;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) line[i];
                text[i] = c < 0x20 || c == 0x7f || c == '"' || c == '\\' ? '?' : (char) c;
        }
        text[n] = '\0';
        if (n_fields > ELEMENTSOF(all) - 1)
                n_fields = ELEMENTSOF(all) - 1;
        memcpy(all, fields, n_fields * sizeof *fields);
        all[n_fields++] = (LogField) { "EMAILRELAY_PROTOCOL", sent ? "tx" : "rx" };
        log_fields(LOG_INFO, 0, all, n_fields, "%s: \"%s%s\"", sent ? "tx>>" : "rx<<", text,
                   keep < len ? "[not logged]" : n < keep ? "..." : "");
}

void log_protocol_peer(bool sent, const char *line, size_t len, bool secret, const char *host, unsigned port) {
        char text[8];
        if (!log_protocol_enabled())
                return;
        snprintf(text, sizeof text, "%u", port);
        LogField fields[] = { { "REMOTE_ADDR", host }, { "REMOTE_PORT", text } };
        log_protocol(sent, line, len, secret, fields, ELEMENTSOF(fields));
}

char *log_quotable(const char *s, size_t max) {
        size_t n = s ? strnlen(s, max) : 0;
        char *out = malloc(n + 1);
        if (!out)
                abort();
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                out[i] = c < 0x20 || c == 0x7f || c == '"' || c == '\\' ? '?' : (char) c;
        }
        out[n] = '\0';
        return out;
}
