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

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from mailaccess.pop3.uidl import UIDLFormat
from mailaccess.store.interfaces import IMailbox
from mailaccess.store.model import (
    DELETED,
    SEEN,
    ChangeEvent,
    MailboxReset,
    MessagesExpunged,
)

log = Logger(namespace="mailaccess.pop3")


class NoSuchMessage(Exception):
    """The message number is not usable; the text is the -ERR reason for the client."""


@attrs.frozen
class ListedMessage:
    """One message of the session's listing (RFC 1939 §4: a message-number)."""

    number: int
    uid: int
    size: int  # octets RETR sends: the CRLF size (record.vsize)


# The state of each listed message, one octet each (a mailbox may hold 100,000).
_PRESENT = 0
_DELETED = 1  # marked by this session's DELE
_GONE = 2  # expunged by someone else during the session
_DELETED_AND_GONE = 3


class Maildrop:
    """The listing a POP3 session fixed at login, and the deletions it made."""

    def __init__(self, mailbox: IMailbox, uidl_format: UIDLFormat) -> None:
        self.mailbox = mailbox
        self._unique_id = uidl_format.for_mailbox(mailbox.uidvalidity)
        # RFC 1939 §4 / DESIGN.md rule 1: numbered 1..N in UID order, without
        # the messages another client already marked \Deleted.  Message n is
        # at index n - 1 of these parallel lists.
        listed = [r for r in mailbox.records() if DELETED not in r.flags]
        self._uids = [r.uid for r in listed]
        self._sizes = [r.vsize for r in listed]
        self._bases = [r.base for r in listed]
        self._state = bytearray(len(listed))
        self._index_of = {uid: index for index, uid in enumerate(self._uids)}
        self._unique_ids: list[str] | None = None
        self._seen_waiting: list[int] = []  # RETR'd, \Seen not yet asked for
        self._seen_in_flight = False
        self._closed = False
        mailbox.add_listener(self._on_change)

    # --- reading the listing -------------------------------------------------

    def present(self) -> list[int]:
        """Numbers of the listed messages neither deleted by this session nor gone."""
        state = self._state
        if not any(state):
            return list(range(1, len(state) + 1))
        return [index + 1 for index, flag in enumerate(state) if flag == _PRESENT]

    def stat(self) -> tuple[int, int]:
        """RFC 1939 §5 STAT: (message count, total octets) of the present messages."""
        present = self.present()
        sizes = self._sizes
        return len(present), sum(sizes[n - 1] for n in present)

    def scan_listing(self) -> list[str]:
        """RFC 1939 §5 LIST: one "number size" line per present message."""
        sizes = self._sizes
        return [f"{n} {sizes[n - 1]}" for n in self.present()]

    def unique_id_listing(self) -> list[str]:
        """RFC 1939 §7 UIDL: one "number unique-id" line per present message."""
        unique_ids = self._all_unique_ids()
        return [f"{n} {unique_ids[n - 1]}" for n in self.present()]

    def unique_id(self, message: ListedMessage) -> str:
        """RFC 1939 §7 unique-id of a listed message (DESIGN.md rule 2)."""
        return self._all_unique_ids()[message.number - 1]

    def _all_unique_ids(self) -> list[str]:
        if self._unique_ids is None:
            # Worked out on first use: many logins (STAT, RETR, QUIT) never need them.
            unique_id = self._unique_id
            self._unique_ids = list(map(unique_id, self._uids, self._bases))
        return self._unique_ids

    def lookup(self, argument: str) -> ListedMessage:
        """The present message numbered *argument*, or NoSuchMessage with the reason."""
        # RFC 1939 §3: a message-number is a decimal number; no sign, no spaces.
        if not argument.isascii() or not argument.isdigit():
            raise NoSuchMessage(f"invalid message number {argument[:40]!r}")
        number = int(argument)
        if not 1 <= number <= len(self._uids):
            raise NoSuchMessage(f"no such message, only {len(self._uids)} in maildrop")
        index = number - 1
        if self._state[index] & _DELETED:
            raise NoSuchMessage(f"message {number} already deleted")
        uid = self._uids[index]
        if self._state[index] & _GONE or self.mailbox.record(uid) is None:
            self._state[index] |= _GONE
            raise NoSuchMessage(f"message {number} was removed by another session")
        return ListedMessage(number, uid, self._sizes[index])

    def mark_gone(self, message: ListedMessage) -> None:
        """The store says *message* no longer exists (e.g. its file vanished)."""
        self._state[message.number - 1] |= _GONE

    # --- changing the store --------------------------------------------------

    def mark_seen(self, message: ListedMessage) -> None:
        """DESIGN.md rule 3: RETR sets \\Seen at once (unless already set).

        A flag change is a rename and an fsync in the store.  While one is
        under way, the RETRs that follow gather their UIDs and go as one
        change when it is done: a client fetching 1,000 messages does not
        wait on 1,000 fsyncs, and each \\Seen still lands as soon as it can.
        """
        record = self.mailbox.record(message.uid)
        if record is None or SEEN in record.flags:
            return
        self._seen_waiting.append(message.uid)
        if not self._seen_in_flight:
            self._store_seen()

    def _store_seen(self) -> None:
        uids, self._seen_waiting = self._seen_waiting, []
        self._seen_in_flight = True
        d = self.mailbox.store_flags(uids, frozenset({SEEN}), "add")

        def done(result: object) -> None:
            self._seen_in_flight = False
            if self._seen_waiting:
                self._store_seen()

        d.addErrback(lambda f: log.failure("Setting \\Seen after RETR", f))
        d.addCallback(done)

    def delete(self, message: ListedMessage) -> Deferred[None]:
        """RFC 1939 §5 DELE: set \\Deleted in the store now; expunge on QUIT."""
        d = self.mailbox.store_flags([message.uid], frozenset({DELETED}), "add")

        def flagged(result: object) -> None:
            self._state[message.number - 1] |= _DELETED

        return d.addCallback(flagged)

    def _deleted_indexes(self) -> list[int]:
        return [index for index, flag in enumerate(self._state) if flag & _DELETED]

    def reset(self) -> Deferred[None]:
        """RFC 1939 §5 RSET: clear the \\Deleted flags this session set."""
        marked = self._deleted_indexes()
        if not marked:
            return succeed(None)
        uids = [self._uids[i] for i in marked if not self._state[i] & _GONE]
        d = self.mailbox.store_flags(uids, frozenset({DELETED}), "remove")

        def cleared(result: object) -> None:
            for index in marked:
                self._state[index] &= ~_DELETED

        return d.addCallback(cleared)

    def commit(self) -> Deferred[tuple[int, ...]]:
        """RFC 1939 §6 UPDATE state: expunge this session's deletions that still exist."""
        uids = [self._uids[i] for i in self._deleted_indexes() if self._state[i] == _DELETED]
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
                index = self._index_of.get(uid)
                if index is not None:
                    self._state[index] |= _GONE
        elif isinstance(event, MailboxReset):
            # New UIDVALIDITY: none of the listed UIDs names the same message.
            for index in range(len(self._state)):
                self._state[index] |= _GONE
