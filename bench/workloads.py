"""The protocol workloads of issue 8, each run the same way against any server.

A workload is an async function of a ``Target`` (where a server listens, which users
it has) and the run's ``Sizes``; it returns one or more named figures.  Figures carry
their unit and whether lower or higher is better, so the table can print ratios with
the right reading.  Nothing here knows which server it talks to.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.clients import (
    IMAPConnection,
    LMTPConnection,
    POP3Connection,
    ProtocolFailure,
    dot_stuff,
    insecure_tls_context,
)
from bench.procstat import tree_pss

PASSWORD = "bench-secret"

#: Users every server under test gets, and the data set each one's INBOX holds.
#: "big" is the 10,000-message mailbox (1,000 in --quick), "small" the 1,000 one.
USERS = ("big", "small", "idle", "lmtp")


@dataclass(frozen=True)
class Metric:
    """One figure a workload reports: a table row."""

    key: str
    label: str
    unit: str
    higher_is_better: bool


@dataclass
class Target:
    """A running server as the load generator sees it."""

    name: str
    host: str
    ports: dict[str, int]
    root_pid: int
    #: Protocols this server actually serves now; others are "not implemented".
    protocols: frozenset[str]
    #: Gives a fresh, never-indexed copy of the "big" data set to a new user; the
    #: user's name is returned.  Used by the first-scan workload.
    fresh_user: Callable[[], str] | None = None
    #: The fresh user made for the current "fresh"-tagged workload, before its timing.
    prepared_user: str | None = None
    #: Restarts a single-process server so a "restart"-tagged workload sees a fresh
    #: heap; returns the new root pid.  None where per-session memory is per process.
    restart: Callable[[], int] | None = None


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does; ``--quick`` shrinks them."""

    big_count: int = 10_000  # messages in the "big" mailbox
    logins: int = 200
    tls_logins: int = 100
    selects: int = 20
    body_fetch: int = 500
    store_range: str = "1:*"
    retr: int = 1_000
    lmtp_messages: int = 10_000
    lmtp_connections: int = 4
    lmtp_size: int = 10 * 1024
    concurrency: tuple[int, ...] = (50, 200)
    sessions_per_worker: int = 5
    idle_clients: int = 100
    idle_sessions: int = 1_000
    pop3_sessions: int = 5
    #: A SEARCH takes 10-40 ms and RETR of 1,000 messages ~150 ms: one sample of
    #: either swings by half on a shared machine, so each repetition takes the
    #: median of this many (for both servers alike).
    searches: int = 5
    retr_runs: int = 3


QUICK = Sizes(
    big_count=1_000,
    logins=50,
    tls_logins=20,
    selects=10,
    body_fetch=200,
    retr=500,
    lmtp_messages=1_000,
    concurrency=(50, 200),
    sessions_per_worker=2,
    idle_clients=100,
    idle_sessions=200,
    pop3_sessions=3,
    searches=3,
    retr_runs=1,
)

Figures = dict[str, float]
WorkloadFn = Callable[[Target, Sizes], Awaitable[Figures]]


@dataclass(frozen=True)
class Workload:
    """A named workload, the protocol it needs and the figures it yields."""

    key: str
    protocol: str  # "imap", "pop3" or "lmtp"
    metrics: tuple[Metric, ...]
    run: WorkloadFn
    #: Workloads that leave many sessions open measure memory themselves.
    notes: str = ""
    tags: frozenset[str] = field(default_factory=frozenset)


def _ms(seconds: float) -> float:
    return seconds * 1000.0


async def _imap_session(target: Target, user: str, tls: bool = False) -> IMAPConnection:
    port = target.ports["imaps" if tls else "imap"]
    conn = await IMAPConnection.connect(target.host, port, insecure_tls_context() if tls else None)
    await conn.login(user, PASSWORD)
    return conn


