"""Several sessions on one real store: per-session views, untagged updates at the
allowed moments (RFC 3501 §5.2, §7.4.1; RFC 2180), IDLE (RFC 2177), and POP3 beside IMAP
(DESIGN.md, cross-protocol contract rules 3, 4 and 6)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from tests.imap.conversation import IMAPConversation, fired, store_context
from tests.pop3.conversation import LOOPBACK, Conversation


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def context(tmp_path: Path, clock: Clock) -> Any:
    return store_context(tmp_path, clock, imap_idle_keepalive=120)


def inbox(context: Any) -> Any:
    return fired(context.store.account("alice").mailbox("INBOX"))


def deliver(context: Any, count: int) -> None:
    box = inbox(context)
    for i in range(count):
        fired(box.append(b"Subject: %d\n\nbody\n" % (i + 1)))


def session(context: Any, select: bool = True) -> IMAPConversation:
    conv = IMAPConversation(context)
    conv.login()
    if select:
        conv.select()
    return conv


@pytest.fixture
def pair(context: Any) -> tuple[IMAPConversation, IMAPConversation]:
    deliver(context, 3)
    first = session(context)  # takes \Recent for all three
    second = session(context)
    return first, second


def test_expunge_held_during_fetch_until_noop_rfc3501_7_4_1(
    pair: tuple[IMAPConversation, IMAPConversation],
) -> None:
    a, b = pair
    b.exchange(
        """
        C: b1 STORE 2 +FLAGS.SILENT (\\Deleted)
        S: b1 OK STORE completed
        C: b2 EXPUNGE
        S: * 2 EXPUNGE
        S: b2 OK EXPUNGE completed
        """
    )
    # a still numbers the message 2; it hears the flag change but no EXPUNGE.
    a.exchange(
        """
        C: a1 FETCH 1:3 (UID)
        S: * 1 FETCH (UID 1)
        S: * 2 FETCH (UID 2)
        S: * 3 FETCH (UID 3)
        S: * 2 FETCH (FLAGS (\\Deleted \\Recent))
        S: a1 OK FETCH completed
        C: a2 STORE 3 +FLAGS (\\Seen)
        S: * 3 FETCH (FLAGS (\\Seen \\Recent))
        S: a2 OK STORE completed
        C: a3 SEARCH ALL
        S: * SEARCH 1 2 3
        S: a3 OK SEARCH completed
        C: a4 NOOP
        S: * 2 EXPUNGE
        S: a4 OK NOOP completed
        C: a5 FETCH 2 (UID)
        S: * 2 FETCH (UID 3)
        S: a5 OK FETCH completed
        """
    )


def test_uid_fetch_may_report_expunge_rfc3501_7_4_1(
    pair: tuple[IMAPConversation, IMAPConversation],
) -> None:
    a, b = pair
    b.command("b1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.command("b2 EXPUNGE")
    a.exchange(
        """
        C: a1 UID FETCH 3 (FLAGS)
        S: * 3 FETCH (UID 3 FLAGS (\\Recent))
        S: * 1 FETCH (FLAGS (\\Deleted \\Recent))
        S: * 1 EXPUNGE
        S: a1 OK FETCH completed
        """
    )


def test_new_mail_exists_after_held_expunge_keeps_numbers_consistent(
    context: Any, pair: tuple[IMAPConversation, IMAPConversation]
) -> None:
    a, b = pair
    b.command("b1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.command("b2 EXPUNGE")
    deliver(context, 1)
    # Held expunge: a still counts message 1, so the new one is 4, not 3.
    a.exchange(
        """
        C: a1 FETCH 3 (UID)
        S: * 3 FETCH (UID 3)
        S: * 1 FETCH (FLAGS (\\Deleted \\Recent))
        S: * 4 EXISTS
        S: * 4 RECENT
        S: a1 OK FETCH completed
        C: a2 NOOP
        S: * 1 EXPUNGE
        S: a2 OK NOOP completed
        C: a3 FETCH 3 (UID)
        S: * 3 FETCH (UID 4)
        S: a3 OK FETCH completed
        """
    )
    # \Recent of the new message went to a, the first session to hear of it.
    assert b.command("b3 NOOP") == (b"* 3 EXISTS\r\n* 0 RECENT\r\nb3 OK NOOP completed\r\n")


def test_flags_changed_by_others_are_unsolicited_fetch_rfc3501_7_4_2(
    pair: tuple[IMAPConversation, IMAPConversation],
) -> None:
    a, b = pair
    b.exchange(
        """
        C: b1 STORE 1 +FLAGS (\\Answered)
        S: * 1 FETCH (FLAGS (\\Answered))
        S: b1 OK STORE completed
        """
    )
    a.exchange(
        """
        C: a1 NOOP
        S: * 1 FETCH (FLAGS (\\Answered \\Recent))
        S: a1 OK NOOP completed
        """
    )


def test_idle_reports_at_once_rfc2177_3(
    context: Any, pair: tuple[IMAPConversation, IMAPConversation]
) -> None:
    a, b = pair
    a.exchange(
        """
        C: a1 IDLE
        S: + idling
        """
    )
    b.command("b1 APPEND INBOX {5+}\r\nhello")
    # RFC 3501 §7.3.2: RECENT counts every message \Recent for this session.
    assert a.take() == b"* 4 EXISTS\r\n* 4 RECENT\r\n"
    b.command("b2 STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert a.take() == b"* 2 FETCH (FLAGS (\\Deleted \\Recent))\r\n"
    b.command("b3 EXPUNGE")
    assert a.take() == b"* 2 EXPUNGE\r\n"
    a.exchange(
        """
        C: DONE
        S: a1 OK IDLE terminated
        C: a2 FETCH 3 UID
        S: * 3 FETCH (UID 4)
        S: a2 OK FETCH completed
        """
    )


def test_idle_keepalive_and_bad_end(
    clock: Clock, pair: tuple[IMAPConversation, IMAPConversation]
) -> None:
    a, _ = pair
    a.command("a1 IDLE")
    clock.advance(119)
    assert a.take() == b""
    clock.advance(1)
    assert a.take() == b"* OK Still here\r\n"
    clock.advance(120)
    assert a.take() == b"* OK Still here\r\n"
    a.exchange(
        """
        C: NOPE
        S: a1 BAD expected DONE to end IDLE
        """
    )
    clock.advance(600)
    assert a.take() == b""


def test_idle_in_authenticated_state_rfc2177_3(context: Any) -> None:
    conv = session(context, select=False)
    conv.exchange(
        """
        C: a IDLE
        S: + idling
        C: done
        S: a OK IDLE terminated
        """
    )


def test_pop3_dele_and_quit_seen_by_idle_imap_session(context: Any) -> None:
    deliver(context, 2)
    imap = session(context)
    imap.command("a1 IDLE")
    pop3 = Conversation(context, peer=LOOPBACK)
    pop3.login("alice")
    pop3.exchange(
        """
        C: RETR 2
        S: +OK 20 octets
        S: Subject: 2
        S:<SP>
        S: body
        S: .
        """.replace("<SP>", "")
    )
    # DESIGN.md rule 3: RETR sets \Seen, IDLE hears it at once.
    assert imap.take() == b"* 2 FETCH (FLAGS (\\Seen \\Recent))\r\n"
    pop3.exchange(
        """
        C: DELE 1
        S: +OK message 1 deleted
        """
    )
    assert imap.take() == b"* 1 FETCH (FLAGS (\\Deleted \\Recent))\r\n"
    pop3.exchange(
        """
        C: QUIT
        S: +OK bye, 1 deleted, 1 left in maildrop
        """
    )
    # Rule 4: QUIT expunges; the IDLE session hears EXPUNGE at once.
    assert imap.take() == b"* 1 EXPUNGE\r\n"


def test_file_dropped_into_new_is_seen_on_noop(context: Any) -> None:
    conv = session(context)
    box = inbox(context)
    assert not box.watched  # no inotify in these tests: NOOP rescans
    path = box.path / "new" / "1700000000.M1P1.elsewhere"
    path.write_bytes(b"Subject: dropped\n\nhi\n")
    os.utime(path, (1700000000, 1700000000))
    conv.exchange(
        """
        C: a NOOP
        S: * 1 EXISTS
        S: * 1 RECENT
        S: a OK NOOP completed
        """
    )


def test_logout_stops_listening(
    context: Any, pair: tuple[IMAPConversation, IMAPConversation]
) -> None:
    a, b = pair
    a.command("a LOGOUT")
    box = inbox(context)
    assert len(box._listeners) == 1  # only b's view
    b.drop()
    assert box._listeners == []


def test_new_keyword_from_another_session_updates_flags_rfc3501_7_2_6(
    pair: tuple[IMAPConversation, IMAPConversation],
) -> None:
    a, b = pair
    b.command("b1 STORE 1 +FLAGS.SILENT ($Todo)")
    a.exchange(
        """
        C: a1 NOOP
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo)
        S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo \\*)] Flags permitted
        S: * 1 FETCH (FLAGS (\\Recent $Todo))
        S: a1 OK NOOP completed
        """  # noqa: E501
    )


def test_uidvalidity_change_ends_the_session_rfc3501_2_3_1_1(context: Any) -> None:
    from mailaccess.store.model import MailboxReset

    deliver(context, 1)
    conv = session(context)
    box = inbox(context)
    box._emit(MailboxReset("INBOX", box.uidvalidity + 1))
    conv.exchange(
        """
        C: a NOOP
        S: * BYE Mailbox UIDVALIDITY changed; please reconnect
        """
    )
    assert conv.closed
    assert box._listeners == []
