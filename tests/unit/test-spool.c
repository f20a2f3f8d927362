/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests for the spool: files and modes as E-MailRelay lays them out, commit, locking between
 * processes, failure reasons, and crash recovery. */

#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spool.h"

static char *tmp_spool(void) {
        GError *error = NULL;
        char *dir = g_dir_make_tmp("test-spool-XXXXXX", &error);
        g_assert_no_error(error);
        return dir;
}

static void rm_rf(const char *dir) {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
        g_assert_cmpint(system(cmd), ==, 0);
}

static char *read_file(const char *dir, const char *id, const char *suffix) {
        g_autofree char *path = g_strdup_printf("%s/%s%s", dir, id, suffix);
        char *text = NULL;
        if (!g_file_get_contents(path, &text, NULL, NULL))
                return NULL;
        return text;
}

static bool exists(const char *dir, const char *id, const char *suffix) {
        g_autofree char *path = g_strdup_printf("%s/%s%s", dir, id, suffix);
        return access(path, F_OK) == 0;
}

static void make_envelope(Envelope *e, const char *to) {
        envelope_init(e);
        e->from = g_strdup("alice@example.com");
        g_ptr_array_add(e->to_remote, g_strdup(to));
        e->client = g_strdup("127.0.0.1");
}

/* Write and commit one message; returns its id. */
static char *put_message(Spool *s, const char *body, const char *to) {
        g_autoptr(SpoolMessage) m = NULL;
        g_auto(Envelope) e = {};
        g_assert_cmpint(spool_new_message(s, &m), ==, 0);
        g_assert_cmpint(spool_message_write(m, body, strlen(body)), ==, 0);
        make_envelope(&e, to);
        g_assert_cmpint(spool_message_write_envelope(m, &e), ==, 0);
        g_assert_cmpint(spool_commit_message(m), ==, 0);
        return g_strdup(spool_message_id(m));
}

static void test_ids(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);

        g_autofree char *a = spool_make_id(s), *b = spool_make_id(s);
        g_autofree char *prefix = g_strdup_printf("emailrelay.%d.", (int) getpid());
        g_assert_true(g_str_has_prefix(a, prefix));
        g_assert_true(g_str_has_suffix(a, ".1"));
        g_assert_true(g_str_has_suffix(b, ".2"));
        g_assert_true(g_regex_match_simple("^emailrelay\\.[0-9]+\\.[0-9]+\\.[0-9]+$", a, 0, 0));

        g_assert_true(spool_id_is_valid("emailrelay.001"));
        g_assert_false(spool_id_is_valid(""));
        g_assert_false(spool_id_is_valid("../etc"));
        g_assert_false(spool_id_is_valid(".hidden"));
        g_assert_false(spool_id_is_valid("sp ace"));
        g_assert_cmpint(spool_open("/nonexistent/spool", &s), ==, -ENOENT);
        rm_rf(dir);
}

/* What a planted file cannot do: a content file or a maildrop reached through a symbolic link,
 * or a content file that is no regular file (a FIFO would hang a plain open). */
static void test_no_links_followed(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_autoptr(Spool) sub = NULL;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);
        g_autofree char *real = g_build_filename(dir, "real.content", NULL);
        g_assert_true(g_file_set_contents(real, "x\r\n", -1, NULL));
        g_autofree char *link = g_build_filename(dir, "link.content", NULL);
        g_assert_cmpint(symlink(real, link), ==, 0);
        g_autofree char *fifo = g_build_filename(dir, "fifo.content", NULL);
        g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);

        int fd = spool_open_content(s, "real");
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fcntl(fd, F_GETFL) & O_NONBLOCK, ==, 0);
        close(fd);
        g_assert_cmpint(spool_open_content(s, "link"), ==, -ELOOP);
        g_assert_cmpint(spool_open_content(s, "fifo"), ==, -EINVAL);
        g_assert_cmpint(spool_open_content(s, "missing"), ==, -ENOENT);

        g_autofree char *alice = g_build_filename(dir, "alice", NULL);
        g_assert_cmpint(mkdir(alice, 0700), ==, 0);
        g_autofree char *mallory = g_build_filename(dir, "mallory", NULL);
        g_assert_cmpint(symlink("/tmp", mallory), ==, 0);
        g_assert_cmpint(spool_open_sub(s, "alice", &sub), ==, 0);
        g_assert_cmpstr(spool_path(sub), ==, alice);
        g_assert_cmpint(spool_open_sub(s, "mallory", &sub), ==, -ELOOP);
        g_assert_cmpint(spool_open_sub(s, "real.content", &sub), ==, -ENOTDIR);
        rm_rf(dir);
}

