/* SPDX-License-Identifier: GPL-3.0-or-later */
/* SASL mechanisms (RFC 4616 PLAIN, draft LOGIN, RFC 2195 CRAM-MD5 and its SHA variants,
 * Google's XOAUTH2) for both sides, over GnuTLS digests. */

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <nettle/md5.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "sasl.h"

static const char *const mech_names[_SASL_MECH_MAX] = {
        [SASL_CRAM_SHA512] = "CRAM-SHA512",
        [SASL_CRAM_SHA256] = "CRAM-SHA256",
        [SASL_CRAM_SHA1] = "CRAM-SHA1",
        [SASL_CRAM_MD5] = "CRAM-MD5",
        [SASL_XOAUTH2] = "XOAUTH2",
        [SASL_PLAIN] = "PLAIN",
        [SASL_LOGIN] = "LOGIN",
};

const char *sasl_mech_to_string(SaslMech m) {
        return m >= 0 && m < _SASL_MECH_MAX ? mech_names[m] : NULL;
}

SaslMech sasl_mech_from_string(const char *name) {
        for (int i = 0; name && i < _SASL_MECH_MAX; i++)
                if (g_ascii_strcasecmp(name, mech_names[i]) == 0)
                        return (SaslMech) i;
        return _SASL_MECH_INVALID;
}

static bool is_cram(SaslMech m) {
        return m == SASL_CRAM_SHA512 || m == SASL_CRAM_SHA256 || m == SASL_CRAM_SHA1 || m == SASL_CRAM_MD5;
}

/* ---- configuration lists ---- */

static char **split_list(const char *text) {
        g_auto(GStrv) items = g_strsplit_set(text, ", ", -1);
        GPtrArray *out = g_ptr_array_new();
        for (char **it = items; *it; it++)
                if (**it)
                        g_ptr_array_add(out, g_ascii_strup(*it, -1));
        g_ptr_array_add(out, NULL);
        return (char **) g_ptr_array_free(out, false);
}

int sasl_config_parse(const char *text, SaslConfig *ret, char **ret_error) {
        SaslConfig c = {};

        if (!text)
                text = "";
        g_auto(GStrv) parts = g_strsplit(text, ";", -1);
        for (char **p = parts; *p; p++) {
                char *part = g_strstrip(*p);
                char ***slot;
                if (!*part)
                        continue;
                if (part[1] == ':' && strchr("mxadMXAD", part[0])) {
                        switch (g_ascii_tolower(part[0])) {
                        case 'm': slot = &c.allow; break;
                        case 'x': slot = &c.deny; break;
                        case 'a': slot = &c.tls_allow; break;
                        default: slot = &c.tls_deny; break;
                        }
                        part += 2;
                } else if (!strchr(part, ':'))
                        slot = &c.allow;   /* a bare list: an allow list */
                else {
                        *ret_error = g_strdup_printf("invalid item \"%s\": expecting m:, x:, a: or d: lists", part);
                        sasl_config_done(&c);
                        return -EINVAL;
                }
                g_strfreev(*slot);
                *slot = split_list(part);
        }
        *ret = c;
        return 0;
}

void sasl_config_done(SaslConfig *c) {
        if (!c)
                return;
        g_strfreev(c->allow);
        g_strfreev(c->deny);
        g_strfreev(c->tls_allow);
        g_strfreev(c->tls_deny);
        *c = (SaslConfig) {};
}

static bool in_list(char *const *list, const char *mech) {
        for (; list && *list; list++)
                if (g_ascii_strcasecmp(*list, mech) == 0)
                        return true;
        return false;
}

/* The allow and deny lists in force for this TLS state. */
static void lists_for(const SaslConfig *c, bool tls, char *const **ret_allow, char *const **ret_deny) {
        *ret_allow = c ? c->allow : NULL;
        *ret_deny = c ? c->deny : NULL;
        if (c && tls && (c->tls_allow || c->tls_deny)) {
                *ret_allow = c->tls_allow;
                *ret_deny = c->tls_deny;
        }
}

