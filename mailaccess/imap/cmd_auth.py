"""Not-authenticated commands: STARTTLS, AUTHENTICATE, LOGIN (RFC 3501 §6.2).

Passwords travel only over TLS unless ``[auth] allow_plaintext`` says otherwise
(RFC 3501 §6.2.3, LOGINDISABLED; RFC 8314).  The failed-login delay happens
inside the authenticator, on the reactor's clock.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from mailaccess.auth.login import LoginFailed
from mailaccess.auth.sasl import (
    CANCEL,
    LoginExchange,
    SASLError,
    decode_response,
    parse_plain,
)
from mailaccess.imap import commands as c
from mailaccess.imap.response import continuation, tagged
from mailaccess.imap.session import Outcome, Reply, State

if TYPE_CHECKING:
    from mailaccess.imap.server import IMAPServer

__all__ = ["authenticate", "login", "starttls"]

_PRIVACY_TEXT = "Plaintext authentication is disallowed on an unencrypted connection"


def _privacy_required(server: IMAPServer) -> Reply:
    # RFC 5530 PRIVACYREQUIRED: the client can fix this by STARTTLS or IMAPS.
    hint = "use STARTTLS first" if server.starttls_available() else "use the IMAPS port"
    return Reply.no(f"{_PRIVACY_TEXT}; {hint}", "PRIVACYREQUIRED")


def starttls(server: IMAPServer, command: c.StartTLS) -> Outcome:
    """RFC 3501 §6.2.1: OK, then TLS; anything pipelined behind STARTTLS is dropped."""
    if server.tls:
        return Reply.bad("TLS is already active")
    if server.context.tls is None:
        return Reply.no("STARTTLS is not available: the server has no certificate")
    server.send(tagged(command.tag, "OK", "Begin TLS negotiation now"))
    server.flush_output()
    # The STARTTLS command-injection fix (CVE-2011-0411 and kin): octets that
    # arrived after STARTTLS were sent in plaintext, perhaps by a man in the
    # middle; they must never be executed inside the TLS session.
    server.framer.discard_buffered()
    server.transport.startTLS(server.context.tls)
    server.tls = True
    return Reply.answered()


def login(server: IMAPServer, command: c.Login) -> Outcome:
    """RFC 3501 §6.2.3 LOGIN userid password."""
    if not server.plaintext_allowed():
        return _privacy_required(server)
    return _login(server, UsernamePassword(command.userid, command.password))


def authenticate(server: IMAPServer, command: c.Authenticate) -> Outcome:
    """RFC 3501 §6.2.2 AUTHENTICATE PLAIN / LOGIN, with SASL-IR (RFC 4959)."""
    mechanism = command.mechanism.upper()
    if mechanism not in ("PLAIN", "LOGIN"):
        return Reply.no(f"unsupported authentication mechanism {mechanism[:20]}", "CANNOT")
    if not server.plaintext_allowed():
        return _privacy_required(server)
    done: Deferred[Reply] = Deferred()

    def finish(outcome: Outcome) -> None:
        server.wait_for_lines(None)
        if isinstance(outcome, Reply):
            done.callback(outcome)
        else:
            outcome.chainDeferred(done)

    def ask(challenge: bytes, step: Any) -> None:
        # RFC 3501 §7.5: "+" SP base64; the client's next line answers it.
        server.send(continuation(challenge, base64_data=True))
        server.flush_output()

        def answered(line: bytes) -> None:
            if line == CANCEL:
                # RFC 3501 §6.2.2: a "*" cancels; the server MUST answer BAD.
                finish(Reply.bad("AUTHENTICATE cancelled"))
                return
            try:
                octets = decode_response(line)
            except SASLError as error:
                finish(Reply.bad(f"AUTHENTICATE failed: {error}"))
                return
            step(octets)

        server.wait_for_lines(answered)

    def plain(octets: bytes) -> None:
        try:
            response = parse_plain(octets)
        except SASLError as error:
            finish(Reply.no(f"AUTHENTICATE failed: {error}", "AUTHENTICATIONFAILED"))
            return
        finish(_login(server, response.credentials()))

    def login_step(exchange: LoginExchange, octets: bytes | None) -> None:
        try:
            if octets is not None:
                # LoginExchange takes base64 lines; ours are decoded already.
                exchange.respond(base64.b64encode(octets) or b"=")
        except SASLError as error:
            finish(Reply.no(f"AUTHENTICATE failed: {error}", "AUTHENTICATIONFAILED"))
            return
        if exchange.done:
            finish(_login(server, exchange.credentials()))
            return
        ask(
            base64.b64decode(exchange.challenge()),
            lambda more: login_step(exchange, more),
        )

    if mechanism == "PLAIN":
        if command.initial_response is None:
            ask(b"", plain)
        else:
            plain(command.initial_response)
    else:
        login_step(LoginExchange(), command.initial_response)
    return done


def _login(server: IMAPServer, credentials: Any) -> Deferred[Reply]:
    d: Deferred[Any] = server.context.authenticator.login(credentials, server.peer_host)

    def succeeded(result: Any) -> Reply:
        if server.state is not State.NOT_AUTHENTICATED:
            # The client went away while the password was checked.
            result.logout()
            return Reply.no("session ended")
        server.logged_in(result)
        # RFC 3501 §7.2.1: the capabilities change at login; say them now.
        return Reply.ok("Logged in", server.capability_code())

    def failed(failure: Failure) -> Reply:
        failure.trap(LoginFailed)
        error: Any = failure.value
        # RFC 5530 §3: AUTHENTICATIONFAILED or UNAVAILABLE.
        return Reply.no(str(error), error.imap_code)

    return d.addCallbacks(succeeded, failed)
