# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-smtpd through its real interfaces: sockets passed as systemd passes them, real
clients (Python smtplib, swaks, curl, Postfix's smtp-source), the dialogue byte for byte, and
the spool files field by field. Every bad-input case ends in a clean reply and no stray file."""

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SMTPD = harness.program("emailrelay-smtpd")
DOMAIN = "relay.test"
EHLO_REPLY = [
    "250-relay.test says hello",
    "250-VRFY",
    "250-PIPELINING",
    "250-ENHANCEDSTATUSCODES",
    "250 8BITMIME",
]


class SmtpdTestCase(unittest.TestCase):
    extra_args = []

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="smtpd-test-")
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.daemon = None

    def tearDown(self):
        if self.daemon:
            self.daemon.stop(signal.SIGKILL)
        shutil.rmtree(self.work, ignore_errors=True)

    def start(self, *args, sock=None):
        sock = sock or harness.listening_socket()
        argv = [SMTPD, "--spool-dir", self.spool, "--domain", DOMAIN, *self.extra_args, *args, self.config]
        self.daemon = harness.Daemon(argv, [sock])
        return self.daemon.port

    def client(self):
        c = harness.SmtpClient(self.daemon.port)
        self.addCleanup(c.close)
        return c

    def messages(self):
        return harness.spool_messages(self.spool)

    def spool_files(self):
        return sorted(os.listdir(self.spool))

    def open_data(self, c, ehlo=True):
        """EHLO (optionally), MAIL, RCPT and DATA, each answered as expected: ready for content."""
        if ehlo:
            c.cmd("EHLO x")
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["250 2.1.0 sender <a@b> OK"])
        self.assertEqual(c.cmd("RCPT TO:<c@d>"), ["250 2.1.5 recipient <c@d> OK"])
        self.assertEqual(c.cmd("DATA"), ["354 start mail input -- end with <CRLF>.<CRLF>"])

    def greeted(self):
        c = self.client()
        self.assertEqual(c.reply(), ["220 relay.test -- emailrelay V%s -- Service ready" % version()])
        return c


def version():
    out = subprocess.run([SMTPD, "--version"], capture_output=True, text=True).stdout
    return out.split()[1]


class DialogueTest(SmtpdTestCase):
    def test_dialogue_byte_for_byte(self):
        self.start()
        c = self.greeted()
        self.assertEqual(c.cmd("EHLO client.example"), EHLO_REPLY)
        self.assertEqual(c.cmd("MAIL FROM:<alice@example.com>"), ["250 2.1.0 sender <alice@example.com> OK"])
        self.assertEqual(c.cmd("RCPT TO:<bob@example.org>"), ["250 2.1.5 recipient <bob@example.org> OK"])
        self.assertEqual(c.cmd("RCPT TO:<carol@example.net>"), ["250 2.1.5 recipient <carol@example.net> OK"])
        self.assertEqual(c.cmd("DATA"), ["354 start mail input -- end with <CRLF>.<CRLF>"])
        c.send("From: alice@example.com\r\nSubject: peer test\r\n\r\nHello.\r\n..leading dot line\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        self.assertEqual(c.cmd("RSET"), ["250 2.0.0 state reset"])
        self.assertEqual(c.cmd("NOOP"), ["250 2.0.0 noop"])
        self.assertEqual(c.cmd("VRFY bob@example.org"), ["252 2.5.0 cannot verify but will accept: bob@example.org"])
        self.assertEqual(c.cmd("EXPN list"), ["502 5.5.1 command not implemented"])
        self.assertEqual(c.cmd("HELP"), ["502 5.5.1 command not implemented"])
        self.assertEqual(c.cmd("FROB"), ["500 5.5.1 command unrecognized"])
        self.assertEqual(c.cmd("QUIT"), ["221 2.0.0 OK"])
        self.assertTrue(c.closed())

        m, = self.messages()
        self.assertEqual(m.state, "envelope")
        self.assertEqual(m.fields(), [
            ("X-MailRelay-Format", "#2821.8"), ("X-MailRelay-Content", "unknown"),
            ("X-MailRelay-From", "alice@example.com"), ("X-MailRelay-ToCount", "2"),
            ("X-MailRelay-To-Remote", "bob@example.org"), ("X-MailRelay-To-Remote", "carol@example.net"),
            ("X-MailRelay-Authentication", ""), ("X-MailRelay-Client", "127.0.0.1"),
            ("X-MailRelay-ClientCertificate", ""), ("X-MailRelay-MailFromAuthIn", ""),
            ("X-MailRelay-MailFromAuthOut", ""), ("X-MailRelay-ForwardTo", ""),
            ("X-MailRelay-ForwardToAddress", ""), ("X-MailRelay-ClientAccountSelector", ""),
            ("X-MailRelay-Utf8MailboxNames", "0"), ("X-MailRelay-End", "1")])
        received, _, rest = m.content.partition(b"\r\n")
        self.assertRegex(received.decode(), r"^Received: from client\.example \(\[127\.0\.0\.1\]\) by relay\.test with ESMTP ; "
                                            r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$")
        self.assertEqual(rest, b"From: alice@example.com\r\nSubject: peer test\r\n\r\nHello.\r\n.leading dot line\r\n")

    def test_helo_session_plain_codes(self):
        self.start()
        c = self.greeted()
        self.assertEqual(c.cmd("HELO client.example"), ["250 relay.test says hello"])
        self.assertEqual(c.cmd("MAIL FROM:<>"), ["250 sender <> OK"])
        self.assertEqual(c.cmd("RCPT TO:<postmaster>"), ["250 recipient <postmaster> OK"])
        self.assertEqual(c.cmd("DATA"), ["354 start mail input -- end with <CRLF>.<CRLF>"])
        c.send("Subject: bounce\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 message processed"])
        m, = self.messages()
        self.assertIn(b"X-MailRelay-From: \r\n", m.envelope)
        self.assertIn(b" with SMTP ; ", m.content)

    def test_sequence_and_syntax_errors(self):
        self.start()
        c = self.greeted()
        seq = "503 command out of sequence -- use RSET to resynchronise"
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), [seq])  # before HELO
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("RCPT TO:<a@b>"), ["503 5.5.1 command out of sequence -- use RSET to resynchronise"])
        self.assertEqual(c.cmd("DATA"), ["503 5.5.1 command out of sequence -- use RSET to resynchronise"])
        self.assertEqual(c.cmd("MAIL FROM:a@b"), ["550 5.1.7 missing angle brackets in mailbox name"])
        self.assertEqual(c.cmd("MAIL TO:<a@b>"), ["501 5.5.4 syntax error: MAIL FROM:<address>"])
        self.assertEqual(c.cmd("MAIL FROM:<a@b> FROB=1"), ["555 5.5.4 unsupported parameter: FROB=1"])
        self.assertEqual(c.cmd("MAIL FROM:<a b@c>"), ["553 5.1.7 mailbox name not allowed"])
        self.assertEqual(c.cmd("MAIL FROM:<a@b> BODY=8BITMIME"), ["250 2.1.0 sender <a@b> OK"])
        self.assertEqual(c.cmd("MAIL FROM:<c@d>"), ["503 5.5.1 command out of sequence -- use RSET to resynchronise"])
        self.assertEqual(c.cmd("DATA"), ["554 5.5.1 no valid recipients"])
        self.assertEqual(c.cmd("RCPT TO:<>"), ["553 5.1.3 mailbox name not allowed"])
        self.assertEqual(c.cmd("RCPT TO:<" + "x" * 300 + "@b>"), ["553 5.1.3 mailbox name not allowed"])
        self.assertEqual(c.cmd("RCPT TO:<ok@b>"), ["250 2.1.5 recipient <ok@b> OK"])
        self.assertEqual(c.cmd("DATA"), ["354 start mail input -- end with <CRLF>.<CRLF>"])
        c.send(".\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        m, = self.messages()
        self.assertIn(b"X-MailRelay-Content: 8bit\r\n", m.envelope)

    def test_bare_lf_never_reaches_replies_or_headers(self):
        self.start()
        c = self.greeted()
        self.assertEqual(c.cmd("EHLO host\nX-Injected: yes"), EHLO_REPLY)
        self.assertEqual(c.cmd("VRFY a@b\n250 fake"), ["252 2.5.0 cannot verify but will accept: a@b?250 fake"])
        self.open_data(c, ehlo=False)
        c.send("Subject: x\r\n\r\ny\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        m, = self.messages()
        self.assertTrue(m.content.startswith(b"Received: from host?X-Injected: ([127.0.0.1])"), m.content[:80])

    def test_long_command_line_is_500_and_session_goes_on(self):
        self.start()
        c = self.greeted()
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("NOOP " + "x" * 600), ["500 5.5.2 line too long"])
        self.assertEqual(c.cmd("NOOP " + "x" * 505), ["250 2.0.0 noop"])  # 510 octets: the limit
        self.assertEqual(c.cmd("NOOP"), ["250 2.0.0 noop"])

    def test_long_text_line_rejected_and_nothing_stored(self):
        self.start()
        c = self.greeted()
        self.open_data(c)
        c.send("Subject: long\r\n\r\n" + "y" * 998 + "\r\n" + "z" * 1200 + "\r\nafter\r\n.\r\n")
        self.assertEqual(c.reply(), ["500 5.5.6 message line too long"])
        self.assertEqual(self.spool_files(), [])
        # The session carries on and the next message is fine with a 998-octet line.
        self.open_data(c, ehlo=False)
        c.send("y" * 998 + "\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])

    def test_no_smuggling_bare_lf_and_cr(self):
        """Only CRLF.CRLF ends the data: "\\n.\\n", "\\r.\\r" and "\\n.\\r\\n" are content, and a bare LF
        or a bare CR is stored as a line break so that the forwarder dot-stuffs what follows it."""
        self.start()
        c = self.greeted()
        self.open_data(c)
        c.send("Subject: s\r\n\r\nbefore\n.\nMAIL FROM:<evil@x>\r\nmore\r.\rRCPT\r\nlf-dot\n.\r\nend\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        m, = self.messages()
        body = m.content.split(b"\r\n", 1)[1]
        self.assertEqual(body, b"Subject: s\r\n\r\nbefore\r\n.\r\nMAIL FROM:<evil@x>\r\nmore\r\n.\r\nRCPT\r\nlf-dot\r\n.\r\n"
                               b"end\r\n")
        self.assertEqual(c.cmd("NOOP"), ["250 2.0.0 noop"])

    def test_pipelining_replies_batched(self):
        self.start()
        c = self.greeted()
        c.cmd("EHLO x")
        c.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n")
        # All four replies come back together (RFC 2920), in order: one write, so the first
        # read returns them all (on loopback a write reaches the receive queue whole).
        data = c.sock.recv(65536)
        self.assertEqual(data, b"250 2.1.0 sender <a@b> OK\r\n250 2.1.5 recipient <c@d> OK\r\n"
                               b"250 2.1.5 recipient <e@f> OK\r\n354 start mail input -- end with <CRLF>.<CRLF>\r\n")
        c.send("x\r\n.\r\nRSET\r\nQUIT\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        self.assertEqual(c.reply(), ["250 2.0.0 state reset"])
        self.assertEqual(c.reply(), ["221 2.0.0 OK"])
        self.assertEqual(len(self.messages()), 1)

    def test_disconnect_mid_data_leaves_nothing(self):
        self.start()
        c = self.greeted()
        self.open_data(c)
        c.send("Subject: cut\r\n\r\n" + "partial line\r\n" * 1000)
        c.close()
        self.assertTrue(harness.wait_for(lambda: self.spool_files() == []), self.spool_files())
        # and the server is still serving
        c2 = self.greeted()
        self.assertEqual(c2.cmd("NOOP"), ["250 noop"])


class LimitsTest(SmtpdTestCase):
    def test_size_limit(self):
        self.start("--size", "1000")
        c = self.greeted()
        self.assertIn("250-SIZE 1000", c.cmd("EHLO x"))
        self.assertEqual(c.cmd("MAIL FROM:<a@b> SIZE=1001"), ["552 5.3.4 message size exceeds fixed maximum message size"])
        c.cmd("MAIL FROM:<a@b> SIZE=500")
        c.cmd("RCPT TO:<c@d>")
        c.cmd("DATA")
        c.send("Subject: big\r\n\r\n" + ("z" * 78 + "\r\n") * 20 + ".\r\n")
        self.assertEqual(c.reply(), ["552 5.3.4 message size exceeds fixed maximum message size"])
        self.assertEqual(self.spool_files(), [])
        self.open_data(c, ehlo=False)
        c.send("Subject: small\r\n\r\nok\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])

    def test_recipient_limit(self):
        self.start("--max-recipients", "3")
        c = self.greeted()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@b>")
        for i in range(3):
            self.assertEqual(c.cmd("RCPT TO:<r%d@x>" % i), ["250 2.1.5 recipient <r%d@x> OK" % i])
        self.assertEqual(c.cmd("RCPT TO:<r9@x>"), ["452 4.5.3 too many recipients"])

    def test_idle_timeout(self):
        self.start("--idle-timeout", "1")
        c = self.greeted()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@b>")
        self.assertEqual(c.reply(), ["421 4.4.2 idle timeout, closing connection"])
        self.assertTrue(c.closed())

    def test_session_time_limit(self):
        self.start("--session-timeout", "2")
        c = self.greeted()
        c.cmd("EHLO x")
        deadline = time.monotonic() + 10
        reply = None
        while time.monotonic() < deadline:   # busy all along: not an idle timeout
            reply = c.cmd("NOOP")
            if reply[0].startswith("421"):
                break
            time.sleep(0.2)
        self.assertEqual(reply, ["421 4.4.2 session time limit reached, closing connection"])
        self.assertTrue(c.closed())

    def test_anonymous(self):
        self.start("--anonymous")
        c = self.client()
        self.assertEqual(c.reply(), ["220 greeting"])
        self.assertEqual(c.cmd("EHLO x"), ["250-smtp says hello", "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 8BITMIME"])
        self.assertEqual(c.cmd("VRFY a@b"), ["502 5.5.1 command not implemented"])
        self.open_data(c, ehlo=False)
        c.send("Subject: anon\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        m, = self.messages()
        self.assertEqual(m.content, b"Subject: anon\r\n\r\nx\r\n")   # no Received line

    def test_connections_per_address(self):
        # Loopback is exempt from the per-address limits unless told otherwise.
        self.start("--max-connections-per-address", "2", "--limits-exempt", "none")
        a, b = self.greeted(), self.greeted()
        third = self.client()
        self.assertEqual(third.reply(), ["421 4.7.0 too many connections from your address"])
        self.assertTrue(third.closed())
        a.cmd("QUIT")
        self.assertTrue(a.closed())
        self.assertTrue(harness.wait_for(lambda: self._can_connect()))
        b.cmd("QUIT")

    @unittest.skipUnless(shutil.which("prlimit"), "prlimit is not installed")
    def test_out_of_file_descriptors_pauses_accepting(self):
        """At the fd limit the daemon stops accepting for a moment instead of spinning on a
        readable listener, warns once, and serves again when descriptors are free."""
        sock = harness.listening_socket()
        argv = ["prlimit", "--nofile=40:40", SMTPD, "--spool-dir", self.spool, "--domain", DOMAIN, self.config]
        self.daemon = harness.Daemon(argv, [sock])
        clients = []
        for _ in range(60):
            c = harness.SmtpClient(self.daemon.port, timeout=0.5)
            clients.append(c)
        greeted = 0
        for c in clients:
            try:
                if c.reply()[0].startswith("220 "):
                    greeted += 1
            except (OSError, EOFError):
                pass
        self.assertGreater(greeted, 10)
        self.assertLess(greeted, 40)
        def warnings():
            return self.daemon.output().count("cannot accept more connections")
        self.assertTrue(harness.wait_for(lambda: warnings() >= 1), self.daemon.output()[-2000:])
        # Accepting is retried every second; a retry that warned again would show by now. This
        # waits out the interval under test, not another process: load can only lengthen it.
        time.sleep(1.5)
        self.assertEqual(warnings(), 1, self.daemon.output()[-2000:])
        for c in clients:
            c.close()
        self.assertTrue(harness.wait_for(self._can_connect, timeout=10))
        self.assertIn("accepting connections again", self.daemon.output())

    def _can_connect(self):
        c = harness.SmtpClient(self.daemon.port)
        try:
            return c.reply()[0].startswith("220 ")
        finally:
            c.close()


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("ip"), "needs root and iproute2 for a test network")
class RemoteClientsTest(SmtpdTestCase):
    """Two test hosts in network namespaces of the test's own, joined by a veth pair: the
    relay at 192.0.2.1 and a client at the TEST-NET address 192.0.2.10, which is not a local
    address. Refused unless --remote-clients. (Fixed ports are private to the namespaces.)"""

    def setUp(self):
        super().setUp()
        tag = os.getpid() % 100000
        self.server_ns, self.client_ns = "ers%d" % tag, "erc%d" % tag
        veth = "erv%d" % tag
        cmds = [["ip", "netns", "add", self.server_ns], ["ip", "netns", "add", self.client_ns],
                ["ip", "link", "add", veth, "netns", self.server_ns, "type", "veth", "peer", "name", veth + "p",
                 "netns", self.client_ns]]
        for ns, dev, addr in ((self.server_ns, veth, "192.0.2.1/24"), (self.client_ns, veth + "p", "192.0.2.10/24")):
            cmds += [["ip", "-n", ns, "addr", "add", addr, "dev", dev], ["ip", "-n", ns, "link", "set", dev, "up"],
                     ["ip", "-n", ns, "link", "set", "lo", "up"]]
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True)

    def tearDown(self):
        super().tearDown()
        for ns in (self.server_ns, self.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def start_in_server_ns(self, *args):
        argv = ["ip", "netns", "exec", self.server_ns, SMTPD, "--spool-dir", self.spool, "--domain", DOMAIN,
                "--interface", "192.0.2.1", "--port", "2525", *args, self.config]
        self.daemon = harness.Daemon(argv)
        self.assertTrue(harness.wait_for(lambda: "smtp server on port 2525" in self.daemon.output()), self.daemon.output())

    def remote_greeting(self):
        script = ("import socket\n"
                  "s = socket.create_connection(('192.0.2.1', 2525), timeout=10)\n"
                  "s.settimeout(10)\n"
                  "print(s.recv(4096).decode().strip())\n")
        p = subprocess.run(["ip", "netns", "exec", self.client_ns, "/usr/bin/python3", "-c", script],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def test_remote_refused_then_allowed(self):
        self.start_in_server_ns()
        self.assertEqual(self.remote_greeting(), "554 5.7.1 remote clients are not allowed")
        self.assertIn("configured to reject non-local smtp connection: connection from 192.0.2.10 rejected",
                      self.daemon.output())   # E-MailRelay's words, then ours
        self.daemon.stop()
        self.start_in_server_ns("--remote-clients")
        self.assertTrue(self.remote_greeting().startswith("220 relay.test "))


class NotSmtpTest(SmtpdTestCase):
    """A web page can have a browser POST an SMTP dialogue to a relay's port (2525, say): the
    HTTP lines come first, then the commands, one a line. Such a client is dropped at its
    first HTTP line, or before, if it talks before the greeting; nothing is stored."""

    DIALOGUE = b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: web\r\n\r\nhi\r\n.\r\nQUIT\r\n"

    def test_http_lines_drop_the_connection(self):
        self.start()
        for first in ("POST / HTTP/1.1", "GET /index.html HTTP/1.0", "CONNECT relay.test:25 HTTP/1.1",
                      "Host: relay.test:2525", "User-Agent: Mozilla/5.0"):
            c = self.greeted()
            c.send(first.encode() + b"\r\n" + self.DIALOGUE)
            self.assertEqual(c.reply(), ["554 non-SMTP command, closing connection"], first)
            self.assertTrue(c.closed(), first)
            self.assertTrue(harness.wait_for(lambda: 'non-SMTP command from 127.0.0.1: "%s": disconnecting' % first
                                             in self.daemon.output()), self.daemon.output())
        self.assertEqual(self.messages(), [])
        c = self.greeted()   # SMTP commands with colons are still SMTP
        self.open_data(c)

    def test_talking_before_the_greeting(self):
        """The client's bytes are in the socket when the daemon accepts it (queued on the
        listening socket before the daemon starts), as a script that does not wait sends them."""
        sock = harness.listening_socket()
        early = socket.create_connection(sock.getsockname(), timeout=20)
        self.addCleanup(early.close)
        early.sendall(self.DIALOGUE)
        self.start(sock=sock)
        c = harness.SmtpClient.__new__(harness.SmtpClient)
        c.sock, c.buf = early, b""
        self.assertEqual(c.reply(), ["554 protocol error: talking before the greeting, closing connection"])
        self.assertTrue(c.closed())
        self.assertTrue(harness.wait_for(lambda: '127.0.0.1 sent before the greeting: "EHLO x": disconnecting'
                                         in self.daemon.output()), self.daemon.output())
        self.assertEqual(self.messages(), [])
        self.greeted()   # an SMTP client that waits is served

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_curl_post_sends_nothing(self):
        """The attack itself, with a real HTTP client: curl POSTs the dialogue as its body."""
        port = self.start()
        p = subprocess.run(["curl", "-s", "-m", "20", "--data-binary", "@-", "-H", "Content-Type: text/plain",
                            "http://127.0.0.1:%d/" % port], input=self.DIALOGUE, capture_output=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)   # no HTTP answer, the connection closed
        self.assertTrue(harness.wait_for(lambda: "disconnecting" in self.daemon.output()), self.daemon.output())
        self.assertRegex(self.daemon.output(), r'(non-SMTP command from 127.0.0.1: "POST / HTTP/1.1"|'
                                               r'127.0.0.1 sent before the greeting: "POST / HTTP/1.1")')
        self.assertEqual(self.messages(), [])
        self.assertNotIn("message processed", p.stdout.decode(errors="replace"))


class NetFilterServer(harness.ScriptedServer):
    """E-MailRelay's net: filter protocol: a content path in, "ok" out, a line each way for as
    long as the connection lasts (or, with one_shot, one request a connection)."""

    def __init__(self, one_shot=False):
        super().__init__()
        self.one_shot, self.connections, self.requests = one_shot, 0, []

    def session(self, conn, f):
        self.connections += 1
        for line in f:
            self.requests.append(line.decode().strip())
            conn.sendall(b"ok\n")
            if self.one_shot:
                return


class FilterTest(SmtpdTestCase):
    def test_net_filter_connection_is_kept(self):
        """As E-MailRelay keeps its one: the net: filter's connection serves message after message,
        in one client session and the next; a filter server that hangs up after each answer
        gets a new connection each time, and no message suffers for it."""
        for one_shot, connections in ((False, 1), (True, 4)):
            server = NetFilterServer(one_shot)
            server.start()
            self.addCleanup(server.close)
            if self.daemon:
                self.daemon.stop()
            self.start("--filter", "net:127.0.0.1:%d" % server.port)
            with smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=20) as smtp:
                for i in range(3):
                    self.assertEqual(smtp.sendmail("a@b", ["c@d"], b"Subject: %d\r\n\r\nx\r\n" % i), {})
            with smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=20) as smtp:
                self.assertEqual(smtp.sendmail("a@b", ["c@d"], b"Subject: next\r\n\r\nx\r\n"), {})
            self.assertEqual(len(server.requests), 4, server.requests)
            self.assertTrue(all(r.endswith(".content") for r in server.requests), server.requests)
            self.assertEqual(server.connections, connections, one_shot)
        self.assertEqual(len([m for m in self.messages() if m.state == "envelope"]), 8)

    def script(self, name, body):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, 0o755)
        return path

    def send_one(self, c):
        self.open_data(c)
        c.send("Subject: filtered\r\n\r\nbody\r\n.\r\n")
        return c.reply()

    def test_filter_rejects_with_its_code_and_nothing_is_kept(self):
        f = self.script("reject.sh", 'echo noise; echo "<<550 go away>>"; echo "[[extra diagnostic]]"; exit 1\n')
        self.start("--filter", f)
        self.assertEqual(self.send_one(self.greeted()), ["550 5.7.1 go away"])
        self.assertEqual(self.spool_files(), [])
        self.assertIn("rejected by filter: [extra diagnostic]", self.daemon.output())

    def test_filter_without_code_is_452(self):
        f = self.script("tmp.sh", 'echo "<<temporary problem>>"; exit 2\n')
        self.start("--filter", f)
        self.assertEqual(self.send_one(self.greeted()), ["452 4.7.1 temporary problem"])
        self.assertEqual(self.spool_files(), [])

    def test_filter_edits_content_and_sees_new_envelope(self):
        f = self.script("edit.sh", 'case "$2" in *.envelope.new) ;; *) exit 9;; esac\n'
                                   'sed "s/body/edited by filter/" "$1" > "$1.tmp" && mv "$1.tmp" "$1"\n')
        self.start("--filter", f)
        self.assertEqual(self.send_one(self.greeted()), ["250 2.0.0 message processed"])
        m, = self.messages()
        self.assertTrue(m.content.endswith(b"\r\nedited by filter\r\n"))

    def test_filter_abandon_keeps_what_the_filter_left(self):
        # exit:100 leaves the files: committed, as E-MailRelay does; nothing is lost.
        self.start("--filter", "exit:100")
        self.assertEqual(self.send_one(self.greeted()), ["250 2.0.0 message processed"])
        self.assertEqual([m.state for m in self.messages()], ["envelope"])
        # A filter that removed the message itself: nothing stays.
        self.daemon.stop()
        for f in os.listdir(self.spool):
            os.unlink(os.path.join(self.spool, f))
        gone = self.script("gone.sh", 'rm -f "$1" "$2"; exit 100\n')
        self.start("--filter", gone)
        self.assertEqual(self.send_one(self.greeted()), ["250 2.0.0 message processed"])
        self.assertEqual(self.spool_files(), [])

    def test_copy_pop_gives_each_maildrop_its_envelope(self):
        """The seed's POP-by-name use: each sub-directory gets the envelope, the content stays
        in the main spool for them all, and nothing is left to forward."""
        for user in ("alice", "bob", "postmaster"):
            os.mkdir(os.path.join(self.spool, user))
        self.start("--filter", "copy:pop")
        self.assertEqual(self.send_one(self.greeted()), ["250 2.0.0 message processed"])
        files = self.spool_files()
        content = [f for f in files if f.endswith(".content")]
        self.assertEqual(len(content), 1)
        self.assertEqual([f for f in files if ".envelope" in f], [])
        mid = content[0][:-len(".content")]
        for user in ("alice", "bob"):
            self.assertEqual(os.listdir(os.path.join(self.spool, user)), [mid + ".envelope"])
        self.assertEqual(os.listdir(os.path.join(self.spool, "postmaster")), [])
        with open(os.path.join(self.spool, content[0]), "rb") as f:
            self.assertTrue(f.read().endswith(b"\r\nbody\r\n"))

    def test_msgid_filter(self):
        self.start("--filter", "msgid:relay.test")
        self.assertEqual(self.send_one(self.greeted()), ["250 2.0.0 message processed"])
        m, = self.messages()
        lines = m.content.split(b"\r\n")
        self.assertTrue(lines[0].startswith(b"Received: "))
        self.assertRegex(lines[1].decode(), r"^Message-ID: <[^@<>]+@relay\.test>$")

    def test_filter_timeout(self):
        f = self.script("slow.sh", "sleep 30\n")
        self.start("--filter", f, "--filter-timeout", "1")
        self.assertEqual(self.send_one(self.greeted()), ["452 4.7.1 error"])
        self.assertEqual(self.spool_files(), [])


class VerifierTest(SmtpdTestCase):
    """--address-verifier with a real program, E-MailRelay's exit-code protocol (reference 5.4)."""

    VERIFIER = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/verifier.args"
