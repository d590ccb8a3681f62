"""``mailaccess demo`` against the server the README's run command starts.

Set up the way ``make run`` does it (``mailaccess init var --demo demo``, then
``twistd -n mailaccess --config var/mailaccess.toml`` from the directory that
holds ``var/``), but on free loopback ports; then ``mailaccess demo --plain``
runs with no options at all, so it must find the server from
``var/mailaccess.toml`` by itself.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from mailaccess.demo import Endpoint, Screen, Transcript, client_endpoint
from tests.conftest import (
    READY_MARK,
    cli_command,
    subprocess_env,
    twistd_command,
)
from tests.support.net import free_ports


@attrs.frozen
class DemoRun:
    root: Path  # the directory holding var/, like the repository for `make run`
    result: subprocess.CompletedProcess[str]
    stepped: subprocess.CompletedProcess[str]
    log: str
    demo_mail_before: list[str]


def _messages(maildir: Path) -> list[str]:
    return sorted(
        p.name.split(":")[0] for sub in ("new", "cur") for p in (maildir / sub).iterdir()
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    root = tmp_path_factory.mktemp("make-run")
    imap, pop3, lmtp = free_ports(3)
    env = subprocess_env()
    subprocess.run(
        cli_command(
            "init",
            "var",
            "--demo",
            "demo",
            f"--listen=imap=tcp:{imap}:interface=127.0.0.1",
            f"--listen=pop3=tcp:{pop3}:interface=127.0.0.1",
            f"--listen=lmtp=tcp:{lmtp}:interface=127.0.0.1",
            "--listen=imaps=",
            "--listen=pop3s=",
        ),
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    demo_mail_before = _messages(root / "var/mail/demo")
    log_path = root / "twistd.log"
    server = subprocess.Popen(
        twistd_command(
            "-n",
            f"--logfile={log_path}",
            f"--pidfile={root / 'twistd.pid'}",
            "mailaccess",
            "--config",
            "var/mailaccess.toml",
        ),
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while READY_MARK not in (log_path.read_text() if log_path.exists() else ""):
            assert server.poll() is None, "the server did not start"
            assert time.monotonic() < deadline, "the server was not ready in 30 s"
            time.sleep(0.1)
        env["COLUMNS"] = "100"
        result = subprocess.run(
            cli_command("demo", "--plain"),
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        # --step with the config named, as a person would: Enter between steps.
        stepped = subprocess.run(
            cli_command("demo", "--step", "--config", "var/mailaccess.toml"),
            cwd=root,
            env=env,
            input="\n" * 6,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.terminate()
        server.wait(15)
    yield DemoRun(root, result, stepped, log_path.read_text(), demo_mail_before)


def test_demo_plain_runs_to_the_end(demo_run: DemoRun) -> None:
    result = demo_run.result
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "done: 7 steps" in out
    for step in range(1, 8):
        assert f"Step {step}. " in out
    assert "\033[" not in out  # --plain: no colour codes


def test_demo_step_waits_for_enter_between_steps(demo_run: DemoRun) -> None:
    stepped = demo_run.stepped
    assert stepped.returncode == 0, stepped.stderr
    # Six pauses between seven steps; output to a pipe is never coloured.
    assert stepped.stdout.count("[Enter]") == 6
    assert "done: 7 steps" in stepped.stdout
    assert "\033[" not in stepped.stdout


def test_demo_shows_the_contract_on_the_wire(demo_run: DemoRun) -> None:
    out = demo_run.result.stdout
    # Rule 3: RETR sets \Seen, pushed into IDLE.
    assert "C: RETR 1" in out and "S: * 1 FETCH (FLAGS (\\Seen \\Recent))" in out
    # Rule 5: IMAP EXPUNGE during the POP3 session.
    assert "S: -ERR message 3 was removed by another session" in out
    # Rule 4: DELE -> \Deleted at once; QUIT -> EXPUNGE.
    assert "S: * 2 FETCH (FLAGS (\\Deleted \\Recent))" in out
    assert "S: +OK bye, 1 deleted" in out and "S: * 2 EXPUNGE" in out
    # Rule 6: new mail reaches IDLE at once.
    assert "S: * 3 EXISTS" in out
    # Rule 2: UIDL of message 1 is the same in both POP3 sessions.
    uidl_lines = [line for line in out.splitlines() if line.startswith("S: 1 0000000")]
    assert len(uidl_lines) == 2 and uidl_lines[0] == uidl_lines[1], uidl_lines


def test_demo_columns_fit_the_terminal(demo_run: DemoRun) -> None:
    lines = demo_run.result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert any(line.startswith(" " * 40) and " | S: " in line for line in lines)


def test_demo_never_prints_a_password(demo_run: DemoRun) -> None:
    out = demo_run.result.stdout
    assert "PASS ********" in out and "LOGIN demo-pop-imap-" in out
    password = (demo_run.root / "var/demo-password").read_text().strip()
    assert password not in out
    assert "{SHA512-CRYPT}" not in out and "$6$" not in out


def test_demo_removes_its_user_and_mail_and_leaves_other_mail_alone(demo_run: DemoRun) -> None:
    users = (demo_run.root / "var/users").read_text()
    assert "demo-pop-imap-" not in users
    assert users.startswith("demo:")
    mail = demo_run.root / "var/mail"
    throwaway = sorted(p for p in mail.iterdir() if p.name != "demo")
    assert len(throwaway) == 2  # one per run (plain and --step): empty Maildirs
    for maildir in throwaway:
        assert maildir.name.startswith("demo-pop-imap-")
        assert _messages(maildir) == []
    assert _messages(mail / "demo") == demo_run.demo_mail_before


def test_demo_leaves_no_traceback_in_the_server_log(demo_run: DemoRun) -> None:
    assert "Traceback" not in demo_run.log
    assert "critical" not in demo_run.log


def test_demo_without_a_server_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        cli_command("demo", "--plain"),
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "var/mailaccess.toml does not exist" in result.stderr
    assert "make run" in result.stderr
    assert "Traceback" not in result.stderr


def test_client_endpoint_reads_listen_strings() -> None:
    assert client_endpoint("tcp:1110:interface=127.0.0.1") == Endpoint("127.0.0.1", 1110)
    assert client_endpoint("tcp:port=143") == Endpoint("127.0.0.1", 143)
    assert client_endpoint("tcp6:143:interface=\\:\\:1") == Endpoint("::1", 143)
    assert client_endpoint("unix:/run/lmtp.sock:mode=660") == Endpoint("/run/lmtp.sock")
    assert client_endpoint("ssl:993") is None


def test_screen_wraps_long_lines_into_the_column() -> None:
    import io

    out = io.StringIO()
    screen = Screen(out, colour=False, width=60)
    transcript = Transcript()
    transcript.add("imap", "server", "S: * OK [CAPABILITY " + "IMAP4rev1 " * 10 + "]")
    transcript.add("pop3", "client", "C: RETR 1")
    screen.step(1, "a title", transcript)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 60 for line in lines)
    imap_lines = [line for line in lines if " | S: " in line or " |      " in line]
    assert len(imap_lines) > 2  # wrapped, continuation indented
    assert "C: RETR 1" in lines[-1] and lines[-1].startswith("C:")


def test_screen_colours_only_when_asked() -> None:
    import io

    transcript = Transcript()
    transcript.add("pop3", "error", "S: -ERR message 3 was removed")
    transcript.add("imap", "push", "S: * 1 FETCH (FLAGS (\\Seen))")
    coloured, plain = io.StringIO(), io.StringIO()
    Screen(coloured, colour=True, width=100).step(1, "title", transcript)
    Screen(plain, colour=False, width=100).step(1, "title", transcript)
    assert "\033[1;31mS: -ERR" in coloured.getvalue()
    assert "\033[" not in plain.getvalue()
    assert plain.getvalue() == _strip_ansi(coloured.getvalue())


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\033\[[0-9;]*m", "", text)
