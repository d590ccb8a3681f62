"""Property tests: hostile input only ever yields ParseError; encode→parse round trips."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailaccess.imap import commands as c
from mailaccess.imap.framing import CommandFramer, LiteralRequest, RawCommand, RawLine
from mailaccess.imap.lexer import ParseError
from mailaccess.imap.parser import parse_command
from mailaccess.imap.response import encode, encode_astring, encode_flags, encode_string
from mailaccess.imap.sequence import SequenceSet
from tests.imap.test_parser import parse

# Pieces of real commands, so random joins reach deep into the grammar rather
# than failing at the tag.
TOKENS = [
    b"a1", b"UID", b"FETCH", b"SEARCH", b"STORE", b"COPY", b"MOVE", b"APPEND", b"LOGIN",
    b"LIST", b"SELECT", b"STATUS", b"ID", b"ENABLE", b"AUTHENTICATE", b"EXPUNGE",
    b"1", b"1:*", b"*", b"$", b"2,4:5", b"0", b"(", b")", b"[", b"]", b"<0.10>", b"<",
    b"BODY[", b"BODY.PEEK[", b"HEADER.FIELDS", b"(FROM TO)", b"1.2.MIME", b"TEXT]",
    b"FLAGS", b"+FLAGS.SILENT", b"\\Seen", b"\\", b'"', b'"x\\"y"', b'"\\q"', b"NIL",
    b"{3}\r\nabc", b"{3+}\r\nabc", b"{0}\r\n", b"{99999999999999999999}\r\n", b"{",
    b"OR", b"NOT", b"SINCE", b"1-Feb-1994", b'"31-Feb-1994 00:00:00 +0000"', b"CHARSET",
    b"RETURN", b"(CONDSTORE)", b"(CHANGEDSINCE 1)", b"(QRESYNC (1 2))", b"INBOX", b"=",
    b"\xff", b"\x00", b"\r", b"\n", b"%", b"~{1}\r\nx",
]  # fmt: skip


def run(framer: CommandFramer, chunks: list[bytes], decisions: list[bool]) -> int:
    """Feed chunks; parse every command; return how many events were seen."""
    seen = 0
    for chunk in chunks:
        framer.feed(chunk)
        while (event := framer.next_event()) is not None:
            seen += 1
            if isinstance(event, LiteralRequest):
                if decisions and not decisions.pop():
                    framer.reject_literal()
                else:
                    framer.accept_literal()
            elif isinstance(event, RawCommand):
                try:
                    command = parse_command(event)
                except ParseError as e:
                    assert e.reason
                else:
                    assert isinstance(command, c.Command)
                    assert command.tag == event.tag
            else:
                assert isinstance(event, RawLine | ParseError)
    return seen


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.binary(max_size=80), max_size=8),
    st.lists(st.booleans()),
    st.booleans(),
)
def test_arbitrary_bytes_only_ever_give_parse_errors(
    chunks: list[bytes], decisions: list[bool], raw: bool
) -> None:
    framer = CommandFramer(max_line_length=200, max_literal_size=100)
    framer.raw_lines = raw
    run(framer, chunks, decisions)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14),
    st.sampled_from([b" ", b"", b"  "]),
    st.lists(st.booleans()),
    st.integers(1, 64),
)
def test_near_valid_commands_only_ever_give_parse_errors(
    tokens: list[bytes], joiner: bytes, decisions: list[bool], step: int
) -> None:
    data = b"t " + joiner.join(tokens) + b"\r\n"
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    run(CommandFramer(max_line_length=300, max_literal_size=1000), chunks, decisions)


text = st.binary(max_size=200)


@given(st.binary(max_size=60), text)
def test_login_strings_round_trip(user: bytes, password: bytes) -> None:
    line = b"a LOGIN " + encode_astring(user) + b" " + encode_string(password) + b"\r\n"
    assert parse(line) == c.Login("a", user, password)


@given(
    st.lists(st.tuples(st.binary(max_size=40), st.none() | st.binary(max_size=40)), max_size=10)
)
def test_id_lists_of_strings_round_trip_rfc2971(pairs: list[tuple[bytes, bytes | None]]) -> None:
    # Valid UTF-8 only: ID values are text, decoded for the session.
    flat: list[bytes | None] = [v for pair in pairs for v in pair]
    cmd = parse(b"a ID " + encode(flat) + b"\r\n")
    assert isinstance(cmd, c.Id)
    assert cmd.parameters == tuple(
        (k.decode("utf-8", "replace"), None if v is None else v.decode("utf-8", "replace"))
        for k, v in pairs
    )


keyword = st.from_regex(r"\A[A-Za-z$][A-Za-z0-9$_.-]{0,15}\Z")
system = st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"])


@given(st.lists(keyword | system, unique_by=str.upper, max_size=8))
def test_flag_lists_round_trip_rfc3501_6_4_6(flags: list[str]) -> None:
    cmd = parse(b"a STORE 1 FLAGS " + encode_flags(flags) + b"\r\n")
    assert isinstance(cmd, c.Store)
    assert sorted(cmd.flags) == sorted(flags)


@given(st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=30))
def test_sequence_sets_round_trip_through_a_command(numbers: list[int]) -> None:
    wire = bytes(SequenceSet(tuple((n, n) for n in numbers)))
    cmd = parse(b"a UID FETCH " + wire + b" FLAGS\r\n")
    assert isinstance(cmd, c.Fetch)
    assert [a for a, _ in cmd.sequence_set.resolve(1)] == numbers


SAMPLES = [
    b"a1 NOOP\r\n",
    b"a2 LOGIN {5}\r\nalice {6+}\r\nse\r\nrt\r\n",
    b"a3 APPEND INBOX (\\Seen) {11+}\r\nHello world\r\n",
    b"a4 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)\r\n",
    b"a5 APPEND INBOX {0}\r\n\r\n",
    b"a6 SEARCH CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa4\xc3\xb6\r\n",
    b"a7 BOGUS {3+}\r\n}\r\n\r\n",
    b"\r\n",
    b"a8 NOOP\n",
]


def events_of(chunks: list[bytes]) -> list[object]:
    framer = CommandFramer(max_line_length=100, max_literal_size=50)
    events: list[object] = []
    for chunk in chunks:
        framer.feed(chunk)
        while (event := framer.next_event()) is not None:
            events.append(event)
            if isinstance(event, LiteralRequest):
                framer.accept_literal()
    return events


@given(st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=8), st.data())
def test_framing_does_not_depend_on_how_bytes_arrive(
    commands: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(commands)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    whole = events_of([stream])
    assert events_of(chunks) == whole
    assert sum(isinstance(e, RawCommand) for e in whole) == len(commands)


@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_sequence_set_and_sasl_decoding_only_raise_parse_error(data: bytes) -> None:
    from mailaccess.imap.parser import decode_sasl_response

    for attempt in (lambda: SequenceSet.parse(data), lambda: decode_sasl_response(data)):
        with contextlib.suppress(ParseError):
            attempt()
