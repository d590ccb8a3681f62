"""POP3 end to end: the real server (twistd) on loopback, driven by real clients.

Python's poplib (plain, STLS, POP3S), curl (pop3:// and pop3s://) and fetchmail
(STLS, ``keep`` with UIDL: a second run fetches nothing new), invoked as
/work/shared/CLIENTS.md describes.  Clients that are not installed are skipped.
"""

from __future__ import annotations

import os
import poplib
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

MESSAGES = [
    b"From: a@example.org\nTo: alice@example.org\nSubject: first\n\nHello\n.leading dot\n",
    b"From: b@example.org\nTo: alice@example.org\nSubject: second\n\nWorld\n",
]


def deliver(server: Any, user: str, bodies: list[bytes]) -> None:
    """Drop messages into the user's Maildir new/, as an MTA's delivery agent would."""
    new = server.maildir(user) / "new"
    new.mkdir(parents=True, exist_ok=True)
    for directory in ("cur", "tmp"):
        (server.maildir(user) / directory).mkdir(exist_ok=True)
    for n, body in enumerate(bodies):
        (new / f"17000000{n:02d}.M{n}P1.test").write_bytes(body)


@pytest.fixture
def server(mail_server: Any) -> Any:
    if "pop3" not in mail_server.started:
        pytest.skip(f"the server did not start POP3: {mail_server.log_text()[-500:]}")
    mail_server.add_user("alice", "secret")
    deliver(mail_server, "alice", MESSAGES)
    return mail_server


def crlf(body: bytes) -> bytes:
    return body.replace(b"\n", b"\r\n")


def check_session(pop: poplib.POP3) -> None:
    pop.user("alice")
    pop.pass_("secret")
    count, octets = pop.stat()
    assert count == 2 and octets == sum(len(crlf(m)) for m in MESSAGES)
    _, listing, _ = pop.list()
    assert listing == [b"%d %d" % (n + 1, len(crlf(m))) for n, m in enumerate(MESSAGES)]
    _, uidls, _ = pop.uidl()
    assert len({line.split()[1] for line in uidls}) == 2
    _, lines, _ = pop.retr(1)
    # poplib removes the stuffed dot and the CRLFs; the content is exact.
    assert b"\r\n".join(lines) + b"\r\n" == crlf(MESSAGES[0])
    _, top, _ = pop.top(2, 0)
    assert top[-1] == b"" and top[2] == b"Subject: second"
    assert pop.quit().startswith(b"+OK")


def test_poplib_plain_on_loopback(server: Any) -> None:
    check_session(poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10))


def test_poplib_stls_rfc2595(server: Any) -> None:
    pop = poplib.POP3("localhost", server.ports["pop3"], timeout=10)
    assert "STLS" in pop.capa()
    pop.stls(context=server.ssl_context())
    assert "STLS" not in pop.capa()
    check_session(pop)


def test_poplib_pop3s_rfc8314(server: Any) -> None:
    if "pop3s" not in server.started:
        pytest.skip("POP3S listener not started")
    check_session(
        poplib.POP3_SSL("localhost", server.ports["pop3s"], context=server.ssl_context())
    )


def test_dele_and_quit_remove_the_file(server: Any) -> None:
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    pop.user("alice")
    pop.pass_("secret")
    pop.dele(1)
    pop.quit()
    files = [p for d in ("new", "cur") for p in (server.maildir("alice") / d).iterdir()]
    assert len(files) == 1


def test_stls_injection_over_a_real_socket_rfc2595_4(server: Any) -> None:
    with socket.create_connection(("127.0.0.1", server.ports["pop3"]), timeout=10) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        raw.sendall(b"STLS\r\nCAPA\r\n")  # one packet
        assert reader.readline() == b"+OK begin TLS negotiation now\r\n"
        tls = server.ssl_context().wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"QUIT\r\n")
        # Had CAPA been executed, its reply would come before QUIT's.
        assert tls.makefile("rb").readline() == b"+OK bye\r\n"


def run_client(
    argv: list[str], home: Path, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run a client with stdin closed and HOME in a temp dir; output as octets."""
    env = dict(os.environ, HOME=str(home))
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=timeout,
    )


def test_curl_pop3_with_stls_and_pop3s(server: Any, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    common = ["curl", "-s", "--cacert", str(server.cert), "-u", "alice:secret"]
    port = server.ports["pop3"]
    listing = run_client([*common, "--ssl-reqd", f"pop3://localhost:{port}/"], tmp_path)
    assert listing.returncode == 0, listing.stderr
    sizes = (len(crlf(MESSAGES[0])), len(crlf(MESSAGES[1])))
    assert listing.stdout == b"1 %d\r\n2 %d\r\n" % sizes
    message = run_client([*common, "--ssl-reqd", f"pop3://localhost:{port}/2"], tmp_path)
    assert message.returncode == 0, message.stderr
    assert message.stdout == crlf(MESSAGES[1])
    if "pop3s" in server.started:
        uidl = run_client(
            [*common, f"pop3s://localhost:{server.ports['pop3s']}/", "-X", "UIDL"], tmp_path
        )
        assert uidl.returncode == 0, uidl.stderr
        assert [line.split(b" ")[0] for line in uidl.stdout.splitlines()] == [b"1", b"2"]


def test_fetchmail_stls_keep_uidl_second_run_fetches_nothing(server: Any, tmp_path: Path) -> None:
    if shutil.which("fetchmail") is None:
        pytest.skip("fetchmail is not installed")
    out = tmp_path / "out.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        "set invisible\n"
        f"poll localhost service {server.ports['pop3']} protocol POP3 uidl auth password\n"
        '  user "alice" there with password "secret" is "root" here\n'
        f"  sslproto TLS1.2+ sslcertck sslcertfile {server.cert}\n"
        "  keep\n"
        f"  mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)
    idfile = tmp_path / "fetchids"
    argv = ["fetchmail", "-f", str(rc), "-i", str(idfile), "-v", "--nodetach"]
    first = run_client(argv, tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr).decode()
    assert b"STLS" in first.stdout  # fetchmail upgraded the connection
    assert out.read_bytes().count(b"Subject: ") == 2
    # Same again: the UIDL list fetchmail kept says there is nothing new.
    second = run_client(argv, tmp_path)
    assert second.returncode == 1, (second.stdout + second.stderr).decode()  # 1: no new mail
    assert out.read_bytes().count(b"Subject: ") == 2


def test_plaintext_refused_before_tls_when_configured_rfc2595(
    start_mail_server: Any,
) -> None:
    server = start_mail_server(auth={"allow_plaintext": "never"})
    if "pop3" not in server.started:
        pytest.skip("the server did not start POP3")
    server.add_user("alice", "secret")
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    capabilities = pop.capa()
    assert "USER" not in capabilities and "SASL" not in capabilities
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] plaintext login needs"):
        pop.user("alice")
    pop.quit()
    pop = poplib.POP3("localhost", server.ports["pop3"], timeout=10)
    pop.stls(context=server.ssl_context())
    assert "USER" in pop.capa()
    pop.user("alice")
    pop.pass_("secret")
    assert pop.stat() == (0, 0)
    pop.quit()
