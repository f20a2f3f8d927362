/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-forward: one pass over the spool, forwarding every due message to the next hop,
 * then exit. Started by the .path and .timer units, systemd-run, or by hand; two at once on
 * one spool are safe (each message is locked by flock and rename). */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "filter.h"
#include "forward-client.h"
#include "log.h"
#include "macro.h"
#include "options.h"
#include "sasl.h"
#include "secrets.h"
#include "spool.h"
#include "xtext.h"
#include "wakeup.h"

#define PROGRAM "emailrelay-forward"

/* Exit codes, documented in emailrelay-forward(8). */
enum {
        EXIT_FORWARD_OK = 0,
        EXIT_FORWARD_FAILURES = 1,      /* some messages failed (to .bad or to retry later) */
        EXIT_FORWARD_CONFIG = 2,        /* bad command line or config file */
        EXIT_FORWARD_UNREACHABLE = 3,   /* the next hop could not be reached */
        EXIT_FORWARD_STORE = 5,         /* --immediate-message: nothing to forward, store it */
        EXIT_FORWARD_KEEP_FAILED = 6,   /* --immediate-message: the client filter failed it: keep it
                                         * as .bad (its reason appended), the client is told 452 */
};

typedef struct Config {
        char *forward_to;
        char *ehlo_name;
        unsigned connection_timeout, response_timeout, prompt_timeout, filter_timeout;
        bool forward_to_some;
        bool pipelining;
        bool smtputf8strict, binarymimestrict, eightbitstrict;
        unsigned *retry_schedule;
        size_t n_retry_schedule;
        unsigned retry_give_up;
        FilterChain *client_filters;
        /* --client-auth: a secrets file, or one inline account */
        Secrets *secrets;
        SaslAccount inline_account;
        bool have_inline;
        SaslConfig auth_config;         /* --client-auth-config */
        bool anonymous_client;          /* --anonymous=client: AUTH=<> on MAIL */
        TlsContext *tls;                /* client TLS settings, or NULL */
        bool starttls, tls_required, tls_connection;
        struct sockaddr_storage client_interface;   /* --client-interface; family AF_UNSPEC: none */
        socklen_t client_interface_len;
} Config;

typedef struct Pass {
        Config *config;
        Spool *spool;
        sd_event *event;
        SmtpClient *client;
        char *client_address;          /* what client is connected to */
        char *client_selector;         /* ... and with which account selector */
        GHashTable *unreachable;       /* addresses that failed to connect this pass */
        GHashTable *deferred_ids;      /* ids deferred by this run: not tried again by it, even
                                        * when their retry time is already due (a schedule of 0) */
        unsigned forwarded, failed, deferred, skipped;
        bool stop;
        bool hop_down;
} Pass;

typedef enum Verdict {
        VERDICT_DELIVERED,
        VERDICT_PERMANENT,             /* to .bad */
        VERDICT_TEMPORARY,             /* retry later */
        VERDICT_SKIP,                  /* leave as it was (not attempted) */
} Verdict;

static void log_message(int level, const char *id, int code, const char *hop, const char *format, ...) _printf_(5, 6);
static void log_message(int level, const char *id, int code, const char *hop, const char *format, ...) {
        char text[1024], codestr[8];
        va_list ap;
        va_start(ap, format);
        vsnprintf(text, sizeof text, format, ap);
        va_end(ap);
        snprintf(codestr, sizeof codestr, "%d", code);
        const char *mid = level <= LOG_ERR ? LOG_MESSAGE_FAILED : level == LOG_WARNING ? LOG_MESSAGE_FAILED : LOG_MESSAGE_FORWARDED;
        LogField f[] = {
                { "EMAILRELAY_ID", id },
                { "SMTP_CODE", code > 0 ? codestr : NULL },
                { "NEXT_HOP", hop },
                { "MESSAGE_ID", mid },
        };
        log_fields(level, 0, f, ELEMENTSOF(f), "%s", text);
}

/* ---- retry bookkeeping: reason lines plus X-MailRelay-NextRetry, see emailrelay-spool(5) ---- */

static long long next_retry_of(const Envelope *e) {
        long long t = 0;
        return envelope_next_retry(e, &t) >= 0 ? t : 0;   /* absent or malformed: due */
}

static time_t content_mtime(Pass *p, const char *id) {
        g_autofree char *path = spool_file_path(p->spool, id, ".content");
        struct stat st;
        return stat(path, &st) == 0 ? st.st_mtime : time(NULL);
}

/* Append the failure to the locked envelope and put it back for a later pass; past the
 * give-up time it goes to .bad instead. */
