"""Accounts: folders, LIST attributes, CREATE/DELETE/RENAME, special use, subscriptions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from mailaccess.config import MailboxesConfig
from mailaccess.store.account import Account, Store
from mailaccess.store.mailbox import run_synchronously
from mailaccess.store.model import (
    ChangeEvent,
    InvalidMailboxName,
    MailboxDeleted,
    MailboxExists,
    MessagesExpunged,
    NoSuchMailbox,
    StoreError,
)
from tests.store.conftest import failure_of, result_of


def listing(account: Account) -> dict[str, set[str]]:
    return {entry.name: set(entry.attributes) for entry in account.list_mailboxes()}


def test_layout_is_dovecot_maildir_plus_plus(store: Store) -> None:
    alice = store.account("alice")
    alice.create("Entwürfe.Alt")
    root = store.mail_root / "alice"
    assert {"cur", "new", "tmp"} <= set(os.listdir(root))
    # Modified UTF-7 per level (RFC 3501 §5.1.3), "." between levels.
    folder = root / ".Entw&APw-rfe.Alt"
    assert (folder / "maildirfolder").exists() and (folder / "cur").is_dir()
    assert (root / ".Entw&APw-rfe" / "maildirfolder").exists()


def test_create_makes_superior_names_rfc3501_6_3_3(store: Store) -> None:
    alice = store.account("alice")
    alice.create("a.b.c")
    assert listing(alice) == {
        "INBOX": {"\\HasNoChildren"},
        "a": {"\\HasChildren"},
        "a.b": {"\\HasChildren"},
        "a.b.c": {"\\HasNoChildren"},
    }
    with pytest.raises(MailboxExists):
        alice.create("a.b")
    with pytest.raises(MailboxExists):
        alice.create("inbox")


@pytest.mark.parametrize("bad", ["", ".a", "a.", "a..b", "a/b", "x\ty", "~x"])
def test_invalid_names_are_refused(store: Store, bad: str) -> None:
    with pytest.raises(InvalidMailboxName):
        store.account("alice").create(bad)


def test_inbox_is_case_insensitive_rfc3501_5_1(store: Store) -> None:
    alice = store.account("alice")
    assert result_of(alice.mailbox("iNbOx")) is result_of(alice.mailbox("INBOX"))


def test_sessions_share_one_mailbox_object(store: Store) -> None:
    alice = store.account("alice")
    assert store.account("alice") is alice
    alice.create("Work")
    assert result_of(alice.mailbox("Work")) is result_of(alice.mailbox("Work"))


def test_missing_mailbox_is_no_such_mailbox(store: Store) -> None:
    assert isinstance(failure_of(store.account("alice").mailbox("Nope")), NoSuchMailbox)


def test_parent_that_is_only_a_path_is_noselect_rfc3501_7_2_2(store: Store) -> None:
    alice = store.account("alice")
    (store.mail_root / "alice" / ".x.y" / "cur").mkdir(parents=True)
    assert listing(alice)["x"] == {"\\Noselect", "\\HasChildren"}
    assert listing(alice)["x.y"] == {"\\HasNoChildren"}


def test_delete_with_children_leaves_noselect_rfc3501_6_3_4(store: Store) -> None:
    alice = store.account("alice")
    alice.create("p.c")
    parent = result_of(alice.mailbox("p"))
    result_of(parent.append(b"x\n"))
    heard: list[ChangeEvent] = []
    parent.add_listener(heard.append)
    result_of(alice.delete("p"))
    assert listing(alice)["p"] == {"\\Noselect", "\\HasChildren"}
    assert heard == [MessagesExpunged("p", (1,)), MailboxDeleted("p")]
    # Deleting a \Noselect name with inferiors is an error (RFC 3501 §6.3.4).
    assert isinstance(failure_of(alice.delete("p")), NoSuchMailbox)
    assert isinstance(failure_of(parent.append(b"y\n")), NoSuchMailbox)
    result_of(alice.delete("p.c"))
    assert set(listing(alice)) == {"INBOX"}
    assert not (store.mail_root / "alice" / "..DOVECOT-TRASH").exists()


def test_delete_inbox_is_refused(store: Store) -> None:
    assert isinstance(failure_of(store.account("alice").delete("INBOX")), InvalidMailboxName)


def test_rename_moves_children_rfc3501_6_3_5(store: Store) -> None:
    alice = store.account("alice")
    alice.create("a.b")
    box = result_of(alice.mailbox("a.b"))
    result_of(box.append(b"x\n"))
    uidvalidity = box.uidvalidity
    result_of(alice.rename("a", "z.y"))
    assert listing(alice) == {
        "INBOX": {"\\HasNoChildren"},
        "z": {"\\HasChildren"},
        "z.y": {"\\HasChildren"},
        "z.y.b": {"\\HasNoChildren"},
    }
    # The open mailbox follows its directory: same object, same UIDs.
    moved = result_of(alice.mailbox("z.y.b"))
    assert moved is box and box.name == "z.y.b" and box.uidvalidity == uidvalidity
    with box.open_message(1) as f:
        assert f.read() == b"x\n"
    assert isinstance(failure_of(alice.rename("z", "INBOX")), MailboxExists)
    assert isinstance(failure_of(alice.rename("z", "z.q")), InvalidMailboxName)
    assert isinstance(failure_of(alice.rename("nope", "q")), NoSuchMailbox)


def test_rename_inbox_moves_messages_and_leaves_it_empty_rfc3501_6_3_5(store: Store) -> None:
    alice = store.account("alice")
    inbox = result_of(alice.mailbox("INBOX"))
    result_of(inbox.append(b"one\n", frozenset({"\\Seen"})))
    result_of(inbox.append(b"two\n"))
    alice.create("INBOX.kid")
    result_of(alice.rename("INBOX", "Old"))
    assert inbox.records() == ()
    old = result_of(alice.mailbox("Old"))
    assert [r.flags for r in old.records()] == [{"\\Seen"}, frozenset()]
    assert "INBOX.kid" in listing(alice)  # inferiors of INBOX stay


def test_special_use_folders_created_on_first_access_rfc6154(tmp_path: Path) -> None:
    config = MailboxesConfig(auto_create={"Sent": "\\Sent", "Trash": "\\Trash"})
    store = Store(tmp_path, config, Clock(), run_synchronously)
    alice = store.account("alice")
    assert listing(alice)["Sent"] == {"\\HasNoChildren", "\\Sent"}
    assert alice.subscriptions() == ["Sent", "Trash"]
    assert (tmp_path / "alice" / "mailaccess-special-use").read_text() == (
        "\\Sent\tSent\n\\Trash\tTrash\n"
    )
    # A new Store (restart) reads the attributes back; rename carries them.
    again = Store(tmp_path, config, Clock(), run_synchronously).account("alice")
    result_of(again.rename("Trash", "Bin"))
    assert listing(again)["Bin"] == {"\\HasNoChildren", "\\Trash"}


def test_create_with_unknown_special_use_is_refused(store: Store) -> None:
    with pytest.raises(InvalidMailboxName):
        store.account("alice").create("X", special_use="\\Important")


def test_subscriptions_rfc3501_6_3_6(store: Store) -> None:
    alice = store.account("alice")
    alice.subscribe("Lists.Python")  # need not exist
    alice.subscribe("inbox")
    assert alice.subscriptions() == ["Lists.Python", "INBOX"]
    alice.unsubscribe("Lists.Python")
    assert alice.subscriptions() == ["INBOX"]


@pytest.mark.parametrize("bad", ["", "..", ".hidden", "a/b"])
def test_bad_usernames_are_refused(store: Store, bad: str) -> None:
    with pytest.raises(StoreError):
        store.account(bad)
