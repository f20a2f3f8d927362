/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The envelope reader on anything: a spool is a shared directory, and a forwarder, POP server or
 * queue tool must survive whatever a crash, a script or another program left in it. */
#include <stdint.h>
#include <stdlib.h>

#include "envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Envelope e;
        char *error = NULL;
        long long next;

        envelope_init(&e);
        if (envelope_parse((const char *) data, size, &e, &error) >= 0) {
                (void) envelope_count_reasons(&e);
                (void) envelope_next_retry(&e, &next);
                (void) envelope_trailer_get(&e, "X-MailRelay-Reason");
                (void) envelope_body_to_string(e.body);
                envelope_add_retry(&e, "fuzz", 451, 1);
        }
        free(error);
        envelope_done(&e);
        return 0;
}
