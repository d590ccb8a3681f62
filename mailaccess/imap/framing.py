"""Incremental framing of IMAP client input into whole commands (RFC 3501 §2.2, §7.5).

The framer is a pure object: the session feeds it the octets the transport
delivers and pulls events out one at a time.  It never writes anything; when a
synchronizing literal ``{n}`` needs the server's go-ahead it stops and hands the
decision to the session, which either calls :meth:`CommandFramer.accept_literal`
(and sends ``+ Ready``) or :meth:`CommandFramer.reject_literal` (and sends a tagged
``NO``/``BAD``).  Non-synchronizing literals ``{n+}`` (RFC 7888) flow on without a
continuation request.

Memory is bounded by the limits given: a command's text (literals excluded) may be
at most ``max_line_length`` octets, one literal at most ``max_literal_size``, and a
whole command's literals together at most ``max_command_literals``.  Anything over
a limit becomes a :class:`~mailaccess.imap.lexer.ParseError` event and the framer
resynchronises without buffering the excess: an over-long line is skipped to its
CRLF; an over-large non-synchronizing literal is read and thrown away, and so is
the rest of its command.

Usage by a session (``dataReceived``)::

    framer.feed(data)
    while (event := framer.next_event()) is not None:
        match event:
            case LiteralRequest():      # {n}: say go or no
                framer.accept_literal(); write(response.continuation())
                # or: framer.reject_literal(); write(tagged(tag, "NO", ..., TOOBIG))
            case ParseError():          # over a limit; already resynchronised
                write(response.error_response(event))
            case RawLine():             # only while framer.raw_lines is set
                ...                     # SASL data, or IDLE's DONE
            case RawCommand():
                try:
                    command = parser.parse_command(event)
                except ParseError as e:
                    write(response.error_response(e))
                else:
                    ...                 # run it; set framer.raw_lines for
                                        # AUTHENTICATE/IDLE before the next event

After STARTTLS succeeds, call :meth:`CommandFramer.discard_buffered` before
starting TLS, so plaintext pipelined behind the command is never executed.
"""

from __future__ import annotations

import enum
import re

import attrs

from mailaccess.imap.lexer import ParseError

__all__ = [
    "LITERAL_MINUS_LIMIT",
    "CommandFramer",
    "FramerEvent",
    "LiteralRequest",
    "RawCommand",
    "RawLine",
]

#: RFC 7888 §5: under LITERAL- a non-synchronizing literal may carry at most 4096 octets.
LITERAL_MINUS_LIMIT = 4096

# Digits of a literal size beyond which no limit can be met; also keeps int()
# away from Python's 4300-digit conversion limit.
_MAX_SIZE_DIGITS = 20
# How much of an over-long line is looked at to find its tag for the error.
_TAG_LOOKAHEAD = 256
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')


@attrs.frozen
class RawCommand:
    """One complete command as sent: its lines (CRLF removed) and the literals between.

    ``lines[i]`` ends with a literal marker exactly when ``literals[i]`` exists, so
    ``len(lines) == len(literals) + 1``.  :func:`mailaccess.imap.parser.parse_command`
    turns it into a command object.
    """

    lines: tuple[bytes, ...]
    literals: tuple[bytes, ...] = ()

    @property
    def tag(self) -> str | None:
        """The tag, if the first line starts with a valid one."""
        return _tag_of(self.lines[0])


@attrs.frozen
class LiteralRequest:
    """The client announced a synchronizing literal and waits for ``+`` (RFC 3501 §7.5).

    The session must call ``accept_literal()`` and send a continuation request, or
    ``reject_literal()`` and send a tagged ``NO``/``BAD``; until then the framer yields
    no further events.
    """

    tag: str | None
    size: int


@attrs.frozen
class RawLine:
    """One line in raw-line mode (AUTHENTICATE responses RFC 3501 §6.2.2, IDLE's DONE)."""

    line: bytes


FramerEvent = RawCommand | LiteralRequest | RawLine | ParseError


class _Signal(enum.Enum):
    MORE = "more"  # no event yet, but progress was made: keep going
    NEED_DATA = "need data"  # nothing more can be framed until more octets arrive


_MORE = _Signal.MORE
_NEED_DATA = _Signal.NEED_DATA


class _State(enum.Enum):
    LINE = "line"  # reading a line (first of a command, or one after a literal)
    DECIDE = "decide"  # a LiteralRequest is out; waiting for the session
    LITERAL = "literal"  # reading the octets of an accepted literal
    SKIP_LINE = "skip line"  # discarding the rest of an over-long line
    DRAIN = "drain"  # discarding the octets of a refused non-synchronizing literal
    DISCARD_COMMAND = "discard command"  # discarding the lines after a drained literal


