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

import binascii
import calendar
import codecs
import datetime
import quopri
import re
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import IO, Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

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
from mailaccess.store.mime import Envelope, MessageInfo, Part, param
from mailaccess.store.mime_header import decode_words, iter_fields
from mailaccess.store.model import MessageRecord

__all__ = [
    "BATCH_SIZE",
    "SLICE_SIZE",
    "BadCharset",
    "SearchContext",
    "UnsupportedSearchKey",
    "check_charset",
    "evaluate",
]

#: Messages evaluated on the reactor between yields in the header round (when
#: evaluate() is given a clock): about 10-20 ms of work on a loaded machine.
SLICE_SIZE = 2000

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

    # Optional, and much faster for big mailboxes (one Deferred, one cache
    # query instead of one per message):
    #
    #     def message_infos(self, uids: list[int]) -> Deferred[dict[int, MessageInfo]]
    #
    # the infos of the UIDs that still exist (missing ones match nothing).


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


def _local_midnight(day: datetime.date) -> float:
    # The start of ``day`` in the server's zone (Dovecot compares INTERNALDATE there).
    return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))


def _utc_midnight(day: datetime.date) -> float:
    return float(calendar.timegm((day.year, day.month, day.day, 0, 0, 0)))


def _day_test(
    op: str, day: datetime.date, midnight: Callable[[datetime.date], float]
) -> Callable[[float], bool]:
    """A test of a timestamp against BEFORE/ON/SINCE ``day`` (RFC 3501 §6.4.4)."""
    start = midnight(day)
    end = midnight(day + datetime.timedelta(days=1))
    if op == "BEFORE":
        return lambda t: t < start
    if op == "ON":
        return lambda t: start <= t < end
    return lambda t: t >= start  # SINCE: "within or later than"


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


# A compiled key: (message, round, info, file) -> True, False, or None when
# the key needs a later round.  Compiling once turns the per-message walk into
# plain closure calls: no isinstance dispatch, needles folded once.
Node = Callable[[Message, int, "MessageInfo | None", "_MessageFile | None"], "bool | None"]


def _compile(key: SearchKey, context: SearchContext) -> Node:
    """The program as nested closures (raises UnsupportedSearchKey up front)."""
    if isinstance(key, And):
        subs = [_compile(k, context) for k in key.keys]
        if len(subs) == 1:
            return subs[0]

        def all_of(msg: Message, level: int, info: MessageInfo | None, data: Any) -> bool | None:
            result: bool | None = True
            for sub in subs:
                r = sub(msg, level, info, data)
                if r is False:
                    return False
                if r is None:
                    result = None
            return result

        return all_of
    if isinstance(key, Or):
        left, right = _compile(key.left, context), _compile(key.right, context)

        def either(msg: Message, level: int, info: MessageInfo | None, data: Any) -> bool | None:
            a = left(msg, level, info, data)
            if a is True:
                return True
            b = right(msg, level, info, data)
            if b is True:
                return True
            return False if a is False and b is False else None

        return either
    if isinstance(key, Not):
        inner = _compile(key.key, context)

        def negate(msg: Message, level: int, info: MessageInfo | None, data: Any) -> bool | None:
            r = inner(msg, level, info, data)
            return None if r is None else not r

        return negate
    if isinstance(key, All):
        return lambda msg, level, info, data: True
    if isinstance(key, Flag):
        flag = key.flag
        return lambda msg, level, info, data: _has_flag(msg[2], flag)
    if isinstance(key, Size):
        # RFC 3501 §6.4.4: LARGER/SMALLER compare RFC822.SIZE strictly.
        n = key.size
        if key.larger:
            return lambda msg, level, info, data: msg[1].vsize > n
        return lambda msg, level, info, data: msg[1].vsize < n
    if isinstance(key, SequenceKey):
        if key.set.saved:
            saved = frozenset(context.saved or ())
            return lambda msg, level, info, data: msg[1].uid in saved
        if key.uid:
            uid_ranges = key.set.resolve(context.highest_uid)
            return lambda msg, level, info, data: any(a <= msg[1].uid <= b for a, b in uid_ranges)
        seq_ranges = key.set.resolve(context.highest_seq)
        return lambda msg, level, info, data: any(a <= msg[0] <= b for a, b in seq_ranges)
    if isinstance(key, Date):
        if not key.sent:
            internal = _day_test(key.op, key.date, _local_midnight)
            return lambda msg, level, info, data: internal(msg[1].internal_date)
        # SENT*: the Date: header's day as written, i.e. the UTC instant
        # shifted by the sender's offset, against UTC midnights.  Without a
        # usable Date: Dovecot takes the epoch, so SENTBEFORE finds it.
        sent = _day_test(key.op, key.date, _utc_midnight)

        def sent_test(
            msg: Message, level: int, info: MessageInfo | None, data: Any
        ) -> bool | None:
            if level < _INFO:
                return None
            assert info is not None
            if info.date is None:
                return sent(0.0)
            return sent(info.date + (info.date_offset or 0))

        return sent_test
    if isinstance(key, Header):
        needle = _fold(key.value)
        field = key.field
        if field in _ENVELOPE_HEADERS:
            return _envelope_test(field, needle)

        def header_test(
            msg: Message, level: int, info: MessageInfo | None, data: Any
        ) -> bool | None:
            if level < _FILE:
                return None
            # RFC 3501 §6.4.4 HEADER: an empty string matches every message
            # that has the field at all.
            return any(needle in v for v in data.header_values(field))

        return header_test
    if isinstance(key, Text):
        value, with_header = key.value, key.where == "TEXT"

        def text_test(
            msg: Message, level: int, info: MessageInfo | None, data: Any
        ) -> bool | None:
            if level < _FILE:
                return None
            return bool(data.contains(value, with_header))

        return text_test
    if isinstance(key, Modseq):
        raise UnsupportedSearchKey("MODSEQ needs CONDSTORE, which is not enabled")
    raise UnsupportedSearchKey(f"unknown search key {key!r}")


