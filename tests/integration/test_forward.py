# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-forward against Postfix's smtp-sink as the real next hop, on a unix socket (no
ports): what the sink received (count, envelope, bytes), and the spool after each failure
mode that smtp-sink can inject (4xx, 5xx, disconnects, a dead next hop)."""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

FORWARD = harness.program("emailrelay-forward")
SUBMIT = harness.program("emailrelay-submit")
SMTPD = harness.program("emailrelay-smtpd")
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
DANTED = shutil.which("danted") or "/usr/sbin/danted"

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
        self.assertEqual(got[0][0], "<s@example.org>")   # 7bit needs no BODY=
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
            self.assertEqual(c.submit("Subject: via smtpd\r\n\r\n..stuffed\r\nend\r\n.\r\n", "x@example.org",
                                      ["y@example.com"], "client.example"), ["250 2.0.0 message processed"])
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

    def test_symlinked_content_not_sent(self):
        """A <id>.content planted as a symbolic link (to a file the service user can read) is
        never sent: the message fails to .bad, with a warning naming the file."""
        self.start_sink()
        secret = os.path.join(self.work, "secret")
        with open(secret, "w") as f:
            f.write("Subject: private\n\nthe service user's secret\n")
        self.submit("a@example.com")
        mid, = [f[:-len(".content")] for f in os.listdir(self.spool) if f.endswith(".content")]
        content = os.path.join(self.spool, mid + ".content")
        os.unlink(content)
        os.symlink(secret, content)
        p = self.forward(expect=EXIT_FAILURES)
        self.assertIn("message %s: %s is a symbolic link: not sent" % (mid, content), p.stderr)
        self.assertEqual(self.received(), [])
        m, = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope.bad")
        self.assertIn(b"X-MailRelay-Reason: the content file is not a regular file\r\n", m.envelope)

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
        """Two forwarders at once on one spool of 5,000 messages (the issue's figure): each
        message is delivered exactly once and the spool ends empty."""
        self.start_sink()
        n = 5000
        # One message through the real submit tool, then copies in its exact format (much
        # faster than 5,000 runs, which matters under the sanitizers).
        self.submit("r@example.com", content=b"Subject: TEMPLATE\n\nx\n")
        m, = harness.spool_messages(self.spool)
        os.unlink(m.envelope_path)
        os.unlink(m.content_path)
        for i in range(n):
            base = os.path.join(self.spool, "emailrelay.1.1.%05d" % i)
            with open(base + ".content", "wb") as f:
                f.write(m.content.replace(b"TEMPLATE", b"%d" % i))
            with open(base + ".envelope", "wb") as f:
                f.write(m.envelope)
        # Their logs go to files: a pipe nobody reads would fill and block them.
        logs = [open(os.path.join(self.work, "forward%d.log" % k), "w+") for k in range(2)]
        procs = [subprocess.Popen([FORWARD, "--spool-dir", self.spool, "--forward-to", self.sock, self.config],
                                  stdout=subprocess.DEVNULL, stderr=log) for log in logs]
        for p, log in zip(procs, logs):
            p.wait(timeout=280)
            log.seek(0)
            self.assertEqual(p.returncode, 0, log.read()[-2000:])
            log.close()
        got = self.received()
        subjects = [re.search(rb"Subject: (\d+)", body).group(1) for _, _, body in got]
        self.assertEqual(len(set(subjects)), len(subjects), "a message was delivered twice")
        self.assertEqual(len(subjects), n)
        self.assertEqual(os.listdir(self.spool), [])

    def test_configuration_errors(self):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, self.config], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, EXIT_CONFIG)
        self.assertIn("no next hop: use --forward-to", p.stderr)
        p = self.forward("--log-format", "time,colour", expect=EXIT_CONFIG)
        self.assertIn('unknown --log-format field "colour": use time, unit, address, port or msgid', p.stderr)
        p = self.forward("--retry-schedule", "10,x", expect=EXIT_CONFIG)
        self.assertIn('--retry-schedule: "x" is not a number of seconds', p.stderr)

    def second_sink(self, name):
        sock = os.path.join(self.work, name + ".sock")
        dump = os.path.join(self.work, name)
        os.mkdir(dump)
        os.chmod(dump, 0o777)
        p = subprocess.Popen([SINK, "-u", "nobody", "-d", dump + "/", "unix:" + sock, "10"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.terminate(), p.wait()))
        self.assertTrue(harness.wait_for(lambda: os.path.exists(sock)))
        return sock, dump

    def test_routing_by_forward_to_address(self):
        """A client filter that writes ForwardToAddress into the envelope routes that message
        to another next hop over a connection of its own; the others go to --forward-to. A
        routed address that is down leaves its message queued and costs one attempt a pass."""
        self.start_sink()
        other, other_dump = self.second_sink("other")
        route = os.path.join(self.work, "route.sh")
        with open(route, "w") as f:
            f.write("#!/bin/sh\n"
                    "case \"$(cat \"$1\")\" in *route-me*) "
                    "sed -i \"s|^X-MailRelay-ForwardToAddress: .*|X-MailRelay-ForwardToAddress: %s\\r|\" \"$2\" ;; esac\n"
                    "case \"$(cat \"$1\")\" in *nowhere*) "
                    "sed -i \"s|^X-MailRelay-ForwardToAddress: .*|X-MailRelay-ForwardToAddress: %s\\r|\" \"$2\" ;; esac\n"
                    "exit 0\n" % (other, os.path.join(self.work, "nowhere.sock")))
        os.chmod(route, 0o755)
        self.submit("a@example.com", content=b"Subject: plain\n\nbody\n")
        self.submit("b@example.com", content=b"Subject: routed\n\nroute-me\n")
        self.submit("c@example.com", content=b"Subject: lost\n\nnowhere\n")
        self.submit("d@example.com", content=b"Subject: lost too\n\nnowhere\n")
        p = self.forward("--client-filter", route)
        self.assertEqual(p.returncode, EXIT_UNREACHABLE, p.stderr)
        self.assertEqual(sorted(r[1][0] for r in self.received()), ["<a@example.com>"])
        self.assertEqual(len(os.listdir(other_dump)), 1)
        with open(os.path.join(other_dump, os.listdir(other_dump)[0]), "rb") as f:
            self.assertIn(b"route-me", f.read())
        left = harness.spool_messages(self.spool)
        self.assertEqual(sorted(m.recipients()[0] for m in left), ["c@example.com", "d@example.com"])
        self.assertEqual(p.stderr.count("cannot forward to %s" % os.path.join(self.work, "nowhere.sock")), 1)

    def test_client_interface(self):
        probe = harness.listening_socket()
        port = probe.getsockname()[1]   # a free port, for the sink to bind
        probe.close()
        dump = os.path.join(self.work, "tcp")
        os.mkdir(dump)
        os.chmod(dump, 0o777)
        sink = subprocess.Popen([SINK, "-u", "nobody", "-d", dump + "/", "127.0.0.1:%d" % port, "10"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (sink.terminate(), sink.wait()))
        self.assertTrue(harness.wait_for(lambda: subprocess.run(["ss", "-ltnH", "sport = :%d" % port],
                                                                capture_output=True, text=True).stdout.strip() != ""))
        self.submit("a@example.com")
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:%d" % port,
                            "--client-interface", "127.0.0.2", self.config], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)
        (name,) = os.listdir(dump)
        with open(os.path.join(dump, name), "rb") as f:
            self.assertIn(b"X-Client-Addr: 127.0.0.2\n", f.read())
        for iface, text in (("bogus", "not an IP address"), ("127.0.0.2", "unix socket next hop")):
            fwd = self.sock if text.startswith("unix") else "127.0.0.1:%d" % port
            p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", fwd, "--client-interface", iface,
                                self.config], capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, EXIT_CONFIG)
            self.assertIn(text, p.stderr)

    def test_next_hop_stalls_after_the_data(self):
        """The next hop takes the whole message and then says nothing (smtp-sink -W .:5): after
        --response-timeout the message is kept for a retry with the reason, never lost and
        never failed. The stalled copy may still arrive there (RFC 1047's duplicate), so the
        retry can deliver it twice; both copies are counted."""
        self.start_sink("-W", ".:5")
        self.submit("a@example.com")
        p = self.forward("--response-timeout", "2", "--retry-schedule", "0", expect=EXIT_FAILURES)
        (m,) = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope")
        self.assertIn(b"X-MailRelay-Reason: timeout waiting for the next hop", m.envelope)
        self.assertIn("deferred", p.stderr)
        self.stop_sink()
        self.start_sink()
        self.forward("--retry-schedule", "0", expect=EXIT_OK)
        self.assertEqual(os.listdir(self.spool), [])
        self.assertGreaterEqual(len(self.received()), 1)

    def test_sigterm_while_the_next_hop_is_silent(self):
        """A next hop that accepts the connection and never greets: SIGTERM (systemctl stop)
        ends the wait at once rather than after --prompt-timeout, and the message waits for
        the next run with no attempt counted against it."""
        silent = socket.socket(socket.AF_UNIX)
        self.addCleanup(silent.close)
        silent.bind(self.sock)
        silent.listen(8)
        self.submit("a@example.com")
        p = subprocess.Popen([FORWARD, "--spool-dir", self.spool, "--forward-to", self.sock, "--prompt-timeout", "600",
                              self.config], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        conn, _ = silent.accept()   # the forwarder is connected and waits for the greeting
        self.addCleanup(conn.close)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        self.assertIn("left in the queue: stopping while connecting to %s" % self.sock, err)
        (m,) = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope")
        self.assertNotIn(b"X-MailRelay-Reason", m.envelope)

    def test_retry_schedule_zero_does_not_loop(self):
        """A 4xx with a retry schedule of 0 is due again at once; the run still tries it once
        (the next run, the timer's, retries it) instead of looping on it."""
        self.start_sink("-r", "MAIL")
        self.submit("a@example.com")
        t0 = time.monotonic()
        p = self.forward("--retry-schedule", "0", expect=EXIT_FAILURES)
        self.assertLess(time.monotonic() - t0, 30)
        self.assertEqual(p.stderr.count("deferred (attempt"), 1, p.stderr)

    def test_stale_busy_recovered(self):
        self.start_sink()
        self.submit("a@example.com")
        m, = harness.spool_messages(self.spool)
        os.rename(m.envelope_path, m.envelope_path + ".busy")  # a forwarder died holding it
        self.forward(expect=EXIT_OK)
        self.assertEqual(len(self.received()), 1)
        self.assertEqual(os.listdir(self.spool), [])


def can_unshare_net():
    try:
        return subprocess.run(["unshare", "--net", "/bin/true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


DANTED_CONF = """logoutput: stderr
internal: 127.0.0.1 port = 1080
external: lo
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error }}
{rules}
"""
SOCKS_PASS = "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error\n protocol: tcp }"
SOCKS_BLOCK = ("socks pass { from: 10.0.0.0/8 to: 0.0.0.0/0 log: connect error\n protocol: tcp }\n"
               "socks block { from: 0.0.0.0/0 to: 0.0.0.0/0 log: connect error }")


class Socks4aStub(threading.Thread):
    """A one-connection SOCKS4/4a server that records the request and relays to a unix socket:
    it proves what goes on the wire, where dante (SOCKS4 only, no 4a) cannot resolve a name."""

    def __init__(self, target_path, reply_code=90):
        super().__init__(daemon=True)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.target_path = target_path
        self.reply_code = reply_code
        self.request = None
        self.start()

    def read_until_nul(self, conn, data):
        while b"\0" not in data:
            more = conn.recv(512)
            if not more:
                raise EOFError
            data += more
        return data.split(b"\0", 1)

    def run(self):
        with self.listener:
            self.listener.settimeout(60)
            conn, _ = self.listener.accept()
        with conn:
            data = b""
            while len(data) < 8:
                data += conn.recv(512)
            head, rest = data[:8], data[8:]
            user, rest = self.read_until_nul(conn, rest)
            name = None
            if head[4:7] == b"\0\0\0" and head[7] != 0:
                name, rest = self.read_until_nul(conn, rest)
            self.request = (head[0], head[1], int.from_bytes(head[2:4], "big"), bytes(head[4:8]), user, name)
            conn.sendall(bytes([0, self.reply_code]) + b"\0" * 6)
            if self.reply_code != 90:
                return
            far = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            far.connect(self.target_path)
            with far:
                if rest:
                    far.sendall(rest)

                def pump(a, b):
                    try:
                        while True:
                            chunk = a.recv(65536)
                            if not chunk:
                                break
                            b.sendall(chunk)
                    except OSError:
                        pass
                    try:
                        b.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                t = threading.Thread(target=pump, args=(far, conn), daemon=True)
                t.start()
                pump(conn, far)
                t.join(timeout=30)


@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (scripts/deps --test installs postfix)")
class ForwardSocksTest(unittest.TestCase):
    """--forward-to far-host:far-port@socks-host:socks-port: SOCKS4 through a real dante, in a
    private network namespace (so its fixed ports are private), and SOCKS4a's name form
    through a stub that records the request."""

    # ForwardTest's fixture and helpers, without its tests.
    setUp = ForwardTest.setUp
    tearDown = ForwardTest.tearDown
    start_sink = ForwardTest.start_sink
    stop_sink = ForwardTest.stop_sink
    submit = ForwardTest.submit
    received = ForwardTest.received
    spool_states = ForwardTest.spool_states

    def run_in_namespace(self, forward_to, rules):
        conf = os.path.join(self.work, "danted.conf")
        with open(conf, "w") as f:
            f.write(DANTED_CONF.format(rules=rules))
        rc = os.path.join(self.work, "rc")
        err = os.path.join(self.work, "forward.err")
        script = os.path.join(self.work, "run.sh")
        with open(script, "w") as f:
            f.write("ip link set lo up\n"
                    "%s -u nobody -d %s/ 127.0.0.1:2525 100 &\nSINK=$!\n"
                    "%s -f %s 2>%s &\nDANTE=$!\n"
                    # Fixed ports are private to this namespace. Wait until both listen.
                    "n=0; until ss -ltn | grep -q '127.0.0.1:2525 ' && ss -ltn | grep -q '127.0.0.1:1080 '; do\n"
                    "  n=$((n+1)); [ $n -lt 600 ] || break; sleep 0.05\n"
                    "done\n"
                    "%s --spool-dir %s --forward-to %s %s 2>%s\n"
                    "echo $? > %s\n"
                    "kill $SINK $DANTE\nwait\n"
                    % (SINK, self.dump, DANTED, conf, os.path.join(self.work, "danted.log"),
                       FORWARD, self.spool, forward_to, self.config, err, rc))
        subprocess.run(["unshare", "--net", "/bin/sh", script], timeout=120, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(rc) as f, open(err) as g:
            return int(f.read()), g.read()

    @unittest.skipUnless(os.path.exists(DANTED) and can_unshare_net(),
                         "dante-server is not installed (scripts/deps --test) or no network namespaces")
    def test_socks4_through_dante(self):
        self.submit("a@example.com", "b@example.com", content=b"From: s@example.org\nSubject: socks\n\nbody\n")
        rc, err = self.run_in_namespace("127.0.0.1:2525@127.0.0.1:1080", SOCKS_PASS)
        self.assertEqual(rc, EXIT_OK, err)
        self.assertEqual(os.listdir(self.spool), [])
        (mail, rcpts, body), = self.received()
        self.assertEqual(mail, "<s@example.org>")
        self.assertEqual(rcpts, ["<a@example.com>", "<b@example.com>"])
        self.assertEqual(body, b"From: s@example.org\nSubject: socks\n\nbody\n")

    @unittest.skipUnless(os.path.exists(DANTED) and can_unshare_net(),
                         "dante-server is not installed (scripts/deps --test) or no network namespaces")
    def test_dante_refuses(self):
        self.submit("a@example.com")
        rc, err = self.run_in_namespace("127.0.0.1:2525@127.0.0.1:1080", SOCKS_BLOCK)
        self.assertEqual(rc, EXIT_UNREACHABLE, err)
        self.assertEqual(self.received(), [])
        m, = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope")
        self.assertIn(b"X-MailRelay-Reason: cannot connect to 127.0.0.1:2525@127.0.0.1:1080: SOCKS server "
                      b"127.0.0.1:1080 refused 127.0.0.1:2525: reply code 91", m.envelope)

    def test_socks4a_sends_the_name(self):
        self.start_sink()
        stub = Socks4aStub(self.sock)
        self.submit("a@example.com")
        self.forward_via("mx.example.test:smtp@127.0.0.1:%d" % stub.port, expect=EXIT_OK)
        stub.join(timeout=30)
        self.assertEqual(stub.request, (4, 1, 25, b"\0\0\0\1", b"", b"mx.example.test"))
        self.assertEqual(len(self.received()), 1)
        self.assertEqual(os.listdir(self.spool), [])

    def test_socks4a_identd_refusal(self):
        stub = Socks4aStub(self.sock, reply_code=92)
        self.submit("a@example.com")
        p = self.forward_via("192.0.2.7:2525@127.0.0.1:%d" % stub.port, expect=EXIT_UNREACHABLE)
        stub.join(timeout=30)
        self.assertEqual(stub.request, (4, 1, 2525, bytes([192, 0, 2, 7]), b"", None))  # plain SOCKS4
        self.assertIn("reply code 92 (rejected: the proxy cannot reach the client's identd)", p.stderr)
        self.assertEqual(self.spool_states(), ["envelope"])

    def test_socks_configuration_errors(self):
        for forward_to, message in [
                ("[::1]:25@127.0.0.1:1080", "SOCKS4a cannot carry an IPv6 address"),
                ("::1:25@127.0.0.1:1080", "SOCKS4a cannot carry an IPv6 address"),
                (":25@127.0.0.1:1080", "missing far host"),
                ("mx.example.test:@127.0.0.1:1080", "missing far port"),
                ("mx.example.test@127.0.0.1:1080", "missing far host"),
                ("mx.example.test:25@", "missing SOCKS server"),
                ("mx.example.test:25@127.0.0.1", "missing SOCKS host or port"),
                ("mx.example.test:25@127.0.0.1:", "missing SOCKS port"),
                ("mx.example.test:nosuchservice@127.0.0.1:1080", "the far port is not a port number"),
                ("a:25@b:1080@c:1080", "more than one '@'")]:
            p = self.forward_via(forward_to, expect=EXIT_CONFIG)
            self.assertIn("--forward-to %s: %s" % (forward_to, message), p.stderr)

    def forward_via(self, forward_to, expect):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", forward_to, "--connection-timeout", "10",
                            self.config], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, expect, p.stderr)
        return p


class CapturingHop(harness.ScriptedServer):
    """A next hop that records the exact bytes of each DATA phase: just enough SMTP (EHLO
    without extensions, so that the forwarder uses DATA). The end of the data is CRLF.CRLF
    only, as RFC 5321 has it; what a lenient server would also take for the end is the test's
    to look for in the bytes."""

    def __init__(self):
        super().__init__()
        self.data = []
        self.start()

    def session(self, conn, f):
        conn.sendall(b"220 capture\r\n")
        for line in f:
            verb = line[:4].upper()
            if verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                raw = b""
                while not raw.endswith(b"\r\n.\r\n"):
                    chunk = f.readline()
                    if not chunk:
                        return
                    raw += chunk
                self.data.append(raw)
                conn.sendall(b"250 stored\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")


class ScratchSpool(unittest.TestCase):
    """A work directory with an empty spool and an empty config file."""

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="forward-test-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()


@unittest.skipUnless(shutil.which("unshare"), "no unshare(1) for a host name of the test's own")
class EhloAndBodyTest(ScratchSpool):
    """The forwarder's EHLO name (RFC 5321 4.1.4: an address literal when neither --domain nor
    the host name is fully qualified, as E-MailRelay sends its address) and its BODY= parameter
    (only where the message needs one, and only to a server that offers 8BITMIME)."""

    def hop(self, **kw):
        hop = harness.RecordingHop(**kw)
        hop.start()
        self.addCleanup(hop.close)
        return hop

    def forward(self, hop, hostname, *args, address="127.0.0.1"):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "--wakeup-file", "none", "c@d"], input="\u00e9t\u00e9\n".encode(),
                       check=True, timeout=30)
        hop.lines.clear()
        target = "[%s]:%d" % (address, hop.port) if ":" in address else "%s:%d" % (address, hop.port)
        # A UTS namespace of its own: the host name is the test's, whatever the machine's is.
        p = subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, FORWARD,
                            "--spool-dir", self.spool, "--forward-to", target, *args, self.config],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)
        ehlo, = [x for x in hop.lines if x.startswith("EHLO ")]
        mail, = [x for x in hop.lines if x.startswith("MAIL ")]
        return ehlo, mail

    def test_ehlo_name(self):
        hop = self.hop()
        self.assertEqual(self.forward(hop, "relay.example")[0], "EHLO relay.example")
        self.assertEqual(self.forward(hop, "nodots", "--domain", "mail.example")[0], "EHLO mail.example")
        self.assertEqual(self.forward(hop, "nodots")[0], "EHLO [127.0.0.1]")
        self.assertEqual(self.forward(hop, "nodots", "--domain", "alsonodots")[0], "EHLO [127.0.0.1]")
        if socket.has_ipv6 and subprocess.run(["ip", "-6", "addr", "show", "lo"], capture_output=True, text=True).stdout:
            self.assertEqual(self.forward(self.hop(host="::1"), "nodots", address="::1")[0], "EHLO [IPv6:::1]")

    def test_body_parameter(self):
        hop = self.hop()
        # 8-bit content arrives with BODY=8BITMIME; a submitted message's body is 8bit
        self.assertEqual(self.forward(hop, "relay.example")[1], "MAIL FROM:<anonymous> BODY=8BITMIME")
        self.assertEqual(self.forward(self.hop(extensions=()), "relay.example")[1], "MAIL FROM:<anonymous>")


