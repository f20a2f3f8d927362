/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The secrets file, reference section 4.1: "client|server type id secret [selector]" lines. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"
#include "secrets.h"
#include "xtext.h"

#define SECRETS_MAX_FILE (16u * 1024u * 1024u)

struct Secrets {
        char *path;
        GPtrArray *items;        /* Secret* */
        GPtrArray *warnings;     /* char*, NULL-terminated */
        GHashTable *keys;        /* "side type id" -> Secret* (borrowed) */
        bool has_server_plain;
        bool has_server_md5;
        bool has_server_accounts;
        struct stat st;          /* of the file when last read */
};

static void secret_free(gpointer p) {
        Secret *x = p;
        if (!x)
                return;
        g_free(x->type_name);
        g_free(x->id);
        if (x->secret)
                explicit_bzero(x->secret, x->secret_len);
        g_free(x->secret);
        g_free(x->selector);
        g_free(x);
}

static SecretType type_from_name(const char *name, bool *ret_base64) {
        *ret_base64 = false;
        if (streq(name, "plain:b")) {
                *ret_base64 = true;
                return SECRET_PLAIN;
        }
        if (streq(name, "plain") || streq(name, "login"))
                return SECRET_PLAIN;
        if (streq(name, "md5") || streq(name, "cram-md5") || streq(name, "apop"))
                return SECRET_MD5;
        if (streq(name, "oauth") || streq(name, "oauth:b"))
                return SECRET_OAUTH;
        if (streq(name, "none"))
                return SECRET_NONE;
        if (streq(name, "sha1") || streq(name, "sha256") || streq(name, "sha512") ||
            streq(name, "cram-sha1") || streq(name, "cram-sha256") || streq(name, "cram-sha512"))
                return SECRET_HASHED;
        return _SECRET_TYPE_INVALID;
}

static bool base64_is_valid(const char *s) {
        size_t n = strlen(s), pad = 0;
        if (n == 0 || n % 4 != 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (c == '=') {
                        pad++;
                        continue;
                }
                if (pad > 0 || !(g_ascii_isalnum(c) || c == '+' || c == '/'))
                        return false;
        }
        return pad <= 2;
}

static int decode_base64(const char *s, char **ret, size_t *ret_len) {
        if (!base64_is_valid(s))
                return -EINVAL;
        gsize len = 0;
        guchar *raw = g_base64_decode(s, &len);
        char *out = g_malloc(len + 1);
        memcpy(out, raw, len);
        out[len] = '\0';
        g_free(raw);
        *ret = out;
        *ret_len = len;
        return 0;
}

static Secrets *secrets_new(const char *path) {
        Secrets *s = g_new0(Secrets, 1);
        s->path = g_strdup(path);
        s->items = g_ptr_array_new_with_free_func(secret_free);
        s->warnings = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(s->warnings, NULL);
        s->keys = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        return s;
}

Secrets *secrets_free(Secrets *s) {
        if (!s)
                return NULL;
        g_free(s->path);
        g_ptr_array_unref(s->items);
        g_ptr_array_unref(s->warnings);
        g_hash_table_unref(s->keys);
        g_free(s);
        return NULL;
}

static void add_warning(Secrets *s, char *text) {
        /* Keep the array NULL-terminated: replace the terminator, add a new one. */
        g_ptr_array_index(s->warnings, s->warnings->len - 1) = text;
        g_ptr_array_add(s->warnings, NULL);
}

static char *key_for(bool server, SecretType type, const char *id) {
        return g_strdup_printf("%c %d %s", server ? 's' : 'c', (int) type, id);
}

