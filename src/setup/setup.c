/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-setup: asks, page by page, how the relay should run; shows the files it will write
 * (/etc/emailrelay.conf, secrets in /etc/emailrelay/, systemd drop-ins) and the systemctl
 * commands it will run; then writes them all or nothing and enables the units. Starts from
 * the configuration that is there, so a second run changes only what the answers change. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib/gi18n.h>
#include <gnutls/gnutls.h>
#include <locale.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "adopt.h"
#include "config.h"
#include "dnsbl.h"
#include "macro.h"
#include "options.h"
#include "sasl.h"
#include "setup-write.h"
#include "xtext.h"

#define PROGRAM "emailrelay-setup"
#define EXIT_FAILURE_ 1
#define EXIT_USAGE 2
#define UNIT_DIR "/etc/systemd/system"
#define SECRETS_DIR SYSCONFDIR "/emailrelay"
#define DROPIN "setup.conf"
#define MARKER "# --- written by emailrelay-setup:"
#define CHECK_TIMEOUT_MS 5000
#define MAX_ANSWER 4096
#define DNSBL_THRESHOLD 1U
#define DNSBL_TIMEOUT_MS 5000U
#define DNSBL_TIMEOUT_MS_MAX 3600000U
#define DNSBL_ZONES_MAX 64U
#define DNSBL_ZONE_MAX 189U   /* so that a reversed IPv6 address and the zone make a DNS name */

typedef enum Role {
        ROLE_STORE_AND_FORWARD,
        ROLE_PROXY,
        ROLE_POP_ONLY,
        ROLE_FILTER_HOST,
        _ROLE_MAX,
} Role;
static const char *const role_names[_ROLE_MAX] = { "store-and-forward", "proxy", "pop-only", "filter-host" };
static const char *const role_help[_ROLE_MAX] = {
        N_("store mail, forward it to the next hop, retry on a schedule; optionally serve POP3 too"),
        N_("forward each message to the next hop as soon as it is stored"),
        N_("serve the spool to POP3 clients only, forward nothing"),
        N_("check each message with filters (a program, spamd) and pass it on at once"),
};

typedef enum TlsMode {
        TLS_NONE,
        TLS_STARTTLS,
        TLS_IMPLICIT,
        _TLS_MAX,
} TlsMode;
static const char *const tls_names[_TLS_MAX] = { "none", "starttls", "implicit" };
static const char *const tls_help[_TLS_MAX] = {
        N_("no TLS"),
        N_("STARTTLS on the plain port (25, 587)"),
        N_("TLS from the first byte (465)"),
};

typedef enum ClientAuth {
        AUTH_NONE,
        AUTH_PASSWORD,
        AUTH_OAUTH,
        _AUTH_MAX,
} ClientAuth;
static const char *const auth_names[_AUTH_MAX] = { "none", "password", "oauth" };
static const char *const auth_help[_AUTH_MAX] = {
        N_("the next hop takes mail without a login"),
        N_("user name and password (an app password for Gmail or Office 365)"),
        N_("XOAUTH2, with a program that prints a fresh access token"),
};

static const char *const preset_names[] = { "none", "submission" };
static const char *const preset_help[] = {
        N_("enter everything yourself"),
        N_("a provider's submission port: port 587, STARTTLS, user name and app password"),
};

/* The answers-file keys, and which of them may repeat. */
static const char *const answer_keys[] = {
        "role", "serve-pop", "smtp-port", "pop-port", "interface", "remote-clients",
        "next-hop-preset", "next-hop", "next-hop-tls", "next-hop-auth", "next-hop-user",
        "next-hop-password", "next-hop-oauth-helper", "forward-immediately", "poll",
        "retry-schedule", "retry-give-up", "server-tls", "server-certificate", "server-account",
        "server-account-remove", "server-hash", "server-pam", "pop-account", "pop-account-remove", "pop-pam", "filter",
        "verbose", "on-warning", "trusted-networks", "server-tls-required", "dnsbl", NULL,
};
static const char *const repeatable_keys[] = {
        "server-account", "server-account-remove", "pop-account", "pop-account-remove", "filter", NULL,
};

/* Options of /etc/emailrelay.conf this program owns: their lines are replaced, all others
 * (and all comments) are kept where they are. */
static const char *const managed_options[] = {
        "port", "pop-port", "interface", "remote-clients", "forward-to", "client-tls",
        "client-tls-connection", "client-tls-required", "server-tls", "server-tls-connection",
        "server-tls-certificate", "server-tls-required", "filter", "dnsbl", "retry-schedule", "retry-give-up",
        "verbose", NULL,
};

/* The units setup enables or disables; it leaves the others (submission, smtps ...) alone. */
static const char *const managed_units[] = {
        "emailrelay-smtpd.socket", "emailrelay-forward.path", "emailrelay-forward.timer",
        "emailrelay-pop3d.socket", NULL,
};

typedef struct Account {
        char *user;   /* as the user typed it */
        char *line;   /* the secrets-file line */
} Account;

static Account *account_free(Account *a) {
        if (a) {
                g_free(a->user);
                if (a->line)
                        explicit_bzero(a->line, strlen(a->line));
                g_free(a->line);
                g_free(a);
        }
        return NULL;
}

static void account_free_void(void *a) {
        account_free(a);
}

typedef struct Setup {
        /* how it runs */
        char *root;               /* "" for the real root */
        bool dry_run;             /* --dry-run: write under root, run nothing */
        bool offline;             /* --root: write under root, systemctl --root enable only */
        bool batch;               /* --answers */
        bool go_on;               /* on-warning=continue */
        GHashTable *answers;      /* key -> GPtrArray of values */

        /* the configuration */
        Role role;
        bool serve_pop;
        unsigned smtp_port, pop_port;
        char *interface;
        bool remote_clients;
        char *next_hop;
        TlsMode client_tls;
        ClientAuth client_auth;
        char *client_user;
        char *client_line;        /* the client.auth line, kept when unchanged */
        bool immediate;
        unsigned poll;
        char *retry_schedule, *retry_give_up;
        TlsMode server_tls;
        char *certificate;
        GPtrArray *server_accounts, *pop_accounts;
        bool server_pam, pop_pam; /* the system's accounts, through PAM, instead of a list */
        bool server_md5;
        bool server_tls_required;
        char *trusted;            /* comma list of networks that need no login, or NULL */
        GPtrArray *filters;
        char *dnsbl_zones;        /* comma list of block lists; NULL: no DNSBL checks */
        unsigned dnsbl_threshold; /* listings that refuse a client; 0: log only */
        unsigned dnsbl_timeout_ms;
        bool dnsbl_block_on_timeout;
        char *dnsbl_server;       /* address[:port]; NULL: the system's resolver */
        bool verbose;

        /* what is installed now */
        GPtrArray *conf_kept;     /* lines of the config file that are not ours */
        unsigned cur_smtp_port, cur_pop_port;
        char *cur_interface;
        bool have_current;
} Setup;

static void setup_done(Setup *s) {
        g_free(s->root);
        if (s->answers)
                g_hash_table_unref(s->answers);
        g_free(s->interface);
        g_free(s->next_hop);
        g_free(s->client_user);
        if (s->client_line)
                explicit_bzero(s->client_line, strlen(s->client_line));
        g_free(s->client_line);
        g_free(s->retry_schedule);
        g_free(s->retry_give_up);
        g_free(s->certificate);
        g_free(s->trusted);
        g_ptr_array_unref(s->server_accounts);
        g_ptr_array_unref(s->pop_accounts);
        g_ptr_array_unref(s->filters);
        g_free(s->dnsbl_zones);
        g_free(s->dnsbl_server);
        g_ptr_array_unref(s->conf_kept);
        g_free(s->cur_interface);
}

static bool in_list(const char *const *list, const char *s) {
        for (size_t i = 0; list[i]; i++)
                if (strcmp(list[i], s) == 0)
                        return true;
        return false;
}

static bool smtp_role(const Setup *s) {
        return s->role != ROLE_POP_ONLY;
}

static char *rooted(const Setup *s, const char *path) {
        return g_strconcat(s->root, path, NULL);
}

#define PAM_SERVICE_FILE "/etc/pam.d/emailrelay"

static char *unit_dropin(const char *unit) {
        return g_strdup_printf(UNIT_DIR "/%s.d/" DROPIN, unit);
}

/* ---- the answers file ---- */

static int answers_load(Setup *s, const char *path) {
        g_autofree char *text = NULL;
        g_autoptr(GError) error = NULL;

        if (!g_file_get_contents(path, &text, NULL, &error)) {
                fprintf(stderr, "%s: %s\n", PROGRAM, error->message);
                return -EIO;
        }
        s->answers = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_ptr_array_unref);
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
        for (size_t i = 0; lines[i]; i++) {
                char *line = g_strstrip(lines[i]);
                if (*line == '\0' || *line == '#')
                        continue;
                char *eq = strchr(line, '=');
                if (!eq) {
                        fprintf(stderr, _("%s: %s:%zu: expected key=value\n"), PROGRAM, path, i + 1);
                        return -EINVAL;
                }
                *eq = '\0';
                char *key = g_strstrip(line), *value = g_strstrip(eq + 1);
                if (!in_list(answer_keys, key)) {
                        fprintf(stderr, _("%s: %s:%zu: unknown key: %s\n"), PROGRAM, path, i + 1, key);
                        return -EINVAL;
                }
                GPtrArray *values = g_hash_table_lookup(s->answers, key);
                if (!values) {
                        values = g_ptr_array_new_with_free_func(g_free);
                        g_hash_table_insert(s->answers, g_strdup(key), values);
                } else if (!in_list(repeatable_keys, key))
                        g_ptr_array_set_size(values, 0);   /* the last one wins */
                g_ptr_array_add(values, g_strdup(value));
        }
        return 0;
}

static GPtrArray *answers_all(const Setup *s, const char *key) {
        return s->answers ? g_hash_table_lookup(s->answers, key) : NULL;
}

static const char *answer(const Setup *s, const char *key) {
        GPtrArray *v = answers_all(s, key);
        return v && v->len > 0 ? v->pdata[v->len - 1] : NULL;
}

/* ---- asking ---- */

static void page(const Setup *s, const char *title) {
        if (!s->batch)
                printf("\n== %s ==\n", title);
}

