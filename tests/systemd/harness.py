# SPDX-License-Identifier: GPL-3.0-or-later
"""A real systemd for the tests: a throw-away container booted with systemd-nspawn.

The container's root is this machine's own root, bound (non-recursively, inside a private mount
namespace) and booted with --volatile=overlay: read-only below, a tmpfs on top, so everything
installed here is inside and nothing a test writes reaches the host. The meson build root is
bound read-only at /opt/emailrelay-build. --private-network gives the container its own
loopback only, so fixed ports are fine inside. Boots basic.target, so installed daemons
(postfix, dovecot ...) stay down.

Commands run inside with nsenter on the container's PID 1 (systemctl -M and machinectl need a
host systemd, which these machines do not have).

    with Container() as c:
        c.run(["systemctl", "is-system-running"])

Needs root. If systemd-nspawn is missing it is installed (Debian: systemd-container); the tests
are skipped (unittest.SkipTest) only if that is impossible.
"""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BUILD_ROOT = os.path.abspath(os.environ.get("EMAILRELAY_BUILD_ROOT",
                                            os.path.join(os.path.dirname(__file__), "..", "..", "build")))
INSIDE_BUILD = "/opt/emailrelay-build"
INSIDE_SHARED = "/opt/emailrelay-shared"
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Timers basic.target would arm; nothing of theirs belongs in a test.
MASKED = ["apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer",
          "dpkg-db-backup.timer", "fstrim.timer", "logrotate.timer"]


def inside_program(name):
    """Path inside the container of a built program, e.g. inside_program("emailrelay-smtpd")."""
    sub = {"emailrelay-smtpd": "src/smtpd", "emailrelay-forward": "src/forward"}.get(name, "src/tools")
    return os.path.join(INSIDE_BUILD, sub, name)


