"""The POP3 server: RFC 1939 sessions over the shared store, with the extensions
of RFC 2449 (CAPA, response codes), RFC 2595 (STLS), RFC 3206 (SYS/AUTH codes),
RFC 5034 (SASL AUTH) and implicit TLS on the POP3S listener (RFC 8314).

A session is a thin translator: it parses command lines, asks the store (through
``Maildrop``) and the authenticator, and writes the replies.  Commands are
answered strictly in order; while one waits on a Deferred (a login, a flag
change, a message being streamed) the lines pipelined behind it wait in the
buffer (RFC 2449 §6.6 PIPELINING).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

import attrs
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailaccess.auth.login import LoginFailed
from mailaccess.auth.sasl import LoginExchange, SASLError, decode_plain
from mailaccess.context import ServerContext
from mailaccess.net import is_loopback, no_delay, wrap_implicit_tls
from mailaccess.pop3.credentials import APOPCredentials
from mailaccess.pop3.maildrop import ListedMessage, Maildrop, NoSuchMessage
from mailaccess.pop3.stream import MessageProducer
from mailaccess.pop3.uidl import UIDLFormat
from mailaccess.store.model import MessageGone, StoreError, StoreUnavailable

log = Logger(namespace="mailaccess.pop3")

IMPLEMENTATION = "mailaccess"

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"
CLOSED = "CLOSED"

# What a command handler returns: nothing (answered already) or a Deferred
# that fires once the reply has been written.
Outcome = Deferred[Any] | None


class _SessionRefused(Exception):
    """A login that authenticated but may not open a session; text is the -ERR line."""


@attrs.define
class MaildropRegistry:
    """Per server: which users hold a POP3 session, and when each last logged in.

    RFC 2449 §8.1.1 [IN-USE] (exclusive mode, DESIGN.md rule 7) and §8.1.2
    [LOGIN-DELAY] are both about other sessions of the same user, including
    those on the other listener (POP3 and POP3S share one registry).
    """

    in_use: dict[str, int] = attrs.field(factory=dict)
    last_login: dict[str, float] = attrs.field(factory=dict)


_registries: dict[int, MaildropRegistry] = {}


def _registry_for(context: ServerContext) -> MaildropRegistry:
    key = id(context)
    registry = _registries.get(key)
    if registry is None:
        registry = _registries[key] = MaildropRegistry()
        weakref.finalize(context, _registries.pop, key, None)
    return registry


class POP3Server(Protocol):
    """One POP3 session (RFC 1939 §3): AUTHORIZATION, TRANSACTION, UPDATE."""

    # zope interfaces do not type-check without a mypy plugin: keep them loose.
    transport: Any

    def __init__(self, factory: POP3Factory) -> None:
        self.factory = factory
        self.context = factory.context
        self.clock: Any = factory.context.clock
        self.state = AUTHORIZATION
        self.tls = factory.implicit_tls
        self.username: str | None = None  # once logged in
        self.maildrop: Maildrop | None = None
        self._buffer = b""
        self._offset = 0  # where the next line of _buffer starts
        self._discarding = False  # inside an over-long line, up to its LF
        self._busy = False  # a command's reply is not finished yet
        self._reading_paused = False
        self._in_loop = False
        self._bad_commands = 0
        self._user_argument: str | None = None  # the name USER gave, for PASS
        self._sasl_step: Callable[[bytes], Outcome] | None = None
        self._login_result: Any = None
        self._committed = False  # QUIT expunged this session's deletions
        self._producer: MessageProducer | None = None  # the RETR/TOP being sent
        self._timer: Any = None  # IDelayedCall
        self._end_reason = "connection closed by client"
        self._peer = "unknown"
        self._greeting_timestamp = b""
        self._handler_tables: dict[str, dict[str, Callable[[str], Outcome]]] = {}

    # --- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self._peer = f"{getattr(peer, 'host', peer)}"
        self.tls = self.tls or ISSLTransport.providedBy(self.transport)
        # Without it the ".CRLF" after each RETR waits for the client's delayed ACK.
        no_delay(self.transport)
        log.info(
            "{protocol} session start: peer={peer} tls={tls}",
            protocol=self._protocol_name,
            peer=self._peer,
            tls=self.tls,
        )
        # RFC 1939 §7 APOP: a timestamp unique to this greeting.
        token = os.urandom(8).hex()
        hostname = self.context.config.server.hostname
        timestamp = f"<{token}.{int(self.clock.seconds())}@{hostname}>"
        self._greeting_timestamp = timestamp.encode("ascii", "replace")
        self._arm_timer()
        self._send("+OK mailaccess POP3 server ready " + self._greeting_timestamp.decode("ascii"))

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.state = CLOSED
        if self._producer is not None:
            # Not every transport stops its producer when it goes away.
            self._producer.stopProducing()
            self._producer = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.maildrop is not None and not self._committed:
            # DESIGN.md rule 4: no QUIT, no UPDATE state; undo our DELEs.
            self.maildrop.reset().addErrback(
                lambda f: log.failure("Clearing \\Deleted after a dropped session", f)
            )
        self._end_session()
        log.info(
            "{protocol} session end: user={user} peer={peer} reason={reason}",
            protocol=self._protocol_name,
            user=self.username or "-",
            peer=self._peer,
            reason=self._end_reason,
        )

    @property
    def _protocol_name(self) -> str:
        return "pop3s" if self.factory.implicit_tls else "pop3"

    def _end_session(self) -> None:
        if self.maildrop is not None:
            self.maildrop.close()
        registry = self.factory.registry
        if self.username is not None and registry.in_use.get(self.username) == id(self):
            del registry.in_use[self.username]
        if self._login_result is not None:
            logout, self._login_result = self._login_result.logout, None
            if callable(logout):
                logout()

    def _close(self, reason: str) -> None:
        self._end_reason = reason
        self.state = CLOSED
        self.transport.loseConnection()

    # --- RFC 1939 §3: the autologout timer -----------------------------------------

    def _arm_timer(self) -> None:
        timeout = self.context.config.limits.pop3_autologout
        if self._timer is not None and self._timer.active():
            self._timer.reset(timeout)
        else:
            self._timer = self.clock.callLater(timeout, self._autologout)

    def _autologout(self) -> None:
        self._timer = None
        if self._busy:
            # A long RETR to a slow client is activity, not idleness.
            self._arm_timer()
            return
        # RFC 1939 §3: close without a reply and without entering UPDATE.
        self._end_reason = "autologout"
        self.transport.loseConnection()

    # --- lines in --------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        # Lines are taken by moving _offset, not by slicing: slicing a 100 KB
        # burst of pipelined commands line by line would copy it quadratically.
        self._buffer = self._buffer[self._offset :] + data
        self._offset = 0
        self._process_buffer()

    def _process_buffer(self) -> None:
        if self._in_loop:
            return
        self._in_loop = True
        try:
            while not self._busy and self.state != CLOSED:
                line = self._next_line()
                if line is None:
                    break
                self._arm_timer()
                try:
                    outcome = self._line_received(line)
                except Exception:
                    # A bug must cost the client one -ERR, not the connection.
                    self._internal_error(Failure())
                    outcome = None
                if outcome is not None:
                    self._busy = True
                    outcome.addErrback(self._internal_error)
                    outcome.addBoth(self._command_finished)
            self._throttle_reading()
        finally:
            self._in_loop = False

    def _next_line(self) -> bytes | None:
        limit = self.context.config.limits.max_line_length
        while True:
            buffer, start = self._buffer, self._offset
            newline = buffer.find(b"\n", start)
            if self._discarding:
                if newline < 0:
                    self._buffer, self._offset = b"", 0
                    return None
                self._offset = newline + 1
                self._discarding = False
                continue
            if newline < 0:
                if len(buffer) - start > limit:
                    self._buffer, self._offset = b"", 0
                    self._discarding = True
                    self._line_too_long(limit)
                return None
            line = buffer[start:newline]
            self._offset = newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > limit:
                self._line_too_long(limit)
                if self.state == CLOSED:
                    return None
                continue
            return line

    def _line_too_long(self, limit: int) -> None:
        self._sasl_step = None
        self._bad_command(f"line too long, at most {limit} octets per command")

    def _throttle_reading(self) -> None:
        # A client pipelining without reading our replies must not fill memory.
        limit = 16 * self.context.config.limits.max_line_length
        pause = self._busy and len(self._buffer) - self._offset > limit
        if pause != self._reading_paused and self.state != CLOSED:
            self._reading_paused = pause
            if pause:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def _command_finished(self, result: object) -> None:
        self._busy = False
        if self.state == CLOSED:
            return
        self._arm_timer()
        self._process_buffer()

    def _internal_error(self, failure: Failure) -> None:
        log.failure("POP3 command failed", failure)
        if self.state != CLOSED:
            self._send("-ERR [SYS/TEMP] internal server error, try again later")

    def _bad_command(self, text: str) -> None:
        self._bad_commands += 1
        limit = self.context.config.limits.max_bad_commands
        if self._bad_commands >= limit:
            self._send(f"-ERR {text}; too many bad commands, closing the connection")
            self._close("too many bad commands")
        else:
            self._send(f"-ERR {text}")

    def _line_received(self, line: bytes) -> Outcome:
        if self._sasl_step is not None:
            step, self._sasl_step = self._sasl_step, None
            return step(line)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._bad_command("command is not valid UTF-8")
            return None
        # RFC 1939 §3: a keyword, then arguments separated by single spaces;
        # keywords are case-insensitive.
        keyword, _, argument = text.partition(" ")
        keyword = keyword.upper()
        handler = self._handlers().get(keyword)
        if handler is None:
            if keyword in _ALL_COMMANDS:
                self._bad_command(f"{keyword} is not valid in the {self.state} state")
            elif not keyword:
                self._bad_command("empty command line")
            else:
                self._bad_command(f"unknown command {keyword[:20]!r}")
            return None
        return handler(argument)

    def _handlers(self) -> dict[str, Callable[[str], Outcome]]:
        handlers = self._handler_tables.get(self.state)
        if handlers is None:
            handlers = self._handler_tables[self.state] = self._handlers_for(self.state)
        return handlers

    def _handlers_for(self, state: str) -> dict[str, Callable[[str], Outcome]]:
        # RFC 1939 §3-§6: the commands each state accepts.
        if state == AUTHORIZATION:
            return {
                "CAPA": self.do_CAPA,
                "USER": self.do_USER,
                "PASS": self.do_PASS,
                "APOP": self.do_APOP,
                "AUTH": self.do_AUTH,
                "STLS": self.do_STLS,
                "QUIT": self.do_QUIT,
            }
        if state == TRANSACTION:
            return {
                "CAPA": self.do_CAPA,
                "STAT": self.do_STAT,
                "LIST": self.do_LIST,
                "RETR": self.do_RETR,
                "DELE": self.do_DELE,
                "NOOP": self.do_NOOP,
                "RSET": self.do_RSET,
                "TOP": self.do_TOP,
                "UIDL": self.do_UIDL,
                "QUIT": self.do_QUIT,
            }
        return {}

    # --- replies out ----------------------------------------------------------------

    def _send(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def _send_multiline(self, first: str, lines: list[str]) -> None:
        # RFC 1939 §3: byte-stuff any line beginning with ".", end with ".".
        if any(line.startswith(".") for line in lines):
            lines = ["." + line if line.startswith(".") else line for line in lines]
        text = "\r\n".join([first, *lines, ".\r\n"])
        self.transport.write(text.encode())

    # --- policy -----------------------------------------------------------------------

    def plaintext_allowed(self) -> bool:
        """May a password travel on this connection (USER/PASS, AUTH PLAIN/LOGIN)?"""
        if self.tls:
            return True
        policy = self.context.config.auth.allow_plaintext
        if policy == "always":
            return True
        if policy == "loopback":
            return is_loopback(self.transport.getPeer())
        return False

    def sasl_mechanisms(self) -> list[str]:
        """The SASL mechanisms on offer on this connection now (RFC 5034 §3)."""
        return ["PLAIN", "LOGIN"] if self.plaintext_allowed() else []

    def _stls_available(self) -> bool:
        return self.context.tls is not None and not self.tls and self.state == AUTHORIZATION

    def _refuse_plaintext(self) -> None:
        self._send(
            "-ERR [AUTH] plaintext login needs an encrypted connection: "
            + ("use STLS first" if self._stls_available() else "use the POP3S port")
        )

    # --- RFC 2449 CAPA ----------------------------------------------------------------------

    def do_CAPA(self, argument: str) -> Outcome:
        """RFC 2449 §5: the capabilities true for this connection in this state."""
        pop3 = self.context.config.pop3
        capabilities = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state == AUTHORIZATION:
            if self._stls_available():
                capabilities.append("STLS")  # RFC 2595 §4
            if self.plaintext_allowed():
                capabilities.append("USER")
            mechanisms = self.sasl_mechanisms()
            if mechanisms:
                capabilities.append("SASL " + " ".join(mechanisms))  # RFC 5034 §3
        if pop3.expire is not None:
            capabilities.append(f"EXPIRE {pop3.expire}")  # RFC 2449 §6.7
        if pop3.login_delay is not None:
            capabilities.append(f"LOGIN-DELAY {pop3.login_delay}")  # RFC 2449 §6.8
        capabilities.append(f"IMPLEMENTATION {IMPLEMENTATION}")
        self._send_multiline("+OK capability list follows", capabilities)
        return None

    # --- RFC 2595 STLS -------------------------------------------------------------------

    def do_STLS(self, argument: str) -> Outcome:
        """RFC 2595 §4: start TLS; whatever the client sent after STLS is dropped."""
        if argument:
            self._bad_command("STLS takes no argument")
            return None
        if self.tls:
            self._send("-ERR TLS is already active")
            return None
        if self.context.tls is None:
            self._send("-ERR STLS is not available: the server has no certificate")
            return None
        self._send("+OK begin TLS negotiation now")
        # The STARTTLS command-injection fix (CVE-2011-0411 and kin): octets
        # that arrived after STLS were sent in plaintext and could have been
        # injected by a man in the middle; they must never be executed.
        self._buffer, self._offset = b"", 0
        self._discarding = False
        self._user_argument = None
        self.transport.startTLS(self.context.tls)
        self.tls = True
        return None

    # --- RFC 1939 §7 USER / PASS -------------------------------------------------------------

    def do_USER(self, argument: str) -> Outcome:
        """RFC 1939 §7 USER name."""
        if not self.plaintext_allowed():
            self._refuse_plaintext()
            return None
        if not argument or " " in argument:
            self._bad_command("USER needs one argument: the user name")
            return None
        self._user_argument = argument
        self._send("+OK send PASS")
        return None

    def do_PASS(self, argument: str) -> Outcome:
        """RFC 1939 §7 PASS string (the password may contain spaces)."""
        if not self.plaintext_allowed():
            self._refuse_plaintext()
            return None
        username, self._user_argument = self._user_argument, None
        if username is None:
            self._send("-ERR send USER first")
            return None
        if not argument:
            self._send("-ERR [AUTH] PASS needs the password")
            return None
        credentials = UsernamePassword(username.encode("utf-8"), argument.encode("utf-8"))
        return self._login(username, credentials)

    def do_APOP(self, argument: str) -> Outcome:
        """RFC 1939 §7 APOP name digest (MD5 of the greeting's timestamp and secret)."""
        name, _, digest = argument.partition(" ")
        digest = digest.lower()
        if not name or len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
            self._bad_command("APOP needs a name and a 32-digit hex MD5 digest")
            return None
        self._user_argument = None
        credentials = APOPCredentials(
            self._greeting_timestamp, name.encode("utf-8"), digest.encode("ascii")
        )
        return self._login(name, credentials)

    # --- RFC 5034 AUTH ------------------------------------------------------------------------

    def do_AUTH(self, argument: str) -> Outcome:
        """RFC 5034 §4 AUTH mechanism [initial-response]."""
        mechanisms = self.sasl_mechanisms()
        if not argument:
            # Not in RFC 5034, but clients from the RFC 1734 days send a bare
            # AUTH to learn the mechanisms; Dovecot answers it the same way.
            self._send_multiline("+OK SASL mechanisms follow", mechanisms)
            return None
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            self._send(f"-ERR unsupported SASL mechanism {mechanism[:20]}")
            return None
        if mechanism not in mechanisms:
            self._refuse_plaintext()
            return None
        self._user_argument = None
        # RFC 5034 §4: an initial response of zero length is sent as "=".
        initial_response = initial.encode("ascii", "replace") if initial else None
        if mechanism == "PLAIN":
            if initial_response is None:
                return self._challenge(b"", self._sasl_plain)
            return self._sasl_plain(initial_response)
        try:
            exchange = LoginExchange(initial_response)
        except SASLError as error:
            return self._sasl_failed(error)
        return self._sasl_login_step(exchange)

    def _challenge(self, challenge: bytes, step: Callable[[bytes], Outcome]) -> Outcome:
        # RFC 5034 §4: "+" SP base64 challenge; the client's next line answers it.
        self._send("+ " + challenge.decode("ascii"))
        self._sasl_step = step
        return None

    def _sasl_failed(self, error: SASLError) -> Outcome:
        # RFC 5034 §4: a cancelled or malformed exchange fails with -ERR; it
        # says nothing about the credentials, hence no [AUTH] code.
        self._send(f"-ERR {error}")
        return None

    def _sasl_plain(self, line: bytes) -> Outcome:
        try:
            response = decode_plain(line)  # RFC 4616 §2, base64 and all
        except SASLError as error:
            return self._sasl_failed(error)
        return self._login(response.authcid, response.credentials())

    def _sasl_login_step(self, exchange: LoginExchange) -> Outcome:
        if exchange.done:
            assert exchange.username is not None
            return self._login(exchange.username, exchange.credentials())

        def respond(line: bytes) -> Outcome:
            try:
                exchange.respond(line)
            except SASLError as error:
                return self._sasl_failed(error)
            return self._sasl_login_step(exchange)

        return self._challenge(exchange.challenge(), respond)

    # --- login: AUTHORIZATION -> TRANSACTION --------------------------------------------------

    def _login(self, username: str, credentials: Any) -> Deferred[None]:
        peer_host = getattr(self.transport.getPeer(), "host", "")
        d: Deferred[Any] = self.context.authenticator.login(credentials, peer_host)
        d.addCallback(self._logged_in)
        d.addCallback(self._open_maildrop)
        d.addErrback(self._login_failed)
        return d

    def _logged_in(self, result: Any) -> Any:
        if self.state != AUTHORIZATION:
            # The client went away while the password was checked.
            result.logout()
            raise _SessionRefused("")
        self._login_result = result
        username = result.username
        registry = self.factory.registry
        pop3 = self.context.config.pop3
        if pop3.exclusive and username in registry.in_use:
            # RFC 2449 §8.1.1 / DESIGN.md rule 7.
            raise _SessionRefused(
                f"-ERR [IN-USE] {username}'s maildrop is open in another session"
            )
        now = self.clock.seconds()
        if pop3.login_delay is not None:
            last = registry.last_login.get(username)
            if last is not None and now - last < pop3.login_delay:
                # RFC 2449 §8.1.2: too soon after the previous login.
                wait = int(pop3.login_delay - (now - last)) + 1
                raise _SessionRefused(
                    f"-ERR [LOGIN-DELAY] logins are limited to one per {pop3.login_delay} "
                    f"seconds; try again in {wait} seconds"
                )
            registry.last_login[username] = now
        registry.in_use.setdefault(username, id(self))
        self.username = username
        return result.account.mailbox("INBOX")

    def _open_maildrop(self, mailbox: Any) -> None:
        if self.state != AUTHORIZATION:
            raise _SessionRefused("")
        self.maildrop = Maildrop(mailbox, self.factory.uidl_format)
        self.state = TRANSACTION
        count, octets = self.maildrop.stat()
        # RFC 1939 §7 PASS: "+OK maildrop locked and ready".
        self._send(f"+OK logged in, maildrop has {count} messages ({octets} octets)")

    def _login_failed(self, failure: Failure) -> None:
        if self._login_result is not None:
            registry = self.factory.registry
            if self.username is not None and registry.in_use.get(self.username) == id(self):
                del registry.in_use[self.username]
            self.username = None
            logout, self._login_result = self._login_result.logout, None
            logout()
        if self.state != AUTHORIZATION:
            return
        error: Any = failure.value
        if isinstance(error, _SessionRefused):
            self._send(str(error))
        elif isinstance(error, StoreError):
            log.failure("Opening the maildrop failed", failure)
            code = "SYS/TEMP" if isinstance(error, StoreUnavailable) else "SYS/PERM"
            self._send(f"-ERR [{code}] cannot open the maildrop: {error}")
        elif isinstance(error, LoginFailed):
            # RFC 3206: [AUTH] for bad credentials, [SYS/TEMP] for trouble here.
            self._send(f"-ERR [{error.pop3_code}] {error}")
        else:
            log.failure("Login failed unexpectedly", failure)
            self._send("-ERR [SYS/TEMP] login is not possible right now, try again later")

    # --- RFC 1939 §5 TRANSACTION commands -----------------------------------------------------

    @property
    def _drop(self) -> Maildrop:
        assert self.maildrop is not None
        return self.maildrop

    def _lookup(self, argument: str) -> ListedMessage | None:
        try:
            return self._drop.lookup(argument)
        except NoSuchMessage as error:
            self._send(f"-ERR {error}")
            return None

    def do_STAT(self, argument: str) -> Outcome:
        """RFC 1939 §5 STAT: "+OK count octets"."""
        if argument:
            self._bad_command("STAT takes no argument")
            return None
        count, octets = self._drop.stat()
        self._send(f"+OK {count} {octets}")
        return None

    def do_LIST(self, argument: str) -> Outcome:
        """RFC 1939 §5 LIST [msg]: the scan listing of one or all present messages."""
        if argument:
            message = self._lookup(argument)
            if message is not None:
                self._send(f"+OK {message.number} {message.size}")
            return None
        count, octets = self._drop.stat()
        self._send_multiline(f"+OK {count} messages ({octets} octets)", self._drop.scan_listing())
        return None

    def do_UIDL(self, argument: str) -> Outcome:
        """RFC 1939 §7 UIDL [msg]: the unique-id listing (DESIGN.md rule 2)."""
        drop = self._drop
        if argument:
            message = self._lookup(argument)
            if message is not None:
                self._send(f"+OK {message.number} {drop.unique_id(message)}")
            return None
        self._send_multiline("+OK unique-id listing follows", drop.unique_id_listing())
        return None

    def do_RETR(self, argument: str) -> Outcome:
        """RFC 1939 §5 RETR msg: the whole message; sets \\Seen (DESIGN.md rule 3)."""
        if not argument:
            self._bad_command("RETR needs a message number")
            return None
        message = self._lookup(argument)
        if message is None:
            return None
        return self._stream(message, None, f"+OK {message.size} octets")

    def do_TOP(self, argument: str) -> Outcome:
        """RFC 1939 §7 TOP msg n: the header, the blank line and n body lines."""
        number, _, lines = argument.partition(" ")
        if not number or not lines.isascii() or not lines.isdigit():
            self._bad_command("TOP needs a message number and a number of lines")
            return None
        message = self._lookup(number)
        if message is None:
            return None
        return self._stream(message, int(lines), "+OK top of message follows")

    def _stream(self, message: ListedMessage, body_lines: int | None, first: str) -> Outcome:
        drop = self._drop
        try:
            source = drop.mailbox.open_message(message.uid)
        except MessageGone:
            drop.mark_gone(message)
            self._send(f"-ERR message {message.number} was removed by another session")
            return None
        except (StoreError, OSError) as error:
            log.failure("Opening message {uid} failed", uid=message.uid)
            self._send(f"-ERR [SYS/TEMP] cannot read message {message.number}: {error}")
            return None
        self._send(first)
        if body_lines is None and self.context.config.pop3.retr_sets_seen:
            drop.mark_seen(message)
        producer = self._producer = MessageProducer(source, self.transport, body_lines)
        d = producer.start()

        def finished(result: object) -> object:
            self._producer = None
            return result

        def failed(failure: Failure) -> None:
            # Half a message is on the wire and cannot be taken back: the
            # only honest end is to drop the connection (which acts as RSET).
            if self.state != CLOSED:
                log.failure("Sending message {uid} failed", failure, uid=message.uid)
                self._end_reason = "error while sending a message"
                self.transport.abortConnection()

        return d.addBoth(finished).addErrback(failed)

    def do_DELE(self, argument: str) -> Outcome:
        """RFC 1939 §5 DELE msg: mark deleted now (\\Deleted in the store, rule 4)."""
        if not argument:
            self._bad_command("DELE needs a message number")
            return None
        message = self._lookup(argument)
        if message is None:
            return None

        def deleted(result: object) -> None:
            self._send(f"+OK message {message.number} deleted")

        def failed(failure: Failure) -> None:
            failure.trap(StoreError)
            self._send(f"-ERR [SYS/TEMP] message {message.number} not deleted: {failure.value}")

        return self._drop.delete(message).addCallbacks(deleted, failed)

    def do_NOOP(self, argument: str) -> Outcome:
        """RFC 1939 §5 NOOP."""
        self._send("+OK")
        return None

    def do_RSET(self, argument: str) -> Outcome:
        """RFC 1939 §5 RSET: unmark this session's deletions (rule 4)."""

        def reset(result: object) -> None:
            count, octets = self._drop.stat()
            self._send(f"+OK maildrop has {count} messages ({octets} octets)")

        def failed(failure: Failure) -> None:
            failure.trap(StoreError)
            self._send(f"-ERR [SYS/TEMP] deletions not undone: {failure.value}")

        return self._drop.reset().addCallbacks(reset, failed)

    def do_QUIT(self, argument: str) -> Outcome:
        """RFC 1939 §4/§6 QUIT: in TRANSACTION, enter UPDATE and expunge; then close."""
        if self.state == AUTHORIZATION:
            self._send("+OK bye")
            self._close("QUIT")
            return None
        self.state = UPDATE
        drop = self._drop

        def committed(removed: tuple[int, ...]) -> None:
            self._committed = True
            count, _ = drop.stat()
            self._send(f"+OK bye, {len(removed)} deleted, {count} left in maildrop")

        def failed(failure: Failure) -> None:
            if not failure.check(StoreError):
                log.failure("Expunging at QUIT failed", failure)
            # RFC 1939 §6: "-ERR some deleted messages not removed".  Those
            # left keep no \Deleted: connectionLost resets them, as for a drop.
            self._send(f"-ERR [SYS/TEMP] some deleted messages not removed: {failure.value}")

        def close(result: object) -> None:
            self._end_reason = "QUIT"
            self.transport.loseConnection()

        return drop.commit().addCallbacks(committed, failed).addBoth(close)


_ALL_COMMANDS = frozenset(
    {"CAPA", "USER", "PASS", "APOP", "AUTH", "STLS", "QUIT"}
    | {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"}
)


class POP3Factory(Factory):
    """Builds POP3 sessions for one listener; *implicit_tls* for POP3S."""

    protocol = POP3Server

    def __init__(self, context: ServerContext, implicit_tls: bool) -> None:
        self.context = context
        self.implicit_tls = implicit_tls
        # A bad format is a config error: fail now, not at the first UIDL.
        self.uidl_format = UIDLFormat.parse(context.config.pop3.uidl_format)
        self.registry = _registry_for(context)

    def buildProtocol(self, addr: object) -> POP3Server:
        return POP3Server(self)


def make_factory(context: ServerContext, implicit_tls: bool) -> Factory[Any]:
    """The factory for a POP3 (``implicit_tls=False``) or POP3S listener.

    POP3S (RFC 8314 §3.3) wraps every connection in TLS from the first octet,
    with the context's TLS context factory.
    """
    factory = POP3Factory(context, implicit_tls)
    if not implicit_tls:
        return factory
    return wrap_implicit_tls(context, factory, "POP3S")
