"""Modified UTF-7, the encoding of IMAP mailbox names (RFC 3501 §5.1.3).

Used on the wire (LIST, SELECT …) and on disk: Maildir++ folder directories
and the ``subscriptions`` file hold the modified UTF-7 form, as Dovecot writes.

Why not Twisted's ``imap4-utf-7`` codec: it is not sound for a store.  Checked
against Twisted 26.10:

* it encodes TAB (and other C0 controls that Python's UTF-7 passes through
  directly) as ``&-``, which decodes back to ``&`` — a silent rename;
  ``"é\\t"`` loses the TAB altogether;
* it encodes lone surrogates (``"\\ud800"`` → ``&2AA-``), i.e. invalid UTF-16;
* its decoder accepts an unterminated shift (``&AOk``), base64-encoded
  printable ASCII (``&AGE-`` for ``a``) and two adjacent shifts
  (``&U,BTFw-&ZeVnLIqe-``), so two different byte strings name one mailbox.

This module is strict instead: ``decode`` accepts exactly the strings
``encode`` produces (the canonical form) and raises ``InvalidMailboxName``
otherwise.  Dovecot 2.3 refuses the same malformed names but one kind: it
ignores non-zero padding bits, so it takes ``&AOl-`` as a second spelling of
``é`` (``&AOk-``).  We refuse that too — a folder with such a name could not
be opened by its decoded name — and the store skips it when listing.
"""

from __future__ import annotations

import base64
import binascii
import re

from mailaccess.store.model import InvalidMailboxName

__all__ = ["decode", "encode"]

# RFC 3501 §5.1.3: modified BASE64 is RFC 2045 base64 with "," in place of "/"
# and no "=" padding.
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _is_direct(char: str) -> bool:
    # RFC 3501 §5.1.3: printable US-ASCII (0x20-0x7e) represents itself;
    # "&" is printable too but must be written "&-".
    return " " <= char <= "~"


def _b64_run(chars: str) -> str:
    try:
        utf16 = chars.encode("utf-16-be")
    except UnicodeEncodeError:
        raise InvalidMailboxName(
            "mailbox name contains an unpaired UTF-16 surrogate; it is not valid Unicode"
        ) from None
    return base64.b64encode(utf16).decode("ascii").rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    """Encode a Unicode mailbox name in modified UTF-7 (RFC 3501 §5.1.3)."""
    out: list[str] = []
    run: list[str] = []
    for char in name:
        if _is_direct(char):
            if run:
                out.append("&" + _b64_run("".join(run)) + "-")
                run.clear()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    if run:
        out.append("&" + _b64_run("".join(run)) + "-")
    return "".join(out)


_SHIFT = re.compile(r"&([^-]*)(-?)")


def _decode_run(b64: str, position: int) -> str:
    where = f"in the modified UTF-7 sequence at offset {position}"
    # 16 bits per UTF-16 unit in 6-bit digits: a length of 1, 4 or 7 (mod 8)
    # leaves a partial unit, which RFC 3501 §5.1.3 (via RFC 2152) forbids.
    if len(b64) % 8 in (1, 4, 7):
        raise InvalidMailboxName(f"truncated UTF-16 character {where}")
    padded = b64.replace(",", "/") + "=" * (-len(b64) % 4)
    try:
        utf16 = base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise InvalidMailboxName(f"malformed BASE64 {where}") from None
    if len(utf16) % 2:
        raise InvalidMailboxName(f"truncated UTF-16 character {where}")
    try:
        text = utf16.decode("utf-16-be")
    except UnicodeDecodeError:
        raise InvalidMailboxName(f"unpaired UTF-16 surrogate {where}") from None
    if any(_is_direct(char) for char in text):
        raise InvalidMailboxName(
            f"printable US-ASCII encoded in BASE64 {where}; RFC 3501 §5.1.3 requires "
            "it to represent itself"
        )
    return text


def decode(encoded: str) -> str:
    """Decode a modified UTF-7 mailbox name (RFC 3501 §5.1.3), strictly.

    Raises InvalidMailboxName, saying what and where, for anything but the
    canonical encoding of some name.
    """
    out: list[str] = []
    position = 0
    previous_run_end = -1
    while position < len(encoded):
        char = encoded[position]
        if char != "&":
            if not _is_direct(char):
                raise InvalidMailboxName(
                    f"character {char!r} at offset {position} is not allowed in a "
                    "modified UTF-7 mailbox name (only printable US-ASCII is)"
                )
            out.append(char)
            position += 1
            continue
        match = _SHIFT.match(encoded, position)
        assert match is not None  # the pattern matches any "&..." prefix
        b64, terminator = match.groups()
        bad = sorted(set(b64) - _B64_CHARS)
        if bad:
            raise InvalidMailboxName(
                f"character {bad[0]!r} in the modified UTF-7 sequence at offset {position} "
                "is not modified BASE64"
            )
        if not terminator:
            raise InvalidMailboxName(
                f"modified UTF-7 sequence at offset {position} is not terminated by '-'"
            )
        if not b64:
            out.append("&")
        else:
            if previous_run_end == position:
                # The encoder would have merged the two: a second spelling of
                # the same name, which would let two folders share one name.
                raise InvalidMailboxName(
                    f"two adjacent modified UTF-7 sequences at offset {position}; "
                    "they must be one sequence"
                )
            decoded = _decode_run(b64, position)
            reencoded = _b64_run(decoded)
            if reencoded != b64:
                # Non-zero padding bits: decodes, but is not the canonical form.
                raise InvalidMailboxName(
                    f"non-zero padding bits in the modified UTF-7 sequence at offset {position}"
                )
            out.append(decoded)
            previous_run_end = match.end()
        position = match.end()
    return "".join(out)
