"""The Mailbox: index, durable mutations, events, other programs' changes."""

from __future__ import annotations

import errno
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from mailaccess.store import mailbox as mailbox_module
from mailaccess.store import maildir, uidlist
from mailaccess.store.mailbox import Mailbox
from mailaccess.store.model import (
    ChangeEvent,
    FlagsChanged,
    MailboxReset,
    MessageGone,
    MessageRecord,
    MessagesAdded,
    MessagesExpunged,
    StoreUnavailable,
)
from tests.store.conftest import failure_of, result_of

Opener = Callable[..., Mailbox]
MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n"


def cur_names(box: Mailbox) -> list[str]:
    return sorted(os.listdir(box.path / "cur"))


def test_append_stores_lf_with_sizes_flags_and_uid(open_mailbox: Opener) -> None:
    box = open_mailbox()
    record = result_of(box.append(MSG, frozenset({"\\Seen", "$Forwarded"}), 1_600_000_000.0))
    assert record.uid == 1 and box.uidnext == 2
    assert record.size == len(MSG) - 5 and record.vsize == len(MSG)
    assert record.flags == {"\\Seen", "$Forwarded"}
    assert record.internal_date == 1_600_000_000.0
    (name,) = cur_names(box)
    assert name == f"{record.base}:2,Sa"
    assert f",S={record.size},W={record.vsize}" in record.base
    assert (box.path / "cur" / name).read_bytes() == maildir.to_lf(MSG)
    assert os.listdir(box.path / "tmp") == []
    assert (box.path / "dovecot-keywords").read_text() == "0 $Forwarded\n"
    lines = (box.path / "dovecot-uidlist").read_text().splitlines()
    assert lines[0].startswith(f"3 V{box.uidvalidity} ")
    assert lines[1:] == [f"1 :{record.base}"]
    with box.open_message(1) as f:
        assert f.read() == maildir.to_lf(MSG)


def test_reopen_keeps_uids_flags_and_uidvalidity(open_mailbox: Opener) -> None:
    box = open_mailbox()
    for i in range(3):
        result_of(box.append(MSG + str(i).encode()))
    result_of(box.store_flags([2], frozenset({"\\Answered", "Work"}), "add"))
    result_of(box.expunge([1]))
    again = open_mailbox()
    assert again is not box
    assert again.uidvalidity == box.uidvalidity
    assert [(r.uid, r.flags) for r in again.records()] == [
        (2, {"\\Answered", "Work"}),
        (3, frozenset()),
    ]
    # RFC 3501 §2.3.1.1: UIDs are never reused, even of the expunged highest one.
    result_of(again.expunge([3]))
    assert open_mailbox().uidnext == 4


def test_record_lookup_by_uid(open_mailbox: Opener) -> None:
    box = open_mailbox()
    for _ in range(5):
        result_of(box.append(MSG))
    result_of(box.expunge([2, 4]))
    assert [box.record(u) is not None for u in range(7)] == [
        False, True, False, True, False, True, False,
    ]  # fmt: skip


def test_two_listeners_hear_the_same_events_in_the_same_order(open_mailbox: Opener) -> None:
    box = open_mailbox()
    heard_a: list[ChangeEvent] = []
    heard_b: list[ChangeEvent] = []
    box.add_listener(heard_a.append)
    box.add_listener(heard_b.append)
    fired: list[str] = []
    d = box.append(MSG)
    d.addCallback(lambda _: fired.append(f"append after {len(heard_a)} events"))
    result_of(box.store_flags([1], frozenset({"\\Seen"}), "add"))
    result_of(box.store_flags([1], frozenset({"\\Seen"}), "add"))  # no change: no event
    result_of(box.expunge([1, 99]))
    assert heard_a == heard_b
    assert [type(e) for e in heard_a] == [MessagesAdded, FlagsChanged, MessagesExpunged]
    assert heard_a[1] == FlagsChanged("box", ((1, frozenset({"\\Seen"})),))
    assert heard_a[2] == MessagesExpunged("box", (1,))
    # The event is out before the mutation's Deferred fires.
    assert fired == ["append after 1 events"]