static int parse_line(Secrets *s, char *line, unsigned lineno, char **ret_error) {
        char *fields[6];
        size_t n = 0;
        bool base64 = false;
        int r;

        for (char *p = line; *p;) {
                while (*p == ' ' || *p == '\t')
                        p++;
                if (!*p)
                        break;
                char *start = p;
                while (*p && *p != ' ' && *p != '\t')
                        p++;
                if (*p)
                        *p++ = '\0';
                if (n < ELEMENTSOF(fields))
                        fields[n] = start;
                n++;
        }
        if (n == 0 || fields[0][0] == '#')
                return 0;
        if (n < 4) {
                *ret_error = g_strdup_printf("%s:%u: too few fields", s->path, lineno);
                return -EINVAL;
        }
        if (n > 5)
                add_warning(s, g_strdup_printf("%s:%u: too many fields", s->path, lineno));

        g_autofree char *side = g_ascii_strdown(fields[0], -1);
        if (!streq(side, "client") && !streq(side, "server")) {
                *ret_error = g_strdup_printf("%s:%u: invalid first field: expecting \"client\" or \"server\"", s->path, lineno);
                return -EINVAL;
        }
        Secret *x = g_new0(Secret, 1);
        x->server = streq(side, "server");
        x->line = lineno;
        x->type_name = g_ascii_strdown(fields[1], -1);
        x->type = type_from_name(x->type_name, &base64);
        if (n >= 5 && fields[4][0] != '#')
                x->selector = g_strdup(fields[4]);
        if (x->type == _SECRET_TYPE_INVALID) {
                *ret_error = g_strdup_printf("%s:%u: unknown type \"%s\"", s->path, lineno, fields[1]);
                secret_free(x);
                return -EINVAL;
        }
        if ((x->type == SECRET_NONE && !x->server) || (x->type == SECRET_OAUTH && x->server)) {
                *ret_error = g_strdup_printf("%s:%u: type \"%s\" is not allowed on a %s line", s->path, lineno,
                                             fields[1], side);
                secret_free(x);
                return -EINVAL;
        }

        const char *id = fields[2], *secret = fields[3];
        if (x->type == SECRET_NONE) {
                x->id = g_strdup(id);
                x->secret = g_strdup(secret);
                x->secret_len = strlen(secret);
        } else if (base64 && streq(id, "=") && streq(secret, "=") && !x->server) {
                /* "client plain:b = = <selector>": do not authenticate for this selector */
                x->id = g_strdup("");
                x->secret = g_strdup("");
        } else if (base64) {
                size_t len = 0;
                r = decode_base64(id, &x->id, &len);
                if (r >= 0 && strlen(x->id) != len)
                        r = -EINVAL;
                if (r >= 0)
                        r = decode_base64(secret, &x->secret, &x->secret_len);
                if (r < 0) {
                        *ret_error = g_strdup_printf("%s:%u: invalid base64 encoding", s->path, lineno);
                        secret_free(x);
                        return r;
                }
        } else {
                size_t len = 0;
                r = xtext_decode(id, &x->id, &len);
                if (r >= 0 && strlen(x->id) != len)
                        r = -EINVAL;
                if (r < 0) {
                        *ret_error = g_strdup_printf("%s:%u: invalid xtext encoding", s->path, lineno);
                        secret_free(x);
                        return r;
                }
                if (x->type == SECRET_PLAIN) {
                        r = xtext_decode(secret, &x->secret, &x->secret_len);
                        if (r < 0) {
                                *ret_error = g_strdup_printf("%s:%u: invalid xtext encoding", s->path, lineno);
                                secret_free(x);
                                return r;
                        }
                } else {
                        /* "client oauth <id> exec:<program>": a helper prints a fresh token. */
                        bool helper = x->type == SECRET_OAUTH && g_str_has_prefix(secret, "exec:") && secret[5];
                        if (!helper && !base64_is_valid(secret) && x->type != SECRET_HASHED) {
                                *ret_error = g_strdup_printf("%s:%u: invalid base64 encoding", s->path, lineno);
                                secret_free(x);
                                return -EINVAL;
                        }
                        x->secret = g_strdup(secret);
                        x->secret_len = strlen(secret);
                }
        }

        /* Client lines are keyed by selector too: one account per selector is the point. */
        g_autofree char *key = key_for(x->server, x->type, x->id);
        if (!x->server && x->selector) {
                char *k = g_strconcat(key, " ", x->selector, NULL);
                g_free(key);
                key = k;
        }
        if (g_hash_table_contains(s->keys, key)) {
                *ret_error = g_strdup_printf("%s:%u: duplicate key", s->path, lineno);
                secret_free(x);
                return -EINVAL;
        }
        g_hash_table_insert(s->keys, TAKE_PTR(key), x);
        if (x->server && x->type == SECRET_PLAIN)
                s->has_server_plain = true;
        if (x->server && x->type == SECRET_MD5)
                s->has_server_md5 = true;
        if (x->server && x->type != SECRET_NONE)
                s->has_server_accounts = true;
        g_ptr_array_add(s->items, x);
        return 0;
}

