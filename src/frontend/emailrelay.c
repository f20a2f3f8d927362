/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay: E-MailRelay's command line without systemd. It takes the original's options and
 * config file, binds the listeners itself (or takes them from LISTEN_FDS), and runs
 * emailrelay-smtpd and emailrelay-pop3d with those sockets passed exactly as systemd passes them,
 * and emailrelay-forward at start-up, on a --poll timer and, for --forward-on-disconnect and
 * --as-proxy, whenever new mail is committed. It supervises: a daemon that dies stops the whole
 * relay with an error (nothing is restarted behind the administrator's back), and SIGTERM stops
 * the children cleanly. */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gi18n.h>
#include <grp.h>
#include <locale.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "admin.h"
#include "adopt.h"
#include "child.h"
#include "config.h"
#include "daemon.h"
#include "listen.h"
#include "log.h"
#include "macro.h"
#include "options.h"
#include "requeue.h"
#include "spool.h"
#include "wakeup.h"

#define PROGRAM "emailrelay"

/* Exit statuses, as E-MailRelay's. */
enum {
        EXIT_OK = 0,
        EXIT_ERROR = 1,
        EXIT_BIND = 2,     /* a listening socket could not be bound */
};

typedef enum Role {
        ROLE_SMTPD,
        ROLE_POP3D,
        ROLE_FORWARD,
        _ROLE_MAX,
} Role;

static const struct {
        const char *program;
        unsigned mask;
} roles[_ROLE_MAX] = {
        [ROLE_SMTPD] = { "emailrelay-smtpd", PROG_SMTPD },
        [ROLE_POP3D] = { "emailrelay-pop3d", PROG_POP3D },
        [ROLE_FORWARD] = { "emailrelay-forward", PROG_FORWARD },
};

typedef struct Relay {
        Options *o;
        sd_event *event;
        /* What the mode options come to (E-MailRelay's implied options applied). */
        const char *forward_to;
        bool log, no_syslog, close_stderr, no_daemon, dont_serve, no_smtp, pop;
        bool forward_at_start, on_commit;
        bool immediate;           /* smtpd runs a forwarder for each message (forward_config) */
        char *forward_config;     /* the forwarder's options as a config file, for --immediate */
        unsigned poll;
        /* Children. */
        char *paths[_ROLE_MAX];
        ListenerSet sockets[_ROLE_MAX];
        pid_t pids[_ROLE_MAX];
        bool forward_again;       /* a trigger came while the forwarder ran */
        int forward_status;       /* of the last forwarder, -1 before the first */
        /* The admin interface (--admin): its sockets until it starts, and a flush's client,
         * answered when the forwarder started for it (flush_started) exits. */
        ListenerSet admin_sockets;
        Admin *admin;
        AdminClient *flush_client;
        bool flush_started;
        char *rundir;             /* private directory of the wake-up and rescan files */
        char *wakeup;             /* on_commit: raised by smtpd after each commit */
        char *rescan;             /* without on_commit: raised by smtpd when a filter asks for a pass */
        sd_event_source *wakeup_source;   /* ours to unref: a floating inotify source outlives the loop */
        bool stopping;
        int exit_status;
} Relay;

/* ---- children ---- */

/* The program beside this one (an installed suite, or a build tree laid out flat), else in the
 * build tree's own directory for it, else on $PATH. */
static char *find_program(const char *name) {
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
        if (self) {
                g_autofree char *dir = g_path_get_dirname(self);
                char *path = g_build_filename(dir, name, NULL);
                if (access(path, X_OK) == 0)
                        return path;
                g_free(path);
                /* Build tree: src/frontend/emailrelay beside src/smtpd/emailrelay-smtpd. */
                static const char *const subdirs[] = { "smtpd", "pop3d", "forward" };
                for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
                        path = g_build_filename(dir, "..", subdirs[i], name, NULL);
                        if (access(path, X_OK) == 0)
                                return path;
                        g_free(path);
                }
        }
        return g_find_program_in_path(name);
}

/* --forward-on-disconnect and --as-proxy: the forwarder's --wakeup-linger unless one is given
 * (seconds; SMTP clients pause a few seconds between messages, and next hops keep an idle
 * connection for five minutes: RFC 5321 4.5.3.2.7). */
#define ON_COMMIT_LINGER 30u

/* The child's command line: every option given here (config file first, then the command line,
 * so the last one still wins) that concerns that program, then /dev/null as its config file, so
 * that it does not read /etc/emailrelay.conf a second time and double repeated options. */
