"""Drive IMAP sessions over StringTransports and compare transcripts.

A transcript reads like the protocol (the format of tests/pop3/conversation.py)::

    C: a1 NOOP
    S: a1 OK NOOP completed

Consecutive ``C:`` lines go out in one write (pipelined); then everything the
server wrote must equal the ``S:`` lines that follow, octet for octet.  Lines
``S: ~regex`` match a regular expression instead (for dates, UIDVALIDITY).

``store_context()`` gives a context on the real Maildir store in a temp dir,
its disk work run synchronously so transcripts stay deterministic.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailaccess.config import MailboxesConfig
from mailaccess.context import ServerContext
from mailaccess.imap.server import IMAPFactory, IMAPServer
from mailaccess.store.account import Store
from mailaccess.store.mailbox import run_synchronously
from tests.pop3.conversation import LOOPBACK, NON_LOOPBACK, make_context

__all__ = [
    "LOOPBACK",
    "NON_LOOPBACK",
    "IMAPConversation",
    "TLSStringTransport",
    "fired",
    "store_context",
]


def fired(d: Any) -> Any:
    """The result of a Deferred that must have fired already."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred should have fired synchronously"
    return box[0]


def run_now(f: Any, *args: Any) -> Any:
    """A thread runner that runs *f* at once (for deterministic transcripts)."""
    return succeed(f(*args))


class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS instead of doing it."""

    tls_context: Any = None

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        self.tls_context = contextFactory


def store_context(
    tmp_path: Path, clock: Clock | None = None, users: tuple[str, ...] = ("alice",), **options: Any
) -> ServerContext:
    """A context on a real Store under *tmp_path*; each user's password is ``secret``."""
    clock = clock or Clock()
    context = make_context(clock=clock, **options)
    store = Store(tmp_path / "mail", MailboxesConfig(), cast(Any, clock), run_synchronously)
    context.store = store
    for user in users:
        context.authenticator.add_user(user, "secret", account=store.account(user))  # type: ignore[attr-defined]
    return context


class IMAPConversation:
    """One client connection to a fresh IMAPServer."""

    def __init__(
        self,
        context: ServerContext,
        peer: str = LOOPBACK,
        implicit_tls: bool = False,
        factory: IMAPFactory | None = None,
    ) -> None:
        self.context = context
        if factory is None:
            factory = IMAPFactory(context, implicit_tls)
            # SEARCH reads bodies in a thread; here it runs at once, deterministically.
            factory.run_in_thread = run_now
        self.factory = factory
        self.transport = TLSStringTransport(peerAddress=IPv4Address("TCP", peer, 50000))
        self.server: IMAPServer = self.factory.buildProtocol(None)
        self.server.makeConnection(self.transport)
        self.greeting = self.take()

    def send(self, data: bytes) -> None:
        self.server.dataReceived(data)

    def take(self) -> bytes:
        """All the server wrote since the last take (running any streaming producer)."""
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()
        data = self.transport.value()
        self.transport.clear()
        return data

    def command(self, line: str) -> bytes:
        """Send one command line; return what the server wrote."""
        self.send(line.encode() + b"\r\n")
        return self.take()

    def exchange(self, transcript: str) -> None:
        """Play *transcript*; assert the server's replies equal its S: lines."""
        client: list[str] = []
        expected: list[str] = []

        def flush() -> None:
            if client:
                self.send("".join(line + "\r\n" for line in client).encode())
            got = self.take().decode("utf-8", "replace")
            got_lines = got.split("\r\n")
            assert got_lines[-1] == "", f"after {client!r}: output not CRLF-terminated: {got!r}"
            got_lines = got_lines[:-1]
            ok = len(got_lines) == len(expected) and all(
                re.fullmatch(want[1:], have) if want.startswith("~") else want == have
                for want, have in zip(expected, got_lines, strict=True)
            )
            assert ok, (
                f"after {client!r}:\n got:\n  "
                + "\n  ".join(got_lines)
                + "\n want:\n  "
                + "\n  ".join(expected)
            )
            client.clear()
            expected.clear()

        for raw in textwrap.dedent(transcript).strip("\n").splitlines():
            raw = raw.replace("<SP>", " ")
            tag, _, text = raw.partition(": ")
            if raw in ("S:", "C:"):
                tag, text = raw[:1], ""
            if tag == "C":
                if expected:
                    flush()
                client.append(text)
            elif tag == "S":
                expected.append(text)
            else:
                raise ValueError(f"transcript line must start with 'C: ' or 'S: ': {raw!r}")
        flush()

    def login(self, user: str = "alice", password: str = "secret") -> None:
        """LOGIN (plaintext allowed on loopback); checks the OK."""
        reply = self.command(f"L LOGIN {user} {password}")
        assert reply.startswith(b"L OK [CAPABILITY IMAP4rev1 "), reply

    def select(self, mailbox: str = "INBOX") -> bytes:
        """SELECT; checks the OK and returns the whole answer."""
        reply = self.command(f"S SELECT {mailbox}")
        assert b"S OK [READ-WRITE]" in reply, reply
        return reply

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def drop(self) -> None:
        """The client goes away without LOGOUT."""
        self.server.connectionLost()
