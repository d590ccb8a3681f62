"""Small socket matters shared by the protocol layers."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory

if TYPE_CHECKING:
    from mailaccess.context import ServerContext


def no_delay(transport: Any) -> None:
    """Turn Nagle's algorithm off on the TCP connection under *transport*.

    Our replies often end in a small line after a large write (the tagged OK
    after a FETCH, the "." after a RETR, an LMTP reply to pipelined commands);
    with Nagle on, that line waits for the client's delayed ACK (about 40 ms on
    Linux) and every such command pays it.  TLS transports wrap the TCP one,
    hence the look one level down.
    """
    for candidate in (transport, getattr(transport, "transport", None)):
        set_no_delay = getattr(candidate, "setTcpNoDelay", None)
        if set_no_delay is not None:
            # OSError: not a TCP socket after all (a UNIX socket).
            with contextlib.suppress(OSError):
                set_no_delay(True)
            return


def is_loopback(address: object) -> bool:
    """True for 127.0.0.0/8, ::1 (also IPv4-mapped) and UNIX sockets.

    Where ``allow_plaintext = "loopback"``, these peers may log in before TLS.
    """
    host = getattr(address, "host", None)
    if host is None:
        return getattr(address, "name", None) is not None  # UNIXAddress
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def wrap_implicit_tls(context: ServerContext, factory: Any, listener: str) -> Factory[Any]:
    """*factory* wrapped in TLS from the first octet (RFC 8314 §3.3).

    *listener* names the listener in the error when no certificate is configured.
    """
    if context.tls is None:
        raise ValueError(
            f"a {listener} listener needs TLS: set [tls] certificate and private_key in the config"
        )
    # The TLS layer batches small writes until the clock's next turn: give it
    # ours, so that tests on a task.Clock control it like everything else.
    return TLSMemoryBIOFactory(
        context.tls, False, cast(IProtocolFactory, factory), clock=context.clock
    )
