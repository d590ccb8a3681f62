"""FetchPlan and BodyStream (RFC 3501 §6.4.5 FETCH, §7.4.2 FETCH response) on hand-made messages.

The byte-for-byte comparison with Dovecot is test_fetch_data_dovecot.py; here
the properties the session relies on: what a plan needs, implicit \\Seen,
item order, literal sizes that match the octets, streaming in bounded pieces.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mailaccess.imap import fetch_data
from mailaccess.imap.fetch import FetchAttribute, read_fetch_attributes
from mailaccess.imap.fetch_data import (
    BodyStream,
    FetchPlan,
    UnsupportedFetchItem,
    encode_fetch_flags,
    format_internaldate_local,
)
from mailaccess.imap.lexer import Reader
from mailaccess.imap.response import format_internaldate
from mailaccess.store.mime import parse_message
from mailaccess.store.model import MessageGone, MessageRecord


@pytest.fixture(autouse=True)
def _server_in_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # INTERNALDATE is shown, and SEARCH dates compared, in the server's zone
    # (as Dovecot does); the expected answers here were made in UTC.
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


SIMPLE = b"""From: Ann <ann@example.com>
To: bob@example.org
Subject: lunch
Date: Wed, 7 Jun 2023 09:00:00 +0200

Shall we meet at noon?
Ann
"""

# A body large enough to be streamed (> INLINE_LIMIT) and to need several chunks.
LARGE = (
    b"From: big@example.com\nSubject: large\nMIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\n"
    + b"".join(b"row %06d\n" % i for i in range(20000))
    + b"--zz\nContent-Type: text/plain\n\nsmall tail\n--zz--\n"
)


def items(text: str) -> Sequence[FetchAttribute]:
    reader = Reader([text.encode()])
    parsed = read_fetch_attributes(reader)
    reader.end()
    return parsed


def record(data: bytes, uid: int = 42, flags: frozenset[str] = frozenset()) -> MessageRecord:
    vsize = len(data) + data.count(b"\n") - data.count(b"\r\n")
    return MessageRecord(uid, f"base-{uid}-{len(data)}", flags, len(data), vsize, 1686121200.0)


def run(
    text: str,
    data: bytes = SIMPLE,
    uid_command: bool = False,
    flags: frozenset[str] = frozenset(),
    seen_changed: bool = False,
) -> bytes:
    plan = FetchPlan(items(text), uid_command)
    rec = record(data, flags=flags)
    parts = plan.response(
        7, rec, flags, parse_message(data), lambda: io.BytesIO(data), seen_changed
    )
    out = b""
    for part in parts:
        out += b"".join(part.chunks(io.BytesIO(data))) if isinstance(part, BodyStream) else part
    return out


def literals_consistent(line: bytes) -> bool:
    """Every {n} is followed by exactly n octets and the line still ends in ")\\r\\n"."""
    pos = 0
    while True:
        m = re.compile(rb"\{(\d+)\}\r\n").search(line, pos)
        if m is None:
            return line.endswith(b")\r\n")
        pos = m.end() + int(m.group(1))
        if pos > len(line):
            return False


# --- what a plan needs (the session's decisions) ------------------------------------


@pytest.mark.parametrize(
    ("text", "info", "file", "seen"),
    [
        ("(UID FLAGS RFC822.SIZE INTERNALDATE)", False, False, False),
        ("FAST", False, False, False),
        ("ALL", True, False, False),  # ENVELOPE
        ("FULL", True, False, False),  # BODY
        ("BODYSTRUCTURE", True, False, False),
        ("BODY.PEEK[]", False, True, False),  # served from the record's sizes
        ("BODY[]", False, True, True),
        ("BODY.PEEK[TEXT]", True, True, False),
        ("BODY[1.MIME]", True, True, True),
        ("RFC822", False, True, True),
        # The message's own header is read from the file, not parsed.
        ("RFC822.HEADER", False, True, False),  # = BODY.PEEK[HEADER]
        ("RFC822.TEXT", True, True, True),
        ("(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])", False, True, False),
        ("BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]<0.10>", False, True, False),
        ("(BODY.PEEK[HEADER] ENVELOPE)", True, True, False),
        ("BODY.PEEK[2.HEADER]", True, True, False),  # an encapsulated message's
    ],
)
def test_plan_needs_rfc3501_6_4_5(text: str, info: bool, file: bool, seen: bool) -> None:
    plan = FetchPlan(items(text), uid_command=False)
    assert (plan.needs_info, plan.needs_file, plan.sets_seen) == (info, file, seen)


def test_unsupported_items_are_refused_up_front() -> None:
    with pytest.raises(UnsupportedFetchItem):
        FetchPlan(items("BINARY[1]"), False)
    with pytest.raises(UnsupportedFetchItem):
        FetchPlan(items("MODSEQ"), False)


# --- order and UID --------------------------------------------------------------------------


def test_uid_fetch_reports_uid_first_rfc3501_6_4_8() -> None:
    assert run("FLAGS", uid_command=True) == b"* 7 FETCH (UID 42 FLAGS ())\r\n"
    assert run("(RFC822.SIZE UID)", uid_command=True).startswith(b"* 7 FETCH (UID 42 RFC822.SIZE")
    assert run("(UID UID FLAGS)").count(b"UID") == 1


def test_cheap_items_come_before_envelope_and_sections_like_dovecot() -> None:
    got = run("(BODY.PEEK[TEXT] ENVELOPE INTERNALDATE FLAGS)")
    assert got.startswith(
        b'* 7 FETCH (INTERNALDATE "07-Jun-2023 07:00:00 +0000" FLAGS () BODY[TEXT]'
    )
    assert got.index(b"BODY[TEXT]") < got.index(b"ENVELOPE")


def test_macros_expand_rfc3501_6_4_5() -> None:
    rec = record(SIMPLE)
    size = rec.vsize
    assert run("FAST") == (
        b'* 7 FETCH (FLAGS () INTERNALDATE "07-Jun-2023 07:00:00 +0000" RFC822.SIZE %d)\r\n' % size
    )
    envelope = (
        b'ENVELOPE ("Wed, 7 Jun 2023 09:00:00 +0200" "lunch" (("Ann" NIL "ann" "example.com")) '
        b'(("Ann" NIL "ann" "example.com")) (("Ann" NIL "ann" "example.com")) '
        b'((NIL NIL "bob" "example.org")) NIL NIL NIL NIL)'
    )
    assert run("ALL").endswith(b" " + envelope + b")\r\n")
    body = b'BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 29 2)'
    assert run("FULL").endswith(envelope + b" " + body + b")\r\n")


# --- \Seen ------------------------------------------------------------------------------------


def test_implicit_seen_adds_flags_after_the_cheap_items_rfc3501_6_4_5() -> None:
    seen = frozenset({"\\Seen"})
    got = run("(BODY[TEXT] RFC822.SIZE)", flags=seen, seen_changed=True)
    assert re.match(rb"\* 7 FETCH \(RFC822.SIZE \d+ FLAGS \(\\Seen\) BODY\[TEXT\] \{", got)
    # Asked for FLAGS already: not twice.
    got = run("(FLAGS BODY[TEXT])", flags=seen, seen_changed=True)
    assert got.count(b"FLAGS") == 1
    # Nothing changed (already seen, or read-only): no FLAGS.
    assert b"FLAGS" not in run("BODY[TEXT]", flags=seen)


def test_flags_in_dovecot_order() -> None:
    flags = frozenset({"$Zed", "\\Seen", "\\Recent", "\\Answered", "\\Draft", "$Alpha"})
    assert encode_fetch_flags(flags) == b"(\\Answered \\Seen \\Draft \\Recent $Alpha $Zed)"
    assert encode_fetch_flags(["\\Deleted", "\\Flagged"]) == b"(\\Flagged \\Deleted)"
    assert encode_fetch_flags(frozenset()) == b"()"


def test_internaldate_in_the_server_zone_rfc3501_9(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    assert format_internaldate_local(1686121200.0) == b'"07-Jun-2023 03:00:00 -0400"'
    assert format_internaldate_local(1700000000.0) == b'"14-Nov-2023 17:13:20 -0500"'
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    assert format_internaldate_local(0.0) == b'"01-Jan-1970 05:30:00 +0530"'


def test_internaldate_is_the_same_instant_as_format_internaldate_rfc3501_9() -> None:
    for when in (0.0, 1686121200.0, 951782400.0, 1709251199.0, 4102444800.0):
        ours = format_internaldate_local(when)
        # Same text but for the day's padding (Dovecot pads with 0, not a space).
        assert re.sub(rb'^"0', b'" ', ours) == format_internaldate(when)
    assert format_internaldate_local(1686121200.0) == b'"07-Jun-2023 07:00:00 +0000"'


# --- sections ---------------------------------------------------------------------------------


def test_sections_rfc3501_6_4_5() -> None:
    crlf = SIMPLE.replace(b"\n", b"\r\n")
    header, text = crlf.split(b"\r\n\r\n", 1)
    assert run("BODY.PEEK[]") == b"* 7 FETCH (BODY[] {%d}\r\n%s)\r\n" % (len(crlf), crlf)
    assert run("RFC822.HEADER") == b"* 7 FETCH (RFC822.HEADER {%d}\r\n%s\r\n\r\n)\r\n" % (
        len(header) + 4,
        header,
    )
    assert run("BODY.PEEK[TEXT]") == b"* 7 FETCH (BODY[TEXT] {%d}\r\n%s)\r\n" % (len(text), text)
    assert run("BODY.PEEK[1]") == b"* 7 FETCH (BODY[1] {%d}\r\n%s)\r\n" % (len(text), text)
    assert run("BODY.PEEK[HEADER.FIELDS (subject to)]") == (
        b"* 7 FETCH (BODY[HEADER.FIELDS (SUBJECT TO)] {39}\r\n"
        b"To: bob@example.org\r\nSubject: lunch\r\n\r\n)\r\n"
    )


def test_missing_section_is_an_empty_literal_like_dovecot() -> None:
    assert run("BODY.PEEK[3.1]") == b"* 7 FETCH (BODY[3.1] {0}\r\n)\r\n"
    assert run("BODY.PEEK[1.HEADER]") == b"* 7 FETCH (BODY[1.HEADER] {0}\r\n)\r\n"


@pytest.mark.parametrize("partial", [(0, 10), (5, 3), (100, 5000), (100000, 5)])
def test_partial_echoes_the_origin_rfc3501_7_4_2(partial: tuple[int, int]) -> None:
    crlf = SIMPLE.replace(b"\n", b"\r\n")
    origin, length = partial
    got = run(f"BODY.PEEK[]<{origin}.{length}>")
    want = crlf[origin : origin + length]
    assert got == b"* 7 FETCH (BODY[]<%d> {%d}\r\n%s)\r\n" % (origin, len(want), want)


def test_large_section_streams_in_bounded_chunks() -> None:
    plan = FetchPlan(items("(UID BODY.PEEK[1] BODY.PEEK[2] FLAGS)"), uid_command=True)
    rec = record(LARGE)
    info = parse_message(LARGE)
    parts = plan.response(1, rec, frozenset(), info, lambda: io.BytesIO(LARGE))
    streams = [p for p in parts if isinstance(p, BodyStream)]
    assert len(streams) == 1  # BODY[2] is small and inlined
    assert isinstance(parts[0], bytes) and parts[0].endswith(b"BODY[1] {%d}\r\n" % streams[0].size)
    chunks = list(streams[0].chunks(io.BytesIO(LARGE), chunk_size=4096))
    assert all(len(c) <= 4096 for c in chunks) and len(chunks) > 10
    body = b"".join(chunks)
    # RFC 2046 §5.1.1: the line break before the boundary belongs to the boundary.
    assert body == b"\r\n".join(b"row %06d" % i for i in range(20000))
    assert len(body) == streams[0].size
    tail = parts[-1]
    assert tail == b" BODY[2] {10}\r\nsmall tail)\r\n"


def test_stream_reads_the_file_piece_by_piece() -> None:
    class CountingFile(io.BytesIO):
        biggest = 0

        def read(self, size: int | None = -1) -> bytes:
            got = super().read(size)
            CountingFile.biggest = max(CountingFile.biggest, len(got))
            return got

    stream = BodyStream(0, len(LARGE), 0, len(LARGE) + LARGE.count(b"\n"))
    total = sum(len(c) for c in stream.chunks(CountingFile(LARGE), chunk_size=8192))
    assert total == stream.size
    assert CountingFile.biggest <= 8192


def test_stream_keeps_its_promised_size_when_the_file_shrank() -> None:
    stream = BodyStream(0, 100, 0, 120)
    out = b"".join(stream.chunks(io.BytesIO(b"short\n")))
    assert len(out) == 120 and out.startswith(b"short\r\n")


def test_every_literal_size_matches_its_octets() -> None:
    text = (
        "(BODY.PEEK[] BODY.PEEK[1]<3.9000> BODY.PEEK[2.MIME] BODY.PEEK[TEXT]<100.100> "
        "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)] RFC822.SIZE ENVELOPE BODYSTRUCTURE)"
    )
    assert literals_consistent(run(text, LARGE))
    assert literals_consistent(run(text, SIMPLE))


def test_message_gone_reaches_the_session_rfc2180_4_1() -> None:
    plan = FetchPlan(items("BODY.PEEK[TEXT]"), False)

    def gone() -> io.BytesIO:
        raise MessageGone("message UID 42 has been expunged")

    with pytest.raises(MessageGone):
        plan.response(1, record(SIMPLE), frozenset(), parse_message(SIMPLE), gone)


def test_info_is_required_when_needed() -> None:
    plan = FetchPlan(items("ENVELOPE"), False)
    with pytest.raises(ValueError):
        plan.response(1, record(SIMPLE), frozenset(), None)


def test_envelope_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_data, "ENVELOPE_CACHE_SIZE", 3)
    fetch_data.clear_envelope_cache()
    plan = FetchPlan(items("ENVELOPE"), False)
    info = parse_message(SIMPLE)
    for uid in range(10):
        plan.response(uid + 1, record(SIMPLE, uid=uid), frozenset(), info)
    assert len(fetch_data._ENVELOPES) == 3
    fetch_data.clear_envelope_cache()


_HEADER_ITEMS = (
    "(RFC822.HEADER BODY.PEEK[HEADER]<5.20> BODY.PEEK[HEADER.FIELDS (FROM SUBJECT X-Z)] "
    "BODY.PEEK[HEADER.FIELDS.NOT (FROM)]<2.30> BODY.PEEK[HEADER.FIELDS (NOPE)])"
)

_HEADER_EDGES = {
    "empty header": b"\nbody\n",
    "empty header, CRLF": b"\r\nbody\r\n",
    "no empty line": b"From: a@b\nSubject: all header\n",
    "CRLF stored": b"From: a@b\r\nSubject: s\r\n\r\nbody\r\n",
    "blank line of CR LF mixed": b"From: a@b\n\r\nbody\n",
    "long header": b"X-Long: " + b"y" * 70000 + b"\nFrom: a@b\n\nbody\n",
    "empty": b"",
}


@pytest.mark.parametrize(
    "data",
    [
        *(
            p.read_bytes()
            for p in sorted((Path(__file__).parent.parent / "fixtures" / "mime").glob("*.eml"))
        ),
        *_HEADER_EDGES.values(),
    ],
    ids=[
        *(
            p.name
            for p in sorted((Path(__file__).parent.parent / "fixtures" / "mime").glob("*.eml"))
        ),
        *_HEADER_EDGES,
    ],
)
def test_top_header_sections_without_a_parse_are_the_same_octets_rfc3501_6_4_5(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = FetchPlan(items(_HEADER_ITEMS), False)
    assert not plan.needs_info
    for limit in (0, 1 << 30):  # streamed and inlined
        monkeypatch.setattr(fetch_data, "INLINE_LIMIT", limit)
        answers = []
        for info in (parse_message(data), None):
            parts = plan.response(7, record(data), frozenset(), info, lambda: io.BytesIO(data))
            answers.append(
                b"".join(
                    b"".join(p.chunks(io.BytesIO(data))) if isinstance(p, BodyStream) else p
                    for p in parts
                )
            )
        assert answers[0] == answers[1]
        assert literals_consistent(answers[1])


_SECTIONS_ITEM = (
    "(BODY.PEEK[] BODY.PEEK[TEXT]<3.500> BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2]<0.70000> "
    "BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[HEADER] RFC822.TEXT)"
)


@pytest.mark.parametrize(
    "sample",
    sorted(p.name for p in (Path(__file__).parent.parent / "fixtures" / "mime").glob("*.eml")),
)
def test_streamed_and_inlined_sections_are_the_same_octets(
    sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (Path(__file__).parent.parent / "fixtures" / "mime" / sample).read_bytes()
    monkeypatch.setattr(fetch_data, "INLINE_LIMIT", 1 << 30)
    inline = run(_SECTIONS_ITEM, data)
    monkeypatch.setattr(fetch_data, "INLINE_LIMIT", 0)
    plan = FetchPlan(items(_SECTIONS_ITEM), False)
    parts = plan.response(
        7, record(data), frozenset(), parse_message(data), lambda: io.BytesIO(data)
    )
    assert any(isinstance(p, BodyStream) for p in parts)
    streamed = run(_SECTIONS_ITEM, data)
    assert streamed == inline
    assert literals_consistent(inline)
