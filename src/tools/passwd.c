/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emailrelay-passwd: reads a password and prints the form a secrets file takes, by default
 * E-MailRelay's md5 hash (HMAC-MD5 key state, usable with CRAM-MD5 only). */

#include <errno.h>
#include <glib/gi18n.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "config.h"
#include "macro.h"
#include "options.h"
#include "sasl.h"
#include "xtext.h"

#define PROGRAM "emailrelay-passwd"
#define EXIT_USAGE 2
#define MAX_PASSWORD 4096

static const OptionDef passwd_options[] = {
        { "hash", 'H', OPTION_ARG_REQUIRED, "<function>", PROG_PASSWD, false, false, false,
          N_("Hash function: md5 (the default) or none (prints the password as xtext, for \"plain\" lines)") },
        { "password", 'p', OPTION_ARG_REQUIRED, "<password>", PROG_PASSWD, false, false, false,
          N_("The password (default: read a line from the standard input; visible to other users in ps!)") },
        { "base64", 'b', OPTION_ARG_NONE, NULL, PROG_PASSWD, false, false, false, N_("The password is given base64-encoded") },
        { "dotted", 'd', OPTION_ARG_NONE, NULL, PROG_PASSWD, false, false, false, N_("Print the legacy dotted-decimal md5 form") },
        { "version", 'V', OPTION_ARG_NONE, NULL, PROG_PASSWD, false, false, false, N_("Print the version and exit") },
        { "help", 'h', OPTION_ARG_NONE, NULL, PROG_PASSWD, false, false, false, N_("Print this help and exit") },
        {}
};

/* One line from stdin without its line ending; no echo when stdin is a terminal. */
static int read_password(char *buf, size_t size, size_t *ret_len) {
        struct termios saved, quiet;
        bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;

        if (tty) {
                fprintf(stderr, "%s", _("password: "));
                quiet = saved;
                quiet.c_lflag &= ~(tcflag_t) ECHO;
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        char *p = fgets(buf, (int) size, stdin);
        if (tty) {
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
                fprintf(stderr, "\n");
        }
        if (!p)
                return ferror(stdin) ? -EIO : -ENODATA;
        size_t len = strlen(buf);
        if (len == size - 1 && buf[len - 1] != '\n')
                return -E2BIG;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
                buf[--len] = '\0';
        *ret_len = len;
        return 0;
}

static int run(Options *op, int argc, char **argv) {
        g_autofree char *error = NULL;
        char line[MAX_PASSWORD + 2];
        g_autofree char *decoded = NULL;
        const char *password;
        size_t len = 0;
        int r;

        r = options_parse_argv(op, argc, argv, &error);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", PROGRAM, error);
                return EXIT_USAGE;
        }
        if (options_has(op, "help")) {
                options_print_help(op, stdout, PROGRAM, "[<option> ...]", false);
                return 0;
        }
        if (options_has(op, "version")) {
                options_print_version(stdout, PROGRAM, false);
                return 0;
        }
        if (op->n_args > 0) {
                fprintf(stderr, "%s: unexpected argument \"%s\"\n", PROGRAM, op->args[0]);
                return EXIT_USAGE;
        }
        const char *hash = options_get_default(op, "hash", "md5");
        bool none = g_ascii_strcasecmp(hash, "none") == 0;
        if (!none && g_ascii_strcasecmp(hash, "md5") != 0) {
                fprintf(stderr, "%s: --hash %s: only md5 and none are supported (E-MailRelay's sha1 and sha256 hashes no longer work)\n",
                        PROGRAM, hash);
                return EXIT_USAGE;
        }

        if (options_has(op, "password")) {
                password = options_get(op, "password");
                len = strlen(password);
        } else {
                r = read_password(line, sizeof line, &len);
                if (r < 0) {
                        fprintf(stderr, "%s: %s\n", PROGRAM, r == -ENODATA ? "no password on the standard input"
                                                           : r == -E2BIG ? "the password is too long"
                                                                         : g_strerror(-r));
                        return 1;
                }
                password = line;
        }
        if (options_has(op, "base64")) {
                if (sasl_base64_decode(password, &decoded, &len) < 0) {
                        fprintf(stderr, "%s: the password is not valid base64\n", PROGRAM);
                        explicit_bzero(line, sizeof line);
                        return 1;
                }
                password = decoded;
        }

        if (none) {
                g_autofree char *x = xtext_encode(password, len);
                printf("%s\n", x);
        } else {
                SaslMd5Mask m;
                sasl_md5_mask(password, len, &m);
                if (options_has(op, "dotted"))
                        printf("%u.%u.%u.%u.%u.%u.%u.%u\n", m.inner[0], m.inner[1], m.inner[2], m.inner[3], m.outer[0],
                               m.outer[1], m.outer[2], m.outer[3]);
                else {
                        g_autofree char *enc = sasl_md5_mask_encode(&m);
                        printf("%s\n", enc);
                }
                explicit_bzero(&m, sizeof m);
        }
        explicit_bzero(line, sizeof line);
        if (decoded)
                explicit_bzero(decoded, len);
        return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
        Options o;

        setlocale(LC_ALL, "");
        bindtextdomain(GETTEXT_PACKAGE, LOCALEDIR);
        textdomain(GETTEXT_PACKAGE);
        options_init(&o, passwd_options, PROG_PASSWD);
        int r = run(&o, argc, argv);
        options_done(&o);
        return r;
}
