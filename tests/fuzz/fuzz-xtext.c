/* SPDX-License-Identifier: GPL-3.0-or-later */
/* xtext (RFC 3461: envelope addresses, AUTH= and secrets files): decoding anything is safe, and
 * what decodes comes back the same through encode and decode. */
#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xtext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *s = g_strndup((const char *) data, size);
        char *decoded = NULL;
        size_t len = 0;
        bool valid = xtext_is_valid(s);

        if (xtext_decode(s, &decoded, &len) >= 0) {
                if (!valid)
                        abort();   /* decodes, so it must be valid */
                char *again = xtext_encode(decoded, len);
                char *back = NULL;
                size_t back_len = 0;
                if (xtext_decode(again, &back, &back_len) < 0 || back_len != len || memcmp(back, decoded, len) != 0)
                        abort();
                g_free(back);
                g_free(again);
        }
        g_free(decoded);
        g_free(s);
        return 0;
}
