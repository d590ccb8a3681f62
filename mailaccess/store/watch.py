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

from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.python.runtime import platform

from mailaccess.store.mailbox import Mailbox

log = Logger()

#: Events that can mean "a message appeared, was renamed or vanished".
_MASK_NAMES = ("IN_CREATE", "IN_MOVED_TO", "IN_MOVED_FROM", "IN_DELETE", "IN_Q_OVERFLOW")

#: Seconds to gather a burst of events into one rescan.
BURST_DELAY = 0.02


def inotify_available(reactor: Any) -> bool:
    """True if *reactor* can watch files with inotify (Linux, a real reactor)."""
    from twisted.internet.interfaces import IReactorFDSet

    return bool(platform.supportsINotify()) and IReactorFDSet.providedBy(reactor)


class MailboxWatch:
    """One inotify descriptor for all open mailboxes of a Store.

    Twisted's ``INotify`` closes its descriptor as soon as any watched
    directory is deleted (``IN_DELETE_SELF`` in ``INotify._doRead``), which
    would leave every other mailbox unwatched and make the next watch fail.
    An admin removing a user's Maildir, or Dovecot deleting a folder, must not
    do that: the watch then starts a new descriptor and watches again every
    mailbox whose directories still exist, rescanning them for what was missed.
    """

    def __init__(self, reactor: Any) -> None:
        from twisted.internet import inotify

        self._reactor = reactor
        self._inotify = inotify
        self._mask = 0
        for name in _MASK_NAMES:
            self._mask |= getattr(inotify, name)
        self._overflow = inotify.IN_Q_OVERFLOW
        self._deleted_self = inotify.IN_DELETE_SELF
        self._watched: dict[str, Mailbox] = {}
        self._renewal: Any = None  # the pending renewal call, if any
        self._notifier = self._new_notifier()

    def _new_notifier(self) -> Any:
        notifier = self._inotify.INotify(self._reactor)
        notifier.startReading()
        return notifier

    def watch(self, mailbox: Mailbox) -> None:
        """Rescan *mailbox* whenever its new/ or cur/ changes.

        If the kernel refuses the watch (the directory is gone, or the
        per-user watch limit is reached), the mailbox stays unwatched and
        falls back to rescans on NOOP/IDLE/SELECT; that is logged, not raised.
        """
        try:
            self._add(mailbox)
        except self._inotify.INotifyError:
            # Maybe our descriptor was closed under us: renew it and try once more.
            self._renew()
            try:
                self._add(mailbox)
            except self._inotify.INotifyError as error:
                self._forget(mailbox)
                log.warn(
                    "not watching {path} ({error}); changes by other programs are "
                    "noticed at the next NOOP, IDLE or SELECT",
                    path=str(mailbox.path),
                    error=error,
                )

    def _add(self, mailbox: Mailbox) -> None:
        for sub in ("new", "cur"):
            path = mailbox.path / sub

            def changed(_watch: Any, child: FilePath[Any], mask: int, sub: str = sub) -> None:
                if mask & self._deleted_self:
                    # Twisted closes the descriptor right after this callback.
                    self._schedule_renewal()
                elif mask & self._overflow:
                    mailbox.schedule_rescan(BURST_DELAY)  # events lost: look at everything
                else:
                    # inotify hands us byte paths; our names are str.
                    name = os.fsdecode(child.basename())
                    mailbox.notice_change(sub, name, BURST_DELAY)

            self._notifier.watch(FilePath(str(path)), mask=self._mask, callbacks=[changed])
            self._watched[str(path)] = mailbox
        mailbox.watched = True

    def _forget(self, mailbox: Mailbox) -> None:
        for path, watched in list(self._watched.items()):
            if watched is mailbox:
                del self._watched[path]
        mailbox.watched = False

    def _schedule_renewal(self) -> None:
        if self._renewal is None or not self._renewal.active():
            self._renewal = self._reactor.callLater(0, self._renew)

    def _renew(self) -> None:
        """A new descriptor, watching again every mailbox whose directories exist."""
        if self._renewal is not None and self._renewal.active():
            self._renewal.cancel()
        self._renewal = None
        with contextlib.suppress(Exception):
            self._notifier.loseConnection()  # usually closed already
        self._notifier = self._new_notifier()
        mailboxes = list(dict.fromkeys(self._watched.values()))
        self._watched.clear()
        for mailbox in mailboxes:
            mailbox.watched = False
            if not all((mailbox.path / sub).is_dir() for sub in ("new", "cur")):
                continue  # deleted: nothing to watch (its account forgets it)
            try:
                self._add(mailbox)
            except self._inotify.INotifyError:
                self._forget(mailbox)
                continue
            # Events between the old descriptor's end and now were lost.
            mailbox.schedule_rescan(BURST_DELAY)

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
        if self._renewal is not None and self._renewal.active():
            self._renewal.cancel()
        self._notifier.loseConnection()
