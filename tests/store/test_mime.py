"""parse_message and its helpers: offsets, CRLF view, header fields, decoding.

The byte-exact comparison with Dovecot is in test_mime_dovecot.py; these
tests pin the parts of the API the IMAP and SEARCH code build on.
"""

from __future__ import annotations

import base64
import datetime
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailaccess.store.mime import (
    MAX_DEPTH,
    Envelope,
    MessageInfo,
    Part,
    crlf_size,
    decoded_header_values,
    decoded_text,
    find_section,
    header_fields,
    iter_crlf,
    iter_crlf_partial,
    iter_decoded_text,
    parse_message,
    read_range,
    read_top_header,
    section_range,
    to_crlf,
)
from mailaccess.store.mime_header import (
    decode_words,
    humanize,
    parse_addresses,
    parse_content_type,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mime"


def sample(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# --- CRLF view --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "crlf"),
    [
        (b"", b""),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\rb\n", b"a\rb\r\n"),  # bare CR kept, as Dovecot's istream-crlf
        (b"\r\r\n\n", b"\r\r\n\r\n"),
        (b"\n\n\r", b"\r\n\r\n\r"),
    ],
)
def test_to_crlf_rfc3501_2_2(raw: bytes, crlf: bytes) -> None:
    assert to_crlf(raw) == crlf
    assert crlf_size(raw) == len(crlf)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 65536])
def test_iter_crlf_never_doubles_a_split_crlf(chunk_size: int) -> None:
    raw = b"x\r\ny\nz\r\r\n\n" * 5
    f = io.BytesIO(b"HEAD" + raw + b"TAIL")
    got = b"".join(iter_crlf(f, 4, 4 + len(raw), chunk_size))
    assert got == to_crlf(raw)


def test_iter_crlf_replaces_nul_rfc3501_4_3() -> None:
    f = io.BytesIO(b"a\0b\n")
    assert b"".join(iter_crlf(f, 0, 4)) == b"a\x80b\r\n"
    assert b"".join(iter_crlf(f, 0, 4, replace_nul=False)) == b"a\0b\r\n"


@pytest.mark.parametrize(("offset", "length"), [(0, 0), (0, 5), (3, 4), (5, None), (50, 10)])
def test_iter_crlf_partial_rfc3501_6_4_5(offset: int, length: int | None) -> None:
    raw = b"ab\ncd\r\nef\ngh\n"
    view = to_crlf(raw)
    want = view[offset:] if length is None else view[offset : offset + length]
    for chunk_size in (1, 2, 64):
        got = b"".join(iter_crlf_partial(io.BytesIO(raw), 0, len(raw), offset, length, chunk_size))
        assert got == want


def test_read_range() -> None:
    assert read_range(io.BytesIO(b"0123456789"), 2, 5) == b"234"
    assert read_range(io.BytesIO(b"0123456789"), 5, 2) == b""


# --- offsets and sizes ----------------------------------------------------------------


def _walk(part: Part) -> list[Part]:
    out = [part]
    for child in part.children:
        out += _walk(child)
    if part.message is not None:
        out += _walk(part.message)
    return out


def check_offsets(data: bytes, info: MessageInfo) -> None:
    """Every range lies within the data and within its parent; sizes match."""
    assert info.size == len(data)
    assert info.vsize == len(to_crlf(data))

    def visit(part: Part, lo: int, hi: int) -> None:
        assert lo <= part.header_start <= part.body_start <= part.body_end <= hi
        assert part.header_size == crlf_size(data, part.header_start, part.body_start)
        assert part.size == crlf_size(data, part.body_start, part.body_end)
        assert part.lines == data.count(b"\n", part.body_start, part.body_end)
        prev = part.body_start
        for child in part.children:
            assert child.header_start >= prev
            visit(child, part.body_start, part.body_end)
            prev = child.body_end
        if part.message is not None:
            visit(part.message, part.body_start, part.body_end)

    visit(info.body, 0, len(data))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_offsets_within_data(name: str) -> None:
    data = sample(name)
    check_offsets(data, parse_message(data))


