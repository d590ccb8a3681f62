"""The LMTP server (RFC 2033): an MTA hands mail over, one reply per recipient.

Extensions offered (the ones Postfix's LMTP client uses): PIPELINING (RFC 2920),
ENHANCEDSTATUSCODES (RFC 2034: on every 2xx/4xx/5xx reply but the greeting and
LHLO's), 8BITMIME (RFC 6152) and SIZE (RFC 1870).  No TLS and no login: LMTP is
for the local MTA, on loopback or a UNIX socket whose permissions say who may
deliver (docs/postfix.md).

A session is a translator between the wire and the store, like the POP3 one:
commands are answered strictly in order; while one waits (a user lookup, the
deliveries after DATA) the lines pipelined behind it wait in the buffer.

The message is kept in memory while it arrives, not in a temporary file: the
store's ``append`` takes bytes and writes its own tmp/ file, so spooling first
would write every message twice; memory is bounded by ``lmtp.max_message_size``
instead, and past it the rest is read and dropped, so the session stays in step.
Measured with a 20 MiB message (tracemalloc): 22 MiB held while it arrives, a
peak of 42 MiB while it is stored; at most two copies exist at any moment (the
received octets and their LF form, then that and one recipient's copy with its
trace headers).

Each recipient's ``250`` is sent only after ``Mailbox.append`` fired, i.e. the
message is fsynced in that user's Maildir; any store failure answers that
recipient ``451 4.3.0`` (the MTA retries), never ``250``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailaccess.auth.checker import BackendUnavailable, PasswdFileChecker
from mailaccess.context import ServerContext
from mailaccess.lmtp.address import AddressError, Recipient, parse_path_argument, resolve
from mailaccess.lmtp.delivery import store_copy, trace_headers
from mailaccess.net import no_delay
from mailaccess.store.model import OverQuota, StoreError

log = Logger(namespace="mailaccess.lmtp")

RunInThread = Callable[..., Deferred[Any]]
Outcome = Deferred[Any] | None

#: RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with CRLF; we
#: take up to limits.max_line_length, never less than that.
MIN_COMMAND_LINE = 512
#: How much unread input may wait while a command is in progress.
READ_AHEAD = 256 * 1024

# The end of DATA: a line holding only "." (RFC 5321 §4.1.1.4), bare LF
# tolerated.  The body is kept with a leading "\n" so that the first line
# is found the same way.
_END_OF_DATA = re.compile(rb"\n\.\r?\n")
# RFC 5321 §4.5.2: the receiver drops the first "." of a line that starts with one.
_DOT_STUFFED = re.compile(rb"(?m)^\.")
_COMMANDS = frozenset(
    {"LHLO", "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"}
    | {"VRFY", "EXPN", "HELP", "BDAT", "STARTTLS", "AUTH", "TURN"}
)


@attrs.define
class _Transaction:
    """The mail transaction in progress (RFC 5321 §3.3)."""

    sender: str
    recipients: list[Recipient] = attrs.field(factory=list)


class LMTPServer(Protocol):
    """One LMTP session (RFC 2033 §4)."""

    transport: Any

    def __init__(self, factory: LMTPFactory) -> None:
        self.factory = factory
        self.context = factory.context
        self.config = factory.context.config
        self.clock: Any = factory.context.clock
        self._hello: str | None = None
        self._transaction: _Transaction | None = None
        self._buffer = bytearray()
        self._in_data = False
        self._body = bytearray()
        self._body_scanned = 0
        self._body_size = 0  # octets of the body read, including dropped ones
        self._body_too_big = False
        self._busy = False
        self._closed = False
        self._in_loop = False
        self._reading_paused = False
        self._discarding = False  # inside an over-long command line
        self._bad_commands = 0
        self._timer: Any = None
        self._peer = "unknown"

    # --- connection -------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self._peer = str(getattr(peer, "host", None) or getattr(peer, "name", None) or "local")
        log.info("lmtp session start: peer={peer}", peer=self._peer)
        # Replies to pipelined commands leave one by one as each is decided (a
        # RCPT waits for a lookup): with Nagle on, a reply waits for the ACK of
        # the previous one, which the client delays ~40 ms.  Measured: 80 msg/s
        # with Nagle, see the report of issue 6.
        no_delay(self.transport)
        self._arm_timer()
        # RFC 2033 §4 / RFC 5321 §4.2: 220 greeting with our name.
        self._reply(220, None, f"{self.config.server.hostname} mailaccess LMTP ready")

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._buffer.clear()
        self._body.clear()
        log.info("lmtp session end: peer={peer}", peer=self._peer)

    def _close(self) -> None:
        self._closed = True
        self.transport.loseConnection()

    def _arm_timer(self) -> None:
        timeout = self.config.lmtp.timeout
        if self._timer is not None and self._timer.active():
            self._timer.reset(timeout)
        else:
            self._timer = self.clock.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self._busy:
            self._arm_timer()  # our own deliveries are no idleness of the client
            return
        # RFC 5321 §4.5.3.2: the server may close an idle session; 421 first.
        self._reply(421, "4.4.2", f"{self.config.server.hostname} idle too long, closing")
        self._close()

    # --- replies ------------------------------------------------------------------

    def _reply(self, code: int, enhanced: str | None, text: str) -> None:
        """One reply line; *enhanced* is the RFC 2034 §4 status code (none on 220 and 354)."""
        middle = f" {enhanced} " if enhanced else " "
        self.transport.write(f"{code}{middle}{text}\r\n".encode("utf-8", "replace"))

    def _reply_lines(self, code: int, lines: list[str]) -> None:
        """A multi-line reply (RFC 5321 §4.2.1): ``250-`` lines, then ``250 ``."""
        out = [f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}"]
        self.transport.write(("\r\n".join(out) + "\r\n").encode("utf-8", "replace"))

    def _bad_command(self, code: int, enhanced: str, text: str) -> None:
        self._bad_commands += 1
        if self._bad_commands >= self.config.limits.max_bad_commands:
            self._reply(421, "4.7.0", f"{text}; too many bad commands, closing")
            self._close()
        else:
            self._reply(code, enhanced, text)

    # --- input ------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self._buffer += data
        self._arm_timer()
        self._process()

    def _process(self) -> None:
        if self._in_loop:
            return
        self._in_loop = True
        try:
            while not self._busy and not self._closed:
                if self._in_data:
                    if not self._take_data():
                        break
                    continue
                line = self._next_line()
                if line is None:
                    break
                try:
                    outcome = self._command(line)
                except Exception:
                    # A bug costs the client one 451, not the connection.
                    self._internal_error(Failure())
                    outcome = None
                if outcome is not None:
                    self._busy = True
                    outcome.addErrback(self._internal_error)
                    outcome.addBoth(self._finished)
            self._throttle_reading()
        finally:
            self._in_loop = False

    def _finished(self, _: object) -> None:
        self._busy = False
        if not self._closed:
            self._arm_timer()
            self._process()

    def _throttle_reading(self) -> None:
        # A client that pipelines without reading our replies must not fill memory.
        pause = self._busy and len(self._buffer) > READ_AHEAD
        if pause != self._reading_paused and not self._closed:
            self._reading_paused = pause
            if pause:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def _internal_error(self, failure: Failure) -> None:
        log.failure("LMTP command failed", failure)
        if not self._closed:
            self._reply(451, "4.3.0", "internal server error, try again later")

    def _line_limit(self) -> int:
        return max(MIN_COMMAND_LINE, self.config.limits.max_line_length)

    def _next_line(self) -> bytes | None:
        limit = self._line_limit()
        while True:
            newline = self._buffer.find(b"\n")
            if self._discarding:
                if newline < 0:
                    self._buffer.clear()
                    return None
                del self._buffer[: newline + 1]
                self._discarding = False
                continue
            if newline < 0:
                if len(self._buffer) > limit:
                    self._buffer.clear()
                    self._discarding = True
                    self._line_too_long(limit)
                return None
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if line.endswith(b"\r"):
                line = line[:-1]  # bare LF is tolerated (Postfix may send it)
            if len(line) > limit:
                self._line_too_long(limit)
                continue
            return line

    def _line_too_long(self, limit: int) -> None:
        # RFC 5321 §4.5.3.1.4 / §4.2.2: 500 5.5.2 for a line too long.
        self._bad_command(500, "5.5.2", f"line too long, at most {limit} octets per command")

    # --- commands ---------------------------------------------------------------------

    def _command(self, line: bytes) -> Outcome:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._bad_command(500, "5.5.2", "command is not valid UTF-8")
            return None
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        handler = getattr(self, f"do_{verb}", None) if verb in _COMMANDS else None
        if handler is None:
            if not verb:
                self._bad_command(500, "5.5.2", "empty command line")
            else:
                self._bad_command(500, "5.5.1", f"unknown command {verb[:20]!r}")
            return None
        result: Outcome = handler(argument.strip())
        return result

    def do_LHLO(self, argument: str) -> Outcome:
        """RFC 2033 §4.1: LHLO replaces EHLO; it also resets the transaction."""
        if not argument:
            self._reply(501, "5.5.4", "syntax: LHLO hostname")
            return None
        self._hello = argument
        self._transaction = None
        self._reply_lines(
            250,
            [
                self.config.server.hostname,
                "PIPELINING",  # RFC 2920
                "ENHANCEDSTATUSCODES",  # RFC 2034
                "8BITMIME",  # RFC 6152
                f"SIZE {self.config.lmtp.max_message_size}",  # RFC 1870
            ],
        )
        return None

    def do_HELO(self, argument: str) -> Outcome:
        """RFC 2033 §4.1: HELO and EHLO are not LMTP."""
        self._bad_command(500, "5.5.1", "this is LMTP: say LHLO (RFC 2033 §4.1)")
        return None

    do_EHLO = do_HELO

    def do_MAIL(self, argument: str) -> Outcome:
        """RFC 5321 §4.1.1.2 MAIL FROM, with RFC 1870 SIZE= and RFC 6152 BODY=."""
        if self._hello is None:
            self._reply(503, "5.5.1", "say LHLO first")
            return None
        if self._transaction is not None:
            self._reply(503, "5.5.1", "nested MAIL command (RSET first)")
            return None
        try:
            sender, parameters = parse_path_argument(argument, "FROM")
        except AddressError as e:
            self._reply(501, "5.5.4", str(e))
            return None
        limit = self.config.lmtp.max_message_size
        for keyword, value in parameters.items():
            if keyword == "SIZE":
                if not value.isdigit():
                    self._reply(501, "5.5.4", "SIZE= needs a number of octets (RFC 1870)")
                    return None
                if int(value) > limit:
                    # RFC 1870 §6.1: 552 when the declared size is over the fixed limit.
                    self._reply(552, "5.3.4", f"message size exceeds the limit of {limit} octets")
                    return None
            elif keyword == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    self._reply(501, "5.5.4", "BODY= must be 7BIT or 8BITMIME (RFC 6152)")
                    return None
            else:
                # RFC 5321 §4.1.1.11: a parameter we did not offer.
                self._reply(555, "5.5.4", f"parameter {keyword} not supported")
                return None
        self._transaction = _Transaction(sender)
        self._reply(250, "2.1.0", "sender OK")
        return None

    def do_RCPT(self, argument: str) -> Outcome:
        """RFC 2033 §4.2 / RFC 5321 §4.1.1.3: one recipient; unknown users refused here."""
        transaction = self._transaction
        if transaction is None:
            self._reply(503, "5.5.1", "need MAIL before RCPT")
            return None
        try:
            address, parameters = parse_path_argument(argument, "TO")
        except AddressError as e:
            self._reply(501, "5.5.4", str(e))
            return None
        if parameters:
            self._reply(555, "5.5.4", f"parameter {next(iter(parameters))} not supported")
            return None
        if not address:
            self._reply(501, "5.1.3", "the recipient address is empty")
            return None
        if len(transaction.recipients) >= self.config.lmtp.max_recipients:
            # RFC 5321 §4.5.3.1.10: 452 and the client sends the rest later.
            self._reply(452, "4.5.3", "too many recipients in this transaction")
            return None
        lmtp = self.config.lmtp
        lookup = self.factory.lookup_user
        d = self.factory.run_in_thread(resolve, address, lmtp, lookup)

        def found(recipient: Recipient | None) -> None:
            if self._closed:
                return
            if recipient is None:
                self._reply(550, "5.1.1", f"<{address}>: no such user here")
                return
            if self._transaction is transaction:
                transaction.recipients.append(recipient)
            self._reply(250, "2.1.5", f"<{address}> recipient OK")

        def failed(failure: Failure) -> None:
            if self._closed:
                return
            if failure.check(AddressError):
                self._reply(550, "5.1.2", f"<{address}>: {failure.value}")
                return
            if not failure.check(BackendUnavailable):
                log.failure("looking up recipient {address}", failure, address=address)
            self._reply(451, "4.3.0", f"<{address}>: cannot look up users now, try again later")

        return d.addCallbacks(found, failed)

    def do_DATA(self, argument: str) -> Outcome:
        """RFC 2033 §4.2: read the message, then one reply per accepted recipient."""
        if argument:
            self._reply(501, "5.5.4", "DATA takes no argument")
            return None
        if self._transaction is None:
            self._reply(503, "5.5.1", "need MAIL before DATA")
            return None
        if not self._transaction.recipients:
            # RFC 2033 §4.2 / RFC 2920 §3.1: no valid recipients, no DATA.
            self._reply(503, "5.5.1", "no valid recipients")
            return None
        self._in_data = True
        self._body = bytearray(b"\n")
        self._body_scanned = 0
        self._body_size = 0
        self._body_too_big = False
        self._reply(354, None, "send the message, end with <CRLF>.<CRLF>")
        return None

    def do_RSET(self, argument: str) -> Outcome:
        """RFC 5321 §4.1.1.5: drop the transaction, keep the LHLO."""
        self._transaction = None
        self._reply(250, "2.0.0", "reset")
        return None

    def do_NOOP(self, argument: str) -> Outcome:
        """RFC 5321 §4.1.1.9."""
        self._reply(250, "2.0.0", "OK")
        return None

    def do_QUIT(self, argument: str) -> Outcome:
        """RFC 5321 §4.1.1.10: 221, then close."""
        self._reply(221, "2.0.0", f"{self.config.server.hostname} closing connection")
        self._close()
        return None

    def do_VRFY(self, argument: str) -> Outcome:
        """RFC 5321 §3.5.3: we do not tell who exists; 252 says "send it and see"."""
        self._reply(252, "2.5.0", "cannot VRFY users; send the message and RCPT will tell")
        return None

    def do_EXPN(self, argument: str) -> Outcome:
        """RFC 5321 §3.5.3: no mailing lists to expand here."""
        self._reply(502, "5.5.1", "EXPN is not supported")
        return None

    def do_HELP(self, argument: str) -> Outcome:
        """RFC 5321 §4.1.1.8."""
        self._reply(214, "2.0.0", "commands: LHLO MAIL RCPT DATA RSET NOOP QUIT VRFY (RFC 2033)")
        return None

    def _not_offered(self, argument: str) -> Outcome:
        self._bad_command(502, "5.5.1", "command not offered on this LMTP server")
        return None

    do_BDAT = do_STARTTLS = do_AUTH = do_TURN = _not_offered

    # --- DATA ---------------------------------------------------------------------------

    def _take_data(self) -> bool:
        """Move input into the body until the final "."; True once it is complete."""
        body = self._body
        body += self._buffer
        self._body_size += len(self._buffer)
        self._buffer.clear()
        match = _END_OF_DATA.search(body, max(0, self._body_scanned - 3))
        if match is None:
            self._body_scanned = len(body)
            limit = self.config.lmtp.max_message_size
            if self._body_size > limit + 4:
                # RFC 1870 §6.3: too big; read on to the end, dropping what comes,
                # keeping only enough to see the final "." arrive.
                self._body_too_big = True
                tail = bytes(body[-4:])
                body.clear()
                body += tail
                self._body_scanned = len(body)
            return False
        rest = body[match.end() :]
        self._buffer[:0] = rest
        self._body_size -= len(rest)
        del body[match.start() + 1 :]
        del body[:1]  # the "\n" put in front
        self._body = bytearray()
        self._in_data = False
        # The only reference to the octets is the argument: the callee can let
        # them go once it has made its LF copy (memory: see the module docstring).
        outcome = self._data_complete(_take_bytes(body))
        if outcome is not None:
            self._busy = True
            outcome.addErrback(self._internal_error)
            outcome.addBoth(self._finished)
        return True

    def _data_complete(self, raw: bytes) -> Outcome:
        transaction = self._transaction
        self._transaction = None  # RFC 5321 §4.1.1.4: the transaction ends here
        assert transaction is not None
        limit = self.config.lmtp.max_message_size
        if self._body_too_big or len(raw) > limit:
            self._reply_each(
                transaction, 552, "5.3.4", f"message exceeds the limit of {limit} octets"
            )
            self._log_all(transaction, self._body_size, "too big")
            return None
        line_limit = self.config.limits.max_line_length
        if re.search(rb"[^\n]{%d}" % (line_limit + 2), raw):
            # RFC 5321 §4.5.3.1.6 sets 1000 octets; we take up to the configured
            # limit (with its CRLF) and refuse the message beyond it.
            self._reply_each(
                transaction, 554, "5.6.0", f"a line of the message is over {line_limit} octets"
            )
            self._log_all(transaction, len(raw), "line too long")
            return None
        # LF line ends as the store keeps them (its own conversion is then a
        # no-op that copies nothing); dot-unstuffing only if a line has a dot.
        message = raw.replace(b"\r\n", b"\n")
        del raw
        if message.startswith(b".") or b"\n." in message:
            message = _DOT_STUFFED.sub(b"", message)
        return self._deliver_all(transaction, message)

    def _reply_each(self, transaction: _Transaction, code: int, enhanced: str, text: str) -> None:
        for recipient in transaction.recipients:
            self._reply(code, enhanced, f"<{recipient.address}> {text}")

    def _log_all(self, transaction: _Transaction, size: int, status: str) -> None:
        for recipient in transaction.recipients:
            _log_delivery(transaction.sender, recipient, size, None, status)

    def _deliver_all(self, transaction: _Transaction, message: bytes) -> Deferred[None]:
        """Deliver to each recipient in RCPT order, replying as each one is done."""
        recipients = list(transaction.recipients)

        def next_one(_: object = None) -> Deferred[None] | None:
            if not recipients or self._closed:
                return None
            recipient = recipients.pop(0)
            d = self._deliver_one(transaction.sender, recipient, message)
            d.addCallback(next_one)
            return d

        d: Deferred[None] = succeed(None)
        d.addCallback(next_one)
        return d

    def _deliver_one(self, sender: str, recipient: Recipient, message: bytes) -> Deferred[None]:
        copy = trace_headers(sender, recipient.address) + message
        size = len(copy)
        lmtp = self.config.lmtp
        folder = recipient.detail if lmtp.detail_mailbox == "folder" else None
        try:
            account = self.context.store.account(recipient.user)
            d = store_copy(account, folder, copy)
        except StoreError:
            d = fail()

        def stored(result: tuple[Any, Any]) -> None:
            mailbox, record = result
            _log_delivery(sender, recipient, size, record.uid, "stored", mailbox.name)
            # RFC 2033 §4.2: this recipient's reply, only now that it is durable.
            self._reply(250, "2.0.0", f"<{recipient.address}> delivered as UID {record.uid}")

        def failed(failure: Failure) -> None:
            if failure.check(OverQuota):
                if self.config.quota.over_quota == "tempfail":
                    code, enhanced = 452, "4.2.2"
                else:
                    code, enhanced = 552, "5.2.2"  # RFC 3463 X.2.2 mailbox full
                _log_delivery(sender, recipient, size, None, "over quota")
                self._reply(code, enhanced, f"<{recipient.address}> mailbox is over quota")
                return
            if failure.check(StoreError):
                why = str(failure.value)
                _log_delivery(sender, recipient, size, None, f"temporary failure: {why}")
            else:
                log.failure("delivery to {user} broke", failure, user=recipient.user)
                _log_delivery(sender, recipient, size, None, "temporary failure: internal error")
            # RFC 3463 X.3.0: the mail system failed; the MTA keeps the message.
            self._reply(
                451, "4.3.0", f"<{recipient.address}> could not be stored now, try again later"
            )

        return d.addCallbacks(stored, failed)


def _take_bytes(buffer: bytearray) -> bytes:
    """The octets of *buffer* as bytes, emptying it (one copy, never two at once)."""
    data = bytes(buffer)
    buffer.clear()
    return data


def _log_delivery(
    sender: str,
    recipient: Recipient,
    size: int,
    uid: int | None,
    status: str,
    mailbox: str = "-",
) -> None:
    """One line per recipient and message; never any of its content."""
    log.info(
        "lmtp delivery: from=<{sender}> to=<{rcpt}> user={user} mailbox={mailbox} "
        "size={size} uid={uid} status={status}",
        sender=sender,
        rcpt=recipient.address,
        user=recipient.user,
        mailbox=mailbox,
        size=size,
        uid=uid if uid is not None else "-",
        status=status,
    )


class LMTPFactory(Factory):
    """Makes LMTPServer sessions; holds what they share (users file, thread runner)."""

    def __init__(
        self,
        context: ServerContext,
        run_in_thread: RunInThread = deferToThread,
        lookup_user: Callable[[str], str | None] | None = None,
    ) -> None:
        self.context = context
        self.run_in_thread = run_in_thread
        checker = PasswdFileChecker(context.config.server.users_file)

        def lookup(name: str) -> str | None:
            # Blocking (stats the file, re-reads it when changed): a thread runs it.
            entry = checker.lookup(name)
            return entry.user if entry is not None else None

        self.lookup_user = lookup_user or lookup

    def buildProtocol(self, addr: Any) -> LMTPServer:
        return LMTPServer(self)


def make_factory(context: ServerContext, implicit_tls: bool) -> Factory:
    """The factory for an LMTP listener (TCP or ``unix:``); LMTP has no TLS here."""
    if implicit_tls:
        raise ValueError("LMTP has no implicit-TLS listener")
    return LMTPFactory(context)


__all__ = ["LMTPFactory", "LMTPServer", "make_factory"]