static char **child_argv(Relay *r, Role role) {
        GPtrArray *a = g_ptr_array_new();
        const Options *o = r->o;

        g_ptr_array_add(a, g_strdup(r->paths[role]));
        for (size_t i = 0; i < o->n_values; i++) {
                const OptionValue *v = &o->values[i];
                if (!(v->def->programs & roles[role].mask) || streq(v->def->name, "help") ||
                    streq(v->def->name, "version"))
                        continue;
                g_ptr_array_add(a, v->value ? g_strdup_printf("--%s=%s", v->def->name, v->value)
                                            : g_strdup_printf("--%s", v->def->name));
        }
        /* Ours last, so that it wins: forwarding on commit needs the private flag. Without it a
         * configured wake-up file is passed on (a front-end beside the units), else none. */
        if (role != ROLE_POP3D && (r->wakeup || !options_has(o, "wakeup-file")))
                g_ptr_array_add(a, g_strdup_printf("--wakeup-file=%s", r->wakeup ? r->wakeup : "none"));
        /* Forwarding on commit: the forwarder waits a while for the next commit, with its
         * connection, so that a client session's messages share one connection to the next
         * hop, as E-MailRelay's forward-on-disconnect sends them in one. */
        if (role == ROLE_FORWARD && r->wakeup && !options_has(o, "wakeup-linger"))
                g_ptr_array_add(a, g_strdup_printf("--wakeup-linger=%u", ON_COMMIT_LINGER));
        if (role == ROLE_SMTPD && r->rescan)
                g_ptr_array_add(a, g_strdup_printf("--rescan-file=%s", r->rescan));
        if (role == ROLE_SMTPD && r->forward_config)
                g_ptr_array_add(a, g_strdup_printf("--immediate-config=%s", r->forward_config));
        g_ptr_array_add(a, g_strdup("/dev/null"));
        g_ptr_array_add(a, NULL);
        return (char **) g_ptr_array_free(a, false);
}

/* --immediate: emailrelay-smtpd runs the forwarder itself, for each message. It gets the
 * forwarder's command line here as a config file (E-MailRelay's format: one option a line),
 * the same options the front-end's own forwarder gets. */
static int write_forward_config(Relay *r) {
        g_auto(GStrv) argv = child_argv(r, ROLE_FORWARD);
        g_autoptr(GString) text = g_string_new("# written by emailrelay for emailrelay-smtpd --immediate\n");
        for (char **a = argv + 1; *a; a++) {
                if (!g_str_has_prefix(*a, "--") || g_str_has_prefix(*a, "--wakeup-file="))
                        continue;   /* the config file argument; a wake-up file is not the point here */
                const char *eq = strchr(*a, '=');
                if (eq)
                        g_string_append_printf(text, "%.*s %s\n", (int) (eq - *a - 2), *a + 2, eq + 1);
                else
                        g_string_append_printf(text, "%s\n", *a + 2);
        }
        r->forward_config = g_build_filename(r->rundir, "forward.conf", NULL);
        g_autoptr(GError) error = NULL;
        if (!g_file_set_contents_full(r->forward_config, text->str, (gssize) text->len, G_FILE_SET_CONTENTS_CONSISTENT,
                                      0600, &error)) {
                log_error("cannot write %s: %s", r->forward_config, error->message);
                return -EIO;
        }
        return 0;
}

/* In the child, before exec: the sockets at fd 3, 4, ... with LISTEN_* saying so. */
static void child_setup_sockets(const ListenerSet *set) {
        char buf[32];
        if (set->n == 0) {
                unsetenv("LISTEN_FDS");
                unsetenv("LISTEN_FDNAMES");
                unsetenv("LISTEN_PID");
                return;
        }
        /* Above every target first, so that no move clobbers a socket still to move. */
        int tmp[64];
        size_t n = MIN(set->n, ELEMENTSOF(tmp));
        for (size_t i = 0; i < n; i++)
                tmp[i] = fcntl(set->items[i].fd, F_DUPFD, 3 + (int) n);
        GString *names = g_string_new(NULL);
        for (size_t i = 0; i < n; i++) {
                dup2(tmp[i], 3 + (int) i);   /* dup2 clears FD_CLOEXEC on the new descriptor */
                close(tmp[i]);
                g_string_append_printf(names, "%s%s", i ? ":" : "", set->items[i].name);
        }
        snprintf(buf, sizeof buf, "%zu", n);
        setenv("LISTEN_FDS", buf, 1);
        setenv("LISTEN_FDNAMES", names->str, 1);
        snprintf(buf, sizeof buf, "%d", (int) getpid());
        setenv("LISTEN_PID", buf, 1);
}

static int on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