bool sasl_config_allows(const SaslConfig *c, const char *mech, bool tls) {
        char *const *allow, *const *deny;
        lists_for(c, tls, &allow, &deny);
        if (allow && !in_list(allow, mech))
                return false;
        return !in_list(deny, mech);
}

/* ---- base64 ---- */

int sasl_base64_decode(const char *text, char **ret, size_t *ret_len) {
        size_t n = strlen(text), pad = 0;

        if (streq(text, "=")) {
                *ret = g_strdup("");
                if (ret_len)
                        *ret_len = 0;
                return 0;
        }
        if (n % 4 != 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                char ch = text[i];
                if (ch == '=') {
                        pad++;
                        continue;
                }
                if (pad > 0 || !(g_ascii_isalnum(ch) || ch == '+' || ch == '/'))
                        return -EINVAL;
        }
        if (pad > 2)
                return -EINVAL;
        gsize len = 0;
        guchar *raw = n ? g_base64_decode(text, &len) : NULL;
        char *out = g_malloc(len + 1);
        if (len)
                memcpy(out, raw, len);
        out[len] = '\0';
        if (raw) {
                explicit_bzero(raw, len);
                g_free(raw);
        }
        *ret = out;
        if (ret_len)
                *ret_len = len;
        return 0;
}

char *sasl_base64_encode(const void *data, size_t len) {
        return len ? g_base64_encode(data, len) : g_strdup("");
}

/* ---- E-MailRelay md5 secrets ---- */

static void md5_first_block(const uint8_t *key64, uint8_t pad, uint32_t ret[4]) {
        uint8_t block[64];
        struct md5_ctx ctx;

        for (size_t i = 0; i < 64; i++)
                block[i] = key64[i] ^ pad;
        md5_init(&ctx);
        nettle_md5_compress(ctx.state, block);
        memcpy(ret, ctx.state, 16);
        explicit_bzero(block, sizeof block);
        explicit_bzero(&ctx, sizeof ctx);
}

void sasl_md5_mask(const void *password, size_t len, SaslMd5Mask *ret) {
        uint8_t key[64] = {};

        /* RFC 2104: keys longer than the block are hashed first. */
        if (len > sizeof key)
                (void) gnutls_hash_fast(GNUTLS_DIG_MD5, password, len, key);
        else if (len)
                memcpy(key, password, len);
        md5_first_block(key, 0x36, ret->inner);
        md5_first_block(key, 0x5c, ret->outer);
        explicit_bzero(key, sizeof key);
}

static void put_le32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
        p[2] = (uint8_t) (v >> 16);
        p[3] = (uint8_t) (v >> 24);
}

