/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the SASL mechanisms, the md5 secret format, the auth-config lists and the trusted
 * address look-up of the secrets file. */

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "sasl.h"
#include "secrets.h"

static Secrets *load(const char *text) {
        g_autofree char *dir = g_dir_make_tmp("test-sasl-XXXXXX", NULL);
        g_autofree char *path = g_build_filename(dir, "secrets", NULL);
        g_autofree char *error = NULL;
        Secrets *s = NULL;
        g_assert_true(g_file_set_contents(path, text, -1, NULL));
        g_assert_cmpint(secrets_load(path, &s, &error), ==, 0);
        g_assert_null(error);
        (void) g_unlink(path);
        (void) g_rmdir(dir);
        return s;
}

static char *b64(const char *s, size_t len) {
        return sasl_base64_encode(s, len);
}

/* What E-MailRelay 2.6.1's emailrelay-passwd prints for "foobar": 32 bytes. */
static void test_md5_vector(void) {
        SaslMd5Mask m, back;
        sasl_md5_mask("foobar", 6, &m);
        g_autofree char *foobar = sasl_md5_mask_encode(&m);
        g_assert_cmpstr(foobar, ==, "3pIN0aPbd5aN0S4ogKA3w2P3P9XH0hXchLP1W+adpQE=");
        sasl_md5_mask("secret", 6, &m);
        g_autofree char *enc = sasl_md5_mask_encode(&m);
        g_assert_cmpstr(enc, ==, "qeD38fvADIqBu6rDlXMbVs07p96q1uXKI0SLpC43l0c=");
        g_assert_cmpint(sasl_md5_mask_decode(enc, &back), ==, 0);
        g_assert_cmpmem(&m, sizeof m, &back, sizeof back);
        /* the 33-byte form earlier versions wrote (a 0x3a byte first) and the dotted form read
         * the same; 33 bytes with another first byte are not a hash */
        g_assert_cmpint(sasl_md5_mask_decode("Oqng9/H7wAyKgbuqw5VzG1bNO6feqtblyiNEi6QuN5dH", &back), ==, 0);
        g_assert_cmpmem(&m, sizeof m, &back, sizeof back);
        g_assert_cmpint(sasl_md5_mask_decode("O6ng9/H7wAyKgbuqw5VzG1bNO6feqtblyiNEi6QuN5dH", &back), ==, -EINVAL);
        g_autofree char *dotted = g_strdup_printf("%u.%u.%u.%u.%u.%u.%u.%u", m.inner[0], m.inner[1], m.inner[2], m.inner[3],
                                                  m.outer[0], m.outer[1], m.outer[2], m.outer[3]);
        g_assert_cmpint(sasl_md5_mask_decode(dotted, &back), ==, 0);
        g_assert_cmpmem(&m, sizeof m, &back, sizeof back);
        g_assert_cmpint(sasl_md5_mask_decode("1.2.3", &back), ==, -EINVAL);
        g_assert_cmpint(sasl_md5_mask_decode("not base64!", &back), ==, -EINVAL);
        g_assert_cmpint(sasl_md5_mask_decode("AAAA", &back), ==, -EINVAL);
}

/* RFC 2195's example, by the plain key and by its mask. */
static void test_cram_md5_rfc2195(void) {
        const char *challenge = "<1896.697170952@postoffice.reston.mci.net>";
        g_autofree char *hex = NULL;
        g_assert_cmpint(sasl_cram_digest(SASL_CRAM_MD5, "tanstaaftanstaaf", 16, challenge, &hex), ==, 0);
        g_assert_cmpstr(hex, ==, "b913a602c7eda7a495b4e6e7334d3890");

        SaslMd5Mask m;
        uint8_t d[16];
        sasl_md5_mask("tanstaaftanstaaf", 16, &m);
        sasl_md5_mask_hmac(&m, challenge, strlen(challenge), d);
        g_autofree char *hex2 = g_strdup_printf("%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x", d[0], d[1],
                                                d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]);
        g_assert_cmpstr(hex2, ==, hex);

        /* RFC 4231 test case 2 for SHA-256 (key "Jefe") */
        g_autofree char *sha = NULL;
        g_assert_cmpint(sasl_cram_digest(SASL_CRAM_SHA256, "Jefe", 4, "what do ya want for nothing?", &sha), ==, 0);
        g_assert_cmpstr(sha, ==, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        g_assert_cmpint(sasl_cram_digest(SASL_PLAIN, "k", 1, "x", &sha), ==, -EINVAL);
}

