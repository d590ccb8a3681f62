"""Putting one message into one user's mailbox: what LMTP and ``deliver`` share.

The message goes in through ``Mailbox.append``, the path IMAP APPEND takes, so
open sessions hear of it at once and quota applies the same way.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from mailaccess.store.interfaces import IAccount, IMailbox
from mailaccess.store.model import InvalidMailboxName, MessageRecord, NoSuchMailbox


def trace_headers(sender: str, recipient: str) -> bytes:
    """``Return-Path`` (RFC 5321 §4.4) and ``Delivered-To`` lines for the top of a copy.

    The addresses come from envelope commands that were checked to hold no
    whitespace or control characters, so they cannot break the header.
    """
    # LF line ends, as the store keeps messages.
    return (
        b"Return-Path: <" + sender.encode("utf-8", "surrogateescape") + b">\n"
        b"Delivered-To: " + recipient.encode("utf-8", "surrogateescape") + b"\n"
    )


def open_target(account: IAccount, folder: str | None) -> Deferred[tuple[IMailbox, bool]]:
    """The mailbox *folder* of *account*, or INBOX if it is None or does not exist.

    Fires with (mailbox, True if it fell back to INBOX).  Like dovecot-lda
    without autocreate: mail is never refused because a folder is missing.
    """
    if not folder or folder.upper() == "INBOX":
        return account.mailbox("INBOX").addCallback(lambda mailbox: (mailbox, False))

    def fallback(failure: Failure) -> Deferred[tuple[IMailbox, bool]]:
        failure.trap(NoSuchMailbox, InvalidMailboxName)
        return account.mailbox("INBOX").addCallback(lambda mailbox: (mailbox, True))

    d: Deferred[Any] = account.mailbox(folder)
    d.addCallbacks(lambda mailbox: (mailbox, False), fallback)
    return d


def store_copy(
    account: IAccount, folder: str | None, message: bytes
) -> Deferred[tuple[IMailbox, MessageRecord]]:
    """Append *message* (trace headers included) to *folder* or INBOX.

    Fires once it is durable; fails with the store's errors (OverQuota,
    StoreUnavailable, ...) with nothing left behind.
    """

    def append(target: tuple[IMailbox, bool]) -> Deferred[tuple[IMailbox, MessageRecord]]:
        mailbox = target[0]
        return mailbox.append(message).addCallback(lambda record: (mailbox, record))

    return open_target(account, folder).addCallback(append)
