"""In-memory stand-ins for the store and the authenticator, honouring their contracts.

``FakeMailbox`` follows mailaccess/store/interfaces.py: records in UID order,
one change event per successful mutation, delivered to every listener *before*
the mutation's Deferred fires; bodies kept with LF line ends and ``vsize``
counting them as CRLF.  ``hold()`` keeps the next mutation's Deferred pending,
to test pipelining; ``fail_next`` makes the next mutation fail.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import attrs
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.internet.defer import Deferred, fail, succeed

from mailaccess.auth.login import LoginFailed, LoginResult
from mailaccess.store.model import (
    ChangeEvent,
    Flags,
    FlagsChanged,
    MessageGone,
    MessageRecord,
    MessagesAdded,
    MessagesExpunged,
    StoreError,
)


def crlf_size(body: bytes) -> int:
    """The CRLF size of an LF-stored body, counted the way the store's vsize is."""
    return len(body) + body.count(b"\n") - body.count(b"\r\n")


class FakeMailbox:
    """An IMailbox in memory (the parts POP3 uses, plus event plumbing)."""

    def __init__(self, name: str = "INBOX", uidvalidity: int = 1700000000) -> None:
        self.name = name
        self._uidvalidity = uidvalidity
        self._uidnext = 1
        self._records: dict[int, MessageRecord] = {}
        self.bodies: dict[int, bytes] = {}
        self.listeners: list[Any] = []
        self.held: list[tuple[Deferred[Any], Any]] = []
        self._hold_next = False
        self.fail_next: StoreError | None = None
        self.opened: list[int] = []
        self.sources: list[io.BytesIO] = []  # every file open_message handed out

    @property
    def uidvalidity(self) -> int:
        return self._uidvalidity

    @property
    def uidnext(self) -> int:
        return self._uidnext

    # --- test helpers ------------------------------------------------------------

    def add(self, body: bytes, flags: Iterable[str] = ()) -> MessageRecord:
        """Deliver *body* (stored as given) and tell the listeners."""
        uid = self._uidnext
        self._uidnext += 1
        record = MessageRecord(
            uid=uid,
            base=f"1700000000.M{uid}P1.test",
            flags=frozenset(flags),
            size=len(body),
            vsize=crlf_size(body),
            internal_date=1700000000.0,
        )
        self._records[uid] = record
        self.bodies[uid] = body
        self._emit(MessagesAdded(self.name, (record,)))
        return record

    def expunge_now(self, *uids: int) -> None:
        """Another session (IMAP EXPUNGE) removes these messages."""
        gone = tuple(uid for uid in uids if self._records.pop(uid, None) is not None)
        if gone:
            self._emit(MessagesExpunged(self.name, gone))

    def flags_of(self, uid: int) -> Flags:
        return self._records[uid].flags

    def hold(self) -> None:
        """Keep the next mutation pending until ``release()``."""
        self._hold_next = True

    def release(self) -> None:
        for d, result in self.held:
            d.callback(result)
        self.held.clear()

    def _emit(self, event: ChangeEvent) -> None:
        for listener in list(self.listeners):
            listener(event)

    def _finish(self, result: Any, event: ChangeEvent | None) -> Deferred[Any]:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            return fail(error)
        if event is not None:
            self._emit(event)  # the contract: events before the Deferred fires
        if self._hold_next:
            self._hold_next = False
            d: Deferred[Any] = Deferred()
            self.held.append((d, result))
            return d
        return succeed(result)

    # --- IMailbox -----------------------------------------------------------------

    def records(self) -> list[MessageRecord]:
        return [self._records[uid] for uid in sorted(self._records)]

    def record(self, uid: int) -> MessageRecord | None:
        return self._records.get(uid)

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Any) -> None:
        self.listeners.remove(listener)

    def store_flags(self, uids: Iterable[int], flags: Flags, mode: str) -> Deferred[Any]:
        if self.fail_next is not None:
            return self._finish(None, None)
        changed: dict[int, Flags] = {}
        for uid in uids:
            record = self._records.get(uid)
            if record is None:
                continue
            if mode == "add":
                new = record.flags | flags
            elif mode == "remove":
                new = record.flags - flags
            else:
                new = frozenset(flags)
            if new != record.flags:
                self._records[uid] = attrs.evolve(record, flags=new)
                changed[uid] = new
        event = FlagsChanged(self.name, tuple(changed.items())) if changed else None
        return self._finish(changed, event)

    def expunge(self, uids: Iterable[int]) -> Deferred[tuple[int, ...]]:
        if self.fail_next is not None:
            return self._finish(None, None)
        gone = tuple(uid for uid in sorted(set(uids)) if self._records.pop(uid, None))
        event = MessagesExpunged(self.name, gone) if gone else None
        return self._finish(gone, event)

    def open_message(self, uid: int) -> io.BytesIO:
        if uid not in self._records:
            raise MessageGone(f"message {uid} was expunged")
        self.opened.append(uid)
        source = io.BytesIO(self.bodies[uid])
        self.sources.append(source)
        return source


class FakeAccount:
    """An IAccount whose INBOX is a FakeMailbox."""

    def __init__(self, username: str, inbox: FakeMailbox) -> None:
        self.username = username
        self.delimiter = "/"
        self.inbox = inbox
        self.fail_open: StoreError | None = None

    def mailbox(self, name: str) -> Deferred[FakeMailbox]:
        if self.fail_open is not None:
            return fail(self.fail_open)
        assert name == "INBOX"
        return succeed(self.inbox)


class FakeAuthenticator:
    """Checks credentials against plain passwords, as the passwd-file checker would."""

    def __init__(self) -> None:
        self.passwords: dict[str, str] = {}
        self.accounts: dict[str, Any] = {}
        self.attempts: list[tuple[str, str]] = []  # (username, peer_host)
        self.logouts: list[str] = []
        self.backend_down = False
        self.pending: list[Deferred[Any]] = []
        self.hold_next = False

    def add_user(self, username: str, password: str, account: Any = None) -> Any:
        """Let *username* in with *password*; to a FakeAccount unless *account* is given."""
        self.passwords[username] = password
        if account is None:
            account = FakeAccount(username, FakeMailbox())
        self.accounts[username] = account
        return account

    def login(self, credentials: Any, peer_host: str) -> Deferred[Any]:
        username = credentials.username.decode("utf-8")
        self.attempts.append((username, peer_host))
        if self.backend_down:
            return fail(LoginFailed(temporary=True))
        password = self.passwords.get(username)
        if IUsernamePassword.providedBy(credentials):
            good = password is not None and credentials.checkPassword(password.encode())
        else:
            assert IUsernameHashedPassword.providedBy(credentials)
            good = password is not None and credentials.checkPassword(password.encode())
        if not good:
            return fail(LoginFailed(temporary=False))
        result = LoginResult(
            username=username,
            account=self.accounts[username],  # type: ignore[arg-type]
            logout=lambda: self.logouts.append(username),
        )
        if self.hold_next:
            self.hold_next = False
            d: Deferred[Any] = Deferred()
            d.addCallback(lambda _: result)
            self.pending.append(d)
            return d
        return succeed(result)