static int start_child(Relay *r, Role role) {
        g_auto(GStrv) argv = child_argv(r, role);
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
                return log_error_errno(-errno, "cannot start %s: %m", roles[role].program);
        if (pid == 0) {
                /* Not the empty mask: SIGTERM from stop_all() or the death signal below must wait
                 * until the daemon can handle it (child.h). */
                sigset_t mask;
                child_suite_sigmask(&mask);
                sigprocmask(SIG_SETMASK, &mask, NULL);
                /* A front-end killed outright (SIGKILL, the OOM killer) takes its daemons with it,
                 * rather than leaving them holding the ports its restart needs. The daemons stop on
                 * SIGTERM as they would under stop_all(). */
                if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
                        _exit(127);
                /* Readiness and the watchdog are this process's business, not the children's. */
                unsetenv("NOTIFY_SOCKET");
                unsetenv("WATCHDOG_PID");
                unsetenv("WATCHDOG_USEC");
                child_setup_sockets(&r->sockets[role]);
                execv(argv[0], argv);
                fprintf(stderr, PROGRAM ": cannot run %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        r->pids[role] = pid;
        /* Floating: the loop owns it and frees it with itself, whatever state the child is in. */
        int k = sd_event_add_child(r->event, NULL, pid, WEXITED, on_child_exit, r);
        if (k < 0)
                return log_error_errno(k, "cannot watch %s: %m", roles[role].program);
        return 0;
}

static void stop_all(Relay *r, int status) {
        if (!r->stopping) {
                r->stopping = true;
                r->exit_status = status;
        }
        bool any = false;
        for (Role i = 0; i < _ROLE_MAX; i++)
                if (r->pids[i] > 0) {
                        kill(r->pids[i], SIGTERM);
                        any = true;
                }
        if (!any)
                sd_event_exit(r->event, r->exit_status);
}

static void start_forwarder(Relay *r) {
        if (r->stopping || !r->paths[ROLE_FORWARD])
                return;
        if (r->pids[ROLE_FORWARD] > 0) {
                r->forward_again = true;
                return;
        }
        r->forward_again = false;
        if (start_child(r, ROLE_FORWARD) < 0) {
                stop_all(r, EXIT_ERROR);
                return;
        }
        if (r->flush_client)
                r->flush_started = true;
}

/* The admin client waiting for this forwarder's end, if it was started for a flush. */
static void flush_report(Relay *r, int status) {
        static const char *const reasons[] = {
                [1] = "not every message was sent: see the log",
                [2] = "bad configuration: see the log",
                [3] = "the next hop is not available: see the log",
        };
        if (!r->flush_client || !r->flush_started)
                return;
        g_autofree char *other = NULL;
        const char *error = NULL;
        if (status != 0) {
                if (status > 0 && (size_t) status < ELEMENTSOF(reasons) && reasons[status])
                        error = reasons[status];
                else
                        error = other = g_strdup_printf("forwarding failed with status %d: see the log", status);
        }
        admin_flush_done(r->admin, r->flush_client, error);
        r->flush_client = NULL;
        r->flush_started = false;
}

/* Something that lasts: a server, the admin interface or the poll timer. Without one, the
 * relay ends when its forwarding does. */
static bool serving(const Relay *r) {
        return r->pids[ROLE_SMTPD] > 0 || r->pids[ROLE_POP3D] > 0 || r->admin || r->poll;
}

static int on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Relay *r = userdata;
        Role role = _ROLE_MAX;
        for (Role i = 0; i < _ROLE_MAX; i++)
                if (r->pids[i] == si->si_pid)
                        role = i;
        if (role == _ROLE_MAX)
                return 0;
        r->pids[role] = 0;

        int status = si->si_code == CLD_EXITED ? si->si_status : 128 + si->si_status;
        if (role == ROLE_FORWARD) {
                r->forward_status = status;
                flush_report(r, status);
                /* 0 all sent, 1 some wait or failed, 3 next hop down: the forwarder logged why. */
                if (r->dont_serve && !r->stopping) {
                        /* --as-client, --dont-serve: one forwarding, and its status is ours. */
                        stop_all(r, status);
                        return 0;
                }
                if (status == 2)
                        log_error("%s: bad configuration: stopping", roles[role].program);
                else if (status != 0)
                        log_info("%s finished with status %d", roles[role].program, status);
                if (status == 2 || status >= 4) {
                        stop_all(r, EXIT_ERROR);
                        return 0;
                }
                if (r->forward_again || (r->wakeup && wakeup_is_raised(r->wakeup)))
                        start_forwarder(r);
                else if (!r->stopping && !serving(r)) {
                        /* --no-smtp --forward and no more to come: that one pass was all. */
                        stop_all(r, status);
                        return 0;
                }
        } else if (!r->stopping) {
                log_error("%s exited unexpectedly (%s %d): stopping", roles[role].program,
                          si->si_code == CLD_EXITED ? "status" : "signal", si->si_status);
                stop_all(r, EXIT_ERROR);
                return 0;
        }
        if (r->stopping)
                stop_all(r, r->exit_status);
        return 0;
}

/* ---- triggers ---- */

static int on_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        Relay *r = userdata;
        start_forwarder(r);
        return sd_event_source_set_time_relative(s, (uint64_t) r->poll * 1000000u) < 0 ? -1 :
               sd_event_source_set_enabled(s, SD_EVENT_ON);
}

