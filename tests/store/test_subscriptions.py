"""The ``subscriptions`` file (RFC 3501 §6.3.6, §6.3.7, §6.3.9) in Dovecot 2.3's format."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailaccess.store.model import InvalidMailboxName, StoreUnavailable
from mailaccess.store.subscriptions import (
    LOCK_STALE_AFTER,
    read_subscriptions,
    set_subscribed,
    write_subscriptions,
)
from tests.support.dovecot import Dovecot, require_dovecot

FIXTURE = Path(__file__).parent.parent / "fixtures" / "dovecot"

# Byte for byte what Dovecot 2.3.19 wrote after SUBSCRIBE "Entw&APw-rfe",
# SUBSCRIBE "A.B" and SUBSCRIBE "INBOX" (separator ".").
DOVECOT_WRITTEN = b"V\t2\n\nEntw&APw-rfe\nA\tB\nINBOX\n"


def test_read_dovecot_v2_rfc3501_6_3_9(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions"
    path.write_bytes(DOVECOT_WRITTEN)
    assert read_subscriptions(path) == ["Entwürfe", "A.B", "INBOX"]
    # The hierarchy is TAB on disk, whatever the IMAP delimiter is.
    assert read_subscriptions(path, delimiter="/") == ["Entwürfe", "A/B", "INBOX"]


def test_write_is_byte_identical_to_dovecot(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions"
    write_subscriptions(path, ["Entwürfe", "A.B", "INBOX"])
    assert path.read_bytes() == DOVECOT_WRITTEN
    write_subscriptions(path, ["Entwürfe", "A/B", "inbox"], delimiter="/")
    assert path.read_bytes() == DOVECOT_WRITTEN


def test_missing_file_is_no_subscriptions(tmp_path: Path) -> None:
    assert read_subscriptions(tmp_path / "subscriptions") == []


def test_read_v1_plain_lines(tmp_path: Path) -> None:
    # Dovecot before v2 of the file: no header, the delimiter inside names.
    path = tmp_path / "subscriptions"
    path.write_bytes(b"INBOX\nEntw&APw-rfe\nA.B\n\n")
    assert read_subscriptions(path) == ["INBOX", "Entwürfe", "A.B"]


def test_v1_is_rewritten_as_v2(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions"
    path.write_bytes(b"INBOX\nA.B\n")
    assert set_subscribed(path, "Sent", True)
    assert path.read_bytes() == b"V\t2\n\nINBOX\nA\tB\nSent\n"


def test_control_characters_are_tab_escaped(tmp_path: Path) -> None:
    # A level may contain TAB etc. (modified UTF-7 spells them in BASE64, so
    # only a raw \x01 from another writer needs Dovecot's escape).
    path = tmp_path / "subscriptions"
    path.write_bytes(b"V\t2\n\nodd\x011name\x01tx\tsub\n")
    assert read_subscriptions(path, delimiter="/") == ["odd\x01name\tx/sub"]


def test_round_trip_unicode_and_nesting_rfc3501_5_1_3(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions"
    names = ["INBOX", "Archiv.2024.Q1", "台北.日本語", "a&b", "Tab\there", "📬"]
    write_subscriptions(path, names)
    assert read_subscriptions(path) == names
    assert path.read_bytes().startswith(b"V\t2\n\n")
    assert all(byte < 0x80 for byte in path.read_bytes())


def test_duplicates_written_once(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions"
    write_subscriptions(path, ["A", "INBOX", "A", "inbox"])
    assert read_subscriptions(path) == ["A", "INBOX"]


def test_subscribe_and_unsubscribe_rfc3501_6_3_6(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions"
    assert set_subscribed(path, "Sent", True)
    assert set_subscribed(path, "Drafts", True)
    assert not set_subscribed(path, "Sent", True)  # already: no change
    assert read_subscriptions(path) == ["Sent", "Drafts"]
    assert set_subscribed(path, "Sent", False)  # RFC 3501 §6.3.7
    assert not set_subscribed(path, "Nowhere", False)
    assert read_subscriptions(path) == ["Drafts"]
    assert not (tmp_path / "subscriptions.lock").exists()


def test_empty_name_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidMailboxName):
        write_subscriptions(tmp_path / "subscriptions", ["A", ""])
    assert not (tmp_path / "subscriptions").exists()
    assert not (tmp_path / "subscriptions.lock").exists()


def test_held_lock_refused_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions"
    write_subscriptions(path, ["A"])
    lock = tmp_path / "subscriptions.lock"
    lock.write_bytes(b"V\t2\n\nhalf written by Dovecot")
    mtime = lock.stat().st_mtime
    with pytest.raises(StoreUnavailable, match="another process"):
        write_subscriptions(path, ["B"], now=lambda: mtime + 1)
    # Dovecot's lock and our old file are both untouched.
    assert lock.read_bytes() == b"V\t2\n\nhalf written by Dovecot"
    assert read_subscriptions(path) == ["A"]


def test_stale_lock_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions"
    lock = tmp_path / "subscriptions.lock"
    lock.write_bytes(b"left by a crash")
    mtime = lock.stat().st_mtime
    write_subscriptions(path, ["B"], now=lambda: mtime + LOCK_STALE_AFTER + 1)
    assert read_subscriptions(path) == ["B"]
    assert not lock.exists()


def test_failed_write_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "subscriptions"
    write_subscriptions(path, ["A"])

    def full_disk(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(StoreUnavailable, match="No space left"):
        write_subscriptions(path, ["B"])
    monkeypatch.undo()
    assert read_subscriptions(path) == ["A"]
    assert not (tmp_path / "subscriptions.lock").exists()


def test_mode_of_existing_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions"
    write_subscriptions(path, ["A"])
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    write_subscriptions(path, ["B"])
    assert path.stat().st_mode & 0o777 == 0o640


def test_undecodable_entry_kept_verbatim(tmp_path: Path) -> None:
    # RFC 3501 §6.3.6: a subscription need not name a valid mailbox; a name
    # another program wrote badly is listed as it is, not dropped.
    path = tmp_path / "subscriptions"
    path.write_bytes(b"V\t2\n\n&AGE-\nok\n")
    assert read_subscriptions(path) == ["&AGE-", "ok"]


def test_committed_fixture_subscriptions() -> None:
    path = FIXTURE / "alice" / "subscriptions"
    if not path.exists():
        pytest.skip("tests/fixtures/dovecot not generated yet")
    import json

    facts = json.loads((FIXTURE / "facts.json").read_text())
    assert read_subscriptions(path) == facts["subscriptions"]


def test_interleaved_with_real_dovecot_rfc3501_6_3_6(tmp_path: Path) -> None:
    """Dovecot and we change one subscriptions file in turns; nobody's change is lost."""
    require_dovecot()
    import imaplib

    with Dovecot(tmp_path / "dovecot") as dovecot:
        path = dovecot.user_root("alice") / "subscriptions"
        imap = imaplib.IMAP4("127.0.0.1", dovecot.ports["imap"])
        try:
            assert imap.login("alice", "secret")[0] == "OK"
            for name in ("Entw&APw-rfe", "A.B"):
                assert imap.create(name)[0] == "OK"
            assert imap.subscribe("Entw&APw-rfe")[0] == "OK"
            assert set_subscribed(path, "A.B", True)
            assert set_subscribed(path, "台北", True)  # need not exist (§6.3.6)
            dovecot.hand_over(path)
            assert imap.subscribe("INBOX")[0] == "OK"
            assert imap.unsubscribe("Entw&APw-rfe")[0] == "OK"
            status, lines = imap.lsub()
            assert status == "OK"
        finally:
            imap.logout()
    listed = [line.rsplit(b" ", 1)[1].decode().strip('"') for line in lines]
    assert sorted(listed) == ["&U,BTFw-", "A.B", "INBOX"]  # LSUB order is its own
    assert read_subscriptions(path) == ["A.B", "台北", "INBOX"]
    assert path.read_bytes() == b"V\t2\n\nA\tB\n&U,BTFw-\nINBOX\n"
