# SPDX-License-Identifier: GPL-3.0-or-later
"""Crash safety: 20,000 numbered messages through emailrelay-smtpd -> spool -> emailrelay-forward
-> Postfix's smtp-sink, while emailrelay-smtpd and the forwarder are killed with SIGKILL at random
moments, at least 20 times. Restarted as systemd would (the listening socket stays open across
restarts, so clients queue in its backlog; the forwarder runs again when it exits). Afterwards:
every message that got a 250 was delivered, duplicates are only messages in flight at a kill
(counted and printed), and no .busy or .new is left once the spool is recovered.

Under the sanitizers (EMAILRELAY_SANITIZED) the run is smaller: 3,000 messages, 20 kills."""

import os
import random
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SMTPD = harness.program("emailrelay-smtpd")
FORWARD = harness.program("emailrelay-forward")
QUEUE = harness.program("emailrelay-queue")
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SANITIZED = bool(os.environ.get("EMAILRELAY_SANITIZED"))
MESSAGES = int(os.environ.get("EMAILRELAY_CRASH_MESSAGES", 3000 if SANITIZED else 20000))
MIN_KILLS = 20
SENDERS = 8


@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (scripts/deps --test installs postfix)")
class CrashTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="crash-test-")
        os.chmod(self.work, 0o755)
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.dump = os.path.join(self.work, "dump")
        os.mkdir(self.dump)
        os.chmod(self.dump, 0o777)
        self.sink_sock = os.path.join(self.work, "sink.sock")
        self.flag = os.path.join(self.work, "forward-wanted")
        self.config = os.path.join(self.work, "emailrelay.conf")
        with open(self.config, "w") as f:
            f.write("retry-schedule 1\n")
        self.sink = subprocess.Popen([SINK, "-u", "nobody", "-d", self.dump + "/", "unix:" + self.sink_sock, "200"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.assertTrue(harness.wait_for(lambda: os.path.exists(self.sink_sock)))
        self.listener = harness.listening_socket()
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.smtpd = None
        self.forwarder = None
        self.done = threading.Event()
        self.kills = {"smtpd": 0, "forward": 0}
        self.resends = 0
        self.supervise_error = None

    def tearDown(self):
        self.done.set()
        for p in (self.smtpd, self.forwarder):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        self.sink.terminate()
        self.sink.wait(timeout=10)
        self.listener.close()
        shutil.rmtree(self.work, ignore_errors=True)

    # -- the supervised processes --

    def start_smtpd(self):
        # The same listening socket every time, as systemd keeps it across restarts.
        d = harness.Daemon([SMTPD, "--spool-dir", self.spool, "--wakeup-file", self.flag, self.config],
                           [self.listener])
        d.sockets = []   # not Daemon's to close
        return d.proc

    def run_forwarder(self):
        return subprocess.Popen([FORWARD, "--spool-dir", self.spool, "--forward-to", self.sink_sock,
                                 "--wakeup-file", self.flag, "--wakeup-linger", "1", self.config],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def supervise(self):
        """Restart what died, as Restart=on-failure and the path unit would. If it cannot, the
        run is over: the senders stop retrying and the test fails with the reason, rather
        than hanging until meson's timeout."""
        try:
            while not self.done.is_set():
                with self.lock:
                    if self.smtpd is None or self.smtpd.poll() is not None:
                        self.smtpd = self.start_smtpd()
                    if self.forwarder is None or self.forwarder.poll() is not None:
                        self.forwarder = self.run_forwarder()
                time.sleep(0.02)
        except Exception as e:
            self.supervise_error = "cannot restart a daemon: %s: %s" % (type(e).__name__, e)
            self.done.set()

    def killer(self):
        rnd = random.Random(20261123)
        while not self.done.is_set():
            time.sleep(rnd.uniform(0.1, 0.5))
            which = rnd.choice(["smtpd", "forward"])
            with self.lock:
                p = self.smtpd if which == "smtpd" else self.forwarder
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
                    self.kills[which] += 1

    # -- the clients --

    def sender(self, numbers, acked):
        s = None
        for n in numbers:
            body = ("From: crash@example.org\r\nSubject: crash %d\r\n\r\nmessage %d\r\n" % (n, n)).encode()
            while not (self.done.is_set() and self.supervise_error):
                try:
                    if s is None:
                        s = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=30)
                    s.sendmail("crash@example.org", ["b@example.com"], body)
                    acked.append(n)
                    break
                except (smtplib.SMTPException, OSError):
                    # Killed mid-transaction (or 421): send it again on a new connection. If the
                    # first attempt was committed, that is a duplicate, and allowed.
                    self.resends += 1
                    try:
                        s.close()
                    except Exception:
                        pass
                    s = None
                    time.sleep(0.01)
        if s is not None:
            try:
                s.quit()
            except Exception:
                pass

    def delivered(self):
        counts = {}
        pattern = re.compile(rb"^Subject: crash (\d+)\r?$", re.M)
        for name in os.listdir(self.dump):
            with open(os.path.join(self.dump, name), "rb") as f:
                m = pattern.search(f.read())
            if m:
                counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
        return counts

    def test_kill_smtpd_and_forwarder_at_random(self):
        supervisor = threading.Thread(target=self.supervise, daemon=True)
        supervisor.start()
        killer = threading.Thread(target=self.killer, daemon=True)
        killer.start()
        acked = []
        numbers = list(range(1, MESSAGES + 1))
        threads = [threading.Thread(target=self.sender, args=(numbers[i::SENDERS], acked), daemon=True)
                   for i in range(SENDERS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        # Keep killing until every message is in, and at least MIN_KILLS times.
        for t in threads:
            t.join(timeout=900)
        self.assertIsNone(self.supervise_error)
        self.assertFalse(any(t.is_alive() for t in threads), "senders did not finish")
        while sum(self.kills.values()) < MIN_KILLS and time.monotonic() - t0 < 600:
            time.sleep(0.1)
        self.done.set()
        killer.join(timeout=10)
        supervisor.join(timeout=10)
        sent = time.monotonic() - t0

        # Let the last forwarder finish, then forward what is left and clean up as an admin would.
        with self.lock:
            if self.smtpd.poll() is None:
                self.smtpd.send_signal(signal.SIGTERM)
                self.smtpd.wait(timeout=30)
            if self.forwarder.poll() is None:
                self.forwarder.wait(timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", self.sink_sock, self.config],
                               capture_output=True, text=True, timeout=300)
            if not [m for m in os.listdir(self.spool) if m.endswith(".envelope") or m.endswith(".busy")]:
                break
            time.sleep(1.1)   # retry-schedule 1: deferred ones are due again
        p = subprocess.run([QUEUE, "--spool-dir", self.spool, "recover", "--min-age", "0"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        left = sorted(os.listdir(self.spool))
        self.assertEqual(left, [], "left in the spool after recovery: %s" % left[:10])

        counts = self.delivered()
        acked_set = set(acked)
        missing = sorted(acked_set - set(counts))
        self.assertEqual(missing[:20], [], "%d acknowledged messages never delivered" % len(missing))
        duplicates = sum(c - 1 for c in counts.values())
        kills = sum(self.kills.values())
        sys.stderr.write("crash test: %d messages in %.1f s, %d attempts resent after a kill or 421, %d kills "
                         "(smtpd %d, forward %d), %d delivered twice; recover: %s\n"
                         % (MESSAGES, sent, self.resends, kills, self.kills["smtpd"], self.kills["forward"],
                            duplicates, p.stdout.strip()))
        self.assertGreaterEqual(kills, MIN_KILLS)
        self.assertEqual(len(acked_set), MESSAGES)   # every message got a 250 in the end
        # A duplicate is a message in flight at a kill: the one the forwarder had handed over but
        # not yet removed, or one that smtpd committed but could not acknowledge (at most one per
        # sender at a time).
        self.assertLessEqual(duplicates, self.kills["forward"] + self.kills["smtpd"] * SENDERS)


if __name__ == "__main__":
    harness.main()
