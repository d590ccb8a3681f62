"""The server's configuration: one TOML file loaded into attrs classes.

SKELETON: the attrs classes below fix the names every layer uses.  The loader
(``load_config``), validation and error messages are still to be written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs

PlaintextPolicy = Literal["never", "loopback", "always"]


@attrs.frozen
class ServerConfig:
    hostname: str = "localhost"
    mail_root: Path = Path("var/mail")
    users_file: Path = Path("var/users")


@attrs.frozen
class TLSConfig:
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
    # Where USER/PASS, LOGIN and AUTH PLAIN/LOGIN are allowed before TLS.
    allow_plaintext: PlaintextPolicy = "loopback"
    failed_login_delay: float = 2.0  # seconds after the first failure
    failed_login_max_delay: float = 15.0  # the growing delay stops here


@attrs.frozen
class LimitsConfig:
    max_line_length: int = 8192  # octets of one command line
    max_literal_size: int = 64 * 1024 * 1024  # octets of one IMAP literal (APPEND)
    max_bad_commands: int = 20  # then the connection is closed
    imap_autologout: float = 30 * 60  # RFC 3501 §5.4: at least 30 minutes
    imap_idle_keepalive: float = 2 * 60  # "* OK Still here" while in IDLE
    pop3_autologout: float = 10 * 60  # RFC 1939 §3: at least 10 minutes


@attrs.frozen
class POP3Config:
    # DESIGN.md contract rule 2; Dovecot's default is "%08Xu%08Xv".
    uidl_format: str = "%08Xu%08Xv"
    retr_sets_seen: bool = True  # rule 3
    exclusive: bool = False  # rule 7: -ERR [IN-USE] for a second session
    login_delay: int | None = None  # advertised LOGIN-DELAY (RFC 2449 §6.8)
    expire: int | Literal["NEVER"] | None = None  # advertised EXPIRE (RFC 2449 §6.7)


@attrs.frozen
class MailboxesConfig:
    # RFC 6154 special-use folders created on first login: name -> attribute.
    auto_create: dict[str, str] = attrs.field(factory=dict)
    auto_subscribe: bool = True


@attrs.frozen
class Config:
    source: Path | None = None  # the file this was loaded from
    server: ServerConfig = ServerConfig()
    tls: TLSConfig = TLSConfig()
    listen: ListenConfig = ListenConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    pop3: POP3Config = POP3Config()
    mailboxes: MailboxesConfig = MailboxesConfig()
