"""Durability (DESIGN.md contract rule 9): kill -9 during a storm, reopen, check.

Every acknowledged message must be there under its UID with its content and
its acknowledged flags; an acknowledged expunge stays done; no UID is reused
or reassigned; a second storm continues with higher UIDs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet.task import Clock

from mailaccess.store.mailbox import Mailbox, run_synchronously
from tests.store.conftest import result_of

ROOT = Path(__file__).resolve().parents[2]


def storm(path: Path, seed: int, acknowledged: int) -> list[str]:
    """Run the child until it acknowledged *acknowledged* operations, then SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_child", str(path), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while len(lines) < acknowledged and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line.split("\n")[0])
    os.kill(child.pid, signal.SIGKILL)
    # Lines the child printed before dying were acknowledged too.
    rest, err = child.communicate()
    lines.extend(x for x in rest.split("\n") if x)
    assert child.returncode == -signal.SIGKILL, err
    assert len(lines) >= min(acknowledged, 5), err
    return lines


def test_kill_9_mid_storm_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "maildir"
    contents: dict[int, str] = {}  # every UID ever acknowledged -> its content hash
    expunged: set[int] = set()
    maybe_expunged: set[int] = set()  # in flight when the child was killed
    flags: dict[int, set[str]] = {}
    highest_seen = 0
    for round_number, kill_after in enumerate((37, 5, 120, 63, 1)):
        lines = storm(path, seed=round_number, acknowledged=kill_after)
        first_new_uid = None
        for line in lines:
            kind, uid_text, *rest = line.split(" ")
            uid = int(uid_text)
            if kind == "A":
                # No UID reused: an acknowledged UID never names other content.
                assert uid not in contents, f"UID {uid} handed out twice"
                contents[uid] = rest[0]
                if first_new_uid is None:
                    first_new_uid = uid
            elif kind == "E":
                expunged.add(uid)
            elif kind == "e":
                maybe_expunged.add(uid)
            elif kind == "F":
                # Flags are only ever added, so an acknowledged one stays.
                flags.setdefault(uid, set()).add(rest[0])
        if first_new_uid is not None:
            # The new storm continues above every UID acknowledged before.
            assert first_new_uid > highest_seen
        highest_seen = max([highest_seen, *contents])

        box = result_of(Mailbox.open("INBOX", path, Clock(), lambda: 1, run_synchronously, False))
        present = {r.uid: r for r in box.records()}
        for uid, digest in contents.items():
            if uid in expunged:
                assert uid not in present, f"acknowledged expunge of {uid} undone"
                continue
            if uid in maybe_expunged and uid not in present:
                continue
            assert uid in present, f"acknowledged UID {uid} lost in round {round_number}"
            assert flags.get(uid, set()) <= present[uid].flags, f"flags of {uid} lost"
            with box.open_message(uid) as f:
                assert hashlib.sha256(f.read()).hexdigest() == digest, f"UID {uid} reassigned"
        assert box.uidnext > highest_seen
