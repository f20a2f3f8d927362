/* SPDX-License-Identifier: GPL-3.0-or-later */
/* GnuTLS sessions for STARTTLS, STLS and implicit TLS, on non-blocking sockets. */

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "tls.h"

/* Credentials as loaded from the files at one time. A session holds a reference to those it
 * started with, so that new ones can take over while it goes on. */
typedef struct TlsCred {
        unsigned n_ref;
        gnutls_certificate_credentials_t cred;
} TlsCred;

/* What a credentials file looked like when last read. */
typedef struct FileStamp {
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime, ctime;
        bool missing;
} FileStamp;

enum { FILE_KEY, FILE_CERT, FILE_VERIFY, _FILE_MAX };

struct TlsContext {
        bool server;
        TlsCred *cred;               /* the current credentials, for new sessions */
        gnutls_priority_t priority;
        char *priority_text;
        bool verify;                 /* verify the peer's certificate */
        char *verify_name;
        char *server_name;
        /* The files the credentials come from (NULL: none; the system store is not watched),
         * as named and as last seen, for tls_context_refresh(). */
        char *paths[_FILE_MAX];
        char *verify_spec;           /* the --*-tls-verify value */
        FileStamp stamps[_FILE_MAX];
        uint64_t checked_usec;
};

struct Tls {
        TlsContext *context;
        TlsCred *cred;
        gnutls_session_t session;
        int fd;
        size_t write_pending;        /* bytes of a write that returned EAGAIN: GnuTLS holds them */
        char *error;
};

/* ---- --tls-config ---- */

static const char *const versions[] = { "1.0", "1.1", "1.2", "1.3" };

static int version_index(const char *word) {
        if (!g_str_has_prefix(word, "tlsv"))
                return -1;
        for (int i = 0; i < (int) ELEMENTSOF(versions); i++)
                if (streq(word + 4, versions[i]))
                        return i;
        return -1;
}

/* Keywords (reference 1.7): tlsvX.Y minimum, -tlsvX.Y maximum, noverify, and the OpenSSL
 * flags that have a GnuTLS equivalent; library choices and the rest are accepted. */
static int build_priority(const TlsSettings *s, char **ret, bool *ret_noverify, char **ret_error) {
        int min = 2, max = 3;   /* TLS 1.2 and 1.3 unless told otherwise */
        bool no_tickets = false, server_precedence = false;

        *ret_noverify = false;
        for (size_t i = 0; i < s->n_config; i++) {
                g_auto(GStrv) words = g_strsplit_set(s->config[i], ", ", -1);
                for (char **w = words; *w; w++) {
                        g_autofree char *word = g_ascii_strdown(*w, -1);
                        int v;
                        if (!*word)
                                continue;
                        if ((v = version_index(word)) >= 0)
                                min = v;
                        else if (word[0] == '-' && (v = version_index(word + 1)) >= 0)
                                max = v;
                        else if (streq(word, "noverify"))
                                *ret_noverify = true;
                        else if (streq(word, "op_no_ticket") || streq(word, "op_no_resumption"))
                                no_tickets = true;
                        else if (streq(word, "op_server_preference"))
                                server_precedence = true;
                        else if (streq(word, "sslv3"))
                                min = 0;   /* GnuTLS has no SSLv3: the oldest it has */
                        else if (streq(word, "-sslv3") || streq(word, "openssl") || streq(word, "mbedtls") ||
                                 streq(word, "op_all") || streq(word, "ignoreextra"))
                                ;
                        else {
                                *ret_error = g_strdup_printf("--tls-config: unknown keyword \"%s\" (tlsv1.2, -tlsv1.3, noverify, ...)", *w);
                                return -EINVAL;
                        }
                }
        }
        if (min > max) {
                *ret_error = g_strdup_printf("--tls-config: the minimum version TLS %s is above the maximum TLS %s", versions[min], versions[max]);
                return -EINVAL;
        }
        GString *p = g_string_new("NORMAL:-VERS-ALL");
        for (int v = max; v >= min; v--)
                g_string_append_printf(p, ":+VERS-TLS%s", versions[v]);
        if (no_tickets)
                g_string_append(p, ":%NO_TICKETS");
        if (server_precedence)
                g_string_append(p, ":%SERVER_PRECEDENCE");
        *ret = g_string_free(p, false);
        return 0;
}

/* ---- credentials ---- */

static char *credential_path(const char *name) {
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        if (name[0] != '/' && !isempty(dir)) {
                char *p = g_build_filename(dir, name, NULL);
                if (access(p, F_OK) == 0)
                        return p;
                g_free(p);
        }
        return g_strdup(name);
}