static uint32_t get_le32(const uint8_t *p) {
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

/* E-MailRelay 2.6's form: the base64 of 32 bytes, the inner then the outer state, each as four
 * little-endian words ("foobar" gives 3pIN0aPbd5aN0S4ogKA3w2P3P9XH0hXchLP1W+adpQE=, as its
 * emailrelay-passwd prints). E-MailRelay refuses anything else ("invalid md5 hash state").
 * Earlier versions of this suite wrote 33 bytes, a 0x3a byte first; those are still read. */
char *sasl_md5_mask_encode(const SaslMd5Mask *m) {
        uint8_t raw[32];
        for (int i = 0; i < 4; i++) {
                put_le32(raw + 4 * i, m->inner[i]);
                put_le32(raw + 16 + 4 * i, m->outer[i]);
        }
        return g_base64_encode(raw, sizeof raw);
}

int sasl_md5_mask_decode(const char *text, SaslMd5Mask *ret) {
        SaslMd5Mask m;

        /* Legacy: eight dotted decimal numbers, inner then outer. */
        if (strchr(text, '.')) {
                g_auto(GStrv) nums = g_strsplit(text, ".", -1);
                if (g_strv_length(nums) != 8)
                        return -EINVAL;
                for (int i = 0; i < 8; i++) {
                        char *end = NULL;
                        if (!g_ascii_isdigit(nums[i][0]))
                                return -EINVAL;
                        errno = 0;
                        guint64 v = g_ascii_strtoull(nums[i], &end, 10);
                        if (*end || errno || v > UINT32_MAX)
                                return -EINVAL;
                        if (i < 4)
                                m.inner[i] = (uint32_t) v;
                        else
                                m.outer[i - 4] = (uint32_t) v;
                }
                *ret = m;
                return 0;
        }
        g_autofree char *raw = NULL;
        size_t len = 0;
        if (sasl_base64_decode(text, &raw, &len) < 0 || (len != 32 && !(len == 33 && raw[0] == 0x3a)))
                return -EINVAL;
        const uint8_t *p = (const uint8_t *) raw + (len - 32);
        for (int i = 0; i < 4; i++) {
                m.inner[i] = get_le32(p + 4 * i);
                m.outer[i] = get_le32(p + 16 + 4 * i);
        }
        *ret = m;
        return 0;
}

static void md5_continue(const uint32_t state[4], const void *data, size_t len, uint8_t ret[16]) {
        struct md5_ctx ctx;

        /* Resume after one block: nettle keeps the state and a block count in the open. */
        md5_init(&ctx);
        memcpy(ctx.state, state, 16);
        ctx.count = 1;
        ctx.index = 0;
        md5_update(&ctx, len, data);
        md5_digest(&ctx, 16, ret);
}

void sasl_md5_mask_hmac(const SaslMd5Mask *m, const void *data, size_t len, uint8_t ret[16]) {
        uint8_t inner[16];
        md5_continue(m->inner, data, len, inner);
        md5_continue(m->outer, inner, sizeof inner, ret);
}

static char *to_hex(const uint8_t *d, size_t n) {
        char *out = g_malloc(2 * n + 1);
        for (size_t i = 0; i < n; i++)
                snprintf(out + 2 * i, 3, "%02x", d[i]);
        return out;
}

int sasl_cram_digest(SaslMech mech, const void *key, size_t key_len, const char *challenge, char **ret_hex) {
        gnutls_mac_algorithm_t algo;
        uint8_t out[64];

        switch (mech) {
        case SASL_CRAM_MD5: algo = GNUTLS_MAC_MD5; break;
        case SASL_CRAM_SHA1: algo = GNUTLS_MAC_SHA1; break;
        case SASL_CRAM_SHA256: algo = GNUTLS_MAC_SHA256; break;
        case SASL_CRAM_SHA512: algo = GNUTLS_MAC_SHA512; break;
        default: return -EINVAL;
        }
        /* gnutls_hmac_fast() wants a non-NULL key even when it is empty. */
        int r = gnutls_hmac_fast(algo, key_len ? key : "", key_len, challenge, strlen(challenge), out);
        if (r < 0)
                return -EIO;
        *ret_hex = to_hex(out, gnutls_hmac_get_len(algo));
        return 0;
}

/* ---- server ---- */

struct SaslServer {
        SaslMech mech;
        const Secrets *secrets;
        char *challenge;      /* CRAM: "<random.time@domain>" */
        char *id;
        char *password;       /* SASL_CHECK: for the caller to check (PAM) */
        unsigned step;
};

char *sasl_server_mechanisms(const Secrets *s, const SaslConfig *c, bool tls) {
        GString *out = g_string_new(NULL);
        bool plain = secrets_server_has_plain(s), md5 = secrets_server_has_md5(s);

        for (int m = 0; m < _SASL_MECH_MAX; m++) {
                bool ok;
                if (m == SASL_XOAUTH2)
                        ok = false;   /* client side only */
                else if (m == SASL_CRAM_MD5)
                        ok = plain || md5;
                else
                        ok = plain;
                if (ok && sasl_config_allows(c, mech_names[m], tls))
                        g_string_append_printf(out, "%s%s", out->len ? " " : "", mech_names[m]);
        }
        /* E-MailRelay: with secrets but nothing left, PLAIN on a TLS session. */
        if (out->len == 0 && tls && secrets_server_has_accounts(s))
                g_string_append(out, "PLAIN");
        return g_string_free(out, false);
}

char *sasl_server_mechanisms_pam(const SaslConfig *c, bool tls) {
        /* As above: PLAIN on a TLS session when the config leaves nothing. */
        bool plain = sasl_config_allows(c, mech_names[SASL_PLAIN], tls) || tls;
        return g_strdup(plain ? "PLAIN" : "");
}

int sasl_server_new(const char *mech, const char *offered, const Secrets *s, const char *domain, SaslServer **ret) {
        SaslMech m = sasl_mech_from_string(mech);
        if (m < 0 || !offered)
                return -ENOENT;
        g_auto(GStrv) list = g_strsplit(offered, " ", -1);
        if (!in_list(list, mech))
                return -ENOENT;

        SaslServer *x = g_new0(SaslServer, 1);
        x->mech = m;
        x->secrets = s;
        if (is_cram(m)) {
                uint64_t rnd = 0;
                if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd)
                        rnd = (uint64_t) g_random_int() << 32 | g_random_int();
                x->challenge = g_strdup_printf("<%" G_GUINT64_FORMAT ".%lld@%s>", (guint64) (rnd % 100000000000ull), (long long) time(NULL),
                                               domain ? domain : "localhost");
        }
        *ret = x;
        return 0;
}

