"""The ``subscriptions`` file of a Maildir++ account, in Dovecot 2.3's format.

RFC 3501 §6.3.6 and §6.3.7 (SUBSCRIBE, UNSUBSCRIBE) and §6.3.9 (LSUB) need a
per-user list of mailbox names that survives restarts; Dovecot keeps it in
``<user root>/subscriptions``.  What Dovecot 2.3.19 writes (seen on a real
instance, and in its ``subscription-file.c``):

* a version header ``V<TAB>2<LF><LF>``, then one mailbox a line (LF);
* each name is the *storage* name — every hierarchy level in modified UTF-7,
  as in the folder directory names — with TAB between the levels, whatever
  the IMAP hierarchy delimiter is (``Entw&APw-rfe``, ``A<TAB>B``, ``INBOX``);
* inside a level, control characters that would break the format are
  escaped with ``\\x01``: ``\\x01`` → ``\\x011``, TAB → ``\\x01t``,
  CR → ``\\x01r``, LF → ``\\x01n``;
* a file without the header is the older form: one name a line, verbatim,
  levels separated by the hierarchy delimiter.  Dovecot still reads it, and
  so do we; we always write the current form.

Dovecot changes the file under a dotlock, ``subscriptions.lock``, which is
also the temporary file it renames over ``subscriptions``.  We do exactly the
same, so a concurrent Dovecot and mailaccess never lose each other's change.

Names in this module's API are Unicode IMAP names with *delimiter* between
levels, as the protocol layers see them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from mailaccess.store import mutf7
from mailaccess.store.model import InvalidMailboxName, StoreUnavailable

__all__ = [
    "LOCK_STALE_AFTER",
    "read_subscriptions",
    "set_subscribed",
    "write_subscriptions",
]

_HEADER = "V\t2\n\n"

#: A ``subscriptions.lock`` untouched for this long (seconds) is left over
#: from a crash and may be broken: Dovecot's SUBSCRIPTION_FILE_CHANGE_TIMEOUT.
LOCK_STALE_AFTER = 30.0

_ESCAPES = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPES = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


def _tab_escape(level: str) -> str:
    return "".join(_ESCAPES.get(char, char) for char in level)


def _tab_unescape(level: str) -> str:
    out: list[str] = []
    chars = iter(level)
    for char in chars:
        if char == "\x01":
            # Like Dovecot: an unknown escape stands for the character itself.
            following = next(chars, "")
            out.append(_UNESCAPES.get(following, following))
        else:
            out.append(char)
    return "".join(out)


def _normalise_inbox(name: str, delimiter: str) -> str:
    # RFC 3501 §5.1: INBOX is case-insensitive; Dovecot stores "INBOX".
    head, sep, rest = name.partition(delimiter)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


def _decode_level(level: str) -> str:
    try:
        return mutf7.decode(level)
    except InvalidMailboxName:
        # Written by some other program: keep what is there rather than
        # dropping the subscription (RFC 3501 §6.3.6 allows subscriptions to
        # names that are not valid mailboxes).
        return level


def _encode_name(name: str, delimiter: str) -> str:
    name = _normalise_inbox(name, delimiter)
    if not name:
        raise InvalidMailboxName("cannot subscribe to an empty mailbox name")
    return "\t".join(_tab_escape(mutf7.encode(level)) for level in name.split(delimiter))


def _parse(text: str, delimiter: str) -> list[str]:
    def decode_v2(line: str) -> str:
        return delimiter.join(_decode_level(_tab_unescape(level)) for level in line.split("\t"))

    def decode_v1(line: str) -> str:
        # The line is the name, levels already joined by the delimiter the
        # writer used — assumed to be ours.
        return delimiter.join(_decode_level(level) for level in line.split(delimiter))

    if text.startswith(_HEADER):
        body, decode_line = text[len(_HEADER) :], decode_v2
    else:
        body, decode_line = text, decode_v1
    names: list[str] = []
    seen: set[str] = set()
    for line in body.split("\n"):
        if not line:
            continue
        name = _normalise_inbox(decode_line(line), delimiter)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def read_subscriptions(path: Path, delimiter: str = ".") -> list[str]:
    """The subscribed names in file order; ``[]`` if the file does not exist.

    Reads Dovecot's v2 form and the older plain form.  Bytes that are not
    UTF-8 (the file should be ASCII) are replaced rather than fatal.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreUnavailable(f"cannot read the subscriptions file {path}: {e.strerror}") from e
    return _parse(data.decode("utf-8", errors="replace"), delimiter)


