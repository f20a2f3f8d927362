/* SPDX-License-Identifier: GPL-3.0-or-later */
/* E-MailRelay's envelope file: the #2821.8 writer and a reader for #2821.3 to #2821.8, with the
 * failure-reason lines that follow the End line. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

typedef enum EnvelopeBody {
        ENVELOPE_BODY_7BIT,
        ENVELOPE_BODY_8BIT,
        ENVELOPE_BODY_BINARYMIME,
        ENVELOPE_BODY_UNKNOWN,
        _ENVELOPE_BODY_MAX,
        _ENVELOPE_BODY_INVALID = -EINVAL,
} EnvelopeBody;

/* Field values are held as they stand in the file after unfolding (xtext fields stay xtext);
 * a folded value's line breaks are kept as '\n'. NULL and "" both mean empty. */
typedef struct Envelope {
        int format;                     /* 3..8: #2821.<n> read; the writer always writes 8 */
        EnvelopeBody body;
        char *from;
        GPtrArray *to_local;            /* char*: mailbox names */
        GPtrArray *to_remote;           /* char*: addresses */
        char *authentication;           /* xtext */
        char *client;                   /* client IP */
        char *client_name;              /* #2821.4 only; never written */
        char *client_certificate;       /* PEM, '\n' line breaks */
        char *mail_from_auth_in;        /* xtext, "+" or empty */
        char *mail_from_auth_out;       /* xtext, "<>" or empty */
        char *forward_to;
        char *forward_to_address;
        char *client_account_selector;
        bool utf8_mailbox_names;
        GPtrArray *trailer;             /* char*: lines after End without line ending, e.g.
                                         * "X-MailRelay-Reason: 4.3.0 try later" */
        bool lf_only;                   /* the file used LF line endings; rewrites keep them */
} Envelope;

void envelope_init(Envelope *e);
void envelope_done(Envelope *e);
Envelope *envelope_new(void);
Envelope *envelope_free(Envelope *e);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Envelope, envelope_free)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Envelope, envelope_done)

const char *envelope_body_to_string(EnvelopeBody b);   /* "7bit", "8bit", "binarymime", "unknown" */
EnvelopeBody envelope_body_from_string(const char *s);

/* Serialise as #2821.8 with CRLF (or LF when e->lf_only), trailer included. */
GString *envelope_to_string(const Envelope *e);

/* Parse an envelope. On a malformed file returns -EBADMSG and sets *ret_error to
 * "line N: <what is wrong>" (the caller adds the file name), leaving *ret untouched. */
int envelope_parse(const char *data, size_t len, Envelope *ret, char **ret_error);

/* The trailer key of the retry time (see envelope_add_retry()). */
#define ENVELOPE_NEXT_RETRY_KEY "X-MailRelay-NextRetry"

/* Failure reason lines, appended to the trailer: "X-MailRelay-Reason: <printable reason>" and
 * "X-MailRelay-ReasonCode: <code>" (nothing after the colon when code is 0). */
void envelope_add_reason(Envelope *e, const char *reason, int code);
/* Number of X-MailRelay-Reason lines (E-MailRelay's retry count). */
unsigned envelope_count_reasons(const Envelope *e);
/* Value of the last trailer line with this key ("X-MailRelay-Reason"), or NULL. */
const char *envelope_trailer_get(const Envelope *e, const char *key);

/* The serialised form of the reason lines alone, in the given line ending, so that a failure
 * can be appended to a file without rewriting it. */
GString *envelope_reason_lines(const char *reason, int code, bool lf_only);

/* Retry state of a message that failed temporarily and stays ready: after each failed attempt
 * the reason lines and "X-MailRelay-NextRetry: <unix seconds>". A NULL reason gives the
 * NextRetry line alone (a message made due by hand, without an attempt). */
void envelope_add_retry(Envelope *e, const char *reason, int code, long long next_retry);
/* The same lines serialised in the given line ending, for appending to a file. */
GString *envelope_retry_lines(const char *reason, int code, long long next_retry, bool lf_only);
/* The last X-MailRelay-NextRetry value: 0 with *ret_seconds set, -ENOENT when there is none,
 * -EINVAL when it is not a decimal number of seconds. */
int envelope_next_retry(const Envelope *e, long long *ret_seconds);
