"""Run every workload against mailaccess and Dovecot, alternating, and print one table.

    python -m bench            # full: 10,000-message mailbox, 3 repetitions
    python -m bench --quick    # 1,000-message mailbox, 1 repetition, a few minutes

Both servers run at the same time on loopback from temp dirs, with the same users and
their own real copies of the same generated Maildirs.  For each repetition the servers
take turns per workload (mailaccess first on odd repetitions, Dovecot first on even
ones) so slow drift on a shared machine hits both alike.  Figures are medians over the
repetitions; the ratio is mailaccess / Dovecot, and the "better" column says whether
a lower or a higher number is the good direction for that row.

Server CPU is the CPU seconds the server's process tree used during the workload
(see bench/procstat.py); memory is its PSS right after the workload; "gen CPU" is the
load generator's own CPU seconds during the same time, so a reader can see that the
generator was not the bottleneck (it should stay well below the elapsed time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.generate import DATA_DIR, DATASETS, ensure_dataset
from bench.procstat import self_cpu, tree_cpu, tree_pss
from bench.servers import DovecotServer, MailaccessServer, ServerUnavailable
from bench.workloads import QUICK, USERS, Metric, Sizes, Target, Workload, workloads

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SERVERS = ("mailaccess", "Dovecot")
NOT_IMPLEMENTED = "n/a — not implemented"
WORKLOAD_TIMEOUT = 900.0


@dataclass
class Cell:
    """One server's figures for one workload over all repetitions."""

    values: dict[str, list[float]] = field(default_factory=dict)  # metric key -> samples
    cpu: list[float] = field(default_factory=list)  # server CPU s per repetition
    pss: list[float] = field(default_factory=list)  # server PSS bytes after it
    gen_cpu: list[float] = field(default_factory=list)  # load generator CPU s
    note: str = ""  # "n/a — not implemented", or the error that stopped it


@dataclass
class Results:
    """Everything one run measured, as the table and the JSON file show it."""

    machine: dict[str, str]
    mode: str
    repetitions: int
    metrics: list[Metric]
    #: workload key -> server name -> Cell
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)
    #: workload key of each metric key (to find CPU/memory for a row)
    owner: dict[str, str] = field(default_factory=dict)
    #: store-level rows (mailaccess only): (label, unit, value or note, target)
    store_rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- the table ----------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if magnitude >= 1 else f"{value:.3f}"


def _median(samples: Sequence[float]) -> float | None:
    return statistics.median(samples) if samples else None


