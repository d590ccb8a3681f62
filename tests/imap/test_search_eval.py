"""SEARCH evaluation (RFC 3501 §6.4.4) on a small mailbox whose answers are worked out by hand.

Five messages, each built to make some keys true and others false; every
expected result below was read off the messages, not computed by the code
under test.  Programs are parsed with our parser, as the session would.
"""

from __future__ import annotations

import base64
import calendar
import io
import time
from collections.abc import Collection, Iterator
from typing import IO, Any, cast

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from mailaccess.imap import search_eval
from mailaccess.imap.lexer import Reader
from mailaccess.imap.search import read_search_program
from mailaccess.imap.search_eval import BadCharset, check_charset, evaluate
from mailaccess.store.mime import MessageInfo, parse_message
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


def stamp(y: int, mo: int, d: int, h: int = 12) -> float:
    return float(calendar.timegm((y, mo, d, h, 0, 0)))


M1 = b"""From: Alice Example <alice@example.com>
To: bob@example.org
Subject: Hello world
Date: Mon, 1 Jan 2024 10:00:00 +0000
Message-ID: <one@example.com>

The quick brown fox jumps.
"""

M2 = b"""From: =?iso-8859-1?q?J=F6rg?= <joerg@example.de>
To: bob@example.org
Cc: carol@example.com
Subject: =?utf-8?q?Caf=C3=A9_menu?=
Date: Tue, 2 Jan 2024 23:30:00 -0500
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Cr=C3=A8me br=C3=BBl=C3=A9e and coff=
ee for everyone
"""

M3 = b"""From: bob@example.org
To: alice@example.com
Bcc: dave@example.net
Subject: password reset
Date: Fri, 5 Jan 2024 08:00:00 +0100
X-Mailer: FooMail 2.0
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=b1

--b1
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: base64

WW91ciBTRUNSRVQgY29kZSBpcyA0MjQy

--b1
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

Zm94IGluIGFuIGF0dGFjaG1lbnQ=

--b1--
"""

M4 = b"""From: carol@example.com
To: bob@example.org
Subject: Re: Hello World
MIME-Version: 1.0
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: 8bit

Gr\xf6\xdfe Stra\xdfe, caf\xe9 au lait
"""

M5 = (
    b"""From: erin@example.com
To: bob@example.org
Subject: Fwd: nested
Date: Sat, 2 Mar 2024 00:30:00 +0900
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: text/plain

see attached
--outer
Content-Type: message/rfc822

From: inner@example.com
Subject: inner subject

the nested needle is here
--outer--
"""
    + b"X" * 2000
)

# (uid, data, flags, INTERNALDATE)
MAILBOX = [
    (3, M1, {"\\Seen"}, stamp(2024, 1, 1)),
    (5, M2, {"\\Answered", "\\Flagged", "\\Seen"}, stamp(2024, 1, 3, 0)),
    (8, M3, {"\\Deleted", "\\Draft", "$Label1"}, stamp(2024, 1, 5)),
    (13, M4, {"\\Recent"}, stamp(2024, 2, 10, 23)),
    (21, M5, {"\\Recent", "\\Seen"}, stamp(2024, 3, 1, 0)),
]


class FakeContext:
    """The session side of evaluate(), over MAILBOX."""

    def __init__(self, saved: Collection[int] | None = None) -> None:
        self.data = {uid: data for uid, data, _, _ in MAILBOX}
        self.infos = {uid: parse_message(data) for uid, data in self.data.items()}
        self.highest_seq = len(MAILBOX)
        self.highest_uid = MAILBOX[-1][0]
        self.saved = saved
        self.gone: set[int] = set()
        self.info_calls: list[int] = []
        self.opened: list[int] = []

    def message_info(self, uid: int) -> Deferred[Any]:
        self.info_calls.append(uid)
        if uid in self.gone:
            return fail(MessageGone("gone"))
        return succeed(self.infos[uid])

    def open_message(self, uid: int) -> IO[bytes]:
        self.opened.append(uid)
        if uid in self.gone:
            raise MessageGone("gone")
        return io.BytesIO(self.data[uid])


