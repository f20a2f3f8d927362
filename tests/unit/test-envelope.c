/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the envelope codec: the reference's example byte for byte, older formats, folding,
 * reason lines, and precise errors for malformed files. */

#include <glib.h>
#include <string.h>

#include "envelope.h"

#define CRLF "\r\n"

/* Written by E-MailRelay 2.6.1 (reference section 2.3), CRLF line endings. */
static const char reference_example[] =
        "X-MailRelay-Format: #2821.8" CRLF
        "X-MailRelay-Content: unknown" CRLF
        "X-MailRelay-From: alice@example.com" CRLF
        "X-MailRelay-ToCount: 2" CRLF
        "X-MailRelay-To-Remote: bob@example.org" CRLF
        "X-MailRelay-To-Remote: carol@example.net" CRLF
        "X-MailRelay-Authentication: " CRLF
        "X-MailRelay-Client: 127.0.0.1" CRLF
        "X-MailRelay-ClientCertificate: " CRLF
        "X-MailRelay-MailFromAuthIn: " CRLF
        "X-MailRelay-MailFromAuthOut: " CRLF
        "X-MailRelay-ForwardTo: " CRLF
        "X-MailRelay-ForwardToAddress: " CRLF
        "X-MailRelay-ClientAccountSelector: " CRLF
        "X-MailRelay-Utf8MailboxNames: 0" CRLF
        "X-MailRelay-End: 1" CRLF;

static void parse_ok(const char *text, Envelope *e) {
        g_autofree char *error = NULL;
        int r = envelope_parse(text, strlen(text), e, &error);
        if (r < 0)
                g_error("unexpected parse failure: %s", error);
}

static void test_reference_roundtrip(void) {
        g_auto(Envelope) e = {};
        parse_ok(reference_example, &e);

        g_assert_cmpint(e.format, ==, 8);
        g_assert_cmpint(e.body, ==, ENVELOPE_BODY_UNKNOWN);
        g_assert_cmpstr(e.from, ==, "alice@example.com");
        g_assert_cmpuint(e.to_local->len, ==, 0);
        g_assert_cmpuint(e.to_remote->len, ==, 2);
        g_assert_cmpstr(e.to_remote->pdata[0], ==, "bob@example.org");
        g_assert_cmpstr(e.to_remote->pdata[1], ==, "carol@example.net");
        g_assert_cmpstr(e.client, ==, "127.0.0.1");
        g_assert_cmpstr(e.authentication, ==, "");
        g_assert_false(e.utf8_mailbox_names);
        g_assert_false(e.lf_only);
        g_assert_cmpuint(e.trailer->len, ==, 0);

        g_autoptr(GString) out = envelope_to_string(&e);
        g_assert_cmpmem(out->str, out->len, reference_example, strlen(reference_example));
}

static void test_build_matches_reference(void) {
        /* What smtpd and submit build from scratch must equal what E-MailRelay wrote. */
        g_auto(Envelope) e = {};
        envelope_init(&e);
        e.from = g_strdup("alice@example.com");
        g_ptr_array_add(e.to_remote, g_strdup("bob@example.org"));
        g_ptr_array_add(e.to_remote, g_strdup("carol@example.net"));
        e.client = g_strdup("127.0.0.1");
        g_autoptr(GString) out = envelope_to_string(&e);
        g_assert_cmpmem(out->str, out->len, reference_example, strlen(reference_example));
}

static void test_lf_and_colon_only(void) {
        /* The reader accepts LF files and "Key:" without the space, and remembers LF. */
        GString *s = g_string_new(NULL);
        for (const char *p = reference_example; *p; p++)
                if (*p != '\r')
                        g_string_append_c(s, *p);
        g_autofree char *text = g_string_free(s, false);
        char *sp = strstr(text, "Authentication: \n");
        memmove(sp + strlen("Authentication:"), sp + strlen("Authentication: "), strlen(sp + strlen("Authentication: ")) + 1);

        g_auto(Envelope) e = {};
        parse_ok(text, &e);
        g_assert_true(e.lf_only);
        g_assert_cmpstr(e.authentication, ==, "");
        envelope_add_reason(&e, "4.3.0 try later", 451);
        g_autoptr(GString) out = envelope_to_string(&e);
        g_assert_null(strchr(out->str, '\r'));
        g_assert_true(g_str_has_suffix(out->str, "X-MailRelay-End: 1\nX-MailRelay-Reason: 4.3.0 try later\nX-MailRelay-ReasonCode: 451\n"));
}