static void test_mechanisms(void) {
        g_autoptr(Secrets) plain = load("server plain alice secret\n");
        g_autoptr(Secrets) md5 = load("server md5 alice qeD38fvADIqBu6rDlXMbVs07p96q1uXKI0SLpC43l0c=\n");
        g_autoptr(Secrets) none = load("server none 127.0.0.1 local\n");
        g_autofree char *a = sasl_server_mechanisms(plain, NULL, false);
        g_assert_cmpstr(a, ==, "CRAM-SHA512 CRAM-SHA256 CRAM-SHA1 CRAM-MD5 PLAIN LOGIN");
        g_autofree char *b = sasl_server_mechanisms(md5, NULL, false);
        g_assert_cmpstr(b, ==, "CRAM-MD5");
        g_autofree char *c = sasl_server_mechanisms(none, NULL, true);
        g_assert_cmpstr(c, ==, "");

        SaslConfig cfg;
        g_autofree char *error = NULL;
        g_assert_cmpint(sasl_config_parse("m:;a:plain,login", &cfg, &error), ==, 0);
        g_autofree char *d = sasl_server_mechanisms(plain, &cfg, false);
        g_autofree char *e = sasl_server_mechanisms(plain, &cfg, true);
        g_assert_cmpstr(d, ==, "");
        g_assert_cmpstr(e, ==, "PLAIN LOGIN");
        sasl_config_done(&cfg);
        g_assert_cmpint(sasl_config_parse("x:cram-sha512,cram-sha256", &cfg, &error), ==, 0);
        g_autofree char *f = sasl_server_mechanisms(plain, &cfg, true);
        g_assert_cmpstr(f, ==, "CRAM-SHA1 CRAM-MD5 PLAIN LOGIN");
        sasl_config_done(&cfg);
        g_assert_cmpint(sasl_config_parse("q:plain", &cfg, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "q:plain"));
}

static int step(SaslServer *x, const char *response, char **challenge) {
        g_clear_pointer(challenge, g_free);
        return sasl_server_step(x, response, challenge);
}

