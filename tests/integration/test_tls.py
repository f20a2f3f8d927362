# SPDX-License-Identifier: GPL-3.0-or-later
"""TLS: emailrelay-smtpd's STARTTLS and implicit TLS against gnutls-cli, openssl s_client,
swaks, curl and Python's ssl; emailrelay-forward's STARTTLS and SMTPS against
emailrelay-smtpd, with certificate verification; client certificates into the envelope;
emailrelay-pop3d's STLS and POP3S. Certificates are made with certtool in a temporary directory
for each run. Bad input: plaintext injected after STARTTLS (CVE-2011-0411), handshake garbage,
handshake timeouts, expired and wrong-name certificates, STARTTLS twice."""

import hashlib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import postfix  # noqa: E402

SMTPD = harness.program("emailrelay-smtpd")
FORWARD = harness.program("emailrelay-forward")
SUBMIT = harness.program("emailrelay-submit")
POP3D = harness.program("emailrelay-pop3d")
DOMAIN = "relay.test"
CERTTOOL = shutil.which("certtool")
HAVE = {name: shutil.which(name) is not None for name in ("gnutls-cli", "openssl", "swaks", "curl")}


def certtool(*args, template=None, cwd):
    cmd = [CERTTOOL, *args]
    if template is not None:
        path = os.path.join(cwd, "template")
        with open(path, "w") as f:
            f.write(template)
        cmd += ["--template", path]
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d):
    """ca, server (localhost/127.0.0.1), client, expired server, wrong-name server, and an
    unrelated CA, all PEM files in d."""
    for name in ("ca", "srv", "cli", "exp", "wrong", "other"):
        certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", name + ".key", cwd=d)
    certtool("--generate-self-signed", "--load-privkey", "ca.key", "--outfile", "ca.pem", cwd=d,
             template='cn = "Test CA"\nca\ncert_signing_key\nexpiration_days = 30\n')
    certtool("--generate-self-signed", "--load-privkey", "other.key", "--outfile", "other.pem", cwd=d,
             template='cn = "Other CA"\nca\ncert_signing_key\nexpiration_days = 30\n')
    server = 'dns_name = "localhost"\nip_address = "127.0.0.1"\ntls_www_server\nsigning_key\nencryption_key\n'
    signed = ["--load-ca-certificate", "ca.pem", "--load-ca-privkey", "ca.key"]
    certtool("--generate-certificate", "--load-privkey", "srv.key", "--outfile", "srv.pem", *signed, cwd=d,
             template='cn = "localhost"\n' + server + "expiration_days = 30\n")
    certtool("--generate-certificate", "--load-privkey", "exp.key", "--outfile", "exp.pem", *signed, cwd=d,
             template='cn = "localhost"\n' + server +
             'activation_date = "2020-01-01 00:00:00 UTC"\nexpiration_date = "2020-02-01 00:00:00 UTC"\n')
    certtool("--generate-certificate", "--load-privkey", "wrong.key", "--outfile", "wrong.pem", *signed, cwd=d,
             template='cn = "wrong.example"\ndns_name = "wrong.example"\ntls_www_server\nsigning_key\n'
             'encryption_key\nexpiration_days = 30\n')
    certtool("--generate-certificate", "--load-privkey", "cli.key", "--outfile", "cli.pem", *signed, cwd=d,
             template='cn = "client.test"\ntls_www_client\nsigning_key\nexpiration_days = 30\n')
    for name in ("srv", "exp", "wrong", "cli"):
        with open(os.path.join(d, name + "-both.pem"), "w") as out:
            for part in (name + ".key", name + ".pem"):
                with open(os.path.join(d, part)) as f:
                    out.write(f.read())


@unittest.skipUnless(CERTTOOL, "certtool is not installed (gnutls-bin; scripts/deps --test installs it)")
class TlsTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="tls-certs-")
        make_certificates(cls.certs)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certs, ignore_errors=True)

    def cert(self, name):
        return os.path.join(self.certs, name)

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="tls-test-")
        self.spool = os.path.join(self.work, "spool")
        os.mkdir(self.spool)
        self.config = os.path.join(self.work, "emailrelay.conf")
        open(self.config, "w").close()
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.stop(signal.SIGKILL)
        shutil.rmtree(self.work, ignore_errors=True)

    def start(self, *args, names=("smtp",), spool=None, program=SMTPD, env=None):
        socks = [harness.listening_socket() for _ in names]
        argv = [program, "--spool-dir", spool or self.spool, *args, self.config]
        if program == SMTPD:
            argv[1:1] = ["--domain", DOMAIN]
        d = harness.Daemon(argv, socks, names=list(names), env=env)
        self.daemons.append(d)
        self.daemon = d
        self.ports = [s.getsockname()[1] for s in socks]
        return d.port

    def tls_server(self, *args, cert="srv-both.pem", **kw):
        return self.start("--server-tls", "--server-tls-certificate", self.cert(cert), *args, **kw)

    def context(self, ca="ca.pem"):
        ctx = ssl.create_default_context(cafile=self.cert(ca))
        return ctx

    def starttls(self, c, ehlo=True):
        """STARTTLS on a harness.SmtpClient; returns it with its socket wrapped."""
        if ehlo:
            self.assertIn("250-STARTTLS", c.cmd("EHLO x"))
        self.assertEqual(c.cmd("STARTTLS"), ["220 2.0.0 ready to start TLS"])
        self.assertEqual(c.buf, b"")
        c.sock = self.context().wrap_socket(c.sock, server_hostname="localhost")
        return c

    def client(self, port=None):
        c = harness.SmtpClient(port or self.daemon.port)
        self.addCleanup(c.close)
        return c

    def messages(self, spool=None):
        return harness.spool_messages(spool or self.spool)

    def field(self, m, key):
        return dict(m.fields())[key]

    def gone(self, c):
        """The server closed the connection (a reset counts: it may drop unread input)."""
        try:
            while c.sock.recv(65536):
                pass
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def wait_log(self, text, daemon=None):
        d = daemon or self.daemon
        self.assertTrue(harness.wait_for(lambda: text in d.output(), timeout=10), d.output())

    def renewable(self):
        """A directory as certbot keeps one, holding srv's key and certificate; returns it and a
        function that puts a fresh key and certificate for localhost in place, each file
        renamed over the old one, and returns the new certificate (DER)."""
        live = os.path.join(self.work, "live")
        os.mkdir(live)
        for src, dst in (("srv.key", "privkey.pem"), ("srv.pem", "fullchain.pem")):
            shutil.copy(self.cert(src), os.path.join(live, dst))

        def renew():
            d = tempfile.mkdtemp(dir=self.work)
            certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", "new.key", cwd=d)
            certtool("--generate-certificate", "--load-privkey", "new.key", "--outfile", "new.pem",
                     "--load-ca-certificate", self.cert("ca.pem"), "--load-ca-privkey", self.cert("ca.key"), cwd=d,
                     template='cn = "localhost"\ndns_name = "localhost"\nip_address = "127.0.0.1"\n'
                     'tls_www_server\nsigning_key\nencryption_key\nexpiration_days = 30\n')
            os.rename(os.path.join(d, "new.key"), os.path.join(live, "privkey.pem"))
            os.rename(os.path.join(d, "new.pem"), os.path.join(live, "fullchain.pem"))
            with open(os.path.join(live, "fullchain.pem")) as f:
                return ssl.PEM_cert_to_DER_cert(f.read())
        return live, renew

    @staticmethod
    def pem_der(path):
        with open(path) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())


