/* SPDX-License-Identifier: GPL-3.0-or-later */
/* PAM checks in threads of their own (see pamauth.h). */

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <glib.h>

#include "config.h"
#include "macro.h"
#include "pamauth.h"

#if HAVE_PAM
#include <security/pam_appl.h>
#endif

/* Shared by the loop and the thread: each holds a reference, and the last one frees it, so
 * that a check cancelled (its session gone) while PAM still runs is finished by the thread. */
struct PamCheck {
        atomic_int refs;
        int efd;                      /* the thread writes 1 when done */
        char *user, *password, *rhost;
        int result;
        char *error;
        sd_event_source *source;      /* the loop's side; NULL once cancelled or reported */
        PamCheckCallback callback;
        void *userdata;
};

bool pamauth_available(void) {
        return HAVE_PAM;
}

static void check_unref(PamCheck *c) {
        if (atomic_fetch_sub(&c->refs, 1) != 1)
                return;
        if (c->password) {
                explicit_bzero(c->password, strlen(c->password));
                g_free(c->password);
        }
        g_free(c->user);
        g_free(c->rhost);
        g_free(c->error);
        safe_close(c->efd);
        g_free(c);
}

#if HAVE_PAM
/* Answers PAM's prompts: the password to a hidden one, the user name to a visible one; its
 * messages are ignored. */
static int conversation(int n, const struct pam_message **msg, struct pam_response **ret, void *userdata) {
        PamCheck *c = userdata;
        struct pam_response *resp;

        if (n <= 0 || n > PAM_MAX_NUM_MSG)
                return PAM_CONV_ERR;
        resp = calloc((size_t) n, sizeof *resp);
        if (!resp)
                return PAM_BUF_ERR;
        for (int i = 0; i < n; i++) {
                const char *answer = NULL;
                switch (msg[i]->msg_style) {
                case PAM_PROMPT_ECHO_OFF:
                        answer = c->password;
                        break;
                case PAM_PROMPT_ECHO_ON:
                        answer = c->user;
                        break;
                case PAM_ERROR_MSG:
                case PAM_TEXT_INFO:
                        continue;
                default:
                        goto fail;
                }
                /* PAM frees the answers with free(). */
                resp[i].resp = strdup(answer);
                if (!resp[i].resp)
                        goto fail;
        }
        *ret = resp;
        return PAM_SUCCESS;
fail:
        for (int i = 0; i < n; i++)
                if (resp[i].resp) {
                        explicit_bzero(resp[i].resp, strlen(resp[i].resp));
                        free(resp[i].resp);
                }
        free(resp);
        return PAM_CONV_ERR;
}

/* PAM's answers that are about the user, not about PAM. */
static int classify(int r) {
        switch (r) {
        case PAM_SUCCESS:
                return 0;
        case PAM_AUTH_ERR:
        case PAM_USER_UNKNOWN:
        case PAM_PERM_DENIED:
        case PAM_ACCT_EXPIRED:
        case PAM_AUTHTOK_EXPIRED:
        case PAM_NEW_AUTHTOK_REQD:
        case PAM_CRED_INSUFFICIENT:
        case PAM_MAXTRIES:
                return -EACCES;
        default:
                return -EAGAIN;
        }
}

static void *check_thread(void *userdata) {
        PamCheck *c = userdata;
        struct pam_conv conv = { .conv = conversation, .appdata_ptr = c };
        pam_handle_t *h = NULL;
        const uint64_t one = 1;

        int r = pam_start(PAMAUTH_SERVICE, c->user, &conv, &h);
        if (r == PAM_SUCCESS && c->rhost)
                (void) pam_set_item(h, PAM_RHOST, c->rhost);
        if (r == PAM_SUCCESS)
                r = pam_authenticate(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
        if (r == PAM_SUCCESS)
                r = pam_acct_mgmt(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
        c->result = classify(r);
        if (c->result < 0)
                c->error = g_strdup(pam_strerror(h, r));
        if (h)
                (void) pam_end(h, r);
        explicit_bzero(c->password, strlen(c->password));
        (void) !write(c->efd, &one, sizeof one);
        check_unref(c);
        return NULL;
}
#endif

static int on_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        PamCheck *c = userdata;
        uint64_t n;

        (void) !read(fd, &n, sizeof n);
        c->source = sd_event_source_disable_unref(c->source);
        g_autofree char *error = g_strdup(c->error);
        int result = c->result;
        PamCheckCallback callback = c->callback;
        void *cb_userdata = c->userdata;
        check_unref(c);              /* before the callback, which may end the session */
        callback(result, error, cb_userdata);
        return 0;
}

int pamauth_check(sd_event *event, const char *user, const char *password, const char *rhost,
                  PamCheckCallback callback, void *userdata, PamCheck **ret) {
#if HAVE_PAM
        PamCheck *c = g_new0(PamCheck, 1);
        pthread_attr_t attr;
        pthread_t thread;
        int r;

        atomic_init(&c->refs, 1);
        c->user = g_strdup(user);
        c->password = g_strdup(password);
        c->rhost = g_strdup(rhost);
        c->callback = callback;
        c->userdata = userdata;
        c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (c->efd < 0) {
                r = -errno;
                check_unref(c);
                return r;
        }
        r = sd_event_add_io(event, &c->source, c->efd, EPOLLIN, on_done, c);
        if (r < 0) {
                check_unref(c);
                return r;
        }
        atomic_fetch_add(&c->refs, 1);          /* the thread's */
        r = -pthread_attr_init(&attr);
        if (r == 0)
                r = -pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (r == 0)
                r = -pthread_create(&thread, &attr, check_thread, c);
        (void) pthread_attr_destroy(&attr);
        if (r < 0) {
                atomic_fetch_sub(&c->refs, 1);
                c->source = sd_event_source_disable_unref(c->source);
                check_unref(c);
                return r;
        }
        *ret = c;
        return 0;
#else
        (void) event, (void) user, (void) password, (void) rhost, (void) callback, (void) userdata;
        *ret = NULL;
        return -ENOSYS;
#endif
}

PamCheck *pamauth_cancel(PamCheck *c) {
        if (!c)
                return NULL;
        c->source = sd_event_source_disable_unref(c->source);
        check_unref(c);
        return NULL;
}
