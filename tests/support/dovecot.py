"""A real Dovecot on loopback, for compatibility tests and the benchmark.

``Dovecot`` writes a self-contained configuration into a directory of its own
(base_dir, state_dir, log, certificate, passwd-file), listens on 127.0.0.1 on
free ports, and never reads or touches the system's ``/etc/dovecot``.  Mail is
``maildir:<mail_root>/<user>`` — the same layout mailaccess uses, so a test can
point our store and Dovecot at one directory.

It runs as an ordinary user (every process and mail file is that user's) or
as root (CI).  As root, Dovecot insists on unprivileged helpers (Debian's
``dovecot``/``dovenull`` users) and refuses mail access as UID 0, so mail
belongs to ``nobody``: ``hand_over()`` gives files our store wrote to that
user (``start()`` does it for the whole mail root), and ``as_mail_user()``
runs our store as that user while Dovecot works on the same files.

    require_dovecot()
    with Dovecot(tmp_path / "dovecot", users={"alice": "secret"}) as dovecot:
        imap = imaplib.IMAP4("127.0.0.1", dovecot.ports["imap"])
        dovecot.doveadm("mailbox", "list", "-u", "alice")
"""

from __future__ import annotations

import contextlib
import datetime
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.net import free_ports, port_open

__all__ = [
    "PROTOCOLS",
    "Dovecot",
    "DovecotError",
    "dovecot_missing_reason",
    "make_self_signed_cert",
    "require_dovecot",
]

#: The listeners the harness opens, by the name used in ``Dovecot.ports``.
PROTOCOLS = ("imap", "imaps", "pop3", "pop3s", "lmtp")

_BINARIES = ("dovecot", "doveadm")
# Debian splits the protocol daemons into packages; the harness needs all three.
_DAEMONS = ("imap", "pop3", "lmtp")
_LIBEXEC = Path("/usr/lib/dovecot")


class DovecotError(RuntimeError):
    """Dovecot did not start, stop or answer as the harness expected."""


class _PortTaken(Exception):
    """Another process bound one of the ports chosen for Dovecot first."""


def dovecot_missing_reason() -> str | None:
    """Why a real Dovecot cannot be run here, or None if it can."""
    for binary in _BINARIES:
        if shutil.which(binary) is None and not _binary_exists(binary):
            return (
                f"Dovecot is not installed ({binary!r} not found); "
                "apt-get install dovecot-imapd dovecot-pop3d dovecot-lmtpd"
            )
    for daemon in _DAEMONS:
        if not (_LIBEXEC / daemon).exists():
            return (
                f"Dovecot's {daemon} daemon is missing ({_LIBEXEC / daemon}); "
                f"apt-get install dovecot-{daemon}d"
            )
    return None


def _binary_exists(name: str) -> bool:
    # /usr/sbin is not on every user's PATH.
    return Path("/usr/sbin", name).exists()


