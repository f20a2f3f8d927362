# SPDX-License-Identifier: GPL-3.0-or-later
"""A private Postfix instance as a real next hop: its own main.cf, master.cf (only smtpd on a
free loopback port, no chroot), queue and virtual mailboxes under a test directory, started
with `postfix -c DIR start-fg` and stopped by the master's pid. Needs root and Debian's postfix.

    pf = PrivatePostfix(work_dir, extra_main_cf="smtpd_recipient_restrictions = ...")
    pf.start()
    ... forward to ("127.0.0.1", pf.port) ...
    pf.delivered("example.net")   # messages in the virtual mailbox
    pf.stop()
"""

import os
import shutil
import signal
import socket
import subprocess

import harness

AVAILABLE = (os.geteuid() == 0 and bool(shutil.which("postfix")) and os.path.exists("/etc/postfix/master.cf"))
WHY_NOT = "needs root and postfix (scripts/deps --test) for a private Postfix instance"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MAIN_CF = """compatibility_level = 3.6
queue_directory = {pf}/spool
data_directory = {pf}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = /dev/stdout
myhostname = mx.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
virtual_mailbox_domains = example.net
virtual_mailbox_base = {pf}/mail
virtual_mailbox_maps = static:example.net/Maildir/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
"""


class PrivatePostfix:
    def __init__(self, work, extra_main_cf=""):
        self.pf = os.path.join(work, "pf")
        self.etc = os.path.join(self.pf, "etc")
        self.log_path = os.path.join(work, "postfix.log")
        self.extra = extra_main_cf
        self.port = None
        self.proc = None

    def start(self):
        for d in ("etc", "spool", "data", "mail"):
            os.makedirs(os.path.join(self.pf, d), exist_ok=True)
        shutil.chown(os.path.join(self.pf, "data"), "postfix")
        os.chown(os.path.join(self.pf, "mail"), 65534, 65534)
        self.port = free_port()
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(pf=self.pf) + self.extra.format(pf=self.pf) + "\n")
        out = []
        with open("/etc/postfix/master.cf") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and not line[0].isspace() and not line.startswith("#"):
                    fields[4] = "n"   # no chroot
                    if fields[0] == "smtp" and fields[1] == "inet":
                        fields[0] = "127.0.0.1:%d" % self.port
                    elif fields[1] == "inet":
                        continue
                    line = " ".join(fields) + "\n"
                out.append(line)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.writelines(out)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["postfix", "-c", self.etc, "start-fg"], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        if not harness.wait_for(up, timeout=30):
            log = self.log_text()
            self.stop()
            raise RuntimeError("postfix did not start:\n" + log)

    def stop(self):
        if self.proc is None:
            return
        # start-fg runs the master as a child of postfix-script: stop the master by its pid file.
        try:
            with open(os.path.join(self.pf, "spool", "pid", "master.pid")) as f:
                os.kill(int(f.read().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.log.close()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, count=1, timeout=30):
        """Wait until text appears count times in the log; return the log. Postfix's daemons log
        through postlogd, so a line may land after the client has had its reply (a session's
        "disconnect" line, written after QUIT, routinely does): assert on the log only after this."""
        harness.wait_for(lambda: self.log_text().count(text) >= count, timeout=timeout)
        return self.log_text()

    def delivered(self, domain="example.net"):
        """Messages in the virtual mailbox, as (recipient header Delivered-To, raw bytes)."""
        d = os.path.join(self.pf, "mail", domain, "Maildir", "new")
        out = []
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            with open(os.path.join(d, name), "rb") as f:
                out.append(f.read())
        return out
