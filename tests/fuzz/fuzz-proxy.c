/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The PROXY protocol header parser: any bytes are safe; a complete header's length is within
 * the input and the limit, and every prefix of it is a correct beginning. */
#include <stdint.h>
#include <stdlib.h>

#include "proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        ProxyHeader h = {};
        const char *error = NULL;
        int r = proxy_header_parse(data, size, &h, &error);

        if (r < 0 && !error)
                abort();
        if (r > 0) {
                if ((size_t) r > size || r > PROXY_HEADER_MAX)
                        abort();
                if (!h.local && h.source_len == 0)
                        abort();
                for (int i = 0; i < r; i++) {
                        ProxyHeader p = {};
                        if (proxy_header_parse(data, (size_t) i, &p, &error) != 0)
                                abort();
                }
        }
        return 0;
}
