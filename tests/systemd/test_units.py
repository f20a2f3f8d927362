# SPDX-License-Identifier: GPL-3.0-or-later
"""The installed suite under a real systemd: `meson install` into a fresh container, sysusers and
tmpfiles applied, then only `systemctl enable --now` as a user would. Postfix's smtp-sink runs as
the next hop (a unit too), swaks, smtp-source, curl and fetchmail-free stdlib clients are the
peers. Each test leaves the suite as it found it: sockets enabled, path unit waiting, sink up.

Ports are the real ones (25, 110, 10025): the container has its own network namespace."""

import json
import os
import re
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SPOOL = "/var/spool/emailrelay"
WAKEUP = "/run/emailrelay/forward-wanted"
SINK_DIR = "/var/tmp/sink"
CONF = "/etc/emailrelay.conf"
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
MESSAGE_ACCEPTED = "5b1d7e3f0d8a4a6f9a1c2e7b3d4f6a01"
MESSAGE_FORWARDED = "5b1d7e3f0d8a4a6f9a1c2e7b3d4f6a02"
SERVICES = ["emailrelay-smtpd.service", "emailrelay-pop3d.service", "emailrelay-forward.service"]

CONFIG_TEXT = """\
forward-to 127.0.0.1:10025
domain relay.test
retry-schedule 1
"""

# A client that sends numbered messages one per connection while the daemon is restarted, and
# prints the numbers acknowledged with 250 (the others must have seen 421 or a refused connection).
SEND_NUMBERED = r'''
import smtplib, sys, time
acked = []
refused = 0
deadline = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < deadline and i < int(sys.argv[1]):
    i += 1
    try:
        with smtplib.SMTP("127.0.0.1", 25, local_hostname="client.test", timeout=30) as s:
            s.sendmail("a@client.test", ["b@example.com"],
                       ("Subject: numbered %d\r\n\r\nbody %d\r\n" % (i, i)).encode())
        acked.append(i)
    except (smtplib.SMTPException, OSError):
        refused += 1
        time.sleep(0.05)
with open(sys.argv[3], "w") as f:
    f.write(" ".join(map(str, acked)))
print("acknowledged", len(acked), "refused or cut", refused)
'''


@unittest.skipUnless(os.path.exists(SINK) and os.path.exists(SOURCE),
                     "Postfix's smtp-sink/smtp-source are not installed (scripts/deps --test)")
