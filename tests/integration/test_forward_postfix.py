# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-forward against a real Postfix that refuses some recipients: permanently
(bad@, 5xx) and temporarily (later@, 450). With --forward-to-all (the default, as E-MailRelay)
one refused recipient fails or defers the whole message and nothing is delivered; with
--forward-to-some the accepted recipients get it and only the refused ones are failed or kept
for a retry."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import postfix  # noqa: E402

FORWARD = harness.program("emailrelay-forward")
SUBMIT = harness.program("emailrelay-submit")

RESTRICTIONS = """smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ bad@example.net = REJECT no such user }}, {{ later@example.net = 450 4.2.0 mailbox busy }} }}, permit_mynetworks, reject
"""


@unittest.skipUnless(postfix.AVAILABLE, postfix.WHY_NOT)
class ForwardToSomeTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="forward-postfix-")
        os.chmod(self.work, 0o755)
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.pf = postfix.PrivatePostfix(self.work, RESTRICTIONS)
        self.pf.start()

    def tearDown(self):
        self.pf.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def submit(self, *rcpts):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "--wakeup-file", "none", "--from", "alice@example.org",
                        *rcpts], input=b"Subject: some\n\nbody\n", check=True, timeout=30)

    def forward(self, *args):
        return subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:%d" % self.pf.port,
                               "--wakeup-file", "none", *args, self.config], capture_output=True, text=True, timeout=120)

    def recipients_of(self, state):
        return [m.recipients() for m in harness.spool_messages(self.spool) if m.state == state]

    def delivered_to(self):
        out = []
        for raw in self.pf.delivered():
            for line in raw.split(b"\n"):
                if line.startswith(b"Delivered-To: "):
                    out.append(line[len(b"Delivered-To: "):].strip().decode())
        return sorted(out)

    def test_all_or_nothing_permanent(self):
        self.submit("good@example.net", "bad@example.net")
        p = self.forward()
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(self.delivered_to(), [])
        bad = harness.spool_messages(self.spool)
        self.assertEqual([m.state for m in bad], ["envelope.bad"])
        self.assertIn(b"no such user", bad[0].envelope)
        self.assertEqual(bad[0].recipients(), ["good@example.net", "bad@example.net"])

    def test_all_or_nothing_temporary(self):
        self.submit("good@example.net", "later@example.net")
        p = self.forward()
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(self.delivered_to(), [])
        self.assertEqual(self.recipients_of("envelope"), [["good@example.net", "later@example.net"]])
        self.assertIn(b"mailbox busy", harness.spool_messages(self.spool)[0].envelope)

    def test_forward_to_some(self):
        self.submit("good@example.net", "bad@example.net", "later@example.net", "other@example.net")
        p = self.forward("--forward-to-some")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertTrue(harness.wait_for(lambda: len(self.delivered_to()) == 2, timeout=30), self.pf.log_text())
        self.assertEqual(self.delivered_to(), ["good@example.net", "other@example.net"])
        # The refused ones stay: the permanent one failed, the temporary one kept for a retry.
        self.assertEqual(self.recipients_of("envelope.bad"), [["bad@example.net"]])
        self.assertEqual(self.recipients_of("envelope"), [["later@example.net"]])
        kept = [m for m in harness.spool_messages(self.spool) if m.state == "envelope"][0]
        self.assertIn(b"X-MailRelay-NextRetry: ", kept.envelope)
        # Postfix saw one transaction with four RCPTs and one DATA for the two accepted.
        self.assertIn("rcpt=2/4", self.pf.wait_log("rcpt=2/4"))


if __name__ == "__main__":
    harness.main()
