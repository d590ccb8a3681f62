"""The server's configuration: one TOML file loaded into attrs classes.

``load_config(path)`` reads the file with :mod:`tomllib`, checks every key
against the attrs classes below (unknown keys, types, files that must exist,
endpoint strings, limits the RFCs set a floor for) and returns a frozen
:class:`Config`.  Anything wrong raises one :class:`ConfigError` whose message
names the file, the dotted key and what was expected, so an operator can fix
it without reading code.  ``docs/configuration.md`` documents every key.

Relative paths in the file resolve against the directory of the file, so a
setup directory (``mailaccess init DIR``) can be moved as a whole.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

PlaintextPolicy = Literal["never", "loopback", "always"]

#: Where ``--config`` defaults to when neither the option nor the environment
#: variable names a file (relative to the working directory).
DEFAULT_CONFIG_PATH = Path("etc/mailaccess.toml")
CONFIG_ENV_VAR = "MAILACCESS_CONFIG"

#: RFC 6154 §2 special-use attributes a folder may be created with.
SPECIAL_USE_ATTRIBUTES = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)


@attrs.frozen
class ServerConfig:
    """Identity and where the mail and the users live."""

    hostname: str = "localhost"  # the name clients see in greetings
    mail_root: Path = Path("var/mail")  # one Maildir per user below it
    users_file: Path = Path("var/users")  # Dovecot passwd-file format


@attrs.frozen
class TLSConfig:
    """The certificate every TLS listener and STARTTLS/STLS use."""

    certificate: Path | None = None  # PEM, leaf first then the chain
    private_key: Path | None = None
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"


@attrs.frozen
class ListenConfig:
    """Twisted endpoint strings per protocol; ``*s`` listeners are implicit TLS."""

    imap: tuple[str, ...] = ()
    imaps: tuple[str, ...] = ()
    pop3: tuple[str, ...] = ()
    pop3s: tuple[str, ...] = ()
    lmtp: tuple[str, ...] = ()


@attrs.frozen
class AuthConfig:
    """Login policy shared by every protocol."""

    # Where USER/PASS, LOGIN and AUTH PLAIN/LOGIN are allowed before TLS.
    allow_plaintext: PlaintextPolicy = "loopback"
    failed_login_delay: float = 2.0  # seconds after the first failure
    failed_login_max_delay: float = 15.0  # the growing delay stops here


@attrs.frozen
class LimitsConfig:
    """Bounds that keep one client from hurting the server."""

    max_line_length: int = 8192  # octets of one command line
    max_literal_size: int = 64 * 1024 * 1024  # octets of one IMAP literal (APPEND)
    max_bad_commands: int = 20  # then the connection is closed
    imap_autologout: float = 30 * 60  # RFC 3501 §5.4: at least 30 minutes
    imap_idle_keepalive: float = 2 * 60  # "* OK Still here" while in IDLE
    pop3_autologout: float = 10 * 60  # RFC 1939 §3: at least 10 minutes


@attrs.frozen
class POP3Config:
    """POP3 behaviour named by DESIGN.md's cross-protocol contract."""

    # DESIGN.md contract rule 2; Dovecot's default is "%08Xu%08Xv".
    uidl_format: str = "%08Xu%08Xv"
    retr_sets_seen: bool = True  # rule 3
    exclusive: bool = False  # rule 7: -ERR [IN-USE] for a second session
    login_delay: int | None = None  # advertised LOGIN-DELAY (RFC 2449 §6.8)
    expire: int | Literal["NEVER"] | None = None  # advertised EXPIRE (RFC 2449 §6.7)


@attrs.frozen
class MailboxesConfig:
    """Folders every account gets."""

    # RFC 6154 special-use folders created on first login: name -> attribute.
    auto_create: dict[str, str] = attrs.field(factory=dict)
    auto_subscribe: bool = True
    # Seconds a mailbox no session has open stays indexed in memory; 0: forever.
    # Longer than the 10 minutes clients commonly poll folders at (STATUS).
    unload_after: float = 1800.0