static void test_server_plain_login(void) {
        g_autoptr(Secrets) s = load("server plain alice secret\nserver plain:b Ym9i cGFzcw==\n");
        g_autofree char *offered = sasl_server_mechanisms(s, NULL, false);
        g_autofree char *ch = NULL;
        SaslServer *x = NULL;

        /* PLAIN with an initial response */
        g_assert_cmpint(sasl_server_new("plain", offered, s, "d", &x), ==, 0);
        g_autofree char *good = b64("\0alice\0secret", 13);
        g_assert_cmpint(step(x, good, &ch), ==, SASL_DONE);
        g_assert_cmpstr(sasl_server_id(x), ==, "alice");
        x = sasl_server_free(x);

        /* PLAIN without: an empty challenge, then the response */
        g_assert_cmpint(sasl_server_new("PLAIN", offered, s, "d", &x), ==, 0);
        g_assert_cmpint(step(x, NULL, &ch), ==, SASL_CONTINUE);
        g_assert_cmpstr(ch, ==, "");
        g_autofree char *bob = b64("bob\0bob\0pass", 12);
        g_assert_cmpint(step(x, bob, &ch), ==, SASL_DONE);
        x = sasl_server_free(x);

        /* wrong password, other authzid, garbage, cancel */
        g_autofree char *bad = b64("\0alice\0wrong", 12);
        g_autofree char *proxy = b64("bob\0alice\0secret", 16);
        g_autofree char *nonul = b64("alice secret", 12);
        const struct { const char *resp; int r; } cases[] = {
                { bad, -EACCES }, { proxy, -EACCES }, { nonul, -EINVAL }, { "!!!!", -EINVAL }, { "YWJj=", -EINVAL }, { "*", -ECANCELED },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_assert_cmpint(sasl_server_new("PLAIN", offered, s, "d", &x), ==, 0);
                g_assert_cmpint(step(x, cases[i].resp, &ch), ==, cases[i].r);
                x = sasl_server_free(x);
        }

        /* LOGIN */
        g_assert_cmpint(sasl_server_new("LOGIN", offered, s, "d", &x), ==, 0);
        g_assert_cmpint(step(x, NULL, &ch), ==, SASL_CONTINUE);
        g_assert_cmpstr(ch, ==, "VXNlcm5hbWU6");
        g_autofree char *user = b64("alice", 5), *pw = b64("secret", 6), *wrong = b64("nope", 4);
        g_assert_cmpint(step(x, user, &ch), ==, SASL_CONTINUE);
        g_assert_cmpstr(ch, ==, "UGFzc3dvcmQ6");
        g_assert_cmpint(step(x, pw, &ch), ==, SASL_DONE);
        x = sasl_server_free(x);
        g_assert_cmpint(sasl_server_new("LOGIN", offered, s, "d", &x), ==, 0);
        g_assert_cmpint(step(x, user, &ch), ==, SASL_CONTINUE);   /* initial response: the user */
        g_assert_cmpint(step(x, wrong, &ch), ==, -EACCES);
        x = sasl_server_free(x);

        /* not offered */
        g_assert_cmpint(sasl_server_new("XOAUTH2", offered, s, "d", &x), ==, -ENOENT);
        g_assert_cmpint(sasl_server_new("FOO", offered, s, "d", &x), ==, -ENOENT);
        g_assert_cmpint(sasl_server_new("PLAIN", "CRAM-MD5", s, "d", &x), ==, -ENOENT);
}

/* Server and client of each CRAM mechanism against each other. */
/* No secrets (PAM): PLAIN and LOGIN hand the password over with SASL_CHECK; only PLAIN is
 * offered, and the config can take it away except on TLS. */
static void test_server_external_check(void) {
        SaslConfig no_plain = {};
        g_autofree char *offered = sasl_server_mechanisms_pam(NULL, false);
        g_autofree char *ch = NULL, *none = NULL, *tls = NULL;
        SaslServer *x = NULL;

        g_assert_cmpstr(offered, ==, "PLAIN");
        g_assert_cmpint(sasl_config_parse("x:plain", &no_plain, NULL), ==, 0);
        none = sasl_server_mechanisms_pam(&no_plain, false);
        tls = sasl_server_mechanisms_pam(&no_plain, true);
        g_assert_cmpstr(none, ==, "");
        g_assert_cmpstr(tls, ==, "PLAIN");

        g_assert_cmpint(sasl_server_new("PLAIN", offered, NULL, "d", &x), ==, 0);
        g_autofree char *good = b64("\0alice\0any thing", 16);
        g_assert_cmpint(step(x, good, &ch), ==, SASL_CHECK);
        g_assert_cmpstr(sasl_server_id(x), ==, "alice");
        g_assert_cmpstr(sasl_server_password(x), ==, "any thing");
        x = sasl_server_free(x);

        /* another authzid is refused before any check */
        g_autofree char *proxy = b64("bob\0alice\0pw", 12);
        g_assert_cmpint(sasl_server_new("PLAIN", offered, NULL, "d", &x), ==, 0);
        g_assert_cmpint(step(x, proxy, &ch), ==, -EACCES);
        g_assert_null(sasl_server_password(x));
        x = sasl_server_free(x);

        g_assert_cmpint(sasl_server_new("LOGIN", "PLAIN LOGIN", NULL, "d", &x), ==, 0);
        g_assert_cmpint(step(x, NULL, &ch), ==, SASL_CONTINUE);
        g_autofree char *user = b64("carol", 5), *pw = b64("pw", 2);
        g_assert_cmpint(step(x, user, &ch), ==, SASL_CONTINUE);
        g_assert_cmpint(step(x, pw, &ch), ==, SASL_CHECK);
        g_assert_cmpstr(sasl_server_id(x), ==, "carol");
        g_assert_cmpstr(sasl_server_password(x), ==, "pw");
        x = sasl_server_free(x);
        sasl_config_done(&no_plain);
}

