# SPDX-License-Identifier: GPL-3.0-or-later
"""An install works whatever its prefix: meson's default (/usr/local) and a distribution's
(/usr). Each build is installed into a fresh container exactly as the README says, the installed
sample config is used as it comes with only a next hop added (what a user does), and mail goes in
on port 25 and out to smtp-sink through the units. Every path that the programs, the units,
tmpfiles.d and the sample config name must agree for that to work: the sample once named
/var/spool/emailrelay while a /usr/local build's units and tmpfiles.d used /var/local/spool, and
the smtpd unit restarted forever.

The /usr build is this build root (scripts/test-all configures it with --prefix=/usr); the
/usr/local one is configured here from the source tree with nothing but meson's defaults."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SOURCE_ROOT = os.environ.get("EMAILRELAY_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SINK_DIR = "/var/tmp/sink"
SEND = r'''
import smtplib
with smtplib.SMTP("127.0.0.1", 25, local_hostname="client.test", timeout=30) as s:
    s.ehlo()
    print("SIZE", s.esmtp_features.get("size"))
    s.sendmail("a@client.test", ["b@example.com"], b"Subject: install test\r\n\r\nbody\r\n")
'''


def installed(stage, pattern):
    """The one installed path (as seen inside, without the stage) that matches the regex."""
    found = []
    for top, dirs, files in os.walk(stage):
        for f in files:
            path = os.path.join(top, f)[len(stage):]
            if re.search(pattern, path):
                found.append(path)
    if len(found) != 1:
        raise AssertionError("expected one installed file matching %s, found %s" % (pattern, found))
    return found[0]


@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (scripts/deps --test)")
class InstallTests:
    """The tests, for each install below (a mixin: it is no test case of its own)."""
    prefix = None
    build_root = harness.BUILD_ROOT

    @classmethod
    def setUpClass(cls):
        cls.stage = tempfile.mkdtemp(prefix="emailrelay-stage.")
        cls.addClassCleanup(shutil.rmtree, cls.stage, True)
        cls.c = harness.installed_container(cls, build_root=cls.build_root, stage=cls.stage)
        cls.config = installed(cls.stage, r"/etc/emailrelay\.conf$")
        cls.tmpfiles = installed(cls.stage, r"/tmpfiles\.d/emailrelay\.conf$")
        cls.sbin = os.path.dirname(installed(cls.stage, r"/emailrelay-smtpd$"))

    def sh(self, cmd, timeout=60):
        p = self.c.run(cmd, timeout=timeout)
        self.assertEqual(p.returncode, 0, "%s:\n%s%s" % (cmd, p.stdout, p.stderr))
        return p.stdout

    def test_prefix(self):
        self.assertTrue(self.config.startswith(self.expected_sysconfdir), self.config)
        self.assertTrue(self.sbin.startswith(self.prefix), self.sbin)

    def test_paths_agree(self):
        """The sample config, tmpfiles.d, the unit and the programs' own default name one spool."""
        sample = self.sh(["cat", self.config])
        [spool] = re.findall(r"^spool-dir (\S+)$", sample, re.M)
        self.assertRegex(self.sh(["cat", self.tmpfiles]), r"(?m)^d %s 2770 " % re.escape(spool))
        self.assertIn(spool, self.sh(["systemctl", "cat", "emailrelay-smtpd.service"]))
        self.assertIn(self.config, self.sh(["systemctl", "cat", "emailrelay-smtpd.service"]))
        self.assertEqual(self.sh(["stat", "-c", "%U %a", spool]).split(), ["emailrelay", "2770"])
        # emailrelay-queue finds the spool through the installed config file, as a user runs it.
        self.assertIn(spool, self.sh([os.path.join(self.sbin, "emailrelay-queue"), "list"]))

    def test_mail_flows_through_the_units(self):
        """The sample config as installed, plus a next hop: mail in on 25, out to smtp-sink."""
        self.sh("echo 'forward-to 127.0.0.1:10025' >> %s" % self.config)
        self.c.start_sink("sink", 10025, SINK_DIR, SINK)
        self.sh(["systemctl", "enable", "--now", "emailrelay-smtpd.socket", "emailrelay-forward.path"])
        # The sample config's size limit (Postfix's default) is in force.
        self.assertEqual(self.sh(["/usr/bin/python3", "-c", SEND]).split(), ["SIZE", "10240000"])
        self.assertTrue(self.c.wait_until("[ -n \"$(ls -A %s)\" ]" % SINK_DIR, timeout=60),
                        self.sh("systemctl status --no-pager emailrelay-smtpd.service emailrelay-forward.service "
                                "|| true; journalctl --no-pager -q -n 40"))
        self.assertIn("Subject: install test", self.sh("cat %s/*" % SINK_DIR))
        self.assertEqual(self.sh(["systemctl", "show", "-P", "ActiveState", "emailrelay-smtpd.service"]).strip(),
                         "active")
        self.assertEqual(self.sh("systemctl list-units --failed --no-legend 'emailrelay*'"), "")


class UsrInstallTest(InstallTests, unittest.TestCase):
    """This build root: --prefix=/usr, as scripts/test-all and a distribution configure it."""
    prefix = "/usr"
    expected_sysconfdir = "/etc/"

    @classmethod
    def setUpClass(cls):
        p = subprocess.run(["meson", "introspect", "--buildoptions", cls.build_root], capture_output=True, text=True,
                           check=True)
        prefix = [o["value"] for o in json.loads(p.stdout) if o["name"] == "prefix"]
        if prefix != ["/usr"]:
            raise unittest.SkipTest("this build root is configured with --prefix=%s, not /usr" % prefix)
        super().setUpClass()


class DefaultPrefixInstallTest(InstallTests, unittest.TestCase):
    """`meson setup build` with no options at all: prefix /usr/local."""
    prefix = "/usr/local"
    expected_sysconfdir = "/usr/local/etc/"

    @classmethod
    def setUpClass(cls):
        build = tempfile.mkdtemp(prefix="emailrelay-build-default-prefix.")
        cls.addClassCleanup(shutil.rmtree, build, True)
        # Plain: no optimisation, for the build's time; nothing else differs from the defaults.
        for cmd in (["meson", "setup", build, SOURCE_ROOT, "--buildtype=plain"], ["ninja", "-C", build]):
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
            if p.returncode != 0:
                raise RuntimeError("%s failed:\n%s" % (" ".join(cmd), p.stdout[-4000:]))
        cls.build_root = build
        super().setUpClass()


if __name__ == "__main__":
    harness.main()
