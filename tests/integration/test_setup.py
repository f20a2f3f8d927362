# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-setup driven as an administrator would: through a real terminal (tmux send-keys and
capture-pane), page by page, and from an answers file; always with --dry-run into a temporary
root, so nothing outside it is touched and no systemctl runs. Asserts the exact files written,
their modes, the checks on the way (a port in use, an unreadable or broken certificate), that a
second run changes only what changed, and that a failure half-way leaves the old files."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SETUP = os.path.join(harness.BUILD_ROOT, "src", "setup", "emailrelay-setup")
SOURCE_ROOT = os.environ.get("EMAILRELAY_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))


def configured_dirs():
    """The sbindir and sysconfdir the build was configured with (what the files name)."""
    out = subprocess.run(["meson", "introspect", "--buildoptions", harness.BUILD_ROOT], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=60, check=True).stdout
    opts = {o["name"]: o["value"] for o in json.loads(out)}
    return (os.path.join(opts["prefix"], opts["sbindir"]), os.path.join(opts["prefix"], opts["sysconfdir"]))


SBINDIR, SYSCONFDIR = configured_dirs()
CONF = SYSCONFDIR.lstrip("/") + "/emailrelay.conf"
SECRETS = SYSCONFDIR.lstrip("/") + "/emailrelay"
UNITS = "etc/systemd/system"


def md5_hash(password):
    return subprocess.run([harness.program("emailrelay-passwd"), "-p", password], stdout=subprocess.PIPE,
                          check=True, text=True).stdout.strip()


class FakeNextHop:
    """Answers every connection with an SMTP greeting: enough for the setup's check."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                c.sendall(b"220 next.test ESMTP\r\n")
            except OSError:
                pass
            c.close()

    def close(self):
        self.sock.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_certificate(path):
    d = tempfile.mkdtemp()
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/k", "-out",
                        d + "/c", "-subj", "/CN=relay.test", "-days", "2"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(path, "wb") as out:
            for n in ("k", "c"):
                with open(d + "/" + n, "rb") as f:
                    out.write(f.read())
    finally:
        shutil.rmtree(d)


class Terminal:
    """The program in a tmux pane of a private tmux server."""

    def __init__(self, argv, env=None):
        self.socket_name = "emailrelay-setup-test-%d-%d" % (os.getpid(), id(self))
        self.pos = 0
        e = {"LANG": "C.UTF-8", "LANGUAGE": "", "TERM": "xterm"}
        e.update(env or {})
        envs = " ".join("%s=%s" % (k, shlex_quote(v)) for k, v in e.items())
        cmd = "env %s %s; echo \"[exit $?]\"; sleep 3600" % (envs, " ".join(shlex_quote(a) for a in argv))
        self.tmux("new-session", "-d", "-x", "200", "-y", "50", "-s", "setup", cmd)
        self.tmux("set-option", "-t", "setup", "history-limit", "20000")

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.socket_name, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=30, check=True).stdout

    def screen(self):
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "setup")

    def expect(self, text, timeout=30):
        """Wait for text to appear after what earlier expects consumed."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.screen()
            i = s.find(text, self.pos)
            if i >= 0:
                self.pos = i + len(text)
                return s
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %r; the screen:\n%s" % (text, s))
            time.sleep(0.05)

    def answer(self, prompt, text):
        self.expect(prompt)
        if text:
            self.tmux("send-keys", "-t", "setup", "-l", text)
        self.tmux("send-keys", "-t", "setup", "Enter")

    def exit_status(self, timeout=60):
        s = self.expect("[exit ", timeout)
        return int(s[self.pos:].split("]", 1)[0])

    def close(self):
        subprocess.run(["tmux", "-L", self.socket_name, "kill-server"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def shlex_quote(s):
    import shlex
    return shlex.quote(s)


@unittest.skipUnless(shutil.which("tmux"), "tmux is not installed (scripts/deps --test)")
class SetupTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="emailrelay-setup-root.")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.hop = FakeNextHop()
        self.addCleanup(self.hop.close)
        self.cert = os.path.join(self.root, "..", os.path.basename(self.root) + ".pem")
        self.cert = os.path.abspath(self.cert)
        self.addCleanup(lambda: os.path.exists(self.cert) and os.unlink(self.cert))
        self.sbindir = SBINDIR

    # -- helpers --

    def terminal(self, *args, env=None):
        t = Terminal([SETUP, "--dry-run", self.root, *args], env=env)
        self.addCleanup(t.close)
        return t

    def read(self, path):
        with open(os.path.join(self.root, path)) as f:
            return f.read()

    def mode(self, path):
        return stat.S_IMODE(os.stat(os.path.join(self.root, path)).st_mode)

    def answers(self, text, *args, expect=0):
        fd, path = tempfile.mkstemp(prefix="emailrelay-setup-answers.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        p = subprocess.run([SETUP, "--dry-run", self.root, "--answers", path, *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60, env=dict(os.environ, LANGUAGE="", LANG="C.UTF-8"))
        self.assertEqual(p.returncode, expect, p.stdout + p.stderr)
        return p

    def files(self):
        out = {}
        for d, _, names in os.walk(self.root):
            for n in names:
                full = os.path.join(d, n)
                st = os.stat(full)
                out[os.path.relpath(full, self.root)] = (st.st_ino, st.st_mtime_ns, self.read(full))
        return out

    def dropin(self, unit):
        return os.path.join(UNITS, unit + ".d", "setup.conf")

    # -- tests --

    def test_terminal_store_and_forward(self):
        make_certificate(self.cert)
        smtp, pop = free_port(), free_port()
        t = self.terminal()
        t.answer("What should this relay do? [store-and-forward]:", "1")
        t.answer("Serve the spool to POP3 clients too? [no]:", "yes")
        t.answer("Listen on which address (empty: all addresses):", "127.0.0.1")
        t.answer("SMTP port [25]:", str(smtp))
        t.answer("POP3 port [110]:", str(pop))
        t.answer("Accept clients from any address? [no]:", "")
        t.answer("Preset [none]:", "submission")
        t.answer("Next hop, host:port (the server that takes all mail from here):", "127.0.0.1:%d" % self.hop.port)
        t.answer("TLS to the next hop [starttls]:", "")
        t.answer("Login at the next hop [password]:", "")
        t.answer("User name at the next hop:", "me@example.com")
        t.answer("Password (or app password):", "app Pw-7x")
        t.answer("TLS for clients connecting here [none]:", "2")
        t.answer("PEM file with the private key and the certificate chain:", self.cert)
        t.answer("Require STARTTLS before a client may log in or send mail? [no]:", "yes")
        t.answer("Log in with the system's accounts (PAM)? [no]:", "")
        t.answer("Store new passwords as md5 hashes? [yes]:", "")
        t.answer("User name to add or change (-name removes it; empty: done):", "alice")
        t.answer("Password:", "Sm-9qz")
        t.answer("User name to add or change (-name removes it; empty: done):", "")
        t.answer("Networks whose clients need no login (comma list such as 192.168.0.0/24; -: none):", "192.168.0.0/99")
        t.expect('"192.168.0.0/99" is not an address or a network such as 192.168.0.0/24')
        t.answer("Networks whose clients need no login", "192.168.0.0/24, 10.1.2.3")
        t.answer("Log in with the system's accounts (PAM)? [no]:", "")
        t.answer("User name to add or change (-name removes it; empty: done):", "bob")
        t.answer("Password:", "Pop-4kw")
        t.answer("User name to add or change (-name removes it; empty: done):", "")
        t.answer("Filter to add (-spec removes it; empty: done):", "exit:0")
        t.answer("Filter to add (-spec removes it; empty: done):", "")
        t.answer("Check clients against DNS block lists? [no]:", "")
        t.answer("Forward each message as soon as it is stored? [yes]:", "")
        t.answer("Look for mail to forward or retry every how many seconds [60]:", "30")
        t.answer("Seconds between retries after a temporary failure", "60,300")
        t.answer("Give up on a message after how many seconds", "")
        t.answer("Verbose logging? [no]:", "")
        shown = t.expect("Write these files? [no]:")
        # The last page shows every file, secrets masked, and the commands.
        self.assertIn("Write %s/emailrelay.conf (mode 0644):" % SYSCONFDIR, shown)
        self.assertIn("server md5 alice ********", shown)
        self.assertIn("client plain me@example.com ********", shown)
        self.assertIn("systemctl enable --now emailrelay-smtpd.socket emailrelay-forward.path "
                      "emailrelay-forward.timer emailrelay-pop3d.socket", shown)
        for secret in ("Pw-7x", "Sm-9qz", "Pop-4kw", md5_hash("Sm-9qz")):
            self.assertNotIn(secret, shown, "a secret on the screen")
        self.assertFalse(os.path.exists(os.path.join(self.root, CONF)), "written before the confirmation")
        t.answer("", "yes")
        t.expect("Done.")
        self.assertEqual(t.exit_status(), 0, t.screen())

        self.assertEqual(self.read(CONF), (
            "# --- written by emailrelay-setup: role=store-and-forward forward-immediately=yes ---\n"
            "port %d\npop-port %d\ninterface 127.0.0.1\n"
            "forward-to 127.0.0.1:%d\nclient-tls\nclient-tls-required\n"
            "server-tls\nserver-tls-required\nserver-tls-certificate tls.pem\n"
            "filter exit:0\nretry-schedule 60,300\n") % (smtp, pop, self.hop.port))
        self.assertEqual(self.mode(CONF), 0o644)
        self.assertEqual(self.read(SECRETS + "/server.auth"),
                         "# SMTP AUTH accounts: written by emailrelay-setup (E-MailRelay secrets format)\n"
                         "server md5 alice %s\n"
                         "server none 192.168.0.0/24 trusted\nserver none 10.1.2.3 trusted\n" % md5_hash("Sm-9qz"))
        self.assertEqual(self.read(SECRETS + "/pop.auth"),
                         "# POP3 accounts: written by emailrelay-setup (E-MailRelay secrets format)\n"
                         "server plain bob Pop-4kw\n")
        self.assertEqual(self.read(SECRETS + "/client.auth"),
                         "# next hop account: written by emailrelay-setup (E-MailRelay secrets format)\n"
                         "client plain me@example.com app+20Pw-7x\n")
        for name in ("server.auth", "pop.auth", "client.auth"):
            self.assertEqual(self.mode(SECRETS + "/" + name), 0o600, name)
        self.assertEqual(self.mode(SECRETS), 0o700)
        self.assertEqual(self.read(self.dropin("emailrelay-smtpd.socket")),
                         "# Written by emailrelay-setup: the SMTP port.\n[Socket]\nListenStream=\n"
                         "ListenStream=127.0.0.1:%d\n" % smtp)
        self.assertEqual(self.read(self.dropin("emailrelay-pop3d.socket")),
                         "# Written by emailrelay-setup: the POP3 port.\n[Socket]\nListenStream=\n"
                         "ListenStream=127.0.0.1:%d\n" % pop)
        self.assertEqual(self.read(self.dropin("emailrelay-smtpd.service")),
                         "# Written by emailrelay-setup: secrets as credentials (emailrelay.units(7)).\n[Service]\n"
                         "LoadCredential=tls.pem:%s\n"
                         "LoadCredential=server.auth:%s/emailrelay/server.auth\n"
                         "ExecStart=\nExecStart=%s/emailrelay-smtpd --server-auth=%%d/server.auth\n"
                         % (self.cert, SYSCONFDIR, self.sbindir))
        self.assertEqual(self.read(self.dropin("emailrelay-pop3d.service")),
                         "# Written by emailrelay-setup: the certificate as a credential.\n[Service]\n"
                         "LoadCredential=tls.pem:%s\n" % self.cert)
        self.assertEqual(self.read(self.dropin("emailrelay-forward.service")),
                         "# Written by emailrelay-setup: the next hop's account as a credential.\n[Service]\n"
                         "LoadCredential=client.auth:%s/emailrelay/client.auth\n"
                         "ExecStart=\nExecStart=%s/emailrelay-forward --wakeup-linger 5 --client-auth=%%d/client.auth\n"
                         % (SYSCONFDIR, self.sbindir))
        self.assertEqual(self.read(self.dropin("emailrelay-forward.timer")),
                         "# Written by emailrelay-setup: how often the forwarder runs for retries.\n[Timer]\n"
                         "OnActiveSec=\nOnUnitInactiveSec=\nOnActiveSec=30s\nOnUnitInactiveSec=30s\nAccuracySec=1s\n")
        self.assertEqual(len(self.files()), 10, sorted(self.files()))

        # Again, pressing Enter everywhere: the current configuration is the default, nothing changes.
        before = self.files()
        t2 = self.terminal()
        t2.answer("What should this relay do? [store-and-forward]:", "")
        t2.answer("Serve the spool to POP3 clients too? [yes]:", "")
        t2.answer("Listen on which address (empty: all addresses) [127.0.0.1]:", "")
        t2.answer("SMTP port [%d]:" % smtp, "")
        t2.answer("POP3 port [%d]:" % pop, "")
        t2.answer("Accept clients from any address? [no]:", "")
        t2.answer("Preset [none]:", "")
        t2.answer("Next hop, host:port (the server that takes all mail from here) [127.0.0.1:%d]:" % self.hop.port, "")
        t2.answer("TLS to the next hop [starttls]:", "")
        t2.answer("Login at the next hop [password]:", "")
        t2.answer("User name at the next hop [me@example.com]:", "")
        t2.answer("Password (empty: keep the current one):", "")
        t2.answer("TLS for clients connecting here [starttls]:", "")
        t2.answer("PEM file with the private key and the certificate chain [%s]:" % self.cert, "")
        t2.answer("Require STARTTLS before a client may log in or send mail? [yes]:", "")
        t2.answer("Log in with the system's accounts (PAM)? [no]:", "")
        t2.answer("Store new passwords as md5 hashes? [yes]:", "")
        t2.answer("Accounts: alice", "")
        t2.answer("Networks whose clients need no login (comma list such as 192.168.0.0/24; -: none) "
                  "[192.168.0.0/24,10.1.2.3]:", "")
        t2.answer("Log in with the system's accounts (PAM)? [no]:", "")
        t2.answer("Accounts: bob", "")
        t2.answer("Filters: exit:0", "")
        t2.answer("Check clients against DNS block lists? [no]:", "")
        t2.answer("Forward each message as soon as it is stored? [yes]:", "")
        t2.answer("every how many seconds [30]:", "")
        t2.answer("[60,300]:", "")
        t2.answer("Give up on a message after how many seconds", "")
        t2.answer("Verbose logging? [no]:", "")
        shown = t2.expect("Write these files? [no]:")
        self.assertIn("no file changes", shown)
        t2.answer("", "y")
        self.assertEqual(t2.exit_status(), 0, t2.screen())
        self.assertEqual(self.files(), before)

    def test_terminal_checks_port_in_use_and_certificate(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        good = free_port()
        broken = os.path.join(self.root, "broken.pem")
        with open(broken, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        make_certificate(self.cert)
        t = self.terminal()
        t.answer("What should this relay do? [store-and-forward]:", "pop-only")
        t.answer("Listen on which address", "")
        t.answer("POP3 port [110]:", "http")
        t.expect('"http" is not a number from 1 to 65535')
        t.answer("POP3 port [110]:", str(port))
        t.expect("Problem: port %d is in use on this host: another program listens on it" % port)
        t.answer("Go on anyway? [no]:", "")
        t.answer("POP3 port [%d]:" % port, str(good))
        t.answer("Accept clients from any address? [no]:", "")
        t.answer("TLS for clients connecting here [none]:", "implicit")
        missing = self.cert + ".missing"
        t.answer("PEM file with the private key and the certificate chain:", missing)
        t.expect("Problem: cannot read the certificate %s: No such file or directory" % missing)
        t.answer("Go on anyway? [no]:", "no")
        t.answer("PEM file with the private key and the certificate chain", self.root)
        t.expect("Problem: cannot read the certificate %s: Is a directory" % self.root)
        t.answer("Go on anyway? [no]:", "")
        t.answer("PEM file with the private key and the certificate chain", broken)
        t.expect("Problem: %s is not a PEM file with a private key and its certificate" % broken)
        t.answer("Go on anyway? [no]:", "")
        t.answer("PEM file with the private key and the certificate chain", self.cert)
        t.answer("Log in with the system's accounts (PAM)? [no]:", "")
        t.answer("User name to add or change", "")
        t.expect("POP3 needs at least one account.")
        t.answer("User name to add or change", "carol")
        t.answer("Password:", "c")
        t.answer("User name to add or change", "")
        t.answer("Verbose logging? [no]:", "yes")
        t.answer("Write these files? [no]:", "yes")
        self.assertEqual(t.exit_status(), 0, t.screen())
        self.assertEqual(self.read(CONF),
                         "# --- written by emailrelay-setup: role=pop-only forward-immediately=yes ---\n"
                         "pop-port %d\nserver-tls-connection\nserver-tls-certificate tls.pem\nverbose\n" % good)
        self.assertEqual(self.read(self.dropin("emailrelay-pop3d.socket")),
                         "# Written by emailrelay-setup: the POP3 port.\n[Socket]\nListenStream=\nListenStream=%d\n" % good)
        self.assertEqual(sorted(os.listdir(os.path.join(self.root, UNITS))),
                         ["emailrelay-pop3d.service.d", "emailrelay-pop3d.socket.d"])
        self.assertIn("systemctl enable --now emailrelay-pop3d.socket\n", t.screen())

    def test_answers_file_stops_on_a_port_in_use(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        text = "role=proxy\nsmtp-port=%d\nnext-hop=127.0.0.1:%d\n" % (busy.getsockname()[1], self.hop.port)
        p = self.answers(text, expect=1)
        self.assertIn("emailrelay-setup: smtp-port: port %d is in use on this host" % busy.getsockname()[1], p.stderr)
        self.assertIn("nothing was written", p.stderr)
        self.assertEqual(os.listdir(self.root), [])
        # Told to go on, it does.
        self.answers(text + "on-warning=continue\n")
        self.assertIn("port %d\n" % busy.getsockname()[1], self.read(CONF))

    def test_answers_file_and_bad_answers(self):
        p = self.answers("role=relay\n", expect=2)
        self.assertIn('emailrelay-setup: role: "relay" is not one of: store-and-forward, proxy, pop-only, filter-host', p.stderr)
        p = self.answers("colour=blue\n", expect=2)
        self.assertIn("unknown key: colour", p.stderr)
        p = self.answers("role=proxy\nnext-hop=127.0.0.1:%d\nfilter=spamassassin\n" % self.hop.port, expect=2)
        self.assertIn("is neither the absolute path of a program nor a built-in", p.stderr)
        p = self.answers("role=filter-host\nnext-hop=127.0.0.1:%d\n" % self.hop.port, expect=2)
        self.assertIn("emailrelay-setup: filter: a filter host needs at least one filter", p.stderr)
        self.assertEqual(os.listdir(self.root), [])

        p = self.answers("role=proxy\nsmtp-port=%d\nnext-hop=127.0.0.1:%d\nnext-hop-tls=implicit\n"
                         "next-hop-auth=oauth\nnext-hop-user=me@example.com\nnext-hop-oauth-helper=/bin/true\n"
                         "server-account=alice:pw1\nserver-hash=no\nretry-give-up=3600\n" % (free_port(), self.hop.port))
        self.assertIn("Wrote 7 files.", p.stdout)
        conf = self.read(CONF)
        self.assertIn("role=proxy forward-immediately=yes", conf)
        self.assertIn("forward-to 127.0.0.1:%d\nclient-tls-connection\nretry-give-up 3600\n" % self.hop.port, conf)
        self.assertEqual(self.read(SECRETS + "/client.auth").splitlines()[1],
                         "client oauth me@example.com exec:/bin/true")
        self.assertEqual(self.read(SECRETS + "/server.auth").splitlines()[1], "server plain alice pw1")
        self.assertFalse(os.path.exists(os.path.join(self.root, SECRETS + "/pop.auth")))

    def test_answers_pam(self):
        """server-pam and pop-pam: no secrets files, drop-ins that run the daemons with pam: and
        the shadow group, and PAM's service file unless there is one already."""
        pam = "etc/pam.d/emailrelay"
        answers = ("role=store-and-forward\nserve-pop=yes\nsmtp-port=%d\npop-port=%d\nnext-hop=127.0.0.1:%d\n"
                   "server-pam=yes\npop-pam=yes\n" % (free_port(), free_port(), self.hop.port))
        self.answers(answers)
        self.assertEqual(self.read(pam), "# Written by emailrelay-setup: the system's accounts for SMTP AUTH and "
                                         "POP3.\n@include common-auth\n@include common-account\n")
        smtpd = self.read(self.dropin("emailrelay-smtpd.service"))
        self.assertIn("SupplementaryGroups=shadow\nExecStart=\nExecStart=%s/emailrelay-smtpd --server-auth=pam:\n"
                      % SBINDIR, smtpd)
        self.assertNotIn("LoadCredential=server.auth", smtpd)
        self.assertIn("ExecStart=%s/emailrelay-pop3d --pop-auth=pam:\n" % SBINDIR,
                      self.read(self.dropin("emailrelay-pop3d.service")))
        for f in ("server.auth", "pop.auth"):
            self.assertFalse(os.path.exists(os.path.join(self.root, SECRETS, f)), f)
        # Read back on the next run: the same answers change nothing, and the administrator's
        # own PAM service file is never replaced.
        with open(os.path.join(self.root, pam), "w") as f:
            f.write("auth required pam_sss.so\naccount required pam_sss.so\n")
        p = self.answers(answers.replace("server-pam=yes\npop-pam=yes\n", ""))
        self.assertIn("no file changes", p.stdout)
        self.assertEqual(self.read(pam), "auth required pam_sss.so\naccount required pam_sss.so\n")

    def test_filter_host(self):
        port = free_port()
        p = self.answers("role=filter-host\nsmtp-port=%d\nnext-hop=127.0.0.1:%d\nfilter=exit:0\nfilter=/bin/true\n"
                         "forward-immediately=no\n" % (port, self.hop.port))
        self.assertEqual(self.read(CONF),
                         "# --- written by emailrelay-setup: role=filter-host forward-immediately=yes ---\n"
                         "port %d\nforward-to 127.0.0.1:%d\nfilter exit:0\nfilter /bin/true\n" % (port, self.hop.port))
        self.assertIn("systemctl enable --now emailrelay-smtpd.socket emailrelay-forward.path emailrelay-forward.timer\n",
                      p.stdout)

    def test_rerun_changes_only_what_changed_and_keeps_the_administrators_lines(self):
        os.makedirs(os.path.dirname(os.path.join(self.root, CONF)))
        sample = os.path.join(SOURCE_ROOT, "data", "emailrelay.conf")
        shutil.copy(sample, os.path.join(self.root, CONF))
        with open(sample) as f:
            sample_lines = f.read().splitlines()
        base = ("role=store-and-forward\nsmtp-port=%d\nnext-hop=127.0.0.1:%d\nserver-account=alice:pw1\n"
                "pop-account=bob:pw2\nserve-pop=yes\npop-port=%d\n" % (free_port(), self.hop.port, free_port()))
        self.answers(base)
        conf = self.read(CONF)
        kept = conf.split("\n# --- written by emailrelay-setup")[0].splitlines()
        # Everything of the sample stays but its active port lines, which the setup now owns.
        self.assertEqual(kept, [l for l in sample_lines if l not in ("port 25", "pop-port 110")])
        self.assertIn("spool-dir /var/spool/emailrelay", kept)
        first = self.files()

        # A second account and a new poll period: the config file, the socket drop-ins and
        # pop.auth are untouched (same inode, same time).
        p = self.answers(base + "server-account=carol:pw3\npoll=20\n")
        second = self.files()
        changed = sorted(k for k in second if second[k] != first.get(k))
        self.assertEqual(changed, sorted([SECRETS + "/server.auth", self.dropin("emailrelay-forward.timer")]))
        self.assertIn("Unchanged: %s/emailrelay.conf" % SYSCONFDIR, p.stdout)
        self.assertEqual(self.read(SECRETS + "/server.auth").splitlines()[1:],
                         ["server md5 alice %s" % md5_hash("pw1"), "server md5 carol %s" % md5_hash("pw3")])
        self.assertEqual(self.mode(SECRETS + "/server.auth"), 0o600)
        self.assertIn("systemctl try-restart emailrelay-smtpd.service", p.stdout)
        self.assertNotIn("systemctl stop", p.stdout)

        # Removing an account and the POP server.
        p = self.answers(base.replace("serve-pop=yes", "serve-pop=no") + "server-account-remove=alice\npoll=20\n")
        self.assertEqual(self.read(SECRETS + "/server.auth").splitlines()[1:],
                         ["server md5 carol %s" % md5_hash("pw3")])
        self.assertFalse(os.path.exists(os.path.join(self.root, self.dropin("emailrelay-pop3d.socket"))))
        self.assertNotIn("pop-port", self.read(CONF))
        self.assertIn("Remove /etc/systemd/system/emailrelay-pop3d.socket.d/setup.conf", p.stdout)

    def test_failure_half_way_leaves_the_old_files(self):
        base = "role=proxy\nsmtp-port=%d\nnext-hop=127.0.0.1:%d\n" % (free_port(), self.hop.port)
        self.answers(base + "poll=10\n")
        before = self.files()
        # The timer's drop-in is renamed after the config file: make that rename fail.
        timer = os.path.join(self.root, self.dropin("emailrelay-forward.timer"))
        os.unlink(timer)
        os.mkdir(timer)
        with open(os.path.join(timer, "in-the-way"), "w") as f:
            f.write("x")
        del before[self.dropin("emailrelay-forward.timer")]
        before = self.files()
        p = self.answers(base + "poll=11\nretry-schedule=60\n", expect=1)
        self.assertIn("emailrelay-setup: cannot replace %s: Is a directory; the configuration was left as it was"
                      % timer, p.stderr)
        self.assertEqual(self.files(), before)
        self.assertNotIn("retry-schedule", self.read(CONF))
        leftovers = [n for _, _, names in os.walk(self.root) for n in names if ".setup-" in n]
        self.assertEqual(leftovers, [])

    def test_answers_dnsbl(self):
        base = ("role=proxy\nsmtp-port=%d\nnext-hop=127.0.0.1:%d\nremote-clients=yes\nserver-account=alice:pw1\n"
                "filter=exit:0\n" % (free_port(), self.hop.port))
        # Bad specs stop with status 2 and write nothing.
        for spec, said in (("zen..org", '"zen..org" is not a domain name such as zen.spamhaus.org'),
                           ("zen.spamhaus.org,2", "a threshold of 2 never refuses anyone: there is only 1 list"),
                           ("zen.spamhaus.org,1,0", '"0" is not a timeout in milliseconds from 1 to 3600000'),
                           ("zen.spamhaus.org,1,5000,dns.example",
                            '"dns.example" is not the address of a DNS server, such as 192.0.2.53:53'),
                           ("192.0.2.53:53,5000", '"192.0.2.53:53,5000" does not start with a list'),
                           ("zen.spamhaus.org,1,5000,192.0.2.53,x",
                            '"zen.spamhaus.org,1,5000,192.0.2.53,x" is not lists[,threshold[,timeout[,DNS server]]]')):
            p = self.answers(base + "dnsbl=%s\n" % spec, expect=2)
            self.assertIn("emailrelay-setup: dnsbl: " + said, p.stderr)
        self.assertEqual(os.listdir(self.root), [])
        # Without remote clients the daemon would refuse the option: a problem, which going on
        # resolves by leaving DNSBL off.
        no_remote = base.replace("remote-clients=yes", "remote-clients=no") + "dnsbl=zen.spamhaus.org\n"
        p = self.answers(no_remote, expect=1)
        self.assertIn("emailrelay-setup: dnsbl: DNSBL only checks remote clients, and this relay accepts none", p.stderr)
        self.assertEqual(os.listdir(self.root), [])
        self.answers(no_remote + "on-warning=continue\n")
        self.assertNotIn("dnsbl", self.read(CONF))

        # The spec as a user types it, blanks and all; written in the daemon's order after the filters.
        p = self.answers(base + "dnsbl=zen.spamhaus.org, bl.example.net ,2,-3000,[2001:db8::53]:5353\n")
        conf = self.read(CONF)
        self.assertTrue(conf.endswith("remote-clients\nforward-to 127.0.0.1:%d\nfilter exit:0\n"
                                      "dnsbl zen.spamhaus.org,bl.example.net,2,-3000,[2001:db8::53]:5353\n" % self.hop.port),
                        conf)
        # The real emailrelay-smtpd takes it (it refuses a dnsbl it cannot use) and serves.
        spool = tempfile.mkdtemp(prefix="emailrelay-setup-spool.")
        self.addCleanup(shutil.rmtree, spool, True)
        d = harness.Daemon([harness.program("emailrelay-smtpd"), "--spool-dir", spool, os.path.join(self.root, CONF)],
                           [harness.listening_socket()])
        self.addCleanup(d.stop, signal.SIGKILL)
        c = harness.SmtpClient(d.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0][:4], "220 ", d.output())
        # Read back: without the key the line stays as it is, the file untouched.
        before = self.files()
        p = self.answers(base)
        self.assertIn("Unchanged: %s/emailrelay.conf" % SYSCONFDIR, p.stdout)
        self.assertEqual(self.files(), before)
        # Partly given: the rest are the defaults (threshold 1, 5000 ms, the system's resolver).
        self.answers(base + "dnsbl=zen.spamhaus.org\n")
        self.assertIn("\ndnsbl zen.spamhaus.org,1,5000\n", self.read(CONF))
        # "-" removes it.
        self.answers(base + "dnsbl=-\n")
        self.assertNotIn("dnsbl", self.read(CONF))

        # E-MailRelay's older order, written by an administrator, reads back into the new one.
        with open(os.path.join(self.root, CONF), "a") as f:
            f.write("dnsbl 192.0.2.53:53,-2000,1,zen.spamhaus.org,bl.example.net\n")
        self.answers(base)
        self.assertIn("\nfilter exit:0\ndnsbl zen.spamhaus.org,bl.example.net,1,-2000,192.0.2.53:53\n", self.read(CONF))
        self.assertEqual(self.read(CONF).count("dnsbl"), 1)

        # One it cannot read is kept, and stops the setup (as it would stop emailrelay-smtpd) until
        # an answer writes a dnsbl line after it, which is the one that counts.
        conf = self.read(CONF).replace("dnsbl zen.spamhaus.org,bl.example.net,1,-2000,192.0.2.53:53", "dnsbl zen..org")
        with open(os.path.join(self.root, CONF), "w") as f:
            f.write(conf)
        p = self.answers(base, expect=2)
        self.assertIn('emailrelay-setup: warning: dnsbl: "zen..org" is not a domain name such as zen.spamhaus.org '
                      "(the line is kept as it is)", p.stderr)
        self.assertIn("the new configuration would not work, nothing was written", p.stderr)
        self.assertEqual(self.read(CONF), conf)
        self.answers(base + "dnsbl=zen.spamhaus.org\n")
        lines = self.read(CONF).splitlines()
        self.assertEqual([l for l in lines if l.startswith("dnsbl")], ["dnsbl zen..org", "dnsbl zen.spamhaus.org,1,5000"])

    def dnsbl_pages_before(self, t, smtp, defaults=False):
        """The proxy pages up to the DNSBL page: remote clients, one account."""
        if not defaults:
            t.answer("What should this relay do? [store-and-forward]:", "proxy")
            t.answer("Listen on which address (empty: all addresses):", "")
            t.answer("SMTP port [25]:", str(smtp))
            t.answer("Accept clients from any address? [no]:", "yes")
            t.answer("Preset [none]:", "")
            t.answer("Next hop, host:port (the server that takes all mail from here):", "127.0.0.1:%d" % self.hop.port)
            t.answer("TLS to the next hop [none]:", "")
            t.answer("Login at the next hop [none]:", "")
            t.answer("TLS for clients connecting here [none]:", "")
            t.answer("Log in with the system's accounts (PAM)? [no]:", "")
            t.answer("Store new passwords as md5 hashes? [yes]:", "")
            t.answer("User name to add or change (-name removes it; empty: done):", "alice")
            t.answer("Password:", "Sm-9qz")
            t.answer("User name to add or change (-name removes it; empty: done):", "")
            t.answer("Networks whose clients need no login", "")
            t.answer("Filter to add (-spec removes it; empty: done):", "")
            return
        t.answer("What should this relay do? [proxy]:", "")
        t.answer("Listen on which address (empty: all addresses):", "")
        t.answer("SMTP port [%d]:" % smtp, "")
        t.answer("Accept clients from any address? [yes]:", "")
        t.answer("Preset [none]:", "")
        t.answer("Next hop, host:port (the server that takes all mail from here) [127.0.0.1:%d]:" % self.hop.port, "")
        t.answer("TLS to the next hop [none]:", "")
        t.answer("Login at the next hop [none]:", "")
        t.answer("TLS for clients connecting here [none]:", "")
        t.answer("Log in with the system's accounts (PAM)? [no]:", "")
        t.answer("Store new passwords as md5 hashes? [yes]:", "")
        t.answer("Accounts: alice", "")
        t.answer("Networks whose clients need no login", "")
        t.answer("Filter to add (-spec removes it; empty: done):", "")

    def dnsbl_pages_after(self, t):
        t.answer("Look for mail to forward or retry every how many seconds [60]:", "")
        t.answer("Seconds between retries after a temporary failure", "")
        t.answer("Give up on a message after how many seconds", "")
        t.answer("Verbose logging? [no]:", "")

    def test_terminal_dnsbl(self):
        smtp = free_port()
        t = self.terminal()
        self.dnsbl_pages_before(t, smtp)
        t.expect("== DNS block lists ==")
        t.answer("Check clients against DNS block lists? [no]:", "yes")
        t.answer("Block lists (comma list, e.g. zen.spamhaus.org):", "zen.spamhaus.org, not a domain")
        t.expect('"not a domain" is not a domain name such as zen.spamhaus.org')
        t.answer("Block lists (comma list, e.g. zen.spamhaus.org):", "zen.spamhaus.org, bl.example.net")
        t.answer("Refuse a client named by how many lists (0: only log) [1]:", "3")
        t.expect('"3" is not a number from 0 to 2')
        t.answer("Refuse a client named by how many lists (0: only log) [1]:", "2")
        t.answer("Wait how many milliseconds for the lists to answer [5000]:", "3000")
        t.answer("Refuse clients when the lists do not answer in time? [no]:", "yes")
        t.answer("DNS server to ask, address:port (-: the one in /etc/resolv.conf):", "dns.example:53")
        t.expect('"dns.example:53" is not the address of a DNS server, such as 192.0.2.53:53')
        t.answer("DNS server to ask, address:port (-: the one in /etc/resolv.conf):", "192.0.2.53:5353")
        self.dnsbl_pages_after(t)
        shown = t.expect("Write these files? [no]:")
        self.assertIn("    dnsbl zen.spamhaus.org,bl.example.net,2,-3000,192.0.2.53:5353\n", shown)
        t.answer("", "yes")
        self.assertEqual(t.exit_status(), 0, t.screen())
        self.assertEqual(self.read(CONF),
                         "# --- written by emailrelay-setup: role=proxy forward-immediately=yes ---\n"
                         "port %d\nremote-clients\nforward-to 127.0.0.1:%d\n"
                         "dnsbl zen.spamhaus.org,bl.example.net,2,-3000,192.0.2.53:5353\n" % (smtp, self.hop.port))

        # Again: the page starts from the line, and Enter everywhere changes nothing.
        before = self.files()
        t2 = self.terminal()
        self.dnsbl_pages_before(t2, smtp, defaults=True)
        t2.answer("Check clients against DNS block lists? [yes]:", "")
        t2.answer("Block lists (comma list, e.g. zen.spamhaus.org) [zen.spamhaus.org,bl.example.net]:", "")
        t2.answer("Refuse a client named by how many lists (0: only log) [2]:", "")
        t2.answer("Wait how many milliseconds for the lists to answer [3000]:", "")
        t2.answer("Refuse clients when the lists do not answer in time? [yes]:", "")
        t2.answer("DNS server to ask, address:port (-: the one in /etc/resolv.conf) [192.0.2.53:5353]:", "")
        self.dnsbl_pages_after(t2)
        shown = t2.expect("Write these files? [no]:")
        self.assertIn("no file changes", shown)
        t2.answer("", "y")
        self.assertEqual(t2.exit_status(), 0, t2.screen())
        self.assertEqual(self.files(), before)

        # Log only, the system's resolver; then without remote clients the page says DNSBL
        # cannot work, and going on leaves it off.
        t3 = self.terminal()
        self.dnsbl_pages_before(t3, smtp, defaults=True)
        t3.answer("Check clients against DNS block lists? [yes]:", "")
        t3.answer("Block lists (comma list, e.g. zen.spamhaus.org) [zen.spamhaus.org,bl.example.net]:", "zen.spamhaus.org")
        t3.answer("Refuse a client named by how many lists (0: only log) [1]:", "0")
        t3.answer("Wait how many milliseconds for the lists to answer [3000]:", "")
        t3.answer("DNS server to ask, address:port (-: the one in /etc/resolv.conf) [192.0.2.53:5353]:", "-")
        self.dnsbl_pages_after(t3)
        t3.answer("Write these files? [no]:", "yes")
        self.assertEqual(t3.exit_status(), 0, t3.screen())
        self.assertIn("\ndnsbl zen.spamhaus.org,0,3000\n", self.read(CONF))
        self.assertNotIn("Refuse clients when the lists do not answer in time?", t3.screen())

        t4 = self.terminal()
        t4.answer("What should this relay do? [proxy]:", "")
        t4.answer("Listen on which address (empty: all addresses):", "")
        t4.answer("SMTP port [%d]:" % smtp, "")
        t4.answer("Accept clients from any address? [yes]:", "no")
        t4.answer("Preset [none]:", "")
        t4.answer("Next hop, host:port", "")
        t4.answer("TLS to the next hop [none]:", "")
        t4.answer("Login at the next hop [none]:", "")
        t4.answer("TLS for clients connecting here [none]:", "")
        t4.answer("Log in with the system's accounts (PAM)? [no]:", "")
        t4.answer("Store new passwords as md5 hashes? [yes]:", "")
        t4.answer("Accounts: alice", "")
        t4.answer("Networks whose clients need no login", "")
        t4.answer("Filter to add (-spec removes it; empty: done):", "")
        t4.answer("Check clients against DNS block lists? [yes]:", "")
        t4.expect("Problem: DNSBL only checks remote clients, and this relay accepts none (the answer to remote clients "
                  "was no): emailrelay-smtpd would not start with it. Going on leaves DNSBL off.")
        t4.answer("Go on anyway? [no]:", "")
        t4.answer("Check clients against DNS block lists? [yes]:", "yes")
        t4.expect("Problem: DNSBL only checks remote clients")
        t4.answer("Go on anyway? [no]:", "yes")
        self.dnsbl_pages_after(t4)
        t4.answer("Write these files? [no]:", "yes")
        self.assertEqual(t4.exit_status(), 0, t4.screen())
        conf = self.read(CONF)
        self.assertNotIn("dnsbl", conf)
        self.assertNotIn("remote-clients", conf)

    def fake_systemctl(self, status=0):
        """A systemctl first in PATH that records its arguments (and fails with status)."""
        bindir = tempfile.mkdtemp(prefix="emailrelay-setup-bin.")
        self.addCleanup(shutil.rmtree, bindir, True)
        log = os.path.join(bindir, "calls")
        with open(os.path.join(bindir, "systemctl"), "w") as f:
            f.write('#!/bin/sh\necho "$*" >> %s\n[ %d -eq 0 ] || echo "Unit file does-not-exist" >&2\nexit %d\n'
                    % (log, status, status))
        os.chmod(os.path.join(bindir, "systemctl"), 0o755)
        return bindir, log

    def test_root_enables_the_units_offline(self):
        bindir, log = self.fake_systemctl()
        fd, answers = tempfile.mkstemp()
        with os.fdopen(fd, "w") as f:
            f.write("role=proxy\nsmtp-port=%d\nnext-hop=127.0.0.1:%d\n" % (free_port(), self.hop.port))
        self.addCleanup(os.unlink, answers)
        env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"], LANGUAGE="")
        p = subprocess.run([SETUP, "--root", self.root, "--answers", answers], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        with open(log) as f:
            self.assertEqual(f.read(), "--root=%s enable emailrelay-smtpd.socket emailrelay-forward.path "
                             "emailrelay-forward.timer\n" % self.root)
        self.assertIn("+ systemctl --root=%s enable" % self.root, p.stdout)
        self.assertTrue(os.path.exists(os.path.join(self.root, CONF)))

        # A failing command is reported with what it said, and the status is 1.
        bindir, log = self.fake_systemctl(status=1)
        env["PATH"] = bindir + ":" + os.environ["PATH"]
        p = subprocess.run([SETUP, "--root", self.root, "--answers", answers], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("emailrelay-setup: systemctl --root=%s enable emailrelay-smtpd.socket emailrelay-forward.path "
                      "emailrelay-forward.timer failed: Unit file does-not-exist" % self.root, p.stderr)

    def test_german(self):
        env = dict(os.environ, LANG="C.UTF-8", LANGUAGE="de")
        p = subprocess.run([SETUP, "--dry-run", self.root, "--localedir", os.path.join(harness.BUILD_ROOT, "po")],
                           input="", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("== Rolle ==", p.stdout)
        self.assertIn("Was soll dieses Relay tun? [store-and-forward]:", p.stdout)
        self.assertIn("keine Antwort (Ende der Eingabe): nichts wurde geschrieben", p.stderr)
        # The DNSBL page's messages too.
        fd, answers = tempfile.mkstemp(prefix="emailrelay-setup-answers.")
        with os.fdopen(fd, "w") as f:
            f.write("role=proxy\nsmtp-port=%d\nnext-hop=127.0.0.1:%d\nremote-clients=yes\nserver-account=a:b\n"
                    "dnsbl=zen.spamhaus.org,2\n" % (free_port(), self.hop.port))
        self.addCleanup(os.unlink, answers)
        p = subprocess.run([SETUP, "--dry-run", self.root, "--localedir", os.path.join(harness.BUILD_ROOT, "po"),
                            "--answers", answers], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=30, env=env)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("emailrelay-setup: dnsbl: eine Schwelle von 2 weist nie jemanden ab: es gibt nur 1 Liste", p.stderr)


if __name__ == "__main__":
    harness.main()