@attrs.frozen
class LMTPConfig:
    """Mail in: how LMTP (and ``mailaccess deliver``) map addresses to mailboxes."""

    # Domains whose addresses are ours: user@<domain> is the user "user".  Empty:
    # the domain is not looked at (the MTA decided the mail is ours).
    domains: tuple[str, ...] = ()
    detail_delimiter: str = "+"  # user+detail@domain; "" turns details off
    # "inbox": user+detail goes to INBOX; "folder": to the folder named
    # "detail" when it exists (else INBOX).
    detail_mailbox: Literal["inbox", "folder"] = "inbox"
    # RFC 1870 SIZE; a message that grows past it is refused with 552.
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 1000  # RFC 5321 §4.5.3.1.8: at least 100
    timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: the server waits 5 minutes


@attrs.frozen
class QuotaConfig:
    """Per-user storage limits, kept Maildir++-compatible (``maildirsize``)."""

    # Default per-user limit: bytes, or Dovecot units ("1G", "500M"); 0 = none.
    storage: int | str = 0
    # Honour userdb_quota_rule=*:storage=... extra fields of the users file.
    user_rules: bool = True
    # Over quota: "reject" (LMTP 552 5.2.2, deliver exits 77) or "tempfail"
    # (LMTP 452 4.2.2, deliver exits 75: the MTA keeps trying).
    over_quota: Literal["reject", "tempfail"] = "reject"


@attrs.frozen
class Config:
    """The whole configuration; ``source`` is the file it came from."""

    source: Path | None = None  # the file this was loaded from
    server: ServerConfig = ServerConfig()
    tls: TLSConfig = TLSConfig()
    listen: ListenConfig = ListenConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    pop3: POP3Config = POP3Config()
    mailboxes: MailboxesConfig = MailboxesConfig()
    lmtp: LMTPConfig = LMTPConfig()
    quota: QuotaConfig = QuotaConfig()


class ConfigError(Exception):
    """The configuration cannot be used; the message names file, key and problem."""

    def __init__(self, source: Path | str, key: str | None, problem: str) -> None:
        self.source = str(source)
        self.key = key
        self.problem = problem
        where = f"{self.source}: {key}" if key else self.source
        super().__init__(f"{where}: {problem}")


# --- locating the file ---------------------------------------------------------


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The file ``--config`` means when not given: $MAILACCESS_CONFIG, else etc/."""
    env = os.environ if environ is None else environ
    value = env.get(CONFIG_ENV_VAR, "")
    return Path(value) if value else DEFAULT_CONFIG_PATH


# --- loading -----------------------------------------------------------------

_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "tls": TLSConfig,
    "listen": ListenConfig,
    "auth": AuthConfig,
    "limits": LimitsConfig,
    "pop3": POP3Config,
    "mailboxes": MailboxesConfig,
    "lmtp": LMTPConfig,
    "quota": QuotaConfig,
}

# Keys whose value is a path resolved against the config file's directory.
_PATH_KEYS = frozenset(
    {"server.mail_root", "server.users_file", "tls.certificate", "tls.private_key"}
)


def load_config(path: Path | str) -> Config:
    """Read and check the TOML file at *path*; raise ConfigError if it is wrong."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as e:
        raise ConfigError(source, None, f"cannot read the file: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(source, None, "not UTF-8 text (TOML files are UTF-8)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, None, f"invalid TOML: {e}") from None
    return config_from_dict(data, source)


def config_from_dict(data: Mapping[str, Any], source: Path) -> Config:
    """Build a Config from parsed TOML *data* that came from the file *source*."""
    base = source.resolve().parent
    _reject_unknown(source, "", data, _SECTIONS)
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(source, name, f"expected a table [{name}], got {_describe(table)}")
        sections[name] = _build_section(source, base, name, cls, table)
    config = Config(source=source, **sections)
    _check_whole(source, config)
    return config