def ensure_nspawn():
    """Path of systemd-nspawn, installing systemd-container if needed; SkipTest if impossible."""
    path = shutil.which("systemd-nspawn")
    if path:
        return path
    if os.geteuid() != 0:
        raise unittest.SkipTest("systemd-nspawn is missing and installing it needs root")
    if not shutil.which("apt-get"):
        raise unittest.SkipTest("systemd-nspawn is missing and there is no apt-get to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "systemd-container"], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=300, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        raise unittest.SkipTest("systemd-nspawn is missing and could not be installed: %s" % e)
    path = shutil.which("systemd-nspawn")
    if not path:
        raise unittest.SkipTest("systemd-nspawn is still missing after installing systemd-container")
    return path


def _children(pid):
    """Direct children of pid (from /proc/<pid>/task/*/children)."""
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


class ContainerError(RuntimeError):
    pass


class Container:
    """One booted container. start() boots it (bounded by boot_timeout), run() runs a command
    inside, stop() powers it off (and kills it if it will not go); stop() is also registered
    with atexit, so an interrupted test run leaves nothing behind."""

    def __init__(self, build_root=BUILD_ROOT, shared_dir=None, boot_timeout=60, target="basic.target"):
        self.build_root = build_root
        self.shared_dir = shared_dir          # host directory bound writable at INSIDE_SHARED
        self.boot_timeout = boot_timeout
        self.target = target
        self.name = "emailrelay-test-%d" % os.getpid()
        self.proc = None                      # the systemd-nspawn process (unshare exec'd into it)
        self.leader = None                    # the container's PID 1, as seen from here
        self.root = None
        self.console_path = None
        self.boot_seconds = None

    # -- life cycle --

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        nspawn = ensure_nspawn()
        if os.geteuid() != 0:
            raise unittest.SkipTest("booting a container needs root")
        for tool in ("unshare", "nsenter", "mount"):
            if not shutil.which(tool):
                raise unittest.SkipTest("%s is missing" % tool)
        if not os.path.isdir(self.build_root):
            raise ContainerError("no build root at %s (set EMAILRELAY_BUILD_ROOT)" % self.build_root)

        self.root = tempfile.mkdtemp(prefix="emailrelay-nspawn-root.")
        fd, self.console_path = tempfile.mkstemp(prefix="emailrelay-nspawn-console.")
        args = [nspawn, "--quiet", "--directory=" + self.root, "--machine=" + self.name,
                "--volatile=overlay", "--register=no", "--keep-unit", "--link-journal=no",
                "--console=pipe", "--private-network",
                "--bind-ro=%s:%s" % (self.build_root, INSIDE_BUILD)]
        if self.shared_dir:
            args.append("--bind=%s:%s" % (os.path.abspath(self.shared_dir), INSIDE_SHARED))
        args += ["--boot", "systemd.unit=" + self.target]
        args += ["systemd.mask=" + u for u in MASKED]
        # unshare without --fork execs: the shell, and then systemd-nspawn, keep the pid we get.
        # The bind of / lives only in that private mount namespace and goes with it.
        script = 'mount --bind / "$0" && exec "$@"'
        t0 = time.monotonic()
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                                      self.root] + args,
                                     stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True)
        os.close(fd)
        atexit.register(self.stop)
        try:
            self._wait_for_leader(t0)
            state = self._wait_until_booted(t0)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - t0
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-pager", "--no-legend"]).stdout
            sys.stderr.write("container booted degraded; failed units:\n%s" % failed)

    def _alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _deadline_left(self, t0):
        return self.boot_timeout - (time.monotonic() - t0)

    def _wait_for_leader(self, t0):
        while self._deadline_left(t0) > 0:
            if not self._alive():
                raise ContainerError("systemd-nspawn exited (%s) before booting:\n%s" % (self.proc.returncode, self.console()))
            for child in _children(self.proc.pid):
                if _comm(child) == "systemd":
                    self.leader = child
                    return
            time.sleep(0.05)
        raise ContainerError("no container init within %d s:\n%s" % (self.boot_timeout, self.console()))

    def _wait_until_booted(self, t0):
        state = ""
        while self._deadline_left(t0) > 0:
            if not self._alive():
                raise ContainerError("systemd-nspawn exited (%s) while booting:\n%s" % (self.proc.returncode, self.console()))
            try:
                state = self.run(["systemctl", "is-system-running"], timeout=10).stdout.strip()
            except subprocess.TimeoutExpired:
                state = "timeout"
            if state in ("running", "degraded"):
                return state
            time.sleep(0.1)
        journal = ""
        try:
            journal = self.run(["journalctl", "-b", "--no-pager", "-q", "-n", "60"], timeout=10).stdout
        except Exception:
            pass
        raise ContainerError("boot did not finish within %d s (state %r)\nconsole:\n%s\njournal:\n%s"
                             % (self.boot_timeout, state, self.console(), journal))

    def stop(self, timeout=30):
        """Power off; SIGTERM then SIGKILL systemd-nspawn if it does not exit in time. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None and self.leader:
                try:
                    self._nsenter(["systemctl", "poweroff", "--no-block"], timeout=10)
                except Exception:
                    pass
            for sig, wait in ((None, timeout), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                if sig is not None and proc.poll() is None:
                    try:
                        os.killpg(proc.pid, sig)   # its own session: nspawn and anything it left
                    except ProcessLookupError:
                        pass
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.leader = None
        if self.root:
            try:
                os.rmdir(self.root)       # empty: the bind was in the container's namespace only
            except OSError:
                pass
            self.root = None
        shutil.rmtree("/run/systemd/nspawn/propagate/" + self.name, ignore_errors=True)
        if self.console_path:
            try:
                os.unlink(self.console_path)
            except OSError:
                pass
            self.console_path = None
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass

    # -- inside --

    def _nsenter(self, cmd, input=None, timeout=60):
        # --root and --wd as well: entering the mount namespace lands at its root mount, which
        # is the container's only when nspawn ran at a real root; from a chroot (the fresh
        # machine's tree, tests/fresh/run) it is the host's. The container's PID 1 knows.
        argv = ["nsenter", "--target", str(self.leader), "--all", "--root", "--wd",
                "env", "-i", "PATH=" + INSIDE_PATH, "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"] + list(cmd)
        return subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, text=isinstance(input, str) or input is None)

    def run(self, cmd, input=None, timeout=60, check=False):
        """Run cmd (a list) inside; returns a CompletedProcess (text unless input is bytes).
        A str cmd is run by /bin/sh -c."""
        if self.leader is None:
            raise ContainerError("container is not running")
        if isinstance(cmd, str):
            cmd = ["/bin/sh", "-c", cmd]
        p = self._nsenter(cmd, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise ContainerError("%r exited %d inside the container:\n%s%s" % (cmd, p.returncode, p.stdout, p.stderr))
        return p

    def wait_until(self, shell, timeout=30):
        """True once the shell command succeeds inside, False if it never did within timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run(shell).returncode == 0:
                return True
            time.sleep(0.2)
        return False

    def start_sink(self, unit, port, dump_dir, smtp_sink="/usr/sbin/smtp-sink"):
        """Postfix's smtp-sink as a transient unit on 127.0.0.1:port (the container's own
        network: fixed ports are private to it), dumping each message into dump_dir."""
        self.run("mkdir -p %s && chmod 777 %s" % (dump_dir, dump_dir), check=True)
        self.run(["systemd-run", "--unit=" + unit, "--property=Restart=no", smtp_sink, "-u", "nobody",
                  "-d", dump_dir.rstrip("/") + "/", "127.0.0.1:%d" % port, "1000"], check=True)
        if not self.wait_until("ss -ltn | grep -q ':%d '" % port):
            raise ContainerError("smtp-sink did not start on port %d" % port)

    def python(self, code, timeout=60, check=False):
        """Run a Python snippet inside with /usr/bin/python3."""
        return self.run(["/usr/bin/python3", "-c", code], timeout=timeout, check=check)

    def console(self):
        """What systemd-nspawn and the container printed on the console so far."""
        if not self.console_path:
            return ""
        try:
            with open(self.console_path, errors="replace") as f:
                return f.read()[-8000:]
        except OSError:
            return ""


