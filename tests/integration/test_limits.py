# SPDX-License-Identifier: GPL-3.0-or-later
"""The PROXY protocol (v1 and v2) and the per-address limits of emailrelay-smtpd and
emailrelay-pop3d, through their sockets. A PROXY header lets one loopback test client speak for
any address, so the limits are exercised here for "remote" TEST-NET clients; test_haproxy.py does
the same with the real HAProxy and network namespaces."""

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SMTPD = harness.program("emailrelay-smtpd")
POP3D = harness.program("emailrelay-pop3d")

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src, dst=None, sport=40000, dport=25):
    proto = "TCP6" if ":" in src else "TCP4"
    dst = dst or ("::1" if ":" in src else "127.0.0.1")
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def proxy_v2(src=None, dst=None, sport=40000, dport=25, tlvs=b""):
    if src is None:                                   # LOCAL: a health check
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    if ":" in src:
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst or "::1")
        fam = 0x21
    else:
        body = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst or "127.0.0.1")
        fam = 0x11
    body += struct.pack("!HH", sport, dport) + tlvs
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def gone(c):
    """Closed by the server, in an orderly way or by a reset."""
    try:
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                return True
            c.buf += chunk
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class Client(harness.SmtpClient):
    """A raw client that sends a PROXY header (or anything) first."""

    def __init__(self, port, header=b"", timeout=20):
        super().__init__(port, timeout=timeout)
        if header:
            self.send(header)


class LimitsTestCase(unittest.TestCase):
    program = SMTPD
    names = ["smtp"]

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="limits-test-")
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.daemon = None

    def tearDown(self):
        if self.daemon:
            self.daemon.stop(signal.SIGKILL)
            out = self.daemon.output()
            for bad in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                self.assertNotIn(bad, out)
        shutil.rmtree(self.work, ignore_errors=True)

    def start(self, *args):
        argv = [self.program, "--spool-dir", self.spool, *self.program_args(), *args, self.config]
        self.daemon = harness.Daemon(argv, [harness.listening_socket()], names=self.names)
        return self.daemon.port

    def program_args(self):
        return ["--domain", "relay.test"]

    def client(self, header=b""):
        c = Client(self.daemon.port, header)
        self.addCleanup(c.close)
        return c

    def log_has(self, text):
        return harness.wait_for(lambda: text in self.daemon.output(), timeout=10)


