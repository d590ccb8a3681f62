"""FETCH response data (RFC 3501 §6.4.5, §7.4.2): stored mail in, ``* n FETCH (...)`` out.

:class:`FetchPlan` is built once per FETCH command from the parsed items
(``mailaccess.imap.fetch``) and then answers each message with
:meth:`FetchPlan.response`.  Pure: no sockets, no reactor; the only I/O is
reading small sections from a message file the caller opens for us.

The answer is written as Dovecot 2.3 writes it, checked against a live
Dovecot (tests/imap/test_fetch_data_dovecot.py):

* **Order.**  For UID FETCH the UID comes first (RFC 3501 §6.4.8 requires it
  in the response; clients such as imaplib read it there).  Then the cheap
  "buffered" items FLAGS, INTERNALDATE, RFC822.SIZE and UID in the order
  asked, then FLAGS again if this FETCH just set ``\\Seen`` (see below), then
  every other item (ENVELOPE, BODY, BODYSTRUCTURE, sections, RFC822.*) in the
  order asked.  RFC 3501 §7.4.2 leaves the order open; Dovecot's is what
  clients meet every day, so we keep it.
* **Sections** always come as literals; a section the message does not have
  is the empty literal ``{0}`` (RFC 3501 §6.4.5 gives no error for it, and
  Dovecot answers so).  ``BODY[...]<origin.length>`` echoes ``<origin>``
  only (§7.4.2) and clips to what exists: ``BODY[]<999999>`` past the end is
  ``{0}``.  HEADER.FIELDS names are echoed upper-cased, as Dovecot does.
* **Flags** are written in Dovecot's order: ``\\Answered \\Flagged \\Deleted
  \\Seen \\Draft \\Recent``, then keywords.

Implicit ``\\Seen`` (RFC 3501 §6.4.5): ``FetchPlan.sets_seen`` says whether
the command sets it (BODY[...] without .PEEK, RFC822, RFC822.TEXT).  The
session adds ``\\Seen`` to the messages that lack it (not in a read-only
mailbox), then calls ``response(..., seen_changed=True)`` for those, with the
new flags: the line then carries ``FLAGS (...)`` even when FLAGS was not
asked for, exactly where Dovecot puts it.

Large sections are not built in memory: they come back as :class:`BodyStream`
objects the session streams from the file after the literal's ``{n}\\r\\n``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO

import attrs

from mailaccess.imap.bodystructure import encode_body, encode_envelope
from mailaccess.imap.fetch import FetchAttribute, FetchBody, FetchItem, Section
from mailaccess.imap.response import encode_string
from mailaccess.store.mime import (
    MessageInfo,
    crlf_size,
    header_fields,
    iter_crlf_partial,
    read_range,
    read_top_header,
    section_range,
    to_crlf,
)
from mailaccess.store.model import MessageRecord

__all__ = [
    "CHUNK_SIZE",
    "INLINE_LIMIT",
    "BodyStream",
    "FetchPlan",
    "UnsupportedFetchItem",
    "clear_envelope_cache",
    "encode_fetch_flags",
    "format_internaldate_local",
]

#: Sections up to this many octets are read at once and sent inline: cheaper
#: than a producer round trip, and headers and small bodies are the common case.
INLINE_LIMIT = 8192

#: Largest piece a :class:`BodyStream` yields (RFC-neutral; keeps memory flat).
CHUNK_SIZE = 65536

#: Encoded ENVELOPEs kept, keyed by the Maildir base name and size (a file's
#: content never changes under its base name, so an entry never goes stale).
#: About 300 octets each.
ENVELOPE_CACHE_SIZE = 32768


class UnsupportedFetchItem(ValueError):
    """A FETCH item this server does not serve yet (BINARY, MODSEQ); the session answers BAD."""


@attrs.frozen
class BodyStream:
    """A message section to stream: stored range, CRLF-converted, partial-clipped.

    ``size`` is known up front (the literal's ``{size}`` is already in the bytes
    before this object in the response list); :meth:`chunks` yields exactly
    ``size`` octets.
    """

    start: int  # stored range [start, end) of the section in the message file
    end: int
    offset: int  # partial origin in the CRLF view
    size: int  # octets to send

    def chunks(self, fileobj: IO[bytes], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The section's octets in pieces of at most ``chunk_size``, read as they go.

        If the file turned out shorter than the index said (changed behind our
        back), the rest is padded with spaces: the literal's length was already
        promised to the client, and a short literal would desynchronise it.
        """
        left = self.size
        if left <= 0:
            return
        for chunk in iter_crlf_partial(
            fileobj, self.start, self.end, self.offset, left, chunk_size
        ):
            if len(chunk) > chunk_size:  # iter_crlf doubles LFs: split again
                for i in range(0, len(chunk), chunk_size):
                    yield chunk[i : i + chunk_size]
            else:
                yield chunk
            left -= len(chunk)
        while left > 0:
            pad = min(left, chunk_size)
            yield b" " * pad
            left -= pad