static void test_cram_round_trip(void) {
        g_autoptr(Secrets) s = load("server plain alice secret\nserver md5 carol qeD38fvADIqBu6rDlXMbVs07p96q1uXKI0SLpC43l0c=\n");
        g_autofree char *offered = sasl_server_mechanisms(s, NULL, false);
        SaslAccount plain = { .type = SECRET_PLAIN, .id = g_strdup("alice"), .secret = g_strdup("secret"), .secret_len = 6 };
        SaslAccount md5 = { .type = SECRET_MD5, .id = g_strdup("carol"), .secret = g_strdup("qeD38fvADIqBu6rDlXMbVs07p96q1uXKI0SLpC43l0c=") };
        SaslAccount plain_carol = { .type = SECRET_PLAIN, .id = g_strdup("carol"), .secret = g_strdup("secret"), .secret_len = 6 };
        SaslAccount wrong = { .type = SECRET_PLAIN, .id = g_strdup("alice"), .secret = g_strdup("Secret"), .secret_len = 6 };
        const struct { SaslMech mech; SaslAccount *acct; int result; } cases[] = {
                { SASL_CRAM_MD5, &plain, SASL_DONE }, { SASL_CRAM_SHA1, &plain, SASL_DONE },
                { SASL_CRAM_SHA256, &plain, SASL_DONE }, { SASL_CRAM_SHA512, &plain, SASL_DONE },
                { SASL_CRAM_MD5, &md5, SASL_DONE },            /* hashed on both sides */
                { SASL_CRAM_MD5, &plain_carol, SASL_DONE },    /* plain client, hashed server */
                { SASL_CRAM_SHA1, &plain_carol, -EACCES },     /* no SHA1 from an md5 hash */
                { SASL_CRAM_MD5, &wrong, -EACCES },
                { SASL_LOGIN, &plain, SASL_DONE }, { SASL_PLAIN, &plain, SASL_DONE }, { SASL_PLAIN, &wrong, -EACCES },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(SaslServer) x = NULL;
                g_autoptr(SaslClient) c = NULL;
                g_autofree char *ch = NULL, *initial = NULL;
                g_assert_cmpint(sasl_server_new(sasl_mech_to_string(cases[i].mech), offered, s, "test.example", &x), ==, 0);
                g_assert_cmpint(sasl_client_new(cases[i].mech, cases[i].acct, &c), ==, 0);
                initial = sasl_client_initial(c);
                int r = step(x, initial, &ch);
                for (int n = 0; r == SASL_CONTINUE && n < 4; n++) {
                        g_autofree char *resp = NULL;
                        if (cases[i].mech != SASL_LOGIN && cases[i].mech != SASL_PLAIN)
                                g_assert_true(g_str_has_prefix(ch, "P")); /* base64 of "<" */
                        g_assert_cmpint(sasl_client_step(c, ch, &resp), ==, 0);
                        r = step(x, resp, &ch);
                }
                g_assert_cmpint(r, ==, cases[i].result);
        }
        sasl_account_done(&plain);
        sasl_account_done(&md5);
        sasl_account_done(&plain_carol);
        sasl_account_done(&wrong);
}