class CommandFramer:
    """Turns a stream of client octets into :data:`FramerEvent` values.

    ``nonsync_limit`` chooses the extension advertised: ``None`` for LITERAL+
    (any ``{n+}`` up to ``max_literal_size``), :data:`LITERAL_MINUS_LIMIT` for
    LITERAL-, ``0`` to refuse non-synchronizing literals altogether.
    """

    def __init__(
        self,
        max_line_length: int = 8192,
        max_literal_size: int = 64 * 1024 * 1024,
        max_command_literals: int | None = None,
        nonsync_limit: int | None = None,
    ) -> None:
        self.max_line_length = max_line_length
        self.max_literal_size = max_literal_size
        self.max_command_literals = (
            max_literal_size if max_command_literals is None else max_command_literals
        )
        self.nonsync_limit = nonsync_limit
        #: When true, each line between commands comes out as a RawLine, with no
        #: literal processing.  The session switches it for AUTHENTICATE and IDLE.
        self.raw_lines = False
        self._buf = bytearray()
        self._state = _State.LINE
        self._lines: list[bytes] = []
        self._literals: list[bytes] = []
        self._text_size = 0  # octets of the current command's lines so far
        self._literal_total = 0  # octets of the current command's literals so far
        self._literal_parts: list[bytes] = []
        self._remaining = 0  # octets still due for LITERAL / DRAIN
        # How far the buffer is known to hold no LF, so a line arriving in tiny
        # pieces is not rescanned from its start on every feed.
        self._scanned = 0

    # --- the session's side ----------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add octets received from the transport."""
        self._buf += data

    def next_event(self) -> FramerEvent | None:
        """The next event the buffered octets make, or ``None`` if more are needed."""
        while True:
            state = self._state
            if state is _State.DECIDE:
                return None
            if state is _State.LITERAL:
                if not self._read_literal():
                    return None
                continue
            if state is _State.DRAIN:
                if not self._drain():
                    return None
                continue
            if state is _State.SKIP_LINE:
                if not self._skip_line():
                    return None
                continue
            event = self._read_line()
            if event is _Signal.NEED_DATA:
                return None
            if not isinstance(event, _Signal):
                return event

    def accept_literal(self) -> None:
        """Go ahead with the announced literal; the session sends ``+ ...`` now."""
        if self._state is not _State.DECIDE:
            raise RuntimeError("no literal is waiting for a decision")
        self._state = _State.LITERAL

    def reject_literal(self) -> None:
        """Refuse the announced literal: the client will not send it (RFC 3501 §7.5).

        The command so far is dropped and the next line starts a new command.
        """
        if self._state is not _State.DECIDE:
            raise RuntimeError("no literal is waiting for a decision")
        self._reset_command()

    def discard_buffered(self) -> int:
        """Throw away everything received but not yet framed; return how many octets.

        After STARTTLS the session must not act on plaintext the client pipelined
        behind the command (RFC 3207 §4.2-style injection; RFC 3501 §6.2.1).
        """
        dropped = len(self._buf)
        self._buf.clear()
        self._scanned = 0
        self._reset_command()
        return dropped

    @property
    def buffered(self) -> int:
        """Octets received and held but not yet framed.

        Framing keeps this within the line limit plus one feed's worth, except
        while a literal decision is pending: a session that decides
        asynchronously should pause the transport meanwhile.
        """
        return len(self._buf)

    @property
    def draining(self) -> int:
        """Octets of a refused non-synchronizing literal still to be thrown away.

        RFC 7888 §4 leaves the server a choice between reading such a literal and
        closing the connection; a session that prefers not to wait for a huge one
        can look here and disconnect.
        """
        return self._remaining if self._state is _State.DRAIN else 0

    @property
    def in_command(self) -> bool:
        """Whether part of a command has been read (lines or a pending literal)."""
        return bool(self._lines) or self._state is not _State.LINE

    # --- internals -------------------------------------------------------------

    def _command_tag(self) -> str | None:
        # Worked out only when an event needs it: most commands never do.
        return _tag_of(self._lines[0]) if self._lines else None

    def _reset_command(self) -> None:
        self._state = _State.LINE
        self._lines = []
        self._literals = []
        self._literal_parts = []
        self._text_size = 0
        self._literal_total = 0
        self._remaining = 0

    def _read_line(self) -> FramerEvent | _Signal:
        """Handle one line in LINE or DISCARD_COMMAND state."""
        buf = self._buf
        budget = self.max_line_length - self._text_size
        # Only search as far as the budget allows: an attacker's endless line is
        # never scanned (or kept) beyond the limit.
        end = buf.find(b"\n", self._scanned, budget + 2)
        if end < 0:
            if len(buf) <= budget + 1:
                self._scanned = len(buf)
                return _NEED_DATA
            self._scanned = 0
            return self._too_long(skip=True)
        self._scanned = 0
        line = bytes(buf[:end])
        del buf[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > budget:
            return self._too_long(skip=False, first=line)

        if self._state is _State.DISCARD_COMMAND:
            return self._discard_line(line)
        if self.raw_lines and not self._lines:
            return RawLine(line)
        self._text_size += len(line)

        marker = _literal_marker(line)
        if marker is None:
            self._lines.append(line)
            command = RawCommand(tuple(self._lines), tuple(self._literals))
            self._reset_command()
            return command

        size, nonsync = marker
        self._lines.append(line)
        refusal = self._refusal(size, nonsync)
        if refusal is not None:
            tag = self._command_tag()
            if nonsync:
                # The client sends the octets regardless: read and drop them, and
                # the rest of the command, so the next command is found intact.
                self._lines, self._literals = [], []
                self._remaining = size
                self._state = _State.DRAIN
            else:
                # A refused synchronizing literal is never sent (RFC 3501 §7.5).
                self._reset_command()
            return ParseError(refusal, tag, "TOOBIG")
        self._literal_total += size
        self._remaining = size
        if nonsync:
            self._state = _State.LITERAL
            return _MORE
        self._state = _State.DECIDE
        return LiteralRequest(self._command_tag(), size)

    def _refusal(self, size: int, nonsync: bool) -> str | None:
        if size > self.max_literal_size:
            return f"literal of {size} octets is larger than the limit of {self.max_literal_size}"
        if self._literal_total + size > self.max_command_literals:
            return f"literals of this command exceed the limit of {self.max_command_literals}"
        if nonsync and self.nonsync_limit is not None and size > self.nonsync_limit:
            # RFC 7888 §4 (LITERAL-): larger non-synchronizing literals are refused.
            return (
                f"non-synchronizing literal of {size} octets is larger than "
                f"{self.nonsync_limit}; use a synchronizing literal"
            )
        return None

    def _discard_line(self, line: bytes) -> _Signal:
        """A line of a command whose literal was drained: drop it, follow its literals."""
        marker = _literal_marker(line)
        if marker is not None and marker[1]:
            self._remaining = marker[0]
            self._state = _State.DRAIN
        else:
            # The command ends here, or at a synchronizing literal the client will
            # not send because it has had its tagged answer already.
            self._reset_command()
        return _MORE

    def _too_long(self, skip: bool, first: bytes | None = None) -> ParseError | _Signal:
        if self._state is _State.DISCARD_COMMAND:
            # The command was answered already; just find its end.
            self._reset_command()
            if skip:
                self._state = _State.SKIP_LINE
            return _MORE
        # The tag comes from the command's first line, or from the long line
        # itself when that is the first (only its start is looked at).
        tag = self._command_tag()
        if not self._lines:
            head = bytes(self._buf[:_TAG_LOOKAHEAD]) if first is None else first[:_TAG_LOOKAHEAD]
            tag = _tag_of(head, cut=True)
        self._reset_command()
        if skip:
            self._state = _State.SKIP_LINE
        return ParseError(f"line longer than {self.max_line_length} octets", tag, "TOOBIG")

    def _skip_line(self) -> bool:
        end = self._buf.find(b"\n")
        if end < 0:
            self._buf.clear()
            return False
        del self._buf[: end + 1]
        self._state = _State.LINE
        return True

    def _read_literal(self) -> bool:
        buf = self._buf
        take = min(self._remaining, len(buf))
        if take:
            self._literal_parts.append(bytes(buf[:take]))
            del buf[:take]
            self._remaining -= take
        if self._remaining:
            return False
        parts = self._literal_parts
        self._literals.append(parts[0] if len(parts) == 1 else b"".join(parts))
        self._literal_parts = []
        self._state = _State.LINE
        return True

    def _drain(self) -> bool:
        buf = self._buf
        take = min(self._remaining, len(buf))
        del buf[:take]
        self._remaining -= take
        if self._remaining:
            return False
        self._state = _State.DISCARD_COMMAND
        return True


def _literal_marker(line: bytes) -> tuple[int, bool] | None:
    """The literal a line announces at its end: (size, non-synchronizing), or None.

    RFC 3501 §9 ``"{" number "}"``, RFC 7888 ``"{" number64 "+}"``.  A size too
    long to be real is still a marker (reported as huge), so the octets that
    follow are never taken for a command (a CRLF-injection path).
    """
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start < 0:
        return None
    digits = line[start + 1 : -1]
    nonsync = digits.endswith(b"+")
    if nonsync:
        digits = digits[:-1]
    if not digits or not digits.isdigit():
        return None
    if len(digits) > _MAX_SIZE_DIGITS:
        return 10**_MAX_SIZE_DIGITS, nonsync
    return int(digits), nonsync


def _tag_of(line: bytes, cut: bool = False) -> str | None:
    """The tag a line starts with; ``cut`` says the line was truncated, so the tag
    counts only if the space after it is in view."""
    m = _TAG.match(line)
    if m is None:
        return None
    if m.end() < len(line) and line[m.end()] != 0x20:
        return None
    if cut and m.end() == len(line):
        return None
    return m.group().decode("ascii")
