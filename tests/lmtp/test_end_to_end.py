"""LMTP against the real server (twistd) with real clients: smtplib.LMTP and swaks.

Over TCP and over a UNIX socket (what Postfix's ``lmtp:inet:`` and
``lmtp:unix:`` transports use), then the message is read back over POP3 and
seen by an IMAP session in IDLE.
"""

from __future__ import annotations

import poplib
import shutil
import smtplib
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MailServer

MESSAGE = b"From: sender@remote.test\r\nSubject: e2e\r\n\r\n.leading dot\r\nbody\r\n"


def pop3_messages(server: MailServer, user: str) -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    try:
        pop.user(user)
        pop.pass_("secret")
        count = len(pop.list()[1])
        return [b"\r\n".join(pop.retr(i)[1]) for i in range(1, count + 1)]
    finally:
        pop.quit()


def test_smtplib_lmtp_over_tcp_several_recipients_rfc2033_4_2(mail_server: MailServer) -> None:
    for user in ("alice", "bob"):
        mail_server.add_user(user, "secret")
    with smtplib.LMTP("127.0.0.1", mail_server.ports["lmtp"]) as lmtp:
        code, _ = lmtp.ehlo("client.test")  # smtplib.LMTP says LHLO
        assert code == 250
        assert lmtp.has_extn("pipelining") and lmtp.has_extn("enhancedstatuscodes")
        assert lmtp.has_extn("8bitmime") and lmtp.has_extn("size")
        assert lmtp.mail("sender@remote.test", ["BODY=8BITMIME", "SIZE=100"])[0] == 250
        assert lmtp.rcpt("alice@example.org")[0] == 250
        assert lmtp.rcpt("nobody@example.org") == (
            550,
            b"5.1.1 <nobody@example.org>: no such user here",
        )
        assert lmtp.rcpt("bob")[0] == 250
        # smtplib reads one reply after DATA; LMTP sends one per recipient.
        assert lmtp.data(MESSAGE) == (250, b"2.0.0 <alice@example.org> delivered as UID 1")
        assert lmtp.getreply() == (250, b"2.0.0 <bob> delivered as UID 1")
        assert lmtp.noop()[0] == 250
    [alice] = pop3_messages(mail_server, "alice")
    assert alice.startswith(
        b"Return-Path: <sender@remote.test>\r\nDelivered-To: alice@example.org\r\n"
    )
    assert alice.endswith(b"Subject: e2e\r\n\r\n.leading dot\r\nbody")
    assert "lmtp delivery: from=<sender@remote.test> to=<bob> user=bob" in mail_server.log_text()


@pytest.fixture
def unix_server(
    start_mail_server: Callable[..., MailServer], tmp_path_factory: pytest.TempPathFactory
) -> tuple[MailServer, Path]:
    socket_path = tmp_path_factory.mktemp("sock") / "lmtp.sock"
    server = start_mail_server(listen={"lmtp": [f"unix:{socket_path}:mode=660"]})
    return server, socket_path


def test_smtplib_lmtp_over_unix_socket_with_its_mode(unix_server: tuple[MailServer, Path]) -> None:
    server, socket_path = unix_server
    server.add_user("alice", "secret")
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o660  # docs/postfix.md
    with smtplib.LMTP(str(socket_path)) as lmtp:
        refused = lmtp.sendmail("sender@remote.test", ["alice"], MESSAGE)
    assert refused == {}
    assert len(pop3_messages(server, "alice")) == 1


needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--protocol", "LMTP", "--from", "sender@remote.test", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@needs_swaks
def test_swaks_over_tcp_and_unix(
    unix_server: tuple[MailServer, Path], mail_server: MailServer
) -> None:
    mail_server.add_user("alice", "secret")
    result = swaks(
        "--server", "127.0.0.1", "--port", str(mail_server.ports["lmtp"]),
        "--to", "alice@example.org", "--header", "Subject: swaks",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  250 2.0.0 <alice@example.org> delivered as UID 1" in result.stdout
    # An unknown recipient: swaks stops at RCPT and says so by its exit code.
    result = swaks(
        "--server", "127.0.0.1", "--port", str(mail_server.ports["lmtp"]), "--to", "nobody",
    )  # fmt: skip
    assert result.returncode != 0 and "550 5.1.1" in result.stdout
    server, socket_path = unix_server
    server.add_user("alice", "secret")
    result = swaks("--socket", str(socket_path), "--to", "alice")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 <alice> delivered as UID 1" in result.stdout
    assert b"Subject: swaks" in pop3_messages(mail_server, "alice")[0]


def test_imap_idle_session_sees_each_lmtp_delivery_as_exists(mail_server: MailServer) -> None:
    """DESIGN.md rule 6: LMTP goes through the store, open IMAP sessions hear it at once."""
    if "imap" not in mail_server.started:
        pytest.skip("the IMAP server does not start yet")
    imapclient = pytest.importorskip("imapclient")
    mail_server.add_user("alice", "secret")
    client: Any = imapclient.IMAPClient("127.0.0.1", port=mail_server.ports["imap"], ssl=False)
    try:
        client.login("alice", "secret")
        client.select_folder("INBOX")
        client.idle()
        try:
            with smtplib.LMTP("127.0.0.1", mail_server.ports["lmtp"]) as lmtp:
                for n in (1, 2, 3):
                    lmtp.sendmail("sender@remote.test", ["alice"], MESSAGE)
                    assert (n, b"EXISTS") in client.idle_check(timeout=10)
        finally:
            client.idle_done()
    finally:
        client.logout()


def test_quota_in_the_running_server_lmtp_552_and_imap_append_overquota(
    start_mail_server: Callable[..., MailServer],
) -> None:
    """[quota] reaches the server's store: LMTP 552 5.2.2 (RFC 3463), APPEND NO [OVERQUOTA]."""
    server = start_mail_server(quota={"storage": 3000})
    server.add_user("alice", "secret")
    body = b"Subject: q\r\n\r\n" + b"x" * 1500 + b"\r\n"
    with smtplib.LMTP("127.0.0.1", server.ports["lmtp"]) as lmtp:
        assert lmtp.sendmail("a@remote.test", ["alice"], body) == {}
        lmtp.mail("a@remote.test")
        lmtp.rcpt("alice")
        assert lmtp.data(body) == (552, b"5.2.2 <alice> mailbox is over quota")
    assert "status=over quota" in server.log_text()
    if "imap" not in server.started:
        return
    import imaplib

    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    try:
        imap.login("alice", "secret")
        typ, data = imap.append("INBOX", None, None, body)
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data  # RFC 5530 §3
        assert imap.append("INBOX", None, None, b"Subject: s\r\n\r\nsmall\r\n")[0] == "OK"
        # Deleting by moving to Trash works at the limit (RFC 6851; Dovecot's
        # quota plugin does not count a move within one quota), a COPY does not.
        assert imap.create("Bin")[0] == "OK"
        imap.select("INBOX")
        typ, data = imap.uid("COPY", "1", "Bin")
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
        typ, data = imap.uid("MOVE", "1", "Bin")
        assert typ == "OK", data
        assert imap.select("Bin")[1] == [b"1"]
    finally:
        imap.logout()
    assert (server.maildir("alice") / "maildirsize").read_text().startswith("3000S\n")
