"""The incremental framer: lines, literals, limits and resynchronisation.

RFC 3501 §2.2 (lines and literals), §7.5 (continuation requests), RFC 7888
(LITERAL+ / LITERAL-), and our own limits (DESIGN.md "Bad input").
"""

from __future__ import annotations

import pytest

from mailaccess.imap.framing import (
    LITERAL_MINUS_LIMIT,
    CommandFramer,
    FramerEvent,
    LiteralRequest,
    RawCommand,
    RawLine,
)
from mailaccess.imap.lexer import ParseError

APPEND = b"a1 APPEND INBOX {11}\r\nHello world\r\na2 NOOP\r\n"
APPEND_PLUS = b"a1 APPEND INBOX {11+}\r\nHello world\r\na2 NOOP\r\n"


def drain(framer: CommandFramer, accept: bool = True) -> list[FramerEvent]:
    """All events available now, answering literal requests like a session would."""
    events: list[FramerEvent] = []
    while (event := framer.next_event()) is not None:
        events.append(event)
        if isinstance(event, LiteralRequest):
            if accept:
                framer.accept_literal()
            else:
                framer.reject_literal()
    return events


def feed_in_pieces(framer: CommandFramer, data: bytes, cut: int) -> list[FramerEvent]:
    framer.feed(data[:cut])
    events = drain(framer)
    framer.feed(data[cut:])
    return events + drain(framer)


def test_one_line_command_rfc3501_2_2() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 NOOP\r\n")
    assert drain(framer) == [RawCommand((b"a1 NOOP",))]
    assert not framer.in_command


def test_partial_line_waits_for_crlf_rfc3501_2_2() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 NO")
    assert drain(framer) == []
    assert framer.in_command is False  # nothing framed yet, only buffered
    framer.feed(b"OP\r")
    assert drain(framer) == []
    framer.feed(b"\n")
    assert drain(framer) == [RawCommand((b"a1 NOOP",))]


def test_pipelined_commands_in_one_feed_rfc3501_5_5() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 NOOP\r\na2 CAPABILITY\r\na3 LOG")
    assert drain(framer) == [RawCommand((b"a1 NOOP",)), RawCommand((b"a2 CAPABILITY",))]
    framer.feed(b"OUT\r\n")
    assert drain(framer) == [RawCommand((b"a3 LOGOUT",))]


def test_synchronizing_literal_asks_the_session_rfc3501_7_5() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 APPEND INBOX {11}\r\n")
    assert framer.next_event() == LiteralRequest("a1", 11)
    # Until the session decides, nothing more comes out, even if bytes arrive.
    framer.feed(b"Hello world\r\n")
    assert framer.next_event() is None
    framer.accept_literal()
    assert drain(framer) == [RawCommand((b"a1 APPEND INBOX {11}", b""), (b"Hello world",))]


@pytest.mark.parametrize("cut", range(len(APPEND) + 1))
def test_literal_split_at_every_byte_boundary_rfc3501_4_3(cut: int) -> None:
    events = feed_in_pieces(CommandFramer(), APPEND, cut)
    assert events == [
        LiteralRequest("a1", 11),
        RawCommand((b"a1 APPEND INBOX {11}", b""), (b"Hello world",)),
        RawCommand((b"a2 NOOP",)),
    ]


@pytest.mark.parametrize("cut", range(len(APPEND_PLUS) + 1))
def test_literal_plus_split_at_every_byte_boundary_rfc7888_3(cut: int) -> None:
    events = feed_in_pieces(CommandFramer(), APPEND_PLUS, cut)
    assert events == [
        RawCommand((b"a1 APPEND INBOX {11+}", b""), (b"Hello world",)),
        RawCommand((b"a2 NOOP",)),
    ]


def test_byte_at_a_time_with_two_literals_rfc3501_4_3() -> None:
    data = b"a LOGIN {5}\r\nalice {6+}\r\nse\r\nrt\r\n"
    framer = CommandFramer()
    events: list[FramerEvent] = []
    for i in range(len(data)):
        framer.feed(data[i : i + 1])
        events += drain(framer)
    assert events == [
        LiteralRequest("a", 5),
        RawCommand((b"a LOGIN {5}", b" {6+}", b""), (b"alice", b"se\r\nrt")),
    ]


