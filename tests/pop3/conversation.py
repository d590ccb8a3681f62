"""Drive a POP3 session over a StringTransport and compare transcripts.

A transcript reads like the protocol::

    C: STAT
    S: +OK 2 320

A trailing space is written ``<SP>`` (e.g. the SASL empty challenge ``S: +<SP>``).
Consecutive ``C:`` lines go out in one write (pipelined, as a client may), then
everything the server wrote must equal the ``S:`` lines that follow, octet for
octet (each line ends in CRLF).
"""

from __future__ import annotations

import textwrap
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailaccess.config import AuthConfig, Config, LimitsConfig, POP3Config
from mailaccess.context import ServerContext
from mailaccess.pop3.server import POP3Factory, POP3Server
from tests.pop3.fakes import FakeAuthenticator, FakeMailbox

NON_LOOPBACK = "192.0.2.10"  # RFC 5737 documentation address
LOOPBACK = "127.0.0.1"


class STLSStringTransport(StringTransport):
    """A StringTransport that records startTLS instead of doing it."""

    tls_context: Any = None

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        self.tls_context = contextFactory


def make_context(
    *,
    tls: Any = None,
    clock: Clock | None = None,
    allow_plaintext: str = "loopback",
    **options: Any,
) -> ServerContext:
    """A context on the fake store; *options* set POP3Config or LimitsConfig fields."""
    pop3_fields = {k: v for k, v in options.items() if k in attrs.fields_dict(POP3Config)}
    limit_fields = {k: v for k, v in options.items() if k in attrs.fields_dict(LimitsConfig)}
    assert set(options) == set(pop3_fields) | set(limit_fields), options
    config = Config(
        auth=AuthConfig(allow_plaintext=allow_plaintext),  # type: ignore[arg-type]
        pop3=POP3Config(**pop3_fields),
        limits=LimitsConfig(**limit_fields),
    )
    return ServerContext(
        config=config,
        store=None,  # type: ignore[arg-type]
        authenticator=FakeAuthenticator(),  # type: ignore[arg-type]
        clock=clock or Clock(),
        tls=tls,
    )


class Conversation:
    """One client connection to a fresh POP3Server."""

    def __init__(
        self,
        context: ServerContext,
        peer: str = NON_LOOPBACK,
        implicit_tls: bool = False,
        factory: POP3Factory | None = None,
    ) -> None:
        self.context = context
        self.factory = factory or POP3Factory(context, implicit_tls)
        self.transport = STLSStringTransport(peerAddress=IPv4Address("TCP", peer, 50000))
        self.server: POP3Server = self.factory.buildProtocol(None)
        self.server.makeConnection(self.transport)
        self.greeting = self.take()

    @property
    def auth(self) -> FakeAuthenticator:
        return self.context.authenticator  # type: ignore[return-value]

    def send(self, data: bytes) -> None:
        self.server.dataReceived(data)

    def take(self) -> bytes:
        """All the server wrote since the last take (running any streaming producer)."""
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()
        data = self.transport.value()
        self.transport.clear()
        return data

    def exchange(self, transcript: str) -> None:
        """Play *transcript*; assert the server's replies equal its S: lines."""
        client: list[str] = []
        expected: list[str] = []

        def flush() -> None:
            if client:
                self.send("".join(line + "\r\n" for line in client).encode())
            got = self.take()
            want = "".join(line + "\r\n" for line in expected).encode()
            assert got == want, f"after {client!r}:\n got  {got!r}\n want {want!r}"
            client.clear()
            expected.clear()

        for raw in textwrap.dedent(transcript).strip("\n").splitlines():
            # "<SP>" stands for a trailing space, which editors and linters strip.
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
        """USER/PASS from loopback-allowed or TLS sessions; checks the +OK."""
        self.send(f"USER {user}\r\nPASS {password}\r\n".encode())
        reply = self.take()
        assert reply.startswith(b"+OK send PASS\r\n+OK logged in"), reply

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def drop(self) -> None:
        """The client goes away without QUIT."""
        self.server.connectionLost()


def user_with_mail(
    context: ServerContext, *bodies: bytes, user: str = "alice", password: str = "secret"
) -> FakeMailbox:
    """Add *user* with INBOX holding *bodies*; returns the inbox."""
    auth: FakeAuthenticator = context.authenticator  # type: ignore[assignment]
    account = auth.add_user(user, password)
    for body in bodies:
        account.inbox.add(body)
    return account.inbox
