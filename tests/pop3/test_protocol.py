"""The POP3 session over a StringTransport: every command, state and error path.

Transcripts are exact: ``S:`` lines are compared octet for octet with what the
server wrote (see conversation.py).  The store is the in-memory fake of
tests/pop3/fakes.py, which honours the store contract.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from mailaccess.pop3.server import POP3Factory
from mailaccess.pop3.stream import CHUNK_SIZE
from mailaccess.store.model import DELETED, SEEN, MailboxReset, StoreUnavailable
from tests.pop3.conversation import LOOPBACK, Conversation, make_context, user_with_mail

MSG1 = b"From: a@example.org\nSubject: one\n\nHello\n.dot line\n"
MSG2 = b"From: b@example.org\nSubject: two\n\nLine 1\nLine 2\nLine 3\n"
SIZE1 = len(MSG1) + MSG1.count(b"\n")  # 55 + 5 = CRLF octets
SIZE2 = len(MSG2) + MSG2.count(b"\n")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PLAIN_ALICE = b64(b"\0alice\0secret")
PLAIN_ALICE_AS_ALICE = b64(b"alice\0alice\0secret")
PLAIN_ALICE_AS_BOB = b64(b"bob\0alice\0secret")
PLAIN_ALICE_WRONG = b64(b"\0alice\0wrong")


@pytest.fixture
def context() -> Any:
    return make_context()


@pytest.fixture
def inbox(context: Any) -> Any:
    return user_with_mail(context, MSG1, MSG2)


@pytest.fixture
def session(context: Any, inbox: Any) -> Conversation:
    """A logged-in session on loopback (where plaintext login is allowed by default)."""
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.login()
    return conversation


# --- AUTHORIZATION state -----------------------------------------------------------------


def test_greeting_carries_apop_timestamp_rfc1939_4(context: Any) -> None:
    first = Conversation(context).greeting
    second = Conversation(context).greeting
    pattern = rb"\+OK mailaccess POP3 server ready <[0-9a-f]{16}\.\d+@localhost>\r\n"
    assert re.fullmatch(pattern, first)
    assert first != second  # RFC 1939 §7: the timestamp must differ per greeting


def test_capa_before_tls_on_internet_hides_plaintext_logins_rfc2449_5(context: Any) -> None:
    context.tls = object()
    Conversation(context).exchange("""
        C: CAPA
        S: +OK capability list follows
        S: TOP
        S: UIDL
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: STLS
        S: IMPLEMENTATION mailaccess
        S: .
    """)


def test_capa_on_loopback_offers_user_and_sasl_rfc2449_5(context: Any) -> None:
    Conversation(context, peer=LOOPBACK).exchange("""
        C: CAPA
        S: +OK capability list follows
        S: TOP
        S: UIDL
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: USER
        S: SASL PLAIN LOGIN
        S: IMPLEMENTATION mailaccess
        S: .
    """)


def test_capa_in_transaction_lists_no_login_capabilities_rfc2449_5(session: Any) -> None:
    session.exchange("""
        C: CAPA
        S: +OK capability list follows
        S: TOP
        S: UIDL
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: IMPLEMENTATION mailaccess
        S: .
    """)


def test_capa_lists_expire_and_login_delay_when_configured_rfc2449_6_7() -> None:
    context = make_context(expire="NEVER", login_delay=900, allow_plaintext="never")
    Conversation(context, peer=LOOPBACK).exchange("""
        C: CAPA
        S: +OK capability list follows
        S: TOP
        S: UIDL
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: EXPIRE NEVER
        S: LOGIN-DELAY 900
        S: IMPLEMENTATION mailaccess
        S: .
    """)


def test_plaintext_policy_always_allows_user_anywhere() -> None:
    context = make_context(allow_plaintext="always")
    user_with_mail(context, MSG1)
    Conversation(context).exchange(f"""
        C: USER alice
        C: PASS secret
        S: +OK send PASS
        S: +OK logged in, maildrop has 1 messages ({SIZE1} octets)
    """)


def test_user_refused_before_tls_on_internet_rfc2595_4(context: Any, inbox: Any) -> None:
    context.tls = object()
    conversation = Conversation(context)
    conversation.exchange("""
        C: USER alice
        S: -ERR [AUTH] plaintext login needs an encrypted connection: use STLS first
        C: PASS secret
        S: -ERR [AUTH] plaintext login needs an encrypted connection: use STLS first
        C: AUTH PLAIN
        S: -ERR [AUTH] plaintext login needs an encrypted connection: use STLS first
    """)
    assert conversation.auth.attempts == []  # the password never reached the checker


def test_user_refused_without_tls_configured_points_at_pop3s(inbox: Any) -> None:
    context = make_context(allow_plaintext="never")
    Conversation(context, peer=LOOPBACK).exchange("""
        C: USER alice
        S: -ERR [AUTH] plaintext login needs an encrypted connection: use the POP3S port
    """)


def test_user_pass_login_rfc1939_7(context: Any, inbox: Any) -> None:
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.exchange(f"""
        C: USER alice
        S: +OK send PASS
        C: PASS secret
        S: +OK logged in, maildrop has 2 messages ({SIZE1 + SIZE2} octets)
    """)
    assert conversation.auth.attempts == [("alice", LOOPBACK)]


def test_password_may_contain_spaces_rfc1939_7(context: Any) -> None:
    user_with_mail(context, user="bob", password="two words ")
    Conversation(context, peer=LOOPBACK).exchange("""
        C: USER bob
        C: PASS two words<SP>
        S: +OK send PASS
        S: +OK logged in, maildrop has 0 messages (0 octets)
    """)


def test_wrong_password_answers_auth_code_and_stays_in_authorization_rfc3206_5(
    context: Any, inbox: Any
) -> None:
    Conversation(context, peer=LOOPBACK).exchange(f"""
        C: USER alice
        C: PASS wrong
        S: +OK send PASS
        S: -ERR [AUTH] Authentication failed.
        C: PASS secret
        S: -ERR send USER first
        C: STAT
        S: -ERR STAT is not valid in the AUTHORIZATION state
        C: USER alice
        C: PASS secret
        S: +OK send PASS
        S: +OK logged in, maildrop has 2 messages ({SIZE1 + SIZE2} octets)
    """)


def test_backend_trouble_answers_sys_temp_rfc3206_4(context: Any, inbox: Any) -> None:
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.auth.backend_down = True
    conversation.exchange("""
        C: USER alice
        C: PASS secret
        S: +OK send PASS
        S: -ERR [SYS/TEMP] Authentication is temporarily unavailable; try again later.
    """)


def test_maildrop_that_cannot_open_answers_sys_temp_and_logs_out(context: Any) -> None:
    user_with_mail(context)
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.auth.accounts["alice"].fail_open = StoreUnavailable("disk full")
    conversation.exchange("""
        C: USER alice
        C: PASS secret
        S: +OK send PASS
        S: -ERR [SYS/TEMP] cannot open the maildrop: disk full
    """)
    assert conversation.auth.logouts == ["alice"]
    assert conversation.server.state == "AUTHORIZATION"


def test_apop_login_rfc1939_7(context: Any, inbox: Any) -> None:
    conversation = Conversation(context)  # APOP sends no password: fine before TLS
    timestamp = re.search(rb"<[^>]+>", conversation.greeting)
    assert timestamp is not None
    digest = hashlib.md5(timestamp.group(0) + b"secret").hexdigest()
    wrong = hashlib.md5(b"<other@host>secret").hexdigest()
    conversation.exchange(f"""
        C: APOP alice {wrong}
        S: -ERR [AUTH] Authentication failed.
        C: APOP alice {digest}
        S: +OK logged in, maildrop has 2 messages ({SIZE1 + SIZE2} octets)
    """)


def test_apop_with_malformed_digest_is_a_bad_command_rfc1939_7(context: Any) -> None:
    Conversation(context).exchange("""
        C: APOP alice
        S: -ERR APOP needs a name and a 32-digit hex MD5 digest
        C: APOP alice xyz
        S: -ERR APOP needs a name and a 32-digit hex MD5 digest
    """)


def test_auth_plain_with_initial_response_rfc5034_4(context: Any, inbox: Any) -> None:
    Conversation(context, peer=LOOPBACK).exchange(f"""
        C: AUTH PLAIN {PLAIN_ALICE}
        S: +OK logged in, maildrop has 2 messages ({SIZE1 + SIZE2} octets)
    """)


def test_auth_plain_without_initial_response_gets_empty_challenge_rfc5034_4(
    context: Any, inbox: Any
) -> None:
    Conversation(context, peer=LOOPBACK).exchange(f"""
        C: auth plain
        S: +<SP>
        C: {PLAIN_ALICE_AS_ALICE}
        S: +OK logged in, maildrop has 2 messages ({SIZE1 + SIZE2} octets)
    """)


def test_auth_plain_rejects_foreign_authzid_and_bad_input_rfc4616_2(
    context: Any, inbox: Any
) -> None:
    Conversation(context, peer=LOOPBACK).exchange(f"""
        C: AUTH PLAIN {PLAIN_ALICE_AS_BOB}
        S: -ERR acting as another user (authorization identity) is not allowed
        C: AUTH PLAIN {b64(b"no separators")}
        S: -ERR PLAIN message must be authzid NUL authcid NUL password
        C: AUTH PLAIN =
        S: -ERR PLAIN message must be authzid NUL authcid NUL password
        C: AUTH PLAIN not*base64
        S: -ERR response is not valid base64
        C: AUTH PLAIN
        S: +<SP>
        C: *
        S: -ERR authentication cancelled by the client
        C: AUTH PLAIN {PLAIN_ALICE_WRONG}
        S: -ERR [AUTH] Authentication failed.
    """)


def test_auth_login_two_steps_rfc5034_4(context: Any, inbox: Any) -> None:
    Conversation(context, peer=LOOPBACK).exchange(f"""
        C: AUTH LOGIN
        S: + VXNlcm5hbWU6
        C: {b64(b"alice")}
        S: + UGFzc3dvcmQ6
        C: {b64(b"secret")}
        S: +OK logged in, maildrop has 2 messages ({SIZE1 + SIZE2} octets)
    """)


def test_auth_login_with_initial_response_and_cancel_rfc5034_4(context: Any, inbox: Any) -> None:
    Conversation(context, peer=LOOPBACK).exchange(f"""
        C: AUTH LOGIN {b64(b"alice")}
        S: + UGFzc3dvcmQ6
        C: *
        S: -ERR authentication cancelled by the client
        C: AUTH LOGIN {b64(b"alice")}
        S: + UGFzc3dvcmQ6
        C: {b64(b"secret")}
        S: +OK logged in, maildrop has 2 messages ({SIZE1 + SIZE2} octets)
    """)


def test_bare_auth_lists_mechanisms_and_unknown_mechanism_is_refused(context: Any) -> None:
    Conversation(context, peer=LOOPBACK).exchange("""
        C: AUTH
        S: +OK SASL mechanisms follow
        S: PLAIN
        S: LOGIN
        S: .
        C: AUTH CRAM-MD5
        S: -ERR unsupported SASL mechanism CRAM-MD5
    """)


def test_quit_in_authorization_closes_rfc1939_4(context: Any) -> None:
    conversation = Conversation(context)
    conversation.exchange("""
        C: QUIT
        S: +OK bye
    """)
    assert conversation.closed


def test_commands_are_case_insensitive_rfc1939_3(session: Any) -> None:
    session.exchange(f"""
        C: stat
        S: +OK 2 {SIZE1 + SIZE2}
        C: NoOp
        S: +OK
    """)


# --- TRANSACTION state ------------------------------------------------------------------


def test_stat_rfc1939_5(session: Any) -> None:
    session.exchange(f"""
        C: STAT
        S: +OK 2 {SIZE1 + SIZE2}
        C: STAT 1
        S: -ERR STAT takes no argument
    """)


def test_list_rfc1939_5(session: Any) -> None:
    session.exchange(f"""
        C: LIST
        S: +OK 2 messages ({SIZE1 + SIZE2} octets)
        S: 1 {SIZE1}
        S: 2 {SIZE2}
        S: .
        C: LIST 2
        S: +OK 2 {SIZE2}
        C: LIST 3
        S: -ERR no such message, only 2 in maildrop
        C: LIST 0
        S: -ERR no such message, only 2 in maildrop
        C: LIST -1
        S: -ERR invalid message number '-1'
        C: LIST one
        S: -ERR invalid message number 'one'
    """)


def test_uidl_is_uidvalidity_and_uid_in_dovecot_format_rfc1939_7(session: Any) -> None:
    # The fake's UIDVALIDITY is 1700000000 = 0x6553f100; UIDs are 1 and 2.
    session.exchange("""
        C: UIDL
        S: +OK unique-id listing follows
        S: 1 000000016553f100
        S: 2 000000026553f100
        S: .
        C: UIDL 2
        S: +OK 2 000000026553f100
        C: UIDL 9
        S: -ERR no such message, only 2 in maildrop
    """)


def test_uidl_format_is_configurable(inbox: Any) -> None:
    context = make_context(uidl_format="%v.%u")
    user_with_mail(context, MSG1)
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.login()
    conversation.exchange("""
        C: UIDL 1
        S: +OK 1 1700000000.1
    """)


def test_retr_sends_crlf_dot_stuffed_message_of_listed_size_rfc1939_5(session: Any) -> None:
    session.send(b"RETR 1\r\n")
    reply = session.take()
    first, _, rest = reply.partition(b"\r\n")
    assert first == f"+OK {SIZE1} octets".encode()
    assert rest == (b"From: a@example.org\r\nSubject: one\r\n\r\nHello\r\n..dot line\r\n.\r\n")
    # LIST's size is the message in CRLF form: all that was sent but the one
    # stuffed "." and the terminating ".CRLF".
    assert len(rest) == SIZE1 + len(b".") + len(b".\r\n")


def test_retr_sets_seen_and_top_does_not_rfc1939_dovecot_rule3(session: Any, inbox: Any) -> None:
    session.exchange("""
        C: TOP 2 0
        S: +OK top of message follows
        S: From: b@example.org
        S: Subject: two
        S:
        S: .
    """)
    assert SEEN not in inbox.flags_of(2)
    session.send(b"RETR 2\r\n")
    session.take()
    assert SEEN in inbox.flags_of(2)


def test_seen_changes_queue_behind_one_in_flight_design_rule3(session: Any, inbox: Any) -> None:
    inbox.hold()  # the first \\Seen change is slow (an fsync, say)
    session.send(b"RETR 1\r\nRETR 2\r\n")
    assert session.take().count(b"octets\r\n") == 2  # RETR did not wait for it
    assert SEEN not in inbox.flags_of(2)  # asked for once the first is done
    inbox.release()
    assert SEEN in inbox.flags_of(1) and SEEN in inbox.flags_of(2)


def test_retr_leaves_seen_alone_when_configured() -> None:
    context = make_context(retr_sets_seen=False)
    inbox = user_with_mail(context, MSG1)
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.login()
    conversation.send(b"RETR 1\r\n")
    assert conversation.take().startswith(b"+OK")
    assert inbox.flags_of(1) == frozenset()


def test_top_sends_header_blank_line_and_n_body_lines_rfc1939_7(session: Any) -> None:
    session.exchange("""
        C: TOP 2 2
        S: +OK top of message follows
        S: From: b@example.org
        S: Subject: two
        S:
        S: Line 1
        S: Line 2
        S: .
        C: TOP 2 99
        S: +OK top of message follows
        S: From: b@example.org
        S: Subject: two
        S:
        S: Line 1
        S: Line 2
        S: Line 3
        S: .
        C: TOP 2
        S: -ERR TOP needs a message number and a number of lines
        C: TOP 2 -1
        S: -ERR TOP needs a message number and a number of lines
        C: TOP 5 1
        S: -ERR no such message, only 2 in maildrop
    """)


def test_dele_hides_message_and_sets_deleted_in_store_rfc1939_5(session: Any, inbox: Any) -> None:
    session.exchange(f"""
        C: DELE 1
        S: +OK message 1 deleted
        C: DELE 1
        S: -ERR message 1 already deleted
        C: RETR 1
        S: -ERR message 1 already deleted
        C: STAT
        S: +OK 1 {SIZE2}
        C: LIST
        S: +OK 1 messages ({SIZE2} octets)
        S: 2 {SIZE2}
        S: .
        C: UIDL
        S: +OK unique-id listing follows
        S: 2 000000026553f100
        S: .
    """)
    # DESIGN.md rule 4: IMAP sees \Deleted at once.
    assert DELETED in inbox.flags_of(1)


def test_rset_clears_this_sessions_deletions_rfc1939_5(session: Any, inbox: Any) -> None:
    session.exchange(f"""
        C: DELE 2
        S: +OK message 2 deleted
        C: RSET
        S: +OK maildrop has 2 messages ({SIZE1 + SIZE2} octets)
        C: LIST 2
        S: +OK 2 {SIZE2}
    """)
    assert DELETED not in inbox.flags_of(2)


def test_quit_expunges_exactly_this_sessions_deletions_rfc1939_6(context: Any, inbox: Any) -> None:
    # A message another client flagged \Deleted is not listed and not expunged by us.
    flagged_elsewhere = inbox.add(b"Subject: three\n\nx\n", flags=[DELETED])
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.login()
    conversation.exchange(f"""
        C: LIST
        S: +OK 2 messages ({SIZE1 + SIZE2} octets)
        S: 1 {SIZE1}
        S: 2 {SIZE2}
        S: .
        C: DELE 1
        S: +OK message 1 deleted
        C: QUIT
        S: +OK bye, 1 deleted, 1 left in maildrop
    """)
    assert conversation.closed
    assert [r.uid for r in inbox.records()] == [2, flagged_elsewhere.uid]
    conversation.drop()  # the transport reports the close: nothing more happens
    assert [r.uid for r in inbox.records()] == [2, flagged_elsewhere.uid]


def test_dropped_connection_acts_as_rset_design_rule4(session: Any, inbox: Any) -> None:
    session.exchange("""
        C: DELE 1
        S: +OK message 1 deleted
    """)
    session.drop()
    assert [r.uid for r in inbox.records()] == [1, 2]
    assert DELETED not in inbox.flags_of(1)
    assert inbox.listeners == []  # the session stopped listening
    assert session.auth.logouts == ["alice"]


def test_failed_expunge_at_quit_reports_and_keeps_messages_rfc1939_6(
    session: Any, inbox: Any
) -> None:
    session.exchange("""
        C: DELE 1
        S: +OK message 1 deleted
    """)
    inbox.fail_next = StoreUnavailable("disk is read-only")
    session.exchange("""
        C: QUIT
        S: -ERR [SYS/TEMP] some deleted messages not removed: disk is read-only
    """)
    assert session.closed
    session.drop()
    assert DELETED not in inbox.flags_of(1)  # not lost, not left \Deleted


def test_dele_that_the_store_refuses_answers_sys_temp(session: Any, inbox: Any) -> None:
    inbox.fail_next = StoreUnavailable("disk full")
    session.exchange(f"""
        C: DELE 1
        S: -ERR [SYS/TEMP] message 1 not deleted: disk full
        C: STAT
        S: +OK 2 {SIZE1 + SIZE2}
    """)


def test_noop_and_authorization_commands_in_transaction_rfc1939_5(session: Any) -> None:
    session.exchange("""
        C: NOOP
        S: +OK
        C: USER bob
        S: -ERR USER is not valid in the TRANSACTION state
        C: STLS
        S: -ERR STLS is not valid in the TRANSACTION state
    """)


def test_message_expunged_elsewhere_keeps_its_number_design_rule5(
    session: Any, inbox: Any
) -> None:
    inbox.expunge_now(1)  # an IMAP session expunged it
    session.exchange(f"""
        C: STAT
        S: +OK 1 {SIZE2}
        C: LIST
        S: +OK 1 messages ({SIZE2} octets)
        S: 2 {SIZE2}
        S: .
        C: RETR 1
        S: -ERR message 1 was removed by another session
        C: TOP 1 0
        S: -ERR message 1 was removed by another session
        C: DELE 1
        S: -ERR message 1 was removed by another session
        C: LIST 2
        S: +OK 2 {SIZE2}
        C: QUIT
        S: +OK bye, 0 deleted, 1 left in maildrop
    """)


def test_uidvalidity_change_voids_the_listing(session: Any, inbox: Any) -> None:
    # The Maildir was replaced under us: no listed UID names the same message.
    for listener in list(inbox.listeners):
        listener(MailboxReset("INBOX", 42))
    session.exchange("""
        C: STAT
        S: +OK 0 0
        C: RETR 1
        S: -ERR message 1 was removed by another session
    """)


def test_new_mail_appears_only_at_next_login_design_rule6(session: Any, inbox: Any) -> None:
    inbox.add(b"Subject: new\n\nnew\n")
    session.exchange(f"""
        C: STAT
        S: +OK 2 {SIZE1 + SIZE2}
    """)


def test_message_deleted_by_us_then_expunged_elsewhere_is_not_expunged_twice(
    session: Any, inbox: Any
) -> None:
    session.exchange("""
        C: DELE 1
        S: +OK message 1 deleted
    """)
    inbox.expunge_now(1)
    session.exchange(f"""
        C: RSET
        S: +OK maildrop has 1 messages ({SIZE2} octets)
        C: QUIT
        S: +OK bye, 0 deleted, 1 left in maildrop
    """)


# --- pipelining, limits, timers ----------------------------------------------------------------


def test_pipelined_commands_are_answered_in_order_rfc2449_6_6(session: Any, inbox: Any) -> None:
    inbox.hold()  # the DELE's flag change stays pending
    session.send(b"DELE 1\r\nSTAT\r\nLIST 1\r\n")
    assert session.take() == b""  # nothing may overtake the DELE's reply
    inbox.release()
    assert session.take() == (
        b"+OK message 1 deleted\r\n"
        + f"+OK 1 {SIZE2}\r\n".encode()
        + b"-ERR message 1 already deleted\r\n"
    )


def pause_after_each_write(session: Conversation) -> None:
    """Make the transport behave like a full socket: pause the producer per write."""
    transport = session.transport
    plain_write = transport.write

    def write(data: bytes) -> None:
        plain_write(data)
        if transport.producer is not None:
            transport.producer.pauseProducing()

    transport.write = write  # type: ignore[method-assign]


def test_command_after_retr_waits_for_the_whole_message_rfc2449_6_6(context: Any) -> None:
    big = b"Subject: big\n\n" + b"x" * (5 * CHUNK_SIZE) + b"\n"
    user_with_mail(context, big)
    session = Conversation(context, peer=LOOPBACK)
    session.login()
    pause_after_each_write(session)
    session.send(b"RETR 1\r\nNOOP\r\n")
    first = session.transport.value()
    assert first.startswith(b"+OK") and len(first) < 2 * CHUNK_SIZE  # one chunk so far
    assert not first.endswith(b"+OK\r\n")
    reply = session.take()  # resumes the producer until it is done
    assert reply.endswith(b"x\r\n.\r\n+OK\r\n")


def test_connection_lost_mid_retr_closes_the_file_and_acts_as_rset(context: Any) -> None:
    inbox = user_with_mail(context, MSG1, b"Subject: big\n\n" + b"y" * (5 * CHUNK_SIZE) + b"\n")
    session = Conversation(context, peer=LOOPBACK)
    session.login()
    session.exchange("""
        C: DELE 1
        S: +OK message 1 deleted
    """)
    pause_after_each_write(session)
    session.send(b"RETR 2\r\n")
    assert session.transport.producer is not None  # still streaming
    session.drop()
    assert inbox.sources[-1].closed
    assert session.transport.producer is None
    assert DELETED not in inbox.flags_of(1)


def test_a_burst_of_pipelined_commands_is_answered_in_full(session: Any) -> None:
    session.send(b"NOOP\r\n" * 20_000)  # one read of 120 KB
    assert session.take() == b"+OK\r\n" * 20_000


def test_client_that_does_not_read_replies_is_paused_not_buffered() -> None:
    context = make_context(max_line_length=100)
    inbox = user_with_mail(context, MSG1)
    session = Conversation(context, peer=LOOPBACK)
    session.login()
    inbox.hold()
    session.send(b"DELE 1\r\n" + b"NOOP\r\n" * 400)  # 2,400 octets queued behind DELE
    assert session.transport.producerState == "paused"  # stop reading the socket
    inbox.release()
    assert session.transport.producerState == "producing"
    assert session.take().count(b"+OK\r\n") == 400


def test_pipelined_login_waits_for_the_authenticator(context: Any, inbox: Any) -> None:
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.auth.hold_next = True
    conversation.send(b"USER alice\r\nPASS secret\r\nSTAT\r\n")
    assert conversation.take() == b"+OK send PASS\r\n"
    conversation.auth.pending.pop().callback(None)
    assert (
        conversation.take()
        == (
            f"+OK logged in, maildrop has 2 messages ({SIZE1 + SIZE2} octets)\r\n"
            f"+OK 2 {SIZE1 + SIZE2}\r\n"
        ).encode()
    )


def test_client_gone_before_login_completes_logs_out(context: Any, inbox: Any) -> None:
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.auth.hold_next = True
    conversation.send(b"USER alice\r\nPASS secret\r\n")
    conversation.drop()
    conversation.auth.pending.pop().callback(None)
    assert conversation.auth.logouts == ["alice"]
    assert inbox.listeners == []


def test_line_too_long_is_refused_and_session_goes_on() -> None:
    context = make_context(max_line_length=64)
    user_with_mail(context, MSG1)
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.send(b"X" * 100)  # no end of line yet: refused at once
    conversation.send(b"Y" * 100 + b"\r\nCAPA")
    assert conversation.take() == b"-ERR line too long, at most 64 octets per command\r\n"
    conversation.send(b"\r\nNOOP " + b"Z" * 70 + b"\r\nQUIT\r\n")
    reply = conversation.take()
    assert reply.startswith(b"+OK capability list follows\r\n")
    assert reply.endswith(b"-ERR line too long, at most 64 octets per command\r\n+OK bye\r\n")


def test_repeated_bad_commands_close_the_connection() -> None:
    context = make_context(max_bad_commands=3)
    conversation = Conversation(context)
    conversation.exchange("""
        C: FOO
        S: -ERR unknown command 'FOO'
        C:
        S: -ERR empty command line
        C: BAR baz
        S: -ERR unknown command 'BAR'; too many bad commands, closing the connection
    """)
    assert conversation.closed
    conversation.send(b"CAPA\r\n")
    assert conversation.take() == b""


def test_a_failing_command_answers_err_and_the_session_goes_on(
    session: Any, inbox: Any, monkeypatch: Any
) -> None:
    def broken(uid: int) -> None:
        raise RuntimeError("a bug in the store")

    monkeypatch.setattr(inbox, "open_message", broken)
    session.exchange(f"""
        C: RETR 1
        S: -ERR [SYS/TEMP] internal server error, try again later
        C: STAT
        S: +OK 2 {SIZE1 + SIZE2}
    """)


def test_invalid_utf8_is_a_bad_command() -> None:
    conversation = Conversation(make_context())
    conversation.send(b"USER \xff\xfe\r\n")
    assert conversation.take() == b"-ERR command is not valid UTF-8\r\n"


def test_autologout_closes_silently_and_acts_as_rset_rfc1939_3(inbox: Any) -> None:
    clock = Clock()
    context = make_context(clock=clock, pop3_autologout=600)
    inbox = user_with_mail(context, MSG1)
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.login()
    conversation.exchange("""
        C: DELE 1
        S: +OK message 1 deleted
    """)
    clock.advance(599)
    conversation.exchange("""
        C: NOOP
        S: +OK
    """)
    clock.advance(599)  # the NOOP restarted the timer
    assert not conversation.closed
    clock.advance(1)
    assert conversation.closed
    assert conversation.take() == b""  # RFC 1939 §3: no response
    conversation.drop()
    assert DELETED not in inbox.flags_of(1)


def test_exclusive_mode_answers_in_use_rfc2449_8_1_1() -> None:
    context = make_context(exclusive=True)
    user_with_mail(context, MSG1)
    factory = POP3Factory(context, False)
    first = Conversation(context, peer=LOOPBACK, factory=factory)
    first.login()
    # The POP3S listener's sessions count too: one registry per server.
    pop3s = POP3Factory(context, True)
    second = Conversation(context, peer=LOOPBACK, factory=pop3s)
    second.exchange("""
        C: USER alice
        C: PASS secret
        S: +OK send PASS
        S: -ERR [IN-USE] alice's maildrop is open in another session
    """)
    assert second.auth.logouts == ["alice"]
    first.drop()
    third = Conversation(context, peer=LOOPBACK, factory=factory)
    third.login()


def test_two_sessions_allowed_by_default_design_rule7(context: Any, inbox: Any) -> None:
    first = Conversation(context, peer=LOOPBACK)
    first.login()
    second = Conversation(context, peer=LOOPBACK)
    second.login()
    first.exchange("""
        C: DELE 1
        S: +OK message 1 deleted
        C: QUIT
        S: +OK bye, 1 deleted, 1 left in maildrop
    """)
    second.exchange(f"""
        C: STAT
        S: +OK 1 {SIZE2}
        C: RETR 1
        S: -ERR message 1 was removed by another session
    """)


def test_login_delay_answers_login_delay_code_rfc2449_8_1_2() -> None:
    clock = Clock()
    context = make_context(clock=clock, login_delay=300)
    user_with_mail(context)
    factory = POP3Factory(context, False)
    first = Conversation(context, peer=LOOPBACK, factory=factory)
    first.login()
    first.drop()
    clock.advance(100)
    Conversation(context, peer=LOOPBACK, factory=factory).exchange("""
        C: USER alice
        C: PASS secret
        S: +OK send PASS
        S: -ERR [LOGIN-DELAY] logins are limited to one per 300 seconds; try again in 201 seconds
    """)
    clock.advance(200)
    Conversation(context, peer=LOOPBACK, factory=factory).login()


# --- STLS over a recording transport (the real handshake is in test_tls.py) ----------------


def test_stls_discards_pipelined_commands_rfc2595_4(context: Any) -> None:
    context.tls = tls = object()
    conversation = Conversation(context)
    conversation.send(b"STLS\r\nCAPA\r\nUSER x\r\n")
    assert conversation.take() == b"+OK begin TLS negotiation now\r\n"
    assert conversation.transport.tls_context is tls
    assert conversation.server.tls
    conversation.exchange("""
        C: STLS
        S: -ERR TLS is already active
    """)


def test_stls_without_certificate_is_refused(context: Any) -> None:
    Conversation(context).exchange("""
        C: STLS
        S: -ERR STLS is not available: the server has no certificate
    """)


# --- logging ---------------------------------------------------------------------------


def test_session_logged_once_at_start_and_end_without_password(context: Any, inbox: Any) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        conversation = Conversation(context, peer=LOOPBACK)
        conversation.send(b"USER alice\r\nPASS secret\r\nQUIT\r\n")
        conversation.drop()
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "mailaccess.pop3"]
    assert lines == [
        "pop3 session start: peer=127.0.0.1 tls=False",
        "pop3 session end: user=alice peer=127.0.0.1 reason=QUIT",
    ]
    assert not any("secret" in formatEvent(e) for e in events)
