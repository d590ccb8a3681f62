"""An LMTP session over StringTransport on the real Maildir store in a temp dir.

The store and the users-file lookups run synchronously (no threads), so a
transcript is deterministic: everything a command causes has happened by the
time ``send`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailaccess.config import Config, LMTPConfig, MailboxesConfig, QuotaConfig, ServerConfig
from mailaccess.context import ServerContext
from mailaccess.lmtp.server import LMTPFactory, LMTPServer
from mailaccess.store.account import Store
from mailaccess.store.mailbox import run_synchronously
from mailaccess.store.quota import policy_from_config

USERS = ("alice", "bob", "carol")


def run_now(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """A run_in_thread that runs at once (what the tests use instead of threads)."""
    try:
        return succeed(f(*args))
    except BaseException:
        return fail()


def make_config(tmp_path: Path, **sections: Any) -> Config:
    """A Config whose users file (alice, bob, carol) and mail root are under *tmp_path*."""
    users = tmp_path / "users"
    if not users.exists():
        users.write_text("".join(f"{u}:{{PLAIN}}secret\n" for u in USERS))
    server = ServerConfig(hostname="mx.test", mail_root=tmp_path / "mail", users_file=users)
    config = Config(server=server, lmtp=LMTPConfig(domains=("example.org",)))
    if "lmtp" in sections:
        sections["lmtp"] = attrs.evolve(config.lmtp, **sections["lmtp"])
    if "quota" in sections:
        sections["quota"] = QuotaConfig(**sections["quota"])
    return attrs.evolve(config, **sections)


class Session:
    """One LMTP connection: ``send`` bytes, ``take`` what the server wrote since."""

    def __init__(self, tmp_path: Path, **sections: Any) -> None:
        self.clock = Clock()
        clock: Any = self.clock  # a Clock provides IReactorTime; mypy cannot see zope
        self.config = make_config(tmp_path, **sections)
        self.store = Store(
            self.config.server.mail_root,
            MailboxesConfig(),
            clock,
            run_synchronously,
            quota_policy=policy_from_config(self.config),
        )
        no_login: Any = None  # LMTP never logs anyone in
        self.context = ServerContext(
            config=self.config, store=self.store, authenticator=no_login, clock=clock
        )
        self.factory = LMTPFactory(self.context, run_in_thread=run_now)
        self.server: LMTPServer = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.server.dataReceived(data)

    def take(self) -> bytes:
        value: bytes = self.transport.value()
        self.transport.clear()
        return value

    def lines(self, data: bytes) -> list[str]:
        """Send *data* and return the reply lines it caused."""
        self.send(data)
        return self.take().decode().split("\r\n")[:-1]

    def hello(self) -> None:
        self.take()
        self.send(b"LHLO client.test\r\n")
        assert self.take().startswith(b"250-mx.test\r\n")

    def messages(self, user: str, mailbox: str = "INBOX") -> list[bytes]:
        """The stored octets of every message of *user*'s *mailbox*, in UID order."""
        box: list[Any] = []
        self.store.account(user).mailbox(mailbox).addBoth(box.append)
        opened = box[0]
        result = []
        for record in opened.records():
            with opened.open_message(record.uid) as f:
                result.append(f.read())
        return result
