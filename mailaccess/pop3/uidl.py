"""POP3 unique-ids (UIDL) built from UIDVALIDITY and UID, Dovecot-style.

RFC 1939 §7 asks that a unique-id never change and never be reused for another
message of the maildrop.  DESIGN.md rule 2 derives it from the mailbox's
UIDVALIDITY and the message's UID, so it survives restarts, flag changes and
``new/`` -> ``cur/`` moves.  The shape is Dovecot's ``pop3_uidl_format``, so a
server migrated from Dovecot keeps every client's "already downloaded" list
valid.  Dovecot's default ``%08Xu%08Xv`` gives e.g. ``000000056b0987d1``:
Dovecot 2.3 prints the ``X`` (hex) modifier in lower case.

Supported syntax, the part of Dovecot 2.3's ``var_expand`` that makes sense for
a unique-id::

    %%                      a literal "%"
    %[-][0][width][.width][modifiers]<var>
    %[...]{<long name>}

variables ``u``/``{uid}`` (UID), ``v``/``{uidvalidity}`` (UIDVALIDITY),
``f``/``{filename}`` (the Maildir base name); modifiers ``X`` (number to hex),
``L``/``U`` (lower/upper case), ``R`` (reverse).  A leading ``0`` pads to the
width with zeros; without it the width cuts the value, and ``offset.width``
takes a substring as Dovecot does (a negative offset counts from the end).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

from mailaccess.store.model import MessageRecord

_SHORT_NAMES = {"u": "uid", "v": "uidvalidity", "f": "filename"}
_LONG_NAMES = frozenset(_SHORT_NAMES.values())

# One directive: [-][0][digits][.[-]digits][modifiers](var | {name}).
_DIRECTIVE = re.compile(
    r"%(?:(?P<percent>%)"
    r"|(?P<sign>-)?(?P<zero>0)?(?P<width>\d+)?(?:\.(?P<width2>\d+))?"
    r"(?P<mods>[XLUR]*)"
    r"(?:(?P<short>[A-Za-z])|\{(?P<long>[A-Za-z_]+)\}))"
)

# RFC 1939 §7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
_UNIQUE_ID = re.compile(r"[\x21-\x7e]{1,70}")


class UIDLFormatError(ValueError):
    """The configured ``uidl_format`` cannot produce RFC 1939 unique-ids."""


@attrs.frozen
class _Literal:
    text: str

    def expand(self, values: dict[str, str | int]) -> str:
        return self.text


@attrs.frozen
class _Variable:
    name: str
    modifiers: str
    zero_pad: bool
    width: int  # 0: no width
    offset: int  # applies only when a "." was written

    def expand(self, values: dict[str, str | int]) -> str:
        value = values[self.name]
        text = str(value)
        for modifier in self.modifiers:
            if modifier == "X":
                # Dovecot 2.3 parses the value as a decimal number and prints
                # it with "%llx": lower-case hex, whatever the case of "X".
                text = format(int(text), "x") if text.isdigit() else text
            elif modifier == "L":
                text = text.lower()
            elif modifier == "U":
                text = text.upper()
            elif modifier == "R":
                text = text[::-1]
        if self.offset:
            text = text[self.offset :]
        if self.zero_pad:
            return text.rjust(self.width, "0")
        if self.width:
            return text[: self.width]
        return text


@attrs.frozen
class UIDLFormat:
    """A compiled ``pop3.uidl_format``; ``unique_id`` expands it for one message."""

    source: str
    _parts: tuple[_Literal | _Variable, ...]

    @classmethod
    def parse(cls, source: str) -> UIDLFormat:
        """Compile *source*; raise UIDLFormatError saying what is wrong with it."""
        parts: list[_Literal | _Variable] = []
        position = 0
        for match in _DIRECTIVE.finditer(source):
            if match.start() != position:
                parts.append(_Literal(source[position : match.start()]))
            position = match.end()
            if match["percent"]:
                parts.append(_Literal("%"))
                continue
            name = match["long"] or _SHORT_NAMES.get(match["short"] or "")
            if name not in _LONG_NAMES:
                raise UIDLFormatError(
                    f"uidl_format {source!r}: unknown variable {match.group(0)!r}; "
                    "use %u (uid), %v (uidvalidity) or %f (filename)"
                )
            assert name is not None
            first = int(match["width"] or 0)
            if match["width2"] is not None:
                # "offset.width", as in Dovecot's "%2.1u".
                offset = -first if match["sign"] else first
                width = int(match["width2"])
            else:
                offset, width = 0, first
            parts.append(_Variable(name, match["mods"], bool(match["zero"]), width, offset))
        if "%" in source[position:]:
            raise UIDLFormatError(f"uidl_format {source!r}: stray '%' in {source[position:]!r}")
        if position != len(source):
            parts.append(_Literal(source[position:]))
        if not any(isinstance(part, _Variable) for part in parts):
            raise UIDLFormatError(
                f"uidl_format {source!r} names no variable: every message "
                "would get the same unique-id (use %u and %v)"
            )
        # Catch literals outside 0x21..0x7E (e.g. a space) now, not per message.
        probe = cls(source, tuple(parts)).unique_id(1, 1, "probe")
        if not _UNIQUE_ID.fullmatch(probe):
            raise UIDLFormatError(
                f"uidl_format {source!r} gives {probe!r}: RFC 1939 §7 allows only "
                "1 to 70 printable characters (0x21-0x7E)"
            )
        return cls(source, tuple(parts))

    def for_mailbox(self, uidvalidity: int) -> Callable[[int, str], str]:
        """A fast ``unique_id(uid, filename)`` for one mailbox (one UIDVALIDITY).

        A POP3 login may list 10,000 messages: the parts that depend only on
        UIDVALIDITY are worked out once, and when the UID parts are plain
        numbers (as in every format Dovecot documents) the whole unique-id is
        one ``str.format`` call.
        """
        template: list[str] = []
        for part in self._parts:
            if isinstance(part, _Literal):
                template.append(part.text.replace("{", "{{").replace("}", "}}"))
            elif part.name == "uidvalidity":
                text = part.expand({"uidvalidity": uidvalidity})
                template.append(text.replace("{", "{{").replace("}", "}}"))
            elif part.name == "uid" and part.modifiers in ("", "X") and not part.offset:
                if part.width and not part.zero_pad:
                    break  # a width that cuts: no format spec says that
                spec = f"0{part.width}" if part.zero_pad else ""
                template.append("{0:" + spec + ("x" if part.modifiers else "d") + "}")
            else:
                break
        else:
            formatter = "".join(template).format
            return lambda uid, filename: formatter(uid)
        return lambda uid, filename: self.unique_id(uid, uidvalidity, filename)

    def unique_id(self, uid: int, uidvalidity: int, filename: str) -> str:
        """The unique-id of one message (RFC 1939 §7)."""
        values: dict[str, str | int] = {
            "uid": uid,
            "uidvalidity": uidvalidity,
            "filename": filename,
        }
        return "".join(part.expand(values) for part in self._parts)

    def for_record(self, record: MessageRecord, uidvalidity: int) -> str:
        """The unique-id of *record* in a mailbox of *uidvalidity*."""
        return self.unique_id(record.uid, uidvalidity, record.base)
