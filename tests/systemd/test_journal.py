# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-smtpd and emailrelay-forward under a real systemd: readiness (Type=notify), the
STATUS= text, structured journal entries (EMAILRELAY_ID, REMOTE_ADDR, SMTP_CODE, the catalog's
MESSAGE_ID, the --verbose protocol trace's EMAILRELAY_PROTOCOL), a clean stop, and the forwarder's exit status through systemd-run.

The tests run in order (test_1 ... test_7) against one container and one smtpd service."""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

UNIT = "emailrelay-smtpd-test"
SERVICE = UNIT + ".service"
SPOOL = "/var/tmp/spool"
CONFIG = "/var/tmp/emailrelay-test.conf"
EXIT_FILE = "/run/emailrelay-smtpd-test.exit"

MESSAGE_ACCEPTED = "5b1d7e3f0d8a4a6f9a1c2e7b3d4f6a01"
MESSAGE_REJECTED = "5b1d7e3f0d8a4a6f9a1c2e7b3d4f6a04"

SEND_ONE = r'''
import smtplib
with smtplib.SMTP("127.0.0.1", 25, local_hostname="client.test", timeout=20) as s:
    s.sendmail("alice@client.test", ["bob@example.com"],
               b"From: alice@client.test\r\nTo: bob@example.com\r\nSubject: journal test\r\n\r\nhello\r\n")
print("sent")
'''

# An unknown verb, then a message with a line longer than RFC 5321 allows (both: 500).
SEND_BAD = r'''
import smtplib
with smtplib.SMTP("127.0.0.1", 25, local_hostname="client.test", timeout=20) as s:
    print(s.docmd("FROB", "x"))
    try:
        s.sendmail("alice@client.test", ["bob@example.com"], b"Subject: long\r\n\r\n" + b"x" * 2000 + b"\r\n")
        print("long line accepted")
    except smtplib.SMTPResponseException as e:
        print("long line refused", e.smtp_code)
'''


class JournalTest(unittest.TestCase):
    c = None
    main_pid = None

    @classmethod
    def setUpClass(cls):
        cls.c = harness.Container()
        cls.addClassCleanup(cls.c.stop)
        cls.c.start()
        sys.stderr.write("container booted in %.2f s\n" % cls.c.boot_seconds)
        cls.c.run("mkdir -p %s && : > %s" % (SPOOL, CONFIG), check=True)
        # ExecStopPost= records how the main process ended: a transient unit that stopped
        # cleanly is garbage-collected at once, taking ExecMainStatus with it.
        p = cls.c.run(["systemd-run", "--unit=" + UNIT,
                       "--property=Type=notify", "--property=NotifyAccess=main",
                       "--property=TimeoutStartSec=20", "--property=TimeoutStopSec=20",
                       "--property=ExecStopPost=/bin/sh -c 'echo $$EXIT_CODE $$EXIT_STATUS $$SERVICE_RESULT > %s'" % EXIT_FILE,
                       harness.inside_program("emailrelay-smtpd"),
                       "--spool-dir", SPOOL, "--domain", "relay.test", "--verbose",
                       "--interface", "127.0.0.1", "--port", "25", CONFIG], timeout=40)
        if p.returncode != 0:
            journal = cls.c.run(["journalctl", "-u", UNIT, "--no-pager", "-n", "40"]).stdout
            raise AssertionError("systemd-run failed (%d): %s%s\njournal:\n%s" % (p.returncode, p.stdout, p.stderr, journal))
        cls.main_pid = cls.c.run(["systemctl", "show", "-P", "MainPID", SERVICE]).stdout.strip()

    # -- helpers --

    def show(self, prop):
        return self.c.run(["systemctl", "show", "-P", prop, SERVICE]).stdout.strip()

    def journal(self, *matches):
        p = self.c.run(["journalctl", "--no-pager", "-o", "json"] + list(matches))
        out = []
        for line in p.stdout.splitlines():
            line = line.strip()
            if line:
                out.append(json.loads(line))
        return out

    def wait_journal(self, matches, pred, timeout=10):
        """Entries matching the journalctl matches and pred; waits until there is one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.journal(*matches) if pred(e)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def spool_ids(self):
        names = self.c.run(["ls", "-1", SPOOL], check=True).stdout.split()
        return sorted(n[: -len(".envelope")] for n in names if n.endswith(".envelope")), names

    def dump(self):
        return "\n".join(json.dumps(e, sort_keys=True) for e in self.journal("-u", UNIT))

    # -- tests, in order --

    def test_1_ready(self):
        self.assertEqual(self.c.run(["systemctl", "is-active", SERVICE]).stdout.strip(), "active",
                         self.c.run(["systemctl", "status", "--no-pager", SERVICE]).stdout)
        self.assertTrue(self.main_pid and self.main_pid != "0")

    def test_2_status_text(self):
        # STATUS=ready at READY=1; the counters follow from the daemon's periodic update.
        deadline = time.monotonic() + 15
        text = self.show("StatusText")
        while "session" not in text and time.monotonic() < deadline:
            time.sleep(0.5)
            text = self.show("StatusText")
        self.assertIn("session", text)

    def test_3_accepted(self):
        p = self.c.python(SEND_ONE, timeout=40)
        self.assertEqual(p.returncode, 0, p.stderr)
        ids, names = self.spool_ids()
        self.assertEqual(len(ids), 1, names)
        mid = ids[0]
        entries = self.wait_journal(["-u", UNIT, "EMAILRELAY_ID=" + mid],
                                    lambda e: "accepted" in str(e.get("MESSAGE", "")))
        self.assertTrue(entries, "no 'accepted' entry for %s:\n%s" % (mid, self.dump()))
        e = entries[0]
        self.assertEqual(e.get("REMOTE_ADDR"), "127.0.0.1", e)
        self.assertEqual(e.get("SMTP_CODE"), "250", e)
        self.assertEqual(e.get("MESSAGE_ID"), MESSAGE_ACCEPTED, e)
        self.assertEqual(e.get("_SYSTEMD_UNIT"), SERVICE, e)
        self.assertEqual(e.get("PRIORITY"), "6", e)
        # --verbose: the dialogue, one entry a line, with the client and the direction as fields.
        ehlo = self.wait_journal(["-u", UNIT, "EMAILRELAY_PROTOCOL=rx"],
                                 lambda e: e.get("MESSAGE") == 'rx<<: "ehlo client.test"')
        self.assertTrue(ehlo, "no protocol trace entry for EHLO:\n%s" % self.dump())
        self.assertEqual(ehlo[0].get("REMOTE_ADDR"), "127.0.0.1", ehlo[0])
        tx = self.wait_journal(["-u", UNIT, "EMAILRELAY_PROTOCOL=tx"], lambda e: str(e.get("MESSAGE", "")).startswith(
            'tx>>: "250 2.0.0 message processed'))
        self.assertTrue(tx, "no protocol trace entry for the 250:\n%s" % self.dump())

    def test_4_rejected(self):
        p = self.c.python(SEND_BAD, timeout=40)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("500", p.stdout)
        self.assertIn("long line refused 500", p.stdout)
        bad = self.wait_journal(["-u", UNIT, "SMTP_CODE=500"], lambda e: "FROB" in str(e.get("MESSAGE", "")))
        self.assertTrue(bad, "no entry for the unknown command:\n%s" % self.dump())
        self.assertEqual(bad[0].get("REMOTE_ADDR"), "127.0.0.1", bad[0])
        rejected = self.wait_journal(["-u", UNIT, "MESSAGE_ID=" + MESSAGE_REJECTED], lambda e: True)
        self.assertTrue(rejected, "no REJECTED entry for the long line:\n%s" % self.dump())
        self.assertEqual(rejected[0].get("REMOTE_ADDR"), "127.0.0.1", rejected[0])
        self.assertEqual(rejected[0].get("SMTP_CODE"), "500", rejected[0])
        # the refused message left nothing behind
        ids, names = self.spool_ids()
        self.assertEqual(len(ids), 1, names)

    def test_5_forward_unreachable(self):
        # One message waits in the spool; nothing listens on 26: "next hop unreachable" is 3,
        # and systemd-run --wait hands the service's exit status back.
        p = self.c.run(["systemd-run", "--wait", "--pipe", "--quiet",
                        harness.inside_program("emailrelay-forward"),
                        "--spool-dir", SPOOL, "--forward-to", "127.0.0.1:26", "/dev/null"], timeout=90)
        self.assertEqual(p.returncode, 3, "stdout: %s\nstderr: %s" % (p.stdout, p.stderr))
        ids, names = self.spool_ids()
        self.assertEqual(len(ids), 1, "the message should stay queued for a retry: %s" % names)

    def test_6_stop(self):
        p = self.c.run(["systemctl", "stop", SERVICE], timeout=40)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotEqual(self.c.run(["systemctl", "is-failed", SERVICE]).stdout.strip(), "failed")
        exit_line = self.c.run(["cat", EXIT_FILE]).stdout.split()
        self.assertEqual(exit_line, ["exited", "0", "success"])
        # ExecMainStatus of a collected unit reads as 0 too; the line above is the real check.
        self.assertIn(self.show("ExecMainStatus"), ("0", ""))
        # The last words, by the main process's pid: a native journal message sent just before
        # exit may reach journald after the process is gone, without _SYSTEMD_UNIT.
        stopped = self.wait_journal(["_PID=" + self.main_pid], lambda e: "stopped" in str(e.get("MESSAGE", "")))
        self.assertTrue(stopped, "no 'stopped' entry:\n%s" % self.dump())
        self.assertIn("1 message accepted", stopped[0]["MESSAGE"])
        if stopped[0].get("_SYSTEMD_UNIT") != SERVICE:
            sys.stderr.write("note: the 'stopped' entry has no _SYSTEMD_UNIT (%r)\n" % stopped[0].get("_SYSTEMD_UNIT"))

    def test_7_journal_is_structured(self):
        # Every entry of the daemon came by the native protocol, none as plain stderr text.
        entries = [e for e in self.journal("_PID=" + self.main_pid)]
        self.assertTrue(entries)
        transports = sorted({e.get("_TRANSPORT") for e in entries})
        self.assertEqual(transports, ["journal"], "\n".join(json.dumps(e) for e in entries if e.get("_TRANSPORT") != "journal"))


if __name__ == "__main__":
    harness.main()
