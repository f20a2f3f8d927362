/* SPDX-License-Identifier: GPL-3.0-or-later */
/* E-MailRelay's address verifier (--address-verifier): exit:, net: and external programs, run
 * asynchronously on an sd-event loop with a timeout, answering whether a recipient is local,
 * remote, invalid or temporarily invalid.
 *
 * A program (a path, or file:<path>; the whole spec is the path, no words are split off, and a
 * relative one is made absolute at parse time) is spawned as child.h describes, with argv:
 * recipient, MAIL FROM address ("" for none), peer "ip:port", our domain, the SASL mechanism in
 * lower case ("none" when not authenticated), the auth id ("" if not given; the daemon passes
 * E-MailRelay's "server none" for a trusted address). It prints up to two lines (the first
 * 4 KiB of stdout are read) and exits:
 *   0        local:     line 1 the full name, line 2 the mailbox (required: without one the
 *                       result is temporary, "cannot verify")
 *   1        remote:    line 2 the address to store and forward (the recipient if missing)
 *   2, 4-99, 101-255    invalid: line 1 the response (default "mailbox unavailable"), line 2
 *                       the reason for the log (default the response)
 *   3        temporary: as invalid
 *   100      abort:     the session is to be dropped
 * A program killed by a signal, or one that cannot be executed, gives temporary "cannot
 * verify" (a broken verifier must not bounce mail for good); the timeout gives temporary with
 * response and reason "timeout" (E-MailRelay's "450 timeout").
 *
 * net:<address> (numeric or a unix socket path, as filter_parse_address()) connects afresh for
 * each recipient, sends "rcpt|from|ip:port|domain|mechanism|authid\n" (CR and LF removed from
 * the fields) and reads one line: "0|<mailbox>|<full name>", "1|<address>",
 * "2|<response>[|<reason>]", "3|<response>[|<reason>]" or "100", codes mapping as above. A
 * failure to connect, a disconnect before the line, the timeout or a reply that is not one of
 * these give temporary with response "cannot verify" and the cause as the reason.
 *
 * exit:[<n>] accepts every address as remote, whatever n (as E-MailRelay does).
 * account: is recognised and reported as not supported yet.
 *
 * Every text taken from a verifier has control characters removed (a tab becomes a space) and
 * is cut to 1 KiB (on a UTF-8 character boundary): it ends up in SMTP replies, envelopes and
 * the log. A mailbox may still hold any other character: whoever makes a path of it must check
 * it. */
#pragma once

#include <systemd/sd-event.h>

typedef enum VerifyResult {
        VERIFY_LOCAL,
        VERIFY_REMOTE,
        VERIFY_INVALID,          /* 550 <response> */
        VERIFY_TEMPORARY,        /* 450 <response> */
        VERIFY_ABORT,            /* drop the connection */
        _VERIFY_RESULT_MAX,
} VerifyResult;

typedef struct VerifyOutcome {
        VerifyResult result;
        char *full_name;         /* local: for the VRFY reply ("" if not given) */
        char *mailbox;           /* local: for To-Local */
        char *address;           /* local: the recipient; remote: the address to store (for
                                  * To-Remote and RCPT TO when forwarding) */
        char *response;          /* invalid, temporary: the SMTP reply text, without a code */
        char *reason;            /* invalid, temporary, abort: for the log */
} VerifyOutcome;

typedef struct VerifyRequest {
        const char *recipient;   /* as on the wire (A-labels), without the angle brackets */
        const char *from;        /* MAIL FROM; NULL or "" for none (VRFY) */
        const char *peer;        /* ip:port */
        const char *domain;      /* our --domain */
        const char *mechanism;   /* the SASL mechanism, any case; NULL for "none" */
        const char *auth_id;     /* the authenticated id; NULL for "" */
} VerifyRequest;

typedef struct Verifier Verifier;
typedef struct VerifyRun VerifyRun;

/* Called exactly once per run, on the loop (never from inside verifier_run()), unless the run
 * is cancelled first. The callback may take the outcome's strings (set the fields to NULL);
 * the rest is freed when it returns, and so is the run: the caller must forget the handle then
 * (verifier_run_cancel() on it from inside the callback is a harmless no-op). */
typedef void (*VerifyDoneCallback)(VerifyOutcome *outcome, void *userdata);

/* Parse an --address-verifier value. Returns 0, -EINVAL with *ret_error (if not NULL) set to a
 * message for g_free() ("invalid address verifier \"net:\": missing address", "address
 * verifier \"account:\" is not supported yet"), or another negative errno. */
int verifier_parse(const char *spec, Verifier **ret, char **ret_error);
/* Runs in flight keep the verifier alive: the owner may free it at any time. Returns NULL. */
Verifier *verifier_free(Verifier *v);

/* Verify one recipient (req->recipient required; the request is copied). timeout_seconds 0 for
 * none. SIGCHLD is blocked in the calling thread for a program (see child.h). ret may be NULL.
 * Returns 0 or a negative errno (then there is no callback). */
int verifier_run(Verifier *v, sd_event *e, const VerifyRequest *req, unsigned timeout_seconds, VerifyDoneCallback cb,
                 void *userdata, VerifyRun **ret);
/* Stop a run (SIGKILL the program's process group and reap it, close the connection, free
 * everything); the callback is not called. Safe from inside any other callback. Returns NULL. */
VerifyRun *verifier_run_cancel(VerifyRun *r);

/* Free the strings of an outcome (accepts NULL; harmless twice). */
void verify_outcome_done(VerifyOutcome *o);