def messages() -> list[tuple[int, MessageRecord, frozenset[str]]]:
    out = []
    for seq, (uid, data, flags, when) in enumerate(MAILBOX, 1):
        stored = frozenset(flags)
        vsize = len(data) + data.count(b"\n")
        out.append((seq, MessageRecord(uid, f"m{uid}", stored, len(data), vsize, when), stored))
    return out


def sync_runner(f: Any, *args: Any) -> Deferred[Any]:
    return succeed(f(*args))


def framed(text: str) -> Reader:
    """The program as a client sends it: 8-bit words as literals (RFC 3501 §4.3)."""
    lines: list[bytes] = [b""]
    literals: list[bytes] = []
    for i, word in enumerate(text.split(" ")):
        raw = word.encode("utf-8")
        sep = b" " if i else b""
        if raw.isascii():
            lines[-1] += sep + raw
        else:
            lines[-1] += sep + b"{%d}" % len(raw)
            literals.append(raw)
            lines.append(b"")
    return Reader(lines, literals)


def search(text: str, context: FakeContext | None = None, charset: str | None = None) -> list[int]:
    reader = framed(text)
    program = read_search_program(reader, charset)
    reader.end()
    results: list[list[int]] = []
    d = evaluate(program, messages(), context or FakeContext(), charset, sync_runner)
    d.addCallback(results.append)
    assert results, "evaluate did not finish synchronously"
    return results[0]


@pytest.fixture(autouse=True)
def _fresh_header_cache() -> Iterator[None]:
    # Header forms are cached by base name across searches; samples here
    # reuse base names between test modules, so start each test clean.
    search_eval.clear_form_cache()
    yield
    search_eval.clear_form_cache()


# --- flags (RFC 3501 §6.4.4) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("ALL", [1, 2, 3, 4, 5]),
        ("ANSWERED", [2]),
        ("UNANSWERED", [1, 3, 4, 5]),
        ("DELETED", [3]),
        ("UNDELETED", [1, 2, 4, 5]),
        ("DRAFT", [3]),
        ("UNDRAFT", [1, 2, 4, 5]),
        ("FLAGGED", [2]),
        ("UNFLAGGED", [1, 3, 4, 5]),
        ("SEEN", [1, 2, 5]),
        ("UNSEEN", [3, 4]),
        ("RECENT", [4, 5]),
        ("OLD", [1, 2, 3]),
        ("NEW", [4]),  # RECENT UNSEEN
        ("KEYWORD $Label1", [3]),
        ("KEYWORD $label1", [3]),  # keywords compare without case, as in Dovecot
        ("UNKEYWORD $Label1", [1, 2, 4, 5]),
        ("KEYWORD $Other", []),
    ],
)
def test_flag_keys_rfc3501_6_4_4(program: str, expected: list[int]) -> None:
    assert search(program) == expected


# --- sizes, sequence sets, UIDs ---------------------------------------------------------


def test_larger_smaller_are_strict_rfc3501_6_4_4() -> None:
    sizes = [r.vsize for _, r, _ in messages()]
    m4 = sizes[3]
    assert search(f"LARGER {m4}") == [i + 1 for i, s in enumerate(sizes) if s > m4]
    assert 4 not in search(f"LARGER {m4}")
    assert 4 not in search(f"SMALLER {m4}")
    assert search(f"SMALLER {m4 + 1}") == [i + 1 for i, s in enumerate(sizes) if s <= m4]
    assert search("LARGER 2000") == [5]


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("2", [2]),
        ("2:4", [2, 3, 4]),
        ("4:2", [2, 3, 4]),
        ("*", [5]),
        ("3:*", [3, 4, 5]),
        ("1,5", [1, 5]),
        ("7:9", []),
        ("UID 5", [2]),
        ("UID 5:13", [2, 3, 4]),
        ("UID *", [5]),
        ("UID 14:*", [5]),  # RFC 3501 §6.4.8: n:* with n past the end still names the last
        ("UID 100:*", [5]),
        ("UID 4,6:7", []),
        ("NOT UID 8", [1, 2, 4, 5]),
    ],
)
def test_sequence_sets_and_uid_rfc3501_6_4_4(program: str, expected: list[int]) -> None:
    assert search(program) == expected


