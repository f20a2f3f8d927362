/* SPDX-License-Identifier: GPL-3.0-or-later */
/* E-MailRelay's admin interface (--admin): a line protocol on TCP for scripts and people with
 * telnet or netcat. Commands are case-insensitive words ending in LF or CRLF; each reply is its
 * lines, then the prompt "E-MailRelay> " (none on connect). What concerns the spool (list,
 * failures, unfail-all) is done here; what concerns the relay's processes goes through hooks. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <systemd/sd-event.h>

#include "listen.h"

typedef struct Admin Admin;
typedef struct AdminClient AdminClient;

typedef struct AdminHooks {
        /* "forward": a forwarding pass (after the one running, if any). NULL, or an error text
         * for the client. */
        const char *(*forward)(void *userdata);
        /* "flush": a pass for this client, reported by admin_flush_done() when it ends. NULL,
         * or an error text (then nothing is reported later). */
        const char *(*flush)(void *userdata, AdminClient *client);
        /* The client of a flush went away before its end. */
        void (*flush_abandoned)(void *userdata, AdminClient *client);
        /* "status": lines to append. */
        void (*status)(void *userdata, GString *out);
        /* "terminate", with --admin-terminate. */
        void (*terminate)(void *userdata);
} AdminHooks;

typedef struct AdminConfig {
        const char *spool_dir;
        bool terminate;          /* --admin-terminate */
        bool remote_clients;     /* --remote-clients: else local and private addresses only */
} AdminConfig;

/* Serve the admin interface on the listeners, which it takes over (set is emptied). */
int admin_new(sd_event *event, ListenerSet *set, const AdminConfig *config, const AdminHooks *hooks, void *userdata,
              Admin **ret);
/* The end of a flush: "OK", or "error: <error>". */
void admin_flush_done(Admin *a, AdminClient *client, const char *error);
Admin *admin_free(Admin *a);
