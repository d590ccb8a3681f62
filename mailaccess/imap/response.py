"""Encoding of IMAP server responses (RFC 3501 §7, grammar §9 ``response``).

Objects in, bytes out.  Data values are plain Python values:

=================================  =============================================
``None``                           ``NIL``
``int``                            a number
``bytes`` / ``str``                a string: quoted when safe, else a literal
:class:`Atom`                      written as is (``FLAGS``, ``\\Seen``, ``BODY[]``)
``list`` / ``tuple``               a parenthesized list, elements encoded alike
:class:`Literal`                   always a literal (message bodies)
=================================  =============================================

Whole lines come from :func:`tagged`, :func:`untagged`, :func:`untagged_status`
and :func:`continuation`; each ends in CRLF.  A large body need not be built in
memory: :func:`literal_header` gives the ``{n}\\r\\n`` prefix so the session can
stream the octets after it.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterable, Sequence

import attrs

from mailaccess.imap.lexer import ParseError, is_atom
from mailaccess.imap.sequence import compact_sequence_set

__all__ = [
    "Atom",
    "Literal",
    "ResponseCode",
    "Value",
    "continuation",
    "encode",
    "encode_astring",
    "encode_flags",
    "encode_string",
    "error_response",
    "format_internaldate",
    "literal_header",
    "sequence_set_atom",
    "tagged",
    "untagged",
    "untagged_status",
]

#: Strings longer than this go as literals even when quoting would be valid:
#: clients read literals without scanning for escapes, and lines stay short.
MAX_QUOTED = 1024


@attrs.frozen
class Atom:
    """Text written verbatim: an atom, a flag, a FETCH item name, a response keyword."""

    text: bytes

    @classmethod
    def of(cls, text: str | bytes) -> Atom:
        """An Atom from str or bytes."""
        return cls(text.encode("ascii") if isinstance(text, str) else text)


@attrs.frozen
class Literal:
    """Octets always sent as a literal ``{n}\\r\\n...`` (bodies, 8-bit data)."""

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} octets>")


Value = None | int | bytes | str | Atom | Literal | Sequence["Value"]


@attrs.frozen
class ResponseCode:
    """RFC 3501 §7.1 ``resp-text-code``: ``[name args...]``, e.g. ``[UIDNEXT 5]``.

    ``args`` are data values (see :func:`encode`); ``[PERMANENTFLAGS (\\Seen \\*)]``
    is ``ResponseCode("PERMANENTFLAGS", (flags_list,))`` with the flags as Atoms.
    """

    name: str
    args: tuple[Value, ...] = ()

    def __bytes__(self) -> bytes:
        out = b"[" + self.name.encode("ascii")
        for arg in self.args:
            out += b" " + encode(arg)
        return out + b"]"


def _quotable(data: bytes) -> bool:
    # RFC 3501 §9 quoted: TEXT-CHARs (7-bit, no NUL, CR, LF); 8-bit needs a literal
    # unless the client enabled UTF8=ACCEPT, which callers signal with utf8=True.
    return len(data) <= MAX_QUOTED and data.isascii() and not any(c in data for c in b"\0\r\n")


def encode_string(value: bytes | str, utf8: bool = False) -> bytes:
    """RFC 3501 §4.3 string: quoted if safe, a literal otherwise."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if _quotable(data) or (
        utf8
        and len(data) <= MAX_QUOTED
        and not any(c in data for c in b"\0\r\n")
        and _is_utf8(data)
    ):
        if b"\\" in data or b'"' in data:
            data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + data + b'"'
    return literal_header(len(data)) + data


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def encode_astring(value: bytes | str) -> bytes:
    """RFC 3501 §9 astring: a bare atom when it is one (and not NIL), else a string."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if is_atom(data) and data.upper() != b"NIL":
        return data
    return encode_string(data)


def literal_header(size: int) -> bytes:
    """The ``{size}\\r\\n`` that precedes a literal's octets (RFC 3501 §4.3)."""
    return b"{%d}\r\n" % size


def encode(value: Value) -> bytes:
    """Encode one data value (see the module docstring for the mapping)."""
    if value is None:
        return b"NIL"
    if isinstance(value, Atom):
        return value.text
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP encoding")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("IMAP numbers are unsigned")
        return b"%d" % value
    if isinstance(value, bytes | str):
        return encode_string(value)
    if isinstance(value, Literal):
        return literal_header(len(value.data)) + value.data
    return b"(" + b" ".join(encode(v) for v in value) + b")"


def encode_flags(flags: Iterable[str]) -> bytes:
    """A flag list, e.g. ``(\\Seen $Forwarded)``, system flags first in a stable order."""
    ordered = sorted(flags, key=lambda f: (not f.startswith("\\"), f.upper()))
    return b"(" + " ".join(ordered).encode("ascii") + b")"


