# SPDX-License-Identifier: GPL-3.0-or-later
"""The `emailrelay` front-end: E-MailRelay's command line and config file, without systemd. It
runs the real daemons with its sockets (passed in here by LISTEN_FDS, as a test cannot use fixed
ports), Postfix's smtp-sink is the next hop, and smtplib/poplib are the clients."""

import os
import poplib
import re
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

FRONTEND = os.path.join(harness.BUILD_ROOT, "src", "frontend", "emailrelay")
SUBMIT = harness.program("emailrelay-submit")
QUEUE = harness.program("emailrelay-queue")
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
MESSAGE = b"From: a@example.org\r\nSubject: via the front-end\r\n\r\nbody\r\n"


def read(path):
    with open(path) as f:
        return f.read()


def relay_processes(marker):
    """Pids of processes whose command line mentions marker (a test's private directory)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if marker.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def kill_leftovers(marker, keep=()):
    """SIGKILL what relay_processes(marker) finds, except keep. A daemon's children die on their
    own when it is killed (parent-death signal), so any of them may be gone by the time of its kill."""
    for pid in relay_processes(marker):
        if pid not in keep:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class FrontendTestCase(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="frontend-test-")
        os.chmod(self.work, 0o755)
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.dump = os.path.join(self.work, "dump")
        os.mkdir(self.dump)
        os.chmod(self.dump, 0o777)
        self.sink_sock = os.path.join(self.work, "sink.sock")
        self.log = os.path.join(self.work, "relay.log")
        self.sink = None
        self.daemons = []
        # As root the relay becomes --user (default daemon), who cannot write this spool.
        self.user = ["--user", "root"]
        self.frontend = FRONTEND

    def tearDown(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.stop(signal.SIGKILL)
        kill_leftovers(self.work, keep=[self.sink.pid] if self.sink else [])
        if self.sink:
            self.sink.terminate()
            self.sink.wait(timeout=10)
        shutil.rmtree(self.work, ignore_errors=True)

    def start_sink(self):
        self.sink = subprocess.Popen([SINK, "-u", "nobody", "-d", self.dump + "/", "unix:" + self.sink_sock, "100"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.assertTrue(harness.wait_for(lambda: os.path.exists(self.sink_sock)), "smtp-sink did not start")

    def sink_count(self):
        return len(os.listdir(self.dump))

    def installed_suite(self):
        """The front-end and its programs copied flat into a directory every user can reach, as
        an install has them; returns the front-end's path. For the tests that switch users: the
        build tree may be where the user switched to cannot reach (a clone in /root, 0700)."""
        bindir = os.path.join(self.work, "sbin")
        os.mkdir(bindir)
        for p in (FRONTEND, *(harness.program(n) for n in ("emailrelay-smtpd", "emailrelay-pop3d",
                                                              "emailrelay-forward"))):
            shutil.copy(p, bindir)
        return os.path.join(bindir, "emailrelay")

    def relay(self, *args, sockets=(), names=()):
        d = harness.Daemon([self.frontend, "--no-daemon", "--spool-dir", self.spool, *self.user, *args], sockets, names)
        self.daemons.append(d)
        return d

    def run_frontend(self, *args, timeout=60):
        return subprocess.run([self.frontend, *self.user, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def send(self, port, n=1):
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
            for _ in range(n):
                s.sendmail("a@example.org", ["b@example.com"], MESSAGE)

    def submit(self):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "--wakeup-file", "none", "b@example.com"],
                       input=MESSAGE, check=True, timeout=30)


@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (scripts/deps --test installs postfix)")
class FrontendTest(FrontendTestCase):
    # -- command line --

    def test_help_and_version(self):
        p = self.run_frontend("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("--as-proxy", p.stdout)
        self.assertNotIn("--client-tls-verify-name", p.stdout)
        p = self.run_frontend("--help", "--verbose")
        self.assertEqual(p.returncode, 0)
        self.assertIn("--client-tls-verify-name", p.stdout)
        self.assertIn("--pop-by-name", p.stdout)
        p = self.run_frontend("--version")
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"^emailrelay \d")
        self.assertNotIn("POP server", p.stdout)
        # --verbose: E-MailRelay's feature lines, which tools parse, as well as ours.
        p = self.run_frontend("--version", "--verbose")
        self.assertEqual(p.returncode, 0)
        lines = p.stdout.splitlines()
        for line in ("Multi-threading: enabled", "Unix domain sockets: enabled", "POP server: enabled",
                     "Admin server: enabled", "systemd: socket activation, journal"):
            self.assertIn(line, lines)
        tls = [l for l in lines if l.startswith("TLS library: ")]
        self.assertRegex(tls[0], r"^TLS library: gnutls-\d+\.\d+")
        if shutil.which("gnutls-cli"):   # the library the suite runs with is the one installed
            cli = subprocess.run(["gnutls-cli", "--version"], capture_output=True, text=True).stdout
            self.assertIn(tls[0].split("gnutls-")[1], cli)

    def test_start_up_checks(self):
        cases = [
            (["--pop"], "--pop needs --pop-auth"),
            (["--poll", "0", "--forward-to", "127.0.0.1:1"], "--poll 0 is not allowed"),
            (["--forward"], "need --forward-to"),
            (["--as-client", "127.0.0.1:1", "--forward-to", "127.0.0.1:2"], "cannot be combined"),
            (["--as-server", "--as-proxy", "127.0.0.1:1"], "exclude each other"),
            (["--dnsbl", "x.example"], "--dnsbl needs --remote-clients"),
            (["--immediate"], "need --forward-to"),
            (["--admin-terminate"], "--admin-terminate needs --admin"),
            (["--frobnicate"], "unknown option"),
        ]
        for args, text in cases:
            p = self.run_frontend("--no-daemon", "--spool-dir", self.spool, *args)
            self.assertEqual(p.returncode, 1, (args, p.stderr))
            self.assertIn(text, p.stderr, args)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)   # one line naming the problem

    def test_bind_failure_is_exit_2(self):
        busy = harness.listening_socket()
        port = busy.getsockname()[1]
        try:
            p = self.run_frontend("--no-daemon", "--spool-dir", self.spool, "--interface", "127.0.0.1",
                                  "--port", str(port))
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("Address already in use", p.stderr)
        finally:
            busy.close()

    def test_config_file_as_last_argument(self):
        config = os.path.join(self.work, "emailrelay.conf")
        with open(config, "w") as f:
            f.write("# as E-MailRelay reads it\nspool-dir %s\nforward-to %s\nforward-on-disconnect\n"
                    % (self.spool, self.sink_sock))
        self.start_sink()
        d = harness.Daemon([FRONTEND, "--no-daemon", *self.user, config], [harness.listening_socket()])
        self.daemons.append(d)
        self.send(d.port, 2)
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 2, timeout=20), d.output())

    # -- modes --

    def test_as_client_forwards_once_and_exits(self):
        self.start_sink()
        for _ in range(3):
            self.submit()
        p = self.run_frontend("--as-client", self.sink_sock, "--spool-dir", self.spool)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.sink_count(), 3)
        self.assertEqual(os.listdir(self.spool), [])
        # --as-client implies --log: the forwarder's report is on stderr.
        self.assertIn("forwarded 3", p.stderr)

    def test_as_client_reports_the_next_hop_down(self):
        self.submit()
        p = self.run_frontend("--as-client", self.sink_sock, "--spool-dir", self.spool)
        self.assertEqual(p.returncode, 3, p.stderr)   # emailrelay-forward(8): next hop unreachable
        self.assertEqual(len(harness.spool_messages(self.spool)), 1)

    def test_as_proxy_forwards_each_session_and_stops_cleanly(self):
        self.start_sink()
        d = self.relay("--as-proxy", self.sink_sock, "--log-file", self.log, sockets=[harness.listening_socket()])
        self.send(d.port, 2)
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 2, timeout=20), read(self.log))
        self.send(d.port, 1)
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 3, timeout=20))
        self.assertTrue(harness.wait_for(lambda: os.listdir(self.spool) == [], timeout=20))
        self.assertEqual(d.stop(), 0)
        self.assertTrue(harness.wait_for(lambda: relay_processes(self.spool) == [], timeout=10),
                        "children left behind: %s" % relay_processes(self.spool))
        log = read(self.log)
        self.assertIn("emailrelay-smtpd: ", log)     # the children's log lines go to the same file
        self.assertIn("emailrelay-forward: ", log)

    def test_as_proxy_one_next_hop_connection_per_client_session(self):
        """A client session's messages, forwarded as each is committed, share one connection to
        the next hop, as E-MailRelay's forward-on-disconnect sends them in one."""
        hop = harness.RecordingHop()
        hop.start()
        self.addCleanup(hop.close)
        d = self.relay("--as-proxy", "127.0.0.1:%d" % hop.port, "--log-file", self.log,
                       sockets=[harness.listening_socket()])
        self.send(d.port, 4)

        def count(verb):
            return sum(1 for l in hop.lines if l.split(" ")[0].upper() == verb)

        self.assertTrue(harness.wait_for(lambda: count("DATA") == 4, timeout=30), (hop.lines, read(self.log)))
        self.assertEqual(count("EHLO"), 1, hop.lines)
        self.assertTrue(harness.wait_for(lambda: os.listdir(self.spool) == [], timeout=20))
        self.assertEqual(d.stop(), 0)
        self.assertTrue(harness.wait_for(lambda: count("QUIT") == 1), hop.lines)   # on the way out

    def test_poll_forwards_what_others_put_in_the_spool(self):
        self.start_sink()
        self.relay("--poll", "1", "--forward-to", self.sink_sock, sockets=[harness.listening_socket()])
        self.submit()
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 1, timeout=15))

    def test_filter_rescan_starts_a_pass(self):
        """A server filter's exit 103 (ok + rescan) and 102 (abandon + rescan) start a forwarding
        pass at once, as in E-MailRelay, even with an hour-long --poll: the message itself, and
        what the filter put in the spool (here: with emailrelay-submit)."""
        self.start_sink()
        filt = os.path.join(self.work, "filter")
        with open(filt, "w") as f:
            f.write("#!/bin/sh\n"
                    "grep -q '^Subject: make one' \"$1\" || exit 103\n"
                    "printf 'Subject: made by the filter\\n\\nbody\\n' | %s --spool-dir %s --wakeup-file none made@example.com\n"
                    "rm -f \"$1\" \"$2\"\n"   # abandoned: the filter took it over
                    "exit 102\n" % (SUBMIT, self.spool))
        os.chmod(filt, 0o755)
        d = self.relay("--poll", "3600", "--forward-to", self.sink_sock, "--filter", filt, "--log", "--log-file", self.log,
                       sockets=[harness.listening_socket()])
        self.send(d.port)
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 1, timeout=20), read(self.log))
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20) as s:
            s.sendmail("a@example.org", ["b@example.com"], b"Subject: make one\r\n\r\nbody\r\n")
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 2, timeout=20), read(self.log))
        self.assertTrue(harness.wait_for(lambda: os.listdir(self.spool) == [], timeout=20), os.listdir(self.spool))
        self.assertIn("a filter asked for a rescan: forwarding", read(self.log))
        self.assertEqual(d.stop(), 0)

    def test_poll_only_forwarder_keeps_running(self):
        """E-MailRelay's forward-only relay: --no-smtp --poll forwards every period, for as long
        as it runs; it must not exit at once with nothing done."""
        self.start_sink()
        d = self.relay("--no-smtp", "--poll", "1", "--forward-to", self.sink_sock, "--log",
                       "--log-file", self.log)
        self.submit()
        self.submit()
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 2, timeout=20), d.output())
        self.assertIsNone(d.proc.poll(), "the relay exited: %s" % d.output())
        self.submit()   # a later poll takes this one
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 3, timeout=20), d.output())
        self.assertIsNone(d.proc.poll(), d.output())
        self.assertEqual(d.stop(), 0)

    def test_no_smtp_forward_once(self):
        """--no-smtp --forward: one forwarding pass, then the relay ends with its status."""
        self.start_sink()
        self.submit()
        p = self.run_frontend("--no-smtp", "--no-daemon", "--forward", "--forward-to", self.sink_sock,
                              "--spool-dir", self.spool)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.sink_count(), 1)
        self.assertEqual(os.listdir(self.spool), [])

    def test_nothing_to_do_is_an_error(self):
        """A combination that leaves the front-end nothing to do is refused with the reason,
        never a silent exit 0, and daemonised leaves no pid file behind."""
        pid_file = os.path.join(self.work, "emailrelay.pid")
        for args in (["--no-smtp", "--no-daemon"], ["--no-smtp", "--pid-file", pid_file],
                     ["--no-smtp", "--forward-to", self.sink_sock, "--no-daemon"]):
            p = self.run_frontend(*args, "--spool-dir", self.spool)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn("--no-smtp without --pop, --admin, --poll or --forward has nothing to do", p.stderr)
            self.assertFalse(os.path.exists(pid_file))

    def test_log_format_debug_and_windows_options(self):
        """--log-format's fields on the children's lines, --debug's debug lines, and the
        Windows-only --hidden and --show ignored with a warning: E-MailRelay accepts them all."""
        sock = harness.listening_socket()
        port = sock.getsockname()[1]
        d = self.relay("--log", "--log-file", self.log, "--log-format", "time,address", "--log-format=port,msgid,unit",
                       "--debug", "--hidden", "--show", "popup", sockets=[sock])
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
            client_port = c.sock.getsockname()[1]
            c.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        (msg_id,) = [m.id for m in harness.spool_messages(self.spool)]
        self.assertTrue(harness.wait_for(lambda: msg_id in read(self.log)), read(self.log))
        log = read(self.log)
        self.assertRegex(log, r"(?m)^emailrelay-smtpd: \d{8}\.\d{6}\.\d{3}: info: 127\.0\.0\.1:%d: %s: "
                         % (client_port, re.escape(msg_id)))
        self.assertRegex(log, r"(?m)^emailrelay-smtpd: [0-9.]+: debug: ")
        self.assertRegex(log, r"(?m)^emailrelay: [0-9.]+: warning: option --hidden is for Windows only: ignored$")
        self.assertRegex(log, r"(?m)^emailrelay: [0-9.]+: warning: option --show is for Windows only: ignored$")
        self.assertEqual(d.stop(), 0)
        p = self.run_frontend("--log-format", "time,colour", "--no-daemon", "--spool-dir", self.spool)
        self.assertEqual(p.returncode, 1)
        self.assertIn('unknown --log-format field "colour": use time, unit, address, port or msgid', p.stderr)

    def test_pop_serves_the_spool(self):
        secrets = os.path.join(self.work, "pop.auth")
        with open(secrets, "w") as f:
            f.write("server plain carol c4r0l\n")
        smtp, pop = harness.listening_socket(), harness.listening_socket()
        self.relay("--pop", "--pop-auth", secrets, sockets=[smtp, pop], names=["smtp", "pop3"])
        self.send(smtp.getsockname()[1])
        p = poplib.POP3("127.0.0.1", pop.getsockname()[1], timeout=20)
        p.user("carol")
        p.pass_("c4r0l")
        self.assertEqual(p.stat()[0], 1)
        self.assertIn(b"Subject: via the front-end", b"\n".join(p.retr(1)[1]))
        p.quit()

    def test_daemonizes_with_a_pid_file(self):
        pid_file = os.path.join(self.work, "run", "emailrelay.pid")
        sock = harness.listening_socket()
        port = sock.getsockname()[1]
        d = harness.Daemon([FRONTEND, "--as-server", "--spool-dir", self.spool, "--pid-file", pid_file, *self.user],
                           [sock])
        self.assertEqual(d.proc.wait(timeout=20), 0, d.output())   # the parent returns at once
        sock.close()   # the relay has its own copy now; ours would keep the port open
        self.assertTrue(harness.wait_for(lambda: os.path.exists(pid_file)))
        pid = int(read(pid_file))
        self.assertNotEqual(pid, d.proc.pid)
        self.send(port)
        self.assertEqual(len(harness.spool_messages(self.spool)), 1)
        os.kill(pid, signal.SIGTERM)
        self.assertTrue(harness.wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                                         read("/proc/%d/stat" % pid).split()[2] == "Z", timeout=15))
        self.assertTrue(harness.wait_for(lambda: relay_processes(self.spool) == [], timeout=10))
        self.assertFalse(os.path.exists(pid_file))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to switch users")
    def test_user_switch(self):
        """As root: the default --user daemon must be able to write the spool, and then every
        process of the relay runs as daemon."""
        self.user = []
        self.frontend = self.installed_suite()
        # Bound before the check: an ephemeral port, never 25 (another program may hold it).
        # (A root-owned spool is given to daemon: UpgradeTest.)
        import pwd
        daemon = pwd.getpwnam("daemon")
        os.chown(self.spool, daemon.pw_uid, daemon.pw_gid)
        os.chmod(self.spool, 0o555)
        p = self.run_frontend("--no-daemon", "--spool-dir", self.spool, "--interface", "127.0.0.1", "--port", "0")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("not writable by user daemon", p.stderr)
        os.chmod(self.spool, 0o755)
        d = self.relay(sockets=[harness.listening_socket()])
        self.send(d.port)
        self.assertEqual(len(harness.spool_messages(self.spool)), 1)
        pids = relay_processes(self.spool)
        self.assertEqual(len(pids), 2)
        for pid in pids:
            self.assertEqual(os.stat("/proc/%d" % pid).st_uid, daemon.pw_uid)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to switch users")
    def test_pid_and_log_files_survive_the_user_switch(self):
        """The pid file (in a directory only root may write) is created before the switch to
        daemon, and the children, running as daemon, can still append to the log file."""
        import pwd
        daemon = pwd.getpwnam("daemon")
        os.chown(self.spool, daemon.pw_uid, daemon.pw_gid)
        self.user = []
        pid_file = os.path.join(self.work, "run", "emailrelay.pid")
        os.mkdir(os.path.dirname(pid_file), 0o755)
        sock = harness.listening_socket()
        d = harness.Daemon([self.installed_suite(), "--as-server", "--spool-dir", self.spool, "--pid-file", pid_file,
                            "--log-file", self.log], [sock])
        self.assertEqual(d.proc.wait(timeout=20), 0, d.output())
        sock_port = sock.getsockname()[1]
        sock.close()
        self.assertTrue(harness.wait_for(lambda: os.path.exists(pid_file) and read(pid_file).strip().isdigit()))
        pid = int(read(pid_file))
        self.send(sock_port)
        self.assertTrue(harness.wait_for(lambda: "emailrelay-smtpd: " in read(self.log)), read(self.log))
        self.assertIn("accepted", read(self.log))
        os.kill(pid, signal.SIGTERM)
        self.assertTrue(harness.wait_for(lambda: relay_processes(self.spool) == [], timeout=15))

    def test_passed_socket_without_its_option(self):
        pop = harness.listening_socket()
        d = self.relay(sockets=[harness.listening_socket(), pop], names=["smtp", "pop3"])
        self.assertEqual(d.proc.wait(timeout=20), 1)
        self.assertIn('socket "pop3" passed in LISTEN_FDS, but --pop is not given', d.output())

    def test_private_wakeup_file_wins_over_a_configured_one(self):
        """--forward-on-disconnect forwards on commit even when the config names a wake-up file
        (as a units install's /etc/emailrelay.conf might)."""
        config = os.path.join(self.work, "emailrelay.conf")
        with open(config, "w") as f:
            f.write("wakeup-file %s\nforward-to %s\nforward-on-disconnect\n"
                    % (os.path.join(self.work, "elsewhere"), self.sink_sock))
        self.start_sink()
        d = harness.Daemon([FRONTEND, "--no-daemon", "--spool-dir", self.spool, *self.user, config],
                           [harness.listening_socket()])
        self.daemons.append(d)
        self.send(d.port)
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 1, timeout=20), d.output())
        self.assertFalse(os.path.exists(os.path.join(self.work, "elsewhere")))

    def test_a_dying_daemon_stops_the_relay(self):
        """Nothing is restarted behind the administrator's back: the relay stops with status 1."""
        d = self.relay("--log-file", self.log, sockets=[harness.listening_socket()])
        self.assertTrue(harness.wait_for(lambda: len(relay_processes(self.spool)) == 2, timeout=10))
        child = [pid for pid in relay_processes(self.spool) if pid != d.proc.pid]
        self.assertEqual(len(child), 1, relay_processes(self.spool))
        os.kill(child[0], signal.SIGKILL)
        self.assertEqual(d.proc.wait(timeout=20), 1)
        self.assertRegex(read(self.log), r"emailrelay-smtpd exited unexpectedly \(signal 9\)")

    def test_a_killed_front_end_takes_its_daemons_with_it(self):
        """SIGKILL (or the OOM killer) gives the front-end no chance to stop its daemons: they
        stop by themselves, so a restart can bind the ports again."""
        self.start_sink()
        secrets = os.path.join(self.work, "pop.auth")
        with open(secrets, "w") as f:
            f.write("server plain carol c4r0l\n")
        sock, pop = harness.listening_socket(), harness.listening_socket()
        port = sock.getsockname()[1]
        d = self.relay("--pop", "--pop-auth", secrets, "--poll", "1",
                       "--forward-to", self.sink_sock, sockets=[sock, pop], names=["smtp", "pop3"])
        self.assertTrue(harness.wait_for(lambda: len(relay_processes(self.spool)) >= 3, timeout=10),
                        d.output())
        sock.close()
        pop.close()
        d.proc.kill()
        d.proc.wait(timeout=10)
        self.assertTrue(harness.wait_for(lambda: relay_processes(self.spool) == [], timeout=10),
                        "daemons left behind: %s" % relay_processes(self.spool))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)


