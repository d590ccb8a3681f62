"""Message parsing for IMAP FETCH and SEARCH: envelope, body structure, offsets.

``parse_message(data)`` walks a stored message once and returns a
``MessageInfo``: the ten ENVELOPE fields, the tree of MIME parts with all that
BODY and BODYSTRUCTURE need (RFC 3501 §7.4.2), and for every part the offsets
of its MIME header and body *in the stored file* plus their sizes as a client
sees them (CRLF line ends), so ``BODY[1.2]<100.5000>`` can be streamed from
the file (RFC 3501 §6.4.5) without parsing again.

It is a lean offset-keeping parser, not the stdlib ``email`` package: that one
is slow on large mailboxes and forgets where things are.  Boundary lines are
found with ``bytes.find`` so base64 attachments cost a C-speed scan, not a
Python loop per line.  Behaviour on malformed mail follows Dovecot 2.3 (the
reference answers in tests/fixtures/mime/dovecot_answers.json):

* a boundary line is any line starting with ``--boundary`` of any enclosing
  multipart; the longest matching boundary wins (RFC 2046 §5.1.1 asks senders
  not to make one a prefix of another; readers cannot rely on it);
* the line break before a boundary line belongs to the boundary;
* an unterminated multipart ends where an outer boundary or the data ends;
* a multipart without a boundary parameter, or with no part at all, gets one
  empty text/plain part;
* no header/body separator: everything is header and the body is empty;
* the first of each Content-* field counts; Content-* fields other than
  Content-Type count only in a MIME entity (RFC 2045 §4: MIME-Version, or
  leniently Content-Type, or being a part of a multipart);
* a broken Content-Type is reported as understood (``"" ""`` for junk), not
  replaced by text/plain.

Nesting is capped at ``MAX_DEPTH``: deeper parts are not parsed, but a
multipart there still gets one empty part and a message/rfc822 an empty
message with a NIL envelope, so BODYSTRUCTURE stays well-formed.  The parser
never raises on any input.

Line ends: the stored file normally has LF; CRLF files are parsed the same.
The CRLF view converts each LF not preceded by CR into CRLF and leaves bare
CR alone, as Dovecot's istream-crlf does; every size here is in that view.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import marshal
import quopri
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, NamedTuple

import attrs

from mailaccess.store.mime_header import (
    Address,
    Params,
    decode_raw,
    decode_words,
    humanize,
    iter_fields,
    param,
    parse_addresses,
    parse_content_type,
    parse_date,
    parse_disposition,
    parse_languages,
    parse_token,
)

__all__ = [
    "MAX_DEPTH",
    "PARSER_VERSION",
    "Address",
    "Envelope",
    "MessageInfo",
    "Params",
    "Part",
    "Section",
    "crlf_size",
    "decoded_header_values",
    "decoded_text",
    "envelope_to_tuple",
    "find_section",
    "header_fields",
    "iter_crlf",
    "iter_crlf_partial",
    "iter_decoded_text",
    "parse_message",
    "part_from_tuple",
    "part_to_tuple",
    "read_range",
    "section_range",
    "to_crlf",
]

#: Bump whenever parse_message would answer differently for some message:
#: the metadata cache then throws its entries away (they are stale).
PARSER_VERSION = 1

#: Deepest nesting of multipart and message/rfc822 parts that is parsed;
#: anything below is treated as an opaque leaf.  Dovecot uses 100.
MAX_DEPTH = 100

_DEFAULT_PARAMS: Params = ((b"charset", b"us-ascii"),)


class Envelope(NamedTuple):
    """The ENVELOPE of a message (RFC 3501 §7.4.2), ready to encode.

    The fields are in the RFC's order, so an encoder can simply iterate.
    Strings are the raw header values, unfolded, encoded words left as sent;
    None is NIL.  Address lists are tuples of (name, adl, mailbox, host), None
    when the field is absent or empty.  As Dovecot does, a repeated string
    field keeps its last occurrence and repeated address fields are joined;
    Sender and Reply-To default to From (RFC 3501 §7.4.2).  (A NamedTuple:
    built from the cache several times faster than an attrs class.)
    """

    date: bytes | None = None
    subject: bytes | None = None
    from_: tuple[Address, ...] | None = None
    sender: tuple[Address, ...] | None = None
    reply_to: tuple[Address, ...] | None = None
    to: tuple[Address, ...] | None = None
    cc: tuple[Address, ...] | None = None
    bcc: tuple[Address, ...] | None = None
    in_reply_to: bytes | None = None
    message_id: bytes | None = None


@attrs.define(slots=True, eq=True)
class Part:
    """One MIME entity: a BODY/BODYSTRUCTURE node and its place in the file.

    ``header_start <= body_start <= body_end`` are offsets in the stored file:
    the MIME header (for the top-level part: the message header) is
    ``[header_start, body_start)`` including the blank line that ends it, the
    body is ``[body_start, body_end)``.  ``header_size`` and ``size`` are the
    octet counts of those ranges in CRLF form; ``size`` is BODYSTRUCTURE's
    body size.  ``lines`` is the body's line count (reported for text/* and
    message/rfc822 only).

    ``params`` is None (NIL) or the parameters in header order with
    ``charset=us-ascii`` added to text/* parts that lack one (RFC 2045 §5.2).
    A multipart has ``children``; a message/rfc822 part has ``envelope`` and
    ``message``, the top-level part of the encapsulated message, whose header
    range is the encapsulated header (for ``n.HEADER``) and whose body range
    is the encapsulated body (``n.TEXT``).
    """

    type: bytes
    subtype: bytes
    params: Params | None
    id: bytes | None
    description: bytes | None
    encoding: bytes
    md5: bytes | None
    disposition: tuple[bytes, Params | None] | None
    language: tuple[bytes, ...] | None
    location: bytes | None
    header_start: int
    body_start: int
    body_end: int
    header_size: int
    size: int
    lines: int
    children: tuple[Part, ...] = ()
    envelope: Envelope | None = None
    message: Part | None = None

    @property
    def is_multipart(self) -> bool:
        """True for a multipart/* part (its body is ``children``)."""
        return bool(self.children)

    @property
    def is_message(self) -> bool:
        """True for a message/rfc822 part that encapsulates a parsed message."""
        return self.message is not None


class MessageInfo:
    """Everything FETCH and SEARCH need of one message without reading it again.

    ``size`` is the stored size, ``vsize`` the RFC822.SIZE (CRLF line ends);
    ``header_size`` is the CRLF size of the header incl. its blank line.
    ``date`` is the Date: header as a UTC timestamp and ``date_offset`` its
    zone in seconds east of UTC (SEARCH SENTON etc. compare the date in the
    sender's zone, RFC 3501 §6.4.4); both None when missing or unparseable.

    ``body`` (the tree of parts) may be held in its tuple form, or that tuple
    marshalled to bytes, and built on first access: serving ENVELOPE for a
    whole mailbox from the cache then never pays for the trees.  Treat it as
    immutable.
    """

    __slots__ = (
        "_body",
        "_body_tuple",
        "date",
        "date_offset",
        "envelope",
        "header_size",
        "size",
        "vsize",
    )

    def __init__(
        self,
        envelope: Envelope,
        body: Part | None,
        size: int,
        vsize: int,
        date: float | None = None,
        date_offset: int | None = None,
        header_size: int | None = None,
        body_tuple: tuple[Any, ...] | bytes | None = None,
    ) -> None:
        if body is None and (body_tuple is None or header_size is None):
            raise TypeError("MessageInfo needs a body, or a body_tuple and header_size")
        self.envelope = envelope
        self._body = body
        self._body_tuple = body_tuple
        self.size = size
        self.vsize = vsize
        self.date = date
        self.date_offset = date_offset
        self.header_size = body.header_size if body is not None else header_size

    @property
    def body(self) -> Part:
        """The top-level part: BODY/BODYSTRUCTURE and every section's offsets."""
        if self._body is None:
            lazy = self._body_tuple
            assert lazy is not None
            if isinstance(lazy, bytes):
                lazy = marshal.loads(lazy)
            self._body = part_from_tuple(lazy)
            self._body_tuple = None
        return self._body

    def compact(self) -> MessageInfo:
        """This info with its part tree held marshalled, built again on first use.

        For infos kept in memory in their thousands: a tree is dozens of
        objects the garbage collector walks on every full collection (tens of
        milliseconds with the reactor held, for a 10,000-message mailbox),
        where its marshalled form is one bytes object it never looks into.
        """
        if self._body is None:
            return self
        return MessageInfo(
            self.envelope,
            None,
            self.size,
            self.vsize,
            self.date,
            self.date_offset,
            self.header_size,
            self.body_bytes(),
        )

    def body_bytes(self) -> bytes:
        """The body tuple (see ``part_to_tuple``) marshalled, for the cache."""
        lazy = self._body_tuple
        if isinstance(lazy, bytes):
            return lazy
        return marshal.dumps(lazy if lazy is not None else part_to_tuple(self.body))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageInfo):
            return NotImplemented
        return (
            self.envelope == other.envelope
            and self.size == other.size
            and self.vsize == other.vsize
            and self.date == other.date
            and self.date_offset == other.date_offset
            and self.header_size == other.header_size
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"MessageInfo(envelope={self.envelope!r}, body={self.body!r}, size={self.size}, "
            f"vsize={self.vsize}, date={self.date!r}, date_offset={self.date_offset!r})"
        )


# --- tuple form (for the cache) --------------------------------------------------


def envelope_to_tuple(env: Envelope) -> tuple[Any, ...]:
    """The envelope as a plain tuple (marshal-able)."""
    return tuple(env)


def part_to_tuple(p: Part) -> tuple[Any, ...]:
    """A part tree as nested plain tuples (marshal-able); see part_from_tuple."""
    return (
        p.type,
        p.subtype,
        p.params,
        p.id,
        p.description,
        p.encoding,
        p.md5,
        p.disposition,
        p.language,
        p.location,
        p.header_start,
        p.body_start,
        p.body_end,
        p.header_size,
        p.size,
        p.lines,
        tuple(part_to_tuple(c) for c in p.children),
        None if p.envelope is None else envelope_to_tuple(p.envelope),
        None if p.message is None else part_to_tuple(p.message),
    )


def part_from_tuple(t: tuple[Any, ...]) -> Part:
    """Inverse of part_to_tuple."""
    env, message = t[17], t[18]
    return Part(
        type=t[0],
        subtype=t[1],
        params=t[2],
        id=t[3],
        description=t[4],
        encoding=t[5],
        md5=t[6],
        disposition=t[7],
        language=t[8],
        location=t[9],
        header_start=t[10],
        body_start=t[11],
        body_end=t[12],
        header_size=t[13],
        size=t[14],
        lines=t[15],
        children=tuple(part_from_tuple(c) for c in t[16]),
        envelope=None if env is None else Envelope(*env),
        message=None if message is None else part_from_tuple(message),
    )


@attrs.frozen(slots=True)
class Section:
    """A range of the stored file and its octet count in the CRLF view."""

    start: int
    end: int
    size: int


# --- CRLF view ----------------------------------------------------------------


def to_crlf(data: bytes) -> bytes:
    """LF → CRLF, keeping existing CRLF and bare CR (as Dovecot's istream-crlf)."""
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def crlf_size(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Octets of ``data[start:end]`` in the CRLF view, without converting."""
    if end is None:
        end = len(data)
    if end <= start:
        return 0
    return end - start + data.count(b"\n", start, end) - data.count(b"\r\n", start, end)


def iter_crlf(
    fileobj: IO[bytes],
    start: int,
    end: int,
    chunk_size: int = 65536,
    replace_nul: bool = True,
) -> Iterator[bytes]:
    """Yield the CRLF view of the stored range ``[start, end)`` chunk by chunk.

    Memory stays at about ``chunk_size``; a CRLF split across two chunks is
    not doubled.  NUL octets may not appear in IMAP literals (RFC 3501 §4.3),
    so by default each becomes 0x80 as Dovecot sends it; sizes are unchanged.
    """
    fileobj.seek(start)
    remaining = end - start
    prev_cr = False
    while remaining > 0:
        chunk = fileobj.read(min(chunk_size, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        # A CR ending the previous chunk already pairs with this LF.
        out = b"\n" + to_crlf(chunk[1:]) if prev_cr and chunk[:1] == b"\n" else to_crlf(chunk)
        prev_cr = chunk[-1:] == b"\r"
        if replace_nul and b"\0" in out:
            out = out.replace(b"\0", b"\x80")
        yield out


def iter_crlf_partial(
    fileobj: IO[bytes],
    start: int,
    end: int,
    offset: int,
    length: int | None = None,
    chunk_size: int = 65536,
    replace_nul: bool = True,
) -> Iterator[bytes]:
    """Yield ``<offset.length>`` of the CRLF view of ``[start, end)`` (RFC 3501 §6.4.5).

    The range is streamed: the skipped prefix is read but never held whole.
    """
    skip = max(offset, 0)
    left = length
    for chunk in iter_crlf(fileobj, start, end, chunk_size, replace_nul):
        if skip:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            chunk = chunk[skip:]
            skip = 0
        if left is not None:
            if left <= len(chunk):
                if left:
                    yield chunk[:left]
                return
            left -= len(chunk)
        yield chunk


def read_range(fileobj: IO[bytes], start: int, end: int) -> bytes:
    """The stored octets ``[start, end)`` (for small ranges such as headers)."""
    fileobj.seek(start)
    return fileobj.read(max(end - start, 0))


def read_top_header(fileobj: IO[bytes], chunk_size: int = 16384) -> bytes:
    """The stored octets of a message's own header, read from the start of its file.

    The span the parser gives the top-level ``HEADER`` section: up to and
    including the first empty line (RFC 5322 §2.1), or the whole message when
    it has none.  It reads no further than that, and parses nothing: a client
    that asks only for header fields (Thunderbird's first sync of a folder)
    should not pay for the MIME structure of every message.
    """
    fileobj.seek(0)
    # Two octets at least, to tell an empty line first (a buffered file
    # returns what is asked unless it ends).
    data = bytearray(fileobj.read(max(chunk_size, 2)))
    # As _Parser.entity at the top: an empty line first is an empty header.
    if data.startswith(b"\n"):
        return b"\n"
    if data.startswith(b"\r\n"):
        return b"\r\n"
    searched = 0
    while True:
        m = _HEADER_END_RE.search(data, searched)
        if m is not None:
            return bytes(data[: m.end()])
        more = fileobj.read(max(chunk_size, len(data)))
        if not more:
            return bytes(data)
        # An empty line may straddle the two reads.
        searched = max(0, len(data) - 2)
        data += more


# --- parsing ------------------------------------------------------------------

_HEADER_END_RE = re.compile(rb"\n\r?\n")
#: A line starting with "--" (a boundary candidate).  sre finds it about twice
#: as fast as ``bytes.find(b"\n--")``, whose generic search skips poorly on
#: text full of line breaks: measured 69-85 ms against 139 ms for every such
#: line of 3,000 benchmark messages (207 MB); the scan is a third of a parse.
_DASH_LINE_RE = re.compile(rb"\n--")
_ENVELOPE_FIELDS = frozenset(
    {
        b"date",
        b"subject",
        b"from",
        b"sender",
        b"reply-to",
        b"to",
        b"cc",
        b"bcc",
        b"in-reply-to",
        b"message-id",
    }
)
_ADDRESS_FIELDS = {
    b"from": "from_",
    b"sender": "sender",
    b"reply-to": "reply_to",
    b"to": "to",
    b"cc": "cc",
    b"bcc": "bcc",
}
_STRING_FIELDS = {
    b"date": "date",
    b"subject": "subject",
    b"in-reply-to": "in_reply_to",
    b"message-id": "message_id",
}

# A boundary line that was found: where it starts, which boundary (index in
# the active list), where the next line starts, and whether it closes.
_Hit = tuple[int, int, int, bool]


class _Parser:
    """One pass over one message; see the module docstring for the rules."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.has_cr = b"\r" in data
        self.eaten = -1  # a boundary line whose preceding break a header took
        # The last search for a line starting with "--": from where, and the
        # answer.  A leaf's header search and its body's boundary search ask
        # the same question; remembering it halves the scanning of big parts.
        self.dash_from = self.dash_at = -1
        # The envelope of the message whose top-level entity ended last: the
        # whole message's, or a message/rfc822 part's just after its entity().
        self.last_envelope = Envelope()

    def vsize(self, start: int, end: int) -> tuple[int, int]:
        """(CRLF size, LF count) of ``[start, end)``."""
        if end <= start:
            return 0, 0
        data = self.data
        lf = data.count(b"\n", start, end)
        size = end - start + lf
        if self.has_cr:
            size -= data.count(b"\r\n", start, end)
        return size, lf

    def find_dash(self, pos: int) -> int:
        """Where the first "\n--" at or after *pos* is, or -1."""
        if 0 <= self.dash_from <= pos and (pos <= self.dash_at or self.dash_at < 0):
            return self.dash_at
        m = _DASH_LINE_RE.search(self.data, pos)
        at = -1 if m is None else m.start()
        self.dash_from, self.dash_at = pos, at
        return at

    def line_end(self, pos: int) -> int:
        nl = self.data.find(b"\n", pos)
        return self.size if nl < 0 else nl + 1

    def match(self, pos: int, bounds: Sequence[bytes]) -> _Hit | None:
        """The boundary line starting at *pos*, if it is one (longest match)."""
        data = self.data
        best = -1
        best_len = -1
        for i in range(len(bounds) - 1, -1, -1):  # innermost first on ties
            b = bounds[i]
            if len(b) > best_len and data.startswith(b, pos):
                best, best_len = i, len(b)
        if best < 0:
            return None
        after = pos + best_len
        closing = data.startswith(b"--", after)
        return (pos, best, self.line_end(after), closing)

    def next_boundary(self, pos: int, bounds: Sequence[bytes]) -> _Hit | None:
        """The first boundary line at or after line start *pos*."""
        if not bounds:
            return None
        if self.data.startswith(b"--", pos):
            hit = self.match(pos, bounds)
            if hit is not None:
                return hit
        while True:
            i = self.find_dash(pos)
            if i < 0:
                return None
            hit = self.match(i + 1, bounds)
            if hit is not None:
                return hit
            pos = i + 1

    def end_before(self, hit: _Hit | None, body_start: int) -> int:
        """Where a body ends: before the line break that precedes the boundary."""
        if hit is None:
            return self.size
        end = hit[0]
        if end == self.eaten:
            return end
        if end <= body_start:
            return body_start
        if self.data[end - 1] == 0x0A:
            end -= 1
            if end > body_start and self.data[end - 1] == 0x0D:
                end -= 1
        return end

    def entity(
        self,
        start: int,
        bounds: list[bytes],
        depth: int,
        digest: bool,
        top: bool,
    ) -> tuple[Part, _Hit | None, int, int]:
        """Parse the entity at *start*.

        Returns the part, the boundary line that ended it, and the CRLF size
        and LF count of its whole span ``[header_start, body_end)``, so that
        enclosing parts add them up instead of counting the octets again.
        """
        data = self.data
        # RFC 5322 §2.1: the header ends at the first empty line.  The search
        # goes from one line starting with "--" to the next, so that a
        # boundary line ends a header that has no empty line without the
        # search ever running past the entity (which made malformed messages
        # with many parts quadratic).
        hit: _Hit | None = None
        if data.startswith(b"\n", start):
            header_end, body_start = start, start + 1
        elif data.startswith(b"\r\n", start):
            header_end, body_start = start, start + 2
        elif bounds and data.startswith(b"--", start) and self.match(start, bounds):
            # A boundary line right away: an empty entity.
            hit = self.match(start, bounds)
            header_end = body_start = start
            self.eaten = start
        else:
            pos = start
            while True:
                dash = self.find_dash(pos)
                limit = self.size if dash < 0 else dash + 1
                m = _HEADER_END_RE.search(data, pos, limit)
                if m is not None:
                    header_end, body_start = m.start() + 1, m.end()
                    break
                early = self.match(limit, bounds) if dash >= 0 and bounds else None
                if early is not None:
                    # The header excludes the line break before the boundary,
                    # but (as in Dovecot, whose header reader has eaten it)
                    # that break is not given back to the boundary: an
                    # enclosing message/rfc822 body keeps it.
                    header_end = body_start = self.end_before(early, start)
                    hit = early
                    self.eaten = early[0]
                    break
                if dash < 0:
                    header_end = body_start = self.size
                    break
                pos = limit
        header = data[start:header_end]
        ctype = cte = cid = cdesc = cmd5 = clang = cloc = None
        disposition: tuple[bytes, Params | None] | None = None
        env_addrs: dict[str, list[Address]] = {}
        env_strings: dict[str, bytes] = {}
        # RFC 2045 §4: Content-* fields mean something in a MIME entity.  A
        # part of a multipart is one; a message (top level or encapsulated)
        # is one if it has MIME-Version or, leniently (Dovecot), Content-Type.
        is_mime = not top
        if header:
            for name, value in iter_fields(header):
                lname = name.lower()
                if lname.startswith(b"content-"):
                    # The first of each Content-* field counts (Dovecot).
                    key = lname[8:]
                    if key == b"type":
                        if ctype is None:
                            ctype = value
                        is_mime = True
                    elif key == b"transfer-encoding":
                        # The first one that is a valid token (Dovecot).
                        if cte is None:
                            cte = parse_token(value)
                    elif key == b"id":
                        cid = value if cid is None else cid
                    elif key == b"description":
                        cdesc = value if cdesc is None else cdesc
                    elif key == b"md5":
                        cmd5 = value if cmd5 is None else cmd5
                    elif key == b"disposition":
                        # Dovecot reads each one until one had parameters.
                        if disposition is None or disposition[1] is None:
                            dtype, dparams = parse_disposition(value)
                            disposition = (dtype, dparams or None)
                    elif key == b"language":
                        clang = value if clang is None else clang
                    elif key == b"location":
                        cloc = value if cloc is None else cloc
                elif lname == b"mime-version":
                    is_mime = True
                elif top and lname in _ENVELOPE_FIELDS:
                    if lname in _ADDRESS_FIELDS:
                        attr = _ADDRESS_FIELDS[lname]
                        env_addrs.setdefault(attr, []).extend(parse_addresses(value))
                    else:
                        if b"\r" in value:
                            # A bare CR cannot travel in a quoted string;
                            # Dovecot sends it as a space.
                            value = value.replace(b"\r", b" ")
                        env_strings[_STRING_FIELDS[lname]] = value
        if not is_mime:
            cte = cid = cdesc = cmd5 = clang = cloc = None
            disposition = None
        # RFC 2045 §5.2 defaults; RFC 2046 §5.1.5 for digest children.
        params: Params | None
        if ctype is not None:
            # A broken Content-Type is reported as it was understood, not
            # replaced by text/plain (Dovecot: "" "" for junk).
            mtype, subtype, plist = parse_content_type(ctype)
            params = plist or None
        elif digest:
            mtype, subtype, params = b"message", b"rfc822", None
        else:
            mtype, subtype, params = b"text", b"plain", None
        ltype = mtype.lower()
        lsub = subtype.lower()
        if ltype == b"text" and param(params, b"charset") is None:
            params = (params or ()) + _DEFAULT_PARAMS
        encoding = cte or b"7bit"
        language = parse_languages(clang) if clang else None

        children: tuple[Part, ...] = ()
        message: Part | None = None
        envelope: Envelope | None = None
        if hit is not None or depth >= MAX_DEPTH:
            # No body to parse (the header ran into a boundary) or nesting
            # too deep: still give multipart and message/rfc822 parts the
            # shape BODYSTRUCTURE requires — one empty part, or an empty
            # message with a NIL envelope — as Dovecot does.
            if hit is None:
                hit = self.next_boundary(body_start, bounds)
                body_end = self.end_before(hit, body_start)
                size, lines = self.vsize(body_start, body_end)
            else:
                body_end = body_start
                size = lines = 0
            if ltype == b"multipart":
                children = (self.empty_part(body_end),)
            elif ltype == b"message" and lsub == b"rfc822":
                message = self.empty_part(body_start)
                envelope = Envelope()
        elif ltype == b"multipart":
            boundary = param(params, b"boundary")
            inner = [*bounds, b"--" + boundary] if boundary else bounds
            mine = len(bounds) if boundary else -1
            kids: list[Part] = []
            spans_size = spans_lf = 0
            hit = self.next_boundary(body_start, inner)
            while hit is not None and hit[1] == mine and not hit[3]:
                child, hit, span_size, span_lf = self.entity(
                    hit[2], inner, depth + 1, lsub == b"digest", False
                )
                kids.append(child)
                spans_size += span_size
                spans_lf += span_lf
            floor = body_start
            if hit is not None and hit[1] == mine:
                # Closing delimiter: the epilogue runs to an outer boundary.
                # The close delimiter's own line break stays in this body even
                # when the next line is a boundary (Dovecot does the same).
                floor = hit[2]
                hit = self.next_boundary(hit[2], bounds)
                if hit is not None and hit[0] == floor:
                    self.eaten = floor
            body_end = max(self.end_before(hit, body_start), floor)
            if not kids:
                kids.append(self.empty_part(body_end))
            children = tuple(kids)
            # The body is the children's spans plus the gaps between them
            # (preamble, boundary lines, epilogue); only the gaps are counted.
            size, lines = spans_size, spans_lf
            prev = body_start
            for kid in kids:
                gap_size, gap_lf = self.vsize(prev, kid.header_start)
                size += gap_size
                lines += gap_lf
                prev = kid.body_end
            gap_size, gap_lf = self.vsize(prev, body_end)
            size += gap_size
            lines += gap_lf
        elif ltype == b"message" and lsub == b"rfc822":
            message, hit, span_size, span_lf = self.entity(
                body_start, bounds, depth + 1, False, True
            )
            envelope = self.last_envelope
            body_end = self.end_before(hit, body_start)
            if message.body_end == body_end:
                size, lines = span_size, span_lf
            else:
                size, lines = self.vsize(body_start, body_end)
        else:
            hit = self.next_boundary(body_start, bounds)
            body_end = self.end_before(hit, body_start)
            size, lines = self.vsize(body_start, body_end)

        if (
            hit is not None
            and hit[0] == body_start == body_end
            and body_start > start
            and data[body_start - 1] == 0x0A
        ):
            # Empty body right before a boundary: the header's blank line is
            # the line break that belongs to the boundary (RFC 2046 §5.1.1),
            # so the header loses it, as in Dovecot.  For an encapsulated
            # message Dovecot still counts it in the message/rfc822 body.
            if top:
                self.eaten = hit[0]
            cut = body_start - 1
            if cut > start and data[cut - 1] == 0x0D:
                cut -= 1
            body_start = body_end = cut
            if message is not None:
                message = attrs.evolve(message, header_start=cut, body_start=cut, body_end=cut)
            if children:
                children = (self.empty_part(cut),)

        header_size, header_lf = self.vsize(start, body_start)
        if top:
            self.last_envelope = _make_envelope(env_addrs, env_strings)
        part = Part(
            type=mtype,
            subtype=subtype,
            params=params,
            id=cid,
            description=cdesc,
            encoding=encoding,
            md5=cmd5,
            disposition=disposition,
            language=language,
            location=cloc,
            header_start=start,
            body_start=body_start,
            body_end=body_end,
            header_size=header_size,
            size=size,
            lines=lines,
            children=children,
            envelope=envelope,
            message=message,
        )
        return part, hit, header_size + size, header_lf + lines

    def empty_part(self, at: int) -> Part:
        return Part(
            type=b"text",
            subtype=b"plain",
            params=_DEFAULT_PARAMS,
            id=None,
            description=None,
            encoding=b"7bit",
            md5=None,
            disposition=None,
            language=None,
            location=None,
            header_start=at,
            body_start=at,
            body_end=at,
            header_size=0,
            size=0,
            lines=0,
        )


def _make_envelope(addrs: dict[str, list[Address]], strings: dict[str, bytes]) -> Envelope:
    def field(name: str) -> tuple[Address, ...] | None:
        value = addrs.get(name)
        if not value:
            return None
        return tuple((humanize(a[0]), a[1], a[2], a[3]) if a[0] is not None else a for a in value)

    from_ = field("from_")
    subject = strings.get("subject")
    return Envelope(
        date=strings.get("date"),
        subject=None if subject is None else humanize(subject),
        from_=from_,
        sender=field("sender") or from_,
        reply_to=field("reply_to") or from_,
        to=field("to"),
        cc=field("cc"),
        bcc=field("bcc"),
        in_reply_to=strings.get("in_reply_to"),
        message_id=strings.get("message_id"),
    )


def parse_message(data: bytes) -> MessageInfo:
    """Parse a stored message (LF or CRLF line ends); never raises.

    If something unforeseen still goes wrong, the message is described as a
    single text/plain body so that FETCH can always answer.
    """
    parser = _Parser(data)
    try:
        body, _, vsize, _ = parser.entity(0, [], 0, False, True)
        envelope = parser.last_envelope
    except Exception:  # the store must never fail on a message's content
        envelope = Envelope()
        body = parser.empty_part(0)
        size, lines = parser.vsize(0, len(data))
        body = attrs.evolve(body, body_end=len(data), size=size, lines=lines)
        vsize = size
    sent = parse_date(envelope.date)
    return MessageInfo(
        envelope=envelope,
        body=body,
        size=len(data),
        vsize=vsize,
        date=sent[0] if sent else None,
        date_offset=sent[1] if sent else None,
    )


# --- sections (RFC 3501 §6.4.5) -----------------------------------------------


def find_section(info: MessageInfo, part_path: tuple[int, ...]) -> Part | None:
    """The part a section number names, or None if there is no such part.

    RFC 3501 §6.4.5: a multipart's parts are numbered from 1; a message/rfc822
    part's sub-numbers address the encapsulated message; a non-multipart part
    has a part 1, itself (once: ``1.1`` of a single-part message does not
    exist, as in Dovecot).  ``()`` is the whole message.
    """
    cur = info.body
    state = "message"  # at a message's top part; "part": reached by number
    for n in part_path:
        if n < 1:
            return None
        if state != "message" and cur.message is not None:
            cur = cur.message
            state = "message"
        if cur.children:
            if n > len(cur.children):
                return None
            cur = cur.children[n - 1]
            state = "part"
        elif n == 1 and state != "absorbed":
            state = "absorbed"
        else:
            return None
    return cur


def section_range(info: MessageInfo, part_path: tuple[int, ...], spec: str = "") -> Section | None:
    """The stored range a ``BODY[<path>.<spec>]`` section is served from.

    *spec* is ``""`` (the part's body, or the whole message for ``()``),
    ``"HEADER"`` (also the range to filter for ``HEADER.FIELDS``/``.NOT``),
    ``"TEXT"`` or ``"MIME"``.  HEADER and TEXT of a numbered part exist only
    for message/rfc822 parts (RFC 3501 §6.4.5).  None when the section does
    not exist; Dovecot then answers with an empty string.
    """
    spec = spec.upper()
    if spec.startswith("HEADER"):
        spec = "HEADER"
    if not part_path:
        root = info.body
        if spec == "":
            return Section(0, info.size, info.vsize)
        if spec == "HEADER":
            return Section(root.header_start, root.body_start, root.header_size)
        if spec == "TEXT":
            return Section(root.body_start, root.body_end, root.size)
        return None
    part = find_section(info, part_path)
    if part is None:
        return None
    if spec == "":
        return Section(part.body_start, part.body_end, part.size)
    if spec == "MIME":
        return Section(part.header_start, part.body_start, part.header_size)
    inner = part.message
    if inner is None:
        return None
    if spec == "HEADER":
        return Section(inner.header_start, inner.body_start, inner.header_size)
    if spec == "TEXT":
        return Section(inner.body_start, inner.body_end, inner.size)
    return None


# --- header fields ------------------------------------------------------------


def header_fields(header: bytes, names: Iterable[str | bytes], exclude: bool = False) -> bytes:
    """BODY[HEADER.FIELDS (…)] / HEADER.FIELDS.NOT of a header block (RFC 3501 §6.4.5).

    Field names match case-insensitively; a field keeps its folded
    continuation lines; the result ends with the blank line the RFC requires
    (even when no field matched) — provided *header* has one, as the header
    range from ``section_range`` does; a message without a header/body
    separator gets none, as in Dovecot.  Output has CRLF line ends.
    """
    wanted = {n.encode("ascii", "replace") if isinstance(n, str) else n for n in names}
    wanted = {n.lower() for n in wanted}
    out: list[bytes] = []
    keep = False
    for line in to_crlf(header).split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        colon = line.find(b":")
        # A line that is no field matches no name, but .NOT keeps it (Dovecot).
        name = line[:colon].rstrip(b" \t").lower() if colon > 0 else None
        keep = (name is not None and name in wanted) != exclude
        if keep:
            out.append(line)
    blank = (
        b"\r\n"
        if header.endswith(b"\n\n")
        or header.endswith(b"\n\r\n")
        or header
        in (
            b"\n",
            b"\r\n",
        )
        else b""
    )
    return b"".join(line + b"\r\n" for line in out) + blank


def decoded_header_values(source: MessageInfo | bytes, name: str) -> list[str]:
    """The values of header *name*, RFC 2047 encoded words decoded (for SEARCH).

    *source* is a header block (bytes: every field is available) or a
    MessageInfo, which knows only the ENVELOPE fields (Date, Subject, From,
    Sender, Reply-To, To, Cc, Bcc, In-Reply-To, Message-ID); for any other
    name pass the header, e.g. ``read_range(f, 0, info.body.body_start)``.
    Address fields from a MessageInfo are rendered ``name <mailbox@host>``.
    """
    lname = name.lower().encode("ascii", "replace")
    if isinstance(source, bytes):
        return [decode_words(v) for n, v in iter_fields(source) if n.lower() == lname]
    env = source.envelope
    if lname in _STRING_FIELDS:
        value = getattr(env, _STRING_FIELDS[lname])
        return [] if value is None else [decode_words(value)]
    if lname in _ADDRESS_FIELDS:
        addrs = getattr(env, _ADDRESS_FIELDS[lname])
        if not addrs:
            return []
        return [", ".join(_render_address(a) for a in addrs if a[2] is not None)]
    raise KeyError(f"{name!r} is not an ENVELOPE field: pass the header bytes instead")


def _render_address(addr: Address) -> str:
    name, _, mailbox, host = addr
    spec = decode_raw(mailbox or b"")
    if host:
        spec += "@" + decode_raw(host)
    if host is None:  # a group name
        return decode_words(mailbox or b"") + ":"
    return f"{decode_words(name)} <{spec}>" if name else spec


# --- decoded body text for SEARCH BODY/TEXT ----------------------------------------


def _text_parts(part: Part) -> Iterator[Part]:
    if part.children:
        for child in part.children:
            yield from _text_parts(child)
    elif part.message is not None:
        yield from _text_parts(part.message)
    elif part.type.lower() == b"text":
        yield part


class _Base64Stream:
    """Incremental base64 decoder that skips junk and survives bad padding."""

    _JUNK = re.compile(rb"[^A-Za-z0-9+/]")

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        data = self.rest + self._JUNK.sub(b"", chunk)
        cut = len(data) if final else len(data) // 4 * 4
        data, self.rest = data[:cut], data[cut:]
        if final and len(data) % 4:
            data = data[: len(data) // 4 * 4] if len(data) % 4 == 1 else data
            data += b"=" * (-len(data) % 4)
        try:
            return base64.b64decode(data)
        except (binascii.Error, ValueError):
            return b""


def iter_decoded_text(
    fileobj: IO[bytes],
    info: MessageInfo,
    chunk_size: int = 65536,
    max_bytes: int | None = None,
) -> Iterator[str]:
    """Yield the decoded text of the message's text/* parts, chunk by chunk.

    Transfer encodings (base64, quoted-printable) and charsets (any Python
    knows; others as UTF-8 with replacement) are decoded.  Memory stays about
    ``chunk_size``; at most *max_bytes* stored octets per part are read, so a
    huge text part cannot stall a search.  For SEARCH BODY/TEXT (RFC 3501 §6.4.4).
    """
    for part in _text_parts(info.body):
        charset = (param(part.params, b"charset") or b"us-ascii").decode("ascii", "replace")
        if charset.lower() in ("us-ascii", "ascii"):
            charset = "utf-8"  # 8-bit text mislabelled as ASCII is common
        try:
            decoder = codecs.getincrementaldecoder(charset)(errors="replace")
        except (LookupError, ValueError):
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        encoding = part.encoding.lower()
        b64 = _Base64Stream() if encoding == b"base64" else None
        end = part.body_end
        if max_bytes is not None:
            end = min(end, part.body_start + max_bytes)
        fileobj.seek(part.body_start)
        pos = part.body_start
        pending = b""
        while pos < end:
            chunk = fileobj.read(min(chunk_size, end - pos))
            if not chunk:
                break
            pos += len(chunk)
            final = pos >= end
            if b64 is not None:
                raw = b64.feed(chunk, final)
            elif encoding == b"quoted-printable":
                data = pending + chunk
                # Decode whole lines only, so "=" + hex split by a chunk survives.
                cut = len(data) if final else data.rfind(b"\n") + 1
                data, pending = data[:cut], data[cut:]
                raw = quopri.decodestring(data)
            else:
                raw = chunk
            text = decoder.decode(raw, final)
            if text:
                yield text
        if pending:
            yield decoder.decode(quopri.decodestring(pending), True)


def decoded_text(data: bytes, info: MessageInfo, max_bytes: int | None = None) -> str:
    """The decoded text of the text parts of an in-memory message (see iter_decoded_text)."""
    import io

    return "".join(iter_decoded_text(io.BytesIO(data), info, max_bytes=max_bytes))
