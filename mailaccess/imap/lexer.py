"""Tokens of the IMAP4rev1 command grammar (RFC 3501 §9), read from a framed command.

A framed command (see :mod:`mailaccess.imap.framing`) is a list of lines and the
literals between them: ``lines[i]`` ends with a literal marker ``{n}`` or ``{n+}``
exactly when ``literals[i]`` exists.  :class:`Reader` walks that structure as if it
were one stream, so a literal can stand wherever the grammar allows a ``string``
without ever being copied into a joined buffer.

Every method raises :class:`ParseError` on input the grammar does not allow; the
session answers it with ``BAD`` and the reason.  Nothing here raises anything else
on client input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["ParseError", "Reader"]


class ParseError(Exception):
    """A command the server cannot parse: the session answers ``<tag> BAD <reason>``.

    ``tag`` is the command's tag when it could be read (``None`` means the session
    answers with an untagged ``* BAD``).  ``code`` is a response code for the answer
    when one applies, e.g. ``"TOOBIG"`` (RFC 7888 §4) or ``"CLIENTBUG"``.
    """

    def __init__(self, reason: str, tag: str | None = None, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tag = tag
        self.code = code

    def __repr__(self) -> str:
        return f"ParseError({self.reason!r}, tag={self.tag!r}, code={self.code!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParseError):
            return NotImplemented
        return (self.reason, self.tag, self.code) == (other.reason, other.tag, other.code)

    def __hash__(self) -> int:
        return hash((self.reason, self.tag, self.code))


# RFC 3501 §9: ATOM-CHAR is any CHAR (7-bit, not NUL) except atom-specials:
# "(" ")" "{" SP CTL list-wildcards ("%" "*") quoted-specials ('"' "\") resp-specials ("]").
# Each pattern is a single character class repeated: matching is linear, no backtracking.
_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
# ASTRING-CHAR adds "]" (resp-specials) to ATOM-CHAR.
_ASTRING_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')
# list-char adds the wildcards "%" "*" and "]" (RFC 3501 §9 list-mailbox).
_LIST_CHARS = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')
# tag = 1*<any ASTRING-CHAR except "+">
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
# quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR is any TEXT-CHAR but the quoted
# specials, or "\" followed by one of them.  8-bit octets are let through because
# UTF-8 quoted strings are valid under RFC 6855/RFC 9051 and common in SEARCH.
# The two alternatives start with different octets, so the star cannot backtrack.
_QUOTED = re.compile(rb'"((?:[^"\\\x00\r\n]|\\["\\])*)"')
_UNESCAPE = re.compile(rb"\\(.)")
_DIGITS = re.compile(rb"[0-9]+")

#: RFC 3501 §9: number = 1*DIGIT ;Unsigned 32-bit integer
MAX_NUMBER = 2**32 - 1
#: RFC 7162 §7: number64 for mod-sequences
MAX_NUMBER64 = 2**63 - 1


def is_atom(value: bytes) -> bool:
    """Whether ``value`` is a non-empty RFC 3501 atom (and so needs no quoting)."""
    m = _ATOM.fullmatch(value)
    return m is not None


class Reader:
    """A cursor over one framed command: lines with literals between them."""

    __slots__ = ("_index", "_line", "_lines", "_literals", "pos", "tag")

    def __init__(self, lines: Sequence[bytes], literals: Sequence[bytes] = ()) -> None:
        if len(lines) != len(literals) + 1:
            raise ValueError("a framed command has exactly one more line than literals")
        self._lines = lines
        self._literals = literals
        self._index = 0
        self._line = lines[0]
        self.pos = 0
        #: Set as soon as the tag is read, so every later error carries it.
        self.tag: str | None = None

    # --- errors --------------------------------------------------------------

    def error(self, reason: str, code: str | None = None) -> ParseError:
        """A ParseError for this command, carrying its tag."""
        return ParseError(reason, self.tag, code)

    # --- position ------------------------------------------------------------

    @property
    def line(self) -> bytes:
        """The line the cursor is on (for modules that match their own tokens)."""
        return self._line

    def peek(self) -> int:
        """The next octet of the current line, or -1 at its end."""
        try:
            return self._line[self.pos]
        except IndexError:
            return -1

    def peek_bytes(self, n: int) -> bytes:
        """Up to ``n`` octets ahead on the current line, not consumed."""
        return self._line[self.pos : self.pos + n]

    def at_end(self) -> bool:
        """Whether the whole command has been consumed."""
        return self.pos >= len(self._line) and self._index == len(self._literals)

    def end(self) -> None:
        """Require the end of the command (RFC 3501 §9: every command ends in CRLF)."""
        if not self.at_end():
            rest = self._line[self.pos : self.pos + 20]
            raise self.error(f"unexpected characters at end of command: {_show(rest)}")

    def skip(self, octet: int, what: str) -> None:
        """Consume exactly one given octet, e.g. ``SP`` or ``(``."""
        if not self.maybe(octet):
            raise self.error(f"expected {what} {self._where()}")

    def sp(self) -> None:
        """Consume exactly one SP (RFC 3501 §9 is strict: one space between tokens)."""
        if not self._line.startswith(b" ", self.pos):
            raise self.error(f"expected a space {self._where()}")
        self.pos += 1

    def maybe(self, octet: int) -> bool:
        """Consume ``octet`` if it comes next; say whether it did."""
        try:
            found = self._line[self.pos] == octet
        except IndexError:
            return False
        if found:
            self.pos += 1
        return found

    def _where(self) -> str:
        if self.pos >= len(self._line):
            return "at end of line"
        return f"at {_show(self._line[self.pos : self.pos + 20])}"

    # --- atoms and numbers ---------------------------------------------------

    def read_tag(self) -> str:
        """RFC 3501 §9 ``tag``; remembered for later errors."""
        m = _TAG.match(self._line, self.pos)
        if m is None or (m.end() < len(self._line) and self._line[m.end()] != 0x20):
            raise self.error("missing or invalid tag")
        self.pos = m.end()
        self.tag = m.group().decode("ascii")
        return self.tag

    def atom(self, what: str = "an atom") -> bytes:
        """RFC 3501 §9 ``atom``."""
        m = _ATOM.match(self._line, self.pos)
        if m is None:
            raise self.error(f"expected {what} {self._where()}")
        self.pos = m.end()
        return m.group()

    def keyword(self, what: str = "a keyword") -> str:
        """An atom read case-insensitively (command names, FETCH items, SEARCH keys)."""
        return self.atom(what).decode("ascii").upper()

    def number(self, what: str = "a number", limit: int = MAX_NUMBER) -> int:
        """RFC 3501 §9 ``number``: digits, at most ``limit``."""
        m = _DIGITS.match(self._line, self.pos)
        if m is None:
            raise self.error(f"expected {what} {self._where()}")
        digits = m.group()
        # Checking the digit count first keeps int() cheap on hostile input.
        if len(digits) > 20 or int(digits) > limit:
            raise self.error(f"{what} is too large")
        self.pos = m.end()
        return int(digits)

    def nz_number(self, what: str = "a non-zero number", limit: int = MAX_NUMBER) -> int:
        """RFC 3501 §9 ``nz-number``."""
        n = self.number(what, limit)
        if n == 0:
            raise self.error(f"{what} must not be zero")
        return n

    # --- strings -------------------------------------------------------------

    def quoted(self) -> bytes:
        """RFC 3501 §9 ``quoted``: the unescaped contents."""
        m = _QUOTED.match(self._line, self.pos)
        if m is None:
            raise self.error('unterminated quoted string or bad escape (only \\\\ and \\")')
        self.pos = m.end()
        body = m.group(1)
        return _UNESCAPE.sub(rb"\1", body) if b"\\" in body else body

    def literal(self) -> bytes:
        """RFC 3501 §9 ``literal`` (and RFC 7888 ``{n+}``): the octets the framer collected.

        The framer guarantees the marker ends its line and that the octets follow,
        so here the marker only has to be skipped.
        """
        line = self._line
        if self.peek() != 0x7B or self._index >= len(self._literals) or not line.endswith(b"}"):
            raise self.error(f"expected a literal {self._where()}")
        marker = line[self.pos + 1 : -1]
        if marker.endswith(b"+"):
            marker = marker[:-1]
        if not marker.isdigit():
            raise self.error(f"malformed literal {_show(line[self.pos :])}")
        data = self._literals[self._index]
        self._index += 1
        self._line = self._lines[self._index]
        self.pos = 0
        return data

    def string(self, what: str = "a string") -> bytes:
        """RFC 3501 §9 ``string = quoted / literal``."""
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        raise self.error(f"expected {what} {self._where()}")

    def astring(self, what: str = "a string") -> bytes:
        """RFC 3501 §9 ``astring = 1*ASTRING-CHAR / string``."""
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        m = _ASTRING_ATOM.match(self._line, self.pos)
        if m is None:
            raise self.error(f"expected {what} {self._where()}")
        self.pos = m.end()
        return m.group()

    def nstring(self, what: str = "a string or NIL") -> bytes | None:
        """RFC 3501 §9 ``nstring = string / nil``."""
        if self.peek_bytes(3).upper() == b"NIL" and not _continues_atom(self):
            self.pos += 3
            return None
        return self.string(what)

    def list_mailbox(self) -> bytes:
        """RFC 3501 §9 ``list-mailbox = 1*list-char / string``."""
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        m = _LIST_CHARS.match(self._line, self.pos)
        if m is None:
            raise self.error(f"expected a mailbox pattern {self._where()}")
        self.pos = m.end()
        return m.group()

    def mailbox(self) -> str:
        """RFC 3501 §9 ``mailbox``: INBOX in any case is the one INBOX (§5.1).

        The name is returned as sent (modified UTF-7 on the wire, RFC 3501 §5.1.3);
        converting it to Unicode is the session's business, since UTF8=ACCEPT
        (RFC 6855) changes the rule.
        """
        raw = self.astring("a mailbox name")
        if b"\0" in raw or b"\r" in raw or b"\n" in raw:
            # Only a literal can carry these; no valid name contains them, and a
            # name with CR/LF would break every later response that echoes it.
            raise self.error("mailbox name contains NUL, CR or LF")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("mailbox name is not valid UTF-8") from None
        if len(name) == 5 and name.upper() == "INBOX":
            return "INBOX"
        return name


def _continues_atom(reader: Reader) -> bool:
    """Whether the atom at the cursor is longer than three octets (``NILS`` is not NIL)."""
    m = _ASTRING_ATOM.match(reader.line, reader.pos)
    return m is not None and m.end() - reader.pos > 3


def _show(fragment: bytes) -> str:
    """A fragment of client input, quoted safely for an error text."""
    text = fragment.decode("ascii", "replace")
    return repr("".join(c if " " <= c < "\x7f" else "?" for c in text))
