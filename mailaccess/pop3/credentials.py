"""APOP credentials for twisted.cred (RFC 1939 §7)."""

from __future__ import annotations

import hashlib
import hmac

from twisted.cred.credentials import IUsernameHashedPassword
from zope.interface import implementer


@implementer(IUsernameHashedPassword)
class APOPCredentials:
    """The APOP digest a client sent: MD5 of the greeting's timestamp and the secret.

    Only a checker holding the password in plain can verify it, by calling
    ``checkPassword(plain)``; any other scheme cannot, and the login fails.
    """

    def __init__(self, timestamp: bytes, username: bytes, digest: bytes) -> None:
        self.timestamp = timestamp
        self.username = username
        self.digest = digest.lower()

    def checkPassword(self, password: bytes | str) -> bool:
        """True if *password* is the secret the digest was made with."""
        if isinstance(password, str):
            password = password.encode("utf-8")
        expected = hashlib.md5(self.timestamp + password).hexdigest().encode("ascii")
        return hmac.compare_digest(expected, self.digest)