static int load(const char *path, Secrets **ret, char **ret_error) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        g_autoptr(Secrets) s = secrets_new(path);
        g_autofree char *data = NULL;
        size_t size = 0;

        if (fd < 0 || fstat(fd, &s->st) < 0) {
                int r = negative_errno();
                *ret_error = g_strdup_printf("%s: %s", path, g_strerror(-r));
                return r;
        }
        if (!S_ISREG(s->st.st_mode) || (uint64_t) s->st.st_size > SECRETS_MAX_FILE) {
                *ret_error = g_strdup_printf("%s: not a regular file of a sensible size", path);
                return -EINVAL;
        }
        data = g_malloc((size_t) s->st.st_size + 1);
        while (size < (size_t) s->st.st_size) {
                ssize_t n = read(fd, data + size, (size_t) s->st.st_size - size);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = negative_errno();
                        *ret_error = g_strdup_printf("%s: %s", path, g_strerror(-r));
                        return r;
                }
                if (n == 0)
                        break;
                size += (size_t) n;
        }
        data[size] = '\0';

        unsigned lineno = 0;
        for (char *line = data; line && *line;) {
                char *next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                lineno++;
                size_t len = strlen(line);
                if (len > 0 && line[len - 1] == '\r')
                        line[len - 1] = '\0';
                int r = parse_line(s, line, lineno, ret_error);
                if (r < 0)
                        return r;
                line = next;
        }
        explicit_bzero(data, size);
        *ret = TAKE_PTR(s);
        return 0;
}

int secrets_load(const char *path, Secrets **ret, char **ret_error) {
        return load(path, ret, ret_error);
}

const char *const *secrets_warnings(const Secrets *s) {
        return (const char *const *) s->warnings->pdata;
}

const char *secrets_path(const Secrets *s) {
        return s->path;
}

size_t secrets_count(const Secrets *s) {
        return s->items->len;
}

const Secret *secrets_get(const Secrets *s, size_t i) {
        return i < s->items->len ? g_ptr_array_index(s->items, i) : NULL;
}

const char *secrets_server_plain(const Secrets *s, const char *id) {
        if (!s || !id)
                return NULL;
        g_autofree char *key = key_for(true, SECRET_PLAIN, id);
        const Secret *x = g_hash_table_lookup(s->keys, key);
        /* A password with a NUL in it cannot be typed into USER/PASS or APOP. */
        if (!x || strlen(x->secret) != x->secret_len)
                return NULL;
        return x->secret;
}

bool secrets_server_has_plain(const Secrets *s) {
        return s && s->has_server_plain;
}

const Secret *secrets_find(const Secrets *s, bool server, SecretType type, const char *id) {
        if (!s || !id)
                return NULL;
        g_autofree char *key = key_for(server, type, id);
        return g_hash_table_lookup(s->keys, key);
}

bool secrets_server_has_md5(const Secrets *s) {
        return s && s->has_server_md5;
}

bool secrets_server_has_accounts(const Secrets *s) {
        return s && s->has_server_accounts;
}

static const char *trusted_lookup(const Secrets *s, const char *candidate) {
        const Secret *x = secrets_find(s, true, SECRET_NONE, candidate);
        return x ? x->secret : NULL;
}

