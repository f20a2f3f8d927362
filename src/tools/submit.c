/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-submit: put a message from stdin or a file into the spool, durably, with
 * E-MailRelay's emailrelay-submit options. Meant to be installed setgid to the spool's group. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gi18n.h>
#include <locale.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "macro.h"
#include "options.h"
#include "spool.h"
#include "wakeup.h"
#include "xtext.h"

#define PROGRAM "emailrelay-submit"
#define EXIT_USAGE 2
#define HEADER_MAX (1024u * 1024u)

static const OptionDef submit_options[] = {
        { "spool-dir", 's', OPTION_ARG_REQUIRED, "<dir>", PROG_SUBMIT, false, false, false, N_("Spool directory (default: the configured spool)") },
        { "wakeup-file", 0, OPTION_ARG_REQUIRED, "<path>", PROG_SUBMIT, false, false, false, N_("File to create so that the forwarder runs (default: " WAKEUP_FILE " if its directory exists; none: no file)") },
        { "from", 'f', OPTION_ARG_REQUIRED, "<address>", PROG_SUBMIT, false, false, false, N_("Envelope sender (default: from the From: or Sender: header, else \"anonymous\")") },
        { "to", 0, OPTION_ARG_REQUIRED, "<address>", PROG_SUBMIT, true, false, false, N_("Envelope recipient; may repeat; trailing arguments are recipients too") },
        { "input-file", 'x', OPTION_ARG_REQUIRED, "<file>", PROG_SUBMIT, false, false, false, N_("Read the message from a file instead of stdin") },
        { "no-stdin", 'N', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Do not read stdin") },
        { "content", 'C', OPTION_ARG_REQUIRED, "<base64>", PROG_SUBMIT, true, false, false, N_("Add one content line, base64-encoded; may repeat") },
        { "body", 'B', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("The input is the body only, without headers") },
        { "content-to", 't', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Add a To: header from the envelope recipients, replacing To, Cc and Bcc") },
        { "content-from", 'F', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Add a From: header from --from, replacing From and Sender") },
        { "content-date", 'd', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Add a Date: header if missing") },
        { "content-message-id", 'I', OPTION_ARG_OPTIONAL, "<domain>", PROG_SUBMIT, false, false, false, N_("Add a Message-ID: header if missing (domain default \"local\")") },
        { "bcc-split", 'b', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Spool one message for each Bcc recipient") },
        { "copy", 'c', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Copy the envelope into every spool sub-directory (POP by name)") },
        { "auth", 'a', OPTION_ARG_REQUIRED, "<name>", PROG_SUBMIT, false, false, false, N_("Authentication name for the envelope") },
        { "from-auth-in", 'i', OPTION_ARG_REQUIRED, "<name>", PROG_SUBMIT, false, false, false, N_("MailFromAuthIn envelope field") },
        { "from-auth-out", 'o', OPTION_ARG_REQUIRED, "<name>", PROG_SUBMIT, false, false, false, N_("MailFromAuthOut envelope field") },
        { "filename", 'n', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Print the content file's name") },
        { "verbose", 'v', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Print the content file's full path") },
        { "version", 'V', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Print the version and exit") },
        { "help", 'h', OPTION_ARG_NONE, NULL, PROG_SUBMIT, false, false, false, N_("Print this help and exit") },
        {}
};

/* A header field, unfolded value kept with its original text for writing back. */
typedef struct Header {
        char *name;
        char *raw;      /* the whole field with CRLF line endings, folding kept */
        char *value;    /* unfolded value */
} Header;

static void header_clear(gpointer p) {
        Header *h = p;
        g_free(h->name);
        g_free(h->raw);
        g_free(h->value);
}

/* Input with line endings made CRLF (a lone LF becomes CRLF; CRLF stays), ending in CRLF. */
static GString *normalise(const char *data, size_t len) {
        GString *out = g_string_sized_new(len + len / 32 + 2);
        for (size_t i = 0; i < len; i++) {
                if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
                        g_string_append_c(out, '\r');
                g_string_append_c(out, data[i]);
        }
        if (out->len > 0 && !g_str_has_suffix(out->str, "\r\n"))
                g_string_append(out, "\r\n");
        return out;
}

/* Split normalised content into header fields and the body (after the blank line). */
static int split_headers(const GString *content, GArray *headers, const char **ret_body) {
        const char *p = content->str, *end = content->str + content->len;

        while (p < end) {
                const char *eol = g_strstr_len(p, end - p, "\r\n");
                if (!eol)
                        eol = end;
                if (eol == p) {  /* the blank line */
                        *ret_body = p + 2 <= end ? p + 2 : end;
                        return 0;
                }
                if ((p[0] == ' ' || p[0] == '\t') && headers->len > 0) {
                        Header *h = &g_array_index(headers, Header, headers->len - 1);
                        char *raw = g_strdup_printf("%s%.*s\r\n", h->raw, (int) (eol - p), p);
                        char *value = g_strdup_printf("%s %.*s", h->value, (int) (eol - p), p);
                        g_free(h->raw);
                        g_free(h->value);
                        h->raw = raw;
                        h->value = g_strstrip(value);
                } else {
                        const char *colon = memchr(p, ':', eol - p);
                        if (!colon || colon == p || memchr(p, ' ', colon - p)) {
                                /* Not a header field: the body starts here (no blank line). */
                                *ret_body = p;
                                return 1;
                        }
                        Header h = {
                                .name = g_strndup(p, colon - p),
                                .raw = g_strdup_printf("%.*s\r\n", (int) (eol - p), p),
                                .value = g_strstrip(g_strndup(colon + 1, eol - colon - 1)),
                        };
                        g_array_append_val(headers, h);
                }
                if ((size_t) (p - content->str) > HEADER_MAX)
                        return -E2BIG;
                p = eol + 2;
        }
        *ret_body = end;
        return 0;
}

static Header *find_header(GArray *headers, const char *name) {
        for (guint i = 0; i < headers->len; i++) {
                Header *h = &g_array_index(headers, Header, i);
                if (g_ascii_strcasecmp(h->name, name) == 0)
                        return h;
        }
        return NULL;
}

static void remove_headers(GArray *headers, const char *name) {
        for (guint i = headers->len; i > 0; i--)
                if (g_ascii_strcasecmp(g_array_index(headers, Header, i - 1).name, name) == 0)
                        g_array_remove_index(headers, i - 1);
}

static void add_header(GArray *headers, const char *name, const char *value) {
        Header h = {
                .name = g_strdup(name),
                .raw = g_strdup_printf("%s: %s\r\n", name, value),
                .value = g_strdup(value),
        };
        g_array_append_val(headers, h);
}

/* One element of an address list: "Name <a@b>" -> a@b, "a@b (comment)" -> a@b. */
static void take_address(const char *element, GPtrArray *out) {
        g_autoptr(GString) plain = g_string_new(NULL);
        const char *lt = NULL;
        int depth = 0;
        bool quoted = false;

        for (const char *p = element; *p; p++) {
                if (quoted) {
                        if (*p == '\\' && p[1])
                                p++;
                        else if (*p == '"')
                                quoted = false;
                } else if (depth > 0) {
                        depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
                } else if (*p == '"')
                        quoted = true;
                else if (*p == '(')
                        depth = 1;
                else if (*p == '<') {
                        lt = p + 1;
                        break;
                } else if (*p != ' ' && *p != '\t')
                        g_string_append_c(plain, *p);
        }
        if (lt) {
                const char *gt = strchr(lt, '>');
                if (gt && gt > lt)
                        g_ptr_array_add(out, g_strndup(lt, gt - lt));
        } else if (plain->len > 0 && strchr(plain->str, '@'))
                g_ptr_array_add(out, g_strdup(plain->str));
}

/* The addresses of an RFC 5322 address list: "Name <a@b>, c@d (comment), group: e@f;". */
static void parse_address_list(const char *value, GPtrArray *out) {
        const char *start = value;
        int depth = 0;
        bool quoted = false, angle = false;

        for (const char *p = value;; p++) {
                char c = *p;
                if (c == '\0' || (!quoted && depth == 0 && !angle && (c == ',' || c == ';' || c == ':'))) {
                        /* a ':' ends a group's display name, which is not an address */
                        if (c != ':') {
                                g_autofree char *element = g_strndup(start, p - start);
                                take_address(element, out);
                        }
                        if (c == '\0')
                                break;
                        start = p + 1;
                        continue;
                }
                if (quoted) {
                        if (c == '\\' && p[1])
                                p++;
                        else if (c == '"')
                                quoted = false;
                } else if (depth > 0)
                        depth += c == '(' ? 1 : c == ')' ? -1 : 0;
                else if (c == '"')
                        quoted = true;
                else if (c == '(')
                        depth = 1;
                else if (c == '<')
                        angle = true;
                else if (c == '>')
                        angle = false;
        }
}

static bool address_is_sane(const char *a) {
        if (isempty(a))
                return false;
        for (const char *p = a; *p; p++)
                if ((unsigned char) *p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f)
                        return false;
        return true;
}

static bool is_utf8_address(const char *a) {
        for (const char *p = a; *p; p++)
                if ((unsigned char) *p >= 0x80)
                        return true;
        return false;
}

static char *rfc5322_date(void) {
        g_autoptr(GDateTime) now = g_date_time_new_now_local();
        return g_date_time_format(now, "%a, %d %b %Y %H:%M:%S %z");
}

/* The envelope field for a user-given name: xtext, as E-MailRelay stores it. "<>" and "+" are
 * the protocol's own values and pass unchanged. */
static char *auth_field(const char *name) {
        if (!name)
                return NULL;
        if (streq(name, "<>") || streq(name, "+"))
                return g_strdup(name);
        return xtext_encode(name, strlen(name));
}

typedef struct Job {
        const char *from;
        GPtrArray *recipients;
        const GString *content;
        bool eight_bit;
        const Options *o;
} Job;

/* Copy the envelope into each sub-directory (not "postmaster", not dot-names); the content
 * stays in the main directory, shared, as --pop-by-name expects. Everything relative to the
 * spool's descriptor, never by path: setgid, a path could be switched under us (a symbolic
 * link flipped) between a check and a use. A sub-directory that is a symbolic link is not a
 * POP user's (pop3d refuses it too). */
static int copy_to_subdirs(Spool *spool, const char *id, const Envelope *e, unsigned *ret_copies) {
        g_autoptr(GString) text = envelope_to_string(e);
        g_autofree char *final = g_strconcat(id, ".envelope", NULL);
        g_autofree char *tmp = g_strconcat(id, ".envelope.new", NULL);
        unsigned copies = 0;

        int list_fd = openat(spool_dir_fd(spool), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (list_fd < 0)
                return negative_errno();
        DIR *d = fdopendir(list_fd);
        if (!d) {
                int r = negative_errno();
                safe_close(list_fd);
                return r;
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                const char *name = de->d_name;
                if (name[0] == '.' || streq(name, "postmaster"))
                        continue;
                _cleanup_close_ int sub = openat(spool_dir_fd(spool), name,
                                                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                struct stat st;
                if (sub < 0) {
                        /* ELOOP or ENOTDIR, as the kernel has it, for a link opened so. */
                        if (fstatat(spool_dir_fd(spool), name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
                                log_warning(_("%s/%s is a symbolic link: not copied into"), spool_path(spool), name);
                        continue;   /* ENOTDIR: a message file */
                }
                _cleanup_close_ int fd = openat(sub, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0660);
                if (fd < 0) {
                        r = negative_errno();
                        break;
                }
                if (fchmod(fd, 0660) < 0 || write(fd, text->str, text->len) != (ssize_t) text->len ||
                    fdatasync(fd) < 0 || renameat(sub, tmp, sub, final) < 0) {
                        r = negative_errno();
                        (void) unlinkat(sub, tmp, 0);
                        break;
                }
                (void) fsync(sub);
                copies++;
        }
        closedir(d);
        if (r < 0)
                return r;
        *ret_copies = copies;
        return 0;
}

static int spool_one(Spool *spool, const Job *job, char **ret_id) {
        g_autoptr(SpoolMessage) m = NULL;
        g_auto(Envelope) e = {};
        int r;

        r = spool_new_message(spool, &m);
        if (r < 0)
                return log_error_errno(r, _("cannot create a message in %s: %s"), spool_path(spool), g_strerror(-r));
        r = spool_message_write(m, job->content->str, job->content->len);
        if (r < 0)
                return log_error_errno(r, _("cannot write the message: %s"), g_strerror(-r));

        envelope_init(&e);
        e.body = job->eight_bit ? ENVELOPE_BODY_8BIT : ENVELOPE_BODY_7BIT;
        e.from = g_strdup(job->from);
        for (guint i = 0; i < job->recipients->len; i++) {
                g_ptr_array_add(e.to_remote, g_strdup(job->recipients->pdata[i]));
                e.utf8_mailbox_names |= is_utf8_address(job->recipients->pdata[i]);
        }
        e.utf8_mailbox_names |= is_utf8_address(job->from);
        e.client = g_strdup("127.0.0.1");
        e.authentication = auth_field(options_get(job->o, "auth"));
        e.mail_from_auth_in = auth_field(options_get(job->o, "from-auth-in"));
        e.mail_from_auth_out = auth_field(options_get(job->o, "from-auth-out"));

        r = spool_message_write_envelope(m, &e);
        if (r < 0)
                return log_error_errno(r, _("cannot write the envelope: %s"), g_strerror(-r));
        r = spool_commit_message(m);
        if (r < 0)
                return log_error_errno(r, _("cannot commit the message to %s: %s"), spool_path(spool), g_strerror(-r));

        if (options_has(job->o, "copy")) {
                unsigned copies = 0;
                r = copy_to_subdirs(spool, spool_message_id(m), &e, &copies);
                if (r < 0)
                        return log_error_errno(r, _("cannot copy the envelope into the sub-directories: %s"), g_strerror(-r));
                if (copies > 0) {
                        /* Each POP user has a copy; the main envelope would be forwarded too. */
                        g_autofree char *main_env = g_strconcat(spool_message_id(m), ".envelope", NULL);
                        (void) unlinkat(spool_dir_fd(spool), main_env, 0);
                        (void) spool_sync_dir(spool);
                } else
                        log_warning(_("no sub-directories in %s to copy into"), spool_path(spool));
        }
        *ret_id = g_strdup(spool_message_id(m));
        return 0;
}

static GString *assemble(GArray *headers, const char *body, size_t body_len) {
        GString *out = g_string_sized_new(body_len + 1024);
        for (guint i = 0; i < headers->len; i++)
                g_string_append(out, g_array_index(headers, Header, i).raw);
        g_string_append(out, "\r\n");
        g_string_append_len(out, body, body_len);
        return out;
}

static int read_input(const Options *o, GString **ret) {
        g_autoptr(GString) raw = g_string_new(NULL);
        const char *const *lines = NULL;
        g_autofree const char **content_lines = NULL;
        size_t n = options_get_all(o, "content", (const char ***) &content_lines);
        lines = content_lines;

        for (size_t i = 0; i < n; i++) {
                gsize len = 0;
                /* g_base64_decode does not validate: check the alphabet first. */
                for (const char *p = lines[i]; *p; p++)
                        if (!g_ascii_isalnum(*p) && *p != '+' && *p != '/' && *p != '=') {
                                log_error(_("invalid base64 in --content: \"%s\""), lines[i]);
                                return -EINVAL;
                        }
                g_autofree guchar *dec = g_base64_decode(lines[i], &len);
                g_string_append_len(raw, (const char *) dec, len);
                g_string_append(raw, "\r\n");
        }

        const char *file = options_get(o, "input-file");
        int fd = STDIN_FILENO;
        _cleanup_close_ int file_fd = -EBADF;
        if (file) {
                /* Installed setgid: the caller's file is opened with the caller's own group, or
                 * any user could read what only the spool's group may (other people's mail). */
                gid_t egid = getegid();
                if (egid != getgid() && setegid(getgid()) < 0) {
                        int r = negative_errno();
                        log_error(_("cannot drop the group privilege: %s"), g_strerror(-r));
                        return r;
                }
                file_fd = open(file, O_RDONLY | O_CLOEXEC);
                int saved = errno;
                if (egid != getgid() && setegid(egid) < 0) {
                        int r = negative_errno();
                        log_error(_("cannot restore the group privilege: %s"), g_strerror(-r));
                        return r;
                }
                errno = saved;
                if (file_fd < 0) {
                        int r = negative_errno();
                        log_error(_("cannot read the message: %s"), g_strerror(-r));
                        return r;
                }
                fd = file_fd;
        } else if (options_has(o, "no-stdin"))
                fd = -1;

        if (fd >= 0) {
                char buf[65536];
                for (;;) {
                        ssize_t k = read(fd, buf, sizeof buf);
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                int r = negative_errno();
                                log_error(_("cannot read the message: %s"), g_strerror(-r));
                                return r;
                        }
                        if (k == 0)
                                break;
                        g_string_append_len(raw, buf, k);
                }
        }
        *ret = normalise(raw->str, raw->len);
        return 0;
}

static char *message_id_header(const char *domain) {
        return g_strdup_printf("<%lld.%ld.%08x@%s>", (long long) time(NULL), (long) getpid(),
                               g_random_int(), isempty(domain) ? "local" : domain);
}

static int run(Options *op, int argc, char **argv) {
        g_autofree char *error = NULL;
        g_autoptr(GString) input = NULL;
        g_autoptr(GArray) headers = g_array_new(false, true, sizeof(Header));
        g_autoptr(GPtrArray) recipients = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) bcc = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(Spool) spool = NULL;
        g_autofree char *from = NULL;
        const char *body = NULL;
        int r;

        g_array_set_clear_func(headers, header_clear);
        r = options_parse_argv(op, argc, argv, &error);
        if (r < 0) {
                log_error("%s", error);
                fprintf(stderr, _("Try '%s --help' for more information.\n"), PROGRAM);
                return EXIT_USAGE;
        }
        if (options_has(op, "help")) {
                options_print_help(op, stdout, PROGRAM, "[<option> ...] [<to-address> ...]", false);
                return EXIT_SUCCESS;
        }
        if (options_has(op, "version")) {
                options_print_version(stdout, PROGRAM, false);
                return EXIT_SUCCESS;
        }

        /* Setgid, the group's privilege is for a spool only: a setgid directory of that group,
         * as the installed spool is. Anywhere else, run with the caller's own rights. The
         * directory is opened once and that descriptor checked and used (every file is made
         * relative to it): a path checked and then opened again could be a symbolic link
         * switched in between, to any directory the group can write. */
        const char *spool_dir = options_get_default(op, "spool-dir", SPOOLDIR);
        r = spool_open(spool_dir, &spool);
        if (getegid() != getgid()) {
                struct stat st;
                bool a_spool = r >= 0 && fstat(spool_dir_fd(spool), &st) == 0 && S_ISDIR(st.st_mode) &&
                               st.st_gid == getegid() && (st.st_mode & S_ISGID);
                /* Nor for creating a wake-up file of the caller's choosing. */
                if ((!a_spool || options_get(op, "wakeup-file")) && setgid(getgid()) < 0) {
                        log_error(_("cannot drop the group privilege: %s"), g_strerror(errno));
                        return EXIT_FAILURE;
                }
                if (!a_spool) {
                        /* Opened with the group's rights: open it again with the caller's. */
                        spool = spool_free(spool);
                        r = spool_open(spool_dir, &spool);
                }
        }
        if (r < 0) {
                log_error(_("cannot open the spool directory %s: %s"), spool_dir, g_strerror(-r));
                return EXIT_FAILURE;
        }
        spool_set_wakeup_file(spool, wakeup_choose(options_get(op, "wakeup-file")));

        r = read_input(op, &input);
        if (r < 0)
                return EXIT_FAILURE;

        if (options_has(op, "body"))
                body = input->str;
        else {
                r = split_headers(input, headers, &body);
                if (r == -E2BIG) {
                        log_error(_("the message's header is larger than %u bytes"), HEADER_MAX);
                        return EXIT_FAILURE;
                }
        }
        size_t body_len = input->len - (size_t) (body - input->str);

        /* Recipients: --to and trailing arguments, else the To, Cc and Bcc headers. */
        g_autofree const char **tos = NULL;
        size_t n_to = options_get_all(op, "to", &tos);
        for (size_t i = 0; i < n_to; i++)
                g_ptr_array_add(recipients, g_strdup(tos[i]));
        for (size_t i = 0; i < op->n_args; i++)
                g_ptr_array_add(recipients, g_strdup(op->args[i]));
        bool from_headers = recipients->len == 0;
        for (guint i = 0; i < headers->len; i++) {
                Header *h = &g_array_index(headers, Header, i);
                bool is_bcc = g_ascii_strcasecmp(h->name, "Bcc") == 0;
                if (is_bcc)
                        parse_address_list(h->value, bcc);
                else if (from_headers && (g_ascii_strcasecmp(h->name, "To") == 0 || g_ascii_strcasecmp(h->name, "Cc") == 0))
                        parse_address_list(h->value, recipients);
        }
        bool bcc_split = options_has(op, "bcc-split") && bcc->len > 0;
        if (from_headers && !bcc_split)
                for (guint i = 0; i < bcc->len; i++)
                        g_ptr_array_add(recipients, g_strdup(bcc->pdata[i]));
        if (recipients->len == 0 && !bcc_split) {
                log_error(_("no recipients given and none found in the headers"));
                return EXIT_FAILURE;
        }
        for (guint i = 0; i < recipients->len; i++)
                if (!address_is_sane(recipients->pdata[i])) {
                        log_error(_("invalid recipient address: \"%s\""), (char *) recipients->pdata[i]);
                        return EXIT_FAILURE;
                }

        /* Sender: --from, else the From: or Sender: header, else "anonymous". */
        if (options_get(op, "from"))
                from = g_strdup(options_get(op, "from"));
        else {
                g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(g_free);
                Header *h = find_header(headers, "From");
                if (!h)
                        h = find_header(headers, "Sender");
                if (h)
                        parse_address_list(h->value, list);
                from = g_strdup(list->len > 0 ? list->pdata[0] : "anonymous");
        }
        if (!isempty(from) && !address_is_sane(from)) {
                log_error(_("invalid sender address: \"%s\""), from);
                return EXIT_FAILURE;
        }

        /* Bcc never travels in the content (as sendmail -t). */
        remove_headers(headers, "Bcc");
        if (options_has(op, "content-from")) {
                remove_headers(headers, "From");
                remove_headers(headers, "Sender");
                add_header(headers, "From", from);
        }
        if (options_has(op, "content-to")) {
                remove_headers(headers, "To");
                remove_headers(headers, "Cc");
                g_autofree char *list = NULL;
                g_ptr_array_add(recipients, NULL);
                list = g_strjoinv(", ", (char **) recipients->pdata);
                g_ptr_array_remove_index(recipients, recipients->len - 1);
                if (!isempty(list))
                        add_header(headers, "To", list);
        }
        if (options_has(op, "content-date") && !find_header(headers, "Date")) {
                g_autofree char *date = rfc5322_date();
                add_header(headers, "Date", date);
        }
        if (options_has(op, "content-message-id") && !find_header(headers, "Message-ID")) {
                g_autofree char *mid = message_id_header(options_get(op, "content-message-id"));
                add_header(headers, "Message-ID", mid);
        }

        g_autoptr(GString) content = assemble(headers, body, body_len);
        bool eight_bit = false;
        for (size_t i = 0; i < content->len && !eight_bit; i++)
                eight_bit = (unsigned char) content->str[i] >= 0x80;

        g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
        Job job = { .from = from, .recipients = recipients, .content = content, .eight_bit = eight_bit, .o = op };
        if (recipients->len > 0) {
                char *id = NULL;
                if (spool_one(spool, &job, &id) < 0)
                        return EXIT_FAILURE;
                g_ptr_array_add(ids, id);
        }
        if (bcc_split)
                for (guint i = 0; i < bcc->len; i++) {
                        g_autoptr(GPtrArray) one = g_ptr_array_new();
                        char *id = NULL;
                        if (!address_is_sane(bcc->pdata[i])) {
                                log_error(_("invalid recipient address: \"%s\""), (char *) bcc->pdata[i]);
                                return EXIT_FAILURE;
                        }
                        g_ptr_array_add(one, bcc->pdata[i]);
                        job.recipients = one;
                        if (spool_one(spool, &job, &id) < 0)
                                return EXIT_FAILURE;
                        g_ptr_array_add(ids, id);
                }

        for (guint i = 0; i < ids->len; i++) {
                if (options_has(op, "verbose"))
                        printf("%s/%s.content\n", spool_path(spool), (char *) ids->pdata[i]);
                else if (options_has(op, "filename"))
                        printf("%s.content\n", (char *) ids->pdata[i]);
        }
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(int argc, char **argv) {
        LogConfig lc = LOG_CONFIG_DEFAULT(PROGRAM);

        setlocale(LC_ALL, "");
        bindtextdomain(GETTEXT_PACKAGE, LOCALEDIR);
        bind_textdomain_codeset(GETTEXT_PACKAGE, "UTF-8");
        textdomain(GETTEXT_PACKAGE);
        lc.journal = 0;  /* a user's command: errors go to the terminal */
        log_open(&lc);
        /* Files for the group to share, whatever the caller's umask (setgid use). */
        umask(007);

        Options o;
        options_init(&o, submit_options, PROG_SUBMIT);
        int ret = run(&o, argc, argv);
        options_done(&o);
        return ret;
}