class AdminClient:
    """E-MailRelay's admin interface: a command out, the reply's lines back (up to the prompt)."""
    PROMPT = b"E-MailRelay> "

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def cmd(self, text, eol="\r\n"):
        self.sock.sendall((text + eol).encode())
        return self.reply()

    def reply(self):
        while self.PROMPT not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed; buffered: %r" % self.buf)
            self.buf += chunk
        reply, _, self.buf = self.buf.partition(self.PROMPT)
        return reply.decode().split("\r\n")[:-1]

    def closed(self):
        try:
            self.sock.settimeout(10)
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (scripts/deps --test installs postfix)")
class AdminTest(FrontendTestCase):
    """--admin: E-MailRelay's admin interface, on a socket passed as "admin"."""

    def admin_relay(self, *args):
        smtp, admin = harness.listening_socket(), harness.listening_socket()
        d = self.relay("--admin", "0", *args, sockets=[smtp, admin], names=["smtp", "admin"])
        self.admin_port = admin.getsockname()[1]
        c = AdminClient(self.admin_port)
        self.addCleanup(c.close)
        return d, c

    def ids(self, state="envelope"):
        return sorted(f[:-len("." + state)] for f in os.listdir(self.spool) if f.endswith("." + state))

    def test_list_flush_failures_unfail_all(self):
        self.start_sink()
        d, c = self.admin_relay("--forward-to", self.sink_sock)
        self.assertEqual(c.cmd("help"), ["commands: failures, flush, forward, help, info, list, pid, quit, "
                                         "status, unfail-all"])
        self.assertEqual(c.cmd("list"), ["<none>"])
        self.assertEqual(c.cmd("flush"), ["error: no messages to send"])
        self.send(d.port, n=2)
        self.assertEqual(c.cmd("LIST", eol="\n"), self.ids())   # netcat's LF, and any case
        self.assertEqual(c.cmd("flush"), ["OK"])
        self.assertEqual(self.sink_count(), 2)   # OK comes after the forwarder's end
        self.assertEqual(c.cmd("list"), ["<none>"])

        # A message that failed, and one that waits for its retry time: flush sends both.
        self.submit()
        bad = self.ids()[0]
        os.rename(os.path.join(self.spool, bad + ".envelope"), os.path.join(self.spool, bad + ".envelope.bad"))
        self.assertEqual(c.cmd("failures"), [bad])
        self.assertEqual(c.cmd("unfail-all"), ["OK"])
        self.assertEqual(c.cmd("failures"), ["<none>"])
        self.assertEqual(c.cmd("list"), [bad])
        self.submit()
        waiting = [i for i in self.ids() if i != bad][0]
        with open(os.path.join(self.spool, waiting + ".envelope"), "ab") as f:
            f.write(b"X-MailRelay-NextRetry: %d\r\n" % (time.time() + 3600))
        c.sock.sendall(b"flush\r\nlist\r\n")   # the list waits for the flush's answer
        self.assertEqual(c.reply(), ["OK"])
        self.assertEqual(c.reply(), ["<none>"])
        self.assertEqual(self.sink_count(), 4)
        self.assertIn("admin flush from 127.0.0.1", d.output())

        self.assertEqual(c.cmd("pid"), [str(d.proc.pid)])
        self.assertRegex(c.cmd("status")[0], r"^smtp server: running, pid \d+ \(emailrelay-smtpd\)$")
        self.assertEqual(c.cmd("bogus"), ["error: unrecognised command"])
        self.assertEqual(c.cmd("terminate"), ["error: unrecognised command"])   # not without --admin-terminate
        self.assertEqual(c.cmd("forward"), ["OK"])
        c.sock.sendall(b"quit\r\n")
        self.assertTrue(c.closed())
        self.assertIsNone(d.proc.poll())
        self.assertEqual(d.stop(signal.SIGTERM), 0, d.output())   # a clean exit: the sanitizers' leak check
        self.assertNotIn("Sanitizer", d.output())

    def test_flush_says_why_it_failed(self):
        d, c = self.admin_relay("--forward-to", os.path.join(self.work, "nobody-listens"))
        self.send(d.port)
        self.assertEqual(c.cmd("flush"), ["error: the next hop is not available: see the log"])
        self.assertEqual(len(self.ids()), 1)

    def test_client_leaving_mid_flush(self):
        """The next hop says nothing; the client of the flush goes away. Others are served, and
        the relay still stops cleanly."""
        silent = socket.socket(socket.AF_UNIX)
        self.addCleanup(silent.close)
        path = os.path.join(self.work, "silent.sock")
        silent.bind(path)
        silent.listen(8)   # connections complete in the backlog, and never get a greeting
        d, c = self.admin_relay("--forward-to", path)
        self.send(d.port)
        c.sock.sendall(b"flush\r\n")
        # The forwarder has connected, and waits for a greeting that never comes.
        silent.settimeout(20)
        conn, _ = silent.accept()
        self.addCleanup(conn.close)
        c.close()
        other = AdminClient(self.admin_port)
        self.addCleanup(other.close)
        self.assertRegex(other.cmd("status")[-1], r"^forwarding: running, pid \d+")
        # The forwarder waits for a greeting: SIGTERM cuts that short, and counts no attempt.
        self.assertEqual(d.stop(signal.SIGTERM), 0, d.output())
        self.assertNotIn("Sanitizer", d.output())
        self.assertIn("left in the queue: stopping while connecting to %s" % path, d.output())
        [mid] = self.ids()
        self.assertNotIn("Reason", read(os.path.join(self.spool, mid + ".envelope")))

    def test_poke_and_terminate(self):
        """E-MailRelay's emailrelay-poke: FLUSH and CRLF, one read. Then terminate, when allowed."""
        d, c = self.admin_relay("--admin-terminate")
        c.sock.sendall(b"FLUSH\r\n")
        self.assertEqual(c.sock.recv(160), b"error: no remote server configured: use --forward-to\r\nE-MailRelay> ")
        self.assertIn("terminate", c.cmd("help")[0])
        self.assertEqual(c.cmd("terminate"), ["OK"])
        self.assertEqual(d.proc.wait(timeout=20), 0)

    def test_usage_errors(self):
        p = self.run_frontend("--no-daemon", "--spool-dir", self.spool, "--admin-terminate")
        self.assertEqual(p.returncode, 1)
        self.assertIn("--admin-terminate needs --admin", p.stderr)
        p = self.run_frontend("--as-client", "127.0.0.1:9", "--spool-dir", self.spool, "--admin", "10026")
        self.assertEqual(p.returncode, 1)
        self.assertIn("--admin needs a server", p.stderr)
        d = self.relay(sockets=[harness.listening_socket(), harness.listening_socket()], names=["smtp", "admin"])
        self.assertEqual(d.proc.wait(timeout=20), 1)
        self.assertIn('socket "admin" passed in LISTEN_FDS, but --admin is not given', d.output())