static void test_full_fields_and_folding(void) {
        g_auto(Envelope) e = {};
        envelope_init(&e);
        e.body = ENVELOPE_BODY_8BIT;
        e.from = g_strdup("");
        g_ptr_array_add(e.to_local, g_strdup("postmaster"));
        g_ptr_array_add(e.to_remote, g_strdup("bob@xn--bcher-kva.example"));
        e.authentication = g_strdup("alice+40home");
        e.client = g_strdup("192.0.2.7");
        e.client_certificate = g_strdup("-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----");
        e.mail_from_auth_in = g_strdup("+");
        e.mail_from_auth_out = g_strdup("<>");
        e.forward_to = g_strdup("example.com");
        e.forward_to_address = g_strdup("192.0.2.25:25");
        e.client_account_selector = g_strdup("work");
        e.utf8_mailbox_names = true;

        g_autoptr(GString) out = envelope_to_string(&e);
        g_assert_nonnull(strstr(out->str, "X-MailRelay-Content: 8bit\r\n"));
        g_assert_nonnull(strstr(out->str, "X-MailRelay-ToCount: 2\r\nX-MailRelay-To-Local: postmaster\r\nX-MailRelay-To-Remote: bob@xn--bcher-kva.example\r\n"));
        g_assert_nonnull(strstr(out->str, "X-MailRelay-ClientCertificate: -----BEGIN CERTIFICATE-----\r\n MIIBdummy\r\n -----END CERTIFICATE-----\r\n"));

        g_auto(Envelope) back = {};
        parse_ok(out->str, &back);
        g_assert_cmpstr(back.client_certificate, ==, e.client_certificate);
        g_assert_cmpstr(back.to_local->pdata[0], ==, "postmaster");
        g_assert_cmpstr(back.mail_from_auth_out, ==, "<>");
        g_assert_cmpstr(back.client_account_selector, ==, "work");
        g_assert_true(back.utf8_mailbox_names);
        g_autoptr(GString) again = envelope_to_string(&back);
        g_assert_cmpstr(again->str, ==, out->str);
}

static void test_reasons(void) {
        g_auto(Envelope) e = {};
        parse_ok(reference_example, &e);
        envelope_add_reason(&e, "4.3.0 try later", 451);
        envelope_add_reason(&e, "connection\r\nreset\x01 \xc3\xa9", 0);
        g_assert_cmpuint(envelope_count_reasons(&e), ==, 2);

        g_autoptr(GString) out = envelope_to_string(&e);
        g_assert_true(g_str_has_suffix(out->str,
                "X-MailRelay-End: 1\r\n"
                "X-MailRelay-Reason: 4.3.0 try later\r\n"
                "X-MailRelay-ReasonCode: 451\r\n"
                "X-MailRelay-Reason: connection  reset  ??\r\n"
                "X-MailRelay-ReasonCode:\r\n"));

        /* Reason lines survive a read: the trailer is kept verbatim. */
        g_auto(Envelope) back = {};
        parse_ok(out->str, &back);
        g_assert_cmpuint(envelope_count_reasons(&back), ==, 2);
        g_assert_cmpstr(envelope_trailer_get(&back, "X-MailRelay-Reason"), ==, "connection  reset  ??");
        g_assert_cmpstr(envelope_trailer_get(&back, "X-MailRelay-ReasonCode"), ==, "");
        g_autoptr(GString) again = envelope_to_string(&back);
        g_assert_cmpstr(again->str, ==, out->str);
}

