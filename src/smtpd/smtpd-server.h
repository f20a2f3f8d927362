/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The emailrelay-smtpd server's life cycle, for main(). */
#pragma once

#include "smtpd.h"

/* Start the committer and accept on every listener (or serve an inherited connection);
 * SIGTERM/SIGINT stop accepting, let sessions finish for drain_timeout, then abort them. */
int server_start(Server *server);
void server_done(Server *server);
