/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Logging for the programs (never for library code): the journal with structured fields when
 * stderr is connected to it, otherwise E-MailRelay's text format on stderr and/or a log file,
 * and optionally syslog. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

#include "macro.h"

typedef struct LogConfig {
        const char *program;     /* name printed before each line, e.g. "emailrelay-smtpd" */
        bool verbose;            /* --verbose: debug level too */
        bool to_stderr;          /* --log, or a foreground program; off after --close-stderr */
        bool time;               /* --log-time: "yyyymmdd.hhmmss.mmm: " after the program */
        bool address;            /* --log-address: the REMOTE_ADDR field before the text */
        bool port;               /* --log-format=port: and its REMOTE_PORT, as address:port */
        bool msgid;              /* --log-format=msgid: the EMAILRELAY_ID field, the message */
        const char *file;        /* --log-file: path with optional %d (yyyymmdd) and %h (hh) */
        int syslog_facility;     /* LOG_MAIL etc.; -1 for no syslog */
        int journal;             /* 1 on, 0 off, -1 auto (JOURNAL_STREAM matches stderr) */
} LogConfig;

#define LOG_CONFIG_DEFAULT(prog) \
        ((LogConfig){ .program = (prog), .to_stderr = true, .syslog_facility = -1, .journal = -1 })

/* A structured field for the journal, e.g. { "EMAILRELAY_ID", id }. REMOTE_ADDR is also what
 * --log-address prints; MESSAGE_ID ties an entry to the shipped catalog. */
typedef struct LogField {
        const char *key;
        const char *value;
} LogField;

/* Message ids of the catalog entries (data/emailrelay.catalog). */
#define LOG_MESSAGE_ACCEPTED  "5b1d7e3f0d8a4a6f9a1c2e7b3d4f6a01"
#define LOG_MESSAGE_FORWARDED "5b1d7e3f0d8a4a6f9a1c2e7b3d4f6a02"
#define LOG_MESSAGE_FAILED    "5b1d7e3f0d8a4a6f9a1c2e7b3d4f6a03"
#define LOG_MESSAGE_REJECTED  "5b1d7e3f0d8a4a6f9a1c2e7b3d4f6a04"
#define LOG_MESSAGE_AUTH_FAIL "5b1d7e3f0d8a4a6f9a1c2e7b3d4f6a05"

/* Configure the log. May be called again (after option parsing, after --close-stderr). The
 * strings are copied. Returns 0, or a negative errno if the log file cannot be opened (the
 * log then still goes to stderr). */
int log_open(const LogConfig *config);
void log_close(void);

/* Current configuration, for tests and for passing settings on to child programs. */
const LogConfig *log_get_config(void);

/* Level is a syslog priority: LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR. error, if non-zero,
 * is an errno (either sign) that %m in the format expands to. Returns -abs(error), or 0 when
 * error is 0, so that "return log_error_errno(r, ...)" passes the error up. */
int log_fields(int level, int error, const LogField *fields, size_t n_fields, const char *format, ...)
        _printf_(5, 6);

#define log_full_errno(level, error, ...) log_fields((level), (error), NULL, 0, __VA_ARGS__)
#define log_debug(...)   log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)    log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...)   log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_error_errno(error, ...)   log_full_errno(LOG_ERR, (error), __VA_ARGS__)

/* --verbose: E-MailRelay's protocol trace, one entry per command or reply line, at info level:
 * rx<<: "EHLO client.example" for a line received, tx>>: "250 ok" for one sent, with the
 * EMAILRELAY_PROTOCOL field rx or tx besides the given fields. The line may end in CRLF. Secrets
 * are never logged: what follows AUTH's mechanism, PASS, and APOP's user becomes [not logged],
 * and so does all of a line marked secret (a SASL exchange's responses) or, received, one word
 * that is no command (a response pipelined after a refused AUTH). Quotes and control
 * characters become '?'. Nothing at all without --verbose: callers need not check. */
void log_protocol(bool sent, const char *line, size_t len, bool secret, const LogField *fields, size_t n_fields);
bool log_protocol_enabled(void);
/* A line received that is one word but no command (every verb is at most 8 letters): a SASL
 * response that a client pipelined after a refused AUTH, say. Logged as [not logged]. */
bool log_looks_like_a_response(const char *line, size_t len);
/* The same for a client of a server's: REMOTE_ADDR host and REMOTE_PORT port. */
void log_protocol_peer(bool sent, const char *line, size_t len, bool secret, const char *host, unsigned port);

/* A peer-supplied name fit to quote in a log line that tools parse (fail2ban): at most max
 * bytes, with control characters, quotes and backslashes replaced by '?', so that a name
 * cannot end the quotes and forge " from <address>". Returns a newly allocated string. */
char *log_quotable(const char *s, size_t max);

/* Expand %d and %h in a --log-file path for the given time (exposed for tests). Returns a newly
 * allocated string. */
char *log_file_path_expand(const char *pattern, long long unix_seconds);
