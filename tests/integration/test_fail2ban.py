# SPDX-License-Identifier: GPL-3.0-or-later
"""fail2ban with the file backend: emailrelay-smtpd logs to a --log-file as a user without the
journal would (--log-time, --log-address), clients fail AUTH, and the real fail2ban reads the
file with the shipped filter and jail: fail2ban-regex counts the failures and extracts the
client's address, and a real fail2ban-server bans that address after maxretry failures and no
other. The journal backend is tested in a systemd container (tests/systemd/test_units.py).

The clients connect from 127.0.0.2 and 127.0.0.3, not from the daemon's own 127.0.0.1, so the
address fail2ban bans can only have come from the logged line of that client."""

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SMTPD = harness.program("emailrelay-smtpd")
SOURCE_ROOT = os.environ.get("EMAILRELAY_SOURCE_ROOT",
                             os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FILTER = os.path.join(SOURCE_ROOT, "data", "fail2ban", "filter.d", "emailrelay.conf")
JAIL = os.path.join(SOURCE_ROOT, "data", "fail2ban", "jail.d", "emailrelay.conf")
HAVE_FAIL2BAN = all(shutil.which(p) for p in ("fail2ban-regex", "fail2ban-server", "fail2ban-client"))

ATTACKER = "127.0.0.2"
GOOD_CLIENT = "127.0.0.3"
FORGED = "192.0.2.7"
LINE_TIME = r"^emailrelay-smtpd: \d{8}\.\d{6}\.\d{3}: "


def b64(s):
    return base64.b64encode(s.encode()).decode()


class Client(harness.SmtpClient):
    """harness.SmtpClient from a chosen loopback source address."""

    def __init__(self, port, source):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
        self.buf = b""


@unittest.skipUnless(HAVE_FAIL2BAN, "fail2ban is not installed (scripts/deps --test)")
class Fail2banFileTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="fail2ban-test-")
        self.addCleanup(shutil.rmtree, self.work, True)
        spool = os.path.join(self.work, "spool")
        os.mkdir(spool)
        config = os.path.join(self.work, "emailrelay.conf")
        open(config, "w").close()
        secrets = os.path.join(self.work, "secrets")
        with open(secrets, "w") as f:
            f.write("server plain alice secret\n")
        self.logfile = os.path.join(self.work, "emailrelay.log")
        argv = [SMTPD, "--spool-dir", spool, "--server-auth", secrets, "--log-file", self.logfile,
                "--log-time", "--log-address", config]
        self.daemon = harness.Daemon(argv, [harness.listening_socket()])
        self.addCleanup(self.daemon.stop, signal.SIGKILL)
        self.connections = {}

    def client(self, source):
        c = Client(self.daemon.port, source)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0][:4], "220 ")
        self.assertEqual(c.cmd("EHLO client.test")[-1], "250 8BITMIME")
        return c

    def fail_auth(self, source, user="alice", forged=False):
        """One failed AUTH PLAIN from source, on a connection kept open for more (the daemon closes
        it after its third failure)."""
        c = self.connections.get(source)
        if c is None:
            c = self.connections[source] = self.client(source)
        name = '%s" from %s (' % (user, FORGED) if forged else user
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0%s\0wrong" % name)), ["535 5.7.8 authentication failed"])

    def good_client(self):
        """A client that logs in and sends a command the server rejects: neither is a login
        failure, so neither may count against it."""
        c = self.client(GOOD_CLIENT)
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), ["235 2.7.0 authentication successful"])
        self.assertEqual(c.cmd("BOGUS"), ["500 5.5.1 command unrecognized"])
        c.cmd("QUIT")

    def log_lines(self, text):
        if not os.path.exists(self.logfile):
            return []
        with open(self.logfile, encoding="utf-8", errors="replace") as f:
            return [x for x in f.read().splitlines() if text in x]

    def wait_log(self, text, count):
        self.assertTrue(harness.wait_for(lambda: len(self.log_lines(text)) >= count, 20),
                        "%d log lines with %r expected:\n%s" % (count, text, self.daemon.output()))

    def regex(self, *args):
        p = subprocess.run(["fail2ban-regex", *args, self.logfile, FILTER], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    def test_fail2ban_regex_counts_failures_and_takes_the_address_from_the_end(self):
        self.fail_auth(ATTACKER)
        self.fail_auth(ATTACKER, forged=True)
        self.fail_auth(ATTACKER, user="mallory")
        self.good_client()
        self.wait_log("authentication failed", 3)
        self.wait_log("command unrecognized", 1)

        # The lines as the user sees them: time, level, the client's address, then the message.
        failures = self.log_lines("authentication failed")
        for line in failures:
            self.assertRegex(line, LINE_TIME + r"warning: 127\.0\.0\.2: .*authentication failed for \".*\" "
                                               r"from 127\.0\.0\.2 \(PLAIN\)$")
        self.assertIn(FORGED, failures[1])

        out = self.regex()
        self.assertRegex(out, r"\n\|\s+1\) \[3\] \^\.\*authentication failed")
        m = re.search(r"\nLines: (\d+) lines, 0 ignored, 3 matched, (\d+) missed", out)
        self.assertTrue(m, out)
        total = int(m.group(1))
        self.assertGreaterEqual(total, 5, out)   # the good client's lines are there, and missed
        # every line's time is read by the filter's datepattern, none falls back to "now"
        self.assertRegex(out, r"Date template hits:\n\|- \[# of hits\] date format\n\|  \[%d\] \{\^LN-BEG\}" % total)
        self.assertIn('command unrecognized: "BOGUS"', out.split("Missed line(s):")[-1])

        self.assertEqual(self.regex("-o", "ip").split(), [ATTACKER] * 3)

    def test_fail2ban_server_bans_after_maxretry(self):
        f2b = os.path.join(self.work, "f2b")
        conf = os.path.join(f2b, "conf")
        for d in ("filter.d", "jail.d", "action.d"):
            os.makedirs(os.path.join(conf, d))
        # The shipped filter and jail as installed, common.conf beside the filter as in /etc.
        shutil.copy(FILTER, os.path.join(conf, "filter.d"))
        shutil.copy(JAIL, os.path.join(conf, "jail.d"))
        with open(os.path.join(conf, "filter.d", "common.conf"), "w") as f:
            f.write("[INCLUDES]\n[DEFAULT]\n")
        socket_path = os.path.join(f2b, "fail2ban.sock")
        banned_file = os.path.join(f2b, "banned")
        with open(os.path.join(conf, "fail2ban.conf"), "w") as f:
            f.write("[Definition]\nloglevel = INFO\nlogtarget = %s\nsocket = %s\npidfile = %s\ndbfile = %s\n"
                    % (os.path.join(f2b, "fail2ban.log"), socket_path, os.path.join(f2b, "fail2ban.pid"),
                       os.path.join(f2b, "fail2ban.sqlite3")))
        with open(os.path.join(conf, "jail.conf"), "w") as f:
            f.write("[DEFAULT]\n")
        # An action that needs no firewall: it writes down whom it bans.
        with open(os.path.join(conf, "action.d", "record.conf"), "w") as f:
            f.write("[Definition]\nactionstart =\nactionstop =\nactioncheck =\n"
                    "actionban = echo <ip> >> <file>\nactionunban =\n[Init]\nfile =\n")
        # What the documentation tells a user of the file backend to put in jail.local; the test
        # adds its action and lets loopback addresses be banned.
        with open(os.path.join(conf, "jail.local"), "w") as f:
            f.write("[emailrelay]\nenabled = true\nbackend = auto\nlogpath = %s\nmaxretry = 3\n"
                    "ignoreself = false\nignoreip =\naction = record[file=\"%s\"]\n" % (self.logfile, banned_file))

        server = subprocess.Popen(["fail2ban-server", "-f", "-x", "-c", conf, "-s", socket_path,
                                   "-p", os.path.join(f2b, "fail2ban.pid"), "start"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def stop_server():
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            server.stdout.close()
        self.addCleanup(stop_server)

        def server_log():
            path = os.path.join(f2b, "fail2ban.log")
            if not os.path.exists(path):
                return "(no fail2ban.log)"
            with open(path, errors="replace") as f:
                return f.read()

        def status():
            p = subprocess.run(["fail2ban-client", "-s", socket_path, "status", "emailrelay"],
                               capture_output=True, text=True, timeout=30)
            if p.returncode != 0:
                return None
            fields = dict(re.findall(r"[|`]- ([A-Za-z ]+):\s*(.*)", p.stdout))
            return {"failed": int(fields["Total failed"]), "banned": fields["Banned IP list"].split()}

        self.assertTrue(harness.wait_for(lambda: status() is not None or server.poll() is not None, 60))
        self.assertIsNotNone(status(), "fail2ban-server did not start the jail:\n" + server_log())
        self.assertEqual(status(), {"failed": 0, "banned": []})

        # Below maxretry: counted, not banned. The forged user name counts for the real client.
        self.good_client()
        self.fail_auth(ATTACKER)
        self.fail_auth(ATTACKER, forged=True)
        self.assertTrue(harness.wait_for(lambda: status()["failed"] == 2, 30),
                        "%r\n%s" % (status(), server_log()))
        self.assertEqual(status()["banned"], [])

        self.fail_auth(ATTACKER)
        self.assertTrue(harness.wait_for(lambda: status()["banned"] == [ATTACKER], 30),
                        "%r\n%s" % (status(), server_log()))
        self.assertTrue(harness.wait_for(lambda: os.path.exists(banned_file), 30), server_log())
        with open(banned_file) as f:
            self.assertEqual(f.read(), ATTACKER + "\n")
        self.assertIn("[emailrelay] Ban %s" % ATTACKER, server_log())
        self.assertNotIn(FORGED, server_log())
        self.assertNotIn(GOOD_CLIENT, server_log())
        # the filter's datepattern read each line's time (no fallback to "now")
        self.assertNotIn("no valid date/time", server_log())

        subprocess.run(["fail2ban-client", "-s", socket_path, "stop"], capture_output=True, timeout=60)
        self.assertEqual(server.wait(timeout=60), 0)



@unittest.skipUnless(HAVE_FAIL2BAN, "fail2ban is not installed (scripts/deps --test)")
class Fail2banLimitsTest(unittest.TestCase):
    """Refusals by the per-address limits and DNSBL are rejections fail2ban counts too. The
    clients speak through a PROXY header (as behind HAProxy), so they can be any address."""

    def test_limit_refusals_are_counted_for_the_right_address(self):
        from test_limits import proxy_v1
        work = tempfile.mkdtemp(prefix="fail2ban-limits-")
        self.addCleanup(shutil.rmtree, work, True)
        spool = os.path.join(work, "spool")
        os.mkdir(spool)
        logfile = os.path.join(work, "emailrelay.log")
        argv = [SMTPD, "--spool-dir", spool, "--log-file", logfile, "--log-time", "--remote-clients",
                "--proxy-protocol", "smtp", "--max-connections-per-address", "1",
                "--max-rejected-commands-per-address", "2", "/dev/null"]
        daemon = harness.Daemon(argv, [harness.listening_socket()])
        self.addCleanup(daemon.stop, signal.SIGKILL)

        def client(src):
            c = harness.SmtpClient(daemon.port)
            self.addCleanup(c.close)
            c.send(proxy_v1(src))
            return c

        held = client("192.0.2.10")
        self.assertEqual(held.reply()[0][:4], "220 ")
        self.assertEqual(client("192.0.2.10").reply()[0][:4], "421 ")     # concurrent
        bad = client("198.51.100.20")
        bad.reply()
        for _ in range(3):
            bad.cmd("RCPT TO:<x@y.test>")
        self.assertEqual(bad.reply()[0][:4], "421 ")                        # rejected commands
        self.assertEqual(client("198.51.100.20").reply()[0][:4], "421 ")    # then blocked
        # IPv6 counts by /64: the line names the address and its network; the next address
        # of that /64 is refused, and each is banned by its own address.
        bad6 = client("2001:db8:7::1")
        bad6.reply()
        for _ in range(3):
            bad6.cmd("RCPT TO:<x@y.test>")
        self.assertEqual(bad6.reply()[0][:4], "421 ")
        self.assertEqual(client("2001:db8:7::2").reply()[0][:4], "421 ")
        good = client("203.0.113.30")
        self.assertEqual(good.reply()[0][:3], "220")                        # the greeting
        # HTTP, after the greeting and before it; what the client sends is quoted in the log
        # line, after its address, so that it cannot name another address to ban.
        web = client("192.0.2.40")
        web.reply()
        self.assertEqual(web.cmd('GET /non-SMTP command from 198.18.0.66: "x'), ["554 non-SMTP command, closing connection"])
        early = harness.SmtpClient(daemon.port)
        self.addCleanup(early.close)
        early.send(proxy_v1("192.0.2.41") + b'POST / 198.18.0.67 sent before the greeting: "\r\n')
        self.assertEqual(early.reply()[0][:4], "554 ")
        def log():
            if not os.path.exists(logfile):
                return ""
            with open(logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        self.assertTrue(harness.wait_for(lambda: log().count("from ") >= 6 and "sent before the greeting" in log()))
        self.assertIn("from 2001:db8:7::1 (limit 2 a minute, counted for 2001:db8:7::/64)", log())

        p = subprocess.run(["fail2ban-regex", "-o", "ip", logfile, FILTER], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(p.stdout.split()), ["192.0.2.10", "192.0.2.40", "192.0.2.41", "198.51.100.20",
                                                    "198.51.100.20", "2001:db8:7::1", "2001:db8:7::2"],
                         log())


if __name__ == "__main__":
    harness.main()
