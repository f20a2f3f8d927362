/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The option parsers on anything: the config file (/etc/emailrelay.conf, any line) and the
 * command line (the input split at NUL bytes into argv), for every program's option mask. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const unsigned programs[] = { PROG_SMTPD, PROG_POP3D, PROG_FORWARD, PROG_FRONTEND, PROG_QUEUE };
        if (size == 0)
                return 0;
        unsigned program = programs[data[0] % (sizeof programs / sizeof programs[0])];
        char *text = malloc(size);
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0';

        Options o;
        char *error = NULL;
        options_init(&o, emailrelay_options, program);
        if (options_parse_config_string(&o, text, "fuzz", &error) >= 0) {
                unsigned v;
                (void) options_get(&o, "spool-dir");
                (void) options_get_all(&o, "filter", NULL);
                free(error);
                error = NULL;
                (void) options_get_uint(&o, "port", 0, 65535, &v, &error);
        }
        free(error);
        error = NULL;
        options_done(&o);

        /* argv: the same bytes split at NUL (and a program name in front). */
        char *argv[64];
        int argc = 0;
        argv[argc++] = (char *) "fuzz";
        for (size_t p = 0; p < size - 1 && argc < 63; p += strlen(text + p) + 1)
                argv[argc++] = text + p;
        argv[argc] = NULL;
        options_init(&o, emailrelay_options, program);
        (void) options_parse_argv(&o, argc, argv, &error);
        free(error);
        options_done(&o);
        free(text);
        return 0;
}
