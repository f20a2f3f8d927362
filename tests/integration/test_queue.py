# SPDX-License-Identifier: GPL-3.0-or-later
"""emailrelay-queue through its command line, on spools written by emailrelay-submit and by hand
in E-MailRelay's own formats: the list and show output (text and JSON), retry with the retry
limit, delete against a forwarder's lock, flush's make-due step and its forwarder start."""

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

QUEUE = harness.program("emailrelay-queue")
SUBMIT = harness.program("emailrelay-submit")

CRLF = b"\r\n"
LF = b"\n"


def b(s):
    return s if isinstance(s, bytes) else s.encode()


def envelope(version, sender, remote=(), local=(), trailer=(), eol=CRLF, client="192.0.2.1", auth=""):
    """An envelope as E-MailRelay writes it, format #2821.<version> (3 to 8), with the lines of
    trailer after End."""
    lines = [b"X-MailRelay-Format: #2821.%d" % version]
    if version >= 5:
        lines.append(b"X-MailRelay-Content: 8bit")
    lines += [b"X-MailRelay-From: " + b(sender), b"X-MailRelay-ToCount: %d" % (len(remote) + len(local))]
    lines += [b"X-MailRelay-To-Local: " + b(t) for t in local]
    lines += [b"X-MailRelay-To-Remote: " + b(t) for t in remote]
    lines += [b"X-MailRelay-Authentication: " + b(auth), b"X-MailRelay-Client: " + b(client)]
    if version == 4:
        lines.append(b"X-MailRelay-ClientName: client.example")
    if version >= 4:
        lines.append(b"X-MailRelay-ClientCertificate: ")
    if version >= 5:
        lines += [b"X-MailRelay-MailFromAuthIn: ", b"X-MailRelay-MailFromAuthOut: "]
    if version >= 6:
        lines += [b"X-MailRelay-ForwardTo: ", b"X-MailRelay-ForwardToAddress: "]
    if version >= 8:
        lines.append(b"X-MailRelay-ClientAccountSelector: ")
    if version >= 7:
        lines.append(b"X-MailRelay-Utf8MailboxNames: 0")
    lines.append(b"X-MailRelay-End: 1")
    lines += [b(t) for t in trailer]
    return eol.join(lines) + eol


# Ids in byte order, as the forwarder takes them: "99" sorts after "800".
ID_SUBMIT = "emailrelay.100.1795459352.1"
ID_V5_LF = "emailrelay.200.1795459352.1"
ID_BAD = "emailrelay.300.1795459352.1"
ID_WAITING = "emailrelay.400.1795459352.1"
ID_BUSY = "emailrelay.500.1795459352.1"
ID_TORN = "emailrelay.600.1795459352.1"
ID_NEW = "emailrelay.700.1795459352.1"
ID_BAD_V6 = "emailrelay.800.1795459352.1"
ID_NULL_SENDER = "emailrelay.99.1795459352.1"


