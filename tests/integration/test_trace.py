# SPDX-License-Identifier: GPL-3.0-or-later
"""--verbose: E-MailRelay's protocol trace (rx<<: "..." for a line received, tx>>: "..." for one
sent) in emailrelay-smtpd, emailrelay-pop3d, emailrelay-forward and under the emailrelay
front-end, through their sockets and command lines. Secrets never appear: not the password,
not its base64, not a SASL response; nor does message content. Without --verbose, no trace.
And E-MailRelay's wording for the connection lines that monitoring scripts grep."""

import base64
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SMTPD = harness.program("emailrelay-smtpd")
POP3D = harness.program("emailrelay-pop3d")
FORWARD = harness.program("emailrelay-forward")
FRONTEND = os.path.join(harness.BUILD_ROOT, "src", "frontend", "emailrelay")

PASSWORD = "s3cret-Word"
CONTENT = b"Subject: traced\r\n\r\nbody-marker-line\r\n"


def b64(text):
    return base64.b64encode(text.encode()).decode()


class TraceTestCase(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="trace-test-")
        self.spool = os.path.join(self.work, "spool")
        self.out = os.path.join(self.work, "out")
        os.mkdir(self.spool)
        os.mkdir(self.out)
        self.secrets = os.path.join(self.work, "secrets")
        with open(self.secrets, "w") as f:
            f.write("server plain alice %s\nclient plain alice %s\n" % (PASSWORD, PASSWORD))
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.stop(signal.SIGKILL)
        shutil.rmtree(self.work, ignore_errors=True)

    def daemon(self, argv, names=("smtp",)):
        d = harness.Daemon(argv, [harness.listening_socket() for _ in names], names=list(names))
        self.daemons.append(d)
        return d

    def smtpd(self, *args, spool=None):
        return self.daemon([SMTPD, "--spool-dir", spool or self.spool, "--domain", "relay.test", "--server-auth",
                            self.secrets, *args, "/dev/null"])

    def assertNoSecrets(self, out):
        for secret in (PASSWORD, b64(PASSWORD), b64("\0alice\0" + PASSWORD), "body-marker-line"):
            self.assertNotIn(secret, out)


class TraceTest(TraceTestCase):
    def test_smtpd(self):
        d = self.smtpd("--log", "--verbose")
        c = harness.SmtpClient(d.port)
        self.addCleanup(c.close)
        c.reply()
        c.cmd("EHLO client.test")
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0" + PASSWORD))[0][:3], "235")
        self.assertEqual(c.submit(CONTENT + b".\r\n", ehlo=None)[-1][:3], "250")
        # A response the client sends after a refused AUTH is a command line, and still a secret.
        self.assertEqual(c.cmd("AUTH FOO")[0][:1], "5")   # already authenticated: 503
        self.assertEqual(c.cmd(b64(PASSWORD))[0][:1], "5")
        c.cmd("QUIT")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20) as s:   # LOGIN: two secret responses
            s.ehlo("second.test")
            s.user, s.password = "alice", PASSWORD
            s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        self.assertTrue(harness.wait_for(lambda: 'rx<<: "QUIT"' in d.output()), d.output())
        out = d.output()
        for line in ('emailrelay-smtpd: info: tx>>: "220 relay.test -- emailrelay V',
                     'info: rx<<: "EHLO client.test"', 'tx>>: "250-relay.test says hello"', 'tx>>: "250 8BITMIME"',
                     'rx<<: "AUTH PLAIN [not logged]"', 'tx>>: "235 2.7.0 authentication successful"',
                     'rx<<: "MAIL FROM:<a@b>"', 'rx<<: "RCPT TO:<c@d>"', 'rx<<: "DATA"', 'tx>>: "354 start mail input',
                     'rx<<: "AUTH LOGIN"', 'tx>>: "334 VXNlcm5hbWU6"', 'rx<<: "[not logged]"', 'tx>>: "221 '):
            self.assertIn(line, out)
        self.assertEqual(out.count('rx<<: "[not logged]"'), 3, out)
        self.assertNoSecrets(out)

        # Without --verbose: the usual log lines, no dialogue.
        d = self.daemon([SMTPD, "--spool-dir", self.spool, "--log", "/dev/null"])
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20) as s:
            s.sendmail("a@b", ["c@d"], CONTENT)
        self.assertTrue(harness.wait_for(lambda: "accepted" in d.output()), d.output())
        self.assertNotIn("rx<<", d.output())
        self.assertNotIn("tx>>", d.output())

    def test_pop3d(self):
        d = self.daemon([POP3D, "--spool-dir", self.spool, "--pop-auth", self.secrets, "--log", "--verbose",
                         "/dev/null"], names=("pop3",))
        c = harness.SmtpClient(d.port)   # a line client is all POP3 needs here
        self.addCleanup(c.close)
        self.assertTrue(c.line().startswith("+OK"))
        for cmd in ("USER alice", "PASS " + PASSWORD, "STAT", "QUIT"):
            c.send(cmd + "\r\n")
            self.assertTrue(c.line().startswith("+OK"), cmd)
        c2 = harness.SmtpClient(d.port)
        self.addCleanup(c2.close)
        c2.line()
        c2.send("AUTH PLAIN " + b64("\0alice\0" + PASSWORD) + "\r\n")
        self.assertTrue(c2.line().startswith("+OK"))
        c2.send("AUTH LOGIN\r\n")   # in the transaction state: refused, in the trace
        c2.line()
        self.assertTrue(harness.wait_for(lambda: out_has(d, 'rx<<: "AUTH LOGIN"')), d.output())
        out = d.output()
        for line in ('emailrelay-pop3d: info: tx>>: "+OK ', 'rx<<: "USER alice"', 'rx<<: "PASS [not logged]"',
                     'rx<<: "STAT"', 'tx>>: "+OK 0 0"', 'rx<<: "QUIT"', 'rx<<: "AUTH PLAIN [not logged]"'):
            self.assertIn(line, out)
        self.assertNoSecrets(out)

    def test_forward_and_frontend(self):
        # The front-end passes --verbose on: its smtpd traces; then the forwarder's dialogue with
        # a next hop that wants AUTH (another smtpd), both sides traced.
        d = self.daemon([FRONTEND, "--no-daemon", "--user", "root", "--spool-dir", self.spool, "--log", "--verbose"])
        port = d.port
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
            s.sendmail("a@b", ["c@d"], CONTENT)
        self.assertTrue(harness.wait_for(lambda: out_has(d, 'rx<<: "QUIT"')), d.output())
        self.assertIn('emailrelay-smtpd: info: rx<<: "mail FROM:<a@b>"', d.output())   # smtplib's case
        hop = self.smtpd("--log", "--verbose", spool=self.out)
        for cfg in ("m:plain", "m:login"):
            if cfg == "m:login":
                with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
                    s.sendmail("a@b", ["c@d"], CONTENT)
            p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:%d" % hop.port,
                                "--client-auth", self.secrets, "--client-auth-config", cfg, "--log", "--verbose",
                                "/dev/null"], capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            for line in ('emailrelay-forward: info: rx<<: "220 relay.test', 'tx>>: "EHLO ', 'rx<<: "250 8BITMIME"',
                         'tx>>: "MAIL FROM:<a@b>', 'tx>>: "RCPT TO:<c@d>"', 'rx<<: "235 2.7.0 authentication successful"',
                         'tx>>: "QUIT"'):
                self.assertIn(line, p.stderr)
            self.assertIn('tx>>: "AUTH PLAIN [not logged]"' if cfg == "m:plain" else 'tx>>: "AUTH LOGIN"', p.stderr)
            if cfg == "m:login":
                self.assertEqual(p.stderr.count('tx>>: "[not logged]"'), 2, p.stderr)
            self.assertNoSecrets(p.stderr)
        self.assertEqual(len(harness.spool_messages(self.out)), 2)
        self.assertNoSecrets(hop.output())
        self.assertNoSecrets(d.output())


