/* SPDX-License-Identifier: GPL-3.0-or-later */
/* spamd's reply as the spam: filter reads it (CHECK and PROCESS, whole or cut short): any bytes
 * are safe, a complete reply's message lies within what was read, and an incomplete read that
 * asks for more never claims to be whole. The first byte picks the mode. */
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        bool eof = data[0] & 1, process = data[0] & 2;
        /* A copy of exactly the reply's bytes, so that ASan sees any read past them. */
        size_t len = size - 1, offset = 0, body = 0;
        char *in = g_malloc(len ? len : 1);
        memcpy(in, data + 1, len);
        char *spam = NULL, *error = NULL;

        int r = filter_spamd_reply_parse(in, len, eof, process, &spam, &offset, &body, &error);
        if (r < 0 && !error)
                abort();
        if (r == 0 && eof)
                abort();      /* at the end of the stream the answer must be yes or no */
        if (r == 1) {
                if (offset > len || body > len - offset)
                        abort();
                if (!process && !spam)
                        abort();
                for (char *p = spam; p && *p; p++)
                        if (((unsigned char) *p < 0x20 && *p != '\t') || *p == 0x7f)
                                abort();   /* sanitized before it reaches a header or a log */
        }
        g_free(spam);
        g_free(error);
        g_free(in);
        return 0;
}
