"""Mailbox commands: SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST
LSUB STATUS (RFC 3501 §6.3) and NAMESPACE (RFC 2342).

Mailbox names arrive as the client sent them, in modified UTF-7 (RFC 3501
§5.1.3); the store speaks Unicode, so names are decoded on the way in and
encoded on the way out (LIST, LSUB, STATUS).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from mailaccess.imap import commands as c
from mailaccess.imap.response import (
    Atom,
    ResponseCode,
    encode,
    encode_astring,
    untagged_status,
)
from mailaccess.imap.session import Outcome, Reply, State
from mailaccess.store import mutf7
from mailaccess.store.model import SEEN, NoSuchMailbox

if TYPE_CHECKING:
    from mailaccess.imap.server import IMAPServer

__all__ = [
    "create",
    "delete",
    "list_",
    "lsub",
    "mailbox_name",
    "namespace",
    "rename",
    "select",
    "status",
    "subscribe",
    "unsubscribe",
]

DELIMITER = "."


def mailbox_name(sent: str) -> str:
    """The Unicode name of a mailbox name as sent (RFC 3501 §5.1.3); INBOX in any case.

    Raises InvalidMailboxName (a StoreError, answered NO [CANNOT]).
    """
    name = mutf7.decode(sent)
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == "INBOX":
        name = "INBOX" + sep + rest
    return name


def _wire_name(name: str) -> bytes:
    return encode_astring(mutf7.encode(name))


# --- RFC 3501 §6.3.1 SELECT, §6.3.2 EXAMINE -------------------------------------------


def select(server: IMAPServer, command: c.Select | c.Examine) -> Outcome:
    """Open a mailbox for this session; read-only for EXAMINE."""
    if command.parameters:
        # CONDSTORE/QRESYNC parameters parse, but we do not advertise them.
        return Reply.bad(f"{command.name} parameters are not supported")
    readonly = isinstance(command, c.Examine)
    # RFC 3501 §6.3.1: a SELECT deselects first, even if it then fails.
    server.deselect()
    name = mailbox_name(command.mailbox)
    d: Deferred[Any] = server.account.mailbox(name)

    def opened(mailbox: Any) -> Any:
        if mailbox.watched:
            return mailbox
        return mailbox.rescan().addCallback(lambda _: mailbox)

    def selected(mailbox: Any) -> Reply:
        if server.state is not State.AUTHENTICATED:
            return Reply.no("session ended")
        view = server.select(mailbox, readonly)
        records = view.records
        for line in view.flags_responses():
            server.send(line)
        server.send(b"* %d EXISTS\r\n* %d RECENT\r\n" % (len(view), view.recent_count))
        first_unseen = next((n for n, r in enumerate(records, 1) if SEEN not in r.flags), None)
        if first_unseen is not None:
            server.send(
                untagged_status(
                    "OK",
                    f"First unseen is {first_unseen}",
                    ResponseCode("UNSEEN", (first_unseen,)),
                )
            )
        server.send(
            untagged_status(
                "OK", "UIDs valid", ResponseCode("UIDVALIDITY", (mailbox.uidvalidity,))
            )
        )
        server.send(
            untagged_status(
                "OK", "Predicted next UID", ResponseCode("UIDNEXT", (mailbox.uidnext,))
            )
        )
        code = "READ-ONLY" if readonly else "READ-WRITE"
        return Reply.ok(f"{command.name} completed", ResponseCode(code))

    return d.addCallback(opened).addCallback(selected)


# --- RFC 3501 §6.3.3-§6.3.7 ----------------------------------------------------------------


# RFC 6154 §2.
_SPECIAL_USE = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)


def create(server: IMAPServer, command: c.Create) -> Outcome:
    """RFC 3501 §6.3.3; ``USE (\\Sent)`` sets a special use (RFC 6154 §3)."""
    special: str | None = None
    for parameter in command.parameters:
        if parameter.name != "USE" or not isinstance(parameter.value, tuple):
            return Reply.bad(f"CREATE parameter {parameter.name} is not supported")
        uses = [str(v) for v in parameter.value]
        if len(uses) > 1:
            return Reply.no("only one special use per mailbox", "USEATTR")
        for use in uses:
            known = {u.upper(): u for u in _SPECIAL_USE}.get(use.upper())
            if known is None:
                return Reply.no(f"{use} is not a special use (RFC 6154)", "USEATTR")
            special = known
    name = command.mailbox
    # RFC 3501 §6.3.3: a trailing delimiter only says a child may follow.
    if name.endswith(DELIMITER) and len(name) > 1:
        name = name[:-1]
    unicode_name = mailbox_name(name)
    if unicode_name == "INBOX":
        return Reply.no("INBOX exists always", "ALREADYEXISTS")
    server.account.create(unicode_name, special)
    return Reply.ok("CREATE completed")


def _selected_name(server: IMAPServer) -> str | None:
    return server.view.mailbox.name if server.view is not None else None


def delete(server: IMAPServer, command: c.Delete) -> Outcome:
    """RFC 3501 §6.3.4."""
    name = mailbox_name(command.mailbox)
    if name == "INBOX":
        return Reply.no("INBOX cannot be deleted", "CANNOT")
    if name == _selected_name(server):
        # As Dovecot: the session would be left with a view of nothing.
        return Reply.no("the selected mailbox cannot be deleted; UNSELECT it first", "INUSE")
    d: Deferred[Any] = server.account.delete(name)
    return d.addCallback(lambda _: Reply.ok("DELETE completed"))


def rename(server: IMAPServer, command: c.Rename) -> Outcome:
    """RFC 3501 §6.3.5 (renaming INBOX moves its messages to the new mailbox)."""
    old, new = mailbox_name(command.old), mailbox_name(command.new)
    if new == "INBOX":
        return Reply.no("INBOX exists always", "ALREADYEXISTS")
    view = server.view
    if view is not None:
        # Our own RENAME of the selected mailbox (or a superior) does not end
        # this session: the view follows the renamed mailbox.  Another
        # session's RENAME does (see MailboxView).
        view.renaming = True
    d: Deferred[Any] = server.account.rename(old, new)

    def done(result: Any) -> Any:
        if view is not None:
            view.renaming = False
        return result

    return d.addBoth(done).addCallback(lambda _: Reply.ok("RENAME completed"))


def subscribe(server: IMAPServer, command: c.Subscribe) -> Outcome:
    """RFC 3501 §6.3.6 (a name need not exist to be subscribed)."""
    server.account.subscribe(mailbox_name(command.mailbox))
    return Reply.ok("SUBSCRIBE completed")


def unsubscribe(server: IMAPServer, command: c.Unsubscribe) -> Outcome:
    """RFC 3501 §6.3.7."""
    server.account.unsubscribe(mailbox_name(command.mailbox))
    return Reply.ok("UNSUBSCRIBE completed")


# --- RFC 3501 §6.3.8 LIST, §6.3.9 LSUB -------------------------------------------------------


def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the delimiter."""
    # The reference is a prefix (e.g. "Work." with "%"): joined as RFC 3501
    # §6.3.8's examples do.
    full = reference + pattern
    regex = "".join(".*" if ch == "*" else "[^.]*" if ch == "%" else re.escape(ch) for ch in full)
    return re.compile(regex, re.DOTALL)