async def _select_checked(conn: IMAPConnection, expected: int, command: bytes = b"SELECT") -> None:
    """SELECT/EXAMINE INBOX and insist on *expected* messages (RFC 3501 §7.3.1 EXISTS).

    A server that answered OK on an empty or half-indexed mailbox would otherwise look
    impossibly fast.
    """
    response = await conn.command(command + b" INBOX", keep=True)
    for line in response.untagged:
        parts = line.split()
        if len(parts) == 3 and parts[2].upper() == b"EXISTS":
            if int(parts[1]) != expected:
                raise ProtocolFailure(f"INBOX has {int(parts[1])} messages, expected {expected}")
            return
    raise ProtocolFailure("SELECT sent no EXISTS")


# --- IMAP ---------------------------------------------------------------------------


async def imap_login_plain(target: Target, sizes: Sizes) -> Figures:
    """Connect, LOGIN, LOGOUT, one after another (RFC 3501 §6.2.3, §6.1.3)."""
    started = time.perf_counter()
    for _ in range(sizes.logins):
        conn = await _imap_session(target, "small")
        await conn.logout()
    return {"imap_login": _ms(time.perf_counter() - started) / sizes.logins}


async def imap_login_tls(target: Target, sizes: Sizes) -> Figures:
    """The same over implicit TLS (RFC 8314): the handshake dominates."""
    started = time.perf_counter()
    for _ in range(sizes.tls_logins):
        conn = await _imap_session(target, "small", tls=True)
        await conn.logout()
    return {"imap_login_tls": _ms(time.perf_counter() - started) / sizes.tls_logins}


async def imap_select(target: Target, sizes: Sizes) -> Figures:
    """SELECT of the big INBOX, warm: the mailbox was opened once before timing."""
    conn = await _imap_session(target, "big")
    await _select_checked(conn, sizes.big_count)
    started = time.perf_counter()
    for _ in range(sizes.selects):
        await conn.command(b"SELECT INBOX")
    elapsed = time.perf_counter() - started
    await conn.logout()
    return {"imap_select": _ms(elapsed) / sizes.selects}


