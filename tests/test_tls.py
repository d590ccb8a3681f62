"""mailaccess.tls: the server context (chain, versions, ciphers) and its reload.

Handshakes run in memory: our pyOpenSSL server connection against the
standard library's ``ssl`` client (what imaplib, poplib and most scripts use),
joined by memory BIOs.  No sockets, no reactor, and the client verifies the
certificate exactly as a real client does.
"""

from __future__ import annotations

import contextlib
import datetime
import ssl
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.logger import capturedLogs

from mailaccess.cli import generate_self_signed
from mailaccess.config import TLSConfig
from mailaccess.tls import ServerTLS, TLSSetupError, build_context

# --- helpers -------------------------------------------------------------------


def write_pair(directory: Path, stem: str = "server") -> tuple[Path, Path]:
    """A fresh self-signed localhost certificate and key under *directory*."""
    cert_pem, key_pem = generate_self_signed("localhost", days=30)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    return cert, key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_chain(directory: Path) -> dict[str, Path]:
    """root -> intermediate -> leaf(localhost); returns the PEM paths."""
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    later = now + datetime.timedelta(days=30)

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = issue("Test Root", root_key, "Test Root", root_key, ca=True)
    mid = issue("Test Intermediate", mid_key, "Test Root", root_key, ca=True)
    leaf = issue("localhost", leaf_key, "Test Intermediate", mid_key, ca=False)

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    paths = {
        "root": directory / "root.pem",
        "chain": directory / "chain.pem",
        "leaf_only": directory / "leaf.pem",
        "key": directory / "leaf.key",
    }
    paths["root"].write_bytes(pem(root))
    paths["chain"].write_bytes(pem(leaf) + pem(mid))
    paths["leaf_only"].write_bytes(pem(leaf))
    paths["key"].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class MemoryTLS:
    """One TLS connection: our server connection and a stdlib client, in memory."""

    def __init__(self, server: SSL.Connection, client_context: ssl.SSLContext) -> None:
        self.server = server
        self.server.set_accept_state()
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_context.wrap_bio(
            self._incoming, self._outgoing, server_hostname="localhost"
        )

    def _pump(self) -> None:
        data = self._outgoing.read()
        if data:
            self.server.bio_write(data)
        with contextlib.suppress(SSL.WantReadError):
            self.server.do_handshake()
        try:
            out = self.server.bio_read(1 << 16)
        except SSL.WantReadError:
            out = b""
        if out:
            self._incoming.write(out)

    def handshake(self) -> None:
        """Run the handshake to the end; raises the client's or server's error."""
        for _ in range(20):
            try:
                self.client.do_handshake()
                self._pump()  # the server's last flight, e.g. session tickets
                return
            except ssl.SSLWantReadError:
                self._pump()
        raise AssertionError("handshake did not finish")

    def peer_certificate(self) -> x509.Certificate:
        der = self.client.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def echo(self, data: bytes) -> bytes:
        """Client sends *data*; the server reads it and sends it back."""
        self.client.write(data)
        self._pump()
        received = self.server.recv(1 << 16)
        self.server.send(received)
        self._pump()
        return self.client.read(1 << 16)