static int on_wakeup(sd_event_source *s, const struct inotify_event *e, void *userdata) {
        Relay *r = userdata;
        /* A running forwarder sees the flag itself, or exits with it raised and is started again. */
        if (r->wakeup && r->pids[ROLE_FORWARD] == 0 && wakeup_is_raised(r->wakeup))
                start_forwarder(r);
        /* A filter's rescan (exit 102, 103, 104): a pass now, or another one after the current,
         * which may have listed the spool before the filter's messages were there. */
        if (r->rescan && wakeup_is_raised(r->rescan)) {
                (void) wakeup_clear(r->rescan);
                log_info("a filter asked for a rescan: forwarding");
                start_forwarder(r);
        }
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Relay *r = userdata;
        if (!r->stopping)
                log_info("stopping on signal %d", (int) si->ssi_signo);
        stop_all(r, r->stopping ? r->exit_status : EXIT_OK);
        return 0;
}

/* ---- the admin interface ---- */

static const char *admin_forward(void *userdata) {
        Relay *r = userdata;
        if (!r->forward_to)
                return "no remote server configured: use --forward-to";
        start_forwarder(r);
        return NULL;
}

static const char *admin_flush(void *userdata, AdminClient *client) {
        Relay *r = userdata;
        if (!r->forward_to)
                return "no remote server configured: use --forward-to";
        if (r->flush_client)
                return "still working";
        if (r->stopping)
                return "shutting down";
        g_autoptr(Spool) spool = NULL;
        g_autoptr(GPtrArray) ready = NULL;
        int k = spool_open(options_get_default(r->o, "spool-dir", SPOOLDIR), &spool);
        /* Everything now, as E-MailRelay's flush: messages waiting for a retry too. */
        if (k >= 0 && (k = requeue_all_due(spool, (long long) time(NULL))) >= 0)
                k = spool_list(spool, SPOOL_STATE_READY, &ready);
        if (k < 0) {
                log_warning_errno(k, "admin flush: cannot read the spool: %m");
                return "cannot read the spool directory: see the log";
        }
        if (ready->len == 0)
                return "no messages to send";
        r->flush_client = client;
        r->flush_started = false;
        start_forwarder(r);   /* now, or after the one that runs */
        return NULL;
}

static void admin_flush_abandoned(void *userdata, AdminClient *client) {
        Relay *r = userdata;
        if (r->flush_client == client) {
                r->flush_client = NULL;
                r->flush_started = false;
        }
}

static void admin_status(void *userdata, GString *out) {
        static const char *const names[_ROLE_MAX] = { "smtp server", "pop server", "forwarding" };
        Relay *r = userdata;
        for (Role i = 0; i < _ROLE_MAX; i++) {
                if (!r->paths[i])
                        continue;
                if (out->len > 0)
                        g_string_append_c(out, '\n');
                if (r->pids[i] > 0)
                        g_string_append_printf(out, "%s: running, pid %d (%s)", names[i], (int) r->pids[i], roles[i].program);
                else if (i == ROLE_FORWARD && r->forward_status >= 0)
                        g_string_append_printf(out, "%s: idle, the last pass ended with status %d", names[i], r->forward_status);
                else
                        g_string_append_printf(out, "%s: %s", names[i], i == ROLE_FORWARD ? "idle" : "not running");
        }
        if (out->len == 0)
                g_string_append(out, "nothing running");
}

static void admin_terminate(void *userdata) {
        Relay *r = userdata;
        stop_all(r, EXIT_OK);
}

/* ---- start-up ---- */

