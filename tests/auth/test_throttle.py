"""Failed-login delays grow per user and per peer, on a task.Clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from mailaccess.auth.throttle import FailureCounter, LoginThrottle, peer_key


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(clock, base_delay=2.0, max_delay=15.0, quiet_period=60.0)


def test_delay_doubles_per_user_up_to_the_max(throttle: LoginThrottle) -> None:
    # Each failure from a different peer: only the user's count grows.
    delays = [throttle.failure("alice", f"192.0.2.{i}") for i in range(6)]
    assert delays == [2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert throttle.user_failures("alice") == 6


def test_delay_grows_per_peer_across_user_names(throttle: LoginThrottle) -> None:
    # A peer spraying user names: each name is new, the peer is not.
    delays = [throttle.failure(f"user{i}", "198.51.100.7") for i in range(5)]
    assert delays == [2.0, 4.0, 8.0, 15.0, 15.0]
    assert throttle.peer_failures("198.51.100.7") == 5
    assert throttle.failure("user0", "203.0.113.1") == 4.0  # user0's second failure


def test_user_names_differing_in_case_share_a_count(throttle: LoginThrottle) -> None:
    throttle.failure("alice", "192.0.2.1")
    assert throttle.failure("ALICE", "192.0.2.2") == 4.0


def test_success_resets_the_user_not_the_peer(throttle: LoginThrottle) -> None:
    for _ in range(3):
        throttle.failure("alice", "192.0.2.1")
    throttle.success("alice")
    assert throttle.user_failures("alice") == 0
    assert throttle.peer_failures("192.0.2.1") == 3
    # A new failure from that peer costs the peer's 4th delay (16 s, capped).
    assert throttle.failure("alice", "192.0.2.1") == 15.0
    assert throttle.failure("alice", "192.0.2.99") == 4.0


def test_counts_decay_after_quiet_periods(clock: Clock, throttle: LoginThrottle) -> None:
    for _ in range(4):
        throttle.failure("alice", "192.0.2.1")
    clock.advance(59.9)
    assert throttle.user_failures("alice") == 4
    clock.advance(0.1)
    assert throttle.user_failures("alice") == 3  # one period quiet: one forgotten
    clock.advance(120)
    assert throttle.user_failures("alice") == 1
    assert throttle.failure("alice", "192.0.2.1") == 4.0
    clock.advance(3600)
    assert throttle.user_failures("alice") == 0
    assert throttle.peer_failures("192.0.2.1") == 0
    assert throttle.failure("alice", "192.0.2.1") == 2.0


def test_zero_delay_config_never_delays(clock: Clock) -> None:
    throttle = LoginThrottle(clock, base_delay=0.0, max_delay=0.0)
    assert [throttle.failure("a", "p") for _ in range(3)] == [0.0, 0.0, 0.0]


def test_huge_failure_counts_do_not_overflow(throttle: LoginThrottle) -> None:
    assert throttle.delay_after(100_000) == 15.0


def test_bad_config_is_refused(clock: Clock) -> None:
    with pytest.raises(ValueError, match="failed_login_delay"):
        LoginThrottle(clock, base_delay=5.0, max_delay=1.0)


def test_table_is_bounded_oldest_first(clock: Clock) -> None:
    counter = FailureCounter(clock, quiet_period=60.0, max_entries=3)
    for key in ["a", "b", "c"]:
        counter.add_failure(key)
    counter.add_failure("a")  # "a" is now the most recent
    counter.add_failure("d")
    assert len(counter) == 3
    assert counter.count("b") == 0  # the least recently failed went
    assert counter.count("a") == 2


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),  # IPv4-mapped on a dual-stack socket
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("/run/mailaccess.sock", "/run/mailaccess.sock"),
    ],
)
def test_peer_key(peer: str, key: str) -> None:
    assert peer_key(peer) == key


def test_ipv6_peer_hopping_within_a_64_shares_a_count(throttle: LoginThrottle) -> None:
    delays = [throttle.failure(f"user{i}", f"2001:db8:5:6::{i + 1:x}") for i in range(3)]
    assert delays == [2.0, 4.0, 8.0]
    assert throttle.failure("x", "::ffff:192.0.2.5") == 2.0
    assert throttle.failure("y", "192.0.2.5") == 4.0


def test_giant_user_names_are_cut_for_the_table(throttle: LoginThrottle) -> None:
    throttle.failure("a" * 10_000, "192.0.2.1")
    assert throttle.user_failures("A" * 256 + "different tail") == 1
