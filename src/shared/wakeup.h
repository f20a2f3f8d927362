/* SPDX-License-Identifier: GPL-3.0-or-later */
#pragma once

/* The wake-up flag: how the programs that put mail into the spool tell a forwarder, which may or
 * may not be running, that there is work.
 *
 * Writers (emailrelay-smtpd after each group commit, emailrelay-submit, emailrelay-queue retry)
 * create the flag file if it is absent, after the message is durable in the spool. The
 * forwarder removes it before its last scan and exits only when the flag is still absent after
 * that scan (and, with a linger time, stays absent that long). emailrelay-forward.path watches
 * the flag with PathExists=, which systemd re-checks when the forwarder exits, so a message
 * committed at any moment is seen either by the running forwarder or by the next one. The flag
 * lives outside the spool directory: systemd also watches a PathExists= file's parent
 * directories, and every spool rename would count towards the path unit's trigger limit. */

#include <stdbool.h>

/* The wake-up file to use given the wakeup-file option's value: the value itself; for no value,
 * the built-in WAKEUP_FILE if its directory exists (an installed suite: tmpfiles.d creates it);
 * NULL for none (also for "" and "none"). */
const char *wakeup_choose(const char *option_value);

/* Create the flag if it does not exist. 0, or a negative errno. */
int wakeup_raise(const char *path);

/* Remove the flag (absent is fine). 0, or a negative errno. */
int wakeup_clear(const char *path);

bool wakeup_is_raised(const char *path);

/* Wait up to timeout_ms for the flag to exist. 1 if it does, 0 on timeout, or a negative errno
 * (-EINTR when a signal handler ran). */
int wakeup_wait(const char *path, unsigned timeout_ms);
