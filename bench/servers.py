"""The two servers under test, started the same way: own temp dir, same users, same data.

``MailaccessServer`` runs ``twistd -n mailaccess`` on a config written by
``mailaccess init``; ``DovecotServer`` wraps the project's Dovecot harness
(tests/support/dovecot.py) with the limits a benchmark needs.  Both give each user a
real copy of the pristine generated Maildir, and both are context managers that stop
every process they started, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from bench.generate import copy_maildir
from bench.workloads import PASSWORD, Target
from tests.support.net import free_ports, port_open

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

PROTOCOL_NAMES = ("imap", "imaps", "pop3", "pop3s", "lmtp")

#: Dovecot's defaults are sized for a small host: 100 processes per service and 10
#: connections per user and IP.  The benchmark opens 1,000 sessions of one user from
#: 127.0.0.1, so these are raised; nothing else about Dovecot is tuned (Debian's
#: defaults, including high-security login processes, are what users run).
DOVECOT_LIMITS = """\
default_process_limit = 2000
default_client_limit = 6000
service anvil {
  client_limit = 6000
}
service auth {
  client_limit = 6000
}
protocol imap {
  mail_max_userip_connections = 5000
}
protocol pop3 {
  mail_max_userip_connections = 5000
}
"""


#: The listen queue mailaccess's endpoints get (see MailaccessServer.start).
LISTEN_BACKLOG = 1024


class ServerUnavailable(Exception):
    """The server cannot be run here; the message says why (shown in the table)."""


class _Server:
    """What both servers share: users with copied Maildirs and fresh scan users."""

    name = ""

    def __init__(self, workdir: Path, mailboxes: Mapping[str, Path | None], fresh: Path | None,
                 fresh_count: int) -> None:  # fmt: skip
        self.workdir = workdir
        self.mailboxes = dict(mailboxes)  # user -> pristine Maildir (None: empty)
        self.fresh_source = fresh
        self.fresh_users = [f"scan{i}" for i in range(1, fresh_count + 1)]
        self._fresh_next = 0
        self.mail_root = workdir / "mail"
        self.target: Target | None = None

    @property
    def users(self) -> list[str]:
        return [*self.mailboxes, *self.fresh_users]

    def _populate(self) -> None:
        for user, source in self.mailboxes.items():
            destination = self.mail_root / user
            if source is not None:
                copy_maildir(source, destination)
            else:
                for sub in ("cur", "new", "tmp"):
                    (destination / sub).mkdir(parents=True, exist_ok=True)

    def start(self) -> Target:
        """Start the server with its users and mail; raise ServerUnavailable if it cannot."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process this server started (safe to call twice)."""
        raise NotImplementedError

    def fresh_user(self) -> str:
        """Copy the pristine big Maildir to the next unused scan user; its name.

        The previous scan user's copy is deleted first: its workload is over,
        and keeping every copy (680 MB each, 4 per repetition and server)
        filled the disk of a full run.
        """
        if self.fresh_source is None or self._fresh_next >= len(self.fresh_users):
            raise ServerUnavailable("no fresh scan user left")
        if self._fresh_next > 0:
            shutil.rmtree(self.mail_root / self.fresh_users[self._fresh_next - 1], True)
        user = self.fresh_users[self._fresh_next]
        self._fresh_next += 1
        destination = self.mail_root / user
        if destination.exists():
            shutil.rmtree(destination)
        copy_maildir(self.fresh_source, destination)
        # The server may run mail as another user (the Dovecot harness uses an
        # unprivileged one as root): give the copy to whoever owns the mail root.
        owner = self.mail_root.stat()
        if (owner.st_uid, owner.st_gid) != (os.getuid(), os.getgid()):
            subprocess.run(
                ["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", str(destination)], check=True
            )
        return user


