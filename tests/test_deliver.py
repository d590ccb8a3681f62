"""``mailaccess deliver``: exit codes an MTA acts on (sysexits), and what lands where.

Most cases call ``deliver.main`` in-process on a temp setup; the exit codes are
also checked through the real command line, and the pickup by a running
server is checked against the ``mail_server`` fixture.
"""

from __future__ import annotations

import io
import os
import poplib
import smtplib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mailaccess import deliver
from mailaccess.store.model import SEEN
from tests.conftest import MailServer, cli_command, subprocess_env

MESSAGE = b"From: a@remote.test\nSubject: hello\n\nbody\n"


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    (tmp_path / "users").write_text(
        "alice:{PLAIN}x\nbob:{PLAIN}x::::::userdb_quota_rule=*:storage=100\n"
    )
    config = tmp_path / "mailaccess.toml"
    config.write_text(
        '[server]\nmail_root = "mail"\nusers_file = "users"\n'
        '[lmtp]\ndomains = ["example.org"]\ndetail_mailbox = "folder"\n'
    )
    return config


def run(config: Path, *args: str, message: bytes = MESSAGE) -> tuple[int, str]:
    err = io.StringIO()
    status = deliver.main([*args, "--config", str(config)], io.BytesIO(message), err)
    return status, err.getvalue()


def stored(config: Path, user: str, folder: str = "") -> list[bytes]:
    directory = config.parent / "mail" / user / (f".{folder}" if folder else "")
    names = sorted(os.listdir(directory / "cur")) if (directory / "cur").is_dir() else []
    return [(directory / "cur" / n).read_bytes() for n in names]


def test_delivers_with_trace_headers_exit_0(setup: Path) -> None:
    assert run(setup, "-d", "alice", "-f", "a@remote.test") == (0, "")
    assert stored(setup, "alice") == [
        b"Return-Path: <a@remote.test>\nDelivered-To: alice\n" + MESSAGE
    ]
    uidlist = (setup.parent / "mail/alice/dovecot-uidlist").read_text().splitlines()
    assert uidlist[1].startswith("1 ")


def test_mbox_from_line_is_dropped_and_address_kept(setup: Path) -> None:
    status, _ = run(
        setup, "-d", "alice", "-a", "alice@example.org", message=b"From a@b Mon Jan 1\n" + MESSAGE
    )
    assert status == 0
    assert stored(setup, "alice")[0] == b"Return-Path: <>\nDelivered-To: alice@example.org\n" + (
        MESSAGE
    )


def test_folder_option_and_missing_folder_falls_back_to_inbox(setup: Path) -> None:
    run(setup, "-d", "alice")  # creates the account
    os.makedirs(setup.parent / "mail/alice/.Lists/cur")
    for sub in ("new", "tmp"):
        os.makedirs(setup.parent / f"mail/alice/.Lists/{sub}")
    assert run(setup, "-d", "alice", "-m", "Lists")[0] == 0
    assert run(setup, "-d", "alice", "-m", "NoSuchFolder")[0] == 0
    assert len(stored(setup, "alice", "Lists")) == 1
    assert len(stored(setup, "alice")) == 2


def test_detail_address_goes_to_its_folder_when_configured(setup: Path) -> None:
    run(setup, "-d", "alice")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(setup.parent / f"mail/alice/.Lists/{sub}")
    assert run(setup, "-d", "alice+Lists@example.org")[0] == 0
    assert len(stored(setup, "alice", "Lists")) == 1


@pytest.mark.parametrize("user", ["mallory", "alice@elsewhere.test"])
def test_unknown_user_is_ex_nouser_67(setup: Path, user: str) -> None:
    status, err = run(setup, "-d", user)
    assert status == deliver.EX_NOUSER == 67
    assert err.startswith("mailaccess deliver: ")


def test_bad_usage_is_ex_usage_64(setup: Path) -> None:
    assert run(setup, "-m", "INBOX")[0] == deliver.EX_USAGE == 64
    assert run(setup, "-d", "alice", "--frob")[0] == 64


def test_broken_config_is_ex_config_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[lmtp]\ndetail_mailbox = 3\n")
    status, err = run(bad, "-d", "alice")
    assert status == deliver.EX_CONFIG == 78
    assert "lmtp.detail_mailbox" in err


def test_unreadable_users_file_is_ex_tempfail_75(setup: Path) -> None:
    os.unlink(setup.parent / "users")
    assert run(setup, "-d", "alice")[0] == deliver.EX_TEMPFAIL == 75


