"""The command objects the parser produces, one class per IMAP command.

Every command carries its ``tag``.  Commands that have a UID form (RFC 3501
§6.4.8) carry ``uid``.  Extension parameters that RFC 3501 does not define but
that later extensions hang on the same commands are parsed into generic
:class:`Parameter` values now — e.g. ``(CONDSTORE)`` on SELECT and
``(CHANGEDSINCE 12)`` on FETCH (RFC 7162) — so adding those extensions is a
matter of reading the parameter, not of changing the grammar.
"""

from __future__ import annotations

import datetime
from typing import ClassVar

import attrs

from mailaccess.imap.fetch import FetchAttribute
from mailaccess.imap.search import And
from mailaccess.imap.sequence import SequenceSet

__all__ = [
    "Append",
    "AppendMessage",
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    "Command",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "Examine",
    "Expunge",
    "Fetch",
    "Id",
    "Idle",
    "List",
    "ListReturnOption",
    "Login",
    "Logout",
    "Lsub",
    "Move",
    "Namespace",
    "Noop",
    "Parameter",
    "ParameterValue",
    "Rename",
    "Search",
    "Select",
    "Sort",
    "StartTLS",
    "Status",
    "Store",
    "Subscribe",
    "Thread",
    "Unselect",
    "Unsubscribe",
]

#: A generic extension parameter value: a number, an atom/string, or a list of them.
ParameterValue = int | str | tuple["ParameterValue", ...] | None


@attrs.frozen
class Parameter:
    """An extension parameter such as ``CHANGEDSINCE 12`` or ``CONDSTORE``.

    ``name`` is upper-case; ``value`` is ``None`` when the parameter stands alone.
    """

    name: str
    value: ParameterValue = None


@attrs.frozen
class Command:
    """Base of all commands; ``name`` is the command as RFC 3501 §6 spells it."""

    tag: str
    name: ClassVar[str] = ""


# --- RFC 3501 §6.1: any state ------------------------------------------------


@attrs.frozen
class Capability(Command):
    """RFC 3501 §6.1.1."""

    name: ClassVar[str] = "CAPABILITY"


@attrs.frozen
class Noop(Command):
    """RFC 3501 §6.1.2."""

    name: ClassVar[str] = "NOOP"


@attrs.frozen
class Logout(Command):
    """RFC 3501 §6.1.3."""

    name: ClassVar[str] = "LOGOUT"


@attrs.frozen
class Id(Command):
    """RFC 2971 §3.1: ``parameters`` is ``None`` for ``ID NIL``."""

    parameters: tuple[tuple[str, str | None], ...] | None = None
    name: ClassVar[str] = "ID"


# --- RFC 3501 §6.2: not authenticated state ------------------------------------


@attrs.frozen
class StartTLS(Command):
    """RFC 3501 §6.2.1."""

    name: ClassVar[str] = "STARTTLS"


@attrs.frozen
class Authenticate(Command):
    """RFC 3501 §6.2.2; ``initial_response`` is the decoded SASL-IR (RFC 4959 §3).

    ``None``: no initial response was sent; ``b""``: it was sent empty (``=``).
    """

    mechanism: str = ""
    initial_response: bytes | None = None
    name: ClassVar[str] = "AUTHENTICATE"


@attrs.frozen
class Login(Command):
    """RFC 3501 §6.2.3; user name and password are octets as sent."""

    userid: bytes = b""
    password: bytes = attrs.field(default=b"", repr=False)
    name: ClassVar[str] = "LOGIN"


# --- RFC 3501 §6.3: authenticated state ----------------------------------------


@attrs.frozen
class Select(Command):
    """RFC 3501 §6.3.1; ``parameters`` e.g. ``CONDSTORE`` (RFC 7162 §3.1.8)."""

    mailbox: str = ""
    parameters: tuple[Parameter, ...] = ()
    name: ClassVar[str] = "SELECT"


@attrs.frozen
class Examine(Command):
    """RFC 3501 §6.3.2: SELECT read-only (a class of its own, so a match on Select
    never catches it by accident)."""

    mailbox: str = ""
    parameters: tuple[Parameter, ...] = ()
    name: ClassVar[str] = "EXAMINE"


@attrs.frozen
class Create(Command):
    """RFC 3501 §6.3.3; ``parameters`` e.g. ``USE (\\Sent)`` (RFC 6154 §3)."""

    mailbox: str = ""
    parameters: tuple[Parameter, ...] = ()
    name: ClassVar[str] = "CREATE"


@attrs.frozen
class Delete(Command):
    """RFC 3501 §6.3.4."""

    mailbox: str = ""
    name: ClassVar[str] = "DELETE"


@attrs.frozen
class Rename(Command):
    """RFC 3501 §6.3.5."""

    old: str = ""
    new: str = ""
    name: ClassVar[str] = "RENAME"


@attrs.frozen
class Subscribe(Command):
    """RFC 3501 §6.3.6."""

    mailbox: str = ""
    name: ClassVar[str] = "SUBSCRIBE"


@attrs.frozen
class Unsubscribe(Command):
    """RFC 3501 §6.3.7."""

    mailbox: str = ""
    name: ClassVar[str] = "UNSUBSCRIBE"


@attrs.frozen
class ListReturnOption:
    """RFC 5258 §6 ``return-option``, e.g. ``CHILDREN`` or ``STATUS (MESSAGES)``."""

    name: str
    arguments: tuple[str, ...] = ()


