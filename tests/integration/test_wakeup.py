# SPDX-License-Identifier: GPL-3.0-or-later
"""The wake-up file between intake and the forwarder (src/shared/wakeup.h), without systemd:
who raises it, when the forwarder clears it, and that a lingering forwarder takes mail that
arrives after its last scan. tests/systemd proves the same through the real path unit."""

import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import test_forward  # noqa: E402  (not its names: unittest would run its tests here too)
from test_forward import FORWARD, SUBMIT, SMTPD, SINK, EXIT_OK, EXIT_UNREACHABLE  # noqa: E402

def watching_inotify(pid):
    """Whether the process holds an inotify descriptor with a watch on it."""
    try:
        for fd in os.listdir("/proc/%d/fdinfo" % pid):
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                if "inotify wd:" in f.read():
                    return True
    except (FileNotFoundError, ProcessLookupError):
        pass
    return False


_Base = test_forward.ForwardTest  # deleted below: unittest would run its tests here too


@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (scripts/deps --test installs postfix)")
class WakeupTest(unittest.TestCase):
    tearDown = _Base.tearDown
    start_sink = _Base.start_sink
    stop_sink = _Base.stop_sink
    received = _Base.received

    @property
    def flag(self):
        return os.path.join(self.work, "run", "forward-wanted")

    def submit(self, *recipients):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "--wakeup-file", self.flag, *recipients],
                       input=b"Subject: wake\n\nbody\n", check=True, timeout=30)

    def forward_cmd(self, *args):
        return [FORWARD, "--spool-dir", self.spool, "--forward-to", self.sock, "--wakeup-file", self.flag,
                *args, self.config]

    def setUp(self):  # extends ForwardTest.setUp
        test_forward.ForwardTest.setUp(self)
        os.mkdir(os.path.join(self.work, "run"))

    def test_submit_raises_and_forwarder_clears(self):
        self.start_sink()
        self.assertFalse(os.path.exists(self.flag))
        self.submit("a@example.com")
        self.assertTrue(os.path.exists(self.flag))
        p = subprocess.run(self.forward_cmd(), capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)
        self.assertFalse(os.path.exists(self.flag), "the forwarder left the flag raised")
        self.assertEqual(len(self.received()), 1)

    def test_smtpd_raises_after_commit(self):
        sock = harness.listening_socket()
        daemon = harness.Daemon([SMTPD, "--spool-dir", self.spool, "--wakeup-file", self.flag, self.config], [sock])
        try:
            c = harness.SmtpClient(daemon.port)
            c.reply()
            c.cmd("EHLO client.example")
            self.assertFalse(os.path.exists(self.flag))
            c.cmd("MAIL FROM:<x@example.org>")
            c.cmd("RCPT TO:<y@example.com>")
            c.cmd("DATA")
            c.send("Subject: hello\r\n\r\nbody\r\n.\r\n")
            self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
            # Raised before the 250, so a forwarder started now is sure to see the message.
            self.assertTrue(os.path.exists(self.flag))
            c.cmd("QUIT")
        finally:
            daemon.stop()

    def test_smtpd_raises_for_a_filters_rescan(self):
        """Filter exits 102 (abandon) and 104 (fail) store nothing, yet ask for a forwarding
        pass, as in E-MailRelay: the flag the units' forwarder watches goes up; exit 1 does not
        raise it. A --rescan-file (the front-end's) is raised instead of the wake-up file."""
        rescan = os.path.join(self.work, "run", "rescan-wanted")
        for code, rescan_option, raised, reply in (("1", [], None, "452"), ("102", [], self.flag, "250"),
                                           ("104", [], self.flag, "452"), ("104", ["--rescan-file", rescan], rescan, "452")):
            for f in (self.flag, rescan):
                if os.path.exists(f):
                    os.unlink(f)
            sock = harness.listening_socket()
            daemon = harness.Daemon([SMTPD, "--spool-dir", self.spool, "--wakeup-file", self.flag, "--filter", "exit:" + code,
                                     *rescan_option, self.config], [sock])
            try:
                c = harness.SmtpClient(daemon.port)
                c.reply()
                self.assertEqual(c.submit("Subject: hello\r\n\r\nbody\r\n.\r\n")[0][:3], reply, code)
                c.cmd("QUIT")
                c.close()
                # Raised before the answer: wait for nothing.
                self.assertEqual([f for f in (self.flag, rescan) if os.path.exists(f)], [raised] if raised else [], code)
                if raised:
                    self.assertIn("the filter asked for a rescan: forwarding pass requested", daemon.output())
            finally:
                daemon.stop()

    def test_lingering_forwarder_takes_late_mail(self):
        """A forwarder with --wakeup-linger forwards mail submitted after its last scan, on the
        same run, and exits once the spool has been idle that long."""
        self.start_sink()
        fwd = subprocess.Popen(self.forward_cmd("--wakeup-linger", "3"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            # Its scans done, it waits on the flag's directory (inotify) for the linger time.
            self.assertTrue(harness.wait_for(lambda: watching_inotify(fwd.pid) or fwd.poll() is not None))
            t0 = time.monotonic()
            # The late message comes a second into the linger time (the interval under test: load
            # can only lengthen it), so that lingering again after it shows in the exit time.
            time.sleep(1)
            self.assertIsNone(fwd.poll(), "exited before its linger time")
            self.submit("late@example.com")
            self.assertTrue(harness.wait_for(lambda: len(os.listdir(self.dump)) == 1, timeout=10),
                            "the lingering forwarder did not take the late message")
            self.assertIsNone(fwd.poll())
            self.assertEqual(fwd.wait(timeout=30), EXIT_OK)
        finally:
            if fwd.poll() is None:
                fwd.kill()
                fwd.wait()
        self.assertGreaterEqual(time.monotonic() - t0, 4, "did not linger after the late message")
        self.assertEqual(os.listdir(self.spool), [])
        self.assertFalse(os.path.exists(self.flag))

    def test_next_hop_down_clears_the_flag(self):
        """With the next hop down the forwarder clears the flag and leaves the rest to the timer:
        exiting with it raised would have the path unit start it again at once, in a loop."""
        self.submit("a@example.com")
        self.assertTrue(os.path.exists(self.flag))
        p = subprocess.run(self.forward_cmd(), capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, EXIT_UNREACHABLE, p.stderr)
        self.assertFalse(os.path.exists(self.flag))
        self.assertEqual([m.state for m in harness.spool_messages(self.spool)], ["envelope"])

    def test_none_disables(self):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "--wakeup-file", "none", "a@example.com"],
                       input=b"Subject: x\n\nbody\n", check=True, timeout=30)
        self.assertFalse(os.path.exists(self.flag))
        self.assertEqual(os.listdir(os.path.join(self.work, "run")), [])


del _Base

if __name__ == "__main__":
    unittest.main()
