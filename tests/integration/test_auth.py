# SPDX-License-Identifier: GPL-3.0-or-later
"""SMTP AUTH: emailrelay-smtpd --server-auth against real clients (swaks, curl, Python smtplib
and raw dialogues), emailrelay-passwd's hashes in a real CRAM-MD5 exchange, and
emailrelay-forward --client-auth against emailrelay-smtpd. Wrong passwords, unknown mechanisms,
garbage base64 and AUTH twice end in clean replies; failures are logged with the address."""

import base64
import hmac
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SMTPD = harness.program("emailrelay-smtpd")
FORWARD = harness.program("emailrelay-forward")
SUBMIT = harness.program("emailrelay-submit")
PASSWD = os.path.join(harness.BUILD_ROOT, "src/tools/emailrelay-passwd")
DOMAIN = "relay.test"
HAVE_SWAKS = shutil.which("swaks") is not None
HAVE_CURL = shutil.which("curl") is not None

# "secret" as E-MailRelay 2.6.1's emailrelay-passwd hashes it (32 bytes), and as earlier versions
# of ours wrote it (33: a 0x3a byte first), which secrets files may still hold.
SECRET_MD5 = "qeD38fvADIqBu6rDlXMbVs07p96q1uXKI0SLpC43l0c="
SECRET_MD5_OLD = "Oqng9/H7wAyKgbuqw5VzG1bNO6feqtblyiNEi6QuN5dH"
# What E-MailRelay 2.6.1's emailrelay-passwd prints for "foobar".
FOOBAR_MD5 = "3pIN0aPbd5aN0S4ogKA3w2P3P9XH0hXchLP1W+adpQE="


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


class AuthTestCase(unittest.TestCase):
    secrets_text = ("server plain alice secret\n"
                    "server plain:b Ym9i Ym9icGFzcw==\n"       # bob / bobpass
                    "server md5 carol %s\n"                     # carol / secret, hashed
                    "server plain dave p+20w+2Bd\n"             # dave / "p w+d"
                    % SECRET_MD5)

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="auth-test-")
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.secrets = os.path.join(self.work, "secrets")
        with open(self.secrets, "w") as f:
            f.write(self.secrets_text)
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.stop(signal.SIGKILL)
        shutil.rmtree(self.work, ignore_errors=True)

    def start(self, *args, spool=None):
        argv = [SMTPD, "--spool-dir", spool or self.spool, "--domain", DOMAIN, "--server-auth", self.secrets,
                *args, self.config]
        d = harness.Daemon(argv, [harness.listening_socket()])
        self.daemons.append(d)
        self.daemon = d
        return d.port

    def client(self):
        c = harness.SmtpClient(self.daemon.port)
        self.addCleanup(c.close)
        c.reply()
        return c

    def ehlo(self, c):
        lines = c.cmd("EHLO client.test")
        self.assertEqual(lines[-1], "250 8BITMIME")
        return lines

    def messages(self):
        return harness.spool_messages(self.spool)

    def field(self, m, key):
        return dict(m.fields())[key]


