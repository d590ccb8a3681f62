"""File names, flag letters, dovecot-uidlist, dovecot-keywords and the dotlock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailaccess.store import keywords, maildir, uidlist
from mailaccess.store.dotlock import DotLock
from mailaccess.store.model import StoreUnavailable

# --- maildir names (https://cr.yp.to/proto/maildir.html, Dovecot's ,S= ,W=) ---


def test_split_filename_with_and_without_info() -> None:
    assert maildir.split_filename("123.M4P5.host,S=10:2,FS") == ("123.M4P5.host,S=10", "FS")
    assert maildir.split_filename("123.M4P5.host") == ("123.M4P5.host", None)
    # An unknown info version carries no flags we can read.
    assert maildir.split_filename("123.host:1,xyz") == ("123.host", "")


def test_size_fields_read_s_and_w() -> None:
    assert maildir.size_fields("1.M2P3.h,S=120,W=123") == (120, 123)
    assert maildir.size_fields("1.M2P3.h") == (None, None)
    assert maildir.size_fields("1.M2P3.h,S=x") == (None, None)


def test_flag_letters_in_ascii_order_system_then_keywords() -> None:
    letters = maildir.flags_to_letters(
        frozenset({"\\Seen", "\\Deleted", "\\Draft", "$Work", "\\Answered", "\\Flagged"}),
        {"$Work": "b"},
    )
    assert letters == "DFRSTb"


def test_letters_to_flags_keeps_unknown_letters() -> None:
    flags, unknown = maildir.letters_to_flags("PSa", {"a": "$Label1"})
    assert flags == {"\\Seen", "$Label1"}
    assert unknown == "P"


def test_normalize_flags_rfc3501_2_3_2() -> None:
    # System flags are case-insensitive; \Recent is not storable.
    assert maildir.normalize_flags({"\\SEEN", "\\recent", "\\Bogus", "$Junk"}) == {
        "\\Seen",
        "$Junk",
    }


def test_new_base_names_are_unique_within_one_microsecond() -> None:
    names = {maildir.new_base_name(1700000000.5, "h") for _ in range(1000)}
    assert len(names) == 1000
    assert all(n.startswith("1700000000.M500000P") for n in names)


def test_hostname_escapes_slash_and_colon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maildir.socket, "gethostname", lambda: "a/b:c")
    assert maildir.hostname_for_maildir() == "a\\057b\\072c"


def test_crlf_size_counts_bare_lf_as_two() -> None:
    assert maildir.crlf_size(b"a\nb\r\nc") == 7
    assert maildir.to_lf(b"a\r\nb\r\n") == b"a\nb\n"


def test_file_crlf_size_across_chunk_boundary(tmp_path: Path) -> None:
    data = b"x" * ((1 << 20) - 1) + b"\r\n" + b"y\n"
    path = tmp_path / "m"
    path.write_bytes(data)
    assert maildir.file_crlf_size(path) == maildir.crlf_size(data)


# --- dovecot-uidlist ---------------------------------------------------------


def test_uidlist_v3_parse_and_uidnext() -> None:
    parsed = uidlist.parse(
        b"3 V1700000000 N5 G0123456789abcdef0123456789abcdef\n"
        b"1 :1.M1P1.h,S=10,W=11\n"
        b"7 W2048 S2000 :2.M1P1.h\n"
    )
    assert (parsed.uidvalidity, parsed.guid) == (1700000000, "0123456789abcdef0123456789abcdef")
    assert [(e.uid, e.base) for e in parsed.entries] == [
        (1, "1.M1P1.h,S=10,W=11"),
        (7, "2.M1P1.h"),
    ]
    assert parsed.entries[1].vsize == 2048 and parsed.entries[1].size == 2000
    # N is updated lazily: the next UID is max(N, highest + 1).
    assert parsed.uidnext == 8
    assert not parsed.damaged


def test_uidlist_version1_is_read() -> None:
    parsed = uidlist.parse(b"1 1234 3\n1 a.host:2,S\n2 b.host\n")
    assert parsed.uidvalidity == 1234
    assert [(e.uid, e.base) for e in parsed.entries] == [(1, "a.host"), (2, "b.host")]


def test_uidlist_torn_last_line_is_dropped_and_marked_damaged() -> None:
    parsed = uidlist.parse(b"3 V1 N1 G00\n1 :a.host\n2 :b.ho")
    assert [e.uid for e in parsed.entries] == [1]
    assert parsed.damaged


def test_uidlist_bad_header_is_corrupt() -> None:
    with pytest.raises(uidlist.UidListCorrupt):
        uidlist.parse(b"garbage\n")
    with pytest.raises(uidlist.UidListCorrupt):
        uidlist.parse(b"3 N4\n")


def test_uidlist_write_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "dovecot-uidlist"
    created = uidlist.create(path, 42, "ab" * 16)
    uidlist.append(path, [uidlist.UidEntry(1, "a.h"), uidlist.UidEntry(2, "b.h", {"W": "9"})])
    text = path.read_text()
    assert text == f"3 V42 N1 G{'ab' * 16}\n1 :a.h\n2 W9 :b.h\n"
    again = uidlist.read(path)
    assert again is not None and again.uidnext == 3 and created.uidvalidity == 42


def test_uidlist_append_failure_cuts_file_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dovecot-uidlist"
    uidlist.create(path, 42, "")
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(uidlist.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        uidlist.append(path, [uidlist.UidEntry(1, "a.h")])
    assert path.read_bytes() == before


# --- dovecot-keywords --------------------------------------------------------


def test_keywords_parse_and_format() -> None:
    by_letter = keywords.parse("0 $Forwarded\n2 Work\nbad line\n30 toohigh\n")
    assert by_letter == {"a": "$Forwarded", "c": "Work"}
    assert keywords.format_keywords(by_letter) == "0 $Forwarded\n2 Work\n"


def test_keywords_ensure_assigns_free_letters_and_writes(tmp_path: Path) -> None:
    (tmp_path / "dovecot-keywords").write_text("1 $Junk\n")
    kw = keywords.Keywords(tmp_path)
    kw.load()
    kw.ensure({"$Junk", "Alpha", "Beta"})
    assert kw.by_name == {"$Junk": "b", "Alpha": "a", "Beta": "c"}
    assert (tmp_path / "dovecot-keywords").read_text() == "0 Alpha\n1 $Junk\n2 Beta\n"
    assert not (tmp_path / "dovecot-keywords.lock").exists()


def test_keywords_more_than_26_refused_file_unchanged(tmp_path: Path) -> None:
    kw = keywords.Keywords(tmp_path)
    kw.ensure({f"k{i}" for i in range(20)})
    before = (tmp_path / "dovecot-keywords").read_text()
    with pytest.raises(keywords.TooManyKeywords):
        kw.ensure({f"x{i}" for i in range(7)})
    assert (tmp_path / "dovecot-keywords").read_text() == before


# --- dotlock ---------------------------------------------------------------------


def test_dotlock_is_exclusive_and_holds_pid_host(tmp_path: Path) -> None:
    lock = DotLock(tmp_path / "dovecot-uidlist", timeout=0.2, hostname="h1")
    lock.acquire()
    assert (tmp_path / "dovecot-uidlist.lock").read_text() == f"{os.getpid()}:h1"
    other = DotLock(tmp_path / "dovecot-uidlist", timeout=0.2, hostname="h2")
    with pytest.raises(StoreUnavailable, match="locked"):
        other.acquire()
    lock.release()
    assert not (tmp_path / "dovecot-uidlist.lock").exists()
    other.acquire()
    other.release()


def test_dotlock_of_dead_process_is_overridden(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(child.stdout)
    lock_path = tmp_path / "dovecot-uidlist.lock"
    lock_path.write_text(f"{dead_pid}:h")
    # Dovecot checks the pid only of a lock older than 2 s.
    os.utime(lock_path, (1, 1))
    lock = DotLock(tmp_path / "dovecot-uidlist", timeout=1, hostname="h")
    lock.acquire()
    assert lock_path.read_text() == f"{os.getpid()}:h"
    lock.release()


def test_dotlock_of_live_process_on_other_host_waits_for_stale_timeout(tmp_path: Path) -> None:
    lock_path = tmp_path / "dovecot-uidlist.lock"
    lock_path.write_text("1:elsewhere")
    lock = DotLock(tmp_path / "dovecot-uidlist", timeout=0.1, stale_timeout=120, hostname="h")
    with pytest.raises(StoreUnavailable):
        lock.acquire()
    os.utime(lock_path, (1, 1))
    lock.acquire()  # no change for longer than the stale timeout
    lock.release()