static int check_options(Relay *r) {
        Options *o = r->o;
        /* E-MailRelay's Windows window options: ignored, as its help says they are elsewhere. */
        static const char *const windows_only[] = { "hidden", "show" };
        for (size_t i = 0; i < ELEMENTSOF(windows_only); i++)
                if (options_has(o, windows_only[i]))
                        log_warning("option --%s is for Windows only: ignored", windows_only[i]);
        bool as_server = options_has(o, "as-server");
        const char *as_client = options_get(o, "as-client"), *as_proxy = options_get(o, "as-proxy");
        if (!!as_client + !!as_proxy + as_server > 1) {
                log_error("--as-server, --as-client and --as-proxy exclude each other");
                return -EINVAL;
        }
        if ((as_client || as_proxy) && options_has(o, "forward-to")) {
                log_error("--forward-to cannot be combined with --as-client or --as-proxy");
                return -EINVAL;
        }
        /* E-MailRelay's implied options become options, so the children get them too; with
         * --log, syslog is on unless --no-syslog (our daemons log to syslog only when told). */
        GString *implied = g_string_new(NULL);
        if (as_client)
                g_string_append_printf(implied, "forward-to %s\nno-syslog\n", as_client);
        if (as_proxy)
                g_string_append_printf(implied, "forward-to %s\n", as_proxy);
        if ((as_server || as_client || as_proxy) && !options_has(o, "log"))
                g_string_append(implied, "log\n");
        g_autofree char *implied_text = g_string_free(implied, false);
        g_autofree char *error = NULL;
        if (options_parse_config_string(o, implied_text, "implied", &error) < 0) {
                log_error("%s", error);
                return -EINVAL;
        }
        if (options_has(o, "log") && !options_has(o, "no-syslog") && !options_has(o, "syslog") &&
            options_parse_config_string(o, "syslog\n", "implied", NULL) < 0)
                return -EINVAL;
        r->forward_to = options_get(o, "forward-to");
        r->log = options_has(o, "log");
        r->no_syslog = options_has(o, "no-syslog") && !options_has(o, "syslog");
        r->close_stderr = options_has(o, "close-stderr") || as_server || as_proxy;
        r->no_daemon = options_has(o, "no-daemon") || as_client;
        r->dont_serve = options_has(o, "dont-serve") || as_client;
        r->no_smtp = options_has(o, "no-smtp");
        r->pop = options_has(o, "pop") && !r->dont_serve;
        r->forward_at_start = options_has(o, "forward") || as_client;
        r->on_commit = (options_has(o, "forward-on-disconnect") || as_proxy) && !r->dont_serve;
        if (options_has(o, "poll")) {
                if (daemon_get_uint(o, "poll", 0, 86400 * 366, &r->poll) < 0)
                        return -EINVAL;
                if (r->poll == 0) {
                        log_error("--poll 0 is not allowed: use --forward-on-disconnect");
                        return -EINVAL;
                }
        }
        r->immediate = options_has(o, "immediate") && !r->dont_serve;
        if ((r->forward_at_start || r->on_commit || r->poll || r->immediate || options_has(o, "client-filter")) &&
            !r->forward_to) {
                log_error("--forward, --forward-on-disconnect, --poll, --immediate and --client-filter need --forward-to");
                return -EINVAL;
        }
        if (r->pop && !options_has(o, "pop-auth")) {
                log_error("--pop needs --pop-auth");
                return -EINVAL;
        }
        if (options_has(o, "dnsbl") && !options_has(o, "remote-clients")) {
                log_error("--dnsbl needs --remote-clients");
                return -EINVAL;
        }
        if (options_get_all(o, "verbose", NULL) > 0 && !r->log && !options_has(o, "help") && !options_has(o, "version")) {
                log_error("--verbose needs --log");
                return -EINVAL;
        }
        if (options_has(o, "admin-terminate") && !options_has(o, "admin")) {
                log_error("--admin-terminate needs --admin");
                return -EINVAL;
        }
        if (options_has(o, "admin") && r->dont_serve) {
                log_error("--admin needs a server: not with --as-client or --dont-serve");
                return -EINVAL;
        }
        if (r->dont_serve && !r->forward_at_start) {
                log_error("--dont-serve without --forward has nothing to do");
                return -EINVAL;
        }
        /* Never a silent exit 0: a relay that serves nothing needs a forwarding to do. */
        if (r->no_smtp && !r->pop && !options_has(o, "admin") && !r->poll && !r->forward_at_start) {
                log_error("--no-smtp without --pop, --admin, --poll or --forward has nothing to do");
                return -EINVAL;
        }
        return 0;
}

/* Sockets: from LISTEN_FDS (by name: smtp/submission/smtps to the SMTP daemon, pop3/pop3s to
 * POP3), else bound here from --port, --pop-port and --interface. */
