/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The secrets file parser on anything (an administrator's typo must give an error naming the
 * line, never a crash), and the trusted-address look-up on what it accepted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "secrets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static int fd = -1;
        char path[64];
        Secrets *s = NULL;
        char *error = NULL;

        if (fd < 0 && (fd = memfd_create("secrets", MFD_CLOEXEC)) < 0)
                abort();
        if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t) size)
                abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (secrets_load(path, &s, &error) >= 0) {
                (void) secrets_count(s);
                (void) secrets_server_has_plain(s);
                (void) secrets_server_plain(s, "alice");
                for (size_t i = 0; i < secrets_count(s); i++)
                        (void) secrets_get(s, i);
                secrets_free(s);
        }
        free(error);
        return 0;
}