def test_store_failure_is_ex_tempfail_75_and_nothing_left(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(setup, "-d", "alice")

    def no_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", no_fsync)
    status, err = run(setup, "-d", "alice")
    monkeypatch.undo()
    assert status == 75 and "alice" in err
    assert len(stored(setup, "alice")) == 1
    assert os.listdir(setup.parent / "mail/alice/tmp") == []


def test_over_quota_reject_is_77_tempfail_is_75(setup: Path) -> None:
    # bob's users-file line says userdb_quota_rule=*:storage=100 (bytes).
    big = MESSAGE + b"x" * 200
    assert run(setup, "-d", "bob", message=big)[0] == deliver.EX_NOPERM == 77
    assert stored(setup, "bob") == []
    text = setup.read_text() + '[quota]\nover_quota = "tempfail"\n'
    setup.write_text(text)
    assert run(setup, "-d", "bob", message=big)[0] == 75
    assert run(setup, "-d", "bob")[0] == 0  # a small one still fits
    assert (setup.parent / "mail/bob/maildirsize").read_text().startswith("100S\n")


def test_exit_codes_through_the_command_line(setup: Path) -> None:
    def cli(*args: str) -> int:
        return subprocess.run(
            cli_command(*args),
            input=MESSAGE,
            capture_output=True,
            env=subprocess_env(),
            timeout=60,
        ).returncode

    assert cli("deliver", "-d", "alice", "--config", str(setup)) == 0
    assert cli("--config", str(setup), "deliver", "-d", "alice") == 0
    assert cli("deliver", "-d", "nobody", f"--config={setup}") == 67
    assert cli("deliver", f"--config={setup}") == 64
    assert cli("deliver", "-d", "alice", "--config", str(setup.parent / "none.toml")) == 78
    assert len(stored(setup, "alice")) == 2


# --- beside a running server ------------------------------------------------------------


def _deliver_cli(server: MailServer, user: str, body: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        cli_command(
            "deliver", "-d", user, "-f", "a@remote.test", f"--config={server.config_path}"
        ),
        input=body,
        capture_output=True,
        env=subprocess_env(),
        timeout=60,
    )


def test_server_picks_up_deliver_with_the_next_uid(mail_server: MailServer) -> None:
    """LMTP, then deliver (another process), then LMTP: UIDs 1, 2, 3, and POP3 sees all."""
    mail_server.add_user("alice", "secret")
    port = mail_server.ports["lmtp"]
    with smtplib.LMTP("127.0.0.1", port) as lmtp:
        lmtp.sendmail("a@remote.test", ["alice"], b"Subject: one\r\n\r\n1\r\n")
    result = _deliver_cli(mail_server, "alice", b"Subject: two\n\n2\n")
    assert result.returncode == 0, result.stderr
    with smtplib.LMTP("127.0.0.1", port) as lmtp:
        lmtp.ehlo_or_helo_if_needed()
        lmtp.mail("a@remote.test")
        lmtp.rcpt("alice")
        code, text = lmtp.data(b"Subject: three\r\n\r\n3\r\n")
    assert (code, text) == (250, b"2.0.0 <alice> delivered as UID 3")
    pop = poplib.POP3("127.0.0.1", mail_server.ports["pop3"], timeout=10)
    try:
        pop.user("alice")
        pop.pass_("secret")
        subjects = [pop.top(i, 0)[1] for i in (1, 2, 3)]
    finally:
        pop.quit()
    assert [next(h for h in s if h.startswith(b"Subject")) for s in subjects] == [
        b"Subject: one",
        b"Subject: two",
        b"Subject: three",
    ]


def test_deliver_reaches_an_imap_idle_session_at_once(mail_server: MailServer) -> None:
    """DESIGN.md rule 6: the server's inotify watch turns deliver's file into EXISTS."""
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
            for n in (1, 2):
                assert _deliver_cli(mail_server, "alice", b"Subject: idle\n\nx\n").returncode == 0
                responses = client.idle_check(timeout=10)
                assert (n, b"EXISTS") in responses
        finally:
            client.idle_done()
        fetched = client.fetch([1, 2], ["FLAGS"])  # imapclient: UID FETCH, keyed by UID
        assert sorted(fetched) == [1, 2]
        assert all(SEEN.encode() not in fetched[n][b"FLAGS"] for n in fetched)
    finally:
        client.logout()
