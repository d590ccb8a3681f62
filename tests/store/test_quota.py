"""Quota: Maildir++ ``maildirsize`` bookkeeping and the store refusing with OverQuota."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from mailaccess.config import MailboxesConfig
from mailaccess.store.account import Store
from mailaccess.store.mailbox import run_synchronously
from mailaccess.store.model import OverQuota
from mailaccess.store.quota import (
    RECOUNT_ABOVE,
    Quota,
    QuotaPolicy,
    QuotaSizeError,
    Usage,
    count_usage,
    parse_size,
    storage_from_quota_rule,
)
from tests.store.conftest import failure_of, result_of

MESSAGE = b"Subject: q\n\n" + b"x" * 88 + b"\n"  # 101 octets as stored (LF)


@pytest.mark.parametrize(
    ("text", "size"),
    [(0, 0), (1234, 1234), ("1234", 1234), ("20k", 20480), ("500M", 500 * 2**20), ("1G", 2**30)],
)
def test_parse_size_dovecot_units(text: Any, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1X", "-1", "1.5G", "G"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(QuotaSizeError):
        parse_size(text)


@pytest.mark.parametrize(
    ("rule", "limit"),
    [
        ("*:storage=1G", 2**30),
        ("*:storage=100M:messages=1000", 100 * 2**20),
        ("*:storage=0", 0),
        ("*:ignore", 0),
        ("Trash:storage=+100M", None),
        ("*:storage=10%", None),
        ("*:messages=10", None),
        ("*:storage=lots", None),
    ],
)
def test_dovecot_quota_rule(rule: str, limit: int | None) -> None:
    assert storage_from_quota_rule(rule) == limit


@pytest.fixture
def store(tmp_path: Path) -> Store:
    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}x\nbob:{PLAIN}x::::::userdb_quota_rule=*:storage=150\n")
    policy = QuotaPolicy(1000, users, user_rules=True)
    clock: Any = Clock()
    return Store(
        tmp_path / "mail", MailboxesConfig(), clock, run_synchronously, quota_policy=policy
    )


def inbox(store: Store, user: str = "alice") -> Any:
    return result_of(store.account(user).mailbox("INBOX"))


def maildirsize(store: Store, user: str = "alice") -> list[str]:
    return (store.mail_root / user / "maildirsize").read_text().splitlines()


def test_append_keeps_maildirsize_in_maildirplusplus_format(store: Store) -> None:
    box = inbox(store)
    result_of(box.append(MESSAGE))
    result_of(box.append(MESSAGE))
    # The first check finds no file: the Maildir is counted (empty) and the
    # file written; each append then adds its line, as Maildir++ writers do.
    assert maildirsize(store) == ["1000S", "0 0", "101 1", "101 1"]
    assert store.account("alice").quota.usage() == Usage(202, 2)


def test_append_over_quota_raises_overquota_and_leaves_nothing(store: Store) -> None:
    box = inbox(store)
    for _ in range(9):
        result_of(box.append(MESSAGE))
    error = failure_of(box.append(MESSAGE))  # 1010 > 1000
    assert isinstance(error, OverQuota)
    assert "909 of 1000 bytes used" in str(error)
    root = store.mail_root / "alice"
    assert len(box.records()) == 9 and len(os.listdir(root / "cur")) == 9
    assert os.listdir(root / "tmp") == []
    assert len((root / "dovecot-uidlist").read_text().splitlines()) == 1 + 9
    assert result_of(box.append(b"small\n")).uid == 10  # what fits still goes in


def test_expunge_gives_the_space_back(store: Store) -> None:
    box = inbox(store)
    uids = [result_of(box.append(MESSAGE)).uid for _ in range(9)]
    result_of(box.expunge(uids[:3]))
    assert maildirsize(store)[-1] == "-303 -3"
    assert store.account("alice").quota.usage() == Usage(606, 6)
    result_of(box.append(MESSAGE))
    result_of(box.append(MESSAGE))


def test_copy_counts_against_the_destination_account(store: Store) -> None:
    account = store.account("alice")
    account.create("Archive")
    box, archive = inbox(store), result_of(account.mailbox("Archive"))
    uids = [result_of(box.append(MESSAGE)).uid for _ in range(5)]
    result_of(box.copy(uids[:4], archive))
    assert isinstance(failure_of(box.copy(uids, archive)), OverQuota)  # 909 + 505
    assert len(archive.records()) == 4
    assert account.quota.usage() == Usage(909, 9)


def test_move_to_trash_works_at_the_limit_rfc6851(store: Store) -> None:
    # A client deletes by moving to Trash: a user at the limit must still be
    # able to, since the move frees what it adds (as Dovecot's quota plugin).
    account = store.account("alice")
    account.create("Trash")
    box, trash = inbox(store), result_of(account.mailbox("Trash"))
    uids = [result_of(box.append(MESSAGE)).uid for _ in range(9)]
    assert isinstance(failure_of(box.append(MESSAGE)), OverQuota)  # 909 + 101
    assert isinstance(failure_of(box.copy(uids[:5], trash)), OverQuota)  # a copy is new data
    pairs = result_of(box.move(uids[:5], trash))
    assert [old for old, _ in pairs] == uids[:5]
    assert len(box.records()) == 4 and len(trash.records()) == 5
    assert account.quota.usage() == Usage(909, 9)  # counted in, then out


def test_move_to_another_account_is_checked(store: Store) -> None:
    alice, bob = inbox(store), inbox(store, "bob")
    uid = result_of(alice.append(MESSAGE)).uid
    result_of(bob.append(MESSAGE))
    assert isinstance(failure_of(alice.move([uid], bob)), OverQuota)  # 202 > 150
    assert [r.uid for r in alice.records()] == [uid]


def test_users_file_rule_overrides_the_default_and_is_reread(store: Store) -> None:
    bob = inbox(store, "bob")
    result_of(bob.append(MESSAGE))
    assert isinstance(failure_of(bob.append(MESSAGE)), OverQuota)  # 202 > 150
    users = store.mail_root.parent / "users"
    users.write_text("alice:{PLAIN}x\nbob:{PLAIN}x::::::userdb_quota_rule=*:storage=1k\n")
    os.utime(users, ns=(0, 10**18))  # a different mtime even within one tick
    result_of(bob.append(MESSAGE))
    # The limit changed: the file was counted again under its new limit line.
    assert maildirsize(store, "bob")[0] == "1024S"


def test_no_limit_no_file(tmp_path: Path) -> None:
    clock: Any = Clock()
    policy = QuotaPolicy(0, None, user_rules=False)
    assert not policy.enabled
    store = Store(
        tmp_path / "mail", MailboxesConfig(), clock, run_synchronously, quota_policy=policy
    )
    result_of(inbox(store).append(MESSAGE * 100))
    assert store.account("alice").quota is None
    assert not (tmp_path / "mail/alice/maildirsize").exists()


def test_reads_a_dovecot_maildirsize_and_recounts_when_too_long(tmp_path: Path) -> None:
    root = tmp_path / "alice"
    for sub in ("cur", "new", "tmp", ".Sent/cur", ".Sent/new"):
        (root / sub).mkdir(parents=True)
    (root / "cur" / "1.M1P1.host,S=300,W=310:2,S").write_bytes(b"x" * 300)
    (root / "new" / "2.M2P2.host").write_bytes(b"y" * 50)  # an MTA's name: no S=
    (root / ".Sent/cur" / "3.M3P3.host,S=200:2,S").write_bytes(b"z" * 200)
    assert count_usage(root) == Usage(550, 3)
    clock = Clock()
    quota = Quota(root, lambda: 1000, clock.seconds)
    # As Dovecot writes it: limits (bytes and count), then usage lines.
    (root / "maildirsize").write_text("1000S,100C\n400 2\n100 1\n")
    assert quota.usage() == Usage(500, 3)
    quota.check(500)
    with pytest.raises(OverQuota):
        quota.check(501)
    # Maildir++: a file past 5120 bytes is counted again from the messages.
    (root / "maildirsize").write_text("1000S\n" + "1 0\n" * (RECOUNT_ABOVE // 4 + 1))
    assert quota.usage() == Usage(550, 3)
    assert (root / "maildirsize").read_text() == "1000S\n550 3\n"


def test_refusal_recounts_a_stale_file_first(tmp_path: Path) -> None:
    root = tmp_path / "alice"
    (root / "cur").mkdir(parents=True)
    clock = Clock()
    quota = Quota(root, lambda: 1000, clock.seconds)
    # Drift: a crash between a delivery and its line, or mail removed by hand.
    (root / "maildirsize").write_text("1000S\n990 5\n")
    with pytest.raises(OverQuota):
        quota.check(100)  # the file is fresh: believed
    clock.advance(os.stat(root / "maildirsize").st_mtime + 16 * 60)
    quota.check(100)  # stale: counted again (the Maildir is empty), and it fits
    assert (root / "maildirsize").read_text() == "1000S\n0 0\n"


def test_concurrent_appenders_each_add_one_whole_line(tmp_path: Path) -> None:
    """Two processes (server and deliver) share the file: O_APPEND lines never mix."""
    root = tmp_path / "alice"
    (root / "cur").mkdir(parents=True)
    clock = Clock()
    a = Quota(root, lambda: 10**9, clock.seconds)
    b = Quota(root, lambda: 10**9, clock.seconds)
    a.update(0, 0)
    a.check(1)  # creates the file
    for i in range(50):
        (a if i % 2 else b).update(100, 1)
    assert a.usage() == b.usage() == Usage(5000, 50)
