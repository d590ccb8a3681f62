"""SASL pieces every protocol needs: base64 steps, PLAIN and LOGIN.

Pure functions and one small state machine, no I/O.  The protocol sends the
challenges (``+ <base64>`` in IMAP, RFC 3501 §7.5; ``+ <base64>`` in POP3,
RFC 5034 §4), hands each client line here, and builds twisted.cred
credentials from the result.

Not done, on purpose: SASLprep (RFC 4013) of the user name and password.  RFC
4616 §4 asks for it, but Dovecot does not apply it, and a password hashed
without it must keep verifying after a migration.
"""

from __future__ import annotations

import binascii
import re

import attrs
from twisted.cred.credentials import UsernamePassword

# The LOGIN mechanism's fixed challenges (draft-murchison-sasl-login-00 §2):
# base64 of "Username:" and "Password:".
LOGIN_USERNAME_CHALLENGE = b"VXNlcm5hbWU6"
LOGIN_PASSWORD_CHALLENGE = b"UGFzc3dvcmQ6"

# RFC 3501 §6.2.2, RFC 5034 §4: a lone "*" cancels the exchange.
CANCEL = b"*"

# RFC 4648 §4 exactly: whole quanta, padding only to complete the last one.
# (binascii's strict_mode still lets "dGlt=" through.)
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class SASLError(ValueError):
    """A malformed SASL exchange; ``str()`` says what was wrong, for the client."""


class SASLCancelled(SASLError):
    """The client answered ``*``: the exchange is abandoned (IMAP BAD, POP3 -ERR)."""

    def __init__(self) -> None:
        super().__init__("authentication cancelled by the client")


def encode_challenge(challenge: bytes) -> bytes:
    """A server challenge as it goes on the wire: base64, no line breaks."""
    return binascii.b2a_base64(challenge, newline=False)


def decode_response(line: bytes) -> bytes:
    """The octets of one base64 client response (the line without CRLF).

    Strict RFC 4648 §4 base64: no spaces, correct padding, nothing after it.
    ``*`` raises SASLCancelled.  An empty line is an empty response; so is a
    lone ``=``, the form an initial response takes when empty (RFC 4959 §3,
    RFC 5034 §4).
    """
    if line == CANCEL:
        raise SASLCancelled()
    if line in (b"", b"="):
        return b""
    if _BASE64.fullmatch(line) is None:
        raise SASLError("response is not valid base64")
    return binascii.a2b_base64(line, strict_mode=True)


def _utf8(octets: bytes, what: str) -> str:
    try:
        return octets.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(f"{what} is not valid UTF-8") from None


@attrs.frozen
class PlainResponse:
    """The three parts of a PLAIN message (RFC 4616 §2)."""

    authzid: str  # "" when the client did not ask to act as someone else
    authcid: str
    password: str

    def credentials(self) -> UsernamePassword:
        """twisted.cred credentials for the Authenticator."""
        return UsernamePassword(self.authcid.encode("utf-8"), self.password.encode("utf-8"))


def parse_plain(message: bytes) -> PlainResponse:
    """Parse a decoded PLAIN message: ``[authzid] NUL authcid NUL passwd``.

    RFC 4616 §2: exactly two NULs, non-empty authcid and passwd, all UTF-8.
    We do not let one user act for another, so an authzid must be empty or
    equal to the authcid (RFC 4616 §2: the server decides what it allows).
    """
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise SASLError("PLAIN message must be authzid NUL authcid NUL password")
    authzid, authcid, password = (
        _utf8(parts[0], "authorization identity"),
        _utf8(parts[1], "user name"),
        _utf8(parts[2], "password"),
    )
    if authcid == "":
        raise SASLError("PLAIN message has an empty user name")
    if password == "":
        raise SASLError("PLAIN message has an empty password")
    if authzid not in ("", authcid):
        raise SASLError("acting as another user (authorization identity) is not allowed")
    return PlainResponse(authzid, authcid, password)


def decode_plain(line: bytes) -> PlainResponse:
    """Base64-decode and parse one PLAIN response line (RFC 4616 §2)."""
    return parse_plain(decode_response(line))


class LoginExchange:
    """The server side of the two-step LOGIN mechanism.

    ::

        exchange = LoginExchange(initial_response)   # None if the client sent none
        while not exchange.done:
            send(b"+ " + exchange.challenge())
            exchange.respond(read_line())              # may raise SASLError
        credentials = exchange.credentials()

    An initial response (``AUTH LOGIN dXNlcg==``, RFC 4959 / RFC 5034) is taken
    as the user name, as clients that send one mean it.
    """

    def __init__(self, initial_response: bytes | None = None) -> None:
        self.username: str | None = None
        self.password: str | None = None
        if initial_response is not None:
            self.respond(initial_response)

    @property
    def done(self) -> bool:
        """Whether both the user name and the password have arrived."""
        return self.password is not None

    def challenge(self) -> bytes:
        """The base64 challenge to send next."""
        if self.username is None:
            return LOGIN_USERNAME_CHALLENGE
        if self.password is None:
            return LOGIN_PASSWORD_CHALLENGE
        raise SASLError("LOGIN exchange is already complete")

    def respond(self, line: bytes) -> None:
        """Take the client's base64 answer to the current challenge."""
        if self.done:
            raise SASLError("LOGIN exchange is already complete")
        octets = decode_response(line)
        if b"\0" in octets:
            raise SASLError("LOGIN response contains a NUL")
        if self.username is None:
            username = _utf8(octets, "user name")
            if username == "":
                raise SASLError("LOGIN user name is empty")
            self.username = username
        else:
            password = _utf8(octets, "password")
            if password == "":
                raise SASLError("LOGIN password is empty")
            self.password = password

    def credentials(self) -> UsernamePassword:
        """twisted.cred credentials once ``done``."""
        if self.username is None or self.password is None:
            raise SASLError("LOGIN exchange is not complete")
        return UsernamePassword(self.username.encode("utf-8"), self.password.encode("utf-8"))
