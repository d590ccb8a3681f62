"""Measure the memory of idle IMAP sessions with a 10,000-message INBOX selected.

Not a test (it takes a while and measures, rather than checks, a number); run it as
``.venv/bin/python -m tests.imap.measure_session_memory [sessions] [messages]``.
It builds the Maildir directly (no fsync per message), logs ``sessions`` IMAP
sessions in over StringTransports, SELECTs INBOX in each, and reports the Python
memory (tracemalloc) each session adds once the mailbox index is loaded.
Issue 5 asks for at most 50 KB per session.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import tracemalloc
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailaccess.imap.server import IMAPFactory
from tests.imap.conversation import fired, store_context


def main(sessions: int = 1000, messages: int = 10_000) -> None:
    """Print the per-session memory of *sessions* idle sessions on *messages* messages."""
    with tempfile.TemporaryDirectory() as tmp:
        context = store_context(Path(tmp), Clock())
        box = fired(context.store.account("alice").mailbox("INBOX"))
        cur = box.path / "cur"
        body = b"From: a@example.org\nSubject: hello\n\nbody\n"
        for i in range(messages):
            (cur / f"{1700000000 + i}.M{i}P1.host,S={len(body)}:2,S").write_bytes(body)
        fired(box.rescan())
        assert len(box.records()) == messages
        factory = IMAPFactory(context, False)

        def open_session() -> object:
            server = factory.buildProtocol(None)
            transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
            server.makeConnection(transport)
            server.dataReceived(b"a LOGIN alice secret\r\nb SELECT INBOX\r\n")
            assert b"b OK [READ-WRITE]" in transport.value()
            transport.clear()
            return server, transport

        open_session()  # warm caches (flag encodings, the mailbox snapshot)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        kept = [open_session() for _ in range(sessions)]
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        print(
            f"{sessions} sessions, INBOX of {messages} selected: "
            f"{grown / sessions / 1024:.1f} KiB of Python memory per session"
        )
        top = after.compare_to(before, "lineno")[:8]
        for stat in top:
            print("   ", stat)
        del kept


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