static int defer_message(Pass *p, SpoolLock *l, const Envelope *e, const char *reason, int code) {
        const char *id = spool_lock_id(l);
        g_hash_table_add(p->deferred_ids, g_strdup(id));
        unsigned attempts = envelope_count_reasons(e) + 1;
        time_t now = time(NULL);

        if ((unsigned long long) (now - content_mtime(p, id)) >= p->config->retry_give_up) {
                g_autofree char *why = g_strdup_printf("%s (gave up after %u attempts)", reason, attempts);
                log_message(LOG_ERR, id, code, p->config->forward_to, "message %s failed: %s", id, why);
                p->failed++;
                return spool_lock_fail(l, why, code);
        }
        size_t i = MIN((size_t) attempts - 1, p->config->n_retry_schedule - 1);
        long long next = (long long) now + p->config->retry_schedule[i];
        g_autoptr(GString) lines = envelope_retry_lines(reason, code, next, e->lf_only);
        int fd = spool_lock_envelope_fd(l);
        if (lseek(fd, 0, SEEK_END) < 0)
                return negative_errno();
        for (size_t done = 0; done < lines->len;) {
                ssize_t n = write(fd, lines->str + done, lines->len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? negative_errno() : -EIO;
                done += (size_t) n;
        }
        if (fdatasync(fd) < 0)
                return negative_errno();
        log_message(LOG_WARNING, id, code, p->config->forward_to, "message %s deferred (attempt %u): %s; next try in %lld s",
                    id, attempts, reason, next - (long long) now);
        p->deferred++;
        return spool_lock_release(l);
}

/* ---- connection ---- */

static void disconnect(Pass *p) {
        smtp_client_quit(p->client);
        p->client = NULL;
        g_clear_pointer(&p->client_address, g_free);
        g_clear_pointer(&p->client_selector, g_free);
}

/* ---- client authentication ---- */

/* Run an XOAUTH2 helper ("client oauth <id> exec:<program>"): it gets the account id as its
 * argument and prints a fresh access token on its first line. Bounded by the filter timeout. */
static int oauth_helper_token(const char *program, const char *id, unsigned timeout, char **ret_token, char **ret_error) {
        const char *argv[] = { program, id, NULL };
        g_autoptr(GError) error = NULL;
        GPid pid;
        int out_fd = -1;
        if (!g_spawn_async_with_pipes(NULL, (char **) argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL,
                                      &pid, NULL, &out_fd, NULL, &error)) {
                *ret_error = g_strdup_printf("cannot run the XOAUTH2 helper %s: %s", program, error->message);
                return -ENOEXEC;
        }
        GString *buf = g_string_new(NULL);
        long long deadline = g_get_monotonic_time() / 1000 + (long long) timeout * 1000;
        bool timed_out = false;
        for (;;) {
                long long left = deadline - g_get_monotonic_time() / 1000;
                struct pollfd pfd = { .fd = out_fd, .events = POLLIN };
                if (left <= 0) {
                        timed_out = true;
                        break;
                }
                int n = poll(&pfd, 1, (int) MIN(left, 1000000));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        continue;
                char chunk[1024];
                ssize_t k = read(out_fd, chunk, sizeof chunk);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                if (buf->len < 65536)
                        g_string_append_len(buf, chunk, k);
        }
        close(out_fd);
        if (timed_out)
                kill(pid, SIGKILL);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        g_spawn_close_pid(pid);
        g_autofree char *text = g_string_free(buf, false);
        char *nl = strpbrk(text, "\r\n");
        if (nl)
                *nl = '\0';
        g_strstrip(text);
        if (timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || !*text) {
                *ret_error = g_strdup_printf("the XOAUTH2 helper %s %s", program,
                                             timed_out ? "timed out" : !*text && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "printed no token" : "failed");
                return -EIO;
        }
        *ret_token = TAKE_PTR(text);
        return 0;
}

/* The accounts for a message's ClientAccountSelector: inline, or the secrets file's client
 * lines. Returns how many; 0 means do not authenticate (no selector and no account, or the
 * selector's "plain:b = =" line). A selector that no client line names is -ENOKEY: such a message
 * must never go out unauthenticated because of a typing mistake in the secrets. */
static int client_accounts(Pass *p, const char *selector, SaslAccount **ret, char **ret_error) {
        Config *c = p->config;
        GArray *out = g_array_new(false, true, sizeof(SaslAccount));
        *ret = NULL;

        if (c->have_inline && isempty(selector)) {
                SaslAccount a = { .type = SECRET_PLAIN, .id = g_strdup(c->inline_account.id),
                                  .secret = g_memdup2(c->inline_account.secret, c->inline_account.secret_len + 1),
                                  .secret_len = c->inline_account.secret_len };
                g_array_append_val(out, a);
        } else if (c->secrets) {
                g_autofree char *error = NULL;
                if (secrets_reload_if_changed(c->secrets, &error) > 0)
                        log_info("re-read the secrets file %s", secrets_path(c->secrets));
                size_t n = 0;
                g_autofree const Secret **lines = secrets_client_accounts(c->secrets, selector, &n);
                if (n == 0 && !isempty(selector)) {
                        g_array_unref(out);
                        *ret_error = g_strdup_printf("no client account for selector \"%s\" in %s", selector,
                                                     secrets_path(c->secrets));
                        return -ENOKEY;
                }
                for (size_t i = 0; i < n; i++) {
                        const Secret *x = lines[i];
                        if (!*x->id)
                                continue;   /* "plain:b = =": no authentication for this selector */
                        SaslAccount a = { .type = x->type, .id = g_strdup(x->id) };
                        if (x->type == SECRET_OAUTH && g_str_has_prefix(x->secret, "exec:")) {
                                g_autofree char *token = NULL;
                                int r = oauth_helper_token(x->secret + 5, x->id, c->filter_timeout, &token, ret_error);
                                if (r < 0) {
                                        sasl_account_done(&a);
                                        for (guint k = 0; k < out->len; k++)
                                                sasl_account_done(&g_array_index(out, SaslAccount, k));
                                        g_array_unref(out);
                                        return r;
                                }
                                g_autofree char *raw = g_strdup_printf("user=%s\001auth=Bearer %s\001\001", x->id, token);
                                a.secret = sasl_base64_encode(raw, strlen(raw));
                                explicit_bzero(raw, strlen(raw));
                                explicit_bzero(token, strlen(token));
                        } else
                                a.secret = g_memdup2(x->secret, x->secret_len + 1);
                        a.secret_len = x->secret_len;
                        if (x->type == SECRET_OAUTH || x->type == SECRET_MD5)
                                a.secret_len = strlen(a.secret);
                        g_array_append_val(out, a);
                }
        }
        int n = (int) out->len;
        if (n == 0 && !isempty(selector) && !c->secrets) {
                g_array_unref(out);
                *ret_error = g_strdup_printf("no client account for selector \"%s\": no --client-auth secrets file",
                                             selector);
                return -ENOKEY;
        }
        *ret = (SaslAccount *) g_array_free(out, n == 0);
        return n;
}

static void client_accounts_free(SaslAccount *a, int n) {
        for (int i = 0; i < n; i++)
                sasl_account_done(&a[i]);
        g_free(a);
}

/* Log in on the fresh connection with the first of these accounts that works. */
static int authenticate(Pass *p, const char *address, SaslAccount *accounts, int n, char **ret_reason, int *ret_code) {
        SmtpReply reply = {};

        int r = smtp_client_auth(p->client, accounts, (size_t) n, &p->config->auth_config, &reply);
        if (r == -ENOENT) {
                *ret_reason = g_strdup_printf("cannot authenticate with %s: it offers no usable mechanism (AUTH %s)", address,
                                              p->client->auth_mechs ? p->client->auth_mechs : "not offered");
                *ret_code = 0;
        } else if (r == -EACCES) {
                *ret_reason = g_strdup_printf("authentication with %s failed: %d %s", address, reply.code, reply.text);
                *ret_code = reply.code;
        } else if (r < 0) {
                *ret_reason = g_strdup_printf("connection to %s lost while authenticating: %s", address, g_strerror(-r));
                *ret_code = 0;
        } else
                log_info("authenticated with %s as \"%s\"", address, p->client->auth_id);
        return r;
}

/* Connected to address, authenticated for the selector, or why not (reason and code for the
 * message's record). -ENOKEY: the selector names no account, and nothing was connected. */
static int ensure_connected(Pass *p, const char *address, const char *selector, char **ret_reason, int *ret_code) {
        SmtpReply reply = {};
        SaslAccount *accounts = NULL;
        int r, n;

        if (!selector)
                selector = "";
        if (p->client && streq(p->client_address, address) && streq(p->client_selector, selector)) {
                if (smtp_client_is_idle(p->client))
                        return 0;
                /* Kept between messages or through a linger, and meanwhile dropped (a 421 on
                 * the next hop's idle timeout): a new one, not a lost message. */
                log_info("the connection to %s was closed while idle: connecting again", address);
        }
        disconnect(p);
        /* A next hop that is down costs one connection attempt per pass, not one per message. */
        if (g_hash_table_contains(p->unreachable, address))
                return -EHOSTDOWN;
        /* The accounts before the connection: a selector without one is not worth connecting for. */
        n = client_accounts(p, selector, &accounts, ret_reason);
        *ret_code = 0;
        if (n == -ENOKEY)
                return n;
        if (n < 0) {
                log_warning("cannot forward to %s: %s", address, *ret_reason);
                g_hash_table_add(p->unreachable, g_strdup(address));
                return -EACCES;
        }
        const Config *c = p->config;
        SmtpClientOptions opts = {
                .connect_timeout = c->connection_timeout,
                .prompt_timeout = c->prompt_timeout,
                .response_timeout = c->response_timeout,
                .tls = c->tls,
                .starttls = c->starttls,
                .tls_required = c->tls_required,
                .tls_connection = c->tls_connection,
                .client_interface = c->client_interface_len ? (const struct sockaddr *) &c->client_interface : NULL,
                .client_interface_len = c->client_interface_len,
        };
        r = smtp_client_connect(address, c->ehlo_name, &opts, &p->client, &reply);
        if (r == -EINTR) {
                client_accounts_free(accounts, n);
                return r;   /* stopping: nothing to record against the address or the message */
        }
        if (r < 0) {
                client_accounts_free(accounts, n);
                g_hash_table_add(p->unreachable, g_strdup(address));
                if (r == -EPROTO && reply.code) {
                        *ret_reason = g_strdup_printf("%s", reply.text);
                        *ret_code = reply.code;
                } else {
                        *ret_reason = g_strdup_printf("cannot connect to %s: %s", address,
                                                      reply.text[0] ? reply.text : g_strerror(-r));
                        *ret_code = 0;
                }
                log_warning("cannot forward to %s: %s", address, *ret_reason);
                return r;
        }
        log_info("smtp connection to %s", p->client->peer);   /* E-MailRelay's words */
        r = n > 0 ? authenticate(p, address, accounts, n, ret_reason, ret_code) : 0;
        client_accounts_free(accounts, n);
        if (r == -EINTR) {
                disconnect(p);
                return r;
        }
        if (r < 0) {
                log_warning("cannot forward to %s: %s", address, *ret_reason);
                disconnect(p);
                /* A refused login is the same for every message of this account. */
                g_hash_table_add(p->unreachable, g_strdup(address));
                return -EACCES;   /* a temporary failure, whatever the code: fix the secrets and it works */
        }
        p->client_address = g_strdup(address);
        p->client_selector = g_strdup(selector);
        return 0;
}

/* ---- one transaction ---- */

typedef struct Outcome {
        Verdict verdict;
        int code;
        char *reason;
        GPtrArray *retry_rcpts;        /* --forward-to-some: recipients left for later */
        GPtrArray *failed_rcpts;       /* --forward-to-some, mixed refusals: these go to a .bad copy */
        char *failed_reason;
        int failed_code;
        bool connection_lost;
} Outcome;

static void outcome_set(Outcome *o, Verdict v, int code, const char *reason) {
        o->verdict = v;
        o->code = code;
        g_free(o->reason);
        o->reason = g_strdup(reason);
}

static void outcome_done(Outcome *o) {
        g_free(o->reason);
        g_free(o->failed_reason);
        if (o->retry_rcpts)
                g_ptr_array_unref(o->retry_rcpts);
        if (o->failed_rcpts)
                g_ptr_array_unref(o->failed_rcpts);
}

static Verdict verdict_for(int code) {
        return code >= 500 ? VERDICT_PERMANENT : VERDICT_TEMPORARY;
}

static void transact(Pass *p, const char *id, const Envelope *e, int content_fd, Outcome *o) {
        SmtpClient *c = p->client;
        g_autoptr(GPtrArray) accepted = g_ptr_array_new();
        g_autoptr(GPtrArray) rejected = g_ptr_array_new();
        g_autoptr(GPtrArray) rejected_temporary = g_ptr_array_new();
        g_autoptr(GPtrArray) rejected_permanent = g_ptr_array_new();
        g_autofree char *temporary_reason = NULL, *permanent_reason = NULL;
        int temporary_code = 0, permanent_code = 0;
        g_auto(GStrv) lines = NULL;
        SmtpReply reply;
        int r;

        bool binary = e->body == ENVELOPE_BODY_BINARYMIME;
        if (binary && !(c->chunking && c->binarymime)) {
                if (p->config->binarymimestrict)
                        return outcome_set(o, VERDICT_PERMANENT, 0, "next hop does not support BINARYMIME and CHUNKING");
                binary = false;
        }
        if (e->utf8_mailbox_names && !c->smtputf8 && p->config->smtputf8strict)
                return outcome_set(o, VERDICT_PERMANENT, 0, "next hop does not support SMTPUTF8");
        if (e->body == ENVELOPE_BODY_8BIT && !c->eightbitmime && p->config->eightbitstrict)
                return outcome_set(o, VERDICT_PERMANENT, 0, "next hop does not support 8BITMIME");

        GString *cmds = g_string_new(NULL);
        g_string_append_printf(cmds, "MAIL FROM:<%s>", e->from ? e->from : "");
        /* BODY= only where the message needs it: 7BIT is what a MAIL without it means. */
        if (c->eightbitmime && e->body == ENVELOPE_BODY_8BIT)
                g_string_append(cmds, " BODY=8BITMIME");
        else if (binary)
                g_string_append(cmds, " BODY=BINARYMIME");
        if (e->utf8_mailbox_names && c->smtputf8)
                g_string_append(cmds, " SMTPUTF8");
        /* AUTH= only on an authenticated session (reference 3.5): the envelope's
         * MailFromAuthOut, or by default our own id; --anonymous=client sends <>. */
        if (c->auth_id) {
                if (p->config->anonymous_client || (e->mail_from_auth_out && streq(e->mail_from_auth_out, "<>")))
                        g_string_append(cmds, " AUTH=<>");
                else if (!isempty(e->mail_from_auth_out) && xtext_is_valid(e->mail_from_auth_out))
                        g_string_append_printf(cmds, " AUTH=%s", e->mail_from_auth_out);
                else {
                        g_autofree char *x = xtext_encode(c->auth_id, strlen(c->auth_id));
                        g_string_append_printf(cmds, " AUTH=%s", x);
                }
        }
        g_string_append(cmds, "\r\n");
        for (guint i = 0; i < e->to_remote->len; i++)
                g_string_append_printf(cmds, "RCPT TO:<%s>\r\n", (char *) e->to_remote->pdata[i]);

        bool pipelined = c->pipelining && p->config->pipelining;
        if (pipelined && !binary)
                g_string_append(cmds, "DATA\r\n");

        /* Without pipelining, each command waits for its reply. */
        lines = g_strsplit(cmds->str, "\r\n", -1);
        g_string_free(cmds, true);
        if (pipelined) {
                g_autofree char *all = g_strjoinv("\r\n", lines);
                for (char **l = lines; *l && **l; l++)
                        smtp_client_trace(c, true, *l, strlen(*l));
                r = smtp_client_send(c, all, strlen(all));
                if (r < 0)
                        goto lost;
        }

        /* MAIL */
        if (!pipelined && (r = smtp_client_printf(c, "%s\r\n", lines[0])) < 0)
                goto lost;
        if ((r = smtp_client_reply(c, &reply)) < 0)
                goto lost;
        bool mail_ok = reply.code / 100 == 2;
        SmtpReply mail_reply = reply;

        /* RCPT */
        bool any_temporary = false;
        SmtpReply last_rejection = {};

        for (guint i = 0; i < e->to_remote->len; i++) {
                if (!pipelined && !mail_ok)
                        break;
                if (!pipelined && (r = smtp_client_printf(c, "%s\r\n", lines[1 + i])) < 0)
                        goto lost;
                if ((r = smtp_client_reply(c, &reply)) < 0)
                        goto lost;
                if (reply.code / 100 == 2)
                        g_ptr_array_add(accepted, e->to_remote->pdata[i]);
                else {
                        /* The reason names the recipient and keeps the next hop's words. */
                        bool temporary = reply.code / 100 == 4;
                        char *why = g_strdup_printf("%s: %d %s", (const char *) e->to_remote->pdata[i], reply.code, reply.text);
                        g_ptr_array_add(rejected, e->to_remote->pdata[i]);
                        g_ptr_array_add(temporary ? rejected_temporary : rejected_permanent, e->to_remote->pdata[i]);
                        g_free(temporary ? temporary_reason : permanent_reason);
                        if (temporary) {
                                temporary_reason = why;
                                temporary_code = reply.code;
                        } else {
                                permanent_reason = why;
                                permanent_code = reply.code;
                        }
                        any_temporary |= temporary;
                        last_rejection = reply;
                }
        }

        bool send_data = mail_ok && accepted->len > 0 && (rejected->len == 0 || p->config->forward_to_some);
        if (pipelined && !binary) {
                /* DATA went with the batch: read its reply whatever happened before. */
                if ((r = smtp_client_reply(c, &reply)) < 0)
                        goto lost;
                if (reply.code == 354 && !send_data) {
                        /* Cannot take DATA back: send an empty message end and have it
                         * refused by the RSET below... a lone "." would deliver an empty
                         * message, so drop the connection instead (nothing is delivered). */
                        disconnect(p);
                        o->connection_lost = true;
                        goto verdict;
                }
                if (send_data && reply.code != 354) {
                        outcome_set(o, verdict_for(reply.code), reply.code, reply.text);
                        goto reset;
                }
        } else if (send_data && !binary) {
                if ((r = smtp_client_printf(c, "DATA\r\n")) < 0 || (r = smtp_client_reply(c, &reply)) < 0)
                        goto lost;
                if (reply.code != 354) {
                        outcome_set(o, verdict_for(reply.code), reply.code, reply.text);
                        goto reset;
                }
        }

        if (send_data) {
                r = binary ? smtp_client_send_bdat(c, content_fd) : smtp_client_send_data(c, content_fd);
                if (r < 0)
                        goto lost;
                if ((r = smtp_client_reply(c, &reply)) < 0)
                        goto lost;
                if (reply.code / 100 != 2) {
                        outcome_set(o, verdict_for(reply.code), reply.code, reply.text);
                        return;
                }
                if (rejected->len == 0) {
                        outcome_set(o, VERDICT_DELIVERED, reply.code, reply.text);
                        return;
                }
                /* --forward-to-some: delivered to some. The temporarily refused stay for a retry;
                 * the permanently refused fail (in a copy of their own when both kinds occur,
                 * so that neither a retry of the one nor a failure of the other is lost). */
                GPtrArray *stay = any_temporary ? rejected_temporary : rejected_permanent;
                o->retry_rcpts = g_ptr_array_new_with_free_func(g_free);
                for (guint i = 0; i < stay->len; i++)
                        g_ptr_array_add(o->retry_rcpts, g_strdup(stay->pdata[i]));
                if (any_temporary && rejected_permanent->len > 0) {
                        o->failed_rcpts = g_ptr_array_new_with_free_func(g_free);
                        for (guint i = 0; i < rejected_permanent->len; i++)
                                g_ptr_array_add(o->failed_rcpts, g_strdup(rejected_permanent->pdata[i]));
                        o->failed_reason = g_strdup_printf("some recipients rejected: %s", permanent_reason);
                        o->failed_code = permanent_code;
                }
                g_autofree char *why = g_strdup_printf("some recipients %s: %s", any_temporary ? "deferred" : "rejected",
                                                       any_temporary ? temporary_reason : permanent_reason);
                outcome_set(o, any_temporary ? VERDICT_TEMPORARY : VERDICT_PERMANENT,
                            any_temporary ? temporary_code : permanent_code, why);
                return;
        }

verdict:
        if (!mail_ok)
                outcome_set(o, verdict_for(mail_reply.code), mail_reply.code, mail_reply.text);
        else if (accepted->len == 0)
                outcome_set(o, any_temporary ? VERDICT_TEMPORARY : VERDICT_PERMANENT, last_rejection.code,
                            rejected->len == 1 ? last_rejection.text : "all recipients rejected");
        else
        {
                /* All-or-nothing (the default): nothing sent; the whole recipient list is kept
                 * (E-MailRelay's quirk 7 dropped the accepted ones). E-MailRelay's words, then
                 * the refusal that decides: a temporary one makes the whole message wait. */
                g_autofree char *why = g_strdup_printf("one or more recipients rejected: %s",
                                                       any_temporary ? temporary_reason : permanent_reason);
                outcome_set(o, any_temporary ? VERDICT_TEMPORARY : VERDICT_PERMANENT,
                            any_temporary ? temporary_code : permanent_code, why);
        }
        if (o->connection_lost)
                return;
reset:
        if (smtp_client_printf(c, "RSET\r\n") < 0 || smtp_client_reply(c, &reply) < 0 || reply.code != 250) {
                disconnect(p);
                o->connection_lost = true;
        }
        return;

lost:
        disconnect(p);
        o->connection_lost = true;
        outcome_set(o, VERDICT_TEMPORARY, 0, r == -ETIMEDOUT ? "timeout waiting for the next hop" : "connection to the next hop lost");
        g_free(o->reason);
        o->reason = g_strdup_printf("%s (%s)", r == -ETIMEDOUT ? "timeout waiting for the next hop" : "connection to the next hop lost",
                                    g_strerror(-r));
}

/* ---- client filters ---- */

typedef struct FilterWait {
        bool done;
        FilterOutcome outcome;
} FilterWait;

static void on_filter_done(const FilterOutcome *o, void *userdata) {
        FilterWait *w = userdata;
        w->outcome = *o;
        w->outcome.response = g_strdup(o->response);
        w->outcome.reason = g_strdup(o->reason);
        w->done = true;
}

/* The envelope is <id><suffix>: ".envelope.busy", or ".envelope.new" for --immediate-message. */
static int run_client_filter(Pass *p, const char *id, const char *suffix, FilterWait *w) {
        g_autofree char *content = spool_file_path(p->spool, id, ".content");
        g_autofree char *envelope = spool_file_path(p->spool, id, suffix);
        FilterRun *run = NULL;
        int r = filter_chain_run(p->config->client_filters, p->event, content, envelope, p->config->filter_timeout,
                                 on_filter_done, w, &run);
        if (r < 0)
                return r;
        while (!w->done) {
                r = sd_event_run(p->event, UINT64_MAX);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- one message ---- */

/* --forward-to-some with both kinds of refusal: the permanently refused recipients get a copy
 * of the message of their own (new id, same content), committed and failed to .bad with the
 * reason, while the original waits for its retry with the rest. */
static bool fail_copy(Pass *p, const char *id, GPtrArray *rcpts, const char *reason, int code, const char *hop) {
        g_autoptr(SpoolMessage) m = NULL;
        g_autoptr(SpoolLock) l = NULL;
        g_auto(Envelope) e = {};
        g_autofree char *copy = NULL;
        _cleanup_close_ int in = spool_open_content(p->spool, id);
        int r;

        if (in < 0 || (r = spool_read_envelope(p->spool, id, SPOOL_STATE_BUSY, &e, NULL)) < 0 ||
            (r = spool_new_message(p->spool, &m)) < 0)
                goto fail;
        for (;;) {
                ssize_t n = copy_file_range(in, NULL, spool_message_content_fd(m), NULL, 1 << 20, 0);
                if (n == 0)
                        break;
                if (n < 0) {
                        r = -errno;
                        goto fail;
                }
        }
        g_ptr_array_set_size(e.to_remote, 0);
        for (guint i = 0; i < rcpts->len; i++)
                g_ptr_array_add(e.to_remote, g_strdup(rcpts->pdata[i]));
        if ((r = spool_message_write_envelope(m, &e)) < 0 || (r = spool_commit_message(m)) < 0)
                goto fail;
        copy = g_strdup(spool_message_id(m));
        if ((r = spool_lock(p->spool, copy, &l)) < 0)
                goto fail;
        log_message(LOG_ERR, copy, code, hop, "message %s (a copy of %s for %u refused recipient%s) failed: %d %s", copy, id,
                    rcpts->len, rcpts->len == 1 ? "" : "s", code, reason);
        (void) spool_lock_fail(l, reason, code);
        p->failed++;
        return true;
fail:
        log_warning("message %s: cannot split off the refused recipients (%s): they stay for retries", id,
                    g_strerror(in < 0 ? errno : -r));
        return false;
}

static void forward_one(Pass *p, const char *id) {
        g_autoptr(SpoolLock) l = NULL;
        g_auto(Envelope) e = {};
        g_autofree char *error = NULL;
        Outcome o = {};
        int r;

        /* Deferred by this very run: the next run (the timer's) retries it. Without this, a
         * retry schedule of 0 would have the passes of one run loop on it forever. */
        if (g_hash_table_contains(p->deferred_ids, id)) {
                p->skipped++;
                return;
        }
        /* Not due yet: skip without taking the lock (cheap for a long queue). */
        {
                g_auto(Envelope) peek = {};
                if (spool_read_envelope(p->spool, id, SPOOL_STATE_READY, &peek, NULL) >= 0 &&
                    next_retry_of(&peek) > (long long) time(NULL)) {
                        p->skipped++;
                        return;
                }
        }
        r = spool_lock(p->spool, id, &l);
        if (r < 0) {
                /* Taken by another forwarder, or gone: not ours. Anything else is worth a word. */
                if (r != -EBUSY && r != -ENOENT) {
                        log_warning_errno(r, "cannot lock message %s: %m", id);
                        p->skipped++;
                }
                return;
        }
        r = spool_lock_read_envelope(l, &e, &error);
        if (r < 0) {
                log_warning("ignoring %s: %s", id, error ? error : g_strerror(-r));
                p->skipped++;
                return;   /* unlocked back to .envelope by the cleanup */
        }
        log_debug("forwarding [%s]", id);   /* E-MailRelay's --verbose line */
        if (e.to_remote->len == 0) {
                log_message(LOG_ERR, id, 0, NULL, "message %s failed: no remote recipients", id);
                (void) spool_lock_fail(l, "no remote recipients", 0);
                p->failed++;
                return;
        }

        if (p->config->client_filters && !filter_chain_is_empty(p->config->client_filters)) {
                FilterWait w = {};
                r = run_client_filter(p, id, ".envelope.busy", &w);
                if (r < 0) {
                        log_error_errno(r, "cannot run the client filter for %s: %m", id);
                        p->stop = true;
                        return;
                }
                if (w.outcome.stop_scanning)
                        p->stop = true;
                if (w.outcome.result == FILTER_ABANDON) {
                        log_info("message %s abandoned by the client filter", id);
                        filter_outcome_done(&w.outcome);
                        return;   /* released if the filter left it */
                }
                if (w.outcome.result == FILTER_FAIL) {
                        const char *why = w.outcome.reason ? w.outcome.reason : "rejected";
                        log_message(LOG_ERR, id, 550, NULL, "message %s failed: client filter: %s", id, why);
                        (void) spool_lock_fail(l, why, 550);
                        p->failed++;
                        filter_outcome_done(&w.outcome);
                        return;
                }
                filter_outcome_done(&w.outcome);
                /* The filter may have edited the envelope: read it again. */
                envelope_done(&e);
                if (spool_lock_read_envelope(l, &e, &error) < 0) {
                        log_warning("ignoring %s after the client filter: %s", id, error ? error : "unreadable");
                        return;
                }
        }

        const char *address = !isempty(e.forward_to_address) ? e.forward_to_address : p->config->forward_to;
        g_autofree char *why = NULL;
        int code = 0;
        /* Nothing is in hand until MAIL: a stop request may cut the connecting short. */
        smtp_client_set_cancellable(true);
        r = ensure_connected(p, address, e.client_account_selector, &why, &code);
        smtp_client_set_cancellable(false);
        if (r == -EINTR) {
                log_info("message %s left in the queue: stopping while connecting to %s", id, address);
                p->stop = true;
                p->skipped++;
                return;   /* unlocked back to .envelope by the cleanup, no attempt counted */
        }
        if (r == -EHOSTDOWN) {
                /* Already failed this pass: left as it is, not counted as an attempt. */
                p->skipped++;
                return;
        }
        if (r == -ENOKEY) {
                /* As E-MailRelay: this message fails and the pass stops. It stays queued for
                 * its retries (fixing the secrets file fixes it) rather than becoming .bad. */
                log_message(LOG_ERR, id, 0, address, "message %s failed: %s: stopping the pass", id, why);
                outcome_set(&o, VERDICT_TEMPORARY, 0, why);
                p->stop = true;
        } else if (r < 0) {
                if (r == -EPROTO && code >= 500)
                        outcome_set(&o, VERDICT_PERMANENT, code, why);
                else {
                        outcome_set(&o, VERDICT_TEMPORARY, code, why);
                        p->hop_down = true;
                }
        } else {
                _cleanup_close_ int fd = spool_open_content(p->spool, id);
                if (fd == -ELOOP || fd == -EINVAL) {
                        /* Planted, not written by intake: never send what it leads to. */
                        log_warning("message %s: %s/%s.content is %s: not sent", id, spool_path(p->spool), id,
                                    fd == -ELOOP ? "a symbolic link" : "not a regular file");
                        outcome_set(&o, VERDICT_PERMANENT, 0, "the content file is not a regular file");
                } else if (fd < 0) {
                        outcome_set(&o, VERDICT_PERMANENT, 0, "the content file is missing");
                } else
                        transact(p, id, &e, fd, &o);
        }

        switch (o.verdict) {
        case VERDICT_DELIVERED:
                r = spool_lock_delete(l);
                if (r < 0)
                        log_warning_errno(r, "message %s forwarded but not removed from the spool: %m", id);
                log_message(LOG_INFO, id, o.code, address, "message %s forwarded to %s: %d %s", id, address, o.code, o.reason);
                p->forwarded++;
                break;
        case VERDICT_PERMANENT:
                if (o.retry_rcpts) {
                        g_ptr_array_set_size(e.to_remote, 0);
                        for (guint i = 0; i < o.retry_rcpts->len; i++)
                                g_ptr_array_add(e.to_remote, g_strdup(o.retry_rcpts->pdata[i]));
                        (void) spool_lock_rewrite_envelope(l, &e);
                }
                log_message(LOG_ERR, id, o.code, address, "message %s failed: %d %s", id, o.code, o.reason);
                (void) spool_lock_fail(l, o.reason, o.code);
                p->failed++;
                break;
        case VERDICT_TEMPORARY:
                /* Not lost if the copy cannot be made: they stay with the original and its
                 * retries until the give-up time. */
                if (o.failed_rcpts && !fail_copy(p, id, o.failed_rcpts, o.failed_reason, o.failed_code, address))
                        for (guint i = 0; i < o.failed_rcpts->len; i++)
                                g_ptr_array_add(o.retry_rcpts, g_strdup(o.failed_rcpts->pdata[i]));
                if (o.retry_rcpts) {
                        g_ptr_array_set_size(e.to_remote, 0);
                        for (guint i = 0; i < o.retry_rcpts->len; i++)
                                g_ptr_array_add(e.to_remote, g_strdup(o.retry_rcpts->pdata[i]));
                        (void) spool_lock_rewrite_envelope(l, &e);
                }
                (void) defer_message(p, l, &e, o.reason, o.code);
                break;
        case VERDICT_SKIP:
                break;
        }
        outcome_done(&o);
}

/* --immediate-message: emailrelay-smtpd --immediate waits on this at the end of a message's
 * data. One message, still <id>.envelope.new (the session holds it), to all its recipients or to
 * none; the spool is left alone, since the session removes the message whatever happens. The
 * outcome, in answer, is "<code> <text>" for the session's client: the next hop's reply, or code
 * 0 when there was none. Exit 0 delivered, 1 refused, 3 next hop down, 5 no
 * remote recipient left (the session stores the message as without --immediate), 6 failed by
 * the client filter (the session keeps it as .bad: EXIT_FORWARD_KEEP_FAILED). */
static int forward_immediately(Pass *p, const char *id, GString *answer) {
        g_auto(Envelope) e = {};
        g_autofree char *error = NULL, *why = NULL;
        Outcome o = {};
        int r, code = 0, ret;

        p->config->forward_to_some = false;   /* one reply for the client: all or nothing */
        if (!spool_id_is_valid(id)) {
                log_error("--immediate-message: invalid message id \"%s\"", id);
                return EXIT_FORWARD_CONFIG;
        }
        r = spool_read_envelope(p->spool, id, SPOOL_STATE_NEW, &e, &error);
        if (r < 0) {
                log_error("message %s: %s", id, error ? error : g_strerror(-r));
                return EXIT_FORWARD_CONFIG;
        }
        if (p->config->client_filters && !filter_chain_is_empty(p->config->client_filters)) {
                FilterWait w = {};
                r = run_client_filter(p, id, ".envelope.new", &w);
                if (r < 0) {
                        log_error_errno(r, "cannot run the client filter for %s: %m", id);
                        return EXIT_FORWARD_CONFIG;
                }
                Verdict v = w.outcome.result == FILTER_FAIL ? VERDICT_PERMANENT :
                            w.outcome.result == FILTER_ABANDON ? VERDICT_SKIP : VERDICT_DELIVERED;
                if (v == VERDICT_SKIP) {
                        g_string_printf(answer, "250 message abandoned by the client filter");
                        filter_outcome_done(&w.outcome);
                        return EXIT_FORWARD_OK;
                }
                if (v != VERDICT_DELIVERED) {
                        /* As E-MailRelay: 452 for the client (the filter may pass it later), and
                         * the message kept as .bad with the reason, for emailrelay-queue retry. */
                        g_autofree char *failure = g_strdup_printf("client filter: %s", w.outcome.reason ? w.outcome.reason : "rejected");
                        filter_outcome_done(&w.outcome);
                        r = spool_append_reason(p->spool, id, SPOOL_STATE_NEW, failure, 452);
                        if (r < 0) {
                                log_error_errno(r, "message %s: cannot record the client filter's failure: %m", id);
                                g_string_printf(answer, "0 %s", failure);   /* a local error: the session says 451 */
                                return EXIT_FORWARD_CONFIG;
                        }
                        log_message(LOG_ERR, id, 452, NULL, "message %s failed: %s", id, failure);
                        g_string_printf(answer, "452 %s", failure);
                        return EXIT_FORWARD_KEEP_FAILED;
                }
                filter_outcome_done(&w.outcome);
                envelope_done(&e);
                if (spool_read_envelope(p->spool, id, SPOOL_STATE_NEW, &e, &error) < 0) {
                        log_error("message %s after the client filter: %s", id, error ? error : "unreadable");
                        return EXIT_FORWARD_CONFIG;
                }
        }
        if (e.to_remote->len == 0) {
                /* A filter left only local recipients: the message is for the spool after all. */
                g_string_printf(answer, "0 no remote recipients");
                return EXIT_FORWARD_STORE;
        }

        const char *address = !isempty(e.forward_to_address) ? e.forward_to_address : p->config->forward_to;
        smtp_client_set_cancellable(true);
        r = ensure_connected(p, address, e.client_account_selector, &why, &code);
        smtp_client_set_cancellable(false);
        if (r < 0) {
                g_string_printf(answer, "%d %s", r == -EPROTO ? code : 0, why ? why : g_strerror(-r));
                return r == -EPROTO && code >= 400 ? EXIT_FORWARD_FAILURES : EXIT_FORWARD_UNREACHABLE;
        }
        _cleanup_close_ int fd = spool_open_content(p->spool, id);
        if (fd < 0) {
                log_error("message %s: cannot open %s/%s.content: %s", id, spool_path(p->spool), id,
                          fd == -ELOOP ? "a symbolic link" : fd == -EINVAL ? "not a regular file" : g_strerror(-fd));
                return EXIT_FORWARD_CONFIG;
        }
        transact(p, id, &e, fd, &o);
        g_string_printf(answer, "%d %s", o.code, o.reason ? o.reason : "");
        if (o.verdict == VERDICT_DELIVERED) {
                log_message(LOG_INFO, id, o.code, address, "message %s forwarded immediately to %s: %d %s", id, address,
                            o.code, o.reason);
                ret = EXIT_FORWARD_OK;
        } else {
                log_message(LOG_WARNING, id, o.code, address, "message %s not forwarded to %s: %d %s (the client is told)",
                            id, address, o.code, o.reason);
                ret = o.code > 0 ? EXIT_FORWARD_FAILURES : EXIT_FORWARD_UNREACHABLE;
        }
        outcome_done(&o);
        return ret;
}

/* SIGTERM/SIGINT (systemctl stop): finish the message in hand, then exit. */
static volatile sig_atomic_t terminated;

static void on_terminate(int sig) {
        terminated = 1;
}

/* --immediate-session: emailrelay-smtpd --immediate's forwarder for one client session, with
 * one connection to the next hop for all of it, as E-MailRelay keeps one. Each line on stdin is
 * a message id, forwarded as --immediate-message forwards it; each answer is one line on stdout,
 * "<exit status> <code> <text>". The end of stdin (the client session is over) ends it, with a
 * QUIT. A connection the next hop dropped or timed out while the client was idle is replaced
 * (ensure_connected()). */
static int forward_session(Pass *p) {
        char line[256];
        while (!terminated && fgets(line, sizeof line, stdin)) {
                line[strcspn(line, "\r\n")] = '\0';
                g_hash_table_remove_all(p->unreachable);   /* each message tries again */
                g_autoptr(GString) answer = g_string_new("0 ");
                int status = forward_immediately(p, line, answer);
                printf("%d %s\n", status, answer->str);
                if (fflush(stdout) != 0)
                        return EXIT_FORWARD_CONFIG;   /* smtpd is gone */
        }
        return EXIT_FORWARD_OK;
}

/* The config file as it was when this run read it: a run that lingers or stays busy for hours
 * must not go on with an old next hop. */
typedef struct ConfigStamp {
        const char *path;
        struct stat st;
        bool exists;
} ConfigStamp;

static void config_stamp(ConfigStamp *c, const char *path) {
        c->path = path;
        /* Regular files only: /dev/null (the front-end's "no config file") changes all the time. */
        c->exists = path && stat(path, &c->st) == 0 && S_ISREG(c->st.st_mode);
}

static bool config_changed(const ConfigStamp *c) {
        ConfigStamp now;
        config_stamp(&now, c->path);
        if (now.exists != c->exists)
                return true;
        return now.exists && (now.st.st_ino != c->st.st_ino || now.st.st_size != c->st.st_size ||
                              now.st.st_mtim.tv_sec != c->st.st_mtim.tv_sec ||
                              now.st.st_mtim.tv_nsec != c->st.st_mtim.tv_nsec);
}

/* One scan of the spool: every ready message that is due. Returns how many were attempted. */
static int forward_pass(Pass *p) {
        g_autoptr(GPtrArray) ids = NULL;
        unsigned before = p->forwarded + p->deferred + p->failed;

        int r = spool_list(p->spool, SPOOL_STATE_READY, &ids);
        if (r < 0)
                return r;
        for (guint i = 0; i < ids->len && !p->stop; i++) {
                if (terminated) {
                        log_info("stopping on request: %u message%s left for the next run", ids->len - i,
                                 ids->len - i == 1 ? "" : "s");
                        p->stop = true;
                        break;
                }
                forward_one(p, ids->pdata[i]);
        }
        return (int) MIN(p->forwarded + p->deferred + p->failed - before, (unsigned) INT_MAX);
}

/* Scan until a scan finds nothing to do. With a wake-up file (wakeup.h), remove it before the
 * last scan and go round again if it reappears, within the linger time if one is set: a message
 * committed after the last scan raises the flag, and then either this loop or the path unit (which
 * re-checks PathExists= when this process exits) sees it. While mail keeps coming the flag stays
 * raised and untouched, so a busy intake costs the path unit no triggers at all. */
static int forward_until_idle(Pass *p, const char *wakeup, unsigned linger, const ConfigStamp *config) {
        for (;;) {
                int r;
                if (config_changed(config))
                        break;
                while ((r = forward_pass(p)) > 0 && !p->stop && !config_changed(config))
                        ;
                if (r < 0)
                        return r;
                if (!wakeup || p->stop || terminated)
                        return 0;
                /* Between passes every message was tried or raised the flag since: safe to go.
                 * The path unit starts a new run, with the new config, if the flag is up. */
                if (config_changed(config))
                        break;
                if (p->hop_down) {
                        /* The timer retries. Clear the flag, or the path unit would restart us at
                         * once, and linger so that busy intake cannot restart us in a tight loop. */
                        (void) wakeup_clear(wakeup);
                        if (linger > 0)
                                (void) nanosleep(&(struct timespec){ .tv_sec = linger }, NULL);
                        return 0;
                }
                r = wakeup_clear(wakeup);
                if (r < 0) {
                        /* Exiting with the flag raised would have the path unit start us again at once. */
                        log_error_errno(r, "cannot remove the wake-up file %s: %m", wakeup);
                        return 0;
                }
                r = forward_pass(p);
                if (r < 0)
                        return r;
                if (r > 0 || p->stop)
                        continue;
                if (linger == 0)
                        return 0;
                /* Idle: keep the connection to the next hop a while in case more mail comes. */
                r = wakeup_wait(wakeup, linger * 1000);
                if (r <= 0) {
                        if (r < 0 && r != -EINTR)
                                log_warning_errno(r, "cannot watch the wake-up file %s: %m", wakeup);
                        return 0;
                }
        }
        log_info("the config file %s changed: exiting so that the next run reads it", config->path);
        return 0;
}

/* ---- configuration ---- */

static int configure_auth(Config *c, const Options *o) {
        g_autofree char *error = NULL;
        int r;

        if (options_has(o, "anonymous")) {
                const char *scope = options_get(o, "anonymous");
                g_auto(GStrv) items = g_strsplit(scope ? scope : "client", ",", -1);
                for (char **it = items; *it; it++)
                        c->anonymous_client |= streq(*it, "client") || !**it;
        }
        const char *auth = options_get(o, "client-auth");
        if (options_has(o, "client-auth-config") && !auth) {
                log_error("--client-auth-config requires --client-auth");
                return -EINVAL;
        }
        r = sasl_config_parse(options_get(o, "client-auth-config"), &c->auth_config, &error);
        if (r < 0) {
                log_error("--client-auth-config: %s", error);
                return r;
        }
        if (!auth)
                return 0;
        if (g_str_has_prefix(auth, "plain:")) {
                /* Inline: plain:<base64 user>:<base64 password> */
                g_auto(GStrv) parts = g_strsplit(auth + 6, ":", -1);
                size_t len = 0;
                if (g_strv_length(parts) != 2 || sasl_base64_decode(parts[0], &c->inline_account.id, &len) < 0 ||
                    strlen(c->inline_account.id) != len || !*c->inline_account.id ||
                    sasl_base64_decode(parts[1], &c->inline_account.secret, &c->inline_account.secret_len) < 0) {
                        log_error("--client-auth: expecting plain:<base64 user>:<base64 password>");
                        return -EINVAL;
                }
                c->inline_account.type = SECRET_PLAIN;
                c->have_inline = true;
                return 0;
        }
        r = secrets_load(auth, &c->secrets, &error);
        if (r < 0) {
                log_error("--client-auth: %s", error);
                return r;
        }
        for (const char *const *w = secrets_warnings(c->secrets); *w; w++)
                log_warning("%s", *w);
        return 0;
}

static int configure_tls(Config *c, const Options *o) {
        g_autofree const char **certs = NULL, **config = NULL;
        g_autofree char *error = NULL;

        c->starttls = options_has(o, "client-tls");
        c->tls_connection = options_has(o, "client-tls-connection");
        c->tls_required = options_has(o, "client-tls-required");
        size_t n_certs = options_get_all(o, "client-tls-certificate", &certs);
        size_t n_config = options_get_all(o, "tls-config", &config);
        if (c->starttls && c->tls_connection) {
                log_error("--client-tls and --client-tls-connection cannot be combined");
                return -EINVAL;
        }
        if (!c->starttls && !c->tls_connection && !c->tls_required) {
                static const char *const needs_tls[] = { "client-tls-certificate", "client-tls-verify", "client-tls-verify-name",
                                                         "client-tls-server-name" };
                for (size_t i = 0; i < ELEMENTSOF(needs_tls); i++)
                        if (options_has(o, needs_tls[i])) {
                                log_error("--%s needs --client-tls or --client-tls-connection", needs_tls[i]);
                                return -EINVAL;
                        }
                return 0;
        }
        TlsSettings settings = {
                .server = false,
                .certificate_files = certs,
                .n_certificate_files = n_certs,
                .verify = options_get(o, "client-tls-verify"),
                .verify_name = options_get(o, "client-tls-verify-name"),
                .server_name = options_get(o, "client-tls-server-name"),
                .config = config,
                .n_config = n_config,
        };
        int r = tls_context_new(&settings, &c->tls, &error);
        if (r < 0) {
                log_error("%s", error);
                return r;
        }
        return 0;
}

static int configure(Config *c, const Options *o) {
        int r;

        *c = (Config){
                .connection_timeout = 40,
                .response_timeout = 1800,   /* E-MailRelay's code default */
                .prompt_timeout = 20,
                .filter_timeout = 60,
                .pipelining = true,         /* E-MailRelay: off; used here when the server offers it */
                .smtputf8strict = true,
                .binarymimestrict = true,
                .retry_give_up = 432000,
        };
        c->forward_to = g_strdup(options_get(o, "forward-to"));
        if (isempty(c->forward_to)) {
                log_error("no next hop: use --forward-to <host:port>");
                return -EINVAL;
        }
        const char *socks_error = NULL;
        if (smtp_client_check_address(c->forward_to, &socks_error) < 0) {
                log_error("--forward-to %s: %s", c->forward_to, socks_error);
                return -EINVAL;
        }
        c->forward_to_some = options_has(o, "forward-to-some");
        const char *iface = options_get(o, "client-interface");
        if (!isempty(iface)) {
                /* An address, as E-MailRelay: 0.0.0.0 or :: only choose the family. */
                struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM };
                struct addrinfo *res = NULL;
                if (c->forward_to[0] == '/') {
                        log_error("--client-interface cannot be used with a unix socket next hop (%s)", c->forward_to);
                        return -EINVAL;
                }
                if (getaddrinfo(iface, NULL, &hints, &res) != 0 || !res) {
                        log_error("--client-interface %s: not an IP address", iface);
                        return -EINVAL;
                }
                memcpy(&c->client_interface, res->ai_addr, res->ai_addrlen);
                c->client_interface_len = res->ai_addrlen;
                freeaddrinfo(res);
        }
        if ((r = daemon_get_uint(o, "connection-timeout", 1, 3600, &c->connection_timeout)) < 0 ||
            (r = daemon_get_uint(o, "response-timeout", 1, 86400, &c->response_timeout)) < 0 ||
            (r = daemon_get_uint(o, "prompt-timeout", 1, 3600, &c->prompt_timeout)) < 0 ||
            (r = daemon_get_uint(o, "filter-timeout", 1, 86400, &c->filter_timeout)) < 0 ||
            (r = daemon_get_uint(o, "retry-give-up", 0, UINT32_MAX, &c->retry_give_up)) < 0)
                return r;
        const DaemonSwitch switches[] = {
                { "pipelining", &c->pipelining }, { "smtputf8strict", &c->smtputf8strict },
                { "eightbitstrict", &c->eightbitstrict }, { "binarymimestrict", &c->binarymimestrict },
                { "linger", NULL },
        };
        daemon_apply_switches(o, "client-smtp-config", switches, ELEMENTSOF(switches));

        const char *schedule = options_get_default(o, "retry-schedule", "300,600,1200,2400,3600");
        g_auto(GStrv) items = g_strsplit(schedule, ",", -1);
        c->n_retry_schedule = g_strv_length(items);
        c->retry_schedule = g_new0(unsigned, MAX(c->n_retry_schedule, 1));
        for (size_t i = 0; i < c->n_retry_schedule; i++) {
                char *end = NULL;
                const char *s = g_strstrip(items[i]);
                unsigned long v = strtoul(s, &end, 10);
                if (!g_ascii_isdigit(*s) || *end || v > 30 * 86400) {
                        log_error("--retry-schedule: \"%s\" is not a number of seconds", items[i]);
                        return -EINVAL;
                }
                c->retry_schedule[i] = (unsigned) v;
        }
        if (c->n_retry_schedule == 0) {
                log_error("--retry-schedule: empty");
                return -EINVAL;
        }

        /* EHLO name: --domain if it is a dotted name, else the host name; when that has no
         * dot either, the client sends the connection's address literal, as E-MailRelay does. */
        const char *domain = options_get(o, "domain");
        char host[256] = "localhost";
        (void) gethostname(host, sizeof host - 1);
        c->ehlo_name = g_strdup(domain && strchr(domain, '.') ? domain : host);

        if ((r = configure_auth(c, o)) < 0 || (r = configure_tls(c, o)) < 0)
                return r;

        g_autofree const char **filters = NULL;
        size_t nf = options_get_all(o, "client-filter", &filters);
        if (nf > 0) {
                g_autofree char *error = NULL;
                r = filter_chain_parse(filters, nf, FILTER_CLIENT, &c->client_filters, &error);
                if (r < 0) {
                        log_error("%s", error);
                        return r;
                }
        }
        return 0;
}

static int run(Options *o, int argc, char **argv) {
        Config config = {};
        Pass p = {};
        int r, ret;

        if (daemon_parse_options(o, argc, argv) < 0)
                return EXIT_FORWARD_CONFIG;
        if (daemon_help_version(o, PROGRAM, "[<option> ...] [<config-file>]"))
                return 0;
        if (daemon_open_log(o, PROGRAM) < 0)
                return EXIT_FORWARD_CONFIG;
        if (configure(&config, o) < 0) {
                ret = EXIT_FORWARD_CONFIG;
                goto out;
        }
        const char *spool_dir = options_get_default(o, "spool-dir", SPOOLDIR);
        r = spool_open(spool_dir, &p.spool);
        if (r < 0) {
                log_error_errno(r, "cannot open the spool directory %s: %m", spool_dir);
                ret = EXIT_FORWARD_CONFIG;
                goto out;
        }
        r = sd_event_default(&p.event);
        if (r < 0) {
                ret = EXIT_FORWARD_CONFIG;
                goto out;
        }
        p.config = &config;
        p.unreachable = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        p.deferred_ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

        const char *immediate = options_get(o, "immediate-message");
        if (immediate) {
                g_autoptr(GString) answer = g_string_new("0 ");
                ret = forward_immediately(&p, immediate, answer);
                printf("%s\n", answer->str);
                disconnect(&p);
                fflush(stdout);
                goto out;
        }
        if (options_has(o, "immediate-session")) {
                ret = forward_session(&p);
                disconnect(&p);
                goto out;
        }

        /* Locks of forwarders that died are free: put their messages back first. */
        SpoolRecoverStats rs;
        if (spool_recover(p.spool, 60, &rs) >= 0 && rs.busy_released > 0)
                log_info("released %u stale lock%s", rs.busy_released, rs.busy_released == 1 ? "" : "s");

        const char *wakeup = wakeup_choose(options_get(o, "wakeup-file"));
        unsigned linger = 0;
        if (daemon_get_uint(o, "wakeup-linger", 0, 3600, &linger) < 0) {
                ret = EXIT_FORWARD_CONFIG;
                goto out;
        }
        ConfigStamp stamp;
        config_stamp(&stamp, o->n_args == 1 ? o->args[0] : CONFIG_FILE);
        r = forward_until_idle(&p, wakeup, linger, &stamp);
        disconnect(&p);
        if (r < 0) {
                log_error_errno(r, "cannot list the spool %s: %m", spool_dir);
                ret = EXIT_FORWARD_CONFIG;
                goto out;
        }

        log_info("forwarded %u, deferred %u, failed %u, not due or skipped %u", p.forwarded, p.deferred, p.failed, p.skipped);
        ret = p.hop_down ? EXIT_FORWARD_UNREACHABLE : (p.failed + p.deferred > 0 ? EXIT_FORWARD_FAILURES : EXIT_FORWARD_OK);
out:
        if (p.unreachable)
                g_hash_table_unref(p.unreachable);
        if (p.deferred_ids)
                g_hash_table_unref(p.deferred_ids);
        spool_free(p.spool);
        sd_event_unref(p.event);
        filter_chain_free(config.client_filters);
        secrets_free(config.secrets);
        sasl_account_done(&config.inline_account);
        sasl_config_done(&config.auth_config);
        tls_context_free(config.tls);
        g_free(config.forward_to);
        g_free(config.ehlo_name);
        g_free(config.retry_schedule);
        return ret;
}

int main(int argc, char **argv) {
        Options o;

        daemon_process_setup(false);
        daemon_handle_termination(on_terminate);
        smtp_client_set_cancel(&terminated);

        options_init(&o, emailrelay_options, PROG_FORWARD);
        int r = run(&o, argc, argv);
        options_done(&o);
        return r;
}
