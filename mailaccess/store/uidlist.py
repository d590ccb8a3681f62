"""``dovecot-uidlist``: Dovecot's map from Maildir base names to IMAP UIDs.

Version 3 (what Dovecot 2.x writes)::

    3 V1700000000 N42 G0123456789abcdef0123456789abcdef
    1 :1700000000.M1P2Q0.host,S=120,W=123
    2 W2048 S2000 :1700000001.M3P4.host

The header carries UIDVALIDITY (``V``), the next UID (``N``) and the mailbox
GUID (``G``); each line is ``<uid> [<key><value> ...] :<base name>``.  ``N`` is
updated lazily: the next UID is ``max(N, highest listed uid + 1)``.  New lines
are appended at the end; any other change replaces the file by rename.  Both
happen under ``dovecot-uidlist.lock`` (see ``dotlock``).  Version 1
(``1 <uidvalidity> <nextuid>`` then ``<uid> <name>``) is read too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

import attrs

from mailaccess.store.maildir import atomic_write, fsync_dir

FILENAME = "dovecot-uidlist"


class UidListCorrupt(Exception):
    """The header cannot be read: the file must be rebuilt (new UIDVALIDITY)."""


#: The extension fields of a line that has none (shared, immutable).
NO_EXTENSIONS: Mapping[str, str] = MappingProxyType({})


@attrs.define(slots=True)
class UidEntry:
    """One line: the UID of a base name and its extension fields (``S``, ``W``…)."""

    uid: int
    base: str
    # Read-only: replace it to change a field.  Most lines have none, and they
    # share one empty mapping (a 100,000-line file saves 6 MB while it is read).
    extensions: Mapping[str, str] = NO_EXTENSIONS

    @property
    def size(self) -> int | None:
        value = self.extensions.get("S", "")
        return int(value) if value.isdigit() else None

    @property
    def vsize(self) -> int | None:
        value = self.extensions.get("W", "")
        return int(value) if value.isdigit() else None


@attrs.define
class UidList:
    """The parsed file: header values and entries in file (= UID) order."""

    uidvalidity: int
    next_uid: int
    guid: str
    entries: list[UidEntry] = attrs.field(factory=list)
    #: True when a line could not be parsed (a torn append after a crash):
    #: the file must be rewritten before anything is appended to it.
    damaged: bool = False

    @property
    def uidnext(self) -> int:
        """UIDNEXT as Dovecot computes it: max(N, highest uid + 1)."""
        highest = self.entries[-1].uid if self.entries else 0
        return max(self.next_uid, highest + 1, 1)


@attrs.frozen
class FileStamp:
    """Enough of a stat result to tell whether another process rewrote the file."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


def parse(data: bytes) -> UidList:
    """Parse a uidlist; raises UidListCorrupt if the header is unusable."""
    text = data.decode("utf-8", errors="surrogateescape")
    lines = text.split("\n")
    complete = text.endswith("\n")
    header = lines[0].split()
    if not header or header[0] not in ("1", "3"):
        raise UidListCorrupt(f"unknown dovecot-uidlist header {lines[0][:40]!r}")
    if header[0] == "1":
        if len(header) < 3 or not header[1].isdigit() or not header[2].isdigit():
            raise UidListCorrupt("bad version 1 header")
        result = UidList(int(header[1]), int(header[2]), "")
    else:
        fields = {f[0]: f[1:] for f in header[1:] if f}
        validity = fields.get("V", "")
        if not validity.isdigit() or int(validity) == 0:
            raise UidListCorrupt("dovecot-uidlist header lacks V<uidvalidity>")
        next_uid = fields.get("N", "1")
        result = UidList(
            int(validity), int(next_uid) if next_uid.isdigit() else 1, fields.get("G", "")
        )
    body = lines[1:]
    if not complete:
        # The last line has no newline: a crash tore the append.  It cannot
        # have been acknowledged (we fsync before acknowledging), so drop it.
        if body and body[-1]:
            result.damaged = True
        body = body[:-1]
    highest = 0
    for line in body:
        if not line:
            continue
        entry = _parse_line(line, header[0] == "1")
        if entry is None or entry.uid <= highest:
            result.damaged = True
            continue
        highest = entry.uid
        result.entries.append(entry)
    return result


def _parse_line(line: str, version1: bool) -> UidEntry | None:
    if version1:
        uid_text, _, base = line.partition(" ")
        if not uid_text.isdigit() or not base:
            return None
        return UidEntry(int(uid_text), base.partition(":")[0])
    head, sep, base = line.partition(" :")
    if not sep:
        # A line with no extensions may also be written as "<uid> :<base>"
        # where head is just the uid; anything else is damage.
        return None
    parts = head.split(" ")
    if not parts[0].isdigit() or not base or int(parts[0]) == 0:
        return None
    if len(parts) == 1:
        return UidEntry(int(parts[0]), base)
    return UidEntry(int(parts[0]), base, {p[0]: p[1:] for p in parts[1:] if p})


def format_line(entry: UidEntry) -> str:
    """One v3 line, newline included."""
    extensions = "".join(f" {k}{v}" for k, v in entry.extensions.items())
    return f"{entry.uid}{extensions} :{entry.base}\n"


def format_file(uidlist: UidList) -> bytes:
    """The whole v3 file."""
    header = f"3 V{uidlist.uidvalidity} N{uidlist.uidnext}"
    if uidlist.guid:
        header += f" G{uidlist.guid}"
    lines = [header + "\n"]
    lines.extend(format_line(e) for e in uidlist.entries)
    return "".join(lines).encode("utf-8", errors="surrogateescape")


def read(path: Path) -> UidList | None:
    """The uidlist at *path*, or None if there is none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse(data)


def rewrite(path: Path, uidlist: UidList) -> None:
    """Replace the file atomically (temp file, fsync, rename, fsync directory)."""
    atomic_write(path, format_file(uidlist))
    uidlist.damaged = False


def append(path: Path, entries: Iterable[UidEntry]) -> None:
    """Append lines durably; on failure the file is cut back to its old length.

    Cutting back matters: a half-written line must never stay in front of
    lines appended later, and a UID whose line did not reach the disk is not
    handed out.
    """
    data = "".join(format_line(e) for e in entries).encode("utf-8", errors="surrogateescape")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        old_size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            try:
                os.ftruncate(fd, old_size)
                os.fsync(fd)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def create(path: Path, uidvalidity: int, guid: str) -> UidList:
    """Write a new empty uidlist and make its directory entry durable."""
    uidlist = UidList(uidvalidity, 1, guid)
    rewrite(path, uidlist)
    fsync_dir(path.parent)
    return uidlist
