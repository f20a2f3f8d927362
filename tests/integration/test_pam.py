# SPDX-License-Identifier: GPL-3.0-or-later
"""--server-auth=pam: and --pop-auth=pam: against the real Linux-PAM. Each daemon runs in a
mount namespace of its own where a test directory is bind-mounted over /etc/pam.d, so that the
service "emailrelay" there is the test's and the host's PAM is untouched. The stack is the
shape of Debian's common-auth (pam_exec standing in for pam_unix, checking a password list):

    auth    [success=1 default=ignore]  pam_exec.so expose_authtok quiet <check>
    auth    requisite                   pam_deny.so
    auth    required                    pam_permit.so
    account required                    pam_permit.so

Asserted: the right password is taken and the wrong one refused, logged for fail2ban and
answered late; only PLAIN is offered (as E-MailRelay does); USER/PASS and POP3 AUTH PLAIN work
and APOP is not offered; PAM that cannot answer (a broken stack) gets a temporary 454 or
-ERR [SYS/TEMP] and is not counted as a failed login; a check that hangs (the check waits on a
FIFO) holds up only its own session, another logs in and sends meanwhile; a client that goes
away during a check leaves the daemon serving; E-MailRelay's older /pam spelling; pam: through the
front-end's command line."""

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SMTPD = harness.program("emailrelay-smtpd")
POP3D = harness.program("emailrelay-pop3d")
SUBMIT = harness.program("emailrelay-submit")
PAM_EXEC = [p for p in ("/lib/x86_64-linux-gnu/security/pam_exec.so", "/usr/lib/x86_64-linux-gnu/security/pam_exec.so",
                        "/lib/security/pam_exec.so", "/usr/lib/security/pam_exec.so") if os.path.exists(p)]


def _why_not():
    if os.geteuid() != 0:
        return "needs root for a mount namespace over /etc/pam.d"
    if not shutil.which("unshare"):
        return "needs unshare (util-linux)"
    if not PAM_EXEC:
        return "needs pam_exec.so (libpam-modules)"
    return None


WHY_NOT = _why_not()

# Reads the password on standard input (pam_exec's expose_authtok). User "slow" waits for a
# line on the FIFO first and then is checked like the others.
CHECK = """#!/bin/sh
pw=$(cat)
[ "$PAM_USER" = slow ] && read -r _ < "{fifo}"
while IFS=: read -r user pass; do
    [ "$PAM_USER" = "$user" ] && [ "$pw" = "$pass" ] && exit 0
done < "{users}"
exit 1
"""

STACK = """auth    [success=1 default=ignore]  pam_exec.so expose_authtok quiet {check}
auth    requisite                   pam_deny.so
auth    required                    pam_permit.so
account required                    pam_permit.so
"""

# pam_exec with a program that is not there: PAM_SYSTEM_ERR, PAM's "could not tell".
BROKEN = "auth required pam_exec.so quiet /nonexistent/check\naccount required pam_permit.so\n"


def b64(s):
    return base64.b64encode(s.encode()).decode()


@unittest.skipIf(WHY_NOT, WHY_NOT)
class PamTestCase(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="pam-test-")
        os.chmod(self.work, 0o755)
        self.addCleanup(shutil.rmtree, self.work, True)
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.fifo = os.path.join(self.work, "release")
        os.mkfifo(self.fifo)
        users = os.path.join(self.work, "users")
        with open(users, "w") as f:
            f.write("alice:secret\nslow:slowpass\n")
        check = os.path.join(self.work, "check")
        with open(check, "w") as f:
            f.write(CHECK.format(fifo=self.fifo, users=users))
        os.chmod(check, 0o755)
        self.pamdir = os.path.join(self.work, "pam.d")
        os.mkdir(self.pamdir)
        with open(os.path.join(self.pamdir, "emailrelay"), "w") as f:
            f.write(STACK.format(check=check))
        self.brokendir = os.path.join(self.work, "pam.d-broken")
        os.mkdir(self.brokendir)
        with open(os.path.join(self.brokendir, "emailrelay"), "w") as f:
            f.write(BROKEN)
        self.daemon = None

    def tearDown(self):
        if self.daemon:
            # A clean stop, so that the sanitizers' leak check runs and finds nothing.
            self.assertEqual(self.daemon.stop(signal.SIGTERM), 0, self.daemon.output())
            out = self.daemon.output()
            for bad in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                self.assertNotIn(bad, out)

    def run_daemon(self, argv, names, pamdir=None):
        """The daemon in a mount namespace with pamdir over /etc/pam.d (unshare and sh exec, so
        the pid stays the one LISTEN_PID names)."""
        wrapped = ["unshare", "--mount", "/bin/sh", "-c", 'mount --bind "$0" /etc/pam.d && exec "$@"',
                   pamdir or self.pamdir, *argv]
        self.daemon = harness.Daemon(wrapped, [harness.listening_socket()], names=names)
        return self.daemon

    def log_has(self, text):
        return harness.wait_for(lambda: text in self.daemon.output(), timeout=15)

    def release_slow(self):
        """Let the check of "slow" go on (opening the FIFO blocks until its reader is there)."""
        with open(self.fifo, "w") as f:
            f.write("go\n")


