"""Maildir file names, flag letters and durable file operations.

The naming follows https://cr.yp.to/proto/maildir.html as Dovecot writes it:
``<secs>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<vsize>:2,<flags>``.  The part
before ``:`` is the *base name*: it never changes while the message lives, so
it is what ``dovecot-uidlist`` records.  Everything here is synchronous and
blocking; the mailbox calls it from a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from mailaccess.store.model import SYSTEM_FLAG_LETTERS, Flags, StoreError, StoreUnavailable

#: Separator between the base name and the info part (Dovecot's default).
INFO_SEPARATOR = ":2,"

_LETTER_TO_SYSTEM_FLAG = {letter: flag for flag, letter in SYSTEM_FLAG_LETTERS.items()}
_SYSTEM_FLAGS_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAG_LETTERS}

# One counter per process keeps base names unique even when two deliveries
# fall into the same microsecond (the maildir spec's "Q" = delivery counter).
_delivery_counter = itertools.count()

# Identical flag sets are shared between records: a 100,000-message mailbox
# has only a handful of distinct combinations, so this keeps the index lean.
_flag_sets: dict[frozenset[str], frozenset[str]] = {}


def intern_flags(flags: Iterable[str]) -> Flags:
    """A canonical shared frozenset equal to *flags*."""
    key = frozenset(flags)
    return _flag_sets.setdefault(key, key)


def normalize_flags(flags: Iterable[str]) -> Flags:
    """System flags in their canonical spelling; ``\\Recent`` and unknown ``\\x`` dropped.

    RFC 3501 §2.3.2: flag names are case-insensitive; ``\\Recent`` cannot be
    stored (it belongs to a session) and other backslash names are not flags.
    """
    result = set()
    for flag in flags:
        if flag.startswith("\\"):
            canonical = _SYSTEM_FLAGS_BY_LOWER.get(flag.lower())
            if canonical is not None:
                result.add(canonical)
        elif flag:
            result.add(flag)
    return intern_flags(result)


def hostname_for_maildir() -> str:
    """This host's name with ``/`` and ``:`` escaped as the maildir spec asks."""
    host = socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072")


def new_base_name(now: float, host: str | None = None) -> str:
    """A fresh unique base name (without size fields) for a message delivered *now*."""
    secs = int(now)
    usecs = int((now - secs) * 1_000_000)
    # R<random> (a maildir spec field) keeps names unique even when a pid
    # is reused within one second, e.g. by a quickly restarted server.
    return (
        f"{secs}.M{usecs}P{os.getpid()}Q{next(_delivery_counter)}"
        f"R{os.urandom(4).hex()}.{host or hostname_for_maildir()}"
    )


def split_filename(filename: str) -> tuple[str, str | None]:
    """``(base, info letters)``; letters is None when the name has no ``:2,`` part."""
    base, sep, info = filename.partition(":")
    if not sep:
        return filename, None
    if info.startswith("2,"):
        return base, info[2:]
    return base, ""  # an unknown info version: no flags we can read


def size_fields(base: str) -> tuple[int | None, int | None]:
    """The ``,S=`` (physical) and ``,W=`` (CRLF) sizes embedded in a base name."""
    size = vsize = None
    for field in base.split(",")[1:]:
        key, _, value = field.partition("=")
        if value.isdigit():
            if key == "S":
                size = int(value)
            elif key == "W":
                vsize = int(value)
    return size, vsize


def letters_to_flags(letters: str, keywords: Mapping[str, str]) -> tuple[Flags, str]:
    """IMAP flags of the info letters, and the letters we could not map.

    *keywords* maps ``a`` to ``z`` to keyword names (from ``dovecot-keywords``).
    Unmapped letters (``P`` = passed, a keyword letter missing from the
    keywords file) are returned so a rename can keep them.
    """
    flags = set()
    unknown = []
    for letter in letters:
        flag = _LETTER_TO_SYSTEM_FLAG.get(letter) or keywords.get(letter)
        if flag is None:
            unknown.append(letter)
        else:
            flags.add(flag)
    return intern_flags(flags), "".join(unknown)


def flags_to_letters(flags: Flags, letters_of_keywords: Mapping[str, str], extra: str = "") -> str:
    """Info letters for *flags*, in ASCII order (system flags, then keywords).

    Raises KeyError for a keyword that has no letter yet: the caller assigns
    letters (``dovecot-keywords``) first.
    """
    letters = set(extra)
    for flag in flags:
        letter = SYSTEM_FLAG_LETTERS.get(flag)
        letters.add(letter if letter is not None else letters_of_keywords[flag])
    return "".join(sorted(letters))


def crlf_size(data: bytes) -> int:
    """RFC 822 size of *data* once every bare LF is sent as CRLF."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def file_crlf_size(path: Path) -> int:
    """``crlf_size`` of a file, read in chunks (a CRLF split across chunks is handled)."""
    total = 0
    previous_ended_with_cr = False
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            total += crlf_size(chunk)
            if previous_ended_with_cr and chunk.startswith(b"\n"):
                total -= 1
            previous_ended_with_cr = chunk.endswith(b"\r")
    return total


def to_lf(message: bytes) -> bytes:
    """Store line ends as LF (DESIGN.md "On-disk format"): CRLF becomes LF."""
    return message.replace(b"\r\n", b"\n")


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes, mtime: float | None = None) -> None:
    """Create *path* exclusively, write *data*, fsync it; remove it again on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if mtime is not None:
            # Before the fsync, so the INTERNALDATE is as durable as the body.
            os.utime(fd, (mtime, mtime))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace *path* by a temporary file and rename, fsyncing file and directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _unlink_quietly(tmp)
    write_file_durably(tmp, data)
    try:
        os.rename(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def ensure_maildir(path: Path, folder: bool) -> None:
    """Create ``cur/ new/ tmp/`` (and ``maildirfolder`` for a Maildir++ folder)."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder:
        marker = path / "maildirfolder"
        if not marker.exists():
            marker.touch(mode=0o600)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def unlink_quietly(path: Path) -> None:
    """Remove *path* if it exists (cleanup after a failure must not raise)."""
    with contextlib.suppress(OSError):
        _unlink_quietly(path)


def disk_error(exc: OSError, what: str) -> StoreError:
    """The client-facing error for an OSError while doing *what*."""
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EIO: "an I/O error occurred",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "the file system is read-only",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return StoreUnavailable(f"cannot {what}: {reason}; try again later")
