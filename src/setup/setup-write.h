/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Writing a set of configuration files all or nothing: every new file is written to a
 * temporary beside its target and synced, the old ones are kept as hard links, then the
 * temporaries are renamed into place; if one rename fails, every file already replaced gets its
 * old content back (or is removed if it did not exist), so the configuration is never half new. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

typedef struct SetupFile {
        char *path;       /* absolute, without the root */
        char *content;    /* NULL: remove the file */
        mode_t mode;      /* of the file */
        mode_t dir_mode;  /* of its directory, if that has to be created */
} SetupFile;

/* Apply files[0..n) under root ("" or "/" for the real root). Returns 0, or a negative errno
 * with *ret_error naming the file and the problem; then nothing has changed (directories that
 * had to be created may stay, empty). */
int setup_write_all(const char *root, const SetupFile *files, size_t n, char **ret_error);

/* mkdir -p, each missing component with mode. */
int setup_mkdir_p(const char *path, mode_t mode);