def _matches(pattern: re.Pattern[str], wire: str) -> bool:
    if pattern.fullmatch(wire):
        return True
    # RFC 3501 §5.1: INBOX is case-insensitive, also in patterns ("inbox", "Inbox.%").
    head, sep, rest = wire.partition(DELIMITER)
    if head == "INBOX":
        return any(
            pattern.fullmatch(spelling + sep + rest) for spelling in ("inbox", "Inbox")
        ) or bool(re.fullmatch(pattern.pattern, wire, re.IGNORECASE | re.DOTALL))
    return False


def _list_line(kind: bytes, attributes: Iterable[str], wire: str) -> bytes:
    attrs_text = " ".join(sorted(attributes)).encode("ascii")
    return b'* %s (%s) "." %s\r\n' % (kind, attrs_text, encode_astring(wire))


def list_(server: IMAPServer, command: c.List) -> Outcome:
    """RFC 3501 §6.3.8 with CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154) attributes."""
    if command.extended or len(command.patterns) != 1:
        # RFC 5258 LIST-EXTENDED is parsed but not advertised.
        return Reply.bad("LIST-EXTENDED is not supported")
    pattern = command.patterns[0]
    if pattern == "":
        # RFC 3501 §6.3.8: the hierarchy delimiter and the root of the reference.
        root = command.reference.split(DELIMITER, 1)[0] + DELIMITER if command.reference else ""
        server.send(b'* LIST (\\Noselect) "." ' + encode_astring(root) + b"\r\n")
        return Reply.ok("LIST completed")
    regex = _pattern(command.reference, pattern)
    lines = []
    for listing in server.account.list_mailboxes():
        wire = mutf7.encode(listing.name)
        if _matches(regex, wire):
            lines.append(_list_line(b"LIST", listing.attributes, wire))
    server.send(b"".join(lines))
    return Reply.ok("LIST completed")


