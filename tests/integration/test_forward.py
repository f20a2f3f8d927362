# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-forward against Postfix's smtp-sink as the real next hop, on a unix socket (no
ports): what the sink received (count, envelope, bytes), and the spool after each failure
mode that smtp-sink can inject (4xx, 5xx, disconnects, a dead next hop)."""

import glob
import os
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

FORWARD = harness.program("emailrelay-forward")
SUBMIT = harness.program("emailrelay-submit")
SMTPD = harness.program("emailrelay-smtpd")
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

EXIT_OK, EXIT_FAILURES, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3


@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (scripts/deps --test installs postfix)")
class ForwardTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="forward-test-")
        os.chmod(self.work, 0o755)
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.dump = os.path.join(self.work, "dump")
        os.mkdir(self.dump)
        os.chmod(self.dump, 0o777)
        self.sock = os.path.join(self.work, "sink.sock")
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.sink = None

    def tearDown(self):
        self.stop_sink()
        shutil.rmtree(self.work, ignore_errors=True)

    def start_sink(self, *args):
        self.sink = subprocess.Popen([SINK, "-u", "nobody", "-d", self.dump + "/", *args, "unix:" + self.sock, "100"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.assertTrue(harness.wait_for(lambda: os.path.exists(self.sock)), "smtp-sink did not start")

    def stop_sink(self):
        if self.sink:
            self.sink.terminate()
            self.sink.wait(timeout=10)
            self.sink = None
            if os.path.exists(self.sock):
                os.unlink(self.sock)

    def submit(self, *recipients, content=b"Subject: test\n\nbody\n"):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, *recipients], input=content, check=True, timeout=30)

    def forward(self, *args, expect=None):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", self.sock, *args, self.config],
                           capture_output=True, text=True, timeout=120)
        if expect is not None:
            self.assertEqual(p.returncode, expect, p.stderr)
        return p

    def received(self):
        """What the sink got: a list of (mail args, [rcpt args], body bytes after its headers)."""
        out = []
        for path in sorted(glob.glob(os.path.join(self.dump, "*"))):
            with open(path, "rb") as f:
                data = f.read()
            head, _, rest = data.partition(b"\nReceived: ")
            mail = re.search(rb"^X-Mail-Args: (.*)$", head, re.M).group(1).decode()
            rcpts = [m.decode() for m in re.findall(rb"^X-Rcpt-Args: (.*)$", head, re.M)]
            # smtp-sink's own Received line is three lines: skip it.
            body = rest.split(b"\n", 3)[3]
            assert body.endswith(b"\n\n"), body  # the dump ends each message with a blank line
            out.append((mail, rcpts, body[:-1]))
        # Dump files have random names: put them in a stable order.
        return sorted(out, key=lambda r: (r[1], r[0]))

    def spool_states(self):
        return sorted(m.state for m in harness.spool_messages(self.spool))

    def test_forwards_everything_and_empties_the_spool(self):
        self.start_sink()
        self.submit("a@example.com", "b@example.com", content=b"From: s@example.org\nSubject: one\n\n.dot line\nbody\n")
        self.submit("c@example.com", content="Subject: two\n\n\u00e9t\u00e9\n".encode())
        self.forward(expect=EXIT_OK)
        self.assertEqual(os.listdir(self.spool), [])
        got = self.received()  # ordered by recipients
        self.assertEqual(len(got), 2)
        self.assertEqual(got[0][0], "<s@example.org> BODY=7BIT")
        self.assertEqual(got[0][1], ["<a@example.com>", "<b@example.com>"])
        self.assertEqual(got[0][2], b"From: s@example.org\nSubject: one\n\n.dot line\nbody\n")
        self.assertEqual(got[1][0], "<anonymous> BODY=8BITMIME")
        self.assertEqual(got[1][2], "Subject: two\n\n\u00e9t\u00e9\n".encode())

    def test_without_pipelining(self):
        self.start_sink("-p")
        for i in range(3):
            self.submit("r%d@example.com" % i)
        self.forward(expect=EXIT_OK)
        self.assertEqual(sorted(r[1][0] for r in self.received()), ["<r0@example.com>", "<r1@example.com>", "<r2@example.com>"])

    def test_smtpd_and_submit_forward_identically(self):
        """A message taken in by emailrelay-smtpd arrives at the next hop with its content as
        stored, Received line first."""
        self.start_sink()
        sock = harness.listening_socket()
        daemon = harness.Daemon([SMTPD, "--spool-dir", self.spool, "--domain", "relay.test", self.config], [sock])
        try:
            c = harness.SmtpClient(daemon.port)
            c.reply()
            c.cmd("EHLO client.example")
            c.cmd("MAIL FROM:<x@example.org>")
            c.cmd("RCPT TO:<y@example.com>")
            c.cmd("DATA")
            c.send("Subject: via smtpd\r\n\r\n..stuffed\r\nend\r\n.\r\n")
            self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
            c.cmd("QUIT")
        finally:
            daemon.stop()
        stored = harness.spool_messages(self.spool)[0].content
        self.forward(expect=EXIT_OK)
        (mail, rcpts, body), = self.received()
        self.assertEqual(mail, "<x@example.org>")
        self.assertEqual(rcpts, ["<y@example.com>"])
        self.assertEqual(body, stored.replace(b"\r\n", b"\n"))
        self.assertTrue(body.startswith(b"Received: from client.example ([127.0.0.1]) by relay.test with ESMTP ; "))
        self.assertTrue(body.endswith(b"\n.stuffed\nend\n"))

    def test_permanent_failure_goes_to_bad_with_reason(self):
        self.start_sink("-B", "554 5.7.1 no thanks", "-f", "DATA")
        self.submit("a@example.com")
        self.forward(expect=EXIT_FAILURES)
        m, = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope.bad")
        self.assertTrue(m.envelope.endswith(b"X-MailRelay-End: 1\r\nX-MailRelay-Reason: 5.7.1 no thanks\r\n"
                                            b"X-MailRelay-ReasonCode: 554\r\n"), m.envelope)

    def test_temporary_failure_is_retried_later(self):
        self.start_sink("-b", "451 4.3.0 try later", "-r", "RCPT")
        self.submit("a@example.com")
        before = time.time()
        self.forward("--retry-schedule", "600,1200", expect=EXIT_FAILURES)
        m, = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope")  # not .bad: E-MailRelay's quirk 8 fixed
        tail = m.envelope.split(b"X-MailRelay-End: 1\r\n")[1].decode()
        lines = tail.split("\r\n")
        self.assertEqual(lines[0], "X-MailRelay-Reason: 4.3.0 try later")
        self.assertEqual(lines[1], "X-MailRelay-ReasonCode: 451")
        next_retry = int(lines[2].split(": ")[1])
        self.assertTrue(int(before) + 600 <= next_retry <= time.time() + 601, (before, next_retry))
        # Not due yet: the next pass leaves it alone and the sink sees nothing.
        self.stop_sink()
        self.start_sink()
        self.forward(expect=EXIT_OK)
        self.assertEqual(self.received(), [])
        self.assertEqual(self.spool_states(), ["envelope"])
        # Due (as emailrelay-queue flush makes it): delivered.
        with open(m.envelope_path, "ab") as f:
            f.write(b"X-MailRelay-NextRetry: 0\r\n")
        self.forward(expect=EXIT_OK)
        self.assertEqual(len(self.received()), 1)
        self.assertEqual(os.listdir(self.spool), [])

    def test_give_up_after_retry_time(self):
        self.start_sink("-r", "MAIL")
        self.submit("a@example.com")
        self.forward("--retry-give-up", "0", expect=EXIT_FAILURES)
        m, = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope.bad")
        self.assertIn(b"(gave up after 1 attempts)", m.envelope)

    def test_next_hop_down_costs_one_attempt_per_pass(self):
        for i in range(5):
            self.submit("r%d@example.com" % i)
        p = self.forward(expect=EXIT_UNREACHABLE)
        msgs = harness.spool_messages(self.spool)
        self.assertEqual([m.state for m in msgs], ["envelope"] * 5)
        self.assertIn(b"X-MailRelay-Reason: cannot connect to", msgs[0].envelope)
        for m in msgs[1:]:
            self.assertTrue(m.envelope.endswith(b"X-MailRelay-End: 1\r\n"), "untouched: %r" % m.envelope)
        self.assertEqual(p.stderr.count("cannot forward to"), 1)

    def test_disconnect_mid_transaction_is_temporary(self):
        self.start_sink("-q", "DATA")
        self.submit("a@example.com")
        self.forward(expect=EXIT_FAILURES)
        m, = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope")
        self.assertIn(b"X-MailRelay-Reason: connection to the next hop lost", m.envelope)

    def test_client_filter_stop_and_fail(self):
        self.start_sink()
        for i in range(3):
            self.submit("r%d@example.com" % i)
        # exit:102: forward this one and stop the pass (rate limiting with the timer).
        self.forward("--client-filter", "exit:102", expect=EXIT_OK)
        self.assertEqual(len(self.received()), 1)
        self.assertEqual(len(harness.spool_messages(self.spool)), 2)
        script = os.path.join(self.work, "no.sh")
        with open(script, "w") as f:
            f.write('#!/bin/sh\necho "<<client says no>>"\nexit 7\n')
        os.chmod(script, 0o755)
        self.forward("--client-filter", script, expect=EXIT_FAILURES)
        msgs = harness.spool_messages(self.spool)
        self.assertEqual([m.state for m in msgs], ["envelope.bad", "envelope.bad"])
        self.assertTrue(msgs[0].envelope.endswith(b"X-MailRelay-Reason: client says no\r\nX-MailRelay-ReasonCode: 550\r\n"))

    def test_two_forwarders_deliver_each_message_once(self):
        self.start_sink()
        n = 600
        for i in range(n):
            self.submit("r%d@example.com" % i, content=b"Subject: %d\n\nx\n" % i)
        procs = [subprocess.Popen([FORWARD, "--spool-dir", self.spool, "--forward-to", self.sock, self.config],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
        for p in procs:
            p.wait(timeout=240)
            self.assertEqual(p.returncode, 0)
        got = self.received()
        subjects = [re.search(rb"Subject: (\d+)", body).group(1) for _, _, body in got]
        self.assertEqual(len(subjects), n)
        self.assertEqual(len(set(subjects)), n, "a message was delivered twice")
        self.assertEqual(os.listdir(self.spool), [])

    def test_configuration_errors(self):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, self.config], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, EXIT_CONFIG)
        self.assertIn("no next hop: use --forward-to", p.stderr)
        p = self.forward("--client-tls", expect=EXIT_CONFIG)
        self.assertIn("option --client-tls is not supported by this version", p.stderr)
        p = self.forward("--retry-schedule", "10,x", expect=EXIT_CONFIG)
        self.assertIn('--retry-schedule: "x" is not a number of seconds', p.stderr)

    def test_stale_busy_recovered(self):
        self.start_sink()
        self.submit("a@example.com")
        m, = harness.spool_messages(self.spool)
        os.rename(m.envelope_path, m.envelope_path + ".busy")  # a forwarder died holding it
        self.forward(expect=EXIT_OK)
        self.assertEqual(len(self.received()), 1)
        self.assertEqual(os.listdir(self.spool), [])


if __name__ == "__main__":
    harness.main()