# --- flags and dates ------------------------------------------------------------

# Dovecot's order of the system flags (its enum mail_flags order, then \Recent).
_SYSTEM_ORDER = {
    "\\Answered": 0,
    "\\Flagged": 1,
    "\\Deleted": 2,
    "\\Seen": 3,
    "\\Draft": 4,
    "\\Recent": 5,
}
_FLAGS_CACHE: dict[frozenset[str], bytes] = {}


def encode_fetch_flags(flags: Iterable[str]) -> bytes:
    """``(\\Flagged \\Seen $Label)``: system flags in Dovecot's order, then keywords.

    Mailboxes use few distinct flag sets, so each encoding is remembered.
    """
    key = flags if isinstance(flags, frozenset) else frozenset(flags)
    cached = _FLAGS_CACHE.get(key)
    if cached is not None:
        return cached
    ordered = sorted(key, key=lambda f: (_SYSTEM_ORDER.get(f, 6), f))
    out = b"(" + " ".join(ordered).encode("ascii", "replace") + b")"
    if len(_FLAGS_CACHE) < 4096:
        _FLAGS_CACHE[key] = out
    return out


_MONTHS = tuple(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())


def format_internaldate_local(when: float) -> bytes:
    """RFC 3501 §9 ``date-time`` in the server's zone, quoted: ``"07-Jul-1996 02:44:25 -0700"``.

    Dovecot writes INTERNALDATE in the server's local zone and SEARCH
    BEFORE/ON/SINCE compares days there too (see search_eval), so we do the
    same.  Unlike ``response.format_internaldate`` the day is zero-padded
    (``2digit`` rather than ``SP digit``; both are ``date-day-fixed``), as
    Dovecot writes it; and it is several times faster (``time.localtime``
    instead of a datetime), which matters as FETCH INTERNALDATE of a whole
    mailbox calls it once per message.
    """
    t = time.localtime(when)
    offset = t.tm_gmtoff // 60
    sign = b"-" if offset < 0 else b"+"
    offset = abs(offset)
    return b'"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        t.tm_mday,
        _MONTHS[t.tm_mon - 1],
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
        sign,
        offset // 60,
        offset % 60,
    )


# --- the envelope cache ------------------------------------------------------------

_ENVELOPES: dict[tuple[str, int], bytes] = {}


def _envelope_bytes(record: MessageRecord, info: MessageInfo) -> bytes:
    key = (record.base, record.size)
    data = _ENVELOPES.get(key)
    if data is None:
        data = encode_envelope(info.envelope)
        if len(_ENVELOPES) >= ENVELOPE_CACHE_SIZE:
            # Bounded: drop the oldest entry (dicts keep insertion order).
            del _ENVELOPES[next(iter(_ENVELOPES))]
        _ENVELOPES[key] = data
    return data


def clear_envelope_cache() -> None:
    """Forget every cached ENVELOPE (tests; or after the parser changed)."""
    _ENVELOPES.clear()


# --- the plan --------------------------------------------------------------------

# Item kinds, in one small int so the per-message loop is a chain of cheap compares.
_UID, _FLAGS, _INTERNALDATE, _SIZE, _ENVELOPE, _BODY, _BODYSTRUCTURE, _SECTION = range(8)
_BUFFERED_KINDS = {"UID": _UID, "FLAGS": _FLAGS, "INTERNALDATE": _INTERNALDATE}
_BUFFERED_KINDS["RFC822.SIZE"] = _SIZE
_OTHER_KINDS = {"ENVELOPE": _ENVELOPE, "BODY": _BODY, "BODYSTRUCTURE": _BODYSTRUCTURE}

# RFC 3501 §6.4.5: the RFC822 forms are BODY sections under another name.
# RFC822 = BODY[], RFC822.HEADER = BODY.PEEK[HEADER], RFC822.TEXT = BODY[TEXT].
_RFC822_FORMS = {
    "RFC822": (Section(), False),
    "RFC822.HEADER": (Section((), "HEADER"), True),
    "RFC822.TEXT": (Section((), "TEXT"), False),
}


@attrs.frozen
class _SectionItem:
    name: bytes  # as the response names it, e.g. b"BODY[1.MIME]<0>" or b"RFC822"
    section: Section
    partial: tuple[int, int] | None


OpenMessage = Callable[[], IO[bytes]]
ResponsePart = bytes | BodyStream


