"""TLS for every listener: one pyOpenSSL context factory built from the config.

:class:`ServerTLS` serves the implicit-TLS listeners (wrapped in
``TLSMemoryBIOFactory``) and STARTTLS/STLS (``transport.startTLS(tls)``).  It
holds one ``SSL.Context`` at a time; :meth:`ServerTLS.reload` builds a new one
from the files and swaps it in only if it is sound.  Connections already made
keep the context they were made with, so a reload (SIGHUP) drops no session.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from mailaccess.config import TLSConfig

log = Logger()

# Mozilla's "intermediate" policy for TLS 1.2: forward secrecy and AEAD
# ciphers only.  TLS 1.3 suites are OpenSSL's defaults, all of them sound.
CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    b"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)

_VERSIONS = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}


class TLSSetupError(Exception):
    """The certificate or key cannot be used; the message says which file and why."""


def load_certificate_chain(path: Path) -> list[x509.Certificate]:
    """The certificates of the PEM file *path*, leaf first; TLSSetupError if unusable."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TLSSetupError(f"cannot read certificate {path}: {e.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSSetupError(
            f"{path} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----' "
            "blocks, the server's certificate first, then its intermediates)"
        ) from None
    return chain


def build_context(
    certificate: Path, private_key: Path, min_version: Literal["TLSv1.2", "TLSv1.3"]
) -> SSL.Context:
    """A server ``SSL.Context`` for these files; TLSSetupError names what is wrong."""
    chain = load_certificate_chain(certificate)
    now = datetime.datetime.now(datetime.UTC)
    leaf = chain[0]
    if leaf.not_valid_after_utc < now:
        # Refusing beats serving a certificate every client rejects.
        raise TLSSetupError(
            f"certificate {certificate} expired on {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    try:
        key_data = private_key.read_bytes()
    except OSError as e:
        raise TLSSetupError(f"cannot read private key {private_key}: {e.strerror}") from None
    try:
        serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as e:
        raise TLSSetupError(
            f"{private_key} holds no usable unencrypted PEM private key ({e})"
        ) from None

    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(_VERSIONS[min_version])
    context.set_options(
        SSL.OP_NO_COMPRESSION  # CRIME
        | SSL.OP_NO_RENEGOTIATION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_SINGLE_ECDH_USE
    )
    context.set_cipher_list(CIPHERS)
    try:
        # Sends the leaf and every intermediate in the file, in file order.
        context.use_certificate_chain_file(str(certificate))
        context.use_privatekey_file(str(private_key))
        context.check_privatekey()
    except SSL.Error as e:
        raise TLSSetupError(
            f"certificate {certificate} and key {private_key} do not work together "
            f"(does the key belong to the first certificate?): {_ssl_reason(e)}"
        ) from None
    return context


def _ssl_reason(error: SSL.Error) -> str:
    parts = [str(p[2]) for p in error.args[0] if len(p) == 3] if error.args else []
    return "; ".join(parts) or str(error)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The server's TLS context factory, reloadable without dropping sessions.

    Twisted calls :meth:`serverConnectionForTLS` for each implicit-TLS
    connection; ``startTLS`` (STARTTLS/STLS) calls :meth:`getContext`.
    """

    def __init__(self, config: TLSConfig) -> None:
        if config.certificate is None or config.private_key is None:
            raise TLSSetupError("no certificate configured (tls.certificate, tls.private_key)")
        self.certificate = config.certificate
        self.private_key = config.private_key
        self.min_version = config.min_version
        self._context = build_context(self.certificate, self.private_key, self.min_version)

    def getContext(self) -> SSL.Context:
        """The current context; connections made from it keep it."""
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """A new server-side TLS connection from the current context."""
        return SSL.Connection(self._context, None)

    def reload(self) -> bool:
        """Re-read certificate and key; keep the old ones if the new are broken.

        Returns True if the new certificate is in use.  Sessions already
        running are untouched either way.
        """
        try:
            context = build_context(self.certificate, self.private_key, self.min_version)
        except TLSSetupError as e:
            log.error("TLS reload failed, keeping the previous certificate: {reason}", reason=e)
            return False
        self._context = context
        log.info("TLS certificate reloaded from {path}", path=str(self.certificate))
        return True


def make_tls(config: TLSConfig) -> ServerTLS | None:
    """The context factory for *config*, or None when no certificate is configured."""
    if config.certificate is None:
        return None
    return ServerTLS(config)
