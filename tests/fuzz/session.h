/* SPDX-License-Identifier: GPL-3.0-or-later */
/* What the whole-session fuzz targets (fuzz-smtp, fuzz-pop3) share: quiet logging and blocked
 * signals, a work directory on tmpfs, the client's bytes written into one end of a socket pair
 * whose other end becomes an Accept=yes listener, a loop that must finish by itself, and a
 * spool check. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "listen.h"

/* Once per process: logging off, SIGTERM/SIGINT/SIGCHLD blocked (the acceptor and children
 * take them through the loop), SIGPIPE ignored, and a fresh directory under /dev/shm named
 * after prefix (tmpfs: the committer's fsyncs cost nothing). Returns the directory. */
const char *fuzz_session_setup(const char *prefix);

/* A socket pair: the server end as the only, connected listener in set (named name), the
 * client end holding data (as much as its buffer takes) and shut for writing. Returns the
 * client end, which fuzz_session_run drains. */
int fuzz_session_connect(ListenerSet *set, const char *name, const uint8_t *data, size_t size);

/* Run the loop until the acceptor exits it: the session must end by itself once its client
 * has gone; ten idle seconds abort (a hang). Closes client_fd. */
void fuzz_session_run(sd_event *event, int client_fd);

/* Count the messages in dir and remove every file: aborts on a .new or .busy file left behind,
 * or a content file without its envelope. Returns the number of messages. */
unsigned fuzz_session_clean_spool(const char *dir);
