"""Nagle's algorithm is off on every protocol's TCP connections (mailaccess.net)."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from mailaccess.net import no_delay
from mailaccess.pop3.server import POP3Factory
from tests.pop3.conversation import make_context


class TCPStringTransport(StringTransport):
    """A StringTransport that records setTcpNoDelay as a TCP transport would."""

    def __init__(self, fails: bool = False) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.no_delay: bool | None = None
        self.fails = fails

    def setTcpNoDelay(self, enabled: bool) -> None:
        if self.fails:
            raise OSError(95, "Operation not supported")  # as on a UNIX socket
        self.no_delay = enabled


class TLSWrapper:
    """The shape of TLSMemoryBIOProtocol's transport: the TCP one underneath."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport


def test_no_delay_sets_tcp_nodelay() -> None:
    transport = TCPStringTransport()
    no_delay(transport)
    assert transport.no_delay is True


def test_no_delay_reaches_through_tls() -> None:
    transport = TCPStringTransport()
    no_delay(TLSWrapper(transport))
    assert transport.no_delay is True


def test_no_delay_ignores_sockets_without_it() -> None:
    no_delay(TCPStringTransport(fails=True))  # a UNIX socket: no error
    no_delay(object())  # no setTcpNoDelay at all


def test_pop3_connection_turns_nagle_off() -> None:
    """The ".CRLF" closing each RETR must not wait for the client's delayed ACK."""
    transport = TCPStringTransport()
    server = POP3Factory(make_context(), False).buildProtocol(None)
    server.makeConnection(transport)
    assert transport.no_delay is True
    assert transport.value().startswith(b"+OK ")