def installed_container(test_class, build_root=BUILD_ROOT, stage=None):
    """A booted container with a build (this one unless build_root says) installed as a package
    would leave it: `meson install` into a staging directory (stage, or a temporary one),
    copied over the container's root, then sysusers, tmpfiles, the journal catalog and
    daemon-reload. Cleanups are registered on test_class."""
    if stage is None:
        stage = tempfile.mkdtemp(prefix="emailrelay-stage.")
        test_class.addClassCleanup(shutil.rmtree, stage, True)
    p = subprocess.run(["meson", "install", "-C", build_root, "--destdir", stage, "--no-rebuild", "--quiet"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("meson install failed:\n" + p.stdout)
    c = Container(build_root=build_root, shared_dir=stage)
    test_class.addClassCleanup(c.stop)
    c.start()
    sys.stderr.write("container booted in %.2f s\n" % c.boot_seconds)
    c.run("tar -C %s -cf - . | tar -C / -xf - --keep-directory-symlink --no-overwrite-dir" % INSIDE_SHARED, check=True)
    c.run("systemd-sysusers && systemd-tmpfiles --create && journalctl --update-catalog && systemctl daemon-reload",
          check=True)
    return c


def main():
    """unittest.main, with an exit status meson reads (77 when everything was skipped)."""
    prog = unittest.main(exit=False, verbosity=2)
    r = prog.result
    if not r.wasSuccessful():
        sys.exit(1)
    if r.testsRun > 0 and len(r.skipped) == r.testsRun:
        sys.exit(77)
    sys.exit(0)