def test_crlf_stored_message_parses_like_lf() -> None:
    lf = sample("nested_rfc822.eml")
    crlf = to_crlf(lf)
    a, b = parse_message(lf), parse_message(crlf)
    assert a.envelope == b.envelope
    assert a.vsize == b.vsize == b.size
    for pa, pb in zip(_walk(a.body), _walk(b.body), strict=True):
        assert (pa.type, pa.subtype, pa.size, pa.lines, pa.header_size) == (
            pb.type,
            pb.subtype,
            pb.size,
            pb.lines,
            pb.header_size,
        )
        assert crlf[pb.body_start : pb.body_end] == to_crlf(lf[pa.body_start : pa.body_end])


def test_mixed_attachment_offsets_point_at_the_base64() -> None:
    data = sample("mixed_attachment.eml")
    info = parse_message(data)
    pdf = info.body.children[1]
    body = data[pdf.body_start : pdf.body_end]
    assert body.startswith(b"JVBERi0xLjQK") and body.endswith(
        b"CnN0cmVhbQp4nDPQM1Qo5ypUMFAw0DMwslAwtTTVMzI2UbAwMdSzUCjnKlQwAEJDBQMD"
    )
    assert data[pdf.header_start :].startswith(b"Content-Type: application/pdf")
    assert base64.b64decode(body).startswith(b"%PDF-1.4")


def test_header_size_and_sent_date_rfc5322_3_3() -> None:
    info = parse_message(sample("simple.eml"))
    assert info.header_size == 305  # Dovecot's BODY[HEADER] literal size
    assert info.date is not None and info.date_offset == -8 * 3600
    sent = datetime.datetime.fromtimestamp(
        info.date, datetime.timezone(datetime.timedelta(seconds=info.date_offset))
    )
    assert (sent.year, sent.month, sent.day, sent.hour, sent.minute) == (1994, 2, 7, 21, 52)


@pytest.mark.parametrize("name", ["bad_encoding.eml", "missing_headers.eml"])
def test_unparseable_or_missing_date_is_none(name: str) -> None:
    info = parse_message(sample(name))
    assert info.date is None and info.date_offset is None


# --- section numbers (RFC 3501 §6.4.5) ---------------------------------------------------


def test_find_section_rfc3501_6_4_5_multipart() -> None:
    info = parse_message(sample("nested_rfc822.eml"))
    root = info.body
    assert find_section(info, ()) is root
    assert find_section(info, (1,)) is root.children[0]
    assert find_section(info, (1, 1)) is root.children[0]  # a leaf's part 1 is itself
    assert find_section(info, (1, 1, 1)) is None
    msg = root.children[1]
    assert msg.message is not None
    assert find_section(info, (2,)) is msg
    assert find_section(info, (2, 1)) is msg.message.children[0]
    assert find_section(info, (2, 2)) is msg.message.children[1]
    assert find_section(info, (2, 3)) is None
    assert find_section(info, (3,)) is None
    assert find_section(info, (0,)) is None


def test_find_section_rfc3501_6_4_5_single_part() -> None:
    info = parse_message(sample("simple.eml"))
    assert find_section(info, (1,)) is info.body
    assert find_section(info, (1, 1)) is None
    assert find_section(info, (2,)) is None


def test_section_range_header_text_of_rfc822_part_rfc3501_6_4_5() -> None:
    data = sample("nested_rfc822.eml")
    info = parse_message(data)
    header = section_range(info, (2,), "HEADER")
    text = section_range(info, (2,), "TEXT")
    assert header is not None and text is not None
    assert data[header.start : header.end].startswith(b"From: Original Sender")
    assert data[header.start : header.end].endswith(b"boundary=inner\n\n")
    assert data[text.start : text.end].startswith(b"--inner\n")
    assert section_range(info, (1,), "HEADER") is None  # text/plain has no HEADER
    assert section_range(info, (), "MIME") is None
    assert section_range(info, (9,), "") is None
    fields = section_range(info, (), "HEADER.FIELDS")
    assert fields == section_range(info, (), "HEADER")


# --- HEADER.FIELDS ------------------------------------------------------------------------


HEADER = b"Subject: one\n two\nFROM: a@b\nX-Other: x\nsubject: again\n\n"


