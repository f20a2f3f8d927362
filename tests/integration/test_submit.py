# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-submit through its command line: the files it leaves in the spool, byte for byte,
its header handling, its errors, and the order of its syncs (durability)."""

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SUBMIT = harness.program("emailrelay-submit")
# LeakSanitizer cannot work under ptrace (strace) or in a set-group-ID process; those tests
# run the sanitizer build with leak detection off (the other tests keep it).
NO_LEAK_CHECK = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")


def envelope_text(fields, to_remote, trailer=""):
    """The #2821.8 envelope E-MailRelay writes, from a dict of the non-default fields."""
    f = {"Content": "7bit", "From": "", "Authentication": "", "Client": "127.0.0.1",
         "ClientCertificate": "", "MailFromAuthIn": "", "MailFromAuthOut": "", "ForwardTo": "",
         "ForwardToAddress": "", "ClientAccountSelector": "", "Utf8MailboxNames": "0"}
    f.update(fields)
    lines = ["X-MailRelay-Format: #2821.8", "X-MailRelay-Content: " + f["Content"],
             "X-MailRelay-From: " + f["From"], "X-MailRelay-ToCount: %d" % len(to_remote)]
    lines += ["X-MailRelay-To-Remote: " + t for t in to_remote]
    for k in ("Authentication", "Client", "ClientCertificate", "MailFromAuthIn", "MailFromAuthOut",
              "ForwardTo", "ForwardToAddress", "ClientAccountSelector", "Utf8MailboxNames"):
        lines.append("X-MailRelay-%s: %s" % (k, f[k]))
    lines.append("X-MailRelay-End: 1")
    return ("\r\n".join(lines) + "\r\n" + trailer).encode()