def test_literal_may_hold_crlf_and_braces_rfc3501_4_3() -> None:
    framer = CommandFramer()
    framer.feed(b"a APPEND x {7+}\r\n{3}\r\n\r\n\r\n")
    assert drain(framer) == [RawCommand((b"a APPEND x {7+}", b""), (b"{3}\r\n\r\n",))]


def test_zero_length_literal_rfc3501_4_3() -> None:
    framer = CommandFramer()
    framer.feed(b'a LOGIN {0}\r\n ""\r\n')
    assert drain(framer) == [LiteralRequest("a", 0), RawCommand((b"a LOGIN {0}", b' ""'), (b"",))]


def test_rejected_synchronizing_literal_is_never_read_rfc3501_7_5() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 APPEND INBOX {11}\r\n")
    assert drain(framer, accept=False) == [LiteralRequest("a1", 11)]
    # The client got its NO and never sent the octets; the next line is a command.
    framer.feed(b"a2 NOOP\r\n")
    assert drain(framer) == [RawCommand((b"a2 NOOP",))]


def test_decision_without_request_is_a_programming_error() -> None:
    framer = CommandFramer()
    with pytest.raises(RuntimeError):
        framer.accept_literal()
    with pytest.raises(RuntimeError):
        framer.reject_literal()


def test_oversize_synchronizing_literal_toobig_rfc7888_4() -> None:
    framer = CommandFramer(max_literal_size=100)
    framer.feed(b"a1 APPEND INBOX {101}\r\na2 NOOP\r\n")
    events = drain(framer)
    assert len(events) == 2
    err = events[0]
    assert isinstance(err, ParseError)
    assert (err.tag, err.code) == ("a1", "TOOBIG")
    assert "101" in err.reason
    assert events[1] == RawCommand((b"a2 NOOP",))


@pytest.mark.parametrize("cut", [0, 10, 30, 100, 150, 172])
def test_oversize_literal_plus_is_drained_in_sync_rfc7888_4(cut: int) -> None:
    body = b"x" * 150
    data = b"a1 APPEND INBOX {150+}\r\n" + body + b"\r\na2 NOOP\r\n"
    events = feed_in_pieces(CommandFramer(max_literal_size=100), data, cut)
    assert len(events) == 2
    assert isinstance(events[0], ParseError)
    assert events[0].code == "TOOBIG"
    assert events[1] == RawCommand((b"a2 NOOP",))


def test_drained_command_with_more_literals_rfc3502_6_3_11() -> None:
    # MULTIAPPEND: the first message is too big, the rest of the command follows.
    data = b"a1 APPEND INBOX {150+}\r\n" + b"x" * 150 + b" {3+}\r\nabc\r\na2 NOOP\r\n"
    framer = CommandFramer(max_literal_size=100)
    framer.feed(data)
    events = drain(framer)
    assert [type(e) for e in events] == [ParseError, RawCommand]
    assert events[1] == RawCommand((b"a2 NOOP",))


def test_literal_minus_limit_rfc7888_5() -> None:
    framer = CommandFramer(nonsync_limit=LITERAL_MINUS_LIMIT)
    ok = b"a1 APPEND INBOX {4096+}\r\n" + b"y" * 4096 + b"\r\n"
    framer.feed(ok)
    (event,) = drain(framer)
    assert isinstance(event, RawCommand)
    assert event.literals == (b"y" * 4096,)
    framer.feed(b"a2 APPEND INBOX {4097+}\r\n" + b"y" * 4097 + b"\r\na3 NOOP\r\n")
    events = drain(framer)
    assert isinstance(events[0], ParseError)
    assert (events[0].tag, events[0].code) == ("a2", "TOOBIG")
    assert events[1:] == [RawCommand((b"a3 NOOP",))]