static int open_sockets(Relay *r) {
        ListenerSet passed = {};
        int k = listeners_adopt(&passed);
        if (k < 0)
                return log_error_errno(k, "cannot use the sockets passed in LISTEN_FDS: %m");
        if (k > 0) {
                /* All checked before any is moved, so that an error frees each exactly once. */
                for (size_t i = 0; i < passed.n; i++) {
                        const char *name = passed.items[i].name;
                        bool pop = g_str_has_prefix(name, "pop");
                        if (streq(name, "admin")) {
                                if (options_has(r->o, "admin"))
                                        continue;
                                log_error("socket \"admin\" passed in LISTEN_FDS, but --admin is not given");
                                listener_set_done(&passed);
                                return -EINVAL;
                        }
                        if (pop ? !r->pop : r->no_smtp || r->dont_serve) {
                                log_error("socket \"%s\" passed in LISTEN_FDS, but %s", name,
                                          pop ? "--pop is not given" : "--no-smtp or --dont-serve is");
                                listener_set_done(&passed);
                                return -EINVAL;
                        }
                }
                for (size_t i = 0; i < passed.n; i++) {
                        Listener *l = &passed.items[i];
                        Role role = g_str_has_prefix(l->name, "pop") ? ROLE_POP3D : ROLE_SMTPD;
                        ListenerSet *to = streq(l->name, "admin") ? &r->admin_sockets : &r->sockets[role];
                        to->items = g_renew(Listener, to->items, to->n + 1);
                        to->items[to->n++] = *l;
                }
                g_free(passed.items);
                return 0;
        }
        /* Named as the daemons would name their own, so that --proxy-protocol smtps finds an
         * implicit-TLS listener here too. */
        bool implicit = options_has(r->o, "server-tls-connection");
        if (!r->no_smtp && daemon_open_listeners(&r->sockets[ROLE_SMTPD], r->o, "smtp", "port", 25,
                                                 implicit ? "smtps" : "smtp", NULL) < 0)
                return -EADDRINUSE;
        if (r->pop && daemon_open_listeners(&r->sockets[ROLE_POP3D], r->o, "pop", "pop-port", 110,
                                            implicit ? "pop3s" : "pop3", NULL) < 0)
                return -EADDRINUSE;
        if (options_has(r->o, "admin") && daemon_open_listeners(&r->admin_sockets, r->o, "admin", "admin", 0,
                                                                "admin", NULL) < 0)
                return -EADDRINUSE;
        return 0;
}

/* Started as root: bind first, then become --user (default daemon) for good, children too.
 * E-MailRelay switches back to root to write the spool; here the spool must be writable by the
 * user. A spool that is root's (E-MailRelay's) is given to the user first (adopt.h), and the
 * start-up check says what is wrong rather than failing on the first message. */
static int drop_privileges(const char *user, const char *spool, const char *log_file) {
        if (geteuid() != 0 || streq(user, "root"))
                return 0;
        struct passwd *pw = getpwnam(user);
        if (!pw)
                return log_error_errno(-ENOENT, "--user %s: no such user", user);
        /* The log file is open here already, as root: the children, as the user, append to it. */
        if (log_file) {
                g_autofree char *path = log_file_path_expand(log_file, (long long) time(NULL));
                if (path && chown(path, pw->pw_uid, pw->pw_gid) < 0 && errno != ENOENT)
                        log_warning_errno(-errno, "cannot give %s to user %s: %m", path, user);
        }
        /* An E-MailRelay spool is root's: given to the user first, or a precise refusal. Files
         * it left alone are named, and skipped by the daemons like any they cannot lock. */
        AdoptReport rep = {};
        if (spool_needs_adoption(spool, pw->pw_uid) && spool_adopt(spool, pw->pw_uid, pw->pw_gid, user, &rep) < 0)
                return log_error_errno(-EPERM, "the spool directory %s cannot be given to user %s (--user): see above, "
                                       "or give --user root", spool, user);
        if (rep.refused > 0)
                log_warning("%u entr%s of the spool %s stay root's (see above): user %s cannot use them", rep.refused,
                            rep.refused == 1 ? "y" : "ies", spool, user);
        if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
                return log_error_errno(-errno, "cannot switch to user %s: %m", user);
        if (access(spool, R_OK | W_OK | X_OK) < 0)
                return log_error_errno(-errno, "the spool directory %s is not writable by user %s (--user): "
                                       "change its owner or group, or give --user root", spool, user);
        return 0;
}

static int write_pid(int fd, pid_t pid) {
        char text[32];
        int n = snprintf(text, sizeof text, "%d\n", (int) pid);
        return write(fd, text, (size_t) n) == n ? 0 : -1;
}

