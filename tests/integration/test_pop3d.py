# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-pop3d through its real interfaces: a socket passed as systemd passes it, messages
spooled by the real emailrelay-submit, the dialogue byte for byte, real clients (Python poplib,
curl, fetchmail), and the spool files left behind."""

import base64
import hashlib
import hmac
import os
import poplib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

POP3D = harness.program("emailrelay-pop3d")
SUBMIT = harness.program("emailrelay-submit")
SANITIZED = bool(os.environ.get("EMAILRELAY_SANITIZED"))

GREETING = re.compile(r"^\+OK POP3 server ready (<\d+\.\d+\.\d+@[^>]+>)$")
CAPA = ["+OK capability list follows", "USER", "CAPA", "TOP", "UIDL",
        "SASL CRAM-SHA512 CRAM-SHA256 CRAM-SHA1 CRAM-MD5 PLAIN LOGIN", "."]
DOTTED = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nnormal\r\n.\r\nend\r\n"


class PopClient(harness.SmtpClient):
    """Raw POP3: exact lines out and back."""

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.line()

    def multi(self, text):
        """A command with a multi-line answer: the status line and the lines up to ".", raw."""
        first = self.cmd(text)
        lines = [first]
        if first.startswith("+OK"):
            while lines[-1] != ".":
                lines.append(self.line())
        return lines

    def raw_until_dot(self):
        """Bytes of a multi-line body, still byte-stuffed, with the final ".\r\n"."""
        while b"\r\n.\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("closed in the middle of a message")
            self.buf += chunk
        data, _, self.buf = self.buf.partition(b"\r\n.\r\n")
        return data + b"\r\n.\r\n"


class Pop3dTestCase(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="pop3d-test-")
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.secrets = os.path.join(self.work, "pop.auth")
        with open(self.secrets, "w") as f:
            f.write("# POP users\nserver plain alice secret\nserver plain bob b+20pw\n")
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.daemon = None

    def tearDown(self):
        if self.daemon:
            # A clean stop, so that the sanitizers' leak check runs; then no report in the log.
            self.daemon.stop(signal.SIGTERM)
            self.check_log()
        shutil.rmtree(self.work, ignore_errors=True)

    def check_log(self):
        out = self.daemon.output()
        for bad in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            self.assertNotIn(bad, out)

    def start(self, *args):
        argv = [POP3D, "--spool-dir", self.spool, "--pop-auth", self.secrets, *args, self.config]
        self.daemon = harness.Daemon(argv, [harness.listening_socket()], names=["pop3"])
        return self.daemon.port

    def submit(self, *args, content=b"Subject: test\n\nbody\n"):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, *args, "rcpt@example.com"], input=content,
                       check=True, timeout=60)
        return sorted(f[:-len(".content")] for f in os.listdir(self.spool) if f.endswith(".content"))[-1]

    def client(self):
        c = PopClient(self.daemon.port)
        self.addCleanup(c.close)
        return c

    def greeted(self):
        c = self.client()
        m = GREETING.match(c.line())
        self.assertIsNotNone(m)
        c.challenge = m.group(1)
        return c

    def login(self, user="alice", password="secret"):
        c = self.greeted()
        self.assertEqual(c.cmd("USER " + user), "+OK user: " + user)
        self.assertEqual(c.cmd("PASS " + password), "+OK authenticated")
        return c

    def content(self, mid, sub=""):
        with open(os.path.join(self.spool, sub, mid + ".content"), "rb") as f:
            return f.read()


class DialogueTest(Pop3dTestCase):
    def test_session_byte_for_byte(self):
        a = self.submit(content=DOTTED)
        b = self.submit(content=b"Subject: two\n\nsecond\n")
        ca, cb = self.content(a), self.content(b)
        self.start()
        c = self.greeted()
        self.assertEqual(c.multi("CAPA"), CAPA)
        self.assertEqual(c.cmd("STAT"), "-ERR invalid command in AUTHORIZATION state")
        self.assertEqual(c.cmd("USER alice"), "+OK user: alice")
        self.assertEqual(c.cmd("PASS secret"), "+OK authenticated")
        self.assertEqual(c.cmd("STAT"), "+OK 2 %d" % (len(ca) + len(cb)))
        self.assertEqual(c.multi("LIST"), ["+OK 2 message(s)", "1 %d" % len(ca), "2 %d" % len(cb), "."])
        self.assertEqual(c.cmd("LIST 2"), "+OK 2 %d" % len(cb))
        self.assertEqual(c.multi("UIDL"), ["+OK unique-id listing follows", "1 %s.content" % a, "2 %s.content" % b, "."])
        self.assertEqual(c.cmd("UIDL 1"), "+OK 1 %s.content" % a)
        c.send("RETR 1\r\n")
        self.assertEqual(c.line(), "+OK %d octets" % len(ca))
        stuffed = b"".join(b"." + l if l.startswith(b".") else l for l in ca.splitlines(True))
        self.assertIn(b"\r\n..leading dot\r\n...two dots\r\nnormal\r\n..\r\nend\r\n", stuffed)
        self.assertEqual(c.raw_until_dot(), stuffed + b".\r\n")
        c.send("TOP 1 1\r\n")
        self.assertEqual(c.line(), "+OK top of message follows")
        head = ca.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        self.assertEqual(c.raw_until_dot(), head + b"..leading dot\r\n.\r\n")
        c.send("TOP 2 0\r\n")
        self.assertEqual(c.line(), "+OK top of message follows")
        self.assertEqual(c.raw_until_dot(), cb.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n.\r\n")
        self.assertEqual(c.cmd("DELE 1"), "+OK message 1 deleted")
        self.assertEqual(c.cmd("DELE 1"), "-ERR message deleted")
        self.assertEqual(c.cmd("RETR 1"), "-ERR message deleted")
        self.assertEqual(c.cmd("STAT"), "+OK 1 %d" % len(cb))
        self.assertEqual(c.multi("LIST"), ["+OK 1 message(s)", "2 %d" % len(cb), "."])
        self.assertEqual(c.cmd("RSET"), "+OK")
        self.assertEqual(c.cmd("STAT"), "+OK 2 %d" % (len(ca) + len(cb)))
        self.assertEqual(c.cmd("NOOP"), "+OK")
        self.assertEqual(c.cmd("USER bob"), "-ERR invalid command in TRANSACTION state")
        self.assertEqual(c.cmd("DELE 2"), "+OK message 2 deleted")
        self.assertEqual(c.cmd("QUIT"), "+OK signing off")
        self.assertTrue(c.closed())
        self.assertEqual(sorted(os.listdir(self.spool)), [a + ".content", a + ".envelope"])

    def test_bad_input(self):
        self.submit()
        self.start()
        c = self.greeted()
        self.assertEqual(c.cmd("FROB"), "-ERR unknown command")
        self.assertEqual(c.cmd("PASS secret"), "-ERR no user name given")
        self.assertEqual(c.cmd("USER"), "-ERR missing user name")
        self.assertEqual(c.cmd("AUTH GSSAPI"), "-ERR unsupported SASL mechanism")
        self.assertEqual(c.cmd("AUTH PLAIN !!!!"), "-ERR invalid authentication response")
        self.assertEqual(c.cmd("APOP alice"), "-ERR invalid APOP arguments")
        self.assertEqual(c.cmd("X" * 300), "-ERR line too long")
        self.assertEqual(c.cmd("NOOP"), "-ERR invalid command in AUTHORIZATION state")
        c.cmd("USER alice")
        c.cmd("PASS secret")
        for arg, reply in (("", "-ERR invalid message number"), ("0", "-ERR invalid message number"),
                           ("x", "-ERR invalid message number"), ("-1", "-ERR invalid message number"),
                           ("1 2", "-ERR invalid message number"), ("2", "-ERR no such message"),
                           ("99999999999", "-ERR invalid message number")):
            self.assertEqual(c.cmd(("RETR " + arg).strip()), reply, arg)
        self.assertEqual(c.cmd("LIST 7"), "-ERR no such message")
        self.assertEqual(c.cmd("TOP 1"), "-ERR invalid TOP arguments")
        self.assertEqual(c.cmd("TOP 1 x"), "-ERR invalid TOP arguments")
        self.assertEqual(c.cmd("frob"), "-ERR unknown command")
        self.assertEqual(c.cmd("stat").split()[0:2], ["+OK", "1"])   # verbs ignore case
        self.assertEqual(c.cmd("QUIT"), "+OK signing off")

    def test_wrong_password_delayed_then_dropped(self):
        self.start()
        c = self.greeted()
        for i in range(3):
            c.cmd("USER alice")
            t = time.monotonic()
            self.assertEqual(c.cmd("PASS wrong"), "-ERR authentication failed")
            self.assertGreater(time.monotonic() - t, 0.9)
        self.assertTrue(c.closed())
        self.assertIn('pop authentication failed for "alice" from 127.0.0.1', self.daemon.output())

    def test_no_plain_secrets(self):
        # the hash of "secret", as emailrelay-passwd makes it: CRAM-MD5 only
        with open(self.secrets, "w") as f:
            f.write("server md5 alice qeD38fvADIqBu6rDlXMbVs07p96q1uXKI0SLpC43l0c=\n")
        self.start()
        c = self.greeted()
        self.assertEqual(c.cmd("USER alice"), "-ERR no SASL PLAIN mechanism to do USER/PASS authentication")
        self.assertEqual(c.multi("CAPA"), ["+OK capability list follows", "USER", "CAPA", "TOP", "UIDL", "SASL CRAM-MD5", "."])
        self.assertEqual(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), "-ERR unsupported SASL mechanism")
        challenge = c.cmd("AUTH CRAM-MD5")
        self.assertEqual(challenge[:2], "+ ")
        digest = hmac.new(b"secret", base64.b64decode(challenge[2:]), "md5").hexdigest()
        self.assertEqual(c.cmd(base64.b64encode(("alice " + digest).encode()).decode()), "+OK authenticated")

    def test_auth_plain_and_apop(self):
        mid = self.submit()
        self.start()
        c = self.greeted()
        self.assertEqual(c.cmd("AUTH PLAIN"), "+ ")
        self.assertEqual(c.cmd("*"), "-ERR authentication cancelled")
        self.assertEqual(c.cmd("AUTH PLAIN"), "+ ")
        self.assertEqual(c.cmd(base64.b64encode(b"\0bob\0b pw").decode()), "+OK authenticated")
        self.assertEqual(c.cmd("UIDL 1"), "+OK 1 %s.content" % mid)
        c.cmd("QUIT")
        c = self.greeted()
        self.assertEqual(c.cmd("AUTH PLAIN " + base64.b64encode(b"alice\0alice\0secret").decode()), "+OK authenticated")
        c.cmd("QUIT")
        c = self.greeted()
        digest = hashlib.md5((c.challenge + "secret").encode()).hexdigest()
        self.assertEqual(c.cmd("APOP alice " + digest), "+OK authenticated")
        self.assertEqual(c.cmd("STAT").split()[1], "1")

    def test_maildrop_locked(self):
        self.start()
        c = self.login()
        d = self.greeted()
        d.cmd("USER alice")
        self.assertEqual(d.cmd("PASS secret"), "-ERR maildrop locked")
        c.cmd("QUIT")
        self.assertTrue(c.closed())
        d.cmd("USER alice")
        self.assertEqual(d.cmd("PASS secret"), "+OK authenticated")

    def test_busy_new_bad_not_listed_and_deleted_never_forwarded(self):
        ids = [self.submit(content=b"Subject: %d\n\nx\n" % i) for i in range(5)]
        os.rename(os.path.join(self.spool, ids[0] + ".envelope"), os.path.join(self.spool, ids[0] + ".envelope.busy"))
        os.rename(os.path.join(self.spool, ids[1] + ".envelope"), os.path.join(self.spool, ids[1] + ".envelope.new"))
        os.rename(os.path.join(self.spool, ids[2] + ".envelope"), os.path.join(self.spool, ids[2] + ".envelope.bad"))
        open(os.path.join(self.spool, ids[3] + ".content"), "wb").close()   # empty content: skipped
        self.start()
        c = self.login()
        self.assertEqual(c.multi("UIDL"), ["+OK unique-id listing follows", "1 %s.content" % ids[4], "."])
        c.cmd("DELE 1")
        self.assertEqual(c.cmd("QUIT"), "+OK signing off")
        self.assertTrue(c.closed())
        names = os.listdir(self.spool)
        self.assertFalse([n for n in names if n.startswith(ids[4])])
        self.assertEqual([m.id for m in harness.spool_messages(self.spool, ("envelope",))], [ids[3]])

    def test_delete_refused_while_forwarder_holds_it(self):
        import fcntl
        mid = self.submit()
        self.start()
        c = self.login()
        c.cmd("DELE 1")
        with open(os.path.join(self.spool, mid + ".envelope"), "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self.assertEqual(c.cmd("QUIT"), "-ERR some deleted messages not removed")
        self.assertIn(mid + ".envelope", os.listdir(self.spool))

    def test_no_delete(self):
        mid = self.submit()
        self.start("--pop-no-delete")
        c = self.login()
        self.assertEqual(c.cmd("DELE 1"), "+OK message 1 deleted")
        self.assertEqual(c.cmd("QUIT"), "+OK signing off")
        self.assertIn(mid + ".envelope", os.listdir(self.spool))

    def test_secrets_reread(self):
        self.start()
        self.assertEqual(self.login().cmd("QUIT"), "+OK signing off")   # the file as it was, read
        with open(self.secrets, "w") as f:
            f.write("server plain alice changed\n")

        def changed():
            c = self.greeted()
            c.cmd("USER alice")
            ok = c.cmd("PASS changed") == "+OK authenticated"
            c.close()
            return ok
        # The file is looked at once a second at most, when a client authenticates.
        self.assertTrue(harness.wait_for(changed, interval=0.2), self.daemon.output())

    def test_idle_timeout_closes_without_update(self):
        mid = self.submit()
        self.start("--idle-timeout", "1")
        c = self.login()
        c.cmd("DELE 1")
        t = time.monotonic()
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")          # autologout: nothing sent
        self.assertLess(time.monotonic() - t, 5)
        self.assertIn(mid + ".envelope", os.listdir(self.spool))

    def test_sigterm(self):
        mid = self.submit()
        self.start()
        c = self.login()
        c.cmd("DELE 1")
        self.assertEqual(self.daemon.stop(signal.SIGTERM), 0)
        self.assertEqual(c.line(), "-ERR server shutting down")
        self.assertTrue(c.closed())
        self.assertIn(mid + ".envelope", os.listdir(self.spool))
        self.check_log()
        self.daemon = None

    def test_usage_errors(self):
        p = subprocess.run([POP3D, "--spool-dir", self.spool, self.config], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--pop-auth is required", p.stderr)
        with open(self.secrets, "w") as f:
            f.write("server plain alice\n")
        p = subprocess.run([POP3D, "--spool-dir", self.spool, "--pop-auth", self.secrets, self.config],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:1: too few fields" % self.secrets, p.stderr)
        p = subprocess.run([POP3D, "--spool-dir", self.spool, "--pop-auth", self.secrets, "--server-tls", self.config],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--server-tls needs --server-tls-certificate", p.stderr)

    @unittest.skipUnless(shutil.which("prlimit"), "util-linux's prlimit is not installed")
    def test_sessions_beyond_the_soft_file_limit(self):
        """Started from a shell, the soft limit on open files is often 1024 while the default
        --max-sessions is 1000 and a POP3 session can hold three files: pop3d raises its soft
        limit to the hard one, as smtpd does. Here 64:4096, and 100 clients all greeted."""
        argv = ["prlimit", "--nofile=64:4096", POP3D, "--spool-dir", self.spool, "--pop-auth", self.secrets,
                self.config]
        self.daemon = harness.Daemon(argv, [harness.listening_socket()], names=["pop3"])
        clients = []
        for _ in range(100):
            c = PopClient(self.daemon.port, timeout=10)
            self.addCleanup(c.close)
            clients.append(c)
        for i, c in enumerate(clients):
            self.assertTrue(GREETING.match(c.line()), "client %d" % i)
        with open("/proc/%d/limits" % self.daemon.proc.pid) as f:
            self.assertRegex(f.read(), r"Max open files\s+4096\s+4096")


class ByNameTest(Pop3dTestCase):
    def test_two_users_share_content(self):
        for user in ("alice", "bob"):
            os.mkdir(os.path.join(self.spool, user))
        mid = self.submit("--copy", content=DOTTED)
        content = self.content(mid)
        self.start("--pop-by-name")
        c = self.login()
        self.assertEqual(c.multi("UIDL"), ["+OK unique-id listing follows", "1 %s.content" % mid, "."])
        c.send("RETR 1\r\n")
        self.assertEqual(c.line(), "+OK %d octets" % len(content))
        self.assertIn(b"\r\n..leading dot\r\n", c.raw_until_dot())
        c.cmd("DELE 1")
        self.assertEqual(c.cmd("QUIT"), "+OK signing off")
        self.assertTrue(c.closed())
        self.assertEqual(os.listdir(os.path.join(self.spool, "alice")), [])
        self.assertIn(mid + ".content", os.listdir(self.spool))      # bob still has it
        d = self.login("bob", "b pw")
        self.assertEqual(d.multi("UIDL"), ["+OK unique-id listing follows", "1 %s.content" % mid, "."])
        d.cmd("DELE 1")
        self.assertEqual(d.cmd("QUIT"), "+OK signing off")
        self.assertTrue(d.closed())
        self.assertEqual(os.listdir(os.path.join(self.spool, "bob")), [])
        self.assertEqual(sorted(os.listdir(self.spool)), ["alice", "bob"])

    def test_maildrop_created_at_login(self):
        self.submit()
        self.start("--pop-by-name")
        c = self.login()
        self.assertEqual(c.cmd("STAT"), "+OK 0 0")
        self.assertTrue(os.path.isdir(os.path.join(self.spool, "alice")))

    def test_symlinked_maildrop_refused(self):
        """A maildrop that is a symbolic link (to a directory outside the spool, with messages
        in it) is not served: -ERR, and a warning naming it."""
        outside = os.path.join(self.work, "outside")
        os.mkdir(outside)
        mid = self.submit()
        for suffix in (".content", ".envelope"):
            os.rename(os.path.join(self.spool, mid + suffix), os.path.join(outside, mid + suffix))
        os.symlink(outside, os.path.join(self.spool, "alice"))
        self.start("--pop-by-name")
        c = self.greeted()
        c.cmd("USER alice")
        self.assertEqual(c.cmd("PASS secret"), "-ERR cannot open maildrop")
        self.assertTrue(harness.wait_for(lambda: "the maildrop %s/alice is a symbolic link: refused" % self.spool
                                         in self.daemon.output()), self.daemon.output())
        self.assertEqual(sorted(os.listdir(outside)), [mid + ".content", mid + ".envelope"])

    def test_symlinked_content_not_served(self):
        """A planted <id>.content that is a symbolic link is not listed nor served."""
        secret = os.path.join(self.work, "secret")
        with open(secret, "w") as f:
            f.write("Subject: not for you\n\nsecret\n")
        mid = self.submit()
        os.unlink(os.path.join(self.spool, mid + ".content"))
        os.symlink(secret, os.path.join(self.spool, mid + ".content"))
        self.start()
        c = self.login()
        self.assertEqual(c.cmd("STAT"), "+OK 0 0")
        self.assertEqual(c.cmd("RETR 1"), "-ERR no such message")


class ClientsTest(Pop3dTestCase):
    def test_poplib(self):
        a = self.submit(content=DOTTED)
        b = self.submit(content=b"Subject: two\n\nsecond\n")
        self.start()
        p = poplib.POP3("127.0.0.1", self.daemon.port, timeout=20)
        p.user("alice")
        p.pass_("secret")
        self.assertEqual(p.stat()[0], 2)
        self.assertEqual(p.uidl()[1][0], ("1 %s.content" % a).encode())
        lines = p.retr(1)[1]
        self.assertEqual(b"\r\n".join(lines) + b"\r\n", self.content(a))   # poplib un-stuffs
        p.quit()
        p = poplib.POP3("127.0.0.1", self.daemon.port, timeout=20)
        p.apop("bob", "b pw")
        self.assertEqual(p.uidl(2), ("+OK 2 %s.content" % b).encode())
        p.dele(1)
        p.quit()
        self.assertNotIn(a + ".envelope", os.listdir(self.spool))

    def test_curl(self):
        a = self.submit(content=DOTTED)
        self.start()
        url = "pop3://127.0.0.1:%d/" % self.daemon.port
        out = subprocess.run(["curl", "-s", "-S", url + "1", "-u", "alice:secret"], capture_output=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, self.content(a))
        out = subprocess.run(["curl", "-s", "-S", url, "-u", "alice:secret", "-X", "UIDL"], capture_output=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, ("1 %s.content\r\n" % a).encode())
        out = subprocess.run(["curl", "-s", "-S", url + "1", "-u", "alice:wrong"], capture_output=True, timeout=60)
        self.assertNotEqual(out.returncode, 0)

    @unittest.skipUnless(shutil.which("fetchmail"), "fetchmail not installed")
    def test_fetchmail(self):
        a = self.submit(content=DOTTED)
        b = self.submit(content=b"Subject: two\n\nsecond\n")
        self.start()
        home = os.path.join(self.work, "home")
        os.mkdir(home)
        out = os.path.join(self.work, "fetched")
        rc = os.path.join(home, ".fetchmailrc")
        with open(rc, "w") as f:
            f.write('poll 127.0.0.1 user "alice" password "secret"\n')
        os.chmod(rc, 0o600)
        p = subprocess.run(["fetchmail", "--nodetach", "-a", "-k", "-p", "POP3", "--sslproto", "", "--port", str(self.daemon.port),
                            "--fetchmailrc", rc, "-m", "/bin/sh -c 'cat >> %s'" % out, "127.0.0.1"],
                           capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=home))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        with open(out, "rb") as f:
            fetched = f.read()
        self.assertIn(b"\n.leading dot\n..two dots\nnormal\n.\nend\n", fetched.replace(b"\r\n", b"\n"))
        self.assertIn(b"second", fetched)
        self.assertIn(a + ".envelope", os.listdir(self.spool))   # -k: kept
        self.assertIn(b + ".envelope", os.listdir(self.spool))


class LargeTest(Pop3dTestCase):
    def test_retr_5mib(self):
        body = b"".join(b".line %07d with some text to make it longer than short\n" % i for i in range(90000))
        mid = self.submit(content=b"Subject: big\n\n" + body)
        content = self.content(mid)
        self.assertGreater(len(content), 5 * 1024 * 1024)
        self.start()
        c = self.login()
        c.send("RETR 1\r\n")
        self.assertEqual(c.line(), "+OK %d octets" % len(content))
        data = c.raw_until_dot()
        self.assertEqual(data[:-3].replace(b"\r\n..", b"\r\n."), content)
        self.assertEqual(c.cmd("NOOP"), "+OK")

    def test_memory_bounded(self):
        mid = self.submit()
        size = (20 if SANITIZED else 50) * 1024 * 1024
        line = b"x" * 1022 + b"\r\n"
        with open(os.path.join(self.spool, mid + ".content"), "wb") as f:
            for _ in range(size // len(line)):
                f.write(line)
        self.start()
        c = self.login()
        c.send("RETR 1\r\n")
        c.line()
        # line() may already hold the first bytes of the message: count them too.
        got = len(c.buf)
        tail = c.buf[-8:]
        while not tail.endswith(b"\r\n.\r\n"):
            chunk = c.sock.recv(1 << 20)
            self.assertTrue(chunk)
            got += len(chunk)
            tail = (tail + chunk)[-8:]
        self.assertEqual(got, size // len(line) * len(line) + 3)
        with open("/proc/%d/status" % self.daemon.proc.pid) as f:
            status = dict(l.split(":", 1) for l in f if ":" in l)
        peak_kib = int(status["VmHWM"].split()[0])
        print("daemon peak RSS after RETR of %d MiB: %d KiB" % (size >> 20, peak_kib), file=sys.stderr)
        if not SANITIZED:
            self.assertLess(peak_kib, 20 * 1024, "peak RSS %d KiB" % peak_kib)


if __name__ == "__main__":
    harness.main()
