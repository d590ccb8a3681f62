"""Dovecot's dotlock convention: ``<file>.lock`` beside the file it protects.

A lock is a file created exclusively (``O_EXCL``) holding ``<pid>:<host>``.
Another process treats it as stale when the pid, on the same host, no longer
exists, or when neither the lock nor the protected file changed for
``stale_timeout`` seconds (Dovecot's rule for ``dovecot-uidlist.lock``, whose
stale timeout is two minutes).  Blocking: call it off the reactor thread.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from mailaccess.store.model import StoreUnavailable

#: Dovecot does not check the pid of a lock younger than this (it is most
#: likely being worked on), so neither do we.
_PID_CHECK_AFTER = 2.0


class DotLock:
    """An exclusive dotlock on *path* (the lock file is ``path + ".lock"``)."""

    def __init__(
        self,
        path: Path,
        timeout: float = 30.0,
        stale_timeout: float = 120.0,
        hostname: str | None = None,
    ) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.timeout = timeout
        self.stale_timeout = stale_timeout
        self.hostname = hostname or socket.gethostname()
        self._held_inode: int | None = None

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout``; StoreUnavailable if it cannot."""
        # A wall clock and sleeping are right here: this runs in a worker
        # thread and waits for another process, not for the reactor.
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                if self._override_if_stale():
                    continue
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"the mailbox is locked by another process ({self.lock_path.name}); "
                        "try again later"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            try:
                os.write(fd, f"{os.getpid()}:{self.hostname}".encode())
                self._held_inode = os.fstat(fd).st_ino
            finally:
                os.close(fd)
            return

    def release(self) -> None:
        """Remove the lock file, unless someone overrode it as stale meanwhile."""
        inode, self._held_inode = self._held_inode, None
        try:
            if inode is not None and os.stat(self.lock_path).st_ino == inode:
                os.unlink(self.lock_path)
        except FileNotFoundError:
            pass

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """``with lock.held():`` acquire and always release."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def _override_if_stale(self) -> bool:
        """Remove a stale lock file; True if the caller should retry at once."""
        try:
            st = os.stat(self.lock_path)
        except FileNotFoundError:
            return True
        age = time.time() - st.st_mtime
        if age >= _PID_CHECK_AFTER:
            pid = self._local_pid()
            if pid is not None and not _pid_exists(pid):
                return self._unlink_if_same(st.st_ino)
        newest = st.st_mtime
        with contextlib.suppress(FileNotFoundError):
            newest = max(newest, os.stat(self.path).st_mtime)
        if time.time() - newest > self.stale_timeout:
            return self._unlink_if_same(st.st_ino)
        return False

    def _local_pid(self) -> int | None:
        try:
            content = self.lock_path.read_text("ascii", errors="replace").strip()
        except FileNotFoundError:
            return None
        pid_text, sep, host = content.partition(":")
        if not sep or host != self.hostname or not pid_text.isdigit():
            return None
        pid = int(pid_text)
        return pid if pid > 0 else None

    def _unlink_if_same(self, inode: int) -> bool:
        try:
            if os.stat(self.lock_path).st_ino == inode:
                os.unlink(self.lock_path)
        except FileNotFoundError:
            pass
        return True


def _pid_exists(pid: int) -> bool:
    if pid == os.getpid():
        # Our own pid on a lock we do not hold: left over from a previous
        # process that had our pid; Dovecot overrides it too.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
