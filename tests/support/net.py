"""Loopback ports for test and benchmark servers."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """*count* distinct loopback TCP ports that were free a moment ago.

    All sockets stay open until every port is chosen, so the ports differ; the
    short race before the server binds them is acceptable for tests.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_open(port: int) -> bool:
    """True if something accepts connections on 127.0.0.1:*port*."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
