"""The store's API as the protocol layers see it.

These ``Protocol`` classes are the contract between ``mailaccess/store`` and the
IMAP, POP3 and delivery layers.  All methods run on the reactor thread.
Reads of the in-memory index are synchronous; anything that touches the disk
in a way that must be durable or may be slow returns a ``Deferred``.  All
mutations of one mailbox are serialised by the mailbox itself, and each
successful mutation emits exactly one change event (see ``model``) to every
listener, in the order the mutations took effect, *before* its Deferred fires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, Literal, Protocol

from twisted.internet.defer import Deferred

from mailaccess.store.model import ChangeEvent, Flags, MessageRecord

Listener = Callable[[ChangeEvent], None]
FlagMode = Literal["add", "remove", "replace"]


class IMailbox(Protocol):
    """One folder: its index in UID order, its mutations and its events."""

    name: str  # Unicode IMAP name, "INBOX" for the inbox
    #: True while inotify watches the folder: other programs' changes then
    #: arrive as events by themselves, and NOOP/IDLE need not call rescan().
    watched: bool

    @property
    def uidvalidity(self) -> int: ...

    @property
    def uidnext(self) -> int: ...

    def records(self) -> Sequence[MessageRecord]:
        """The index in ascending UID order (a snapshot: do not mutate)."""

    def record(self, uid: int) -> MessageRecord | None:
        """The record of *uid*, or None if there is no such message."""

    def add_listener(self, listener: Listener) -> None: ...

    def remove_listener(self, listener: Listener) -> None: ...

    def take_recent(self) -> frozenset[int]:
        """Claim the UIDs still \\Recent; the next caller gets only newer ones.

        RFC 3501 §2.3.2: exactly one session sees a message as \\Recent.  An IMAP
        SELECT calls this once, then again for each MessagesAdded it hears.
        """

    def append(
        self,
        message: bytes,
        flags: Flags = frozenset(),
        internal_date: float | None = None,
    ) -> Deferred[MessageRecord]:
        """Store a new message; fires once file and directory are fsynced.

        Line ends are stored as LF; the record's vsize counts them as CRLF.
        Fails with OverQuota or StoreUnavailable, leaving nothing behind.
        """

    def store_flags(
        self, uids: Iterable[int], flags: Flags, mode: FlagMode
    ) -> Deferred[dict[int, Flags]]:
        """Change flags; fires with the new flags of each message that changed.

        UIDs that no longer exist are skipped silently.
        """

    def expunge(self, uids: Iterable[int]) -> Deferred[tuple[int, ...]]:
        """Remove these messages for good; fires with the UIDs actually removed."""

    def copy(
        self, uids: Iterable[int], destination: IMailbox, strict: bool = False
    ) -> Deferred[list[tuple[int, int]]]:
        """Copy to *destination* (hard links where possible); (old uid, new uid).

        Messages gone meanwhile are skipped, unless *strict*: then the copy
        fails with MessageGone and *destination* is left as it was (IMAP
        COPY is all or nothing, RFC 3501 §6.4.7).
        """

    def move(
        self, uids: Iterable[int], destination: IMailbox, strict: bool = False
    ) -> Deferred[list[tuple[int, int]]]:
        """Copy, then expunge the originals (RFC 6851 semantics; *strict* as copy)."""

    def open_message(self, uid: int) -> IO[bytes]:
        """The stored octets of the message (LF line ends), for streaming.

        Raises MessageGone if the message was expunged or its file vanished.
        """

    def message_info(self, uid: int) -> Deferred[Any]:
        """The parsed metadata (envelope, bodystructure, part offsets) of *uid*.

        Served from the on-disk metadata cache, parsing the file (off the
        reactor) on a miss.  The type is ``mailaccess.store.mime.MessageInfo``.
        Fails with MessageGone.
        """

    def message_infos(self, uids: Iterable[int]) -> Deferred[dict[int, Any]]:
        """``message_info`` of many UIDs in one go: {uid: MessageInfo}.

        One bulk read of the metadata cache, misses parsed off the reactor in
        batches.  UIDs expunged or whose file vanished are absent from the
        dict.  Fails only with StoreUnavailable.
        """

    def recent_count(self) -> int:
        """How many messages are still \\Recent, without claiming them.

        RFC 3501 §6.3.10 (STATUS RECENT) and §6.3.2 (EXAMINE) report the count
        but must leave \\Recent to the session that selects read-write.
        """

    def peek_recent(self) -> frozenset[int]:
        """The UIDs still \\Recent, without claiming them (what EXAMINE shows)."""

    def rescan(self) -> Deferred[None]:
        """Pick up changes other programs made on disk (NOOP/IDLE/SELECT fallback)."""


class IAccount(Protocol):
    """One user's mail: INBOX plus folders, shared by all that user's sessions."""

    username: str
    delimiter: str  # the hierarchy delimiter in IMAP names

    def mailbox(self, name: str) -> Deferred[IMailbox]:
        """The open mailbox of that name, opening it (off the reactor) if needed.

        Fails with NoSuchMailbox.  Every session of the account gets the same
        object, so they share one index and one stream of events.
        """

    def list_mailboxes(self) -> Sequence[MailboxListing]:
        """Every name with its LIST attributes, INBOX first (parents implied by
        children are listed with ``\\Noselect``)."""

    def create(self, name: str, special_use: str | None = None) -> None:
        """RFC 3501 §6.3.3, creating superior names too (synchronous: mkdir only).

        Raises MailboxExists, InvalidMailboxName or StoreUnavailable.
        """

    def delete(self, name: str) -> Deferred[None]:
        """RFC 3501 §6.3.4.  A Deferred: it waits for the open mailbox's queued
        mutations.  Fails with NoSuchMailbox or InvalidMailboxName (INBOX)."""

    def rename(self, old: str, new: str) -> Deferred[None]:
        """RFC 3501 §6.3.5 (inferiors follow; INBOX moves its messages out).
        A Deferred: renaming INBOX moves messages.  Fails with NoSuchMailbox,
        MailboxExists or InvalidMailboxName."""

    def subscriptions(self) -> list[str]: ...

    def subscribe(self, name: str) -> None: ...

    def unsubscribe(self, name: str) -> None: ...


class MailboxListing(Protocol):
    """What LIST needs to know of one mailbox (RFC 3501 §7.2.2, RFC 3348, RFC 6154)."""

    @property
    def name(self) -> str: ...

    @property
    def attributes(self) -> frozenset[str]:
        """e.g. "\\HasChildren", "\\Noselect", "\\Sent"."""


class IStore(Protocol):
    """All accounts of the server: one Account object per user, shared."""

    def account(self, username: str) -> IAccount: ...


__all__ = [
    "FlagMode",
    "IAccount",
    "IMailbox",
    "IStore",
    "Listener",
    "MailboxListing",
]