class UnitsTest(unittest.TestCase):
    c = None

    @classmethod
    def setUpClass(cls):
        cls.c = c = harness.installed_container(cls)
        c.run(["sh", "-c", "cat > %s" % CONF], input=CONFIG_TEXT, check=True)
        c.run("install -m 0600 /dev/null /etc/emailrelay/pop.auth && "
              "echo 'server plain alice s3cret' > /etc/emailrelay/pop.auth", check=True)
        cls.start_sink()
        c.run(["systemctl", "enable", "--now", "emailrelay-smtpd.socket", "emailrelay-forward.path",
               "emailrelay-pop3d.socket"], check=True)

    # -- helpers --

    @classmethod
    def start_sink(cls, port=10025, unit="sink"):
        cls.c.start_sink(unit, port, "%s/%d" % (SINK_DIR, port), SINK)

    @classmethod
    def wait_inside(cls, shell, timeout=30):
        return cls.c.wait_until(shell, timeout)

    def sh(self, cmd, timeout=60):
        p = self.c.run(cmd, timeout=timeout)
        self.assertEqual(p.returncode, 0, "%s:\n%s%s" % (cmd, p.stdout, p.stderr))
        return p.stdout

    def sink_count(self, port=10025):
        return int(self.sh("find %s/%d -type f | wc -l" % (SINK_DIR, port)))

    def sink_clear(self, port=10025):
        self.sh("find %s/%d -type f -delete" % (SINK_DIR, port))

    def spool_files(self):
        return self.sh("ls -A %s" % SPOOL).split()

    def wait_for(self, predicate, timeout=60, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        self.fail("timed out after %d s waiting for %s" % (timeout, what))

    def swaks(self, *args, port=25):
        return self.c.run(["swaks", "--server", "127.0.0.1", "--port", str(port), "--helo", "client.test",
                           "--from", "alice@client.test", "--to", "bob@example.com", "--timeout", "20", *args],
                          timeout=60)

    def unit_state(self, unit):
        return self.c.run(["systemctl", "show", "-P", "ActiveState", unit]).stdout.strip()

    def journal_sync(self):
        """journald reads its sockets in its own time: --sync returns once everything logged
        before it is in the journal, so a line logged before a reply is there to be read."""
        self.sh(["journalctl", "--sync"])

    def journal(self, *args):
        self.journal_sync()
        return self.sh(["journalctl", "--no-pager", "-q", *args])

    def pause_forwarding(self):
        """Stop the path unit and any forwarder still running (one lingers a few seconds)."""
        self.sh("systemctl stop emailrelay-forward.path emailrelay-forward.service")

    def resume_forwarding(self):
        self.sh("systemctl start emailrelay-forward.path")

    def wait_for_empty_spool(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.spool_files() == []:
                return
            time.sleep(0.2)
        self.fail("the spool did not empty in %d s:\n%s\n%s\n%s" % (
            timeout, self.c.run("ls -la %s; head -50 %s/*.envelope*" % (SPOOL, SPOOL)).stdout,
            self.c.run("systemctl status --no-pager emailrelay-forward.path emailrelay-forward.service").stdout,
            self.c.run("journalctl --no-pager -q -n 30 -u emailrelay-forward.service").stdout))

    def journal_cursor(self):
        self.journal_sync()   # what came before is before the cursor
        out = self.sh(["journalctl", "-n", "0", "--show-cursor", "--no-pager"])
        return out.strip().split("-- cursor: ", 1)[1]

    def assert_nothing_failed(self):
        failed = self.sh("systemctl list-units --failed --no-legend --plain 'emailrelay*' sink*")
        self.assertEqual(failed.strip(), "", "failed units")

    # -- tests, in order --

    def test_01_first_connection_starts_the_daemon_and_mail_reaches_the_sink(self):
        self.assertEqual(self.unit_state("emailrelay-smtpd.service"), "inactive")
        self.assertEqual(self.unit_state("emailrelay-smtpd.socket"), "active")
        self.sink_clear()
        p = self.swaks("--header", "Subject: first")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(self.unit_state("emailrelay-smtpd.service"), "active")
        self.wait_for(lambda: self.sink_count() == 1, 30, "the sink to receive the message")
        self.wait_for_empty_spool()
        self.wait_for(lambda: self.unit_state("emailrelay-forward.service") == "inactive", 30, "the forwarder to finish")
        # The story of the message, by its spool id, across both programs.
        accepted = json.loads(self.journal("-u", "emailrelay-smtpd", "MESSAGE_ID=" + MESSAGE_ACCEPTED,
                                           "-o", "json", "-n", "1"))
        msg_id = accepted["EMAILRELAY_ID"]
        self.assertEqual(accepted["REMOTE_ADDR"], "127.0.0.1")
        story = self.journal("EMAILRELAY_ID=" + msg_id, "-o", "cat")
        self.assertIn("accepted", story)
        self.assertIn("forwarded", story)
        # The catalog text, with the fields filled in.
        explained = self.journal("-x", "-u", "emailrelay-smtpd", "MESSAGE_ID=" + MESSAGE_ACCEPTED, "-n", "1")
        self.assertIn("committed it to the spool", explained)
        self.assertIn("journalctl EMAILRELAY_ID=" + msg_id, explained)
        self.assert_nothing_failed()

    def test_02_daemons_run_unprivileged(self):
        self.swaks("--header", "Subject: keep it running")
        for unit in ("emailrelay-smtpd.service",):
            pid = self.sh(["systemctl", "show", "-P", "MainPID", unit]).strip()
            self.assertNotEqual(pid, "0")
            status = self.sh("cat /proc/%s/status" % pid)
            uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
            self.assertNotEqual(uid, "0", "runs as root")
            self.assertEqual(self.sh(["id", "-nu", uid]).strip(), "emailrelay")
            self.assertRegex(status, r"(?m)^CapEff:\s+0+$")
            self.assertRegex(status, r"(?m)^CapPrm:\s+0+$")
            self.assertRegex(status, r"(?m)^NoNewPrivs:\s+1$")
        self.assertEqual(self.sh("stat -c '%U %G %a' " + SPOOL).strip(), "emailrelay emailrelay 2770")

    def test_03_security_scores_and_verify(self):
        for unit in SERVICES:
            out = self.sh(["systemd-analyze", "security", "--no-pager", unit])
            score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
            sys.stderr.write("systemd-analyze security %s: %.1f\n" % (unit, score))
            self.assertLessEqual(score, 2.0, out[-2000:])
        units = self.sh("ls /lib/systemd/system/emailrelay*").split()
        p = self.c.run(["systemd-analyze", "verify", *units])
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""))

    def test_04_pop3_serves_what_stays(self):
        """With the path unit stopped mail stays; POP3 (secrets from LoadCredential=) serves it."""
        self.pause_forwarding()
        try:
            self.assertEqual(self.swaks("--header", "Subject: for pop").returncode, 0)
            out = self.sh("curl -sS --max-time 20 -u alice:s3cret pop3://127.0.0.1/1")
            self.assertIn("Subject: for pop", out)
            self.assertEqual(self.unit_state("emailrelay-pop3d.service"), "active")
            # The credential is the service's copy; the service user cannot read the original.
            self.assertEqual(self.sh("stat -c %a /etc/emailrelay/pop.auth").strip(), "600")
            bad = self.c.run("curl -sS --max-time 30 -u alice:wrong pop3://127.0.0.1/")
            self.assertNotEqual(bad.returncode, 0)
        finally:
            self.resume_forwarding()
        # The path unit finds the flag raised on start: what stayed goes now.
        self.wait_for_empty_spool()

    def test_05_fail2ban_reads_the_journal(self):
        if not shutil.which("fail2ban-regex"):
            self.skipTest("fail2ban is not installed (scripts/deps --test)")
        for _ in range(2):
            self.c.run("curl -sS --max-time 30 -u mallory:guess pop3://127.0.0.1/")
        # A user name that tries to frame another address: only the real one may come out.
        self.c.run(["curl", "-sS", "--max-time", "30", "-u", 'x" from 6.6.6.6 (:guess', "pop3://127.0.0.1/"])
        self.journal_sync()
        out = self.sh(["fail2ban-regex", "--print-all-matched", "systemd-journal",
                       "/etc/fail2ban/filter.d/emailrelay.conf"], timeout=120)
        m = re.search(r"Failregex: (\d+) total", out)
        self.assertTrue(m, out)
        self.assertGreaterEqual(int(m.group(1)), 3, out)
        self.assertIn('from 6.6.6.6 (', out)   # the framing attempt is in the journal, and matched...
        ips = self.sh(["fail2ban-regex", "-o", "ip", "systemd-journal", "/etc/fail2ban/filter.d/emailrelay.conf"],
                      timeout=120).split()
        self.assertIn("127.0.0.1", ips)
        self.assertNotIn("6.6.6.6", ips)         # ...but the address taken is the client's

        # Rejections count too: a client cut off by a per-address limit (loopback made subject
        # to the limits in a transient smtpd; the container's network is its own).
        self.sh("mkdir -p /var/tmp/limits-spool && systemd-run --unit=limits-test --property=Type=notify "
                "/usr/sbin/emailrelay-smtpd --spool-dir /var/tmp/limits-spool --interface 127.0.0.1 "
                "--port 2525 --limits-exempt none --max-rejected-commands-per-address 1 /dev/null")
        try:
            client = ("import socket; s = socket.create_connection(('127.0.0.1', 2525), timeout=20); "
                      "f = s.makefile('rb'); f.readline(); "
                      "s.sendall(b'HELO x\\r\\nRCPT TO:<a@b.test>\\r\\nRCPT TO:<a@b.test>\\r\\n'); "
                      "print(f.read().decode())")
            out = self.sh(["python3", "-c", client])
            self.assertIn("421 too many errors from your address", out)
            self.journal_sync()
            out = self.sh(["fail2ban-regex", "--print-all-matched", "systemd-journal",
                           "/etc/fail2ban/filter.d/emailrelay.conf"], timeout=120)
            self.assertIn("session closed: too many rejected commands from 127.0.0.1 (limit 1 a minute)", out)
        finally:
            self.c.run("systemctl stop limits-test; rm -rf /var/tmp/limits-spool")

    def test_06_ten_thousand_messages_through_the_path_unit(self):
        """smtp-source at full speed: every message forwarded without the timer (it is not even
        enabled), and neither the path nor the forward unit fails on a limit."""
        self.assertNotEqual(self.unit_state("emailrelay-forward.timer"), "active")
        self.sink_clear()
        starts0 = self.forward_starts()
        t0 = time.monotonic()
        p = self.c.run([SOURCE, "-s", "20", "-m", "10000", "-f", "a@client.test", "-t", "b@example.com",
                        "-S", "load", "127.0.0.1:25"], timeout=600)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        sent = time.monotonic() - t0
        self.wait_for(lambda: self.sink_count() >= 10000, 300, "10,000 messages at the sink")
        done = time.monotonic() - t0
        self.assertEqual(self.sink_count(), 10000)
        self.wait_for_empty_spool()
        starts = self.forward_starts() - starts0
        sys.stderr.write("10,000 messages: sent in %.1f s, all at the sink after %.1f s, %d new forwarder starts\n"
                         % (sent, done, starts))
        self.assertEqual(self.unit_state("emailrelay-forward.path"), "active")
        self.assertNotEqual(self.unit_state("emailrelay-forward.service"), "failed")
        self.assert_nothing_failed()

    def test_06a_trickle_across_the_linger_edge(self):
        """Messages that arrive just before, at and just after the moment the forwarder gives up
        lingering (1 s here) are each forwarded at once, by it or by the run the path unit starts;
        none waits for the timer (not enabled)."""
        self.sh("mkdir -p /run/systemd/system/emailrelay-forward.service.d && printf '[Service]\\nExecStart=\\n"
                "ExecStart=/usr/sbin/emailrelay-forward --wakeup-linger 1\\n' > "
                "/run/systemd/system/emailrelay-forward.service.d/linger.conf && systemctl daemon-reload")
        try:
            self.sink_clear()
            starts0 = self.forward_starts()
            gaps = [0.0, 0.5, 0.9, 1.0, 1.05, 1.1, 1.2, 1.5, 2.0, 0.95, 1.02, 1.08, 0.1, 1.15, 3.0]
            worst = 0.0
            for i, gap in enumerate(gaps):
                time.sleep(gap)
                t0 = time.monotonic()
                self.assertEqual(self.swaks("--header", "Subject: trickle %d" % i).returncode, 0)
                self.wait_for(lambda: self.sink_count() == i + 1, 20, "trickle message %d at the sink" % i)
                worst = max(worst, time.monotonic() - t0)
            sys.stderr.write("trickle: %d messages, slowest %.2f s from submission to the sink, %d forwarder starts\n"
                             % (len(gaps), worst, self.forward_starts() - starts0))
            self.assertLess(worst, 10, "a message waited (the timer would have taken 60 s)")
        finally:
            self.sh("rm -r /run/systemd/system/emailrelay-forward.service.d && systemctl daemon-reload")
        self.assert_nothing_failed()

    def forward_starts(self):
        out = self.journal("-u", "emailrelay-forward.service", "-o", "cat")
        return sum(1 for line in out.splitlines() if line.startswith("Starting"))

    def test_07_next_hop_down_then_back(self):
        self.sh("systemctl stop sink")
        self.sink_clear()
        for i in range(3):
            self.assertEqual(self.swaks("--header", "Subject: while down %d" % i).returncode, 0)
        self.wait_for(lambda: self.unit_state("emailrelay-forward.service") == "inactive", 60, "the forwarder to give up")
        self.assertEqual(len([f for f in self.spool_files() if f.endswith(".envelope")]), 3)
        self.assertNotEqual(self.unit_state("emailrelay-forward.service"), "failed")
        self.assertIn("X-MailRelay-Reason: cannot connect", self.sh("cat %s/*.envelope" % SPOOL))
        # The timer retries (every 2 s here), and delivery resumes once the sink is back.
        self.sh("mkdir -p /run/systemd/system/emailrelay-forward.timer.d && printf '[Timer]\\n"
                "OnUnitInactiveSec=\\nOnActiveSec=1s\\nOnUnitInactiveSec=2s\\nAccuracySec=100ms\\n' "
                "> /run/systemd/system/emailrelay-forward.timer.d/fast.conf && systemctl daemon-reload")
        self.sh("systemctl start emailrelay-forward.timer")
        try:
            self.start_sink()
            self.wait_for(lambda: self.sink_count() == 3, 60, "the three messages after the sink came back")
            self.wait_for_empty_spool()
        finally:
            self.sh("systemctl stop emailrelay-forward.timer && rm -r /run/systemd/system/emailrelay-forward.timer.d "
                    "&& systemctl daemon-reload")
        self.assert_nothing_failed()

    def test_08_systemd_run_flush_returns_the_exit_status(self):
        self.pause_forwarding()
        try:
            self.assertEqual(self.swaks("--header", "Subject: flush me").returncode, 0)
            run = ["systemd-run", "--wait", "--pipe", "--quiet", "-p", "User=emailrelay", "-p", "Group=emailrelay",
                   "/usr/sbin/emailrelay-forward"]
            self.sh("systemctl stop sink")
            p = self.c.run(run, timeout=120)
            self.assertEqual(p.returncode, 3, p.stdout + p.stderr)   # next hop unreachable
            self.start_sink()
            self.sink_clear()
            # Due again at once (retry-schedule 1), and now it goes.
            time.sleep(1.1)
            p = self.c.run(run, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertEqual(self.sink_count(), 1)
        finally:
            self.resume_forwarding()

    def test_09_drop_ins(self):
        # A socket drop-in moves the port.
        self.sh("mkdir -p /etc/systemd/system/emailrelay-smtpd.socket.d && printf '[Socket]\\nListenStream=\\n"
                "ListenStream=2525\\n' > /etc/systemd/system/emailrelay-smtpd.socket.d/port.conf && "
                "systemctl daemon-reload && systemctl stop emailrelay-smtpd.service && "
                "systemctl restart emailrelay-smtpd.socket")
        try:
            self.assertEqual(self.swaks("--header", "Subject: on 2525", port=2525).returncode, 0)
            self.assertNotEqual(self.swaks("--quit-after", "CONNECT").returncode, 0)   # 25 is closed now
            self.assertEqual(self.sh("ss -ltnH 'sport = :2525' | wc -l").strip(), "1")
            # A service drop-in adds a filter that refuses everything.
            self.sh("printf '#!/bin/sh\\necho \"<<no thanks>>\"\\nexit 1\\n' > /usr/local/bin/refuse && "
                    "chmod 755 /usr/local/bin/refuse && mkdir -p /etc/systemd/system/emailrelay-smtpd.service.d && "
                    "printf '[Service]\\nExecStart=\\nExecStart=/usr/sbin/emailrelay-smtpd "
                    "--filter=/usr/local/bin/refuse\\n' > /etc/systemd/system/emailrelay-smtpd.service.d/filter.conf && "
                    "systemctl daemon-reload && systemctl restart emailrelay-smtpd.service")
            p = self.swaks("--header", "Subject: refused", port=2525)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("no thanks", p.stdout)
            # The config file changes the next hop: the next forwarder run reads it.
            self.start_sink(10026, unit="sink2")
            # A forwarder still running (lingering) notices the change and leaves the rest to a new run.
            self.sh("sed -i 's/^forward-to .*/forward-to 127.0.0.1:10026/' " + CONF)
            self.sh("rm /etc/systemd/system/emailrelay-smtpd.service.d/filter.conf && systemctl daemon-reload && "
                    "systemctl restart emailrelay-smtpd.service")
            self.assertEqual(self.swaks("--header", "Subject: second hop", port=2525).returncode, 0)
            self.wait_for(lambda: self.sink_count(10026) == 1, 30, "the message at the new next hop")
        finally:
            self.c.run("rm -rf /etc/systemd/system/emailrelay-smtpd.socket.d /etc/systemd/system/emailrelay-smtpd.service.d; "
                       "sed -i 's/^forward-to .*/forward-to 127.0.0.1:10025/' %s; systemctl stop sink2; "
                       "systemctl daemon-reload; systemctl stop emailrelay-smtpd.service; "
                       "systemctl restart emailrelay-smtpd.socket" % CONF)
        self.assert_nothing_failed()

    def test_10_restart_under_load_loses_nothing(self):
        """Every message acknowledged with 250 while the daemon is restarted twice reaches the sink."""
        self.sink_clear()
        self.c.run("cat > /var/tmp/send.py", input=SEND_NUMBERED, check=True)
        # smtp-source is the load; the numbered sender is the witness that knows what got a 250.
        self.sh("systemd-run --unit=load --property=Type=exec %s -s 5 -m 3000 -f a@client.test -t b@example.com "
                "127.0.0.1:25" % SOURCE)
        self.sh("systemd-run --unit=sender --property=Type=exec /usr/bin/python3 /var/tmp/send.py 100000 8 /var/tmp/acked")
        for _ in range(2):
            time.sleep(2)
            self.sh("systemctl restart emailrelay-smtpd.service")
        self.wait_for(lambda: self.unit_state("sender.service") in ("inactive", "failed", ""), 60, "the sender")
        self.wait_for(lambda: self.unit_state("load.service") in ("inactive", "failed", ""), 120, "smtp-source")
        out = self.journal("-u", "sender.service", "-o", "cat")
        acked = set(int(x) for x in self.sh("cat /var/tmp/acked").split())
        self.assertGreater(len(acked), 50, out[-2000:])
        self.assertIn("refused or cut", out)
        refused = int(out.split("refused or cut")[1].split()[0])
        self.wait_for_empty_spool()
        got = self.sh("grep -h '^Subject: numbered ' -r %s/10025 | sort -u" % SINK_DIR)
        delivered = set(int(l.split()[-1]) for l in got.splitlines())
        self.assertEqual(acked - delivered, set(), "acknowledged but never delivered")
        sys.stderr.write("restart under load: %d acknowledged, %d delivered, %d refused or cut off\n"
                         % (len(acked), len(delivered), refused))
        self.assert_nothing_failed()

    def test_11_accept_yes_variant(self):
        """The documented drop-in: one emailrelay-smtpd@ instance per connection."""
        self.sh("systemctl stop emailrelay-smtpd.service emailrelay-smtpd.socket && "
                "mkdir -p /etc/systemd/system/emailrelay-smtpd.socket.d && "
                "printf '[Socket]\\nAccept=yes\\n' > /etc/systemd/system/emailrelay-smtpd.socket.d/accept.conf && "
                "systemctl daemon-reload && systemctl start emailrelay-smtpd.socket")
        try:
            self.sink_clear()
            for i in range(3):
                p = self.swaks("--header", "Subject: accept %d" % i)
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.wait_for(lambda: self.sink_count() == 3, 30, "three messages at the sink")
            instances = self.journal("-o", "cat", "--no-hostname", "-u", "emailrelay-smtpd@*")
            self.assertGreaterEqual(instances.count("Started emailrelay-smtpd@"), 3, instances[-2000:])
            self.assertEqual(self.unit_state("emailrelay-smtpd.service"), "inactive")
        finally:
            self.c.run("systemctl stop emailrelay-smtpd.socket; rm -r /etc/systemd/system/emailrelay-smtpd.socket.d; "
                       "systemctl daemon-reload; systemctl start emailrelay-smtpd.socket")
        self.assert_nothing_failed()

    def test_12_fail2ban_jail_bans(self):
        """The shipped jail, enabled, bans an address that keeps failing POP3 logins."""
        if not shutil.which("fail2ban-server") or not shutil.which("nft"):
            self.skipTest("fail2ban or nftables is not installed (scripts/deps --test)")
        # Loopback is the only address here: allow banning it, and use nftables.
        self.c.run("cat > /etc/fail2ban/jail.local", check=True, input=(
            "[DEFAULT]\nignoreself = false\nignoreip =\nbanaction = nftables-multiport\n"
            "[sshd]\nenabled = false\n[emailrelay]\nenabled = true\nmaxretry = 3\n"))
        try:
            self.sh("systemctl start fail2ban")
            self.assertTrue(self.wait_inside("fail2ban-client status emailrelay", 60),
                            self.c.run("journalctl -u fail2ban --no-pager -n 30; cat /var/log/fail2ban.log").stdout)
            for _ in range(4):
                self.c.run("curl -sS --max-time 30 -u mallory:guess pop3://127.0.0.1/")
            banned = lambda: "127.0.0.1" in self.c.run("fail2ban-client status emailrelay").stdout.split("Banned IP list:")[-1]
            self.wait_for(banned, 60, "fail2ban to ban 127.0.0.1")
            self.assertIn("127.0.0.1", self.sh("nft list ruleset"))
            p = self.c.run("curl -sS --max-time 5 -u alice:s3cret pop3://127.0.0.1/")
            self.assertNotEqual(p.returncode, 0, "the banned address still got in")
        finally:
            self.c.run("fail2ban-client unban --all; systemctl stop fail2ban; rm -f /etc/fail2ban/jail.local; "
                       "nft flush ruleset")
        out = self.sh("curl -sS --max-time 20 -u alice:s3cret pop3://127.0.0.1/")
        self.assertIsNotNone(out)

    # -- the user guide's tasks, the systemd way (docs/userguide.md) --

    def test_13_guide_rate_limiting_with_the_timer(self):
        """client-filter exit:102 in the config file, the path unit off, the timer every second:
        one message a forwarder run."""
        self.pause_forwarding()
        self.sh("echo 'client-filter exit:102' >> " + CONF)
        self.sh("mkdir -p /run/systemd/system/emailrelay-forward.timer.d && printf '[Timer]\\n"
                "OnUnitInactiveSec=\\nOnActiveSec=1s\\nOnUnitInactiveSec=1s\\nAccuracySec=100ms\\n' "
                "> /run/systemd/system/emailrelay-forward.timer.d/fast.conf && systemctl daemon-reload")
        try:
            self.sink_clear()
            for i in range(3):
                self.assertEqual(self.swaks("--header", "Subject: rate %d" % i).returncode, 0)
            starts0 = self.forward_starts()
            cursor = self.journal_cursor()
            self.sh("systemctl start emailrelay-forward.timer")
            self.wait_for(lambda: self.sink_count() == 3, 60, "three messages, one a run")
            self.assertGreaterEqual(self.forward_starts() - starts0, 3)
            runs = self.journal("-u", "emailrelay-forward.service", "-o", "cat", "--after-cursor", cursor)
            self.assertEqual(runs.count("forwarded 1,"), 3, runs)
            self.assertNotIn("forwarded 2", runs)
            self.assertNotIn("forwarded 3", runs)
        finally:
            self.c.run("systemctl stop emailrelay-forward.timer; rm -r /run/systemd/system/emailrelay-forward.timer.d; "
                       "sed -i '/^client-filter exit:102$/d' %s; systemctl daemon-reload" % CONF)
            self.resume_forwarding()
        self.assert_nothing_failed()

    def test_14_guide_spamassassin_with_spamd(self):
        """spamd as a unit, the SMTP daemon's drop-in --filter=spam:127.0.0.1:783: GTUBE refused."""
        if not shutil.which("spamd"):
            self.skipTest("spamd is not installed (scripts/deps --test)")
        self.sh("systemd-run --unit=spamd-test /usr/sbin/spamd --listen=127.0.0.1:783 --allowed-ips=127.0.0.1 "
                "--username=nobody --nouser-config --pidfile=/run/spamd-test.pid")
        try:
            self.assertTrue(self.wait_inside("ss -ltn | grep -q ':783 '", 120), "spamd did not start")
            self.sh("mkdir -p /etc/systemd/system/emailrelay-smtpd.service.d && printf '[Service]\\nExecStart=\\n"
                    "ExecStart=/usr/sbin/emailrelay-smtpd --filter=spam:127.0.0.1:783\\n' > "
                    "/etc/systemd/system/emailrelay-smtpd.service.d/spam.conf && systemctl daemon-reload && "
                    "systemctl restart emailrelay-smtpd.service")
            p = self.swaks("--header", "Subject: spam", "--body",
                           "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X")
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("<** 452 4.7.1 rejected", p.stdout)   # E-MailRelay's reply when a filter refuses
            p = self.swaks("--header", "Subject: ham", "--body", "Shall we meet at noon?")
            self.assertEqual(p.returncode, 0, p.stdout)
        finally:
            self.c.run("rm -r /etc/systemd/system/emailrelay-smtpd.service.d; systemctl daemon-reload; "
                       "systemctl restart emailrelay-smtpd.service; systemctl stop spamd-test")
        self.assert_nothing_failed()

    def test_15_guide_connection_tunnelling_through_dante(self):
        """forward-to smtp.example.com:25@socks-host:port in the config file, dante as a unit."""
        danted = shutil.which("danted") or "/usr/sbin/danted"
        if not os.path.exists(danted):
            self.skipTest("dante-server is not installed (scripts/deps --test)")
        self.c.run("cat > /var/tmp/danted.conf", check=True, input=(
            "logoutput: stderr\ninternal: 127.0.0.1 port = 1080\nexternal: lo\nsocksmethod: none\n"
            "clientmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n"
            "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error }\n"
            "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error\n protocol: tcp }\n"))
        self.sh("systemd-run --unit=dante-test %s -f /var/tmp/danted.conf" % danted)
        try:
            self.assertTrue(self.wait_inside("ss -ltn | grep -q ':1080 '", 30), "dante did not start")
            self.sh("sed -i 's/^forward-to .*/forward-to 127.0.0.1:10025@127.0.0.1:1080/' " + CONF)
            self.sink_clear()
            self.assertEqual(self.swaks("--header", "Subject: tunnel").returncode, 0)
            self.wait_for(lambda: self.sink_count() == 1, 30, "the message through the tunnel")
            self.assertIn("-> 127.0.0.1.", self.journal("-u", "dante-test", "-o", "cat"))   # dante relayed it
        finally:
            self.c.run("sed -i 's/^forward-to .*/forward-to 127.0.0.1:10025/' %s; systemctl stop dante-test" % CONF)
        self.assert_nothing_failed()

    def test_16_front_end_beside_the_units(self):
        """The installed front-end, as the guide's dial-up hook runs it, on a host whose
        /etc/emailrelay.conf (the units') names a forward-to: like E-MailRelay it reads a config
        file only when one is named, so --as-client is not refused."""
        self.sh("mkdir -p /var/tmp/fe-spool && printf 'Subject: hook\\n\\nbody\\n' | "
                "emailrelay-submit --spool-dir /var/tmp/fe-spool --wakeup-file none b@example.com")
        self.sink_clear()
        p = self.c.run(["emailrelay", "--as-client=127.0.0.1:10025", "--spool-dir", "/var/tmp/fe-spool",
                        "--user", "root"], timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(self.sink_count(), 1)
        self.assertEqual(self.sh("ls -A /var/tmp/fe-spool").split(), [])

    def test_17_tls_key_and_secrets_as_credentials(self):
        """The TLS key and the SMTP AUTH secrets stay root's (0600) and reach the unprivileged
        daemon only as LoadCredential= copies; STARTTLS and AUTH then work through the units."""
        if not shutil.which("certtool"):
            self.skipTest("certtool is not installed (gnutls-bin, scripts/deps --test)")
        self.sh("cd /etc/emailrelay && certtool --generate-privkey --key-type=ecdsa --outfile key.pem 2>/dev/null && "
                "printf 'cn = relay.test\\ndns_name = relay.test\\nexpiration_days = 30\\ntls_www_server\\n"
                "signing_key\\nencryption_key\\n' > cert.tmpl && "
                "certtool --generate-self-signed --load-privkey key.pem --template cert.tmpl --outfile cert.pem 2>/dev/null && "
                "cat key.pem cert.pem > tls.pem && rm key.pem cert.tmpl && chmod 600 tls.pem cert.pem && "
                "printf 'server plain alice s3cret\\n' > server.auth && chmod 600 server.auth")
        self.sh("mkdir -p /etc/systemd/system/emailrelay-smtpd.service.d && printf '[Service]\\n"
                "LoadCredential=tls.pem:/etc/emailrelay/tls.pem\\nLoadCredential=server.auth:/etc/emailrelay/server.auth\\n"
                "ExecStart=\\nExecStart=/usr/sbin/emailrelay-smtpd --server-tls --server-tls-certificate=tls.pem "
                "--server-auth=%%d/server.auth\\n' > /etc/systemd/system/emailrelay-smtpd.service.d/tls.conf && "
                "systemctl daemon-reload && systemctl restart emailrelay-smtpd.service")
        try:
            self.sink_clear()
            p = self.swaks("--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "s3cret",
                           "--header", "Subject: over tls")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("TLS started", p.stdout)
            self.assertIn("235 ", p.stdout)
            self.wait_for(lambda: self.sink_count() == 1, 30, "the message sent over TLS")
            # The daemon's user cannot read the originals: only the credential copies.
            p = self.c.run(["setpriv", "--reuid=emailrelay", "--regid=emailrelay", "--clear-groups",
                            "cat", "/etc/emailrelay/tls.pem"])
            self.assertNotEqual(p.returncode, 0)
            # A renewal, and the deploy hook emailrelay.units(7) gives for certbot: the new
            # certificate is served after it, as the credential copy is made again.
            self.assertEqual(self.served_certificate(), self.c.run("cat /etc/emailrelay/cert.pem").stdout.strip())
            self.sh("cd /etc/emailrelay && certtool --generate-privkey --key-type=ecdsa --outfile key.pem 2>/dev/null && "
                    "printf 'cn = relay.test\\nexpiration_days = 60\\ntls_www_server\\nsigning_key\\n' > cert.tmpl && "
                    "certtool --generate-self-signed --load-privkey key.pem --template cert.tmpl --outfile cert.pem 2>/dev/null && "
                    "cat key.pem cert.pem > tls.pem.new && chmod 600 tls.pem.new && mv tls.pem.new tls.pem && "
                    "rm key.pem cert.tmpl")
            hook = "/etc/letsencrypt/renewal-hooks/deploy/emailrelay"
            self.sh("mkdir -p %s && printf '#!/bin/sh\\nsystemctl try-restart emailrelay-smtpd.service "
                    "emailrelay-pop3d.service\\n' > %s && chmod 755 %s && %s" % (os.path.dirname(hook), hook, hook, hook))
            self.assertEqual(self.served_certificate(), self.c.run("cat /etc/emailrelay/cert.pem").stdout.strip())
        finally:
            self.c.run("rm -r /etc/systemd/system/emailrelay-smtpd.service.d /etc/letsencrypt; systemctl daemon-reload; "
                       "systemctl restart emailrelay-smtpd.service")
        self.assert_nothing_failed()

    def served_certificate(self):
        """The certificate emailrelay-smtpd presents after STARTTLS on port 25, as PEM."""
        p = self.c.run("gnutls-cli --insecure --starttls-proto=smtp --port 25 --print-cert 127.0.0.1 </dev/null")
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", p.stdout, re.S)
        self.assertTrue(m, p.stdout + p.stderr)
        return m.group(0)

    def test_18_guide_google_mail_with_the_units(self):
        """The guide's Google-mail recipe the systemd way: client-tls and the next hop in
        /etc/emailrelay.conf, the client secrets as a credential of the forwarder by drop-in. The
        provider is an emailrelay-smtpd of its own (a transient unit on 10587) that offers
        STARTTLS and wants AUTH."""
        if not shutil.which("certtool"):
            self.skipTest("certtool is not installed (gnutls-bin, scripts/deps --test)")
        self.sh("mkdir -p /var/tmp/provider/spool && cd /var/tmp/provider && "
                "certtool --generate-privkey --key-type=ecdsa --outfile key.pem 2>/dev/null && "
                "printf 'cn = smtp.provider.test\\nexpiration_days = 30\\ntls_www_server\\nsigning_key\\n' > t && "
                "certtool --generate-self-signed --load-privkey key.pem --template t --outfile cert.pem 2>/dev/null && "
                "cat key.pem cert.pem > tls.pem && printf 'server plain myname@provider.test my+20password\\n' > server.auth")
        self.sh("systemd-run --unit=provider /usr/sbin/emailrelay-smtpd --port 10587 --interface 127.0.0.1 "
                "--spool-dir /var/tmp/provider/spool --server-tls --server-tls-certificate /var/tmp/provider/tls.pem "
                "--server-auth /var/tmp/provider/server.auth --wakeup-file none /dev/null")
        self.sh("install -m 0600 /dev/null /etc/emailrelay/client.auth && "
                "printf 'client plain myname@provider.test my+20password\\n' > /etc/emailrelay/client.auth")
        self.sh("sed -i 's/^forward-to .*/forward-to 127.0.0.1:10587\\nclient-tls/' " + CONF)
        self.sh("mkdir -p /etc/systemd/system/emailrelay-forward.service.d && printf '[Service]\\n"
                "LoadCredential=client.auth:/etc/emailrelay/client.auth\\nExecStart=\\n"
                "ExecStart=/usr/sbin/emailrelay-forward --wakeup-linger 5 --client-auth=%%d/client.auth\\n' > "
                "/etc/systemd/system/emailrelay-forward.service.d/client-auth.conf && systemctl daemon-reload")
        try:
            self.assertTrue(self.wait_inside("ss -ltn | grep -q ':10587 '", 30), "the provider did not start")
            self.assertEqual(self.swaks("--header", "Subject: via the provider").returncode, 0)
            self.wait_for(lambda: "via the provider" in self.c.run("cat /var/tmp/provider/spool/*.content").stdout,
                          30, "the message at the provider")
            env = self.sh("cat /var/tmp/provider/spool/*.envelope")
            self.assertIn("X-MailRelay-Authentication: myname@provider.test", env)   # authenticated there
            self.assertIn("ESMTPSA", self.sh("cat /var/tmp/provider/spool/*.content"))   # over TLS, with AUTH
            self.wait_for_empty_spool()
        finally:
            self.c.run("rm -r /etc/systemd/system/emailrelay-forward.service.d; sed -i '/^client-tls$/d; "
                       "s/^forward-to .*/forward-to 127.0.0.1:10025/' %s; systemctl daemon-reload; "
                       "systemctl stop provider" % CONF)
        self.assert_nothing_failed()

    def test_19_pam_with_a_system_account(self):
        """--server-auth=pam: through the hardened unit, against pam_unix and a real account
        (Debian's common-auth). The sandbox forbids pam_unix's setgid helper, so the guide's
        drop-in gives the service the shadow group instead; without it every login fails
        (common-auth turns pam_unix's failure into pam_deny's)."""
        self.sh("id pamuser >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin pamuser; "
                "echo 'pamuser:Pam-pw-19' | chpasswd && "
                "printf '@include common-auth\\n@include common-account\\n' > /etc/pam.d/emailrelay && "
                "mkdir -p /etc/systemd/system/emailrelay-smtpd.service.d && printf '[Service]\\n"
                "ExecStart=\\nExecStart=/usr/sbin/emailrelay-smtpd --server-auth=pam:\\n' > "
                "/etc/systemd/system/emailrelay-smtpd.service.d/pam.conf && "
                "systemctl daemon-reload && systemctl restart emailrelay-smtpd.service")
        try:
            p = self.swaks("--auth", "PLAIN", "--auth-user", "pamuser", "--auth-password", "Pam-pw-19")
            self.assertIn("535 5.7.8 authentication failed", p.stdout)
            # pam_unix says why in the journal, with the client's address (PAM_RHOST)
            self.assertIn("pam_unix(emailrelay:auth): authentication failure;",
                          self.journal("-o", "cat", "SYSLOG_IDENTIFIER=emailrelay-smtpd"))
            self.assertIn("rhost=127.0.0.1  user=pamuser", self.journal("-o", "cat"))
            self.sh("printf '[Service]\\nSupplementaryGroups=shadow\\n' > "
                    "/etc/systemd/system/emailrelay-smtpd.service.d/shadow.conf && "
                    "systemctl daemon-reload && systemctl restart emailrelay-smtpd.service")
            self.sink_clear()
            p = self.swaks("--auth", "PLAIN", "--auth-user", "pamuser", "--auth-password", "Pam-pw-19",
                           "--header", "Subject: pam")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("235 2.7.0 authentication successful", p.stdout)
            self.wait_for(lambda: self.sink_count() == 1, 30, "the message of the PAM user")
            p = self.swaks("--auth", "PLAIN", "--auth-user", "pamuser", "--auth-password", "wrong")
            self.assertIn("535 5.7.8 authentication failed", p.stdout)
            self.assertIn('authentication failed for "pamuser" from 127.0.0.1 (PLAIN)',
                          self.journal("-u", "emailrelay-smtpd.service", "-o", "cat"))
        finally:
            self.c.run("rm -r /etc/systemd/system/emailrelay-smtpd.service.d /etc/pam.d/emailrelay; "
                       "systemctl daemon-reload; systemctl restart emailrelay-smtpd.service")
        self.assert_nothing_failed()


    def test_20_immediate_through_the_hardened_unit(self):
        """immediate in the shared config file: smtpd runs the forwarder inside its own sandbox,
        the client gets the sink's reply, the spool keeps nothing, and the forwarder's lines are
        in smtpd's journal with their fields."""
        self.sh("echo immediate >> %s && systemctl restart emailrelay-smtpd.service" % CONF)
        try:
            self.sink_clear()
            cursor = self.journal_cursor()
            p = self.swaks("--header", "Subject: at once")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertRegex(p.stdout, r"(?m)^<- +250 2\.0\.0 Ok$")   # smtp-sink's words
            self.assertNotIn("message processed", p.stdout)   # ours, for a stored message
            self.assertEqual(self.sink_count(), 1)   # there before the 250 came back
            self.assertEqual(self.sh("ls -A %s" % SPOOL).strip(), "")
            lines = self.journal("--after-cursor", cursor, "-u", "emailrelay-smtpd.service", "-o", "cat")
            self.assertIn("forwarded immediately", lines)
            # Only this test has a forwarder in smtpd's unit. (No cursor: the forwarder's native
            # entries and smtpd's stream may sit in different journal files.)
            def forwarded():
                return self.journal("_SYSTEMD_UNIT=emailrelay-smtpd.service", "SYSLOG_IDENTIFIER=emailrelay-forward",
                                    "MESSAGE_ID=" + MESSAGE_FORWARDED, "-o", "json").strip()
            self.wait_for(forwarded, 30, "the forwarder's journal entry")
            fields = json.loads(forwarded().splitlines()[-1])
            self.assertEqual(fields["NEXT_HOP"], "127.0.0.1:10025")
            self.assertIn("forwarded immediately", fields["MESSAGE"])
        finally:
            self.c.run("sed -i '/^immediate$/d' %s; systemctl restart emailrelay-smtpd.service" % CONF)
        self.assert_nothing_failed()

if __name__ == "__main__":
    harness.main()
