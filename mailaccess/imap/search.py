"""SEARCH programs (RFC 3501 §6.4.4, grammar §9 ``search-key``).

A search program is a tree of keys: the top level and every parenthesized list
are :class:`And`, ``OR a b`` is :class:`Or`, ``NOT a`` is :class:`Not`.  Keys that
only rename others are reduced here (``NEW`` is ``RECENT UNSEEN``, ``OLD`` is
``NOT RECENT``, ``UNSEEN`` is ``NOT SEEN``…), so the session evaluates few kinds.

String arguments are decoded with the command's CHARSET (US-ASCII and UTF-8 are
the ones we know); an unknown charset still parses, and the session answers
``NO [BADCHARSET (...)]`` as RFC 3501 §6.4.4 requires (NO, not BAD).

Room to grow: ``MODSEQ`` (RFC 7162) and ``SAVEDBEFORE``-style keys are new classes
and one entry in ``_read_key``; ESEARCH ``RETURN (...)`` (RFC 4731) is parsed by
the SEARCH command already.
"""

from __future__ import annotations

import datetime

import attrs

from mailaccess.imap.lexer import MAX_NUMBER64, Reader
from mailaccess.imap.sequence import SequenceSet, read_sequence_set

__all__ = [
    "SUPPORTED_CHARSETS",
    "All",
    "And",
    "Date",
    "Flag",
    "Header",
    "Modseq",
    "Not",
    "Or",
    "SearchKey",
    "Sequence",
    "Size",
    "Text",
    "read_date",
    "read_search_program",
]

#: Charsets SEARCH understands (RFC 3501 §6.4.4: US-ASCII must be; UTF-8 is common).
SUPPORTED_CHARSETS = frozenset({"US-ASCII", "UTF-8"})


@attrs.frozen
class And:
    """All of ``keys`` match (the top level, and ``( ... )``).  Empty never happens."""

    keys: tuple[SearchKey, ...]


@attrs.frozen
class Or:
    """``OR a b``."""

    left: SearchKey
    right: SearchKey


@attrs.frozen
class Not:
    """``NOT a``."""

    key: SearchKey


@attrs.frozen
class All:
    """``ALL``: every message."""


@attrs.frozen
class Flag:
    """The message has ``flag`` (``\\Seen``, ``\\Recent``, a keyword…).

    ``UNSEEN`` and the like become ``Not(Flag(...))``.
    """

    flag: str


@attrs.frozen
class Header:
    """A header field contains ``value`` (substring, case-insensitive; RFC 3501 §6.4.4).

    ``field`` is upper-case: ``FROM``, ``TO``, ``CC``, ``BCC``, ``SUBJECT`` or any
    name given to ``HEADER``.  An empty value matches every message with the field.
    """

    field: str
    value: str


@attrs.frozen
class Text:
    """``BODY`` (``where="BODY"``: the body only) or ``TEXT`` (header and body)."""

    where: str
    value: str


@attrs.frozen
class Date:
    """``BEFORE``/``ON``/``SINCE`` (``sent=False``: INTERNALDATE) or ``SENT*`` (Date: header).

    RFC 3501 §6.4.4: dates ignore time and timezone.
    """

    op: str  # "BEFORE" | "ON" | "SINCE"
    date: datetime.date
    sent: bool = False


@attrs.frozen
class Size:
    """``LARGER n`` (``larger=True``) or ``SMALLER n``: RFC822.SIZE compared strictly."""

    larger: bool
    size: int


@attrs.frozen
class Sequence:
    """A sequence set as a key: message numbers, or UIDs (``UID set``)."""

    set: SequenceSet
    uid: bool = False


@attrs.frozen
class Modseq:
    """RFC 7162 §3.1.5 ``MODSEQ [entry type] n``: mod-sequence at least ``modseq``."""

    modseq: int
    entry: str | None = None
    entry_type: str | None = None


SearchKey = And | Or | Not | All | Flag | Header | Text | Date | Size | Sequence | Modseq

# Keys without arguments (RFC 3501 §6.4.4) as the tree they stand for.
_SIMPLE: dict[str, SearchKey] = {
    "ALL": All(),
    "ANSWERED": Flag("\\Answered"),
    "DELETED": Flag("\\Deleted"),
    "DRAFT": Flag("\\Draft"),
    "FLAGGED": Flag("\\Flagged"),
    "RECENT": Flag("\\Recent"),
    "SEEN": Flag("\\Seen"),
    "UNANSWERED": Not(Flag("\\Answered")),
    "UNDELETED": Not(Flag("\\Deleted")),
    "UNDRAFT": Not(Flag("\\Draft")),
    "UNFLAGGED": Not(Flag("\\Flagged")),
    "UNSEEN": Not(Flag("\\Seen")),
    "OLD": Not(Flag("\\Recent")),
    "NEW": And((Flag("\\Recent"), Not(Flag("\\Seen")))),
}
_HEADER_KEYS = frozenset({"BCC", "CC", "FROM", "SUBJECT", "TO"})
_DATE_KEYS = {
    "BEFORE": ("BEFORE", False),
    "ON": ("ON", False),
    "SINCE": ("SINCE", False),
    "SENTBEFORE": ("BEFORE", True),
    "SENTON": ("ON", True),
    "SENTSINCE": ("SINCE", True),
}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
# Deep nesting is the one way a short line could make recursion expensive.
_MAX_DEPTH = 64