SaslServer *sasl_server_free(SaslServer *x) {
        if (!x)
                return NULL;
        g_free(x->challenge);
        g_free(x->id);
        if (x->password) {
                explicit_bzero(x->password, strlen(x->password));
                g_free(x->password);
        }
        g_free(x);
        return NULL;
}

const char *sasl_server_password(const SaslServer *x) {
        return x ? x->password : NULL;
}

/* PLAIN and LOGIN without secrets: keep the password for the caller (PAM). A NUL in it could
 * not be passed on. */
static int password_to_check(SaslServer *x, const char *password, size_t len) {
        if (memchr(password, '\0', len))
                return -EACCES;
        g_free(x->password);
        x->password = g_strndup(password, len);
        return SASL_CHECK;
}

const char *sasl_server_id(const SaslServer *x) {
        return x ? x->id : NULL;
}

SaslMech sasl_server_mech(const SaslServer *x) {
        return x->mech;
}

static bool plain_password_ok(const SaslServer *x, const char *id, const char *password, size_t len) {
        const Secret *sec = secrets_find(x->secrets, true, SECRET_PLAIN, id);
        return sec && secrets_equal(sec->secret, sec->secret_len, password, len);
}

static int server_plain(SaslServer *x, const char *raw, size_t len) {
        /* [authzid] NUL authcid NUL passwd */
        const char *nul1 = memchr(raw, '\0', len);
        const char *nul2 = nul1 ? memchr(nul1 + 1, '\0', len - (size_t) (nul1 + 1 - raw)) : NULL;
        if (!nul2)
                return -EINVAL;
        const char *authzid = raw, *authcid = nul1 + 1, *password = nul2 + 1;
        size_t password_len = len - (size_t) (password - raw);
        if (memchr(password, '\0', password_len))
                return -EINVAL;
        g_free(x->id);
        x->id = g_strdup(authcid);
        if (*authzid && !streq(authzid, authcid))
                return -EACCES;   /* no proxy authorisation */
        if (!x->secrets)
                return password_to_check(x, password, password_len);
        return plain_password_ok(x, authcid, password, password_len) ? SASL_DONE : -EACCES;
}