def test_a_failing_listener_does_not_stop_the_others(open_mailbox: Opener) -> None:
    box = open_mailbox()
    heard: list[ChangeEvent] = []

    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("session bug")

    box.add_listener(broken)
    box.add_listener(heard.append)
    result_of(box.append(MSG))
    assert len(heard) == 1


def test_store_flags_modes_rfc3501_6_4_6(open_mailbox: Opener) -> None:
    box = open_mailbox()
    result_of(box.append(MSG, frozenset({"\\Seen"})))
    assert result_of(box.store_flags([1], frozenset({"\\Flagged", "A"}), "add")) == {
        1: {"\\Seen", "\\Flagged", "A"}
    }
    assert result_of(box.store_flags([1], frozenset({"\\Seen"}), "remove")) == {
        1: {"\\Flagged", "A"}
    }
    assert result_of(box.store_flags([1, 5], frozenset({"\\Draft"}), "replace")) == {
        1: {"\\Draft"}
    }
    assert cur_names(box) == [f"{box.record(1).base}:2,D"]  # type: ignore[union-attr]


def test_records_snapshot_is_not_changed_by_later_mutations(open_mailbox: Opener) -> None:
    box = open_mailbox()
    result_of(box.append(MSG))
    snapshot = box.records()
    result_of(box.store_flags([1], frozenset({"\\Seen"}), "add"))
    result_of(box.append(MSG))
    assert len(snapshot) == 1 and snapshot[0].flags == frozenset()


def test_take_recent_goes_to_exactly_one_session_rfc3501_2_3_2(open_mailbox: Opener) -> None:
    box = open_mailbox()
    (box.path / "new" / "100.M1P1.mta").write_bytes(b"Subject: x\n\nbody\n")
    box = open_mailbox()
    assert box.take_recent() == {1}
    assert box.take_recent() == frozenset()
    result_of(box.append(MSG))
    assert box.take_recent() == {2}
    assert box.take_recent() == frozenset()


def test_recent_survives_a_restart_until_told_rfc3501_2_3_2(open_mailbox: Opener) -> None:
    # open_mailbox() again is a new Mailbox object on the same Maildir: a restart.
    box = open_mailbox()
    (box.path / "new" / "100.M1P1.mta").write_bytes(b"Subject: x\n\nbody\n")
    box = open_mailbox()  # 1 found in new/
    result_of(box.append(MSG))  # 2, delivered while no session is in it
    box = open_mailbox()
    assert box.peek_recent() == {1, 2}
    assert box.take_recent() == {1, 2}
    result_of(box.append(MSG))  # 3
    box = open_mailbox()
    assert box.take_recent() == {3}  # 1 and 2 were told before the restart
    box = open_mailbox()
    assert box.peek_recent() == frozenset()


def test_open_moves_new_to_cur_and_lists_unknown_files(open_mailbox: Opener) -> None:
    box = open_mailbox()
    result_of(box.append(MSG))
    (box.path / "new" / "200.M1P1.mta").write_bytes(b"a\nb\n")
    (box.path / "cur" / "150.M1P1.mutt:2,RS").write_bytes(b"c\r\n")
    box = open_mailbox()
    assert os.listdir(box.path / "new") == []
    assert "200.M1P1.mta:2," in cur_names(box)
    assert [(r.uid, r.base, r.flags, r.size, r.vsize) for r in box.records()] == [
        (1, box.record(1).base, frozenset(), len(MSG) - 5, len(MSG)),  # type: ignore[union-attr]
        (2, "150.M1P1.mutt", {"\\Answered", "\\Seen"}, 3, 3),
        (3, "200.M1P1.mta", frozenset(), 4, 6),
    ]
    lines = (box.path / "dovecot-uidlist").read_text().splitlines()
    # The CRLF size goes into the uidlist (Dovecot's W extension).
    assert lines[2:] == ["2 W3 :150.M1P1.mutt", "3 W6 :200.M1P1.mta"]


