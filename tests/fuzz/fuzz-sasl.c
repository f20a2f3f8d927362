/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The SASL server side on whatever a client sends: the first byte picks the mechanism, the rest
 * is the client's lines (split at newlines) fed to each step, against a fixed secrets file with
 * a plain and an md5 account. Wrong answers are -EACCES or -EINVAL, never a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sasl.h"
#include "secrets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Secrets *secrets(void) {
        static Secrets *s;
        if (!s) {
                static const char text[] = "server plain alice secret\n"
                                           "server md5 bob Ov5MZoZsvFZyVD5jgzCz5GyYY/njujdJfF4LGDB5QznL\n";
                char path[64], *error = NULL;
                int fd = memfd_create("secrets", MFD_CLOEXEC);
                if (fd < 0 || write(fd, text, sizeof text - 1) != (ssize_t) (sizeof text - 1))
                        abort();
                snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
                if (secrets_load(path, &s, &error) < 0)
                        abort();
        }
        return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const mechs[] = { "PLAIN", "LOGIN", "CRAM-MD5", "CRAM-SHA1", "CRAM-SHA256" };
        const char *offered = "PLAIN LOGIN CRAM-MD5 CRAM-SHA1 CRAM-SHA256";
        SaslServer *x = NULL;

        if (size == 0)
                return 0;
        const char *mech = mechs[data[0] % (sizeof mechs / sizeof mechs[0])];
        if (sasl_server_new(mech, offered, secrets(), "fuzz.test", &x) < 0)
                return 0;
        char *text = strndup((const char *) data + 1, size - 1);
        char *save = NULL;
        bool first = data[0] & 0x80;   /* with or without an initial response */
        int r = SASL_CONTINUE;
        char *challenge = NULL;
        if (!first) {
                r = sasl_server_step(x, NULL, &challenge);
                free(challenge);
                challenge = NULL;
        }
        for (char *line = strtok_r(text, "\n", &save); line && r == SASL_CONTINUE; line = strtok_r(NULL, "\n", &save)) {
                r = sasl_server_step(x, line, &challenge);
                free(challenge);
                challenge = NULL;
        }
        if (r == SASL_DONE && !sasl_server_id(x))
                abort();
        (void) sasl_server_mech(x);
        free(text);
        sasl_server_free(x);
        return 0;
}