static int server_cram(SaslServer *x, const char *raw, size_t len) {
        /* "<id> <hex digest>": the id may hold spaces, the digest is after the last one. */
        const char *space = strrchr(raw, ' ');
        if (!space || space == raw || strlen(raw) != len)
                return -EINVAL;
        g_free(x->id);
        x->id = g_strndup(raw, (size_t) (space - raw));
        g_autofree char *given = g_ascii_strdown(space + 1, -1);
        g_autofree char *expect = NULL;

        const Secret *sec = secrets_find(x->secrets, true, SECRET_PLAIN, x->id);
        if (sec) {
                if (sasl_cram_digest(x->mech, sec->secret, sec->secret_len, x->challenge, &expect) < 0)
                        return -EACCES;
        } else if (x->mech == SASL_CRAM_MD5 && (sec = secrets_find(x->secrets, true, SECRET_MD5, x->id))) {
                SaslMd5Mask m;
                uint8_t d[16];
                if (sasl_md5_mask_decode(sec->secret, &m) < 0)
                        return -EACCES;
                sasl_md5_mask_hmac(&m, x->challenge, strlen(x->challenge), d);
                expect = to_hex(d, sizeof d);
                explicit_bzero(&m, sizeof m);
        } else
                return -EACCES;
        return secrets_equal(expect, strlen(expect), given, strlen(given)) ? SASL_DONE : -EACCES;
}

int sasl_server_step(SaslServer *x, const char *response, char **ret_challenge) {
        g_autofree char *raw = NULL;
        size_t len = 0;
        int r;

        x->step++;
        if (response && streq(response, "*"))
                return -ECANCELED;
        if (response) {
                r = sasl_base64_decode(response, &raw, &len);
                if (r < 0)
                        return r;
        }

        switch (x->mech) {
        case SASL_PLAIN:
                if (!response) {
                        if (x->step > 1)
                                return -EINVAL;
                        *ret_challenge = g_strdup("");
                        return SASL_CONTINUE;
                }
                r = server_plain(x, raw, len);
                break;
        case SASL_LOGIN:
                if (!response) {
                        if (x->step > 1)
                                return -EINVAL;
                        *ret_challenge = sasl_base64_encode("Username:", 9);
                        return SASL_CONTINUE;
                }
                if (!x->id) {
                        if (strlen(raw) != len)
                                return -EINVAL;
                        x->id = TAKE_PTR(raw);
                        *ret_challenge = sasl_base64_encode("Password:", 9);
                        return SASL_CONTINUE;
                }
                r = !x->secrets ? password_to_check(x, raw, len) :
                    plain_password_ok(x, x->id, raw, len) ? SASL_DONE : -EACCES;
                break;
        default:
                if (x->step == 1) {
                        if (response)
                                return -EINVAL;   /* CRAM has no initial response */
                        *ret_challenge = sasl_base64_encode(x->challenge, strlen(x->challenge));
                        return SASL_CONTINUE;
                }
                if (!response)
                        return -EINVAL;
                r = server_cram(x, raw, len);
                break;
        }
        if (raw)
                explicit_bzero(raw, len);
        return r;
}

/* ---- client ---- */

void sasl_account_done(SaslAccount *a) {
        if (!a)
                return;
        g_free(a->id);
        if (a->secret)
                explicit_bzero(a->secret, a->secret_len);
        g_free(a->secret);
        *a = (SaslAccount) {};
}

static bool account_fits(const SaslAccount *a, SaslMech m) {
        switch (m) {
        case SASL_CRAM_MD5:
                return a->type == SECRET_PLAIN || a->type == SECRET_MD5;
        case SASL_XOAUTH2:
                return a->type == SECRET_OAUTH;
        default:
                return a->type == SECRET_PLAIN;
        }
}

