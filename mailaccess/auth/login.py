"""The one login path of every protocol: Portal, checker, realm and throttle.

A protocol session builds twisted.cred credentials (``UsernamePassword`` for
USER/PASS, LOGIN and AUTH PLAIN/LOGIN; ``APOPCredentials`` for APOP) and calls
``Authenticator.login(credentials, peer_host)``.  It gets a ``LoginResult`` or
a ``LoginFailed`` whose codes it can send as they are:

    POP3 (RFC 2449 §8, RFC 3206):   -ERR [AUTH] ... / -ERR [SYS/TEMP] ...
    IMAP (RFC 5530 §3):             NO [AUTHENTICATIONFAILED] ... / NO [UNAVAILABLE] ...

A failed login is answered only after the throttle's delay (a timer on the
reactor, never a sleep), so guessing costs time without blocking anyone else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import task, threads
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailaccess.auth.checker import (
    BackendUnavailable,
    DeferToThread,
    PasswdFileChecker,
    username_text,
)
from mailaccess.auth.realm import IMailAccount, MailRealm
from mailaccess.auth.throttle import LoginThrottle, peer_key

if TYPE_CHECKING:
    from mailaccess.config import Config
    from mailaccess.store.interfaces import IAccount, IStore

log = Logger(namespace="mailaccess.auth")

# What a client is told.  Deliberately the same for an unknown user, a wrong
# password and a closed account: the answer must not reveal which it was.
FAILED_TEXT = "Authentication failed."
TEMPORARY_TEXT = "Authentication is temporarily unavailable; try again later."


class LoginFailed(Exception):
    """A login did not succeed; ``str()`` is the text for the client.

    ``temporary`` is False for wrong credentials (RFC 3206 ``[AUTH]``, RFC 5530
    ``AUTHENTICATIONFAILED``) and True when the server could not decide now
    (``[SYS/TEMP]``, ``UNAVAILABLE``): the client should try again later
    rather than ask its user for another password.
    """

    def __init__(self, temporary: bool = False, text: str | None = None) -> None:
        self.temporary = temporary
        super().__init__(text or (TEMPORARY_TEXT if temporary else FAILED_TEXT))

    @property
    def pop3_code(self) -> str:
        """The RFC 3206 response code: ``SYS/TEMP`` or ``AUTH``."""
        return "SYS/TEMP" if self.temporary else "AUTH"

    @property
    def imap_code(self) -> str:
        """The RFC 5530 response code: ``UNAVAILABLE`` or ``AUTHENTICATIONFAILED``."""
        return "UNAVAILABLE" if self.temporary else "AUTHENTICATIONFAILED"


@attrs.frozen
class LoginResult:
    """A successful login: who, their account (the avatar), and how to log out."""

    username: str
    account: IAccount
    logout: Callable[[], None]


class Authenticator:
    """Logs users in through the Portal; delays failures with the throttle.

    The attempts of one peer (one address, one IPv6 /64) are checked one at a
    time, and a failure's delay ends before that peer's next attempt starts:
    opening many connections does not buy a guesser more tries per second.
    """

    def __init__(self, portal: Portal, throttle: LoginThrottle, clock: IReactorTime) -> None:
        self.portal = portal
        self.throttle = throttle
        self.clock = clock
        # Only peers with an attempt in progress have a lock here.
        self._peer_locks: dict[str, DeferredLock] = {}

    def login(self, credentials: Any, peer_host: str) -> Deferred[LoginResult]:
        """Check *credentials* from *peer_host*; fires LoginResult or fails LoginFailed."""
        key = peer_key(peer_host)
        lock = self._peer_locks.get(key)
        if lock is None:
            lock = self._peer_locks[key] = DeferredLock()

        def forget_idle_lock(result: Any) -> Any:
            if not lock.locked and not lock.waiting and self._peer_locks.get(key) is lock:
                del self._peer_locks[key]
            return result

        d: Deferred[LoginResult] = lock.run(self._attempt, credentials, peer_host)
        return d.addBoth(forget_idle_lock)

    def _attempt(self, credentials: Any, peer_host: str) -> Deferred[LoginResult]:
        try:
            user = username_text(credentials.username)
        except (UnauthorizedLogin, AttributeError):
            user = repr(getattr(credentials, "username", None))
        d: Deferred[Any] = self.portal.login(credentials, None, IMailAccount)
        return d.addCallbacks(
            self._succeeded,
            self._failed,
            callbackArgs=(user, peer_host),
            errbackArgs=(user, peer_host),
        )

    def _succeeded(
        self, result: tuple[Any, IAccount, Callable[[], None]], user: str, peer: str
    ) -> LoginResult:
        _, account, logout = result
        self.throttle.success(user)
        username = getattr(account, "username", user)
        log.info("login of {user!r} from {peer}", user=username, peer=peer)
        return LoginResult(username=username, account=account, logout=logout)

    def _failed(self, failure: Failure, user: str, peer: str) -> Deferred[LoginResult]:
        if failure.check(BackendUnavailable):
            log.warn(
                "login of {user!r} from {peer} not possible now: {why}",
                user=user,
                peer=peer,
                why=failure.value,
            )
            raise LoginFailed(temporary=True)
        if not failure.check(UnauthorizedLogin):
            # A bug or a store failure: the log gets the traceback, the client
            # a temporary failure, the reactor carries on.
            log.failure("login of {user!r} from {peer} broke", failure, user=user, peer=peer)
            raise LoginFailed(temporary=True)
        delay = self.throttle.failure(user, peer)
        log.info(
            "failed login of {user!r} from {peer}: {why}; answering in {delay:.1f}s",
            user=user,
            peer=peer,
            why=failure.getErrorMessage(),
            delay=delay,
        )

        def report() -> LoginResult:
            raise LoginFailed(temporary=False)

        return task.deferLater(self.clock, delay, report)


def make_authenticator(
    config: Config,
    store: IStore,
    clock: IReactorTime,
    *,
    defer_to_thread: DeferToThread = threads.deferToThread,
) -> Authenticator:
    """The server's Authenticator: passwd-file checker, store realm, throttle.

    *defer_to_thread* is where hashing runs (the reactor's thread pool unless
    a test supplies its own).
    """
    checker = PasswdFileChecker(config.server.users_file, defer_to_thread=defer_to_thread)
    # cast: mypy cannot see zope's @implementer declarations.
    portal = Portal(cast(IRealm, MailRealm(store)), [cast(ICredentialsChecker, checker)])
    throttle = LoginThrottle(
        clock,
        base_delay=config.auth.failed_login_delay,
        max_delay=config.auth.failed_login_max_delay,
    )
    return Authenticator(portal, throttle, clock)