static int load_verify(gnutls_certificate_credentials_t cred, const char *what, char **ret_error) {
        int r;
        struct stat st;

        if (streq(what, "<default>"))
                r = gnutls_certificate_set_x509_system_trust(cred);
        else {
                g_autofree char *path = credential_path(what);
                if (stat(path, &st) < 0) {
                        *ret_error = g_strdup_printf("CA certificates %s: %s", path, g_strerror(errno));
                        return -errno;
                }
                if (S_ISDIR(st.st_mode))
                        r = gnutls_certificate_set_x509_trust_dir(cred, path, GNUTLS_X509_FMT_PEM);
                else
                        r = gnutls_certificate_set_x509_trust_file(cred, path, GNUTLS_X509_FMT_PEM);
                if (r == 0 && !S_ISDIR(st.st_mode)) {
                        *ret_error = g_strdup_printf("CA certificates %s: no certificate in the file", path);
                        return -EINVAL;
                }
        }
        if (r < 0) {
                *ret_error = g_strdup_printf("CA certificates %s: %s", what, gnutls_strerror(r));
                return -EINVAL;
        }
        return 0;
}

static TlsCred *cred_unref(TlsCred *k) {
        if (k && --k->n_ref == 0) {
                if (k->cred)
                        gnutls_certificate_free_credentials(k->cred);
                g_free(k);
        }
        return NULL;
}

static TlsCred *cred_ref(TlsCred *k) {
        k->n_ref++;
        return k;
}

static void stamp_take(FileStamp *f, const char *path) {
        struct stat st;
        *f = (FileStamp) {};
        if (!path || stat(path, &st) < 0) {
                f->missing = path != NULL;
                return;
        }
        *f = (FileStamp) { .dev = st.st_dev, .ino = st.st_ino, .size = st.st_size, .mtime = st.st_mtim,
                           .ctime = st.st_ctim };
}