def test_header_fields_rfc3501_6_4_5() -> None:
    assert header_fields(HEADER, ["subject"]) == (
        b"Subject: one\r\n two\r\nsubject: again\r\n\r\n"
    )
    assert header_fields(HEADER, [b"From", "x-other"]) == b"FROM: a@b\r\nX-Other: x\r\n\r\n"
    assert header_fields(HEADER, ["nothing"]) == b"\r\n"


def test_header_fields_not_rfc3501_6_4_5() -> None:
    assert header_fields(HEADER, ["SUBJECT", "x-other"], exclude=True) == b"FROM: a@b\r\n\r\n"


def test_header_fields_without_separator_has_no_blank_line() -> None:
    assert header_fields(b"Subject: x\nFrom: y", ["from"]) == b"From: y\r\n"


# --- decoding for SEARCH -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"=?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?=", "Jürgen Müller"),
        (b"=?ISO-8859-1?Q?Andr=E9?= Pirard", "André Pirard"),
        (b"=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047 §6.2: space between words dropped
        (b"=?utf-8?q?a?= x =?utf-8?q?b?=", "a x b"),
        (b"=?x-unknown?Q?abc?=", "abc"),  # unknown charset degraded, not raised
        (b"=?utf-8?B?not*base64!!?=", "=?utf-8?B?not*base64!!?="),
        (b"=?utf-8?B?w6k?=", "é"),  # missing padding
        (b"plain \xc3\xa9", "plain é"),  # 8-bit UTF-8 header
        (b"latin \xe9", "latin é"),  # 8-bit non-UTF-8 falls back to Latin-1
        (b"=?utf-8?q?caf=c3=a9_cr=C3=A8me?=", "café crème"),  # RFC 2047 §4.2: "_" is a space
        (b"=?utf-8?q?50=_off=3D=?=", "50= off=="),  # a stray "=" is kept as sent
        (b"=?utf-8?q?a==41?=", "a=A"),
    ],
)
def test_decode_words_rfc2047(raw: bytes, text: str) -> None:
    assert decode_words(raw) == text


def test_decoded_header_values_from_header_bytes() -> None:
    data = sample("encoded_words.eml")
    header = data[: parse_message(data).body.body_start]
    # RFC 2047 §6.2: the folding white space between the last two encoded
    # words goes too.
    assert decoded_header_values(header, "Subject") == ["Café au lait and crèmeabc"]
    assert decoded_header_values(header, "content-type") == ["text/plain; charset=utf-8"]
    assert decoded_header_values(header, "x-missing") == []


def test_decoded_header_values_from_info() -> None:
    info = parse_message(sample("encoded_words.eml"))
    assert decoded_header_values(info, "subject") == ["Café au lait and crèmeabc"]
    assert decoded_header_values(info, "FROM") == ["Jürgen Müller <juergen@example.de>"]
    assert decoded_header_values(info, "cc") == []
    groups = parse_message(sample("groups.eml"))
    assert decoded_header_values(groups, "to") == [
        "A Group:, Ed Jones <c@a.test>, joe@where.test, John <jdoe@one.test>"
    ]
    with pytest.raises(KeyError):
        decoded_header_values(info, "x-mailer")


def test_decoded_text_qp_and_charset_rfc2045_6_7() -> None:
    data = sample("nested_rfc822.eml")
    text = decoded_text(data, parse_message(data))
    assert "See the forwarded message below." in text
    assert "Grüße aus Berlin" in text  # quoted-printable, ISO-8859-1
    assert "<p>Gruesse</p>" in text


def test_decoded_text_base64_rfc2045_6_8() -> None:
    data = sample("encoded_words.eml")
    assert decoded_text(data, parse_message(data)) == "Hello Welt, grüße!\n"


def test_decoded_text_skips_attachments() -> None:
    data = sample("mixed_attachment.eml")
    assert decoded_text(data, parse_message(data)) == "Please find the report attached."


def test_decoded_text_survives_bad_encoding_and_charset() -> None:
    data = sample("bad_encoding.eml")
    assert isinstance(decoded_text(data, parse_message(data)), str)


