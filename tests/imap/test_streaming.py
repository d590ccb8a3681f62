"""FETCH of big bodies streams through a producer: 500 messages of 1 MB never sit in
memory at once; the transport's buffer stays bounded when the client reads slowly."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from mailaccess.imap.server import IMAPFactory
from tests.imap.conversation import fired, store_context

LINE = b"x" * 75 + b"\n"
BODY = b"Subject: big\n\n" + LINE * (1024 * 1024 // len(LINE))
VSIZE = len(BODY) + BODY.count(b"\n")
COUNT = 500
HIGH_WATER = 256 * 1024


class SlowClientTransport(StringTransport):
    """Pauses its producer once more than HIGH_WATER octets wait, as TCP would."""

    max_buffered = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        size = len(self.io.getvalue())
        self.max_buffered = max(self.max_buffered, size)
        if size > HIGH_WATER and self.producer is not None:
            self.producer.pauseProducing()


def make_mailbox(tmp_path: Path, context: Any) -> None:
    # Hard links of one file: 500 messages of 1 MB without 500 MB of disk.
    account = context.store.account("alice")
    box = fired(account.mailbox("INBOX"))
    original = tmp_path / "original"
    original.write_bytes(BODY)
    for i in range(COUNT):
        name = f"{1700000000 + i}.M{i}P1.test,S={len(BODY)},W={VSIZE}:2,"
        os.link(original, box.path / "cur" / name)
    fired(box.rescan())
    assert len(box.records()) == COUNT


def test_fetch_500_bodies_of_1mb_streams_with_bounded_buffer(tmp_path: Path) -> None:
    context = store_context(tmp_path)
    make_mailbox(tmp_path, context)
    server = IMAPFactory(context, False).buildProtocol(None)
    transport = SlowClientTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    server.makeConnection(transport)
    server.dataReceived(b"a LOGIN alice secret\r\nb SELECT INBOX\r\n")
    transport.clear()

    tracemalloc.start()
    try:
        server.dataReceived(b"c UID FETCH 1:* BODY.PEEK[]\r\n")
        received = 0
        tail = b""
        while True:
            data = transport.value()
            transport.clear()
            received += len(data)
            tail = (tail + data)[-64:]
            if transport.producer is None:
                break
            transport.producer.resumeProducing()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert tail.endswith(b"c OK FETCH completed\r\n")
    per_message = len(b"* 1 FETCH (UID 1 BODY[] {%d}\r\n)\r\n" % VSIZE)
    assert received >= COUNT * (VSIZE + per_message)
    # The slow client never had more than a couple of chunks waiting...
    assert transport.max_buffered < HIGH_WATER + 256 * 1024
    # ...and the server never held more than a few MB while sending 500 MB.
    assert peak < 16 * 1024 * 1024, peak