def test_literal_minus_still_allows_big_synchronizing_literals_rfc7888_5() -> None:
    framer = CommandFramer(nonsync_limit=LITERAL_MINUS_LIMIT)
    framer.feed(b"a1 APPEND INBOX {5000}\r\n")
    assert drain(framer) == [LiteralRequest("a1", 5000)]


def test_literal_minus_sign_is_not_a_literal_marker_rfc7888_3() -> None:
    # RFC 7888's LITERAL- capability still writes {n+}; "{n-}" is no literal at all.
    framer = CommandFramer()
    framer.feed(b"a1 LOGIN {5-}\r\n")
    assert drain(framer) == [RawCommand((b"a1 LOGIN {5-}",))]


def test_total_literal_octets_of_a_command_are_bounded() -> None:
    framer = CommandFramer(max_literal_size=10, max_command_literals=15)
    framer.feed(b"a1 APPEND INBOX {10+}\r\n0123456789 {10+}\r\n0123456789\r\na2 NOOP\r\n")
    events = drain(framer)
    assert isinstance(events[0], ParseError)
    assert events[0].code == "TOOBIG"
    assert events[1:] == [RawCommand((b"a2 NOOP",))]


def test_over_long_line_error_and_resync_at_crlf() -> None:
    framer = CommandFramer(max_line_length=50)
    framer.feed(b"a1 SEARCH " + b"X" * 100)
    (event,) = drain(framer)
    assert isinstance(event, ParseError)
    assert (event.tag, event.code) == ("a1", "TOOBIG")
    # The rest of the long line is discarded as it arrives, never kept.
    for _ in range(100):
        framer.feed(b"Y" * 1000)
        assert drain(framer) == []
        assert framer.buffered == 0
    framer.feed(b"Z\r\na2 NOOP\r\n")
    assert drain(framer) == [RawCommand((b"a2 NOOP",))]


def test_line_exactly_at_the_limit_is_accepted() -> None:
    line = b"a1 NOOP" + b" " * 43
    assert len(line) == 50
    framer = CommandFramer(max_line_length=50)
    framer.feed(line + b"\r\n")
    assert drain(framer) == [RawCommand((line,))]
    framer.feed(line + b"x\r\n")
    (event,) = drain(framer)
    assert isinstance(event, ParseError)


def test_over_long_line_complete_in_one_feed() -> None:
    framer = CommandFramer(max_line_length=20)
    framer.feed(b"t FETCH 1 " + b"(FLAGS)" * 10 + b"\r\nt2 NOOP\r\n")
    events = drain(framer)
    assert isinstance(events[0], ParseError)
    assert events[0].tag == "t"
    assert events[1:] == [RawCommand((b"t2 NOOP",))]


def test_command_text_after_literals_counts_toward_the_line_limit() -> None:
    framer = CommandFramer(max_line_length=30)
    framer.feed(b"a1 LOGIN {1+}\r\nx " + b"p" * 40 + b"\r\na2 NOOP\r\n")
    events = drain(framer)
    assert isinstance(events[0], ParseError)
    assert events[0].tag == "a1"
    assert events[1:] == [RawCommand((b"a2 NOOP",))]


def test_raw_line_mode_for_idle_done_rfc2177_3() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 IDLE\r\n")
    assert drain(framer) == [RawCommand((b"a1 IDLE",))]
    framer.raw_lines = True
    framer.feed(b"DONE\r\n")
    assert drain(framer) == [RawLine(b"DONE")]


def test_raw_line_mode_ignores_literal_markers_rfc3501_6_2_2() -> None:
    framer = CommandFramer()
    framer.raw_lines = True
    framer.feed(b"abc{5}\r\n*\r\n")
    assert drain(framer) == [RawLine(b"abc{5}"), RawLine(b"*")]


def test_mode_switch_takes_effect_on_the_next_line() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\na2 NOOP\r\n")
    assert framer.next_event() == RawCommand((b"a1 AUTHENTICATE PLAIN",))
    framer.raw_lines = True
    assert framer.next_event() == RawLine(b"AGFsaWNlAHNlY3JldA==")
    framer.raw_lines = False
    assert framer.next_event() == RawCommand((b"a2 NOOP",))