def _serialise(names: Iterable[str], delimiter: str) -> str:
    lines: list[str] = []
    seen: set[str] = set()
    for name in names:
        line = _encode_name(name, delimiter)
        if line not in seen:
            seen.add(line)
            lines.append(line + "\n")
    return _HEADER + "".join(lines)


class _DotLock:
    """Dovecot's dotlock on ``<path>.lock``: the lock file is the new content.

    Created with O_EXCL; filled and fsynced; renamed over *path* to commit,
    or unlinked to abort.
    """

    def __init__(self, path: Path, now: Callable[[], float]) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._now = now
        self._fd = -1

    def acquire(self, mode: int) -> None:
        for _attempt in range(2):
            try:
                self._fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                return
            except FileExistsError:
                if not self._break_if_stale():
                    break
            except OSError as e:
                raise StoreUnavailable(
                    f"cannot lock the subscriptions file {self.path}: {e.strerror}"
                ) from e
        # Waiting here would block the reactor; the caller retries later.
        raise StoreUnavailable(
            f"the subscriptions file {self.path} is being changed by another "
            "process (Dovecot?); try again"
        )

    def _break_if_stale(self) -> bool:
        try:
            age = self._now() - self.lock_path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: try again
        if age < LOCK_STALE_AFTER:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        return True

    def commit(self, content: bytes) -> None:
        try:
            view = memoryview(content)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.rename(self.lock_path, self.path)
            _fsync_directory(self.path.parent)
        except OSError as e:
            self.abort()
            raise StoreUnavailable(
                f"cannot write the subscriptions file {self.path}: {e.strerror}"
            ) from e

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems cannot fsync a directory; the rename still happened.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o600  # mail is private


def write_subscriptions(
    path: Path,
    names: Iterable[str],
    delimiter: str = ".",
    now: Callable[[], float] = time.time,
) -> None:
    """Replace the file with *names*, atomically and durably, in the v2 form.

    Takes Dovecot's ``subscriptions.lock`` dotlock (the temporary file), fsyncs
    it, renames it into place and fsyncs the directory.  Raises
    InvalidMailboxName for an empty name or one that is not valid Unicode,
    StoreUnavailable if the lock is held or the disk fails; the old file is
    then left untouched.  *now* is the clock used to judge a stale lock.
    """
    path = Path(path)
    content = _serialise(names, delimiter).encode("utf-8")
    lock = _DotLock(path, now)
    lock.acquire(_file_mode(path))
    lock.commit(content)


def set_subscribed(
    path: Path,
    name: str,
    subscribed: bool,
    delimiter: str = ".",
    now: Callable[[], float] = time.time,
) -> bool:
    """Subscribe or unsubscribe one *name* (RFC 3501 §6.3.6 and §6.3.7).

    The read and the write happen under the lock, as Dovecot does, so a change
    another process made meanwhile is kept.  Returns whether the file changed.
    """
    path = Path(path)
    line = _encode_name(name, delimiter)
    lock = _DotLock(path, now)
    lock.acquire(_file_mode(path))
    try:
        names = read_subscriptions(path, delimiter)
        present = [_encode_name(n, delimiter) for n in names]
        if subscribed == (line in present):
            lock.abort()
            return False
        if subscribed:
            names.append(_normalise_inbox(name, delimiter))
        else:
            names = [n for n, encoded in zip(names, present, strict=True) if encoded != line]
        content = _serialise(names, delimiter).encode("utf-8")
    except BaseException:
        lock.abort()
        raise
    lock.commit(content)
    return True