size_t sasl_client_plan(const SaslAccount *accounts, size_t n_accounts, const char *offered, const SaslConfig *c,
                        bool tls, SaslAttempt *ret, size_t max) {
        g_auto(GStrv) list = g_strsplit(offered ? offered : "", " ", -1);
        char *const *allow, *const *deny;
        SaslMech order[_SASL_MECH_MAX];
        size_t n_order = 0, n = 0;

        lists_for(c, tls, &allow, &deny);
        if (allow) {
                /* The configured order. */
                for (char *const *a = allow; *a && n_order < ELEMENTSOF(order); a++) {
                        SaslMech m = sasl_mech_from_string(*a);
                        bool dup = false;
                        for (size_t i = 0; i < n_order; i++)
                                dup |= order[i] == m;
                        if (m >= 0 && !dup)
                                order[n_order++] = m;
                }
        } else
                for (int m = 0; m < _SASL_MECH_MAX; m++)
                        order[n_order++] = (SaslMech) m;

        for (size_t i = 0; i < n_order && n < max; i++) {
                SaslMech m = order[i];
                if (!in_list(list, mech_names[m]) || in_list(deny, mech_names[m]))
                        continue;
                for (size_t k = 0; k < n_accounts; k++)
                        if (account_fits(&accounts[k], m)) {
                                ret[n++] = (SaslAttempt) { .mech = m, .account = k };
                                break;
                        }
        }
        return n;
}

struct SaslClient {
        SaslMech mech;
        const SaslAccount *account;
        unsigned step;
};

int sasl_client_new(SaslMech mech, const SaslAccount *account, SaslClient **ret) {
        if (mech < 0 || mech >= _SASL_MECH_MAX || !account_fits(account, mech))
                return -EINVAL;
        SaslClient *x = g_new0(SaslClient, 1);
        x->mech = mech;
        x->account = account;
        *ret = x;
        return 0;
}

SaslClient *sasl_client_free(SaslClient *x) {
        g_free(x);
        return NULL;
}

char *sasl_client_initial(SaslClient *x) {
        const SaslAccount *a = x->account;

        if (x->mech == SASL_PLAIN) {
                size_t idlen = strlen(a->id);
                size_t len = 1 + idlen + 1 + a->secret_len;
                char *buf = g_malloc(len);
                buf[0] = '\0';
                memcpy(buf + 1, a->id, idlen);
                buf[1 + idlen] = '\0';
                memcpy(buf + 2 + idlen, a->secret, a->secret_len);
                char *out = sasl_base64_encode(buf, len);
                explicit_bzero(buf, len);
                g_free(buf);
                x->step = 1;
                return out;
        }
        if (x->mech == SASL_XOAUTH2) {
                x->step = 1;
                return g_strdup(a->secret);   /* already base64 */
        }
        return NULL;
}

int sasl_client_step(SaslClient *x, const char *challenge, char **ret_response) {
        const SaslAccount *a = x->account;
        g_autofree char *raw = NULL;
        size_t len = 0;

        if (sasl_base64_decode(challenge ? challenge : "", &raw, &len) < 0)
                return -EINVAL;
        x->step++;
        switch (x->mech) {
        case SASL_PLAIN:
                return -EINVAL;   /* everything went with the initial response */
        case SASL_XOAUTH2:
                /* An error report in JSON: answer with an empty line to get the final 535. */
                *ret_response = g_strdup("");
                return 0;
        case SASL_LOGIN:
                if (x->step == 1) {
                        *ret_response = sasl_base64_encode(a->id, strlen(a->id));
                        return 0;
                }
                if (x->step == 2) {
                        *ret_response = sasl_base64_encode(a->secret, a->secret_len);
                        return 0;
                }
                return -EINVAL;
        default: {
                if (x->step != 1 || strlen(raw) != len)
                        return -EINVAL;
                g_autofree char *hex = NULL;
                if (a->type == SECRET_MD5) {
                        SaslMd5Mask m;
                        uint8_t d[16];
                        if (x->mech != SASL_CRAM_MD5 || sasl_md5_mask_decode(a->secret, &m) < 0)
                                return -EINVAL;
                        sasl_md5_mask_hmac(&m, raw, len, d);
                        hex = to_hex(d, sizeof d);
                } else if (sasl_cram_digest(x->mech, a->secret, a->secret_len, raw, &hex) < 0)
                        return -EINVAL;
                g_autofree char *text = g_strdup_printf("%s %s", a->id, hex);
                *ret_response = sasl_base64_encode(text, strlen(text));
                return 0;
        }
        }
}
