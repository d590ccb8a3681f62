"""A recipient's 250 waits for the store's append to fire (durable), in RCPT order.

The store here is a stand-in whose ``append`` Deferreds the test fires by hand,
standing for the fsyncs the real store waits for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed

from mailaccess.store.model import MessageRecord, StoreUnavailable
from tests.lmtp.helpers import Session


class HeldMailbox:
    """A mailbox whose appends stay pending until the test fires them."""

    name = "INBOX"

    def __init__(self, owner: str, pending: list[tuple[str, bytes, Deferred[Any]]]) -> None:
        self.owner = owner
        self.pending = pending

    def append(self, message: bytes, flags: Any = frozenset(), internal_date: Any = None) -> Any:
        d: Deferred[Any] = Deferred()
        self.pending.append((self.owner, message, d))
        return d


class HeldStore:
    def __init__(self) -> None:
        self.pending: list[tuple[str, bytes, Deferred[Any]]] = []

    def account(self, username: str) -> Any:
        store = self

        class Account:
            def mailbox(self, name: str) -> Deferred[Any]:
                return succeed(HeldMailbox(username, store.pending))

        return Account()


@pytest.fixture
def held(tmp_path: Path) -> tuple[Session, HeldStore]:
    session = Session(tmp_path)
    store = HeldStore()
    session.context.store = store
    session.hello()
    return session, store


def record(uid: int) -> MessageRecord:
    return MessageRecord(uid, "base", frozenset(), 10, 11, 0.0)


def test_250_only_once_append_fired_one_at_a_time_rfc2033_4_2(
    held: tuple[Session, HeldStore],
) -> None:
    session, store = held
    session.send(
        b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\n"
        b"Subject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n"
    )
    assert session.take().decode().split("\r\n")[-2].startswith("354 ")
    # alice's copy is being written; nothing is acknowledged, bob waits his turn,
    # and the pipelined NOOP waits behind the DATA replies.
    assert [owner for owner, _, _ in store.pending] == ["alice"]
    session.clock.advance(1000)  # our own slow disk is no idle client: no 421
    assert session.take() == b""
    store.pending[0][2].callback(record(7))
    assert session.take() == b"250 2.0.0 <alice> delivered as UID 7\r\n"
    assert [owner for owner, _, _ in store.pending] == ["alice", "bob"]
    store.pending[1][2].errback(StoreUnavailable("disk full"))
    assert session.take() == (
        b"451 4.3.0 <bob> could not be stored now, try again later\r\n250 2.0.0 OK\r\n"
    )
    assert store.pending[0][1] == (
        b"Return-Path: <s@remote.test>\nDelivered-To: alice\nSubject: x\n\nbody\n"
    )


def test_connection_lost_while_storing_is_quiet_and_stops_the_rest(
    held: tuple[Session, HeldStore],
) -> None:
    session, store = held
    session.send(
        b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\nx\r\n.\r\n"
    )
    session.server.connectionLost()
    store.pending[0][2].callback(record(1))
    # No 250 reached the MTA, so it will send again: bob is not stored now,
    # and alice may get the message twice: the duplicate window every SMTP/LMTP
    # sender has when a connection drops before the reply.
    assert [owner for owner, _, _ in store.pending] == ["alice"]