def read_search_program(reader: Reader, charset: str | None) -> And:
    """Read ``1*(SP search-key)``'s keys (cursor at the first key) to the end of the command."""
    encoding = "utf-8" if charset is None or charset in SUPPORTED_CHARSETS else "latin-1"
    keys = [_read_key(reader, encoding, 0)]
    while reader.maybe(0x20):
        keys.append(_read_key(reader, encoding, 0))
    return And(tuple(keys))


def _read_key(reader: Reader, encoding: str, depth: int) -> SearchKey:
    if depth > _MAX_DEPTH:
        raise reader.error("search program is nested too deeply")
    c = reader.peek()
    if c == 0x28:  # "(" search-key *(SP search-key) ")"
        reader.pos += 1
        keys = [_read_key(reader, encoding, depth + 1)]
        while reader.maybe(0x20):
            keys.append(_read_key(reader, encoding, depth + 1))
        reader.skip(0x29, '")" to close the search key list')
        return keys[0] if len(keys) == 1 else And(tuple(keys))
    if 0x30 <= c <= 0x39 or c in (0x2A, 0x24):  # sequence-set, "*" or "$"
        return Sequence(read_sequence_set(reader))
    word = reader.keyword("a search key")
    simple = _SIMPLE.get(word)
    if simple is not None:
        return simple
    if word in _HEADER_KEYS:
        reader.sp()
        return Header(word, _text(reader, encoding))
    if word in ("BODY", "TEXT"):
        reader.sp()
        return Text(word, _text(reader, encoding))
    if word in _DATE_KEYS:
        op, sent = _DATE_KEYS[word]
        reader.sp()
        return Date(op, read_date(reader), sent)
    if word == "HEADER":
        reader.sp()
        # header-fld-name is any astring (RFC 3501 §9); impossible names match nothing.
        field = reader.astring("a header field name").upper().decode("latin-1")
        reader.sp()
        return Header(field, _text(reader, encoding))
    if word in ("KEYWORD", "UNKEYWORD"):
        reader.sp()
        flag = Flag(reader.atom("a keyword").decode("ascii"))
        return flag if word == "KEYWORD" else Not(flag)
    if word in ("LARGER", "SMALLER"):
        reader.sp()
        return Size(word == "LARGER", reader.number("a size"))
    if word == "NOT":
        reader.sp()
        return Not(_read_key(reader, encoding, depth + 1))
    if word == "OR":
        reader.sp()
        left = _read_key(reader, encoding, depth + 1)
        reader.sp()
        return Or(left, _read_key(reader, encoding, depth + 1))
    if word == "UID":
        reader.sp()
        return Sequence(read_sequence_set(reader), uid=True)
    if word == "MODSEQ":
        return _read_modseq(reader)
    raise reader.error(f"unknown search key {word}")


def _read_modseq(reader: Reader) -> Modseq:
    # RFC 7162 §3.1.5: "MODSEQ" [SP entry-name SP entry-type-req] SP mod-sequence-valzer
    reader.sp()
    if reader.peek() == 0x22:
        entry = reader.quoted().decode("ascii", "replace")
        reader.sp()
        entry_type = reader.keyword("priv, shared or all")
        if entry_type not in ("PRIV", "SHARED", "ALL"):
            raise reader.error("MODSEQ entry type must be priv, shared or all")
        reader.sp()
        return Modseq(reader.number("a mod-sequence", MAX_NUMBER64), entry, entry_type)
    return Modseq(reader.number("a mod-sequence", MAX_NUMBER64))


def _text(reader: Reader, encoding: str) -> str:
    return reader.astring("a search string").decode(encoding, "replace")


def read_date(reader: Reader) -> datetime.date:
    """RFC 3501 §9 ``date = date-text / DQUOTE date-text DQUOTE``, e.g. ``1-Feb-1994``."""
    quoted = reader.maybe(0x22)
    start = reader.pos
    day = reader.number("a day of month")
    if reader.pos - start > 2:  # date-day = 1*2DIGIT
        raise reader.error("the day of a date has one or two digits")
    reader.skip(0x2D, '"-" in the date (d-Mon-yyyy)')
    month = _MONTHS.get(reader.peek_bytes(3).decode("ascii", "replace").upper())
    if month is None:
        raise reader.error("invalid month in date (Jan, Feb, ... Dec)")
    reader.pos += 3
    reader.skip(0x2D, '"-" in the date (d-Mon-yyyy)')
    start = reader.pos
    year = reader.number("a year")
    if reader.pos - start != 4:  # date-year = 4DIGIT
        raise reader.error("the year of a date has four digits")
    if quoted:
        reader.skip(0x22, "a closing quote after the date")
    try:
        return datetime.date(year, month, day)
    except ValueError:
        raise reader.error(f"no such date: {day}-{month}-{year}") from None
