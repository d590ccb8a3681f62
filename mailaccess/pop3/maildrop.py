"""A POP3 session's view of INBOX: the listing fixed at login and its deletions.

DESIGN.md's cross-protocol contract, rules 1, 4 and 5:

- at login the session lists the INBOX messages without ``\\Deleted``, numbered
  1..N in UID order, and that numbering never changes (RFC 1939 §4);
- DELE sets ``\\Deleted`` in the store at once, so IMAP sessions see it; RSET clears
  the ``\\Deleted`` flags this session set; QUIT expunges exactly this session's
  deletions that still exist (RFC 1939 §6); a session that ends any other way
  clears its deletions as RSET would;
- a listed message that someone else expunges keeps its number, drops out of
  STAT/LIST/UIDL, and RETR/TOP/DELE on it answer ``-ERR``.

The maildrop hears the mailbox's change events to learn of such expunges.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed

from mailaccess.pop3.uidl import UIDLFormat
from mailaccess.store.interfaces import IMailbox
from mailaccess.store.model import (
    DELETED,
    SEEN,
    ChangeEvent,
    MailboxReset,
    MessagesExpunged,
)


class NoSuchMessage(Exception):
    """The message number is not usable; the text is the -ERR reason for the client."""


@attrs.define(slots=True)
class ListedMessage:
    """One message of the session's listing (RFC 1939 §4: a message-number)."""

    number: int
    uid: int
    size: int  # octets RETR sends: the CRLF size (record.vsize)
    base: str  # Maildir base name, for the %f unique-id variable
    deleted: bool = False  # marked by this session's DELE
    gone: bool = False  # expunged by someone else during the session


class Maildrop:
    """The listing a POP3 session fixed at login, and the deletions it made."""

    def __init__(self, mailbox: IMailbox, uidl_format: UIDLFormat) -> None:
        self.mailbox = mailbox
        self._uidl_format = uidl_format
        self._uidvalidity = mailbox.uidvalidity
        self._messages: list[ListedMessage] = []
        self._by_uid: dict[int, ListedMessage] = {}
        # RFC 1939 §4 / DESIGN.md rule 1: numbered 1..N in UID order, without
        # the messages another client already marked \Deleted.
        for record in mailbox.records():
            if DELETED in record.flags:
                continue
            message = ListedMessage(len(self._messages) + 1, record.uid, record.vsize, record.base)
            self._messages.append(message)
            self._by_uid[record.uid] = message
        self._unique_ids: list[str] | None = None
        self._closed = False
        mailbox.add_listener(self._on_change)

    # --- reading the listing -------------------------------------------------

    def present(self) -> list[ListedMessage]:
        """The listed messages neither deleted by this session nor gone."""
        return [m for m in self._messages if not m.deleted and not m.gone]

    def stat(self) -> tuple[int, int]:
        """RFC 1939 §5 STAT: (message count, total octets) of the present messages."""
        present = self.present()
        return len(present), sum(m.size for m in present)

    def unique_id(self, message: ListedMessage) -> str:
        """RFC 1939 §7 unique-id of a listed message (DESIGN.md rule 2)."""
        if self._unique_ids is None:
            # Worked out on first use: most logins (STAT then QUIT) never need them.
            fmt, uidvalidity = self._uidl_format, self._uidvalidity
            self._unique_ids = [fmt.unique_id(m.uid, uidvalidity, m.base) for m in self._messages]
        return self._unique_ids[message.number - 1]

    def lookup(self, argument: str) -> ListedMessage:
        """The present message numbered *argument*, or NoSuchMessage with the reason."""
        # RFC 1939 §3: a message-number is a decimal number; no sign, no spaces.
        if not argument.isascii() or not argument.isdigit():
            raise NoSuchMessage(f"invalid message number {argument[:40]!r}")
        number = int(argument)
        if not 1 <= number <= len(self._messages):
            raise NoSuchMessage(f"no such message, only {len(self._messages)} in maildrop")
        message = self._messages[number - 1]
        if message.deleted:
            raise NoSuchMessage(f"message {number} already deleted")
        if message.gone or self.mailbox.record(message.uid) is None:
            message.gone = True
            raise NoSuchMessage(f"message {number} was removed by another session")
        return message

    # --- changing the store --------------------------------------------------

    def mark_seen(self, message: ListedMessage) -> Deferred[Any]:
        """DESIGN.md rule 3: RETR sets \\Seen at once (unless already set)."""
        record = self.mailbox.record(message.uid)
        if record is None or SEEN in record.flags:
            return succeed(None)
        return self.mailbox.store_flags([message.uid], frozenset({SEEN}), "add")

    def delete(self, message: ListedMessage) -> Deferred[None]:
        """RFC 1939 §5 DELE: set \\Deleted in the store now; expunge on QUIT."""
        d = self.mailbox.store_flags([message.uid], frozenset({DELETED}), "add")

        def flagged(result: object) -> None:
            message.deleted = True

        return d.addCallback(flagged)

    def reset(self) -> Deferred[None]:
        """RFC 1939 §5 RSET: clear the \\Deleted flags this session set."""
        marked = [m for m in self._messages if m.deleted]
        if not marked:
            return succeed(None)
        d = self.mailbox.store_flags(
            [m.uid for m in marked if not m.gone], frozenset({DELETED}), "remove"
        )

        def cleared(result: object) -> None:
            for message in marked:
                message.deleted = False

        return d.addCallback(cleared)

    def commit(self) -> Deferred[tuple[int, ...]]:
        """RFC 1939 §6 UPDATE state: expunge this session's deletions that still exist."""
        uids = [m.uid for m in self._messages if m.deleted and not m.gone]
        if not uids:
            return succeed(())
        return self.mailbox.expunge(uids)

    def close(self) -> None:
        """Stop hearing the mailbox's events (the session is over)."""
        if not self._closed:
            self._closed = True
            self.mailbox.remove_listener(self._on_change)

    # --- hearing the other sessions ---------------------------------------------

    def _on_change(self, event: ChangeEvent) -> None:
        # DESIGN.md rule 5: numbers stay taken; the message just drops out.
        if isinstance(event, MessagesExpunged):
            for uid in event.uids:
                message = self._by_uid.get(uid)
                if message is not None:
                    message.gone = True
        elif isinstance(event, MailboxReset):
            # New UIDVALIDITY: none of the listed UIDs names the same message.
            for message in self._messages:
                message.gone = True
