"""Session-wide test helpers: a real mailaccess server in a subprocess.

End-to-end tests use the ``mail_server`` fixture (or ``start_mail_server`` for
a server with config overrides).  See :class:`MailServer` for what it offers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_ports

# pytester: for the test that the mail_server fixture itself can fail a test.
pytest_plugins = ["pytester"]

PROTOCOLS = ("imap", "imaps", "pop3", "pop3s", "lmtp")
READY_MARK = "mailaccess ready: listening on"
# What must never appear in the server's log of a passing test.
LOG_FAILURES = ("Traceback (most recent call last)", "Unhandled Error", "Unhandled error")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def cli_command(*args: str) -> list[str]:
    """The argv that runs ``mailaccess ARGS`` with this interpreter."""
    return [sys.executable, "-m", "mailaccess.cli", *args]


def twistd_command(*args: str) -> list[str]:
    """The argv that runs ``twistd ARGS`` with this interpreter."""
    code = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    return [sys.executable, "-c", code, *args]


def subprocess_env() -> dict[str, str]:
    """The environment for servers and CLI runs: no stray MAILACCESS_CONFIG."""
    env = dict(os.environ)
    env.pop("MAILACCESS_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def toml_dumps(data: Mapping[str, Any]) -> str:
    """TOML text for *data*: top-level tables of scalars, string arrays, subtables."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a valid TOML basic string
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(i) for i in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    def table(name: str, items: Mapping[str, Any]) -> list[str]:
        lines = [f"[{name}]"]
        subtables = []
        for k, v in items.items():
            if isinstance(v, Mapping):
                subtables.append((f"{name}.{json.dumps(k)}", v))
            else:
                lines.append(f"{json.dumps(k)} = {value(v)}")
        lines.append("")
        for sub_name, sub_items in subtables:
            lines += table(sub_name, sub_items)
        return lines

    out: list[str] = []
    for name, items in data.items():
        out += table(name, items)
    return "\n".join(out)


def deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """*base* with *overrides* merged in, tables recursively."""
    merged = dict(base)
    for key, v in overrides.items():
        if isinstance(v, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], v)
        else:
            merged[key] = v
    return merged


