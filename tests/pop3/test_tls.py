"""STLS and POP3S over real TLS handshakes, in memory (iosim; no sockets).

iosim's own startTLS only pretends; ``StartTLSTransport`` below puts a real
TLSMemoryBIOProtocol under the session when startTLS is called, the way
Twisted's TCP transport does, so the bytes between client and server really
are TLS records after the switch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import twisted.test
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from zope.interface import directlyProvides

from mailaccess.pop3.server import make_factory
from tests.pop3.conversation import NON_LOOPBACK, make_context, user_with_mail

CERT = ssl.PrivateCertificate.loadPEM(
    (Path(twisted.test.__file__).parent / "server.pem").read_bytes()
)


def server_tls() -> Any:
    return CERT.options()


def client_tls() -> Any:
    # In memory there is no name to check; what matters is a real handshake.
    return ssl.CertificateOptions(verify=False)


class _Raw:
    """What the TLS layer writes through: the transport beneath the TLS."""

    def __init__(self, transport: StartTLSTransport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        iosim.FakeTransport.write(self._transport, data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        iosim.FakeTransport.loseConnection(self._transport)

    abortConnection = loseConnection

    def getPeer(self) -> Any:
        return self._transport.getPeer()

    def getHost(self) -> Any:
        return self._transport.getHost()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._transport.unregisterProducer()


class StartTLSTransport(iosim.FakeTransport):
    """An iosim transport whose startTLS starts a real TLS layer."""

    tls_layer: Any = None
    clock: Any = None  # the clock the TLS layer batches its writes on

    def startTLS(self, contextFactory: Any, beNormal: bool = True) -> None:
        factory = TLSMemoryBIOFactory(contextFactory, not self.isServer, None, self.clock)
        layer = factory.protocol(factory, self.protocol, False)
        self.tls_layer = layer
        self.protocol = layer  # octets from the peer now go through TLS
        layer.makeConnection(_Raw(self))
        directlyProvides(self, ISSLTransport)

    def write(self, data: bytes) -> None:
        if self.tls_layer is not None:
            self.tls_layer.write(data)
        else:
            super().write(data)

    def loseConnection(self) -> None:
        if self.tls_layer is not None:
            self.tls_layer.loseConnection()
        else:
            super().loseConnection()


class Client(Protocol):
    """Collects what the server sends."""

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def take(self) -> bytes:
        data, self.received = self.received, b""
        return data


def connect_plain(context: Any) -> tuple[Client, StartTLSTransport, Any, iosim.IOPump]:
    server = make_factory(context, implicit_tls=False).buildProtocol(None)
    client = Client()
    server_transport = StartTLSTransport(
        server, isServer=True, peerAddress=IPv4Address("TCP", NON_LOOPBACK, 40000)
    )
    client_transport = StartTLSTransport(client, isServer=False)
    server_transport.clock = client_transport.clock = context.clock
    pump = iosim.connect(server, server_transport, client, client_transport, clock=context.clock)
    return client, client_transport, server, pump


def test_stls_injection_never_executes_what_followed_stls_rfc2595_4() -> None:
    context = make_context(tls=server_tls())
    user_with_mail(context)
    client, client_transport, server, pump = connect_plain(context)
    assert client.take().startswith(b"+OK mailaccess POP3 server ready")

    # One packet: the STLS and a command an attacker appended in plaintext.
    client_transport.write(b"STLS\r\nCAPA\r\n")
    pump.flush()
    assert client.take() == b"+OK begin TLS negotiation now\r\n"

    client_transport.startTLS(client_tls())
    pump.flush()
    assert client_transport.tls_layer._tlsConnection.get_cipher_name() is not None
    assert server.tls
    # Nothing more arrived: the injected CAPA was not answered, in plain or TLS.
    assert client.take() == b""

    client_transport.write(b"QUIT\r\n")
    pump.flush()
    assert client.take() == b"+OK bye\r\n"


def test_after_stls_capa_offers_logins_and_no_stls_rfc2595_4() -> None:
    context = make_context(tls=server_tls())
    user_with_mail(context, b"Subject: hi\n\nhello\n")
    client, client_transport, _server, pump = connect_plain(context)
    client.take()
    client_transport.write(b"STLS\r\n")
    pump.flush()
    client.take()
    client_transport.startTLS(client_tls())
    client_transport.write(b"CAPA\r\nUSER alice\r\nPASS secret\r\nRETR 1\r\nQUIT\r\n")
    pump.flush()
    assert client.take() == (
        b"+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
        b"PIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\nIMPLEMENTATION mailaccess\r\n.\r\n"
        b"+OK send PASS\r\n+OK logged in, maildrop has 1 messages (22 octets)\r\n"
        b"+OK 22 octets\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"
        b"+OK bye, 0 deleted, 1 left in maildrop\r\n"
    )


def test_pop3s_is_tls_from_the_first_octet_and_streams_big_messages_rfc8314_3_3() -> None:
    context = make_context(tls=server_tls())
    body = b"Subject: big\n\n" + b"".join(b".%07d stuffed line\n" % i for i in range(60000))
    user_with_mail(context, body)
    server = make_factory(context, implicit_tls=True).buildProtocol(None)
    client = Client()
    client_side = TLSMemoryBIOFactory(
        client_tls(), True, Factory.forProtocol(lambda: client), context.clock
    )
    client_protocol = client_side.buildProtocol(None)
    server_transport = iosim.FakeTransport(
        server, isServer=True, peerAddress=IPv4Address("TCP", NON_LOOPBACK, 40000)
    )
    client_transport = iosim.FakeTransport(client_protocol, isServer=False)
    pump = iosim.connect(
        server, server_transport, client_protocol, client_transport, clock=context.clock
    )
    # The first octets on the wire are a TLS record (handshake, type 0x16).
    assert client.take().startswith(b"+OK mailaccess POP3 server ready")
    client_protocol.write(b"CAPA\r\n")
    pump.flush()
    assert b"STLS" not in client.take()  # no STLS inside TLS
    client_protocol.write(b"USER alice\r\nPASS secret\r\nRETR 1\r\n")
    for _ in range(2000):
        if client.received.endswith(b"\r\n.\r\n"):
            break
        pump.pump()
    reply = client.take()
    crlf_size = len(body) + body.count(b"\n")
    head = b"+OK send PASS\r\n+OK logged in, maildrop has 1 messages (%d octets)\r\n" % crlf_size
    head += b"+OK %d octets\r\n" % crlf_size
    assert reply[: len(head)] == head
    message = reply[len(head) : -len(b".\r\n")]
    assert message == body.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