static void test_older_formats(void) {
        static const char v7[] =
                "X-MailRelay-Format: #2821.7\r\nX-MailRelay-Content: 8bit\r\nX-MailRelay-From: a@b\r\n"
                "X-MailRelay-ToCount: 1\r\nX-MailRelay-To-Remote: c@d\r\nX-MailRelay-Authentication: \r\n"
                "X-MailRelay-Client: 10.0.0.1\r\nX-MailRelay-ClientCertificate: \r\nX-MailRelay-MailFromAuthIn: \r\n"
                "X-MailRelay-MailFromAuthOut: \r\nX-MailRelay-ForwardTo: \r\nX-MailRelay-ForwardToAddress: \r\n"
                "X-MailRelay-Utf8MailboxNames: 1\r\nX-MailRelay-End: 1\r\n";
        static const char v6[] =
                "X-MailRelay-Format: #2821.6\r\nX-MailRelay-Content: 7bit\r\nX-MailRelay-From: a@b\r\n"
                "X-MailRelay-ToCount: 1\r\nX-MailRelay-To-Remote: c@d\r\nX-MailRelay-Authentication: \r\n"
                "X-MailRelay-Client: 10.0.0.1\r\nX-MailRelay-ClientCertificate: \r\nX-MailRelay-MailFromAuthIn: \r\n"
                "X-MailRelay-MailFromAuthOut: \r\nX-MailRelay-ForwardTo: x.example\r\nX-MailRelay-ForwardToAddress: \r\n"
                "X-MailRelay-End: 1\r\n";
        static const char v5[] =
                "X-MailRelay-Format: #2821.5\r\nX-MailRelay-Content: 8bit\r\nX-MailRelay-From: a@b\r\n"
                "X-MailRelay-ToCount: 2\r\nX-MailRelay-To-Local: me\r\nX-MailRelay-To-Remote: c@d\r\n"
                "X-MailRelay-Authentication: bob\r\nX-MailRelay-Client: 10.0.0.1\r\nX-MailRelay-ClientCertificate: \r\n"
                "X-MailRelay-MailFromAuthIn: \r\nX-MailRelay-MailFromAuthOut: \r\nX-MailRelay-End: 1\r\n"
                "X-MailRelay-Reason: 5.1.1 no such user\r\nX-MailRelay-ReasonCode: 550\r\n";
        static const char v4[] =
                "X-MailRelay-Format: #2821.4\nX-MailRelay-Content: 8bit\nX-MailRelay-From: a@b\n"
                "X-MailRelay-ToCount: 1\nX-MailRelay-To-Remote: c@d\nX-MailRelay-Authentication: \n"
                "X-MailRelay-Client: 10.0.0.1\nX-MailRelay-ClientName: host.example\n"
                "X-MailRelay-ClientCertificate: \nX-MailRelay-End: 1\n";
        static const char v3[] =
                "X-MailRelay-Format: #2821.3\r\nX-MailRelay-Content: 8bit\r\nX-MailRelay-From: a@b\r\n"
                "X-MailRelay-ToCount: 1\r\nX-MailRelay-To-Remote: c@d\r\nX-MailRelay-Authentication: \r\n"
                "X-MailRelay-Client: 10.0.0.1\r\nX-MailRelay-End: 1\r\n";

        { g_auto(Envelope) e = {}; parse_ok(v7, &e); g_assert_cmpint(e.format, ==, 7); g_assert_true(e.utf8_mailbox_names); g_assert_cmpint(e.body, ==, ENVELOPE_BODY_8BIT); }
        { g_auto(Envelope) e = {}; parse_ok(v6, &e); g_assert_cmpint(e.format, ==, 6); g_assert_cmpstr(e.forward_to, ==, "x.example"); g_assert_cmpint(e.body, ==, ENVELOPE_BODY_7BIT); }
        {
                g_auto(Envelope) e = {};
                parse_ok(v5, &e);
                g_assert_cmpint(e.format, ==, 5);
                g_assert_cmpstr(e.to_local->pdata[0], ==, "me");
                g_assert_cmpstr(e.authentication, ==, "bob");
                g_assert_cmpuint(envelope_count_reasons(&e), ==, 1);
                /* Rewriting an old envelope upgrades it to #2821.8 and keeps the reasons. */
                g_autoptr(GString) out = envelope_to_string(&e);
                g_assert_true(g_str_has_prefix(out->str, "X-MailRelay-Format: #2821.8\r\n"));
                g_assert_true(g_str_has_suffix(out->str, "X-MailRelay-End: 1\r\nX-MailRelay-Reason: 5.1.1 no such user\r\nX-MailRelay-ReasonCode: 550\r\n"));
        }
        { g_auto(Envelope) e = {}; parse_ok(v4, &e); g_assert_cmpint(e.format, ==, 4); g_assert_cmpstr(e.client_name, ==, "host.example"); g_assert_true(e.lf_only); }
        { g_auto(Envelope) e = {}; parse_ok(v3, &e); g_assert_cmpint(e.format, ==, 3); g_assert_cmpstr(e.client, ==, "10.0.0.1"); }
}

