# SPDX-License-Identifier: GPL-3.0-or-later
"""--dnsbl against a real rbldnsd: emailrelay-smtpd checks remote clients with DNS block lists
before it greets them. The whole test runs in a private network namespace of its own (it
re-executes itself under `unshare --net`), where rbldnsd can have 127.0.0.1:53 and lo gets
extra TEST-NET addresses for clients to connect from, so that they are remote peers."""

import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SMTPD = harness.program("emailrelay-smtpd")
RBLDNSD = "/usr/sbin/rbldnsd"
DOMAIN = "relay.test"
NETNS_MARK = "EMAILRELAY_DNSBL_NETNS"

LISTED_A = "192.0.2.10"        # in a.test only
UNLISTED = "192.0.2.11"        # in neither
LISTED_AB = "192.0.2.12"       # in a.test and b.test
LISTED_A6 = "2001:db8::10"     # in a.test only
IN_NETNS = os.environ.get(NETNS_MARK) == "1"
HAVE_IPV6 = os.path.exists("/proc/sys/net/ipv6")


def can_unshare_net():
    try:
        return subprocess.run(["unshare", "--net", "/bin/true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def dns_query(name, qid=0x4242):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0\x01\0\x01"


def dns_ask(name, server=("127.0.0.1", 53), timeout=0.5):
    """The A records of name (as dotted text), [] for NXDOMAIN; None without an answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(dns_query(name), server)
        try:
            data = s.recv(4096)
        except socket.timeout:
            return None
    an = struct.unpack(">H", data[6:8])[0]
    if data[3] & 0xF != 0 or an == 0:
        return []
    return an   # enough for readiness: something listed


class SilentServer:
    """A UDP socket that reads and counts queries and never answers: a DNS server that is down
    without the port being closed (no ICMP that could end the wait early)."""

    def __init__(self, port=5353):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.names = []
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.sock.settimeout(0.1)
        while not self.stopping:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            labels, i = [], 12
            while i < len(data) and data[i] != 0:
                labels.append(data[i + 1:i + 1 + data[i]].decode("ascii", "replace"))
                i += 1 + data[i]
            self.names.append(".".join(labels))

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


def setUpModule():
    if not IN_NETNS:
        return
    cmds = [["ip", "link", "set", "lo", "up"]]
    for a in (LISTED_A, UNLISTED, LISTED_AB):
        cmds.append(["ip", "addr", "add", a + "/32", "dev", "lo"])
    if HAVE_IPV6:
        cmds.append(["ip", "-6", "addr", "add", LISTED_A6 + "/128", "dev", "lo", "nodad"])
    for c in cmds:
        subprocess.run(c, check=True, capture_output=True)


@unittest.skipUnless(IN_NETNS, "needs root and a private network namespace (unshare --net)")
@unittest.skipUnless(os.access(RBLDNSD, os.X_OK), "rbldnsd is not installed")
class DnsblTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="dnsbl-test-")
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.daemon = None
        self.rbldnsd = None
        self.silent = None

    def tearDown(self):
        if self.daemon:
            self.daemon.stop(signal.SIGKILL)
        if self.rbldnsd and self.rbldnsd.poll() is None:
            self.rbldnsd.kill()
            self.rbldnsd.wait()
        if self.silent:
            self.silent.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    # ---- fixtures ----

    def start_rbldnsd(self):
        """a.test lists LISTED_A, LISTED_AB and LISTED_A6; b.test lists LISTED_AB only."""
        data = os.path.join(self.work, "rbl")
        os.mkdir(data)
        files = {
            "a4": ":127.0.0.2:Listed by a.test\n%s\n%s\n" % (LISTED_A, LISTED_AB),
            "a6": ":127.0.0.3:Listed by a.test (IPv6)\n%s\n" % LISTED_A6,
            "b4": ":127.0.0.4:Listed by b.test\n%s\n" % LISTED_AB,
            # c.test answers as Spamhaus does to queries it refuses (via a public resolver).
            "c4": ":127.255.255.254:Query refused\n%s\n" % UNLISTED,
        }
        for name, text in files.items():
            with open(os.path.join(data, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(data, name), 0o644)
        # rbldnsd drops to its own user and chroots into the data directory.
        os.chmod(self.work, 0o755)
        os.chmod(data, 0o755)
        self.rbldnsd_log = open(os.path.join(self.work, "rbldnsd.log"), "w+")
        self.addCleanup(self.rbldnsd_log.close)
        self.rbldnsd = subprocess.Popen([RBLDNSD, "-n", "-r", data, "-b", "127.0.0.1/53",
                                         "a.test:ip4set:a4", "a.test:ip6trie:a6", "b.test:ip4set:b4",
                                         "c.test:ip4set:c4"],
                                        stdin=subprocess.DEVNULL, stdout=self.rbldnsd_log, stderr=subprocess.STDOUT)
        # Ready when it answers; and it answers as this test expects.
        ok = harness.wait_for(lambda: self.rbldnsd.poll() is not None or dns_ask("10.2.0.192.a.test") is not None,
                              timeout=20)
        self.rbldnsd_log.seek(0)
        self.assertTrue(ok and self.rbldnsd.poll() is None, "rbldnsd did not start: " + self.rbldnsd_log.read())
        self.assertTrue(dns_ask("10.2.0.192.a.test"))
        self.assertEqual(dns_ask("10.2.0.192.b.test"), [])
        self.assertTrue(dns_ask("12.2.0.192.b.test"))

    def start(self, dnsbl, ipv6=False):
        socks = [harness.listening_socket("127.0.0.1")]
        if ipv6:
            socks.append(harness.listening_socket("::1"))
        argv = [SMTPD, "--spool-dir", self.spool, "--domain", DOMAIN, "--remote-clients", "--dnsbl", dnsbl,
                self.config]
        self.daemon = harness.Daemon(argv, socks, names=["smtp"] * len(socks))
        self.ports = [s.getsockname()[1] for s in socks]

    def connect(self, source, timeout=20):
        """A client connected from source (an address on lo) to the relay, not yet read."""
        v6 = ":" in source
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect(("::1", self.ports[1]) if v6 else ("127.0.0.1", self.ports[0]))
        return s

    def greeting(self, s):
        """The first reply line, and whether the server then closed the connection."""
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        line, _, rest = data.partition(b"\r\n")
        closed = False
        if line.startswith(b"220 "):
            s.sendall(b"QUIT\r\n")
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    closed = True
                    break
                rest += chunk
                if line.startswith(b"220 ") and b"221 " in rest:
                    break
        except (ConnectionResetError, socket.timeout):
            pass
        return line.decode("utf-8", "replace"), closed

    def assert_blocked(self, source, code="554 5.7.1 "):
        line, closed = self.greeting(self.connect(source))
        self.assertTrue(line.startswith(code), "%s: %r\n%s" % (source, line, self.daemon.output()))
        self.assertTrue(closed, "the connection from %s stays open after %r" % (source, line))

    def assert_allowed(self, source):
        line, _ = self.greeting(self.connect(source))
        self.assertTrue(line.startswith("220 %s " % DOMAIN), "%s: %r\n%s" % (source, line, self.daemon.output()))

    def log_line(self, *words):
        """Wait for a log line holding every word; return it."""
        found = []

        def look():
            found[:] = [l for l in self.daemon.output().splitlines() if all(w in l for w in words)]
            return found

        self.assertTrue(harness.wait_for(look, timeout=10), "no log line with %r in:\n%s" % (words, self.daemon.output()))
        return found[0]

    # ---- tests ----

    def test_listed_by_one_of_two_threshold_1_blocked(self):
        self.start_rbldnsd()
        self.start("a.test,b.test,1,5000,127.0.0.1:53")
        self.assert_blocked(LISTED_A)
        line = self.log_line(LISTED_A, "a.test")
        self.assertNotIn("b.test", line)
        # Nobody else is affected.
        self.assert_allowed(UNLISTED)
        self.assertEqual(os.listdir(self.spool), [])

    def test_listed_by_one_of_two_threshold_2_allowed_and_logged(self):
        self.start_rbldnsd()
        self.start("a.test,b.test,2,5000,127.0.0.1:53")
        self.assert_allowed(LISTED_A)
        self.log_line(LISTED_A, "a.test")
        # Listed by both: that is two.
        self.assert_blocked(LISTED_AB)
        self.log_line(LISTED_AB, "a.test,b.test")

    def test_refusal_code_is_not_a_listing(self):
        self.start_rbldnsd()
        self.start("c.test,a.test,1,5000,127.0.0.1:53")
        self.assert_allowed(UNLISTED)
        line = self.log_line(UNLISTED, "c.test", "refused the query")
        self.assertIn("127.255.255.0/24", line)
        self.assert_blocked(LISTED_A)

    def test_old_form_spec(self):
        self.start_rbldnsd()
        self.start("127.0.0.1:53,5000,1,b.test,a.test")
        self.assert_blocked(LISTED_A)
        self.assert_allowed(UNLISTED)

    def test_not_listed_allowed(self):
        self.start_rbldnsd()
        self.start("a.test,b.test,1,5000,127.0.0.1:53")
        self.assert_allowed(UNLISTED)
        self.assertEqual([l for l in self.daemon.output().splitlines() if UNLISTED in l and "a.test" in l], [])
        # Local clients are never checked, even if they would be listed.
        c = harness.SmtpClient(self.ports[0])
        self.addCleanup(c.close)
        self.assertTrue(c.reply()[0].startswith("220 "))

    def test_threshold_0_logs_only(self):
        self.start_rbldnsd()
        self.start("a.test,b.test,0,5000,127.0.0.1:53")
        self.assert_allowed(LISTED_A)
        self.log_line(LISTED_A, "a.test")
        self.assert_allowed(LISTED_AB)
        self.log_line(LISTED_AB, "a.test,b.test")

    @unittest.skipUnless(HAVE_IPV6, "no IPv6")
    def test_ipv6_peer(self):
        self.start_rbldnsd()
        self.start("a.test,b.test,1,5000,127.0.0.1:53", ipv6=True)
        self.assert_blocked(LISTED_A6)
        self.log_line(LISTED_A6, "a.test")

    def test_silent_server_positive_timeout_allows(self):
        self.silent = SilentServer()
        self.start("a.test,b.test,1,1000,127.0.0.1:5353")
        t0 = time.monotonic()
        self.assert_allowed(LISTED_A)
        # Not before the timeout: the relay waited for the lists.
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        # Each list asked twice (the second time at half the timeout), with the reversed address.
        expected = ["10.2.0.192.a.test"] * 2 + ["10.2.0.192.b.test"] * 2
        harness.wait_for(lambda: len(self.silent.names) >= len(expected), timeout=5)
        self.assertEqual(sorted(self.silent.names), expected)

    def test_silent_server_negative_timeout_blocks(self):
        self.silent = SilentServer()
        self.start("a.test,b.test,1,-1000,127.0.0.1:5353")
        line, closed = self.greeting(self.connect(LISTED_A))
        self.assertRegex(line, r"^(421 4|554 5)\.7\.")
        self.assertTrue(closed)
        self.log_line(LISTED_A)

    def test_slow_check_does_not_delay_others(self):
        """A remote client waits on a silent DNS server; a local one connecting after it is
        greeted first, while the remote one still has nothing."""
        self.silent = SilentServer()
        # Long enough that the local client is surely served within it, even on a loaded machine.
        self.start("a.test,1,6000,127.0.0.1:5353")
        remote = self.connect(LISTED_A)
        self.assertTrue(harness.wait_for(lambda: self.silent.names, timeout=10))   # its check has begun
        local = harness.SmtpClient(self.ports[0])
        self.addCleanup(local.close)
        self.assertTrue(local.reply()[0].startswith("220 "))
        readable, _, _ = select.select([remote], [], [], 0)
        self.assertEqual(readable, [], "the remote client was answered before the local one")
        # And the remote one is served once its lists time out.
        line, _ = self.greeting(remote)
        self.assertTrue(line.startswith("220 "), line)

    def test_sigterm_during_check(self):
        """Stopping while a check waits: a clean exit (and, in a sanitizer build, no leak)."""
        self.silent = SilentServer()
        self.start("a.test,b.test,1,10000,127.0.0.1:5353")
        remote = self.connect(LISTED_A)
        self.assertTrue(harness.wait_for(lambda: len(self.silent.names) >= 2, timeout=10))
        self.assertEqual(self.daemon.stop(signal.SIGTERM), 0, self.daemon.output())
        self.daemon = None
        self.assertEqual(remote.recv(4096), b"")
        self.assertEqual(os.listdir(self.spool), [])


if __name__ == "__main__":
    if not IN_NETNS and os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip") and can_unshare_net():
        env = dict(os.environ)
        env[NETNS_MARK] = "1"
        os.execvpe("unshare", ["unshare", "--net", sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)
    harness.main()