def _build_section(
    source: Path, base: Path, section: str, cls: type, table: Mapping[str, Any]
) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    _reject_unknown(source, f"{section}.", table, fields)
    values: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{section}.{key}"
        converted = _convert(source, dotted, hints[key], value)
        if dotted in _PATH_KEYS:
            converted = _under(base, converted)
        if section == "listen":
            converted = tuple(_resolve_unix_path(d, base) for d in converted)
        check = _CHECKS.get(dotted)
        if check is not None:
            problem = check(converted)
            if problem:
                raise ConfigError(source, dotted, problem)
        if dotted == "mailboxes.auto_create":
            converted = {name: _special_use(a) for name, a in converted.items()}
        values[key] = converted
    for key, field in fields.items():
        # Defaults that are relative paths follow the same rule as written ones.
        dotted = f"{section}.{key}"
        if key not in values and dotted in _PATH_KEYS and isinstance(field.default, Path):
            values[key] = _under(base, field.default)
    return cls(**values)


def _under(base: Path, path: Path) -> Path:
    """*path* resolved against *base*, with ``..`` folded so messages read well."""
    return Path(os.path.normpath(base / path))


def _resolve_unix_path(description: str, base: Path) -> str:
    """Make the socket path of a ``unix:`` endpoint absolute against *base*."""
    kind, _, rest = description.partition(":")
    if kind.strip().lower() != "unix" or not rest:
        return description
    first, sep, tail = rest.partition(":")
    prefix = ""
    if first.startswith("address="):
        prefix, first = "address=", first[len("address=") :]
    if not first or first.startswith("/") or "=" in first:
        return description
    return f"{kind}:{prefix}{_under(base, Path(first))}{sep}{tail}"


def _reject_unknown(source: Path, prefix: str, table: Mapping[str, Any], known: Any) -> None:
    for key in table:
        if key in known:
            continue
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f"did you mean {prefix}{close[0]}?" if close else f"known: {', '.join(known)}"
        kind = "section" if not prefix else "key"
        raise ConfigError(source, f"{prefix}{key}", f"unknown {kind} ({hint})")


def _describe(value: Any) -> str:
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    kind = kinds.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return kind
    return f"{kind} ({value!r})"