class FetchPlan:
    """How to answer one FETCH command for every message it names.

    ``items`` are the parsed FETCH attributes (macros already expanded by the
    parser); ``uid_command`` is True for UID FETCH, which always reports UID
    (RFC 3501 §6.4.8).  Raises :class:`UnsupportedFetchItem` for items not
    served yet (BINARY, BINARY.SIZE, MODSEQ).
    """

    def __init__(self, items: Sequence[FetchAttribute], uid_command: bool) -> None:
        buffered: list[int] = [_UID] if uid_command else []
        others: list[tuple[int, _SectionItem | None]] = []
        sets_seen = False
        needs_info = False
        needs_file = False
        for item in items:
            if isinstance(item, FetchItem):
                name = item.name
                kind = _BUFFERED_KINDS.get(name)
                if kind is not None:
                    # Dovecot drops repeated simple items; so do we.
                    if kind not in buffered:
                        buffered.append(kind)
                    continue
                kind = _OTHER_KINDS.get(name)
                if kind is not None:
                    needs_info = True
                    if (kind, None) not in others:
                        others.append((kind, None))
                    continue
                form = _RFC822_FORMS.get(name)
                if form is None:
                    raise UnsupportedFetchItem(f"FETCH {name} is not supported")
                section, peek = form
                sets_seen = sets_seen or not peek
                needs_file = True
                needs_info = needs_info or _needs_info(section)
                others.append((_SECTION, _SectionItem(name.encode("ascii"), section, None)))
                continue
            if item.binary or item.size_only:
                raise UnsupportedFetchItem("FETCH BINARY is not supported")
            sets_seen = sets_seen or not item.peek
            needs_file = True
            needs_info = needs_info or _needs_info(item.section)
            others.append(
                (_SECTION, _SectionItem(_response_name(item), item.section, item.partial))
            )
        self.items = tuple(items)
        self.uid_command = uid_command
        self._buffered = tuple(buffered)
        self._others = tuple(others)
        self._has_flags = _FLAGS in buffered
        #: RFC 3501 §6.4.5: this FETCH sets \Seen on the messages it reads.
        self.sets_seen = sets_seen
        #: The session must pass each message's MessageInfo to :meth:`response`.
        self.needs_info = needs_info
        #: The response reads the message file (sections, RFC822.*).
        self.needs_file = needs_file

    def response(
        self,
        seq: int,
        record: MessageRecord,
        flags: Iterable[str],
        info: MessageInfo | None,
        open_message: OpenMessage | None = None,
        seen_changed: bool = False,
    ) -> list[ResponsePart]:
        """The untagged ``* seq FETCH (...)\\r\\n`` for one message.

        ``flags`` are the message's flags as this session shows them (with
        ``\\Recent`` if it is recent here).  ``info`` is required when
        :attr:`needs_info`; ``open_message`` (opening the stored file) when
        :attr:`needs_file`.  ``seen_changed`` adds FLAGS as explained in the
        module docstring.  Bytes are sent as they are; for each
        :class:`BodyStream` the session sends ``stream.chunks(file)`` of the
        message file (the ``{n}\\r\\n`` before it is already in the bytes).
        May raise ``MessageGone`` from ``open_message``.
        """
        out: list[bytes] = []
        for kind in self._buffered:
            if kind == _UID:
                out.append(b"UID %d" % record.uid)
            elif kind == _FLAGS:
                out.append(b"FLAGS " + encode_fetch_flags(flags))
            elif kind == _INTERNALDATE:
                out.append(b"INTERNALDATE " + format_internaldate_local(record.internal_date))
            else:
                out.append(b"RFC822.SIZE %d" % record.vsize)
        if seen_changed and not self._has_flags:
            out.append(b"FLAGS " + encode_fetch_flags(flags))
        if not self._others:
            return [b"* %d FETCH (" % seq + b" ".join(out) + b")\r\n"]
        if self.needs_info and info is None:
            raise ValueError("this FETCH needs the message's MessageInfo")
        result: list[ResponsePart] = []
        head = b"* %d FETCH (" % seq
        reader = _FileReader(open_message)
        try:
            for kind, section in self._others:
                if kind == _ENVELOPE:
                    assert info is not None
                    out.append(b"ENVELOPE " + _envelope_bytes(record, info))
                elif kind == _BODYSTRUCTURE:
                    assert info is not None
                    out.append(b"BODYSTRUCTURE " + encode_body(info.body, True))
                elif kind == _BODY:
                    assert info is not None
                    out.append(b"BODY " + encode_body(info.body, False))
                else:
                    assert section is not None
                    data = _section_data(section, record, info, reader)
                    if isinstance(data, BodyStream):
                        out.append(section.name + b" {%d}\r\n" % data.size)
                        result.append(head + b" ".join(out))
                        result.append(data)
                        # The next item continues the same line after the literal.
                        head, out = b"", [b""]
                        continue
                    out.append(section.name + b" {%d}\r\n" % len(data) + data)
        finally:
            reader.close()
        result.append(head + b" ".join(out) + b")\r\n")
        return result