def sequence_set_atom(numbers: Iterable[int]) -> Atom:
    """A compacted sequence set as a data value, e.g. for ``[COPYUID v 1:3,5 7:10]``."""
    return Atom(compact_sequence_set(numbers))


_MONTH_NAMES = (
    b"Jan",
    b"Feb",
    b"Mar",
    b"Apr",
    b"May",
    b"Jun",
    b"Jul",
    b"Aug",
    b"Sep",
    b"Oct",
    b"Nov",
    b"Dec",
)


def format_internaldate(
    when: float | datetime.datetime, tz: datetime.tzinfo = datetime.UTC
) -> bytes:
    """RFC 3501 §9 ``date-time``, quoted: ``"17-Jul-1996 02:44:25 -0700"``.

    ``when`` is seconds since the epoch (shown in ``tz``) or an aware datetime
    (shown in its own zone).  The day is padded with a space (``date-day-fixed``)
    and month names are written out here, not by strftime, whose names follow
    the process locale.
    """
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            raise ValueError("INTERNALDATE needs an aware datetime")
        dt = when
    else:
        dt = datetime.datetime.fromtimestamp(when, tz)
    offset = dt.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = b"+" if minutes >= 0 else b"-"
    minutes = abs(minutes)
    return b'"%2d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        dt.day,
        _MONTH_NAMES[dt.month - 1],
        dt.year,
        dt.hour,
        dt.minute,
        dt.second,
        sign,
        minutes // 60,
        minutes % 60,
    )


def _text(text: str, code: ResponseCode | None) -> bytes:
    # resp-text = ["[" resp-text-code "]" SP] text; text is 1*TEXT-CHAR, so CR/LF
    # are replaced (a reason quoting client input must not end the line early),
    # and a text that itself starts with "[" would read as a response code.
    # text is 1*TEXT-CHAR in RFC 3501, so it is never left empty.
    clean = text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace") or b"done"
    if code is not None:
        return bytes(code) + b" " + clean
    if clean.startswith(b"["):
        clean = b" " + clean
    return clean


def tagged(tag: str, status: str, text: str, code: ResponseCode | None = None) -> bytes:
    """A tagged status response (RFC 3501 §7.1): ``a1 OK [READ-WRITE] SELECT completed``."""
    if status not in ("OK", "NO", "BAD"):
        raise ValueError(f"a tagged response is OK, NO or BAD, not {status}")
    return tag.encode("ascii") + b" " + status.encode() + b" " + _text(text, code) + b"\r\n"


def untagged_status(status: str, text: str, code: ResponseCode | None = None) -> bytes:
    """An untagged status response (RFC 3501 §7.1): ``* OK [UIDNEXT 5] Predicted next UID``.

    ``status`` is OK, NO, BAD, PREAUTH or BYE.
    """
    if status not in ("OK", "NO", "BAD", "PREAUTH", "BYE"):
        raise ValueError(f"not an untagged status: {status}")
    return b"* " + status.encode() + b" " + _text(text, code) + b"\r\n"


def untagged(*parts: Value) -> bytes:
    """An untagged data response (RFC 3501 §7.2-7.4) from data values.

    ``untagged(3, Atom(b"EXISTS"))`` → ``* 3 EXISTS``; ``untagged(Atom(b"FLAGS"),
    [Atom(b"\\\\Seen")])`` → ``* FLAGS (\\Seen)``; a FETCH is
    ``untagged(12, Atom(b"FETCH"), [Atom(b"UID"), 7, Atom(b"FLAGS"), [...]])``.
    """
    return b"* " + b" ".join(encode(p) for p in parts) + b"\r\n"


def continuation(text: str | bytes = "Ready", base64_data: bool = False) -> bytes:
    """A continuation request (RFC 3501 §7.5): ``+ Ready`` or ``+ <base64>`` for SASL."""
    if base64_data:
        data = text.encode() if isinstance(text, str) else text
        return b"+ " + base64.b64encode(data) + b"\r\n"
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return b"+ " + _text(text, None) + b"\r\n"


def error_response(error: ParseError) -> bytes:
    """The ``BAD`` answer to a command that did not parse (RFC 3501 §7.1.3).

    Tagged when the tag could be read, untagged (``* BAD``) otherwise; the
    error's response code, if any, goes in brackets (``[TOOBIG]``).
    """
    code = ResponseCode(error.code) if error.code else None
    if error.tag is None:
        return untagged_status("BAD", error.reason, code)
    return tagged(error.tag, "BAD", error.reason, code)
