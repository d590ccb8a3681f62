"""Selected-state commands without message data: CHECK, CLOSE, EXPUNGE (RFC 3501 §6.4),
UNSELECT (RFC 3691), UID EXPUNGE (RFC 4315 §2.1) — and IDLE (RFC 2177), which
is valid in the authenticated state too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from mailaccess.imap import commands as c
from mailaccess.imap.parser import is_idle_done
from mailaccess.imap.response import continuation
from mailaccess.imap.session import Outcome, Reply
from mailaccess.store.model import DELETED

if TYPE_CHECKING:
    from mailaccess.imap.server import IMAPServer

__all__ = ["check", "close", "expunge", "idle", "unselect"]


def check(server: IMAPServer, command: c.Check) -> Outcome:
    """RFC 3501 §6.4.1: every change is durable at once here; only look for news."""
    view = server.view
    assert view is not None
    if not view.mailbox.watched:
        d: Deferred[Any] = view.mailbox.rescan()
        return d.addCallback(lambda _: Reply.ok("CHECK completed"))
    return Reply.ok("CHECK completed")


def _deleted_uids(server: IMAPServer, command: c.Expunge | None = None) -> list[int]:
    view = server.view
    assert view is not None
    if command is not None and command.uid_set is not None:
        # RFC 4315 §2.1: only the \Deleted messages whose UIDs are in the set.
        targets = view.select(command.uid_set, uid=True)
        return [r.uid for _, r in targets if DELETED in r.flags]
    return [r.uid for r in view.records if DELETED in r.flags]


def close(server: IMAPServer, command: c.Close) -> Outcome:
    """RFC 3501 §6.4.2: expunge silently (not if read-only), then deselect."""
    view = server.view
    assert view is not None
    if view.readonly:
        server.deselect()
        return Reply.ok("CLOSE completed")
    uids = _deleted_uids(server)
    # No EXPUNGE responses for CLOSE (RFC 3501 §6.4.2): deselect before expunging.
    mailbox = view.mailbox
    server.deselect()
    if not uids:
        return Reply.ok("CLOSE completed")
    d: Deferred[Any] = mailbox.expunge(uids)
    return d.addCallback(lambda _: Reply.ok("CLOSE completed"))


def unselect(server: IMAPServer, command: c.Unselect) -> Outcome:
    """RFC 3691 §2: deselect without expunging."""
    server.deselect()
    return Reply.ok("UNSELECT completed")


def expunge(server: IMAPServer, command: c.Expunge) -> Outcome:
    """RFC 3501 §6.4.3 / RFC 4315 §2.1: remove \\Deleted messages; the EXPUNGE
    responses come from the store's event, like everyone else's."""
    view = server.view
    assert view is not None
    if view.readonly:
        return Reply.no("the mailbox is read-only (EXAMINE)", "READ-ONLY")
    uids = _deleted_uids(server, command)
    if not uids:
        return Reply.ok("EXPUNGE completed")
    d: Deferred[Any] = view.mailbox.expunge(uids)
    return d.addCallback(lambda _: Reply.ok("EXPUNGE completed"))


def idle(server: IMAPServer, command: c.Idle) -> Outcome:
    """RFC 2177 §3: report changes as they happen until the client sends DONE."""
    done: Deferred[Reply] = Deferred()
    server.send(continuation("idling"))

    def line(raw: bytes) -> None:
        server.stop_idle()
        server.wait_for_lines(None)
        if is_idle_done(raw):
            done.callback(Reply.ok("IDLE terminated"))
        else:
            # RFC 2177 §3: only DONE may follow; anything else ends IDLE.
            done.callback(Reply.bad("expected DONE to end IDLE"))

    server.wait_for_lines(line)
    server.start_idle()
    server.flush_output()
    return done