def test_saved_result_dollar_rfc5182() -> None:
    assert search("$", FakeContext(saved={5, 21})) == [2, 5]
    assert search("UID $ SEEN", FakeContext(saved={5, 8})) == [2]
    assert search("$", FakeContext(saved=None)) == []


# --- dates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("ON 1-Jan-2024", [1]),
        ("ON 3-Jan-2024", [2]),
        ("BEFORE 3-Jan-2024", [1]),
        ("BEFORE 1-Jan-2024", []),
        ("SINCE 5-Jan-2024", [3, 4, 5]),
        ("SINCE 11-Feb-2024", [5]),
        ('ON "10-Feb-2024"', [4]),
        # Date: headers, in the sender's zone: M2 was sent on 2 Jan (-0500) though
        # it was 3 Jan in UTC; M5 on 2 Mar (+0900) though 1 Mar in UTC.  M4 has
        # no Date: and counts as sent on 1-Jan-1970, as in Dovecot.
        ("SENTON 2-Jan-2024", [2]),
        ("SENTON 3-Jan-2024", []),
        ("SENTON 2-Mar-2024", [5]),
        ("SENTON 1-Jan-1970", [4]),
        ("SENTBEFORE 2-Jan-2024", [1, 4]),
        ("SENTSINCE 2-Jan-2024", [2, 3, 5]),
        ("SENTSINCE 1-Jan-2000", [1, 2, 3, 5]),
        ("NOT SENTSINCE 1-Jan-2000", [4]),
    ],
)
def test_date_keys_rfc3501_6_4_4(program: str, expected: list[int]) -> None:
    assert search(program) == expected


# --- headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("FROM alice", [1]),
        ("FROM ALICE@EXAMPLE", [1]),
        ('FROM "Alice Example"', [1]),
        ("FROM jörg", [2]),  # RFC 2047 word in the display name, decoded
        ("FROM JÖRG", [2]),
        ("TO bob@example.org", [1, 2, 4, 5]),
        ("TO alice", [3]),
        ("CC carol", [2]),
        ("BCC dave", [3]),
        ("SUBJECT hello", [1, 4]),
        ("SUBJECT café", [2]),
        ("SUBJECT CAFÉ", [2]),
        ('SUBJECT "re: hello"', [4]),
        ("SUBJECT inner", []),  # only the top-level header counts
        ('HEADER X-Mailer "foomail 2"', [3]),
        ('HEADER x-mailer ""', [3]),  # an empty string: the field exists
        ('HEADER Message-ID "<one@"', [1]),
        ("HEADER X-Missing x", []),
    ],
)
def test_header_keys_rfc3501_6_4_4(program: str, expected: list[int]) -> None:
    assert search(program, charset="UTF-8") == expected


# --- bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("BODY quick", [1]),
        ("BODY QUICK", [1]),
        ("BODY crème", [2]),  # quoted-printable, UTF-8
        ("BODY coffee", [2]),  # a soft line break inside the word
        ("BODY secret", [3]),  # base64 text part
        ("BODY fox", [1]),  # M3's "fox" is in an application/octet-stream part only
        ("BODY größe", [4]),  # ISO-8859-1, 8bit
        ("BODY GRÖSSE", []),  # case folding is per character: ß is not SS here
        ("BODY straße", [4]),
        ("BODY café", [4]),  # M2 has "Café" in the subject only
        ("BODY needle", [5]),  # inside message/rfc822
        ("BODY hello", []),  # BODY does not look at the header
        ("TEXT hello", [1, 4]),  # TEXT does
        ("TEXT café", [2, 4]),
        ("TEXT foomail", [3]),
        ("TEXT needle", [5]),
        ('BODY ""', [1, 2, 3, 4, 5]),
    ],
)
def test_body_and_text_rfc3501_6_4_4(program: str, expected: list[int]) -> None:
    assert search(program, charset="UTF-8") == expected


