"""``mailaccess``: the admin command (users, config check, certificates, setup).

Every subcommand takes ``--config FILE`` (default: $MAILACCESS_CONFIG, then
``etc/mailaccess.toml``).  Failures print one line saying what is wrong and
exit non-zero; nothing prints a traceback for a mistake a person can make.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import ipaddress
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from mailaccess.config import (
    CONFIG_ENV_VAR,
    Config,
    ConfigError,
    default_config_path,
    endpoint_problem,
    load_config,
)

PROG = "mailaccess"

#: What ``mailaccess init`` listens on: unprivileged loopback ports.
DEFAULT_LISTEN: dict[str, str] = {
    "imap": "tcp:1143:interface=127.0.0.1",
    "imaps": "tcp:1993:interface=127.0.0.1",
    "pop3": "tcp:1110:interface=127.0.0.1",
    "pop3s": "tcp:1995:interface=127.0.0.1",
    "lmtp": "tcp:2424:interface=127.0.0.1",
}


class CommandError(Exception):
    """A failure to report to the user as one line, then exit 1."""


# --- certificates --------------------------------------------------------------


def generate_self_signed(hostname: str = "localhost", days: int = 825) -> tuple[bytes, bytes]:
    """A development certificate and its key, both PEM: (certificate, key).

    The subject alternative names hold ``DNS:localhost`` (mail clients check
    the SAN, not the common name), *hostname* if different, and the loopback
    addresses.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hostname),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailaccess development"),
        ]
    )
    dns_names = ["localhost"] + ([hostname] if hostname != "localhost" else [])
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    # A minute of slack so a client whose clock is a little behind accepts it.
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write *data* to *path* atomically, created with *mode* (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_certificate(cert_path: Path, key_path: Path, hostname: str, days: int) -> None:
    """Generate a self-signed pair; the key is written (0600) before the cert."""
    cert_pem, key_pem = generate_self_signed(hostname, days)
    write_private(key_path, key_pem, 0o600)
    write_private(cert_path, cert_pem, 0o644)


# --- init ------------------------------------------------------------------------


def render_init_config(hostname: str, listen: dict[str, str]) -> str:
    """The commented config ``mailaccess init`` writes (paths relative to it)."""

    def listen_line(proto: str) -> str:
        value = listen.get(proto, "")
        return f'{proto} = ["{value}"]' if value else f"{proto} = []"

    return f"""\
# mailaccess configuration written by `mailaccess init`.
# Every key is documented in docs/configuration.md.  Relative paths are
# relative to this file's directory.

[server]
hostname = "{hostname}"
mail_root = "mail"        # one Maildir per user: mail/<user>/
users_file = "users"      # Dovecot passwd-file; edit with `mailaccess user ...`

[tls]
certificate = "tls/cert.pem"   # PEM: the server's certificate, then intermediates
private_key = "tls/key.pem"
min_version = "TLSv1.2"

[listen]
# Twisted endpoint strings; imaps and pop3s are implicit TLS.
{listen_line("imap")}
{listen_line("imaps")}
{listen_line("pop3")}
{listen_line("pop3s")}
{listen_line("lmtp")}

[auth]
allow_plaintext = "loopback"   # "never", "loopback" or "always" (before TLS)

[limits]
imap_autologout = 1800         # seconds; RFC 3501 §5.4 minimum
pop3_autologout = 600          # seconds; RFC 1939 §3 minimum

[pop3]
uidl_format = "%08Xu%08Xv"     # Dovecot's default: UIDs survive a migration
retr_sets_seen = true
exclusive = false

[mailboxes.auto_create]
Drafts = "Drafts"
Sent = "Sent"
Junk = "Junk"
Trash = "Trash"
"""


def parse_listen_option(values: Sequence[str]) -> dict[str, str]:
    """``--listen PROTO=ENDPOINT`` options over the defaults; an empty value turns one off."""
    listen = dict(DEFAULT_LISTEN)
    for item in values:
        proto, sep, endpoint = item.partition("=")
        if not sep or proto not in DEFAULT_LISTEN:
            raise CommandError(
                f"--listen {item!r}: expected PROTO=ENDPOINT with PROTO one of "
                f"{', '.join(DEFAULT_LISTEN)}"
            )
        if endpoint:
            problem = endpoint_problem(endpoint)
            if problem:
                raise CommandError(f"--listen {proto}: {problem}")
        listen[proto] = endpoint
    return listen


def cmd_init(args: argparse.Namespace, out: TextIO) -> int:
    """Write a complete working setup into DIR."""
    directory = Path(args.directory)
    config_path = directory / "mailaccess.toml"
    if config_path.exists() and not args.force:
        raise CommandError(f"{config_path} exists already; use --force to overwrite the setup")
    listen = parse_listen_option(args.listen or [])
    directory.mkdir(parents=True, exist_ok=True)
    mail_root = directory / "mail"
    mail_root.mkdir(mode=0o700, exist_ok=True)
    users = directory / "users"
    if not users.exists():
        write_private(users, b"", 0o600)
    write_certificate(directory / "tls/cert.pem", directory / "tls/key.pem", args.hostname, 825)
    config_path.write_text(render_init_config(args.hostname, listen), encoding="utf-8")
    # Prove what we wrote loads, so `init` never leaves a setup that does not start.
    config = load_config(config_path)
    demo_password = None
    if args.demo:
        demo_password = add_demo_user(config, args.demo)
    print(f"wrote a mailaccess setup in {directory}:", file=out)
    print(f"  config       {config_path}", file=out)
    print(f"  users file   {users} (empty: add users with `{PROG} user add`)", file=out)
    print(f"  certificate  {directory / 'tls/cert.pem'} (self-signed, localhost)", file=out)
    print(f"  mail root    {mail_root}", file=out)
    if demo_password is not None:
        print(
            f"  demo user    {args.demo}, password {demo_password} "
            f"(also in {directory / 'demo-password'}), {len(DEMO_MESSAGES)} messages",
            file=out,
        )
    print(f"run it: twistd -n mailaccess --config {config_path}", file=out)
    return 0


#: (subject, body, attachment name and text or None) of the demo messages.
DEMO_MESSAGES: list[tuple[str, str, tuple[str, str] | None]] = [
    ("Welcome to mailaccess", "Read me over IMAP or POP3: both see the same flags.\n", None),
    ("Lunch on Friday?", "Shall we try the new place on the corner?\n", None),
    ("The report, attached", "Here it is.\n", ("report.txt", "Q3: all good.\n")),
]


def write_demo_messages(maildir: Path, now: float) -> list[Path]:
    """Deliver the demo messages into *maildir* the way an MTA does.

    Each is written (LF line ends, as Maildir stores mail) into ``tmp/``,
    fsynced, given its Date as mtime (the IMAP INTERNALDATE), then renamed
    into ``new/``; the store picks them up like any delivery.
    """
    import socket
    from email.message import EmailMessage
    from email.utils import format_datetime, localtime, make_msgid

    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    delivered = []
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    for i, (subject, body, attachment) in enumerate(DEMO_MESSAGES):
        sent = int(now) - (len(DEMO_MESSAGES) - i) * 3600
        message = EmailMessage()
        message["From"] = "Alice Example <alice@example.org>"
        message["To"] = "demo@localhost"
        message["Subject"] = subject
        message["Date"] = format_datetime(localtime(datetime.datetime.fromtimestamp(sent)))
        message["Message-ID"] = make_msgid(domain="example.org")
        message.set_content(body)
        if attachment is not None:
            message.add_attachment(attachment[1], filename=attachment[0])
        data = message.as_bytes().replace(b"\r\n", b"\n")
        name = f"{sent}.M{i}P{os.getpid()}.{host}"
        tmp = maildir / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.utime(tmp, (sent, sent))
        final = maildir / "new" / name
        os.rename(tmp, final)
        delivered.append(final)
    return delivered


def add_demo_user(config: Config, name: str) -> str:
    """Add user *name* with a random password and demo mail; returns the password."""
    import secrets
    import time

    passwd, schemes = _require_auth()
    _check_username(name)
    path = config.server.users_file
    entries = _read_users_strict(passwd, path)
    if any(e.user == name for e in entries):
        raise CommandError(f"user {name!r} exists already in {path}")
    password = secrets.token_urlsafe(12)
    entries.append(passwd.UserEntry(user=name, password=_hash(schemes, password, "ARGON2ID")))
    _write_users(passwd, path, entries)
    write_demo_messages(config.server.mail_root / name, time.time())
    assert config.source is not None
    write_private(config.source.parent / "demo-password", f"{password}\n".encode(), 0o600)
    return password


# --- commands that read the config ---------------------------------------------


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def cmd_check_config(args: argparse.Namespace, out: TextIO) -> int:
    """Load the config, the certificate and the users file; report problems."""
    config = _load(args)
    if config.tls.certificate is not None:
        from mailaccess.tls import ServerTLS, TLSSetupError

        try:
            ServerTLS(config.tls)
        except TLSSetupError as e:
            raise CommandError(f"{config.source}: tls: {e}") from None
    problems: list[str] = []
    users = config.server.users_file
    if not users.exists():
        problems.append(f"{users}: the users file does not exist, so nobody can log in")
    else:
        passwd = _passwd_module()
        if passwd is not None:
            _entries, line_problems = passwd.read_users(users)
            problems += [f"{users}: {p}" for p in line_problems]
    for problem in problems:
        print(f"{PROG}: {problem}", file=sys.stderr)
    if problems:
        return 1
    listeners = [
        f"{proto} {endpoint}"
        for proto in ("imap", "imaps", "pop3", "pop3s", "lmtp")
        for endpoint in getattr(config.listen, proto)
    ]
    print(f"{config.source}: OK ({'; '.join(listeners) or 'no listeners'})", file=out)
    return 0


def cmd_gencert(args: argparse.Namespace, out: TextIO) -> int:
    """Write a self-signed development certificate (SAN DNS:localhost)."""
    cert_path: Path | None = Path(args.cert) if args.cert else None
    key_path: Path | None = Path(args.key) if args.key else None
    if cert_path is None or key_path is None:
        # Only now is the config needed; it may name files that do not exist
        # yet, which is the very reason to run gencert.
        config = _load_for_paths(args)
        cert_path = cert_path or config.get("certificate")
        key_path = key_path or config.get("private_key")
    if cert_path is None or key_path is None:
        raise CommandError(
            "no certificate path: give --cert and --key, or set [tls] in the config file"
        )
    for path in (cert_path, key_path):
        if path.exists() and not args.force:
            raise CommandError(f"{path} exists already; use --force to replace it")
    write_certificate(cert_path, key_path, args.hostname, args.days)
    print(f"wrote {cert_path} and {key_path} (self-signed for {args.hostname})", file=out)
    return 0


def _load_for_paths(args: argparse.Namespace) -> dict[str, Path]:
    """The [tls] paths of the config, read without insisting the files exist."""
    import tomllib

    path = Path(args.config)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CommandError(f"{path}: cannot read the file: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CommandError(f"{path}: invalid TOML: {e}") from None
    tls = data.get("tls", {})
    base = path.resolve().parent
    found: dict[str, Path] = {}
    for key in ("certificate", "private_key"):
        value = tls.get(key) if isinstance(tls, dict) else None
        if isinstance(value, str) and value:
            found[key] = base / value
    return found


# --- users -----------------------------------------------------------------------


def _passwd_module() -> Any:
    try:
        from mailaccess.auth import passwd
    except ImportError:
        return None
    return passwd


def _require_auth() -> tuple[Any, Any]:
    try:
        from mailaccess.auth import passwd, schemes
    except ImportError as e:
        raise CommandError(f"user management is not available in this build ({e})") from None
    return passwd, schemes


def _check_username(name: str) -> None:
    # The passwd-file is colon-separated, and IMAP/POP3 send names as atoms
    # or quoted strings: keep names printable and free of separators.
    bad = [c for c in name if c in ':"\\' or c.isspace() or not c.isprintable()]
    if not name or bad:
        raise CommandError(
            f"invalid user name {name!r}: use printable characters without spaces, "
            "':', '\"' or '\\'"
        )


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    else:
        if not sys.stdin.isatty():
            raise CommandError("no terminal to ask for the password; use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CommandError("the two passwords differ; nothing changed")
    if not password:
        raise CommandError("empty password refused; nothing changed")
    return password


def _hash(schemes: Any, password: str, scheme: str) -> str:
    try:
        return str(schemes.hash_password(password, scheme))
    except ValueError as e:  # SchemeError: unknown scheme, NUL, too long...
        raise CommandError(f"{e}; nothing changed") from None


def _write_users(passwd: Any, path: Path, entries: list[Any]) -> None:
    try:
        passwd.write_users(path, entries)
    except ValueError as e:  # an entry the passwd-file format cannot hold
        raise CommandError(f"{path}: {e}; nothing changed") from None


def _read_users_strict(passwd: Any, path: Path) -> list[Any]:
    """The entries of *path*; refuse to go on if some lines are malformed.

    Rewriting a file with skipped lines would silently drop them.
    """
    if not path.exists():
        return []
    entries, problems = passwd.read_users(path)
    if problems:
        for problem in problems:
            print(f"{PROG}: {path}: {problem}", file=sys.stderr)
        raise CommandError(f"{path} has malformed lines (above); fix them first, nothing changed")
    return list(entries)


def cmd_user_add(args: argparse.Namespace, out: TextIO) -> int:
    """Add a user with a password hashed in the chosen scheme."""
    passwd, schemes = _require_auth()
    _check_username(args.name)
    config = _load(args)
    path = config.server.users_file
    entries = _read_users_strict(passwd, path)
    if any(e.user == args.name for e in entries):
        raise CommandError(f"user {args.name!r} exists already in {path}; use `user passwd`")
    hashed = _hash(schemes, _read_password(args), args.scheme)
    entries.append(passwd.UserEntry(user=args.name, password=hashed))
    _write_users(passwd, path, entries)
    print(f"added user {args.name} to {path}", file=out)
    return 0


def cmd_user_passwd(args: argparse.Namespace, out: TextIO) -> int:
    """Set a new password for an existing user; other fields stay as they are."""
    import attrs

    passwd, schemes = _require_auth()
    config = _load(args)
    path = config.server.users_file
    entries = _read_users_strict(passwd, path)
    for i, entry in enumerate(entries):
        if entry.user == args.name:
            hashed = _hash(schemes, _read_password(args), args.scheme)
            entries[i] = attrs.evolve(entry, password=hashed)
            _write_users(passwd, path, entries)
            print(f"changed the password of {args.name}", file=out)
            return 0
    raise CommandError(f"no user {args.name!r} in {path}")


def cmd_user_del(args: argparse.Namespace, out: TextIO) -> int:
    """Remove a user from the users file (their mail stays on disk)."""
    passwd, _schemes = _require_auth()
    config = _load(args)
    path = config.server.users_file
    entries = _read_users_strict(passwd, path)
    kept = [e for e in entries if e.user != args.name]
    if len(kept) == len(entries):
        raise CommandError(f"no user {args.name!r} in {path}")
    _write_users(passwd, path, kept)
    print(
        f"removed user {args.name} from {path} "
        f"(their mail under {config.server.mail_root} is kept)",
        file=out,
    )
    return 0


def cmd_user_list(args: argparse.Namespace, out: TextIO) -> int:
    """Print each user and the scheme of their password (never the hash)."""
    passwd, _schemes = _require_auth()
    config = _load(args)
    path = config.server.users_file
    if not path.exists():
        raise CommandError(f"{path}: the users file does not exist")
    entries, problems = passwd.read_users(path)
    for problem in problems:
        print(f"{PROG}: {path}: {problem}", file=sys.stderr)
    for entry in entries:
        stored = entry.password or ""
        scheme = stored[1 : stored.index("}")] if stored.startswith("{") and "}" in stored else "?"
        print(f"{entry.user}\t{scheme}", file=out)
    return 1 if problems else 0


# --- demo ------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """Play POP3 and IMAP side by side against a running server (mailaccess.demo)."""
    from mailaccess.demo import DemoError, default_config_file, run_demo

    # `mailaccess --config F demo` works too; main() fills in etc/ when no
    # --config was given, which is not the demo's default.
    given = args.demo_config
    if given is None and args.config != str(default_config_path()):
        given = args.config
    try:
        return run_demo(
            default_config_file(given),
            out,
            host=args.host,
            pop3_port=args.pop3_port,
            imap_port=args.imap_port,
            plain=args.plain,
            step=args.step,
        )
    except DemoError as e:
        raise CommandError(str(e)) from None


# --- argument parsing ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of ``mailaccess``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Administer a mailaccess POP3/IMAP4 server."
    )
    config_help = f"the configuration file (default: ${CONFIG_ENV_VAR}, then etc/mailaccess.toml)"
    parser.add_argument("--config", default=None, help=config_help)
    # Subcommands accept --config too; SUPPRESS keeps the top-level value
    # when the subcommand does not repeat it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    user = commands.add_parser("user", help="manage users in the users file")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    for action, func, doc in (
        ("add", cmd_user_add, "add a user"),
        ("passwd", cmd_user_passwd, "change a user's password"),
    ):
        p = user_commands.add_parser(action, parents=[common], help=doc)
        p.add_argument("name")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input",
        )
        p.add_argument("--scheme", default="ARGON2ID", help="password scheme (default ARGON2ID)")
        p.set_defaults(func=func)
    p = user_commands.add_parser("del", parents=[common], help="remove a user")
    p.add_argument("name")
    p.set_defaults(func=cmd_user_del)
    p = user_commands.add_parser("list", parents=[common], help="list users")
    p.set_defaults(func=cmd_user_list)

    p = commands.add_parser("check-config", parents=[common], help="check the configuration")
    p.set_defaults(func=cmd_check_config)

    p = commands.add_parser(
        "gencert", parents=[common], help="write a self-signed development certificate"
    )
    p.add_argument("--cert", help="certificate file (default: tls.certificate of the config)")
    p.add_argument("--key", help="key file (default: tls.private_key of the config)")
    p.add_argument("--hostname", default="localhost", help="name in the certificate")
    p.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_gencert)

    p = commands.add_parser("init", parents=[common], help="write a working setup into DIR")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--hostname", default="localhost", help="server name (default localhost)")
    p.add_argument(
        "--listen",
        action="append",
        metavar="PROTO=ENDPOINT",
        help="listener to write instead of the default (repeatable; empty ENDPOINT: none)",
    )
    p.add_argument(
        "--demo",
        metavar="USER",
        help="also add USER with a random password (printed, and kept in DIR/demo-password) "
        "and a few demo messages",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing setup")
    p.set_defaults(func=cmd_init)

    p = commands.add_parser(
        "demo", help="watch a POP3 and an IMAP client share one mailbox, side by side"
    )
    # Its own --config: the default is make run's var/mailaccess.toml, not etc/.
    p.add_argument(
        "--config",
        dest="demo_config",
        default=None,
        help="the running server's config (default: $MAILACCESS_CONFIG, then "
        "var/mailaccess.toml as `make run` writes it)",
    )
    p.add_argument("--step", action="store_true", help="wait for Enter between steps")
    p.add_argument("--plain", action="store_true", help="no colour (for logs)")
    p.add_argument("--host", help="server host (default: from the config's listeners)")
    p.add_argument("--pop3-port", type=int, help="POP3 port (default: from the config)")
    p.add_argument("--imap-port", type=int, help="IMAP port (default: from the config)")
    p.set_defaults(func=cmd_demo)

    # Listed here for --help; main() hands its arguments to mailaccess.deliver,
    # which exits with sysexits codes as an MTA expects (issue 6).
    commands.add_parser(
        "deliver",
        add_help=False,
        help="deliver one message from stdin: deliver -d USER [-m FOLDER] [-f SENDER]",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``mailaccess``; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # `mailaccess [--config F] deliver ...`: the LDA parses its own options
    # (a --config after `deliver` wins over one before it).
    leading: list[str] = []
    rest = arguments
    if rest[:1] == ["--config"] and len(rest) > 2:
        leading, rest = rest[:2], rest[2:]
    elif rest[:1] and rest[0].startswith("--config="):
        leading, rest = rest[:1], rest[1:]
    if rest[:1] == ["deliver"]:
        from mailaccess.deliver import main as deliver_main

        return deliver_main(leading + rest[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = str(default_config_path())
    func: Callable[[argparse.Namespace, TextIO], int] = args.func
    try:
        return func(args, out or sys.stdout)
    except (CommandError, ConfigError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing changed", file=sys.stderr)
        return 130
    except OSError as e:
        # Disk full, permissions: say which file, not a traceback.
        where = f" {e.filename}" if e.filename else ""
        print(f"{PROG}: error:{where}: {e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
