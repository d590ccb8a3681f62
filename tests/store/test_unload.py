"""Unused mailboxes leave memory after ``[mailboxes] unload_after`` seconds, losing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from mailaccess.config import MailboxesConfig
from mailaccess.store.account import Store
from mailaccess.store.mailbox import Mailbox, run_synchronously
from mailaccess.store.model import ChangeEvent, MessagesAdded
from tests.store.conftest import result_of

AFTER = 60.0


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Store:
    config = MailboxesConfig(unload_after=AFTER)
    return Store(tmp_path / "mail", config, clock, run_synchronously)


def open_box(store: Store, name: str = "INBOX", user: str = "alice") -> Mailbox:
    mailbox: Mailbox = result_of(store.account(user).mailbox(name))
    return mailbox


def snapshot(mailbox: Mailbox) -> list[tuple[int, frozenset[str], int]]:
    return [(r.uid, r.flags, r.size) for r in mailbox.records()]


def test_unused_mailbox_is_unloaded_and_reopens_the_same(store: Store, clock: Clock) -> None:
    box = open_box(store)
    result_of(box.append(b"Subject: one\n\nbody\n", frozenset({"\\Seen"})))
    result_of(box.append(b"Subject: two\n\nbody\n"))
    before = snapshot(box), box.uidvalidity, box.uidnext
    clock.advance(AFTER - 1)
    assert open_box(store) is box  # handing it out counts as use
    clock.advance(AFTER - 1)
    assert open_box(store) is box
    clock.advance(AFTER + 1)
    again = open_box(store)
    assert again is not box
    assert (snapshot(again), again.uidvalidity, again.uidnext) == before


def test_a_mailbox_with_a_session_stays_loaded(store: Store, clock: Clock) -> None:
    box = open_box(store)
    heard: list[ChangeEvent] = []
    box.add_listener(heard.append)
    clock.advance(10 * AFTER)
    assert open_box(store) is box
    # The session leaves: the period starts then, not at the last hand-out.
    box.remove_listener(heard.append)
    clock.advance(AFTER / 2)
    assert open_box(store) is box
    clock.advance(AFTER + 1)
    assert open_box(store) is not box


def test_a_change_counts_as_use(store: Store, clock: Clock) -> None:
    box = open_box(store)
    clock.advance(AFTER - 5)
    result_of(box.append(b"Subject: late\n\nbody\n"))  # e.g. an LMTP delivery
    clock.advance(10)
    assert open_box(store) is box


def test_recent_survives_unloading_rfc3501_2_3_2(store: Store, clock: Clock) -> None:
    box = open_box(store)
    record = result_of(box.append(b"Subject: new\n\nbody\n"))
    clock.advance(AFTER + 1)
    # RFC 3501 §2.3.2: still \Recent, since no session has been told of it.
    again = open_box(store)
    assert again is not box
    assert again.peek_recent() == {record.uid}
    assert again.take_recent() == {record.uid}
    clock.advance(AFTER + 1)
    assert open_box(store).peek_recent() == frozenset()


def test_recent_follows_a_rename_while_unloaded(store: Store, clock: Clock) -> None:
    account = store.account("alice")
    account.create("Lists")
    box = open_box(store, "Lists")
    record = result_of(box.append(b"Subject: new\n\nbody\n"))
    clock.advance(AFTER + 1)
    result_of(account.rename("Lists", "Archive"))
    assert open_box(store, "Archive").peek_recent() == {record.uid}


def test_recent_of_a_deleted_mailbox_is_forgotten(store: Store, clock: Clock) -> None:
    account = store.account("alice")
    account.create("Lists")
    result_of(open_box(store, "Lists").append(b"Subject: new\n\nbody\n"))
    clock.advance(AFTER + 1)
    result_of(account.delete("Lists"))
    account.create("Lists")
    assert open_box(store, "Lists").peek_recent() == frozenset()


def test_changes_made_while_unloaded_are_found_on_reopening(store: Store, clock: Clock) -> None:
    box = open_box(store)
    first = result_of(box.append(b"Subject: one\n\nbody\n"))
    result_of(box.append(b"Subject: two\n\nbody\n"))
    path = box.message_path(first.uid)
    clock.advance(AFTER + 1)
    path.unlink()  # another program (mutt, Dovecot) removes a message meanwhile
    (store.mail_root / "alice" / "new" / "1.M1P1.host").write_bytes(b"Subject: 3\n\nb\n")
    again = open_box(store)
    assert [r.uid for r in again.records()] == [first.uid + 1, first.uid + 2]
    assert first.uid + 2 in again.peek_recent()  # found in new/: \Recent


def test_a_late_holder_still_writes_safely(store: Store, clock: Clock) -> None:
    # Whoever kept the object past its unloading (a slow APPEND literal) still
    # gets a fresh UID: they are assigned from the uidlist on disk.
    box = open_box(store)
    result_of(box.append(b"Subject: one\n\nbody\n"))
    clock.advance(AFTER + 1)
    again = open_box(store)
    heard: list[ChangeEvent] = []
    again.add_listener(heard.append)
    late = result_of(box.append(b"Subject: late\n\nbody\n"))
    mine = result_of(again.append(b"Subject: mine\n\nbody\n"))
    assert late.uid != mine.uid
    result_of(again.rescan())
    uids = [r.uid for r in again.records()]
    assert uids == sorted({1, late.uid, mine.uid})
    added = [r.uid for e in heard if isinstance(e, MessagesAdded) for r in e.records]
    assert sorted(added) == sorted({late.uid, mine.uid})


def test_zero_keeps_every_mailbox(tmp_path: Path, clock: Clock) -> None:
    store = Store(tmp_path, MailboxesConfig(unload_after=0), clock, run_synchronously)
    box = open_box(store)
    assert clock.getDelayedCalls() == []
    clock.advance(365 * 86400)
    assert open_box(store) is box


def test_store_close_stops_the_timer(store: Store, clock: Clock) -> None:
    open_box(store)
    open_box(store, user="bob")
    assert clock.getDelayedCalls()
    store.close()
    assert clock.getDelayedCalls() == []
