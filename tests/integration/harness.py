# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared helpers for the integration tests: where the built programs are, reading a spool,
and a unittest runner whose exit status meson reads."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BUILD_ROOT = os.environ.get("EMAILRELAY_BUILD_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", "build"))

PROGRAM_DIRS = {
    "emailrelay-submit": "src/tools",
    "emailrelay-smtpd": "src/smtpd",
    "emailrelay-forward": "src/forward",
    "emailrelay-pop3d": "src/pop3d",
    "emailrelay-queue": "src/tools",
    "emailrelay-passwd": "src/tools",
    "emailrelay": "src/frontend",
}


def program(name):
    path = os.path.join(BUILD_ROOT, PROGRAM_DIRS.get(name, "src"), name)
    if not os.access(path, os.X_OK):
        raise RuntimeError("%s not built at %s" % (name, path))
    return path


class SpoolMessage:
    """One message in a spool directory: id, state, envelope and content bytes."""

    def __init__(self, spool, mid, state):
        self.spool = spool
        self.id = mid
        self.state = state
        self.envelope_path = os.path.join(spool, mid + "." + state)
        self.content_path = os.path.join(spool, mid + ".content")
        with open(self.envelope_path, "rb") as f:
            self.envelope = f.read()
        with open(self.content_path, "rb") as f:
            self.content = f.read()

    def fields(self):
        out = []
        for line in self.envelope.decode("utf-8", "replace").split("\r\n"):
            if ": " in line or line.endswith(":"):
                k, _, v = line.partition(":")
                out.append((k, v[1:] if v.startswith(" ") else v))
        return out

    def recipients(self):
        return [v for k, v in self.fields() if k in ("X-MailRelay-To-Remote", "X-MailRelay-To-Local")]


def spool_messages(spool, states=("envelope", "envelope.bad", "envelope.busy", "envelope.new")):
    out = []
    for name in sorted(os.listdir(spool)):
        for state in states:
            if name.endswith("." + state):
                out.append(SpoolMessage(spool, name[: -len(state) - 1], state))
                break
    return out


def listening_socket(host="127.0.0.1"):
    """A listening TCP socket on a free port, as systemd's .socket unit would hand over."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(128)
    return s


class Daemon:
    """A program started with sockets passed by LISTEN_FDS (fd 3 on), exactly as systemd does:
    LISTEN_PID is the daemon's own pid (the shell's, kept by exec)."""

    def __init__(self, argv, sockets=(), names=(), env=None):
        self.sockets = list(sockets)
        self.log = tempfile.TemporaryFile()
        fds = [s.fileno() for s in self.sockets]

        def move_fds():
            # Move the passed sockets to 3, 4, ... without clobbering each other.
            tmp = [os.dup(fd) for fd in fds]
            for i, fd in enumerate(tmp):
                os.dup2(fd, 3 + i)
                os.close(fd)

        e = dict(os.environ)
        e.update(env or {})
        if self.sockets:
            e["LISTEN_FDS"] = str(len(self.sockets))
            e["LISTEN_FDNAMES"] = ":".join(names or ["smtp"] * len(self.sockets))
            argv = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; '
                    '[ -n "$WATCHDOG_USEC" ] && WATCHDOG_PID=$$ && export WATCHDOG_PID; exec "$0" "$@"'] + list(argv)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=e, preexec_fn=move_fds if self.sockets else None,
                                     pass_fds=tuple(range(3, 3 + len(self.sockets))))
        self.port = self.sockets[0].getsockname()[1] if self.sockets else None

    def output(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("daemon did not stop within %ds after signal %d:\n%s" % (timeout, sig, self.output()))
        finally:
            for s in self.sockets:
                s.close()

    def __del__(self):
        self.log.close()


class SmtpClient:
    """A raw SMTP client: exact bytes out, exact reply lines back."""

    def __init__(self, port, host="127.0.0.1", timeout=20):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; buffered: %r" % self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def reply(self):
        """One whole (possibly multi-line) reply, as a list of lines."""
        lines = [self.line()]
        while len(lines[-1]) >= 4 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()

    def submit(self, content, sender="a@b", rcpts=("c@d",), ehlo="x"):
        """One whole transaction after the greeting, EHLO to the end of DATA (content already
        dot-stuffed and ending in CRLF.CRLF): the reply to the content, as a list of lines. ehlo
        None: no EHLO (the session has had one)."""
        if ehlo is not None:
            self.cmd("EHLO " + ehlo)
        self.cmd("MAIL FROM:<%s>" % sender)
        for r in rcpts:
            self.cmd("RCPT TO:<%s>" % r)
        self.cmd("DATA")
        self.send(content)
        return self.reply()

    def closed(self):
        """True when the server has closed the connection (after any buffered data)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.sock.close()


class ScriptedServer(threading.Thread):
    """A scripted TCP peer on 127.0.0.1 (port 0), one connection at a time in a thread of its
    own: a subclass's session(conn, f) speaks for it, f being conn's binary file."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = listening_socket()
        self.port = self.sock.getsockname()[1]

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.session(conn, conn.makefile("rb"))

    def session(self, conn, f):
        raise NotImplementedError

    def close(self):
        # shutdown() first: it wakes the thread's accept(), which close() alone leaves blocked on
        # the old socket, still listening, while the fd number goes to the next test's socket.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=10)


class RecordingHop(ScriptedServer):
    """A scripted next hop that records every command line and answers just enough SMTP: EHLO
    with the given extensions, DATA, QUIT, 250 to the rest. A subclass's command(line, conn, f)
    answers what it wants to answer itself and returns True."""

    def __init__(self, extensions=("8BITMIME",), host="127.0.0.1"):
        super().__init__()
        if host != "127.0.0.1":
            self.sock.close()
            self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            self.sock.bind((host, 0))
            self.sock.listen(8)
            self.port = self.sock.getsockname()[1]
        self.extensions, self.lines = list(extensions), []

    def command(self, line, conn, f):
        return False

    def session(self, conn, f):
        conn.sendall(b"220 recorder\r\n")
        for raw in f:
            line = raw.decode().rstrip("\r\n")
            self.lines.append(line)
            verb = line.split(" ")[0].upper()
            if self.command(line, conn, f):
                continue
            if verb == "EHLO":
                conn.sendall("".join("250-%s\r\n" % x for x in ["recorder"] + self.extensions[:-1]).encode() +
                             ("250 %s\r\n" % (self.extensions[-1] if self.extensions else "recorder")).encode())
            elif verb == "DATA":
                conn.sendall(b"354 go\r\n")
                for body in f:
                    if body == b".\r\n":
                        break
                conn.sendall(b"250 stored\r\n")
            elif verb == "QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")


def wait_for(predicate, timeout=20, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _tcp_sockets():
    """(local port, remote port, state, tx queue, rx queue) of every TCP socket in this network
    namespace, from /proc/net/tcp and tcp6 (states: 01 established, 0A listening; a listening
    socket's rx queue is its accept backlog)."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            tx, rx = (int(x, 16) for x in f[4].split(":"))
            yield int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3], tx, rx


def accept_queue_empty(port):
    """Whether the listener on this port has accepted every connection made to it so far."""
    return all(r[4] == 0 for r in _tcp_sockets() if r[2] == "0A" and r[0] == port)


def main():
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
