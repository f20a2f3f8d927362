/* SPDX-License-Identifier: GPL-3.0-or-later */
/* E-MailRelay's secrets file (--pop-auth, --server-auth, --client-auth): parsing, look-ups and
 * re-reading when the file changes. Library code: errors and warnings are returned, not logged. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

typedef enum SecretType {
        SECRET_PLAIN,     /* plain, plain:b, login: the secret is the password */
        SECRET_MD5,       /* md5, cram-md5, apop: base64 HMAC-MD5 state from emailrelay-passwd */
        SECRET_HASHED,    /* sha1, sha256, ...: accepted, not usable */
        SECRET_OAUTH,     /* client only: base64 XOAUTH2 token */
        SECRET_NONE,      /* server only: id is an address range, secret a keyword */
        _SECRET_TYPE_MAX,
        _SECRET_TYPE_INVALID = -1,
} SecretType;

typedef struct Secret {
        bool server;          /* "server" line, else "client" */
        SecretType type;
        char *type_name;      /* as written, lower-cased, e.g. "cram-md5" */
        char *id;             /* decoded (xtext or base64) except for "none" */
        char *secret;         /* decoded for plain types; as written for hashes */
        size_t secret_len;
        char *selector;       /* 5th field, or NULL */
        unsigned line;
} Secret;

typedef struct Secrets Secrets;

/* Read and parse a secrets file. On a syntax error returns -EINVAL with *ret_error set to
 * "<path>:<line>: <what>"; on an I/O error the negative errno and "<path>: <strerror>". */
int secrets_load(const char *path, Secrets **ret, char **ret_error);
Secrets *secrets_free(Secrets *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Secrets, secrets_free)

/* Warnings of the last successful load ("<path>:<line>: too many fields"), NULL-terminated. */
const char *const *secrets_warnings(const Secrets *s);
const char *secrets_path(const Secrets *s);
size_t secrets_count(const Secrets *s);
const Secret *secrets_get(const Secrets *s, size_t i);

/* The password of a "server plain" line for this id, or NULL. */
const char *secrets_server_plain(const Secrets *s, const char *id);
/* Whether there is any "server plain" line (so PLAIN, USER/PASS and APOP can work). */
bool secrets_server_has_plain(const Secrets *s);

/* The line of this side, type and id (as decoded), or NULL. For client lines with a selector
 * use secrets_client_account(). */
const Secret *secrets_find(const Secrets *s, bool server, SecretType type, const char *id);
/* Whether there is any "server md5" line (so CRAM-MD5 can work without plain secrets). */
bool secrets_server_has_md5(const Secrets *s);
/* Whether any line is on the server side (other than "none"): something to authenticate. */
bool secrets_server_has_accounts(const Secrets *s);

/* The keyword of the "server none" line that trusts this peer address, or NULL. The address
 * is expanded into E-MailRelay's candidate keys (reference 4.1): "a.b.c.d", "a.b.c.d/32" ..
 * "a.b.c.0/24", "a.b.c.*", ... "*.*.*.*"; for IPv6 the address and "<masked>/<bits>". */
const char *secrets_server_trusted(const Secrets *s, const char *address);

/* The client lines for a selector (NULL or "" for lines without one), in file order, as a
 * NULL-terminated array the caller frees with g_free (entries borrowed). */
const Secret **secrets_client_accounts(const Secrets *s, const char *selector, size_t *ret_n);

/* Re-read the file if its mtime (or size, or inode) changed since the last load. Returns 1 when
 * re-read, 0 when unchanged, or a negative errno with *ret_error set; on error the previous
 * secrets stay in force. The caller checks at most once a second. */
int secrets_reload_if_changed(Secrets *s, char **ret_error);

/* Compare two byte strings in time that depends only on their lengths. */
bool secrets_equal(const void *a, size_t a_len, const void *b, size_t b_len);