class MailServer:
    """A mailaccess server run by ``twistd -n mailaccess`` in a subprocess.

    Made by ``mailaccess init`` in a temp directory, listening on free
    loopback ports.  Use it from tests like this::

        def test_login(mail_server):
            mail_server.add_user("alice", "secret")
            with imaplib.IMAP4("localhost", mail_server.ports["imap"]) as imap: ...

    Attributes and methods:

    - ``ports``: protocol name (imap, imaps, pop3, pop3s, lmtp) -> port.
    - ``started``: the protocols that are really listening (protocols not
      written yet are logged and skipped by the server).
    - ``directory``: the setup directory; ``config_path`` its config file.
    - ``cert``: the PEM certificate, to give clients as their CA
      (``ssl_context()`` builds a verifying client context from it).
    - ``add_user(name, password)``: ``mailaccess user add`` (the running
      server reads the users file at each login).
    - ``maildir(user)``: the user's Maildir (``mail/<user>``).
    - ``log_text()``: the server log so far.
    - ``stop()``, ``start()``, ``restart()``, ``signal(signum)``.

    At teardown the server is stopped and the test fails if its log holds a
    traceback.
    """

    def __init__(self, directory: Path, overrides: Mapping[str, Any]) -> None:
        self.directory = directory
        self.config_path = directory / "mailaccess.toml"
        self.log_path = directory / "twistd.log"
        self.pid_path = directory / "twistd.pid"
        self.cert = directory / "tls" / "cert.pem"
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.started: set[str] = set()
        self._overrides = overrides
        self._setup()

    # -- setup -----------------------------------------------------------------

    def _setup(self) -> None:
        self.run_cli("init", str(self.directory))
        self.ports = dict(zip(PROTOCOLS, free_ports(len(PROTOCOLS)), strict=True))
        self._write_config()

    def _write_config(self) -> None:
        data = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        data["listen"] = {
            proto: [f"tcp:{port}:interface=127.0.0.1"] for proto, port in self.ports.items()
        }
        data = deep_merge(data, self._overrides)
        self.config_path.write_text(toml_dumps(data), encoding="utf-8")

    def run_cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``mailaccess ARGS --config <ours>``; fail the test if it fails."""
        argv = list(args)
        if args and args[0] != "init":
            argv.append(f"--config={self.config_path}")
        result = subprocess.run(
            cli_command(*argv),
            input=input,
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
        )
        if result.returncode != 0:
            pytest.fail(f"mailaccess {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    # -- what tests use ---------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Add a user with *password* (ARGON2ID) through the admin command."""
        pytest.importorskip("mailaccess.auth.passwd")
        self.run_cli("user", "add", name, "--password-stdin", input=password + "\n")

    def maildir(self, user: str) -> Path:
        """The Maildir of *user* (it may not exist before the first login)."""
        return self.directory / "mail" / user

    def log_text(self) -> str:
        """The server's log (twistd --logfile) so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this server's certificate."""
        return ssl.create_default_context(cafile=str(self.cert))

    def signal(self, signum: int) -> None:
        """Send *signum* (e.g. SIGHUP to reload the certificate) to the server."""
        assert self.process is not None, "the server is not running"
        self.process.send_signal(signum)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start twistd and wait until it says it is ready and its ports accept."""
        assert self.process is None, "already running"
        ready_before = self.log_text().count(READY_MARK)
        self.process = subprocess.Popen(
            twistd_command(
                "-n",
                f"--logfile={self.log_path}",
                f"--pidfile={self.pid_path}",
                "mailaccess",
                f"--config={self.config_path}",
            ),
            cwd=self.directory,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while self.log_text().count(READY_MARK) <= ready_before:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                self.process = None
                pytest.fail(f"mailaccess did not start:\n{output}\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mailaccess not ready after {START_TIMEOUT}s:\n{self.log_text()}")
            time.sleep(0.05)
        ready_line = self.log_text().split(READY_MARK)[-1].splitlines()[0]
        self.started = {p for p in PROTOCOLS if re.search(rf"(^|, ){p} tcp:", ready_line.strip())}
        for proto in self.started:
            with socket.create_connection(("127.0.0.1", self.ports[proto]), timeout=5):
                pass

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"mailaccess did not stop on SIGTERM:\n{self.log_text()}")
        finally:
            if process.stdout is not None:
                process.stdout.close()

    def restart(self) -> None:
        """Stop and start again on the same ports with the same files."""
        self.stop()
        self.start()

    def log_failures(self) -> list[str]:
        """The alarming lines (tracebacks, unhandled errors) of the log."""
        return [mark for mark in LOG_FAILURES if mark in self.log_text()]


@pytest.fixture
def start_mail_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., MailServer]]:
    """A factory: ``start_mail_server(**overrides)`` starts a server and returns it.

    Each keyword names a config section and maps to its keys, merged into the
    config ``mailaccess init`` wrote, e.g.
    ``start_mail_server(pop3={"exclusive": True}, auth={"allow_plaintext": "always"})``.
    Every server started is stopped at teardown, and the test fails if a
    server's log holds a traceback.
    """
    servers: list[MailServer] = []

    def start(**overrides: Any) -> MailServer:
        directory = tmp_path_factory.mktemp("mailaccess") / "setup"
        server = MailServer(directory, overrides)
        servers.append(server)
        server.start()
        return server

    yield start
    problems = []
    for server in servers:
        server.stop()
        failures = server.log_failures()
        if failures:
            problems.append(f"{server.log_path} holds {failures}:\n{server.log_text()}")
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def mail_server(start_mail_server: Callable[..., MailServer]) -> MailServer:
    """A running server with the default test config; see :class:`MailServer`."""
    return start_mail_server()
