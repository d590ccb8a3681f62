"""MailboxView on its own: sequence numbers, sequence sets, queued events, shared snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from mailaccess.config import MailboxesConfig
from mailaccess.imap.sequence import SequenceSet
from mailaccess.imap.view import MailboxView, OutOfRange
from mailaccess.store.account import Store
from mailaccess.store.mailbox import run_synchronously
from tests.imap.conversation import fired


@pytest.fixture
def box(tmp_path: Path) -> Any:
    store = Store(tmp_path / "mail", MailboxesConfig(), Clock(), run_synchronously)  # type: ignore[arg-type]
    mailbox = fired(store.account("alice").mailbox("INBOX"))
    for i in range(5):
        fired(mailbox.append(b"Subject: %d\n\nx\n" % i))
    return mailbox


def uids(pairs: list[tuple[int, Any]]) -> list[tuple[int, int]]:
    return [(seq, record.uid) for seq, record in pairs]


def test_view_shares_the_mailbox_snapshot_until_it_diverges(box: Any) -> None:
    view = MailboxView(box, readonly=False)
    assert view.records is box.records()
    fired(box.expunge([2]))
    assert view.flush(allow_expunge=False) == []
    # Held expunge: a private list, still numbering UID 2.
    assert view.records is not box.records()
    assert len(view) == 5
    assert view.flush(allow_expunge=True) == [b"* 2 EXPUNGE\r\n"]
    assert view.records is box.records()


def test_sequence_sets_rfc3501_9(box: Any) -> None:
    view = MailboxView(box, readonly=True)
    fired(box.expunge([2, 3]))
    view.flush()
    assert uids(view.select(SequenceSet.parse("2:*"), uid=False)) == [(2, 4), (3, 5)]
    assert uids(view.select(SequenceSet.parse("*:2"), uid=False)) == [(2, 4), (3, 5)]
    # RFC 3501 §6.4.8: UIDs that do not exist are ignored; "*" is the largest.
    assert uids(view.select(SequenceSet.parse("2:4"), uid=True)) == [(2, 4)]
    assert uids(view.select(SequenceSet.parse("9:*"), uid=True)) == [(3, 5)]
    with pytest.raises(OutOfRange):
        view.select(SequenceSet.parse("4"), uid=False)


def test_several_appends_make_one_exists_and_recent_count(box: Any) -> None:
    view = MailboxView(box, readonly=False)
    assert view.recent_count == 5
    fired(box.append(b"a\n"))
    fired(box.append(b"b\n"))
    assert view.flush() == [b"* 7 EXISTS\r\n", b"* 7 RECENT\r\n"]
    other = MailboxView(box, readonly=False)
    fired(box.append(b"c\n"))
    assert other.flush() == [b"* 8 EXISTS\r\n", b"* 0 RECENT\r\n"]
    assert view.flush() == [b"* 8 EXISTS\r\n", b"* 8 RECENT\r\n"]


def test_expunge_lines_keep_numbers_valid_rfc3501_7_4_1(box: Any) -> None:
    view = MailboxView(box, readonly=True)
    fired(box.expunge([1, 3, 5]))
    # Highest first, so each number is valid when the client reads it.
    assert view.flush() == [b"* 5 EXPUNGE\r\n", b"* 3 EXPUNGE\r\n", b"* 1 EXPUNGE\r\n"]
    assert [r.uid for r in view.records] == [2, 4]


def test_flag_change_of_new_message_follows_its_exists(box: Any) -> None:
    box.take_recent()  # as if another session had selected it
    view = MailboxView(box, readonly=True)
    record = fired(box.append(b"new\n"))
    fired(box.store_flags([record.uid], frozenset({"\\Flagged"}), "add"))
    # RFC 3501 §6.3.2: a read-only view shows the unclaimed new message as \Recent.
    assert view.flush() == [
        b"* 6 EXISTS\r\n",
        b"* 1 RECENT\r\n",
        b"* 6 FETCH (FLAGS (\\Flagged \\Recent))\r\n",
    ]
    assert box.recent_count() == 1  # and leaves it unclaimed


def test_own_flag_changes_are_silent(box: Any) -> None:
    box.take_recent()
    view = MailboxView(box, readonly=True)
    changed = fired(box.store_flags([1, 2], frozenset({"\\Seen"}), "add"))
    assert view.flush(own_flags={1: changed[1]}) == [b"* 2 FETCH (FLAGS (\\Seen))\r\n"]


def test_uidvalidity_reset_voids_the_view(box: Any) -> None:
    from mailaccess.store.model import MailboxReset

    view = MailboxView(box, readonly=True)
    view._heard(MailboxReset("INBOX", 99))
    view.flush()
    assert view.void


def test_own_store_of_every_message_is_silent_but_announces_new_keywords_rfc3501_7_2_6(
    box: Any,
) -> None:
    view = MailboxView(box, readonly=False)
    changed = fired(box.store_flags([1, 2, 3, 4, 5], frozenset({"$Work"}), "add"))
    lines = view.flush(own_flags=changed)
    # RFC 3501 §6.4.6: the session answers its own STORE; the new keyword still
    # changes the mailbox's FLAGS (RFC 3501 §7.2.6), so that is said.
    assert lines == view.flags_responses()
    assert b"$Work" in lines[0]
    assert [r.flags for r in view.records] == [{"$Work"}] * 5
    # Another session's change of the same messages is still reported.
    fired(box.store_flags([2], frozenset({"\\Seen"}), "add"))
    assert view.flush(own_flags=changed) == [b"* 2 FETCH (FLAGS (\\Seen \\Recent $Work))\r\n"]
