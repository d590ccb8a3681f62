"""Commands valid in any state: CAPABILITY, NOOP, LOGOUT (RFC 3501 §6.1), ID (RFC 2971)
and ENABLE (RFC 5161, authenticated state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from mailaccess import __version__
from mailaccess.imap import commands as c
from mailaccess.imap.response import Atom, untagged, untagged_status
from mailaccess.imap.session import Outcome, Reply, State

if TYPE_CHECKING:
    from mailaccess.imap.server import IMAPServer

__all__ = ["capability", "enable", "id_", "logout", "noop"]


def capability(server: IMAPServer, command: c.Capability) -> Outcome:
    """RFC 3501 §6.1.1: the capabilities of this connection as it stands."""
    server.send(untagged(Atom(b"CAPABILITY"), *(Atom.of(cap) for cap in server.capabilities())))
    return Reply.ok("CAPABILITY completed")


def noop(server: IMAPServer, command: c.Noop) -> Outcome:
    """RFC 3501 §6.1.2: nothing, but the selected mailbox's updates come with the answer.

    Without inotify the mailbox learns of other programs' changes only by
    looking (``IMailbox.watched``), so NOOP is when it looks.
    """
    view = server.view
    if server.state is State.SELECTED and view is not None and not view.mailbox.watched:
        d: Deferred[None] = view.mailbox.rescan()
        return d.addCallback(lambda _: Reply.ok("NOOP completed"))
    return Reply.ok("NOOP completed")


def logout(server: IMAPServer, command: c.Logout) -> Outcome:
    """RFC 3501 §6.1.3: BYE, then the tagged OK; the server closes the connection."""
    server.send(untagged_status("BYE", "Logging out"))
    return Reply.ok("LOGOUT completed")


def id_(server: IMAPServer, command: c.Id) -> Outcome:
    """RFC 2971 §3.1: who we are; what the client says about itself is only logged."""
    if command.parameters:
        fields = {key: value for key, value in command.parameters[:30]}
        server.log_client_id(fields)
    server.send(untagged(Atom(b"ID"), ["name", "mailaccess", "version", __version__]))
    return Reply.ok("ID completed")


def enable(server: IMAPServer, command: c.Enable) -> Outcome:
    """RFC 5161 §3.1: none of our capabilities needs enabling, so ENABLED lists none.

    RFC 5161 §3.1: capabilities the server does not know or cannot enable are
    ignored, not refused.
    """
    server.send(b"* ENABLED\r\n")
    return Reply.ok("ENABLE completed")