static void test_client_plan(void) {
        SaslAccount accts[] = {
                { .type = SECRET_OAUTH, .id = (char *) "me", .secret = (char *) "dG9rZW4=" },
                { .type = SECRET_PLAIN, .id = (char *) "me", .secret = (char *) "pw", .secret_len = 2 },
        };
        SaslAttempt a[8];
        size_t n = sasl_client_plan(accts, 2, "PLAIN LOGIN XOAUTH2 CRAM-MD5 CRAM-SHA1", NULL, false, a, 8);
        g_assert_cmpuint(n, ==, 5);
        g_assert_cmpint(a[0].mech, ==, SASL_CRAM_SHA1);
        g_assert_cmpint(a[1].mech, ==, SASL_CRAM_MD5);
        g_assert_cmpint(a[2].mech, ==, SASL_XOAUTH2);
        g_assert_cmpuint(a[2].account, ==, 0);
        g_assert_cmpint(a[3].mech, ==, SASL_PLAIN);
        g_assert_cmpuint(a[3].account, ==, 1);
        g_assert_cmpint(a[4].mech, ==, SASL_LOGIN);

        SaslConfig cfg;
        g_autofree char *error = NULL;
        g_assert_cmpint(sasl_config_parse("m:login,plain;x:plain", &cfg, &error), ==, 0);
        n = sasl_client_plan(accts, 2, "PLAIN LOGIN XOAUTH2 CRAM-MD5", &cfg, false, a, 8);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpint(a[0].mech, ==, SASL_LOGIN);
        sasl_config_done(&cfg);
        g_assert_cmpuint(sasl_client_plan(accts, 2, "GSSAPI", NULL, false, a, 8), ==, 0);
}

static void test_trusted(void) {
        g_autoptr(Secrets) s = load("server none 192.168.1.0/24 lan\n"
                                    "server none 10.*.*.* ten\n"
                                    "server none 127.0.0.1 loop\n"
                                    "server none fd00::/8 ula\n"
                                    "server none 172.16.0.0/12 docker\n");
        g_assert_cmpstr(secrets_server_trusted(s, "192.168.1.77"), ==, "lan");
        g_assert_null(secrets_server_trusted(s, "192.168.2.77"));
        g_assert_cmpstr(secrets_server_trusted(s, "10.9.8.7"), ==, "ten");
        g_assert_cmpstr(secrets_server_trusted(s, "127.0.0.1"), ==, "loop");
        g_assert_cmpstr(secrets_server_trusted(s, "::ffff:127.0.0.1"), ==, "loop");
        g_assert_cmpstr(secrets_server_trusted(s, "fd12:3456::1"), ==, "ula");
        g_assert_cmpstr(secrets_server_trusted(s, "172.20.1.1"), ==, "docker");
        g_assert_null(secrets_server_trusted(s, "::1"));
        g_assert_null(secrets_server_trusted(s, "garbage"));
}

static void test_client_accounts(void) {
        g_autoptr(Secrets) s = load("client plain me pw\nclient oauth me dG9rZW4= gmail\nclient oauth you exec:/bin/true\n"
                                    "client plain:b = = none\n");
        size_t n = 0;
        g_autofree const Secret **dflt = secrets_client_accounts(s, NULL, &n);
        g_assert_cmpuint(n, ==, 2);
        g_assert_cmpstr(dflt[0]->id, ==, "me");
        g_assert_cmpstr(dflt[1]->secret, ==, "exec:/bin/true");
        g_autofree const Secret **gmail = secrets_client_accounts(s, "gmail", &n);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpint(gmail[0]->type, ==, SECRET_OAUTH);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/sasl/md5-vector", test_md5_vector);
        g_test_add_func("/sasl/cram-md5-rfc2195", test_cram_md5_rfc2195);
        g_test_add_func("/sasl/mechanisms", test_mechanisms);
        g_test_add_func("/sasl/server-plain-login", test_server_plain_login);
        g_test_add_func("/sasl/server-external-check", test_server_external_check);
        g_test_add_func("/sasl/cram-round-trip", test_cram_round_trip);
        g_test_add_func("/sasl/client-plan", test_client_plan);
        g_test_add_func("/sasl/trusted", test_trusted);
        g_test_add_func("/sasl/client-accounts", test_client_accounts);
        return g_test_run();
}