static int read_line(bool secret, char **ret) {
        struct termios saved, quiet;
        bool tty = secret && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
        char *line = NULL;
        size_t size = 0;

        fflush(stdout);
        if (tty) {
                quiet = saved;
                quiet.c_lflag &= ~(tcflag_t) ECHO;
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        ssize_t n = getline(&line, &size, stdin);
        if (tty) {
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
                printf("\n");
        }
        if (n < 0) {
                free(line);
                return -ENODATA;
        }
        if (n > MAX_ANSWER) {
                explicit_bzero(line, (size_t) n);
                free(line);
                return -E2BIG;
        }
        g_strchomp(line);
        *ret = g_strdup(line);
        explicit_bzero(line, (size_t) n);
        free(line);
        return 0;
}

static int no_answer(int r) {
        fprintf(stderr, "\n%s: %s\n", PROGRAM, r == -E2BIG ? _("the answer is too long") : _("no answer (end of input): nothing was written"));
        return -ECANCELED;
}

/* One answer: from the answers file (or the default), or asked with the default in brackets. */
static int ask(const Setup *s, const char *key, const char *question, const char *def, bool secret, char **ret) {
        if (s->batch) {
                const char *a = answer(s, key);
                *ret = g_strdup(a ? a : def ? def : "");
                return 0;
        }
        if (def && *def && !secret)
                printf("%s [%s]: ", question, def);
        else
                printf("%s: ", question);
        g_autofree char *line = NULL;
        int r = read_line(secret, &line);
        if (r < 0)
                return no_answer(r);
        g_strstrip(line);
        *ret = g_strdup(*line ? line : def ? def : "");
        return 0;
}

/* A bad answer: asked again at the terminal, fatal in an answers file. */
static int bad_answer(const Setup *s, const char *key, const char *fmt, ...) _printf_(3, 4);
static int bad_answer(const Setup *s, const char *key, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        g_autofree char *msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        if (s->batch) {
                fprintf(stderr, "%s: %s: %s\n", PROGRAM, key, msg);
                return -EINVAL;
        }
        printf("  %s\n", msg);
        return 0;
}

static bool parse_yes_no(const char *a, bool *ret) {
        static const char *const yes[] = { "y", "yes", "true", "1", "on", NULL };
        static const char *const no[] = { "n", "no", "false", "0", "off", NULL };
        g_autofree char *l = g_ascii_strdown(a, -1);
        if (in_list(yes, l) || g_ascii_strcasecmp(a, _("y")) == 0 || g_ascii_strcasecmp(a, _("yes")) == 0)
                *ret = true;
        else if (in_list(no, l) || g_ascii_strcasecmp(a, _("n")) == 0 || g_ascii_strcasecmp(a, _("no")) == 0)
                *ret = false;
        else
                return false;
        return true;
}

static int ask_yes_no(const Setup *s, const char *key, const char *question, bool def, bool *ret) {
        for (;;) {
                g_autofree char *a = NULL;
                int r = ask(s, key, question, def ? _("yes") : _("no"), false, &a);
                if (r < 0)
                        return r;
                if (parse_yes_no(a, ret))
                        return 0;
                r = bad_answer(s, key, _("please answer yes or no, not \"%s\""), a);
                if (r < 0)
                        return r;
        }
}

/* One of names[]: by number or by name. */
static int ask_choice(const Setup *s, const char *key, const char *question, const char *const *names,
                      const char *const *help, size_t n, size_t def, size_t *ret) {
        if (!s->batch)
                for (size_t i = 0; i < n; i++)
                        printf("  %zu) %-18s %s\n", i + 1, names[i], _(help[i]));
        for (;;) {
                g_autofree char *a = NULL;
                int r = ask(s, key, question, names[def], false, &a);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++) {
                        char num[24];
                        snprintf(num, sizeof num, "%zu", i + 1);
                        if (g_ascii_strcasecmp(a, names[i]) == 0 || strcmp(a, num) == 0) {
                                *ret = i;
                                return 0;
                        }
                }
                g_autoptr(GString) all = g_string_new(NULL);
                for (size_t i = 0; i < n; i++)
                        g_string_append_printf(all, "%s%s", i ? ", " : "", names[i]);
                r = bad_answer(s, key, _("\"%s\" is not one of: %s"), a, all->str);
                if (r < 0)
                        return r;
        }
}

static bool parse_uint(const char *a, unsigned min, unsigned max, unsigned *ret) {
        char *end;
        if (!g_ascii_isdigit(*a))
                return false;
        errno = 0;
        unsigned long v = strtoul(a, &end, 10);
        if (errno || *end || v < min || v > max)
                return false;
        *ret = (unsigned) v;
        return true;
}

static int ask_number(const Setup *s, const char *key, const char *question, unsigned def, unsigned min,
                      unsigned max, unsigned *ret) {
        char d[16];
        snprintf(d, sizeof d, "%u", def);
        for (;;) {
                g_autofree char *a = NULL;
                int r = ask(s, key, question, d, false, &a);
                if (r < 0)
                        return r;
                if (parse_uint(a, min, max, ret))
                        return 0;
                r = bad_answer(s, key, _("\"%s\" is not a number from %u to %u"), a, min, max);
                if (r < 0)
                        return r;
        }
}

/* A problem found while checking an answer. Returns 1 to go on with it, 0 to ask again, or
 * -ECANCELED (answers file without on-warning=continue). */
static int warn(const Setup *s, const char *key, const char *problem) {
        if (s->batch) {
                fprintf(stderr, "%s: %s: %s\n", PROGRAM, key, problem);
                if (s->go_on) {
                        fprintf(stderr, _("%s: going on anyway (on-warning=continue)\n"), PROGRAM);
                        return 1;
                }
                fprintf(stderr, _("%s: stopped; nothing was written (on-warning=continue in the answers file goes on anyway)\n"),
                        PROGRAM);
                return -ECANCELED;
        }
        printf(_("  Problem: %s\n"), problem);
        bool yes;
        int r = ask_yes_no(s, key, _("  Go on anyway?"), false, &yes);
        if (r < 0)
                return r;
        return yes ? 1 : 0;
}

/* ---- checks ---- */

static char *check_port_free(const char *interface, unsigned port) {
        struct {
                int family;
                const char *addr;
        } tries[] = { { AF_INET, "0.0.0.0" }, { AF_INET6, "::" } };
        size_t n = ELEMENTSOF(tries);
        struct in6_addr a6;
        struct in_addr a4;

        if (interface && *interface) {
                tries[0].family = inet_pton(AF_INET6, interface, &a6) == 1 ? AF_INET6 : AF_INET;
                tries[0].addr = interface;
                n = 1;
                if (tries[0].family == AF_INET && inet_pton(AF_INET, interface, &a4) != 1)
                        return NULL;  /* an interface name: systemd's business */
        }
        for (size_t i = 0; i < n; i++) {
                _cleanup_close_ int fd = socket(tries[i].family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        continue;
                int one = 1;
                (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
                int r;
                if (tries[i].family == AF_INET6) {
                        (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
                        struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t) port) };
                        (void) inet_pton(AF_INET6, tries[i].addr, &sa.sin6_addr);
                        r = bind(fd, (struct sockaddr *) &sa, sizeof sa);
                } else {
                        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
                        (void) inet_pton(AF_INET, tries[i].addr, &sa.sin_addr);
                        r = bind(fd, (struct sockaddr *) &sa, sizeof sa);
                }
                if (r < 0 && errno == EADDRINUSE)
                        return g_strdup_printf(_("port %u is in use on this host: another program listens on it"), port);
        }
        return NULL;
}

/* Connect to host:port within the timeout; for SMTP (read_greeting) the first line must be
 * 220. NULL when it answers, else what went wrong. */
static char *check_answers(const char *hostport, const char *default_port, bool read_greeting) {
        g_autofree char *host = NULL, *port = NULL;
        const char *colon = strrchr(hostport, ':');
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;

        if (colon && colon != hostport) {
                host = g_strndup(hostport, (size_t) (colon - hostport));
                port = g_strdup(colon + 1);
        } else {
                host = g_strdup(hostport);
                port = g_strdup(default_port);
        }
        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
                char *h = g_strndup(host + 1, strlen(host) - 2);
                g_free(host);
                host = h;
        }
        int r = getaddrinfo(host, port, &hints, &ai);
        if (r != 0)
                return g_strdup_printf(_("%s does not answer: cannot resolve %s: %s"), hostport, host, gai_strerror(r));
        int err = ECONNREFUSED;
        char *problem = NULL;
        for (struct addrinfo *p = ai; p; p = p->ai_next) {
                _cleanup_close_ int fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        continue;
                if (connect(fd, p->ai_addr, p->ai_addrlen) < 0 && errno != EINPROGRESS) {
                        err = errno;
                        continue;
                }
                struct pollfd pfd = { .fd = fd, .events = POLLOUT };
                if (poll(&pfd, 1, CHECK_TIMEOUT_MS) <= 0) {
                        err = ETIMEDOUT;
                        continue;
                }
                int soerr = 0;
                socklen_t len = sizeof soerr;
                (void) getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
                if (soerr) {
                        err = soerr;
                        continue;
                }
                if (!read_greeting) {
                        err = 0;
                        break;
                }
                char buf[512];
                size_t have = 0;
                pfd.events = POLLIN;
                while (have < sizeof buf - 1 && !memchr(buf, '\n', have)) {
                        if (poll(&pfd, 1, CHECK_TIMEOUT_MS) <= 0)
                                break;
                        ssize_t k = read(fd, buf + have, sizeof buf - 1 - have);
                        if (k <= 0)
                                break;
                        have += (size_t) k;
                }
                buf[have] = '\0';
                char *nl = strpbrk(buf, "\r\n");
                if (nl)
                        *nl = '\0';
                if (strncmp(buf, "220", 3) == 0) {
                        err = 0;
                        break;
                }
                problem = have ? g_strdup_printf(_("%s answers, but not as an SMTP server: \"%s\""), hostport, buf)
                               : g_strdup_printf(_("%s accepts connections but sends no SMTP greeting"), hostport);
                err = 0;
                break;
        }
        freeaddrinfo(ai);
        if (problem)
                return problem;
        if (err)
                return g_strdup_printf(_("%s does not answer: %s"), hostport, g_strerror(err));
        return NULL;
}

static char *check_certificate(const char *path) {
        gnutls_certificate_credentials_t cred;
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        if (path[0] != '/')
                return g_strdup_printf(_("%s: give the absolute path"), path);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return g_strdup_printf(_("cannot read the certificate %s: %s"), path, g_strerror(errno));
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
                return g_strdup_printf(_("cannot read the certificate %s: %s"), path, g_strerror(EISDIR));
        char byte;
        if (read(fd, &byte, 1) < 0)
                return g_strdup_printf(_("cannot read the certificate %s: %s"), path, g_strerror(errno));
        if (gnutls_certificate_allocate_credentials(&cred) < 0)
                return g_strdup(_("out of memory"));
        int r = gnutls_certificate_set_x509_key_file(cred, path, path, GNUTLS_X509_FMT_PEM);
        gnutls_certificate_free_credentials(cred);
        if (r < 0)
                return g_strdup_printf(_("%s is not a PEM file with a private key and its certificate: %s"), path,
                                       gnutls_strerror(r));
        return NULL;
}

/* NULL when fine; else the problem, *ret_fatal when it cannot work at all. */
static char *check_filter(const char *spec, bool *ret_fatal) {
        *ret_fatal = false;
        if (g_str_has_prefix(spec, "spam:") || g_str_has_prefix(spec, "spam-edit:")) {
                const char *addr = strchr(spec, ':') + 1;
                if (addr[0] == '/')
                        return access(addr, W_OK) < 0 ? g_strdup_printf(_("spamd socket %s: %s"), addr, g_strerror(errno))
                                                      : NULL;
                g_autofree char *problem = check_answers(addr, "783", false);
                return problem ? g_strdup_printf(_("spamd: %s"), problem) : NULL;
        }
        if (spec[0] == '/') {
                if (access(spec, X_OK) < 0)
                        return g_strdup_printf(_("the filter %s cannot be run: %s"), spec, g_strerror(errno));
                return NULL;
        }
        const char *colon = strchr(spec, ':');
        if (colon && colon != spec) {
                for (const char *p = spec; p < colon; p++)
                        if (!g_ascii_isalnum(*p) && *p != '-')
                                goto bad;
                return NULL;  /* a built-in: exit:, net:, copy:, msgid: ... */
        }
bad:
        *ret_fatal = true;
        return g_strdup_printf(_("\"%s\" is neither the absolute path of a program nor a built-in such as spam-edit:127.0.0.1:783"),
                               spec);
}

/* ---- DNS block lists ---- */

/* A list's zone: a domain name such as zen.spamhaus.org, two labels or more of letters, digits,
 * '-' and '_', the last not all digits (that would be an address). */
static bool valid_zone(const char *z) {
        size_t n = strlen(z), label = 0;
        const char *last = strrchr(z, '.');

        if (n == 0 || n > DNSBL_ZONE_MAX || !last)
                return false;
        for (size_t i = 0; i <= n; i++) {
                if (i == n || z[i] == '.') {
                        if (label == 0 || label > 63 || z[i - 1] == '-' || z[i - label] == '-')
                                return false;
                        label = 0;
                } else if (g_ascii_isalnum(z[i]) || z[i] == '-' || z[i] == '_')
                        label++;
                else
                        return false;
        }
        return strspn(last + 1, "0123456789") != strlen(last + 1);
}

/* The daemon's test for a zone field of a dnsbl spec, so that a spec reads back as it parses:
 * not a number, no ':' or brackets, and the last label not a number. */