lower=$(echo "$1" | tr A-Z a-z)
case "$lower" in
  postmaster@*) echo "Post Master"; echo "postmaster"; exit 0 ;;
  *@local.test) echo "Local User"; echo "${1%%@*}"; exit 0 ;;
  *@example.com) echo ""; echo "$1" | tr A-Z a-z; exit 1 ;;
  busy@*) echo "try again later"; echo "database busy"; exit 3 ;;
  evil@*) exit 100 ;;
  *) echo "no such user here"; echo "unknown"; exit 2 ;;
esac
"""

    def setUp(self):
        super().setUp()
        self.script = os.path.join(self.work, "verify.sh")
        with open(self.script, "w") as f:
            f.write(self.VERIFIER)
        os.chmod(self.script, 0o755)

    def test_rcpt_and_vrfy(self):
        self.start("--address-verifier", self.script)
        c = self.greeted()
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("VRFY postmaster@relay.test"), ["250 2.1.5 Post Master"])
        self.assertEqual(c.cmd("VRFY Someone@Example.COM"), ["252 2.5.0 cannot verify but will accept: Someone@Example.COM"])
        self.assertEqual(c.cmd("VRFY nobody@elsewhere.test"), ["550 5.1.1 no such user here"])
        self.assertEqual(c.cmd("MAIL FROM:<s@example.org>"), ["250 2.1.0 sender <s@example.org> OK"])
        self.assertEqual(c.cmd("RCPT TO:<bob@local.test>"), ["250 2.1.5 recipient <bob@local.test>  OK"])
        self.assertEqual(c.cmd("RCPT TO:<Carol@Example.COM>"), ["250 2.1.5 recipient <Carol@Example.COM> OK"])
        self.assertEqual(c.cmd("RCPT TO:<nobody@elsewhere.test>"), ["550 5.1.1 no such user here"])
        self.assertEqual(c.cmd("RCPT TO:<busy@example.net>"), ["450 4.1.1 try again later"])
        self.assertEqual(c.cmd("DATA"), ["354 start mail input -- end with <CRLF>.<CRLF>"])
        c.send("Subject: v\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        m, = self.messages()
        self.assertIn(b"X-MailRelay-ToCount: 2\r\nX-MailRelay-To-Local: bob\r\n"
                      b"X-MailRelay-To-Remote: carol@example.com\r\n", m.envelope)
        with open(os.path.join(self.work, "verifier.args")) as f:
            args = f.read().splitlines()
        # recipient, from, peer ip:port, domain, mechanism, auth id (empty)
        self.assertRegex(args[3], r"^bob@local\.test s@example\.org 127\.0\.0\.1:\d+ relay\.test none\s*$")
        # abort: the connection is dropped
        c.cmd("MAIL FROM:<s@example.org>")
        c.send("RCPT TO:<evil@example.net>\r\n")
        self.assertTrue(c.closed())
        self.assertIn(b"X-MailRelay", m.envelope)

    def test_exit_verifier_accepts_all_as_remote(self):
        self.start("--address-verifier", "exit:0")
        c = self.greeted()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<s@example.org>")
        self.assertEqual(c.cmd("RCPT TO:<anyone@anywhere.test>"), ["250 2.1.5 recipient <anyone@anywhere.test> OK"])


GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@unittest.skipUnless(shutil.which("spamd") or os.path.exists("/usr/sbin/spamd"),
                     "SpamAssassin's spamd is not installed (scripts/deps --test installs it)")
class SpamdTest(SmtpdTestCase):
    """spam: and spam-edit: against the real spamd, on a unix socket (no fixed port)."""

    @classmethod
    def setUpClass(cls):
        cls.spamd_dir = tempfile.mkdtemp(prefix="spamd-")
        os.chmod(cls.spamd_dir, 0o777)
        cls.sock = os.path.join(cls.spamd_dir, "spamd.sock")
        spamd = shutil.which("spamd") or "/usr/sbin/spamd"
        cls.spamd = subprocess.Popen([spamd, "--local", "--nouser-config", "--syslog=stderr", "--max-children=2",
                                      "--socketpath=" + cls.sock, "--socketmode=0666", "--username=nobody",
                                      "--pidfile=" + os.path.join(cls.spamd_dir, "pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Loading the rules takes a few seconds.
        if not harness.wait_for(lambda: os.path.exists(cls.sock), timeout=120, interval=0.2):
            cls.spamd.kill()
            raise RuntimeError("spamd did not create its socket within 120 s")

    @classmethod
    def tearDownClass(cls):
        cls.spamd.terminate()
        try:
            cls.spamd.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cls.spamd.kill()
        shutil.rmtree(cls.spamd_dir, ignore_errors=True)

    def send(self, body):
        c = self.greeted()
        self.open_data(c)
        c.send("From: a@b\r\nSubject: spam test\r\n\r\n" + body + "\r\n.\r\n")
        return c.reply()

    def test_spam_rejects_gtube_and_passes_ham(self):
        self.start("--filter", "spam:" + self.sock)
        # E-MailRelay's spam: gives no code, hence its 452 with "rejected".
        self.assertEqual(self.send(GTUBE), ["452 4.7.1 rejected"])
        self.assertEqual(self.spool_files(), [])
        self.assertRegex(self.daemon.output(), r"rejected by filter: \[spam: True ; [0-9.]+ / [0-9.]+\]")
        self.assertEqual(self.send("An ordinary message about the weather."), ["250 2.0.0 message processed"])
        self.assertEqual(len(self.messages()), 1)

    def test_spam_edit_marks_and_passes(self):
        self.start("--filter", "spam-edit:" + self.sock)
        self.assertEqual(self.send(GTUBE), ["250 2.0.0 message processed"])
        m, = self.messages()
        head = m.content.split(b"\r\n\r\n", 1)[0]
        self.assertIn(b"X-Spam-Flag: YES", head)
        self.assertIn(b"X-Spam-Status: Yes", head)
        self.assertEqual([f for f in self.spool_files() if f.endswith(".tmp")], [])


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare"), "needs root for a private tmpfs spool")
class FullDiskTest(SmtpdTestCase):
    """A small tmpfs as the spool, in a private mount namespace of the daemon's own."""

    def start_on_tmpfs(self, size, *args):
        sock = harness.listening_socket()
        argv = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                'mount -t tmpfs -o size="$0" tmpfs "$1" && shift && exec "$@"', size, self.spool,
                SMTPD, "--spool-dir", self.spool, "--domain", DOMAIN, *args, self.config]
        self.daemon = harness.Daemon(argv, [sock])
        # The spool as the daemon sees it, through its mount namespace.
        self.inside = "/proc/%d/root%s" % (self.daemon.proc.pid, self.spool)
        c = self.greeted()
        return c

    def inside_files(self):
        return sorted(os.listdir(self.inside))

    def test_full_disk_452_nothing_kept_then_recovers(self):
        c = self.start_on_tmpfs("2m", "--min-free-space", "0")
        self.open_data(c)
        line = "x" * 76 + "\r\n"
        c.send("Subject: too big for the disk\r\n\r\n" + line * (3 * 1024 * 1024 // len(line)) + ".\r\n")
        self.assertEqual(c.reply(), ["452 4.3.1 insufficient system storage"])
        self.assertEqual(self.inside_files(), [])
        self.assertIn("No space left on device", self.daemon.output())
        # The space is back: the next message is stored.
        c.cmd("RSET")
        self.open_data(c, ehlo=False)
        c.send("Subject: small\r\n\r\nfits\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        self.assertEqual(len(self.inside_files()), 2)

    def test_floor_holds_during_the_data(self):
        """--min-free-space is kept while a message comes in, not only at MAIL: one client's
        6 MB message on an 8 MiB spool with a 4 MiB floor gets 452 4.3.1 and leaves nothing,
        and the space is there again for the next, small one."""
        c = self.start_on_tmpfs("8m", "--min-free-space", str(4 * 1024 * 1024))
        self.open_data(c)
        line = "y" * 76 + "\r\n"
        c.send("Subject: bigger than the floor allows\r\n\r\n" + line * (6 * 1000 * 1000 // len(line)) + ".\r\n")
        self.assertEqual(c.reply(), ["452 4.3.1 insufficient system storage"])
        self.assertEqual(self.inside_files(), [])
        self.assertIn("spool space fell below --min-free-space (4194304 bytes) during the message: discarded",
                      self.daemon.output())
        c.cmd("RSET")
        self.open_data(c, ehlo=False)
        c.send("Subject: small\r\n\r\nfits\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        self.assertEqual(len(self.inside_files()), 2)

    def test_low_space_refuses_mail(self):
        c = self.start_on_tmpfs("2m", "--min-free-space", str(8 * 1024 * 1024))
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["452 4.3.1 insufficient system storage"])
        self.assertEqual(self.inside_files(), [])


class ChunkingTest(SmtpdTestCase):
    def test_bdat(self):
        self.start("--server-smtp-config", "+chunking")
        c = self.greeted()
        ehlo = c.cmd("EHLO x")
        self.assertIn("250-CHUNKING", ehlo)
        self.assertIn("250-BINARYMIME", ehlo)
        c.cmd("MAIL FROM:<a@b> BODY=BINARYMIME")
        c.cmd("RCPT TO:<c@d>")
        self.assertEqual(c.cmd("DATA"), ["503 5.5.1 invalid data command with binarymime"])
        part1 = b"Subject: chunks\r\n\r\n\x00binary\r\n.\r\n"
        c.send(b"BDAT %d\r\n" % len(part1) + part1)
        self.assertEqual(c.reply(), ["250 2.0.0 %d octets received" % len(part1)])
        part2 = b"tail without newline"
        c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        m, = self.messages()
        self.assertEqual(m.content.split(b"\r\n", 1)[1], part1 + part2)
        self.assertIn(b"X-MailRelay-Content: binarymime\r\n", m.envelope)

    def test_bdat_text_is_canonical(self):
        """BDAT without BINARYMIME carries text lines: bare CR and bare LF are stored as CRLF,
        a CRLF split between two chunks stays one, and a CR ending the last chunk is a line
        end; BINARYMIME octets (above) are kept as they came."""
        self.start("--server-smtp-config", "+chunking")
        c = self.greeted()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@b>")
        c.cmd("RCPT TO:<c@d>")
        for chunk, last in ((b"Subject: t\r\n\r\na\r.\rb\n.\nc\r", False), (b"\nd\r", False), (b"e\r", True)):
            c.send(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)
            c.reply()
        m, = self.messages()
        self.assertEqual(m.content.split(b"\r\n", 1)[1], b"Subject: t\r\n\r\na\r\n.\r\nb\r\n.\r\nc\r\nd\r\ne\r\n")


class ProcessTest(SmtpdTestCase):
    def test_sigterm_drains(self):
        """SIGTERM: idle sessions get 421 at once; a transaction in progress may finish and its
        message is stored; then the daemon exits 0."""
        self.start()
        idle = self.greeted()
        busy = self.greeted()
        self.open_data(busy)
        busy.send("Subject: in flight\r\n\r\n")
        self.daemon.proc.send_signal(signal.SIGTERM)
        self.assertEqual(idle.reply(), ["421 service shutting down"])
        busy.send("last words\r\n.\r\n")
        self.assertEqual(busy.reply(), ["250 2.0.0 message processed"])
        self.assertEqual(busy.reply(), ["421 4.3.2 service shutting down"])
        self.assertEqual(self.daemon.proc.wait(timeout=20), 0)
        self.assertEqual(len(self.messages()), 1)
        self.daemon = None

    def test_sd_notify_ready_status_watchdog(self):
        """The service manager's protocol, through a real notify socket: READY=1 once the
        sockets are adopted, STATUS= with figures, WATCHDOG=1 when WatchdogSec= is set."""
        path = os.path.join(self.work, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(path)
        notify.settimeout(20)
        self.addCleanup(notify.close)
        sock = harness.listening_socket()
        argv = [SMTPD, "--spool-dir", self.spool, "--domain", DOMAIN, self.config]
        self.daemon = harness.Daemon(argv, [sock], env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        # WATCHDOG_PID must be the daemon's: LISTEN_PID's wrapper exports it the same way.
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(m.startswith("READY=1") for m in seen):
            seen.append(notify.recv(4096).decode())
        self.assertTrue(any("READY=1" in m for m in seen), seen)
        c = self.greeted()
        self.open_data(c)
        c.send("Subject: x\r\n\r\ny\r\n.\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 message processed"])
        watchdog = status = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (watchdog and status):
            m = notify.recv(4096).decode()
            watchdog = watchdog or ("WATCHDOG=1" in m)
            if "STATUS=" in m and "1 accepted" in m:
                status = m
        self.assertTrue(watchdog, "no WATCHDOG=1")
        self.assertRegex(status, r"STATUS=1 session, 1 accepted, 0 rejected, commit latency \d+ ms")

    def test_accept_yes_serves_one_connection(self):
        listener = harness.listening_socket()
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        listener.close()
        argv = [SMTPD, "--spool-dir", self.spool, "--domain", DOMAIN, self.config]
        self.daemon = harness.Daemon(argv, [conn], names=["connection"])
        conn.close()
        c = harness.SmtpClient.__new__(harness.SmtpClient)
        c.sock, c.buf = client, b""
        c.sock.settimeout(20)
        self.assertTrue(c.reply()[0].startswith("220 relay.test"))
        c.cmd("QUIT")
        self.assertEqual(self.daemon.proc.wait(timeout=20), 0)
        self.daemon = None

    def test_bind_port_itself_and_bad_port_exit_2(self):
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--port", "99999", self.config],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--port", p.stderr)
        busy = harness.listening_socket()
        port = busy.getsockname()[1]
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--interface", "127.0.0.1", "--port", str(port), self.config],
                           capture_output=True, text=True, timeout=20)
        busy.close()
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot listen on 127.0.0.1 port %d: Address already in use" % port, p.stderr)

    def test_unsupported_options_refused(self):
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--delivery-dir", self.spool, self.config],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn("option --delivery-dir is not supported by this version", p.stderr)
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--dnsbl", "zen.example", self.config],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--dnsbl needs --remote-clients", p.stderr)
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--server-tls", self.config],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--server-tls needs --server-tls-certificate", p.stderr)
        # E-MailRelay's forms this relay does not have yet: refused by name, never half-used.
        for args, error in ((["--interface", "eth0"], "--interface eth0: not an IP address or an absolute path"),
                            (["--interface", "fd#3"], "--interface fd#3: not an IP address or an absolute path"),
                            (["--filter", "deliver:"], 'filter "deliver:" is not supported yet'),
                            (["--filter", "split:"], 'filter "split:" is not supported yet'),
                            (["--address-verifier", "account:"], 'address verifier "account:" is not supported yet')):
            p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--port", "0", *args, self.config],
                               capture_output=True, text=True, timeout=20)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(error, p.stderr)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)

    def test_config_file_and_errors(self):
        with open(self.config, "w") as f:
            f.write("# comment\ndomain conf.example\nfrobnicate yes\n")
        p = subprocess.run([SMTPD, "--spool-dir", self.spool, self.config], capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("%s:3: unknown option: frobnicate" % self.config, p.stderr)
        with open(self.config, "w") as f:
            f.write("domain conf.example\nforward-to 192.0.2.1:25\n")  # forward-to is the forwarder's
        self.start()
        c = self.client()
        self.assertTrue(c.reply()[0].startswith("220 relay.test "))  # the command line wins


class PeersTest(SmtpdTestCase):
    def test_smtplib(self):
        self.start()
        with smtplib.SMTP("127.0.0.1", self.daemon.port, local_hostname="py.example", timeout=20) as s:
            refused = s.sendmail("alice@example.com", ["bob@example.org", "carol@example.net"],
                                 b"Subject: smtplib\r\n\r\nHello from smtplib.\r\n.leading dot\r\n")
            self.assertEqual(refused, {})
        m, = self.messages()
        self.assertEqual(m.recipients(), ["bob@example.org", "carol@example.net"])
        self.assertTrue(m.content.endswith(b"\r\nHello from smtplib.\r\n.leading dot\r\n"))
        self.assertIn(b"Received: from py.example ([127.0.0.1]) by relay.test with ESMTP ; ", m.content)

    @unittest.skipUnless(shutil.which("swaks"), "swaks is not installed (scripts/deps --test installs it)")
    def test_swaks(self):
        self.start()
        p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.daemon.port), "--from", "s@example.com",
                            "--to", "r@example.org", "--header", "Subject: swaks test", "--body", "swaks body",
                            "--pipeline"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        m, = self.messages()
        self.assertEqual(m.recipients(), ["r@example.org"])
        self.assertIn(b"Subject: swaks test", m.content)

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_curl(self):
        self.start()
        msg = os.path.join(self.work, "mail.txt")
        with open(msg, "wb") as f:
            f.write(b"Subject: curl test\r\n\r\nfrom curl\r\n")
        p = subprocess.run(["curl", "-sS", "smtp://127.0.0.1:%d/curl.example" % self.daemon.port, "--mail-from", "c@example.com",
                            "--mail-rcpt", "r1@example.org", "--mail-rcpt", "r2@example.org", "--upload-file", msg],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        m, = self.messages()
        self.assertEqual(m.recipients(), ["r1@example.org", "r2@example.org"])
        self.assertTrue(m.content.endswith(b"\r\nfrom curl\r\n"))

    @unittest.skipUnless(shutil.which("smtp-source") or os.path.exists("/usr/sbin/smtp-source"),
                         "Postfix's smtp-source is not installed (scripts/deps --test installs postfix)")
    def test_smtp_source_many_sessions(self):
        """Postfix's load generator: 20 concurrent sessions, pipelined, 500 messages; every one
        stored, each exactly once, with its recipient."""
        self.start()
        src = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
        p = subprocess.run([src, "-s", "20", "-m", "500", "-l", "4096", "-f", "from@example.com", "-t", "to@example.org",
                            "127.0.0.1:%d" % self.daemon.port], capture_output=True, text=True, timeout=240)
        self.assertEqual(p.returncode, 0, p.stderr)
        msgs = self.messages()
        self.assertEqual(len(msgs), 500)
        self.assertEqual(len({m.id for m in msgs}), 500)
        for m in msgs:
            self.assertEqual(m.recipients(), ["to@example.org"])
            self.assertEqual(m.state, "envelope")
            self.assertGreater(len(m.content), 4096)
        self.assertEqual([f for f in self.spool_files() if not f.endswith((".content", ".envelope"))], [])


if __name__ == "__main__":
    harness.main()