class ServerTest(TlsTestCase):
    def test_starttls_python(self):
        self.tls_server()
        c = self.client()
        c.reply()
        lines = c.cmd("EHLO x")
        self.assertIn("250-STARTTLS", lines)
        self.starttls(c, ehlo=False)
        lines = c.cmd("EHLO x")
        self.assertNotIn("250-STARTTLS", lines)
        self.assertEqual(c.cmd("STARTTLS"), ["503 5.5.1 command out of sequence -- TLS is already active"])
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["250 2.1.0 sender <a@b> OK"])
        self.assertEqual(c.cmd("RCPT TO:<c@d>"), ["250 2.1.5 recipient <c@d> OK"])
        self.assertEqual(c.cmd("DATA")[0][:3], "354")
        self.assertEqual(c.cmd("Subject: tls\r\n\r\nbody\r\n."), ["250 2.0.0 message processed"])
        m = self.messages()[0]
        self.assertRegex(m.content.split(b"\r\n")[0].decode(), r" with ESMTPS tls TLS1\.3-AES-\d+-GCM ;")
        self.assertEqual(self.field(m, "X-MailRelay-ClientCertificate"), "")
        self.wait_log("TLS session with 127.0.0.1: TLS1.3")
        self.assertRegex(self.daemon.output(), r"\(tls/ssl protocol established with 127\.0\.0\.1:\d+\)")   # E-MailRelay's

    def test_starttls_syntax_and_state(self):
        self.tls_server()
        c = self.client()
        c.reply()
        self.assertEqual(c.cmd("STARTTLS now"), ["501 STARTTLS takes no parameters"])
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("MAIL FROM:<a@b>")[0][:3], "250")
        self.assertEqual(c.cmd("STARTTLS"), ["503 5.5.1 command out of sequence -- use RSET to resynchronise"])
        c.cmd("RSET")
        self.starttls(c, ehlo=False)
        # the session starts again: MAIL needs a fresh EHLO
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["503 command out of sequence -- use RSET to resynchronise"])

    def test_plaintext_injection_discarded(self):
        """CVE-2011-0411: commands pipelined with STARTTLS in the clear are dropped."""
        self.tls_server()
        c = self.client()
        c.reply()
        c.cmd("EHLO x")
        c.send("STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\n")
        self.assertEqual(c.reply(), ["220 2.0.0 ready to start TLS"])
        c.sock = self.context().wrap_socket(c.sock, server_hostname="localhost")
        self.assertEqual(c.buf, b"")
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("RCPT TO:<c@d>"), ["503 5.5.1 command out of sequence -- use RSET to resynchronise"])
        self.wait_log("discarded 40 bytes sent in the clear after STARTTLS")

    def test_tls_required(self):
        secrets = os.path.join(self.work, "secrets")
        with open(secrets, "w") as f:
            f.write("server plain alice secret\n")
        self.tls_server("--server-tls-required", "--server-auth", secrets)
        c = self.client()
        c.reply()
        lines = c.cmd("EHLO x")
        self.assertFalse([x for x in lines if "AUTH" in x], lines)   # no AUTH in the clear
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["530 5.7.0 encryption required"])
        self.assertEqual(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), ["530 5.7.0 encryption required"])
        self.starttls(c)
        self.assertIn("250-AUTH CRAM-SHA512 CRAM-SHA256 CRAM-SHA1 CRAM-MD5 PLAIN LOGIN", c.cmd("EHLO x"))
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["530 5.7.0 authentication required"])
        self.assertEqual(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), ["235 2.7.0 authentication successful"])
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["250 2.1.0 sender <a@b> OK"])

    def test_auth_waits_for_starttls(self):
        """With STARTTLS there to be had, AUTH is neither offered nor taken in the clear, even
        without --server-tls-required (RFC 3207's 530 "must issue a STARTTLS command first")."""
        secrets = os.path.join(self.work, "secrets")
        with open(secrets, "w") as f:
            f.write("server plain alice secret\n")
        self.tls_server("--server-auth", secrets)
        c = self.client()
        c.reply()
        lines = c.cmd("EHLO x")
        self.assertIn("250-STARTTLS", lines)
        self.assertFalse([x for x in lines if "AUTH" in x], lines)
        self.assertEqual(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), ["530 5.7.0 must issue a STARTTLS command first"])
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["530 5.7.0 must issue a STARTTLS command first"])
        self.starttls(c)
        self.assertIn("250-AUTH CRAM-SHA512 CRAM-SHA256 CRAM-SHA1 CRAM-MD5 PLAIN LOGIN", c.cmd("EHLO x"))
        self.assertEqual(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), ["235 2.7.0 authentication successful"])
        self.assertEqual(c.cmd("MAIL FROM:<a@b>"), ["250 2.1.0 sender <a@b> OK"])

    def test_auth_config_tls_lists(self):
        secrets = os.path.join(self.work, "secrets")
        with open(secrets, "w") as f:
            f.write("server plain alice secret\n")
        self.tls_server("--server-auth", secrets, "--server-auth-config", "m:cram-sha256;a:plain")
        c = self.client()
        c.reply()
        self.assertIn("250-AUTH CRAM-SHA256", c.cmd("EHLO x"))
        self.starttls(c, ehlo=False)
        self.assertIn("250-AUTH PLAIN", c.cmd("EHLO x"))

    def test_handshake_garbage_and_timeout(self):
        self.tls_server("--connection-timeout", "2", names=("smtp", "smtps"))
        c = self.client()
        c.reply()
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("STARTTLS"), ["220 2.0.0 ready to start TLS"])
        c.send(b"GARBAGE GARBAGE GARBAGE\r\n")
        self.assertTrue(self.gone(c))
        self.wait_log("TLS handshake with 127.0.0.1 failed: ")
        # plaintext on the implicit TLS socket
        s = self.client(self.ports[1])
        s.send("EHLO x\r\n")
        self.assertTrue(self.gone(s))
        self.assertEqual(s.buf, b"")
        # silence: the handshake times out
        t0 = time.monotonic()
        s = self.client(self.ports[1])
        self.assertTrue(self.gone(s))
        self.assertLess(time.monotonic() - t0, 10)
        self.wait_log("TLS handshake with 127.0.0.1 timed out")
        # the server still works
        c = self.client()
        self.assertEqual(c.reply()[0][:3], "220")

    def test_sigterm_during_handshake(self):
        self.tls_server(names=("smtps",))
        c = self.client()
        self.assertTrue(harness.wait_for(lambda: harness.accept_queue_empty(self.ports[0])))   # in the handshake
        t0 = time.monotonic()
        self.assertEqual(self.daemon.stop(signal.SIGTERM), 0)
        self.assertLess(time.monotonic() - t0, 10)   # not the 40 s handshake timeout
        self.assertTrue(self.gone(c))

    @unittest.skipUnless(HAVE["gnutls-cli"], "gnutls-cli is not installed")
    def test_gnutls_cli_starttls_and_implicit(self):
        self.tls_server(names=("smtp", "smtps"))
        p = subprocess.run(["gnutls-cli", "--starttls-proto=smtp", "--x509cafile", self.cert("ca.pem"), "-p",
                            str(self.ports[0]), "localhost"], input=b"EHLO gnutls\r\nQUIT\r\n", capture_output=True, timeout=30)
        out = p.stdout.decode() + p.stderr.decode()
        self.assertIn("Handshake was completed", out)
        self.assertIn("250-relay.test says hello", out)
        self.assertIn("221 2.0.0 OK", out)
        p = subprocess.run(["gnutls-cli", "--x509cafile", self.cert("ca.pem"), "-p", str(self.ports[1]), "localhost"],
                           input=b"EHLO gnutls\r\nQUIT\r\n", capture_output=True, timeout=30)
        out = p.stdout.decode()
        self.assertIn("220 relay.test -- emailrelay", out)
        self.assertIn("250-relay.test says hello", out)
        self.assertNotIn("STARTTLS", out)

    @unittest.skipUnless(HAVE["gnutls-cli"], "gnutls-cli is not installed")
    def test_client_certificate_into_envelope(self):
        self.tls_server("--server-tls-verify", self.cert("ca.pem"), names=("smtps",))
        p = subprocess.run(["gnutls-cli", "--x509cafile", self.cert("ca.pem"), "--x509certfile", self.cert("cli.pem"),
                            "--x509keyfile", self.cert("cli.key"), "-p", str(self.daemon.port), "localhost"],
                           input=b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: cert\r\n\r\nx\r\n.\r\nQUIT\r\n",
                           capture_output=True, timeout=30)
        self.assertIn(b"250 2.0.0 message processed", p.stdout, p.stdout + p.stderr)
        m = self.messages()[0]
        with open(self.cert("cli.pem")) as f:
            pem = f.read().strip()
        self.assertIn(b"X-MailRelay-ClientCertificate: -----BEGIN CERTIFICATE-----\r\n ", m.envelope)
        got = self.field(m, "X-MailRelay-ClientCertificate")
        self.assertTrue(got.startswith("-----BEGIN CERTIFICATE-----"), got)
        stored = [x.strip() for x in m.envelope.decode().split("X-MailRelay-ClientCertificate: ")[1]
                  .split("X-MailRelay-MailFromAuthIn")[0].split("\r\n") if x.strip()]
        self.assertEqual(stored, [x.strip() for x in pem.split("\n")])
        # no certificate, or one from another CA: no session
        p = subprocess.run(["gnutls-cli", "--x509cafile", self.cert("ca.pem"), "-p", str(self.daemon.port), "localhost"],
                           input=b"EHLO c\r\n", capture_output=True, timeout=30)
        self.assertNotIn(b"250-relay.test", p.stdout)
        self.wait_log("TLS handshake with 127.0.0.1 failed")

    @unittest.skipUnless(HAVE["openssl"], "openssl is not installed")
    def test_openssl_s_client(self):
        self.tls_server(names=("smtp", "smtps"))
        p = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % self.ports[0],
                            "-CAfile", self.cert("ca.pem"), "-verify_return_error", "-quiet"],
                           input=b"EHLO ossl\r\nQUIT\r\n", capture_output=True, timeout=30)
        self.assertIn(b"250-relay.test says hello", p.stdout, p.stderr)
        self.assertIn(b"221 2.0.0 OK", p.stdout)
        p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.ports[1], "-CAfile", self.cert("ca.pem"),
                            "-verify_return_error", "-quiet"], input=b"EHLO ossl\r\nQUIT\r\n", capture_output=True, timeout=30)
        self.assertIn(b"220 relay.test -- emailrelay", p.stdout, p.stderr)
        self.assertIn(b"221 2.0.0 OK", p.stdout)

    @unittest.skipUnless(HAVE["openssl"], "openssl is not installed")
    def test_tls_config_versions(self):
        self.tls_server("--tls-config", "tlsv1.3", names=("smtps",))
        p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.daemon.port, "-tls1_2", "-quiet"],
                           input=b"QUIT\r\n", capture_output=True, timeout=30)
        self.assertNotIn(b"220 relay.test", p.stdout)
        p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.daemon.port, "-tls1_3", "-quiet"],
                           input=b"QUIT\r\n", capture_output=True, timeout=30)
        self.assertIn(b"220 relay.test", p.stdout)
        self.daemon.stop(signal.SIGKILL)
        self.tls_server("--tls-config", "-tlsv1.2", names=("smtps",))
        p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.daemon.port, "-quiet"],
                           input=b"QUIT\r\n", capture_output=True, timeout=30)
        self.assertIn(b"220 relay.test", p.stdout)
        self.assertIn(b"TLSv1.2", subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.daemon.port],
                                                 input=b"QUIT\r\n", capture_output=True, timeout=30).stdout)

    @unittest.skipUnless(HAVE["swaks"], "swaks is not installed")
    def test_swaks_tls_and_auth(self):
        secrets = os.path.join(self.work, "secrets")
        with open(secrets, "w") as f:
            f.write("server plain alice secret\n")
        self.tls_server("--server-auth", secrets, "--server-tls-required", names=("smtp", "smtps"))
        for port, mode in ((self.ports[0], "--tls"), (self.ports[1], "--tlsc")):
            for mech in ("PLAIN", "LOGIN", "CRAM-MD5", "CRAM-SHA1"):
                p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port), mode, "--tls-verify",
                                    "--tls-ca-path", self.cert("ca.pem"),
                                    "--from", "a@example.com", "--to", "b@example.org", "--auth", mech, "--auth-user", "alice",
                                    "--auth-password", "secret"], capture_output=True, text=True, timeout=60)
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                self.assertIn("235 2.7.0 authentication successful", p.stdout)
        self.assertEqual(len(self.messages()), 8)
        self.assertTrue(all(b" with ESMTPSA tls " in m.content.split(b"\r\n")[0] for m in self.messages()))

    @unittest.skipUnless(HAVE["curl"], "curl is not installed")
    def test_curl_smtps_and_starttls(self):
        self.tls_server(names=("smtp", "smtps"))
        mail = os.path.join(self.work, "mail.txt")
        with open(mail, "w") as f:
            f.write("Subject: curl\r\n\r\nbody\r\n")
        for url, extra in (("smtps://localhost:%d" % self.ports[1], []), ("smtp://localhost:%d" % self.ports[0], ["--ssl-reqd"])):
            p = subprocess.run(["curl", "-s", "-S", url, "--cacert", self.cert("ca.pem"), "--mail-from", "a@b", "--mail-rcpt",
                                "c@d", "-T", mail, *extra], capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.messages()), 2)

    def test_credentials_directory_and_two_files(self):
        creds = os.path.join(self.work, "creds")
        os.mkdir(creds)
        shutil.copy(self.cert("srv.key"), os.path.join(creds, "tls.key"))
        shutil.copy(self.cert("srv.pem"), os.path.join(creds, "tls.pem"))
        self.start("--server-tls", "--server-tls-certificate", "tls.key", "--server-tls-certificate", "tls.pem",
                   env={"CREDENTIALS_DIRECTORY": creds})
        c = self.client()
        c.reply()
        self.starttls(c)
        self.assertEqual(c.cmd("NOOP"), ["250 noop"])

    def test_renewed_certificate_served_without_a_restart(self):
        """certbot renews: the next connection gets the new certificate while a session started
        before goes on with the old one; a broken file is reported once and changes nothing."""
        live, renew = self.renewable()
        self.start("--server-tls", "--server-tls-certificate", os.path.join(live, "privkey.pem"),
                   "--server-tls-certificate", os.path.join(live, "fullchain.pem"))
        old = self.client()
        old.reply()
        self.starttls(old)
        self.assertEqual(old.sock.getpeercert(binary_form=True), self.pem_der(self.cert("srv.pem")))

        def served():
            c = self.client()
            c.reply()
            self.starttls(c)
            self.assertEqual(c.cmd("NOOP"), ["250 noop"])
            return c.sock.getpeercert(binary_form=True)

        new_der = renew()
        # The files are looked at once a second at most, when a connection comes.
        self.assertTrue(harness.wait_for(lambda: served() == new_der, timeout=20, interval=0.2))
        self.wait_log("re-read the TLS credentials from %s" % os.path.join(live, "fullchain.pem"))
        self.assertEqual(old.cmd("NOOP"), ["250 noop"])   # still on its own credentials
        old.cmd("QUIT")

        tmp = os.path.join(self.work, "half")
        with open(tmp, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
        os.rename(tmp, os.path.join(live, "fullchain.pem"))
        reported = "cannot re-read the TLS credentials: TLS key %s and certificate %s" % (
            os.path.join(live, "privkey.pem"), os.path.join(live, "fullchain.pem"))
        self.assertTrue(harness.wait_for(lambda: served() == new_der and reported in self.daemon.output(),
                                         timeout=20, interval=0.2), self.daemon.output())
        # One more check of the unchanged broken file, a check interval later: not reported again.
        # (This waits out the interval under test, not another process: load only lengthens it.)
        time.sleep(1.1)
        self.assertEqual(served(), new_der)
        self.assertEqual(self.daemon.output().count("cannot re-read the TLS credentials"), 1, self.daemon.output())

    def test_configuration_errors(self):
        def run(*args):
            p = subprocess.run([SMTPD, "--spool-dir", self.spool, "--port", "0", "--interface", "127.0.0.1", *args, self.config],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 1, p.stderr)
            return p.stderr
        self.assertIn("--server-tls needs --server-tls-certificate", run("--server-tls"))
        self.assertIn("cannot be combined", run("--server-tls", "--server-tls-connection", "--server-tls-certificate", "x"))
        self.assertIn("--server-tls-required needs --server-tls", run("--server-tls-required"))
        missing = os.path.join(self.work, "missing.pem")
        err = run("--server-tls", "--server-tls-certificate", missing)
        self.assertIn("TLS key and certificate %s: " % missing, err)
        err = run("--server-tls", "--server-tls-certificate", self.cert("srv-both.pem"), "--tls-config", "tlsv9")
        self.assertIn('--tls-config: unknown keyword "tlsv9"', err)
        err = run("--server-tls", "--server-tls-certificate", self.cert("srv-both.pem"), "--server-tls-verify", missing)
        self.assertIn("CA certificates %s" % missing, err)


class ForwardTest(TlsTestCase):
    """emailrelay-forward with TLS against emailrelay-smtpd."""

    def setUp(self):
        super().setUp()
        self.out = os.path.join(self.work, "out")
        os.mkdir(self.out)

    def submit(self):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "r@example.org"], input=b"Subject: fwd\n\nbody\n", check=True, timeout=30)

    def forward(self, port, *args, expect=0):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:%d" % port, "--retry-schedule", "0",
                            *args, self.config],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, expect, p.stderr)
        return p.stderr

    def deferred_reason(self):
        m = harness.spool_messages(self.spool)[-1]
        self.assertEqual(m.state, "envelope")
        reasons = [v for k, v in m.fields() if k == "X-MailRelay-Reason"]
        return reasons[-1]

    def test_starttls_and_smtps(self):
        self.tls_server(spool=self.out, names=("smtp", "smtps"))
        self.submit()
        self.forward(self.ports[0], "--client-tls", "--client-tls-verify", self.cert("ca.pem"), "--client-tls-verify-name", "localhost")
        self.submit()
        self.forward(self.ports[1], "--client-tls-connection", "--client-tls-verify", self.cert("ca.pem"))
        got = self.messages(self.out)
        self.assertEqual(len(got), 2)
        self.assertTrue(all(b" with ESMTPS tls TLS1.3" in m.content.split(b"\r\n")[0] for m in got))
        self.assertEqual(os.listdir(self.spool), [])

    def test_client_tls_without_offer(self):
        self.start(spool=self.out)   # no TLS at all
        self.submit()
        self.forward(self.daemon.port, "--client-tls")   # STARTTLS when offered: not offered, plain
        self.submit()
        self.forward(self.daemon.port, "--client-tls-required", expect=3)
        self.assertIn("the next hop does not offer STARTTLS", self.deferred_reason())
        self.assertEqual(len(self.messages(self.out)), 1)

    def test_verification_failures_are_temporary(self):
        cases = (("wrong-both.pem", ["--client-tls-verify-name", "localhost"], "The name in the certificate does not match"),
                 ("exp-both.pem", [], "expired"),
                 ("srv-both.pem", ["--client-tls-verify-name", "other.example"], "does not match"))
        for cert, extra, reason in cases:
            for name in os.listdir(self.spool):
                os.unlink(os.path.join(self.spool, name))
            self.tls_server(cert=cert, spool=self.out)
            self.submit()
            err = self.forward(self.daemon.port, "--client-tls", "--client-tls-verify", self.cert("ca.pem"), *extra, expect=3)
            self.assertIn("certificate verification failed", err)
            self.assertIn(reason, self.deferred_reason())
            self.assertIn("certificate verification failed", self.deferred_reason())
            self.daemon.stop(signal.SIGKILL)
        # an unknown CA
        for name in os.listdir(self.spool):
            os.unlink(os.path.join(self.spool, name))
        self.tls_server(spool=self.out)
        self.submit()
        self.forward(self.daemon.port, "--client-tls", "--client-tls-verify", self.cert("other.pem"), expect=3)
        self.assertIn("NOT trusted", self.deferred_reason())
        # without verification it goes
        self.forward(self.daemon.port, "--client-tls", "--retry-schedule", "0")
        self.assertEqual(len(self.messages(self.out)), len(harness.spool_messages(self.out)))
        self.assertGreaterEqual(len(self.messages(self.out)), 1)

    def test_client_certificate(self):
        self.start("--server-tls-connection", "--server-tls-certificate", self.cert("srv-both.pem"), "--server-tls-verify",
                   self.cert("ca.pem"), spool=self.out)
        self.submit()
        self.forward(self.daemon.port, "--client-tls-connection", expect=3)   # no certificate: refused
        self.forward(self.daemon.port, "--client-tls-connection", "--client-tls-certificate", self.cert("cli.key"),
                     "--client-tls-certificate", self.cert("cli.pem"), "--retry-schedule", "0")
        m = self.messages(self.out)[0]
        self.assertTrue(self.field(m, "X-MailRelay-ClientCertificate").startswith("-----BEGIN CERTIFICATE-----"))

    def test_auth_after_starttls(self):
        secrets = os.path.join(self.work, "secrets")
        with open(secrets, "w") as f:
            f.write("server plain alice secret\n")
        client = os.path.join(self.work, "client-secrets")
        with open(client, "w") as f:
            f.write("client plain alice secret\n")
        self.tls_server("--server-auth", secrets, "--server-auth-config", "m:;a:plain", spool=self.out)
        self.submit()
        self.forward(self.daemon.port, "--client-auth", client, expect=3)   # no mechanism in the clear
        self.assertIn("offers no usable mechanism", self.deferred_reason())
        self.forward(self.daemon.port, "--client-auth", client, "--client-tls", "--retry-schedule", "0")
        m = self.messages(self.out)[0]
        self.assertEqual(self.field(m, "X-MailRelay-Authentication"), "alice")
        self.assertIn(b" with ESMTPSA tls ", m.content.split(b"\r\n")[0])

    def test_sni(self):
        """--client-tls-server-name reaches a Python ssl server's SNI callback."""
        import threading
        names = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert("srv.pem"), self.cert("srv.key"))
        ctx.sni_callback = lambda sock, name, c: names.append(name)
        lsock = harness.listening_socket()
        self.addCleanup(lsock.close)

        def serve():
            conn, _ = lsock.accept()
            with ctx.wrap_socket(conn, server_side=True) as t:
                f = t.makefile("rb")
                t.sendall(b"220 sni\r\n")
                for raw in f:
                    verb = raw[:4].upper()
                    if verb == b"QUIT":
                        t.sendall(b"221 bye\r\n")
                        return
                    if verb == b"DATA":
                        t.sendall(b"354 go\r\n")
                        while f.readline() != b".\r\n":
                            pass
                    t.sendall(b"250 ok\r\n")
        th = threading.Thread(target=serve, daemon=True)
        th.start()
        self.submit()
        self.forward(lsock.getsockname()[1], "--client-tls-connection", "--client-tls-server-name", "mail.example.org")
        th.join(10)
        self.assertEqual(names, ["mail.example.org"])

    def test_configuration_errors(self):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:1", "--client-tls",
                            "--client-tls-connection", self.config], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot be combined", p.stderr)
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:1", "--client-tls-verify",
                            self.cert("ca.pem"), self.config], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--client-tls-verify needs --client-tls", p.stderr)


