"""The store's vocabulary: message records, flags, change events and errors.

Everything a protocol layer needs to speak about mail without knowing the disk
layout.  Flags are IMAP names throughout (RFC 3501 §2.3.2): the system flags
below plus keywords (atoms such as ``$Forwarded``).  ``\\Recent`` is not a stored
flag: it belongs to one session and is handed out by ``Mailbox.take_recent``.
"""

from __future__ import annotations

import attrs

SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
RECENT = "\\Recent"

#: The stored system flags (RFC 3501 §2.3.2), with the Maildir info letter of
#: each (https://cr.yp.to/proto/maildir.html).
SYSTEM_FLAG_LETTERS: dict[str, str] = {
    DRAFT: "D",
    FLAGGED: "F",
    ANSWERED: "R",
    SEEN: "S",
    DELETED: "T",
}

Flags = frozenset[str]


@attrs.define(slots=True)
class MessageRecord:
    """One message of a mailbox's index, in UID order.

    ``size`` is the octet count of the file as stored (LF line ends);
    ``vsize`` is the RFC 822 size a client sees with CRLF line ends: what
    RFC822.SIZE and POP3 LIST report and what RETR sends.
    """

    uid: int
    base: str  # Maildir base name: the file name without ":2,<flags>"
    flags: Flags
    size: int
    vsize: int
    internal_date: float  # seconds since the epoch (the file's mtime)


# --- change events (DESIGN.md, "The one rule") ------------------------------


@attrs.frozen
class MessagesAdded:
    """New messages, in UID order, appended to the end of the mailbox."""

    mailbox: str
    records: tuple[MessageRecord, ...]


@attrs.frozen
class FlagsChanged:
    """Messages whose flags changed; ``flags`` is the complete new set of each."""

    mailbox: str
    changes: tuple[tuple[int, Flags], ...]  # (uid, flags)


@attrs.frozen
class MessagesExpunged:
    """Messages permanently removed from the mailbox."""

    mailbox: str
    uids: tuple[int, ...]


@attrs.frozen
class MailboxReset:
    """The mailbox's UIDVALIDITY changed: every view of it is void."""

    mailbox: str
    uidvalidity: int


@attrs.frozen
class MailboxDeleted:
    """The mailbox was deleted, or renamed to ``new_name``, by some session.

    Every view of it must end: the name a client selected no longer names
    these messages (Dovecot ends such sessions too, "IMAP session state is
    inconsistent").  Sent after any MessagesExpunged of the deletion.
    """

    mailbox: str
    new_name: str | None = None


ChangeEvent = MessagesAdded | FlagsChanged | MessagesExpunged | MailboxReset | MailboxDeleted


# --- errors ------------------------------------------------------------------


class StoreError(Exception):
    """Base of the errors the store raises; the message is fit for a client."""


class NoSuchMailbox(StoreError):
    """The named mailbox does not exist."""


class MailboxExists(StoreError):
    """A mailbox of that name exists already."""


class InvalidMailboxName(StoreError):
    """The name cannot be a mailbox (empty part, reserved, bad characters)."""


class MessageGone(StoreError):
    """The message was expunged, or its file removed, by someone else."""


class OverQuota(StoreError):
    """Storing this would exceed the user's quota (RFC 5530 OVERQUOTA)."""


class StoreUnavailable(StoreError):
    """A temporary failure of the disk (full, locked, I/O error); try again later."""