class SmugglingTest(ScratchSpool):
    """SMTP smuggling (2023): whatever bare CR, bare LF and dot combination reaches the relay,
    the next hop receives only CRLF lines with every leading dot stuffed, so no server
    downstream, however lenient about line ends, can see the data end before the real end.
    Through the whole relay (smtpd in, forwarder out) and through the forwarder alone, from a
    content file a filter may have written with any bytes."""

    VARIANTS = [b"\r.\r", b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b".\r", b"\r\r\n.\r\r\n",
                b"\n..\n", b"x\r"]

    def setUp(self):
        super().setUp()
        self.hop = CapturingHop()
        self.addCleanup(self.hop.close)

    def message(self, variant):
        return (b"Subject: smuggle\r\n\r\nbefore" + variant + b"MAIL FROM:<evil@x>" + variant +
                b"RCPT TO:<victim@y>" + variant + b"DATA" + variant + b"after\r\n")

    def check(self, raw, variant):
        self.assertTrue(raw.endswith(b"\r\n.\r\n"), (variant, raw))
        body = raw[:-3]
        # No CR without its LF, no LF without its CR.
        self.assertNotRegex(body, rb"\r(?!\n)|(?<!\r)\n", variant)
        lines = body.split(b"\r\n")
        # Every line that starts with a dot is stuffed: none is a lone ".", none is ".x".
        for line in lines:
            if line.startswith(b"."):
                self.assertTrue(line.startswith(b".."), (variant, raw))
        # The smuggled command is content, at the start of a line of its own.
        self.assertTrue([x for x in lines if x.startswith(b"MAIL FROM:<evil@x>")], (variant, raw))

    def forward(self):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:%d" % self.hop.port,
                            self.config], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)

    def test_through_smtpd_and_the_forwarder(self):
        sock = harness.listening_socket()
        d = harness.Daemon([SMTPD, "--spool-dir", self.spool, "--wakeup-file", "none", self.config], [sock])
        self.addCleanup(d.stop)
        for variant in self.VARIANTS:
            c = harness.SmtpClient(d.port)
            self.addCleanup(c.close)
            c.reply()
            c.cmd("EHLO x")
            c.cmd("MAIL FROM:<a@b>")
            c.cmd("RCPT TO:<c@d>")
            self.assertEqual(c.cmd("DATA")[0][:3], "354")
            c.send(self.message(variant) + b".\r\n")
            self.assertEqual(c.reply(), ["250 2.0.0 message processed"], variant)
            c.cmd("QUIT")
        self.forward()
        self.assertEqual(len(self.hop.data), len(self.VARIANTS))
        for raw in self.hop.data:
            self.check(raw, raw[:80])

    def test_forwarder_alone_from_any_bytes(self):
        for variant in self.VARIANTS:
            subprocess.run([SUBMIT, "--spool-dir", self.spool, "--wakeup-file", "none", "c@d"], input=b"x\n",
                           check=True, timeout=30)
            new = [f for f in os.listdir(self.spool) if f.endswith(".content")
                   and not os.path.exists(os.path.join(self.work, "done-" + f))]
            name, = new
            with open(os.path.join(self.spool, name), "wb") as f:   # as a filter may leave it
                f.write(self.message(variant))
            open(os.path.join(self.work, "done-" + name), "w").close()
        self.forward()
        self.assertEqual(len(self.hop.data), len(self.VARIANTS))
        for raw in self.hop.data:
            self.check(raw, raw[:80])


if __name__ == "__main__":
    harness.main()