class QueueTest(unittest.TestCase):
    def setUp(self):
        self.spool = tempfile.mkdtemp(prefix="queue-spool-")
        self.locks = []

    def tearDown(self):
        for f in self.locks:
            f.close()
        shutil.rmtree(self.spool, ignore_errors=True)

    def queue(self, *args, expect=0, env=None, spool=True):
        e = dict(os.environ)
        e.update(env or {})
        argv = [QUEUE] + (["--spool-dir", self.spool] if spool else []) + list(args)
        p = subprocess.run(argv, capture_output=True, timeout=30, env=e)
        self.assertEqual(p.returncode, expect, "stdout: %r\nstderr: %r" % (p.stdout, p.stderr))
        p.out = p.stdout.decode("utf-8")
        p.err = p.stderr.decode("utf-8")
        return p

    def path(self, name):
        return os.path.join(self.spool, name)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def put(self, mid, suffix, env, content, age):
        with open(self.path(mid + suffix), "wb") as f:
            f.write(env)
        if content is not None:
            with open(self.path(mid + ".content"), "wb") as f:
                f.write(content)
            t = self.now - age
            os.utime(self.path(mid + ".content"), (t, t))

    def hold_lock(self, name):
        """Take the flock a forwarder holds on the envelope it works on."""
        f = open(self.path(name), "rb")
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.locks.append(f)

    def build_spool(self):
        """One message of each kind, with content ages that print the same whatever the delays."""
        self.now = int(time.time())
        self.next_retry = self.now + 5400
        # A real emailrelay-submit message, renamed to a fixed id as E-MailRelay's tests do.
        p = subprocess.run([SUBMIT, "--spool-dir", self.spool, "carol@example.net", "dave@example.net"],
                           input=b"From: alice@example.com\nSubject: one\n\nhello\n", capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        (made,) = [n[: -len(".envelope")] for n in os.listdir(self.spool) if n.endswith(".envelope")]
        for suffix in (".envelope", ".content"):
            os.rename(self.path(made + suffix), self.path(ID_SUBMIT + suffix))
        t = self.now - 150
        os.utime(self.path(ID_SUBMIT + ".content"), (t, t))
        # E-MailRelay 2.0: #2821.5 with LF line endings and a local recipient.
        self.put(ID_V5_LF, ".envelope", envelope(5, "carol@example.net", ["bob@example.org"], ["postmaster"],
                                                 eol=LF, auth="carol"),
                 b"Subject: two\n\nbody\n", 3 * 3600 + 1800)
        # Failed twice, E-MailRelay's .bad format.
        self.put(ID_BAD, ".envelope.bad",
                 envelope(8, "alice@example.com", ["x@example.com"], trailer=[
                     "X-MailRelay-Reason: 4.3.0 try later", "X-MailRelay-ReasonCode: 451",
                     "X-MailRelay-Reason: 5.6.0 content rejected", "X-MailRelay-ReasonCode: 554"]),
                 b"Subject: three\r\n\r\nrejected body\r\n", 2 * 86400 + 3600)
        # Failed temporarily once, waiting for its next retry (this suite's retry state).
        self.put(ID_WAITING, ".envelope",
                 envelope(8, "alice@example.com", ["y@example.com"], trailer=[
                     "X-MailRelay-Reason: 4.2.0 mailbox busy", "X-MailRelay-ReasonCode: 452",
                     "X-MailRelay-NextRetry: %d" % self.next_retry]),
                 b"Subject: four\r\n\r\nx\r\n", 1830)
        # Locked by a forwarder (E-MailRelay 2.5's #2821.7).
        self.put(ID_BUSY, ".envelope.busy", envelope(7, "alice@example.com", ["z@example.com"]),
                 b"Subject: five\r\n\r\n\r\n", 90)
        self.hold_lock(ID_BUSY + ".envelope.busy")
        # Torn: cut after the Client line, no End.
        torn = envelope(8, "alice@example.com", ["t@example.com"])
        torn = torn[: torn.index(b"X-MailRelay-ClientCertificate")]
        self.put(ID_TORN, ".envelope", torn, b"Subject: six\r\n\r\n", 75)
        # Still being received.
        self.put(ID_NEW, ".envelope.new", envelope(8, "alice@example.com", ["n@example.com"]),
                 b"Subject: seven\r\n\r\n", 1230)
        # E-MailRelay 2.4's #2821.6, failed without a code, with a splitting filter's lines.
        self.put(ID_BAD_V6, ".envelope.bad",
                 envelope(6, "alice@example.com", ["s1@example.com", "s2@example.com"], trailer=[
                     "X-MailRelay-SplitGroupCount: 2", "X-MailRelay-SplitGroup: emailrelay.800.1795459352.2",
                     "X-MailRelay-Reason: connection refused", "X-MailRelay-ReasonCode:"]),
                 b"Subject: eight\r\n\r\n", 45 * 60)
        # The null sender.
        self.put(ID_NULL_SENDER, ".envelope", envelope(8, "", ["postmaster@example.com"]),
                 b"Subject: bounce\r\n\r\n", 10 * 86400 + 5)

    # ---- list ----

    def test_list_text(self):
        self.build_spool()
        p = self.queue("list")
        torn = self.path(ID_TORN + ".envelope")
        self.assertEqual(p.out.splitlines(), [
            "ID                          STATE SIZE AGE TRIES NEXT  FROM              TO                                 REASON",
            "emailrelay.100.1795459352.1 ready   48  2m     0 now   alice@example.com carol@example.net,dave@example.net -",
            "emailrelay.200.1795459352.1 ready   19  3h     0 now   carol@example.net local:postmaster,bob@example.org   -",
            "emailrelay.300.1795459352.1 bad     33  2d     2 -     alice@example.com x@example.com                      554 5.6.0 content rejected",
            "emailrelay.400.1795459352.1 ready   20 30m     1 in 1h alice@example.com y@example.com                      452 4.2.0 mailbox busy",
            "emailrelay.500.1795459352.1 busy    19  1m     0 -     alice@example.com z@example.com                      -",
            "emailrelay.600.1795459352.1 error   16  1m     - -     -                 -                                  "
            + torn + ": line 8: truncated envelope (no X-MailRelay-End line)",
            "emailrelay.700.1795459352.1 new     18 20m     0 -     alice@example.com n@example.com                      -",
            "emailrelay.800.1795459352.1 bad     18 45m     1 -     alice@example.com s1@example.com,s2@example.com      connection refused",
            "emailrelay.99.1795459352.1  ready   19 10d     0 now   <>                postmaster@example.com             -",
            "-- 9 messages, 210 bytes: 4 ready, 1 busy, 1 new, 2 bad, 1 error",
        ])
        # The listing goes on past the torn file, with a warning naming file and line.
        self.assertEqual(p.err, "emailrelay-queue: warning: %s: line 8: truncated envelope (no X-MailRelay-End line)\n" % torn)

    def test_list_json(self):
        self.build_spool()
        before = int(time.time())
        p = self.queue("--json", "list")
        after = int(time.time())
        got = json.loads(p.out)
        ages = {ID_SUBMIT: 150, ID_V5_LF: 12600, ID_BAD: 176400, ID_WAITING: 1830, ID_BUSY: 90, ID_TORN: 75,
                ID_NEW: 1230, ID_BAD_V6: 2700, ID_NULL_SENDER: 864005}
        for o in got:
            # age_seconds is now minus the content's mtime: the test's clock brackets it.
            base = ages[o["id"]] - self.now
            self.assertTrue(before + base <= o["age_seconds"] <= after + base, o)
            o["age_seconds"] = ages[o["id"]]

        def entry(mid, state, sender, to, size, attempts=0, next_retry=None, reason=None, code=None,
                  local_to=(), suffix=None):
            suffix = suffix or {"ready": ".envelope", "bad": ".envelope.bad", "busy": ".envelope.busy",
                                "new": ".envelope.new", "error": ".envelope"}[state]
            return {"id": mid, "state": state, "from": sender, "to": to, "local_to": list(local_to), "size": size,
                    "age_seconds": ages[mid], "attempts": attempts, "next_retry": next_retry,
                    "last_reason": reason, "last_reason_code": code,
                    "content_file": self.path(mid + ".content"), "envelope_file": self.path(mid + suffix)}

        torn = entry(ID_TORN, "error", None, [], 16, attempts=None,
                     reason=self.path(ID_TORN + ".envelope") + ": line 8: truncated envelope (no X-MailRelay-End line)")
        self.assertEqual(got, [
            entry(ID_SUBMIT, "ready", "alice@example.com", ["carol@example.net", "dave@example.net"], 48),
            entry(ID_V5_LF, "ready", "carol@example.net", ["bob@example.org"], 19, local_to=["postmaster"]),
            entry(ID_BAD, "bad", "alice@example.com", ["x@example.com"], 33, attempts=2,
                  reason="5.6.0 content rejected", code=554),
            entry(ID_WAITING, "ready", "alice@example.com", ["y@example.com"], 20, attempts=1,
                  next_retry=self.next_retry, reason="4.2.0 mailbox busy", code=452),
            entry(ID_BUSY, "busy", "alice@example.com", ["z@example.com"], 19),
            torn,
            entry(ID_NEW, "new", "alice@example.com", ["n@example.com"], 18),
            entry(ID_BAD_V6, "bad", "alice@example.com", ["s1@example.com", "s2@example.com"], 18, attempts=1,
                  reason="connection refused"),
            entry(ID_NULL_SENDER, "ready", "", ["postmaster@example.com"], 19),
        ])
        self.assertIn("line 8: truncated envelope", p.err)

    def test_list_empty_and_missing_spool(self):
        p = self.queue("list")
        self.assertEqual(p.out, "The queue in %s is empty.\n" % self.spool)
        self.assertEqual(self.queue("list", "--json").out, "[]\n")
        missing = self.spool + "/nonexistent"
        p = subprocess.run([QUEUE, "--spool-dir", missing, "list"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr.decode(), "emailrelay-queue: error: cannot open the spool directory %s: "
                         "No such file or directory\n" % missing)

    def test_json_escaping_and_terminal_safety(self):
        self.now = int(time.time())
        # Envelope values are whatever a client or a filter wrote: control characters, quotes,
        # backslashes, bytes that are not UTF-8.
        sender = b'we"ird\\\x1b[31m\xff\xc3\xa9@example.com'
        reason = b'X-MailRelay-Reason: said "no" \\ \x07 bell \xe2\x82'
        self.put("emailrelay.1.2.3", ".envelope.bad",
                 envelope(8, sender, ["r\xe9@example.com".encode("latin-1")], trailer=[reason, b"X-MailRelay-ReasonCode: 550"]),
                 b"Subject: \x1b]0;title\x07\r\nX-Bin: \xff\r\n\r\nbody\r\n", 10)
        (o,) = json.loads(self.queue("list", "--json").out)
        self.assertEqual(o["from"], 'we"ird\\\x1b[31m\ufffd\u00e9@example.com')
        self.assertEqual(o["to"], ["r\ufffd@example.com"])
        self.assertEqual(o["last_reason"], 'said "no" \\ \x07 bell \ufffd\ufffd')
        self.assertEqual(o["last_reason_code"], 550)
        # Raw output: escapes only, no control byte and no invalid UTF-8 reaches stdout.
        raw = self.queue("list", "--json").stdout
        self.assertIn(b'"we\\"ird\\\\\\u001b[31m\\ufffd\xc3\xa9@example.com"', raw)
        text = self.queue("list").stdout
        self.assertFalse(any(c < 0x20 and c != 0x0a for c in text), text)
        self.assertIn('we"ird\\?[31m?\u00e9@example.com'.encode(), text)
        self.assertIn(b"550 said \"no\" \\ ? bell ??", text)
        shown = json.loads(self.queue("show", "--json", "emailrelay.1.2.3").out)
        self.assertEqual(shown["headers"], ["Subject: \x1b]0;title\x07", "X-Bin: \ufffd"])
        text = self.queue("show", "emailrelay.1.2.3").stdout
        self.assertFalse(any(c < 0x20 and c != 0x0a for c in text), text)
        self.assertTrue(text.endswith(b"\nSubject: ?]0;title?\nX-Bin: ?\n"), text)

    # ---- show ----

    def test_show_text(self):
        self.build_spool()
        p = self.queue("show", ID_V5_LF)
        self.assertEqual(p.out, "\n".join([
            "Id:                    " + ID_V5_LF,
            "State:                 ready",
            "EnvelopeFile:          " + self.path(ID_V5_LF + ".envelope"),
            "ContentFile:           " + self.path(ID_V5_LF + ".content"),
            "Size:                  19",
            "Age:                   3h",
            "Attempts:              0",
            "NextRetry:             now",
            "LastReason:            -",
            "Format:                #2821.5",
            "Content:               8bit",
            "From:                  carol@example.net",
            "To-Local:              postmaster",
            "To-Remote:             bob@example.org",
            "Authentication:        carol",
            "Client:                192.0.2.1",
            "ClientCertificate:",
            "MailFromAuthIn:",
            "MailFromAuthOut:",
            "ForwardTo:",
            "ForwardToAddress:",
            "ClientAccountSelector:",
            "Utf8MailboxNames:      0",
            "",
            "Subject: two",
            ""]))
        self.assertEqual(p.err, "")

        p = self.queue("show", ID_WAITING)
        lines = p.out.splitlines()
        self.assertEqual(lines[6], "Attempts:              1")
        self.assertRegex(lines[7], r"^NextRetry:             in 1h \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\)$")
        self.assertEqual(lines[8], "LastReason:            452 4.2.0 mailbox busy")
        self.assertEqual(lines[-5:], [
            "Trailer:               X-MailRelay-Reason: 4.2.0 mailbox busy",
            "Trailer:               X-MailRelay-ReasonCode: 452",
            "Trailer:               X-MailRelay-NextRetry: %d" % self.next_retry,
            "",
            "Subject: four"])

        # The torn one: what can be said, and a warning; the listing's exit status.
        p = self.queue("show", ID_TORN)
        self.assertIn("State:                 error\n", p.out)
        self.assertIn("Error:                 %s: line 8: truncated envelope (no X-MailRelay-End line)\n"
                      % self.path(ID_TORN + ".envelope"), p.out)
        self.assertTrue(p.out.endswith("\nSubject: six\n"))
        self.assertIn("warning:", p.err)

    def test_show_json(self):
        self.build_spool()
        o = json.loads(self.queue("show", "--json", ID_BAD).out)
        self.assertEqual(o["state"], "bad")
        self.assertEqual(o["attempts"], 2)
        self.assertEqual(o["format"], 8)
        self.assertEqual(o["body"], "8bit")
        self.assertEqual(o["client"], "192.0.2.1")
        self.assertIs(o["utf8_mailbox_names"], False)
        self.assertEqual(o["trailer"], ["X-MailRelay-Reason: 4.3.0 try later", "X-MailRelay-ReasonCode: 451",
                                        "X-MailRelay-Reason: 5.6.0 content rejected", "X-MailRelay-ReasonCode: 554"])
        self.assertEqual(o["headers"], ["Subject: three"])
        self.assertEqual(o["envelope_file"], self.path(ID_BAD + ".envelope.bad"))
        o = json.loads(self.queue("show", "-j", ID_V5_LF).out)
        self.assertEqual((o["format"], o["local_to"], o["to"], o["authentication"]),
                         (5, ["postmaster"], ["bob@example.org"], "carol"))

    def test_show_unknown_and_invalid(self):
        self.build_spool()
        p = self.queue("show", "emailrelay.1.1.1", expect=1)
        self.assertEqual(p.err, "emailrelay-queue: error: no such message: emailrelay.1.1.1\n")
        self.assertEqual(p.out, "")
        p = self.queue("show", "../etc/passwd", expect=1)
        self.assertEqual(p.err, 'emailrelay-queue: error: invalid message id: "../etc/passwd"\n')

    def test_older_formats_and_crlf_lf(self):
        self.now = int(time.time())
        for v in (3, 4, 5, 6, 7, 8):
            for eol in (CRLF, LF):
                mid = "emailrelay.%d.%d.1" % (v, len(eol))
                self.put(mid, ".envelope", envelope(v, "a@example.com", ["b@example.com"], eol=eol,
                                                    trailer=["X-MailRelay-Unknown-Extra: kept"]), b"S: x\r\n\r\n", 5)
        got = json.loads(self.queue("list", "--json").out)
        self.assertEqual([(o["id"], o["state"], o["from"], o["to"]) for o in got],
                         [("emailrelay.%d.%d.1" % (v, n), "ready", "a@example.com", ["b@example.com"])
                          for v in (3, 4, 5, 6, 7, 8) for n in (1, 2)])

    # ---- retry ----

    def test_retry_all_failed_limit_boundary(self):
        self.build_spool()
        bad = self.read(ID_BAD + ".envelope.bad")
        # 2 attempts: not fewer than 2, left alone; the 1-attempt one goes back.
        p = self.queue("retry", "--all-failed", "--retry-limit", "2")
        self.assertEqual(p.out, "%s: not retried: 2 attempts, the limit is 2\n%s: moved back to the queue\n"
                         % (ID_BAD, ID_BAD_V6))
        self.assertTrue(os.path.exists(self.path(ID_BAD + ".envelope.bad")))
        self.assertFalse(os.path.exists(self.path(ID_BAD_V6 + ".envelope.bad")))
        self.assertTrue(os.path.exists(self.path(ID_BAD_V6 + ".envelope")))
        # 2 < 3: it goes back too, byte for byte (the reasons are the attempt count).
        p = self.queue("retry", "--all-failed", "--retry-limit=3")
        self.assertEqual(p.out, "%s: moved back to the queue\n" % ID_BAD)
        self.assertEqual(self.read(ID_BAD + ".envelope"), bad)
        self.assertEqual(self.queue("retry", "--all-failed").out, "")
        o = {e["id"]: e for e in json.loads(self.queue("list", "--json").out)}
        self.assertEqual((o[ID_BAD]["state"], o[ID_BAD]["attempts"]), ("ready", 2))

    def test_retry_all_failed_without_limit(self):
        self.build_spool()
        p = self.queue("retry", "--all-failed")
        self.assertEqual(p.out, "%s: moved back to the queue\n%s: moved back to the queue\n" % (ID_BAD, ID_BAD_V6))
        self.assertEqual([n for n in os.listdir(self.spool) if n.endswith(".bad")], [])

    def test_retry_makes_waiting_message_due(self):
        self.build_spool()
        before = self.read(ID_WAITING + ".envelope")
        t0 = int(time.time())
        p = self.queue("retry", ID_WAITING, ID_SUBMIT)
        t1 = int(time.time())
        self.assertEqual(p.out, "%s: due now\n%s: already due\n" % (ID_WAITING, ID_SUBMIT))
        after = self.read(ID_WAITING + ".envelope")
        self.assertTrue(after.startswith(before))
        tail = after[len(before):]
        self.assertRegex(tail, rb"^X-MailRelay-NextRetry: \d+\r\n$")
        self.assertTrue(t0 <= int(tail.split(b": ")[1]) <= t1)
        # Attempts unchanged, next retry now; the message is ready again (the lock is gone).
        o = {e["id"]: e for e in json.loads(self.queue("list", "--json").out)}
        self.assertEqual(o[ID_WAITING]["attempts"], 1)
        self.assertTrue(t0 <= o[ID_WAITING]["next_retry"] <= t1)
        self.assertFalse(os.path.exists(self.path(ID_WAITING + ".envelope.busy")))
        self.assertIn("%s ready   20 30m     1 now  " % ID_WAITING, self.queue("list").out)
        # Again: already due, nothing appended.
        self.assertEqual(self.queue("retry", ID_WAITING).out, "%s: already due\n" % ID_WAITING)
        self.assertEqual(self.read(ID_WAITING + ".envelope"), after)

    def test_retry_keeps_lf_and_terminates_last_line(self):
        self.now = int(time.time())
        future = self.now + 600
        env = envelope(5, "a@example.com", ["b@example.com"], eol=LF,
                       trailer=["X-MailRelay-Reason: busy", "X-MailRelay-ReasonCode: 421",
                                "X-MailRelay-NextRetry: %d" % future])
        self.put("emailrelay.1.1.1", ".envelope", env, b"x\r\n", 1)
        # An unterminated last trailer line: the new line must not run into it.
        self.put("emailrelay.1.1.2", ".envelope", env[:-1], b"x\r\n", 1)
        self.queue("retry", "emailrelay.1.1.1", "emailrelay.1.1.2")
        for mid, base in (("emailrelay.1.1.1", env), ("emailrelay.1.1.2", env)):
            data = self.read(mid + ".envelope")
            self.assertTrue(data.startswith(base), data)
            self.assertRegex(data[len(base):], rb"^X-MailRelay-NextRetry: \d+\n$")
            self.assertNotIn(b"\r", data)

    def test_retry_refusals(self):
        self.build_spool()
        p = self.queue("retry", ID_BUSY, expect=1)
        self.assertEqual(p.err, "emailrelay-queue: error: message %s is being forwarded\n" % ID_BUSY)
        p = self.queue("retry", ID_NEW, expect=1)
        self.assertEqual(p.err, "emailrelay-queue: error: message %s is still being received\n" % ID_NEW)
        p = self.queue("retry", "emailrelay.9.9.9", ID_WAITING, expect=1)
        self.assertEqual(p.err, "emailrelay-queue: error: no such message: emailrelay.9.9.9\n")
        self.assertEqual(p.out, "%s: due now\n" % ID_WAITING)  # the others are still done
        p = self.queue("retry", ID_TORN, expect=1)
        self.assertIn(": line 8: truncated envelope", p.err)
        # A ready message a forwarder has just locked (flock before its rename).
        self.hold_lock(ID_SUBMIT + ".envelope")
        p = self.queue("retry", ID_SUBMIT, expect=1)
        self.assertEqual(p.err, "emailrelay-queue: error: message %s is being forwarded\n" % ID_SUBMIT)
        self.assertTrue(os.path.exists(self.path(ID_SUBMIT + ".envelope")))

    # ---- delete ----

    def test_delete(self):
        self.build_spool()
        p = self.queue("delete", ID_SUBMIT, ID_BAD)
        self.assertEqual(p.out, "%s: deleted\n%s: deleted\n" % (ID_SUBMIT, ID_BAD))
        names = os.listdir(self.spool)
        for mid in (ID_SUBMIT, ID_BAD):
            self.assertEqual([n for n in names if n.startswith(mid + ".")], [])
        self.assertIn(ID_V5_LF + ".content", names)

    def test_delete_refusals(self):
        self.build_spool()
        p = self.queue("delete", ID_BUSY, expect=1)
        self.assertEqual(p.err, "emailrelay-queue: error: message %s is being forwarded\n" % ID_BUSY)
        self.assertTrue(os.path.exists(self.path(ID_BUSY + ".envelope.busy")))
        self.assertTrue(os.path.exists(self.path(ID_BUSY + ".content")))
        p = self.queue("delete", ID_NEW, expect=1)
        self.assertEqual(p.err, "emailrelay-queue: error: message %s is still being received\n" % ID_NEW)
        # Locked by a forwarder that has not renamed it yet: refused, nothing removed.
        self.hold_lock(ID_V5_LF + ".envelope")
        p = self.queue("delete", ID_V5_LF, expect=1)
        self.assertEqual(p.err, "emailrelay-queue: error: message %s is being forwarded\n" % ID_V5_LF)
        self.assertTrue(os.path.exists(self.path(ID_V5_LF + ".envelope")))
        # One unknown among good ones: the good ones go, the status says something failed.
        p = self.queue("delete", "emailrelay.9.9.9", ID_NULL_SENDER, "a/b", expect=1)
        self.assertEqual(p.out, "%s: deleted\n" % ID_NULL_SENDER)
        self.assertEqual(p.err, "emailrelay-queue: error: no such message: emailrelay.9.9.9\n"
                         'emailrelay-queue: error: invalid message id: "a/b"\n')
        self.assertFalse(os.path.exists(self.path(ID_NULL_SENDER + ".envelope")))

    # ---- flush ----

    def test_flush_makes_due_and_needs_a_forwarder(self):
        self.build_spool()
        untouched = {n: self.read(n) for n in os.listdir(self.spool) if ".envelope" in n and ID_WAITING not in n}
        before = self.read(ID_WAITING + ".envelope")
        empty = tempfile.mkdtemp(prefix="queue-path-")
        try:
            p = self.queue("flush", expect=1, env={"PATH": empty})
        finally:
            os.rmdir(empty)
        # With --spool-dir the service (which reads its own configuration) is never started.
        self.assertEqual(p.err, "emailrelay-queue: error: cannot start the forwarder: emailrelay-forward is "
                         "neither installed beside this program nor in $PATH\n")
        after = self.read(ID_WAITING + ".envelope")
        self.assertRegex(after[len(before):], rb"^X-MailRelay-NextRetry: \d+\r\n$")
        self.assertEqual({n: self.read(n) for n in untouched}, untouched)

    def test_flush_execs_the_forwarder(self):
        self.now = int(time.time())
        bindir = tempfile.mkdtemp(prefix="queue-path-")
        try:
            record = os.path.join(bindir, "args")
            fake = os.path.join(bindir, "emailrelay-forward")
            with open(fake, "w") as f:
                f.write('#!/bin/sh\nprintf "%%s\\n" "$@" > %s\nexit 7\n' % record)
            os.chmod(fake, stat.S_IRWXU)
            conf = os.path.join(bindir, "relay.conf")
            with open(conf, "w") as f:
                f.write("# shared with the daemons\nport 25\nforward-to smtp.example.com:25\nspool-dir %s\n" % self.spool)
            # exec: the forwarder's exit status is ours; --spool-dir and the config file go on.
            self.queue("flush", expect=7, env={"PATH": bindir})
            with open(record) as f:
                self.assertEqual(f.read(), "--spool-dir\n%s\n" % self.spool)
            self.queue("--config", conf, "flush", expect=7, env={"PATH": bindir}, spool=False)
            with open(record) as f:
                self.assertEqual(f.read(), "--spool-dir\n%s\n%s\n" % (self.spool, conf))
        finally:
            shutil.rmtree(bindir)

    # ---- options ----

    def test_config_file(self):
        self.now = int(time.time())
        self.put("emailrelay.1.1.1", ".envelope", envelope(8, "a@example.com", ["b@example.com"]), b"x\r\n", 1)
        conf = self.spool + ".conf"
        try:
            with open(conf, "w") as f:
                f.write("port 25\nremote-clients\nforward-to smtp.example.com:25\nspool-dir %s\n" % self.spool)
            p = self.queue("--config", conf, "list", "--json", spool=False)
            self.assertEqual([o["id"] for o in json.loads(p.out)], ["emailrelay.1.1.1"])
            # --spool-dir wins over the file.
            other = tempfile.mkdtemp(prefix="queue-other-")
            p = self.queue("--config", conf, "--spool-dir", other, "list", "--json", spool=False)
            os.rmdir(other)
            self.assertEqual(p.out, "[]\n")
            with open(conf, "w") as f:
                f.write("spool-dir %s\nfrobnicate yes\n" % self.spool)
            p = self.queue("--config", conf, "list", expect=1, spool=False)
            self.assertEqual(p.err, "emailrelay-queue: error: %s:2: unknown option: frobnicate\n" % conf)
        finally:
            os.unlink(conf)
        p = self.queue("--config", conf, "list", expect=1, spool=False)
        self.assertEqual(p.err, "emailrelay-queue: error: %s: No such file or directory\n" % conf)

    def test_usage_errors(self):
        cases = [
            ([], "no command given: list, show, retry, delete, flush, recover or adopt"),
            (["frob"], "unknown command: frob"),
            (["--frob", "list"], "unknown option: --frob"),
            (["show"], "show takes one message id"),
            (["show", "a", "b"], "show takes one message id"),
            (["delete"], "delete takes one or more message ids"),
            (["retry"], "retry takes message ids or --all-failed, not both"),
            (["retry", "--all-failed", "x"], "retry takes message ids or --all-failed, not both"),
            (["list", "x"], "list takes no arguments"),
            (["adopt", "x"], "adopt takes no arguments"),
            (["list", "--user", "daemon"], "--user is for adopt"),
            (["delete", "--json", "x"], "option --json applies to list and show only"),
            (["list", "--all-failed"], "options --all-failed and --retry-limit apply to retry only"),
            (["retry", "--all-failed", "--retry-limit", "0"],
             'option --retry-limit: value "0" is not a number from 1 to 1000000'),
            (["retry", "--all-failed", "--retry-limit", "x"],
             'option --retry-limit: value "x" is not a number from 1 to 1000000'),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                p = self.queue(*args, expect=2)
                self.assertEqual(p.err, "emailrelay-queue: error: %s\nTry 'emailrelay-queue --help' for more "
                                 "information.\n" % message)
                self.assertEqual(p.out, "")

    def test_help_and_version(self):
        p = self.queue("--help", spool=False)
        self.assertTrue(p.out.startswith("Usage: emailrelay-queue [<option> ...] list | show <id> | "))
        for opt in ("--spool-dir", "--config", "--json", "--all-failed", "--retry-limit"):
            self.assertIn(opt, p.out)
        p = self.queue("--version", spool=False)
        self.assertTrue(p.out.startswith("emailrelay-queue "), p.out)


if __name__ == "__main__":
    harness.main()