def test_discard_buffered_after_starttls_rfc3501_6_2_1() -> None:
    # STARTTLS injection: plaintext pipelined behind STARTTLS must be dropped.
    framer = CommandFramer()
    framer.feed(b"a1 STARTTLS\r\na2 LOGIN evil pass\r\n")
    assert framer.next_event() == RawCommand((b"a1 STARTTLS",))
    assert framer.discard_buffered() == len(b"a2 LOGIN evil pass\r\n")
    assert framer.next_event() is None


def test_raw_command_tag() -> None:
    assert RawCommand((b"a1 NOOP",)).tag == "a1"
    assert RawCommand((b"+ NOOP",)).tag is None
    assert RawCommand((b"",)).tag is None


def test_absurd_literal_size_is_still_a_literal_rfc3501_9() -> None:
    # Not treating "{<21 digits>}" as a marker would let its octets run as commands.
    framer = CommandFramer()
    framer.feed(b"a1 LOGIN {999999999999999999999}\r\na2 NOOP\r\n")
    events = drain(framer)
    assert isinstance(events[0], ParseError)
    assert events[0].code == "TOOBIG"
    assert events[1:] == [RawCommand((b"a2 NOOP",))]


def test_draining_is_visible_so_the_session_may_disconnect_rfc7888_4() -> None:
    framer = CommandFramer(max_literal_size=10)
    framer.feed(b"a1 APPEND INBOX {999999999+}\r\nabc")
    (event,) = drain(framer)
    assert isinstance(event, ParseError)
    assert framer.draining == 999999999 - 3
    assert framer.buffered == 0


def test_marker_like_text_that_is_not_a_marker() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 SEARCH {} x{a}\r\na2 X {+}\r\n")
    assert drain(framer) == [RawCommand((b"a1 SEARCH {} x{a}",)), RawCommand((b"a2 X {+}",))]


def test_discard_then_partial_line_then_rest() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 STARTTLS\r\nxxxxxxxx")
    assert framer.next_event() == RawCommand((b"a1 STARTTLS",))
    assert framer.next_event() is None
    framer.discard_buffered()
    framer.feed(b"a2 NO")
    assert framer.next_event() is None
    framer.feed(b"OP\r\n")
    assert framer.next_event() == RawCommand((b"a2 NOOP",))


def test_long_line_in_tiny_pieces_is_not_rescanned() -> None:
    # One octet at a time up to the limit: framing stays linear, result exact.
    line = b"a1 SEARCH " + b"X" * 8000
    framer = CommandFramer()
    for i in range(len(line)):
        framer.feed(line[i : i + 1])
        assert framer.next_event() is None
    framer.feed(b"\r\n")
    assert framer.next_event() == RawCommand((line,))


def test_over_long_line_with_a_long_tag_is_not_mistagged() -> None:
    framer = CommandFramer(max_line_length=300)
    framer.feed(b"t" * 400 + b" NOOP\r\n")
    (event,) = drain(framer)
    assert isinstance(event, ParseError)
    assert event.tag is None  # never a truncated tag the client did not send
    framer.feed(b"t" * 100 + b" SEARCH " + b"x" * 400 + b"\r\n")
    (event,) = drain(framer)
    assert isinstance(event, ParseError)
    assert event.tag == "t" * 100


def test_literal_marker_ends_a_long_line_rfc3501_4_3() -> None:
    prefix = b"a1 UID SEARCH " + b"UNSEEN " * 100 + b"SUBJECT "
    framer = CommandFramer()
    framer.feed(prefix + b"{5}\r\n")
    assert framer.next_event() == LiteralRequest("a1", 5)
    framer.accept_literal()
    framer.feed(b"hello FROM {3+}\r\nbob\r\n")
    assert drain(framer) == [RawCommand((prefix + b"{5}", b" FROM {3+}", b""), (b"hello", b"bob"))]
