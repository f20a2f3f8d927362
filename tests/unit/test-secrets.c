/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the secrets file parser: field rules, encodings, errors and re-reading. */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "secrets.h"

typedef struct Fixture {
        char *dir;
        char *path;
} Fixture;

static void setup(Fixture *f, gconstpointer data) {
        f->dir = g_dir_make_tmp("test-secrets-XXXXXX", NULL);
        g_assert_nonnull(f->dir);
        f->path = g_build_filename(f->dir, "secrets", NULL);
}

static void teardown(Fixture *f, gconstpointer data) {
        (void) g_unlink(f->path);
        (void) g_rmdir(f->dir);
        g_free(f->path);
        g_free(f->dir);
}

static void write_file(Fixture *f, const char *text) {
        g_assert_true(g_file_set_contents(f->path, text, -1, NULL));
}

static int load(Fixture *f, const char *text, Secrets **ret, char **ret_error) {
        write_file(f, text);
        return secrets_load(f->path, ret, ret_error);
}

static void test_plain(Fixture *f, gconstpointer data) {
        g_autoptr(Secrets) s = NULL;
        g_autofree char *error = NULL;

        g_assert_cmpint(load(f,
                             "# a comment\n"
                             "\n"
                             "   # indented comment\n"
                             "server plain alice secret+20word\n"
                             "SERVER\tPLAIN:B\tYm9i\tYm9icGFzcw==\n"   /* bob / bobpass */
                             "server login carol carolpw #old-style-comment\n"
                             "server md5 dave AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
                             "server none 192.168.0.0/24 lan\n"
                             "client plain me my+2Bpw smarthost\n"
                             "client plain:b = = other\n",
                             &s, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpuint(secrets_count(s), ==, 7);
        g_assert_null(secrets_warnings(s)[0]);
        g_assert_true(secrets_server_has_plain(s));
        g_assert_cmpstr(secrets_server_plain(s, "alice"), ==, "secret word");
        g_assert_cmpstr(secrets_server_plain(s, "bob"), ==, "bobpass");
        g_assert_cmpstr(secrets_server_plain(s, "carol"), ==, "carolpw");
        g_assert_null(secrets_server_plain(s, "dave"));   /* md5: no password */
        g_assert_null(secrets_server_plain(s, "me"));     /* a client line */
        g_assert_null(secrets_server_plain(s, "nobody"));
        const Secret *x = secrets_get(s, 2);
        g_assert_null(x->selector);                       /* "# old-style comment" */
        x = secrets_get(s, 3);
        g_assert_cmpint(x->type, ==, SECRET_MD5);
        x = secrets_get(s, 4);
        g_assert_cmpint(x->type, ==, SECRET_NONE);
        g_assert_cmpstr(x->id, ==, "192.168.0.0/24");
        g_assert_cmpstr(x->secret, ==, "lan");
        x = secrets_get(s, 5);
        g_assert_false(x->server);
        g_assert_cmpstr(x->secret, ==, "my+pw");
        g_assert_cmpstr(x->selector, ==, "smarthost");
}

static void test_aliases(Fixture *f, gconstpointer data) {
        g_autoptr(Secrets) s = NULL;
        g_autofree char *error = NULL;

        g_assert_cmpint(load(f, "server cram-md5 a QUJD\nserver APOP b QUJD\nserver md5 c QUJD\n", &s, &error), ==, 0);
        g_assert_false(secrets_server_has_plain(s));
        for (size_t i = 0; i < 3; i++)
                g_assert_cmpint(secrets_get(s, i)->type, ==, SECRET_MD5);
}

static void test_warnings(Fixture *f, gconstpointer data) {
        g_autoptr(Secrets) s = NULL;
        g_autofree char *error = NULL;

        g_assert_cmpint(load(f, "server plain a b c d\nserver plain x y\n", &s, &error), ==, 0);
        g_autofree char *expect = g_strdup_printf("%s:1: too many fields", f->path);
        g_assert_cmpstr(secrets_warnings(s)[0], ==, expect);
        g_assert_null(secrets_warnings(s)[1]);
        g_assert_cmpstr(secrets_server_plain(s, "x"), ==, "y");
}

static void test_errors(Fixture *f, gconstpointer data) {
        static const struct { const char *text, *error; } cases[] = {
                { "# ok\nserver plain alice\n", "2: too few fields" },
                { "server plain alice pw\nserver plain alice other\n", "2: duplicate key" },
                { "server plain alice pw\nserver login alice other\n", "2: duplicate key" },
                { "server plain:b YWxpY2U= cHc=\nserver plain alice pw\n", "2: duplicate key" },
                { "server frob alice pw\n", "1: unknown type \"frob\"" },
                { "peer plain alice pw\n", "1: invalid first field: expecting \"client\" or \"server\"" },
                { "server plain al+ZZice pw\n", "1: invalid xtext encoding" },
                { "server plain:b !!!! cHc=\n", "1: invalid base64 encoding" },
                { "server md5 alice not-base64\n", "1: invalid base64 encoding" },
                { "client none 127.0.0.1 x\n", "1: type \"none\" is not allowed on a client line" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                Secrets *s = NULL;
                g_autofree char *error = NULL;
                g_autofree char *expect = g_strdup_printf("%s:%s", f->path, cases[i].error);
                g_assert_cmpint(load(f, cases[i].text, &s, &error), ==, -EINVAL);
                g_assert_null(s);
                g_assert_cmpstr(error, ==, expect);
        }
        /* A different side or type class is a different key. */
        g_autoptr(Secrets) ok = NULL;
        g_autofree char *error = NULL;
        g_assert_cmpint(load(f, "server plain alice pw\nclient plain alice pw\nserver md5 alice QUJD\n", &ok, &error), ==, 0);
}

static void test_missing(Fixture *f, gconstpointer data) {
        Secrets *s = NULL;
        g_autofree char *error = NULL;
        g_autofree char *expect = NULL;

        g_assert_cmpint(secrets_load(f->path, &s, &error), ==, -ENOENT);
        expect = g_strdup_printf("%s: %s", f->path, g_strerror(ENOENT));
        g_assert_cmpstr(error, ==, expect);
}

static void test_reload(Fixture *f, gconstpointer data) {
        g_autoptr(Secrets) s = NULL;
        g_autofree char *error = NULL;
        struct timespec times[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };

        g_assert_cmpint(load(f, "server plain alice one\n", &s, &error), ==, 0);
        g_assert_cmpint(secrets_reload_if_changed(s, &error), ==, 0);
        write_file(f, "server plain alice two\n");
        g_assert_cmpint(utimensat(AT_FDCWD, f->path, times, 0), ==, 0);
        g_assert_cmpint(secrets_reload_if_changed(s, &error), ==, 1);
        g_assert_cmpstr(secrets_server_plain(s, "alice"), ==, "two");
        g_assert_cmpint(secrets_reload_if_changed(s, &error), ==, 0);

        /* A broken file keeps the old secrets in force. */
        write_file(f, "server plain alice\n");
        times[0].tv_sec = times[1].tv_sec = 1000000100;
        g_assert_cmpint(utimensat(AT_FDCWD, f->path, times, 0), ==, 0);
        g_assert_cmpint(secrets_reload_if_changed(s, &error), ==, -EINVAL);
        g_autofree char *expect = g_strdup_printf("%s:1: too few fields", f->path);
        g_assert_cmpstr(error, ==, expect);
        g_assert_cmpstr(secrets_server_plain(s, "alice"), ==, "two");
}

static void test_equal(void) {
        g_assert_true(secrets_equal("abc", 3, "abc", 3));
        g_assert_false(secrets_equal("abc", 3, "abd", 3));
        g_assert_false(secrets_equal("abc", 3, "ab", 2));
        g_assert_true(secrets_equal("", 0, "", 0));
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/secrets/plain", Fixture, NULL, setup, test_plain, teardown);
        g_test_add("/secrets/aliases", Fixture, NULL, setup, test_aliases, teardown);
        g_test_add("/secrets/warnings", Fixture, NULL, setup, test_warnings, teardown);
        g_test_add("/secrets/errors", Fixture, NULL, setup, test_errors, teardown);
        g_test_add("/secrets/missing", Fixture, NULL, setup, test_missing, teardown);
        g_test_add("/secrets/reload", Fixture, NULL, setup, test_reload, teardown);
        g_test_add_func("/secrets/equal", test_equal);
        return g_test_run();
}
