"""FETCH data items (RFC 3501 §6.4.5, grammar §9 ``fetch-att`` and ``section``).

A FETCH names either simple items (:class:`FetchItem`, e.g. ``FLAGS``) or body
parts (:class:`FetchBody`, e.g. ``BODY.PEEK[1.2.HEADER.FIELDS (FROM)]<0.100>``).
The macros ALL, FAST and FULL are expanded here so the session sees only items.

Room to grow: BINARY[]/BINARY.PEEK[]/BINARY.SIZE (RFC 3516) parse into
:class:`FetchBody` with ``binary=True`` already; MODSEQ (RFC 7162) is a
:class:`FetchItem`; further items are one entry in ``_SIMPLE``.
"""

from __future__ import annotations

import re

import attrs

from mailaccess.imap.lexer import MAX_NUMBER, Reader
from mailaccess.imap.response import encode_astring

__all__ = ["FetchAttribute", "FetchBody", "FetchItem", "Section", "read_fetch_attributes"]


@attrs.frozen
class FetchItem:
    """A FETCH item with no section: ENVELOPE, FLAGS, UID, RFC822.SIZE…"""

    name: str


@attrs.frozen
class Section:
    """RFC 3501 §6.4.5 ``section``: a part path and what of it.

    ``part`` is the MIME part number (``(1, 2)`` for ``1.2``; empty for the whole
    message).  ``text`` is ``None`` for the part itself, else one of ``HEADER``,
    ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``, ``TEXT``, ``MIME``; ``fields`` holds
    the header field names of the HEADER.FIELDS forms, upper-cased as RFC 3501 §6.4.5
    treats them case-insensitively.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __bytes__(self) -> bytes:
        spec = ".".join(str(n) for n in self.part)
        if self.text is not None:
            spec = f"{spec}.{self.text}" if spec else self.text
        out = spec.encode("ascii")
        if self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            # Echoed as astrings: "A:B" must come back quoted (RFC 3501 §7.4.2).
            names = (encode_astring(f.encode("latin-1")) for f in self.fields)
            out += b" (" + b" ".join(names) + b")"
        return out


@attrs.frozen
class FetchBody:
    """``BODY[section]<partial>``, ``BODY.PEEK[...]`` or (RFC 3516) ``BINARY[...]``.

    ``partial`` is ``(origin, length)`` as asked; ``peek`` means ``\\Seen`` is not
    set (RFC 3501 §6.4.5).  ``size_only`` is RFC 3516 ``BINARY.SIZE[part]``.
    """

    section: Section
    peek: bool = False
    partial: tuple[int, int] | None = None
    binary: bool = False
    size_only: bool = False

    def response_name(self) -> bytes:
        """How the FETCH response names this item (RFC 3501 §7.4.2): no PEEK, origin only.

        ``BODY[HEADER.FIELDS (FROM)]<0>`` for a request ``BODY.PEEK[...]<0.100>``.
        """
        head = b"BINARY.SIZE" if self.size_only else b"BINARY" if self.binary else b"BODY"
        name = head + b"[" + bytes(self.section) + b"]"
        if self.partial is not None:
            name += b"<%d>" % self.partial[0]
        return name


FetchAttribute = FetchItem | FetchBody

# RFC 3501 §6.4.5 and §9 fetch-att; MODSEQ is RFC 7162 §3.1.4.1.
_SIMPLE = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
    }
)

# Frozen, so one shared instance per item name serves every command.
_SIMPLE_ITEMS = {name: FetchItem(name) for name in _SIMPLE}

# RFC 3501 §6.4.5 macros: equivalent to the listed items; they may not be combined
# with other items (§9: "ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att ... ")").
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}

# A FETCH item name: atom characters up to "[" (a single class: no backtracking).
_ITEM_NAME = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\[\]<]{1,32}')
# section-part = nz-number *("." nz-number); each "." must be followed by a digit,
# so the repetition cannot backtrack.
_PART = re.compile(rb"[0-9]+(?:\.[0-9]+)*")

_SECTION_TEXT = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


def read_fetch_attributes(reader: Reader) -> tuple[FetchAttribute, ...]:
    """Read the FETCH argument after the sequence set: a macro, one item, or a list."""
    if reader.maybe(0x28):  # "("
        items = [_read_attribute(reader)]
        while reader.maybe(0x20):
            items.append(_read_attribute(reader))
        reader.skip(0x29, '")" to close the FETCH item list')
        return tuple(items)
    start = reader.pos
    word = _item_name(reader)
    if word in _MACROS:
        return tuple(_SIMPLE_ITEMS[name] for name in _MACROS[word])
    reader.pos = start
    return (_read_attribute(reader),)


def _item_name(reader: Reader) -> str:
    # Item names are atoms, but stop at "[" so BODY[ and BINARY[ are seen.
    m = _ITEM_NAME.match(reader.line, reader.pos)
    if m is None:
        return ""
    reader.pos = m.end()
    return m.group().decode("ascii").upper()


def _read_attribute(reader: Reader) -> FetchAttribute:
    name = _item_name(reader)
    if not name:
        raise reader.error("expected a FETCH item")
    if reader.peek() != 0x5B:  # "["
        item = _SIMPLE_ITEMS.get(name)
        if item is not None:
            return item
        if name in _MACROS:
            raise reader.error(f"{name} cannot be combined with other FETCH items")
        raise reader.error(f"unknown FETCH item {name}")
    if name == "BODY" or name == "BODY.PEEK":
        peek, binary, size_only = name == "BODY.PEEK", False, False
    elif name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        # RFC 3516 §4.2: the section is a part number only.
        peek, binary, size_only = name == "BINARY.PEEK", True, name == "BINARY.SIZE"
    else:
        raise reader.error(f"{name} takes no section")
    reader.pos += 1
    section = _read_section(reader, binary)
    reader.skip(0x5D, '"]" to close the section')
    partial = None
    if not size_only and reader.maybe(0x3C):  # "<" origin "." length ">"
        origin = reader.number("a partial origin")
        reader.skip(0x2E, '"." in the partial range')
        length = reader.nz_number("a partial length")
        reader.skip(0x3E, '">" to close the partial range')
        partial = (origin, length)
    return FetchBody(section, peek, partial, binary, size_only)


def _read_section(reader: Reader, binary: bool) -> Section:
    """RFC 3501 §9 ``section-spec`` inside the brackets (cursor after ``[``)."""
    part: tuple[int, ...] = ()
    m = _PART.match(reader.line, reader.pos)
    if m is not None:
        digits = m.group().split(b".")
        if any(len(d) > 10 or int(d) > MAX_NUMBER or int(d) == 0 for d in digits):
            raise reader.error("body part numbers are non-zero 32-bit numbers")
        part = tuple(int(d) for d in digits)
        reader.pos = m.end()
        if not reader.maybe(0x2E):  # "." section-text follows
            return Section(part)
    if reader.peek() == 0x5D:
        if part:  # "1." followed by "]"
            raise reader.error("a section part number is followed by a dot but nothing else")
        return Section(())
    if binary:
        raise reader.error("a BINARY section is a part number only (RFC 3516)")
    rest = reader.peek_bytes(17).upper()
    for text in _SECTION_TEXT:
        if rest.startswith(text.encode()):
            break
    else:
        raise reader.error("unknown section text: expected HEADER, HEADER.FIELDS, TEXT or MIME")
    if text == "MIME" and not part:
        # RFC 3501 §9 section-text: MIME only follows a part number.
        raise reader.error("MIME needs a part number, e.g. 1.MIME")
    reader.pos += len(text)
    fields: tuple[str, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        reader.sp()
        fields = _read_header_list(reader)
    return Section(tuple(part), text, fields)


def _read_header_list(reader: Reader) -> tuple[str, ...]:
    # header-list = "(" header-fld-name *(SP header-fld-name) ")"; header-fld-name = astring
    reader.skip(0x28, '"(" to start the header field list')
    names = [reader.astring("a header field name")]
    while reader.maybe(0x20):
        names.append(reader.astring("a header field name"))
    reader.skip(0x29, '")" to close the header field list')
    # RFC 3501 §9 allows any astring; a name no header can have (with ":" or SP)
    # simply matches nothing, as Dovecot does too.  Names are upper-cased
    # octet-wise (ASCII only) and kept losslessly as latin-1 text.
    return tuple(raw.upper().decode("latin-1") for raw in names)