def _convert(source: Path, key: str, hint: Any, value: Any) -> Any:
    """Check *value* against the attrs field type *hint*; return it converted."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected an integer, got {_describe(value)}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(source, key, f"expected a number, got {_describe(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(source, key, f"expected a string, got {_describe(value)}")
    if hint is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise ConfigError(source, key, f"expected a file path string, got {_describe(value)}")
    if origin is Literal:
        if value in args and type(value) is type(args[0]):
            return value
        choices = " or ".join(repr(a) for a in args)
        raise ConfigError(source, key, f"expected {choices}, got {_describe(value)}")
    if origin is tuple:
        # Listener lists: one endpoint string or an array of them.
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return tuple(items)
        raise ConfigError(
            source, key, f"expected a string or an array of strings, got {_describe(value)}"
        )
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return dict(value)
        raise ConfigError(source, key, f"expected a table of strings, got {_describe(value)}")
    if origin in (typing.Union, _UnionType):
        # TOML has no null: an optional key is simply left out, so only the
        # non-None members can match here.  Try them in order, report all.
        members = [a for a in args if a is not type(None)]
        for member in members:
            try:
                return _convert(source, key, member, value)
            except ConfigError:
                continue
        expected = " or ".join(_expected_text(m) for m in members)
        raise ConfigError(source, key, f"expected {expected}, got {_describe(value)}")
    raise AssertionError(f"no conversion for {key}: {hint!r}")  # a bug in this module


_UnionType = type(int | None)


def _expected_text(hint: Any) -> str:
    if hint is int:
        return "an integer"
    if hint is Path:
        return "a file path string"
    if hint is str:
        return "a string"
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", repr(hint))


# --- value checks: return a problem text or None ----------------------------


def _at_least(minimum: float, why: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value < minimum:
            return f"must be at least {minimum:g} ({why}), got {value:g}"
        return None

    return check


def _existing_file(value: Path) -> str | None:
    if not value.exists():
        return f"file not found: {value}"
    if not value.is_file():
        return f"not a regular file: {value}"
    if not os.access(value, os.R_OK):
        return f"file not readable by this user: {value}"
    return None


def _not_a_file(value: Path) -> str | None:
    if value.exists() and not value.is_dir():
        return f"must be a directory, but {value} is not one"
    return None


def _hostname(value: str) -> str | None:
    if not value or any(c.isspace() for c in value) or len(value) > 253:
        return f"expected a host name such as mail.example.org, got {value!r}"
    return None


def _uidl_format(value: str) -> str | None:
    try:
        from mailaccess.pop3.uidl import UIDLFormat, UIDLFormatError
    except ImportError:  # the POP3 package checks it when it lands
        return None
    try:
        UIDLFormat.parse(value)
    except UIDLFormatError as e:
        return f"not a usable UIDL format: {e}"
    return None


def _auto_create(value: dict[str, str]) -> str | None:
    for name, attribute in value.items():
        if not name:
            return "folder names must not be empty"
        if _special_use(attribute) not in SPECIAL_USE_ATTRIBUTES:
            wanted = ", ".join(sorted(a[1:] for a in SPECIAL_USE_ATTRIBUTES))
            return f"{name!r}: expected an RFC 6154 special use ({wanted}), got {attribute!r}"
    return None


def _special_use(attribute: str) -> str:
    """``Sent`` and ``\\Sent`` both mean the RFC 6154 attribute ``\\Sent``."""
    return attribute if attribute.startswith("\\") else "\\" + attribute


def _expire(value: int | str) -> str | None:
    if isinstance(value, int) and value < 0:
        return f"expected a number of days >= 0 or 'NEVER', got {value}"
    return None


def _domains(values: tuple[str, ...]) -> str | None:
    for domain in values:
        if not domain or "@" in domain or any(c.isspace() for c in domain):
            return f"expected domain names such as example.org, got {domain!r}"
    return None


def _detail_delimiter(value: str) -> str | None:
    if len(value) > 1 or value in ("@", '"', "<", ">") or value.isspace():
        return f"expected one character such as '+' or '-' (or '' for none), got {value!r}"
    return None


def _quota_size(value: int | str) -> str | None:
    from mailaccess.store.quota import QuotaSizeError, parse_size

    try:
        parse_size(value)
    except QuotaSizeError as e:
        return str(e)
    return None


def _endpoints(values: tuple[str, ...]) -> str | None:
    for description in values:
        problem = endpoint_problem(description)
        if problem:
            return problem
    return None


def endpoint_problem(description: str) -> str | None:
    """Why *description* is not a usable listening endpoint string, or None."""
    from twisted.internet import endpoints
    from twisted.internet.testing import MemoryReactor

    kind = description.split(":", 1)[0].strip().lower()
    if kind == "ssl":
        # TLS is ours to add (imaps/pop3s, STARTTLS) so that SIGHUP reloads
        # the one certificate everywhere.
        return (
            f"{description!r}: use a plain endpoint (tcp:, unix:, systemd:); "
            "implicit TLS comes from the imaps/pop3s sections and [tls]"
        )
    try:
        # Parsing builds an endpoint object without listening; a memory
        # reactor keeps that free of side effects.
        endpoints.serverFromString(MemoryReactor(), description)
    except Exception as e:  # Twisted raises ValueError, KeyError, TypeError...
        detail = str(e) or type(e).__name__
        return (
            f"{description!r} is not a Twisted server endpoint string "
            f"({detail}); expected e.g. 'tcp:143:interface=127.0.0.1'"
        )
    return None


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "server.hostname": _hostname,
    "server.mail_root": _not_a_file,
    "tls.certificate": _existing_file,
    "tls.private_key": _existing_file,
    "listen.imap": _endpoints,
    "listen.imaps": _endpoints,
    "listen.pop3": _endpoints,
    "listen.pop3s": _endpoints,
    "listen.lmtp": _endpoints,
    "auth.failed_login_delay": _at_least(0, "seconds"),
    "auth.failed_login_max_delay": _at_least(0, "seconds"),
    # RFC 5321 §4.5.3.1.6: a text line of 1000 octets must pass (LMTP uses it);
    # RFC 2683 §3.2.1.5 recommends 8000 octets for IMAP command lines.
    "limits.max_line_length": _at_least(1000, "RFC 5321 §4.5.3.1.6 text lines"),
    "limits.max_literal_size": _at_least(1, "octets"),
    "limits.max_bad_commands": _at_least(1, "commands"),
    # RFC 3501 §5.4: the autologout timer is at least 30 minutes.
    "limits.imap_autologout": _at_least(1800, "RFC 3501 §5.4 asks for 30 minutes"),
    "limits.imap_idle_keepalive": _at_least(1, "seconds"),
    # RFC 1939 §3: the POP3 autologout timer is at least 10 minutes.
    "limits.pop3_autologout": _at_least(600, "RFC 1939 §3 asks for 10 minutes"),
    "pop3.uidl_format": _uidl_format,
    "pop3.login_delay": _at_least(0, "seconds"),
    "pop3.expire": _expire,
    "mailboxes.auto_create": _auto_create,
    "mailboxes.unload_after": _at_least(0, "seconds"),
    "lmtp.domains": _domains,
    "lmtp.detail_delimiter": _detail_delimiter,
    # RFC 1870: SIZE; RFC 5321 §4.5.3.1.7 asks that 64K messages pass.
    "lmtp.max_message_size": _at_least(65536, "RFC 5321 §4.5.3.1.7 message content"),
    "lmtp.max_recipients": _at_least(100, "RFC 5321 §4.5.3.1.8 recipients buffer"),
    "lmtp.timeout": _at_least(1, "seconds"),
    "quota.storage": _quota_size,
}


def _check_whole(source: Path, config: Config) -> None:
    """Checks that involve more than one key."""
    tls = config.tls
    if (tls.certificate is None) != (tls.private_key is None):
        missing = "tls.private_key" if tls.private_key is None else "tls.certificate"
        raise ConfigError(
            source, missing, "tls.certificate and tls.private_key must be given together"
        )
    for name in ("imaps", "pop3s"):
        if getattr(config.listen, name) and tls.certificate is None:
            raise ConfigError(
                source,
                f"listen.{name}",
                "an implicit-TLS listener needs tls.certificate and tls.private_key",
            )
    _check_port_clashes(source, config.listen)
    limits = config.limits
    if limits.imap_idle_keepalive >= limits.imap_autologout:
        raise ConfigError(
            source,
            "limits.imap_idle_keepalive",
            f"must be shorter than limits.imap_autologout ({limits.imap_autologout:g})",
        )
    auth = config.auth
    if auth.failed_login_max_delay < auth.failed_login_delay:
        raise ConfigError(
            source,
            "auth.failed_login_max_delay",
            f"must be at least auth.failed_login_delay ({auth.failed_login_delay:g})",
        )


def _check_port_clashes(source: Path, listen: ListenConfig) -> None:
    """Two listeners on one TCP port would fail at start with a vaguer message."""
    from twisted.internet import endpoints
    from twisted.internet.testing import MemoryReactor

    # Keyed by family too: whether tcp6 "::" also takes IPv4 depends on the
    # system (bindv6only), so only same-family clashes are certain.
    taken: dict[tuple[str, int, str], str] = {}
    for field in attrs.fields(ListenConfig):
        for description in getattr(listen, field.name):
            endpoint = endpoints.serverFromString(MemoryReactor(), description)
            # Twisted keeps these private; other endpoint kinds have none.
            port = getattr(endpoint, "_port", None)
            interface = getattr(endpoint, "_interface", None)
            if not isinstance(port, int) or port == 0 or not isinstance(interface, str):
                continue
            family = type(endpoint).__name__
            for (other_family, other_port, other_interface), owner in taken.items():
                overlaps = interface == other_interface or "" in (interface, other_interface)
                if (family, port) == (other_family, other_port) and overlaps:
                    raise ConfigError(
                        source,
                        f"listen.{field.name}",
                        f"{description!r} uses port {port}, which {owner} already uses",
                    )
            taken[(family, port, interface)] = f"listen.{field.name} ({description!r})"
