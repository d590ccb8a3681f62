"""Small socket matters shared by the protocol layers."""

from __future__ import annotations

import contextlib
from typing import Any


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
