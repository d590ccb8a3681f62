"""SEARCH programs (RFC 3501 §6.4.4, §9 search-key)."""

from __future__ import annotations

import datetime

import pytest

from mailaccess.imap import commands as c
from mailaccess.imap.search import (
    All,
    And,
    Date,
    Flag,
    Header,
    Modseq,
    Not,
    Or,
    SearchKey,
    Sequence,
    Size,
    Text,
)
from mailaccess.imap.sequence import SequenceSet
from tests.imap.test_parser import bad, parse


def program(data: bytes) -> tuple[SearchKey, ...]:
    cmd = parse(b"a SEARCH " + data + b"\r\n")
    assert isinstance(cmd, c.Search)
    return cmd.program.keys


def one(data: bytes) -> SearchKey:
    (key,) = program(data)
    return key


@pytest.mark.parametrize(
    ("word", "key"),
    [
        ("ALL", All()),
        ("ANSWERED", Flag("\\Answered")),
        ("DELETED", Flag("\\Deleted")),
        ("DRAFT", Flag("\\Draft")),
        ("FLAGGED", Flag("\\Flagged")),
        ("RECENT", Flag("\\Recent")),
        ("SEEN", Flag("\\Seen")),
        ("UNANSWERED", Not(Flag("\\Answered"))),
        ("UNDELETED", Not(Flag("\\Deleted"))),
        ("UNDRAFT", Not(Flag("\\Draft"))),
        ("UNFLAGGED", Not(Flag("\\Flagged"))),
        ("UNSEEN", Not(Flag("\\Seen"))),
        ("OLD", Not(Flag("\\Recent"))),
        ("NEW", And((Flag("\\Recent"), Not(Flag("\\Seen"))))),
    ],
)
def test_keys_without_arguments_rfc3501_6_4_4(word: str, key: SearchKey) -> None:
    assert one(word.encode()) == key
    assert one(word.lower().encode()) == key


@pytest.mark.parametrize("field", ["BCC", "CC", "FROM", "SUBJECT", "TO"])
def test_header_shortcuts_rfc3501_6_4_4(field: str) -> None:
    assert one(field.encode() + b' "Smith, J"') == Header(field, "Smith, J")
    assert one(field.encode() + b" smith") == Header(field, "smith")


def test_header_key_rfc3501_6_4_4() -> None:
    assert one(b'HEADER x-mailer ""') == Header("X-MAILER", "")
    assert one(b"HEADER Message-ID {5}\r\n<a@b>") == Header("MESSAGE-ID", "<a@b>")
    # Any astring is a header-fld-name (RFC 3501 §9); this one just never matches.
    assert one(b'HEADER "bad:name" x') == Header("BAD:NAME", "x")


def test_body_and_text_rfc3501_6_4_4() -> None:
    assert one(b"BODY hello") == Text("BODY", "hello")
    assert one(b'TEXT "two words"') == Text("TEXT", "two words")


@pytest.mark.parametrize(
    ("word", "op", "sent"),
    [
        ("BEFORE", "BEFORE", False),
        ("ON", "ON", False),
        ("SINCE", "SINCE", False),
        ("SENTBEFORE", "BEFORE", True),
        ("SENTON", "ON", True),
        ("SENTSINCE", "SINCE", True),
    ],
)
def test_date_keys_rfc3501_6_4_4(word: str, op: str, sent: bool) -> None:
    day = datetime.date(1994, 2, 1)
    assert one(word.encode() + b" 1-Feb-1994") == Date(op, day, sent)
    assert one(word.encode() + b' "01-feb-1994"') == Date(op, day, sent)


@pytest.mark.parametrize(
    "date",
    [
        b"1-Feb-94",
        b"001-Feb-1994",
        b"1-Feb-19940",
        b"31-Feb-1994",
        b"1-Foo-1994",
        b"1 Feb 1994",
        b'"1-Feb-1994',
        b"x",
    ],
)
def test_invalid_dates_rfc3501_9(date: bytes) -> None:
    assert bad(b"a SEARCH SINCE " + date + b"\r\n").tag == "a"


def test_keyword_size_keys_rfc3501_6_4_4() -> None:
    assert one(b"KEYWORD $Forwarded") == Flag("$Forwarded")
    assert one(b"UNKEYWORD $Junk") == Not(Flag("$Junk"))
    assert one(b"LARGER 1024") == Size(True, 1024)
    assert one(b"SMALLER 10") == Size(False, 10)
    bad(b"a SEARCH LARGER -1\r\n")
    bad(b"a SEARCH LARGER 99999999999\r\n")


def test_sequence_sets_as_keys_rfc3501_6_4_4() -> None:
    assert one(b"2:4,*") == Sequence(SequenceSet.parse("2:4,*"))
    assert one(b"UID 1:100") == Sequence(SequenceSet.parse("1:100"), uid=True)
    assert one(b"$") == Sequence(SequenceSet(saved=True))  # RFC 5182


def test_not_or_and_nesting_rfc3501_6_4_4() -> None:
    assert program(b"FLAGGED SINCE 1-Feb-1994 NOT FROM Smith") == (
        Flag("\\Flagged"),
        Date("SINCE", datetime.date(1994, 2, 1)),
        Not(Header("FROM", "Smith")),
    )
    assert one(b"OR (SEEN FLAGGED) NOT (DELETED)") == Or(
        And((Flag("\\Seen"), Flag("\\Flagged"))), Not(Flag("\\Deleted"))
    )
    assert one(b"OR OR SEEN DRAFT 1:3") == Or(
        Or(Flag("\\Seen"), Flag("\\Draft")), Sequence(SequenceSet.parse("1:3"))
    )


def test_deep_nesting_is_refused_not_a_crash() -> None:
    deep = b"(" * 1000 + b"ALL" + b")" * 1000
    assert "deep" in bad(b"a SEARCH " + deep + b"\r\n").reason
    nots = b"NOT " * 1000 + b"ALL"
    assert "deep" in bad(b"a SEARCH " + nots + b"\r\n").reason


def test_charset_rfc3501_6_4_4() -> None:
    cmd = parse(b"a SEARCH CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa4\xc3\xb6\r\n")
    assert cmd == c.Search("a", False, And((Header("SUBJECT", "äö"),)), "UTF-8")


def test_unknown_charset_parses_for_badcharset_rfc3501_6_4_4() -> None:
    # The answer must be NO [BADCHARSET], not BAD: the session needs the command.
    cmd = parse(b"a SEARCH CHARSET KOI8-R SUBJECT x\r\n")
    assert isinstance(cmd, c.Search)
    assert cmd.charset == "KOI8-R"


def test_modseq_key_rfc7162_3_1_5() -> None:
    assert one(b"MODSEQ 620162338") == Modseq(620162338)
    assert one(b'MODSEQ "/flags/\\\\draft" all 620162338') == Modseq(
        620162338, "/flags/\\draft", "ALL"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"FOO",
        b"FROM",
        b"OR SEEN",
        b"NOT",
        b"(SEEN",
        b"()",
        b"SEEN)",
        b"UID",
        b"UID x",
        b"KEYWORD",
        b"KEYWORD \\Seen",
        b"CHARSET",
        b"RETURN (MIN",
    ],
)
def test_invalid_programs_rfc3501_9(data: bytes) -> None:
    assert bad(b"a SEARCH " + data + b"\r\n").tag == "a"


def test_uid_search_rfc3501_6_4_8() -> None:
    cmd = parse(b"a UID SEARCH 1:* UNDELETED\r\n")
    assert isinstance(cmd, c.Search)
    assert cmd.uid
