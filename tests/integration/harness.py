# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared helpers for the integration tests: where the built programs are, reading a spool,
and a unittest runner whose exit status meson reads."""

import os
import sys
import unittest

BUILD_ROOT = os.environ.get("EMAILRELAY_BUILD_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", "build"))

PROGRAM_DIRS = {
    "emailrelay-submit": "src/tools",
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


def main():
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