static bool stamp_equal(const FileStamp *a, const FileStamp *b) {
        return a->missing == b->missing && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
               a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
               a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* The key and certificate, and the CAs to verify peers with, as the files hold them now. */
static int cred_load(const TlsContext *c, TlsCred **ret, char **ret_error) {
        TlsCred *k = g_new0(TlsCred, 1);
        int r;

        k->n_ref = 1;
        r = gnutls_certificate_allocate_credentials(&k->cred);
        if (r < 0) {
                k->cred = NULL;
                cred_unref(k);
                *ret_error = g_strdup_printf("cannot set up TLS: %s", gnutls_strerror(r));
                return -ENOMEM;
        }
        if (c->paths[FILE_CERT]) {
                const char *key = c->paths[FILE_KEY], *cert = c->paths[FILE_CERT];
                r = gnutls_certificate_set_x509_key_file2(k->cred, cert, key, GNUTLS_X509_FMT_PEM, NULL, 0);
                if (r < 0) {
                        if (streq(key, cert))
                                *ret_error = g_strdup_printf("TLS key and certificate %s: %s", cert, gnutls_strerror(r));
                        else
                                *ret_error = g_strdup_printf("TLS key %s and certificate %s: %s", key, cert, gnutls_strerror(r));
                        cred_unref(k);
                        return -EINVAL;
                }
        }
        if (c->verify_spec) {
                r = load_verify(k->cred, c->verify_spec, ret_error);
                if (r < 0) {
                        cred_unref(k);
                        return r;
                }
        }
        *ret = k;
        return 0;
}

int tls_context_new(const TlsSettings *s, TlsContext **ret, char **ret_error) {
        g_autoptr(TlsContext) c = g_new0(TlsContext, 1);
        bool noverify = false;
        const char *err_pos = NULL;
        int r;

        c->server = s->server;
        r = build_priority(s, &c->priority_text, &noverify, ret_error);
        if (r < 0)
                return r;
        r = gnutls_priority_init(&c->priority, c->priority_text, &err_pos);
        if (r < 0) {
                *ret_error = g_strdup_printf("TLS priority \"%s\": %s", c->priority_text, gnutls_strerror(r));
                return -EINVAL;
        }

        if (s->n_certificate_files > 2) {
                *ret_error = g_strdup("a certificate option may be given at most twice (key, then certificate)");
                return -EINVAL;
        }
        if (s->n_certificate_files > 0) {
                c->paths[FILE_KEY] = credential_path(s->certificate_files[0]);
                c->paths[FILE_CERT] = credential_path(s->certificate_files[s->n_certificate_files - 1]);
        } else if (s->server) {
                *ret_error = g_strdup("TLS needs a certificate: use --server-tls-certificate");
                return -EINVAL;
        }
        if (s->verify) {
                c->verify_spec = g_strdup(s->verify);
                if (!streq(s->verify, "<default>"))
                        c->paths[FILE_VERIFY] = credential_path(s->verify);
                c->verify = !noverify;
        } else if (s->verify_name) {
                *ret_error = g_strdup("--client-tls-verify-name needs --client-tls-verify");
                return -EINVAL;
        }
        /* Stamps first: a file replaced while it is read is read again at the next refresh. */
        for (size_t i = 0; i < _FILE_MAX; i++)
                stamp_take(&c->stamps[i], c->paths[i]);
        r = cred_load(c, &c->cred, ret_error);
        if (r < 0)
                return r;
        c->verify_name = g_strdup(s->verify_name);
        c->server_name = g_strdup(s->server_name);
        *ret = TAKE_PTR(c);
        return 0;
}

int tls_context_refresh(TlsContext *c, uint64_t now_usec, char **ret_error) {
        FileStamp now[_FILE_MAX];
        bool changed = false;

        if (c->checked_usec != 0 && now_usec - c->checked_usec < 1000000u)
                return 0;
        c->checked_usec = now_usec;
        for (size_t i = 0; i < _FILE_MAX; i++) {
                stamp_take(&now[i], c->paths[i]);
                changed |= !stamp_equal(&now[i], &c->stamps[i]);
        }
        if (!changed)
                return 0;
        /* Taken as seen even if they do not load: a broken file is reported once, and read
         * again when it changes again (a renewal half done, then finished). */
        memcpy(c->stamps, now, sizeof now);
        TlsCred *k = NULL;
        int r = cred_load(c, &k, ret_error);
        if (r < 0)
                return r;
        cred_unref(c->cred);
        c->cred = k;
        return 1;
}

const char *tls_context_file(const TlsContext *c) {
        return c->paths[FILE_CERT] ? c->paths[FILE_CERT] : c->paths[FILE_VERIFY];
}

TlsContext *tls_context_free(TlsContext *c) {
        if (!c)
                return NULL;
        cred_unref(c->cred);
        if (c->priority)
                gnutls_priority_deinit(c->priority);
        g_free(c->priority_text);
        g_free(c->verify_name);
        g_free(c->server_name);
        for (size_t i = 0; i < _FILE_MAX; i++)
                g_free(c->paths[i]);
        g_free(c->verify_spec);
        g_free(c);
        return NULL;
}

const char *tls_context_priority(const TlsContext *c) {
        return c->priority_text;
}

/* ---- sessions ---- */

static void set_error(Tls *t, char *text) {
        g_free(t->error);
        t->error = text;
}

int tls_new(TlsContext *c, int fd, Tls **ret, char **ret_error) {
        Tls *t = g_new0(Tls, 1);
        int r;

        t->context = c;
        t->cred = cred_ref(c->cred);
        t->fd = fd;
        r = gnutls_init(&t->session, (c->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
        if (r >= 0)
                r = gnutls_priority_set(t->session, c->priority);
        if (r >= 0)
                r = gnutls_credentials_set(t->session, GNUTLS_CRD_CERTIFICATE, t->cred->cred);
        if (r >= 0 && !c->server && c->server_name)
                r = gnutls_server_name_set(t->session, GNUTLS_NAME_DNS, c->server_name, strlen(c->server_name));
        if (r < 0) {
                *ret_error = g_strdup_printf("cannot start a TLS session: %s", gnutls_strerror(r));
                tls_free(t);
                return -ENOMEM;
        }
        if (c->server && c->verify)
                gnutls_certificate_server_set_request(t->session, GNUTLS_CERT_REQUIRE);
        if (c->verify)
                /* The handshake itself fails when the peer's certificate does not verify. */
                gnutls_session_set_verify_cert(t->session, c->server ? NULL : c->verify_name, 0);
        gnutls_transport_set_int(t->session, fd);
        gnutls_handshake_set_timeout(t->session, 0);   /* the callers time the handshake */
        *ret = t;
        return 0;
}

Tls *tls_free(Tls *t) {
        if (!t)
                return NULL;
        if (t->session)
                gnutls_deinit(t->session);
        cred_unref(t->cred);
        g_free(t->error);
        g_free(t);
        return NULL;
}

static int map_error(Tls *t, int r, const char *what) {
        if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
                gnutls_datum_t out = {};
                unsigned status = gnutls_session_get_verify_cert_status(t->session);
                if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) >= 0) {
                        set_error(t, g_strdup_printf("%s: certificate verification failed: %s", what, (char *) out.data));
                        gnutls_free(out.data);
                } else
                        set_error(t, g_strdup_printf("%s: certificate verification failed", what));
                return -EACCES;
        }
        if (r == GNUTLS_E_FATAL_ALERT_RECEIVED || r == GNUTLS_E_WARNING_ALERT_RECEIVED) {
                set_error(t, g_strdup_printf("%s: %s: %s", what, gnutls_strerror(r),
                                             gnutls_alert_get_name(gnutls_alert_get(t->session))));
                return r == GNUTLS_E_FATAL_ALERT_RECEIVED && gnutls_alert_get(t->session) == GNUTLS_A_BAD_CERTIFICATE ? -EACCES : -EPROTO;
        }
        set_error(t, g_strdup_printf("%s: %s", what, gnutls_strerror(r)));
        if (r == GNUTLS_E_PREMATURE_TERMINATION || r == GNUTLS_E_PUSH_ERROR || r == GNUTLS_E_PULL_ERROR)
                return -ECONNRESET;
        return -EPROTO;
}

