"""SHA-256-crypt and SHA-512-crypt (``$5$`` / ``$6$``), as glibc and Dovecot use them.

An implementation of Ulrich Drepper's published algorithm "Unix crypt using
SHA-256 and SHA-512" (https://www.akkadia.org/drepper/SHA-crypt.txt).  The
stdlib ``crypt`` module would do this through libc, but it is deprecated in
Python 3.11 and removed in 3.13 (PEP 594), so the server carries its own.

The step numbers in the comments are those of the specification.  This is pure
CPU work (5000 rounds by default): call it off the reactor thread.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from typing import Literal

Variant = Literal["5", "6"]

ROUNDS_DEFAULT = 5000
ROUNDS_MIN = 1000
ROUNDS_MAX = 999_999_999
SALT_MAX = 16

# The crypt(3) base-64 alphabet: note it starts with "./" and is not RFC 4648's.
_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Which digest bytes go into each group of 4 output characters, most significant
# first (spec steps 22 e and f).  The trailing short group is 2 (SHA-512) or
# 3 (SHA-256) characters.
_ORDER_SHA256: tuple[tuple[int, ...], ...] = (
    (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
    (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29),
    (31, 30),
)  # fmt: skip
_ORDER_SHA512: tuple[tuple[int, ...], ...] = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4),
    (47, 5, 26), (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51),
    (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35),
    (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19),
    (62, 20, 41), (63,),
)  # fmt: skip

_SETTING = re.compile(
    r"^\$(?P<id>[56])\$(?:rounds=(?P<rounds>[0-9]{1,10})\$)?(?P<salt>[^$]*)(?:\$(?P<hash>.*))?$"
)


class InvalidSetting(ValueError):
    """The string is not a ``$5$`` / ``$6$`` setting or hash."""


def _digest_factory(variant: Variant) -> Callable[[bytes], hashlib._Hash]:
    return hashlib.sha256 if variant == "5" else hashlib.sha512


def _repeat_to(block: bytes, length: int) -> bytes:
    """*block* repeated and cut to exactly *length* bytes (steps 16 and 20)."""
    if length == 0:
        return b""
    return (block * (length // len(block) + 1))[:length]


def _encode(digest: bytes, variant: Variant) -> str:
    """The crypt base-64 of *digest*, bytes permuted as the spec lays out."""
    out: list[str] = []
    for group in _ORDER_SHA256 if variant == "5" else _ORDER_SHA512:
        value = 0
        for index in group:
            value = (value << 8) | digest[index]
        # A group of n bytes yields n + 1 characters, least significant 6 bits first.
        for _ in range(len(group) + 1):
            out.append(_ALPHABET[value & 0x3F])
            value >>= 6
    return "".join(out)


def sha_crypt_digest(password: bytes, salt: bytes, rounds: int, variant: Variant) -> bytes:
    """The raw final digest of the algorithm (steps 1-21) before encoding."""
    new = _digest_factory(variant)
    size = new(b"").digest_size
    key_len = len(password)

    # Steps 4-8: digest B of password, salt, password.
    b = new(password + salt + password).digest()

    # Steps 1-3 and 9-12: digest A.
    a = new(password + salt)
    a.update(_repeat_to(b, key_len))
    n = key_len
    while n > 0:
        a.update(b if n & 1 else password)
        n >>= 1
    digest_a = a.digest()

    # Steps 13-16: the byte sequence P, from the password repeated key_len times.
    p_bytes = _repeat_to(new(password * key_len).digest(), key_len)

    # Steps 17-20: the byte sequence S, from the salt repeated 16 + A[0] times.
    s_bytes = _repeat_to(new(salt * (16 + digest_a[0])).digest(), len(salt))

    # Step 21: the rounds that make the function slow.
    c = digest_a
    for i in range(rounds):
        h = new(p_bytes if i & 1 else c)
        if i % 3:
            h.update(s_bytes)
        if i % 7:
            h.update(p_bytes)
        h.update(c if i & 1 else p_bytes)
        c = h.digest()
    assert len(c) == size
    return c


def parse_setting(setting: str) -> tuple[Variant, int, bool, str]:
    """Split ``$id$[rounds=N$]salt[$hash]`` into (variant, rounds, explicit, salt).

    Rounds out of range are clamped as the spec requires (step 22 c); the salt
    is cut to 16 characters.
    """
    match = _SETTING.match(setting)
    if match is None:
        raise InvalidSetting("not a SHA-crypt setting ($5$ or $6$)")
    variant: Variant = "5" if match["id"] == "5" else "6"
    explicit = match["rounds"] is not None
    rounds = ROUNDS_DEFAULT
    if explicit:
        rounds = min(max(int(match["rounds"]), ROUNDS_MIN), ROUNDS_MAX)
    return variant, rounds, explicit, match["salt"][:SALT_MAX]


def sha_crypt(password: bytes, setting: str) -> str:
    """crypt(3) for ``$5$`` / ``$6$``: hash *password* with *setting*'s salt and rounds.

    *setting* may be a bare setting (``$6$rounds=7000$salt``) or a full hash,
    whose hash part is ignored; the result is the full hash string.
    """
    variant, rounds, explicit, salt = parse_setting(setting)
    digest = sha_crypt_digest(password, salt.encode("utf-8"), rounds, variant)
    prefix = f"${variant}$" + (f"rounds={rounds}$" if explicit else "")
    return f"{prefix}{salt}${_encode(digest, variant)}"


def sha_crypt_verify(password: bytes, stored: str) -> bool:
    """Whether *password* hashes to *stored*; the comparison is constant-time."""
    try:
        computed = sha_crypt(password, stored)
    except InvalidSetting:
        return False
    return hmac.compare_digest(
        computed.encode("utf-8", "replace"), stored.encode("utf-8", "replace")
    )


def make_salt(length: int = SALT_MAX) -> str:
    """A random salt of *length* characters from the crypt alphabet."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def sha_crypt_hash(password: bytes, variant: Variant, rounds: int | None = None) -> str:
    """A new hash of *password* with a random 16-character salt.

    With *rounds* None the default 5000 is used and not written, as doveadm does.
    """
    setting = f"${variant}$"
    if rounds is not None:
        setting += f"rounds={rounds}$"
    return sha_crypt(password, setting + make_salt())
