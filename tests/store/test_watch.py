"""Other programs' changes noticed through inotify, on the real reactor.

The global reactor is never started (pytest owns the process); it is
iterated by hand until the expected events arrived.  Disk work runs
synchronously, so only inotify and the rescan timer go through the reactor.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.python.runtime import platform

from mailaccess.config import MailboxesConfig
from mailaccess.store.account import Store
from mailaccess.store.mailbox import run_synchronously
from mailaccess.store.model import ChangeEvent, FlagsChanged, MessagesAdded, MessagesExpunged
from tests.store.conftest import result_of

pytestmark = pytest.mark.skipif(not platform.supportsINotify(), reason="needs Linux inotify")


def iterate_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        reactor.iterate(0.01)  # type: ignore[attr-defined]
    assert condition(), "timed out waiting for the reactor"


def test_inotify_reports_external_add_rename_remove_once(tmp_path: Path) -> None:
    store = Store(tmp_path, MailboxesConfig(), reactor, run_synchronously)
    try:
        inbox = result_of(store.account("alice").mailbox("INBOX"))
        heard: list[ChangeEvent] = []
        inbox.add_listener(heard.append)
        # Our own changes come back from inotify too, but the mailbox
        # announced them: no rescan, no second event.
        rescans: list[int] = []
        real_rescan = inbox.rescan

        def counting_rescan() -> Any:
            rescans.append(1)
            return real_rescan()

        inbox.rescan = counting_rescan  # type: ignore[method-assign]
        result_of(inbox.append(b"Subject: ours\n\nx\n"))
        result_of(inbox.append(b"Subject: ours\n\nx\n"))
        result_of(inbox.store_flags([1, 2], frozenset({"\\Seen"}), "add"))
        result_of(inbox.expunge([2]))
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            reactor.iterate(0.01)  # type: ignore[attr-defined]
        assert [type(e) for e in heard] == [
            MessagesAdded, MessagesAdded, FlagsChanged, MessagesExpunged
        ]  # fmt: skip
        assert rescans == []
        del heard[:]
        result_of(inbox.store_flags([1], frozenset({"\\Seen"}), "remove"))
        del heard[:]

        # An MTA delivers through tmp/ into new/.
        tmp_file = inbox.path / "tmp" / "500.M1P1.mta"
        tmp_file.write_bytes(b"Subject: theirs\n\ny\n")
        os.rename(tmp_file, inbox.path / "new" / "500.M1P1.mta")
        iterate_until(lambda: len(heard) == 1)
        assert isinstance(heard[0], MessagesAdded) and heard[0].records[0].uid == 3
        assert "500.M1P1.mta:2," in os.listdir(inbox.path / "cur")

        # mutt marks it seen (a rename in cur/), then another program deletes uid 1.
        os.rename(inbox.message_path(3), inbox.path / "cur" / "500.M1P1.mta:2,S")
        iterate_until(lambda: len(heard) == 2)
        assert heard[1] == FlagsChanged("INBOX", ((3, frozenset({"\\Seen"})),))
        os.unlink(inbox.message_path(1))
        iterate_until(lambda: len(heard) == 3)
        assert heard[2] == MessagesExpunged("INBOX", (1,))
    finally:
        store.close()


def deliver_externally(inbox: Any, name: str) -> None:
    """What an MTA does: write in tmp/, rename into new/."""
    tmp_file = inbox.path / "tmp" / name
    tmp_file.write_bytes(b"Subject: theirs\n\ny\n")
    os.rename(tmp_file, inbox.path / "new" / name)


def test_a_deleted_maildir_does_not_blind_the_other_mailboxes(tmp_path: Path) -> None:
    """Twisted's INotify closes itself when a watched directory is deleted.

    An admin removing one user's Maildir must not stop change detection for
    everyone else, nor make opening the next user's mailbox fail.
    """
    store = Store(tmp_path, MailboxesConfig(), reactor, run_synchronously)
    try:
        alice = result_of(store.account("alice").mailbox("INBOX"))
        carol = result_of(store.account("carol").mailbox("INBOX"))
        heard: list[ChangeEvent] = []
        carol.add_listener(heard.append)
        result_of(alice.append(b"Subject: doomed\n\nx\n"))

        shutil.rmtree(tmp_path / "alice")
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            reactor.iterate(0.01)  # type: ignore[attr-defined]

        # A mailbox opened afterwards is watched, and delivery into it is heard.
        bob = result_of(store.account("bob").mailbox("INBOX"))
        assert bob.watched
        bob_heard: list[ChangeEvent] = []
        bob.add_listener(bob_heard.append)
        deliver_externally(bob, "600.M1P1.mta")
        iterate_until(lambda: len(bob_heard) == 1)
        assert isinstance(bob_heard[0], MessagesAdded)

        # The mailbox that was open all along is still watched.
        assert carol.watched
        deliver_externally(carol, "601.M1P1.mta")
        iterate_until(lambda: len(heard) == 1)
        assert isinstance(heard[0], MessagesAdded) and heard[0].records[0].uid == 1
    finally:
        store.close()


def test_unloaded_mailbox_is_unwatched_and_its_reopening_watched(tmp_path: Path) -> None:
    store = Store(tmp_path, MailboxesConfig(unload_after=0.2), reactor, run_synchronously)
    try:
        account = store.account("alice")
        first = result_of(account.mailbox("INBOX"))
        assert first.watched
        iterate_until(lambda: not first.watched)  # unused for 0.2 s: unloaded
        again = result_of(account.mailbox("INBOX"))
        assert again is not first and again.watched
        heard: list[ChangeEvent] = []
        again.add_listener(heard.append)
        (again.path / "new" / "600.M1P1.mta").write_bytes(b"Subject: theirs\n\ny\n")
        iterate_until(lambda: bool(heard))
        assert [type(e) for e in heard] == [MessagesAdded]
    finally:
        store.close()