@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (scripts/deps --test installs postfix)")
@unittest.skipUnless(os.geteuid() == 0, "needs root: E-MailRelay's spool is root's")
class UpgradeTest(FrontendTestCase):
    """A spool left by E-MailRelay, made the way it makes one: the directory by root (0755), the
    messages root's, 0600 and 0660, and a pop-by-name subdirectory. The front-end started by root
    gives it to --user before it drops privileges for good, and the queued mail goes out;
    emailrelay-queue adopt does the same for the units; both refuse what would be unsafe."""

    def setUp(self):
        super().setUp()
        import pwd
        self.pw = pwd.getpwnam("daemon")
        self.user = []
        self.frontend = self.installed_suite()
        for mode in (0o600, 0o660):
            before = set(os.listdir(self.spool))
            self.submit()
            for name in set(os.listdir(self.spool)) - before:
                os.chmod(os.path.join(self.spool, name), mode)
        self.alice = os.path.join(self.spool, "alice")
        os.mkdir(self.alice, 0o755)
        envelope = sorted(n for n in os.listdir(self.spool) if n.endswith(".envelope"))[0]
        shutil.copy(os.path.join(self.spool, envelope), self.alice)
        os.chmod(os.path.join(self.alice, envelope), 0o600)
        # copy:hardlink's pop-by-name copy: the content linked, not copied.
        content = envelope[:-len(".envelope")] + ".content"
        os.link(os.path.join(self.spool, content), os.path.join(self.alice, content))
        self.files = [os.path.join(d, n) for d in (self.spool, self.alice) for n in os.listdir(d)
                      if os.path.isfile(os.path.join(d, n))]
        self.assertEqual(len(self.files), 6)

    def owners(self):
        return {(os.stat(f).st_uid, os.stat(f).st_gid) for f in self.files + [self.spool, self.alice]
                if os.path.exists(f)}   # forwarded ones are gone

    def test_frontend_takes_over_and_forwards(self):
        hop = harness.RecordingHop()
        hop.start()
        self.addCleanup(hop.close)
        d = self.relay("--forward", "--poll", "3600", "--forward-to", "127.0.0.1:%d" % hop.port, "--log",
                       "--log-file", self.log, sockets=[harness.listening_socket()])
        self.assertTrue(harness.wait_for(lambda: [l for l in hop.lines if l == "DATA"] == ["DATA"] * 2, timeout=30),
                        (hop.lines, d.output()))
        self.assertTrue(harness.wait_for(lambda: not any(n.endswith(".envelope") for n in os.listdir(self.spool)),
                                         timeout=20), os.listdir(self.spool))
        log = read(self.log)
        self.assertIn("spool directory %s: owner 0:0 mode 0755 -> daemon (%d:%d) mode 0755"
                      % (os.path.realpath(self.spool), self.pw.pw_uid, self.pw.pw_gid), log)
        # Five files, the linked content counted once: its second name is then daemon's already.
        self.assertRegex(log, r"spool %s taken over for user daemon: 2 directories and 5 files changed, 1 already theirs, "
                         r"0 refused" % re.escape(os.path.realpath(self.spool)))
        self.assertEqual(self.owners(), {(self.pw.pw_uid, self.pw.pw_gid)})
        # The modes stay E-MailRelay's: only the owner changed.
        self.assertEqual(oct(os.stat(os.path.join(self.alice, os.listdir(self.alice)[0])).st_mode & 0o777), "0o600")
        self.assertEqual(d.stop(), 0)

    def queue_adopt(self, *args):
        return subprocess.run([QUEUE, "--spool-dir", self.spool, "adopt", *args], capture_output=True, text=True, timeout=30)

    def test_queue_adopt(self):
        p = self.queue_adopt("--user", "daemon")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("taken over for user daemon: 2 directories and 5 files changed, 1 already theirs, 0 refused", p.stderr)
        self.assertEqual(self.owners(), {(self.pw.pw_uid, self.pw.pw_gid)})
        p = self.queue_adopt("--user", "daemon")
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "%s is already user daemon's: nothing changed" % self.spool))
        p = self.queue_adopt("--user", "no-such-user-here")
        self.assertEqual(p.returncode, 1)
        self.assertIn("--user no-such-user-here: no such user", p.stderr)
        p = subprocess.run(["setpriv", "--reuid", "daemon", "--regid", "daemon", "--clear-groups", QUEUE, "--spool-dir",
                            self.spool, "adopt"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("adopt changes owners: run it as root", p.stderr)

    def test_unsafe_spools_are_refused(self):
        # A root file with a second link elsewhere: giving it away would give the other away too.
        other = os.path.join(self.work, "elsewhere")
        target = [f for f in self.files if os.stat(f).st_nlink == 1][0]   # not the pop-by-name copy's
        os.link(target, other)
        p = self.queue_adopt("--user", "daemon")
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s has 2 links, not all in the spool: left to root" % os.path.basename(target), p.stderr)
        self.assertEqual(os.stat(other).st_uid, 0)
        self.assertIn("1 refused", p.stderr)
        os.unlink(other)
        # A spool of a third user's, or one whose parent others may write: refused, nothing changed.
        nobody = __import__("pwd").getpwnam("nobody")
        for f in self.files + [self.alice]:
            os.chown(f, 0, 0)
        os.chown(self.spool, nobody.pw_uid, nobody.pw_gid)
        p = self.queue_adopt("--user", "daemon")
        self.assertEqual(p.returncode, 1)
        self.assertIn("it belongs to uid %d, not root" % nobody.pw_uid, p.stderr)
        os.chown(self.spool, 0, 0)
        os.chmod(self.work, 0o777)
        p = self.queue_adopt("--user", "daemon")
        self.assertEqual(p.returncode, 1)
        self.assertIn("its parent directory %s is writable by others (mode 0777)" % os.path.realpath(self.work), p.stderr)
        # The front-end refuses to start on it rather than run with mail it cannot send.
        p = self.run_frontend("--no-daemon", "--spool-dir", self.spool, "--interface", "127.0.0.1", "--port", "0")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("the spool directory %s cannot be given to user daemon (--user)" % self.spool, p.stderr)
        self.assertEqual(self.owners(), {(0, 0)})


class ImmediateTest(FrontendTestCase):
    """--immediate: the client's end of data is answered with the next hop's own reply, and the
    spool keeps nothing."""

    def transaction(self, port):
        """MAIL, RCPT, DATA and the message; returns the reply to its end."""
        c = harness.SmtpClient(port)
        self.addCleanup(c.close)
        self.assertTrue(c.reply()[0].startswith("220"))
        c.cmd("EHLO client.test")
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0][:3], "250")
        self.assertEqual(c.cmd("RCPT TO:<b@example.com>")[0][:3], "250")
        self.assertEqual(c.cmd("DATA")[0][:3], "354")
        c.send(MESSAGE + b".\r\n")
        return c.reply()

    def test_the_next_hops_answer(self):
        self.start_sink()
        d = self.relay("--immediate", "--forward-to", self.sink_sock, sockets=[harness.listening_socket()])
        reply = self.transaction(d.port)
        self.assertEqual(reply, ["250 2.0.0 Ok"])   # smtp-sink's words: ours would be "message processed"
        self.assertEqual(self.sink_count(), 1)   # there before the 250 came back
        self.assertEqual(os.listdir(self.spool), [])
        self.assertIn("forwarded immediately", d.output())
        self.assertEqual(d.stop(signal.SIGTERM), 0, d.output())   # a clean exit: the sanitizers' leak check
        self.assertNotIn("Sanitizer", d.output())

    def test_refusals_and_a_dead_next_hop_are_the_clients(self):
        self.sink = subprocess.Popen([SINK, "-u", "nobody", "-f", ".", "unix:" + self.sink_sock, "100"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.assertTrue(harness.wait_for(lambda: os.path.exists(self.sink_sock)))
        d = self.relay("--immediate", "--forward-to", self.sink_sock, sockets=[harness.listening_socket()])
        self.assertRegex(self.transaction(d.port)[0], r"^5\d\d ")   # smtp-sink -f .: a hard refusal
        self.assertEqual(os.listdir(self.spool), [])
        self.assertIn("refused by the next hop", d.output())
        self.sink.terminate()
        self.sink.wait(timeout=10)
        self.sink = None
        os.unlink(self.sink_sock)
        self.assertRegex(self.transaction(d.port)[0], r"^451 4\.4\.1 next hop not available: cannot connect to ")
        self.assertEqual(os.listdir(self.spool), [])

    def test_smtpd_with_the_shared_config_file(self):
        """As the units run it: emailrelay-smtpd --immediate, the forwarder's options in the
        config file both read."""
        self.start_sink()
        config = os.path.join(self.work, "emailrelay.conf")
        with open(config, "w") as f:
            f.write("forward-to %s\nimmediate\n" % self.sink_sock)
        d = harness.Daemon([harness.program("emailrelay-smtpd"), "--spool-dir", self.spool, config],
                           [harness.listening_socket()])
        self.daemons.append(d)
        self.assertEqual(self.transaction(d.port), ["250 2.0.0 Ok"])
        self.assertEqual(self.sink_count(), 1)
        self.assertEqual(os.listdir(self.spool), [])

    def test_forwarder_errors_reach_the_log(self):
        """The forwarder that smtpd runs logs where smtpd logs: a config without forward-to is
        said there, and the client gets a temporary refusal."""
        d = harness.Daemon([harness.program("emailrelay-smtpd"), "--spool-dir", self.spool, "--immediate", "/dev/null"],
                           [harness.listening_socket()])
        self.daemons.append(d)
        self.assertRegex(self.transaction(d.port)[0], r"^451 4\.4\.1 next hop not available")
        self.assertTrue(harness.wait_for(lambda: "emailrelay-forward: error:" in d.output()), d.output())
        self.assertEqual(os.listdir(self.spool), [])

    def test_only_local_recipients_left_are_stored(self):
        """A filter that turns every recipient local: nothing for the next hop, so the message
        is stored as without --immediate, and the client gets smtpd's own 250."""
        self.start_sink()
        filt = os.path.join(self.work, "all-local")
        with open(filt, "w") as f:
            f.write('#!/bin/sh\nenv="$(echo "$1" | sed "s/content$/envelope.new/")"\n'
                    'sed -i "s/^X-MailRelay-To-Remote: /X-MailRelay-To-Local: /" "$env"\nexit 0\n')
        os.chmod(filt, 0o755)
        d = self.relay("--immediate", "--forward-to", self.sink_sock, "--filter", filt,
                       sockets=[harness.listening_socket()])
        self.assertEqual(self.transaction(d.port), ["250 2.0.0 message processed"])
        self.assertEqual(self.sink_count(), 0)
        [m] = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope")
        self.assertIn(b"X-MailRelay-To-Local: b@example.com", m.envelope)

    def test_one_next_hop_connection_per_client_session(self):
        """As E-MailRelay: the next hop sees one connection for as long as a client session lasts,
        however many messages it sends, and a QUIT when the client leaves; a connection the next
        hop drops while the client is idle (421 on timeout) is replaced, the message unharmed."""
        hop = harness.RecordingHop()
        hop.start()
        self.addCleanup(hop.close)
        d = self.relay("--immediate", "--forward-to", "127.0.0.1:%d" % hop.port, sockets=[harness.listening_socket()])

        def count(verb):
            return sum(1 for l in hop.lines if l.split(" ")[0].upper() == verb)

        with smtplib.SMTP("127.0.0.1", d.port, timeout=20) as s:
            for i in range(4):
                s.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        self.assertTrue(harness.wait_for(lambda: count("QUIT") == 1), hop.lines)
        self.assertEqual((count("EHLO"), count("DATA")), (1, 4), hop.lines)
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20) as s:
            s.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        self.assertTrue(harness.wait_for(lambda: count("QUIT") == 2), hop.lines)
        self.assertEqual((count("EHLO"), count("DATA")), (2, 5), hop.lines)
        self.assertEqual(os.listdir(self.spool), [])

        class DroppingHop(harness.RecordingHop):
            """Answers each message, then says 421 and hangs up, as on an idle timeout."""
            def command(self, line, conn, f):
                if line.upper() != "DATA":
                    return False
                conn.sendall(b"354 go\r\n")
                for body in f:
                    if body == b".\r\n":
                        break
                conn.sendall(b"250 stored\r\n421 4.4.2 idle too long, closing\r\n")
                conn.shutdown(socket.SHUT_RDWR)
                return True

        dropping = DroppingHop()
        dropping.start()
        self.addCleanup(dropping.close)
        d2 = self.relay("--immediate", "--forward-to", "127.0.0.1:%d" % dropping.port, "--log",
                        sockets=[harness.listening_socket()])
        with smtplib.SMTP("127.0.0.1", d2.port, timeout=20) as s:
            for i in range(2):
                self.assertEqual(s.sendmail("a@example.org", ["b@example.com"], MESSAGE), {})
        self.assertEqual(sum(1 for l in dropping.lines if l.upper().startswith("EHLO")), 2, dropping.lines)
        self.assertIn("was closed while idle: connecting again", d2.output())

    def test_client_filter_failure_is_temporary_and_kept(self):
        """A client filter that fails the message: E-MailRelay's 452 (a filter may pass it later),
        never a permanent 5xx, and the message kept as .bad with the reason, nothing sent; then
        emailrelay-queue retry puts it back and a forwarding pass sends it."""
        self.start_sink()
        filt = os.path.join(self.work, "client-filter")
        flag = os.path.join(self.work, "refuse")
        with open(filt, "w") as f:
            f.write('#!/bin/sh\n[ -e %s ] || exit 0\necho "<<virus scanner busy>>"\nexit 1\n' % flag)
        os.chmod(filt, 0o755)
        open(flag, "w").close()
        d = self.relay("--immediate", "--forward-to", self.sink_sock, "--client-filter", filt,
                       sockets=[harness.listening_socket()])
        self.assertEqual(self.transaction(d.port), ["452 4.3.0 client filter: virus scanner busy"])
        self.assertEqual(self.sink_count(), 0)
        [m] = harness.spool_messages(self.spool)
        self.assertEqual(m.state, "envelope.bad")
        self.assertIn(b"X-MailRelay-Reason: client filter: virus scanner busy", m.envelope)
        self.assertIn(b"X-MailRelay-ReasonCode: 452", m.envelope)
        self.assertIn("kept as %s.envelope.bad" % m.id, d.output())
        os.unlink(flag)
        p = subprocess.run([QUEUE, "--spool-dir", self.spool, "retry", m.id], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run([harness.program("emailrelay-forward"), "--spool-dir", self.spool, "--forward-to",
                            self.sink_sock, "--client-filter", filt, "/dev/null"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.sink_count(), 1)
        self.assertEqual(os.listdir(self.spool), [])


class StopSignalTest(FrontendTestCase):
    """Programs of the suite start with SIGTERM and SIGINT blocked, whoever starts them: a stop
    request that comes before a daemon has its handlers in place then waits for them, instead of
    killing it half-started (a forwarder killed so dies of the signal, status 143, and never says
    what it left in the queue)."""

    STOP_SIGNALS = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))

    def wrap(self, bindir, name, real):
        """bindir/name: records the signal mask it was started with, then runs the real program."""
        path = os.path.join(bindir, name)
        with open(path, "w") as f:
            f.write('#!/bin/sh\nwhile read -r k v; do [ "$k" = SigBlk: ] && echo "$v" >"%s/%s.sigblk"; '
                    'done </proc/$$/status\nexec "%s" "$@"\n' % (self.work, name, real))
        os.chmod(path, 0o755)

    def started_with(self, name):
        path = os.path.join(self.work, name + ".sigblk")
        self.assertTrue(harness.wait_for(lambda: os.path.exists(path) and read(path).endswith("\n")),
                        "%s was not started" % name)
        return int(read(path), 16)

    def bindir(self, *programs):
        """A directory with a copy of each program and a recording wrapper of every sibling."""
        bindir = os.path.join(self.work, "bin")
        os.mkdir(bindir)
        for p in programs:
            shutil.copy(p, bindir)
        for name in ("emailrelay-smtpd", "emailrelay-pop3d", "emailrelay-forward"):
            if not os.path.exists(os.path.join(bindir, name)):
                self.wrap(bindir, name, harness.program(name))
        return bindir

    def test_front_end_daemons(self):
        self.start_sink()
        bindir = self.bindir(FRONTEND)
        secrets = os.path.join(self.work, "pop.auth")
        with open(secrets, "w") as f:
            f.write("server plain carol c4r0l\n")
        smtp, pop = harness.listening_socket(), harness.listening_socket()
        d = harness.Daemon([os.path.join(bindir, "emailrelay"), "--no-daemon", "--spool-dir", self.spool, *self.user,
                            "--pop", "--pop-auth", secrets, "--forward-on-disconnect", "--forward-to",
                            self.sink_sock], [smtp, pop], ["smtp", "pop3"])
        self.daemons.append(d)
        self.send(smtp.getsockname()[1])
        self.assertTrue(harness.wait_for(lambda: self.sink_count() == 1), d.output())
        for name in ("emailrelay-smtpd", "emailrelay-pop3d", "emailrelay-forward"):
            mask = self.started_with(name)
            self.assertEqual(mask & self.STOP_SIGNALS, self.STOP_SIGNALS, "%s started with SigBlk %x" % (name, mask))
        # Each unblocks or takes them when ready: SIGTERM stops everything cleanly.
        self.assertEqual(d.stop(signal.SIGTERM), 0, d.output())
        self.assertNotIn("exited unexpectedly", d.output())
        self.assertNotIn("finished with status", d.output())

    def test_smtpd_immediate_forwarder(self):
        self.start_sink()
        bindir = self.bindir(harness.program("emailrelay-smtpd"))
        config = os.path.join(self.work, "emailrelay.conf")
        with open(config, "w") as f:
            f.write("forward-to %s\nimmediate\n" % self.sink_sock)
        d = harness.Daemon([os.path.join(bindir, "emailrelay-smtpd"), "--spool-dir", self.spool, config],
                           [harness.listening_socket()])
        self.daemons.append(d)
        self.send(d.port)
        self.assertEqual(self.sink_count(), 1)
        mask = self.started_with("emailrelay-forward")
        self.assertEqual(mask & self.STOP_SIGNALS, self.STOP_SIGNALS, "SigBlk %x" % mask)

    def test_forwarder_takes_a_stop_request_that_came_early(self):
        """Started with SIGTERM blocked and already pending, the forwarder stops on request once
        its handler is in place: a clean exit that says what it left, not death by the signal."""
        self.start_sink()
        self.submit()
        p = subprocess.run(["/usr/bin/python3", "-c",
                            "import os, signal, sys\n"
                            "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n"
                            "os.kill(os.getpid(), signal.SIGTERM)\n"
                            "os.execv(sys.argv[1], sys.argv[1:])\n",
                            harness.program("emailrelay-forward"), "--spool-dir", self.spool,
                            "--forward-to", self.sink_sock, "/dev/null"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("stopping on request: 1 message left for the next run", p.stderr)
        self.assertEqual(self.sink_count(), 0)


if __name__ == "__main__":
    harness.main()
