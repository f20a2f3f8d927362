/* SPDX-License-Identifier: GPL-3.0-or-later */
/* TLS with GnuTLS for the daemons (non-blocking, on lineio's transport seam) and for the
 * forwarder (blocking with poll timeouts): credentials from E-MailRelay's options, --tls-config
 * keywords as GnuTLS priority strings, certificate verification with a readable reason.
 * Library code: errors are returned as text, never logged. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>

#include "lineio.h"

typedef struct TlsContext TlsContext;

typedef struct TlsSettings {
        bool server;
        /* --server-tls-certificate / --client-tls-certificate: one file with the key and the
         * chain, or two: key, then chain. Relative names are looked up in $CREDENTIALS_DIRECTORY
         * first when it is set (systemd LoadCredential=). */
        const char *const *certificate_files;
        size_t n_certificate_files;
        /* --server-tls-verify (clients must present a certificate that verifies) or
         * --client-tls-verify: a CA file, a directory of them, or "<default>" for the system
         * store. NULL: no verification. */
        const char *verify;
        const char *verify_name;      /* --client-tls-verify-name */
        const char *server_name;      /* --client-tls-server-name (SNI) */
        const char *const *config;    /* --tls-config values, each a comma list */
        size_t n_config;
} TlsSettings;

int tls_context_new(const TlsSettings *settings, TlsContext **ret, char **ret_error);
TlsContext *tls_context_free(TlsContext *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TlsContext, tls_context_free)
/* Read the key, certificate and CA files again if any of them changed (checked at most once a
 * second by the caller's monotonic clock), so that a renewed certificate is served without a
 * restart. Sessions already started keep the credentials they started with. Returns 1 when
 * new credentials are in force, 0 when nothing changed, or a negative errno with the reason
 * (the previous credentials stay in force; a broken file is reported once, until it changes).
 * With systemd's LoadCredential= the files are copies made at start: a restart is needed. */
int tls_context_refresh(TlsContext *c, uint64_t now_usec, char **ret_error);
/* The certificate file (or CA file) the context reads, for log lines. */
const char *tls_context_file(const TlsContext *c);
/* The GnuTLS priority string the --tls-config keywords gave (for tests and logs). */
const char *tls_context_priority(const TlsContext *c);

typedef struct Tls Tls;

/* A session on a connected non-blocking socket (not taken: the caller keeps closing it). */
int tls_new(TlsContext *c, int fd, Tls **ret, char **ret_error);
Tls *tls_free(Tls *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Tls, tls_free)

/* One step of the handshake: 0 done, -EAGAIN (then *ret_want_write says which way to wait),
 * or a negative errno with tls_error() saying why (-EACCES: the peer's certificate did not
 * verify; -ECONNRESET: the peer went away; -EPROTO: anything else). */
int tls_handshake(Tls *t, bool *ret_want_write);
/* Like read(2)/write(2): -1 with errno EAGAIN when they would block (see tls_want_write()),
 * ECONNRESET/EPROTO on failure. Reading returns 0 at the peer's close_notify or EOF. */
ssize_t tls_read(Tls *t, void *buf, size_t len);
ssize_t tls_write(Tls *t, const void *buf, size_t len);
bool tls_want_write(const Tls *t);
/* Decrypted bytes GnuTLS holds that the next tls_read() returns without touching the socket. */
size_t tls_pending(const Tls *t);
/* Send close_notify, best effort (never waits). */
void tls_bye(Tls *t);
const char *tls_error(const Tls *t);
/* "TLS1.3-AES-256-GCM" */
char *tls_cipher_name(const Tls *t);
/* The peer's certificate as PEM ('\n' line breaks), or NULL if it sent none. */
char *tls_peer_certificate_pem(const Tls *t);

/* Plug a session into a LineIo's transport seam (read, write, handshake, bye). */
void tls_lineio_transport(Tls *t, LineIoTransport *ret);
