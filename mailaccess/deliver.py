"""``mailaccess deliver``: a local delivery agent, like ``dovecot-lda``.

The MTA runs it once per message and recipient (Postfix: ``mailbox_command``),
with the message on standard input.  It writes through the same store code as
the server (a ``Store`` of its own in this process, under the same
``dovecot-uidlist`` dotlock), so a running server sees the new message through
its inotify watch and gives it the next UID; open IMAP sessions hear it at once.

The exit status is what the MTA acts on (sysexits.h, as Postfix reads it):
0 once the message is durable (fsynced file and directory), 75 EX_TEMPFAIL
on any temporary failure (the MTA keeps the message and retries), 67
EX_NOUSER for an unknown user, 77 EX_NOPERM over quota when the config says
"reject", 64 EX_USAGE for bad arguments and 78 EX_CONFIG for a broken config.
One line on standard error says why; the MTA puts it in its log or bounce.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from twisted.internet.task import Clock
from twisted.python.failure import Failure

from mailaccess.config import Config, ConfigError, default_config_path, load_config
from mailaccess.lmtp.address import AddressError, resolve
from mailaccess.lmtp.delivery import store_copy, trace_headers
from mailaccess.store.model import OverQuota, StoreError

EX_OK = 0
EX_USAGE = 64
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78

PROG = "mailaccess deliver"


class _Exit(Exception):
    """Stop with this exit status after printing the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class WallClock(Clock):
    """The store's clock in a process without a reactor: real time, no timers run."""

    def seconds(self) -> float:
        # Not protocol code: a one-shot command may read the wall clock.
        return time.time()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit is 2; sysexits says 64
        raise _Exit(EX_USAGE, f"{message} (usage: {self.format_usage().strip()[7:]})")


def build_parser() -> argparse.ArgumentParser:
    """The options, named as dovecot-lda names them."""
    parser = _Parser(
        prog=PROG,
        description="Deliver one message from standard input into a user's mailbox.",
    )
    parser.add_argument("-d", dest="user", required=True, help="the user (or user@domain)")
    parser.add_argument("-m", dest="mailbox", help="folder to deliver to (INBOX if missing)")
    parser.add_argument("-f", dest="sender", default="", help="envelope sender (Return-Path)")
    parser.add_argument(
        "-a", dest="address", help="the original recipient address (Delivered-To; default: -d)"
    )
    parser.add_argument("--config", default=None, help="the configuration file")
    return parser


def _value(d: Any) -> Any:
    """The result of a Deferred that has fired (the store runs synchronously here)."""
    box: list[Any] = []
    d.addBoth(box.append)
    if not box:
        raise _Exit(EX_SOFTWARE, "the store did not answer")  # a bug: run_synchronously
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def deliver(
    config: Config, user: str, message: bytes, folder: str | None, sender: str, address: str | None
) -> str:
    """Store *message* for *user*; returns a line saying where.  Raises _Exit on failure."""
    from mailaccess.auth.checker import BackendUnavailable, PasswdFileChecker
    from mailaccess.store.account import Store
    from mailaccess.store.mailbox import run_synchronously
    from mailaccess.store.quota import policy_from_config

    checker = PasswdFileChecker(config.server.users_file)

    def lookup(name: str) -> str | None:
        entry = checker.lookup(name)
        return entry.user if entry is not None else None

    try:
        recipient = resolve(user, config.lmtp, lookup)
    except AddressError as e:
        raise _Exit(EX_NOUSER, f"{user}: {e}") from None
    except BackendUnavailable as e:
        raise _Exit(EX_TEMPFAIL, f"cannot read the users file now: {e}") from None
    if recipient is None:
        raise _Exit(EX_NOUSER, f"{user}: no such user")
    if folder is None and config.lmtp.detail_mailbox == "folder" and recipient.detail:
        folder = recipient.detail
    clock: Any = WallClock()
    store = Store(
        config.server.mail_root,
        config.mailboxes,
        clock,
        run_synchronously,
        quota_policy=policy_from_config(config),
    )
    copy = trace_headers(sender, address or user) + _without_mbox_line(message)
    try:
        account = store.account(recipient.user)
        mailbox, record = _value(store_copy(account, folder, copy))
    except OverQuota as e:
        status = EX_TEMPFAIL if config.quota.over_quota == "tempfail" else EX_NOPERM
        raise _Exit(status, f"{recipient.user}: {e}") from None
    except StoreError as e:
        raise _Exit(EX_TEMPFAIL, f"{recipient.user}: {e}") from None
    finally:
        store.close()
    return f"delivered to {recipient.user} {mailbox.name} as UID {record.uid}"


def _without_mbox_line(message: bytes) -> bytes:
    """Drop an mbox ``From `` envelope line some MTAs put first; it is no header."""
    if message.startswith(b"From "):
        end = message.find(b"\n")
        return message[end + 1 :] if end >= 0 else b""
    return message


def main(
    argv: Sequence[str], stdin: IO[bytes] | None = None, stderr: IO[str] | None = None
) -> int:
    """Run ``mailaccess deliver ARGV``; returns the sysexits status."""
    err = stderr or sys.stderr
    try:
        args = build_parser().parse_args(list(argv))
        path = args.config or str(default_config_path())
        try:
            config = load_config(path)
        except ConfigError as e:
            raise _Exit(EX_CONFIG, str(e)) from None
        source = stdin or sys.stdin.buffer
        try:
            message = source.read()
        except OSError as e:
            raise _Exit(EX_TEMPFAIL, f"cannot read the message: {e}") from None
        deliver(config, args.user, message, args.mailbox, args.sender, args.address)
    except _Exit as e:
        print(f"{PROG}: {e}", file=err)
        return e.status
    except Exception as e:  # never a traceback to the MTA, never a lost message
        # Anything unforeseen is temporary: the MTA keeps the message.
        print(f"{PROG}: internal error, try again later: {e!r}", file=err)
        return EX_TEMPFAIL
    return EX_OK
