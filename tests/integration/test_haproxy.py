# SPDX-License-Identifier: GPL-3.0-or-later
"""Scale-out behind the real HAProxy, as docs/scale-out.md describes it: two emailrelay-smtpd
instances, each with its own spool, behind HAProxy in TCP mode with the PROXY protocol (v2 on
one frontend, v1 on the other, both to the same relay listeners). The test builds two hosts of
its own in network namespaces, joined by a veth pair: a "client" host at the TEST-NET addresses
192.0.2.10 and 192.0.2.11, and a "relay" host at 192.0.2.1, where HAProxy listens and the relays
listen on 127.0.0.1. (Fixed ports are fine: both namespaces are private to the test.)

Asserted: the relays police and record the client's real address, not HAProxy's; a connection
without a header is never greeted; every acknowledged message is stored exactly once across the
two spools; a relay killed mid-run loses nothing; a drained relay gets nothing and stops
cleanly; per-address limits count the real client address while HAProxy's health checks, from
loopback, are exempt; the guide shows the configuration tested here; an smtps listener reads the
header before the TLS handshake; pop3d behind a tcp-check backend polices and logs POP3 clients
by their own address."""

import json
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
HAPROXY = "/usr/sbin/haproxy"
DOMAIN = "relay.test"
RELAY_ADDR = "192.0.2.1"
CLIENT_ADDRS = ("192.0.2.10", "192.0.2.11")
PORT_V2, PORT_V1 = 25, 2525                # HAProxy's frontends: send-proxy-v2 and send-proxy
RELAY_PORTS = (2601, 2602)                 # the two relays, on 127.0.0.1 in the relay namespace


def _have_ip_netns():
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if not shutil.which("ip"):
        return "needs iproute2 (ip)"
    p = subprocess.run(["ip", "netns", "list"], capture_output=True)
    return None if p.returncode == 0 else "ip netns is unavailable: " + p.stderr.decode(errors="replace").strip()


SKIP_REASON = _have_ip_netns()


# The HAProxy configuration of docs/scale-out.md, word for word (GuideConfigTest checks it), with
# the values the guide gives in GUIDE_VALUES. The test logs to standard output, checks more often,
# and adds HAPROXY_CONFIG_V1, the same pair with PROXY protocol version 1.
HAPROXY_CONFIG = """\
global
    log {log}
    stats socket {stats} mode 660 level admin
    maxconn 4096

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    timeout check 5s
    retries 3
    option redispatch

frontend smtp
    bind {bind_v2}
    default_backend relays

backend relays
    balance {balance}
    option smtpchk EHLO lb.example.net
    default-server check inter {inter} fall 2 rise 2 {send_proxy_v2} {check_send_proxy}
    server relay1 {relay1}
    server relay2 {relay2}
"""

HAPROXY_CONFIG_V1 = """
frontend smtp-v1
    bind {bind_v1}
    default_backend relays-v1

backend relays-v1
    balance {balance}
    option smtpchk EHLO lb.example.net
    default-server check inter {inter} fall 2 rise 2 {send_proxy_v1} {check_send_proxy}
    server relay1 {relay1}
    server relay2 {relay2}
"""

GUIDE_VALUES = dict(log="/dev/log local0", stats="/run/haproxy/admin.sock", bind_v2=":25", balance="roundrobin",
                    inter="2s", send_proxy_v2="send-proxy-v2", check_send_proxy="check-send-proxy",
                    relay1="10.0.0.11:25", relay2="10.0.0.12:25")