class WordingTest(TraceTestCase):
    """E-MailRelay's wording for the lines monitoring scripts grep, without --verbose:
    connections opened and closed, and the forwarder's connection to the next hop."""

    def test_connection_lines(self):
        d = self.daemon([SMTPD, "--spool-dir", self.spool, "--log", "/dev/null"])
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20) as s:
            port = s.sock.getsockname()[1]
            s.sendmail("a@b", ["c@d"], CONTENT)
        self.assertTrue(harness.wait_for(lambda: out_has(d, "smtp connection closed: 127.0.0.1:%d\n" % port)), d.output())
        self.assertIn("emailrelay-smtpd: info: smtp connection from 127.0.0.1:%d\n" % port, d.output())

        pop = self.daemon([POP3D, "--spool-dir", self.spool, "--pop-auth", self.secrets, "--log", "/dev/null"],
                          names=("pop3",))
        c = harness.SmtpClient(pop.port)
        port = c.sock.getsockname()[1]
        c.line()
        c.send("QUIT\r\n")
        c.line()
        c.close()
        self.assertTrue(harness.wait_for(lambda: out_has(pop, "pop connection closed: 127.0.0.1:%d\n" % port)),
                        pop.output())
        self.assertIn("emailrelay-pop3d: info: pop connection from 127.0.0.1:%d\n" % port, pop.output())

        hop = self.daemon([SMTPD, "--spool-dir", self.out, "/dev/null"])
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:%d" % hop.port, "--log",
                            "/dev/null"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("emailrelay-forward: info: smtp connection to 127.0.0.1:%d\n" % hop.port, p.stderr)
        self.assertNotIn("forwarding [", p.stderr)   # E-MailRelay's --verbose line
        p = subprocess.run([FORWARD, "--spool-dir", self.out, "--forward-to", "127.0.0.1:%d" % d.port, "--log",
                            "--verbose", "/dev/null"], capture_output=True, text=True, timeout=60)
        self.assertRegex(p.stderr, r"emailrelay-forward: debug: forwarding \[emailrelay\.\d+\.\d+\.\d+\]")


def out_has(d, text):
    return text in d.output()


if __name__ == "__main__":
    harness.main()
