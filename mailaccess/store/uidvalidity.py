"""Handing out UIDVALIDITY values the way Dovecot does (RFC 3501 §2.3.1.1).

RFC 3501 §2.3.1.1: a mailbox that is created (or re-created under an old
name) must get a UIDVALIDITY greater than any its name had before, so that
clients never pair a cached UID with a different message.  Dovecot 2.3 keeps
a per-user counter for this beside the Maildir (``mailbox-uidvalidity.c``),
and so do we, in the same files, so mailaccess and a Dovecot sharing one
Maildir never hand out the same value twice:

* ``dovecot-uidvalidity.<8 hex digits>`` — an empty file whose *name* is the
  last value handed out.  Taking the next value is one ``rename()`` of
  ``.<v>`` to ``.<v+1>``: rename is atomic, so of two processes racing for
  ``v+1`` exactly one succeeds; the other gets ENOENT and tries ``v+2``.
* ``dovecot-uidvalidity`` — 8 lower-case hex digits, no newline: a hint of
  the last value so the winner of the rename is found without a directory
  scan.  If it is missing, damaged or stale, the directory is scanned for
  the highest ``.<hex>`` file instead (and a second, lower one is removed).
* With no such file at all, the counter starts at the current time in
  seconds, as Dovecot's does.

Unlike Dovecot we fsync the directory after the rename: a UIDVALIDITY goes
into a ``dovecot-uidlist`` that we fsync, so the counter must not roll back
behind it after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from mailaccess.store.model import StoreUnavailable

__all__ = ["UIDVALIDITY_FILE", "next_uidvalidity"]

UIDVALIDITY_FILE = "dovecot-uidvalidity"

# Dovecot retries a lost rename race this many times before rescanning.
_RENAME_RETRIES = 10
_RESCANS = 3
_MAX = 0xFFFFFFFF
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def _successor(value: int) -> int:
    # UIDVALIDITY is a non-zero 32-bit number (RFC 3501 §9, nz-number).
    return value + 1 if value < _MAX else 1


def _marker(root: Path, value: int) -> Path:
    return root / f"{UIDVALIDITY_FILE}.{value:08x}"


def _read_hint(root: Path) -> int | None:
    try:
        text = (root / UIDVALIDITY_FILE).read_bytes()[:8].decode("ascii")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    except OSError as e:
        raise StoreUnavailable(f"cannot read {root / UIDVALIDITY_FILE}: {e.strerror}") from e
    if not _HEX8.fullmatch(text):
        return None  # damaged: the directory scan finds the truth
    return int(text, 16)


def _write_hint(root: Path, value: int) -> None:
    # Only a hint (readers verify it against the marker files), so a plain
    # overwrite in place, like Dovecot's pwrite(), is enough.
    try:
        fd = os.open(root / UIDVALIDITY_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        os.pwrite(fd, f"{value:08x}".encode("ascii"), 0)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_directory(root: Path) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _advance(root: Path, current: int) -> int | None:
    """Rename the marker from *current* upward; the value won, or None."""
    for _attempt in range(_RENAME_RETRIES):
        following = _successor(current)
        if _marker(root, following).exists():
            # A second marker (left by two processes starting the counter at
            # once): rename() would silently replace it and hand out its
            # value again.  Climb past it instead.
            current = following
            continue
        try:
            os.rename(_marker(root, current), _marker(root, following))
        except FileNotFoundError:
            # Someone else took `following` first (or the hint was stale):
            # race for the next one.
            current = following
            continue
        except OSError as e:
            raise StoreUnavailable(f"cannot take a UIDVALIDITY in {root}: {e.strerror}") from e
        return following
    return None


def _scan(root: Path) -> list[int]:
    prefix = UIDVALIDITY_FILE + "."
    values = []
    try:
        names = os.listdir(root)
    except OSError as e:
        raise StoreUnavailable(f"cannot list {root}: {e.strerror}") from e
    for name in names:
        if name.startswith(prefix):
            digits = name[len(prefix) :]
            if digits and all(c in "0123456789abcdefABCDEF" for c in digits):
                value = int(digits, 16)
                if 0 < value <= _MAX:
                    values.append(value)
    return values


def _create_first(root: Path, now: Callable[[], float]) -> int | None:
    """Start the counter at the current time; None if another process just did."""
    value = int(now()) & _MAX or 1
    try:
        fd = os.open(_marker(root, value), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:
        return None  # the caller rescans and advances from that one
    except OSError as e:
        raise StoreUnavailable(
            f"cannot start the UIDVALIDITY counter in {root}: {e.strerror}"
        ) from e
    os.close(fd)
    # Another process may have started the counter at another second just
    # now.  Both values are taken and distinct; keep only the highest marker
    # so the next step cannot climb from the lower one onto the higher.
    found = _scan(root)
    for other in found:
        if other < max(found):
            with contextlib.suppress(FileNotFoundError):
                _marker(root, other).unlink()
    return value


def next_uidvalidity(user_root: Path, now: Callable[[], float] = time.time) -> int:
    """Take the next UIDVALIDITY of the user whose Maildir root is *user_root*.

    Strictly greater than every value handed out before from this root — by
    us or by a Dovecot working on the same files — except after wrapping at
    2**32-1.  *now* (seconds) seeds the counter the first time.  Raises
    StoreUnavailable if the directory cannot be used.
    """
    root = Path(user_root)
    value: int | None = None
    hint = _read_hint(root)
    if hint is not None:
        value = _advance(root, hint)
    for _rescan in range(_RESCANS):
        if value is not None:
            break
        found = _scan(root)
        if not found:
            value = _create_first(root, now)
            continue
        highest = max(found)
        for stale in found:
            if stale != highest:
                # Duplicates come only from a crash or a race at creation;
                # the highest counts, the others would confuse the hint.
                with contextlib.suppress(FileNotFoundError):
                    _marker(root, stale).unlink()
        value = _advance(root, highest)
    if value is None:
        raise StoreUnavailable(
            f"could not take a UIDVALIDITY in {root}: too many concurrent changes; try again"
        )
    _fsync_directory(root)
    _write_hint(root, value)
    return value