def test_append_enospc_leaves_nothing_behind(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = open_mailbox()
    result_of(box.append(MSG))
    uidlist_before = (box.path / "dovecot-uidlist").read_bytes()

    def full_disk(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(maildir.os, "write", full_disk)
    error = failure_of(box.append(MSG))
    assert isinstance(error, StoreUnavailable) and "disk is full" in str(error)
    monkeypatch.undo()
    assert os.listdir(box.path / "tmp") == []
    assert len(cur_names(box)) == 1
    assert (box.path / "dovecot-uidlist").read_bytes() == uidlist_before
    assert box.uidnext == 2
    assert result_of(box.append(MSG)).uid == 2


def test_append_uidlist_failure_hands_out_no_uid(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = open_mailbox()
    uidlist_before = (box.path / "dovecot-uidlist").read_bytes()
    real_fsync = os.fsync
    uidlist_fds: list[int] = []
    real_open = uidlist.os.open

    def tracking_open(path: object, flags: int, *args: object) -> int:
        fd = real_open(path, flags, *args)  # type: ignore[arg-type]
        if str(path).endswith("dovecot-uidlist") and flags & os.O_APPEND:
            uidlist_fds.append(fd)
        return fd

    def failing_fsync(fd: int) -> None:
        if fd in uidlist_fds:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(uidlist.os, "open", tracking_open)
    monkeypatch.setattr(uidlist.os, "fsync", failing_fsync)
    error = failure_of(box.append(MSG))
    assert isinstance(error, StoreUnavailable) and "I/O error" in str(error)
    monkeypatch.undo()
    assert cur_names(box) == [] and os.listdir(box.path / "tmp") == []
    assert (box.path / "dovecot-uidlist").read_bytes() == uidlist_before
    assert box.records() == () and box.uidnext == 1


def test_copy_hard_links_and_keeps_flags_and_date(open_mailbox: Opener) -> None:
    source = open_mailbox("src")
    target = open_mailbox("dst")
    result_of(target.append(b"existing\n"))
    result_of(source.append(MSG, frozenset({"\\Seen", "Blue"}), 1_500_000_000.0))
    result_of(source.append(MSG + b"2"))
    heard: list[ChangeEvent] = []
    target.add_listener(heard.append)
    assert result_of(source.copy([2, 1, 7], target)) == [(1, 2), (2, 3)]
    copied = target.record(2)
    assert copied is not None
    assert copied.flags == {"\\Seen", "Blue"} and copied.internal_date == 1_500_000_000.0
    src_stat = os.stat(source.message_path(1))
    assert os.stat(target.message_path(2)).st_ino == src_stat.st_ino
    assert [type(e) for e in heard] == [MessagesAdded]
    assert os.listdir(target.path / "tmp") == []


def test_move_rfc6851_copies_then_expunges(open_mailbox: Opener) -> None:
    source = open_mailbox("src")
    target = open_mailbox("dst")
    result_of(source.append(MSG))
    result_of(source.append(MSG))
    assert result_of(source.move([1], target)) == [(1, 1)]
    assert [r.uid for r in source.records()] == [2]
    with target.open_message(1) as f:
        assert f.read() == maildir.to_lf(MSG)


def test_open_message_of_expunged_uid_is_message_gone(open_mailbox: Opener) -> None:
    box = open_mailbox()
    result_of(box.append(MSG))
    result_of(box.expunge([1]))
    with pytest.raises(MessageGone):
        box.open_message(1)


def test_open_message_follows_a_rename_by_another_program(open_mailbox: Opener) -> None:
    box = open_mailbox()
    record = result_of(box.append(MSG))
    os.rename(box.message_path(1), box.path / "cur" / f"{record.base}:2,S")
    with box.open_message(1) as f:
        assert f.read() == maildir.to_lf(MSG)


def test_rescan_reports_external_add_rename_remove(open_mailbox: Opener) -> None:
    box = open_mailbox()
    for _ in range(3):
        result_of(box.append(MSG))
    heard: list[ChangeEvent] = []
    box.add_listener(heard.append)
    cur = box.path / "cur"
    # mutt sets \Seen on 1, another program deletes 2, an MTA delivers one.
    os.rename(box.message_path(1), cur / f"{box.record(1).base}:2,S")  # type: ignore[union-attr]
    os.unlink(box.message_path(2))
    (box.path / "new" / "999.M1P1.mta").write_bytes(b"new mail\n")
    result_of(box.rescan())
    assert heard[0] == MessagesExpunged("box", (2,))
    assert heard[1] == FlagsChanged("box", ((1, frozenset({"\\Seen"})),))
    assert isinstance(heard[2], MessagesAdded)
    assert [r.uid for r in heard[2].records] == [4]
    assert box.take_recent() == {1, 2, 3, 4} - {2}
    # A second rescan finds nothing new: no double events.
    result_of(box.rescan())
    assert len(heard) == 3


def test_rescan_after_own_mutations_emits_nothing(open_mailbox: Opener) -> None:
    box = open_mailbox()
    result_of(box.append(MSG))
    result_of(box.store_flags([1], frozenset({"\\Seen", "k"}), "add"))
    heard: list[ChangeEvent] = []
    box.add_listener(heard.append)
    result_of(box.rescan())
    assert heard == []


def test_unknown_flag_letters_survive_our_renames(open_mailbox: Opener) -> None:
    box = open_mailbox()
    (box.path / "cur" / "5.M1P1.h:2,PS").write_bytes(b"x\n")
    box = open_mailbox()
    assert box.record(1).flags == {"\\Seen"}  # type: ignore[union-attr]
    result_of(box.store_flags([1], frozenset({"\\Flagged"}), "add"))
    assert cur_names(box) == ["5.M1P1.h:2,FPS"]


def test_uids_assigned_by_another_program_are_taken(open_mailbox: Opener) -> None:
    box = open_mailbox()
    result_of(box.append(MSG))
    # Dovecot delivers a message and lists it as UID 7 (its N had moved on).
    (box.path / "cur" / "300.M1P1.dovecot,S=2,W=3:2,").write_bytes(b"x\n")
    with open(box.path / "dovecot-uidlist", "a") as f:
        f.write("7 :300.M1P1.dovecot,S=2,W=3\n")
    heard: list[ChangeEvent] = []
    box.add_listener(heard.append)
    # Our next append learns of it first, so UIDs stay in order.
    record = result_of(box.append(MSG))
    assert record.uid == 8
    assert [r.uid for r in box.records()] == [1, 7, 8]
    assert [[r.uid for r in e.records] for e in heard if isinstance(e, MessagesAdded)] == [
        [7],
        [8],
    ]


def test_torn_uidlist_line_is_repaired_on_open(open_mailbox: Opener) -> None:
    box = open_mailbox()
    result_of(box.append(MSG))
    with open(box.path / "dovecot-uidlist", "a") as f:
        f.write("2 :half-writ")
    box = open_mailbox()
    assert (box.path / "dovecot-uidlist").read_text().endswith("\n")
    assert result_of(box.append(MSG)).uid == 2
    assert [r.uid for r in open_mailbox().records()] == [1, 2]


def test_index_built_by_a_scan_costs_under_1000_bytes_per_message(
    open_mailbox: Opener, tmp_path: Path
) -> None:
    # 100,000 messages must stay under 100 MB of index: measure what a real
    # scan keeps per message (records, odd names, recent set), on 3,000 files.
    path = tmp_path / "big"
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    for i in range(3000):
        name = f"{1700000000 + i}.M{i}P99Q{i}.mail.example.org,S=10,W=11:2,S"
        (path / "cur" / name).write_bytes(b"x" * 10)
    open_mailbox("big")  # assigns the UIDs once; the measured open just reads
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    box = open_mailbox("big")
    box.records()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # Everything the process still holds after the open counts, index or not.
    kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(box.records()) == 3000
    print(f"index: {kept / 3000:.0f} bytes per message")
    assert kept / 3000 < 1000, kept / 3000


def test_index_of_100000_messages_stays_under_100_mb() -> None:
    # Records as _make_record builds them: interned flag sets, a fresh base
    # string each, floats for the date.
    tracemalloc.start()
    seen = maildir.intern_flags({"\\Seen"})
    records = [
        MessageRecord(
            uid,
            f"{1700000000 + uid}.M{uid % 1000000}P12345Q{uid}.mail.example.org,S=68000,W=69000",
            seen,
            68000 + uid,
            69000 + uid,
            1700000000.0 + uid,
        )
        for uid in range(1, 100_001)
    ]
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(records) == 100_000
    assert current < 100 * 1024 * 1024, current
    # slots: no per-record __dict__
    assert not hasattr(records[0], "__dict__")
    assert attrs.has(MessageRecord)


def test_run_synchronously_passes_errors() -> None:
    def boom() -> None:
        raise ValueError("x")

    assert isinstance(failure_of(mailbox_module.run_synchronously(boom)), ValueError)


def test_message_info_parses_then_serves_from_cache(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailaccess.store import mime

    box = open_mailbox()
    result_of(box.append(MSG))
    info = result_of(box.message_info(1))
    assert info.envelope.subject == b"hi"
    # A restart reads it from the cache file, without parsing again.
    calls: list[bytes] = []
    monkeypatch.setattr(mime, "parse_message", lambda data: calls.append(data))
    again = open_mailbox()
    assert result_of(again.message_info(1)) == info
    assert calls == []
    assert isinstance(failure_of(again.message_info(9)), MessageGone)


def test_message_info_with_the_cache_busy_is_answered_by_a_worker(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailaccess.store import cache as cache_module

    box = open_mailbox()
    result_of(box.append(MSG))
    result_of(box.message_info(1))  # parsed and cached
    again = open_mailbox()  # a restart: nothing in memory
    real_get = cache_module.MetadataCache.get
    asked: list[tuple[int, bool]] = []

    def busy_for_the_reactor(self: Any, uid: int, base: str, *, wait: bool = True) -> Any:
        asked.append((uid, wait))
        return None if not wait else real_get(self, uid, base)

    monkeypatch.setattr(cache_module.MetadataCache, "get", busy_for_the_reactor)
    assert result_of(again.message_info(1)).envelope.subject == b"hi"
    # The reactor's look did not wait; the worker's did, and found the entry.
    assert asked == [(1, False), (1, True)]


def test_parsed_infos_are_kept_without_their_part_trees(open_mailbox: Opener) -> None:
    import gc

    from mailaccess.store.mime import Part

    box = open_mailbox()
    result_of(box.append(MSG))
    info = result_of(box.message_info(1))
    # Thousands of remembered trees would lengthen every full garbage
    # collection, and the reactor waits for those.
    assert not [o for o in gc.get_referents(info) if isinstance(o, Part)]
    assert info.body.type == b"text"  # built on first use
    (bulk,) = result_of(open_mailbox().message_infos([1])).values()
    assert not [o for o in gc.get_referents(bulk) if isinstance(o, Part)]


def test_open_removes_tmp_debris_older_than_36_hours(tmp_path: Path) -> None:
    from twisted.internet.task import Clock

    from tests.store.conftest import Counter

    path = tmp_path / "box"
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    (path / "tmp" / "old").write_bytes(b"x")
    (path / "tmp" / "young").write_bytes(b"x")
    os.utime(path / "tmp" / "old", (1000.0, 1000.0))
    os.utime(path / "tmp" / "young", (200_000.0, 200_000.0))
    clock: Any = Clock()  # an IReactorTime; mypy sees only Clock
    clock.advance(200_000.0)
    result_of(Mailbox.open("box", path, clock, Counter(), mailbox_module.run_synchronously))
    assert os.listdir(path / "tmp") == ["young"]


def test_rescan_skips_listing_when_directories_did_not_change(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = open_mailbox()
    result_of(box.append(MSG))
    for sub in ("cur", "new"):
        os.utime(box.path / sub, (1_000_000.0, 1_000_000.0))  # long settled
    result_of(box.rescan())  # lists, and may now trust the mtimes
    listings: list[int] = []
    real_list = Mailbox._list_files

    def counting(self: Mailbox, skip: object) -> object:
        listings.append(1)
        return real_list(self, skip)  # type: ignore[arg-type]

    monkeypatch.setattr(Mailbox, "_list_files", counting)
    result_of(box.rescan())
    assert listings == []
    # Any change moves the directory's mtime, and is seen.
    heard: list[ChangeEvent] = []
    box.add_listener(heard.append)
    os.unlink(box.message_path(1))
    result_of(box.rescan())
    assert listings == [1] and heard == [MessagesExpunged("box", (1,))]


def test_message_info_of_a_file_renamed_behind_our_back(open_mailbox: Opener) -> None:
    box = open_mailbox()
    record = result_of(box.append(MSG))
    os.rename(box.message_path(1), box.path / "cur" / f"{record.base}:2,S")
    assert result_of(box.message_info(1)).envelope.subject == b"hi"


def test_uidlist_compacted_on_open_keeps_uidnext(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailbox_module, "COMPACT_AFTER", 3)
    box = open_mailbox()
    for _ in range(10):
        result_of(box.append(MSG))
    result_of(box.expunge(range(1, 10)))  # the highest, 10, stays
    assert len((box.path / "dovecot-uidlist").read_text().splitlines()) == 11
    box = open_mailbox()
    lines = (box.path / "dovecot-uidlist").read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("10 :")
    assert " N11 " in lines[0] + " "
    assert box.uidnext == 11 and open_mailbox().uidnext == 11


def test_copy_falls_back_to_copying_across_file_systems(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = open_mailbox("src")
    target = open_mailbox("dst")
    result_of(source.append(MSG, frozenset({"\\Flagged"}), 1_400_000_000.0))
    real_link = os.link

    def no_cross_device(src: object, dst: object) -> None:
        if str(src).startswith(str(source.path)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(mailbox_module.os, "link", no_cross_device)
    assert result_of(source.copy([1], target)) == [(1, 1)]
    copied = target.record(1)
    assert copied is not None and copied.internal_date == 1_400_000_000.0
    assert copied.flags == {"\\Flagged"}
    assert os.stat(target.message_path(1)).st_ino != os.stat(source.message_path(1)).st_ino
    with target.open_message(1) as f:
        assert f.read() == maildir.to_lf(MSG)


def test_27th_keyword_is_refused_and_nothing_changes(open_mailbox: Opener) -> None:
    from mailaccess.store.keywords import TooManyKeywords

    box = open_mailbox()
    result_of(box.append(MSG, frozenset(f"k{i}" for i in range(26))))
    names_before = cur_names(box)
    error = failure_of(box.store_flags([1], frozenset({"one-too-many"}), "add"))
    assert isinstance(error, TooManyKeywords)
    assert cur_names(box) == names_before
    assert box.record(1).flags == {f"k{i}" for i in range(26)}  # type: ignore[union-attr]
    # An append with it fails without leaving anything behind either.
    assert isinstance(failure_of(box.append(MSG, frozenset({"x"}))), TooManyKeywords)
    assert cur_names(box) == names_before and os.listdir(box.path / "tmp") == []


def test_uidvalidity_changed_by_another_program_resets_the_mailbox(open_mailbox: Opener) -> None:
    box = open_mailbox()
    result_of(box.append(MSG))
    result_of(box.append(MSG))
    old_validity = box.uidvalidity
    heard: list[ChangeEvent] = []
    box.add_listener(heard.append)
    # Another program lost the uidlist and started over with a new UIDVALIDITY.
    (box.path / "dovecot-uidlist").write_text(f"3 V{old_validity + 7} N5 G00\n")
    result_of(box.rescan())
    assert heard == [MailboxReset("box", old_validity + 7)]
    assert box.uidvalidity == old_validity + 7
    # The messages are numbered afresh in the new UIDVALIDITY.
    assert [r.uid for r in box.records()] == [5, 6] and box.uidnext == 7


def test_store_flags_on_a_file_another_program_just_renamed(open_mailbox: Opener) -> None:
    box = open_mailbox()
    record = result_of(box.append(MSG))
    # mutt marked it \Seen; we have not rescanned yet.
    os.rename(box.message_path(1), box.path / "cur" / f"{record.base}:2,S")
    changes = result_of(box.store_flags([1], frozenset({"\\Flagged"}), "add"))
    assert changes == {1: {"\\Flagged", "\\Seen"}}
    assert cur_names(box) == [f"{record.base}:2,FS"]


def test_crlf_size_of_a_listed_file_without_w_is_computed_once(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = open_mailbox()
    # Another program listed an MTA's file without any W (CRLF size).
    (box.path / "cur" / "77.M1P1.mta:2,S").write_bytes(b"a\nb\n")
    with open(box.path / "dovecot-uidlist", "a") as f:
        f.write("4 :77.M1P1.mta\n")
    box = open_mailbox()
    assert box.record(4).vsize == 6  # type: ignore[union-attr]
    assert "4 W6 :77.M1P1.mta" in (box.path / "dovecot-uidlist").read_text()
    reads: list[object] = []
    monkeypatch.setattr(mailbox_module, "file_crlf_size", lambda path: reads.append(path))
    assert open_mailbox().record(4).vsize == 6  # type: ignore[union-attr]
    assert reads == []


def test_message_infos_reads_hits_in_bulk_and_parses_only_misses(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailaccess.store import cache as cache_module
    from mailaccess.store import mime

    box = open_mailbox()
    for i in range(4):
        result_of(box.append(MSG.replace(b"hi", b"hi %d" % i)))
    result_of(box.message_info(1))  # cached now; 2-4 are not
    parsed: list[bytes] = []
    real_parse = mime.parse_message

    def counting_parse(data: bytes) -> object:
        parsed.append(data)
        return real_parse(data)

    monkeypatch.setattr(mime, "parse_message", counting_parse)
    single_gets: list[int] = []
    monkeypatch.setattr(
        cache_module.MetadataCache, "get", lambda self, uid, base: single_gets.append(uid)
    )
    infos = result_of(box.message_infos([1, 2, 3, 4, 99]))
    # 99 does not exist: left out, not an error.
    assert sorted(infos) == [1, 2, 3, 4]
    assert [infos[u].envelope.subject for u in (1, 2, 3, 4)] == [
        b"hi 0",
        b"hi 1",
        b"hi 2",
        b"hi 3",
    ]
    assert len(parsed) == 3 and single_gets == []  # only the misses, no row-by-row read
    # The misses were written back: a second bulk read parses nothing.
    parsed.clear()
    assert result_of(box.message_infos([2, 3, 4])).keys() == {2, 3, 4}
    assert parsed == []


def test_message_infos_leaves_out_removed_files_and_follows_renamed_ones(
    open_mailbox: Opener,
) -> None:
    box = open_mailbox()
    first = result_of(box.append(MSG))
    result_of(box.append(MSG))
    os.rename(box.message_path(1), box.path / "cur" / f"{first.base}:2,S")
    os.unlink(box.message_path(2))
    infos = result_of(box.message_infos([1, 2]))
    assert list(infos) == [1] and infos[1].envelope.subject == b"hi"


def test_store_flags_on_a_batch_emits_one_event_before_its_deferred_fires(
    tmp_path: Path,
) -> None:
    from twisted.internet.defer import Deferred
    from twisted.internet.task import Clock

    # A runner that holds the worker's result until we release it, as a thread would.
    held: list[tuple[Callable[[], object], Deferred[object]]] = []

    def later(work: Callable[[], object]) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        held.append((work, d))
        return d

    def run_all() -> None:
        while held:
            work, d = held.pop(0)
            d.callback(work())

    counter = iter(range(1, 100))
    clock: Any = Clock()  # an IReactorTime for the store; mypy sees only Clock
    opening = Mailbox.open("box", tmp_path / "box", clock, lambda: next(counter), later)
    run_all()
    box = result_of(opening)
    for i in range(50):
        appended = box.append(MSG + b"%d" % i)
        run_all()
        result_of(appended)
    fired: list[dict[int, frozenset[str]]] = []
    heard: list[tuple[ChangeEvent, bool]] = []
    box.add_listener(lambda event: heard.append((event, bool(fired))))
    d = box.store_flags(range(1, 51), frozenset({"\\Seen", "Work"}), "add")
    d.addCallback(fired.append)
    assert heard == [] and fired == []  # nothing before the renames are done
    run_all()
    # One FlagsChanged for the whole batch, heard before the Deferred fired.
    assert len(heard) == 1
    event, deferred_had_fired = heard[0]
    assert isinstance(event, FlagsChanged) and not deferred_had_fired
    assert [uid for uid, _ in event.changes] == list(range(1, 51))
    assert all(flags == {"\\Seen", "Work"} for _, flags in event.changes)
    assert fired[0] == dict(event.changes)
    assert all(name.endswith(":2,Sa") for name in cur_names(box))
    # The records are new objects; a snapshot taken before is untouched.
    assert all(r.flags == {"\\Seen", "Work"} for r in box.records())


def test_store_flags_undoes_its_renames_when_one_fails(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = open_mailbox()
    for i in range(5):
        result_of(box.append(MSG + b"%d" % i))
    before = cur_names(box)
    events: list[ChangeEvent] = []
    box.add_listener(events.append)
    real_rename = os.rename
    calls = []

    def failing_rename(old: str, new: str, **kw: object) -> None:
        calls.append(old)
        if len(calls) == 4:
            raise OSError(errno.EIO, "I/O error")
        real_rename(old, new, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(mailbox_module.os, "rename", failing_rename)
    error = failure_of(box.store_flags([1, 2, 3, 4, 5], frozenset({"\\Flagged"}), "add"))
    assert isinstance(error, StoreUnavailable)
    monkeypatch.setattr(mailbox_module.os, "rename", real_rename)
    # All or nothing: the first three renames were undone, no event, no flag.
    assert cur_names(box) == before and events == []
    assert all(r.flags == frozenset() for r in box.records())


def test_message_infos_served_from_memory_until_expunged(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailaccess.store import cache as cache_module

    box = open_mailbox()
    for _ in range(3):
        result_of(box.append(MSG))
    first = result_of(box.message_infos([1, 2, 3]))

    def no_thread(work: Callable[[], object]) -> object:
        raise AssertionError("remembered infos need no worker thread")

    def no_sqlite(self: object, items: object) -> object:
        raise AssertionError("remembered infos need no cache read")

    monkeypatch.setattr(box, "_run_in_thread", no_thread)
    monkeypatch.setattr(cache_module.MetadataCache, "get_many", no_sqlite)
    again = result_of(box.message_infos([1, 2, 3]))
    assert all(again[u] is first[u] for u in (1, 2, 3))
    monkeypatch.undo()
    result_of(box.expunge([2]))
    assert sorted(result_of(box.message_infos([1, 2, 3]))) == [1, 3]


def test_big_flag_batch_pauses_the_watch_and_rescans_after(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = open_mailbox()
    for i in range(3):
        result_of(box.append(MSG + b"%d" % i))
    calls: list[str] = []

    class Watcher:
        def unwatch(self, mailbox: Mailbox) -> None:
            calls.append("unwatch")
            mailbox.watched = False

        def watch(self, mailbox: Mailbox) -> None:
            calls.append("watch")
            mailbox.watched = True

    real_rename = os.rename

    def rename(*args: object, **kw: object) -> None:
        calls.append("rename")
        real_rename(*args, **kw)  # type: ignore[arg-type]

    box.watcher, box.watched = Watcher(), True
    box.add_listener(lambda event: calls.append(type(event).__name__))
    monkeypatch.setattr(mailbox_module.os, "rename", rename)
    monkeypatch.setattr(mailbox_module, "QUIET_BATCH", 3)
    result_of(box.store_flags([1, 2], frozenset({"\\Seen"}), "add"))  # small: watched
    assert calls == ["rename", "rename", "FlagsChanged"]
    calls.clear()
    result_of(box.store_flags([1, 2, 3], frozenset({"\\Flagged"}), "add"))
    # Our 3 renames raise no inotify event; the event goes out, then the watch
    # resumes and a rescan is due for what others did meanwhile.
    assert calls == ["unwatch", "rename", "rename", "rename", "FlagsChanged", "watch"]
    assert box.watched and box._rescan_call is not None and box._rescan_call.active()


def test_info_read_while_its_message_is_expunged_is_not_remembered(
    open_mailbox: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twisted.internet.defer import succeed

    box = open_mailbox()
    for _ in range(2):
        result_of(box.append(MSG))

    def expunged_meanwhile(work: Callable[[], object]) -> object:
        result = work()
        box._remove_uids([2])  # as an expunge applied before the read came back
        return succeed(result)

    monkeypatch.setattr(box, "_run_in_thread", expunged_meanwhile)
    result_of(box.message_infos([1, 2]))
    assert sorted(box._infos) == [1]
