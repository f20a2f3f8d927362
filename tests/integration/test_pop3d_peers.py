# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-pop3d against the reference server and more real clients:
- dovecot-pop3d serves the same messages from a Maildir, and one scripted session goes to both:
  where RFC 1939 fixes the answer (status of each command, message sizes, the bytes of RETR and
  TOP, errors out of state and for unknown or deleted messages) the answers are the same;
- getmail6 fetches and deletes over POP3S (implicit TLS);
- a maildrop of 100,000 messages is listed without loading their contents;
- --remote-clients decides whether a client at a TEST-NET address on a veth pair gets in."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import test_tls  # noqa: E402  (for make_certificates only)

POP3D = harness.program("emailrelay-pop3d")
SUBMIT = harness.program("emailrelay-submit")
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
GETMAIL = shutil.which("getmail") or "/usr/bin/getmail"
SANITIZED = bool(os.environ.get("EMAILRELAY_SANITIZED"))

MESSAGES = [
    b"From: a@example.org\r\nSubject: one\r\n\r\nfirst body\r\n",
    b"From: b@example.org\r\nSubject: two\r\nX-Long: " + b"y" * 200 + b"\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n",
    b"From: c@example.org\r\nSubject: three\r\n\r\n" + b"".join(b"line %d\r\n" % i for i in range(50)),
]