static bool looks_like_zone(const char *f) {
        const char *digits = f[0] == '-' || f[0] == '+' ? f + 1 : f;
        const char *dot = strrchr(f, '.');
        const char *last = dot ? dot + 1 : f;

        if (strpbrk(f, ":[]") || (*digits && strspn(digits, "0123456789") == strlen(digits)))
                return false;
        return *last == '\0' || strspn(last, "0123456789") != strlen(last);
}

/* A comma list of zones with the blanks around the commas dropped; NULL if one is not a domain
 * name, with *ret_bad that one ("" when the list is empty). */
static char *zones_parse(const char *list, char **ret_bad) {
        g_auto(GStrv) zones = g_strsplit(list, ",", -1);

        for (size_t i = 0; zones[i]; i++)
                if (!valid_zone(g_strstrip(zones[i]))) {
                        *ret_bad = g_strdup(zones[i]);
                        return NULL;
                }
        if (!zones[0]) {
                *ret_bad = g_strdup("");
                return NULL;
        }
        return g_strjoinv(",", zones);
}

static unsigned zones_count(const char *list) {
        unsigned n = 1;
        for (const char *p = list; *p; p++)
                n += *p == ',';
        return n;
}

/* A DNS server as --dnsbl takes it: a numeric address and an optional port, "192.0.2.53",
 * "192.0.2.53:53", "[2001:db8::53]:53", "[::1]" or "::1". */
static bool valid_dns_server(const char *a) {
        g_autofree char *host = NULL;
        const char *port = NULL, *colon = strchr(a, ':');
        struct in6_addr addr;
        unsigned p;

        if (a[0] == '[') {
                const char *e = strchr(a, ']');
                if (!e || (e[1] && e[1] != ':'))
                        return false;
                host = g_strndup(a + 1, (size_t) (e - a - 1));
                port = e[1] ? e + 2 : NULL;
                if (inet_pton(AF_INET6, host, &addr) != 1)
                        return false;
        } else if (colon && strchr(colon + 1, ':'))
                return inet_pton(AF_INET6, a, &addr) == 1;
        else {
                host = colon ? g_strndup(a, (size_t) (colon - a)) : g_strdup(a);
                port = colon ? colon + 1 : NULL;
                if (inet_pton(AF_INET, host, &addr) != 1)
                        return false;
        }
        return !port || parse_uint(port, 1, 65535, &p);
}

/* Takes a dnsbl spec into the page's answers, all or nothing: "zone,...[,threshold[,timeout_ms
 * [,server]]]", or E-MailRelay's older "server,timeout_ms,threshold,zone,...". A negative
 * timeout refuses clients when the lists do not answer. NULL, or what is wrong with it. */
static char *dnsbl_spec_read(Setup *s, const char *spec) {
        g_auto(GStrv) f = g_strsplit(spec, ",", -1);
        g_autoptr(GString) zones = g_string_new(NULL);
        const char *threshold = NULL, *timeout = NULL, *server = NULL;
        size_t n = g_strv_length(f), i = 0;
        unsigned th = DNSBL_THRESHOLD, ms = DNSBL_TIMEOUT_MS;
        bool block = false;

        for (size_t k = 0; k < n; k++)
                g_strstrip(f[k]);
        if (n > 0 && !looks_like_zone(f[0])) {
                if (n < 4)
                        return g_strdup_printf(_("\"%s\" does not start with a list, e.g. zen.spamhaus.org,1,5000"), spec);
                server = f[0];
                timeout = f[1];
                threshold = f[2];
                i = 3;
        }
        for (; i < n && (server || looks_like_zone(f[i])); i++) {
                if (!valid_zone(f[i]))
                        return g_strdup_printf(_("\"%s\" is not a domain name such as zen.spamhaus.org"), f[i]);
                g_string_append_printf(zones, "%s%s", zones->len ? "," : "", f[i]);
        }
        if (!server) {
                threshold = i < n ? f[i++] : NULL;
                timeout = i < n ? f[i++] : NULL;
                server = i < n ? f[i++] : NULL;
        }
        if (zones->len == 0 || i < n)
                return g_strdup_printf(_("\"%s\" is not lists[,threshold[,timeout[,DNS server]]], e.g. zen.spamhaus.org,1,5000"),
                                       spec);
        if (threshold && !parse_uint(threshold, 0, DNSBL_ZONES_MAX, &th))
                return g_strdup_printf(_("\"%s\" is not a number of lists"), threshold);
        if (timeout) {
                block = timeout[0] == '-';
                if (!parse_uint(timeout + block, 1, DNSBL_TIMEOUT_MS_MAX, &ms))
                        return g_strdup_printf(_("\"%s\" is not a timeout in milliseconds from 1 to %u (or negative)"), timeout,
                                               DNSBL_TIMEOUT_MS_MAX);
        }
        if (server && !valid_dns_server(server))
                return g_strdup_printf(_("\"%s\" is not the address of a DNS server, such as 192.0.2.53:53"), server);
        g_free(s->dnsbl_zones);
        s->dnsbl_zones = g_string_free(TAKE_PTR(zones), false);
        s->dnsbl_threshold = th;
        s->dnsbl_timeout_ms = ms;
        s->dnsbl_block_on_timeout = block;
        g_free(s->dnsbl_server);
        s->dnsbl_server = g_strdup(server);
        return NULL;
}

static void dnsbl_off(Setup *s) {
        g_clear_pointer(&s->dnsbl_zones, g_free);
}

/* ---- reading what is there ---- */

static char *read_file(const Setup *s, const char *path) {
        g_autofree char *full = rooted(s, path);
        char *text = NULL;
        if (!g_file_get_contents(full, &text, NULL, NULL))
                return NULL;
        return text;
}

/* "name value" (or "--name=value") of a config line; NULL name for comments and blanks. */
static void conf_split(const char *line, char **ret_name, char **ret_value) {
        const char *p = line + strspn(line, " \t");
        *ret_name = *ret_value = NULL;
        if (*p == '\0' || *p == '#' || *p == '\r')
                return;
        if (g_str_has_prefix(p, "--"))
                p += 2;
        size_t n = strcspn(p, " \t=\r");
        *ret_name = g_strndup(p, n);
        p += n;
        p += strspn(p, " \t=");
        g_autofree char *v = g_strdup(p);
        g_strstrip(v);
        *ret_value = *v ? g_strdup(v) : NULL;
}

static TlsMode tls_from_flags(bool starttls, bool implicit) {
        return implicit ? TLS_IMPLICIT : starttls ? TLS_STARTTLS : TLS_NONE;
}

/* [addr:]port of a socket drop-in's last ListenStream=. */
static void read_socket_dropin(const Setup *s, const char *unit, unsigned *ret_port, char **ret_interface) {
        g_autofree char *path = unit_dropin(unit);
        g_autofree char *text = read_file(s, path);
        if (!text)
                return;
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
        for (size_t i = 0; lines[i]; i++) {
                if (!g_str_has_prefix(lines[i], "ListenStream=") || !lines[i][strlen("ListenStream=")])
                        continue;
                const char *v = lines[i] + strlen("ListenStream=");
                const char *colon = strrchr(v, ':');
                unsigned port;
                if (parse_uint(colon ? colon + 1 : v, 1, 65535, &port)) {
                        *ret_port = port;
                        g_free(*ret_interface);
                        *ret_interface = colon ? g_strndup(v, (size_t) (colon - v)) : NULL;
                        if (*ret_interface && (*ret_interface)[0] == '[') {
                                char *a = g_strndup(*ret_interface + 1, strlen(*ret_interface) - 2);
                                g_free(*ret_interface);
                                *ret_interface = a;
                        }
                }
        }
}

/* Accounts of a secrets file we wrote (or the administrator did): one per line, the user is the
 * third field, decoded. */
static void read_accounts(const Setup *s, const char *path, GPtrArray *into, char **trusted) {
        g_autofree char *text = read_file(s, path);
        if (!text)
                return;
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
        for (size_t i = 0; lines[i]; i++) {
                g_auto(GStrv) f = g_strsplit_set(g_strstrip(lines[i]), " \t", -1);
                if (!f[0] || f[0][0] == '#' || g_strv_length(f) < 4 || strcmp(f[0], "server") != 0)
                        continue;
                if (strcmp(f[1], "none") == 0) {
                        if (trusted) {
                                char *t = *trusted ? g_strconcat(*trusted, ",", f[2], NULL) : g_strdup(f[2]);
                                g_free(*trusted);
                                *trusted = t;
                        }
                        continue;
                }
                Account *a = g_new0(Account, 1);
                size_t len;
                if (xtext_decode(f[2], &a->user, &len) < 0)
                        a->user = g_strdup(f[2]);
                a->line = g_strdup(lines[i]);
                g_ptr_array_add(into, a);
        }
        explicit_bzero(text, strlen(text));
}

/* A dnsbl line of the config file into the page's defaults. One that does not read is kept as
 * it is; the daemons take the last dnsbl line, so one the page writes after it wins. */
static void dnsbl_read_line(Setup *s, const char *value, const char *line) {
        g_autofree char *problem = value ? dnsbl_spec_read(s, value) : g_strdup(_("no lists given"));
        if (!problem)
                return;
        fprintf(stderr, _("%s: warning: dnsbl: %s (the line is kept as it is)\n"), PROGRAM, problem);
        g_ptr_array_add(s->conf_kept, g_strdup(line));
}