_STRING_ATTRS = {
    "SUBJECT": "subject",
    "DATE": "date",
    "IN-REPLY-TO": "in_reply_to",
    "MESSAGE-ID": "message_id",
}
_ADDRESS_ATTRS = {
    "FROM": "from_",
    "TO": "to",
    "CC": "cc",
    "BCC": "bcc",
    "SENDER": "sender",
    "REPLY-TO": "reply_to",
}


#: Searchable forms of the header values that take work to make (RFC 2047
#: words decoded and folded, address lists rendered), kept by value: senders
#: and subjects recur across a mailbox, so even the first search after a
#: restart decodes each distinct value once.  A plain ASCII string is
#: lower-cased on the spot, which costs less than any lookup.  Keys are the
#: raw bytes of a string field or the address tuple of an address field;
#: values never go stale.  Cleared when full.
FORM_CACHE_SIZE = 65536
_FORMS: dict[Any, bytes | str] = {}


def _remember_form(key: Any, form: bytes | str) -> bytes | str:
    if len(_FORMS) >= FORM_CACHE_SIZE:
        _FORMS.clear()
    _FORMS[key] = form
    return form


def _searchable(raw: bytes) -> bytes | str:
    """A header value as searched: ASCII-lowered bytes when that is exact, else folded text."""
    if raw.isascii() and b"=?" not in raw:
        return raw.lower()
    form = _FORMS.get(raw)
    if form is None:
        form = _remember_form(raw, _fold(decode_words(raw)))
    return form


def _render_addresses(addrs: Iterable[Any]) -> bytes:
    """An address list as searched: ``name <mailbox@host>, ...`` (names still encoded)."""
    rendered = []
    for name, _, mailbox, host in addrs:
        if mailbox is None:
            continue  # the end of a group
        if host is None:
            rendered.append(mailbox + b":")  # a group's name
        elif name:
            rendered.append(name + b" <" + mailbox + b"@" + host + b">")
        else:
            rendered.append(mailbox + b"@" + host)
    return b", ".join(rendered)


