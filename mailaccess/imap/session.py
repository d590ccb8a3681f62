"""IMAP session states and what each command answers (RFC 3501 §3, §6).

The states are RFC 3501 §3's: not authenticated, authenticated, selected and
logout.  A command handler (in the ``cmd_*`` modules) receives the server
protocol and the parsed command, writes any untagged data with
``server.send()``, and returns a :class:`Reply` — or a Deferred firing with one —
which the server writes as the tagged completion, after the untagged updates the
selected mailbox has queued (RFC 3501 §7.4.1).

The command table maps each command class to its handler and the states where
it is valid; a command outside its states is answered ``BAD`` (RFC 3501 §6).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred

from mailaccess.imap import commands as c
from mailaccess.imap.response import ResponseCode

if TYPE_CHECKING:
    from mailaccess.imap.server import IMAPServer

__all__ = [
    "Handler",
    "Reply",
    "State",
    "allows_expunge",
    "command_table",
]


class State(enum.Enum):
    """RFC 3501 §3."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


@attrs.frozen
class Reply:
    """The tagged completion of a command: ``OK``/``NO``/``BAD``, a response code, a text."""

    status: str
    text: str
    code: ResponseCode | None = None

    @classmethod
    def answered(cls) -> Reply:
        """The handler wrote its tagged completion itself (STARTTLS, before TLS starts)."""
        return cls("", "")

    @classmethod
    def ok(cls, text: str, code: ResponseCode | None = None) -> Reply:
        """``OK``."""
        return cls("OK", text, code)

    @classmethod
    def no(cls, text: str, code: str | ResponseCode | None = None) -> Reply:
        """``NO``, with a response code given by name or in full."""
        return cls("NO", text, ResponseCode(code) if isinstance(code, str) else code)

    @classmethod
    def bad(cls, text: str, code: str | None = None) -> Reply:
        """``BAD``: the command was not valid here (counted toward max_bad_commands)."""
        return cls("BAD", text, ResponseCode(code) if code else None)


Outcome = Reply | Deferred[Reply]
Handler = Callable[["IMAPServer", Any], Outcome]

ANY = frozenset(State) - {State.LOGOUT}
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


def allows_expunge(command: c.Command) -> bool:
    """RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH (not the UID forms)."""
    if isinstance(command, c.Fetch | c.Store | c.Search):
        return command.uid
    return True


def _table() -> dict[type, tuple[frozenset[State], Handler]]:
    from mailaccess.imap import cmd_any, cmd_auth, cmd_mailbox, cmd_message, cmd_selected

    return {
        # RFC 3501 §6.1: any state
        c.Capability: (ANY, cmd_any.capability),
        c.Noop: (ANY, cmd_any.noop),
        c.Logout: (ANY, cmd_any.logout),
        c.Id: (ANY, cmd_any.id_),  # RFC 2971 §3.1: any state
        # RFC 3501 §6.2: not authenticated
        c.StartTLS: (NOT_AUTH, cmd_auth.starttls),
        c.Authenticate: (NOT_AUTH, cmd_auth.authenticate),
        c.Login: (NOT_AUTH, cmd_auth.login),
        # RFC 3501 §6.3: authenticated (and selected)
        c.Enable: (AUTH, cmd_any.enable),  # RFC 5161 §3.1: authenticated state
        c.Select: (AUTH, cmd_mailbox.select),
        c.Examine: (AUTH, cmd_mailbox.select),
        c.Create: (AUTH, cmd_mailbox.create),
        c.Delete: (AUTH, cmd_mailbox.delete),
        c.Rename: (AUTH, cmd_mailbox.rename),
        c.Subscribe: (AUTH, cmd_mailbox.subscribe),
        c.Unsubscribe: (AUTH, cmd_mailbox.unsubscribe),
        c.List: (AUTH, cmd_mailbox.list_),
        c.Lsub: (AUTH, cmd_mailbox.lsub),
        c.Status: (AUTH, cmd_mailbox.status),
        c.Namespace: (AUTH, cmd_mailbox.namespace),
        c.Append: (AUTH, cmd_message.append),
        c.Idle: (AUTH, cmd_selected.idle),  # RFC 2177 §3: authenticated or selected
        # RFC 3501 §6.4: selected
        c.Check: (SELECTED, cmd_selected.check),
        c.Close: (SELECTED, cmd_selected.close),
        c.Unselect: (SELECTED, cmd_selected.unselect),
        c.Expunge: (SELECTED, cmd_selected.expunge),
        c.Search: (SELECTED, cmd_message.search),
        c.Fetch: (SELECTED, cmd_message.fetch),
        c.Store: (SELECTED, cmd_message.store),
        c.Copy: (SELECTED, cmd_message.copy),
        c.Move: (SELECTED, cmd_message.move),
    }


_commands: dict[type, tuple[frozenset[State], Handler]] | None = None


def command_table() -> dict[type, tuple[frozenset[State], Handler]]:
    """The command table (built on first use: the cmd modules import the server's types)."""
    global _commands
    if _commands is None:
        _commands = _table()
    return _commands
