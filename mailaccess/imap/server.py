"""The IMAP4rev1 server protocol (RFC 3501) on the shared store, and its factory.

A session reads client octets through :class:`~mailaccess.imap.framing.CommandFramer`,
parses each command (:func:`~mailaccess.imap.parser.parse_command`), runs its
handler from the command table in :mod:`mailaccess.imap.session`, and writes the
untagged updates of its selected mailbox (:class:`~mailaccess.imap.view.MailboxView`)
before each tagged completion.  Commands run strictly one at a time; commands
pipelined behind one that waits on a Deferred stay in the framer's buffer.

Small responses are gathered and written with one ``transport.write`` per batch
(a FETCH of 10,000 messages is not 10,000 writes); message bodies stream through
a producer (see :mod:`mailaccess.imap.cmd_message`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailaccess.context import ServerContext
from mailaccess.imap import commands as c
from mailaccess.imap.framing import CommandFramer, LiteralRequest, RawCommand, RawLine
from mailaccess.imap.lexer import ParseError
from mailaccess.imap.parser import parse_command
from mailaccess.imap.response import (
    ResponseCode,
    continuation,
    error_response,
    tagged,
    untagged_status,
)
from mailaccess.imap.session import Reply, State, allows_expunge, command_table
from mailaccess.imap.view import MailboxView
from mailaccess.net import is_loopback, no_delay, wrap_implicit_tls
from mailaccess.store.model import (
    InvalidMailboxName,
    MailboxExists,
    MessageGone,
    NoSuchMailbox,
    OverQuota,
    StoreError,
    StoreUnavailable,
)

__all__ = ["IMAPFactory", "IMAPServer", "make_factory", "store_error_reply"]

log = Logger(namespace="mailaccess.imap")

#: Sent in the greeting, ID and logs.
IMPLEMENTATION = "mailaccess"

# Flush gathered output once this much is waiting, even mid-command.
_WRITE_BATCH = 64 * 1024


def store_error_reply(error: BaseException, what: str) -> Reply:
    """The NO for a store error, with its RFC 5530 response code."""
    if isinstance(error, NoSuchMailbox):
        return Reply.no(f"{what}: {error}", "NONEXISTENT")
    if isinstance(error, MailboxExists):
        return Reply.no(f"{what}: {error}", "ALREADYEXISTS")
    if isinstance(error, InvalidMailboxName):
        return Reply.no(f"{what}: {error}", "CANNOT")
    if isinstance(error, OverQuota):
        return Reply.no(f"{what}: {error}", "OVERQUOTA")
    if isinstance(error, MessageGone):
        return Reply.no(f"{what}: {error}", "EXPUNGEISSUED")
    if isinstance(error, StoreUnavailable):
        return Reply.no(f"{what}: {error}; try again later", "UNAVAILABLE")
    return Reply.no(f"{what}: {error}")


class IMAPServer(Protocol):
    """One IMAP4rev1 session through the states of RFC 3501 §3."""

    # zope interfaces do not type-check without a mypy plugin: keep them loose.
    transport: Any

    def __init__(self, factory: IMAPFactory) -> None:
        self.factory = factory
        self.context = factory.context
        self.clock: Any = factory.context.clock
        limits = self.context.config.limits
        self.framer = CommandFramer(limits.max_line_length, limits.max_literal_size)
        self.state = State.NOT_AUTHENTICATED
        self.tls = factory.implicit_tls
        self.username: str | None = None
        self.account: Any = None  # IAccount once logged in
        self.view: MailboxView | None = None
        self.login_result: Any = None
        self.producer: Any = None  # a FETCH streaming bodies, if any
        self._out: list[bytes] = []
        self._out_size = 0
        self._busy = False
        self._in_loop = False
        self._reading_paused = False
        self._bad_commands = 0
        #: While set, raw lines (AUTHENTICATE responses, IDLE's DONE) go here.
        self._line_consumer: Callable[[bytes], None] | None = None
        self._idling = False
        self._keepalive: Any = None
        self._timer: Any = None
        self._peer = "unknown"
        self._end_reason = "connection closed by client"

    # --- connection ---------------------------------------------------------------

    @property
    def protocol_name(self) -> str:
        """``imaps`` on the implicit-TLS listener, ``imap`` otherwise (for logs)."""
        return "imaps" if self.factory.implicit_tls else "imap"

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self._peer = f"{getattr(peer, 'host', peer)}"
        self.tls = self.tls or ISSLTransport.providedBy(self.transport)
        no_delay(self.transport)
        log.info(
            "{protocol} session start: peer={peer} tls={tls}",
            protocol=self.protocol_name,
            peer=self._peer,
            tls=self.tls,
        )
        self._arm_autologout()
        # RFC 3501 §7.1.1 greeting; §7.2.1: CAPABILITY as a response code saves a
        # round trip.
        self.send(
            untagged_status("OK", f"{IMPLEMENTATION} IMAP4rev1 ready", self.capability_code())
        )
        self.flush_output()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.state = State.LOGOUT
        if self.producer is not None:
            self.producer.stopProducing()
            self.producer = None
        for timer in (self._timer, self._keepalive):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._keepalive = None
        self.deselect()
        if self.login_result is not None:
            logout, self.login_result = self.login_result.logout, None
            logout()
        log.info(
            "{protocol} session end: user={user} peer={peer} reason={reason}",
            protocol=self.protocol_name,
            user=self.username or "-",
            peer=self._peer,
            reason=self._end_reason,
        )

    def close(self, reason: str) -> None:
        """End the session: flush what is written and drop the connection."""
        self._end_reason = reason
        self.deselect()
        self.state = State.LOGOUT
        self.flush_output()
        self.transport.loseConnection()

    @property
    def closed(self) -> bool:
        """Whether the session has ended (or is ending)."""
        return self.state is State.LOGOUT

    # --- RFC 3501 §5.4 autologout, RFC 2177 keepalive -----------------------------------

    def _arm_autologout(self) -> None:
        timeout = self.context.config.limits.imap_autologout
        if self._timer is not None and self._timer.active():
            self._timer.reset(timeout)
        else:
            self._timer = self.clock.callLater(timeout, self._autologout)

    def _autologout(self) -> None:
        self._timer = None
        if self.producer is not None:
            # Streaming a big FETCH to a slow client is activity.
            self._arm_autologout()
            return
        # RFC 3501 §5.4: the timer is at least 30 minutes; tell the client why.
        self.send(untagged_status("BYE", "Autologout; idle for too long"))
        self.close("autologout")

    def _arm_keepalive(self) -> None:
        self._keepalive = self.clock.callLater(
            self.context.config.limits.imap_idle_keepalive, self._send_keepalive
        )

    def _send_keepalive(self) -> None:
        # RFC 2177 §3 asks clients to re-IDLE within 29 minutes; NAT boxes drop
        # silent connections much sooner, hence the configurable interval.
        self._keepalive = None
        if self._idling and not self.closed:
            self.send(untagged_status("OK", "Still here"))
            self.flush_output()
            self._arm_keepalive()

    # --- octets in ----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        self.framer.feed(data)
        self._process()

    def _process(self) -> None:
        if self._in_loop:
            return
        self._in_loop = True
        try:
            while not self.closed and (not self._busy or self._line_consumer is not None):
                event = self.framer.next_event()
                if event is None:
                    break
                self._arm_autologout()
                self._handle(event)
            self._throttle_reading()
        finally:
            self._in_loop = False
        self.flush_output()

    def _handle(self, event: Any) -> None:
        if isinstance(event, RawLine):
            consumer = self._line_consumer
            if consumer is not None:
                consumer(event.line)
            return
        if isinstance(event, LiteralRequest):
            # RFC 3501 §7.5: the framer has checked the size against our limits
            # (an oversized literal arrives as a ParseError with [TOOBIG]).
            limit = self.context.config.limits.max_line_length
            if self.state is State.NOT_AUTHENTICATED and event.size > limit:
                # Before login only a user name or password travels in a literal:
                # nobody unknown gets to make us buffer megabytes.
                self.framer.reject_literal()
                self._bad(
                    tagged(
                        event.tag or "*",
                        "BAD",
                        f"literals before login are limited to {limit} octets",
                        ResponseCode("TOOBIG"),
                    )
                    if event.tag
                    else untagged_status("BAD", "literal too large before login")
                )
                return
            self.framer.accept_literal()
            self.send(continuation("Ready for literal data"))
            self.flush_output()
            return
        if isinstance(event, ParseError):
            self._bad(error_response(event))
            return
        assert isinstance(event, RawCommand)
        try:
            command = parse_command(event)
        except ParseError as error:
            self._bad(error_response(error))
            return
        self._run(command)

    def _throttle_reading(self) -> None:
        # A client pipelining without reading our answers must not fill memory.
        limit = 16 * self.context.config.limits.max_line_length
        pause = self._busy and self.framer.buffered > limit
        if pause != self._reading_paused and not self.closed:
            self._reading_paused = pause
            if pause:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def _bad(self, line: bytes) -> None:
        """Send a BAD line and count it; too many end the session."""
        self.send(line)
        self._bad_commands += 1
        if self._bad_commands >= self.context.config.limits.max_bad_commands:
            self.send(untagged_status("BYE", "Too many invalid commands; closing the connection"))
            self.close("too many bad commands")

    # --- running commands ------------------------------------------------------------------

    def _run(self, command: c.Command) -> None:
        entry = command_table().get(type(command))
        if entry is None:
            # Parsed for the future (SORT, THREAD) but not advertised.
            self._bad(tagged(command.tag, "BAD", f"{command.name} is not supported"))
            return
        states, handler = entry
        if self.state not in states:
            self._bad(
                tagged(
                    command.tag,
                    "BAD",
                    f"{command.name} is not valid in the {self.state.value} state",
                )
            )
            return
        if self.view is not None and self.view.void:
            # The selected mailbox is gone: no command may act on it.
            self._end_void_session(self.view)
            return
        try:
            outcome = handler(self, command)
        except StoreError as error:
            outcome = store_error_reply(error, f"{command.name} failed")
        except Exception:
            outcome = self._unexpected(Failure(), command)
        if isinstance(outcome, Reply):
            self._complete(command, outcome)
            return
        self._busy = True
        d: Deferred[Any] = outcome
        d.addErrback(self._failed, command)
        d.addCallback(self._finish_async, command)
        d.addErrback(self._broken)

    def _failed(self, failure: Failure, command: c.Command) -> Reply:
        if isinstance(failure.value, StoreError):
            return store_error_reply(failure.value, f"{command.name} failed")
        return self._unexpected(failure, command)

    def _unexpected(self, failure: Failure, command: c.Command) -> Reply:
        # Never a traceback to the client: the log gets it, the client a short
        # text (RFC 5530 SERVERBUG).
        log.failure("IMAP {command} failed", failure, command=command.name)
        return Reply.no(f"{command.name} failed: internal server error", "SERVERBUG")

    def _broken(self, failure: Failure) -> None:
        # Writing the completion itself failed: the session is out of step.
        log.failure("IMAP session broke", failure)
        self._busy = False
        if not self.closed:
            self.send(untagged_status("BYE", "Internal server error; closing the connection"))
            self.close("internal error")

    def _finish_async(self, reply: Reply, command: c.Command) -> None:
        self._busy = False
        self._line_consumer = None
        self.framer.raw_lines = False
        if self.closed:
            return
        self._complete(command, reply)
        self.flush_output()
        self._process()

    def _complete(self, command: c.Command, reply: Reply) -> None:
        """Write the queued untagged updates, then the tagged completion."""
        if self.closed or not reply.status:
            return
        self.report_updates(allows_expunge(command))
        if self.closed:
            return
        line = tagged(command.tag, reply.status, reply.text, reply.code)
        if reply.status == "BAD":
            self._bad(line)
        else:
            self.send(line)
        if isinstance(command, c.Logout):
            self.close("LOGOUT")
        elif not self._in_loop:
            self.flush_output()

    def report_updates(self, allow_expunge: bool = True, own_flags: Any = None) -> None:
        """Send what changed in the selected mailbox (RFC 3501 §7.4.1 moments only)."""
        view = self.view
        if view is None or not view.has_pending:
            return
        for line in view.flush(allow_expunge, own_flags):
            self.send(line)
        if view.void:
            self._end_void_session(view)

    def _end_void_session(self, view: MailboxView) -> None:
        # RFC 3501 §7.1.5: BYE, then close.  A new UIDVALIDITY (§2.3.1.1)
        # voids every UID the session knows; a mailbox deleted or renamed by
        # another session leaves its selected name meaning nothing (Dovecot
        # disconnects such a session as "state is inconsistent").
        self.send(untagged_status("BYE", view.bye_text))
        self.close(view.bye_text)

    # --- octets out -------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue response octets; they go out in one write per batch."""
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= _WRITE_BATCH:
            self.flush_output()

    def flush_output(self) -> None:
        """Write whatever is queued."""
        if self._out:
            data = b"".join(self._out)
            self._out = []
            self._out_size = 0
            if self.transport is not None and not getattr(self.transport, "disconnected", False):
                self.transport.write(data)

    # --- for the command handlers -----------------------------------------------------------

    def plaintext_allowed(self) -> bool:
        """May a password travel on this connection (LOGIN, AUTHENTICATE PLAIN/LOGIN)?"""
        if self.tls:
            return True
        policy = self.context.config.auth.allow_plaintext
        if policy == "always":
            return True
        if policy == "loopback":
            return is_loopback(self.transport.getPeer())
        return False

    def starttls_available(self) -> bool:
        """RFC 3501 §6.2.1: offered before login on a plaintext connection with a certificate."""
        return (
            self.context.tls is not None and not self.tls and self.state is State.NOT_AUTHENTICATED
        )

    def capabilities(self) -> list[str]:
        """RFC 3501 §7.2.1: what this connection offers in its current state."""
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"]
        caps += ["UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE"]
        if self.state is State.NOT_AUTHENTICATED:
            if self.starttls_available():
                caps.append("STARTTLS")
            if self.plaintext_allowed():
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")  # RFC 3501 §6.2.3
        return caps

    def capability_code(self) -> ResponseCode:
        """``[CAPABILITY ...]`` for the greeting and the login completion."""
        from mailaccess.imap.response import Atom

        return ResponseCode("CAPABILITY", tuple(Atom.of(cap) for cap in self.capabilities()))

    def wait_for_lines(self, consumer: Callable[[bytes], None] | None) -> None:
        """Send the next raw lines (SASL responses, DONE) to *consumer*; None stops."""
        self._line_consumer = consumer
        self.framer.raw_lines = consumer is not None

    def start_idle(self) -> None:
        """RFC 2177 §3: report changes at once until DONE."""
        self._idling = True
        self._arm_keepalive()
        self.report_updates(True)

    def stop_idle(self) -> None:
        """Leave IDLE (DONE arrived, or the connection ends)."""
        self._idling = False
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None

    def mailbox_changed(self) -> None:
        """The selected mailbox queued an event; in IDLE it is reported at once."""
        if self._idling and not self.closed:
            self.report_updates(True)
            self.flush_output()

    def select(self, mailbox: Any, readonly: bool) -> MailboxView:
        """Make *mailbox* the selected one (RFC 3501 §6.3.1)."""
        self.deselect()
        self.view = MailboxView(mailbox, readonly, self.mailbox_changed)
        self.state = State.SELECTED
        return self.view

    def deselect(self) -> None:
        """Back to the authenticated state (CLOSE, UNSELECT, a failed SELECT)."""
        if self.view is not None:
            self.view.close()
            self.view = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def logged_in(self, result: Any) -> None:
        """Enter the authenticated state with a LoginResult."""
        self.login_result = result
        self.username = result.username
        self.account = result.account
        self.state = State.AUTHENTICATED
        log.info(
            "{protocol} login: user={user} peer={peer}",
            protocol=self.protocol_name,
            user=self.username,
            peer=self._peer,
        )

    def log_client_id(self, fields: dict[str, str | None]) -> None:
        """Log what a client's ID says about it (RFC 2971 §3.1), for support."""
        log.info(
            "{protocol} client: peer={peer} id={fields!r}",
            protocol=self.protocol_name,
            peer=self._peer,
            fields=fields,
        )

    @property
    def peer_host(self) -> str:
        """The client's address, for the login throttle."""
        return str(getattr(self.transport.getPeer(), "host", ""))


class IMAPFactory(Factory):
    """Builds IMAP sessions for one listener; *implicit_tls* for IMAPS (RFC 8314 §3.3)."""

    protocol = IMAPServer

    def __init__(self, context: ServerContext, implicit_tls: bool) -> None:
        self.context = context
        self.implicit_tls = implicit_tls
        #: Where SEARCH reads message bodies (None: the reactor's thread pool;
        #: tests set a synchronous runner).
        self.run_in_thread: Any = None

    def buildProtocol(self, addr: object) -> IMAPServer:
        return IMAPServer(self)


def make_factory(context: ServerContext, implicit_tls: bool) -> Factory[Any]:
    """The factory for an IMAP (``implicit_tls=False``) or IMAPS listener.

    IMAPS (RFC 8314 §3.3) wraps every connection in TLS from the first octet.
    """
    factory = IMAPFactory(context, implicit_tls)
    if not implicit_tls:
        return factory
    return wrap_implicit_tls(context, factory, "IMAPS")