@attrs.frozen
class List(Command):
    """RFC 3501 §6.3.8, with the RFC 5258 LIST-EXTENDED forms parsed.

    ``patterns`` has one element for the RFC 3501 form; ``selection`` and
    ``returns`` are empty unless the client used the extended syntax.  The
    reference and patterns are returned as sent (modified UTF-7).
    """

    reference: str = ""
    patterns: tuple[str, ...] = ("",)
    selection: tuple[str, ...] = ()
    returns: tuple[ListReturnOption, ...] = ()
    extended: bool = False
    name: ClassVar[str] = "LIST"


@attrs.frozen
class Lsub(Command):
    """RFC 3501 §6.3.9."""

    reference: str = ""
    pattern: str = ""
    name: ClassVar[str] = "LSUB"


@attrs.frozen
class Status(Command):
    """RFC 3501 §6.3.10; ``items`` upper-case, in the order asked."""

    mailbox: str = ""
    items: tuple[str, ...] = ()
    name: ClassVar[str] = "STATUS"


@attrs.frozen
class AppendMessage:
    """One message of an APPEND (RFC 3501 §6.3.11; several with RFC 3502 MULTIAPPEND)."""

    message: bytes = attrs.field(repr=lambda m: f"<{len(m)} octets>")
    flags: tuple[str, ...] = ()
    internal_date: datetime.datetime | None = None
    #: Sent as a literal8 ``~{n}`` (RFC 3516 §4.4): may hold NUL and bare 8-bit
    #: data.  Only valid when BINARY is advertised; the session checks that.
    binary: bool = False


@attrs.frozen
class Append(Command):
    """RFC 3501 §6.3.11; more than one message only with MULTIAPPEND (RFC 3502).

    CATENATE (RFC 4469) would add a second kind of :class:`AppendMessage` content.
    """

    mailbox: str = ""
    messages: tuple[AppendMessage, ...] = ()
    name: ClassVar[str] = "APPEND"


@attrs.frozen
class Idle(Command):
    """RFC 2177 §3: the session switches the framer to raw lines and waits for DONE."""

    name: ClassVar[str] = "IDLE"


@attrs.frozen
class Namespace(Command):
    """RFC 2342 §5."""

    name: ClassVar[str] = "NAMESPACE"


@attrs.frozen
class Enable(Command):
    """RFC 5161 §3.1; capability names upper-case."""

    capabilities: tuple[str, ...] = ()
    name: ClassVar[str] = "ENABLE"


# --- RFC 3501 §6.4: selected state ---------------------------------------------


@attrs.frozen
class Check(Command):
    """RFC 3501 §6.4.1."""

    name: ClassVar[str] = "CHECK"


@attrs.frozen
class Close(Command):
    """RFC 3501 §6.4.2."""

    name: ClassVar[str] = "CLOSE"


@attrs.frozen
class Unselect(Command):
    """RFC 3691 §2."""

    name: ClassVar[str] = "UNSELECT"


@attrs.frozen
class Expunge(Command):
    """RFC 3501 §6.4.3; ``UID EXPUNGE set`` (RFC 4315 §2.1) sets ``uid_set``."""

    uid_set: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"

    @property
    def uid(self) -> bool:
        """Whether this is UID EXPUNGE."""
        return self.uid_set is not None


@attrs.frozen
class Search(Command):
    """RFC 3501 §6.4.4; ``returns`` is the RFC 4731 ESEARCH ``RETURN (...)``, if given.

    ``charset`` is upper-case, ``None`` when not given; the session refuses one
    outside :data:`mailaccess.imap.search.SUPPORTED_CHARSETS` with
    ``NO [BADCHARSET]``.
    """

    uid: bool
    program: And
    charset: str | None = None
    returns: tuple[str, ...] | None = None
    name: ClassVar[str] = "SEARCH"


@attrs.frozen
class Fetch(Command):
    """RFC 3501 §6.4.5; ``modifiers`` e.g. ``CHANGEDSINCE`` (RFC 7162 §3.1.4)."""

    uid: bool
    sequence_set: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    modifiers: tuple[Parameter, ...] = ()
    name: ClassVar[str] = "FETCH"


@attrs.frozen
class Store(Command):
    """RFC 3501 §6.4.6: ``mode`` is ``"replace"`` (FLAGS), ``"add"`` (+) or ``"remove"`` (-).

    ``modifiers`` e.g. ``UNCHANGEDSINCE`` (RFC 7162 §3.1.3).
    """

    uid: bool
    sequence_set: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]
    modifiers: tuple[Parameter, ...] = ()
    name: ClassVar[str] = "STORE"


@attrs.frozen
class Copy(Command):
    """RFC 3501 §6.4.7."""

    uid: bool
    sequence_set: SequenceSet
    mailbox: str
    name: ClassVar[str] = "COPY"


@attrs.frozen
class Move(Command):
    """RFC 6851 §3.1 (not a subclass of Copy, so a match on Copy never catches it)."""

    uid: bool
    sequence_set: SequenceSet
    mailbox: str
    name: ClassVar[str] = "MOVE"


# --- extensions not advertised yet: parsed so the session can grow into them ---


@attrs.frozen
class Sort(Command):
    """RFC 5256 §3 SORT: ``criteria`` as (key, reverse) pairs, keys upper-case.

    Parsed always; the session answers BAD while it does not advertise SORT.
    """

    uid: bool
    criteria: tuple[tuple[str, bool], ...]
    charset: str
    program: And
    name: ClassVar[str] = "SORT"


@attrs.frozen
class Thread(Command):
    """RFC 5256 §3 THREAD: ``algorithm`` upper-case (ORDEREDSUBJECT, REFERENCES…).

    Parsed always; the session answers BAD while it does not advertise THREAD=.
    """

    uid: bool
    algorithm: str
    charset: str
    program: And
    name: ClassVar[str] = "THREAD"
