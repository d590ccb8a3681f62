"""The passwd-file checker: twisted.cred semantics, re-reads, work off the reactor thread."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import globalLogPublisher
from twisted.mail.pop3 import APOPCredentials

from mailaccess.auth import checker as checker_module
from mailaccess.auth.checker import BackendUnavailable, PasswdFileChecker
from mailaccess.auth.passwd import UserEntry, read_users, write_users
from mailaccess.auth.schemes import verify_password

from .conftest import ThreadedRunner, wait

# doveadm pw -s SHA512-CRYPT -p secret (tests/auth/data/doveadm_pw.tsv)
ALICE_HASH = (
    "{SHA512-CRYPT}$6$8dZIwwDzpf2gMV2h$hYYcu4dZGMYPStEl9M95ciWBoi4ibJItMDTcDCSqm1vJHPGn"
    "/xqyJVCwrIfgN6BuiMGsXZZBW0r2BGE40lZDA/"
)
USERS = f"""\
# test users
alice:{ALICE_HASH}:1000:1000::/home/alice
bob:{{PLAIN}}apop-secret
carol:{{PLAIN}}secret::::::nologin
dave:{{SSHA}}c2VjcmV0
erin
"""


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(USERS)
    path.chmod(0o600)
    return path


@pytest.fixture
def logged() -> Any:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def log_text(events: list[dict[str, Any]]) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(e) for e in events)


def check(checker: PasswdFileChecker, runner: ThreadedRunner, credentials: Any) -> Any:
    return wait(checker.requestAvatarId(credentials), runner)


def test_password_checks(users_file: Path, runner: ThreadedRunner) -> None:
    checker = PasswdFileChecker(users_file, defer_to_thread=runner)
    assert check(checker, runner, UsernamePassword(b"alice", b"secret")) == "alice"
    for user, password in [
        (b"alice", b"Secret"),
        (b"alice", b""),
        (b"nobody", b"secret"),
        (b"carol", b"secret"),  # nologin: the right password is not enough
        (b"dave", b"secret"),  # a scheme we cannot check
        (b"erin", b""),  # no password at all
        (b"\xff", b"secret"),  # not UTF-8
    ]:
        with pytest.raises(UnauthorizedLogin):
            check(checker, runner, UsernamePassword(user, password))


def test_user_name_falls_back_to_lower_case_like_dovecot(
    users_file: Path, runner: ThreadedRunner
) -> None:
    checker = PasswdFileChecker(users_file, defer_to_thread=runner)
    assert check(checker, runner, UsernamePassword(b"ALICE", b"secret")) == "alice"


def test_apop_only_for_plain_stored_passwords(users_file: Path, runner: ThreadedRunner) -> None:
    # RFC 1939 §7 APOP: MD5(timestamp + secret); needs the plaintext secret.
    checker = PasswdFileChecker(users_file, defer_to_thread=runner)
    magic = b"<1896.697170952@dbc.mtview.ca.us>"
    digest = hashlib.md5(magic + b"apop-secret").hexdigest()
    assert check(checker, runner, APOPCredentials(magic, b"bob", digest)) == "bob"
    wrong = hashlib.md5(magic + b"guess").hexdigest()
    with pytest.raises(UnauthorizedLogin):
        check(checker, runner, APOPCredentials(magic, b"bob", wrong))
    alice_digest = hashlib.md5(magic + b"secret").hexdigest()
    with pytest.raises(UnauthorizedLogin):
        check(checker, runner, APOPCredentials(magic, b"alice", alice_digest))


def test_hashing_runs_off_the_reactor_thread(users_file: Path, runner: ThreadedRunner) -> None:
    main = threading.current_thread()
    seen: list[threading.Thread] = []

    def verify(stored: str, password: bytes) -> bool:
        seen.append(threading.current_thread())
        return verify_password(stored, password)

    checker = PasswdFileChecker(users_file, defer_to_thread=runner, verify=verify)
    d = checker.requestAvatarId(UsernamePassword(b"alice", b"secret"))
    early: list[Any] = []
    d.addBoth(lambda result: early.append(result) or result)
    # Nothing was decided on this thread: the result waits for the worker.
    assert early == []
    assert wait(d, runner) == "alice"
    assert len(seen) == 1
    assert seen[0] is not main
    assert seen[0].name.startswith("PoolThread-auth-test")


def test_file_is_read_in_the_worker_thread(
    users_file: Path, runner: ThreadedRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers: list[threading.Thread] = []

    def counting_read(path: Path, **kwargs: Any) -> Any:
        readers.append(threading.current_thread())
        return read_users(path, **kwargs)

    monkeypatch.setattr(checker_module, "read_users", counting_read)
    checker = PasswdFileChecker(users_file, defer_to_thread=runner)
    check(checker, runner, UsernamePassword(b"alice", b"secret"))
    check(checker, runner, UsernamePassword(b"alice", b"secret"))
    # Read once (unchanged the second time), and not on the main thread.
    assert len(readers) == 1
    assert readers[0] is not threading.main_thread()


def test_changed_file_is_reread(users_file: Path, runner: ThreadedRunner) -> None:
    checker = PasswdFileChecker(users_file, defer_to_thread=runner)
    assert check(checker, runner, UsernamePassword(b"bob", b"apop-secret")) == "bob"
    # What `mailaccess user passwd bob` and `user add frank` do, server running.
    entries, _ = read_users(users_file)
    entries = [UserEntry("bob", "{PLAIN}apop-SECRET") if e.user == "bob" else e for e in entries]
    write_users(users_file, [*entries, UserEntry("frank", "{PLAIN}f")])
    with pytest.raises(UnauthorizedLogin):
        check(checker, runner, UsernamePassword(b"bob", b"apop-secret"))
    assert check(checker, runner, UsernamePassword(b"bob", b"apop-SECRET")) == "bob"
    assert check(checker, runner, UsernamePassword(b"frank", b"f")) == "frank"


def test_in_place_edit_of_same_size_is_seen(users_file: Path, runner: ThreadedRunner) -> None:
    # An editor rewriting in place keeps the inode and the size; mtime_ns moves.
    import os

    checker = PasswdFileChecker(users_file, defer_to_thread=runner)
    assert check(checker, runner, UsernamePassword(b"bob", b"apop-secret")) == "bob"
    st = users_file.stat()
    users_file.write_text(USERS.replace("apop-secret", "apop-s3cret"))
    os.utime(users_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert check(checker, runner, UsernamePassword(b"bob", b"apop-s3cret")) == "bob"


def test_missing_file_is_backend_trouble(tmp_path: Path, runner: ThreadedRunner) -> None:
    checker = PasswdFileChecker(tmp_path / "nope", defer_to_thread=runner)
    with pytest.raises(BackendUnavailable):
        check(checker, runner, UsernamePassword(b"alice", b"secret"))


def test_problems_are_logged_passwords_never(
    users_file: Path, runner: ThreadedRunner, logged: list[dict[str, Any]]
) -> None:
    checker = PasswdFileChecker(users_file, defer_to_thread=runner)
    with pytest.raises(UnauthorizedLogin):
        check(checker, runner, UsernamePassword(b"dave", b"my-Typed-Password"))
    text = log_text(logged)
    assert (
        f"{users_file}:5: user 'dave' cannot log in: unsupported password scheme {{SSHA}}" in text
    )
    assert f"{users_file}:6: user 'erin' cannot log in: has no password" in text
    assert "read 5 users" in text
    assert "my-Typed-Password" not in text


def test_parallel_hashing_is_bounded(users_file: Path, runner: ThreadedRunner) -> None:
    lock = threading.Lock()
    running = [0]
    peak = [0]
    release = threading.Event()

    def slow_verify(stored: str, password: bytes) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        return True

    checker = PasswdFileChecker(
        users_file, defer_to_thread=runner, verify=slow_verify, max_parallel=2
    )
    ds = [checker.requestAvatarId(UsernamePassword(b"alice", b"x")) for _ in range(4)]
    # The pool has 4 threads: without the bound all 4 would be hashing now.
    deadline = time.monotonic() + 10
    while running[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert peak[0] == 2
    release.set()
    assert [wait(d, runner) for d in ds] == ["alice"] * 4
    assert peak[0] == 2


def test_unknown_user_costs_a_hash_too(users_file: Path, runner: ThreadedRunner) -> None:
    # So answer times do not tell which user names exist.
    checked: list[str] = []

    def verify(stored: str, password: bytes) -> bool:
        checked.append(stored)
        return verify_password(stored, password)

    checker = PasswdFileChecker(users_file, defer_to_thread=runner, verify=verify)
    with pytest.raises(UnauthorizedLogin):
        check(checker, runner, UsernamePassword(b"nobody", b"secret"))
    [stored] = checked
    assert stored.startswith("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$")


def test_oversized_password_is_refused_quickly(users_file: Path, runner: ThreadedRunner) -> None:
    # 5000 SHA-512 rounds over a megabyte would hold a thread for minutes.
    checker = PasswdFileChecker(users_file, defer_to_thread=runner)
    started = time.monotonic()
    with pytest.raises(UnauthorizedLogin):
        check(checker, runner, UsernamePassword(b"alice", b"x" * 1_000_000))
    assert time.monotonic() - started < 5