class SmtpPamTest(PamTestCase):
    def start(self, *args, pamdir=None):
        return self.run_daemon([SMTPD, "--spool-dir", self.spool, "--domain", "relay.test", "--server-auth", "pam:",
                                *args, self.config], ["smtp"], pamdir)

    def client(self):
        c = harness.SmtpClient(self.daemon.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0][:4], "220 ")
        return c

    def test_right_and_wrong_password(self):
        self.start()
        c = self.client()
        ehlo = c.cmd("EHLO client.test")
        self.assertIn("250-AUTH PLAIN", ehlo)                         # PLAIN only, as E-MailRelay
        self.assertEqual(c.cmd("AUTH LOGIN"), ["504 5.5.4 unsupported authentication mechanism"])
        self.assertEqual(c.cmd("MAIL FROM:<a@b.test>"), ["530 5.7.0 authentication required"])
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0wrong")), ["535 5.7.8 authentication failed"])
        self.assertTrue(self.log_has('authentication failed for "alice" from 127.0.0.1 (PLAIN)'))
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0nobody\0secret")), ["535 5.7.8 authentication failed"])
        self.assertEqual(c.cmd("AUTH PLAIN"), ["334 "])              # the response on its own line
        self.assertEqual(c.cmd(b64("\0alice\0secret")), ["235 2.7.0 authentication successful"])
        self.assertTrue(self.log_has('authenticated as "alice" from 127.0.0.1 (PLAIN)'))
        self.assertEqual(c.cmd("MAIL FROM:<a@b.test>")[0][:3], "250")
        self.assertEqual(c.cmd("RCPT TO:<c@d.test>")[0][:3], "250")
        self.assertEqual(c.cmd("DATA")[0][:3], "354")
        self.assertEqual(c.cmd("Subject: pam\r\n\r\nbody\r\n."), ["250 2.0.0 message processed"])
        m, = harness.spool_messages(self.spool)
        self.assertEqual(dict(m.fields())["X-MailRelay-Authentication"], "alice")

    @unittest.skipUnless(shutil.which("swaks"), "swaks is not installed (scripts/deps --test)")
    def test_swaks(self):
        self.start()
        common = ["swaks", "--server", "127.0.0.1:%d" % self.daemon.port, "--from", "a@b.test", "--to", "c@d.test",
                  "--auth", "PLAIN", "--auth-user", "alice", "--timeout", "20"]
        p = subprocess.run(common + ["--auth-password", "secret"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("<-  235 2.7.0 authentication successful", p.stdout)
        p = subprocess.run(common + ["--auth-password", "nope"], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("<** 535 5.7.8 authentication failed", p.stdout)

    def test_pam_that_cannot_answer_is_temporary(self):
        self.start("--max-auth-failures-per-address", "1", "--limits-exempt", "none", pamdir=self.brokendir)
        for _ in range(3):
            c = self.client()
            c.cmd("EHLO client.test")
            self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")),
                             ["454 4.7.0 temporary authentication failure"])
            c.cmd("QUIT")
        self.assertTrue(self.log_has('PAM could not check "alice" from 127.0.0.1 (PLAIN): '))
        # Not a failed login: no fail2ban line, and the address is not limited.
        self.assertNotIn("authentication failed for", self.daemon.output())
        self.assertNotIn("too many", self.daemon.output())

    def test_slow_check_holds_up_only_its_own_session(self):
        self.start()
        slow = self.client()
        slow.cmd("EHLO client.test")
        slow.send("AUTH PLAIN " + b64("\0slow\0slowpass") + "\r\n")
        # While PAM waits for the FIFO, another client logs in and sends a message.
        c = self.client()
        c.cmd("EHLO client.test")
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), ["235 2.7.0 authentication successful"])
        self.assertEqual(c.cmd("MAIL FROM:<a@b.test>")[0][:3], "250")
        self.assertEqual(c.cmd("RCPT TO:<c@d.test>")[0][:3], "250")
        self.assertEqual(c.cmd("DATA")[0][:3], "354")
        self.assertEqual(c.cmd("Subject: meanwhile\r\n\r\nbody\r\n."), ["250 2.0.0 message processed"])
        # A command pipelined behind the pending AUTH waits for it.
        slow.send("NOOP\r\n")
        self.release_slow()
        self.assertEqual(slow.reply(), ["235 2.7.0 authentication successful"])
        self.assertEqual(slow.reply()[0][:4], "250 ")

    def test_client_gone_during_a_check(self):
        self.start()
        slow = self.client()
        slow.cmd("EHLO client.test")
        slow.send("AUTH PLAIN " + b64("\0slow\0slowpass") + "\r\n")
        slow.close()
        # The session ends with its check still running; the check finishes on its own.
        t = threading.Thread(target=self.release_slow, daemon=True)
        t.start()
        t.join(timeout=30)
        self.assertFalse(t.is_alive(), "the PAM check never read the FIFO")
        c = self.client()
        c.cmd("EHLO client.test")
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), ["235 2.7.0 authentication successful"])

    def test_front_end(self):
        """E-MailRelay's command line: the front-end hands pam: to emailrelay-smtpd."""
        self.run_daemon([harness.program("emailrelay"), "--no-daemon", "--log", "--user", "root", "--spool-dir",
                         self.spool, "--server-auth", "pam:"], ["smtp"])
        c = self.client()                     # the greeting comes once the front-end's smtpd runs
        c.cmd("EHLO client.test")
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0wrong")), ["535 5.7.8 authentication failed"])
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), ["235 2.7.0 authentication successful"])

    def test_old_spelling(self):
        d = self.run_daemon([SMTPD, "--spool-dir", self.spool, "--server-auth", "/pam", self.config], ["smtp"])
        self.assertTrue(self.log_has("--server-auth=/pam: the old spelling; use pam:"), d.output())