def _envelope_test(field: str, needle: str) -> Node:
    """The node for an ENVELOPE header key: does the header contain ``needle`` (folded)?

    Address lists are searched as ``name <mailbox@host>, ...`` with the names
    RFC 2047-decoded.  A header the message lacks matches nothing.  One flat
    closure per field kind: it runs once per message of a SUBJECT or FROM
    search, and every call layer costs ~1 ms per 10,000 messages.
    """
    # An ASCII header is searched in its octets: an ASCII needle compares
    # octets; any other cannot match (folding never turns non-ASCII into pure
    # ASCII... except by decomposition, and the header has none to decompose).
    octets = needle.encode("ascii") if needle.isascii() else None
    forms = _FORMS
    attr = _STRING_ATTRS.get(field)
    if attr is not None:
        index = Envelope._fields.index(attr)

        def string_test(
            msg: Message, level: int, info: MessageInfo | None, data: Any
        ) -> bool | None:
            if level < _INFO:
                return None
            assert info is not None
            raw: Any = info.envelope[index]  # bytes or None: a string field
            if raw is None:
                return False
            if raw.isascii() and b"=?" not in raw:
                return octets is not None and octets in raw.lower()
            form = forms.get(raw)
            if form is None:
                form = _remember_form(raw, _searchable(raw))
            return _contains(form, needle, octets)

        return string_test
    index = Envelope._fields.index(_ADDRESS_ATTRS[field])

    def address_test(msg: Message, level: int, info: MessageInfo | None, data: Any) -> bool | None:
        if level < _INFO:
            return None
        assert info is not None
        addrs: Any = info.envelope[index]
        if not addrs:
            return False
        form = forms.get(addrs)
        if form is None:
            form = _remember_form(addrs, _searchable(_render_addresses(addrs)))
        if type(form) is bytes:
            return octets is not None and octets in form
        return needle in form

    return address_test


def _contains(form: bytes | str, needle: str, octets: bytes | None) -> bool:
    if isinstance(form, bytes):
        return octets is not None and octets in form
    return needle in form


def clear_form_cache() -> None:
    """Forget the cached header forms (tests; or after the parser changed)."""
    _FORMS.clear()


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
    "gb2312",  # (not GBK, GB18030 or Big5: their second octets can be ASCII)
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


def _codec(part: Part) -> str:
    """The Python codec for the part's charset; 8-bit "us-ascii" is read as UTF-8."""
    charset = _charset(part)
    if charset in ("us-ascii", "ascii"):
        return "utf-8"  # 8-bit text mislabelled as ASCII is common
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"