# Runs in the client namespace: sends numbered messages through HAProxy from several threads,
# each thread from one source address and to one frontend, a few messages a session. Like a
# real MTA it sends a message again after a 4xx reply or a lost connection. It records, per
# message, the address and frontend of the attempt that got 250, and how many attempts were
# cut off after the message's data had been sent (those alone may have left a second copy).
CLIENT = r"""
import json, smtplib, sys, threading, time
cfg = json.loads(sys.argv[1])
todo = list(range(cfg["count"]))
lock = threading.Lock()
acked, failed, errors = {}, {}, []
deadline = time.monotonic() + cfg["deadline"]

def body(n):
    return ("From: <sender@client.test>\r\nTo: <rcpt@relay.test>\r\nSubject: haproxy test %d\r\n"
            "Message-Id: <%d.haproxy-test@client.test>\r\n\r\nmessage %d\r\n" % (n, n, n))

def worker(i):
    source = cfg["sources"][i % len(cfg["sources"])]
    port = cfg["ports"][(i // len(cfg["sources"])) % len(cfg["ports"])]
    mine = []        # [n, attempts, uncertain]
    conn = None
    sent_in_session = 0
    while time.monotonic() < deadline:
        if not mine:
            with lock:
                if not todo:
                    break
                mine.append([todo.pop(0), 0, 0])
        item = mine[0]
        try:
            if conn is None:
                conn = smtplib.SMTP(cfg["host"], port, source_address=(source, 0), timeout=30)
                conn.ehlo("client.test")
                sent_in_session = 0
            item[1] += 1
            code, msg = conn.mail("sender@client.test")
            if code == 250:
                code, msg = conn.rcpt("rcpt@relay.test")
            if code == 250:
                try:
                    code, msg = conn.data(body(item[0]))
                except smtplib.SMTPDataError as e:
                    code, msg = e.smtp_code, e.smtp_error
                except OSError:
                    item[2] += 1      # the data may have been committed without our seeing the 250
                    raise
            if code == 250:
                with lock:
                    acked[item[0]] = {"source": source, "port": port, "attempts": item[1], "uncertain": item[2]}
                mine.pop(0)
                sent_in_session += 1
                if sent_in_session >= cfg["per_session"]:
                    conn.quit()
                    conn = None
            elif 400 <= code < 500:
                errors.append("%d %s" % (code, msg))
                conn.rset()
                time.sleep(0.05)
            else:
                with lock:
                    failed[item[0]] = "%d %s" % (code, msg)
                mine.pop(0)
                conn.rset()
        except (OSError, EOFError) as e:      # smtplib's exceptions are OSErrors
            with lock:
                errors.append("%s: %s" % (type(e).__name__, e))
            try:
                if conn:
                    conn.close()
            except OSError:
                pass
            conn = None
            time.sleep(0.05)
    if conn:
        try:
            conn.quit()
        except OSError:
            pass
    with lock:
        for n, _, _ in mine:
            failed[n] = "deadline"

threads = [threading.Thread(target=worker, args=(i,)) for i in range(cfg["threads"])]
for t in threads:
    t.start()
for t in threads:
    t.join()
with lock:
    todo_left = list(todo)
print(json.dumps({"acked": acked, "failed": failed, "not_sent": todo_left, "errors": errors[:50],
                  "n_errors": len(errors)}))
"""

# Runs in a namespace: opens sessions from given source addresses, one after the other, and
# reports every reply (or how the connection ended: <closed>, <reset>, <timeout>), holding each
# session open until the end (so that they are concurrent). "drain" reads on after the last
# command until the connection ends.
SESSIONS = r"""
import json, socket, sys
cfg = json.loads(sys.argv[1])
out, socks = [], []

def reply(s, buf):
    lines = []
    while True:
        while b"\r\n" not in buf[0]:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                return lines + ["<timeout>"]
            except ConnectionResetError:
                return lines + ["<reset>"]
            if not chunk:
                return lines + ["<closed>"]
            buf[0] += chunk
        line, _, buf[0] = buf[0].partition(b"\r\n")
        lines.append(line.decode("utf-8", "replace"))
        if len(line) < 4 or line[3:4] != b"-":
            return lines

for session in cfg["sessions"]:
    s = socket.create_connection((cfg["host"], session["port"]), timeout=30,
                                 source_address=(session.get("source", "0.0.0.0"), 0))
    socks.append(s)
    buf = [b""]
    if "raw" in session:
        s.sendall(session["raw"].encode())
    replies = [reply(s, buf)]
    for command in session.get("commands", []):
        if replies[-1][-1].startswith("<"):
            break
        try:
            s.sendall(command.encode() + b"\r\n")
        except OSError as e:
            replies.append(["<%s>" % type(e).__name__])
            break
        replies.append(reply(s, buf))
    while session.get("drain") and not replies[-1][-1].startswith("<"):
        replies.append(reply(s, buf))
    out.append(replies)
print(json.dumps(out))
"""