static void test_write_commit(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_autoptr(SpoolMessage) m = NULL;
        g_auto(Envelope) e = {};
        struct stat st;

        g_assert_cmpint(spool_open(dir, &s), ==, 0);
        mode_t old = umask(022);  /* the spool's mode does not depend on the umask */
        g_assert_cmpint(spool_new_message(s, &m), ==, 0);
        umask(old);
        const char *id = spool_message_id(m);
        g_assert_true(exists(dir, id, ".content"));
        g_assert_cmpint(spool_message_write(m, "Subject: x\r\n\r\nbody\r\n", 21), ==, 0);
        make_envelope(&e, "bob@example.org");
        g_assert_cmpint(spool_message_write_envelope(m, &e), ==, 0);
        g_assert_true(exists(dir, id, ".envelope.new"));
        g_assert_false(exists(dir, id, ".envelope"));

        /* Not ready yet: a forwarder sees nothing. */
        g_autoptr(GPtrArray) ready = NULL;
        g_assert_cmpint(spool_list(s, SPOOL_STATE_READY, &ready), ==, 0);
        g_assert_cmpuint(ready->len, ==, 0);

        g_assert_cmpint(spool_commit_message(m), ==, 0);
        g_assert_false(exists(dir, id, ".envelope.new"));
        g_assert_true(exists(dir, id, ".envelope"));
        g_autofree char *path = g_strdup_printf("%s/%s.envelope", dir, id);
        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0660);

        g_autofree char *content = read_file(dir, id, ".content");
        g_assert_cmpstr(content, ==, "Subject: x\r\n\r\nbody\r\n");
        g_autofree char *env = read_file(dir, id, ".envelope");
        g_assert_true(g_str_has_prefix(env, "X-MailRelay-Format: #2821.8\r\nX-MailRelay-Content: unknown\r\nX-MailRelay-From: alice@example.com\r\n"));

        /* Committed: freeing keeps the files. */
        g_autofree char *keep = g_strdup(id);
        g_clear_pointer(&m, spool_message_free);
        g_assert_true(exists(dir, keep, ".envelope"));
        g_assert_true(exists(dir, keep, ".content"));
        rm_rf(dir);
}

static void test_abort_leaves_nothing(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);
        for (int stage = 0; stage < 2; stage++) {
                SpoolMessage *m = NULL;
                g_auto(Envelope) e = {};
                g_assert_cmpint(spool_new_message(s, &m), ==, 0);
                g_assert_cmpint(spool_message_write(m, "x\r\n", 3), ==, 0);
                if (stage == 1) {
                        make_envelope(&e, "bob@example.org");
                        g_assert_cmpint(spool_message_write_envelope(m, &e), ==, 0);
                        g_assert_cmpint(spool_message_sync(m), ==, 0);
                }
                spool_message_free(m);
        }
        GDir *d = g_dir_open(dir, 0, NULL);
        g_assert_null(g_dir_read_name(d));  /* an aborted message leaves no file at all */
        g_dir_close(d);
        rm_rf(dir);
}

static void test_list_order(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);
        /* Name order, as E-MailRelay: not numeric, not time. */
        const char *names[] = { "emailrelay.9.1.1", "emailrelay.10.1.1", "emailrelay.001", "b" };
        for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
                g_autofree char *p = g_strdup_printf("%s/%s.envelope", dir, names[i]);
                g_assert_true(g_file_set_contents(p, "", 0, NULL));
        }
        g_autofree char *other = g_strdup_printf("%s/x.envelope.bad", dir);
        g_assert_true(g_file_set_contents(other, "", 0, NULL));
        g_autofree char *dotted = g_strdup_printf("%s/.envelope", dir);
        g_assert_true(g_file_set_contents(dotted, "", 0, NULL));

        g_autoptr(GPtrArray) ids = NULL;
        g_assert_cmpint(spool_list(s, SPOOL_STATE_READY, &ids), ==, 0);
        g_assert_cmpuint(ids->len, ==, 4);
        g_assert_cmpstr(ids->pdata[0], ==, "b");
        g_assert_cmpstr(ids->pdata[1], ==, "emailrelay.001");
        g_assert_cmpstr(ids->pdata[2], ==, "emailrelay.10.1.1");
        g_assert_cmpstr(ids->pdata[3], ==, "emailrelay.9.1.1");
        g_autoptr(GPtrArray) bad = NULL;
        g_assert_cmpint(spool_list(s, SPOOL_STATE_BAD, &bad), ==, 0);
        g_assert_cmpuint(bad->len, ==, 1);
        rm_rf(dir);
}