def format_table(results: Results) -> str:
    """The run as a GitHub-flavoured Markdown table (plus the store-level table)."""
    header = [
        "workload", "unit", "better", "mailaccess", "Dovecot", "ratio ma/dc",
        "CPU s ma", "CPU s dc", "PSS MB ma", "PSS MB dc", "gen CPU s ma/dc",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    first_row_of: set[str] = set()
    for metric in results.metrics:
        workload = results.owner.get(metric.key, metric.key)
        by_server = results.cells.get(workload, {})
        ma = by_server.get("mailaccess", Cell())
        dc = by_server.get("Dovecot", Cell())
        ma_value = _median(ma.values.get(metric.key, []))
        dc_value = _median(dc.values.get(metric.key, []))
        ratio = "—"
        if ma_value is not None and dc_value:
            ratio = f"{ma_value / dc_value:.2f}"
        # CPU and memory belong to the workload: print them on its first row only.
        show = workload not in first_row_of
        first_row_of.add(workload)

        def resource(
            cell: Cell, samples: list[float], scale: float = 1.0, show: bool = show
        ) -> str:
            if not show or cell.note:
                return ""
            value = _median(samples)
            return _fmt(value / scale) if value is not None else "—"

        gen = ""
        if show:
            gen = f"{resource(ma, ma.gen_cpu) or '—'}/{resource(dc, dc.gen_cpu) or '—'}"
        row = [
            metric.label,
            metric.unit,
            "higher" if metric.higher_is_better else "lower",
            ma.note if ma.note and ma_value is None else _fmt(ma_value),
            dc.note if dc.note and dc_value is None else _fmt(dc_value),
            ratio,
            resource(ma, ma.cpu),
            resource(dc, dc.cpu),
            resource(ma, ma.pss, 1e6),
            resource(dc, dc.pss, 1e6),
            gen,
        ]
        lines.append("| " + " | ".join(row) + " |")
    out = "\n".join(lines)
    if results.store_rows:
        out += "\n\nStore level, in-process (mailaccess only; no Dovecot equivalent):\n\n"
        out += "| measurement | unit | mailaccess | target |\n|---|---|---|---|\n"
        out += "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in results.store_rows)
    return out


def format_report(results: Results) -> str:
    """Machine, mode and the table, as docs/performance.md quotes it."""
    m = results.machine
    head = (
        f"Run {m.get('date', '?')} — mode {results.mode}, {results.repetitions} repetition(s); "
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, kernel {m.get('kernel', '?')}, "
        f"Python {m.get('python', '?')}, Dovecot {m.get('dovecot', '?')}, "
        f"load average at start {m.get('loadavg', '?')}."
    )
    notes = "".join(f"\n- {n}" for n in results.notes)
    return head + "\n\n" + format_table(results) + ("\n" + notes if notes else "") + "\n"


def machine_info() -> dict[str, str]:
    """CPU model, cores, kernel, Python and Dovecot version, date, load average."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        dovecot = subprocess.run(
            ["dovecot", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dovecot = "not installed"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dovecot": dovecot,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --- running ------------------------------------------------------------------------


async def _warm_up(target: Target, users: Sequence[str] = USERS) -> None:
    """Log in once per user and open INBOX, so both servers build their indexes now.

    The first open of a mailbox is what the first-scan workload measures; every other
    workload is about a server that has seen its mailboxes before.
    """
    from bench.clients import IMAPConnection, POP3Connection
    from bench.workloads import PASSWORD

    for user in users:
        if "imap" in target.protocols:
            conn = await IMAPConnection.connect(target.host, target.ports["imap"])
            await conn.login(user, PASSWORD)
            await conn.command(b"SELECT INBOX")
            await conn.command(b"UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)")
            await conn.logout()
        elif "pop3" in target.protocols:
            pop = await POP3Connection.connect(target.host, target.ports["pop3"])
            await pop.login(user, PASSWORD)
            await pop.multi(b"LIST")
            await pop.quit()


def run_workload(workload: Workload, target: Target, sizes: Sizes, cell: Cell) -> None:
    """Run once, adding figures (or the failure) to *cell*; never raises for the server."""
    try:
        if "restart" in workload.tags and target.restart is not None:
            target.restart()
            # Log in once so the mailbox is open and the heap has its steady parts.
            asyncio.run(_warm_up(target, ("small",)))
        if "fresh" in workload.tags and target.fresh_user is not None:
            # Copy the mail before the clocks start: cp's CPU is not the generator's.
            target.prepared_user = target.fresh_user()
    except Exception as e:
        cell.note = f"error: preparing the workload: {e}"
        return
    cpu0, gen0 = tree_cpu(target.root_pid), self_cpu()
    try:
        figures = asyncio.run(asyncio.wait_for(workload.run(target, sizes), WORKLOAD_TIMEOUT))
    except Exception as e:  # the table says what failed; the other rows still run
        cell.note = f"error: {type(e).__name__}: {str(e)[:80]}"
        print(f"  {target.name} {workload.key}: {cell.note}", file=sys.stderr)
        traceback.print_exc(limit=3, file=sys.stderr)
        return
    cell.cpu.append(tree_cpu(target.root_pid) - cpu0)
    cell.gen_cpu.append(self_cpu() - gen0)
    cell.pss.append(float(tree_pss(target.root_pid)))
    if "restart" in workload.tags and target.restart is not None:
        # The restarted server has only INBOX of "small" open: open the rest again so
        # the next workloads do not pay for a reopen the others did not.
        asyncio.run(_warm_up(target))
    for key, value in figures.items():
        cell.values.setdefault(key, []).append(value)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items())
    print(f"  {target.name:10} {workload.key}: {shown}", file=sys.stderr)


def run_protocols(
    results: Results, targets: dict[str, Target | str], sizes: Sizes, reps: int, only: set[str]
) -> None:
    """Every workload, repetition and server, alternating the servers' order."""
    chosen = [w for w in workloads(sizes) if not only or w.key in only]
    for workload in chosen:
        results.cells[workload.key] = {name: Cell() for name in SERVERS}
        for metric in workload.metrics:
            results.owner[metric.key] = workload.key
    for name, target in targets.items():
        if isinstance(target, str):
            for workload in chosen:
                results.cells[workload.key][name].note = f"n/a — {target}"
        else:
            try:
                asyncio.run(_warm_up(target))
            except Exception as e:
                print(f"{name} warm-up failed: {e}", file=sys.stderr)
    for rep in range(reps):
        order = list(SERVERS) if rep % 2 == 0 else list(reversed(SERVERS))
        print(f"repetition {rep + 1}/{reps}", file=sys.stderr)
        for workload in chosen:
            for name in order:
                target = targets[name]
                cell = results.cells[workload.key][name]
                if isinstance(target, str):
                    continue
                if workload.protocol not in target.protocols:
                    cell.note = NOT_IMPLEMENTED
                    continue
                if cell.note.startswith("error"):
                    continue  # one failure per server and workload is enough
                run_workload(workload, target, sizes, cell)


def run_store_level(
    results: Results, big: Path, count: int, small100k: Path | None, workdir: Path
) -> None:
    """The in-process store measurements (bench/storebench.py) in a child process."""
    command = [sys.executable, "-m", "bench.storebench", "--maildir", str(big),
               "--count", str(count), "--workdir", str(workdir / "store")]  # fmt: skip
    if small100k is not None:
        command += ["--maildir-100k", str(small100k)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                              cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    except subprocess.TimeoutExpired:
        results.store_rows.append(("store benchmark", "", "error: timed out", ""))
        return
    sys.stderr.write(done.stderr[-3000:])
    try:
        rows = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        results.store_rows.append(("store benchmark", "", f"error: exit {done.returncode}", ""))
        return
    results.store_rows.extend(tuple(r) for r in rows)


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM takes the same path as Ctrl-C, so the finally: blocks stop both servers.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Generate (once), start both servers, run, print the table, stop both."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1,000-message mailbox, 1 repetition (a few minutes)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    parser.add_argument("--only", action="append", default=[], metavar="WORKLOAD",
                        help="run only this workload (repeatable)")  # fmt: skip
    parser.add_argument("--no-store", action="store_true", help="skip the in-process store part")
    parser.add_argument("--servers", default="mailaccess,Dovecot",
                        help="comma-separated subset of: mailaccess,Dovecot")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)

    sizes = QUICK if args.quick else Sizes()
    reps = args.reps or (1 if args.quick else 3)
    big_name = "1k" if args.quick else "10k"
    big = ensure_dataset(DATASETS[big_name], args.data_dir)
    small = ensure_dataset(DATASETS["1k"], args.data_dir)
    idle = ensure_dataset(DATASETS["idle"], args.data_dir)
    small100k = None if args.quick or args.no_store else ensure_dataset(
        DATASETS["100k-small"], args.data_dir)  # fmt: skip
    mailboxes: dict[str, Path | None] = {"big": big, "small": small, "idle": idle, "lmtp": None}

    workload_keys = {w.key for w in workloads(sizes)}
    metrics = [m for w in workloads(sizes) if not args.only or w.key in args.only
               for m in w.metrics]  # fmt: skip
    unknown = set(args.only) - workload_keys - {"store"}
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; choose from {sorted(workload_keys)}")
    results = Results(machine_info(), "quick" if args.quick else "full", reps, metrics)
    results.notes.append(
        f"'big' mailbox: the {big_name} data set; ratios < 1 are better for 'lower' rows, "
        "> 1 for 'higher' rows."
    )
    wanted = set(args.servers.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="mailaccess-bench-"))
    servers = [
        # Fresh (never indexed) users, one per first-scan workload and repetition.
        MailaccessServer(workdir / "mailaccess", mailboxes, big, 4 * reps),
        DovecotServer(workdir / "dovecot", mailboxes, big, 4 * reps),
    ]
    targets: dict[str, Target | str] = {}
    try:
        for server in servers:
            if server.name not in wanted:
                targets[server.name] = "not run (--servers)"
                continue
            print(f"starting {server.name} (copying mail)…", file=sys.stderr)
            try:
                targets[server.name] = server.start()
            except ServerUnavailable as e:
                targets[server.name] = str(e)
                print(f"{server.name}: {e}", file=sys.stderr)
        run_protocols(results, targets, sizes, reps, set(args.only))
    except KeyboardInterrupt:
        print("interrupted: stopping the servers", file=sys.stderr)
        return 130
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        else:
            print(f"kept {workdir}", file=sys.stderr)
    if not args.no_store and (not args.only or "store" in args.only):
        store_dir = Path(tempfile.mkdtemp(prefix="mailaccess-storebench-"))
        try:
            run_store_level(results, big, sizes.big_count, small100k, store_dir)
        finally:
            subprocess.run(["rm", "-rf", str(store_dir)], check=False)
    report = format_report(results)
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    (RESULTS_DIR / f"{stamp}-{results.mode}.md").write_text(report)
    raw = {
        "machine": results.machine,
        "mode": results.mode,
        "cells": {w: {s: c.__dict__ for s, c in by.items()} for w, by in results.cells.items()},
        "store": results.store_rows,
    }
    (RESULTS_DIR / f"{stamp}-{results.mode}.json").write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