class MailaccessServer(_Server):
    """mailaccess under ``twistd -n``, configured by ``mailaccess init`` in *workdir*."""

    name = "mailaccess"

    def __init__(self, workdir: Path, mailboxes: Mapping[str, Path | None], fresh: Path | None,
                 fresh_count: int) -> None:  # fmt: skip
        super().__init__(workdir, mailboxes, fresh, fresh_count)
        self.process: subprocess.Popen[bytes] | None = None
        self.config = self.workdir / "mailaccess.toml"
        self.log_path = self.workdir / "twistd.log"

    def _cli(self, *args: str, stdin: str | None = None) -> None:
        result = subprocess.run(
            [str(VENV_BIN / "mailaccess"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise ServerUnavailable(
                f"mailaccess {' '.join(args[:2])} failed: "
                f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}"
            )

    def start(self) -> Target:
        """Init a setup, add the users, copy the mail, start twistd, wait for listeners."""
        if not (VENV_BIN / "mailaccess").exists():
            raise ServerUnavailable("the mailaccess command is not installed in the venv")
        ports = dict(zip(PROTOCOL_NAMES, free_ports(len(PROTOCOL_NAMES)), strict=True))
        # backlog: Twisted's default listen queue is 50.  200 clients connecting at once
        # overflow it; the kernel then answers with SYN cookies, the client thinks it is
        # connected, the server never accepts, and a protocol where the server speaks
        # first (IMAP, POP3) waits forever.  Dovecot gets its limits raised too.
        listen = [
            f"--listen={p}=tcp:{port}:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"
            for p, port in ports.items()
        ]
        self._cli("init", str(self.workdir), *listen, "--force")
        # Loopback-only benchmark: allow plaintext logins like the Dovecot side does.
        text = self.config.read_text()
        text = text.replace('allow_plaintext = "loopback"', 'allow_plaintext = "always"')
        self.config.write_text(text)
        for user in self.users:
            # PLAIN like the Dovecot harness, so neither pays for a password hash.
            self._cli("user", "add", user, "--password-stdin", "--scheme", "PLAIN",
                      "--config", str(self.config), stdin=PASSWORD + "\n")  # fmt: skip
        self._populate()
        self._ports = ports
        self._spawn()
        opened = self._wait_listening(ports)
        self.target = Target(
            self.name, "127.0.0.1", ports, self.process.pid,  # type: ignore[union-attr]
            frozenset(p for p in opened if p in ("imap", "pop3", "lmtp")),
            self.fresh_user, restart=self.restart,
        )  # fmt: skip
        return self.target

    def restart(self) -> int:
        """Stop twistd and start it again on the same setup; the new pid."""
        self.stop()
        self._spawn()
        self._wait_listening(self._ports)
        assert self.process is not None
        if self.target is not None:
            self.target.root_pid = self.process.pid
        return self.process.pid

    def _spawn(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "-l", str(self.log_path),
             "mailaccess", "--config", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir,
            start_new_session=True,
        )  # fmt: skip
        log.close()

    def _wait_listening(self, ports: dict[str, int]) -> set[str]:
        """Wait for the listeners; those of protocols not written yet never open."""
        assert self.process is not None
        deadline = time.monotonic() + 30
        opened: set[str] = set()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                self.process = None
                raise ServerUnavailable(f"twistd exited: {' | '.join(tail)}")
            opened = {p for p, port in ports.items() if port_open(port)}
            if len(opened) == len(ports) or (opened and time.monotonic() > deadline - 25):
                break  # all up, or some up and 5 s passed: the rest are not coming
            time.sleep(0.1)
        if not opened:
            self.stop()
            # The service logs why each listener stayed closed ("... not implemented yet").
            reasons = [
                line.split("] ", 1)[-1]
                for line in self.log_path.read_text(errors="replace").splitlines()
                if "not implemented" in line or "not starting" in line
            ]
            raise ServerUnavailable(reasons[0] if reasons else "twistd opened no listener")
        return opened

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the whole session after 10 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def __enter__(self) -> MailaccessServer:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()


class DovecotServer(_Server):
    """Debian's Dovecot 2.3 through the project's test harness."""

    name = "Dovecot"

    def __init__(self, workdir: Path, mailboxes: Mapping[str, Path | None], fresh: Path | None,
                 fresh_count: int) -> None:  # fmt: skip
        super().__init__(workdir, mailboxes, fresh, fresh_count)
        self.harness: object | None = None

    def start(self) -> Target:
        """Write the harness config with raised limits, copy the mail, start dovecot."""
        sys.path.insert(0, str(ROOT))
        try:
            from tests.support.dovecot import Dovecot, DovecotError, dovecot_missing_reason
        except ImportError as e:
            raise ServerUnavailable(f"the Dovecot harness cannot be imported: {e}") from None
        reason = dovecot_missing_reason()
        if reason is not None:
            raise ServerUnavailable(reason)
        self._populate()
        harness = Dovecot(
            self.workdir,
            users=dict.fromkeys(self.users, PASSWORD),
            mail_root=self.mail_root,
            extra_config=DOVECOT_LIMITS,
        )
        try:
            harness.start()
        except DovecotError as e:
            raise ServerUnavailable(f"Dovecot did not start: {str(e)[:300]}") from None
        self.harness = harness
        pid = int((harness.base_dir / "master.pid").read_text().split()[0])
        self.target = Target(
            self.name, "127.0.0.1", dict(harness.ports), pid,
            frozenset({"imap", "pop3", "lmtp"}), self.fresh_user,
        )  # fmt: skip
        return self.target

    def version(self) -> str:
        result = subprocess.run(["dovecot", "--version"], capture_output=True, text=True)
        return result.stdout.strip()

    def stop(self) -> None:
        harness, self.harness = self.harness, None
        if harness is not None:
            harness.stop()  # type: ignore[attr-defined]

    def __enter__(self) -> DovecotServer:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()