class SmtpProxyTest(LimitsTestCase):

    def send_message(self, c, subject="proxied"):
        self.assertEqual(c.cmd("HELO client.test")[0][:3], "250")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.test>")[0][:3], "250")
        self.assertEqual(c.cmd("RCPT TO:<c@d.test>")[0][:3], "250")
        self.assertEqual(c.cmd("DATA")[0][:3], "354")
        c.send("Subject: %s\r\n\r\nbody\r\n.\r\n" % subject)
        self.assertEqual(c.reply()[0][:3], "250")
        c.cmd("QUIT")

    def clients_recorded(self):
        return sorted(dict(m.fields()).get("X-MailRelay-Client", "") for m in harness.spool_messages(self.spool))

    def test_v1_and_v2_headers_give_the_client_address(self):
        self.start("--proxy-protocol", "smtp", "--remote-clients")
        c = self.client(proxy_v1("192.0.2.10"))
        self.assertEqual(c.reply()[0][:4], "220 ")
        self.send_message(c)
        c = self.client(proxy_v2("2001:db8::7", dport=25))
        self.assertEqual(c.reply()[0][:4], "220 ")
        self.send_message(c)
        clients = self.clients_recorded()
        self.assertEqual(len(clients), 2, clients)
        self.assertTrue(clients[0].startswith("192.0.2.10"), clients)
        self.assertTrue(clients[1].startswith("2001:db8::7"), clients)
        # The Received line names the real client too.
        contents = [m.content for m in harness.spool_messages(self.spool)]
        self.assertTrue(any(b"([192.0.2.10])" in x for x in contents), contents)
        self.assertTrue(any(b"([IPv6:2001:db8::7])" in x for x in contents), contents)

    def test_local_and_unknown_keep_the_real_peer(self):
        # HAProxy's health checks send LOCAL (v2) or UNKNOWN (v1): the connection's own
        # address stands, here loopback, so no --remote-clients is needed.
        self.start("--proxy-protocol", "smtp")
        for header in (proxy_v2(None, tlvs=b"\x04\x00\x01x"), b"PROXY UNKNOWN whatever\r\n"):
            c = self.client(header)
            self.assertEqual(c.reply()[0][:4], "220 ")
            self.send_message(c)
        self.assertEqual([x.split(":")[0] for x in self.clients_recorded()], ["127.0.0.1", "127.0.0.1"])

    def test_remote_clients_policed_by_the_proxied_address(self):
        self.start("--proxy-protocol", "all")
        c = self.client(proxy_v1("192.0.2.10"))
        self.assertEqual(c.reply(), ["554 5.7.1 remote clients are not allowed"])
        self.assertTrue(c.closed())
        self.assertTrue(self.log_has("connection from 192.0.2.10 rejected: not a local address"))
        c = self.client(proxy_v2("10.1.2.3"))          # private: allowed without -r
        self.assertEqual(c.reply()[0][:4], "220 ")

    def test_header_split_and_followed_by_data(self):
        self.start("--proxy-protocol", "smtp", "--remote-clients")
        h = proxy_v2("198.51.100.4")
        # Gaps, not synchronisation: the daemon peeks at the header (MSG_PEEK), leaving no trace
        # to wait for. Should load merge the pieces, the test proves less but cannot fail.
        c = self.client(h[:5])
        time.sleep(0.2)
        c.send(h[5:20])
        time.sleep(0.2)
        # The rest of the header and the client's first command in one segment: the command
        # must reach the session, not be eaten with the header. Sent before the greeting, it
        # is the client talking first, which closes the session naming what it sent.
        c.send(h[20:] + b"NOOP\r\n")
        self.assertEqual(c.reply(), ["554 protocol error: talking before the greeting, closing connection"])
        self.assertTrue(self.log_has('198.51.100.4 sent before the greeting: "NOOP": disconnecting'))
        self.assertTrue(gone(c))

    def test_bad_headers_close_the_connection(self):
        self.start("--proxy-protocol", "smtp", "--remote-clients")
        for bad, why in ((b"EHLO spoofer\r\n", "not a PROXY protocol header"),
                         (b"PROXY TCP4 192.0.2.1 nonsense 1 2\r\n", "not an IPv4 address"),
                         (b"PROXY TCP4 192.0.2.1 127.0.0.1 1 99999\r\n", "port is not a number"),
                         (b"PROXY " + b"x" * 120, "line too long"),
                         (V2_SIGNATURE + b"\x21\x11\xff\xff", "header too long"),
                         # Families the specification says to reject, and a unix-socket client
                         # (these were taken as LOCAL, the balancer's address standing).
                         (V2_SIGNATURE + b"\x21\xff\x00\x0c" + bytes(12), "unknown address family or protocol"),
                         (V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216), "not a TCP connection"),
                         (proxy_v2("192.0.2.7", tlvs=b"\x04\x00\x09x"), "a TLV longer than the header")):
            c = self.client(bad)
            # Closed without a word to whoever that was (reset, as what it sent is unread).
            self.assertTrue(gone(c), bad)
            self.assertEqual(c.buf, b"", bad)
            self.assertTrue(self.log_has(why), (why, self.daemon.output()))
        # Still serving.
        c = self.client(proxy_v1("192.0.2.10"))
        self.assertEqual(c.reply()[0][:4], "220 ")

    def test_only_the_balancer_may_send_headers(self):
        # Whoever sends the header picks the client address: by default only local and private
        # peers may (the balancer); here only 192.0.2.0/24, so loopback is turned away.
        self.start("--proxy-protocol", "smtp", "--remote-clients", "--proxy-protocol-from", "192.0.2.0/24")
        c = self.client(proxy_v1("10.9.9.9"))
        self.assertTrue(gone(c))
        self.assertEqual(c.buf, b"")
        self.assertTrue(self.log_has("a PROXY protocol listener (smtp) is not for 127.0.0.1 (see --proxy-protocol-from)"))
        # The listener is bound before the option is read: an ephemeral port, never 25.
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--interface", "127.0.0.1", "--port", "0",
                            "--proxy-protocol", "smtp", "--proxy-protocol-from", "balancer", self.config],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn('--proxy-protocol-from: "balancer" is not an IP address, a network, local, any or none', p.stderr)

    def test_listener_names_without_systemd(self):
        # The --port listener is "smtp", or "smtps" with --server-tls-connection: a name of
        # smtpd's own that it has no listener for is warned about, pop3d's names are not.
        d = harness.Daemon([SMTPD, "--spool-dir", self.spool, "--interface", "127.0.0.1", "--port", "0",
                            "--proxy-protocol", "smtps,pop3", self.config])
        try:
            warning = 'warning: --proxy-protocol: no listener named "smtps" here (listeners: smtp)'
            self.assertTrue(harness.wait_for(lambda: warning in d.output()), d.output())
            self.assertNotIn('"pop3"', d.output())
        finally:
            self.assertEqual(d.stop(), 0)

    def test_listener_without_the_option_takes_no_header(self):
        self.start("--remote-clients")
        c = self.client()
        self.assertEqual(c.reply()[0][:4], "220 ")
        c.send(proxy_v1("192.0.2.10"))
        self.assertEqual(c.reply()[0][:3], "500")   # the header line is just a bad command


