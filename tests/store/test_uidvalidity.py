"""UIDVALIDITY values from Dovecot's dovecot-uidvalidity counter (RFC 3501 §2.3.1.1)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from mailaccess.store.model import StoreUnavailable
from mailaccess.store.uidvalidity import next_uidvalidity
from tests.support.dovecot import Dovecot, require_dovecot

NOW = 1795788970.5  # any fixed clock reading


def clock() -> float:
    return NOW


def markers(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("dovecot-uidvalidity.*"))


def test_counter_starts_at_the_clock_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    assert next_uidvalidity(tmp_path, now=clock) == 1795788970
    # The files Dovecot 2.3.19 leaves after handing out 0x6b0990aa.
    assert (tmp_path / "dovecot-uidvalidity").read_bytes() == b"6b0990aa"
    assert markers(tmp_path) == ["dovecot-uidvalidity.6b0990aa"]


def test_values_strictly_increase_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    values = [next_uidvalidity(tmp_path, now=clock) for _ in range(5)]
    assert values == list(range(1795788970, 1795788975))
    assert markers(tmp_path) == ["dovecot-uidvalidity.6b0990ae"]
    # A clock that went backwards changes nothing: the counter rules.
    assert next_uidvalidity(tmp_path, now=lambda: 1000.0) == 1795788975


def test_continues_dovecot_counter(tmp_path: Path) -> None:
    # As a real Dovecot left it after creating three mailboxes.
    (tmp_path / "dovecot-uidvalidity").write_bytes(b"6b0990ac")
    (tmp_path / "dovecot-uidvalidity.6b0990ac").touch()
    assert next_uidvalidity(tmp_path, now=lambda: 5.0) == 0x6B0990AD
    assert (tmp_path / "dovecot-uidvalidity").read_bytes() == b"6b0990ad"


@pytest.mark.parametrize("hint", [b"", b"garbage!", b"6b09", b"00000001", b"ffff0000"])
def test_wrong_or_damaged_hint_falls_back_to_scan(tmp_path: Path, hint: bytes) -> None:
    # Stale (behind), ahead of the marker, truncated or garbage: the marker
    # file's name is the truth.
    (tmp_path / "dovecot-uidvalidity").write_bytes(hint)
    (tmp_path / "dovecot-uidvalidity.6b0990ac").touch()
    assert next_uidvalidity(tmp_path, now=clock) == 0x6B0990AD
    assert markers(tmp_path) == ["dovecot-uidvalidity.6b0990ad"]


def test_slightly_stale_hint_still_above_marker(tmp_path: Path) -> None:
    (tmp_path / "dovecot-uidvalidity").write_bytes(b"6b0990a8")
    (tmp_path / "dovecot-uidvalidity.6b0990ac").touch()
    assert next_uidvalidity(tmp_path, now=clock) == 0x6B0990AD


def test_missing_hint(tmp_path: Path) -> None:
    (tmp_path / "dovecot-uidvalidity.00000010").touch()
    assert next_uidvalidity(tmp_path, now=clock) == 0x11
    assert (tmp_path / "dovecot-uidvalidity").read_bytes() == b"00000011"


def test_duplicate_markers_highest_wins(tmp_path: Path) -> None:
    (tmp_path / "dovecot-uidvalidity.00000010").touch()
    (tmp_path / "dovecot-uidvalidity.00000020").touch()
    (tmp_path / "dovecot-uidvalidity.notahex").touch()
    assert next_uidvalidity(tmp_path, now=clock) == 0x21
    assert markers(tmp_path) == [
        "dovecot-uidvalidity.00000021",
        "dovecot-uidvalidity.notahex",
    ]


def test_wraps_to_one_never_zero(tmp_path: Path) -> None:
    # RFC 3501 §9: nz-number.  2**32-1 values is beyond any real mailbox life.
    (tmp_path / "dovecot-uidvalidity.ffffffff").touch()
    assert next_uidvalidity(tmp_path, now=clock) == 1


def test_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="cannot list"):
        next_uidvalidity(tmp_path / "no-such-user", now=clock)


def _take_many(root: str, count: int, queue: multiprocessing.Queue[list[int]]) -> None:
    queue.put([next_uidvalidity(Path(root), now=clock) for _ in range(count)])


def test_concurrent_processes_never_share_a_value(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[list[int]] = context.Queue()
    workers = [
        context.Process(target=_take_many, args=(str(tmp_path), 40, queue)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    taken = [value for _ in workers for value in queue.get(timeout=60)]
    for worker in workers:
        worker.join(60)
    assert len(taken) == 160
    assert len(set(taken)) == 160  # never reused
    assert max(taken) == 1795788970 + 159  # and no value skipped
    assert markers(tmp_path) == [f"dovecot-uidvalidity.{max(taken):08x}"]


def test_interleaved_with_real_dovecot_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    """Dovecot and we take turns creating mailboxes: every value is new and higher."""
    require_dovecot()
    with Dovecot(tmp_path / "dovecot") as dovecot:
        root = dovecot.user_root("alice")

        def dovecot_creates(name: str) -> int:
            dovecot.doveadm("mailbox", "create", "-u", "alice", name)
            out = dovecot.doveadm(
                "-f", "flow", "mailbox", "status", "-u", "alice", "uidvalidity", name
            )
            return int(out.stdout.strip().split("=")[1])

        seen = [dovecot_creates("First")]
        seen.append(next_uidvalidity(root, now=clock))
        dovecot.hand_over()
        seen.append(dovecot_creates("Second"))
        seen.append(next_uidvalidity(root, now=clock))
        seen.append(next_uidvalidity(root, now=clock))
        dovecot.hand_over()
        seen.append(dovecot_creates("Third"))
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    # (Not contiguous: Dovecot also takes values for mailboxes it opens, e.g. INBOX.)


def test_never_climbs_onto_a_second_marker_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    # Two markers (a start race at different seconds) and a hint at the lower
    # one: renaming .10 over .11 would hand out 0x11 a second time.
    (tmp_path / "dovecot-uidvalidity").write_bytes(b"00000010")
    (tmp_path / "dovecot-uidvalidity.00000010").touch()
    (tmp_path / "dovecot-uidvalidity.00000011").touch()
    assert next_uidvalidity(tmp_path, now=clock) == 0x12


def test_counter_start_race_keeps_one_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailaccess.store.uidvalidity as module

    # Another process creates its first marker (a later second) between our
    # scan and our create.
    real_create = module._create_first

    def racing_create(root: Path, now: object) -> int | None:
        (root / "dovecot-uidvalidity.6b0990b0").touch()
        return real_create(root, clock)

    monkeypatch.setattr(module, "_create_first", racing_create)
    assert next_uidvalidity(tmp_path, now=clock) == 1795788970  # 0x6b0990aa
    monkeypatch.undo()
    assert markers(tmp_path) == ["dovecot-uidvalidity.6b0990b0"]
    assert next_uidvalidity(tmp_path, now=clock) == 0x6B0990B1
