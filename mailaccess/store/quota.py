"""Per-user storage quota, kept in a Maildir++ ``maildirsize`` file.

The file format is the one Courier's Maildir++ defines and Dovecot's
``quota = maildir`` backend reads and writes, so a Maildir can move between
the two without a recount:

* line 1 is the limit: ``<bytes>S`` (optionally ``,<count>C``);
* every further line is a change ``<bytes> <count>`` (negative for removals);
  the usage is the sum of them all.

Writers append one short line with a single ``O_APPEND`` write, so the server
and a ``mailaccess deliver`` process (or Dovecot) can update it at once without a
lock.  The file is a cache: when it is missing, its limit line differs from
the configured limit, or it has grown past 5120 bytes (Maildir++'s rule), the
usage is counted again from the message files and the file is replaced.
A message's size is its ``S=`` size (the file as stored), as in Dovecot.

Everything here blocks: the store calls it from its worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from mailaccess.store.maildir import size_fields, split_filename
from mailaccess.store.model import OverQuota

FILENAME = "maildirsize"
#: Maildir++: a maildirsize file larger than this is recounted and rewritten.
RECOUNT_ABOVE = 5120
#: Maildir++: before refusing a message, recount if the file is this old, so
#: drift (a crash between a delivery and its line) cannot block mail for good.
RECOUNT_BEFORE_REFUSING_AFTER = 15 * 60

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"^\s*(\d+)\s*([bkmgt]?)\s*$", re.IGNORECASE)


class QuotaSizeError(ValueError):
    """A quota size that is not ``<number>[B|k|M|G|T]``."""


def parse_size(value: int | str) -> int:
    """Bytes of a Dovecot-style size: an integer, or ``"1G"``, ``"500M"``, ``"20k"``.

    Units are powers of 1024 as in Dovecot's ``quota_rule``; 0 means no limit.
    """
    if isinstance(value, int):
        if value < 0:
            raise QuotaSizeError(f"a size cannot be negative, got {value}")
        return value
    match = _SIZE.match(value)
    if match is None:
        raise QuotaSizeError(f"expected a size such as 1G, 500M or 1048576, got {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def storage_from_quota_rule(rule: str) -> int | None:
    """The storage limit of a Dovecot ``quota_rule`` for all folders (``*``), or None.

    ``*:storage=1G`` gives 1 GiB, ``*:storage=0`` and ``*:ignore`` give 0
    (no limit).  Rules for single folders (``Trash:storage=+100M``) are not
    supported and give None, as does anything unreadable.
    """
    root, _, rest = rule.partition(":")
    if root != "*":
        return None
    for item in rest.split(":"):
        if item == "ignore" or item == "none":
            return 0
        key, sep, value = item.partition("=")
        if sep and key == "storage" and not value.startswith(("+", "-")) and "%" not in value:
            try:
                return parse_size(value)
            except QuotaSizeError:
                return None
    return None


@attrs.frozen
class Usage:
    """What a user's mail takes: bytes (as stored) and number of messages."""

    storage: int
    messages: int


class QuotaPolicy:
    """Which limit applies to whom: a default, overridden per user in the users file.

    A user whose passwd-file line carries ``userdb_quota_rule=*:storage=1G``
    (as Dovecot writes it; ``quota_rule=`` is read too) gets that limit
    instead of the default, when *user_rules* is on.  The file is read again
    whenever it changes.  ``limit_for`` blocks: call it off the reactor.
    """

    def __init__(self, default_storage: int, users_file: Path | None, user_rules: bool) -> None:
        self.default_storage = default_storage
        self._users_file = users_file if user_rules else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._rules: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        """False when no user can ever have a limit: quota costs nothing then."""
        return self.default_storage > 0 or self._users_file is not None

    def limit_for(self, username: str) -> int:
        """The storage limit of *username* in bytes; 0 means none."""
        rule = self._user_rules().get(username)
        return self.default_storage if rule is None else rule

    def _user_rules(self) -> dict[str, int]:
        if self._users_file is None:
            return {}
        from mailaccess.auth.passwd import read_users

        with self._lock:
            try:
                st = os.stat(self._users_file)
            except OSError:
                return self._rules  # the login side reports an unreadable file
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != self._stamp:
                rules: dict[str, int] = {}
                try:
                    entries, _problems = read_users(self._users_file)
                except OSError:
                    return self._rules
                for entry in entries:
                    fields = entry.extra_fields()
                    text = fields.get("userdb_quota_rule", fields.get("quota_rule"))
                    if text is None:
                        continue
                    limit = storage_from_quota_rule(text)
                    if limit is not None:
                        rules[entry.user] = limit
                self._rules, self._stamp = rules, stamp
            return self._rules


