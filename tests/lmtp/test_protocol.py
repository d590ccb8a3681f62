"""LMTP sessions (RFC 2033) over StringTransport, on the real store in a temp dir.

Test names carry the RFC section they check.  Every 2xx, 4xx and 5xx reply carries
an RFC 2034 enhanced status code, except the 220 greeting and the answer to LHLO
(RFC 2034 §4 exempts those); 354 is no 2xx/4xx/5xx reply.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from tests.lmtp.helpers import Session

ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3} ")


@pytest.fixture
def session(tmp_path: Path) -> Session:
    s = Session(tmp_path)
    s.hello()
    return s


def transaction(*rcpts: str, body: bytes = b"Subject: hi\r\n\r\nhello\r\n") -> bytes:
    lines = [b"MAIL FROM:<sender@remote.test>\r\n"]
    lines += [b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts]
    return b"".join(lines) + b"DATA\r\n" + body + b".\r\n"


# --- greeting and LHLO ---------------------------------------------------------


def test_greeting_is_220_with_hostname_rfc2033_4(tmp_path: Path) -> None:
    s = Session(tmp_path)
    assert s.take() == b"220 mx.test mailaccess LMTP ready\r\n"


def test_lhlo_lists_extensions_rfc2033_4_1(tmp_path: Path) -> None:
    s = Session(tmp_path, lmtp={"max_message_size": 100000})
    s.take()
    assert s.lines(b"LHLO client.test\r\n") == [
        "250-mx.test",
        "250-PIPELINING",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250 SIZE 100000",
    ]


def test_lhlo_needs_a_hostname_rfc2033_4_1(tmp_path: Path) -> None:
    s = Session(tmp_path)
    s.take()
    assert s.lines(b"LHLO\r\n") == ["501 5.5.4 syntax: LHLO hostname"]


@pytest.mark.parametrize("verb", [b"HELO", b"EHLO", b"ehlo"])
def test_helo_and_ehlo_are_refused_rfc2033_4_1(tmp_path: Path, verb: bytes) -> None:
    s = Session(tmp_path)
    s.take()
    [line] = s.lines(verb + b" client.test\r\n")
    assert line.startswith("500 5.5.1 ") and "LHLO" in line


def test_mail_before_lhlo_is_503_rfc2033_4_1(tmp_path: Path) -> None:
    s = Session(tmp_path)
    s.take()
    assert s.lines(b"MAIL FROM:<a@b.test>\r\n") == ["503 5.5.1 say LHLO first"]


# --- MAIL --------------------------------------------------------------------------


def test_mail_from_accepts_null_sender_rfc5321_4_5_5(session: Session) -> None:
    assert session.lines(b"MAIL FROM:<>\r\n") == ["250 2.1.0 sender OK"]


@pytest.mark.parametrize(
    "argument",
    [b"MAIL FROM:<a@b.test> BODY=8BITMIME", b"MAIL FROM:<a@b.test> SIZE=1000 BODY=7BIT"],
)
def test_mail_from_size_and_body_parameters_rfc1870_rfc6152(
    session: Session, argument: bytes
) -> None:
    assert session.lines(argument + b"\r\n") == ["250 2.1.0 sender OK"]


def test_mail_from_declared_size_over_limit_is_552_rfc1870_6_1(tmp_path: Path) -> None:
    s = Session(tmp_path, lmtp={"max_message_size": 70000})
    s.hello()
    [line] = s.lines(b"MAIL FROM:<a@b.test> SIZE=70001\r\n")
    assert line.startswith("552 5.3.4 ")
    assert s.lines(b"MAIL FROM:<a@b.test> SIZE=70000\r\n") == ["250 2.1.0 sender OK"]


@pytest.mark.parametrize(
    ("argument", "reply"),
    [
        (b"MAIL FROM:<a@b.test> SIZE=big", "501 5.5.4 "),
        (b"MAIL FROM:<a@b.test> BODY=BINARYMIME", "501 5.5.4 "),
        (b"MAIL FROM:<a@b.test> SMTPUTF8", "555 5.5.4 "),
        (b"MAIL TO:<a@b.test>", "501 5.5.4 "),
        (b"MAIL FROM:<a@b.test", "501 5.5.4 "),
        (b"MAIL FROM:<a b@c.test>", "501 5.5.4 "),
    ],
)
def test_mail_from_errors_rfc5321_4_1_1_2(session: Session, argument: bytes, reply: str) -> None:
    [line] = session.lines(argument + b"\r\n")
    assert line.startswith(reply), line


def test_nested_mail_is_503_rfc5321_4_1_4(session: Session) -> None:
    session.lines(b"MAIL FROM:<a@b.test>\r\n")
    assert session.lines(b"MAIL FROM:<c@d.test>\r\n") == [
        "503 5.5.1 nested MAIL command (RSET first)"
    ]


# --- RCPT ----------------------------------------------------------------------------


def test_rcpt_before_mail_is_503_rfc5321_4_1_4(session: Session) -> None:
    assert session.lines(b"RCPT TO:<alice@example.org>\r\n") == ["503 5.5.1 need MAIL before RCPT"]


@pytest.mark.parametrize("address", [b"alice@example.org", b"alice", b"ALICE@Example.ORG"])
def test_rcpt_known_user_rfc2033_4_2(session: Session, address: bytes) -> None:
    session.lines(b"MAIL FROM:<a@b.test>\r\n")
    [line] = session.lines(b"RCPT TO:<" + address + b">\r\n")
    assert line.startswith("250 2.1.5 ")


def test_rcpt_unknown_user_is_550_5_1_1_rfc2033_4_2(session: Session) -> None:
    session.lines(b"MAIL FROM:<a@b.test>\r\n")
    assert session.lines(b"RCPT TO:<mallory@example.org>\r\n") == [
        "550 5.1.1 <mallory@example.org>: no such user here"
    ]


def test_rcpt_foreign_domain_is_550_5_1_2_rfc3463(session: Session) -> None:
    session.lines(b"MAIL FROM:<a@b.test>\r\n")
    [line] = session.lines(b"RCPT TO:<alice@elsewhere.test>\r\n")
    assert line.startswith("550 5.1.2 <alice@elsewhere.test>: elsewhere.test is not a domain")


def test_rcpt_parameters_are_refused_rfc5321_4_1_1_11(session: Session) -> None:
    session.lines(b"MAIL FROM:<a@b.test>\r\n")
    [line] = session.lines(b"RCPT TO:<alice@example.org> NOTIFY=NEVER\r\n")
    assert line.startswith("555 5.5.4 ")


def test_rcpt_beyond_max_recipients_is_452_rfc5321_4_5_3_1_10(tmp_path: Path) -> None:
    s = Session(tmp_path, lmtp={"max_recipients": 100})
    s.hello()
    s.lines(b"MAIL FROM:<a@b.test>\r\n")
    replies = s.lines(b"RCPT TO:<alice@example.org>\r\n" * 101)
    assert replies[:100] == ["250 2.1.5 <alice@example.org> recipient OK"] * 100
    assert replies[100].startswith("452 4.5.3 ")


def test_rcpt_when_users_file_unreadable_is_451(session: Session) -> None:
    os.unlink(session.config.server.users_file)
    session.lines(b"MAIL FROM:<a@b.test>\r\n")
    [line] = session.lines(b"RCPT TO:<alice@example.org>\r\n")
    assert line.startswith("451 4.3.0 ")


# --- DATA ----------------------------------------------------------------------------


def test_data_without_recipients_is_503_rfc2033_4_2(session: Session) -> None:
    session.lines(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<nobody@example.org>\r\n")
    assert session.lines(b"DATA\r\n") == ["503 5.5.1 no valid recipients"]


def test_data_before_mail_is_503_rfc5321_4_1_4(session: Session) -> None:
    assert session.lines(b"DATA\r\n") == ["503 5.5.1 need MAIL before DATA"]


def test_one_reply_per_recipient_in_rcpt_order_one_unknown_rfc2033_4_2(
    session: Session,
) -> None:
    replies = session.lines(
        transaction("bob@example.org", "nobody@example.org", "alice@example.org")
    )
    assert replies[:4] == [
        "250 2.1.0 sender OK",
        "250 2.1.5 <bob@example.org> recipient OK",
        "550 5.1.1 <nobody@example.org>: no such user here",
        "250 2.1.5 <alice@example.org> recipient OK",
    ]
    assert replies[4].startswith("354 ")
    # RFC 2033 §4.2: two accepted recipients, two replies, in RCPT order.
    assert replies[5:] == [
        "250 2.0.0 <bob@example.org> delivered as UID 1",
        "250 2.0.0 <alice@example.org> delivered as UID 1",
    ]
    assert session.messages("bob") == [
        b"Return-Path: <sender@remote.test>\nDelivered-To: bob@example.org\nSubject: hi\n\nhello\n"
    ]
    assert session.messages("alice") == [
        b"Return-Path: <sender@remote.test>\nDelivered-To: alice@example.org\n"
        b"Subject: hi\n\nhello\n"
    ]


def test_dot_unstuffing_rfc5321_4_5_2(session: Session) -> None:
    body = b"Subject: dots\r\n\r\n..leading\r\n.\r\n" + b"...\r\nlast.\r\n"
    # ".\r\n" alone would end the message: the client stuffed it as "..".
    body = body.replace(b"\r\n.\r\n", b"\r\n..\r\n", 1)
    replies = session.lines(transaction("alice", body=body))
    assert replies[-1] == "250 2.0.0 <alice> delivered as UID 1"
    [stored] = session.messages("alice")
    assert stored.endswith(b"\n\n.leading\n.\n..\nlast.\n")


def test_empty_message_and_bare_lf_are_tolerated_rfc5321_2_3_8(session: Session) -> None:
    session.send(b"MAIL FROM:<>\nRCPT TO:<alice>\nDATA\n")
    session.take()
    assert session.lines(b"Subject: bare\n\nline\n.\n") == ["250 2.0.0 <alice> delivered as UID 1"]
    assert session.messages("alice")[0].endswith(b"Subject: bare\n\nline\n")
    assert session.lines(transaction("alice", body=b""))[-1].startswith("250 2.0.0")
    assert (
        session.messages("alice")[1] == b"Return-Path: <sender@remote.test>\nDelivered-To: alice\n"
    )


def test_data_split_across_packets_anywhere(session: Session) -> None:
    data = transaction("alice", body=b"Subject: split\r\n\r\n.. x\r\nend\r\n")
    out = b""
    for i in range(len(data)):
        session.send(data[i : i + 1])
        out += session.take()
    assert out.decode().split("\r\n")[-2] == "250 2.0.0 <alice> delivered as UID 1"
    assert session.messages("alice")[0].endswith(b"Subject: split\n\n. x\nend\n")


def test_pipelined_transactions_answer_in_order_rfc2920_3_1(session: Session) -> None:
    replies = session.lines(
        transaction("alice") + b"RSET\r\n" + transaction("bob", "alice") + b"NOOP\r\nQUIT\r\n"
    )
    codes = [line[:3] for line in replies]
    assert codes == [
        "250",
        "250",
        "354",
        "250",
        "250",
        "250",
        "250",
        "250",
        "354",
        "250",
        "250",
        "250",
        "221",
    ]
    assert session.transport.disconnecting
    assert len(session.messages("alice")) == 2 and len(session.messages("bob")) == 1


def test_transaction_ends_after_data_rfc5321_4_1_1_4(session: Session) -> None:
    session.lines(transaction("alice"))
    assert session.lines(b"RCPT TO:<bob>\r\n") == ["503 5.5.1 need MAIL before RCPT"]


def test_message_over_size_is_552_and_session_stays_in_step_rfc1870_6_3(
    tmp_path: Path,
) -> None:
    s = Session(tmp_path, lmtp={"max_message_size": 65536})
    s.hello()
    body = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 2000  # ~144 KB
    s.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\n")
    s.take()
    for i in range(0, len(body), 1000):
        s.send(body[i : i + 1000])
    # Nothing was kept beyond the limit (plus one packet) while it came in.
    assert len(s.server._body) < 65536 + 2000
    assert s.lines(b".\r\nNOOP\r\n") == [
        "552 5.3.4 <alice> message exceeds the limit of 65536 octets",
        "552 5.3.4 <bob> message exceeds the limit of 65536 octets",
        "250 2.0.0 OK",
    ]
    assert s.messages("alice") == [] and s.messages("bob") == []


def test_message_with_overlong_line_is_refused_rfc5321_4_5_3_1_6(session: Session) -> None:
    limit = session.config.limits.max_line_length
    body = b"Subject: long\r\n\r\n" + b"y" * (limit + 1) + b"\r\n"
    replies = session.lines(transaction("alice", body=body))
    assert replies[-1].startswith("554 5.6.0 <alice> ")
    ok = b"Subject: long\r\n\r\n" + b"y" * limit + b"\r\n"
    assert session.lines(transaction("alice", body=ok))[-1].startswith("250 2.0.0")


def test_overlong_command_line_is_500_5_5_2_rfc5321_4_5_3_1_4(session: Session) -> None:
    limit = session.config.limits.max_line_length
    assert session.lines(b"NOOP " + b"z" * limit + b"\r\nNOOP\r\n") == [
        f"500 5.5.2 line too long, at most {limit} octets per command",
        "250 2.0.0 OK",
    ]
    # Also when the line arrives without its end for a while.
    session.send(b"NOOP " + b"z" * (limit + 10))
    assert session.take().startswith(b"500 5.5.2 ")
    assert session.lines(b"zzz\r\nNOOP\r\n") == ["250 2.0.0 OK"]


# --- store failures and quota ------------------------------------------------------------


def _fail_for(where: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up half-way through writing the file *where* or any file below it."""
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target == str(where) or target.startswith(str(where) + "/"):
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("stage", ["message file", "dovecot-uidlist"])
def test_store_failure_mid_data_for_one_recipient_is_451_nothing_half_written(
    session: Session, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    bob = session.config.server.mail_root / "bob"
    session.lines(transaction("bob"))  # bob's uidlist exists: the next write appends
    if stage == "message file":
        _fail_for(bob / "tmp", monkeypatch)
    else:
        # The file is in cur/ by then: the store must take it out again.
        _fail_for(bob / "dovecot-uidlist", monkeypatch)
    uidlist = (bob / "dovecot-uidlist").read_bytes()
    replies = session.lines(transaction("alice", "bob", "carol"))
    assert replies[-3:] == [
        "250 2.0.0 <alice> delivered as UID 1",
        "451 4.3.0 <bob> could not be stored now, try again later",
        "250 2.0.0 <carol> delivered as UID 1",
    ]
    monkeypatch.undo()
    # Nothing of the failed copy anywhere: not in tmp/, cur/, new/, nor the index.
    assert len(session.messages("bob")) == 1
    assert os.listdir(bob / "tmp") == [] and os.listdir(bob / "new") == []
    assert len(os.listdir(bob / "cur")) == 1
    assert (bob / "dovecot-uidlist").read_bytes() == uidlist  # no torn line
    # The session goes on: the MTA retries bob alone, and now it works.
    assert session.lines(transaction("bob"))[-1] == "250 2.0.0 <bob> delivered as UID 2"
    fresh = Session(session.config.server.mail_root.parent)
    assert len(fresh.messages("bob")) == 2  # what a restart finds agrees


def test_over_quota_is_552_5_2_2_rfc3463(tmp_path: Path) -> None:
    s = Session(tmp_path, quota={"storage": 1000})
    s.hello()
    small = b"Subject: a\r\n\r\n" + b"s" * 200 + b"\r\n"
    big = b"Subject: b\r\n\r\n" + b"b" * 900 + b"\r\n"
    assert s.lines(transaction("alice", body=small))[-1].startswith("250 2.0.0")
    assert s.lines(transaction("alice", "bob", body=big))[-2:] == [
        "552 5.2.2 <alice> mailbox is over quota",
        "250 2.0.0 <bob> delivered as UID 1",
    ]
    alice = tmp_path / "mail" / "alice"
    assert len(s.messages("alice")) == 1 and os.listdir(alice / "tmp") == []
    # Maildir++ maildirsize: the limit line, then the usage.
    lines = (alice / "maildirsize").read_text().splitlines()
    assert lines[0] == "1000S" and sum(int(x.split()[0]) for x in lines[1:]) == len(
        s.messages("alice")[0]
    )


def test_over_quota_tempfail_is_452_4_2_2(tmp_path: Path) -> None:
    s = Session(tmp_path, quota={"storage": 100, "over_quota": "tempfail"})
    s.hello()
    body = b"Subject: b\r\n\r\n" + b"b" * 200 + b"\r\n"
    assert (
        s.lines(transaction("alice", body=body))[-1] == "452 4.2.2 <alice> mailbox is over quota"
    )


# --- detail addresses ----------------------------------------------------------------------


def test_detail_goes_to_inbox_by_default(session: Session) -> None:
    session.store.account("alice").create("lists")
    assert session.lines(transaction("alice+lists@example.org"))[-1].startswith("250 2.0.0")
    assert len(session.messages("alice")) == 1 and session.messages("alice", "lists") == []
    assert b"Delivered-To: alice+lists@example.org\n" in session.messages("alice")[0]


def test_detail_goes_to_folder_when_configured_and_it_exists(tmp_path: Path) -> None:
    s = Session(tmp_path, lmtp={"detail_mailbox": "folder"})
    s.hello()
    s.store.account("alice").create("lists")
    s.lines(transaction("alice+lists@example.org"))
    s.lines(transaction("alice+nosuchfolder@example.org"))
    assert len(s.messages("alice", "lists")) == 1
    assert len(s.messages("alice")) == 1  # no such folder: INBOX, not a refusal


# --- the rest of the commands -----------------------------------------------------------------


def test_rset_noop_vrfy_help_quit_rfc5321_4_1_1(session: Session) -> None:
    session.lines(b"MAIL FROM:<a@b.test>\r\n")
    assert session.lines(b"RSET\r\n") == ["250 2.0.0 reset"]
    assert session.lines(b"RCPT TO:<alice>\r\n") == ["503 5.5.1 need MAIL before RCPT"]
    assert session.lines(b"NOOP\r\n") == ["250 2.0.0 OK"]
    [vrfy] = session.lines(b"VRFY alice\r\n")
    assert vrfy.startswith("252 2.5.0 ")
    [expn] = session.lines(b"EXPN list\r\n")
    assert expn.startswith("502 5.5.1 ")
    [help_] = session.lines(b"HELP\r\n")
    assert help_.startswith("214 2.0.0 ")
    assert session.lines(b"QUIT\r\n") == ["221 2.0.0 mx.test closing connection"]
    assert session.transport.disconnecting


@pytest.mark.parametrize("command", [b"BDAT 10 LAST", b"STARTTLS", b"AUTH PLAIN"])
def test_extensions_not_offered_are_502_rfc5321_4_2_4(session: Session, command: bytes) -> None:
    [line] = session.lines(command + b"\r\n")
    assert line.startswith("502 5.5.1 ")


def test_unknown_and_empty_and_non_utf8_commands_rfc5321_4_2_4(session: Session) -> None:
    assert session.lines(b"FROB\r\n\r\n\xff\xfe\r\n") == [
        "500 5.5.1 unknown command 'FROB'",
        "500 5.5.2 empty command line",
        "500 5.5.2 command is not valid UTF-8",
    ]


def test_too_many_bad_commands_close_with_421(session: Session) -> None:
    limit = session.config.limits.max_bad_commands
    replies = session.lines(b"FROB\r\n" * limit)
    assert replies[-1].startswith("421 4.7.0 ")
    assert session.transport.disconnecting


def test_idle_session_times_out_with_421_rfc5321_4_5_3_2(session: Session) -> None:
    session.clock.advance(299)
    assert session.take() == b""
    session.clock.advance(1)
    assert session.take() == b"421 4.4.2 mx.test idle too long, closing\r\n"
    assert session.transport.disconnecting


def test_every_reply_has_an_enhanced_status_code_rfc2034_4(session: Session) -> None:
    replies = session.lines(
        b"NOOP\r\n" + transaction("alice", "nobody") + b"VRFY x\r\nRSET\r\nFROB\r\nQUIT\r\n"
    )
    for line in replies:
        if not line.startswith("354 "):
            assert ENHANCED.match(line), line


def test_one_log_line_per_delivery_without_content(session: Session) -> None:
    events: list[dict[str, Any]] = []
    observer: Any = events.append
    globalLogPublisher.addObserver(observer)
    try:
        session.lines(transaction("alice", "bob", body=b"Subject: secret words\r\n\r\nbody\r\n"))
    finally:
        globalLogPublisher.removeObserver(observer)
    from twisted.logger import formatEvent

    lines = [formatEvent(e) for e in events if "lmtp delivery" in e.get("log_format", "")]
    assert len(lines) == 2
    assert "from=<sender@remote.test> to=<alice> user=alice mailbox=INBOX" in lines[0]
    assert "uid=1 status=stored" in lines[0] and "size=" in lines[0]
    assert not any("secret" in line for line in lines)