def test_iter_decoded_text_streams_in_bounded_chunks() -> None:
    line = "Zürich ist schön und grün. " * 3
    payload = base64.encodebytes((line * 4000).encode("utf-8"))
    qp = ("caf=C3=A9 " * 20 + "=\n") * 3000
    data = (
        b"Content-Type: multipart/mixed; boundary=z\n\n--z\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        + payload
        + b"--z\nContent-Type: text/plain; charset=UTF-8\n"
        + b"Content-Transfer-Encoding: quoted-printable\n\n"
        + qp.encode()
        + b"\n--z--\n"
    )
    info = parse_message(data)
    chunks = list(iter_decoded_text(io.BytesIO(data), info, chunk_size=1000))
    assert max(len(c) for c in chunks) <= 1000
    text = "".join(chunks)
    assert text == line * 4000 + "café " * 20 * 3000
    limited = "".join(iter_decoded_text(io.BytesIO(data), info, max_bytes=100))
    assert len(limited) < 200


# --- addresses and parameters -------------------------------------------------------------


def test_parse_addresses_rfc5322_3_4() -> None:
    assert parse_addresses(b'"Doe, J." <j@x.example>, k@y.example') == [
        (b"Doe, J.", None, b"j", b"x.example"),
        (None, None, b"k", b"y.example"),
    ]
    assert parse_addresses(b"") == []
    assert parse_addresses(b"Team: a@b.c;") == [
        (None, None, b"Team", None),
        (None, None, b"a", b"b.c"),
        (None, None, None, None),
    ]
    # an unterminated group is closed
    assert parse_addresses(b"Team: a@b.c")[-1] == (None, None, None, None)


@pytest.mark.parametrize(
    ("value", "addresses"),
    [
        (b"x@y junk, z@w", [(None, None, b"x", b"y")]),  # junk ends the list
        (
            b"a@b, , c@d",
            [
                (None, None, b"a", b"b"),
                (None, None, b"MISSING_MAILBOX", b"MISSING_DOMAIN"),
                (None, None, b"c", b"d"),
            ],
        ),
        (b"a@b,", [(None, None, b"a", b"b")]),
        (b'"only a name"', [(b"only a name", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
        (b"u@h (Real Name)", [(b"Real Name", None, b"u", b"h")]),
        (b"(not a name) u@h", [(None, None, b"u", b"h")]),
        (b'"" <u@h>', [(None, None, b"u", b"h")]),
        (
            b"G: a@b; junk",
            [(None, None, b"G", None), (None, None, b"a", b"b"), (None, None, None, None)],
        ),
    ],
)
def test_parse_addresses_malformed_like_dovecot(value: bytes, addresses: list) -> None:
    assert parse_addresses(value) == addresses


@pytest.mark.parametrize(
    ("raw", "human"),
    [(b"  a \t\r\n  b  ", b"a b"), (b"x\0y", b"x\x80y"), (b"   ", b""), (b"plain", b"plain")],
)
def test_humanize_like_dovecot(raw: bytes, human: bytes) -> None:
    assert humanize(raw) == human


def test_parse_content_type_rfc2231_continuations() -> None:
    ctype = parse_content_type(b'text/plain; a*0="x "; a*1=y; b="q\\"uote"; c*0=1; c*2=3')
    # Joined after the plain ones; a gap in the numbering is not joined.
    params = ((b"b", b'q"uote'), (b"a", b"x y"), (b"c*0", b"1"), (b"c*2", b"3"))
    assert ctype == (b"text", b"plain", params)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (b"Text/Plain", (b"Text", b"Plain", ())),
        (b"text / html ; a=1", (b"text", b"html", ((b"a", b"1"),))),
        (b"garbage", (b"garbage", b"", ())),  # RFC 2045 §5.1 token without subtype
        (b"", (b"", b"", ())),
        (b"text/plain junk; a=1", (b"", b"", ())),
        (
            b"application/pdf; name=a/b.pdf; x=1",
            (b"application", b"pdf", ((b"name", b"a"), (b"x", b"1"))),
        ),
        (b'text/plain; name="unterminated', (b"text", b"plain", ())),
        (b"text/plain; junk; a=1", (b"text", b"plain", ())),
        (b'text/plain; a="x;y" b; c=2', (b"text", b"plain", ((b"a", b"x;y"), (b"c", b"2")))),
        (b"text/plain (comment); a=(c) 1", (b"text", b"plain", ((b"a", b"1"),))),
    ],
)
def test_parse_content_type_rfc2045_5_1(value: bytes, parsed: tuple[bytes, bytes, tuple]) -> None:
    assert parse_content_type(value) == parsed


# --- malformed and hostile input ----------------------------------------------------------


def test_absurd_nesting_is_capped() -> None:
    depth = MAX_DEPTH * 5
    head = b"".join(
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
        for i in range(depth)
    )
    data = b"Content-Type: multipart/mixed; boundary=b0\n\n" + head + b"x\n"
    info = parse_message(data)
    check_offsets(data, info)
    levels = 0
    part = info.body
    while part.children:
        part = part.children[0]
        levels += 1
    # The multipart at the cap is not parsed but still has the one (empty)
    # part BODYSTRUCTURE's grammar requires.
    assert levels == MAX_DEPTH + 1
    assert (part.type, part.size, part.header_size) == (b"text", 0, 0)


def test_absurd_rfc822_nesting_is_capped() -> None:
    data = b"Content-Type: message/rfc822\n\n" * (MAX_DEPTH * 3) + b"end\n"
    info = parse_message(data)
    check_offsets(data, info)
    part, levels = info.body, 0
    while part.message is not None and part.message.message is not None:
        part, levels = part.message, levels + 1
    # The message/rfc822 part at the cap is not parsed, but still has the
    # envelope and body BODYSTRUCTURE's grammar requires.
    assert levels == MAX_DEPTH
    assert part.envelope == Envelope()
    assert part.message is not None and part.message.size == 0


def test_many_parts_without_blank_lines_is_linear() -> None:
    # Each part's header runs into the next boundary: the header search must
    # stop there instead of scanning to the end of the message every time.
    data = b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\nX-A: 1\n" * 20000 + b"--b--\n"
    info = parse_message(data)
    assert len(info.body.children) == 20000
    check_offsets(data, info)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"\r\n\r\n",
        b"\0\0\0",
        b":",
        b"Content-Type: multipart/mixed; boundary=\n\n--\n--\n",
        b'Content-Type: multipart/mixed; boundary=""\n\n----\n',
        b"Content-Type: message/rfc822\n",
        b"Content-Type: /\nContent-Transfer-Encoding:\nContent-Disposition: ;;\n\nx",
        b'From: <<<>>> ,,, ;;; :::\nTo: (unclosed comment\nCc: "unclosed quote\n\n',
        b"Content-Type: text/plain; charset*0*=x; charset*1*=y; charset*=z\n\n",
        b"\xff\xfe\x00From: x\r\r\r\n\n",
    ],
)
def test_malformed_never_raises(data: bytes) -> None:
    check_offsets(data, parse_message(data))