static void test_lock_fail_release(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);
        g_autofree char *id = put_message(s, "hello\r\n", "bob@example.org");

        SpoolLock *l = NULL, *l2 = NULL;
        g_assert_cmpint(spool_lock(s, id, &l), ==, 0);
        g_assert_true(exists(dir, id, ".envelope.busy"));
        g_assert_false(exists(dir, id, ".envelope"));
        g_assert_cmpint(spool_lock(s, id, &l2), ==, -ENOENT);

        g_auto(Envelope) e = {};
        g_assert_cmpint(spool_lock_read_envelope(l, &e, NULL), ==, 0);
        g_assert_cmpstr(e.to_remote->pdata[0], ==, "bob@example.org");

        g_assert_cmpint(spool_lock_fail(l, "4.3.0 try later", 451), ==, 0);
        spool_lock_free(l);
        g_assert_true(exists(dir, id, ".envelope.bad"));
        g_autofree char *bad = read_file(dir, id, ".envelope.bad");
        g_assert_true(g_str_has_suffix(bad, "X-MailRelay-End: 1\r\nX-MailRelay-Reason: 4.3.0 try later\r\nX-MailRelay-ReasonCode: 451\r\n"));

        /* Un-fail, fail again: reasons accumulate (E-MailRelay's retry count). */
        g_assert_cmpint(spool_unfail(s, id), ==, 0);
        g_assert_cmpint(spool_lock(s, id, &l), ==, 0);
        g_assert_cmpint(spool_lock_fail(l, "connection refused", 0), ==, 0);
        spool_lock_free(l);
        g_auto(Envelope) e2 = {};
        g_assert_cmpint(spool_read_envelope(s, id, SPOOL_STATE_BAD, &e2, NULL), ==, 0);
        g_assert_cmpuint(envelope_count_reasons(&e2), ==, 2);

        /* A lock freed without a verdict goes back to ready. */
        g_assert_cmpint(spool_unfail(s, id), ==, 0);
        g_assert_cmpint(spool_lock(s, id, &l), ==, 0);
        spool_lock_free(l);
        g_assert_true(exists(dir, id, ".envelope"));

        /* Rewrite keeps the lock and the file well-formed. */
        g_assert_cmpint(spool_lock(s, id, &l), ==, 0);
        g_auto(Envelope) e3 = {};
        make_envelope(&e3, "carol@example.net");
        g_assert_cmpint(spool_lock_rewrite_envelope(l, &e3), ==, 0);
        g_assert_false(exists(dir, id, ".envelope.busy.tmp"));
        g_auto(Envelope) e4 = {};
        g_assert_cmpint(spool_lock_read_envelope(l, &e4, NULL), ==, 0);
        g_assert_cmpstr(e4.to_remote->pdata[0], ==, "carol@example.net");
        g_assert_cmpint(spool_lock_delete(l), ==, 0);
        spool_lock_free(l);
        g_assert_false(exists(dir, id, ".envelope.busy"));
        g_assert_false(exists(dir, id, ".content"));
        rm_rf(dir);
}

static void test_fail_keeps_lf(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);
        const char *lf =
                "X-MailRelay-Format: #2821.6\nX-MailRelay-Content: 8bit\nX-MailRelay-From: a@b\n"
                "X-MailRelay-ToCount: 1\nX-MailRelay-To-Remote: c@d\nX-MailRelay-Authentication: \n"
                "X-MailRelay-Client: 10.0.0.1\nX-MailRelay-ClientCertificate: \nX-MailRelay-MailFromAuthIn: \n"
                "X-MailRelay-MailFromAuthOut: \nX-MailRelay-ForwardTo: \nX-MailRelay-ForwardToAddress: \n"
                "X-MailRelay-End: 1\n";
        g_autofree char *p = g_strdup_printf("%s/old.envelope", dir);
        g_autofree char *c = g_strdup_printf("%s/old.content", dir);
        g_assert_true(g_file_set_contents(p, lf, -1, NULL));
        g_assert_true(g_file_set_contents(c, "x\r\n", -1, NULL));
        SpoolLock *l = NULL;
        g_assert_cmpint(spool_lock(s, "old", &l), ==, 0);
        g_assert_cmpint(spool_lock_fail(l, "5.1.1 unknown", 550), ==, 0);
        spool_lock_free(l);
        g_autofree char *bad = read_file(dir, "old", ".envelope.bad");
        g_autofree char *expect = g_strconcat(lf, "X-MailRelay-Reason: 5.1.1 unknown\nX-MailRelay-ReasonCode: 550\n", NULL);
        g_assert_cmpstr(bad, ==, expect);
        rm_rf(dir);
}

