"""Fixtures for store tests: synchronous Deferreds, a fake clock, fresh Maildirs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from mailaccess.config import MailboxesConfig
from mailaccess.store.account import Store
from mailaccess.store.mailbox import Mailbox, run_synchronously


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that must already have fired; raises its failure."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failure_of(d: Deferred[Any]) -> BaseException:
    """The exception a fired, failed Deferred carries."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    assert isinstance(box[0], Failure), f"expected a failure, got {box[0]!r}"
    return box[0].value


class Counter:
    """A UIDVALIDITY source for mailboxes opened outside an Account."""

    def __init__(self, start: int = 1000) -> None:
        self.value = start

    def __call__(self) -> int:
        self.value += 1
        return self.value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_mailbox(tmp_path: Path, clock: Clock) -> Callable[..., Mailbox]:
    """Open (synchronously) the Maildir at tmp_path/<name>."""
    counter = Counter()

    def opener(name: str = "box", path: Path | None = None) -> Mailbox:
        d = Mailbox.open(name, path or tmp_path / name, clock, counter, run_synchronously)
        return result_of(d)

    return opener


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Store:
    return Store(tmp_path / "mail", MailboxesConfig(), clock, run_synchronously)
