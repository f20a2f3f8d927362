/* SPDX-License-Identifier: GPL-3.0-or-later */
/* --server-auth=pam: and --pop-auth=pam: (reference section 4.2): a user name and password
 * checked by PAM, service "emailrelay" (/etc/pam.d/emailrelay): pam_authenticate() and then
 * pam_acct_mgmt(). PAM modules block (pam_unix waits two seconds after a wrong password, LDAP
 * and SSSD modules go over the network), so each check runs in a thread of its own and the
 * answer comes back on the event loop: other sessions carry on meanwhile. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#define PAMAUTH_SERVICE "emailrelay"

/* Built with PAM (meson's pam option found libpam). */
bool pamauth_available(void);

typedef struct PamCheck PamCheck;

/* result: 0 when the password is right and the account may be used now; -EACCES when PAM
 * says no (a wrong password, an unknown user, an expired account); -EAGAIN when it could not
 * tell (a module missing or failing, its back end unreachable): not the client's fault, so
 * worth a temporary reply and not a failed login. error: PAM's text unless 0, for the log,
 * never for the client. */
typedef void (*PamCheckCallback)(int result, const char *error, void *userdata);

/* Start checking user and password (copied, and wiped once used) for a client at rhost (PAM's
 * PAM_RHOST, for modules that log or count it; may be NULL); callback is called once, from the
 * event loop, unless the check is cancelled first. The check is over when the callback runs:
 * do not cancel it then. -ENOSYS without PAM. */
int pamauth_check(sd_event *event, const char *user, const char *password, const char *rhost,
                  PamCheckCallback callback, void *userdata, PamCheck **ret);

/* No callback after this; the thread finishes on its own and frees what it holds. Returns
 * NULL. */
PamCheck *pamauth_cancel(PamCheck *check);