# --- program structure ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("SEEN FLAGGED", [2]),
        ("(SEEN FLAGGED)", [2]),
        ("OR DRAFT FLAGGED", [2, 3]),
        ("OR (SEEN FROM alice) BODY secret", [1, 3]),
        ("NOT (OR SEEN DELETED)", [4]),
        ("OR NOT SEEN 1", [1, 3, 4]),
        ("1:3 NOT 2", [1, 3]),
        ("((((ALL))))", [1, 2, 3, 4, 5]),
        ("NOT NOT SEEN", [1, 2, 5]),
        ("OR SUBJECT hello BODY needle", [1, 4, 5]),
        ("UNSEEN OR BODY secret TEXT gr", [3, 4]),
    ],
)
def test_nested_programs_rfc3501_6_4_4(program: str, expected: list[int]) -> None:
    assert search(program, charset="UTF-8") == expected


# --- charsets and errors --------------------------------------------------------------------


def test_unknown_charset_is_badcharset_rfc3501_6_4_4() -> None:
    with pytest.raises(BadCharset) as caught:
        search("SUBJECT x", charset="KOI8-R")
    assert caught.value.supported == ("US-ASCII", "UTF-8")
    check_charset("us-ascii")
    check_charset("UTF-8")
    check_charset(None)


# --- cost: cheap keys first -------------------------------------------------------------------


def test_cheap_keys_decide_without_reading_rfc3501_6_4_4() -> None:
    context = FakeContext()
    assert search("SEEN LARGER 10 UID 1:*", context) == [1, 2, 5]
    assert context.info_calls == [] and context.opened == []


def test_headers_come_from_the_cache_not_the_file() -> None:
    context = FakeContext()
    assert search("SUBJECT hello", context) == [1, 4]
    assert context.opened == []


def test_bodies_are_read_only_for_survivors() -> None:
    context = FakeContext()
    assert search("UNSEEN BODY secret", context) == [3]
    assert context.info_calls == [8, 13]
    assert context.opened == [8, 13]
    context = FakeContext()
    assert search("OR SEEN BODY größe", context, "UTF-8") == [1, 2, 4, 5]
    assert context.opened == [8, 13]
    context = FakeContext()
    assert search("FROM carol BODY straße", context, "UTF-8") == [4]
    assert context.opened == [13]


def test_messages_gone_meanwhile_match_nothing_rfc2180_4_1() -> None:
    context = FakeContext()
    context.gone = {13}
    assert search("BODY e", context) == [1, 2, 3, 5]
    assert search("SUBJECT e", context) == [1, 2, 3, 5]


def test_body_round_runs_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_eval, "BATCH_SIZE", 2)
    calls: list[int] = []

    def runner(f: Any, *args: Any) -> Deferred[Any]:
        calls.append(len(args[1]))
        return succeed(f(*args))

    reader = Reader([b"BODY e"])
    program = read_search_program(reader, None)
    got: list[list[int]] = []
    evaluate(program, messages(), FakeContext(), None, runner).addCallback(got.append)
    assert got == [[1, 2, 3, 4, 5]]
    assert calls == [2, 2, 1]


