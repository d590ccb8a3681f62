"""SEARCH evaluation (RFC 3501 §6.4.4): a parsed search program against a session's messages.

:func:`evaluate` walks the program of ``mailaccess.imap.search`` over the
session view's ``(seq, record, flags)`` tuples in three rounds, so the
expensive keys run only on messages the cheap ones left undecided:

1. flags, sizes, INTERNALDATE, sequence sets and UIDs — from the index, on
   the reactor, no I/O;
2. ENVELOPE headers (FROM, TO, CC, BCC, SUBJECT; SENT* from Date:) — from
   the metadata cache (``context.message_info``);
3. other HEADER fields, BODY and TEXT — reading message files in a worker
   thread, in batches, so the reactor is never held by a big search.

Each round evaluates the whole tree in three-valued logic (True, False, or
None for "needs a later round"), so ``OR SEEN BODY x`` never reads a seen
message's body, and ``NOT`` of an undecided key stays undecided.

Strings match as case-insensitive substrings (Unicode case folding) of the
decoded text: RFC 2047 words in headers, transfer encoding and charset in
bodies.  BODY and TEXT search the text parts (text/*, also inside
message/rfc822), as Dovecot does without FTS.  For an ASCII needle, a 7bit or
8bit part in an ASCII-compatible charset is searched in its raw octets
(ASCII-lower-cased) without decoding anything: the bulk of real mail.

Dates (RFC 3501 §6.4.4 "disregarding time and timezone"): BEFORE/ON/SINCE use
the day of INTERNALDATE in the server's local time zone, as Dovecot does;
SENTBEFORE/SENTON/SENTSINCE use the day of the Date: header in the sender's
own zone (the date as written), as Dovecot does.  A message without a
usable Date: header counts as sent on 1-Jan-1970, as in Dovecot.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime
import quopri
import unicodedata
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import IO, Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, succeed

from mailaccess.imap.search import (
    SUPPORTED_CHARSETS,
    All,
    And,
    Date,
    Flag,
    Header,
    Modseq,
    Not,
    Or,
    SearchKey,
    Size,
    Text,
)
from mailaccess.imap.search import (
    Sequence as SequenceKey,
)
from mailaccess.store.mime import MessageInfo, Part, decoded_header_values, param
from mailaccess.store.mime_header import decode_words, iter_fields
from mailaccess.store.model import MessageRecord

__all__ = [
    "BATCH_SIZE",
    "BadCharset",
    "SearchContext",
    "UnsupportedSearchKey",
    "check_charset",
    "evaluate",
]

#: Messages read per worker-thread call in the body round; each batch's files
#: are opened on the reactor (the store's API belongs to it) and read in the thread.
BATCH_SIZE = 200

Message = tuple[int, MessageRecord, Collection[str]]  # (seq, record, flags)


class BadCharset(Exception):
    """SEARCH CHARSET names a charset we do not know.

    RFC 3501 §6.4.4: the session answers ``NO [BADCHARSET (US-ASCII UTF-8)]``;
    ``supported`` lists what to put in the response code.
    """

    supported = tuple(sorted(SUPPORTED_CHARSETS))

    def __init__(self, charset: str) -> None:
        super().__init__(f"unsupported charset {charset}")
        self.charset = charset


class UnsupportedSearchKey(Exception):
    """A key not evaluated yet (MODSEQ without CONDSTORE); the session answers BAD."""


def check_charset(charset: str | None) -> None:
    """Raise :class:`BadCharset` unless ``charset`` is None, US-ASCII or UTF-8."""
    if charset is not None and charset.upper() not in SUPPORTED_CHARSETS:
        raise BadCharset(charset)


class SearchContext(Protocol):
    """What :func:`evaluate` needs of the session and its mailbox."""

    #: The largest message sequence number and UID in the view (for ``*``).
    highest_seq: int
    highest_uid: int
    #: RFC 5182 ``$``: the UIDs of the saved search result, None if none saved.
    saved: Collection[int] | None

    def message_info(self, uid: int) -> Deferred[Any]:
        """The message's ``MessageInfo`` (from the metadata cache)."""

    def open_message(self, uid: int) -> IO[bytes]:
        """The stored message file; raises MessageGone."""


ThreadRunner = Callable[..., Deferred[Any]]


