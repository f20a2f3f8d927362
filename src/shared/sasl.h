/* SPDX-License-Identifier: GPL-3.0-or-later */
/* SASL for SMTP AUTH and POP3 AUTH (reference section 4.2): the server side of PLAIN, LOGIN,
 * CRAM-MD5/SHA1/SHA256/SHA512 against a secrets file (CRAM-MD5 also against E-MailRelay's md5
 * hashes), the client side of those and XOAUTH2, the m:/x:/a:/d: mechanism lists of
 * --server-auth-config and --client-auth-config, and E-MailRelay's md5 secret format.
 * Digests come from GnuTLS; the HMAC-MD5 intermediate states of the md5 format from nettle.
 * Library code: nothing is logged. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#include "secrets.h"

typedef enum SaslMech {
        SASL_CRAM_SHA512,
        SASL_CRAM_SHA256,
        SASL_CRAM_SHA1,
        SASL_CRAM_MD5,
        SASL_XOAUTH2,
        SASL_PLAIN,
        SASL_LOGIN,
        _SASL_MECH_MAX,
        _SASL_MECH_INVALID = -1,
} SaslMech;

const char *sasl_mech_to_string(SaslMech m);        /* "CRAM-MD5" */
SaslMech sasl_mech_from_string(const char *name);   /* any case */

/* --server-auth-config / --client-auth-config: "m:a,b;x:c;a:d;d:e". m: allows (and for the
 * client orders) and x: denies before TLS, a: and d: once TLS is up; without a: and d:, m: and
 * x: apply to both. A bare list "cram-md5,plain" is taken as m:. Names are kept upper-case. */
typedef struct SaslConfig {
        char **allow, **deny;            /* m:, x: (NULL: not given) */
        char **tls_allow, **tls_deny;    /* a:, d: */
} SaslConfig;

int sasl_config_parse(const char *text, SaslConfig *ret, char **ret_error);
void sasl_config_done(SaslConfig *c);
bool sasl_config_allows(const SaslConfig *c, const char *mech, bool tls);

/* Strict base64 (RFC 4648 alphabet, padding required, "=" alone meaning empty as RFC 4954
 * says). The result is NUL-terminated; ret_len excludes the NUL. -EINVAL when malformed. */
int sasl_base64_decode(const char *text, char **ret, size_t *ret_len);
char *sasl_base64_encode(const void *data, size_t len);

/* ---- E-MailRelay's md5 secrets ---- */

/* The HMAC-MD5 key state: MD5's chaining values after the first block of the inner (key XOR
 * ipad) and of the outer (key XOR opad) hash. */
typedef struct SaslMd5Mask {
        uint32_t inner[4], outer[4];
} SaslMd5Mask;

void sasl_md5_mask(const void *password, size_t len, SaslMd5Mask *ret);
/* The form emailrelay-passwd prints: base64, E-MailRelay 2.x layout. */
char *sasl_md5_mask_encode(const SaslMd5Mask *m);
/* Reads that form, or the legacy dotted form of eight decimal numbers. -EINVAL if neither. */
int sasl_md5_mask_decode(const char *text, SaslMd5Mask *ret);
/* HMAC-MD5(key, data) from the key's mask. */
void sasl_md5_mask_hmac(const SaslMd5Mask *m, const void *data, size_t len, uint8_t ret[16]);

/* HMAC of a CRAM mechanism in lower-case hex (the CRAM response's digest). -EINVAL for a
 * mechanism that is not CRAM-*. */
int sasl_cram_digest(SaslMech mech, const void *key, size_t key_len, const char *challenge, char **ret_hex);

/* ---- server ---- */

/* The mechanisms to advertise for these secrets: CRAM-* and PLAIN and LOGIN with any "server
 * plain" line, only CRAM-MD5 with md5 lines alone; then filtered by the config for this
 * session's TLS state; PLAIN if that leaves nothing on a TLS session. Space-separated; an empty
 * string when none. */
char *sasl_server_mechanisms(const Secrets *s, const SaslConfig *c, bool tls);
/* With PAM (no secrets): PLAIN, as E-MailRelay offers, if the config allows it, or on a TLS
 * session if the config leaves nothing. */
char *sasl_server_mechanisms_pam(const SaslConfig *c, bool tls);

typedef struct SaslServer SaslServer;

/* Results of sasl_server_step(). */
enum {
        SASL_DONE = 0,        /* authenticated: sasl_server_id() */
        SASL_CONTINUE = 1,    /* send the challenge (base64, maybe empty) and read a response */
        SASL_CHECK = 2,       /* no secrets (PAM): check sasl_server_id() and
                               * sasl_server_password() and take it as SASL_DONE or -EACCES */
};

/* Start mech (which must be in the offered list: -ENOENT otherwise). domain goes into the CRAM
 * challenge. The secrets are looked up at each step, so they may be re-read meanwhile; with s
 * NULL the caller checks the password (PAM): PLAIN and LOGIN end in SASL_CHECK. */
int sasl_server_new(const char *mech, const char *offered, const Secrets *s, const char *domain, SaslServer **ret);
SaslServer *sasl_server_free(SaslServer *x);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SaslServer, sasl_server_free)

/* One step. response: the client's base64 line, or NULL for "no initial response". Returns
 * SASL_CONTINUE with *ret_challenge (base64), SASL_DONE, -EACCES (wrong credentials: the id
 * tried is in sasl_server_id()), -EINVAL (not base64, or malformed), -ECANCELED ("*"). */
int sasl_server_step(SaslServer *x, const char *response, char **ret_challenge);
const char *sasl_server_id(const SaslServer *x);          /* authenticated (or tried) id */
/* After SASL_CHECK: the password to check; wiped by sasl_server_free(). */
const char *sasl_server_password(const SaslServer *x);
SaslMech sasl_server_mech(const SaslServer *x);

/* ---- client ---- */

/* One account to authenticate with: a client line of the secrets file, or the inline
 * plain:<b64>:<b64> form. For SECRET_OAUTH, secret is the base64 XOAUTH2 initial response. */
typedef struct SaslAccount {
        SecretType type;
        char *id;
        char *secret;
        size_t secret_len;
} SaslAccount;

void sasl_account_done(SaslAccount *a);

/* The mechanisms to try, best first (E-MailRelay's order, or the config's m:/a: order), for
 * what the server offered (space-separated) and the accounts at hand. Returns how many; each
 * entry says the mechanism and which account. */
typedef struct SaslAttempt {
        SaslMech mech;
        size_t account;
} SaslAttempt;
size_t sasl_client_plan(const SaslAccount *accounts, size_t n_accounts, const char *offered, const SaslConfig *c,
                        bool tls, SaslAttempt *ret, size_t max);

typedef struct SaslClient SaslClient;

int sasl_client_new(SaslMech mech, const SaslAccount *account, SaslClient **ret);
SaslClient *sasl_client_free(SaslClient *x);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SaslClient, sasl_client_free)
/* The base64 initial response to send on the AUTH line, or NULL for none. */
char *sasl_client_initial(SaslClient *x);
/* The base64 answer to a 334 challenge (base64 text). -EINVAL if the challenge is malformed
 * or not expected. */
int sasl_client_step(SaslClient *x, const char *challenge, char **ret_response);
