/* SPDX-License-Identifier: GPL-3.0-or-later */
/* RFC 3461 xtext encoding and decoding, as E-MailRelay writes it into envelopes and secrets. */

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "macro.h"
#include "xtext.h"

static bool xtext_plain(unsigned char c) {
        return c >= '!' && c <= '~' && c != '+' && c != '=';
}

char *xtext_encode(const char *s, size_t len) {
        static const char hex[] = "0123456789ABCDEF";
        GString *out = g_string_sized_new(len + 8);

        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                if (xtext_plain(c))
                        g_string_append_c(out, (char) c);
                else {
                        g_string_append_c(out, '+');
                        g_string_append_c(out, hex[c >> 4]);
                        g_string_append_c(out, hex[c & 0xf]);
                }
        }
        return g_string_free(out, false);
}

int xtext_decode(const char *s, char **ret, size_t *ret_len) {
        GString *out = g_string_sized_new(strlen(s));

        for (const char *p = s; *p; p++) {
                unsigned char c = (unsigned char) *p;
                if (c == '+') {
                        int hi = g_ascii_xdigit_value(p[1]);
                        int lo = hi >= 0 ? g_ascii_xdigit_value(p[2]) : -1;
                        if (hi < 0 || lo < 0) {
                                g_string_free(out, true);
                                return -EINVAL;
                        }
                        g_string_append_c(out, (char) (hi << 4 | lo));
                        p += 2;
                } else if (c >= '!' && c <= '~' && c != '=')
                        g_string_append_c(out, (char) c);
                else {
                        g_string_free(out, true);
                        return -EINVAL;
                }
        }
        if (ret_len)
                *ret_len = out->len;
        *ret = g_string_free(out, false);
        return 0;
}

bool xtext_is_valid(const char *s) {
        g_autofree char *decoded = NULL;
        return xtext_decode(s, &decoded, NULL) == 0;
}
