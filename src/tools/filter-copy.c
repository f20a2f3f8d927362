/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-filter-copy: the --filter program E-MailRelay's user guide uses with --pop-by-name,
 * so that each POP user gets a copy of every message. E-MailRelay 2.5 replaced it by the built-in
 * copy:pop filter, which this does: the envelope goes into every sub-directory of the spool
 * (postmaster and dot-directories excepted), the content stays in the spool directory where
 * emailrelay-pop3d finds it, and the original envelope is removed so that the message is not
 * also forwarded (exit 100: "abandon", the client still gets 250).
 *
 *   emailrelay-filter-copy <content-file> [<envelope-file>]   as a --filter
 *   emailrelay-filter-copy -d <spool-dir>                     every ready message, by hand
 */

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "filter.h"
#include "macro.h"
#include "spool.h"

#define PROGRAM "emailrelay-filter-copy"

enum { EXIT_PASS = 0, EXIT_FAIL = 1, EXIT_ABANDON = 100, EXIT_USAGE = 2 };

static int copy_one(const char *content, const char *envelope, bool report) {
        g_autofree char *error = NULL;
        int r = filter_copy_to_subdirs(content, envelope, true, false, false, &error);
        if (r < 0) {
                /* The filter protocol: the reason between << and >> on stdout. */
                if (report)
                        printf("<<copy failed>>\n[%s]\n", error);
                fprintf(stderr, PROGRAM ": %s\n", error);
                return EXIT_FAIL;
        }
        return r > 0 ? EXIT_ABANDON : EXIT_PASS;
}

/* The envelope beside a content file as the server's filter sees it (.new), else ready. */
static char *envelope_for(const char *content) {
        g_autofree char *stem = g_strndup(content, strlen(content) - strlen(".content"));
        char *path = g_strconcat(stem, ".envelope.new", NULL);
        if (g_file_test(path, G_FILE_TEST_EXISTS))
                return path;
        g_free(path);
        return g_strconcat(stem, ".envelope", NULL);
}

static int copy_spool(const char *dir) {
        g_autoptr(Spool) spool = NULL;
        g_autoptr(GPtrArray) ids = NULL;
        int r = spool_open(dir, &spool);
        if (r >= 0)
                r = spool_list(spool, SPOOL_STATE_READY, &ids);
        if (r < 0) {
                fprintf(stderr, PROGRAM ": %s: %s\n", dir, g_strerror(-r));
                return EXIT_FAIL;
        }
        int status = EXIT_PASS;
        for (guint i = 0; i < ids->len; i++) {
                g_autofree char *content = spool_file_path(spool, ids->pdata[i], ".content");
                /* Under the forwarder's lock: a message being forwarded is left alone. */
                g_autoptr(SpoolLock) lock = NULL;
                if (spool_lock(spool, ids->pdata[i], &lock) < 0)
                        continue;
                g_autofree char *busy = spool_file_path(spool, ids->pdata[i], ".envelope.busy");
                if (copy_one(content, busy, false) == EXIT_FAIL)
                        status = EXIT_FAIL;
                else if (g_file_test(busy, G_FILE_TEST_EXISTS))
                        (void) spool_lock_release(lock);
        }
        return status;
}

int main(int argc, char **argv) {
        if (argc == 3 && streq(argv[1], "-d"))
                return copy_spool(argv[2]);
        if ((argc == 2 || argc == 3) && argv[1][0] != '-' && g_str_has_suffix(argv[1], ".content")) {
                g_autofree char *envelope = argc == 3 ? g_strdup(argv[2]) : envelope_for(argv[1]);
                return copy_one(argv[1], envelope, true);
        }
        fprintf(stderr, "usage: " PROGRAM " <content-file> [<envelope-file>]\n"
                        "       " PROGRAM " -d <spool-dir>\n");
        return EXIT_USAGE;
}
