"""Message commands on the real Maildir store: APPEND, FETCH, STORE, SEARCH, COPY, MOVE,
EXPUNGE, UID EXPUNGE, CLOSE, UNSELECT (RFC 3501 §6.3.11, §6.4; RFC 4315; RFC 6851)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.imap.conversation import IMAPConversation, fired, store_context

MESSAGE = b"From: Ann <ann@example.org>\nSubject: Hello\n\nBody line\n"
SIZE = len(MESSAGE) + MESSAGE.count(b"\n")  # RFC822.SIZE counts CRLF


@pytest.fixture
def context(tmp_path: Path) -> Any:
    return store_context(tmp_path)


def mailbox(context: Any, name: str = "INBOX") -> Any:
    return fired(context.store.account("alice").mailbox(name))


def deliver(context: Any, count: int, flags: frozenset[str] = frozenset()) -> None:
    box = mailbox(context)
    for i in range(count):
        fired(box.append(MESSAGE.replace(b"Hello", b"Hello %d" % (i + 1)), flags))


@pytest.fixture
def conv(context: Any) -> IMAPConversation:
    conv = IMAPConversation(context)
    conv.login()
    return conv


def test_append_appenduid_rfc4315_3(context: Any, conv: IMAPConversation) -> None:
    validity = mailbox(context).uidvalidity
    conv.exchange(
        f"""
        C: a APPEND INBOX (\\Seen $Work) "05-Mar-2024 10:00:00 +0100" {{{SIZE}}}
        S: + Ready for literal data
        """
    )
    conv.send(MESSAGE.replace(b"\n", b"\r\n") + b"\r\n")
    assert conv.take() == b"a OK [APPENDUID %d 1] APPEND completed\r\n" % validity
    record = mailbox(context).record(1)
    assert record.flags == {"\\Seen", "$Work"}
    assert record.internal_date == 1709629200.0
    assert record.vsize == SIZE


def test_append_to_missing_mailbox_trycreate_rfc3501_6_3_11(conv: IMAPConversation) -> None:
    conv.exchange(
        """
        C: a APPEND Nowhere {1+}
        C: x
        S: a NO [TRYCREATE] APPEND failed: mailbox 'Nowhere' does not exist
        """
    )


def test_append_too_big_literal_toobig_and_session_in_sync(tmp_path: Path) -> None:
    context = store_context(tmp_path, max_literal_size=100)
    conv = IMAPConversation(context)
    conv.login()
    conv.exchange(
        """
        C: a APPEND INBOX {5000}
        S: a BAD [TOOBIG] literal of 5000 octets is larger than the limit of 100
        C: b NOOP
        S: b OK NOOP completed
        """
    )
    # A non-synchronizing literal is read and dropped; the next command is intact.
    conv.send(b"c APPEND INBOX {200+}\r\n" + b"x" * 200 + b"\r\nd NOOP\r\n")
    assert conv.take() == (
        b"c BAD [TOOBIG] literal of 200 octets is larger than the limit of 100\r\n"
        b"d OK NOOP completed\r\n"
    )


def test_append_over_quota(context: Any, conv: IMAPConversation, monkeypatch: Any) -> None:
    from twisted.internet.defer import fail

    from mailaccess.store.model import OverQuota

    box = mailbox(context)
    monkeypatch.setattr(box, "append", lambda *a: fail(OverQuota("quota of 1 MB exceeded")))
    conv.exchange(
        """
        C: a APPEND INBOX {1+}
        C: x
        S: a NO [OVERQUOTA] APPEND failed: quota of 1 MB exceeded
        """
    )


def test_fetch_items_and_implicit_seen_rfc3501_6_4_5(context: Any, conv: IMAPConversation) -> None:
    deliver(context, 2)
    conv.select()
    conv.exchange(
        f"""
        C: a FETCH 1:* (FLAGS RFC822.SIZE)
        S: * 1 FETCH (FLAGS (\\Recent) RFC822.SIZE {SIZE + 2})
        S: * 2 FETCH (FLAGS (\\Recent) RFC822.SIZE {SIZE + 2})
        S: a OK FETCH completed
        C: b FETCH 2 BODY[HEADER.FIELDS (SUBJECT)]
        S: * 2 FETCH (FLAGS (\\Seen \\Recent) BODY[HEADER.FIELDS (SUBJECT)] {{20}}
        S: Subject: Hello 2
        S:<SP>
        S: )
        S: b OK FETCH completed
        C: c UID FETCH 1 (BODY.PEEK[TEXT])
        S: * 1 FETCH (UID 1 BODY[TEXT] {{11}}
        S: Body line
        S: )
        S: c OK FETCH completed
        C: d FETCH 3 FLAGS
        S: d BAD message sequence number 3 does not exist (this mailbox has 2 messages)
        C: e UID FETCH 7:9 FLAGS
        S: e OK FETCH completed
        C: f FETCH 1 (FLAGS) (CHANGEDSINCE 1)
        S: f BAD FETCH modifiers (CONDSTORE) are not supported
        """
    )


def test_store_silent_and_new_keyword_flags_rfc3501_6_4_6_7_2_6(
    context: Any, conv: IMAPConversation
) -> None:
    deliver(context, 3)
    conv.select()
    conv.exchange(
        """
        C: a STORE 1:2 +FLAGS (\\Flagged)
        S: * 1 FETCH (FLAGS (\\Flagged \\Recent))
        S: * 2 FETCH (FLAGS (\\Flagged \\Recent))
        S: a OK STORE completed
        C: b UID STORE 2 -FLAGS.SILENT (\\Flagged)
        S: b OK STORE completed
        C: c STORE 3 FLAGS ($Label \\Seen)
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label)
        S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label \\*)] Flags permitted
        S: * 3 FETCH (FLAGS (\\Seen \\Recent $Label))
        S: c OK STORE completed
        C: d UID STORE 1 +FLAGS (\\Deleted)
        S: * 1 FETCH (UID 1 FLAGS (\\Flagged \\Deleted \\Recent))
        S: d OK STORE completed
        """  # noqa: E501
    )
    assert mailbox(context).record(2).flags == frozenset()


def test_search_and_uid_search_rfc3501_6_4_4(context: Any, conv: IMAPConversation) -> None:
    deliver(context, 3)
    conv.select()
    conv.command("x STORE 2 +FLAGS (\\Seen)")
    conv.exchange(
        """
        C: a SEARCH UNSEEN
        S: * SEARCH 1 3
        S: a OK SEARCH completed
        C: b UID SEARCH SUBJECT "hello 3"
        S: * SEARCH 3
        S: b OK SEARCH completed
        C: c SEARCH CHARSET KOI8-R ALL
        S: c NO [BADCHARSET (US-ASCII UTF-8)] unsupported charset KOI8-R
        C: d SEARCH RETURN (MIN) ALL
        S: d BAD ESEARCH (SEARCH RETURN) is not supported
        C: e SEARCH BODY "line"
        S: * SEARCH 1 2 3
        S: e OK SEARCH completed
        """
    )


def test_copy_copyuid_and_trycreate_rfc4315_3(context: Any, conv: IMAPConversation) -> None:
    deliver(context, 3)
    conv.command("x CREATE Archive")
    validity = mailbox(context, "Archive").uidvalidity
    conv.select()
    conv.exchange(
        f"""
        C: a COPY 2:3 Archive
        S: a OK [COPYUID {validity} 2:3 1:2] COPY completed
        C: b UID COPY 1 Nowhere
        S: b NO [TRYCREATE] COPY failed: mailbox 'Nowhere' does not exist
        C: c UID COPY 99 Archive
        S: c OK COPY completed
        """
    )
    assert len(mailbox(context, "Archive").records()) == 2


def test_move_rfc6851_copyuid_then_expunges(context: Any, conv: IMAPConversation) -> None:
    deliver(context, 3)
    conv.command("x CREATE Archive")
    validity = mailbox(context, "Archive").uidvalidity
    conv.select()
    conv.exchange(
        f"""
        C: a MOVE 1,3 Archive
        S: * OK [COPYUID {validity} 1,3 1:2] Moved UIDs
        S: * 3 EXPUNGE
        S: * 1 EXPUNGE
        S: a OK MOVE completed
        C: b FETCH 1 UID
        S: * 1 FETCH (UID 2)
        S: b OK FETCH completed
        """
    )


def test_expunge_and_uid_expunge_rfc3501_6_4_3_rfc4315_2_1(
    context: Any, conv: IMAPConversation
) -> None:
    deliver(context, 4, flags=frozenset({"\\Deleted"}))
    conv.select()
    conv.exchange(
        """
        C: a UID EXPUNGE 2:3
        S: * 3 EXPUNGE
        S: * 2 EXPUNGE
        S: a OK EXPUNGE completed
        C: b EXPUNGE
        S: * 2 EXPUNGE
        S: * 1 EXPUNGE
        S: b OK EXPUNGE completed
        """
    )
    assert list(mailbox(context).records()) == []


def test_close_expunges_silently_unselect_does_not(context: Any, conv: IMAPConversation) -> None:
    deliver(context, 2, flags=frozenset({"\\Deleted"}))
    conv.select()
    conv.exchange(
        """
        C: a UNSELECT
        S: a OK UNSELECT completed
        C: b FETCH 1 FLAGS
        S: b BAD FETCH is not valid in the authenticated state
        """
    )
    assert len(mailbox(context).records()) == 2
    conv.select()
    conv.exchange(
        """
        C: c CLOSE
        S: c OK CLOSE completed
        """
    )
    assert len(mailbox(context).records()) == 0


def test_fetch_of_message_whose_file_vanished_rfc2180_4_1_2(
    context: Any, conv: IMAPConversation
) -> None:
    deliver(context, 2)
    conv.select()
    path = mailbox(context).message_path(1)
    path.unlink()
    conv.exchange(
        """
        C: a FETCH 1:2 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])
        S: * 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {20}
        S: Subject: Hello 2
        S:<SP>
        S: )
        S: a NO [EXPUNGEISSUED] Some of the requested messages no longer exist
        """
    )


def test_store_unavailable_is_no_unavailable_rfc5530(
    context: Any, conv: IMAPConversation, monkeypatch: Any
) -> None:
    from twisted.internet.defer import fail

    from mailaccess.store.model import StoreUnavailable

    deliver(context, 1)
    conv.select()
    box = mailbox(context)
    monkeypatch.setattr(box, "store_flags", lambda *a: fail(StoreUnavailable("disk full")))
    conv.exchange(
        """
        C: a STORE 1 +FLAGS (\\Seen)
        S: a NO [UNAVAILABLE] STORE failed: disk full; try again later
        C: b NOOP
        S: b OK NOOP completed
        """
    )


def test_metadata_fetch_yields_the_reactor_between_slices(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from twisted.internet.task import Clock

    from mailaccess.imap import cmd_message

    clock = Clock()
    context = store_context(tmp_path, clock)
    deliver(context, 5)
    conv = IMAPConversation(context)
    conv.login()
    conv.select()
    monkeypatch.setattr(cmd_message, "_SLICE", 2)
    conv.send(b"a FETCH 1:* (UID)\r\n")
    assert conv.take() == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n"
    # (Clock.advance runs the calls scheduled while it runs too: all slices now.)
    clock.advance(0)
    assert conv.take() == (
        b"* 3 FETCH (UID 3)\r\n* 4 FETCH (UID 4)\r\n* 5 FETCH (UID 5)\r\na OK FETCH completed\r\n"
    )


def test_fetch_asks_metadata_in_one_bulk_call_and_waits_for_it(
    context: Any, conv: IMAPConversation, monkeypatch: Any
) -> None:
    from twisted.internet.defer import Deferred

    deliver(context, 3)
    conv.select()
    box = mailbox(context)
    real = box.message_infos
    asked: list[tuple[list[int], Deferred[Any]]] = []

    def later(uids: list[int]) -> Deferred[Any]:
        asked.append((list(uids), Deferred()))
        return asked[-1][1]

    def single(uid: int) -> Deferred[Any]:
        raise AssertionError("FETCH must not ask message by message")

    monkeypatch.setattr(box, "message_infos", later)
    monkeypatch.setattr(box, "message_info", single)
    conv.send(b"a FETCH 1:3 (UID ENVELOPE)\r\n")
    # One store call for the whole run, nothing answered before it fires.
    assert [uids for uids, _ in asked] == [[1, 2, 3]] and conv.take() == b""
    asked[0][1].callback(fired(real([1, 2, 3])))
    lines = conv.take().split(b"\r\n")
    assert [line[:18] for line in lines[:3]] == [
        b"* 1 FETCH (UID 1 E",
        b"* 2 FETCH (UID 2 E",
        b"* 3 FETCH (UID 3 E",
    ]
    assert lines[3] == b"a OK FETCH completed"


def test_fetch_leaves_out_messages_the_bulk_read_did_not_find_rfc2180_4_1_2(
    context: Any, conv: IMAPConversation, monkeypatch: Any
) -> None:
    deliver(context, 3)
    conv.select()
    box = mailbox(context)
    real = box.message_infos

    def without_2(uids: list[int]) -> Any:
        # As if message 2's file vanished between the index and the read.
        return real([u for u in uids if u != 2])

    monkeypatch.setattr(box, "message_infos", without_2)
    conv.send(b"a UID FETCH 1:3 (ENVELOPE)\r\n")
    lines = conv.take().split(b"\r\n")
    assert [line[:17] for line in lines[:2]] == [b"* 1 FETCH (UID 1 ", b"* 3 FETCH (UID 3 "]
    assert lines[2] == (b"a NO [EXPUNGEISSUED] Some of the requested messages no longer exist")


def test_examine_fetch_body_does_not_set_seen_rfc3501_6_3_2(
    context: Any, conv: IMAPConversation
) -> None:
    deliver(context, 1)
    conv.exchange(
        f"""
        C: a EXAMINE INBOX
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS ()] No permanent flags permitted
        S: * 1 EXISTS
        S: * 1 RECENT
        S: * OK [UNSEEN 1] First unseen is 1
        S: ~\\* OK \\[UIDVALIDITY \\d+\\] UIDs valid
        S: * OK [UIDNEXT 2] Predicted next UID
        S: a OK [READ-ONLY] EXAMINE completed
        C: b FETCH 1 (RFC822.SIZE BODY[TEXT])
        S: * 1 FETCH (RFC822.SIZE {SIZE + 2} BODY[TEXT] {{11}}
        S: Body line
        S: )
        S: b OK FETCH completed
        C: c CHECK
        S: c OK CHECK completed
        C: d COPY 1 INBOX
        S: * 2 EXISTS
        S: * 2 RECENT
        S: ~d OK \\[COPYUID \\d+ 1 2\\] COPY completed
        """
    )
    assert mailbox(context).record(1).flags == frozenset()
    # RFC 3501 §6.3.2: EXAMINE saw the \Recent messages without claiming them.
    assert mailbox(context).recent_count() == 2


def test_empty_mailbox_sequence_numbers_rfc3501_9(conv: IMAPConversation) -> None:
    # As a live Dovecot 2.3 answers: BAD for message numbers, OK for UIDs.
    conv.select()
    conv.exchange(
        """
        C: a FETCH 1:* FLAGS
        S: a BAD message sequence number 1 does not exist (this mailbox has 0 messages)
        C: b UID FETCH 1:* FLAGS
        S: b OK FETCH completed
        C: c SEARCH ALL
        S: * SEARCH
        S: c OK SEARCH completed
        """
    )