/* Everything after the option checks; run() frees what it leaves, whichever way it returns. */
static int serve(Relay *r) {
        Options *o = r->o;
        int k;

        for (Role i = 0; i < _ROLE_MAX; i++) {
                bool needed = i == ROLE_SMTPD ? !r->dont_serve && !r->no_smtp :
                              i == ROLE_POP3D ? r->pop : r->forward_to != NULL;
                if (!needed)
                        continue;
                r->paths[i] = find_program(roles[i].program);
                if (!r->paths[i]) {
                        log_error("cannot find %s beside %s or on $PATH", roles[i].program, PROGRAM);
                        return EXIT_ERROR;
                }
        }
        const char *spool = options_get_default(o, "spool-dir", SPOOLDIR);
        if (access(spool, R_OK | X_OK) < 0) {
                log_error("cannot read the spool directory %s: %s", spool, g_strerror(errno));
                return EXIT_ERROR;
        }
        if (access(spool, W_OK) < 0)
                log_warning("the spool directory %s is not writable: %s", spool, g_strerror(errno));

        if (!r->dont_serve && (k = open_sockets(r)) < 0)
                return k == -EINVAL ? EXIT_ERROR : EXIT_BIND;

        /* Opened before the user switch (it may be in /run), written after daemonising. */
        const char *pid_file = options_get(o, "pid-file");
        _cleanup_close_ int pid_fd = -EBADF;
        if (pid_file) {
                g_autofree char *dir = g_path_get_dirname(pid_file);
                (void) g_mkdir_with_parents(dir, 0755);
                pid_fd = open(pid_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (pid_fd < 0) {
                        log_error_errno(-errno, "cannot create the pid file %s: %m", pid_file);
                        return EXIT_ERROR;
                }
        }

        if (drop_privileges(options_get_default(o, "user", "daemon"), spool, options_get(o, "log-file")) < 0)
                return EXIT_ERROR;

        if (!r->no_daemon) {
                pid_t pid = fork();
                if (pid < 0) {
                        log_error_errno(-errno, "cannot fork: %m");
                        return EXIT_ERROR;
                }
                if (pid > 0) {
                        /* The parent writes the daemon's pid: the file is complete when the
                         * command returns, never seen empty. */
                        int status = EXIT_OK;
                        if (pid_fd >= 0 && write_pid(pid_fd, pid) < 0) {
                                log_error_errno(-errno, "cannot write the pid file %s: %m", pid_file);
                                kill(pid, SIGTERM);
                                status = EXIT_ERROR;
                        }
                        _exit(status);
                }
                pid_fd = safe_close(pid_fd);
                (void) setsid();
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null >= 0) {
                        dup2(null, STDIN_FILENO);
                        dup2(null, STDOUT_FILENO);
                        close(null);
                }
        }
        if (pid_fd >= 0) {
                if (write_pid(pid_fd, getpid()) < 0) {
                        log_error_errno(-errno, "cannot write the pid file %s: %m", pid_file);
                        return EXIT_ERROR;
                }
                pid_fd = safe_close(pid_fd);
        }

        /* The wake-up file of --forward-on-disconnect, else the rescan file of any forwarding
         * (filter exits 102-104), and the forwarder's options for --immediate: private to this
         * relay. */
        bool want_rescan = r->forward_to && !r->on_commit && !r->dont_serve && !r->no_smtp;
        if (r->on_commit || r->immediate || want_rescan) {
                r->rundir = g_dir_make_tmp("emailrelay-XXXXXX", NULL);
                if (!r->rundir) {
                        log_error("cannot make a runtime directory in %s", g_get_tmp_dir());
                        return EXIT_ERROR;
                }
        }
        if (r->on_commit)
                r->wakeup = g_build_filename(r->rundir, "forward-wanted", NULL);
        else if (want_rescan)
                r->rescan = g_build_filename(r->rundir, "rescan-wanted", NULL);
        if (r->immediate && write_forward_config(r) < 0)
                return EXIT_ERROR;

        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        if ((k = sd_event_new(&r->event)) < 0 ||
            (k = sd_event_add_signal(r->event, NULL, SIGTERM, on_signal, r)) < 0 ||
            (k = sd_event_add_signal(r->event, NULL, SIGINT, on_signal, r)) < 0 ||
            (k = sd_event_add_signal(r->event, NULL, SIGHUP, on_signal, r)) < 0) {
                log_error_errno(k, "cannot set up the event loop: %m");
                return EXIT_ERROR;
        }
        if ((r->wakeup || r->rescan) && (k = sd_event_add_inotify(r->event, &r->wakeup_source, r->rundir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR,
                                                       on_wakeup, r)) < 0) {
                log_error_errno(k, "cannot watch %s: %m", r->rundir);
                return EXIT_ERROR;
        }
        if (r->poll && (k = sd_event_add_time_relative(r->event, NULL, CLOCK_MONOTONIC, (uint64_t) r->poll * 1000000u,
                                                       100000u, on_poll, r)) < 0) {
                log_error_errno(k, "cannot set the poll timer: %m");
                return EXIT_ERROR;
        }

        /* --close-stderr: from here on the log goes to syslog or --log-file, ours and the
         * children's alike. */
        if (r->close_stderr) {
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
                if (null >= 0) {
                        dup2(null, STDERR_FILENO);
                        close(null);
                }
        }
        if (r->admin_sockets.n > 0) {
                const AdminConfig ac = {
                        .spool_dir = spool,
                        .terminate = options_has(o, "admin-terminate"),
                        .remote_clients = options_has(o, "remote-clients"),
                };
                const AdminHooks hooks = {
                        .forward = admin_forward,
                        .flush = admin_flush,
                        .flush_abandoned = admin_flush_abandoned,
                        .status = admin_status,
                        .terminate = admin_terminate,
                };
                if ((k = admin_new(r->event, &r->admin_sockets, &ac, &hooks, r, &r->admin)) < 0) {
                        log_error_errno(k, "cannot serve the admin interface: %m");
                        return EXIT_ERROR;
                }
        }
        r->exit_status = EXIT_OK;
        for (Role i = ROLE_SMTPD; i <= ROLE_POP3D; i++)
                if (r->sockets[i].n > 0 && start_child(r, i) < 0) {
                        stop_all(r, EXIT_ERROR);
                        break;
                }
        /* The daemons have their sockets; ours would only keep ports open after they exit. */
        for (Role i = 0; i < _ROLE_MAX; i++)
                listener_set_done(&r->sockets[i]);
        if (r->forward_at_start)
                start_forwarder(r);
        if (!r->stopping && !serving(r) && r->pids[ROLE_FORWARD] == 0)
                stop_all(r, EXIT_OK);

        k = sd_event_loop(r->event);
        int status = k < 0 ? EXIT_ERROR : r->exit_status;

        if (r->wakeup)
                (void) unlink(r->wakeup);
        if (r->rescan)
                (void) unlink(r->rescan);
        if (r->forward_config)
                (void) unlink(r->forward_config);
        if (r->rundir)
                (void) rmdir(r->rundir);
        if (pid_file)
                (void) unlink(pid_file);
        return status;
}