class SubmitTest(unittest.TestCase):
    def setUp(self):
        self.spool = tempfile.mkdtemp(prefix="submit-spool-")

    def tearDown(self):
        shutil.rmtree(self.spool, ignore_errors=True)

    def submit(self, *args, input=b"", expect=0):
        p = subprocess.run([SUBMIT, "--spool-dir", self.spool, *args], input=input,
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, expect, "stderr: %r" % p.stderr)
        return p

    def messages(self):
        return harness.spool_messages(self.spool)

    def only_message(self):
        msgs = self.messages()
        self.assertEqual(len(msgs), 1, "files: %r" % os.listdir(self.spool))
        return msgs[0]

    def test_reference_fields_byte_for_byte(self):
        msg = (b"From: alice@example.com\nTo: bob@example.org\nSubject: peer test\n\n"
               b"Hello from submit.\n.leading dot line\n")
        self.submit("bob@example.org", "carol@example.net", input=msg)
        m = self.only_message()
        self.assertRegex(m.id, r"^emailrelay\.\d+\.\d+\.1$")
        # Field by field as the reference's example (section 2.3); submit writes Client 127.0.0.1,
        # no Received line, and a Content field from what the content holds.
        self.assertEqual(m.envelope, envelope_text(
            {"From": "alice@example.com"}, ["bob@example.org", "carol@example.net"]))
        self.assertEqual(m.content, msg.replace(b"\n", b"\r\n"))
        self.assertEqual(m.state, "envelope")
        self.assertEqual(oct(os.stat(m.envelope_path).st_mode & 0o7777), "0o660")
        self.assertEqual(oct(os.stat(m.content_path).st_mode & 0o7777), "0o660")
        self.assertEqual(sorted(os.listdir(self.spool)), sorted([m.id + ".content", m.id + ".envelope"]))

    def test_crlf_input_kept_and_final_line_ended(self):
        self.submit("x@example.com", input=b"Subject: a\r\n\r\nline one\r\nbare\rcr\r\nno newline at end")
        m = self.only_message()
        self.assertEqual(m.content, b"Subject: a\r\n\r\nline one\r\nbare\rcr\r\nno newline at end\r\n")

    def test_sender_from_headers(self):
        cases = [
            (b"From: \"Alice, A.\" <alice@example.com>\n\nx\n", "alice@example.com"),
            (b"Sender: bob@example.org (Bob)\n\nx\n", "bob@example.org"),
            (b"Subject: nobody\n\nx\n", "anonymous"),
        ]
        for content, sender in cases:
            with self.subTest(sender=sender):
                shutil.rmtree(self.spool)
                os.mkdir(self.spool)
                self.submit("to@example.com", input=content)
                self.assertIn(b"X-MailRelay-From: " + sender.encode() + b"\r\n", self.only_message().envelope)
        shutil.rmtree(self.spool)
        os.mkdir(self.spool)
        self.submit("--from", "override@example.net", "to@example.com", input=cases[0][0])
        self.assertIn(b"X-MailRelay-From: override@example.net\r\n", self.only_message().envelope)

    def test_recipients_from_headers_and_bcc_removed(self):
        msg = (b"From: a@example.com\nTo: \"Doe, J\" <j@example.com>, k@example.com (Kay)\n"
               b"Cc: team: l@example.com, m@example.com;\nBcc: secret@example.com\n"
               b"Subject: s\n\nbody\n")
        self.submit(input=msg)
        m = self.only_message()
        self.assertEqual(m.recipients(), ["j@example.com", "k@example.com", "l@example.com",
                                          "m@example.com", "secret@example.com"])
        self.assertNotIn(b"Bcc", m.content)
        self.assertNotIn(b"secret", m.content)

    def test_bcc_split(self):
        msg = b"To: a@example.com\nBcc: b1@example.com, b2@example.com\n\nbody\n"
        self.submit("--bcc-split", input=msg)
        msgs = self.messages()
        self.assertEqual(sorted(tuple(m.recipients()) for m in msgs),
                         [("a@example.com",), ("b1@example.com",), ("b2@example.com",)])
        for m in msgs:
            self.assertNotIn(b"Bcc", m.content)
            self.assertTrue(m.content.endswith(b"\r\n\r\nbody\r\n"))

    def test_no_recipients_is_an_error_and_leaves_nothing(self):
        p = self.submit(input=b"Subject: x\n\nbody\n", expect=1)
        self.assertEqual(p.stderr.decode().strip(),
                         "emailrelay-submit: error: no recipients given and none found in the headers")
        self.assertEqual(os.listdir(self.spool), [])

    def test_content_options(self):
        self.submit("-t", "-F", "-d", "--content-message-id=example.org", "--from", "me@example.org",
                    "--to", "one@example.com", "two@example.com",
                    input=b"From: old@x\nSender: s@x\nTo: old@y\nCc: c@y\nSubject: hi\n\nbody\n")
        m = self.only_message()
        head, _, body = m.content.partition(b"\r\n\r\n")
        head = head.decode()
        self.assertEqual(body, b"body\r\n")
        self.assertNotIn("old@", head)
        self.assertNotIn("Sender:", head)
        self.assertNotIn("Cc:", head)
        self.assertIn("From: me@example.org\r\n", head + "\r\n")
        self.assertIn("To: one@example.com, two@example.com\r\n", head + "\r\n")
        self.assertRegex(head, r"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
        self.assertRegex(head, r"Message-ID: <[^@>]+@example\.org>")
        # Existing Date and Message-ID are kept.
        shutil.rmtree(self.spool)
        os.mkdir(self.spool)
        self.submit("-d", "-I", "x@y", input=b"Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <keep@me>\n\nb\n")
        m = self.only_message()
        self.assertEqual(m.content.count(b"Date:"), 1)
        self.assertIn(b"Message-ID: <keep@me>", m.content)

    def test_body_only(self):
        self.submit("--body", "-F", "-t", "--from", "a@b.example", "c@d.example", input=b"just a body\n")
        m = self.only_message()
        self.assertEqual(m.content, b"From: a@b.example\r\nTo: c@d.example\r\n\r\njust a body\r\n")

    def test_content_lines_and_no_stdin(self):
        lines = [b"Subject: built", b"", b"from --content"]
        args = []
        for line in lines:
            args += ["-C", base64.b64encode(line).decode()]
        self.submit("-N", *args, "x@example.com", input=b"ignored stdin\n")
        self.assertEqual(self.only_message().content, b"Subject: built\r\n\r\nfrom --content\r\n")
        p = self.submit("-N", "-C", "not*base64", "x@example.com", expect=1)
        self.assertIn("invalid base64 in --content", p.stderr.decode())

    def test_input_file_and_filename_output(self):
        src = os.path.join(self.spool + "-in.eml")
        with open(src, "wb") as f:
            f.write(b"Subject: file\n\nfrom a file\n")
        try:
            p = self.submit("-x", src, "-n", "x@example.com")
            m = self.only_message()
            self.assertEqual(p.stdout.decode(), m.id + ".content\n")
            self.assertEqual(m.content, b"Subject: file\r\n\r\nfrom a file\r\n")
            p = self.submit("-x", src, "-v", "y@example.com")
            self.assertRegex(p.stdout.decode(), "^" + re.escape(self.spool) + r"/emailrelay\.\d+\.\d+\.\d+\.content\n$")
        finally:
            os.unlink(src)
        p = self.submit("-x", "/nonexistent/message", "x@example.com", expect=1)
        self.assertEqual(p.stderr.decode().strip(),
                         "emailrelay-submit: error: cannot read the message: No such file or directory")

    def test_auth_fields_and_eight_bit(self):
        self.submit("-a", "alice smith", "-i", "+", "-o", "<>", "x@example.com",
                    input="Subject: caf\u00e9\n\n\u00e9t\u00e9\n".encode())
        m = self.only_message()
        self.assertEqual(m.envelope, envelope_text(
            {"Content": "8bit", "From": "anonymous", "Authentication": "alice+20smith",
             "MailFromAuthIn": "+", "MailFromAuthOut": "<>"}, ["x@example.com"]))

    def test_utf8_mailbox(self):
        self.submit("--from", "s@example.com", "j\u00f6rg@example.com", input=b"x\n")
        self.assertIn(b"X-MailRelay-Utf8MailboxNames: 1\r\n", self.only_message().envelope)

    def test_copy_into_subdirectories(self):
        for d in ("alice", "bob", "postmaster", ".hidden"):
            os.mkdir(os.path.join(self.spool, d))
        self.submit("--copy", "x@example.com", input=b"Subject: c\n\nshared\n")
        files = os.listdir(self.spool)
        contents = [f for f in files if f.endswith(".content")]
        self.assertEqual(len(contents), 1)
        mid = contents[0][:-len(".content")]
        self.assertNotIn(mid + ".envelope", files)  # each POP user has it; nothing to forward
        for user in ("alice", "bob"):
            self.assertEqual(os.listdir(os.path.join(self.spool, user)), [mid + ".envelope"])
        for other in ("postmaster", ".hidden"):
            self.assertEqual(os.listdir(os.path.join(self.spool, other)), [])

    def test_copy_skips_a_symlinked_subdirectory(self):
        """A sub-directory that is a symbolic link is no POP user's: nothing is written through it."""
        os.mkdir(os.path.join(self.spool, "alice"))
        outside = tempfile.mkdtemp(prefix="submit-outside-")
        self.addCleanup(shutil.rmtree, outside, True)
        os.symlink(outside, os.path.join(self.spool, "mallory"))
        p = self.submit("--copy", "x@example.com", input=b"Subject: c\n\nshared\n")
        self.assertEqual(os.listdir(outside), [])
        self.assertEqual(len(os.listdir(os.path.join(self.spool, "alice"))), 1)
        self.assertIn("%s/mallory is a symbolic link: not copied into" % self.spool, p.stderr.decode())

    def test_usage_errors(self):
        p = self.submit("--frobnicate", expect=2)
        self.assertIn("unknown option: --frobnicate", p.stderr.decode())
        p = self.submit("--from", expect=2)
        self.assertIn("--from", p.stderr.decode())
        p = subprocess.run([SUBMIT, "--spool-dir", "/nonexistent/spool", "x@y"], input=b"x\n",
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr.decode().strip(),
                         "emailrelay-submit: error: cannot open the spool directory /nonexistent/spool: "
                         "No such file or directory")
        p = self.submit("bad address@x", input=b"x\n", expect=1)
        self.assertIn('invalid recipient address: "bad address@x"', p.stderr.decode())
        self.assertEqual(os.listdir(self.spool), [])

    def test_help_and_version(self):
        p = self.submit("--help")
        out = p.stdout.decode()
        self.assertIn("--spool-dir", out)
        self.assertIn("--content-message-id", out)
        p = self.submit("--version")
        self.assertRegex(p.stdout.decode(), r"^emailrelay-submit \d+\.\d+")

    @unittest.skipUnless(shutil.which("strace"), "strace is not installed")
    def test_durable_before_exit(self):
        """Content and envelope are synced before the rename that publishes the message, and
        the directory after it: a crash after exit 0 cannot lose the message."""
        log = self.spool + ".strace"
        try:
            subprocess.run(["strace", "-f", "-o", log, "-e", "trace=openat,fdatasync,fsync,rename,renameat,renameat2",
                            SUBMIT, "--spool-dir", self.spool, "x@example.com"],
                           input=b"Subject: s\n\nx\n", check=True, capture_output=True, timeout=60, env=NO_LEAK_CHECK)
            trace = open(log).read()
        finally:
            if os.path.exists(log):
                os.unlink(log)
        fds = {}
        events = []
        for line in trace.splitlines():
            m = re.search(r'openat\(\w+, "([^"]+)", [^)]*\)\s+= (\d+)', line)
            if m:
                fds[m.group(2)] = m.group(1)
            m = re.search(r"(fdatasync|fsync)\((\d+)\)\s+= 0", line)
            if m:
                events.append((m.group(1), fds.get(m.group(2), "?")))
            m = re.search(r'rename\w*\(.*"([^"]+)".*"([^"]+)".*\)\s+= 0', line)
            if m:
                events.append(("rename", m.group(1), m.group(2)))
        kinds = [e[0] for e in events]
        self.assertIn("rename", kinds, trace)
        r = kinds.index("rename")
        synced = [e[1] for e in events[:r] if e[0] == "fdatasync"]
        self.assertTrue(any(s.endswith(".content") for s in synced), events)
        self.assertTrue(any(s.endswith(".envelope.new") for s in synced), events)
        self.assertTrue(events[r][1].endswith(".envelope.new") and events[r][2].endswith(".envelope"), events)
        self.assertTrue(any(e[0] == "fsync" for e in events[r + 1:]), "no directory fsync after the rename: %r" % events)


OPENAT = {"x86_64": 257, "aarch64": 56}


def opening(tracer, path):
    """Whether the process traced by strace (pid tracer) is at an openat of path."""
    try:
        with open("/proc/%d/task/%d/children" % (tracer, tracer)) as f:
            children = f.read().split()
        for pid in children:
            with open("/proc/%s/syscall" % pid) as f:
                fields = f.read().split()
            if fields[0] != str(OPENAT[os.uname().machine]):
                continue
            with open("/proc/%s/mem" % pid, "rb") as mem:
                mem.seek(int(fields[2], 16))   # openat(dirfd, pathname, ...)
                if mem.read(len(path) + 1) == path.encode() + b"\0":
                    return True
    except (FileNotFoundError, ProcessLookupError, OSError, ValueError):
        pass
    return False


class SetgidTest(unittest.TestCase):
    """Installed setgid to the spool's group, submit must give a local user the spool and
    nothing else of the group's."""

    @staticmethod
    def setgid_install(prefix):
        """A fresh directory everyone can reach, holding a copy of submit installed setgid to
        group mail (a system group 'nobody' is not in): (directory, group, program)."""
        import grp
        group = grp.getgrnam("mail")
        work = tempfile.mkdtemp(prefix=prefix)
        os.chmod(work, 0o755)
        binary = os.path.join(work, "emailrelay-submit")
        shutil.copy(SUBMIT, binary)
        os.chown(binary, 0, group.gr_gid)
        os.chmod(binary, 0o2755)
        return work, group, binary

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv to set up users")
    @unittest.skipIf(os.environ.get("EMAILRELAY_SANITIZED"),
                     "a set-group-ID process cannot read ASAN_OPTIONS and LeakSanitizer aborts; the plain build runs this")
    def test_setgid_boundaries(self):
        work, group, binary = self.setgid_install("submit-setgid-")
        try:
            spool = os.path.join(work, "spool")
            os.mkdir(spool)
            os.chown(spool, 0, group.gr_gid)
            os.chmod(spool, 0o2770)
            secret = os.path.join(work, "secret.content")
            with open(secret, "w") as f:
                f.write("Subject: someone else's mail\n\nprivate\n")
            os.chown(secret, 0, group.gr_gid)
            os.chmod(secret, 0o640)
            as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", binary, "--spool-dir"]

            # Positive control: nobody can queue through the group's privilege.
            p = subprocess.run(as_nobody + [spool, "x@example.com"], input=b"Subject: ok\n\nhi\n",
                               capture_output=True, timeout=30, env=NO_LEAK_CHECK)
            self.assertEqual(p.returncode, 0, p.stderr)
            files = os.listdir(spool)
            self.assertEqual(len(files), 2, files)
            for name in files:
                self.assertEqual(os.stat(os.path.join(spool, name)).st_gid, group.gr_gid)

            # But cannot read a file only the group may read.
            p = subprocess.run(as_nobody + [spool, "-x", secret, "x@example.com"], capture_output=True, timeout=30,
                               env=NO_LEAK_CHECK)
            self.assertEqual(p.returncode, 1)
            self.assertIn("cannot read the message: Permission denied", p.stderr.decode())
            self.assertEqual(len(os.listdir(spool)), 2)

            # And a spool of the caller's choosing is written with the caller's rights only:
            # here a directory only the group may write.
            other = os.path.join(work, "other")
            os.mkdir(other)
            os.chown(other, 0, group.gr_gid)
            os.chmod(other, 0o770)
            p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", binary,
                                "--spool-dir", other, "x@example.com"], input=b"x\n", capture_output=True, timeout=30,
                               env=NO_LEAK_CHECK)
            self.assertEqual(p.returncode, 1)
            self.assertEqual(os.listdir(other), [])
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("strace"), "needs root and strace")
    @unittest.skipUnless(os.uname().machine in OPENAT, "the openat system call's number on this machine")
    @unittest.skipIf(os.environ.get("EMAILRELAY_SANITIZED"),
                     "a set-group-ID process cannot read ASAN_OPTIONS and LeakSanitizer aborts; the plain build runs this")
    def test_spool_switched_after_the_check(self):
        """--spool-dir a symbolic link to the real spool, switched to another directory of the
        group while submit runs: what submit checked is what it writes into, or nothing is
        written. strace (as root, -u so that the set-group-ID bit takes effect) holds submit
        in its open of the path, before the path is looked up, and the link is switched then:
        a check by path (stat) followed by an open by path wrote the message into the other
        directory with the group's rights."""
        work, group, binary = self.setgid_install("submit-setgid-race-")
        try:
            dirs = {}
            for name, mode in (("spool", 0o2770), ("other", 0o770)):
                dirs[name] = os.path.join(work, name)
                os.mkdir(dirs[name])
                os.chown(dirs[name], 0, group.gr_gid)
                os.chmod(dirs[name], mode)
            link = os.path.join(work, "link")
            os.symlink(dirs["spool"], link)
            # -P: only system calls on the link are tampered with; the first openat is held.
            p = subprocess.Popen(["strace", "-qq", "-o", "/dev/null", "-u", "nobody", "-P", link, "-e", "trace=openat",
                                  "-e", "inject=openat:delay_enter=3000000:when=1",
                                  binary, "--spool-dir", link, "x@example.com"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=NO_LEAK_CHECK)
            p.stdin.write(b"Subject: raced\n\nhi\n")
            p.stdin.close()
            self.assertTrue(harness.wait_for(lambda: opening(p.pid, link) or p.poll() is not None))
            if p.poll() is not None:
                self.fail("submit ended before its open was held: %s" % p.stderr.read())
            os.symlink(dirs["other"], link + ".new")
            os.replace(link + ".new", link)
            p.wait(timeout=60)
            err = p.stderr.read().decode()
            self.assertEqual(os.listdir(dirs["other"]), [], err)
            # It found the other directory no spool, and wrote with nobody's rights: refused.
            self.assertEqual(p.returncode, 1, err)
            self.assertIn("Permission denied", err)
            self.assertEqual(os.listdir(dirs["spool"]), [])
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    harness.main()