async def imap_fetch_headers(target: Target, sizes: Sizes) -> Figures:
    """``UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)`` of the big INBOX."""
    conn = await _imap_session(target, "big")
    await _select_checked(conn, sizes.big_count, b"EXAMINE")
    started = time.perf_counter()
    await conn.command(b"UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    elapsed = time.perf_counter() - started
    await conn.logout()
    return {"imap_fetch_headers": _ms(elapsed)}


async def imap_fetch_bodies(target: Target, sizes: Sizes) -> Figures:
    """``UID FETCH 1:500 BODY.PEEK[]``: whole messages, MB/s of octets received."""
    conn = await _imap_session(target, "big")
    await conn.command(b"EXAMINE INBOX")
    started = time.perf_counter()
    response = await conn.command(b"UID FETCH 1:%d BODY.PEEK[]" % sizes.body_fetch)
    elapsed = time.perf_counter() - started
    await conn.logout()
    return {"imap_fetch_bodies": response.octets / elapsed / 1e6}


def _search(key: str, criterion: bytes) -> WorkloadFn:
    async def run(target: Target, sizes: Sizes) -> Figures:
        times = []
        for _ in range(sizes.searches):
            # A session each: what a client that connects, searches and leaves sees.
            conn = await _imap_session(target, "big")
            await conn.command(b"EXAMINE INBOX")
            started = time.perf_counter()
            await conn.command(b"UID SEARCH " + criterion)
            times.append(time.perf_counter() - started)
            await conn.logout()
        return {key: _ms(statistics.median(times))}

    run.__doc__ = (
        f"UID SEARCH {criterion.decode()} over the big INBOX (RFC 3501 §6.4.4), the first "
        "search of a session: the median of Sizes.searches sessions."
    )
    return run


async def imap_store_flags(target: Target, sizes: Sizes) -> Figures:
    """``UID STORE 1:* +FLAGS (\\Flagged)`` then ``-FLAGS``: every file renamed twice.

    \\Flagged rather than \\Seen so the pair leaves the mailbox as it found it and the
    other workloads see the same flags on every repetition.
    """
    conn = await _imap_session(target, "big")
    await conn.command(b"SELECT INBOX")
    started = time.perf_counter()
    await conn.command(b"UID STORE %s +FLAGS (\\Flagged)" % sizes.store_range.encode())
    await conn.command(b"UID STORE %s -FLAGS (\\Flagged)" % sizes.store_range.encode())
    elapsed = time.perf_counter() - started
    await conn.logout()
    return {"imap_store": _ms(elapsed) / 2}


def _concurrent(workers: int) -> WorkloadFn:
    async def run(target: Target, sizes: Sizes) -> Figures:
        latencies: list[float] = []

        async def worker() -> None:
            for _ in range(sizes.sessions_per_worker):
                began = time.perf_counter()
                conn = await _imap_session(target, "small")
                await conn.command(b"SELECT INBOX")
                await conn.command(b"UID FETCH 1:20 (UID FLAGS RFC822.SIZE)")
                await conn.logout()
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - started
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return {
            f"sessions{workers}_rate": len(latencies) / elapsed,
            f"sessions{workers}_p50": _ms(statistics.median(latencies)),
            f"sessions{workers}_p99": _ms(p99),
        }

    run.__doc__ = (
        f"{workers} clients at once, each doing sessions back to back: connect, LOGIN, "
        "SELECT, a small FETCH, LOGOUT."
    )
    return run


async def imap_idle_fanout(target: Target, sizes: Sizes) -> Figures:
    """N clients IDLE on one INBOX (RFC 2177); time from APPEND until all saw EXISTS."""
    clients: list[IMAPConnection] = []
    try:
        for _ in range(sizes.idle_clients):
            conn = await _imap_session(target, "idle")
            await conn.command(b"SELECT INBOX")
            tag = conn.next_tag()
            conn.writer.write(tag + b" IDLE\r\n")
            line = await conn.reader.readline()
            if not line.startswith(b"+"):
                raise ProtocolFailure(f"IDLE -> {line!r}")
            clients.append(conn)
        # Settle: Dovecot's imap processes register their inotify watches after "+ idling".
        await asyncio.sleep(0.5)

        async def wait_exists(conn: IMAPConnection) -> float:
            while True:
                line = await conn.reader.readline()
                if not line:
                    raise ProtocolFailure("connection closed during IDLE")
                if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
                    return time.perf_counter()

        waiters = [asyncio.ensure_future(wait_exists(c)) for c in clients]
        appender = await _imap_session(target, "idle")
        message = dot_stuff(b"From: a@example.com\nSubject: idle ping\n\nping\n")
        started = time.perf_counter()
        await appender.append("INBOX", message)
        seen = await asyncio.wait_for(asyncio.gather(*waiters), timeout=30)
        await appender.logout()
        return {"idle_fanout": _ms(max(seen) - started)}
    finally:
        for conn in clients:
            conn.writer.write(b"DONE\r\n")
        await asyncio.gather(*(c.logout() for c in clients), return_exceptions=True)


async def imap_idle_sessions(target: Target, sizes: Sizes) -> Figures:
    """Server memory per authenticated session with INBOX selected, N at once.

    PSS of the whole server (all Dovecot processes; the one twistd process) with N
    sessions open, minus the same with none, divided by N.  A one-process server is
    restarted first (tag "restart"): memory freed by earlier workloads stays in its
    allocator's pools and would hide the sessions' growth.  The mailbox index opened
    by the first session is then counted in too, a slight overestimate.
    """
    await asyncio.sleep(0.5)  # let sessions of the previous workload finish exiting
    before = tree_pss(target.root_pid)
    conns: list[IMAPConnection] = []
    try:
        for start in range(0, sizes.idle_sessions, 50):
            batch = await asyncio.gather(
                *(
                    _imap_session(target, "small")
                    for _ in range(min(50, sizes.idle_sessions - start))
                )
            )
            await asyncio.gather(*(c.command(b"SELECT INBOX") for c in batch))
            conns.extend(batch)
        await asyncio.sleep(1.0)
        after = tree_pss(target.root_pid)
    finally:
        await asyncio.gather(*(c.logout() for c in conns), return_exceptions=True)
    return {"idle_session_kb": (after - before) / len(conns) / 1024}


def _take_fresh_user(target: Target) -> str:
    """The never-indexed user prepared for this workload (used up by taking it)."""
    user = target.prepared_user
    if user is None:
        raise ProtocolFailure("no fresh (never indexed) user was prepared")
    target.prepared_user = None  # the next repetition needs a new one
    return user


#: What Thunderbird asks for when it first syncs a folder (its default header list).
THUNDERBIRD_HEADERS = (
    b"UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc "
    b"Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
    b"Content-Type Reply-To)])"
)


#: What a client that shows structure asks for (Apple Mail's first sync is of this kind).
ENVELOPE_AND_STRUCTURE = (
    b"UID FETCH 1:* (UID RFC822.SIZE FLAGS INTERNALDATE ENVELOPE BODYSTRUCTURE)"
)


def _first_fetch(key: str, fetch: bytes) -> WorkloadFn:
    async def run(target: Target, sizes: Sizes) -> Figures:
        user = _take_fresh_user(target)
        started = time.perf_counter()
        conn = await _imap_session(target, user)
        await _select_checked(conn, sizes.big_count)
        await conn.command(fetch)
        elapsed = time.perf_counter() - started
        await conn.logout()
        return {key: elapsed}

    run.__doc__ = f"A never-indexed copy of the big mailbox: SELECT + {fetch.decode()}."
    return run


imap_first_scan = _first_fetch("imap_first_scan", b"UID FETCH 1:* (UID RFC822.SIZE ENVELOPE)")
imap_first_headers = _first_fetch("imap_first_headers", THUNDERBIRD_HEADERS)
imap_first_structure = _first_fetch("imap_first_structure", ENVELOPE_AND_STRUCTURE)


# --- POP3 ---------------------------------------------------------------------------


async def pop3_session(target: Target, sizes: Sizes) -> Figures:
    """Connect, USER/PASS, STAT, LIST, UIDL, QUIT on the big maildrop (RFC 1939)."""
    started = time.perf_counter()
    for _ in range(sizes.pop3_sessions):
        conn = await POP3Connection.connect(target.host, target.ports["pop3"])
        await conn.login("big", PASSWORD)
        await conn.simple(b"STAT")
        await conn.multi(b"LIST")
        await conn.multi(b"UIDL")
        await conn.quit()
    return {"pop3_session": _ms(time.perf_counter() - started) / sizes.pop3_sessions}


async def pop3_retr(target: Target, sizes: Sizes) -> Figures:
    """RETR of messages 1..N of the big maildrop, pipelined 16 deep (RFC 2449 PIPELINING).

    Both servers advertise PIPELINING; a window of 16 keeps the socket busy so the
    figure is the server's streaming rate, not the round-trip time.  The median of
    Sizes.retr_runs sessions.  RETR sets \\Seen (contract rule 3; Dovecot does too), so
    the first session of a run also renames each file; later ones find them seen.
    """
    rates = [await _pop3_retr_once(target, sizes) for _ in range(sizes.retr_runs)]
    return {"pop3_retr": statistics.median(rates)}


async def _pop3_retr_once(target: Target, sizes: Sizes) -> float:
    conn = await POP3Connection.connect(target.host, target.ports["pop3"])
    await conn.login("big", PASSWORD)
    octets = 0
    window = 16
    started = time.perf_counter()
    sent = 0
    for number in range(1, min(window, sizes.retr) + 1):
        conn.writer.write(b"RETR %d\r\n" % number)
        sent = number
    for _ in range(sizes.retr):
        octets += len(await conn.read_multi(b"RETR"))
        if sent < sizes.retr:
            sent += 1
            conn.writer.write(b"RETR %d\r\n" % sent)
    elapsed = time.perf_counter() - started
    await conn.simple(b"RSET")
    await conn.quit()
    return octets / elapsed / 1e6


async def pop3_first_scan(target: Target, sizes: Sizes) -> Figures:
    """A never-indexed copy of the big maildrop: USER/PASS, STAT, LIST, QUIT.

    LIST needs every message's CRLF size, so the files in new/ (whose names carry no
    size) must be read; Dovecot also builds its index here.
    """
    user = _take_fresh_user(target)
    started = time.perf_counter()
    conn = await POP3Connection.connect(target.host, target.ports["pop3"])
    await conn.login(user, PASSWORD)
    stat = await conn.simple(b"STAT")
    if int(stat.split()[1]) != sizes.big_count:
        raise ProtocolFailure(f"STAT {stat!r}, expected {sizes.big_count} messages")
    await conn.multi(b"LIST")
    await conn.quit()
    return {"pop3_first_scan": time.perf_counter() - started}


# --- LMTP ---------------------------------------------------------------------------


def _lmtp_message(index: int, size: int) -> bytes:
    body_line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod\n"
    head = (
        b"From: sender@example.net\nTo: lmtp@example.com\nSubject: delivery %d\n"
        b"Message-ID: <%d@lmtp.bench>\n\n" % (index, index)
    )
    body = body_line * max(1, (size - len(head)) // len(body_line))
    return dot_stuff(head + body)


async def lmtp_delivery(target: Target, sizes: Sizes) -> Figures:
    """N messages of ~10 KB over K connections at once (RFC 2033); messages/s."""
    per_connection = sizes.lmtp_messages // sizes.lmtp_connections
    template = _lmtp_message(0, sizes.lmtp_size)

    async def sender(offset: int) -> None:
        conn = await LMTPConnection.connect(target.host, target.ports["lmtp"])
        for i in range(per_connection):
            # Vary the Message-ID so no server can dedupe; the size stays the same.
            message = template.replace(b"<0@lmtp.bench>", b"<%d@lmtp.bench>" % (offset + i), 1)
            await conn.deliver("sender@example.net", "lmtp", message)
        await conn.quit()

    started = time.perf_counter()
    await asyncio.gather(*(sender(k * per_connection) for k in range(sizes.lmtp_connections)))
    elapsed = time.perf_counter() - started
    return {"lmtp_rate": per_connection * sizes.lmtp_connections / elapsed}


# --- the list -----------------------------------------------------------------------


def _m(key: str, label: str, unit: str, higher: bool = False) -> Metric:
    return Metric(key, label, unit, higher)


def workloads(sizes: Sizes) -> list[Workload]:
    """Every protocol workload, in the order the table lists them."""
    n = sizes.big_count
    items = [
        Workload("imap_login", "imap", (_m("imap_login", "IMAP LOGIN+LOGOUT", "ms"),),
                 imap_login_plain),
        Workload("imap_login_tls", "imap", (_m("imap_login_tls", "IMAPS LOGIN+LOGOUT", "ms"),),
                 imap_login_tls),
        Workload("imap_select", "imap", (_m("imap_select", f"SELECT INBOX ({n:,}), warm", "ms"),),
                 imap_select),
        Workload("imap_fetch_headers", "imap",
                 (_m("imap_fetch_headers", f"UID FETCH 1:* ENVELOPE etc. ({n:,})", "ms"),),
                 imap_fetch_headers),
        Workload("imap_fetch_bodies", "imap",
                 (_m("imap_fetch_bodies", f"UID FETCH 1:{sizes.body_fetch} BODY.PEEK[]", "MB/s",
                     True),),
                 imap_fetch_bodies),
        Workload("imap_search_subject", "imap",
                 (_m("imap_search_subject", "UID SEARCH SUBJECT", "ms"),),
                 _search("imap_search_subject", b'SUBJECT "budget"')),
        Workload("imap_search_from", "imap", (_m("imap_search_from", "UID SEARCH FROM", "ms"),),
                 _search("imap_search_from", b'FROM "smith"')),
        Workload("imap_search_body", "imap", (_m("imap_search_body", "UID SEARCH BODY", "ms"),),
                 _search("imap_search_body", b'BODY "deadline"')),
        Workload("imap_store", "imap",
                 (_m("imap_store", f"UID STORE 1:* ±FLAGS ({n:,}), each", "ms"),),
                 imap_store_flags),
    ]  # fmt: skip
    for workers in sizes.concurrency:
        items.append(
            Workload(
                f"sessions{workers}",
                "imap",
                (
                    _m(
                        f"sessions{workers}_rate", f"{workers} concurrent sessions", "sess/s", True
                    ),
                    _m(f"sessions{workers}_p50", f"{workers} concurrent sessions p50", "ms"),
                    _m(f"sessions{workers}_p99", f"{workers} concurrent sessions p99", "ms"),
                ),
                _concurrent(workers),
            )
        )
    items += [
        Workload("idle_fanout", "imap",
                 (_m("idle_fanout", f"IDLE fan-out, {sizes.idle_clients} clients", "ms"),),
                 imap_idle_fanout),
        Workload("idle_sessions", "imap",
                 (_m("idle_session_kb", f"memory/idle session ({sizes.idle_sessions:,})", "KB"),),
                 imap_idle_sessions, tags=frozenset({"restart"})),
        Workload("pop3_session", "pop3",
                 (_m("pop3_session", f"POP3 login+STAT+LIST+UIDL+QUIT ({n:,})", "ms"),),
                 pop3_session),
        Workload("pop3_retr", "pop3",
                 (_m("pop3_retr", f"POP3 RETR 1..{sizes.retr:,}", "MB/s", True),),
                 pop3_retr),
        Workload("lmtp", "lmtp",
                 (_m("lmtp_rate", f"LMTP {sizes.lmtp_messages:,} x 10 KB, "
                     f"{sizes.lmtp_connections} conns", "msg/s", True),),
                 lmtp_delivery),
        Workload("imap_first_scan", "imap",
                 (_m("imap_first_scan", f"first scan, uncached ({n:,}), SELECT+ENVELOPE", "s"),),
                 imap_first_scan, tags=frozenset({"fresh"})),
        Workload("imap_first_headers", "imap",
                 (_m("imap_first_headers",
                     f"first scan, uncached ({n:,}), SELECT+Thunderbird headers", "s"),),
                 imap_first_headers, tags=frozenset({"fresh"})),
        Workload("imap_first_structure", "imap",
                 (_m("imap_first_structure",
                     f"first scan, uncached ({n:,}), SELECT+ENVELOPE+BODYSTRUCTURE", "s"),),
                 imap_first_structure, tags=frozenset({"fresh"})),
        Workload("pop3_first_scan", "pop3",
                 (_m("pop3_first_scan", f"first scan, uncached ({n:,}), POP3 STAT+LIST", "s"),),
                 pop3_first_scan, tags=frozenset({"fresh"})),
    ]  # fmt: skip
    return items


def all_metrics(sizes: Sizes) -> list[Metric]:
    """Every row of the protocol part of the table."""
    return [metric for workload in workloads(sizes) for metric in workload.metrics]


__all__ = [
    "PASSWORD",
    "QUICK",
    "USERS",
    "Metric",
    "Path",
    "Sizes",
    "Target",
    "Workload",
    "all_metrics",
    "workloads",
]
