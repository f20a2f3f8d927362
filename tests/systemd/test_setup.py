# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-setup on an installed system under a real systemd: `meson install` into a fresh
container, then the setup with an answers file for a store-and-forward relay with STARTTLS,
SMTP accounts (md5 hashes), a POP3 account and Postfix's smtp-sink as the next hop. Mail sent
with swaks to the port it configured reaches the sink through the units it enabled; the POP3
account works with curl; a second run moves the SMTP port; messages are translated.

Ports are fixed (2525, 2626, 2110, 10025): the container has its own network namespace."""

import os
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SINK_DIR = "/var/tmp/sink"
ANSWERS = "/root/setup.answers"
CERT = "/root/relay.pem"

ANSWERS_TEXT = """\
# store-and-forward to the sink, POP3 too
role=store-and-forward
serve-pop=yes
smtp-port=2525
pop-port=2110
next-hop=127.0.0.1:10025
next-hop-tls=none
next-hop-auth=none
server-tls=starttls
server-certificate=%s
server-account=alice:Sm-9qz
pop-account=bob:Pop-4kw
forward-immediately=yes
poll=5
retry-schedule=5
""" % CERT


@unittest.skipUnless(os.path.exists(SINK) and shutil.which("swaks"),
                     "Postfix's smtp-sink or swaks is not installed (scripts/deps --test)")
class SetupUnitsTest(unittest.TestCase):
    c = None

    @classmethod
    def setUpClass(cls):
        cls.c = c = harness.installed_container(cls)
        c.run("cd /root && openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem -subj /CN=relay.test "
              "-days 2 2>/dev/null && cat k.pem c.pem > %s && chmod 600 %s && rm k.pem c.pem" % (CERT, CERT), check=True)
        c.run(["sh", "-c", "cat > %s" % ANSWERS], input=ANSWERS_TEXT, check=True)
        c.start_sink("sink", 10025, SINK_DIR, SINK)   # the container's private network: 10025 is ours

    @classmethod
    def wait_inside(cls, shell, timeout=30):
        return cls.c.wait_until(shell, timeout)

    def sh(self, cmd, timeout=60):
        p = self.c.run(cmd, timeout=timeout)
        self.assertEqual(p.returncode, 0, "%s:\n%s%s" % (cmd, p.stdout, p.stderr))
        return p.stdout

    def sink_count(self):
        return int(self.sh("find %s -type f | wc -l" % SINK_DIR))

    def wait_for(self, predicate, timeout=60, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        self.fail("timed out after %d s waiting for %s\n%s" % (timeout, what, self.c.run(
            "systemctl status --no-pager 'emailrelay*'; journalctl --no-pager -q -n 40 -u 'emailrelay*'").stdout))

    def swaks(self, port, *args):
        return self.c.run(["swaks", "--server", "127.0.0.1", "--port", str(port), "--helo", "client.test",
                           "--from", "alice@client.test", "--to", "bob@example.com", "--timeout", "20", *args],
                          timeout=60)

    def setup_run(self, answers_text=None):
        if answers_text is not None:
            self.c.run(["sh", "-c", "cat > %s" % ANSWERS], input=answers_text, check=True)
        p = self.c.run(["emailrelay-setup", "--answers", ANSWERS], timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    def listening(self, port):
        return self.c.run("ss -ltn | grep -q ':%d '" % port).returncode == 0

    # -- tests, in order --

    def test_01_setup_enables_the_units(self):
        out = self.setup_run()
        self.assertIn("+ systemctl daemon-reload", out)
        self.assertIn("+ systemctl enable --now emailrelay-smtpd.socket emailrelay-forward.path "
                      "emailrelay-forward.timer emailrelay-pop3d.socket", out)
        for unit in ("emailrelay-smtpd.socket", "emailrelay-forward.path", "emailrelay-forward.timer",
                     "emailrelay-pop3d.socket"):
            self.assertEqual(self.sh(["systemctl", "is-enabled", unit]).strip(), "enabled", unit)
            self.assertEqual(self.sh(["systemctl", "is-active", unit]).strip(), "active", unit)
        self.assertTrue(self.listening(2525))
        self.assertTrue(self.listening(2110))
        self.assertFalse(self.listening(25), "the socket unit's own port 25 is still open")
        self.assertEqual(self.sh("stat -c '%a %U' /etc/emailrelay/server.auth /etc/emailrelay/pop.auth").split("\n")[:2],
                         ["600 root", "600 root"])
        self.assertIn("server md5 alice ", self.sh("cat /etc/emailrelay/server.auth"))
        # systemd reads the drop-ins it wrote.
        self.assertIn("LoadCredential=tls.pem:%s" % CERT,
                      self.sh(["systemctl", "cat", "emailrelay-smtpd.service"]))
        self.assertEqual(self.sh(["systemctl", "show", "-P", "Listen", "emailrelay-smtpd.socket"]).strip(),
                         "[::]:2525 (Stream)")

    def test_02_mail_reaches_the_sink(self):
        before = self.sink_count()
        # In clear text the relay refuses before any login can be offered: the setup
        # gave it a certificate, so AUTH waits for STARTTLS.
        p = self.swaks(2525, "--header", "Subject: no login")
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("<** 530 5.7.0 must issue a STARTTLS command first", p.stdout)
        # Under TLS without a login it still refuses: the account is required.
        p = self.swaks(2525, "--tls", "--header", "Subject: no login")
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("<~* 530 5.7.0 authentication required", p.stdout)
        # STARTTLS with the certificate it was given, CRAM-MD5 against the md5 hash it stored.
        p = self.swaks(2525, "--tls", "--auth", "CRAM-MD5", "--auth-user", "alice", "--auth-password", "Sm-9qz",
                       "--header", "Subject: through the setup")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.wait_for(lambda: self.sink_count() == before + 1, 60, "the message to reach the sink")
        self.assertIn("Subject: through the setup", self.sh("cat %s/*" % SINK_DIR))

    def test_03_pop3_account_works(self):
        # Hold forwarding so that a message stays in the spool for POP3.
        self.sh("systemctl stop emailrelay-forward.path emailrelay-forward.timer emailrelay-forward.service")
        try:
            p = self.swaks(2525, "--tls", "--auth", "CRAM-MD5", "--auth-user", "alice", "--auth-password", "Sm-9qz",
                           "--header", "Subject: for pop")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            # STLS on the certificate the setup handed over, then the account.
            out = self.sh("curl -sS --max-time 20 --ssl-reqd -k -u bob:Pop-4kw pop3://127.0.0.1:2110/1")
            self.assertIn("Subject: for pop", out)
            out = self.sh("curl -sS --max-time 20 --ssl-reqd -k -u bob:Pop-4kw pop3://127.0.0.1:2110/")
            self.assertRegex(out, r"^1 \d+")
            bad = self.c.run("curl -sS --max-time 30 --ssl-reqd -k -u bob:wrong pop3://127.0.0.1:2110/")
            self.assertNotEqual(bad.returncode, 0)
            # The right password in clear text is refused: it never crosses the wire unencrypted.
            plain = self.c.run("curl -sS --max-time 30 -u bob:Pop-4kw pop3://127.0.0.1:2110/")
            self.assertNotEqual(plain.returncode, 0, plain.stdout)
        finally:
            self.sh("systemctl start emailrelay-forward.path emailrelay-forward.timer")
        self.wait_for(lambda: self.sh("ls -A /var/spool/emailrelay") == "", 60, "the spool to empty")

    def test_04_second_run_moves_the_port(self):
        server_auth = self.sh("stat -c '%i %Y' /etc/emailrelay/server.auth")
        out = self.setup_run(ANSWERS_TEXT.replace("smtp-port=2525", "smtp-port=2626"))
        self.assertIn("Unchanged: /etc/emailrelay/server.auth", out)
        self.assertEqual(self.sh("stat -c '%i %Y' /etc/emailrelay/server.auth"), server_auth)
        self.assertIn("+ systemctl stop emailrelay-smtpd.service emailrelay-smtpd.socket", out)
        self.assertTrue(self.listening(2626))
        self.assertFalse(self.listening(2525))
        before = self.sink_count()
        p = self.swaks(2626, "--tls", "--auth", "CRAM-MD5", "--auth-user", "alice", "--auth-password", "Sm-9qz",
                       "--header", "Subject: new port")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.wait_for(lambda: self.sink_count() == before + 1, 60, "the message to reach the sink")
        # A third run with the same answers changes nothing and restarts nothing.
        out = self.setup_run()
        self.assertIn("no file changes", out)
        self.assertNotIn("daemon-reload", out)
        self.assertNotIn("try-restart", out)

    def test_05_german(self):
        self.c.run(["sh", "-c", "echo colour=blue > /root/bad.answers"], check=True)
        p = self.c.run(["env", "LANGUAGE=de", "emailrelay-setup", "--answers", "/root/bad.answers"])
        self.assertEqual(p.returncode, 2)
        self.assertIn("/root/bad.answers:1: unbekannter Schlüssel: colour", p.stderr)
        p = self.c.run(["env", "LANGUAGE=de", "emailrelay-setup", "--dry-run", "/tmp"], input="")
        self.assertIn("Was soll dieses Relay tun? [store-and-forward]:", p.stdout)


    def test_06_trusted_network_needs_no_login(self):
        out = self.setup_run(ANSWERS_TEXT.replace("smtp-port=2525", "smtp-port=2626") + "trusted-networks=127.0.0.0/8\n")
        self.assertIn("server none 127.0.0.0/8 trusted", self.sh("cat /etc/emailrelay/server.auth"))
        self.assertIn("+ systemctl try-restart emailrelay-smtpd.service", out)
        before = self.sink_count()
        p = self.swaks(2626, "--header", "Subject: trusted")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.wait_for(lambda: self.sink_count() == before + 1, 60, "the message to reach the sink")
    def test_07_system_accounts_through_pam(self):
        """server-pam and pop-pam: the setup writes /etc/pam.d/emailrelay (the system's stack)
        and drop-ins that run the daemons with pam: and the shadow group; a system account
        then sends mail and reads POP3 through the units; the same answers again change nothing."""
        self.sh("id pamuser >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin pamuser; "
                "echo 'pamuser:Pam-pw-07' | chpasswd; rm -f /etc/pam.d/emailrelay")
        answers = ANSWERS_TEXT.replace("smtp-port=2525", "smtp-port=2626") + "server-pam=yes\npop-pam=yes\n"
        out = self.setup_run(answers)
        self.assertIn("@include common-auth", self.sh("cat /etc/pam.d/emailrelay"))
        unit = self.sh(["systemctl", "cat", "emailrelay-smtpd.service"])
        self.assertIn("SupplementaryGroups=shadow", unit)
        self.assertIn("--server-auth=pam:", unit)
        self.assertIn("--pop-auth=pam:", self.sh(["systemctl", "cat", "emailrelay-pop3d.service"]))
        self.assertIn("+ systemctl try-restart", out)
        before = self.sink_count()
        p = self.swaks(2626, "--tls", "--auth", "PLAIN", "--auth-user", "pamuser", "--auth-password", "Pam-pw-07",
                       "--header", "Subject: system account")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.wait_for(lambda: self.sink_count() == before + 1, 60, "the system account's message at the sink")
        self.assertIn("pamuser", self.sh("curl -sS --max-time 20 --ssl-reqd -k -u pamuser:Pam-pw-07 pop3://127.0.0.1:2110/ "
                                         "-w 'login ok as pamuser'"))
        self.assertNotEqual(self.c.run("curl -sS --max-time 30 --ssl-reqd -k -u pamuser:wrong pop3://127.0.0.1:2110/").returncode, 0)
        self.assertIn("no file changes", self.setup_run(answers))

    def test_08_takes_over_the_spool_e_mailrelay_left(self):
        """Moving from E-MailRelay: a message it left queued is root's, as it leaves them (the spool
        0755, the files 0600), which the services, running as emailrelay only, could not send. The
        setup's run gives the spool to the service user (emailrelay-queue adopt) and it goes out."""
        self.sh("systemctl stop emailrelay-forward.path emailrelay-forward.timer emailrelay-forward.service")
        before = self.sink_count()
        self.sh("printf 'Subject: left by E-MailRelay\\n\\nbody\\n' | emailrelay-submit --wakeup-file none "
                "bob@example.com && chown -R root:root /var/spool/emailrelay && chmod 0755 /var/spool/emailrelay "
                "&& chmod 0600 /var/spool/emailrelay/emailrelay.*")
        self.assertIn("root 600", self.sh("stat -c '%U %a' /var/spool/emailrelay/*.envelope"))
        out = self.setup_run()
        self.assertIn("+ emailrelay-queue adopt", out)
        self.sh("systemctl start emailrelay-forward.service")
        self.wait_for(lambda: self.sink_count() == before + 1, 60, "the message E-MailRelay left at the sink")
        self.assertIn("Subject: left by E-MailRelay", self.sh("cat %s/*" % SINK_DIR))
        self.assertEqual(self.sh("stat -c %U /var/spool/emailrelay").strip(), "emailrelay")
        self.assertNotIn("emailrelay-queue adopt", self.setup_run())   # nothing left to take over


if __name__ == "__main__":
    harness.main()