class SmtpLimitsTest(LimitsTestCase):

    def start(self, *args):
        return super().start("--proxy-protocol", "smtp", "--remote-clients", *args)

    def test_concurrent_connections(self):
        self.start("--max-connections-per-address", "2")
        a = self.client(proxy_v1("192.0.2.10"))
        b = self.client(proxy_v1("192.0.2.10"))
        self.assertEqual(a.reply()[0][:4], "220 ")
        self.assertEqual(b.reply()[0][:4], "220 ")
        c = self.client(proxy_v1("192.0.2.10"))
        self.assertEqual(c.reply(), ["421 4.7.0 too many connections from your address"])
        self.assertTrue(c.closed())
        self.assertTrue(self.log_has("too many concurrent connections from 192.0.2.10 (limit 2)"))
        d = self.client(proxy_v1("192.0.2.11"))       # another address is served
        self.assertEqual(d.reply()[0][:4], "220 ")
        e = self.client(proxy_v2(None))                # and loopback is exempt
        self.assertEqual(e.reply()[0][:4], "220 ")
        a.cmd("QUIT")
        self.assertTrue(a.closed())
        self.assertTrue(harness.wait_for(lambda: self.client(proxy_v1("192.0.2.10")).reply()[0][:4] == "220 "))

    def test_connection_rate(self):
        self.start("--max-connection-rate-per-address", "3")
        for _ in range(3):
            c = self.client(proxy_v1("192.0.2.20"))
            self.assertEqual(c.reply()[0][:4], "220 ")
            c.cmd("QUIT")
        c = self.client(proxy_v1("192.0.2.20"))
        self.assertEqual(c.reply(), ["421 4.7.0 too many connections from your address, try later"])
        self.assertTrue(self.log_has("too many connections in a minute from 192.0.2.20 (limit 3)"))
        # Blocked for the rest of its minute, whatever it tries.
        c = self.client(proxy_v1("192.0.2.20"))
        self.assertEqual(c.reply(), ["421 4.7.0 too many errors from your address, try later"])
        self.assertTrue(self.log_has("address blocked for"))
        c = self.client(proxy_v1("192.0.2.21"))
        self.assertEqual(c.reply()[0][:4], "220 ")

    def test_rejected_commands(self):
        self.start("--max-rejected-commands-per-address", "3")
        c = self.client(proxy_v1("192.0.2.30"))
        self.assertEqual(c.reply()[0][:4], "220 ")
        c.cmd("HELO x")
        for _ in range(3):
            self.assertEqual(c.cmd("RCPT TO:<x@y.test>")[0][:3], "503")
        self.assertEqual(c.cmd("RCPT TO:<x@y.test>")[0][:3], "503")
        self.assertEqual(c.reply(), ["421 too many errors from your address, try later"])
        self.assertTrue(c.closed())
        self.assertTrue(self.log_has("session closed: too many rejected commands from 192.0.2.30 (limit 3 a minute)"))
        c = self.client(proxy_v1("192.0.2.30"))
        self.assertEqual(c.reply()[0][:4], "421 ")
        # Loopback: the same errors, no limit.
        c = self.client(proxy_v2(None))
        c.reply()
        for _ in range(6):
            self.assertEqual(c.cmd("RCPT TO:<x@y.test>")[0][:3], "503")
        self.assertEqual(c.cmd("NOOP")[0][:3], "250")

    def test_failed_auth(self):
        secrets = os.path.join(self.work, "secrets")
        with open(secrets, "w") as f:
            f.write("server plain alice secret\n")
        # One a minute: the second failure is over the limit, before the per-connection
        # limit of 3 ends the session anyway.
        self.start("--server-auth", secrets, "--max-auth-failures-per-address", "1")
        bad = "AUTH PLAIN AGFsaWNlAHdyb25n"               # alice / wrong
        c = self.client(proxy_v1("192.0.2.40"))
        c.reply()
        c.cmd("EHLO x")
        self.assertEqual(c.cmd(bad)[0][:3], "535")
        self.assertEqual(c.cmd(bad)[0][:3], "535")
        self.assertEqual(c.reply(), ["421 4.7.0 too many errors from your address, try later"])
        self.assertTrue(c.closed())
        self.assertTrue(self.log_has("session closed: too many failed AUTH attempts from 192.0.2.40 (limit 1 a minute)"))
        c = self.client(proxy_v1("192.0.2.40"))
        self.assertEqual(c.reply()[0][:4], "421 ")
        c = self.client(proxy_v1("192.0.2.41"))
        c.reply()
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==")[0][:3], "235")

    def test_ipv6_clients_count_by_their_64(self):
        # One IPv6 host may use any address of its /64: the addresses of a /64 share a count,
        # another /64 has its own, and the log names the address and the network.
        self.start("--max-connections-per-address", "2")
        a = self.client(proxy_v2("2001:db8:1:2::10"))
        b = self.client(proxy_v2("2001:db8:1:2:ffff::11"))
        self.assertEqual(a.reply()[0][:4], "220 ")
        self.assertEqual(b.reply()[0][:4], "220 ")
        c = self.client(proxy_v1("2001:db8:1:2::12"))
        self.assertEqual(c.reply(), ["421 4.7.0 too many connections from your address"])
        self.assertTrue(self.log_has("too many concurrent connections from 2001:db8:1:2::12 "
                                     "(limit 2, counted for 2001:db8:1:2::/64)"))
        d = self.client(proxy_v2("2001:db8:1:3::10"))
        self.assertEqual(d.reply()[0][:4], "220 ")
        a.cmd("QUIT")
        self.assertTrue(a.closed())
        self.assertTrue(harness.wait_for(lambda: self.client(proxy_v2("2001:db8:1:2::99")).reply()[0][:4] == "220 "))

    def test_ipv6_prefix_option(self):
        # 128: each address on its own; an IPv4 address is never grouped; and the option
        # is checked.
        self.start("--max-connections-per-address", "1", "--limits-ipv6-prefix", "128",
                   "--max-rejected-commands-per-address", "1")
        a = self.client(proxy_v2("2001:db8:1:2::10"))
        b = self.client(proxy_v2("2001:db8:1:2::11"))
        self.assertEqual(a.reply()[0][:4], "220 ")
        self.assertEqual(b.reply()[0][:4], "220 ")
        self.assertEqual(self.client(proxy_v2("2001:db8:1:2::11")).reply()[0][:4], "421 ")
        self.assertTrue(self.log_has("too many concurrent connections from 2001:db8:1:2::11 (limit 1)"))
        b.cmd("HELO x")
        for _ in range(2):
            self.assertEqual(b.cmd("RCPT TO:<x@y.test>")[0][:3], "503")
        self.assertTrue(self.log_has("session closed: too many rejected commands from 2001:db8:1:2::11 "
                                     "(limit 1 a minute)"))
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--limits-ipv6-prefix", "8", self.config],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("limits-ipv6-prefix", p.stderr)

    def test_ipv6_session_limit_names_the_network(self):
        self.start("--max-rejected-commands-per-address", "1")
        c = self.client(proxy_v2("2001:db8:5::1"))
        c.reply()
        c.cmd("HELO x")
        for _ in range(2):
            self.assertEqual(c.cmd("RCPT TO:<x@y.test>")[0][:3], "503")
        self.assertTrue(self.log_has("session closed: too many rejected commands from 2001:db8:5::1 "
                                     "(limit 1 a minute, counted for 2001:db8:5::/64)"))
        # the same /64 is refused, at once
        self.assertEqual(self.client(proxy_v2("2001:db8:5::2")).reply()[0][:4], "421 ")

    def test_balancer_connections_are_not_limited(self):
        # A LOCAL header (HAProxy's version 2 health checks) is the balancer's own connection.
        self.start("--max-connection-rate-per-address", "1", "--limits-exempt", "none")
        for _ in range(3):
            c = self.client(proxy_v2(None))
            self.assertEqual(c.reply()[0][:4], "220 ")
            c.cmd("QUIT")
        # The same address as a client's is limited.
        self.assertEqual(self.client(proxy_v1("127.0.0.1")).reply()[0][:4], "220 ")
        self.assertEqual(self.client(proxy_v1("127.0.0.1")).reply()[0][:4], "421 ")

    def test_exempt_networks(self):
        self.start("--max-connections-per-address", "1", "--limits-exempt", "192.0.2.0/25,2001:db8::/32")
        a = self.client(proxy_v1("192.0.2.50"))
        b = self.client(proxy_v1("192.0.2.50"))
        c = self.client(proxy_v1("2001:db8::1"))
        d = self.client(proxy_v1("2001:db8::1"))
        for x in (a, b, c, d):
            self.assertEqual(x.reply()[0][:4], "220 ", self.daemon.output())
        e = self.client(proxy_v1("192.0.2.200"))
        f = self.client(proxy_v1("192.0.2.200"))
        self.assertEqual(e.reply()[0][:4], "220 ")
        self.assertEqual(f.reply()[0][:4], "421 ")

    def test_bad_exempt_list(self):
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--limits-exempt", "192.0.2.0/33", self.config],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--limits-exempt: \"192.0.2.0/33\" has a bad prefix length", p.stderr)
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--limits-exempt", "nobody", self.config],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is not an IP address, a network, local, any or none", p.stderr)


