"""IMAP end to end: the real server (twistd) on loopback, driven by real clients.

imaplib (plain, STARTTLS, IMAPS), imapclient (IDLE, MOVE, UIDPLUS), curl
(imap:// and imaps://) and mbsync (a two-way sync of several folders over
STARTTLS, flags changed on both sides), as /work/shared/CLIENTS.md describes.
Clients that are not installed are skipped.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

MESSAGES = [
    b"From: a@example.org\nTo: alice@example.org\nSubject: first\n\nHello\n",
    b"From: b@example.org\nTo: alice@example.org\nSubject: second\n\nWorld\n",
]


def deliver(server: Any, user: str, bodies: list[bytes], folder: str = "") -> None:
    """Drop messages into a Maildir folder's new/, as a delivery agent would."""
    root = server.maildir(user) / folder if folder else server.maildir(user)
    for directory in ("new", "cur", "tmp"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    if folder:
        (root / "maildirfolder").touch()
    for n, body in enumerate(bodies):
        (root / "new" / f"17000000{n:02d}.M{n}P1.test").write_bytes(body)


@pytest.fixture
def server(mail_server: Any) -> Any:
    if "imap" not in mail_server.started:
        pytest.skip(f"the server did not start IMAP: {mail_server.log_text()[-500:]}")
    mail_server.add_user("alice", "secret")
    deliver(mail_server, "alice", MESSAGES)
    return mail_server


def crlf(body: bytes) -> bytes:
    return body.replace(b"\n", b"\r\n")


def check_session(client: imaplib.IMAP4) -> None:
    imap: Any = client  # typeshed's types for the answers are too narrow to index
    imap.login("alice", "secret")
    typ, data = imap.select("INBOX")
    assert typ == "OK" and data == [b"2"]
    typ, data = imap.uid("FETCH", "1:*", "(UID RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    bodies = [part[1] for part in data if isinstance(part, tuple)]
    assert bodies == [crlf(m) for m in MESSAGES]
    typ, data = imap.search(None, "SUBJECT", "second")
    assert data == [b"2"]
    typ, data = imap.store("1", "+FLAGS", "(\\Deleted)")
    assert typ == "OK"
    typ, data = imap.expunge()
    assert data == [b"1"]
    typ, data = imap.append("INBOX", "(\\Seen)", None, crlf(b"Subject: third\n\nagain\n"))
    assert typ == "OK" and b"APPENDUID" in data[0]
    typ, data = imap.status("INBOX", "(MESSAGES UNSEEN)")
    assert data == [b"INBOX (MESSAGES 2 UNSEEN 1)"]
    imap.close()
    assert imap.logout()[0] == "BYE"


def test_imaplib_plain_on_loopback(server: Any) -> None:
    check_session(imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10))


def test_imaplib_starttls_rfc3501_6_2_1(server: Any) -> None:
    imap = imaplib.IMAP4("localhost", server.ports["imap"], timeout=10)
    assert "STARTTLS" in imap.capabilities
    imap.starttls(ssl_context=server.ssl_context())
    assert "STARTTLS" not in imap.capabilities
    check_session(imap)


def test_imaplib_imaps_rfc8314(server: Any) -> None:
    if "imaps" not in server.started:
        pytest.skip("IMAPS listener not started")
    check_session(
        imaplib.IMAP4_SSL(
            "localhost", server.ports["imaps"], ssl_context=server.ssl_context(), timeout=10
        )
    )


def test_plaintext_login_refused_off_loopback_policy(start_mail_server: Any) -> None:
    server = start_mail_server(auth={"allow_plaintext": "never"})
    server.add_user("alice", "secret")
    imap = imaplib.IMAP4("localhost", server.ports["imap"], timeout=10)
    assert "LOGINDISABLED" in imap.capabilities
    assert "AUTH=PLAIN" not in imap.capabilities
    imap.starttls(ssl_context=server.ssl_context())
    assert "AUTH=PLAIN" in imap.capabilities
    imap.login("alice", "secret")
    imap.logout()


def test_starttls_injection_over_a_socket(server: Any) -> None:
    with socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK [CAPABILITY")
        sock.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
        assert reader.readline() == b"a OK Begin TLS negotiation now\r\n"
        tls = server.ssl_context().wrap_socket(sock, server_hostname="localhost")
        tls.sendall(b"c NOOP\r\n")
        answer = b""
        while not answer.endswith(b"\r\n"):
            answer += tls.recv(4096)
        # b was pipelined in plaintext: it is never answered.
        assert answer == b"c OK NOOP completed\r\n"


def test_imapclient_idle_move_uidplus(server: Any) -> None:
    imapclient = pytest.importorskip("imapclient")
    context = server.ssl_context()
    watcher = imapclient.IMAPClient("localhost", server.ports["imap"], ssl=False, timeout=10)
    watcher.starttls(context)
    watcher.login("alice", "secret")
    watcher.select_folder("INBOX")
    actor = imapclient.IMAPClient("localhost", server.ports["imap"], ssl=False, timeout=10)
    actor.starttls(context)
    actor.login("alice", "secret")
    assert {b"IDLE", b"MOVE", b"UIDPLUS", b"NAMESPACE", b"ID"} <= set(actor.capabilities())
    actor.create_folder("Archive")
    actor.select_folder("INBOX")

    watcher.idle()
    uid = actor.append("INBOX", crlf(b"Subject: live\n\nnews\n"))
    responses = watcher.idle_check(timeout=5)
    watcher.idle_done()
    assert (3, b"EXISTS") in responses
    assert b"APPENDUID" in uid

    # RFC 6851 MOVE; RFC 4315 UID EXPUNGE.
    actor.move([1], "Archive")
    actor.select_folder("Archive")
    assert actor.search("ALL") == [1]
    actor.set_flags([1], [b"\\Deleted"])
    actor.uid_expunge([1])
    assert actor.search("ALL") == []
    watcher.idle()
    actor.select_folder("INBOX")
    actor.set_flags([2], [b"\\Flagged"])
    responses = watcher.idle_check(timeout=5)
    watcher.idle_done()
    # The MOVE's EXPUNGE (queued while not idling) comes at IDLE, the flag at once.
    assert (1, b"EXPUNGE") in responses, responses
    assert any(r[1] == b"FETCH" and b"\\Flagged" in r[2][1] for r in responses), responses
    assert actor.namespace().personal == (("", "."),)
    assert b"mailaccess" in actor.id_({"name": "test"})[0]
    actor.logout()
    watcher.logout()


def curl(server: Any, *args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    return subprocess.run(
        ["curl", "-s", "--cacert", str(server.cert), "-u", "alice:secret", *args],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_curl_imap_starttls_list_fetch_search(server: Any) -> None:
    port = server.ports["imap"]
    listing = curl(server, "--ssl-reqd", f"imap://localhost:{port}/")
    assert listing.returncode == 0, listing.stderr
    assert b'* LIST (\\HasNoChildren) "." INBOX' in listing.stdout
    fetched = curl(server, "--ssl-reqd", f"imap://localhost:{port}/INBOX;UID=2")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == crlf(MESSAGES[1])
    found = curl(server, "--ssl-reqd", f"imap://localhost:{port}/INBOX?SUBJECT%20%22first%22")
    assert found.returncode == 0 and b"* SEARCH 1" in found.stdout


def test_curl_imaps_status_and_append(server: Any, tmp_path: Path) -> None:
    if "imaps" not in server.started:
        pytest.skip("IMAPS listener not started")
    port = server.ports["imaps"]
    message = tmp_path / "msg.eml"
    message.write_bytes(crlf(b"Subject: by curl\n\nhi\n"))
    sent = curl(server, f"imaps://localhost:{port}/INBOX", "-T", str(message))
    assert sent.returncode == 0, sent.stderr
    status = curl(server, f"imaps://localhost:{port}/", "-X", "STATUS INBOX (MESSAGES UIDNEXT)")
    assert status.returncode == 0, status.stderr
    assert b"(MESSAGES 3 UIDNEXT 4)" in status.stdout


MBSYNC_RC = """\
IMAPAccount t
Host localhost
Port {port}
User alice
Pass secret
SSLType STARTTLS
CertificateFile {cert}
AuthMechs PLAIN LOGIN
PipelineDepth 1

IMAPStore t-far
Account t

MaildirStore t-near
Path {near}/
Inbox {near}/INBOX
SubFolders Verbatim

Channel t
Far :t-far:
Near :t-near:
Patterns *
Create Both
Expunge Both
SyncState *
Sync All
"""


def mbsync(rc: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(home))
    return subprocess.run(
        ["mbsync", "-c", str(rc), "-V", "-a"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def local_flags(folder: Path) -> dict[str, str]:
    """Subject -> Maildir flag letters of each message in a local folder."""
    out = {}
    for sub in ("cur", "new"):
        for path in (folder / sub).iterdir():
            subject = next(
                line for line in path.read_text().splitlines() if line.startswith("Subject:")
            )
            out[subject] = path.name.partition(":2,")[2]
    return out


def test_mbsync_two_way_sync_over_starttls(server: Any, tmp_path: Path) -> None:
    if shutil.which("mbsync") is None:
        pytest.skip("mbsync (isync) is not installed")
    deliver(server, "alice", [b"Subject: work one\n\nw\n"], folder=".Work")
    deliver(server, "alice", [b"Subject: deep\n\nd\n"], folder=".Work.Deep")
    near = tmp_path / "near"
    near.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(MBSYNC_RC.format(port=server.ports["imap"], cert=server.cert, near=near))
    rc.chmod(0o600)
    first = mbsync(rc, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert set(local_flags(near / "INBOX")) == {"Subject: first", "Subject: second"}
    assert set(local_flags(near / "Work")) == {"Subject: work one"}
    assert set(local_flags(near / "Work" / "Deep")) == {"Subject: deep"}

    # Flag on the far side (IMAP), flag and a new message on the near side.
    imap: Any = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    imap.login("alice", "secret")
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Flagged)")
    imap.logout()
    work = near / "Work"
    for sub in ("cur", "new"):
        for path in list((work / sub).iterdir()):
            path.rename(work / "cur" / (path.name.partition(":2,")[0] + ":2,S"))
    (work / "new" / "1800000000.M1P1.near").write_text("Subject: from near\n\nn\n")

    second = mbsync(rc, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "F" in local_flags(near / "INBOX")["Subject: first"]
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    imap.login("alice", "secret")
    imap.select("Work")
    _, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    # Each message: (b'n (FLAGS (...) BODY[...] {k}', b'Subject: ...'), then b')'.
    flags_by_subject = {
        part[1].strip().decode(): part[0].split(b"FLAGS (")[1].split(b")")[0].decode()
        for part in data
        if isinstance(part, tuple)
    }
    assert set(flags_by_subject) == {"Subject: work one", "Subject: from near"}
    # The near side's \Seen reached the server; the near side's new message too.
    assert "\\Seen" in flags_by_subject["Subject: work one"]
    assert "\\Seen" not in flags_by_subject["Subject: from near"]
    imap.logout()


def test_session_log_lines_never_show_password(server: Any) -> None:
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    imap.login("alice", "secret")
    imap.logout()
    deadline = time.monotonic() + 5
    while "imap session end: user=alice" not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()[-2000:]
        time.sleep(0.05)
    log = server.log_text()
    assert "imap session start: peer=127.0.0.1" in log
    assert "reason=LOGOUT" in log
    assert "secret" not in log


def test_recent_survives_a_restart_until_a_session_is_told_rfc3501_2_3_2(server: Any) -> None:
    def recent_on_select() -> bytes:
        imap: Any = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
        try:
            imap.login("alice", "secret")
            imap.select("INBOX")
            return bytes(imap.response("RECENT")[1][0])
        finally:
            imap.logout()

    imap: Any = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login("alice", "secret")
    # EXAMINE and STATUS report \Recent without claiming it (RFC 3501 §6.3.2).
    assert imap.status("INBOX", "(RECENT)")[1] == [b"INBOX (RECENT 2)"]
    imap.logout()
    server.restart()  # nobody has been told of the two messages yet
    assert recent_on_select() == b"2"
    assert recent_on_select() == b"0"  # the first SELECT took them
    server.restart()
    assert recent_on_select() == b"0"
