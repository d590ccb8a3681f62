"""CPU time and memory of server processes, read from Linux's /proc.

A server is measured as a *process tree*: mailaccess is one twistd process, Dovecot is
a master with login, auth, imap, pop3 and lmtp children that come and go.  CPU time of a
tree is the live processes' own time plus what the root has collected from children that
already exited (``cutime``/``cstime``: the kernel adds a child's times to its parent
when the parent reaps it, and Dovecot's master reaps every service process), so a
session process that exits mid-workload is still counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the benchmark needs (proc(5))."""

    pid: int
    ppid: int
    utime: float  # seconds
    stime: float
    cutime: float  # reaped children, seconds
    cstime: float


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """The stat of *pid*, or None if it has exited meanwhile."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return parse_stat(text)


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line.

    The command name (field 2) is in parentheses and may itself contain spaces and
    parentheses, so the fields are counted from its *last* closing parenthesis.
    """
    pid = int(text[: text.index(" ")])
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, so rest[11].
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        utime=int(rest[11]) / _TICKS,
        stime=int(rest[12]) / _TICKS,
        cutime=int(rest[13]) / _TICKS,
        cstime=int(rest[14]) / _TICKS,
    )


def all_stats(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process visible now, by pid."""
    stats: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name), proc)
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def tree_pids(root: int, stats: dict[int, ProcStat]) -> list[int]:
    """*root* and all its live descendants."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: list[int] = []
    todo = [root] if root in stats else []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu(root: int, proc: Path = PROC) -> float:
    """CPU seconds (user + system) used so far by the tree under *root*.

    Includes children already reaped by the root (see module docstring); children
    reaped by a grandchild are inside that grandchild's ``cutime`` and are added too.
    """
    stats = all_stats(proc)
    total = 0.0
    for pid in tree_pids(root, stats):
        stat = stats[pid]
        total += stat.utime + stat.stime + stat.cutime + stat.cstime
    return total


def pss_bytes(pid: int, proc: Path = PROC) -> int:
    """Proportional set size of *pid* in bytes (0 if it is gone).

    PSS divides each shared page among the processes sharing it, so summing PSS over
    Dovecot's processes does not count its shared libraries once per process.
    """
    try:
        text = (proc / str(pid) / "smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return parse_pss(text)


def parse_pss(text: str) -> int:
    """The ``Pss:`` line of an smaps_rollup text, in bytes."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_pss(root: int, proc: Path = PROC) -> int:
    """Summed PSS of the tree under *root*, in bytes."""
    return sum(pss_bytes(pid, proc) for pid in tree_pids(root, all_stats(proc)))


def self_cpu() -> float:
    """CPU seconds of this process and its reaped children (the load generator)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def sum_cpu(roots: Iterable[int]) -> float:
    """Summed tree CPU of several roots (e.g. load-generator worker processes)."""
    return sum(tree_cpu(root) for root in roots)