def lsub(server: IMAPServer, command: c.Lsub) -> Outcome:
    """RFC 3501 §6.3.9: the subscribed names that match."""
    regex = _pattern(command.reference, command.pattern)
    existing = {listing.name for listing in server.account.list_mailboxes()}
    subscribed = server.account.subscriptions()
    lines = []
    seen: set[str] = set()
    for name in subscribed:
        wire = mutf7.encode(name)
        attributes = [] if name in existing else ["\\Noselect"]
        if _matches(regex, wire):
            lines.append(_list_line(b"LSUB", attributes, wire))
            seen.add(name)
            continue
        # RFC 3501 §6.3.9: with "%", a parent of a subscribed name that is not
        # itself subscribed is listed \Noselect.
        parts = name.split(DELIMITER)
        for i in range(1, len(parts)):
            parent = DELIMITER.join(parts[:i])
            if parent in seen or parent in subscribed:
                continue
            parent_wire = mutf7.encode(parent)
            if _matches(regex, parent_wire):
                lines.append(_list_line(b"LSUB", ["\\Noselect"], parent_wire))
                seen.add(parent)
    server.send(b"".join(lines))
    return Reply.ok("LSUB completed")


# --- RFC 3501 §6.3.10 STATUS ---------------------------------------------------------------

_STATUS_SUPPORTED = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


def status(server: IMAPServer, command: c.Status) -> Outcome:
    """RFC 3501 §6.3.10: counts of a mailbox without selecting it."""
    for item in command.items:
        if item not in _STATUS_SUPPORTED:
            return Reply.bad(f"STATUS item {item} is not supported")
    name = mailbox_name(command.mailbox)
    d: Deferred[Any] = server.account.mailbox(name)

    def counted(mailbox: Any) -> Reply:
        records = mailbox.records()
        view = server.view
        values: list[Any] = []
        for item in command.items:
            values.append(Atom.of(item))
            if item == "MESSAGES":
                values.append(len(records))
            elif item == "RECENT":
                # RFC 3501 §6.3.10: the messages still unclaimed (counted
                # without claiming them, as Dovecot does) plus those this
                # session itself holds as \Recent in its selected mailbox.
                count = mailbox.recent_count()
                if view is not None and view.mailbox is mailbox and not view.readonly:
                    count += view.recent_count
                values.append(count)
            elif item == "UIDNEXT":
                values.append(mailbox.uidnext)
            elif item == "UIDVALIDITY":
                values.append(mailbox.uidvalidity)
            elif item == "UNSEEN":
                values.append(sum(1 for r in records if SEEN not in r.flags))
        server.send(b"* STATUS " + _wire_name(mailbox.name) + b" " + encode(values) + b"\r\n")
        return Reply.ok("STATUS completed")

    def missing(failure: Any) -> Reply:
        failure.trap(NoSuchMailbox)
        return Reply.no(f"STATUS failed: {failure.value}", "NONEXISTENT")

    return d.addCallbacks(counted, missing)


# --- RFC 2342 NAMESPACE ------------------------------------------------------------------


def namespace(server: IMAPServer, command: c.Namespace) -> Outcome:
    """RFC 2342 §5: one personal namespace, prefix "" and delimiter "."; no others."""
    server.send(b'* NAMESPACE (("" ".")) NIL NIL\r\n')
    return Reply.ok("NAMESPACE completed")
