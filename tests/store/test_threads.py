"""Mutations with real worker threads (deferToThread), as in the server.

The global reactor is iterated by hand; each test gets a thread pool of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mailaccess.store.mailbox import Mailbox
from mailaccess.store.model import ChangeEvent, FlagsChanged, MessagesAdded
from tests.store.conftest import Counter

Runner = Callable[[Callable[[], Any]], Deferred[Any]]


@pytest.fixture
def threads() -> Iterator[Runner]:
    """A run_in_thread on a fresh pool (the reactor's own cannot restart)."""
    pool = ThreadPool(1, 4, "store-test")
    pool.start()
    try:
        yield lambda work: deferToThreadPool(reactor, pool, work)
    finally:
        pool.stop()


def wait(d: Deferred[Any], timeout: float = 20.0) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    deadline = time.monotonic() + timeout
    while not box and time.monotonic() < deadline:
        reactor.iterate(0.005)  # type: ignore[attr-defined]
    assert box, "timed out"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def open_threaded(path: Path, threads: Runner) -> Mailbox:
    return wait(Mailbox.open(path.name, path, reactor, Counter(), threads))


def test_concurrent_mutations_are_serialised_and_heard_in_order(
    tmp_path: Path, threads: Runner
) -> None:
    box = open_threaded(tmp_path / "box", threads)
    first: list[ChangeEvent] = []
    second: list[ChangeEvent] = []
    box.add_listener(first.append)
    box.add_listener(second.append)
    appends = [box.append(b"Subject: %d\n\nx\n" % i) for i in range(20)]
    flags = [box.store_flags([i], frozenset({"\\Seen"}), "add") for i in range(1, 21)]
    records = wait(gatherResults(appends))
    wait(gatherResults(flags))
    # Issued in order, done in order: UIDs follow the calls.
    assert [r.uid for r in records] == list(range(1, 21))
    assert first == second
    added = [e.records[0].uid for e in first if isinstance(e, MessagesAdded)]
    assert added == list(range(1, 21))
    flagged = [e.changes[0][0] for e in first if isinstance(e, FlagsChanged)]
    assert flagged == list(range(1, 21))
    # Every FlagsChanged comes after all MessagesAdded: the flag changes were queued later.
    kinds = [type(e) for e in first]
    assert kinds == [MessagesAdded] * 20 + [FlagsChanged] * 20


def test_copies_in_both_directions_do_not_deadlock(tmp_path: Path, threads: Runner) -> None:
    a = open_threaded(tmp_path / "a", threads)
    b = open_threaded(tmp_path / "b", threads)
    wait(gatherResults([a.append(b"a\n"), b.append(b"b\n")]))
    pairs = wait(gatherResults([a.copy([1], b), b.copy([1], a), a.move([1], b)]))
    assert pairs[0] == [(1, 2)] and pairs[1] == [(1, 2)]
    assert [r.uid for r in b.records()] == [1, 2, 3]
    assert [r.uid for r in a.records()] == [2]