static void relay_done(Relay *r) {
        for (Role i = 0; i < _ROLE_MAX; i++) {
                g_free(r->paths[i]);
                listener_set_done(&r->sockets[i]);
        }
        admin_free(r->admin);
        listener_set_done(&r->admin_sockets);
        g_free(r->wakeup);
        g_free(r->rescan);
        g_free(r->forward_config);
        g_free(r->rundir);
        sd_event_source_unref(r->wakeup_source);
        sd_event_unref(r->event);
}

static int run(Options *o, int argc, char **argv) {
        Relay r = { .o = o, .forward_status = -1 };

        /* As E-MailRelay: a config file only when one is named (the last argument); the units'
         * /etc/emailrelay.conf may hold forward-to, which --as-client and --as-proxy refuse. */
        g_autofree char **args = g_new0(char *, argc + 2);
        memcpy(args, argv, sizeof(char *) * argc);
        int nargs = argc;
        {
                Options first;
                g_autofree char *error = NULL;
                options_init(&first, o->table, o->program);
                if (options_parse_argv(&first, argc, argv, &error) >= 0 && first.n_args == 0)
                        args[nargs++] = (char *) "/dev/null";
                options_done(&first);
        }
        if (daemon_parse_options(o, nargs, args) < 0)
                return EXIT_ERROR;
        if (daemon_help_version(o, PROGRAM, "[<option> ...] [<config-file>]"))
                return EXIT_OK;
        if (daemon_open_log(o, PROGRAM) < 0)
                return EXIT_ERROR;
        if (check_options(&r) < 0)
                return EXIT_ERROR;
        int status = serve(&r);
        relay_done(&r);
        return status;
}

int main(int argc, char **argv) {
        Options o;

        setlocale(LC_ALL, "");
        bindtextdomain(GETTEXT_PACKAGE, LOCALEDIR);
        textdomain(GETTEXT_PACKAGE);
        signal(SIGPIPE, SIG_IGN);

        options_init(&o, emailrelay_options, PROG_FRONTEND);
        int r = run(&o, argc, argv);
        options_done(&o);
        return r;
}