MULTIPART_FOR_COMPACT = (
    b"From: a@example.org\nSubject: parts\n"
    b"Content-Type: multipart/alternative; boundary=x\n\n"
    b"--x\nContent-Type: text/plain\n\nplain\n"
    b"--x\nContent-Type: text/html\n\n<p>html</p>\n--x--\n"
)


def test_compact_info_equals_the_full_one_and_holds_no_part_objects() -> None:
    import gc

    full = parse_message(MULTIPART_FOR_COMPACT)
    compact = full.compact()
    assert not [o for o in gc.get_referents(compact) if isinstance(o, Part)]
    assert compact == full
    assert compact.body.children[1].subtype == b"html"
    assert compact.compact() == full  # a tree built again is compacted again


# --- the message's own header, read without a parse --------------------------------

_HEADERISH = st.lists(
    st.sampled_from(
        [
            b"a",
            b"X: y",
            b"\n",
            b"\r",
            b"\r\n",
            b"--b",
            b" ",
            b"Content-Type: multipart/mixed; boundary=b",
        ]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=1000)
@given(data=_HEADERISH, chunk_size=st.integers(1, 9))
def test_read_top_header_is_the_parsers_header_section_rfc5322_2_1(
    data: bytes, chunk_size: int
) -> None:
    # Whatever the octets and wherever the reads split them, the span is the
    # one FETCH BODY[HEADER] is served from after a full parse.
    rng = section_range(parse_message(data), (), "HEADER")
    assert rng is not None
    header = read_top_header(io.BytesIO(data), chunk_size)
    assert header == data[rng.start : rng.end]
    assert crlf_size(header) == rng.size