class Pop3LimitsTest(LimitsTestCase):
    program = POP3D
    names = ["pop3"]

    def program_args(self):
        secrets = os.path.join(self.work, "pop.auth")
        with open(secrets, "w") as f:
            f.write("server plain alice secret\n")
        return ["--pop-auth", secrets, "--proxy-protocol", "pop3", "--remote-clients"]

    def test_proxied_address_and_limits(self):
        self.start("--max-connection-rate-per-address", "2", "--max-rejected-commands-per-address", "2")
        c = self.client(proxy_v2("192.0.2.60", dport=110))
        self.assertEqual(c.reply()[0][:3], "+OK")
        for _ in range(2):
            self.assertEqual(c.cmd("BOGUS")[0][:4], "-ERR")
        self.assertEqual(c.cmd("BOGUS")[0], "-ERR unknown command")
        self.assertEqual(c.reply(), ["-ERR too many errors from your address, try later"])
        self.assertTrue(c.closed())
        self.assertTrue(self.log_has("session closed: too many rejected commands from 192.0.2.60 (limit 2 a minute)"))
        c = self.client(proxy_v1("192.0.2.60", dport=110))
        self.assertEqual(c.reply()[0][:4], "-ERR")
        c = self.client(proxy_v1("192.0.2.61", dport=110))
        self.assertEqual(c.reply()[0][:3], "+OK")
        self.assertEqual(c.cmd("USER alice")[0][:3], "+OK")
        self.assertEqual(c.cmd("PASS secret")[0][:3], "+OK")


if __name__ == "__main__":
    harness.main()
