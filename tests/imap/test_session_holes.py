"""Multi-session corner cases checked against a live Dovecot 2.3 (see each test):
\\Recent seen without being claimed, a selected mailbox deleted or renamed by
another session, COPY/MOVE of messages another session expunged, STORE after
EXAMINE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from tests.imap.conversation import IMAPConversation, fired, store_context


@pytest.fixture
def context(tmp_path: Path) -> Any:
    return store_context(tmp_path, Clock())


def mailbox(context: Any, name: str = "INBOX") -> Any:
    return fired(context.store.account("alice").mailbox(name))


def deliver(context: Any, count: int, name: str = "INBOX") -> None:
    box = mailbox(context, name)
    for i in range(count):
        fired(box.append(b"Subject: %d\n\nbody\n" % (i + 1)))


def session(context: Any) -> IMAPConversation:
    conv = IMAPConversation(context)
    conv.login()
    return conv


# --- (a) \Recent reported without being claimed ----------------------------------------


def test_status_and_examine_report_recent_without_claiming_rfc3501_6_3_10_6_3_2(
    context: Any,
) -> None:
    # Dovecot 2.3, live: STATUS (RECENT 3), EXAMINE "* 3 RECENT" with \Recent
    # in FETCH FLAGS, and a later SELECT still gets "* 3 RECENT".
    deliver(context, 3)
    reader, writer = session(context), session(context)
    reader.exchange(
        """
        C: a STATUS INBOX (MESSAGES RECENT)
        S: * STATUS INBOX (MESSAGES 3 RECENT 3)
        S: a OK STATUS completed
        """
    )
    answer = reader.command("b EXAMINE INBOX")
    assert b"* 3 EXISTS\r\n* 3 RECENT\r\n" in answer
    reader.exchange(
        """
        C: c FETCH 1:* FLAGS
        S: * 1 FETCH (FLAGS (\\Recent))
        S: * 2 FETCH (FLAGS (\\Recent))
        S: * 3 FETCH (FLAGS (\\Recent))
        S: c OK FETCH completed
        """
    )
    assert b"* 3 RECENT\r\n" in writer.select()
    # Claimed now: neither STATUS in another session nor a new EXAMINE sees them.
    reader.exchange(
        """
        C: d CLOSE
        S: d OK CLOSE completed
        C: e STATUS INBOX (RECENT)
        S: * STATUS INBOX (RECENT 0)
        S: e OK STATUS completed
        """
    )
    # The session holding them counts its own in STATUS of its selected mailbox.
    writer.exchange(
        """
        C: f STATUS INBOX (RECENT)
        S: * STATUS INBOX (RECENT 3)
        S: f OK STATUS completed
        """
    )


# --- (b) the selected mailbox deleted or renamed by another session ------------------------


def test_selected_mailbox_deleted_by_another_session_ends_with_bye_rfc3501_7_1_5(
    context: Any,
) -> None:
    # Dovecot 2.3 disconnects such a session ("IMAP session state is
    # inconsistent, please relogin").  We say why in a BYE first.
    owner, other = session(context), session(context)
    owner.command("a CREATE Work")
    deliver(context, 2, "Work")
    other.select("Work")
    box = mailbox(context, "Work")
    owner.exchange(
        """
        C: b DELETE Work
        S: b OK DELETE completed
        """
    )
    other.exchange(
        """
        C: c FETCH 1 FLAGS
        S: * BYE Mailbox Work was deleted by another session
        """
    )
    assert other.closed and box._listeners == []


def test_selected_mailbox_deleted_reaches_an_idle_session_at_once_rfc2177(
    context: Any,
) -> None:
    owner, other = session(context), session(context)
    owner.command("a CREATE Work")
    other.select("Work")
    other.exchange(
        """
        C: i IDLE
        S: + idling
        """
    )
    owner.command("b DELETE Work")
    assert other.take() == b"* BYE Mailbox Work was deleted by another session\r\n"
    assert other.closed


def test_selected_mailbox_renamed_by_another_session_ends_with_bye(context: Any) -> None:
    # Dovecot 2.3, live: the session is disconnected after another one's RENAME.
    owner, other = session(context), session(context)
    owner.command("a CREATE Work")
    deliver(context, 1, "Work")
    other.select("Work")
    owner.exchange(
        """
        C: b RENAME Work Play
        S: b OK RENAME completed
        """
    )
    other.exchange(
        """
        C: c NOOP
        S: * BYE Mailbox Work was renamed to Play by another session
        """
    )
    assert other.closed


def test_own_rename_of_the_selected_mailbox_keeps_the_session(context: Any) -> None:
    conv = session(context)
    conv.command("a CREATE Work")
    deliver(context, 1, "Work")
    conv.select("Work")
    conv.exchange(
        """
        C: b RENAME Work Play
        S: b OK RENAME completed
        C: c FETCH 1 UID
        S: * 1 FETCH (UID 1)
        S: c OK FETCH completed
        """
    )
    assert not conv.closed


# --- (c) COPY/MOVE all or nothing when some are expunged under a held view -----------------


@pytest.mark.parametrize("verb", ["COPY", "UID COPY", "MOVE", "UID MOVE"])
def test_copy_of_expunged_message_copies_nothing_rfc3501_6_4_7(context: Any, verb: str) -> None:
    # Dovecot 2.3, live: "COPY 1:3 Dest" with message 2 expunged by another
    # session: "* 2 EXPUNGE", "NO [EXPUNGEISSUED] ...", Dest still empty.
    deliver(context, 3)
    holder, expunger = session(context), session(context)
    holder.command("a CREATE Dest")
    holder.select()
    expunger.select()
    expunger.command("b STORE 2 +FLAGS.SILENT (\\Deleted)")
    expunger.command("c EXPUNGE")
    # A FETCH keeps the expunge held: the holder still numbers message 2.
    holder.command("d FETCH 2 UID")
    holder.exchange(
        f"""
        C: e {verb} 1:3 Dest
        S: * 2 EXPUNGE
        S: e NO [EXPUNGEISSUED] Some of the requested messages no longer exist
        """
    )
    assert mailbox(context, "Dest").records() == ()
    # MOVE moved nothing either: 1 and 3 are still in INBOX.
    assert [r.uid for r in mailbox(context).records()] == [1, 3]
    assert list((Path(mailbox(context, "Dest").path) / "tmp").iterdir()) == []


# --- (d) STORE in a mailbox opened with EXAMINE ---------------------------------------------


def test_store_after_examine_is_ignored_as_dovecot_does_rfc3501_6_3_2(context: Any) -> None:
    # Dovecot 2.3, live: "OK Store ignored with read-only mailbox", no FETCH.
    deliver(context, 1)
    conv = session(context)
    conv.command("a EXAMINE INBOX")
    conv.exchange(
        """
        C: b STORE 1 +FLAGS (\\Seen)
        S: b OK STORE ignored: the mailbox is read-only (EXAMINE)
        C: c UID STORE 1 +FLAGS.SILENT (\\Flagged)
        S: c OK STORE ignored: the mailbox is read-only (EXAMINE)
        """
    )
    assert mailbox(context).record(1).flags == frozenset()