static void test_malformed_reported(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);
        g_autofree char *p = g_strdup_printf("%s/torn.envelope", dir);
        g_assert_true(g_file_set_contents(p, "X-MailRelay-Format: #2821.8\r\nX-MailRelay-Content: unknown\r\nX-MailRelay-Fr", -1, NULL));
        g_auto(Envelope) e = {};
        g_autofree char *error = NULL;
        g_assert_cmpint(spool_read_envelope(s, "torn", SPOOL_STATE_READY, &e, &error), ==, -EBADMSG);
        g_autofree char *expect = g_strdup_printf("%s/torn.envelope: line 3: unexpected line \"X-MailRelay-Fr\"", dir);
        g_assert_cmpstr(error, ==, expect);
        rm_rf(dir);
}

/* Two processes race to lock every message: each is taken exactly once. */
static void test_lock_race(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);
        const unsigned n = 300;
        for (unsigned i = 0; i < n; i++)
                g_free(put_message(s, "x\r\n", "bob@example.org"));

        int pipes[2][2];
        pid_t pids[2];
        for (int k = 0; k < 2; k++) {
                g_assert_cmpint(pipe(pipes[k]), ==, 0);
                pids[k] = fork();
                g_assert_cmpint(pids[k], >=, 0);
                if (pids[k] == 0) {
                        Spool *cs = NULL;
                        GPtrArray *ids = NULL;
                        unsigned got = 0;
                        if (spool_open(dir, &cs) < 0 || spool_list(cs, SPOOL_STATE_READY, &ids) < 0)
                                _exit(2);
                        for (guint i = 0; i < ids->len; i++) {
                                SpoolLock *l = NULL;
                                if (spool_lock(cs, ids->pdata[i], &l) < 0)
                                        continue;
                                /* record the id, then deliver (delete) */
                                dprintf(pipes[k][1], "%s\n", (char *) ids->pdata[i]);
                                if (spool_lock_delete(l) < 0)
                                        _exit(3);
                                spool_lock_free(l);
                                got++;
                        }
                        _exit(got > 0 ? 0 : 4);
                }
                close(pipes[k][1]);
        }
        g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        unsigned total = 0;
        for (int k = 0; k < 2; k++) {
                FILE *f = fdopen(pipes[k][0], "r");
                char line[256];
                while (fgets(line, sizeof line, f)) {
                        g_strchomp(line);
                        g_assert_false(g_hash_table_contains(seen, line));  /* never twice */
                        g_hash_table_add(seen, g_strdup(line));
                        total++;
                }
                fclose(f);
                int status = 0;
                g_assert_cmpint(waitpid(pids[k], &status, 0), ==, pids[k]);
                g_assert_true(WIFEXITED(status));
                g_assert_cmpint(WEXITSTATUS(status), !=, 2);
                g_assert_cmpint(WEXITSTATUS(status), !=, 3);
        }
        g_assert_cmpuint(total, ==, n);
        g_autoptr(GPtrArray) left = NULL;
        g_assert_cmpint(spool_list(s, SPOOL_STATE_READY, &left), ==, 0);
        g_assert_cmpuint(left->len, ==, 0);
        rm_rf(dir);
}

