"""Noticing other programs' changes to open mailboxes with Linux inotify.

An MTA delivering into ``new/``, mutt renaming a file in ``cur/`` to change
its flags, Dovecot expunging: each shows up as an inotify event on the
folder's ``new/`` or ``cur/``.  We do not interpret the event; it only
schedules a ``Mailbox.rescan``, which compares the directory with the index
and emits the change events.  Many events in a burst become one rescan, and
events of our own renames (which the mailbox announces before making them)
cause none.
Without inotify (not Linux), rescans happen on NOOP/IDLE/SELECT instead.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from twisted.python.filepath import FilePath
from twisted.python.runtime import platform

from mailaccess.store.mailbox import Mailbox

#: Events that can mean "a message appeared, was renamed or vanished".
_MASK_NAMES = ("IN_CREATE", "IN_MOVED_TO", "IN_MOVED_FROM", "IN_DELETE", "IN_Q_OVERFLOW")

#: Seconds to gather a burst of events into one rescan.
BURST_DELAY = 0.02


def inotify_available(reactor: Any) -> bool:
    """True if *reactor* can watch files with inotify (Linux, a real reactor)."""
    from twisted.internet.interfaces import IReactorFDSet

    return bool(platform.supportsINotify()) and IReactorFDSet.providedBy(reactor)


class MailboxWatch:
    """One inotify descriptor for all open mailboxes of a Store."""

    def __init__(self, reactor: Any) -> None:
        from twisted.internet import inotify

        self._inotify = inotify
        self._notifier = inotify.INotify(reactor)
        self._notifier.startReading()
        self._mask = 0
        for name in _MASK_NAMES:
            self._mask |= getattr(inotify, name)
        self._overflow = inotify.IN_Q_OVERFLOW
        self._watched: dict[str, Mailbox] = {}

    def watch(self, mailbox: Mailbox) -> None:
        """Rescan *mailbox* whenever its new/ or cur/ changes."""

        for sub in ("new", "cur"):
            path = mailbox.path / sub

            def changed(_watch: Any, child: FilePath[Any], mask: int, sub: str = sub) -> None:
                if mask & self._overflow:
                    mailbox.schedule_rescan(BURST_DELAY)  # events lost: look at everything
                else:
                    # inotify hands us byte paths; our names are str.
                    name = os.fsdecode(child.basename())
                    mailbox.notice_change(sub, name, BURST_DELAY)

            self._notifier.watch(FilePath(str(path)), mask=self._mask, callbacks=[changed])
            self._watched[str(path)] = mailbox
        mailbox.watched = True

    def unwatch(self, mailbox: Mailbox) -> None:
        """Stop watching *mailbox* (deleted)."""
        for path, watched in list(self._watched.items()):
            if watched is mailbox:
                with contextlib.suppress(KeyError):
                    self._notifier.ignore(FilePath(path))
                del self._watched[path]
        mailbox.watched = False

    def close(self) -> None:
        """Release the inotify descriptor."""
        self._notifier.loseConnection()