def _transfer_decode(raw: bytes, part: Part) -> bytes:
    """Undo base64 / quoted-printable; other encodings are the octets as stored."""
    encoding = part.encoding.lower()
    if encoding == b"base64":
        try:
            return binascii.a2b_base64(raw)  # skips line breaks and junk
        except (binascii.Error, ValueError):
            cleaned = _B64_JUNK.sub(b"", raw)
            try:
                return binascii.a2b_base64(cleaned[: len(cleaned) // 4 * 4])
            except (binascii.Error, ValueError):
                return b""
    if encoding == b"quoted-printable":
        return quopri.decodestring(raw)
    return raw


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def _fold_for_ascii(data: bytes, codec: str) -> bytes:
    """``data`` (8-bit text in an ASCII-safe ``codec``) folded, as octets, for an ASCII needle.

    For an ASCII needle, compatibility decomposition followed by ASCII
    lower-casing finds exactly what full folding finds (``É`` becomes ``e``
    and a combining accent; upper-case letters that stay non-ASCII can never
    meet an ASCII needle), and both run in C.  Text that is already in NFKD
    (no decomposable characters) cannot gain ASCII: its octets serve as they are.
    """
    text = data.decode(codec, "replace")
    if unicodedata.is_normalized("NFKD", text):
        return data.lower()
    return unicodedata.normalize("NFKD", text).encode("utf-8", "replace").lower()


def _ascii_safe(codec: str) -> bool:
    return codec.replace("_", "-").startswith(_ASCII_SAFE_PREFIXES)


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
        ascii_needle = folded.encode("ascii") if folded.isascii() else None
        data = self.data
        if with_header:
            # TEXT: every header of the message, as Dovecot searches it: the
            # top header, each part's MIME header and encapsulated headers.
            for start, end in _header_ranges(self.info.body):
                if ascii_needle is not None and data.find(ascii_needle, start, end) >= 0:
                    return True
                block = data[start:end]
                if ascii_needle is not None and block.isascii() and b"=?" not in block:
                    if ascii_needle in block.lower():
                        return True
                    continue
                text = " ".join(decode_words(v) for _, v in iter_fields(block))
                if folded in _fold(text) or folded in _fold(block.decode("utf-8", "replace")):
                    return True
        for part in _text_parts(self.info.body):
            start, end = part.body_start, part.body_end
            raw_encoding = part.encoding.lower() in _RAW_ENCODINGS
            codec = _codec(part)
            safe = ascii_needle is not None and _ascii_safe(codec)
            # The fast path: most text has the word in lower case as sent, so
            # look for that first, without copying anything.
            if safe and raw_encoding and data.find(ascii_needle or b"", start, end) >= 0:
                return True
            body = data[start:end]
            if not raw_encoding:
                body = _transfer_decode(body, part)
            if safe:
                assert ascii_needle is not None
                folded_body = body.lower() if body.isascii() else _fold_for_ascii(body, codec)
                if ascii_needle in folded_body:
                    return True
            elif folded in _fold(body.decode(codec, "replace")):
                return True
        return False


def _scan_batch(
    node: Node,
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
        if node(msg, _FILE, info, data):
            matched.append(msg[0])
    return matched


# --- the entry point ------------------------------------------------------------------


def _gather_infos(context: SearchContext, uids: list[int]) -> Deferred[list[Any]]:
    """Each message's MessageInfo, or None if it is gone, in the order of ``uids``.

    A context with ``message_infos(uids)`` (one Deferred of a dict, e.g. from
    the cache's bulk read) is asked once; otherwise ``message_info`` per UID.
    Deferreds that have fired already (the cache case) are read at once.
    """
    bulk = getattr(context, "message_infos", None)
    if bulk is not None:
        return bulk(uids).addCallback(lambda got: [got.get(uid) for uid in uids])
    results: list[Any] = [None] * len(uids)
    waiting: list[Deferred[Any]] = []
    for i, uid in enumerate(uids):
        d = context.message_info(uid)

        def store(info: Any, i: int = i) -> None:
            results[i] = info

        def gone(failure: Any) -> None:
            return None  # expunged meanwhile: it will match nothing

        d.addCallbacks(store, gone)
        if not d.called:
            waiting.append(d)
    if not waiting:
        return succeed(results)
    done: Deferred[Any] = DeferredList(waiting)
    return done.addCallback(lambda _: results)


def evaluate(
    program: SearchKey,
    messages: Sequence[Message],
    context: SearchContext,
    charset: str | None = None,
    run_in_thread: ThreadRunner = _default_runner,
    clock: IReactorTime | None = None,
) -> Deferred[list[int]]:
    """The sequence numbers (ascending) of ``messages`` that match ``program``.

    ``messages`` are the view's ``(seq, record, flags)`` in sequence order,
    ``flags`` as this session shows them (``\\Recent`` included where it is
    recent here).  Raises :class:`BadCharset` at once for an unknown charset
    and :class:`UnsupportedSearchKey` for MODSEQ.  The session maps the
    numbers to UIDs for UID SEARCH.  ``run_in_thread`` runs the body round
    (``deferToThread`` by default; tests pass a synchronous one).  With a
    ``clock`` (the reactor), the header round gives the reactor back every
    :data:`SLICE_SIZE` messages, so a search of a huge mailbox does not hold
    other sessions up.
    """
    check_charset(charset)
    node = _compile(program, context)
    matched: list[int] = []
    pending: list[Message] = []
    for msg in messages:
        r = node(msg, _CHEAP, None, None)
        if r is True:
            matched.append(msg[0])
        elif r is None:
            pending.append(msg)
    if not pending:
        return succeed(matched)
    file_round: list[tuple[Message, MessageInfo]] = []

    def with_infos(infos: list[Any], start: int = 0) -> Deferred[list[int]]:
        stop = len(pending) if clock is None else min(start + SLICE_SIZE, len(pending))
        for i in range(start, stop):
            info = infos[i]
            if info is None:
                continue  # expunged meanwhile: it matches nothing
            msg = pending[i]
            r = node(msg, _INFO, info, None)
            if r is True:
                matched.append(msg[0])
            elif r is None:
                file_round.append((msg, info))
        if stop < len(pending):
            assert clock is not None
            pause: Deferred[None] = deferLater(clock, 0, lambda: None)
            return pause.addCallback(lambda _: with_infos(infos, stop))
        return _file_round(0)

    def _file_round(start: int) -> Deferred[list[int]]:
        if start >= len(file_round):
            return succeed(sorted(matched))
        batch: list[tuple[Message, MessageInfo, IO[bytes] | None]] = []
        for msg, info in file_round[start : start + BATCH_SIZE]:
            try:
                fileobj: IO[bytes] | None = context.open_message(msg[1].uid)
            except Exception:  # MessageGone or a disk error: it matches nothing
                fileobj = None
            batch.append((msg, info, fileobj))
        d = run_in_thread(_scan_batch, node, batch)

        def next_batch(found: list[int]) -> Deferred[list[int]]:
            matched.extend(found)
            return _file_round(start + BATCH_SIZE)

        return d.addCallback(next_batch)

    return _gather_infos(context, [msg[1].uid for msg in pending]).addCallback(with_infos)
