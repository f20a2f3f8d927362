/* SPDX-License-Identifier: GPL-3.0-or-later */
#pragma once

/* Taking over a spool that E-MailRelay left behind.
 *
 * E-MailRelay runs as root and switches only its effective ids, so its spool directory and the
 * messages in it are typically root's (the directory 0755, the files 0600 or 0660). This suite
 * runs as the service user for good, and could neither lock nor read them. Run as root,
 * spool_adopt() gives the directory, its pop-by-name subdirectories and the root-owned regular
 * files in them to that user, keeping their other permission bits and adding the owner's read
 * and write (and search, for directories). It logs one line for each directory it changes and
 * one summary line.
 *
 * It refuses, changing nothing, when the spool directory's path could be changed under it by
 * someone other than root (an ancestor directory that is not root's, or that others may write
 * without the sticky bit), or when the directory belongs to a third user. It leaves alone, and
 * reports as refused: a root-owned file with a link outside the spool (it could be another
 * file's link planted there; links between the spool and its pop-by-name copies are fine), and
 * anything that is not a regular file or a directory. Symbolic links are never followed.
 * Files of other users are left as they are. */

#include <stdbool.h>
#include <sys/types.h>

typedef struct AdoptReport {
        unsigned dirs_changed;          /* the spool directory and its subdirectories */
        unsigned files_changed;
        unsigned files_already;         /* already the user's, with the owner's rw */
        unsigned refused;               /* left alone as unsafe: each logged */
} AdoptReport;

/* dir: the spool directory; user names uid in the log lines. 0 when the directory is the
 * user's now, with ret_report->refused entries left alone (each logged); -EPERM when the
 * directory itself was refused, or another negative errno when it cannot be read or changed. */
int spool_adopt(const char *dir, uid_t uid, gid_t gid, const char *user, AdoptReport *ret_report);

/* Whether the spool directory needs spool_adopt() for uid: it, or any entry in it, is root's. */
bool spool_needs_adoption(const char *dir, uid_t uid);
