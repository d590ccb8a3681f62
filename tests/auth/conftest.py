"""Test doubles for the auth layer: real threads without a running reactor."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class ThreadedRunner:
    """``deferToThread`` over a real ThreadPool, results handed back by a queue.

    It plays the reactor's part for ``deferToThreadPool``: ``callFromThread``
    queues the callback and ``wait`` runs the queue on the test's (main)
    thread, so Deferreds fire where they would in the server.
    """

    def __init__(self) -> None:
        self.pool = ThreadPool(minthreads=1, maxthreads=4, name="auth-test")
        self.pool.start()
        self._calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]
        self._calls = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._calls.put((f, args, kwargs))

    def __call__(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self, self.pool, f, *args, **kwargs)  # type: ignore[arg-type]

    def pump(self, timeout: float = 30.0) -> None:
        """Run one callback a worker thread handed back."""
        f, args, kwargs = self._calls.get(timeout=timeout)
        f(*args, **kwargs)

    def stop(self) -> None:
        self.pool.stop()


@pytest.fixture
def runner() -> Iterator[ThreadedRunner]:
    r = ThreadedRunner()
    yield r
    r.stop()


def wait(d: Deferred[Any], runner: ThreadedRunner | None = None, timeout: float = 30.0) -> Any:
    """The result of *d*, pumping *runner* until it fires; failures are raised."""
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    while not outcome:
        if runner is None:
            raise AssertionError("Deferred has not fired")
        runner.pump(timeout)
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result