static void test_recover(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        SpoolRecoverStats st;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);

        /* A live writer and a live forwarder: recovery must not touch them. */
        g_autofree char *locked_id = put_message(s, "a\r\n", "x@y");
        SpoolLock *live_lock = NULL;
        g_assert_cmpint(spool_lock(s, locked_id, &live_lock), ==, 0);
        SpoolMessage *live_writer = NULL;
        g_auto(Envelope) e = {};
        g_assert_cmpint(spool_new_message(s, &live_writer), ==, 0);
        make_envelope(&e, "x@y");
        g_assert_cmpint(spool_message_write_envelope(live_writer, &e), ==, 0);
        SpoolMessage *live_content_only = NULL;
        g_assert_cmpint(spool_new_message(s, &live_content_only), ==, 0);

        /* What a crash leaves: a .busy and a .new nobody holds, an old orphan content, and a
         * fresh orphan content (too young: a writer may be about to lock it). */
        g_autofree char *stale_busy = put_message(s, "b\r\n", "x@y");
        g_autofree char *from = g_strdup_printf("%s/%s.envelope", dir, stale_busy);
        g_autofree char *to = g_strdup_printf("%s/%s.envelope.busy", dir, stale_busy);
        g_assert_cmpint(rename(from, to), ==, 0);
        const char *files[][2] = {
                { "dead.envelope.new", "X" }, { "dead.content", "c" },
                { "orphan.content", "o" }, { "young.content", "y" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
                g_autofree char *p = g_strdup_printf("%s/%s", dir, files[i][0]);
                g_assert_true(g_file_set_contents(p, files[i][1], -1, NULL));
        }
        g_autofree char *orphan = g_strdup_printf("%s/orphan.content", dir);
        struct timespec old[2] = { { .tv_sec = time(NULL) - 3600 }, { .tv_sec = time(NULL) - 3600 } };
        g_assert_cmpint(utimensat(AT_FDCWD, orphan, old, 0), ==, 0);
        /* A content file whose envelope sits in a --pop-by-name sub-directory is not an orphan. */
        g_autofree char *sub = g_strdup_printf("%s/alice", dir);
        g_assert_cmpint(g_mkdir(sub, 0770), ==, 0);
        g_autofree char *subenv = g_strdup_printf("%s/alice/shared.envelope", dir);
        g_autofree char *sharedc = g_strdup_printf("%s/shared.content", dir);
        g_assert_true(g_file_set_contents(subenv, "", -1, NULL));
        g_assert_true(g_file_set_contents(sharedc, "s", -1, NULL));
        g_assert_cmpint(utimensat(AT_FDCWD, sharedc, old, 0), ==, 0);

        g_assert_cmpint(spool_recover(s, 60, &st), ==, 0);
        g_assert_cmpuint(st.busy_released, ==, 1);
        g_assert_cmpuint(st.new_removed, ==, 1);
        g_assert_cmpuint(st.orphans_removed, ==, 1);
        g_assert_true(exists(dir, stale_busy, ".envelope"));
        g_assert_false(exists(dir, "dead", ".envelope.new"));
        g_assert_false(exists(dir, "dead", ".content"));
        g_assert_false(exists(dir, "orphan", ".content"));
        g_assert_true(exists(dir, "young", ".content"));
        g_assert_true(exists(dir, "shared", ".content"));
        g_assert_true(exists(dir, locked_id, ".envelope.busy"));
        g_assert_true(exists(dir, spool_message_id(live_writer), ".envelope.new"));
        g_assert_true(exists(dir, spool_message_id(live_content_only), ".content"));

        /* Once the owners are gone, the next recovery cleans up after them too. */
        g_autofree char *writer_id = g_strdup(spool_message_id(live_writer));
        int fd = spool_lock_envelope_fd(live_lock);
        g_assert_cmpint(flock(fd, LOCK_UN), ==, 0);  /* as if its process died */
        g_assert_cmpint(spool_recover(s, 60, &st), ==, 0);
        g_assert_cmpuint(st.busy_released, ==, 1);
        g_assert_true(exists(dir, locked_id, ".envelope"));
        spool_lock_free(live_lock);  /* its release now fails quietly: the file moved on */
        spool_message_free(live_writer);
        spool_message_free(live_content_only);
        g_assert_false(exists(dir, writer_id, ".envelope.new"));
        rm_rf(dir);
}

static void test_delete_respects_lock(void) {
        g_autofree char *dir = tmp_spool();
        g_autoptr(Spool) s = NULL;
        g_assert_cmpint(spool_open(dir, &s), ==, 0);
        g_autofree char *id = put_message(s, "a\r\n", "x@y");
        g_assert_cmpint(spool_delete(s, "nope"), ==, -ENOENT);
        g_assert_cmpint(spool_delete(s, "../x"), ==, -EINVAL);
        g_assert_cmpint(spool_delete(s, id), ==, 0);
        g_assert_false(exists(dir, id, ".envelope"));
        g_assert_false(exists(dir, id, ".content"));
        rm_rf(dir);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/spool/ids", test_ids);
        g_test_add_func("/spool/no-links-followed", test_no_links_followed);
        g_test_add_func("/spool/write-commit", test_write_commit);
        g_test_add_func("/spool/abort-leaves-nothing", test_abort_leaves_nothing);
        g_test_add_func("/spool/list-order", test_list_order);
        g_test_add_func("/spool/lock-fail-release", test_lock_fail_release);
        g_test_add_func("/spool/fail-keeps-lf", test_fail_keeps_lf);
        g_test_add_func("/spool/malformed-reported", test_malformed_reported);
        g_test_add_func("/spool/lock-race", test_lock_race);
        g_test_add_func("/spool/recover", test_recover);
        g_test_add_func("/spool/delete-respects-lock", test_delete_respects_lock);
        return g_test_run();
}
