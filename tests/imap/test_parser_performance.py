"""Coarse guards on parser cost: it sits on every command's path.

The bounds are ~30x looser than what a loaded 2-core test box measures
(~30,000 UID FETCH parses a second), so they only trip on a real regression
such as quadratic scanning, not on a busy machine.
"""

from __future__ import annotations

import contextlib
import time

from mailaccess.imap.framing import CommandFramer, RawCommand
from mailaccess.imap.lexer import ParseError
from mailaccess.imap.parser import parse_command

UID_FETCH = b"a1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)\r\n"


def test_uid_fetch_parse_rate() -> None:
    framer = CommandFramer()
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        framer.feed(UID_FETCH)
        event = framer.next_event()
        assert isinstance(event, RawCommand)
        parse_command(event)
    assert time.perf_counter() - start < 2.0  # >= 1,000 commands/s


def test_worst_case_lines_stay_linear() -> None:
    # Maximum-length lines built to stress each scanner: many search keys,
    # a long quoted string full of escapes, a long sequence set, and braces.
    limit = 8192
    lines = [
        b"a SEARCH " + b"SEEN " * ((limit - 20) // 5) + b"ALL",
        b"a SEARCH " + b"OR SEEN " * ((limit - 20) // 8) + b"ALL",
        b'a SEARCH SUBJECT "' + b'\\"' * ((limit - 30) // 2) + b'"',
        b"a FETCH " + b"1:2," * ((limit - 20) // 4) + b"3 FLAGS",
        b"a SEARCH " + b"{" * (limit - 20),
        b"a SEARCH " + b"(" * (limit - 20),
    ]
    start = time.perf_counter()
    for line in lines:
        assert len(line) <= limit
        framer = CommandFramer(max_line_length=limit)
        framer.feed(line + b"\r\n")
        event = framer.next_event()
        assert isinstance(event, RawCommand)
        with contextlib.suppress(ParseError):  # only the time matters here
            parse_command(event)
    assert time.perf_counter() - start < 2.0