def _needs_info(section: Section) -> bool:
    """Whether serving *section* takes the message's part offsets (a parse).

    ``BODY[]`` is served from the record's sizes, and the message's own
    ``HEADER``, ``HEADER.FIELDS`` and ``HEADER.FIELDS.NOT`` by reading the file
    up to its first empty line (``read_top_header``); everything else needs
    the MIME structure.
    """
    return section != Section() and not _is_top_header(section)


def _is_top_header(section: Section) -> bool:
    return not section.part and section.text is not None and section.text.startswith("HEADER")


class _FileReader:
    """Opens the message file on first use, once per response."""

    __slots__ = ("_file", "_open")

    def __init__(self, open_message: OpenMessage | None) -> None:
        self._open = open_message
        self._file: IO[bytes] | None = None

    def get(self) -> IO[bytes]:
        if self._file is None:
            if self._open is None:
                raise ValueError("this FETCH reads the message: pass open_message")
            self._file = self._open()
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


_BARE_FIELD_NAME = re.compile(rb"[A-Z0-9!#$&'*+^_`|~.-]+")


def _response_name(item: FetchBody) -> bytes:
    """``BODY[section]<origin>`` as Dovecot echoes it (RFC 3501 §7.4.2).

    Header field names are upper-cased (the parser did that) and written bare
    when they are plain field-name characters, else quoted (``"X:Y"``).
    """
    section = item.section
    if not section.fields:
        return item.response_name()
    spec = ".".join(str(n) for n in section.part)
    spec = f"{spec}.{section.text}" if spec else str(section.text)
    names = []
    for field in section.fields:
        raw = field.encode("latin-1")
        names.append(raw if _BARE_FIELD_NAME.fullmatch(raw) else encode_string(raw))
    name = b"BODY[" + spec.encode("ascii") + b" (" + b" ".join(names) + b")]"
    if item.partial is not None:
        name += b"<%d>" % item.partial[0]
    return name


def _clip(size: int, partial: tuple[int, int] | None) -> tuple[int, int]:
    """(offset, count) of a partial ``<origin.length>`` within ``size`` octets (§6.4.5)."""
    if partial is None:
        return 0, size
    origin, length = partial
    if origin >= size:
        return size, 0
    return origin, min(length, size - origin)


def _section_data(
    item: _SectionItem,
    record: MessageRecord,
    info: MessageInfo | None,
    reader: _FileReader,
) -> bytes | BodyStream:
    section = item.section
    text = section.text
    if text is None and not section.part:
        # The whole message: from the record when no MessageInfo was needed.
        if info is not None:
            start, end, size = 0, info.size, info.vsize
        else:
            start, end, size = 0, record.size, record.vsize
    elif info is None and _is_top_header(section):
        return _top_header_data(item, reader)
    else:
        spec = "" if text is None else text
        rng = section_range(info, section.part, spec) if info is not None else None
        if rng is None:
            return b""  # no such part: an empty literal, as Dovecot answers
        if text is not None and text.startswith("HEADER.FIELDS"):
            header = read_range(reader.get(), rng.start, rng.end)
            data = header_fields(header, section.fields, exclude=text.endswith(".NOT"))
            offset, count = _clip(len(data), item.partial)
            return data[offset : offset + count]
        start, end, size = rng.start, rng.end, rng.size
    offset, count = _clip(size, item.partial)
    stream = BodyStream(start, end, offset, count)
    if count <= INLINE_LIMIT:
        return b"".join(stream.chunks(reader.get())) if count else b""
    return stream


def _top_header_data(item: _SectionItem, reader: _FileReader) -> bytes | BodyStream:
    """The message's own HEADER or HEADER.FIELDS(.NOT), without its MessageInfo."""
    text = item.section.text
    assert text is not None
    header = read_top_header(reader.get())
    if text.startswith("HEADER.FIELDS"):
        data = header_fields(header, item.section.fields, exclude=text.endswith(".NOT"))
        offset, count = _clip(len(data), item.partial)
        return data[offset : offset + count]
    offset, count = _clip(crlf_size(header), item.partial)
    if count > INLINE_LIMIT:
        # A message without an empty line is all header: stream it from the file.
        return BodyStream(0, len(header), offset, count)
    return to_crlf(header)[offset : offset + count]