@unittest.skipIf(SKIP_REASON, SKIP_REASON)
class HaproxyTestCase(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="haproxy-test-")
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.spools = []
        for i in (1, 2):
            spool = os.path.join(self.work, "spool%d" % i)
            os.mkdir(spool)
            self.spools.append(spool)
        self.relays = [None, None]
        self.haproxy = None
        self.haproxy_log = None
        self.stats = os.path.join(self.work, "haproxy.sock")
        self.make_network()

    def make_network(self):
        tag = os.getpid() % 100000
        self.relay_ns, self.client_ns = "erhr%d" % tag, "erhc%d" % tag
        veth = "erhv%d" % tag
        for ns in (self.relay_ns, self.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)   # a leftover of a killed run
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], capture_output=True)
        cmds = [["ip", "link", "add", veth, "netns", self.relay_ns, "type", "veth", "peer", "name", veth + "c",
                 "netns", self.client_ns],
                ["ip", "-n", self.relay_ns, "addr", "add", RELAY_ADDR + "/24", "dev", veth]]
        cmds += [["ip", "-n", self.client_ns, "addr", "add", a + "/24", "dev", veth + "c"] for a in CLIENT_ADDRS]
        for ns, dev in ((self.relay_ns, veth), (self.client_ns, veth + "c")):
            cmds += [["ip", "-n", ns, "link", "set", dev, "up"], ["ip", "-n", ns, "link", "set", "lo", "up"]]
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True)
        self.veth = veth
        # Cleanups run last-in first-out: the processes go before their namespaces.
        self.addCleanup(self.stop_all)

    def veth_ipv6(self):
        """IPv6 on the link too: the relay host 2001:db8::1, the client 2001:db8::10."""
        for ns, dev, addr in ((self.relay_ns, self.veth, "2001:db8::1/64"),
                              (self.client_ns, self.veth + "c", "2001:db8::10/64")):
            subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", dev, "nodad"], check=True, capture_output=True)

    def stop_all(self):
        for d in self.relays:
            if d:
                d.stop(signal.SIGKILL)
        if self.haproxy and self.haproxy.poll() is None:
            self.haproxy.kill()
            self.haproxy.wait()
        if self.haproxy_log:
            self.haproxy_log.close()

    # ---- the relays ----

    def start_relay(self, i, *args, proxy=True):
        """Relay i (0 or 1) on 127.0.0.1:RELAY_PORTS[i] in the relay namespace."""
        extra = ["--proxy-protocol", "smtp"] if proxy else []
        argv = ["ip", "netns", "exec", self.relay_ns, SMTPD, "--spool-dir", self.spools[i], "--domain", DOMAIN,
                "--interface", "127.0.0.1", "--port", str(RELAY_PORTS[i]), *extra, *args, self.config]
        d = harness.Daemon(argv)
        self.relays[i] = d
        self.assertTrue(harness.wait_for(lambda: "smtp server on port %d" % RELAY_PORTS[i] in d.output()
                                         or d.proc.poll() is not None), d.output())
        self.assertIsNone(d.proc.poll(), d.output())
        return d

    def start_relays(self, *args, proxy=True):
        for i in (0, 1):
            self.start_relay(i, *args, proxy=proxy)

    def relay_log(self, i):
        return self.relays[i].output()

    def committed(self, i=None):
        """The committed messages (.envelope, no lock state) of one spool or both."""
        spools = self.spools if i is None else [self.spools[i]]
        return [m for s in spools for m in harness.spool_messages(s, states=("envelope",))]

    # ---- HAProxy ----

    def start_haproxy(self, proxy=True, balance="roundrobin", inter="200ms", extra=""):
        values = dict(log="stdout format raw local0 info", stats=self.stats, balance=balance, inter=inter,
                      bind_v2="%s:%d" % (RELAY_ADDR, PORT_V2), bind_v1="%s:%d" % (RELAY_ADDR, PORT_V1),
                      relay1="127.0.0.1:%d" % RELAY_PORTS[0], relay2="127.0.0.1:%d" % RELAY_PORTS[1],
                      send_proxy_v2="send-proxy-v2" if proxy else "", send_proxy_v1="send-proxy" if proxy else "",
                      check_send_proxy="check-send-proxy" if proxy else "")
        text = HAPROXY_CONFIG.format(**values) + HAPROXY_CONFIG_V1.format(**values) + extra
        path = os.path.join(self.work, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([HAPROXY, "-c", "-q", "-f", path], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.haproxy_log = tempfile.TemporaryFile(dir=self.work)
        self.haproxy = subprocess.Popen(["ip", "netns", "exec", self.relay_ns, HAPROXY, "-db", "-f", path],
                                        stdin=subprocess.DEVNULL, stdout=self.haproxy_log, stderr=subprocess.STDOUT)
        self.assertTrue(harness.wait_for(lambda: os.path.exists(self.stats) or self.haproxy.poll() is not None),
                        self.haproxy_output())
        self.assertIsNone(self.haproxy.poll(), self.haproxy_output())

    def haproxy_output(self):
        if not self.haproxy_log:
            return ""
        self.haproxy_log.seek(0)
        return self.haproxy_log.read().decode("utf-8", "replace")

    def haproxy_command(self, command):
        """One command on HAProxy's stats socket (its runtime API); the answer."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.stats)
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            return out.decode()
        finally:
            s.close()

    def server_status(self):
        """{(backend, server): status} from HAProxy's own statistics, e.g. "UP", "DOWN"."""
        lines = self.haproxy_command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            if not line:
                continue
            row = dict(zip(header, line.split(",")))
            if row["svname"] not in ("FRONTEND", "BACKEND"):
                out[(row["pxname"], row["svname"])] = row
        return out

    def wait_servers(self, want):
        """Wait until HAProxy's checks see each relay as want[i] ("UP" or "DOWN") in both backends."""
        def ok():
            st = self.server_status()
            return all(st[(b, "relay%d" % (i + 1))]["status"].startswith(w)
                       for b in ("relays", "relays-v1") for i, w in enumerate(want))
        self.assertTrue(harness.wait_for(ok, timeout=20, interval=0.1),
                        "%r\n%s" % ({k: v["status"] for k, v in self.server_status().items()}, self.haproxy_output()))

    # ---- clients in the client namespace ----

    COUNT = 200

    def send(self):
        """Starts CLIENT: COUNT messages through both frontends from both client addresses. (40
        sessions: within the default --max-connection-rate-per-address, even with retries.)"""
        cfg = dict(host=RELAY_ADDR, ports=[PORT_V2, PORT_V1], sources=list(CLIENT_ADDRS), count=self.COUNT,
                   threads=8, per_session=5, deadline=40)
        proc = subprocess.Popen(["ip", "netns", "exec", self.client_ns, "/usr/bin/python3", "-c", CLIENT,
                                 json.dumps(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(self.reap, proc)
        return proc

    def reap(self, proc):
        if proc.returncode is None:      # not collected by result(): the test failed before
            proc.kill()
            proc.communicate()

    def result(self, proc):
        out, err = proc.communicate(timeout=90)
        self.assertEqual(proc.returncode, 0, err)
        return json.loads(out)

    def check_stored(self, result, may_duplicate=False):
        """Every message acknowledged and stored; each stored copy records the address that sent
        it; a second copy only of a message whose earlier attempt was cut off after its data."""
        self.assertEqual((result["failed"], result["not_sent"]), ({}, []), result["errors"])
        acked = {int(k): v for k, v in result["acked"].items()}
        self.assertEqual(sorted(acked), list(range(self.COUNT)))
        copies = {}
        per_spool = []
        for i in (0, 1):
            ms = self.committed(i)
            per_spool.append(len(ms))
            for m in ms:
                n = self.message_number(m)
                copies[n] = copies.get(n, 0) + 1
                self.assertEqual(self.client_field(m), acked[n]["source"], m.envelope)
        self.assertEqual(sorted(copies), list(range(self.COUNT)))
        for n, k in copies.items():
            if k > 1:
                self.assertTrue(may_duplicate and acked[n]["uncertain"] > 0,
                                "message %d stored %d times: %r" % (n, k, acked[n]))
        return per_spool, copies

    def sessions(self, sessions, ns=None, host=RELAY_ADDR):
        """Runs SESSIONS: a list of {source, port, commands, raw}; returns each session's replies."""
        cfg = dict(host=host, sessions=sessions)
        p = subprocess.run(["ip", "netns", "exec", ns or self.client_ns, "/usr/bin/python3", "-c", SESSIONS,
                            json.dumps(cfg)], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def swaks(self, port, subject, source=CLIENT_ADDRS[0], server=RELAY_ADDR):
        argv = ["ip", "netns", "exec", self.client_ns, "swaks", "--server", server, "--port", str(port),
                "--local-interface", source, "--helo", "client.test", "--from", "sender@client.test",
                "--to", "rcpt@relay.test", "--header", "Subject: " + subject, "--timeout", "20"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def message_number(self, m):
        found = re.search(rb"^Subject: haproxy test (\d+)\r$", m.content, re.M)
        self.assertIsNotNone(found, m.content[:300])
        return int(found.group(1))

    def client_field(self, m):
        return dict(m.fields())["X-MailRelay-Client"]


class GuideConfigTest(unittest.TestCase):
    def test_guide_shows_the_tested_config(self):
        """The configuration in docs/scale-out.md is the one these tests run."""
        source_root = os.environ.get("EMAILRELAY_SOURCE_ROOT",
                                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
        with open(os.path.join(source_root, "docs", "scale-out.md")) as f:
            guide = f.read()
        found = re.search(r"A configuration for two relays \*\(tested\)\*:\n\n```\n(.*?)```", guide, re.S)
        self.assertIsNotNone(found, "no tested HAProxy configuration in docs/scale-out.md")
        self.assertEqual(found.group(1), HAPROXY_CONFIG.format(**GUIDE_VALUES))


class PlainTcpTest(HaproxyTestCase):
    """The harness itself, and why the PROXY protocol is needed: through a balancer that does
    not send it, every client looks like the balancer."""

    def test_without_proxy_protocol_every_client_is_the_balancer(self):
        self.start_relays(proxy=False)
        self.start_haproxy(proxy=False)
        self.wait_servers(["UP", "UP"])
        p = self.swaks(PORT_V2, "plain tcp")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        m, = self.committed()
        self.assertEqual(self.client_field(m), "127.0.0.1")    # not 192.0.2.10: no policy can see it
        self.assertIn(b"([127.0.0.1])", m.content.split(b"\r\n", 1)[0])


class ProxyProtocolTest(HaproxyTestCase):
    def test_remote_client_policed_by_its_own_address(self):
        """(a) Without --remote-clients, 192.0.2.10 is refused through both frontends (v1 and
        v2), though HAProxy connects from 127.0.0.1; HAProxy's own health checks (PROXY
        UNKNOWN / LOCAL) are served as 127.0.0.1 and keep both relays up."""
        self.start_relays()
        self.start_haproxy()
        self.wait_servers(["UP", "UP"])
        for port in (PORT_V2, PORT_V1):
            p = self.swaks(port, "refused")
            self.assertNotEqual(p.returncode, 0, p.stdout)
            self.assertIn("<** 554 5.7.1 remote clients are not allowed", p.stdout)
        self.assertEqual(self.committed(), [])
        logs = self.relay_log(0) + self.relay_log(1)
        self.assertEqual(logs.count("connection from 192.0.2.10 rejected: not a local address"), 2, logs)
        self.assertNotIn("connection from 127.0.0.1 rejected", logs)

    def test_remote_client_accepted_and_recorded_by_its_own_address(self):
        """(a) With --remote-clients the message is stored, and the envelope's client, the
        Received line and the log carry 192.0.2.10 (v2 frontend) and 192.0.2.11 (v1 frontend)."""
        self.start_relays("--remote-clients")
        self.start_haproxy()
        self.wait_servers(["UP", "UP"])
        for port, source in ((PORT_V2, CLIENT_ADDRS[0]), (PORT_V1, CLIENT_ADDRS[1])):
            p = self.swaks(port, "accepted %d" % port, source=source)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertRegex(p.stdout, r"<-  250 2\.0\.0 message processed")
        got = {}
        for m in self.committed():
            subject = re.search(rb"^Subject: (.*)\r$", m.content, re.M).group(1).decode()
            got[subject] = (self.client_field(m), m.content.split(b"\r\n", 1)[0].decode())
        self.assertEqual(sorted(got), ["accepted %d" % PORT_V2, "accepted %d" % PORT_V1])
        for port, source in ((PORT_V2, CLIENT_ADDRS[0]), (PORT_V1, CLIENT_ADDRS[1])):
            client, received = got["accepted %d" % port]
            self.assertEqual(client, source)
            self.assertIn("([%s])" % source, received)
            self.assertNotIn("127.0.0.1", received)
            self.assertRegex(self.relay_log(0) + self.relay_log(1),
                             r"message emailrelay\.\S+ accepted from %s: " % re.escape(source))

    def test_ipv6_client_and_v2_tlvs(self):
        """An IPv6 client (2001:db8::10) through both versions (TCP6 in v1, AF_INET6 in v2), the
        v2 header carrying TLVs (CRC32C, unique id, authority, SSL) that the relay must skip."""
        self.veth_ipv6()
        self.start_relays("--remote-clients")
        extra = """
frontend smtp6
    bind [2001:db8::1]:25
    unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    default_backend relays-tlv

frontend smtp6-v1
    bind [2001:db8::1]:2525
    default_backend relays-v1

backend relays-tlv
    option smtpchk EHLO lb.example.net
    default-server check inter 200ms fall 2 rise 2 send-proxy-v2 check-send-proxy
    default-server proxy-v2-options ssl,unique-id,crc32c,authority
    server relay1 127.0.0.1:PORT1
    server relay2 127.0.0.1:PORT2
""".replace("PORT1", str(RELAY_PORTS[0])).replace("PORT2", str(RELAY_PORTS[1]))
        self.start_haproxy(extra=extra)
        self.wait_servers(["UP", "UP"])
        for port in (PORT_V2, PORT_V1, PORT_V2, PORT_V1):
            p = self.swaks(port, "ipv6 %d" % port, source="2001:db8::10", server="2001:db8::1")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        ms = self.committed()
        self.assertEqual(len(ms), 4)
        for m in ms:
            self.assertEqual(self.client_field(m), "2001:db8::10")
            self.assertIn(b"([IPv6:2001:db8::10])", m.content.split(b"\r\n", 1)[0])

    def test_connection_without_header_is_closed(self):
        """A client that reaches a --proxy-protocol listener directly, without a header, is never
        greeted: a command instead of a header closes the connection at once, silence closes it
        after the header timeout, and the relay logs each."""
        self.start_relay(0)
        direct = {"source": "127.0.0.1", "port": RELAY_PORTS[0]}
        out = self.sessions([dict(direct, raw="EHLO spoof\r\n")], ns=self.relay_ns, host="127.0.0.1")
        self.assertIn(out, [[[["<closed>"]]], [[["<reset>"]]]])
        self.assertTrue(harness.wait_for(lambda: "bad PROXY protocol header on listener smtp from 127.0.0.1"
                                         in self.relay_log(0)), self.relay_log(0))
        out = self.sessions([direct], ns=self.relay_ns, host="127.0.0.1")
        self.assertEqual(out, [[["<closed>"]]])
        self.assertIn("no PROXY protocol header in time on listener smtp from 127.0.0.1", self.relay_log(0))


class LoadTest(HaproxyTestCase):
    def test_each_message_stored_exactly_once(self):
        """(b) 200 messages from two addresses through both frontends: each is in exactly one of
        the two spools, both relays took some, and every stored envelope names the client."""
        self.start_relays("--remote-clients")
        self.start_haproxy()
        self.wait_servers(["UP", "UP"])
        result = self.result(self.send())
        per_spool, copies = self.check_stored(result)
        self.assertEqual(set(copies.values()), {1})
        self.assertGreater(per_spool[0], 0)
        self.assertGreater(per_spool[1], 0)
        ports = {v["port"] for v in result["acked"].values()}
        self.assertEqual(ports, {PORT_V1, PORT_V2})

    def test_relay_killed_mid_run_loses_nothing(self):
        """(c) Relay 2 is killed (SIGKILL) while 200 messages are being sent. The client sends
        again what was not acknowledged; HAProxy's checks take relay 2 out. Every acknowledged
        message is in a spool (relay 2's own stay in its spool), once; then relay 2 comes back,
        HAProxy takes it in again, and it cleans up what it never acknowledged."""
        self.start_relays("--remote-clients")
        self.start_haproxy()
        self.wait_servers(["UP", "UP"])
        proc = self.send()
        self.assertTrue(harness.wait_for(lambda: len(self.committed(1)) >= 20 and len(self.committed()) >= 60,
                                         timeout=40, interval=0.01))
        self.relays[1].stop(signal.SIGKILL)
        killed_at = len(self.committed())
        self.wait_servers(["UP", "DOWN"])
        result = self.result(proc)
        self.assertLess(killed_at, self.COUNT, "the relay was killed after the run")
        per_spool, copies = self.check_stored(result, may_duplicate=True)
        self.assertGreater(per_spool[1], 0)
        # Back up: uncommitted debris goes, committed mail stays, HAProxy sends it traffic again.
        self.start_relay(1, "--remote-clients")
        self.wait_servers(["UP", "UP"])
        self.assertEqual(len(self.committed(1)), per_spool[1])
        leftovers = [n for n in os.listdir(self.spools[1]) if n.endswith((".new", ".busy"))]
        self.assertEqual(leftovers, [])


class MaintenanceTest(HaproxyTestCase):
    COUNT = 40

    def set_state(self, server, state):
        for backend in ("relays", "relays-v1"):
            self.assertEqual(self.haproxy_command("set server %s/%s state %s" % (backend, server, state)).strip(), "")

    def test_drain_stop_and_return_one_relay(self):
        """The guide's maintenance recipe: relay 1 set to drain in HAProxy gets no new
        connections, stops cleanly on SIGTERM with what it stored still in its spool, and takes
        mail again once it is back and set ready."""
        self.start_relays("--remote-clients")
        self.start_haproxy()
        self.wait_servers(["UP", "UP"])
        self.set_state("relay1", "drain")
        self.check_stored(self.result(self.send()))
        self.assertEqual(len(self.committed(0)), 0)
        self.assertEqual(len(self.committed(1)), self.COUNT)
        self.assertEqual(self.relays[0].stop(signal.SIGTERM), 0, self.relay_log(0))
        self.start_relay(0, "--remote-clients")
        self.set_state("relay1", "ready")
        self.wait_servers(["UP", "UP"])
        for m in self.committed():
            os.rename(m.envelope_path, os.path.join(self.work, os.path.basename(m.envelope_path)))   # "forwarded"
        self.check_stored(self.result(self.send()))
        self.assertGreater(len(self.committed(0)), 0)
        self.assertGreater(len(self.committed(1)), 0)


class LimitsTest(HaproxyTestCase):
    """Per-address limits count the address in the PROXY header. `balance source` sends one
    client address always to the same relay, so that one relay sees all its connections."""

    def greeted(self, replies):
        return replies[0][0].startswith("220 relay.test ")

    def logs(self):
        return self.relay_log(0) + self.relay_log(1)

    def test_connections_per_address_counts_the_real_client(self):
        """(d) --max-connections-per-address 2: 192.0.2.10 holds two sessions (one through each
        frontend), its third gets 421, and 192.0.2.11 is served meanwhile."""
        self.start_relays("--remote-clients", "--max-connections-per-address", "2")
        self.start_haproxy(balance="source")
        self.wait_servers(["UP", "UP"])
        a, b = CLIENT_ADDRS
        out = self.sessions([{"source": a, "port": PORT_V2}, {"source": a, "port": PORT_V1},
                             {"source": a, "port": PORT_V2, "drain": True},
                             {"source": b, "port": PORT_V2}, {"source": b, "port": PORT_V1}])
        self.assertTrue(self.greeted(out[0]) and self.greeted(out[1]), out)
        self.assertEqual(out[2], [["421 4.7.0 too many connections from your address"], ["<closed>"]])
        self.assertTrue(self.greeted(out[3]) and self.greeted(out[4]), out)
        self.assertIn("too many concurrent connections from 192.0.2.10 (limit 2)", self.logs())
        self.assertNotIn("from 192.0.2.11 (limit", self.logs())

    def test_connection_rate_counts_the_real_client_not_the_health_checks(self):
        """--max-connection-rate-per-address 3: the fourth session of 192.0.2.10 in a minute gets
        421 and 192.0.2.11 is still served. HAProxy's health checks, many more than 3 a minute,
        come from 127.0.0.1, which is exempt by default: both relays stay up."""
        self.start_relays("--remote-clients", "--max-connection-rate-per-address", "3", "--verbose")
        self.start_haproxy(balance="source")
        self.wait_servers(["UP", "UP"])
        a, b = CLIENT_ADDRS
        out = self.sessions([{"source": a, "port": PORT_V2, "commands": ["QUIT"]}] * 3
                            + [{"source": a, "port": PORT_V1, "drain": True}, {"source": b, "port": PORT_V1}])
        for replies in out[:3]:
            self.assertTrue(self.greeted(replies), out)
            self.assertTrue(replies[1][0].startswith("221 "), out)
        self.assertEqual(out[3], [["421 4.7.0 too many connections from your address, try later"], ["<closed>"]])
        self.assertTrue(self.greeted(out[4]), out)
        self.assertIn("too many connections in a minute from 192.0.2.10 (limit 3)", self.logs())
        # Well past the limit: more checks of each relay than 3 a minute and the 2 failures that
        # would take it down (--verbose logs each connection).
        self.assertTrue(harness.wait_for(lambda: min(self.relay_log(i).count("connection from 127.0.0.1:")
                                                     for i in (0, 1)) >= 3 + 2 + 4, timeout=30), self.logs())
        status = {k: v["status"] for k, v in self.server_status().items()}
        self.assertEqual(set(status.values()), {"UP"}, status)
        self.assertNotIn("from 127.0.0.1 (limit", self.logs())

    def test_health_checks_from_a_limited_address(self):
        """The counter-case, which the guide warns of: with --limits-exempt none the balancer's
        own address is limited too. HAProxy's version 2 checks say LOCAL (the balancer's own
        connection), which is never limited, so that backend stays up; its version 1 checks
        carry the check's addresses as TCP4, trip the rate limit, and that backend goes down."""
        self.start_relays("--remote-clients", "--max-connection-rate-per-address", "3", "--limits-exempt", "none")
        self.start_haproxy()
        self.assertTrue(harness.wait_for(lambda: "too many connections in a minute from 127.0.0.1 (limit 3)"
                                         in self.logs()), self.logs())
        self.assertTrue(harness.wait_for(
            lambda: {k: v["status"] for k, v in self.server_status().items()} ==
            {("relays", "relay1"): "UP", ("relays", "relay2"): "UP",
             ("relays-v1", "relay1"): "DOWN", ("relays-v1", "relay2"): "DOWN"}, timeout=20, interval=0.1),
            self.server_status())

    def test_rejected_commands_block_the_real_client(self):
        """--max-rejected-commands-per-address 3: the fourth rejected command of 192.0.2.10 ends
        its session with 421, its next connection is refused, and 192.0.2.11 is served."""
        self.start_relays("--remote-clients", "--max-rejected-commands-per-address", "3")
        self.start_haproxy(balance="source")
        self.wait_servers(["UP", "UP"])
        a, b = CLIENT_ADDRS
        out = self.sessions([{"source": a, "port": PORT_V2, "commands": ["EHLO client.test"] + ["FROB"] * 4,
                              "drain": True},
                             {"source": a, "port": PORT_V1, "drain": True}, {"source": b, "port": PORT_V2}])
        first = out[0]
        self.assertTrue(self.greeted(first), out)
        self.assertEqual(first[2:], [["500 5.5.1 command unrecognized"]] * 4
                         + [["421 4.7.0 too many errors from your address, try later"], ["<closed>"]])
        self.assertEqual(out[1], [["421 4.7.0 too many errors from your address, try later"], ["<closed>"]])
        self.assertTrue(self.greeted(out[2]), out)
        self.assertIn("too many rejected commands from 192.0.2.10", self.logs())


class OtherListenersTest(HaproxyTestCase):
    """The PROXY protocol on the other listeners behind the real HAProxy: smtps (the header comes
    before the TLS handshake) and pop3d (POP3 clients policed and logged by their own address)."""

    SMTPS_PORT, POP3_PORT = 2611, 2612      # relay-side ports, on 127.0.0.1 in the relay namespace
    EXTRA = """
frontend smtps
    bind {relay}:465
    default_backend relays-smtps

backend relays-smtps
    server relay1 127.0.0.1:{smtps} send-proxy-v2

frontend pop3
    bind {relay}:110
    default_backend pop3

backend pop3
    option tcp-check
    tcp-check expect string +OK
    server pop1 127.0.0.1:{pop3} check inter 200ms fall 2 rise 2 send-proxy-v2 check-send-proxy
"""

    def start_extra(self, argv, port):
        d = harness.Daemon(["ip", "netns", "exec", self.relay_ns, *argv])
        self.relays.append(d)
        self.assertTrue(harness.wait_for(lambda: "server on port %d" % port in d.output()
                                         or d.proc.poll() is not None), d.output())
        self.assertIsNone(d.proc.poll(), d.output())
        return d

    def haproxy_with_extra(self):
        self.start_haproxy(extra=self.EXTRA.format(relay=RELAY_ADDR, smtps=self.SMTPS_PORT, pop3=self.POP3_PORT))

    def test_smtps_header_before_the_handshake(self):
        """swaks --tls-on-connect from 192.0.2.10 through HAProxy to an implicit-TLS listener:
        the relay reads the PROXY header, then the TLS handshake, and records 192.0.2.10."""
        self.smtps_through_haproxy([SMTPD])

    def test_smtps_through_the_front_end(self):
        """The same with E-MailRelay's command line: the front-end binds the listener and hands
        it to emailrelay-smtpd, named smtps as smtpd would name its own."""
        self.smtps_through_haproxy([harness.program("emailrelay"), "--no-daemon", "--log", "--user", "root"])

    def smtps_through_haproxy(self, program):
        d = os.path.join(self.work, "tls")
        os.mkdir(d)
        key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
        subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key],
                       check=True, capture_output=True)
        with open(os.path.join(d, "tmpl"), "w") as f:
            f.write('cn = "relay.test"\ndns_name = "relay.test"\ntls_www_server\nexpiration_days = 2\n')
        subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", key, "--template",
                        os.path.join(d, "tmpl"), "--outfile", cert], check=True, capture_output=True)
        with open(cert, "a") as out, open(key) as k:
            out.write(k.read())
        relay = self.start_extra([*program, "--spool-dir", self.spools[0], "--domain", DOMAIN, "--interface", "127.0.0.1",
                                  "--port", str(self.SMTPS_PORT), "--server-tls-connection", "--server-tls-certificate",
                                  cert, "--proxy-protocol", "smtps", "--remote-clients", self.config], self.SMTPS_PORT)
        self.haproxy_with_extra()
        p = subprocess.run(["ip", "netns", "exec", self.client_ns, "swaks", "--server", RELAY_ADDR, "--port", "465",
                            "--tls-on-connect", "--local-interface", CLIENT_ADDRS[0], "--helo", "client.test",
                            "--from", "sender@client.test", "--to", "rcpt@relay.test", "--header", "Subject: smtps",
                            "--timeout", "20"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr + relay.output())
        self.assertIn("TLS started", p.stdout)
        m, = self.committed(0)
        self.assertEqual(self.client_field(m), CLIENT_ADDRS[0])
        self.assertIn(b"([%s])" % CLIENT_ADDRS[0].encode(), m.content.split(b"\r\n", 1)[0])
        self.assertRegex(relay.output(), r"message emailrelay\.\S+ accepted from 192\.0\.2\.10: ")

    def test_pop3_clients_by_their_own_address(self):
        """pop3d behind HAProxy's tcp-check: 192.0.2.10 fails AUTH three times, over
        --max-auth-failures-per-address 2, so its session is closed and its next connection
        refused, all logged by its own address; meanwhile 192.0.2.11 logs in
        and reads the message; HAProxy's checks (LOCAL headers) keep the server up."""
        secrets = os.path.join(self.work, "pop.auth")
        with open(secrets, "w") as f:
            f.write("server plain alice secret\n")
        subprocess.run([harness.program("emailrelay-submit"), "--spool-dir", self.spools[0], "rcpt@relay.test"],
                       input=b"Subject: for pop\n\nbody\n", check=True, timeout=30)
        pop = self.start_extra([harness.program("emailrelay-pop3d"), "--spool-dir", self.spools[0], "--pop-auth",
                                secrets, "--interface", "127.0.0.1", "--pop-port", str(self.POP3_PORT),
                                "--proxy-protocol", "pop3", "--remote-clients", "--max-auth-failures-per-address", "2",
                                self.config], self.POP3_PORT)
        self.haproxy_with_extra()
        self.assertTrue(harness.wait_for(lambda: self.server_status()[("pop3", "pop1")]["status"] == "UP",
                                         timeout=20, interval=0.1), self.haproxy_output() + pop.output())
        a, b = CLIENT_ADDRS
        wrong = ["USER alice", "PASS wrong"]
        out = self.sessions([{"source": a, "port": 110, "commands": wrong},
                             {"source": a, "port": 110, "commands": wrong + wrong, "drain": True},
                             {"source": a, "port": 110, "drain": True},
                             {"source": b, "port": 110, "commands": ["USER alice", "PASS secret", "STAT", "QUIT"]}])
        self.assertTrue(out[0][0][0].startswith("+OK ") and out[0][2][0].startswith("-ERR "), out)
        # the third failure is over the limit: its -ERR, then the session is closed
        self.assertTrue(out[1][2][0].startswith("-ERR ") and out[1][4][0].startswith("-ERR "), out)
        self.assertEqual(out[1][5:], [["-ERR too many errors from your address, try later"], ["<closed>"]])
        self.assertEqual(out[2], [["-ERR too many errors from your address, try later"], ["<closed>"]])
        self.assertTrue(out[3][0][0].startswith("+OK "), out)
        self.assertEqual(out[3][2], ["+OK authenticated"], out)
        self.assertTrue(out[3][3][0].startswith("+OK 1 "), out)
        log = pop.output()
        self.assertEqual(log.count('pop authentication failed for "alice" from 192.0.2.10'), 3, log)
        self.assertIn('pop authentication of "alice" from 192.0.2.11', log)
        self.assertIn("from 192.0.2.10 (limit 2", log)
        self.assertNotIn("127.0.0.1 (limit", log)
        self.assertEqual(self.server_status()[("pop3", "pop1")]["status"], "UP")


if __name__ == "__main__":
    harness.main()
