"""Store-level measurements, in-process, against mailaccess's store directly (issue 3).

No sockets: these are the figures issue 3 sets targets for, which only the store
itself can show.  Each phase runs in a fresh Python process (this module re-invokes
itself), so "after a restart" really is a new process with only the on-disk cache,
and the memory figure is not polluted by an earlier phase.

* ``first``:  a never-opened copy of the big Maildir.  Opens INBOX through the store
  and then asks ``message_info`` of every message (which fills the metadata cache),
  while a ``LoopingCall`` heartbeat every 10 ms records how late it ran: the worst
  lateness is the longest time the reactor was held (target < 100 ms).  Then opens
  it again through the account, warm: the target is ≤ 2 ms.
* ``reopen``: a new process on the same directory, cache present: time until INBOX is
  open and until every message's metadata has been served (target ≤ 1 s).
* ``memory``: a 100,000-message mailbox of small messages opened in a fresh process;
  the growth of the process's PSS is the index's memory.  Run twice: the first open
  (no uidlist, no cache) and again after that "restart", the steady state the target
  (< 100 MB) is about.
* ``traced``: the same open under ``tracemalloc`` (in its own process, because
  tracing costs memory itself): Python allocations still held, and their peak.

``python -m bench.storebench --maildir DIR [--maildir-100k DIR] --workdir DIR`` prints
the rows as one JSON line at the end; the runner puts them in its table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.generate import copy_maildir
from bench.procstat import pss_bytes

USER = "bench"

Row = tuple[str, str, str, str]  # label, unit, value (or "error: ..."), target


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


class Heartbeat:
    """A 10 ms LoopingCall; the worst lateness is the longest the reactor was held."""

    def __init__(self, reactor: Any, interval: float = 0.010) -> None:
        from twisted.internet.task import LoopingCall

        self.reactor = reactor
        self.interval = interval
        self.worst = 0.0
        self._last = time.perf_counter()
        self._call = LoopingCall(self._beat)
        self._call.clock = reactor

    def _beat(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self._last - self.interval)
        self._last = now

    def start(self) -> None:
        self._last = time.perf_counter()
        self._call.start(self.interval, now=False)

    def stop(self) -> None:
        self._beat()  # the tail since the last beat counts too
        if self._call.running:
            self._call.stop()


def _store(mail_root: Path, reactor: Any) -> Any:
    """The real Store of the service (mailaccess.store.account), as the server builds it."""
    from mailaccess.config import MailboxesConfig
    from mailaccess.store.account import Store  # type: ignore[import-not-found,unused-ignore]

    return Store(mail_root, MailboxesConfig(), reactor)


async def _all_info(mailbox: Any, window: int = 64) -> int:
    """message_info of every message, *window* at a time; how many failed."""
    from twisted.internet.defer import DeferredList

    failed = 0
    uids = [r.uid for r in mailbox.records()]
    for start in range(0, len(uids), window):
        results = await DeferredList(
            [mailbox.message_info(uid) for uid in uids[start : start + window]],
            consumeErrors=True,
        )
        failed += sum(1 for ok, _ in results if not ok)
    return failed


async def _phase_first(reactor: Any, mail_root: Path) -> dict[str, float]:
    store = _store(mail_root, reactor)
    beat = Heartbeat(reactor)
    beat.start()
    started = time.perf_counter()
    account = store.account(USER)
    mailbox = await account.mailbox("INBOX")
    opened = time.perf_counter()
    failed = await _all_info(mailbox)
    done = time.perf_counter()
    beat.stop()
    warm = []
    for _ in range(50):
        t0 = time.perf_counter()
        await account.mailbox("INBOX")
        warm.append(time.perf_counter() - t0)
    warm.sort()
    return {
        "messages": float(len(mailbox.records())),
        "open_s": opened - started,
        "total_s": done - started,
        "held_ms": beat.worst * 1000,
        "info_failed": float(failed),
        "warm_ms": warm[len(warm) // 2] * 1000,
    }


async def _phase_reopen(reactor: Any, mail_root: Path) -> dict[str, float]:
    store = _store(mail_root, reactor)
    started = time.perf_counter()
    mailbox = await store.account(USER).mailbox("INBOX")
    opened = time.perf_counter()
    await _all_info(mailbox)
    return {"open_s": opened - started, "info_s": time.perf_counter() - opened}


async def _open_big(reactor: Any, mail_root: Path) -> tuple[Any, int]:
    import gc

    store = _store(mail_root, reactor)
    account = store.account(USER)
    gc.collect()
    before = pss_bytes(os.getpid())
    mailbox = await account.mailbox("INBOX")
    gc.collect()
    return mailbox, before


async def _phase_memory(reactor: Any, mail_root: Path) -> dict[str, float]:
    """PSS growth of a fresh process opening the mailbox (no tracing: it costs memory)."""
    mailbox, before = await _open_big(reactor, mail_root)
    return {
        "messages": float(len(mailbox.records())),
        "pss_mb": (pss_bytes(os.getpid()) - before) / 1e6,
    }


async def _phase_traced(reactor: Any, mail_root: Path) -> dict[str, float]:
    """The same open under tracemalloc: Python objects still held, and the peak."""
    import tracemalloc

    tracemalloc.start()
    await _open_big(reactor, mail_root)
    traced, peak = tracemalloc.get_traced_memory()
    return {"traced_mb": traced / 1e6, "peak_mb": peak / 1e6}


PHASES = {
    "first": _phase_first,
    "reopen": _phase_reopen,
    "memory": _phase_memory,
    "traced": _phase_traced,
}


def _child(phase: str, mail_root: Path) -> None:
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    out: dict[str, float] = {}

    def main(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            out.update(await PHASES[phase](reactor, mail_root))

        return Deferred.fromCoroutine(go())

    try:
        task.react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        print(json.dumps(out))


def _run_phase(phase: str, mail_root: Path) -> dict[str, float]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.storebench",
            "--phase",
            phase,
            "--mail-root",
            str(mail_root),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = done.stdout.strip().splitlines()
    result: dict[str, float] = json.loads(lines[-1]) if lines else {}
    if not result:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{phase}: {tail[:120]}")
    return result


def _rows(n: int, n100k: int, values: dict[str, str]) -> list[Row]:
    """The fixed rows of the store table, filled from *values* (missing: the reason)."""
    missing = values.get("_missing", "—")
    spec = [
        ("open", f"first scan, uncached ({n:,}): open INBOX", "s", ""),
        ("total", f"first scan, uncached ({n:,}): open + metadata of all", "s", ""),
        ("held", "first scan: longest reactor hold", "ms", "< 100"),
        ("warm", "warm open (index in memory), median of 50", "ms", "≤ 2"),
        ("reopen", "open after restart, cache present", "s", "≤ 1"),
        ("reinfo", "… then metadata of all from the cache", "s", ""),
        (
            "pss_first",
            f"index memory, {n100k:,} small messages, first open (PSS growth)",
            "MB",
            "",
        ),
        (
            "pss",
            f"index memory, {n100k:,} small messages, after restart (PSS growth)",
            "MB",
            "< 100",
        ),
        ("traced", "… Python allocations held after that open (tracemalloc)", "MB", ""),
        ("peak", "… Python allocations at their peak during it", "MB", ""),
    ]
    rows = [(label, unit, values.get(key, missing), target) for key, label, unit, target in spec]
    if values.get("failed"):
        rows.append(("message_info failures in the first scan", "", values["failed"], "0"))
    return rows


def measure(
    maildir: Path, maildir_100k: Path | None, workdir: Path, n: int, n100k: int
) -> list[Row]:
    """All store-level rows; a phase that fails fills its rows with why."""
    import importlib.util

    values: dict[str, str] = {}
    if importlib.util.find_spec("mailaccess.store.account") is None:
        values["_missing"] = "n/a — not implemented (mailaccess.store.account)"
        return _rows(n, n100k, values)
    root = workdir / "mail"
    if root.exists():
        shutil.rmtree(root)
    copy_maildir(maildir, root / USER)
    try:
        first = _run_phase("first", root)
        values["open"] = _fmt(first["open_s"])
        values["total"] = _fmt(first["total_s"])
        values["held"] = _fmt(first["held_ms"])
        values["warm"] = _fmt(first["warm_ms"])
        if first["info_failed"]:
            values["failed"] = _fmt(first["info_failed"])
        again = _run_phase("reopen", root)
        values["reopen"] = _fmt(again["open_s"])
        values["reinfo"] = _fmt(again["info_s"])
    except (RuntimeError, KeyError, ValueError, subprocess.TimeoutExpired) as e:
        for key in ("open", "total", "held", "warm", "reopen", "reinfo"):
            values.setdefault(key, f"error: {e}")
    if maildir_100k is None:
        for key in ("pss_first", "pss", "traced", "peak"):
            values[key] = "not run (--quick)"
    else:
        root100k = workdir / "mail100k"
        copy_maildir(maildir_100k, root100k / USER)
        try:
            # First open writes dovecot-uidlist and the cache; the second is a server
            # restarting on a mailbox it knows, the state it spends its life in.
            values["pss_first"] = _fmt(_run_phase("memory", root100k)["pss_mb"])
            values["pss"] = _fmt(_run_phase("memory", root100k)["pss_mb"])
            traced = _run_phase("traced", root100k)
            values["traced"] = _fmt(traced["traced_mb"])
            values["peak"] = _fmt(traced["peak_mb"])
        except (RuntimeError, KeyError, ValueError, subprocess.TimeoutExpired) as e:
            for key in ("pss_first", "pss", "traced", "peak"):
                values.setdefault(key, f"error: {e}")
    return _rows(n, n100k, values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=sorted(PHASES))
    parser.add_argument("--mail-root", type=Path)
    parser.add_argument("--maildir", type=Path)
    parser.add_argument("--maildir-100k", type=Path)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--count", type=int, default=10_000, help="messages in --maildir")
    parser.add_argument("--count-100k", type=int, default=100_000)
    args = parser.parse_args(argv)
    if args.phase:
        _child(args.phase, args.mail_root)
        return 0
    if args.maildir is None or args.workdir is None:
        parser.error("--maildir and --workdir are required")
    started = time.monotonic()
    rows = measure(args.maildir, args.maildir_100k, args.workdir, args.count, args.count_100k)
    print(f"store-level part took {time.monotonic() - started:.0f}s", file=sys.stderr)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