class ServerTest(AuthTestCase):
    def test_ehlo_and_required(self):
        self.start()
        c = self.client()
        lines = self.ehlo(c)
        self.assertIn("250-AUTH CRAM-SHA512 CRAM-SHA256 CRAM-SHA1 CRAM-MD5 PLAIN LOGIN", lines)
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["530 5.7.0 authentication required"])
        self.assertEqual(c.cmd("VRFY someone"), ["530 5.7.0 authentication required"])
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), ["235 2.7.0 authentication successful"])
        self.assertNotIn("250-AUTH", " ".join(self.ehlo(c)))   # no AUTH once authenticated
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), ["503 5.5.1 already authenticated"])
        self.assertEqual(c.cmd("MAIL FROM:<a@b> AUTH=alice+40x"), ["250 2.1.0 sender <a@b> OK"])
        self.assertEqual(c.cmd("RCPT TO:<c@d>"), ["250 2.1.5 recipient <c@d> OK"])
        self.assertEqual(c.cmd("DATA")[0][:3], "354")
        self.assertEqual(c.cmd("Subject: x\r\n\r\nbody\r\n."), ["250 2.0.0 message processed"])
        m = self.messages()[0]
        self.assertEqual(self.field(m, "X-MailRelay-Authentication"), "alice")
        self.assertEqual(self.field(m, "X-MailRelay-MailFromAuthIn"), "alice+40x")
        self.assertIn(b" with ESMTPA ;", m.content.split(b"\r\n")[0])

    def test_auth_before_ehlo_and_in_transaction(self):
        self.start("--server-auth-config", "m:plain")
        c = self.client()
        self.assertEqual(c.cmd("AUTH PLAIN"), ["503 command out of sequence -- send EHLO first"])
        self.assertIn("250-AUTH PLAIN", self.ehlo(c))
        self.assertEqual(c.cmd("AUTH LOGIN"), ["504 5.5.4 unsupported authentication mechanism"])
        self.assertEqual(c.cmd("AUTH GSSAPI"), ["504 5.5.4 unsupported authentication mechanism"])
        self.assertEqual(c.cmd("AUTH"), ["501 5.5.4 syntax error: AUTH <mechanism> [<initial-response>]"])

    def test_every_mechanism_raw(self):
        self.start()
        for user, password in (("alice", "secret"), ("bob", "bobpass"), ("dave", "p w+d")):
            for mech, digest in (("CRAM-MD5", "md5"), ("CRAM-SHA1", "sha1"), ("CRAM-SHA256", "sha256"),
                                 ("CRAM-SHA512", "sha512")):
                c = self.client()
                self.ehlo(c)
                ch = c.cmd("AUTH " + mech)
                self.assertEqual(ch[0][:4], "334 ")
                challenge = base64.b64decode(ch[0][4:])
                self.assertRegex(challenge.decode(), r"^<\d+\.\d+@relay\.test>$")
                d = hmac.new(password.encode(), challenge, digest).hexdigest()
                self.assertEqual(c.cmd(b64("%s %s" % (user, d))), ["235 2.7.0 authentication successful"], (user, mech))
            c = self.client()
            self.ehlo(c)
            self.assertEqual(c.cmd("AUTH LOGIN"), ["334 VXNlcm5hbWU6"])
            self.assertEqual(c.cmd(b64(user)), ["334 UGFzc3dvcmQ6"])
            self.assertEqual(c.cmd(b64(password)), ["235 2.7.0 authentication successful"])
            c = self.client()
            self.ehlo(c)
            self.assertEqual(c.cmd("AUTH PLAIN"), ["334 "])
            self.assertEqual(c.cmd(b64("\0%s\0%s" % (user, password))), ["235 2.7.0 authentication successful"])

    def test_cram_md5_with_passwd_hash(self):
        """emailrelay-passwd's hash in the secrets file, a real CRAM-MD5 exchange with smtplib."""
        out = subprocess.run([PASSWD], input=b"secret\n", capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.decode().strip(), SECRET_MD5)
        out = subprocess.run([PASSWD, "-p", "foobar"], capture_output=True, timeout=30)
        self.assertEqual(out.stdout.decode().strip(), FOOBAR_MD5)
        out = subprocess.run([PASSWD, "-p", "tanstaaftanstaaf"], capture_output=True, timeout=30)
        erin_hash = out.stdout.decode().strip()
        with open(self.secrets, "a") as f:
            f.write("server md5 erin %s\nserver md5 frank %s\nserver md5 grace %s\n"
                    % (erin_hash, FOOBAR_MD5, SECRET_MD5_OLD))
        self.start()
        for user, password in (("carol", "secret"), ("erin", "tanstaaftanstaaf"), ("frank", "foobar"),
                               ("grace", "secret")):
            s = smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=20)
            s.ehlo("client.test")
            s.user, s.password = user, password
            self.assertEqual(s.auth("CRAM-MD5", s.auth_cram_md5, initial_response_ok=False)[0], 235)
            s.sendmail("a@b", ["c@d"], b"Subject: hashed\r\n\r\nx\r\n")
            s.quit()
        s = smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=20)
        s.ehlo("client.test")
        s.user, s.password = "carol", "wrong"
        with self.assertRaises(smtplib.SMTPAuthenticationError):
            s.auth("CRAM-MD5", s.auth_cram_md5, initial_response_ok=False)
        s.close()
        self.assertEqual(sorted(self.field(m, "X-MailRelay-Authentication") for m in self.messages()), ["carol", "erin", "frank", "grace"])

    def test_bad_input(self):
        self.start()
        c = self.client()
        self.ehlo(c)
        self.assertEqual(c.cmd("AUTH PLAIN !!!notbase64"), ["501 5.5.2 invalid authentication response: bad base64 or format"])
        self.assertEqual(c.cmd("AUTH PLAIN"), ["334 "])
        self.assertEqual(c.cmd("*"), ["501 5.7.0 authentication cancelled"])
        self.assertEqual(c.cmd("AUTH CRAM-MD5 " + b64("x")), ["501 5.5.2 invalid authentication response: bad base64 or format"])
        self.assertEqual(c.cmd("AUTH LOGIN"), ["334 VXNlcm5hbWU6"])
        self.assertEqual(c.cmd("abc"), ["501 5.5.2 invalid authentication response: bad base64 or format"])
        self.assertEqual(c.cmd("AUTH PLAIN " + "A" * 600), ["500 5.5.2 line too long"])
        self.assertEqual(c.cmd("AUTH PLAIN"), ["334 "])
        self.assertEqual(c.cmd("A" * 5000), ["500 5.5.6 authentication exchange line too long"])
        self.assertEqual(c.cmd("NOOP"), ["250 2.0.0 noop"])
        # a wrong password is answered late, then accepted on retry
        t0 = time.monotonic()
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0wrong")), ["535 5.7.8 authentication failed"])
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), ["235 2.7.0 authentication successful"])
        self.assertRegex(self.daemon.output(), r'authentication failed for "alice" from 127\.0\.0\.1 \(PLAIN\)')
        # an id that tries to forge the address fail2ban reads
        forged = '" from 6.6.6.6 ("'
        c = self.client()
        self.ehlo(c)
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0%s\0x" % forged)), ["535 5.7.8 authentication failed"])
        lines = [x for x in self.daemon.output().splitlines() if "6.6.6.6" in x]
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], r'authentication failed for "\? from 6\.6\.6\.6 \(\?" from 127\.0\.0\.1 \(PLAIN\)$')
        self.assertEqual(re.findall(r'authentication failed for "[^"]*" from (\S+) \(', lines[0]), ["127.0.0.1"])

    def test_repeated_failures_drop(self):
        self.start()
        c = self.client()
        self.ehlo(c)
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0a")), ["535 5.7.8 authentication failed"])
        self.assertEqual(c.cmd("AUTH LOGIN " + b64("mallory")), ["334 UGFzc3dvcmQ6"])
        self.assertEqual(c.cmd(b64("b")), ["535 5.7.8 authentication failed"])
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0c")), ["535 5.7.8 authentication failed"])
        self.assertEqual(c.reply(), ["421 4.7.0 too many authentication failures"])
        self.assertTrue(c.closed())
        self.assertIn("too many authentication failures from 127.0.0.1", self.daemon.output())

    def test_trusted_address(self):
        with open(self.secrets, "a") as f:
            f.write("server none 127.0.0.0/8 localnet\n")
        verifier = os.path.join(self.work, "verifier")
        with open(verifier, "w") as f:
            f.write('#!/bin/sh\necho "$5 $6" >> %s/args\necho x; echo "$1"; exit 1\n' % self.work)
        os.chmod(verifier, 0o755)
        self.start("--address-verifier", verifier)
        c = self.client()
        self.ehlo(c)
        self.assertEqual(c.cmd("MAIL FROM:<a@b> AUTH=<>"), ["250 2.1.0 sender <a@b> OK"])
        self.assertEqual(c.cmd("RCPT TO:<c@d>"), ["250 2.1.5 recipient <c@d> OK"])
        with open(os.path.join(self.work, "args")) as f:
            self.assertEqual(f.read(), "none localnet\n")

    def test_secrets_reread(self):
        self.start()
        c = self.client()
        self.ehlo(c)
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0zed\0zpw")), ["535 5.7.8 authentication failed"])
        with open(self.secrets, "a") as f:
            f.write("server plain zed zpw\n")

        def zed():
            c = self.client()
            self.ehlo(c)
            return c.cmd("AUTH PLAIN " + b64("\0zed\0zpw"))
        # The file is looked at once a second at most, when a connection comes.
        self.assertTrue(harness.wait_for(lambda: zed() == ["235 2.7.0 authentication successful"], interval=0.2))
        self.assertIn("re-read the secrets file", self.daemon.output())

    def test_bad_secrets_file(self):
        with open(self.secrets, "w") as f:
            f.write("server plain alice\n")
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--server-auth", self.secrets, "--port", "0", self.config],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:1: too few fields" % self.secrets, p.stderr)
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--server-auth", self.secrets, "--server-auth-config",
                            "z:foo", "--port", "0", self.config], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--server-auth-config: invalid item", p.stderr)

    def test_auth_config_lists(self):
        self.start("--server-auth-config", "m:cram-sha256;x:plain")
        c = self.client()
        self.assertIn("250-AUTH CRAM-SHA256", self.ehlo(c))
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), ["504 5.5.4 unsupported authentication mechanism"])

    @unittest.skipUnless(HAVE_SWAKS, "swaks is not installed (scripts/deps --test installs it)")
    def test_swaks(self):
        self.start()
        for mech, user, password in (("PLAIN", "alice", "secret"), ("LOGIN", "bob", "bobpass"),
                                     ("CRAM-MD5", "carol", "secret"), ("CRAM-MD5", "alice", "secret"),
                                     ("CRAM-SHA1", "dave", "p w+d")):
            p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.daemon.port), "--from", "s@example.com",
                                "--to", "r@example.org", "--auth", mech, "--auth-user", user, "--auth-password", password,
                                "--helo", "swaks.test"], capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("235 2.7.0 authentication successful", p.stdout)
        p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.daemon.port), "--from", "s@example.com",
                            "--to", "r@example.org", "--auth", "CRAM-MD5", "--auth-user", "carol", "--auth-password", "nope"],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("535 5.7.8 authentication failed", p.stdout)
        self.assertEqual(sorted(self.field(m, "X-MailRelay-Authentication") for m in self.messages()),
                         ["alice", "alice", "bob", "carol", "dave"])

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_curl(self):
        self.start()
        mail = os.path.join(self.work, "mail.txt")
        with open(mail, "w") as f:
            f.write("Subject: curl\r\n\r\nbody\r\n")
        for opts in (["--login-options", "AUTH=PLAIN"], ["--login-options", "AUTH=LOGIN"], ["--login-options", "AUTH=CRAM-MD5"], []):
            p = subprocess.run(["curl", "-s", "-S", "smtp://127.0.0.1:%d" % self.daemon.port, "--mail-from", "a@b",
                                "--mail-rcpt", "c@d", "-u", "bob:bobpass", "-T", mail, *opts],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run(["curl", "-s", "-S", "smtp://127.0.0.1:%d" % self.daemon.port, "--mail-from", "a@b",
                            "--mail-rcpt", "c@d", "-u", "bob:wrong", "-T", mail], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 67, p.stderr)   # CURLE_LOGIN_DENIED
        self.assertEqual(len(self.messages()), 4)


class FakeServer(harness.RecordingHop):
    """A scripted next hop offering XOAUTH2 (which emailrelay-smtpd does not serve): records
    the AUTH and MAIL lines, accepts a token it is told."""

    def __init__(self, token, mechs="XOAUTH2 PLAIN"):
        super().__init__(extensions=["AUTH " + mechs])
        self.token = token

    def command(self, line, conn, f):
        if line.split(" ")[0].upper() != "AUTH":
            return False
        if line.split(" ")[1:] == ["XOAUTH2", self.token]:
            conn.sendall(b"235 ok\r\n")
        else:
            conn.sendall(b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n")
            self.lines.append(f.readline().decode().rstrip("\r\n"))
            conn.sendall(b"535 5.7.8 bad token\r\n")
        return True


class ClientTest(AuthTestCase):
    """emailrelay-forward --client-auth against emailrelay-smtpd --server-auth."""

    def setUp(self):
        super().setUp()
        self.out = os.path.join(self.work, "out")
        os.mkdir(self.out)
        self.client_secrets = os.path.join(self.work, "client-secrets")

    def submit(self, selector=None, auth_out=None):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "r@example.org"], input=b"Subject: fwd\n\nbody\n",
                       check=True, timeout=30)
        if selector is None and auth_out is None:
            return
        for m in harness.spool_messages(self.spool, ("envelope",)):
            text = m.envelope.decode()
            if "X-MailRelay-ClientAccountSelector: \r\n" not in text or "X-Done" in text:
                continue
            if selector is not None:
                text = text.replace("X-MailRelay-ClientAccountSelector: \r\n", "X-MailRelay-ClientAccountSelector: %s\r\n" % selector)
            if auth_out is not None:
                text = text.replace("X-MailRelay-MailFromAuthOut: \r\n", "X-MailRelay-MailFromAuthOut: %s\r\n" % auth_out)
            with open(m.envelope_path, "w", newline="") as f:
                f.write(text)

    def forward(self, *args, port=None, expect=0):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:%d" % (port or self.daemon.port),
                            *args, self.config], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, expect, p.stderr)
        return p.stderr

    def arrived(self):
        return harness.spool_messages(self.out)

    def write_client_secrets(self, text):
        with open(self.client_secrets, "w") as f:
            f.write(text)

    def test_plain_secrets_and_mechanism_choice(self):
        self.start(spool=self.out)
        self.write_client_secrets("client plain alice secret\n")
        self.submit()
        self.forward("--client-auth", self.client_secrets)
        m = self.arrived()[0]
        self.assertEqual(self.field(m, "X-MailRelay-Authentication"), "alice")
        self.assertEqual(self.field(m, "X-MailRelay-MailFromAuthIn"), "alice")   # AUTH=<our id>
        self.assertIn('authenticated as "alice" from 127.0.0.1 (CRAM-SHA512)', self.daemon.output())
        for cfg, mech in (("m:login", "LOGIN"), ("m:plain,login", "PLAIN"), ("x:cram-sha512,cram-sha256", "CRAM-SHA1")):
            self.submit()
            self.forward("--client-auth", self.client_secrets, "--client-auth-config", cfg)
            self.assertIn('authenticated as "alice" from 127.0.0.1 (%s)' % mech, self.daemon.output())
        self.assertEqual(len(self.arrived()), 4)
        self.assertEqual(os.listdir(self.spool), [])

    def test_md5_hash_and_inline(self):
        self.start(spool=self.out)
        self.write_client_secrets("client md5 carol %s\n" % SECRET_MD5)
        self.submit()
        self.forward("--client-auth", self.client_secrets)
        self.assertIn('authenticated as "carol" from 127.0.0.1 (CRAM-MD5)', self.daemon.output())
        self.submit()
        self.forward("--client-auth", "plain:%s:%s" % (b64("bob"), b64("bobpass")))
        self.assertEqual(sorted(self.field(m, "X-MailRelay-Authentication") for m in self.arrived()), ["bob", "carol"])

    def test_wrong_password_is_deferred(self):
        self.start(spool=self.out)
        self.write_client_secrets("client plain alice wrong\n")
        self.submit()
        err = self.forward("--client-auth", self.client_secrets, expect=3)
        self.assertIn("authentication with 127.0.0.1:%d failed: 535" % self.daemon.port, err)
        m = harness.spool_messages(self.spool)[0]
        self.assertEqual(m.state, "envelope")
        self.assertIn(b"X-MailRelay-Reason: authentication with", m.envelope)
        self.assertEqual(self.arrived(), [])

    def test_selectors_and_auth_out(self):
        self.start(spool=self.out)
        self.write_client_secrets("client plain alice secret a\nclient plain:b Ym9i Ym9icGFzcw== b\n"
                                  "client plain:b = = anon\n")
        self.submit(selector="a")
        self.submit(selector="b", auth_out="<>")
        self.submit(selector="anon")
        # the next hop needs AUTH, so the unauthenticated one cannot go; trust it instead
        with open(self.secrets, "a") as f:
            f.write("server none 127.0.0.1 local\n")
        self.forward("--client-auth", self.client_secrets)
        got = sorted((self.field(m, "X-MailRelay-Authentication"), self.field(m, "X-MailRelay-MailFromAuthIn"))
                     for m in self.arrived())
        self.assertEqual(got, [("", ""), ("alice", "alice"), ("bob", "<>")])

    def test_unknown_selector_is_never_sent_unauthenticated(self):
        # The next hop trusts us, so a message sent without AUTH would arrive: it must not.
        self.start(spool=self.out)
        with open(self.secrets, "a") as f:
            f.write("server none 127.0.0.1 local\n")
        self.write_client_secrets("client plain alice secret a\n")
        self.submit(selector="typo")
        self.submit()
        err = self.forward("--client-auth", self.client_secrets, "--retry-schedule", "0", expect=1)
        self.assertIn('no client account for selector "typo" in %s: stopping the pass' % self.client_secrets, err)
        self.assertEqual(self.arrived(), [])   # the pass stopped: the second one waits too
        left = {self.field(m, "X-MailRelay-ClientAccountSelector"): m for m in harness.spool_messages(self.spool)}
        self.assertEqual(sorted(left), ["", "typo"])
        self.assertEqual(left["typo"].state, "envelope")   # kept for its retries, not .bad
        self.assertIn(b'X-MailRelay-Reason: no client account for selector "typo"', left["typo"].envelope)
        # fixed in the secrets file: both go, the selected one authenticated
        self.write_client_secrets("client plain alice secret typo\n")
        self.forward("--client-auth", self.client_secrets)
        self.assertEqual(sorted(self.field(m, "X-MailRelay-Authentication") for m in self.arrived()), ["", "alice"])

    def test_configuration_errors(self):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:1", "--client-auth", "plain:!!:x",
                            self.config], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("expecting plain:<base64 user>:<base64 password>", p.stderr)
        self.write_client_secrets("client oauth me not-base64!\n")
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:1", "--client-auth",
                            self.client_secrets, self.config], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("%s:1: invalid base64 encoding" % self.client_secrets, p.stderr)

    def test_xoauth2_token_and_helper(self):
        raw = "user=me@example.com\x01auth=Bearer tok123\x01\x01"
        fake = FakeServer(b64(raw))
        fake.start()
        self.addCleanup(fake.close)
        self.write_client_secrets("client oauth me@example.com %s\n" % b64(raw))
        self.submit()
        self.forward("--client-auth", self.client_secrets, port=fake.port)
        self.assertIn("AUTH XOAUTH2 " + b64(raw), fake.lines)
        self.assertIn("MAIL FROM:<anonymous> AUTH=me@example.com", fake.lines)
        # a helper printing a fresh token
        helper = os.path.join(self.work, "token-helper")
        with open(helper, "w") as f:
            f.write('#!/bin/sh\n[ "$1" = me@example.com ] || exit 1\necho tok123\n')
        os.chmod(helper, 0o755)
        self.write_client_secrets("client oauth me@example.com exec:%s\n" % helper)
        fake.lines.clear()
        self.submit()
        self.forward("--client-auth", self.client_secrets, port=fake.port)
        self.assertIn("AUTH XOAUTH2 " + b64(raw), fake.lines)
        # a stale token: refused, the informational challenge answered with an empty line
        with open(helper, "w") as f:
            f.write('#!/bin/sh\necho stale\n')
        fake.lines.clear()
        self.submit()
        err = self.forward("--client-auth", self.client_secrets, port=fake.port, expect=3)
        self.assertIn("535 5.7.8 bad token", err)
        self.assertIn("", fake.lines)
        # a failing helper
        with open(helper, "w") as f:
            f.write('#!/bin/sh\nexit 3\n')
        self.submit()
        err = self.forward("--client-auth", self.client_secrets, port=fake.port, expect=3)
        self.assertIn("the XOAUTH2 helper %s failed" % helper, err)


if __name__ == "__main__":
    harness.main()