def client_context(
    cafile: Path, maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
) -> ssl.SSLContext:
    """What a careful client does: verify the chain and the name localhost."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.maximum_version = maximum
    return context


def connect(tls: ServerTLS, cafile: Path, **kwargs: ssl.TLSVersion) -> MemoryTLS:
    connection = MemoryTLS(tls.serverConnectionForTLS(None), client_context(cafile, **kwargs))
    connection.handshake()
    return connection


# --- the context ------------------------------------------------------------------


def test_self_signed_localhost_verifies(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    tls = ServerTLS(TLSConfig(certificate=cert, private_key=key))
    connection = connect(tls, cert)
    assert connection.echo(b"a1 NOOP\r\n") == b"a1 NOOP\r\n"


def test_wrong_ca_fails_verification(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, "one")
    other, _ = write_pair(tmp_path, "other")
    tls = ServerTLS(TLSConfig(certificate=cert, private_key=key))
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(tls, other)


def test_full_chain_is_sent(tmp_path: Path) -> None:
    # The client trusts only the root: it can verify the leaf only if the
    # server sends the intermediate from the PEM file too.
    paths = make_ca_chain(tmp_path)
    tls = ServerTLS(TLSConfig(certificate=paths["chain"], private_key=paths["key"]))
    connection = connect(tls, paths["root"])
    assert connection.peer_certificate().subject == _name("localhost")


def test_leaf_without_intermediate_fails(tmp_path: Path) -> None:
    # The control for test_full_chain_is_sent: without the intermediate in
    # the file the same client must fail.
    paths = make_ca_chain(tmp_path)
    tls = ServerTLS(TLSConfig(certificate=paths["leaf_only"], private_key=paths["key"]))
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(tls, paths["root"])


def test_tls12_is_the_minimum_rfc8314_4_1(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    tls = ServerTLS(TLSConfig(certificate=cert, private_key=key))
    assert connect(tls, cert, maximum=ssl.TLSVersion.TLSv1_2).client.version() == "TLSv1.2"
    # An old client, with its own library's floor lowered so that the refusal
    # is the server's (an OpenSSL error raised by our side of the handshake).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = client_context(cert, maximum=ssl.TLSVersion.TLSv1_1)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(SSL.Error, match="unsupported protocol"):
        MemoryTLS(tls.serverConnectionForTLS(None), context).handshake()


def test_min_version_tls13_refuses_tls12(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    tls = ServerTLS(TLSConfig(certificate=cert, private_key=key, min_version="TLSv1.3"))
    assert connect(tls, cert).client.version() == "TLSv1.3"
    with pytest.raises(SSL.Error, match="unsupported protocol"):
        connect(tls, cert, maximum=ssl.TLSVersion.TLSv1_2)


def test_cipher_policy_forward_secret_aead_only(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    context = build_context(cert, key, "TLSv1.2")
    ciphers = SSL.Connection(context, None).get_cipher_list()
    tls12 = [c for c in ciphers if not c.startswith("TLS_")]
    assert tls12, ciphers
    for name in tls12:
        assert name.startswith(("ECDHE-", "DHE-")), name  # forward secrecy
        assert "GCM" in name or "CHACHA20" in name, name  # AEAD only
    assert not any("CBC" in c or "RC4" in c or "3DES" in c or "NULL" in c for c in ciphers)


# --- bad files -------------------------------------------------------------------


def test_missing_certificate_names_the_file(tmp_path: Path) -> None:
    _, key = write_pair(tmp_path)
    with pytest.raises(TLSSetupError, match=r"cannot read certificate .*nope\.pem"):
        build_context(tmp_path / "nope.pem", key, "TLSv1.2")


def test_garbage_certificate_is_explained(tmp_path: Path) -> None:
    _, key = write_pair(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TLSSetupError, match="holds no PEM certificate"):
        build_context(garbage, key, "TLSv1.2")


def test_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = write_pair(tmp_path, "one")
    _, other_key = write_pair(tmp_path, "two")
    with pytest.raises(TLSSetupError, match="do not work together"):
        build_context(cert, other_key, "TLSv1.2")


def test_expired_certificate_is_refused(tmp_path: Path) -> None:
    cert_pem, key_pem = generate_self_signed("localhost", days=0)
    cert, key = tmp_path / "old.pem", tmp_path / "old.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    # days=0 with a minute of back-dating: expired a minute ago.
    with pytest.raises(TLSSetupError, match="expired"):
        build_context(cert, key, "TLSv1.2")


def test_no_certificate_configured() -> None:
    with pytest.raises(TLSSetupError, match="no certificate configured"):
        ServerTLS(TLSConfig())


# --- reload (what SIGHUP calls) --------------------------------------------------------


def test_reload_serves_new_certificate_keeps_old_sessions(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    tls = ServerTLS(TLSConfig(certificate=cert, private_key=key))
    old_session = connect(tls, cert)
    old_serial = old_session.peer_certificate().serial_number

    new_cert_pem, new_key_pem = generate_self_signed("localhost", days=30)
    cert.write_bytes(new_cert_pem)
    key.write_bytes(new_key_pem)
    assert tls.reload() is True

    new_session = connect(tls, cert)
    assert new_session.peer_certificate().serial_number != old_serial
    # The session made before the reload still talks.
    assert old_session.echo(b"still here\r\n") == b"still here\r\n"


def test_reload_with_broken_certificate_keeps_old_and_logs(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    good = cert.read_bytes()
    tls = ServerTLS(TLSConfig(certificate=cert, private_key=key))
    serial = connect(tls, cert).peer_certificate().serial_number

    cert.write_text("-----BEGIN CERTIFICATE-----\ntruncated\n")
    with capturedLogs() as events:
        assert tls.reload() is False
    messages = [e["log_format"].format(**e) for e in events]
    assert any("keeping the previous certificate" in m and "no PEM" in m for m in messages)

    cert.write_bytes(good)  # the client trusts the old one, which is still served
    assert connect(tls, cert).peer_certificate().serial_number == serial


def test_reload_with_mismatched_key_keeps_old(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    tls = ServerTLS(TLSConfig(certificate=cert, private_key=key))
    serial = connect(tls, cert).peer_certificate().serial_number
    new_cert_pem, _ = generate_self_signed("localhost", days=30)
    good = cert.read_bytes()
    cert.write_bytes(new_cert_pem)  # new cert, old key: a half-done renewal
    assert tls.reload() is False
    cert.write_bytes(good)
    assert connect(tls, cert).peer_certificate().serial_number == serial