def _default_runner(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    from twisted.internet.threads import deferToThread

    return deferToThread(f, *args)


# --- evaluation -------------------------------------------------------------------

_CHEAP, _INFO, _FILE = 0, 1, 2
_ENVELOPE_HEADERS = frozenset(
    {
        "FROM",
        "TO",
        "CC",
        "BCC",
        "SUBJECT",
        "SENDER",
        "REPLY-TO",
        "DATE",
        "IN-REPLY-TO",
        "MESSAGE-ID",
    }
)
_ADDRESS_HEADERS = frozenset({"FROM", "TO", "CC", "BCC", "SENDER", "REPLY-TO"})


class _Compiled:
    """Per-program precomputation: resolved sequence sets, folded needles."""

    def __init__(self, context: SearchContext) -> None:
        self.context = context
        self.ranges: dict[int, list[tuple[int, int]]] = {}
        self.saved = frozenset(context.saved or ())

    def seq_ranges(self, key: SequenceKey) -> list[tuple[int, int]]:
        got = self.ranges.get(id(key))
        if got is None:
            largest = self.context.highest_uid if key.uid else self.context.highest_seq
            got = key.set.resolve(largest)
            self.ranges[id(key)] = got
        return got


def _local_day(stamp: float) -> datetime.date:
    # INTERNALDATE's day in the server's zone (Dovecot compares there too).
    return datetime.datetime.fromtimestamp(stamp).date()


_EPOCH_DAY = datetime.date(1970, 1, 1)


def _sent_day(info: MessageInfo) -> datetime.date:
    # The Date: header's own day: UTC stamp shifted by the sender's offset.
    # Without a usable Date: Dovecot takes the epoch, so SENTBEFORE finds it.
    if info.date is None:
        return _EPOCH_DAY
    offset = info.date_offset or 0
    return datetime.datetime.fromtimestamp(info.date + offset, datetime.UTC).date()


def _compare_day(op: str, day: datetime.date, wanted: datetime.date) -> bool:
    if op == "BEFORE":
        return day < wanted
    if op == "ON":
        return day == wanted
    return day >= wanted  # SINCE: "within or later than"


def _has_flag(flags: Collection[str], flag: str) -> bool:
    if flag in flags:
        return True
    if flag.startswith("\\"):
        return False
    # Keywords compare without case, as Dovecot does.
    low = flag.lower()
    return any(f.lower() == low for f in flags)


def _fold(text: str) -> str:
    """Dovecot's i;unicode-casemap: simple case mapping, then compatibility decomposition.

    So ``GRÖSSE`` does not find ``größe`` (no ß → ss), and ``cafe`` finds
    ``café`` (é decomposes into e and a combining accent), as in Dovecot.
    """
    if text.isascii():
        return text.lower()
    # Final sigma folds to sigma (simple case mapping has both as one letter).
    return unicodedata.normalize("NFKD", text.lower().replace("\u03c2", "\u03c3"))


class _Evaluator:
    def __init__(self, compiled: _Compiled) -> None:
        self.c = compiled
        self.header_cache: dict[tuple[int, str], list[str]] = {}

    def run(
        self,
        key: SearchKey,
        msg: Message,
        level: int,
        info: MessageInfo | None = None,
        data: _MessageFile | None = None,
    ) -> bool | None:
        """Three-valued: None when ``key`` needs a round above ``level``."""
        if isinstance(key, And):
            result: bool | None = True
            for sub in key.keys:
                r = self.run(sub, msg, level, info, data)
                if r is False:
                    return False
                if r is None:
                    result = None
            return result
        if isinstance(key, Or):
            left = self.run(key.left, msg, level, info, data)
            if left is True:
                return True
            right = self.run(key.right, msg, level, info, data)
            if right is True:
                return True
            if left is False and right is False:
                return False
            return None
        if isinstance(key, Not):
            r = self.run(key.key, msg, level, info, data)
            return None if r is None else not r
        seq, record, flags = msg
        if isinstance(key, Flag):
            return _has_flag(flags, key.flag)
        if isinstance(key, All):
            return True
        if isinstance(key, Size):
            # RFC 3501 §6.4.4: LARGER/SMALLER compare RFC822.SIZE strictly.
            return record.vsize > key.size if key.larger else record.vsize < key.size
        if isinstance(key, SequenceKey):
            if key.set.saved:
                return record.uid in self.c.saved
            number = record.uid if key.uid else seq
            return any(a <= number <= b for a, b in self.c.seq_ranges(key))
        if isinstance(key, Date):
            if not key.sent:
                return _compare_day(key.op, _local_day(record.internal_date), key.date)
            if level < _INFO:
                return None
            assert info is not None
            return _compare_day(key.op, _sent_day(info), key.date)
        if isinstance(key, Header):
            if key.field in _ENVELOPE_HEADERS:
                if level < _INFO:
                    return None
                assert info is not None
                values = self._envelope_values(record.uid, info, key.field)
            else:
                if level < _FILE:
                    return None
                assert data is not None
                values = data.header_values(key.field)
            needle = _fold(key.value)
            # RFC 3501 §6.4.4 HEADER: an empty string matches every message
            # that has the field at all.
            return any(needle in v for v in values)
        if isinstance(key, Text):
            if level < _FILE:
                return None
            assert data is not None
            return data.contains(key.value, key.where == "TEXT")
        if isinstance(key, Modseq):
            raise UnsupportedSearchKey("MODSEQ needs CONDSTORE, which is not enabled")
        raise UnsupportedSearchKey(f"unknown search key {key!r}")

    def _envelope_values(self, uid: int, info: MessageInfo, field: str) -> list[str]:
        cache_key = (uid, field)
        got = self.header_cache.get(cache_key)
        if got is None:
            values = decoded_header_values(info, field)
            if field in _ADDRESS_HEADERS and info.envelope is not None:
                # Also the raw address forms, so "FROM <u@h>"-style needles and
                # display names with odd spacing still match.
                values = [*values, decode_words(_raw_addresses(info, field))]
            got = [_fold(v) for v in values]
            self.header_cache[cache_key] = got
        return got


def _raw_addresses(info: MessageInfo, field: str) -> bytes:
    attr = {"FROM": "from_", "REPLY-TO": "reply_to"}.get(field, field.lower())
    addrs = getattr(info.envelope, attr)
    if not addrs:
        return b""
    out = []
    for name, _, mailbox, host in addrs:
        out.append(b"%s <%s@%s>" % (name or b"", mailbox or b"", host or b""))
    return b", ".join(out)


# --- message files (worker thread) -----------------------------------------------

# Charsets whose ASCII octets always mean ASCII characters: a raw search for an
# ASCII needle is exact in them.  (Not ISO-2022-*, UTF-16/32, UTF-7.)
_ASCII_SAFE_PREFIXES: tuple[str, ...] = (
    "us-ascii",
    "ascii",
    "utf-8",
    "utf8",
    "iso-8859",
    "windows-",
    "cp125",
    "koi8",
    "latin",
    "gb2312",
    "gbk",
    "gb18030",
    "big5",
    "euc-",
    "tis-620",
)
_RAW_ENCODINGS = frozenset({b"7bit", b"8bit", b"binary", b""})


def _text_parts(part: Part) -> Iterable[Part]:
    if part.children:
        for child in part.children:
            yield from _text_parts(child)
    elif part.message is not None:
        yield from _text_parts(part.message)
    elif part.type.lower() == b"text":
        yield part


def _header_ranges(part: Part) -> Iterable[tuple[int, int]]:
    if part.body_start > part.header_start:
        yield part.header_start, part.body_start
    for child in part.children:
        yield from _header_ranges(child)
    if part.message is not None:
        yield from _header_ranges(part.message)


def _charset(part: Part) -> str:
    raw = param(part.params, b"charset") or b"us-ascii"
    return raw.decode("ascii", "replace").strip().lower()


def _decode_body(raw: bytes, part: Part) -> str:
    encoding = part.encoding.lower()
    if encoding == b"base64":
        cleaned = bytes(c for c in raw if c in _B64_ALPHABET)
        cleaned = cleaned[: len(cleaned) // 4 * 4]
        try:
            raw = base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            raw = b""
    elif encoding == b"quoted-printable":
        raw = quopri.decodestring(raw)
    charset = _charset(part)
    if charset in ("us-ascii", "ascii"):
        charset = "utf-8"  # 8-bit text mislabelled as ASCII is common
    try:
        return codecs.decode(raw, charset, "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class _MessageFile:
    """One message's file for the body round; used only inside the worker thread."""

    def __init__(self, fileobj: IO[bytes], info: MessageInfo) -> None:
        self.info = info
        self.data = fileobj.read()
        self._header: bytes | None = None

    def header(self) -> bytes:
        if self._header is None:
            self._header = self.data[: self.info.body.body_start]
        return self._header

    def header_values(self, field: str) -> list[str]:
        name = field.lower().encode("latin-1")
        return [_fold(decode_words(v)) for n, v in iter_fields(self.header()) if n.lower() == name]

    def contains(self, needle: str, with_header: bool) -> bool:
        folded = _fold(needle)
        if with_header:
            # TEXT: every header of the message, as Dovecot searches it: the
            # top header, each part's MIME header and encapsulated headers.
            for start, end in _header_ranges(self.info.body):
                block = self.data[start:end]
                text = " ".join(decode_words(v) for _, v in iter_fields(block))
                if folded in _fold(text) or folded in _fold(block.decode("utf-8", "replace")):
                    return True
        ascii_needle = folded.encode("ascii") if folded.isascii() else None
        data = self.data
        for part in _text_parts(self.info.body):
            raw = data[part.body_start : part.body_end]
            if (
                ascii_needle is not None
                and part.encoding.lower() in _RAW_ENCODINGS
                and _charset(part).startswith(_ASCII_SAFE_PREFIXES)
            ):
                # The fast path: ASCII lower-casing of the raw octets equals
                # case folding for every ASCII needle in these charsets.
                if ascii_needle in raw.lower():
                    return True
                if raw.isascii():
                    continue
                # 8-bit text can fold into ASCII (e.g. the Kelvin sign into "k"):
                # decode to be exact, but only when the cheap test failed.
            if folded in _fold(_decode_body(raw, part)):
                return True
        return False


def _scan_batch(
    evaluator: _Evaluator,
    program: SearchKey,
    batch: list[tuple[Message, MessageInfo, IO[bytes] | None]],
) -> list[int]:
    """Worker thread: the body round for one batch; the matching sequence numbers."""
    matched = []
    for msg, info, fileobj in batch:
        if fileobj is None:
            continue  # the message vanished: it matches nothing
        try:
            with fileobj:
                data = _MessageFile(fileobj, info)
        except OSError:
            continue
        if evaluator.run(program, msg, _FILE, info, data):
            matched.append(msg[0])
    return matched


# --- the entry point ------------------------------------------------------------------


def _needs(key: SearchKey) -> int:
    """The highest round any key of the program may need."""
    if isinstance(key, And):
        return max((_needs(k) for k in key.keys), default=_CHEAP)
    if isinstance(key, Or):
        return max(_needs(key.left), _needs(key.right))
    if isinstance(key, Not):
        return _needs(key.key)
    if isinstance(key, Header):
        return _INFO if key.field in _ENVELOPE_HEADERS else _FILE
    if isinstance(key, Text):
        return _FILE
    if isinstance(key, Date) and key.sent:
        return _INFO
    return _CHEAP


def evaluate(
    program: SearchKey,
    messages: Sequence[Message],
    context: SearchContext,
    charset: str | None = None,
    run_in_thread: ThreadRunner = _default_runner,
) -> Deferred[list[int]]:
    """The sequence numbers (ascending) of ``messages`` that match ``program``.

    ``messages`` are the view's ``(seq, record, flags)`` in sequence order,
    ``flags`` as this session shows them (``\\Recent`` included where it is
    recent here).  Raises :class:`BadCharset` at once for an unknown charset
    and :class:`UnsupportedSearchKey` for MODSEQ.  The session maps the
    numbers to UIDs for UID SEARCH.  ``run_in_thread`` runs the body round
    (``deferToThread`` by default; tests pass a synchronous one).
    """
    check_charset(charset)
    evaluator = _Evaluator(_Compiled(context))
    matched: list[int] = []
    pending: list[Message] = []
    for msg in messages:
        r = evaluator.run(program, msg, _CHEAP)
        if r is True:
            matched.append(msg[0])
        elif r is None:
            pending.append(msg)
    if not pending:
        return succeed(matched)

    def with_infos(results: list[tuple[bool, Any]]) -> Deferred[list[int]]:
        file_round: list[tuple[Message, MessageInfo]] = []
        for msg, (ok, info) in zip(pending, results, strict=True):
            if not ok:
                continue  # expunged meanwhile: it matches nothing
            r = evaluator.run(program, msg, _INFO, info)
            if r is True:
                matched.append(msg[0])
            elif r is None:
                file_round.append((msg, info))
        return _file_round(file_round)

    def _file_round(todo: list[tuple[Message, MessageInfo]]) -> Deferred[list[int]]:
        if not todo:
            return succeed(sorted(matched))
        batch_in, rest = todo[:BATCH_SIZE], todo[BATCH_SIZE:]
        batch: list[tuple[Message, MessageInfo, IO[bytes] | None]] = []
        for msg, info in batch_in:
            try:
                fileobj: IO[bytes] | None = context.open_message(msg[1].uid)
            except Exception:  # MessageGone or a disk error: it matches nothing
                fileobj = None
            batch.append((msg, info, fileobj))
        d = run_in_thread(_scan_batch, evaluator, program, batch)

        def next_batch(found: list[int]) -> Deferred[list[int]]:
            matched.extend(found)
            return _file_round(rest)

        return d.addCallback(next_batch)

    infos = [context.message_info(msg[1].uid) for msg in pending]
    gathered: Deferred[list[tuple[bool, Any]]] = DeferredList(infos, consumeErrors=True)
    return gathered.addCallback(with_infos)