def policy_from_config(config: Any) -> QuotaPolicy | None:
    """The QuotaPolicy of a ``mailaccess.config.Config``, or None when no limit can apply.

    What ``Store(..., quota_policy=...)`` takes.
    """
    quota = config.quota
    policy = QuotaPolicy(parse_size(quota.storage), config.server.users_file, quota.user_rules)
    return policy if policy.enabled else None


class Quota:
    """One user's quota over the Maildir++ tree at *root* (``maildirsize`` in it).

    *limit* is asked for the current limit at each check (the users file may
    have changed); *now* gives the wall clock (seconds) for the recount rule.
    Thread-safe within a process; lock-free between processes (append-only).
    """

    def __init__(self, root: Path, limit: Callable[[], int], now: Callable[[], float]) -> None:
        self.root = root
        self.path = root / FILENAME
        self._limit = limit
        self._now = now
        self._lock = threading.Lock()

    def check(self, storage: int, messages: int = 1) -> None:
        """Raise OverQuota if adding *storage* bytes would pass the limit (RFC 5530)."""
        limit = self._limit()
        if limit <= 0:
            return
        with self._lock:
            usage = self._usage(limit)
            if usage.storage + storage <= limit:
                return
            if self._age() > RECOUNT_BEFORE_REFUSING_AFTER:
                usage = self._recount(limit)
                if usage.storage + storage <= limit:
                    return
        raise OverQuota(
            f"over quota: {usage.storage} of {limit} bytes used, "
            f"a message of {storage} bytes does not fit"
        )

    def update(self, storage: int, messages: int) -> None:
        """Record that *storage* bytes in *messages* messages were added (or removed, < 0)."""
        limit = self._limit()
        if limit <= 0 or (storage == 0 and messages == 0):
            return
        with self._lock:
            if not self.path.exists():
                self._recount(limit)  # the count includes what was just added
                return
            line = f"{storage} {messages}\n".encode("ascii")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                # One write per line: concurrent appenders never interleave.
                os.write(fd, line)
            finally:
                os.close(fd)

    def usage(self) -> Usage:
        """The current usage (recounted first if the file is missing or stale)."""
        with self._lock:
            return self._usage(self._limit())

    # --- the file (lock held) ---------------------------------------------------

    def _usage(self, limit: int) -> Usage:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return self._recount(limit)
        parsed = _parse(data)
        if parsed is None or parsed[0] != limit or len(data) > RECOUNT_ABOVE:
            return self._recount(limit)
        return parsed[1]

    def _age(self) -> float:
        try:
            return self._now() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return float("inf")

    def _recount(self, limit: int) -> Usage:
        """Count every message of every folder and write a fresh file."""
        usage = count_usage(self.root)
        text = f"{limit}S\n{usage.storage} {usage.messages}\n".encode("ascii")
        tmp = self.root / f"tmp/{FILENAME}.{os.getpid()}.{threading.get_ident()}"
        if not tmp.parent.is_dir():
            tmp = self.root / f".{FILENAME}.{os.getpid()}.{threading.get_ident()}"
        try:
            with open(tmp, "wb") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError:
            # The count is right even if it could not be kept; retry next time.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return usage


def _parse(data: bytes) -> tuple[int, Usage] | None:
    """(limit, usage) of a maildirsize file, or None if it cannot be read."""
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None
    if not lines:
        return None
    limit = None
    for part in lines[0].split(","):
        part = part.strip()
        if part.endswith("S") and part[:-1].isdigit():
            limit = int(part[:-1])
    if limit is None:
        return None
    storage = messages = 0
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        try:
            storage += int(fields[0])
            messages += int(fields[1]) if len(fields) > 1 else 0
        except ValueError:
            return None
    return limit, Usage(storage, messages)


def count_usage(root: Path) -> Usage:
    """Bytes and messages in INBOX (*root*) and every ``.Folder`` below it."""
    storage = messages = 0
    folders = [root]
    with contextlib.suppress(FileNotFoundError), os.scandir(root) as it:
        folders += [
            Path(e.path)
            for e in it
            if e.name.startswith(".") and not e.name.startswith("..") and e.is_dir()
        ]
    for folder in folders:
        for sub in ("cur", "new"):
            try:
                entries = list(os.scandir(folder / sub))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                size = size_fields(split_filename(entry.name)[0])[0]
                if size is None:
                    try:
                        size = entry.stat().st_size
                    except FileNotFoundError:
                        continue  # expunged while we counted
                storage += size
                messages += 1
    return Usage(storage, messages)
