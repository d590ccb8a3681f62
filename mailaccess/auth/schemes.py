"""Password schemes in Dovecot's ``{SCHEME}hash`` syntax.

Stored values are read exactly as Dovecot 2.3 reads them from a passwd-file,
so a file written by ``doveadm pw`` verifies unchanged:

* ``{ARGON2ID}$argon2id$v=19$m=…,t=…,p=…$salt$hash`` (also ``{ARGON2I}``), the
  default for new passwords; made with Dovecot's parameters (m=64 MiB, t=3, p=1:
  libsodium, which Dovecot verifies with, handles one lane only).
* ``{BLF-CRYPT}$2y$…`` (``$2a$``/``$2b$`` too), ``{SHA512-CRYPT}$6$…`` and
  ``{SHA256-CRYPT}$5$…``.  Dovecot hands all of these to crypt(3), which picks
  the algorithm from the hash's own ``$id$``; we do the same.
* ``{PLAIN}`` (aliases ``{CLEAR}``, ``{CLEARTEXT}``; ``.B64``/``.HEX`` encodings).

A value with no ``{SCHEME}`` prefix follows Dovecot's passwd-file default
scheme, CRYPT: it is a crypt(3) string, ``$6$``/``$5$``/``$2?$`` are verified
and anything else (DES or MD5 crypt) is refused as unsupported.  A bare value is
never taken as plaintext.  The libpam-pwdfile forms ``hash[13]`` / ``hash[34]``
are recognised and refused the same way.

Verification is CPU-heavy (argon2, bcrypt, 5000 SHA rounds): callers on the
reactor thread must run these functions in a thread (see ``checker``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re

import argon2
import bcrypt

from mailaccess.auth import shacrypt

DEFAULT_SCHEME = "ARGON2ID"

# The schemes hash_password can make; verify_password also knows the aliases.
SCHEMES = ("ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "PLAIN")

_PLAIN_NAMES = frozenset({"PLAIN", "CLEAR", "CLEARTEXT"})
_CRYPT_NAMES = frozenset({"CRYPT", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT"})
_ARGON2_NAMES = frozenset({"ARGON2ID", "ARGON2I"})

# Dovecot's own ARGON2ID parameters (doveadm pw 2.3): 64 MiB, 3 passes, 1 lane.
ARGON2_MEMORY_KIB = 65536
ARGON2_TIME_COST = 3
# bcrypt cost for new hashes.  doveadm's default is 5, far too cheap today.
BCRYPT_COST = 12
# bcrypt (crypt_blowfish) only ever reads the first 72 octets of a password.
_BCRYPT_MAX = 72
# SHA-crypt's work grows with the password's length (every round hashes it):
# a megabyte "password" would hold a thread for minutes.  No real one is longer.
MAX_PASSWORD_OCTETS = 1024

_PREFIX = re.compile(r"^\{([A-Za-z0-9._-]+)\}")
# libpam-pwdfile's "hash[13]" (DES crypt) / "hash[34]" (MD5 crypt), and
# Dovecot's own "[56]" (DIGEST-MD5).
_PAM_SUFFIX = {"13": "CRYPT", "34": "MD5-CRYPT", "56": "DIGEST-MD5"}
_PAM_FORM = re.compile(r"^(.*)\[(13|34|56)\]$", re.DOTALL)


class SchemeError(ValueError):
    """A stored password that cannot be used, or an unknown scheme; says why."""


def split_scheme(stored: str) -> tuple[str, str]:
    """Split a stored password into (SCHEME, value), upper-casing the scheme.

    No ``{SCHEME}`` prefix means Dovecot's passwd-file default, ``CRYPT``.
    """
    match = _PREFIX.match(stored)
    if match is not None:
        return match.group(1).upper(), stored[match.end() :]
    pam = _PAM_FORM.match(stored)
    if pam is not None:
        return _PAM_SUFFIX[pam.group(2)], pam.group(1)
    return "CRYPT", stored


def _decode_plain(scheme: str, value: str) -> bytes:
    """The plaintext octets of a PLAIN-family value, undoing .B64/.HEX."""
    base, _, encoding = scheme.partition(".")
    if base not in _PLAIN_NAMES:
        raise SchemeError(f"{{{scheme}}} is not a plaintext scheme")
    if encoding == "":
        return value.encode("utf-8")
    try:
        if encoding == "B64":
            return base64.b64decode(value, validate=True)
        if encoding == "HEX":
            return bytes.fromhex(value)
    except (binascii.Error, ValueError) as e:
        raise SchemeError(f"{{{scheme}}} value is not valid {encoding.lower()}") from e
    raise SchemeError(f"unknown encoding .{encoding} in {{{scheme}}}")


def _is_plain(scheme: str) -> bool:
    return scheme.partition(".")[0] in _PLAIN_NAMES


def _verify_crypt(scheme: str, value: str, password: bytes) -> bool:
    """crypt(3) semantics: the hash's ``$id$`` chooses the algorithm."""
    if value.startswith(("$5$", "$6$")):
        return shacrypt.sha_crypt_verify(password, value)
    if value.startswith(("$2a$", "$2b$", "$2y$")):
        try:
            # The bcrypt package refuses >72 octets; crypt(3) silently ignores them.
            return bcrypt.checkpw(password[:_BCRYPT_MAX], value.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as e:
            raise SchemeError(f"{{{scheme}}} value is not a valid bcrypt hash") from e
    if value == "":
        raise SchemeError(f"{{{scheme}}} value is empty")
    raise SchemeError(
        f"{{{scheme}}} value is not a $6$, $5$ or $2y$ crypt hash "
        "(DES and MD5 crypt are not supported)"
    )


def _verify_argon2(scheme: str, value: str, password: bytes) -> bool:
    expected = "$argon2id$" if scheme == "ARGON2ID" else "$argon2i$"
    if not value.startswith(expected):
        raise SchemeError(f"{{{scheme}}} value does not start with {expected}")
    try:
        return argon2.PasswordHasher().verify(value, password)
    except argon2.exceptions.VerifyMismatchError:
        return False
    except (argon2.exceptions.InvalidHashError, argon2.exceptions.VerificationError) as e:
        raise SchemeError(f"{{{scheme}}} value is not a valid argon2 hash") from e


def verify_password(stored: str, password: str | bytes) -> bool:
    """Whether *password* matches the *stored* ``{SCHEME}value``.

    Returns False for a wrong password.  Raises SchemeError (with a message for
    the log) when *stored* cannot be checked at all: an unknown or unsupported
    scheme, or a malformed hash.  All comparisons are constant-time.
    """
    secret = password.encode("utf-8") if isinstance(password, str) else password
    scheme, value = split_scheme(stored)
    known = _is_plain(scheme) or scheme in _CRYPT_NAMES or scheme in _ARGON2_NAMES
    if not known:
        raise SchemeError(f"unsupported password scheme {{{scheme}}}")
    # No real password holds a NUL (RFC 4616 §2 forbids it), and crypt(3) would
    # stop reading at one: refuse rather than compare a truncated secret.
    if b"\0" in secret or len(secret) > MAX_PASSWORD_OCTETS:
        return False
    if _is_plain(scheme):
        return hmac.compare_digest(_decode_plain(scheme, value), secret)
    if scheme in _CRYPT_NAMES:
        return _verify_crypt(scheme, value, secret)
    return _verify_argon2(scheme, value, secret)


def check_stored(stored: str) -> str | None:
    """Why *stored* can never verify (unknown scheme, malformed), or None if usable.

    Cheap: does not hash anything.  Used to report problems when a users file
    is read, before anyone tries to log in.
    """
    scheme, value = split_scheme(stored)
    if _is_plain(scheme):
        try:
            _decode_plain(scheme, value)
        except SchemeError as e:
            return str(e)
        return None
    if scheme in _ARGON2_NAMES:
        try:
            argon2.extract_parameters(value)
        except argon2.exceptions.InvalidHashError:
            return f"{{{scheme}}} value is not a valid argon2 hash"
        return None
    if scheme in _CRYPT_NAMES:
        if value.startswith(("$5$", "$6$", "$2a$", "$2b$", "$2y$")):
            return None
        return f"{{{scheme}}} value is not a $6$, $5$ or $2y$ crypt hash"
    return f"unsupported password scheme {{{scheme}}}"


def plaintext_of(stored: str) -> str | None:
    """The plaintext of a PLAIN-family stored password, else None.

    For mechanisms that need the secret itself (POP3 APOP, CRAM-MD5): they can
    only work for users whose password is stored in plaintext.
    """
    scheme, value = split_scheme(stored)
    if not _is_plain(scheme):
        return None
    try:
        return _decode_plain(scheme, value).decode("utf-8")
    except (SchemeError, UnicodeDecodeError):
        return None


def hash_password(
    password: str, scheme: str = DEFAULT_SCHEME, *, rounds: int | None = None
) -> str:
    """A new ``{SCHEME}value`` for *password*, with a fresh random salt.

    *rounds* is the scheme's cost where it has one (argon2 passes, bcrypt log2
    cost, SHA-crypt rounds).  Raises SchemeError for a scheme we cannot make.
    """
    name = scheme.upper()
    secret = password.encode("utf-8")
    if b"\0" in secret:
        raise SchemeError("a password cannot contain a NUL character")
    if len(secret) > MAX_PASSWORD_OCTETS:
        raise SchemeError(f"a password cannot be longer than {MAX_PASSWORD_OCTETS} octets")
    if rounds is not None and rounds < 1:
        raise SchemeError(f"rounds must be a positive number, not {rounds}")
    if name == "ARGON2ID":
        hasher = argon2.PasswordHasher(
            time_cost=rounds if rounds is not None else ARGON2_TIME_COST,
            memory_cost=ARGON2_MEMORY_KIB,
            parallelism=1,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        return "{ARGON2ID}" + hasher.hash(secret)
    if name == "BLF-CRYPT":
        cost = rounds if rounds is not None else BCRYPT_COST
        if not 4 <= cost <= 31:
            raise SchemeError("BLF-CRYPT cost must be between 4 and 31")
        made = bcrypt.hashpw(secret[:_BCRYPT_MAX], bcrypt.gensalt(cost)).decode("ascii")
        # $2b$ and $2y$ are the same algorithm; doveadm writes $2y$.
        return "{BLF-CRYPT}$2y$" + made[4:]
    if name in ("SHA512-CRYPT", "SHA256-CRYPT"):
        variant: shacrypt.Variant = "6" if name == "SHA512-CRYPT" else "5"
        return "{" + name + "}" + shacrypt.sha_crypt_hash(secret, variant, rounds)
    if name in _PLAIN_NAMES:
        if any(c in password for c in ":\r\n"):
            # A passwd-file line cannot hold these in its password field.
            raise SchemeError("PLAIN cannot store ':' or a line break; use a hashed scheme")
        return "{PLAIN}" + password
    raise SchemeError(f"cannot make {{{scheme}}} passwords; choose one of {', '.join(SCHEMES)}")