static void read_current(Setup *s) {
        bool client_tls = false, client_implicit = false, server_tls = false, server_implicit = false;
        g_autofree char *conf = read_file(s, CONFIG_FILE);

        if (conf) {
                s->have_current = true;
                g_auto(GStrv) lines = g_strsplit(conf, "\n", -1);
                size_t n = g_strv_length(lines);
                if (n > 0 && lines[n - 1][0] == '\0')
                        n--;   /* the final newline */
                for (size_t i = 0; i < n; i++) {
                        g_autofree char *name = NULL, *value = NULL;
                        if (g_str_has_prefix(lines[i], MARKER)) {
                                s->immediate = strstr(lines[i], "forward-immediately=yes") != NULL;
                                for (size_t r = 0; r < _ROLE_MAX; r++) {
                                        g_autofree char *tag = g_strdup_printf("role=%s ", role_names[r]);
                                        if (strstr(lines[i], tag))
                                                s->role = (Role) r;
                                }
                                continue;
                        }
                        conf_split(lines[i], &name, &value);
                        if (!name || !in_list(managed_options, name)) {
                                g_ptr_array_add(s->conf_kept, g_strdup(lines[i]));
                                continue;
                        }
                        unsigned port;
                        if (strcmp(name, "port") == 0 && value && parse_uint(value, 1, 65535, &port))
                                s->smtp_port = port;
                        else if (strcmp(name, "pop-port") == 0 && value && parse_uint(value, 1, 65535, &port))
                                s->pop_port = port;
                        else if (strcmp(name, "interface") == 0 && value)
                                g_free(s->interface), s->interface = g_strdup(value);
                        else if (strcmp(name, "remote-clients") == 0)
                                s->remote_clients = true;
                        else if (strcmp(name, "forward-to") == 0 && value)
                                g_free(s->next_hop), s->next_hop = g_strdup(value);
                        else if (strcmp(name, "client-tls") == 0)
                                client_tls = true;
                        else if (strcmp(name, "client-tls-connection") == 0)
                                client_implicit = true;
                        else if (strcmp(name, "server-tls") == 0)
                                server_tls = true;
                        else if (strcmp(name, "server-tls-connection") == 0)
                                server_implicit = true;
                        else if (strcmp(name, "server-tls-required") == 0)
                                s->server_tls_required = true;
                        else if (strcmp(name, "filter") == 0 && value)
                                g_ptr_array_add(s->filters, g_strdup(value));
                        else if (strcmp(name, "dnsbl") == 0)
                                dnsbl_read_line(s, value, lines[i]);
                        else if (strcmp(name, "retry-schedule") == 0 && value)
                                g_free(s->retry_schedule), s->retry_schedule = g_strdup(value);
                        else if (strcmp(name, "retry-give-up") == 0 && value)
                                g_free(s->retry_give_up), s->retry_give_up = g_strdup(value);
                        else if (strcmp(name, "verbose") == 0)
                                s->verbose = true;
                }
                /* Say so if the file does not parse now: its lines are kept as they are. */
                Options o;
                g_autofree char *error = NULL;
                g_autofree char *origin = rooted(s, CONFIG_FILE);
                options_init(&o, emailrelay_options, PROG_ALL_DAEMONS);
                if (options_parse_config_string(&o, conf, origin, &error) < 0)
                        fprintf(stderr, _("%s: warning: %s (the line is kept as it is)\n"), PROGRAM, error);
                options_done(&o);
        }
        s->client_tls = tls_from_flags(client_tls, client_implicit);
        s->server_tls = tls_from_flags(server_tls, server_implicit);

        read_socket_dropin(s, "emailrelay-smtpd.socket", &s->smtp_port, &s->interface);
        g_autofree char *pop_if = NULL;
        unsigned pop_port = 0;
        read_socket_dropin(s, "emailrelay-pop3d.socket", &pop_port, &pop_if);
        if (pop_port) {
                s->pop_port = pop_port;
                s->serve_pop = true;
        }
        s->cur_smtp_port = s->smtp_port;
        s->cur_pop_port = s->pop_port;
        s->cur_interface = g_strdup(s->interface);

        /* The certificate's path is in the credential of the SMTP (or POP) service. */
        const char *services[] = { "emailrelay-smtpd.service", "emailrelay-pop3d.service" };
        for (size_t u = 0; u < ELEMENTSOF(services) && !s->certificate; u++) {
                g_autofree char *path = unit_dropin(services[u]);
                g_autofree char *text = read_file(s, path);
                const char *c = text ? strstr(text, "LoadCredential=tls.pem:") : NULL;
                if (c) {
                        c += strlen("LoadCredential=tls.pem:");
                        s->certificate = g_strndup(c, strcspn(c, "\n"));
                }
        }
        {
                g_autofree char *path = unit_dropin("emailrelay-forward.timer");
                g_autofree char *text = read_file(s, path);
                g_auto(GStrv) lines = g_strsplit(text ? text : "", "\n", -1);
                for (size_t i = 0; lines[i]; i++) {
                        unsigned poll;
                        if (!g_str_has_prefix(lines[i], "OnUnitInactiveSec="))
                                continue;
                        g_autofree char *v = g_strndup(lines[i] + strlen("OnUnitInactiveSec="),
                                                       strcspn(lines[i] + strlen("OnUnitInactiveSec="), "s"));
                        if (parse_uint(v, 1, 86400, &poll))
                                s->poll = poll;
                }
        }

        /* PAM instead of a list: the daemon's command line in the service drop-in says so. */
        {
                g_autofree char *path = unit_dropin("emailrelay-smtpd.service");
                g_autofree char *text = read_file(s, path);
                s->server_pam = text && strstr(text, "--server-auth=pam:");
                g_free(path);
                g_free(text);
                path = unit_dropin("emailrelay-pop3d.service");
                text = read_file(s, path);
                s->pop_pam = text && strstr(text, "--pop-auth=pam:");
        }

        read_accounts(s, SECRETS_DIR "/server.auth", s->server_accounts, &s->trusted);
        read_accounts(s, SECRETS_DIR "/pop.auth", s->pop_accounts, NULL);
        for (size_t i = 0; i < s->server_accounts->len; i++)
                if (!strstr(((Account *) s->server_accounts->pdata[i])->line, " md5 "))
                        s->server_md5 = false;
        if (s->pop_accounts->len > 0 && !pop_port && s->role == ROLE_POP_ONLY)
                s->serve_pop = true;

        g_autofree char *client = read_file(s, SECRETS_DIR "/client.auth");
        if (client) {
                g_auto(GStrv) lines = g_strsplit(client, "\n", -1);
                for (size_t i = 0; lines[i] && !s->client_line; i++) {
                        g_auto(GStrv) f = g_strsplit_set(g_strstrip(lines[i]), " \t", -1);
                        if (g_strv_length(f) < 4 || strcmp(f[0], "client") != 0)
                                continue;
                        size_t len;
                        if (xtext_decode(f[2], &s->client_user, &len) < 0)
                                s->client_user = g_strdup(f[2]);
                        s->client_auth = strcmp(f[1], "oauth") == 0 ? AUTH_OAUTH : AUTH_PASSWORD;
                        s->client_line = g_strdup(lines[i]);
                }
                explicit_bzero(client, strlen(client));
        }
}

/* ---- the pages ---- */