class Pop3Test(TlsTestCase):
    """emailrelay-pop3d: STLS and POP3S."""

    def setUp(self):
        super().setUp()
        self.secrets = os.path.join(self.work, "secrets")
        with open(self.secrets, "w") as f:
            f.write("server plain alice secret\n")
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "r@example.org"], input=b"Subject: pop\n\nbody\n", check=True, timeout=30)

    def pop(self, *args, names=("pop3", "pop3s")):
        return self.start("--pop-auth", self.secrets, "--server-tls-certificate", self.cert("srv-both.pem"), *args,
                          names=names, program=POP3D)

    def test_renewed_certificate_for_pop3s(self):
        live, renew = self.renewable()
        self.start("--pop-auth", self.secrets, "--server-tls-connection",
                   "--server-tls-certificate", os.path.join(live, "privkey.pem"),
                   "--server-tls-certificate", os.path.join(live, "fullchain.pem"), names=("pop3s",), program=POP3D)
        import poplib
        p = poplib.POP3_SSL("127.0.0.1", self.ports[0], context=self.context(), timeout=20)
        self.addCleanup(p.close)
        self.assertEqual(p.sock.getpeercert(binary_form=True), self.pem_der(self.cert("srv.pem")))
        new_der = renew()

        def served():
            q = poplib.POP3_SSL("127.0.0.1", self.ports[0], context=self.context(), timeout=20)
            self.addCleanup(q.close)
            return q
        # Looked at once a second at most, when a connection comes.
        self.assertTrue(harness.wait_for(lambda: served().sock.getpeercert(binary_form=True) == new_der,
                                         timeout=20, interval=0.2))
        q = served()
        self.assertEqual(q.sock.getpeercert(binary_form=True), new_der)
        q.user("alice")
        q.pass_("secret")
        self.assertEqual(q.stat()[0], 1)
        q.quit()
        self.assertIn("USER", p.capa())   # the session from before the renewal goes on
        self.wait_log("re-read the TLS credentials from %s" % os.path.join(live, "fullchain.pem"))

    def test_login_waits_for_stls(self):
        """With STLS there to be had, no login in the clear: CAPA offers neither USER nor SASL,
        and USER, APOP and AUTH are refused until STLS."""
        self.pop("--server-tls")
        c = self.client(self.ports[0])
        challenge = re.search(r"<[^>]+>", c.line()).group(0)
        capa = c.cmd("CAPA")
        while capa[-1] != ".":
            capa.append(c.line())
        self.assertIn("STLS", capa)
        self.assertNotIn("USER", capa)
        self.assertFalse([x for x in capa if x.startswith("SASL")], capa)
        digest = hashlib.md5((challenge + "secret").encode()).hexdigest()
        for cmd in ("USER alice", "APOP alice " + digest, "AUTH PLAIN AGFsaWNlAHNlY3JldA=="):
            self.assertEqual(c.cmd(cmd), ["-ERR must use STLS before authentication"], cmd)
        self.assertEqual(c.cmd("STLS"), ["+OK begin TLS negotiation"])
        c.sock = self.context().wrap_socket(c.sock, server_hostname="localhost")
        capa = c.cmd("CAPA")
        while capa[-1] != ".":
            capa.append(c.line())
        self.assertIn("USER", capa)
        self.assertIn("SASL CRAM-SHA512 CRAM-SHA256 CRAM-SHA1 CRAM-MD5 PLAIN LOGIN", capa)
        self.assertEqual(c.cmd("USER alice"), ["+OK user: alice"])
        self.assertEqual(c.cmd("PASS secret"), ["+OK authenticated"])

    def test_stls_with_poplib(self):
        import poplib
        self.pop("--server-tls", "--server-tls-required")
        p = poplib.POP3("127.0.0.1", self.ports[0], timeout=20)
        self.addCleanup(p.close)
        self.assertIn("STLS", p.capa())
        with self.assertRaises(poplib.error_proto) as e:
            p.user("alice")
        self.assertIn(b"must use STLS before authentication", e.exception.args[0])
        p.stls(context=self.context())
        self.assertNotIn("STLS", p.capa())
        p.user("alice")
        p.pass_("secret")
        self.assertEqual(p.stat()[0], 1)
        self.assertIn(b"body", b"\n".join(p.retr(1)[1]))
        p.quit()
        self.wait_log("TLS session with 127.0.0.1: TLS1.3")
        self.assertRegex(self.daemon.output(), r"\(tls/ssl protocol established with 127\.0\.0\.1:\d+\)")

    def test_stls_state_and_injection(self):
        self.pop("--server-tls")
        c = self.client(self.ports[0])
        self.assertEqual(c.line()[:3], "+OK")
        self.assertEqual(c.cmd("STLS x"), ["-ERR STLS takes no arguments"])
        c.send("STLS\r\nUSER alice\r\n")
        self.assertEqual(c.line(), "+OK begin TLS negotiation")
        c.sock = self.context().wrap_socket(c.sock, server_hostname="localhost")
        self.assertEqual(c.cmd("PASS secret"), ["-ERR no user name given"])
        self.assertEqual(c.cmd("STLS"), ["-ERR command not permitted when TLS active"])
        self.assertEqual(c.cmd("USER alice"), ["+OK user: alice"])
        self.assertEqual(c.cmd("PASS secret"), ["+OK authenticated"])
        self.assertEqual(c.cmd("STLS"), ["-ERR invalid command in TRANSACTION state"])
        self.wait_log("discarded 12 bytes sent in the clear after STLS")

    def test_auth_config_before_and_after_tls(self):
        self.pop("--server-tls", "--server-auth-config", "m:;a:plain")
        c = self.client(self.ports[0])
        self.assertEqual(c.line()[:3], "+OK")
        c.send("CAPA\r\n")
        capa = [c.line() for _ in range(6)]
        self.assertEqual(capa, ["+OK capability list follows", "USER", "CAPA", "TOP", "UIDL", "STLS"])
        self.assertEqual(c.line(), ".")
        self.assertEqual(c.cmd("USER alice"), ["-ERR no SASL PLAIN mechanism to do USER/PASS authentication"])
        self.assertEqual(c.cmd("APOP alice 0123456789abcdef0123456789abcdef"), ["-ERR APOP not available"])
        self.assertEqual(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), ["-ERR unsupported SASL mechanism"])
        self.assertEqual(c.cmd("STLS"), ["+OK begin TLS negotiation"])
        c.sock = self.context().wrap_socket(c.sock, server_hostname="localhost")
        self.assertEqual(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), ["+OK authenticated"])

    def test_pop3s(self):
        import poplib
        self.pop()
        p = poplib.POP3_SSL("localhost", self.ports[1], context=self.context(), timeout=20)
        self.addCleanup(p.close)
        self.assertNotIn("STLS", p.capa())
        p.user("alice")
        p.pass_("secret")
        self.assertEqual(p.stat()[0], 1)
        p.quit()
        # without --server-tls there is no STLS on the plain socket
        c = self.client(self.ports[0])
        c.line()
        self.assertEqual(c.cmd("STLS"), ["-ERR STLS not available"])

    @unittest.skipUnless(HAVE["curl"], "curl is not installed")
    def test_curl_pop3s(self):
        self.pop()
        p = subprocess.run(["curl", "-s", "-S", "pop3s://localhost:%d/1" % self.ports[1], "--cacert", self.cert("ca.pem"),
                            "-u", "alice:secret"], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"body", p.stdout)
        for mech in ("LOGIN", "CRAM-MD5", "PLAIN"):
            p = subprocess.run(["curl", "-s", "-S", "pop3s://localhost:%d/1" % self.ports[1], "--cacert", self.cert("ca.pem"),
                                "-u", "alice:secret", "--login-options", "AUTH=" + mech], capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(b"body", p.stdout)
        self.wait_log('pop authentication of "alice"')

    @unittest.skipUnless(HAVE["gnutls-cli"], "gnutls-cli is not installed")
    def test_gnutls_cli_stls(self):
        self.pop("--server-tls")
        p = subprocess.run(["gnutls-cli", "--starttls-proto=pop3", "--x509cafile", self.cert("ca.pem"), "-p", str(self.ports[0]),
                            "localhost"], input=b"USER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n", capture_output=True, timeout=30)
        self.assertIn(b"+OK authenticated", p.stdout, p.stderr)
        self.assertIn(b"+OK 1 ", p.stdout)


free_port = postfix.free_port

POSTFIX_TLS_SASL = """smtpd_tls_cert_file = {pf}/etc/server.crt
smtpd_tls_key_file = {pf}/etc/server.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_local_domain = mx.test
cyrus_sasl_config_path = {pf}/etc/sasl
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_relay_restrictions = permit_sasl_authenticated, reject
"""


@unittest.skipUnless(postfix.AVAILABLE and shutil.which("saslpasswd2"),
                     "needs root, postfix and saslpasswd2 (sasl2-bin) for a private Postfix instance")
class PostfixTest(TlsTestCase):
    """emailrelay-forward against a private Postfix with Cyrus SASL (sasldb: PLAIN, LOGIN,
    CRAM-MD5) that wants STARTTLS before AUTH and AUTH before any recipient."""

    def setUp(self):
        super().setUp()
        os.chmod(self.work, 0o755)
        self.postfix = postfix.PrivatePostfix(self.work, POSTFIX_TLS_SASL)
        self.pf = self.postfix.pf
        etc = self.postfix.etc
        os.makedirs(os.path.join(etc, "sasl"))
        shutil.copy(self.cert("srv.pem"), os.path.join(etc, "server.crt"))
        shutil.copy(self.cert("srv.key"), os.path.join(etc, "server.key"))
        with open(os.path.join(etc, "sasl", "smtpd.conf"), "w") as f:
            f.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN CRAM-MD5\n"
                    "sasldb_path: %s/sasldb2\n" % self.pf)
        subprocess.run(["saslpasswd2", "-p", "-f", os.path.join(self.pf, "sasldb2"), "-c", "-u", "mx.test", "alice"],
                       input=b"secret123", check=True, timeout=30)
        shutil.chown(os.path.join(self.pf, "sasldb2"), "postfix")
        try:
            self.postfix.start()
        except RuntimeError as e:
            super().tearDown()
            self.fail(str(e))
        self.port = self.postfix.port

    def tearDown(self):
        self.postfix.stop()
        super().tearDown()

    def postfix_log(self):
        return self.postfix.log_text()

    def delivered(self):
        return len(self.postfix.delivered())

    def submit(self):
        subprocess.run([SUBMIT, "--spool-dir", self.spool, "--from", "alice@mx.test", "bob@example.net"],
                       input=b"Subject: to postfix\n\nbody\n", check=True, timeout=30)

    def forward(self, *args, expect=0):
        p = subprocess.run([FORWARD, "--spool-dir", self.spool, "--forward-to", "127.0.0.1:%d" % self.port,
                            "--retry-schedule", "0", *args, self.config], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, expect, p.stderr + self.postfix_log())
        return p.stderr

    def secrets(self, text):
        path = os.path.join(self.work, "client-secrets")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_starttls_and_every_mechanism(self):
        plain = self.secrets("client plain alice secret123\n")
        tls = ["--client-tls", "--client-tls-verify", self.cert("ca.pem"), "--client-tls-verify-name", "localhost"]
        n = 0
        for cfg, mech in ((None, "CRAM-MD5"), ("m:plain", "PLAIN"), ("m:login", "LOGIN")):
            self.submit()
            self.forward(*tls, "--client-auth", plain, *(["--client-auth-config", cfg] if cfg else []))
            n += 1
            self.assertTrue(harness.wait_for(lambda: self.delivered() == n, timeout=30), self.postfix_log())
            self.assertIn("sasl_method=%s, sasl_username=alice" % mech,
                          self.postfix.wait_log("sasl_method=%s, sasl_username=alice" % mech))
        # an emailrelay-passwd hash, checked by Cyrus SASL's CRAM-MD5
        h = subprocess.run([harness.program("emailrelay-passwd"), "-p", "secret123"], capture_output=True, text=True,
                           check=True, timeout=30).stdout.strip()
        self.submit()
        self.forward(*tls, "--client-auth", self.secrets("client md5 alice %s\n" % h))
        self.assertTrue(harness.wait_for(lambda: self.delivered() == n + 1, timeout=30), self.postfix_log())
        session = "ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1"
        self.assertEqual(self.postfix.wait_log(session, 4).count(session), 4)

    def test_guide_google_mail_through_the_front_end(self):
        """The user guide's "Google mail" line, as written, with this Postfix standing in for
        smtp.gmail.com:587: emailrelay --as-proxy=smtp.gmail.com:587 --client-tls
        --client-auth=/etc/emailrelay.auth (the secrets line with a +20 xtext space)."""
        subprocess.run(["saslpasswd2", "-p", "-f", os.path.join(self.pf, "sasldb2"), "-u", "mx.test", "carol"],
                       input=b"my password", check=True, timeout=30)
        auth = self.secrets("client plain carol my+20password\n")
        frontend = os.path.join(harness.BUILD_ROOT, "src", "frontend", "emailrelay")
        relay = harness.Daemon([frontend, "--as-proxy=127.0.0.1:%d" % self.port, "--client-tls",
                                "--client-auth=" + auth, "--spool-dir", self.spool, "--user", "root", "--no-daemon",
                                "--log-file", os.path.join(self.work, "relay.log")], [harness.listening_socket()])
        try:
            with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as c:
                c.sendmail("carol@mx.test", ["bob@example.net"], b"Subject: via gmail\r\n\r\nbody\r\n")
            self.assertTrue(harness.wait_for(lambda: self.delivered() == 1, timeout=30),
                            self.postfix_log() + open(os.path.join(self.work, "relay.log")).read())
            self.assertIn("sasl_username=carol", self.postfix.wait_log("sasl_username=carol"))
            # The forwarder keeps its connection for the client's next message (--wakeup-linger);
            # stopping the relay ends it, and Postfix's disconnect line counts the STARTTLS.
            self.assertEqual(relay.stop(), 0)
            self.assertIn("starttls=1", self.postfix.wait_log("starttls=1"))
        finally:
            if relay.proc.poll() is None:
                relay.stop()

    def test_failures(self):
        self.submit()
        # no AUTH in the clear (smtpd_tls_auth_only)
        self.forward("--client-auth", self.secrets("client plain alice secret123\n"), expect=3)
        # a wrong password: one attempt, a temporary failure with Postfix's reply
        err = self.forward("--client-tls", "--client-auth", self.secrets("client plain alice wrong\n"), expect=3)
        self.assertIn("authentication with 127.0.0.1:%d failed: 535 5.7.8 Error: authentication failed" % self.port, err)
        self.assertEqual(self.postfix.wait_log("authentication failed").count("authentication failed"), 1)
        # no authentication: Postfix refuses the recipient
        err = self.forward("--client-tls", expect=1)
        self.assertIn("554", err)
        self.assertEqual(self.delivered(), 0)


if __name__ == "__main__":
    harness.main()