static void test_retry_lines(void) {
        g_auto(Envelope) e = {};
        long long next = -1;

        parse_ok(reference_example, &e);
        g_assert_cmpint(envelope_next_retry(&e, &next), ==, -ENOENT);
        g_assert_cmpint(next, ==, -1);  /* untouched */

        envelope_add_retry(&e, "4.3.0 try later", 451, 1795460000);
        envelope_add_retry(&e, "connection\r\nrefused", 0, 1795461800);
        g_assert_cmpuint(envelope_count_reasons(&e), ==, 2);
        g_assert_cmpint(envelope_next_retry(&e, &next), ==, 0);
        g_assert_cmpint(next, ==, 1795461800);

        /* Same reason formatting as envelope_add_reason(), one NextRetry line per attempt. */
        g_autoptr(GString) out = envelope_to_string(&e);
        g_assert_true(g_str_has_suffix(out->str,
                "X-MailRelay-End: 1\r\n"
                "X-MailRelay-Reason: 4.3.0 try later\r\n"
                "X-MailRelay-ReasonCode: 451\r\n"
                "X-MailRelay-NextRetry: 1795460000\r\n"
                "X-MailRelay-Reason: connection  refused\r\n"
                "X-MailRelay-ReasonCode:\r\n"
                "X-MailRelay-NextRetry: 1795461800\r\n"));

        /* The appendable form is byte for byte what a rewrite would produce. */
        g_autoptr(GString) crlf = envelope_retry_lines("4.3.0 try later", 451, 1795460000, false);
        g_assert_cmpstr(crlf->str, ==,
                "X-MailRelay-Reason: 4.3.0 try later\r\nX-MailRelay-ReasonCode: 451\r\n"
                "X-MailRelay-NextRetry: 1795460000\r\n");
        g_autoptr(GString) lf = envelope_retry_lines("4.3.0 try later", 451, 1795460000, true);
        g_assert_cmpstr(lf->str, ==,
                "X-MailRelay-Reason: 4.3.0 try later\nX-MailRelay-ReasonCode: 451\n"
                "X-MailRelay-NextRetry: 1795460000\n");
        /* Made due by hand: no reason, so the attempt count does not change. */
        g_autoptr(GString) due = envelope_retry_lines(NULL, 0, 0, false);
        g_assert_cmpstr(due->str, ==, "X-MailRelay-NextRetry: 0\r\n");

        /* Appended to an E-MailRelay file, the lines read back; the last NextRetry wins. */
        g_autofree char *appended = g_strconcat(reference_example, crlf->str, due->str, NULL);
        g_auto(Envelope) back = {};
        parse_ok(appended, &back);
        g_assert_cmpuint(envelope_count_reasons(&back), ==, 1);
        g_assert_cmpint(envelope_next_retry(&back, &next), ==, 0);
        g_assert_cmpint(next, ==, 0);
        g_assert_cmpstr(envelope_trailer_get(&back, "X-MailRelay-ReasonCode"), ==, "451");
}

static void test_next_retry_malformed(void) {
        static const char *const bad[] = {
                "X-MailRelay-NextRetry:", "X-MailRelay-NextRetry: soon", "X-MailRelay-NextRetry: -5",
                "X-MailRelay-NextRetry: +5", "X-MailRelay-NextRetry: 12x", "X-MailRelay-NextRetry: 12 ",
                "X-MailRelay-NextRetry: 0x10", "X-MailRelay-NextRetry: 99999999999999999999",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_auto(Envelope) e = {};
                long long next = -1;
                parse_ok(reference_example, &e);
                envelope_add_retry(&e, "x", 451, 100);
                g_ptr_array_add(e.trailer, g_strdup(bad[i]));
                g_assert_cmpint(envelope_next_retry(&e, &next), ==, -EINVAL);
                g_assert_cmpint(next, ==, -1);
        }
        /* A key that merely starts the same is another line. */
        g_auto(Envelope) e = {};
        long long next = -1;
        parse_ok(reference_example, &e);
        g_ptr_array_add(e.trailer, g_strdup("X-MailRelay-NextRetryCount: 3"));
        g_assert_cmpint(envelope_next_retry(&e, &next), ==, -ENOENT);
}

/* Replace the first occurrence of from with to in the reference example. */
static char *mutate(const char *from, const char *to) {
        const char *p = strstr(reference_example, from);
        g_assert_nonnull(p);
        return g_strdup_printf("%.*s%s%s", (int) (p - reference_example), reference_example, to, p + strlen(from));
}