static int page_role(Setup *s) {
        size_t role;
        int r;

        page(s, _("Role"));
        r = ask_choice(s, "role", _("What should this relay do?"), role_names, role_help, _ROLE_MAX, s->role, &role);
        if (r < 0)
                return r;
        s->role = (Role) role;
        if (s->role == ROLE_POP_ONLY)
                s->serve_pop = true;
        else if (s->role == ROLE_PROXY || s->role == ROLE_FILTER_HOST)
                s->serve_pop = false;
        else {
                r = ask_yes_no(s, "serve-pop", _("Serve the spool to POP3 clients too?"), s->serve_pop, &s->serve_pop);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int ask_port_checked(Setup *s, const char *key, const char *question, unsigned *port, unsigned current) {
        for (;;) {
                int r = ask_number(s, key, question, *port, 1, 65535, port);
                if (r < 0)
                        return r;
                /* The port this setup already configured is in use by our own socket unit. */
                if (*port == current && g_strcmp0(s->interface, s->cur_interface) == 0)
                        return 0;
                g_autofree char *problem = check_port_free(s->interface, *port);
                if (!problem)
                        return 0;
                r = warn(s, key, problem);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
}

static int page_listen(Setup *s) {
        int r;

        page(s, _("Listening"));
        for (;;) {
                g_autofree char *a = NULL;
                r = ask(s, "interface", _("Listen on which address (empty: all addresses)"), s->interface, false, &a);
                if (r < 0)
                        return r;
                if (strcmp(a, "-") == 0 || strcmp(a, "*") == 0)
                        a[0] = '\0';
                struct in6_addr a6;
                if (*a && inet_pton(AF_INET, a, &a6) != 1 && inet_pton(AF_INET6, a, &a6) != 1) {
                        r = bad_answer(s, "interface", _("\"%s\" is not an IP address"), a);
                        if (r < 0)
                                return r;
                        continue;
                }
                g_free(s->interface);
                s->interface = *a ? g_strdup(a) : NULL;
                break;
        }
        if (smtp_role(s)) {
                r = ask_port_checked(s, "smtp-port", _("SMTP port"), &s->smtp_port, s->cur_smtp_port);
                if (r < 0)
                        return r;
        }
        if (s->serve_pop) {
                r = ask_port_checked(s, "pop-port", _("POP3 port"), &s->pop_port, s->cur_pop_port);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int page_clients(Setup *s) {
        page(s, _("Remote clients"));
        if (!s->batch)
                printf("%s\n", _("Without this, only clients on loopback and private networks may connect.\n"
                                 "With it, anyone who can reach the port may: require accounts then."));
        return ask_yes_no(s, "remote-clients", _("Accept clients from any address?"), s->remote_clients,
                          &s->remote_clients);
}

static int page_next_hop(Setup *s) {
        size_t preset = 0, choice;
        int r;

        page(s, _("Next hop"));
        r = ask_choice(s, "next-hop-preset", _("Preset"), preset_names, preset_help, ELEMENTSOF(preset_names), 0,
                       &preset);
        if (r < 0)
                return r;
        const char *default_port = preset == 1 ? "587" : "25";
        for (;;) {
                g_autofree char *a = NULL;
                r = ask(s, "next-hop", _("Next hop, host:port (the server that takes all mail from here)"), s->next_hop,
                        false, &a);
                if (r < 0)
                        return r;
                if (!*a || strpbrk(a, " \t")) {
                        r = bad_answer(s, "next-hop", _("give the next hop as host:port, e.g. smtp.example.com:587"));
                        if (r < 0)
                                return r;
                        continue;
                }
                const char *colon = strrchr(a, ':');
                unsigned port;
                g_free(s->next_hop);
                if (!colon || strchr(a, '@'))
                        s->next_hop = colon ? g_strdup(a) : g_strdup_printf("%s:%s", a, default_port);
                else if (!parse_uint(colon + 1, 1, 65535, &port)) {
                        s->next_hop = NULL;
                        r = bad_answer(s, "next-hop", _("\"%s\" is not a port number"), colon + 1);
                        if (r < 0)
                                return r;
                        continue;
                } else
                        s->next_hop = g_strdup(a);
                break;
        }
        TlsMode def_tls = preset == 1 ? TLS_STARTTLS : s->client_tls;
        if (preset == 0 && g_str_has_suffix(s->next_hop, ":465"))
                def_tls = TLS_IMPLICIT;
        r = ask_choice(s, "next-hop-tls", _("TLS to the next hop"), tls_names, tls_help, _TLS_MAX, def_tls, &choice);
        if (r < 0)
                return r;
        s->client_tls = (TlsMode) choice;

        /* Through a SOCKS proxy (host:port@proxy:port) only the forwarder can tell. */
        while (!strchr(s->next_hop, '@')) {
                g_autofree char *problem = check_answers(s->next_hop, default_port, s->client_tls != TLS_IMPLICIT);
                if (!problem)
                        break;
                r = warn(s, "next-hop", problem);
                if (r < 0)
                        return r;
                if (r > 0)
                        break;
                if (s->batch)
                        return -ECANCELED;
                /* Asked again: the same page from the host on. */
                g_autofree char *a = NULL;
                r = ask(s, "next-hop", _("Next hop, host:port (the server that takes all mail from here)"), s->next_hop,
                        false, &a);
                if (r < 0)
                        return r;
                if (*a) {
                        g_free(s->next_hop);
                        s->next_hop = strrchr(a, ':') ? g_strdup(a) : g_strdup_printf("%s:%s", a, default_port);
                }
        }

        r = ask_choice(s, "next-hop-auth", _("Login at the next hop"), auth_names, auth_help, _AUTH_MAX,
                       preset == 1 ? AUTH_PASSWORD : s->client_auth, &choice);
        if (r < 0)
                return r;
        ClientAuth old_auth = s->client_auth;
        s->client_auth = (ClientAuth) choice;
        if (s->client_auth == AUTH_NONE) {
                g_clear_pointer(&s->client_line, g_free);
                return 0;
        }
        g_autofree char *user = NULL;
        for (;;) {
                r = ask(s, "next-hop-user", _("User name at the next hop"), s->client_user, false, &user);
                if (r < 0)
                        return r;
                if (*user && !strpbrk(user, " \t"))
                        break;
                r = bad_answer(s, "next-hop-user", _("a user name is needed (no spaces)"));
                if (r < 0)
                        return r;
                g_clear_pointer(&user, g_free);
        }
        bool same = s->client_line && old_auth == s->client_auth && g_strcmp0(user, s->client_user) == 0;
        g_autofree char *xuser = xtext_encode(user, strlen(user));
        g_free(s->client_user);
        s->client_user = TAKE_PTR(user);
        if (s->client_auth == AUTH_OAUTH) {
                for (;;) {
                        g_autofree char *helper = NULL;
                        r = ask(s, "next-hop-oauth-helper",
                                _("Program that prints an access token (absolute path; it gets the user name)"), NULL,
                                false, &helper);
                        if (r < 0)
                                return r;
                        if (!*helper && same)
                                return 0;
                        if (helper[0] == '/' && !strpbrk(helper, " \t")) {
                                g_free(s->client_line);
                                s->client_line = g_strdup_printf("client oauth %s exec:%s", xuser, helper);
                                if (access(helper, X_OK) < 0) {
                                        g_autofree char *problem = g_strdup_printf(_("the program %s cannot be run: %s"),
                                                                                   helper, g_strerror(errno));
                                        r = warn(s, "next-hop-oauth-helper", problem);
                                        if (r < 0)
                                                return r;
                                        if (r == 0)
                                                continue;
                                }
                                return 0;
                        }
                        r = bad_answer(s, "next-hop-oauth-helper", _("give the absolute path of a program"));
                        if (r < 0)
                                return r;
                }
        }
        for (;;) {
                g_autofree char *password = NULL;
                r = ask(s, "next-hop-password",
                        same ? _("Password (empty: keep the current one)") : _("Password (or app password)"), NULL, true,
                        &password);
                if (r < 0)
                        return r;
                if (!*password && same)
                        return 0;
                if (*password) {
                        g_autofree char *xpass = xtext_encode(password, strlen(password));
                        explicit_bzero(password, strlen(password));
                        if (s->client_line)
                                explicit_bzero(s->client_line, strlen(s->client_line));
                        g_free(s->client_line);
                        s->client_line = g_strdup_printf("client plain %s %s", xuser, xpass);
                        explicit_bzero(xpass, strlen(xpass));
                        return 0;
                }
                r = bad_answer(s, "next-hop-password", _("a password is needed"));
                if (r < 0)
                        return r;
        }
}

static int page_server_tls(Setup *s) {
        size_t choice;
        int r;

        page(s, _("Server TLS"));
        r = ask_choice(s, "server-tls", _("TLS for clients connecting here"), tls_names, tls_help, _TLS_MAX, s->server_tls,
                       &choice);
        if (r < 0)
                return r;
        s->server_tls = (TlsMode) choice;
        if (s->server_tls == TLS_NONE)
                return 0;
        for (;;) {
                g_autofree char *a = NULL;
                r = ask(s, "server-certificate", _("PEM file with the private key and the certificate chain"),
                        s->certificate, false, &a);
                if (r < 0)
                        return r;
                g_free(s->certificate);
                s->certificate = g_strdup(a);
                g_autofree char *problem = *a ? check_certificate(a) : g_strdup(_("a certificate is needed for TLS"));
                if (!problem)
                        break;
                r = warn(s, "server-certificate", problem);
                if (r < 0)
                        return r;
                if (r > 0)
                        break;
        }
        if (s->server_tls != TLS_STARTTLS)
                return 0;
        /* Passwords and mail in the clear are what STARTTLS is for: required by default for the internet. */
        return ask_yes_no(s, "server-tls-required", _("Require STARTTLS before a client may log in or send mail?"),
                          s->server_tls_required || s->remote_clients, &s->server_tls_required);
}

static Account *account_find(GPtrArray *accounts, const char *user, size_t *ret_index) {
        for (size_t i = 0; i < accounts->len; i++) {
                Account *a = accounts->pdata[i];
                if (strcmp(a->user, user) == 0) {
                        *ret_index = i;
                        return a;
                }
        }
        return NULL;
}

static char *account_line(const char *user, const char *password, bool md5) {
        g_autofree char *xuser = xtext_encode(user, strlen(user));
        if (md5) {
                SaslMd5Mask m;
                sasl_md5_mask(password, strlen(password), &m);
                g_autofree char *hash = sasl_md5_mask_encode(&m);
                explicit_bzero(&m, sizeof m);
                return g_strdup_printf("server md5 %s %s", xuser, hash);
        }
        g_autofree char *xpass = xtext_encode(password, strlen(password));
        char *line = g_strdup_printf("server plain %s %s", xuser, xpass);
        explicit_bzero(xpass, strlen(xpass));
        return line;
}

static void account_set(GPtrArray *accounts, const char *user, const char *password, bool md5) {
        size_t i;
        Account *a = account_find(accounts, user, &i);
        if (!a) {
                a = g_new0(Account, 1);
                a->user = g_strdup(user);
                g_ptr_array_add(accounts, a);
        } else
                g_free(a->line);
        a->line = account_line(user, password, md5);
}

static bool valid_user(const char *user) {
        return *user && !strpbrk(user, " \t:");
}

/* Existing accounts are kept; the answers add, change (same user) and remove them. */
static int accounts_edit(Setup *s, GPtrArray *accounts, const char *key, const char *remove_key, bool md5) {
        int r;

        if (s->batch) {
                GPtrArray *add = answers_all(s, key), *del = answers_all(s, remove_key);
                for (size_t i = 0; add && i < add->len; i++) {
                        const char *v = add->pdata[i];
                        const char *colon = strchr(v, ':');
                        g_autofree char *user = colon ? g_strndup(v, (size_t) (colon - v)) : NULL;
                        if (!colon || !valid_user(user) || !colon[1]) {
                                fprintf(stderr, _("%s: %s: give user:password, not \"%s\"\n"), PROGRAM, key, v);
                                return -EINVAL;
                        }
                        account_set(accounts, user, colon + 1, md5);
                }
                /* Removals last: an answers file that keeps an account line may still remove it. */
                for (size_t i = 0; del && i < del->len; i++) {
                        size_t idx;
                        if (account_find(accounts, del->pdata[i], &idx))
                                g_ptr_array_remove_index(accounts, (unsigned) idx);
                }
                return 0;
        }
        for (;;) {
                if (accounts->len > 0) {
                        printf("%s", _("  Accounts:"));
                        for (size_t i = 0; i < accounts->len; i++)
                                printf(" %s", ((Account *) accounts->pdata[i])->user);
                        printf("\n");
                }
                g_autofree char *user = NULL;
                r = ask(s, key, _("User name to add or change (-name removes it; empty: done)"), NULL, false, &user);
                if (r < 0)
                        return r;
                if (!*user)
                        return 0;
                if (user[0] == '-') {
                        size_t idx;
                        if (account_find(accounts, user + 1, &idx))
                                g_ptr_array_remove_index(accounts, (unsigned) idx);
                        else
                                printf(_("  There is no account %s.\n"), user + 1);
                        continue;
                }
                if (!valid_user(user)) {
                        printf(_("  \"%s\" cannot be a user name (no spaces or colons)\n"), user);
                        continue;
                }
                g_autofree char *password = NULL;
                r = ask(s, key, _("Password"), NULL, true, &password);
                if (r < 0)
                        return r;
                if (!*password) {
                        printf("%s\n", _("  An empty password is not allowed; the account was not changed."));
                        continue;
                }
                account_set(accounts, user, password, md5);
                explicit_bzero(password, strlen(password));
        }
}

/* address or address/bits, IPv4 or IPv6 */
static bool valid_network(const char *n) {
        g_autofree char *addr = g_strdup(n);
        char *slash = strchr(addr, '/');
        unsigned bits, max;
        struct in6_addr a;

        if (slash)
                *slash = '\0';
        if (inet_pton(AF_INET, addr, &a) == 1)
                max = 32;
        else if (inet_pton(AF_INET6, addr, &a) == 1)
                max = 128;
        else
                return false;
        return !slash || parse_uint(slash + 1, 0, max, &bits);
}

/* "server none" lines: clients from these networks need no login. */
static int page_trusted(Setup *s) {
        for (;;) {
                g_autofree char *a = NULL;
                int r = ask(s, "trusted-networks", _("Networks whose clients need no login (comma list such as 192.168.0.0/24; -: none)"),
                            s->trusted, false, &a);
                if (r < 0)
                        return r;
                if (strcmp(a, "-") == 0)
                        a[0] = '\0';
                g_auto(GStrv) nets = g_strsplit(a, ",", -1);
                const char *bad = NULL;
                for (size_t i = 0; nets[i] && !bad; i++)
                        if (!valid_network(g_strstrip(nets[i])))
                                bad = nets[i];
                if (!bad) {
                        g_free(s->trusted);
                        s->trusted = *a ? g_strjoinv(",", nets) : NULL;
                        return 0;
                }
                r = bad_answer(s, "trusted-networks", _("\"%s\" is not an address or a network such as 192.168.0.0/24"), bad);
                if (r < 0)
                        return r;
        }
}

/* Said on the accounts pages when PAM is chosen. */
static const char *const pam_note =
        N_("The service checks passwords with PAM's service \"emailrelay\" (/etc/pam.d/emailrelay,\n"
           "written with common-auth and common-account if it is not there) and may read\n"
           "/etc/shadow (SupplementaryGroups=shadow), as pam_unix needs in the sandbox.");

static int page_accounts(Setup *s) {
        int r;

        if (smtp_role(s)) {
                page(s, _("SMTP accounts"));
                if (!s->batch)
                        printf("%s\n", _("Clients that log in may send mail through this relay: with the accounts of\n"
                                         "this system (PAM, PLAIN only) or with accounts of their own, listed here."));
                bool pam = s->server_pam;
                r = ask_yes_no(s, "server-pam", _("Log in with the system's accounts (PAM)?"), s->server_pam, &pam);
                if (r < 0)
                        return r;
                s->server_pam = pam;
        }
        if (smtp_role(s) && s->server_pam) {
                if (!s->batch)
                        printf("%s\n", _(pam_note));
        } else if (smtp_role(s)) {
                if (!s->batch)
                        printf("%s\n", _("An md5 hash keeps the password off the disk, but clients must then use CRAM-MD5."));
                bool md5 = s->server_md5;
                r = ask_yes_no(s, "server-hash", _("Store new passwords as md5 hashes?"), s->server_md5, &md5);
                if (r < 0)
                        return r;
                s->server_md5 = md5;
                r = accounts_edit(s, s->server_accounts, "server-account", "server-account-remove", s->server_md5);
                if (r < 0)
                        return r;
                if (s->server_accounts->len > 0) {
                        r = page_trusted(s);
                        if (r < 0)
                                return r;
                }
                if (s->remote_clients && s->server_accounts->len == 0) {
                        r = warn(s, "server-account",
                                 _("anyone on the internet may send mail through this relay: remote clients without any account is an open relay"));
                        if (r < 0)
                                return r;
                        if (r == 0)
                                return page_accounts(s);
                }
        }
        if (s->serve_pop) {
                page(s, _("POP3 accounts"));
                bool pam = s->pop_pam;
                r = ask_yes_no(s, "pop-pam", _("Log in with the system's accounts (PAM)?"), s->pop_pam, &pam);
                if (r < 0)
                        return r;
                s->pop_pam = pam;
                if (pam && !s->batch)
                        printf("%s\n", _(pam_note));
        }
        if (s->serve_pop && !s->pop_pam) {
                if (!s->batch)
                        printf("%s\n", _("POP3 needs the passwords themselves (no hashes); the file is root's, mode 0600."));
                for (;;) {
                        r = accounts_edit(s, s->pop_accounts, "pop-account", "pop-account-remove", false);
                        if (r < 0)
                                return r;
                        if (s->pop_accounts->len > 0)
                                break;
                        if (s->batch) {
                                fprintf(stderr, _("%s: pop-account: POP3 needs at least one account\n"), PROGRAM);
                                return -EINVAL;
                        }
                        printf("%s\n", _("  POP3 needs at least one account."));
                }
        }
        return 0;
}

static int filters_edit(Setup *s) {
        int r;

        if (s->batch) {
                GPtrArray *f = answers_all(s, "filter");
                if (!f)
                        return 0;
                g_ptr_array_set_size(s->filters, 0);
                for (size_t i = 0; i < f->len; i++) {
                        const char *spec = f->pdata[i];
                        if (!*spec || strcmp(spec, "-") == 0)
                                continue;
                        bool fatal;
                        g_autofree char *problem = check_filter(spec, &fatal);
                        if (problem && fatal) {
                                fprintf(stderr, "%s: filter: %s\n", PROGRAM, problem);
                                return -EINVAL;
                        }
                        if (problem && (r = warn(s, "filter", problem)) < 0)
                                return r;
                        g_ptr_array_add(s->filters, g_strdup(spec));
                }
                return 0;
        }
        printf("%s\n", _("A filter runs on each message before it is accepted: a program, or a built-in such as\n"
                         "spam-edit:127.0.0.1:783 (SpamAssassin's spamd adds its headers)."));
        for (;;) {
                if (s->filters->len > 0) {
                        printf("%s", _("  Filters:"));
                        for (size_t i = 0; i < s->filters->len; i++)
                                printf(" %s", (char *) s->filters->pdata[i]);
                        printf("\n");
                }
                g_autofree char *spec = NULL;
                r = ask(s, "filter", _("Filter to add (-spec removes it; empty: done)"), NULL, false, &spec);
                if (r < 0)
                        return r;
                if (!*spec)
                        return 0;
                if (spec[0] == '-') {
                        bool found = false;
                        for (size_t i = 0; i < s->filters->len; i++)
                                if (strcmp(s->filters->pdata[i], spec + 1) == 0) {
                                        g_ptr_array_remove_index(s->filters, (unsigned) i);
                                        found = true;
                                        break;
                                }
                        if (!found)
                                printf(_("  There is no filter %s.\n"), spec + 1);
                        continue;
                }
                bool fatal;
                g_autofree char *problem = check_filter(spec, &fatal);
                if (problem && fatal) {
                        printf("  %s\n", problem);
                        continue;
                }
                if (problem) {
                        r = warn(s, "filter", problem);
                        if (r < 0)
                                return r;
                        if (r == 0)
                                continue;
                }
                g_ptr_array_add(s->filters, TAKE_PTR(spec));
        }
}

static int page_filters(Setup *s) {
        page(s, _("Filters"));
        for (;;) {
                int r = filters_edit(s);
                if (r < 0 || s->role != ROLE_FILTER_HOST || s->filters->len > 0)
                        return r;
                if (s->batch) {
                        fprintf(stderr, _("%s: filter: a filter host needs at least one filter\n"), PROGRAM);
                        return -EINVAL;
                }
                printf("%s\n", _("  A filter host needs at least one filter."));
        }
}

static int page_dnsbl(Setup *s) {
        /* emailrelay-smtpd refuses --dnsbl without --remote-clients: it never checks local and
         * private addresses, and without remote clients there are no others. */
        const char *needs_remote = _("DNSBL only checks remote clients, and this relay accepts none (the answer to "
                                     "remote clients was no): emailrelay-smtpd would not start with it. Going on "
                                     "leaves DNSBL off.");
        int r;

        page(s, _("DNS block lists"));
        if (s->batch) {
                const char *a = answer(s, "dnsbl");
                if (a && (!*a || strcmp(a, "-") == 0))
                        dnsbl_off(s);
                else if (a) {
                        g_autofree char *problem = dnsbl_spec_read(s, a);
                        if (problem)
                                return bad_answer(s, "dnsbl", "%s", problem);
                        unsigned n = zones_count(s->dnsbl_zones);
                        if (s->dnsbl_threshold > n)
                                return bad_answer(s, "dnsbl",
                                                  ngettext("a threshold of %u never refuses anyone: there is only %u list",
                                                           "a threshold of %u never refuses anyone: there are only %u lists", n),
                                                  s->dnsbl_threshold, n);
                }
                if (s->dnsbl_zones && !s->remote_clients) {
                        r = warn(s, "dnsbl", needs_remote);
                        if (r < 0)
                                return r;
                        dnsbl_off(s);
                }
                return 0;
        }

        printf("%s\n", _("A DNS block list (DNSBL) names addresses that send spam. Clients from public addresses are\n"
                         "looked up before the greeting, and refused when enough lists name them."));
        for (;;) {
                bool on = s->dnsbl_zones != NULL;
                r = ask_yes_no(s, "dnsbl", _("Check clients against DNS block lists?"), on, &on);
                if (r < 0)
                        return r;
                if (!on) {
                        dnsbl_off(s);
                        return 0;
                }
                if (s->remote_clients)
                        break;
                r = warn(s, "dnsbl", needs_remote);
                if (r < 0)
                        return r;
                if (r > 0) {
                        dnsbl_off(s);
                        return 0;
                }
        }
        for (;;) {
                g_autofree char *a = NULL, *bad = NULL, *zones = NULL;
                r = ask(s, "dnsbl", _("Block lists (comma list, e.g. zen.spamhaus.org)"), s->dnsbl_zones, false, &a);
                if (r < 0)
                        return r;
                zones = zones_parse(a, &bad);
                if (zones) {
                        g_free(s->dnsbl_zones);
                        s->dnsbl_zones = TAKE_PTR(zones);
                        break;
                }
                if (*bad)
                        r = bad_answer(s, "dnsbl", _("\"%s\" is not a domain name such as zen.spamhaus.org"), bad);
                else
                        r = bad_answer(s, "dnsbl", _("give at least one list, e.g. zen.spamhaus.org"));
                if (r < 0)
                        return r;
        }
        unsigned n = zones_count(s->dnsbl_zones);
        r = ask_number(s, "dnsbl", _("Refuse a client named by how many lists (0: only log)"),
                       MIN(s->dnsbl_threshold, n), 0, n, &s->dnsbl_threshold);
        if (r < 0)
                return r;
        r = ask_number(s, "dnsbl", _("Wait how many milliseconds for the lists to answer"), s->dnsbl_timeout_ms, 1,
                       DNSBL_TIMEOUT_MS_MAX, &s->dnsbl_timeout_ms);
        if (r < 0)
                return r;
        if (s->dnsbl_threshold == 0)
                s->dnsbl_block_on_timeout = false;
        else {
                r = ask_yes_no(s, "dnsbl", _("Refuse clients when the lists do not answer in time?"),
                               s->dnsbl_block_on_timeout, &s->dnsbl_block_on_timeout);
                if (r < 0)
                        return r;
        }
        for (;;) {
                g_autofree char *a = NULL;
                r = ask(s, "dnsbl", _("DNS server to ask, address:port (-: the one in /etc/resolv.conf)"), s->dnsbl_server,
                        false, &a);
                if (r < 0)
                        return r;
                if (!*a || strcmp(a, "-") == 0) {
                        g_clear_pointer(&s->dnsbl_server, g_free);
                        return 0;
                }
                if (valid_dns_server(a)) {
                        g_free(s->dnsbl_server);
                        s->dnsbl_server = TAKE_PTR(a);
                        return 0;
                }
                r = bad_answer(s, "dnsbl", _("\"%s\" is not the address of a DNS server, such as 192.0.2.53:53"), a);
                if (r < 0)
                        return r;
        }
}

static bool valid_schedule(const char *a) {
        if (!*a)
                return true;
        g_auto(GStrv) parts = g_strsplit(a, ",", -1);
        for (size_t i = 0; parts[i]; i++) {
                unsigned v;
                if (!parse_uint(parts[i], 1, 86400 * 30, &v))
                        return false;
        }
        return true;
}

static int page_schedule(Setup *s) {
        int r;

        page(s, _("Forwarding and retries"));
        if (s->role == ROLE_PROXY || s->role == ROLE_FILTER_HOST)
                s->immediate = true;
        else {
                r = ask_yes_no(s, "forward-immediately", _("Forward each message as soon as it is stored?"), s->immediate,
                               &s->immediate);
                if (r < 0)
                        return r;
        }
        r = ask_number(s, "poll", _("Look for mail to forward or retry every how many seconds"), s->poll, 1, 86400,
                       &s->poll);
        if (r < 0)
                return r;
        for (;;) {
                g_autofree char *a = NULL;
                r = ask(s, "retry-schedule",
                        _("Seconds between retries after a temporary failure (comma list; empty: 300,600,1200,2400,3600)"),
                        s->retry_schedule, false, &a);
                if (r < 0)
                        return r;
                if (strcmp(a, "-") == 0)
                        a[0] = '\0';
                if (valid_schedule(a)) {
                        g_free(s->retry_schedule);
                        s->retry_schedule = *a ? g_strdup(a) : NULL;
                        break;
                }
                r = bad_answer(s, "retry-schedule", _("\"%s\" is not a comma list of seconds, e.g. 60,300,900"), a);
                if (r < 0)
                        return r;
        }
        for (;;) {
                g_autofree char *a = NULL;
                unsigned v;
                r = ask(s, "retry-give-up", _("Give up on a message after how many seconds (empty: 432000, five days)"),
                        s->retry_give_up, false, &a);
                if (r < 0)
                        return r;
                if (strcmp(a, "-") == 0)
                        a[0] = '\0';
                if (!*a || parse_uint(a, 1, UINT32_MAX, &v)) {
                        g_free(s->retry_give_up);
                        s->retry_give_up = *a ? g_strdup(a) : NULL;
                        return 0;
                }
                r = bad_answer(s, "retry-give-up", _("\"%s\" is not a number of seconds"), a);
                if (r < 0)
                        return r;
        }
}

static int page_logging(Setup *s) {
        page(s, _("Logging"));
        if (!s->batch)
                printf("%s\n", _("The services log to the journal: journalctl -u 'emailrelay*'."));
        return ask_yes_no(s, "verbose", _("Verbose logging?"), s->verbose, &s->verbose);
}

/* ---- what to write ---- */

typedef struct Plan {
        GArray *files;          /* SetupFile, only those that change */
        GPtrArray *unchanged;   /* paths */
        GPtrArray *commands;    /* GStrv each */
        bool smtpd_changed, pop3d_changed, smtp_socket_changed, pop_socket_changed, conf_changed;
} Plan;

static void plan_done(Plan *p) {
        for (size_t i = 0; p->files && i < p->files->len; i++) {
                SetupFile *f = &g_array_index(p->files, SetupFile, i);
                g_free(f->path);
                if (f->content)
                        explicit_bzero(f->content, strlen(f->content));
                g_free(f->content);
        }
        if (p->files)
                g_array_unref(p->files);
        if (p->unchanged)
                g_ptr_array_unref(p->unchanged);
        if (p->commands)
                g_ptr_array_unref(p->commands);
}

/* Adds the file if its content or mode differs from what is there; returns whether it does. */
static bool plan_file(const Setup *s, Plan *p, const char *path, char *content, mode_t mode, mode_t dir_mode) {
        g_autofree char *full = rooted(s, path);
        g_autofree char *old = NULL;
        struct stat st;
        bool exists = lstat(full, &st) == 0;

        if (exists && S_ISREG(st.st_mode))
                (void) g_file_get_contents(full, &old, NULL, NULL);
        bool same = content ? old && strcmp(old, content) == 0 && (st.st_mode & 07777) == mode : !exists;
        if (old)
                explicit_bzero(old, strlen(old));
        if (same) {
                if (content) {
                        g_ptr_array_add(p->unchanged, g_strdup(path));
                        explicit_bzero(content, strlen(content));
                }
                g_free(content);
                return false;
        }
        SetupFile f = { .path = g_strdup(path), .content = content, .mode = mode, .dir_mode = dir_mode };
        g_array_append_val(p->files, f);
        return true;
}

static char *listen_stream(const char *interface, unsigned port) {
        if (!interface)
                return g_strdup_printf("%u", port);
        return strchr(interface, ':') ? g_strdup_printf("[%s]:%u", interface, port)
                                      : g_strdup_printf("%s:%u", interface, port);
}

static char *conf_text(const Setup *s) {
        GString *t = g_string_new(NULL);
        size_t n = s->conf_kept->len;

        while (n > 0 && !*(const char *) s->conf_kept->pdata[n - 1])
                n--;
        for (size_t i = 0; i < n; i++)
                g_string_append_printf(t, "%s\n", (const char *) s->conf_kept->pdata[i]);
        if (n > 0)
                g_string_append_c(t, '\n');
        g_string_append_printf(t, "%s role=%s forward-immediately=%s ---\n", MARKER, role_names[s->role],
                               s->immediate ? "yes" : "no");
        if (smtp_role(s))
                g_string_append_printf(t, "port %u\n", s->smtp_port);
        if (s->serve_pop)
                g_string_append_printf(t, "pop-port %u\n", s->pop_port);
        if (s->interface)
                g_string_append_printf(t, "interface %s\n", s->interface);
        if (s->remote_clients)
                g_string_append(t, "remote-clients\n");
        if (smtp_role(s)) {
                g_string_append_printf(t, "forward-to %s\n", s->next_hop);
                if (s->client_tls == TLS_STARTTLS)
                        g_string_append(t, "client-tls\nclient-tls-required\n");
                else if (s->client_tls == TLS_IMPLICIT)
                        g_string_append(t, "client-tls-connection\n");
        }
        if (s->server_tls != TLS_NONE) {
                g_string_append(t, s->server_tls == TLS_STARTTLS ? "server-tls\n" : "server-tls-connection\n");
                if (s->server_tls == TLS_STARTTLS && s->server_tls_required)
                        g_string_append(t, "server-tls-required\n");
                /* A relative name: the daemons find it in their credentials directory. */
                g_string_append(t, "server-tls-certificate tls.pem\n");
        }
        if (smtp_role(s)) {
                for (size_t i = 0; i < s->filters->len; i++)
                        g_string_append_printf(t, "filter %s\n", (const char *) s->filters->pdata[i]);
                if (s->dnsbl_zones) {
                        g_string_append_printf(t, "dnsbl %s,%u,%s%u", s->dnsbl_zones, s->dnsbl_threshold,
                                               s->dnsbl_block_on_timeout ? "-" : "", s->dnsbl_timeout_ms);
                        if (s->dnsbl_server)
                                g_string_append_printf(t, ",%s", s->dnsbl_server);
                        g_string_append_c(t, '\n');
                }
                if (s->retry_schedule)
                        g_string_append_printf(t, "retry-schedule %s\n", s->retry_schedule);
                if (s->retry_give_up)
                        g_string_append_printf(t, "retry-give-up %s\n", s->retry_give_up);
        }
        if (s->verbose)
                g_string_append(t, "verbose\n");
        return g_string_free(t, false);
}

static char *secrets_text(const char *what, GPtrArray *accounts, const char *trusted) {
        GString *t = g_string_new(NULL);
        g_string_append_printf(t, "# %s: %s\n", what, "written by emailrelay-setup (E-MailRelay secrets format)");
        for (size_t i = 0; i < accounts->len; i++)
                g_string_append_printf(t, "%s\n", ((Account *) accounts->pdata[i])->line);
        g_auto(GStrv) nets = g_strsplit(trusted ? trusted : "", ",", -1);
        for (size_t i = 0; nets[i]; i++)
                if (*nets[i])
                        g_string_append_printf(t, "server none %s trusted\n", nets[i]);
        return g_string_free(t, false);
}

static void add_command(Plan *p, ...) {
        va_list ap;
        GPtrArray *argv = g_ptr_array_new();
        va_start(ap, p);
        for (const char *a; (a = va_arg(ap, const char *));)
                g_ptr_array_add(argv, g_strdup(a));
        va_end(ap);
        g_ptr_array_add(argv, NULL);
        g_ptr_array_add(p->commands, g_ptr_array_free(argv, false));
}

static bool unit_enabled(const char *unit) {
        g_autofree char *out = NULL;
        int status = 0;
        const char *argv[] = { "systemctl", "is-enabled", unit, NULL };
        if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL,
                          &out, NULL, &status, NULL))
                return false;
        return g_str_has_prefix(out, "enabled");
}

static void plan_make(const Setup *s, Plan *p) {
        g_autofree char *smtp_socket = unit_dropin("emailrelay-smtpd.socket");
        g_autofree char *pop_socket = unit_dropin("emailrelay-pop3d.socket");
        g_autofree char *smtpd = unit_dropin("emailrelay-smtpd.service");
        g_autofree char *pop3d = unit_dropin("emailrelay-pop3d.service");
        g_autofree char *forward = unit_dropin("emailrelay-forward.service");
        g_autofree char *timer = unit_dropin("emailrelay-forward.timer");
        bool server_pam = smtp_role(s) && s->server_pam, pop_pam = s->serve_pop && s->pop_pam;
        bool server_auth = smtp_role(s) && !s->server_pam && s->server_accounts->len > 0;
        bool tls = s->server_tls != TLS_NONE;

        p->files = g_array_new(false, true, sizeof(SetupFile));
        p->unchanged = g_ptr_array_new_with_free_func(g_free);
        p->commands = g_ptr_array_new_with_free_func((GDestroyNotify) g_strfreev);

        /* The order is the order of the renames: the config file first. */
        p->conf_changed = plan_file(s, p, CONFIG_FILE, conf_text(s), 0644, 0755);

        /* Secrets files no longer needed stay: nothing refers to them, and they may be the
         * administrator's own. */
        bool server_secrets = server_auth && plan_file(s, p, SECRETS_DIR "/server.auth",
                                                       secrets_text("SMTP AUTH accounts", s->server_accounts, s->trusted), 0600, 0700);
        bool pop_secrets = s->serve_pop && !pop_pam && plan_file(s, p, SECRETS_DIR "/pop.auth",
                                                     secrets_text("POP3 accounts", s->pop_accounts, NULL), 0600, 0700);
        /* PAM's service file: the system's usual stack, unless the administrator has one. */
        if (server_pam || pop_pam) {
                g_autofree char *existing = read_file(s, PAM_SERVICE_FILE);
                if (!existing)
                        plan_file(s, p, PAM_SERVICE_FILE,
                                  g_strdup("# Written by emailrelay-setup: the system's accounts for SMTP AUTH and POP3.\n"
                                           "@include common-auth\n@include common-account\n"),
                                  0644, 0755);
        }
        bool client = smtp_role(s) && s->client_auth != AUTH_NONE && s->client_line;
        if (client)
                plan_file(s, p, SECRETS_DIR "/client.auth",
                          g_strdup_printf("# next hop account: written by emailrelay-setup (E-MailRelay secrets format)\n%s\n",
                                          s->client_line),
                          0600, 0700);

        char *text = NULL;
        if (smtp_role(s)) {
                g_autofree char *ls = listen_stream(s->interface, s->smtp_port);
                text = g_strdup_printf("# Written by emailrelay-setup: the SMTP port.\n[Socket]\nListenStream=\nListenStream=%s\n", ls);
        }
        p->smtp_socket_changed = plan_file(s, p, smtp_socket, text, 0644, 0755);
        text = NULL;
        if (s->serve_pop) {
                g_autofree char *ls = listen_stream(s->interface, s->pop_port);
                text = g_strdup_printf("# Written by emailrelay-setup: the POP3 port.\n[Socket]\nListenStream=\nListenStream=%s\n", ls);
        }
        p->pop_socket_changed = plan_file(s, p, pop_socket, text, 0644, 0755);

        text = NULL;
        if (smtp_role(s) && (tls || server_auth || server_pam)) {
                GString *t = g_string_new("# Written by emailrelay-setup: secrets as credentials (emailrelay.units(7)).\n[Service]\n");
                if (tls)
                        g_string_append_printf(t, "LoadCredential=tls.pem:%s\n", s->certificate);
                if (server_auth)
                        g_string_append(t, "LoadCredential=server.auth:" SECRETS_DIR "/server.auth\n"
                                           "ExecStart=\nExecStart=" SBINDIR "/emailrelay-smtpd --server-auth=%d/server.auth\n");
                if (server_pam)
                        g_string_append(t, "SupplementaryGroups=shadow\n"
                                           "ExecStart=\nExecStart=" SBINDIR "/emailrelay-smtpd --server-auth=pam:\n");
                text = g_string_free(t, false);
        }
        p->smtpd_changed = plan_file(s, p, smtpd, text, 0644, 0755) || server_secrets;
        text = NULL;
        if (s->serve_pop && (tls || pop_pam)) {
                GString *t = g_string_new(pop_pam ? "# Written by emailrelay-setup: the certificate as a credential, and PAM.\n[Service]\n" :
                                                    "# Written by emailrelay-setup: the certificate as a credential.\n[Service]\n");
                if (tls)
                        g_string_append_printf(t, "LoadCredential=tls.pem:%s\n", s->certificate);
                if (pop_pam)
                        g_string_append(t, "SupplementaryGroups=shadow\n"
                                           "ExecStart=\nExecStart=" SBINDIR "/emailrelay-pop3d --pop-auth=pam:\n");
                text = g_string_free(t, false);
        }
        p->pop3d_changed = plan_file(s, p, pop3d, text, 0644, 0755) || pop_secrets;
        text = NULL;
        if (client)
                text = g_strdup("# Written by emailrelay-setup: the next hop's account as a credential.\n[Service]\n"
                                "LoadCredential=client.auth:" SECRETS_DIR "/client.auth\n"
                                "ExecStart=\nExecStart=" SBINDIR "/emailrelay-forward --wakeup-linger 5 --client-auth=%d/client.auth\n");
        plan_file(s, p, forward, text, 0644, 0755);
        text = NULL;
        if (smtp_role(s))
                text = g_strdup_printf("# Written by emailrelay-setup: how often the forwarder runs for retries.\n[Timer]\n"
                                       "OnActiveSec=\nOnUnitInactiveSec=\nOnActiveSec=%us\nOnUnitInactiveSec=%us\nAccuracySec=1s\n",
                                       s->poll, s->poll);
        plan_file(s, p, timer, text, 0644, 0755);

        /* The units. */
        GPtrArray *units = g_ptr_array_new();
        if (smtp_role(s)) {
                g_ptr_array_add(units, (char *) "emailrelay-smtpd.socket");
                if (s->immediate)
                        g_ptr_array_add(units, (char *) "emailrelay-forward.path");
                g_ptr_array_add(units, (char *) "emailrelay-forward.timer");
        }
        if (s->serve_pop)
                g_ptr_array_add(units, (char *) "emailrelay-pop3d.socket");

        if (s->offline) {
                g_autofree char *opt = g_strdup_printf("--root=%s", s->root);
                GPtrArray *argv = g_ptr_array_new();
                g_ptr_array_add(argv, g_strdup("systemctl"));
                g_ptr_array_add(argv, g_strdup(opt));
                g_ptr_array_add(argv, g_strdup("enable"));
                for (size_t i = 0; i < units->len; i++)
                        g_ptr_array_add(argv, g_strdup(units->pdata[i]));
                g_ptr_array_add(argv, NULL);
                g_ptr_array_add(p->commands, g_ptr_array_free(argv, false));
                g_ptr_array_unref(units);
                return;
        }
        bool changed = p->files->len > 0;
        if (changed)
                add_command(p, "systemctl", "daemon-reload", NULL);
        /* A socket keeps its old port until it is stopped, and the daemon keeps the old socket. */
        if (p->smtp_socket_changed && smtp_role(s))
                add_command(p, "systemctl", "stop", "emailrelay-smtpd.service", "emailrelay-smtpd.socket", NULL);
        if (p->pop_socket_changed && s->serve_pop)
                add_command(p, "systemctl", "stop", "emailrelay-pop3d.service", "emailrelay-pop3d.socket", NULL);
        /* Moving from E-MailRelay: its spool is root's, and the services, which run as the
         * service user only, could not send what it left queued (emailrelay-queue(8)). */
        struct passwd *pw = getpwnam(SERVICE_USER);
        if (pw && spool_needs_adoption(SPOOLDIR, pw->pw_uid))
                add_command(p, "emailrelay-queue", "adopt", NULL);
        GPtrArray *argv = g_ptr_array_new();
        g_ptr_array_add(argv, g_strdup("systemctl"));
        g_ptr_array_add(argv, g_strdup("enable"));
        g_ptr_array_add(argv, g_strdup("--now"));
        for (size_t i = 0; i < units->len; i++)
                g_ptr_array_add(argv, g_strdup(units->pdata[i]));
        g_ptr_array_add(argv, NULL);
        g_ptr_array_add(p->commands, g_ptr_array_free(argv, false));
        /* Services that run keep the old settings until restarted; try-restart leaves stopped ones. */
        if (smtp_role(s) && (p->conf_changed || p->smtpd_changed))
                add_command(p, "systemctl", "try-restart", "emailrelay-smtpd.service", NULL);
        if (s->serve_pop && (p->conf_changed || p->pop3d_changed))
                add_command(p, "systemctl", "try-restart", "emailrelay-pop3d.service", NULL);
        if (!s->dry_run)
                for (size_t i = 0; managed_units[i]; i++) {
                        bool chosen = false;
                        for (size_t j = 0; j < units->len; j++)
                                chosen = chosen || strcmp(units->pdata[j], managed_units[i]) == 0;
                        if (!chosen && unit_enabled(managed_units[i]))
                                add_command(p, "systemctl", "disable", "--now", managed_units[i], NULL);
                }
        g_ptr_array_unref(units);
}

/* The file as shown on the last page: passwords and hashes replaced by stars. */
static void show_content(const SetupFile *f) {
        bool secret = f->mode == 0600;
        g_auto(GStrv) lines = g_strsplit(f->content, "\n", -1);
        for (size_t i = 0; lines[i]; i++) {
                if (!lines[i][0] && !lines[i + 1])
                        break;
                if (secret && lines[i][0] != '#') {
                        g_auto(GStrv) w = g_strsplit(lines[i], " ", 4);
                        if (g_strv_length(w) == 4 && !g_str_has_prefix(w[3], "exec:")) {
                                printf("    %s %s %s ********\n", w[0], w[1], w[2]);
                                continue;
                        }
                }
                printf("    %s\n", lines[i]);
        }
}

static void plan_show(const Setup *s, const Plan *p) {
        page(s, _("Summary"));
        if (s->dry_run)
                printf(_("Dry run: the files go under %s and no command is run.\n"), s->root);
        if (p->files->len == 0)
                printf("%s\n", _("The configuration is as answered already: no file changes."));
        for (size_t i = 0; i < p->files->len; i++) {
                const SetupFile *f = &g_array_index(p->files, SetupFile, i);
                if (!f->content) {
                        printf(_("Remove %s\n"), f->path);
                        continue;
                }
                printf(_("Write %s (mode %04o):\n"), f->path, (unsigned) f->mode);
                show_content(f);
        }
        for (size_t i = 0; i < p->unchanged->len; i++)
                printf(_("Unchanged: %s\n"), (const char *) p->unchanged->pdata[i]);
        printf("%s\n", s->dry_run ? _("Would run:") : _("Then run:"));
        for (size_t i = 0; i < p->commands->len; i++) {
                g_autofree char *cmd = g_strjoinv(" ", p->commands->pdata[i]);
                printf("    %s\n", cmd);
        }
}

static int run_commands(const Plan *p) {
        for (size_t i = 0; i < p->commands->len; i++) {
                char **argv = p->commands->pdata[i];
                g_autofree char *cmd = g_strjoinv(" ", argv);
                g_autofree char *err = NULL;
                g_autoptr(GError) error = NULL;
                int status = 0;
                printf("+ %s\n", cmd);
                fflush(stdout);
                if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, &err, &status, &error)) {
                        fprintf(stderr, _("%s: cannot run %s: %s\n"), PROGRAM, cmd, error->message);
                        return -EIO;
                }
                if (!g_spawn_check_wait_status(status, NULL)) {
                        fprintf(stderr, _("%s: %s failed: %s\n"), PROGRAM, cmd, err && *err ? g_strstrip(err) : "");
                        return -EIO;
                }
        }
        return 0;
}

/* The option table has the last word on what goes into the config file. */
static int validate_conf(const Plan *p) {
        for (size_t i = 0; i < p->files->len; i++) {
                const SetupFile *f = &g_array_index(p->files, SetupFile, i);
                if (!f->content || strcmp(f->path, CONFIG_FILE) != 0)
                        continue;
                Options o;
                g_autofree char *error = NULL;
                options_init(&o, emailrelay_options, PROG_ALL_DAEMONS);
                int r = options_parse_config_string(&o, f->content, CONFIG_FILE, &error);
                unsigned v;
                if (r >= 0)
                        r = options_get_uint(&o, "port", 1, 65535, &v, &error);
                if (r >= 0)
                        r = options_get_uint(&o, "pop-port", 1, 65535, &v, &error);
                /* As emailrelay-smtpd reads it: the DNS server is not looked up here. */
                const char *dnsbl = r >= 0 ? options_get(&o, "dnsbl") : NULL;
                if (dnsbl && !options_has(&o, "remote-clients")) {
                        error = g_strdup(_("dnsbl needs remote-clients"));
                        r = -EINVAL;
                } else if (dnsbl) {
                        DnsblConfig *c = NULL;
                        r = dnsbl_config_parse(dnsbl, "/dev/null", &c, &error);
                        dnsbl_config_free(c);
                }
                options_done(&o);
                if (r < 0) {
                        fprintf(stderr, _("%s: the new configuration would not work, nothing was written: %s\n"), PROGRAM,
                                error);
                        return r;
                }
        }
        return 0;
}

static int run(Setup *s) {
        Plan p = {};
        int r;

        read_current(s);
        if (s->batch) {
                const char *w = answer(s, "on-warning");
                if (w && strcmp(w, "continue") != 0 && strcmp(w, "stop") != 0) {
                        fprintf(stderr, _("%s: on-warning: give continue or stop, not \"%s\"\n"), PROGRAM, w);
                        return -EINVAL;
                }
                s->go_on = w && strcmp(w, "continue") == 0;
        } else {
                printf(_("emailrelay-setup %s: configures the emailrelay units. Defaults are in brackets: press Enter to keep them.\n"),
                       PACKAGE_VERSION);
                if (s->have_current)
                        printf(_("Starting from the current configuration in %s%s.\n"), s->root, CONFIG_FILE);
        }

        r = page_role(s);
        if (r >= 0)
                r = page_listen(s);
        if (r >= 0)
                r = page_clients(s);
        if (r >= 0 && smtp_role(s))
                r = page_next_hop(s);
        if (r >= 0)
                r = page_server_tls(s);
        if (r >= 0)
                r = page_accounts(s);
        if (r >= 0 && smtp_role(s))
                r = page_filters(s);
        if (r >= 0 && smtp_role(s))
                r = page_dnsbl(s);
        if (r >= 0 && smtp_role(s))
                r = page_schedule(s);
        if (r >= 0)
                r = page_logging(s);
        if (r < 0)
                return r;

        plan_make(s, &p);
        r = validate_conf(&p);
        if (r < 0)
                goto out;
        plan_show(s, &p);
        if (!s->batch) {
                bool yes;
                r = ask_yes_no(s, "confirm", s->dry_run ? _("Write these files?") : _("Write these files and run these commands?"),
                               false, &yes);
                if (r < 0)
                        goto out;
                if (!yes) {
                        printf("%s\n", _("Nothing was written."));
                        r = 0;
                        goto out;
                }
        }
        if (p.files->len > 0) {
                g_autofree char *error = NULL;
                r = setup_write_all(s->root, (SetupFile *) (void *) p.files->data, p.files->len, &error);
                if (r < 0) {
                        fprintf(stderr, _("%s: %s; the configuration was left as it was\n"), PROGRAM, error);
                        goto out;
                }
                printf(ngettext("Wrote %u file.\n", "Wrote %u files.\n", p.files->len), p.files->len);
        }
        if (!s->dry_run)
                r = run_commands(&p);
        if (r >= 0)
                printf("%s\n", _("Done."));
out:
        plan_done(&p);
        return r;
}

int main(int argc, char **argv) {
        g_autofree char *dry_run = NULL, *root = NULL, *answers = NULL, *localedir = NULL;
        gboolean version = false;
        g_autoptr(GError) error = NULL;
        Setup s = {
                .smtp_port = 25,
                .pop_port = 110,
                .poll = 60,
                .server_md5 = true,
                .immediate = true,
                .dnsbl_threshold = DNSBL_THRESHOLD,
                .dnsbl_timeout_ms = DNSBL_TIMEOUT_MS,
        };
        int r;

        setlocale(LC_ALL, "");
        for (int i = 1; i < argc - 1; i++)   /* before the help text is translated */
                if (strcmp(argv[i], "--localedir") == 0)
                        localedir = g_strdup(argv[i + 1]);
                else if (g_str_has_prefix(argv[i], "--localedir="))
                        localedir = g_strdup(argv[i] + strlen("--localedir="));
        bindtextdomain(GETTEXT_PACKAGE, localedir ? localedir : LOCALEDIR);
        bind_textdomain_codeset(GETTEXT_PACKAGE, "UTF-8");
        textdomain(GETTEXT_PACKAGE);
        g_clear_pointer(&localedir, g_free);

        GOptionEntry entries[] = {
                { "dry-run", 0, 0, G_OPTION_ARG_FILENAME, &dry_run,
                  N_("Read and write the configuration under DIR instead of /, and run no command"), N_("DIR") },
                { "root", 0, 0, G_OPTION_ARG_FILENAME, &root,
                  N_("Configure the system image under DIR: enable units with systemctl --root, start nothing"), N_("DIR") },
                { "answers", 0, 0, G_OPTION_ARG_FILENAME, &answers,
                  N_("Take the answers from FILE (key=value lines) and ask nothing"), N_("FILE") },
                { "localedir", 0, 0, G_OPTION_ARG_FILENAME, &localedir, N_("Directory of the message translations"),
                  N_("DIR") },
                { "version", 'V', 0, G_OPTION_ARG_NONE, &version, N_("Print the version and exit"), NULL },
                {}
        };
        GOptionContext *ctx = g_option_context_new(NULL);
        g_option_context_set_translation_domain(ctx, GETTEXT_PACKAGE);
        g_option_context_set_summary(ctx, _("Configures the emailrelay units: /etc/emailrelay.conf, secrets and drop-ins."));
        g_option_context_add_main_entries(ctx, entries, GETTEXT_PACKAGE);
        bool ok = g_option_context_parse(ctx, &argc, &argv, &error);
        g_option_context_free(ctx);
        if (!ok) {
                fprintf(stderr, "%s: %s\n", PROGRAM, error->message);
                return EXIT_USAGE;
        }
        if (version) {
                printf("%s %s\n", PROGRAM, PACKAGE_VERSION);
                return 0;
        }
        if (argc > 1) {
                fprintf(stderr, _("%s: unexpected argument \"%s\"\n"), PROGRAM, argv[1]);
                return EXIT_USAGE;
        }
        if (dry_run && root) {
                fprintf(stderr, _("%s: --dry-run and --root do not go together\n"), PROGRAM);
                return EXIT_USAGE;
        }
        const char *dir = dry_run ? dry_run : root;
        if (dir) {
                if (dir[0] != '/') {
                        fprintf(stderr, _("%s: %s: give an absolute directory\n"), PROGRAM, dir);
                        return EXIT_USAGE;
                }
                if (access(dir, W_OK) < 0) {
                        fprintf(stderr, _("%s: cannot write to %s: %s\n"), PROGRAM, dir, g_strerror(errno));
                        return EXIT_FAILURE_;
                }
        }
        s.root = g_strdup(dir && strcmp(dir, "/") != 0 ? dir : "");
        if (s.root[0] && g_str_has_suffix(s.root, "/"))
                s.root[strlen(s.root) - 1] = '\0';
        s.dry_run = dry_run != NULL;
        s.offline = root != NULL;
        s.conf_kept = g_ptr_array_new_with_free_func(g_free);
        s.server_accounts = g_ptr_array_new_with_free_func(account_free_void);
        s.pop_accounts = g_ptr_array_new_with_free_func(account_free_void);
        s.filters = g_ptr_array_new_with_free_func(g_free);
        if (answers) {
                s.batch = true;
                r = answers_load(&s, answers);
                if (r < 0) {
                        setup_done(&s);
                        return r == -EINVAL ? EXIT_USAGE : EXIT_FAILURE_;
                }
        }
        if (!s.dry_run && !s.offline && geteuid() != 0)
                fprintf(stderr, _("%s: warning: not running as root; writing %s will fail (try --dry-run DIR)\n"), PROGRAM,
                        CONFIG_FILE);

        r = run(&s);
        setup_done(&s);
        if (r == -EINVAL)
                return EXIT_USAGE;
        return r < 0 ? EXIT_FAILURE_ : 0;
}