def test_body_round_leaves_the_reactor_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default runner the body round goes through deferToThread."""
    from twisted.internet import threads

    seen: list[str] = []

    def fake(f: Any, *args: Any) -> Deferred[Any]:
        seen.append(f.__name__)
        return succeed(f(*args))

    monkeypatch.setattr(threads, "deferToThread", fake)
    reader = Reader([b"BODY quick"])
    program = read_search_program(reader, None)
    got: list[list[int]] = []
    evaluate(program, messages(), FakeContext()).addCallback(got.append)
    assert got == [[1]]
    assert seen == ["_scan_batch"]


def test_message_infos_parse_as_expected() -> None:
    # Guards the hand-made answers above: the samples parse as intended.
    infos: dict[int, MessageInfo] = FakeContext().infos
    assert infos[5].body.encoding.lower() == b"quoted-printable"
    assert infos[8].body.children[1].type.lower() == b"application"
    assert infos[13].date is None
    assert infos[21].body.children[1].message is not None


def test_bulk_message_infos_is_used_when_offered() -> None:
    class BulkContext(FakeContext):
        def __init__(self) -> None:
            super().__init__()
            self.bulk_calls: list[list[int]] = []

        def message_infos(self, uids: list[int]) -> Deferred[dict[int, MessageInfo]]:
            self.bulk_calls.append(list(uids))
            return succeed({u: self.infos[u] for u in uids if u not in self.gone})

    context = BulkContext()
    context.gone = {13}
    assert search("SUBJECT hello", context) == [1]
    assert context.bulk_calls == [[3, 5, 8, 13, 21]]
    assert context.info_calls == []


def test_header_form_cache_is_bounded_and_keyed_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_eval, "FORM_CACHE_SIZE", 2)
    assert search("OR SUBJECT hello FROM alice") == [1, 4]
    assert 0 < len(search_eval._FORMS) <= 2
    # Decoded forms are kept by the raw value: a cached form serves any
    # message whose header has the same octets.
    search_eval.clear_form_cache()
    assert search("SUBJECT café") == [2]
    assert {b"=?utf-8?q?Caf=C3=A9_menu?=": search_eval._fold("café menu")} == search_eval._FORMS


def _contains(message: bytes, needle: str, with_header: bool = False) -> bool:
    info = parse_message(message)
    return search_eval._MessageFile(io.BytesIO(message), info).contains(needle, with_header)


def test_charsets_not_ascii_safe_are_decoded_before_searching_rfc3501_6_4_4() -> None:
    # UTF-16: the raw octets hold "a\0b\0", never "ab"; decoded they read "ab".
    utf16 = "xAByz".encode("utf-16-le")
    message = (
        b"Subject: u\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-16le\n"
        b"Content-Transfer-Encoding: binary\n\n" + utf16
    )
    assert _contains(message, "ab")
    assert not _contains(message, "a\0b")
    # ISO-2022-JP escapes are ASCII octets ("$B"): they are no text to find.
    jp = "日本".encode("iso2022_jp")
    message = (
        b"Subject: j\nMIME-Version: 1.0\nContent-Type: text/plain; charset=iso-2022-jp\n\n" + jp
    )
    assert b"$B" in jp
    assert not _contains(message, "$B")
    assert _contains(message, "日本")


def test_eight_bit_text_folds_per_character_like_dovecot() -> None:
    message = (
        "Subject: f\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\nÉCOLE ﬁnale Straße\n"
    ).encode()
    # É folds to "e" and a combining accent, which stands between "e" and "cole":
    # "école" and "cole" are found, "ecole" is not (as "cafe" finds "café").
    assert _contains(message, "école")
    assert _contains(message, "cole")
    assert not _contains(message, "ecole")
    assert _contains(message, "finale")  # the ligature decomposes (NFKD)
    assert _contains(message, "straße")
    assert not _contains(message, "strasse")  # no ß → ss, as in Dovecot
    assert not _contains(message, "ecoles")


def test_base64_with_junk_and_bad_padding_still_searches() -> None:
    body = base64.encodebytes(b"needle in the haystack") + b"!!\n=="
    message = (
        b"Subject: b\nMIME-Version: 1.0\nContent-Type: text/plain\n"
        b"Content-Transfer-Encoding: base64\n\n" + body
    )
    assert _contains(message, "HAYSTACK")


def test_header_round_gives_the_reactor_back_between_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twisted.internet.interfaces import IReactorTime
    from twisted.internet.task import Clock

    monkeypatch.setattr(search_eval, "SLICE_SIZE", 2)
    clock = Clock()
    reader = Reader([b"SUBJECT e"])
    program = read_search_program(reader, None)
    got: list[list[int]] = []
    reactor = cast(IReactorTime, clock)
    evaluate(program, messages(), FakeContext(), None, sync_runner, reactor).addCallback(
        got.append
    )
    # Five messages, two per slice: the first slice ran, the rest waits for the reactor.
    assert got == []
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)  # runs the pending slice, and the one it schedules
    assert got == [[1, 2, 3, 4, 5]]


def test_internal_dates_compare_in_the_server_zone_like_dovecot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # M2 arrived at 00:00 UTC on 3 Jan: still 2 Jan in New York.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    assert search("ON 2-Jan-2024") == [2]
    assert search("ON 3-Jan-2024") == []
    assert search("SINCE 3-Jan-2024") == [3, 4, 5]
