"""The twisted.cred checker for the Dovecot passwd-file.

The file is re-read whenever its mtime, size or inode changes, so ``mailaccess
user add/passwd/del`` take effect on the next login without a restart.  All
file access and all password hashing run off the reactor thread (argon2 and
bcrypt take tens of milliseconds each), at most ``max_parallel`` at a time so a
burst of logins cannot exhaust memory (each ARGON2ID check takes 64 MiB).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from mailaccess.auth.passwd import UserEntry, read_users
from mailaccess.auth.schemes import SchemeError, plaintext_of, verify_password

T = TypeVar("T")
DeferToThread = Callable[..., defer.Deferred[Any]]
VerifyFunction = Callable[[str, bytes], bool]

log = Logger(namespace="mailaccess.auth")

# An unknown user's password is checked against this (the hash of a random
# string, Dovecot's ARGON2ID parameters) so that "no such user" costs about as
# long as a wrong password and answer times do not reveal who exists.
_DUMMY_STORED = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$ix2DI9QUz6E/Qup6vSxd6Q"
    "$MW41m34aN6MQsoVimjn/ml6NYCe+FLkWQqM1CUulg7Y"
)


class BackendUnavailable(Exception):
    """The users file cannot be read now: a temporary failure, not bad credentials."""


def username_text(username: bytes | str) -> str:
    """A credential's user name as text (protocols may hand over bytes)."""
    if isinstance(username, bytes):
        try:
            return username.decode("utf-8")
        except UnicodeDecodeError:
            raise UnauthorizedLogin("user name is not UTF-8") from None
    return username


@attrs.frozen
class _Snapshot:
    key: tuple[int, int, int]  # (st_mtime_ns, st_size, st_ino) of what was read
    users: dict[str, UserEntry]


@implementer(ICredentialsChecker)
class PasswdFileChecker:
    """Checks user names and passwords against a Dovecot passwd-file.

    Supports ``IUsernamePassword`` (any scheme) and ``IUsernameHashedPassword``
    (POP3 APOP and the like: only users whose password is stored PLAIN).
    Succeeds with the user name as written in the file.  Fails with
    ``UnauthorizedLogin`` for any wrong credential, and ``BackendUnavailable``
    when the file cannot be read.

    *defer_to_thread* and *verify* are the seams for tests; by default work
    goes to the reactor's thread pool and ``schemes.verify_password``.
    """

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        defer_to_thread: DeferToThread = threads.deferToThread,
        verify: VerifyFunction = verify_password,
        max_parallel: int = 4,
    ) -> None:
        self.path = Path(path)
        self._defer_to_thread = defer_to_thread
        self._verify = verify
        self._slots = defer.DeferredSemaphore(max_parallel)
        # Guards _snapshot: two threads may notice a change at the same time.
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None

    # --- the users file (runs in a thread) -------------------------------

    def _users(self) -> dict[str, UserEntry]:
        """The users of the file, re-read if it changed since the last look."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as e:
                log.error("users file {path} cannot be read: {error}", path=self.path, error=e)
                raise BackendUnavailable(str(e)) from e
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self._snapshot is None or self._snapshot.key != key:
                warnings: list[str] = []
                try:
                    entries, problems = read_users(self.path, warnings=warnings)
                except OSError as e:
                    log.error("users file {path} cannot be read: {error}", path=self.path, error=e)
                    raise BackendUnavailable(str(e)) from e
                for problem in problems + warnings:
                    log.warn("{problem}", problem=problem)
                log.info("read {count} users from {path}", count=len(entries), path=self.path)
                self._snapshot = _Snapshot(key, {entry.user: entry for entry in entries})
            return self._snapshot.users

    def lookup(self, username: str) -> UserEntry | None:
        """The entry of *username*, matched exactly, else in lower case.

        The lower-case fallback is Dovecot's default ``auth_username_format =
        %Lu``.  Blocking (reads the file if it changed): call in a thread.
        """
        users = self._users()
        entry = users.get(username)
        if entry is None:
            entry = users.get(username.lower())
        return entry

    def _usable(self, username: str) -> UserEntry:
        entry = self.lookup(username)
        if entry is None:
            raise UnauthorizedLogin("no such user")
        if "nologin" in entry.extra_fields():
            # Dovecot's nologin extra field: the account is closed to logins.
            raise UnauthorizedLogin("login disabled for this user (nologin)")
        return entry

    def _check_password(self, username: str, password: bytes) -> str:
        if self.lookup(username) is None:
            self._verify(_DUMMY_STORED, password)
            raise UnauthorizedLogin("no such user")
        entry = self._usable(username)
        if not entry.password:
            raise UnauthorizedLogin("user has no password")
        try:
            matches = self._verify(entry.password, password)
        except SchemeError as e:
            log.error(
                "user {user!r} in {path} cannot log in: {why}",
                user=entry.user,
                path=self.path,
                why=e,
            )
            raise UnauthorizedLogin("stored password unusable") from e
        if not matches:
            raise UnauthorizedLogin("wrong password")
        return entry.user

    # --- ICredentialsChecker (reactor thread) ----------------------------

    def _in_thread(self, f: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        return self._slots.run(self._defer_to_thread, f, *args)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[str]:
        """Check *credentials*; fires with the user name or fails (see class)."""
        try:
            username = username_text(credentials.username)
        except UnauthorizedLogin:
            return defer.fail()
        if IUsernamePassword.providedBy(credentials):
            password = credentials.password
            if isinstance(password, str):
                password = password.encode("utf-8")
            return self._in_thread(self._check_password, username, password)
        if IUsernameHashedPassword.providedBy(credentials):
            return self._in_thread(self._usable, username).addCallback(
                self._check_hashed, credentials
            )
        return defer.fail(UnauthorizedLogin("unsupported credentials"))

    def _check_hashed(self, entry: UserEntry, credentials: Any) -> defer.Deferred[str]:
        plaintext = plaintext_of(entry.password)
        if plaintext is None:
            # APOP and CRAM-MD5 need the secret itself; we only have a hash.
            return defer.fail(UnauthorizedLogin("password not stored in plaintext"))

        def decide(matches: bool) -> str:
            if not matches:
                raise UnauthorizedLogin("wrong password")
            return entry.user

        # checkPassword is one MD5 or HMAC: cheap enough for the reactor thread.
        d = defer.maybeDeferred(credentials.checkPassword, plaintext.encode("utf-8"))
        return d.addCallback(decide)