int tls_handshake(Tls *t, bool *ret_want_write) {
        int r;
        do
                r = gnutls_handshake(t->session);
        while (r < 0 && !gnutls_error_is_fatal(r) && r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
                if (ret_want_write)
                        *ret_want_write = gnutls_record_get_direction(t->session) == 1;
                return -EAGAIN;
        }
        if (r < 0)
                return map_error(t, r, "TLS handshake failed");
        return 0;
}

ssize_t tls_read(Tls *t, void *buf, size_t len) {
        for (;;) {
                ssize_t n = gnutls_record_recv(t->session, buf, len);
                if (n >= 0)
                        return n;
                if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                        errno = EAGAIN;
                        return -1;
                }
                if (n == GNUTLS_E_REHANDSHAKE || !gnutls_error_is_fatal((int) n))
                        continue;   /* warnings and refused renegotiation: read on */
                if (n == GNUTLS_E_PREMATURE_TERMINATION)
                        return 0;   /* EOF without close_notify: SMTP has its own end */
                errno = -map_error(t, (int) n, "TLS read failed");
                return -1;
        }
}

ssize_t tls_write(Tls *t, const void *buf, size_t len) {
        ssize_t n;

        /* After EAGAIN GnuTLS has the record already: it wants to be called again with NULL, 0
         * and then reports the length it took. The caller offers the same bytes again. */
        if (t->write_pending > 0)
                n = gnutls_record_send(t->session, NULL, 0);
        else
                n = gnutls_record_send(t->session, buf, len);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                if (t->write_pending == 0)
                        t->write_pending = len;
                errno = EAGAIN;
                return -1;
        }
        t->write_pending = 0;
        if (n < 0) {
                errno = -map_error(t, (int) n, "TLS write failed");
                return -1;
        }
        return n;
}

bool tls_want_write(const Tls *t) {
        return gnutls_record_get_direction(t->session) == 1;
}

size_t tls_pending(const Tls *t) {
        return gnutls_record_check_pending(t->session);
}

void tls_bye(Tls *t) {
        (void) gnutls_bye(t->session, GNUTLS_SHUT_WR);
}

const char *tls_error(const Tls *t) {
        return t->error ? t->error : "no TLS error";
}

char *tls_cipher_name(const Tls *t) {
        const char *version = gnutls_protocol_get_name(gnutls_protocol_get_version(t->session));
        const char *cipher = gnutls_cipher_get_name(gnutls_cipher_get(t->session));
        return g_strdup_printf("%s-%s", version ? version : "TLS", cipher ? cipher : "unknown");
}

char *tls_peer_certificate_pem(const Tls *t) {
        unsigned n = 0;
        const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->session, &n);
        gnutls_datum_t pem = {};

        if (!certs || n == 0)
                return NULL;
        if (gnutls_pem_base64_encode2("CERTIFICATE", &certs[0], &pem) < 0)
                return NULL;
        char *out = g_strndup((const char *) pem.data, pem.size);
        gnutls_free(pem.data);
        g_strchomp(out);
        return out;
}

/* ---- lineio ---- */

static ssize_t transport_read(void *ctx, void *buf, size_t len) {
        return tls_read(ctx, buf, len);
}

static ssize_t transport_write(void *ctx, const void *buf, size_t len) {
        return tls_write(ctx, buf, len);
}

static int transport_handshake(void *ctx, bool *ret_want_write) {
        return tls_handshake(ctx, ret_want_write);
}

static void transport_bye(void *ctx) {
        tls_bye(ctx);
}

void tls_lineio_transport(Tls *t, LineIoTransport *ret) {
        *ret = (LineIoTransport) {
                .read = transport_read,
                .write = transport_write,
                .handshake = transport_handshake,
                .bye = transport_bye,
                .ctx = t,
        };
}