class PopPamTest(PamTestCase):
    def setUp(self):
        super().setUp()
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "--wakeup-file", "none", "rcpt@example.com"],
                       input=b"Subject: for pop\n\nbody\n", check=True, timeout=30)

    def start(self, *args, pamdir=None):
        return self.run_daemon([POP3D, "--spool-dir", self.spool, "--pop-auth", "pam:", "--pop-no-delete", *args,
                                self.config], ["pop3"], pamdir)

    def client(self):
        s = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=20)
        self.addCleanup(s.close)
        f = s.makefile("rb")

        def cmd(text=None):
            if text is not None:
                s.sendall(text.encode() + b"\r\n")
            return f.readline().decode().rstrip("\r\n")
        return cmd

    def test_user_pass_and_auth_plain(self):
        self.start()
        cmd = self.client()
        self.assertTrue(cmd().startswith("+OK "))
        self.assertEqual(cmd("APOP alice 0123456789abcdef0123456789abcdef"), "-ERR APOP not available")
        self.assertEqual(cmd("USER alice"), "+OK user: alice")
        self.assertEqual(cmd("PASS wrong"), "-ERR authentication failed")
        self.assertTrue(self.log_has('pop authentication failed for "alice" from 127.0.0.1 (USER/PASS)'))
        self.assertEqual(cmd("USER alice"), "+OK user: alice")
        self.assertEqual(cmd("PASS secret"), "+OK authenticated")
        self.assertTrue(cmd("STAT").startswith("+OK 1 "))
        self.assertTrue(cmd("QUIT").startswith("+OK"))       # the maildrop is locked till then
        cmd = self.client()
        cmd()
        self.assertEqual(cmd("AUTH PLAIN " + b64("\0alice\0secret")), "+OK authenticated")
        self.assertTrue(self.log_has('pop authentication of "alice" from 127.0.0.1: 1 message'))

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed (scripts/deps --test)")
    def test_curl(self):
        self.start()
        url = "pop3://127.0.0.1:%d/1" % self.daemon.port
        p = subprocess.run(["curl", "-sS", "--max-time", "30", "-u", "alice:secret", url], capture_output=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"Subject: for pop", p.stdout)
        p = subprocess.run(["curl", "-sS", "--max-time", "30", "-u", "alice:nope", url], capture_output=True,
                           timeout=60)
        self.assertEqual(p.returncode, 67, p.stderr)               # CURLE_LOGIN_DENIED

    def test_pam_that_cannot_answer_is_temporary(self):
        self.start(pamdir=self.brokendir)
        cmd = self.client()
        cmd()
        cmd("USER alice")
        self.assertEqual(cmd("PASS secret"), "-ERR [SYS/TEMP] temporary authentication failure")
        self.assertTrue(self.log_has('PAM could not check "alice" from 127.0.0.1 (USER/PASS): '))
        self.assertNotIn("authentication failed for", self.daemon.output())
        self.assertEqual(cmd("PASS secret"), "-ERR no user name given")


if __name__ == "__main__":
    harness.main()
