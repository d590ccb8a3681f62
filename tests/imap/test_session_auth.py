"""The not-authenticated state over a StringTransport: greeting, CAPABILITY, STARTTLS,
LOGIN, AUTHENTICATE (RFC 3501 §6.1-§6.2, RFC 4959, RFC 5530), limits and timers."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from mailaccess.imap import commands, session
from tests.imap.conversation import LOOPBACK, NON_LOOPBACK, IMAPConversation, store_context

CAPS = (
    "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN"
    " SPECIAL-USE"
)
TLS = object()  # stands for a TLS context factory: the transport only records it


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PLAIN_ALICE = b64(b"\0alice\0secret")
PLAIN_ALICE_AUTHZ = b64(b"alice\0alice\0secret")
PLAIN_WRONG = b64(b"\0alice\0nope")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def context(tmp_path: Path, clock: Clock) -> Any:
    return store_context(tmp_path, clock)


def test_greeting_carries_capabilities_rfc3501_7_2_1(context: Any) -> None:
    conv = IMAPConversation(context, peer=LOOPBACK)
    assert conv.greeting == (
        f"* OK [CAPABILITY {CAPS} AUTH=PLAIN AUTH=LOGIN] mailaccess IMAP4rev1 ready\r\n".encode()
    )


def test_capability_changes_at_login_rfc3501_6_1_1(context: Any) -> None:
    conv = IMAPConversation(context, peer=LOOPBACK)
    conv.exchange(
        f"""
        C: a CAPABILITY
        S: * CAPABILITY {CAPS} AUTH=PLAIN AUTH=LOGIN
        S: a OK CAPABILITY completed
        C: b LOGIN alice secret
        S: b OK [CAPABILITY {CAPS}] Logged in
        C: c CAPABILITY
        S: * CAPABILITY {CAPS}
        S: c OK CAPABILITY completed
        """
    )


def test_plaintext_refused_without_tls_rfc3501_6_2_3(tmp_path: Path) -> None:
    context = store_context(tmp_path, allow_plaintext="never", tls=TLS)
    conv = IMAPConversation(context, peer=LOOPBACK)
    conv.exchange(
        f"""
        C: a CAPABILITY
        S: * CAPABILITY {CAPS} STARTTLS LOGINDISABLED
        S: a OK CAPABILITY completed
        C: b LOGIN alice secret
        S: b NO [PRIVACYREQUIRED] Plaintext authentication is disallowed on an unencrypted connection; use STARTTLS first
        C: c AUTHENTICATE PLAIN {PLAIN_ALICE}
        S: c NO [PRIVACYREQUIRED] Plaintext authentication is disallowed on an unencrypted connection; use STARTTLS first
        """  # noqa: E501
    )
    assert context.authenticator.attempts == []  # type: ignore[attr-defined]


def test_loopback_policy_refuses_other_peers(context: Any) -> None:
    conv = IMAPConversation(context, peer=NON_LOOPBACK)
    assert b"LOGINDISABLED" in conv.greeting
    assert b"AUTH=PLAIN" not in conv.greeting


def test_starttls_then_login_rfc3501_6_2_1(tmp_path: Path) -> None:
    context = store_context(tmp_path, allow_plaintext="never", tls=TLS)
    conv = IMAPConversation(context, peer=NON_LOOPBACK)
    conv.exchange(
        f"""
        C: a STARTTLS
        S: a OK Begin TLS negotiation now
        C: b CAPABILITY
        S: * CAPABILITY {CAPS} AUTH=PLAIN AUTH=LOGIN
        S: b OK CAPABILITY completed
        C: c STARTTLS
        S: c BAD TLS is already active
        C: d LOGIN alice secret
        S: d OK [CAPABILITY {CAPS}] Logged in
        """
    )
    assert conv.transport.tls_context is TLS


def test_starttls_injection_discards_pipelined_commands_rfc3501_6_2_1(tmp_path: Path) -> None:
    context = store_context(tmp_path, tls=TLS)
    conv = IMAPConversation(context, peer=NON_LOOPBACK)
    conv.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
    assert conv.take() == b"a OK Begin TLS negotiation now\r\n"
    assert conv.transport.tls_context is TLS
    # b was sent in plaintext behind STARTTLS: never answered, inside TLS either.
    conv.send(b"c NOOP\r\n")
    assert conv.take() == b"c OK NOOP completed\r\n"


def test_starttls_unavailable_without_certificate(context: Any) -> None:
    conv = IMAPConversation(context)
    assert b"STARTTLS" not in conv.greeting
    conv.exchange(
        """
        C: a STARTTLS
        S: a NO STARTTLS is not available: the server has no certificate
        """
    )


def test_login_failure_rfc5530_authenticationfailed(context: Any) -> None:
    conv = IMAPConversation(context)
    conv.exchange(
        """
        C: a LOGIN alice wrong
        S: a NO [AUTHENTICATIONFAILED] Authentication failed.
        C: b SELECT INBOX
        S: b BAD SELECT is not valid in the not authenticated state
        """
    )


def test_login_backend_down_rfc5530_unavailable(context: Any) -> None:
    context.authenticator.backend_down = True
    conv = IMAPConversation(context)
    conv.exchange(
        """
        C: a LOGIN alice secret
        S: a NO [UNAVAILABLE] Authentication is temporarily unavailable; try again later.
        """
    )


def test_authenticate_plain_with_initial_response_rfc4959(context: Any) -> None:
    conv = IMAPConversation(context)
    conv.exchange(
        f"""
        C: a AUTHENTICATE PLAIN {PLAIN_ALICE}
        S: a OK [CAPABILITY {CAPS}] Logged in
        """
    )


def test_authenticate_plain_challenge_rfc3501_6_2_2(context: Any) -> None:
    conv = IMAPConversation(context)
    conv.exchange(
        f"""
        C: a AUTHENTICATE PLAIN
        S: +<SP>
        C: {PLAIN_ALICE_AUTHZ}
        S: a OK [CAPABILITY {CAPS}] Logged in
        """
    )


def test_authenticate_login_mechanism(context: Any) -> None:
    conv = IMAPConversation(context)
    conv.exchange(
        f"""
        C: a AUTHENTICATE LOGIN
        S: + VXNlcm5hbWU6
        C: {b64(b"alice")}
        S: + UGFzc3dvcmQ6
        C: {b64(b"secret")}
        S: a OK [CAPABILITY {CAPS}] Logged in
        """
    )


def test_authenticate_login_with_initial_response(context: Any) -> None:
    conv = IMAPConversation(context)
    conv.exchange(
        f"""
        C: a AUTHENTICATE LOGIN {b64(b"alice")}
        S: + UGFzc3dvcmQ6
        C: {b64(b"secret")}
        S: a OK [CAPABILITY {CAPS}] Logged in
        """
    )


def test_authenticate_cancel_is_bad_rfc3501_6_2_2(context: Any) -> None:
    conv = IMAPConversation(context)
    conv.exchange(
        """
        C: a AUTHENTICATE PLAIN
        S: +<SP>
        C: *
        S: a BAD AUTHENTICATE cancelled
        C: b NOOP
        S: b OK NOOP completed
        """
    )


def test_authenticate_bad_base64_and_bad_password(context: Any) -> None:
    conv = IMAPConversation(context)
    conv.exchange(
        f"""
        C: a AUTHENTICATE PLAIN
        S: +<SP>
        C: !!!
        S: a BAD AUTHENTICATE failed: response is not valid base64
        C: b AUTHENTICATE PLAIN {PLAIN_WRONG}
        S: b NO [AUTHENTICATIONFAILED] Authentication failed.
        C: c AUTHENTICATE CRAM-MD5
        S: c NO [CANNOT] unsupported authentication mechanism CRAM-MD5
        """
    )


def test_id_enable_namespace_rfc2971_rfc5161_rfc2342(context: Any) -> None:
    conv = IMAPConversation(context)
    conv.exchange(
        """
        C: a ID ("name" "test" "version" "1")
        S: * ID ("name" "mailaccess" "version" "0.1.0")
        S: a OK ID completed
        C: b ENABLE CONDSTORE
        S: b BAD ENABLE is not valid in the not authenticated state
        """
    )
    conv.login()
    conv.exchange(
        """
        C: d ENABLE CONDSTORE UTF8=ACCEPT
        S: * ENABLED
        S: d OK ENABLE completed
        C: e NAMESPACE
        S: * NAMESPACE (("" ".")) NIL NIL
        S: e OK NAMESPACE completed
        """
    )


def test_logout_rfc3501_6_1_3(context: Any) -> None:
    conv = IMAPConversation(context)
    conv.exchange(
        """
        C: a LOGOUT
        S: * BYE Logging out
        S: a OK LOGOUT completed
        """
    )
    assert conv.closed


def test_parse_errors_are_bad_and_counted(tmp_path: Path) -> None:
    context = store_context(tmp_path, max_bad_commands=3)
    conv = IMAPConversation(context)
    conv.exchange(
        """
        C: a FROB
        S: a BAD unknown command FROB
        C: b NOOP
        S: b OK NOOP completed
        C: c SELECT
        S: ~c BAD .*
        C: d CHECK
        S: d BAD CHECK is not valid in the not authenticated state
        S: * BYE Too many invalid commands; closing the connection
        """
    )
    assert conv.closed


def test_too_long_line_is_bad_toobig_and_session_survives(tmp_path: Path) -> None:
    context = store_context(tmp_path, max_line_length=100)
    conv = IMAPConversation(context)
    conv.send(b"a NOOP " + b"x" * 200 + b"\r\nb NOOP\r\n")
    assert conv.take() == (
        b"a BAD [TOOBIG] line longer than 100 octets\r\nb OK NOOP completed\r\n"
    )


def test_autologout_after_30_minutes_rfc3501_5_4(context: Any, clock: Clock) -> None:
    conv = IMAPConversation(context)
    clock.advance(29 * 60)
    conv.exchange(
        """
        C: a NOOP
        S: a OK NOOP completed
        """
    )
    clock.advance(29 * 60)
    assert not conv.closed
    clock.advance(61)
    assert conv.take() == b"* BYE Autologout; idle for too long\r\n"
    assert conv.closed


def test_unexpected_error_is_serverbug_not_traceback(context: Any, monkeypatch: Any) -> None:
    def broken(server: Any, command: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setitem(session.command_table(), commands.Noop, (frozenset(session.State), broken))
    conv = IMAPConversation(context)
    conv.exchange(
        """
        C: a NOOP
        S: a NO [SERVERBUG] NOOP failed: internal server error
        """
    )
    assert not conv.closed


def test_literal_before_login_is_limited(tmp_path: Path) -> None:
    context = store_context(tmp_path, max_line_length=1000)
    conv = IMAPConversation(context)
    conv.exchange(
        """
        C: a LOGIN {5000}
        S: a BAD [TOOBIG] literals before login are limited to 1000 octets
        C: b LOGIN {5}
        S: + Ready for literal data
        C: alice {6}
        S: + Ready for literal data
        C: secret
        S: ~b OK \\[CAPABILITY .*\\] Logged in
        """
    )
