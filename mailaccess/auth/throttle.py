"""The growing delay that failed logins cost, per user and per peer address.

Each key (a user name, a peer address) counts consecutive failures.  The n-th
failure costs ``base * 2 ** (n - 1)`` seconds, never more than ``maximum``; a
failed login waits for the larger of its user's and its peer's delay before
the failure is reported.  Counts decay: every ``quiet_period`` without a new
failure forgets one.  A successful login clears its user's count but not its
peer's, so one good account cannot be used to wash a guessing peer clean.

Time comes from the reactor's ``seconds()``, never ``time.time()``:
tests drive it with ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

import attrs

# One table entry per key; an attacker spraying user names or addresses must
# not grow it without bound.  The oldest entries go first.
MAX_ENTRIES = 100_000


class Clock(Protocol):
    """The part of ``IReactorTime`` the throttle reads (a reactor, a task.Clock)."""

    def seconds(self) -> float: ...


@attrs.define
class _Record:
    failures: int
    last: float  # clock time of the latest failure


class FailureCounter:
    """Consecutive failures per key, forgetting one per quiet period."""

    def __init__(self, clock: Clock, quiet_period: float, max_entries: int = MAX_ENTRIES) -> None:
        self._clock = clock
        self._quiet = quiet_period
        self._max = max_entries
        self._records: dict[str, _Record] = {}

    def _decayed(self, key: str) -> int:
        """The failure count of *key* now, after decay (0 when unknown)."""
        record = self._records.get(key)
        if record is None:
            return 0
        elapsed = self._clock.seconds() - record.last
        remaining = record.failures - int(elapsed // self._quiet)
        if remaining <= 0:
            del self._records[key]
            return 0
        return remaining

    def count(self, key: str) -> int:
        """How many recent consecutive failures *key* has."""
        return self._decayed(key)

    def add_failure(self, key: str) -> int:
        """Count one more failure for *key*; return the new count."""
        failures = self._decayed(key) + 1
        # Re-insert so dict order stays "least recently failed first".
        self._records.pop(key, None)
        self._records[key] = _Record(failures, self._clock.seconds())
        while len(self._records) > self._max:
            del self._records[next(iter(self._records))]
        return failures

    def reset(self, key: str) -> None:
        """Forget *key*'s failures."""
        self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)


class LoginThrottle:
    """Decides how long a failed login waits before its failure is reported."""

    def __init__(
        self,
        clock: Clock,
        base_delay: float,
        max_delay: float,
        quiet_period: float = 60.0,
    ) -> None:
        if base_delay < 0 or max_delay < base_delay:
            raise ValueError("need 0 <= failed_login_delay <= failed_login_max_delay")
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._users = FailureCounter(clock, quiet_period)
        self._peers = FailureCounter(clock, quiet_period)

    def delay_after(self, failures: int) -> float:
        """The delay the *failures*-th consecutive failure costs."""
        if failures <= 0 or self.base_delay == 0:
            return 0.0
        # Cap the exponent before computing: 2.0 ** 10000 would overflow.
        return min(self.base_delay * 2.0 ** min(failures - 1, 64), self.max_delay)

    def failure(self, user: str, peer: str) -> float:
        """Record a failed login of *user* from *peer*; return the delay it costs."""
        by_user = self._users.add_failure(_user_key(user))
        by_peer = self._peers.add_failure(peer_key(peer))
        return self.delay_after(max(by_user, by_peer))

    def success(self, user: str) -> None:
        """A correct login: *user*'s failures are forgiven."""
        self._users.reset(_user_key(user))

    def user_failures(self, user: str) -> int:
        """Recent consecutive failures counted against *user*."""
        return self._users.count(_user_key(user))

    def peer_failures(self, peer: str) -> int:
        """Recent consecutive failures counted against *peer*."""
        return self._peers.count(peer_key(peer))


def _user_key(user: str) -> str:
    # "Alice" and "alice" reach the same account (checker's %Lu fallback):
    # they must share one count, or case variants would dodge the delay.
    # Cut: a client may send kilobytes of "user name" and the table holds
    # many keys; no real address is longer than 254 octets (RFC 5321 §4.5.3.1).
    return user.lower()[:256]


def peer_key(peer: str) -> str:
    """The unit a peer address is counted by.

    An IPv4 address is itself (also when it arrives IPv4-mapped, ``::ffff:a.b.c.d``);
    an IPv6 address counts by its /64, the block one site normally holds, so
    hopping between addresses of one network does not reset the count.
    """
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer[:256]  # not an IP address (a UNIX socket): as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