static const char *trusted_ipv4(const Secrets *s, uint32_t a) {
        char buf[64];
        const char *k;

        snprintf(buf, sizeof buf, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
        if ((k = trusted_lookup(s, buf)))
                return k;
        for (int bits = 32; bits >= 0; bits--) {
                uint32_t m = bits == 0 ? 0 : a & (0xffffffffu << (32 - bits));
                snprintf(buf, sizeof buf, "%u.%u.%u.%u/%d", m >> 24, (m >> 16) & 255, (m >> 8) & 255, m & 255, bits);
                if ((k = trusted_lookup(s, buf)))
                        return k;
                /* The wildcard forms come right after the /24, /16 and /8 masks. */
                if (bits == 24)
                        snprintf(buf, sizeof buf, "%u.%u.%u.*", a >> 24, (a >> 16) & 255, (a >> 8) & 255);
                else if (bits == 16)
                        snprintf(buf, sizeof buf, "%u.%u.*.*", a >> 24, (a >> 16) & 255);
                else if (bits == 8)
                        snprintf(buf, sizeof buf, "%u.*.*.*", a >> 24);
                else if (bits == 0)
                        snprintf(buf, sizeof buf, "*.*.*.*");
                else
                        continue;
                if ((k = trusted_lookup(s, buf)))
                        return k;
        }
        return NULL;
}

const char *secrets_server_trusted(const Secrets *s, const char *address) {
        struct in_addr a4;
        struct in6_addr a6;
        char buf[INET6_ADDRSTRLEN + 8];
        const char *k;

        if (!s || !address)
                return NULL;
        if (inet_pton(AF_INET, address, &a4) == 1)
                return trusted_ipv4(s, ntohl(a4.s_addr));
        if (inet_pton(AF_INET6, address, &a6) != 1)
                return NULL;
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
                uint32_t v;
                memcpy(&v, a6.s6_addr + 12, 4);
                return trusted_ipv4(s, ntohl(v));
        }
        if ((k = trusted_lookup(s, address)))
                return k;
        for (int bits = 128; bits >= 0; bits--) {
                struct in6_addr m = a6;
                for (int i = 0; i < 16; i++) {
                        int keep = bits - i * 8;
                        m.s6_addr[i] &= keep >= 8 ? 0xff : keep <= 0 ? 0 : (uint8_t) (0xff << (8 - keep));
                }
                char text[INET6_ADDRSTRLEN];
                inet_ntop(AF_INET6, &m, text, sizeof text);
                snprintf(buf, sizeof buf, "%s/%d", text, bits);
                if ((k = trusted_lookup(s, buf)))
                        return k;
        }
        return NULL;
}

const Secret **secrets_client_accounts(const Secrets *s, const char *selector, size_t *ret_n) {
        GPtrArray *out = g_ptr_array_new();
        for (guint i = 0; s && i < s->items->len; i++) {
                const Secret *x = g_ptr_array_index(s->items, i);
                if (x->server)
                        continue;
                if (isempty(selector) ? x->selector != NULL : !x->selector || !streq(x->selector, selector))
                        continue;
                g_ptr_array_add(out, (gpointer) x);
        }
        if (ret_n)
                *ret_n = out->len;
        g_ptr_array_add(out, NULL);
        return (const Secret **) g_ptr_array_free(out, false);
}

int secrets_reload_if_changed(Secrets *s, char **ret_error) {
        struct stat st;
        Secrets *fresh = NULL;

        if (stat(s->path, &st) < 0) {
                int r = negative_errno();
                *ret_error = g_strdup_printf("%s: %s", s->path, g_strerror(-r));
                return r;
        }
        if (st.st_mtim.tv_sec == s->st.st_mtim.tv_sec && st.st_mtim.tv_nsec == s->st.st_mtim.tv_nsec &&
            st.st_size == s->st.st_size && st.st_ino == s->st.st_ino && st.st_dev == s->st.st_dev)
                return 0;
        int r = load(s->path, &fresh, ret_error);
        if (r < 0)
                return r;
        /* Swap contents so that the caller's pointer stays valid. */
        Secrets tmp = *s;
        *s = *fresh;
        *fresh = tmp;
        secrets_free(fresh);
        return 1;
}

bool secrets_equal(const void *a, size_t a_len, const void *b, size_t b_len) {
        const unsigned char *x = a, *y = b;
        unsigned char d = 0;
        if (a_len != b_len)
                return false;   /* the length is not the secret worth hiding */
        for (size_t i = 0; i < a_len; i++)
                d |= x[i] ^ y[i];
        return d == 0;
}