static void expect_error(const char *text, size_t len, const char *error) {
        Envelope e = { .format = 42 };
        g_autofree char *msg = NULL;
        g_assert_cmpint(envelope_parse(text, len, &e, &msg), ==, -EBADMSG);
        g_assert_cmpint(e.format, ==, 42);  /* untouched */
        if (!g_str_equal(msg, error))
                g_error("for input:\n%s\nexpected error \"%s\", got \"%s\"", text, error, msg);
}

static void test_malformed(void) {
        static const struct { const char *from, *to, *error; } cases[] = {
                { "#2821.8", "#2821.9", "line 1: unsupported envelope format \"#2821.9\"" },
                { "#2821.8", "garbage", "line 1: unsupported envelope format \"garbage\"" },
                { "X-MailRelay-Format", "X-MailRelay-Formit", "line 1: expected X-MailRelay-Format" },
                { "ToCount: 2", "ToCount: 3", "line 7: 2 recipients where X-MailRelay-ToCount says 3" },
                { "ToCount: 2", "ToCount: 1", "line 6: more recipients than X-MailRelay-ToCount (1)" },
                { "ToCount: 2", "ToCount: -1", "line 4: invalid X-MailRelay-ToCount \"-1\"" },
                { "ToCount: 2", "ToCount: 99999999999", "line 4: invalid X-MailRelay-ToCount \"99999999999\"" },
                { "X-MailRelay-Client: 127.0.0.1", "X-MailRelay-Client: 127.0.0.1\r\nX-MailRelay-Client: 10.1.1.1", "line 9: duplicate X-MailRelay-Client" },
                { "X-MailRelay-Utf8MailboxNames: 0", "X-MailRelay-Utf8MailboxNames: yes", "line 15: invalid X-MailRelay-Utf8MailboxNames \"yes\"" },
                { "X-MailRelay-ForwardTo: \r\n", "", "line 15: missing X-MailRelay-ForwardTo" },
                { "X-MailRelay-Client: ", "X-MailRelay-Cleint: ", "line 8: unexpected line \"X-MailRelay-Cleint: 127.0.0.1\"" },
                { "X-MailRelay-Client: ", "Client: ", "line 8: unexpected line \"Client: 127.0.0.1\"" },
                { "X-MailRelay-End: 1\r\n", "", "line 16: truncated envelope (no X-MailRelay-End line)" },
                { "X-MailRelay-End: 1\r\n", "X-MailRelay-End: 1", "line 16: truncated envelope (End line not terminated)" },
                { "X-MailRelay-Authentication: \r\n", "X-MailRelay-Authentication: \r\nX-MailRelay-To-Remote: late@x\r\n", "line 8: X-MailRelay-To-Remote outside the recipient list" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *text = mutate(cases[i].from, cases[i].to);
                expect_error(text, strlen(text), cases[i].error);
        }

        /* A field a format did not have. */
        g_autofree char *v5 = mutate("#2821.8", "#2821.5");
        expect_error(v5, strlen(v5), "line 12: field X-MailRelay-ForwardTo not allowed in format #2821.5");

        /* Torn at every byte: never a crash, always an error naming a line (or a valid prefix
         * ending exactly after the End line). */
        size_t len = strlen(reference_example);
        for (size_t n = 0; n < len; n++) {
                Envelope e = {};
                g_autofree char *msg = NULL;
                g_assert_cmpint(envelope_parse(reference_example, n, &e, &msg), ==, -EBADMSG);
                g_assert_true(g_str_has_prefix(msg, "line "));
        }

        /* NUL bytes and empty input. */
        static const char nul[] = "X-MailRelay-Format: #2821.8\r\nX-Mail\0Relay\r\n";
        expect_error(nul, sizeof nul - 1, "line 2: NUL byte in envelope");
        expect_error("", 0, "line 1: empty envelope");
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/envelope/reference-roundtrip", test_reference_roundtrip);
        g_test_add_func("/envelope/build-matches-reference", test_build_matches_reference);
        g_test_add_func("/envelope/lf-and-colon-only", test_lf_and_colon_only);
        g_test_add_func("/envelope/full-fields-and-folding", test_full_fields_and_folding);
        g_test_add_func("/envelope/reasons", test_reasons);
        g_test_add_func("/envelope/older-formats", test_older_formats);
        g_test_add_func("/envelope/malformed", test_malformed);
        g_test_add_func("/envelope/retry-lines", test_retry_lines);
        g_test_add_func("/envelope/next-retry-malformed", test_next_retry_malformed);
        return g_test_run();
}
