"""FETCH items, sections and partials (RFC 3501 §6.4.5, §9 fetch-att / section)."""

from __future__ import annotations

import pytest

from mailaccess.imap import commands as c
from mailaccess.imap.fetch import FetchBody, FetchItem, Section
from mailaccess.imap.lexer import ParseError
from tests.imap.test_parser import bad, parse


def items(data: bytes) -> tuple[object, ...]:
    cmd = parse(b"a FETCH 1 " + data + b"\r\n")
    assert isinstance(cmd, c.Fetch)
    return cmd.attributes


def test_brief_example_uid_fetch_rfc3501_6_4_5() -> None:
    cmd = parse(b"a1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)\r\n")
    assert isinstance(cmd, c.Fetch)
    assert cmd.uid
    assert bytes(cmd.sequence_set) == b"1:*"
    assert cmd.attributes == (
        FetchItem("FLAGS"),
        FetchBody(Section((), "HEADER.FIELDS", ("FROM", "TO")), peek=True, partial=(0, 100)),
    )


@pytest.mark.parametrize(
    "name",
    [
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
    ],
)
def test_every_simple_item_rfc3501_6_4_5(name: str) -> None:
    assert items(name.encode()) == (FetchItem(name),)
    assert items(name.lower().encode()) == (FetchItem(name),)
    assert items(b"(" + name.encode() + b")") == (FetchItem(name),)


def test_macros_expand_rfc3501_6_4_5() -> None:
    all_ = ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")
    assert items(b"ALL") == tuple(FetchItem(n) for n in all_)
    assert items(b"FAST") == tuple(FetchItem(n) for n in all_[:3])
    assert items(b"full") == tuple(FetchItem(n) for n in (*all_, "BODY"))


def test_macro_inside_list_is_rejected_rfc3501_9() -> None:
    assert "ALL" in bad(b"a FETCH 1 (ALL)\r\n").reason
    assert "FAST" in bad(b"a FETCH 1 (FLAGS FAST)\r\n").reason


def test_body_whole_message_rfc3501_6_4_5() -> None:
    assert items(b"BODY[]") == (FetchBody(Section()),)
    assert items(b"BODY.PEEK[]") == (FetchBody(Section(), peek=True),)


@pytest.mark.parametrize(
    ("spec", "section"),
    [
        (b"HEADER", Section((), "HEADER")),
        (b"TEXT", Section((), "TEXT")),
        (b"1", Section((1,))),
        (b"1.2.3", Section((1, 2, 3))),
        (b"3.HEADER", Section((3,), "HEADER")),
        (b"4.1.MIME", Section((4, 1), "MIME")),
        (b"4.2.2.TEXT", Section((4, 2, 2), "TEXT")),
        (b"header.fields (date from)", Section((), "HEADER.FIELDS", ("DATE", "FROM"))),
        (b"HEADER.FIELDS.NOT (X-Priority)", Section((), "HEADER.FIELDS.NOT", ("X-PRIORITY",))),
        (b'2.HEADER.FIELDS ("Subject")', Section((2,), "HEADER.FIELDS", ("SUBJECT",))),
    ],
)
def test_sections_rfc3501_6_4_5(spec: bytes, section: Section) -> None:
    assert items(b"BODY[" + spec + b"]") == (FetchBody(section),)


def test_partial_rfc3501_6_4_5() -> None:
    assert items(b"BODY[]<0.2048>") == (FetchBody(Section(), partial=(0, 2048)),)
    assert items(b"BODY.PEEK[TEXT]<512.1>") == (
        FetchBody(Section((), "TEXT"), peek=True, partial=(512, 1)),
    )


@pytest.mark.parametrize(
    "spec",
    [
        b"BODY[",
        b"BODY[HEADER",
        b"BODY[MIME]",  # MIME needs a part number
        b"BODY[0]",  # part numbers are nz-number
        b"BODY[1.]",
        b"BODY[FOO]",
        b"BODY[HEADER.FIELDS]",
        b"BODY[HEADER.FIELDS ()]",
        b"BODY[]<>",
        b"BODY[]<1>",
        b"BODY[]<1.0>",  # a zero-length partial is not an nz-number
        b"BODY[]<1.2",
        b"BODY.PEEK",
        b"RFC822[]",
        b"FOO",
        b"(FLAGS",
        b"(FLAGS  UID)",
        b"()",
        b"(FLAGS)(UID)",
    ],
)
def test_invalid_items_rfc3501_9(spec: bytes) -> None:
    err = bad(b"a FETCH 1 " + spec + b"\r\n")
    assert err.tag == "a"
    assert err.reason


def test_binary_sections_rfc3516_4_2() -> None:
    assert items(b"(BINARY[1] BINARY.PEEK[2.1]<0.10> BINARY.SIZE[3])") == (
        FetchBody(Section((1,)), binary=True),
        FetchBody(Section((2, 1)), peek=True, partial=(0, 10), binary=True),
        FetchBody(Section((3,)), binary=True, size_only=True),
    )
    bad(b"a FETCH 1 BINARY[HEADER]\r\n")


def test_modseq_item_rfc7162_3_1_4_1() -> None:
    assert items(b"(FLAGS MODSEQ)") == (FetchItem("FLAGS"), FetchItem("MODSEQ"))


def test_response_name_drops_peek_and_length_rfc3501_7_4_2() -> None:
    (body,) = items(b"BODY.PEEK[1.HEADER.FIELDS (From to)]<0.100>")
    assert isinstance(body, FetchBody)
    assert body.response_name() == b"BODY[1.HEADER.FIELDS (FROM TO)]<0>"
    (whole,) = items(b"BODY[]")
    assert isinstance(whole, FetchBody)
    assert whole.response_name() == b"BODY[]"


def test_fetch_error_is_parse_error_type() -> None:
    with pytest.raises(ParseError):
        parse(b"a FETCH 1 BODY[\r\n")


def test_header_field_names_are_any_astring_rfc3501_9() -> None:
    # Like Dovecot: accepted, upper-cased, echoed quoted when not an atom.
    (body,) = items(b'BODY.PEEK[HEADER.FIELDS (a:b "x y" {3}\r\nfoo)]')
    assert isinstance(body, FetchBody)
    assert body.section.fields == ("A:B", "X Y", "FOO")
    assert body.response_name() == b'BODY[HEADER.FIELDS (A:B "X Y" FOO)]'
