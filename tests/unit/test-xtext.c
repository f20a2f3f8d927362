/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for xtext encoding as E-MailRelay writes it into envelopes and secrets files. */

#include <glib.h>
#include <string.h>

#include "xtext.h"

static void test_encode(void) {
        static const struct { const char *in, *out; } cases[] = {
                { "alice", "alice" },
                { "my password", "my+20password" },
                { "a+b=c", "a+2Bb+3Dc" },
                { "#hash", "#hash" },        /* E-MailRelay does not encode '#' */
                { "caf\xc3\xa9", "caf+C3+A9" },
                { "\x7f\x01", "+7F+01" },
                { "", "" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *s = xtext_encode(cases[i].in, strlen(cases[i].in));
                g_assert_cmpstr(s, ==, cases[i].out);
        }
}

static void test_decode(void) {
        g_autofree char *a = NULL, *b = NULL, *c = NULL;
        size_t len = 0;

        g_assert_cmpint(xtext_decode("my+20password", &a, NULL), ==, 0);
        g_assert_cmpstr(a, ==, "my password");
        g_assert_cmpint(xtext_decode("a+2bb+3dc", &b, NULL), ==, 0);  /* lower-case hex accepted */
        g_assert_cmpstr(b, ==, "a+b=c");
        g_assert_cmpint(xtext_decode("x+00y", &c, &len), ==, 0);
        g_assert_cmpuint(len, ==, 3);
        g_assert_cmpint(c[1], ==, 0);

        const char *bad[] = { "a+", "a+2", "a+G0", "sp ace", "eq=uals", "tab\t" };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                char *out = (char *) 0x1;
                g_assert_cmpint(xtext_decode(bad[i], &out, NULL), ==, -EINVAL);
                g_assert_true(out == (char *) 0x1);  /* untouched on failure */
                g_assert_false(xtext_is_valid(bad[i]));
        }
}

static void test_roundtrip(void) {
        char all[256];
        for (int i = 0; i < 256; i++)
                all[i] = (char) i;
        g_autofree char *enc = xtext_encode(all, sizeof all);
        g_autofree char *dec = NULL;
        size_t len = 0;
        g_assert_true(xtext_is_valid(enc));
        g_assert_cmpint(xtext_decode(enc, &dec, &len), ==, 0);
        g_assert_cmpmem(dec, len, all, sizeof all);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/xtext/encode", test_encode);
        g_test_add_func("/xtext/decode", test_decode);
        g_test_add_func("/xtext/roundtrip", test_roundtrip);
        return g_test_run();
}