class Client:
    """A raw POP3 client: one command, its status line and, for multi-line answers, the lines."""

    def __init__(self, port, wrap=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        if wrap:
            self.sock = wrap(self.sock)
        self.f = self.sock.makefile("rb")
        self.greeting = self.f.readline()

    def cmd(self, text, multi=False):
        self.sock.sendall(text.encode() + b"\r\n")
        status = self.f.readline()
        lines = None
        if multi and status.startswith(b"+OK"):
            lines = []
            while True:
                line = self.f.readline()
                if line == b".\r\n" or not line:
                    break
                lines.append(line)
        return status, lines

    def close(self):
        self.f.close()
        self.sock.close()


class Pop3PeersTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="pop3d-peers-")
        os.chmod(self.work, 0o755)
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.secrets = os.path.join(self.work, "pop.auth")
        with open(self.secrets, "w") as f:
            f.write("server plain alice secret\n")
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.stop(signal.SIGTERM)
        shutil.rmtree(self.work, ignore_errors=True)

    def pop3d(self, *args, names=("pop3",), sockets=None):
        sockets = sockets or [harness.listening_socket() for _ in names]
        d = harness.Daemon([POP3D, "--spool-dir", self.spool, "--pop-auth", self.secrets, *args, "/dev/null"],
                           sockets, names=list(names))
        self.daemons.append(d)
        return d

    def put_messages(self, messages):
        for content in messages:
            subprocess.run([SUBMIT, "--spool-dir", self.spool, "--wakeup-file", "none", "x@example.com"],
                           input=content.replace(b"\r\n", b"\n"), check=True, timeout=30)
        # In the order pop3d lists them (by id), which the peers' listings are compared with.
        ids = sorted(f[:-len(".content")] for f in os.listdir(self.spool) if f.endswith(".content"))
        out = []
        for mid in ids:
            with open(os.path.join(self.spool, mid + ".content"), "rb") as f:
                out.append(f.read())
        return out

    # -- dovecot --

    def start_dovecot(self, contents):
        maildir = os.path.join(self.work, "maildir")
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(maildir, sub))
        for i, content in enumerate(contents):
            # Maildir stores LF; dovecot serves CRLF. Names sort in submission order.
            with open(os.path.join(maildir, "cur", "%d.M%dP1.test:2," % (1000000 + i, i)), "wb") as f:
                f.write(content.replace(b"\r\n", b"\n"))
        subprocess.run(["chown", "-R", "nobody:nogroup", maildir, self.work], check=True)
        port = test_tls.free_port()
        conf = os.path.join(self.work, "dovecot.conf")
        with open(conf, "w") as f:
            f.write("""base_dir = {w}/dovecot-run
state_dir = {w}/dovecot-state
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{w}/maildir
log_path = {w}/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = static
  args = password=secret
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={w}/home
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
""".format(w=self.work, port=port))
        self.dovecot = subprocess.Popen([DOVECOT, "-F", "-c", conf], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.addCleanup(self.stop_dovecot)

        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        if not harness.wait_for(up, timeout=30):
            log = os.path.join(self.work, "dovecot.log")
            with open(log if os.path.exists(log) else "/dev/null") as f:
                self.fail("dovecot did not start:\n" + f.read())
        return port

    def stop_dovecot(self):
        self.dovecot.terminate()
        self.dovecot.wait(timeout=30)

    def session(self, port):
        """The scripted session: (command, status word, payload) for each step."""
        c = Client(port)
        out = []
        script = [
            ("STAT", False), ("RETR 1", True),                       # before login: errors
            ("USER alice", False), ("PASS secret", False),
            ("STAT", False), ("LIST", True), ("LIST 2", False), ("LIST 9", False),
            ("RETR 2", True), ("TOP 3 2", True), ("TOP 1 0", True), ("RETR 0", True),
            ("DELE 1", False), ("DELE 1", False), ("RETR 1", True), ("LIST 1", False),
            ("STAT", False), ("RSET", False), ("STAT", False), ("LIST", True),
            ("NOOP", False), ("DELE 3", False), ("QUIT", False),
        ]
        for command, multi in script:
            status, lines = c.cmd(command, multi)
            word = status.split()[0].decode() if status.strip() else "(closed)"
            # What RFC 1939 fixes: STAT's and LIST's numbers, and every byte of RETR and TOP.
            fixed = None
            if word == "+OK" and (command.startswith("STAT") or command.startswith("LIST ")):
                fixed = status.split()[1:3]
            elif lines is not None:
                fixed = lines
            out.append((command, word, fixed))
        c.close()
        return out

    @unittest.skipUnless(os.geteuid() == 0 and os.path.exists(DOVECOT), "needs root and dovecot-pop3d (scripts/deps --test)")
    def test_same_answers_as_dovecot(self):
        contents = self.put_messages(MESSAGES)
        ours = self.session(self.pop3d().port)
        theirs = self.session(self.start_dovecot(contents))
        for a, b in zip(ours, theirs):
            self.assertEqual(a, b, "emailrelay-pop3d and dovecot differ on %s" % a[0])
        self.assertEqual(len(ours), len(theirs))
        # Both committed DELE 3 at QUIT: the first message came back with RSET, the third went.
        self.assertEqual(len([f for f in os.listdir(self.spool) if f.endswith(".envelope")]), 2)

    # -- getmail6 --

    @unittest.skipUnless(os.path.exists(GETMAIL) and shutil.which("certtool"), "needs getmail6 and gnutls-bin")
    def test_getmail6_over_pop3s(self):
        certs = os.path.join(self.work, "certs")
        os.mkdir(certs)
        test_tls.make_certificates(certs)
        self.put_messages(MESSAGES)
        d = self.pop3d("--server-tls", "--server-tls-certificate", os.path.join(certs, "srv-both.pem"),
                       names=("pop3s",))
        maildir = os.path.join(self.work, "Maildir")
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(maildir, sub))
        rc = os.path.join(self.work, "getmailrc")
        with open(rc, "w") as f:
            f.write("[retriever]\ntype = SimplePOP3SSLRetriever\nserver = localhost\nport = %d\nusername = alice\n"
                    "password = secret\nca_certs = %s\n\n[destination]\ntype = Maildir\npath = %s/\n\n"
                    "[options]\ndelete = true\nread_all = true\nverbose = 1\n"
                    % (d.port, os.path.join(certs, "ca.pem"), maildir))
        os.chmod(certs, 0o755)
        os.chmod(os.path.join(certs, "ca.pem"), 0o644)
        # getmail refuses to deliver as root: run it as nobody, as a user's mail client.
        gm = os.path.join(self.work, "getmail")
        os.mkdir(gm)
        subprocess.run(["chown", "-R", "nobody:nogroup", maildir, gm, rc], check=True)
        runas = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
        p = subprocess.run([*runas, GETMAIL, "--getmaildir", gm, "--rcfile", rc], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("3 messages (", p.stdout)
        got = os.listdir(os.path.join(maildir, "new"))
        self.assertEqual(len(got), 3)
        subjects = []
        for g in got:
            with open(os.path.join(maildir, "new", g), "rb") as f:
                subjects.append(re.search(rb"^Subject: (\w+)", f.read(), re.M).group(1))
        subjects.sort()
        self.assertEqual(subjects, [b"one", b"three", b"two"])
        self.assertEqual([f for f in os.listdir(self.spool) if f.endswith(".envelope")], [])   # deleted

    # -- a large maildrop --

    def test_hundred_thousand_messages(self):
        n = 20000 if SANITIZED else 100000
        # 200,000 files on tmpfs: on a disk shared with the rest of a loaded suite, making and
        # removing them alone took minutes. What is measured here is memory, not the disk.
        if os.access("/dev/shm", os.W_OK):
            self.spool = tempfile.mkdtemp(prefix="pop3d-bulk-", dir="/dev/shm")
            self.addCleanup(shutil.rmtree, self.spool, True)
        env = ("X-MailRelay-Format: #2821.8\r\nX-MailRelay-Content: 7bit\r\nX-MailRelay-From: a@example.org\r\n"
               "X-MailRelay-ToCount: 1\r\nX-MailRelay-To-Remote: b@example.com\r\nX-MailRelay-Authentication: \r\n"
               "X-MailRelay-Client: 127.0.0.1\r\nX-MailRelay-ClientCertificate: \r\nX-MailRelay-MailFromAuthIn: \r\n"
               "X-MailRelay-MailFromAuthOut: \r\nX-MailRelay-ForwardTo: \r\nX-MailRelay-ForwardToAddress: \r\n"
               "X-MailRelay-ClientAccountSelector: \r\nX-MailRelay-Utf8MailboxNames: 0\r\nX-MailRelay-End: 1\r\n").encode()
        for i in range(n):
            base = os.path.join(self.spool, "emailrelay.1.1795000000.%d" % i)
            with open(base + ".content", "wb") as f:
                f.write(b"Subject: bulk %d\r\n\r\n" % i + b"x" * 1000 + b"\r\n")
            with open(base + ".envelope", "wb") as f:
                f.write(env)
        d = self.pop3d()
        c = Client(d.port)
        c.cmd("USER alice")
        t0 = time.monotonic()
        status, _ = c.cmd("PASS secret")
        login = time.monotonic() - t0
        self.assertTrue(status.startswith(b"+OK"), status)
        status, _ = c.cmd("STAT")
        size = len(b"Subject: bulk 0\r\n\r\n") + 1002   # the content sizes vary with i's digits
        self.assertTrue(status.startswith(b"+OK %d " % n), status)
        t0 = time.monotonic()
        _, lines = c.cmd("LIST", multi=True)
        _, uidls = c.cmd("UIDL", multi=True)
        listing = time.monotonic() - t0
        self.assertEqual((len(lines), len(uidls)), (n, n))
        self.assertEqual(lines[-1].split()[0], b"%d" % n)
        self.assertGreaterEqual(int(lines[0].split()[1]), size)
        status, body = c.cmd("RETR %d" % n, multi=True)
        self.assertIn(b"Subject: bulk", body[0])
        c.cmd("QUIT")
        c.close()
        with open("/proc/%d/status" % d.proc.pid) as f:
            hwm = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
        sys.stderr.write("%d messages: login (the listing) %.2f s, LIST+UIDL %.2f s, peak RSS %d KiB\n"
                         % (n, login, listing, hwm))
        if not SANITIZED:
            # Without the contents: a few dozen bytes a message. Their 1 KiB each would be 100 MiB.
            self.assertLess(hwm, 48 * 1024, "peak RSS %d KiB for %d messages" % (hwm, n))

    # -- remote clients --

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("ip"), "needs root and iproute2 for a test network")
    def test_remote_clients(self):
        tag = os.getpid() % 100000
        server_ns, client_ns, veth = "eps%d" % tag, "epc%d" % tag, "epv%d" % tag
        cmds = [["ip", "netns", "add", server_ns], ["ip", "netns", "add", client_ns],
                ["ip", "link", "add", veth, "netns", server_ns, "type", "veth", "peer", "name", veth + "p",
                 "netns", client_ns]]
        for ns, dev, addr in ((server_ns, veth, "192.0.2.1/24"), (client_ns, veth + "p", "192.0.2.10/24")):
            cmds += [["ip", "-n", ns, "addr", "add", addr, "dev", dev], ["ip", "-n", ns, "link", "set", dev, "up"],
                     ["ip", "-n", ns, "link", "set", "lo", "up"]]
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True)
        self.addCleanup(lambda: [subprocess.run(["ip", "netns", "del", ns], capture_output=True)
                                 for ns in (server_ns, client_ns)])
        script = ("import socket\ns = socket.create_connection(('192.0.2.1', 110), timeout=10)\n"
                  "print(s.recv(4096).decode().strip())\n")
        for args, expect in (([], "-ERR"), (["--remote-clients"], "+OK")):
            d = harness.Daemon(["ip", "netns", "exec", server_ns, POP3D, "--spool-dir", self.spool, "--pop-auth",
                                self.secrets, "--interface", "192.0.2.1", "--pop-port", "110", *args, "/dev/null"])
            self.assertTrue(harness.wait_for(lambda: "pop server on port 110" in d.output()), d.output())
            p = subprocess.run(["ip", "netns", "exec", client_ns, "/usr/bin/python3", "-c", script],
                               capture_output=True, text=True, timeout=30)
            d.stop()
            self.assertTrue(p.stdout.startswith(expect), (args, p.stdout, p.stderr))
            if expect == "-ERR":
                self.assertIn("192.0.2.10", d.output())


if __name__ == "__main__":
    harness.main()