def require_dovecot() -> None:
    """Skip the calling test, saying why, when a real Dovecot cannot run here."""
    reason = dovecot_missing_reason()
    if reason is not None:
        pytest.skip(reason)


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def make_self_signed_cert(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` for *hostname* into *directory*.

    The certificate names the host in its SAN (DNS and 127.0.0.1): mbsync,
    fetchmail and offlineimap ignore IP SANs, so clients connect to
    ``localhost`` (see CLIENTS.md).
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class Dovecot:
    """One private Dovecot instance (IMAP, IMAPS, POP3, POP3S, LMTP on 127.0.0.1).

    ``workdir`` receives the configuration, runtime directories and log;
    ``mail_root`` (default ``workdir/mail``) holds one Maildir per user at
    ``mail_root/<user>``.  ``extra_config`` is appended to the generated
    configuration (later settings win), for tests that need another knob.
    """

    def __init__(
        self,
        workdir: Path,
        users: Mapping[str, str] | None = None,
        mail_root: Path | None = None,
        extra_config: str = "",
        uidl_format: str = "%08Xu%08Xv",
    ) -> None:
        self.workdir = Path(workdir).absolute()
        self.users = dict(users if users is not None else {"alice": "secret"})
        self.mail_root = (
            Path(mail_root).absolute() if mail_root is not None else self.workdir / "mail"
        )
        self.extra_config = extra_config
        self.uidl_format = uidl_format
        # Unix socket paths are limited to 108 bytes and pytest's tmp_path is
        # long, so the runtime directory lives in a short /tmp path of its own.
        self.base_dir = Path(tempfile.mkdtemp(prefix="dovecot-", dir="/tmp"))
        self.base_dir.chmod(0o755)  # Dovecot wants it world-readable
        self.state_dir = self.workdir / "state"
        self.log_path = self.workdir / "dovecot.log"
        self.config_path = self.workdir / "dovecot.conf"
        self.passwd_path = self.workdir / "passwd"
        self.cert_path = self.workdir / "cert.pem"
        self.key_path = self.workdir / "key.pem"
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None

    # --- configuration ------------------------------------------------------

    def user_root(self, user: str) -> Path:
        """The Maildir of *user* (INBOX's cur/new/tmp, ``.Folder`` siblings)."""
        return self.mail_root / user

    def _accounts(self) -> tuple[str, str, int, int]:
        """(internal user, login user, mail uid, mail gid) for our identity."""
        uid, gid = os.getuid(), os.getgid()
        if uid != 0:
            # Unprivileged: Dovecot cannot switch users, so every service and
            # every mail file belongs to us.
            me = pwd.getpwuid(uid).pw_name
            return me, me, uid, gid
        # As root Dovecot insists on unprivileged internal and login users
        # (Debian's package creates dovecot/dovenull), and its imap/pop3
        # refuse "Mail access not allowed for root": mail belongs to nobody.
        internal = _existing_user("dovecot", "nobody")
        login = _existing_user("dovenull", "nobody")
        mail_user = pwd.getpwnam(_existing_user("nobody"))
        return internal, login, mail_user.pw_uid, mail_user.pw_gid

    @property
    def mail_uid(self) -> int:
        """The uid Dovecot reads and writes mail as."""
        return self._accounts()[2]

    @property
    def mail_gid(self) -> int:
        """The gid Dovecot reads and writes mail as."""
        return self._accounts()[3]

    @contextlib.contextmanager
    def as_mail_user(self) -> Iterator[None]:
        """Run the block with Dovecot's mail uid/gid as the effective ids.

        For tests that run our store *while* Dovecot works on the same files:
        as root, files our store created would be unreadable to Dovecot's mail
        processes.  Keep the block short (pytest itself cannot write as that
        user).  A no-op when not root.
        """
        if os.geteuid() != 0:
            yield
            return
        os.setegid(self.mail_gid)
        os.seteuid(self.mail_uid)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)

    def hand_over(self, path: Path | None = None) -> None:
        """Give *path* (default: the whole mail root) to Dovecot's mail user.

        Needed only when the tests run as root: files our store wrote belong to
        root and Dovecot's mail processes (never root) could not change them.
        Also makes the directories above *path* traversable for that user
        (o+x only; pytest's temporary directories are 0700).
        """
        if os.getuid() != 0:
            return
        target = Path(path if path is not None else self.mail_root).absolute()
        uid, gid = self.mail_uid, self.mail_gid
        for parent in target.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
        if not target.exists():
            return
        os.chown(target, uid, gid)
        for root, dirs, files in os.walk(target):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)

    def write_config(self) -> None:
        """Write the config, passwd-file, certificate and directories."""
        for directory in (self.workdir, self.base_dir, self.state_dir, self.mail_root):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.cert_path.exists():
            make_self_signed_cert(self.workdir)
        self.hand_over()
        if not self.ports:
            self.ports = dict(zip(PROTOCOLS, free_ports(len(PROTOCOLS)), strict=True))
        internal, login, uid, gid = self._accounts()
        group = grp.getgrgid(gid).gr_name
        # passwd-file: user:{scheme}password:uid:gid::home.  uid/gid stay empty
        # (Dovecot's passwd-file refuses UID 0); mail_uid/mail_gid below
        # supply them, root included.
        self.passwd_path.write_text(
            "".join(
                f"{user}:{{PLAIN}}{password}:::{self.user_root(user)}\n"
                for user, password in self.users.items()
            )
        )
        self.passwd_path.chmod(0o600)
        # As root, auth would run as the internal user, which cannot read our
        # 0600 passwd-file in a 0700 pytest directory: keep it root.
        auth_user = "service auth {\n  user = root\n}\nservice auth-worker {\n  user = root\n}\n"
        ports = self.ports
        config = f"""\
# Written by tests/support/dovecot.py: a private instance, no /etc/dovecot.
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
instance_name = mailaccess-test-{self.ports["imap"]}
protocols = imap pop3 lmtp
listen = 127.0.0.1
default_internal_user = {internal}
default_internal_group = {group if os.getuid() != 0 else _existing_group(internal)}
default_login_user = {login}
# Mail runs as whoever runs the tests, root included (CI).
first_valid_uid = 0
first_valid_gid = 0
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{self.mail_root}/%u
# Dovecot's default separator for Maildir++ is "."; say it explicitly.
namespace inbox {{
  inbox = yes
  separator = .
  prefix =
}}
ssl = yes
ssl_cert = <{self.cert_path}
ssl_key = <{self.key_path}
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
# Loopback only, so plaintext logins are harmless here.
disable_plaintext_auth = no
pop3_uidl_format = {self.uidl_format}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.passwd_path}
}}
userdb {{
  driver = passwd-file
  args = {self.passwd_path}
}}
# Chroot needs root; tests gain nothing from it, so never chroot.
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {ports["imap"]}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ports["imaps"]}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {ports["pop3"]}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {ports["pop3s"]}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {ports["lmtp"]}
  }}
}}
service imap {{
  executable = {_LIBEXEC / "imap"}
}}
service pop3 {{
  executable = {_LIBEXEC / "pop3"}
}}
# doveadm talks to the running instance through its own socket here.
service doveadm {{
  unix_listener doveadm-server {{
    mode = 0600
  }}
}}
lmtp_save_to_detail_mailbox = no
{auth_user if os.getuid() == 0 else ""}
{self.extra_config}
"""
        self.config_path.write_text(config)

    # --- lifetime -----------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Start Dovecot in the foreground (a child process) and wait for its ports.

        Free ports are chosen before Dovecot binds them, so another process
        may take one meanwhile; then new ports are chosen and Dovecot started
        again (three tries).
        """
        if self._process is not None:
            raise DovecotError("this Dovecot is already running")
        try:
            for attempt in range(3):
                try:
                    self._start_once(timeout)
                    return
                except _PortTaken:
                    if attempt == 2:
                        raise DovecotError(f"no free ports for Dovecot:\n{self.log()}") from None
                    self.ports = {}
        except BaseException:
            self.stop()  # no half-started instance, no runtime directory left
            raise

    def _start_once(self, timeout: float) -> None:
        self.write_config()
        log_size = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = (self.workdir / "dovecot.stderr").open("ab")
        self._process = subprocess.Popen(
            [_binary("dovecot"), "-F", "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        waiting = set(PROTOCOLS)
        while waiting:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                if "Address already in use" in self.log()[log_size:]:
                    raise _PortTaken()
                raise DovecotError(f"dovecot exited with status {code}:\n{self.log()}")
            waiting = {name for name in waiting if not port_open(self.ports[name])}
            if waiting and time.monotonic() > deadline:
                self.stop()
                raise DovecotError(
                    f"dovecot did not open {sorted(waiting)} within {timeout}s:\n{self.log()}"
                )
            if waiting:
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    # Its children share the session we gave it: end them all.
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout)
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        # Dovecot answers a client "Internal error occurred" and says why only
        # in its log: surface that (pytest shows stderr of failed tests).
        problems = self.problems()
        if problems:
            sys.stderr.write("Dovecot logged problems:\n" + "\n".join(problems) + "\n")

    @property
    def running(self) -> bool:
        """Whether the master process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- tools --------------------------------------------------------------

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``doveadm -c <our config> ARGS`` and return its output (text)."""
        if not self.config_path.exists():
            self.write_config()
        result = subprocess.run(
            [_binary("doveadm"), "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def problems(self) -> list[str]:
        """The Error, Fatal and Panic lines of Dovecot's log so far."""
        return [
            line
            for line in self.log().splitlines()
            if any(level in line for level in (" Error: ", " Fatal: ", " Panic: "))
        ]

    def log(self) -> str:
        """Everything Dovecot logged so far (its log file and stderr)."""
        parts = []
        for path in (self.log_path, self.workdir / "dovecot.stderr"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)


def _existing_user(*names: str) -> str:
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise DovecotError(f"none of the users {names} exists; Dovecot needs one to run as")


def _existing_group(user: str) -> str:
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
