"""Authenticator: the one login path, with delayed failures and RFC 3206 / 5530 codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from mailaccess.auth.login import Authenticator, LoginFailed, LoginResult, make_authenticator
from mailaccess.auth.passwd import UserEntry, write_users
from mailaccess.config import AuthConfig, Config, MailboxesConfig, ServerConfig
from mailaccess.store.model import StoreUnavailable

from .conftest import ThreadedRunner

PEER = "192.0.2.10"


@attrs.define
class FakeAccount:
    username: str
    delimiter: str = "."


@attrs.define
class FakeStore:
    """Hands out one account per user, or fails like a broken disk."""

    broken: bool = False
    accounts: dict[str, FakeAccount] = attrs.Factory(dict)

    def account(self, username: str) -> FakeAccount:
        if self.broken:
            raise StoreUnavailable("disk on fire")
        return self.accounts.setdefault(username, FakeAccount(username))


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    write_users(
        path,
        [
            UserEntry("alice", "{PLAIN}secret"),
            UserEntry(
                "bob",
                "{SHA256-CRYPT}$5$nlAMgAf8R6sR/LEz$I3nl32MSl9B1gtDDtDu285uVO/m6M9U1slElVmfgw2C",
            ),
        ],
    )
    return path


def make_config(users_file: Path, mail_root: Path | None = None) -> Config:
    return Config(
        server=ServerConfig(users_file=users_file, mail_root=mail_root or Path("unused")),
        auth=AuthConfig(failed_login_delay=2.0, failed_login_max_delay=15.0),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def auth(
    users_file: Path, store: FakeStore, clock: Clock, runner: ThreadedRunner
) -> Authenticator:
    return make_authenticator(make_config(users_file), store, clock, defer_to_thread=runner)


@pytest.fixture
def logged() -> Any:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def settle(d: Deferred[Any], runner: ThreadedRunner, clock: Clock) -> list[Any]:
    """Pump worker results until *d* fired or waits on the clock; its outcome list."""
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    while not outcome and not clock.getDelayedCalls():
        runner.pump()
    return outcome


def failure_delay(
    auth: Authenticator, runner: ThreadedRunner, clock: Clock, user: bytes, peer: str
) -> tuple[float, LoginFailed]:
    """Log in with a wrong password; how long the failure took, and the failure."""
    d = auth.login(UsernamePassword(user, b"wrong"), peer)
    outcome = settle(d, runner, clock)
    assert outcome == []  # not reported yet: the delay runs
    [call] = clock.getDelayedCalls()
    delay = call.getTime() - clock.seconds()
    clock.advance(delay - 0.001)
    assert outcome == []  # still waiting a millisecond before the end
    clock.advance(call.getTime() - clock.seconds())
    [failure] = outcome
    assert isinstance(failure, Failure)
    assert isinstance(failure.value, LoginFailed)
    return delay, failure.value


def test_success_gives_the_account_as_avatar(
    auth: Authenticator, runner: ThreadedRunner, clock: Clock, store: FakeStore
) -> None:
    outcome = settle(auth.login(UsernamePassword(b"alice", b"secret"), PEER), runner, clock)
    [result] = outcome
    assert isinstance(result, LoginResult)
    assert result.username == "alice"
    assert result.account is store.accounts["alice"]
    result.logout()
    assert clock.getDelayedCalls() == []  # no delay on success


def test_wrong_password_fails_after_the_delay_rfc3206_auth(
    auth: Authenticator, runner: ThreadedRunner, clock: Clock
) -> None:
    delay, failed = failure_delay(auth, runner, clock, b"alice", PEER)
    assert delay == pytest.approx(2.0)
    assert not failed.temporary
    assert failed.pop3_code == "AUTH"  # RFC 3206 §4
    assert failed.imap_code == "AUTHENTICATIONFAILED"  # RFC 5530 §3
    assert str(failed) == "Authentication failed."


def test_delays_grow_per_user_and_per_peer(
    auth: Authenticator, runner: ThreadedRunner, clock: Clock
) -> None:
    # Same user from new peers: the user's count grows.
    user_delays = [
        failure_delay(auth, runner, clock, b"bob", f"198.51.100.{i}")[0] for i in range(4)
    ]
    assert user_delays == pytest.approx([2.0, 4.0, 8.0, 15.0])
    # New users from one peer: the peer's count grows.
    peer_delays = [
        failure_delay(auth, runner, clock, f"u{i}".encode(), "203.0.113.9")[0] for i in range(3)
    ]
    assert peer_delays == pytest.approx([2.0, 4.0, 8.0])


def test_unknown_user_looks_like_wrong_password(
    auth: Authenticator, runner: ThreadedRunner, clock: Clock
) -> None:
    delay, failed = failure_delay(auth, runner, clock, b"mallory", PEER)
    assert delay == pytest.approx(2.0)
    assert str(failed) == "Authentication failed." and failed.pop3_code == "AUTH"


def test_success_resets_the_users_delay(
    auth: Authenticator, runner: ThreadedRunner, clock: Clock
) -> None:
    failure_delay(auth, runner, clock, b"alice", "192.0.2.1")
    failure_delay(auth, runner, clock, b"alice", "192.0.2.2")
    settle(auth.login(UsernamePassword(b"alice", b"secret"), "192.0.2.3"), runner, clock)
    assert failure_delay(auth, runner, clock, b"alice", "192.0.2.4")[0] == pytest.approx(2.0)


def test_missing_users_file_is_temporary_rfc3206_sys_temp(
    tmp_path: Path, store: FakeStore, clock: Clock, runner: ThreadedRunner
) -> None:
    auth = make_authenticator(make_config(tmp_path / "gone"), store, clock, defer_to_thread=runner)
    [failure] = settle(auth.login(UsernamePassword(b"alice", b"secret"), PEER), runner, clock)
    assert isinstance(failure.value, LoginFailed)
    assert failure.value.temporary
    assert failure.value.pop3_code == "SYS/TEMP"  # RFC 3206 §4
    assert failure.value.imap_code == "UNAVAILABLE"  # RFC 5530 §3
    assert "try again later" in str(failure.value)


def test_store_failure_is_temporary_and_logged(
    auth: Authenticator,
    store: FakeStore,
    runner: ThreadedRunner,
    clock: Clock,
    logged: list[dict[str, Any]],
) -> None:
    store.broken = True
    [failure] = settle(auth.login(UsernamePassword(b"alice", b"secret"), PEER), runner, clock)
    assert isinstance(failure.value, LoginFailed) and failure.value.temporary
    assert any(
        isinstance(e.get("log_failure"), Failure) and e["log_failure"].check(StoreUnavailable)
        for e in logged
    )


def test_failed_logins_are_logged_with_user_and_peer_never_password(
    auth: Authenticator, runner: ThreadedRunner, clock: Clock, logged: list[dict[str, Any]]
) -> None:
    d = auth.login(UsernamePassword(b"alice", b"hunter2-typo"), "203.0.113.77")
    settle(d, runner, clock)
    clock.advance(60)
    settle(auth.login(UsernamePassword(b"alice", b"secret"), "203.0.113.77"), runner, clock)
    text = "\n".join(formatEvent(e) for e in logged)
    assert "failed login of 'alice' from 203.0.113.77: wrong password; answering in 2.0s" in text
    assert "login of 'alice' from 203.0.113.77" in text
    assert "hunter2" not in text and "secret" not in text


def test_with_the_real_store(
    tmp_path: Path, users_file: Path, clock: Clock, runner: ThreadedRunner
) -> None:
    from mailaccess.store.account import Store

    store = Store(tmp_path / "mail", MailboxesConfig(), clock, run_in_thread=runner)
    auth = make_authenticator(
        make_config(users_file, tmp_path / "mail"), store, clock, defer_to_thread=runner
    )
    [first] = settle(auth.login(UsernamePassword(b"alice", b"secret"), PEER), runner, clock)
    [second] = settle(auth.login(UsernamePassword(b"ALICE", b"secret"), PEER), runner, clock)
    assert isinstance(first, LoginResult) and isinstance(second, LoginResult)
    # Every session of a user shares one Account (DESIGN.md: one truth per mailbox).
    assert first.account is second.account
    assert first.account.username == "alice"
    assert (tmp_path / "mail" / "alice").is_dir()


def test_one_peers_attempts_are_checked_one_at_a_time(
    auth: Authenticator, runner: ThreadedRunner, clock: Clock
) -> None:
    # Two connections from one peer guess at once: the second guess is not
    # even checked until the first failure, delay included, is reported.
    first, second = [], []
    auth.login(UsernamePassword(b"alice", b"guess1"), PEER).addBoth(first.append)
    auth.login(UsernamePassword(b"alice", b"guess2"), PEER).addBoth(second.append)
    while not clock.getDelayedCalls():
        runner.pump()
    assert clock.getDelayedCalls()[0].getTime() == pytest.approx(2.0)
    clock.advance(2.0)
    assert isinstance(first[0].value, LoginFailed) and second == []
    while len(clock.getDelayedCalls()) == 0:
        runner.pump()
    # The second failure costs the second step and starts only now.
    assert clock.getDelayedCalls()[0].getTime() == pytest.approx(2.0 + 4.0)
    clock.advance(4.0)
    assert isinstance(second[0].value, LoginFailed)
    assert auth._peer_locks == {}  # nothing kept for idle peers


def test_other_peers_are_not_held_up(
    auth: Authenticator, runner: ThreadedRunner, clock: Clock
) -> None:
    failed: list[Any] = []
    auth.login(UsernamePassword(b"bob", b"guess"), "203.0.113.1").addBoth(failed.append)
    while not clock.getDelayedCalls():
        runner.pump()
    # While that failure waits out its delay, another peer logs in at once.
    outcome: list[Any] = []
    auth.login(UsernamePassword(b"alice", b"secret"), PEER).addBoth(outcome.append)
    while not outcome:
        runner.pump()
    assert isinstance(outcome[0], LoginResult)
    assert failed == []
    clock.advance(2.0)
    assert isinstance(failed[0].value, LoginFailed)
