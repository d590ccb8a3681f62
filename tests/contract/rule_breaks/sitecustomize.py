"""Break one contract rule on purpose inside a server process (tests only).

``test_contract.py`` starts a server with this directory on PYTHONPATH and
``MAILACCESS_BREAK=<name>``; Python imports ``sitecustomize`` at start-up, so
the server runs with exactly one rule broken, and the scenario that pins the
rule must then fail.  Nothing here is imported by mailaccess itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

BREAKS: dict[str, Callable[[], None]] = {}


def breaks(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(func: Callable[[], None]) -> Callable[[], None]:
        BREAKS[name] = func
        return func

    return register


@breaks("rule1-pop3-lists-deleted")
def _list_deleted() -> None:
    # The listing filter looks for a flag no message carries.
    from mailaccess.pop3 import maildrop

    maildrop.DELETED = "\\NoSuchFlag"


@breaks("rule2-uidl-follows-flags")
def _uidl_follows_flags() -> None:
    # twisted.mail's mistake: a unique-id that changes with the file name.
    from mailaccess.pop3.maildrop import Maildrop

    original = Maildrop._all_unique_ids

    def unique_ids(self: Any) -> list[str]:
        ids = original(self)
        out = []
        for uid, unique_id in zip(self._uids, ids, strict=True):
            record = self.mailbox.record(uid)
            flags = len(record.flags) if record is not None else 0
            out.append(unique_id + (f".{flags}" if flags else ""))
        return out

    Maildrop._all_unique_ids = unique_ids  # type: ignore[method-assign]


@breaks("rule2-uidl-changes-on-restart")
def _uidl_changes_on_restart() -> None:
    from mailaccess.pop3.maildrop import Maildrop

    marker = "contract-break-started"  # in the server's directory (its cwd)
    restarted = os.path.exists(marker)
    open(marker, "w").close()
    if not restarted:
        return
    original = Maildrop._all_unique_ids
    Maildrop._all_unique_ids = lambda self: [u + "r" for u in original(self)]  # type: ignore[method-assign]


@breaks("rule3-retr-does-not-set-seen")
def _retr_no_seen() -> None:
    from mailaccess.pop3.maildrop import Maildrop

    Maildrop.mark_seen = lambda self, message: None  # type: ignore[method-assign]


@breaks("rule3-top-and-retr-always-set-seen")
def _always_seen() -> None:
    from mailaccess.pop3.server import POP3Server

    original = POP3Server._stream

    def stream(self: Any, message: Any, body_lines: Any, first: str) -> Any:
        result = original(self, message, body_lines, first)
        self._drop.mark_seen(message)
        return result

    POP3Server._stream = stream  # type: ignore[method-assign]


@breaks("rule4-dele-only-in-session")
def _dele_private() -> None:
    # DELE remembered by the session only; the store hears of it at QUIT.
    from twisted.internet.defer import succeed

    from mailaccess.pop3 import maildrop

    def delete(self: Any, message: Any) -> Any:
        self._state[message.number - 1] |= maildrop._DELETED
        return succeed(None)

    maildrop.Maildrop.delete = delete  # type: ignore[method-assign]


@breaks("rule4-rset-keeps-flags")
def _rset_keeps_flags() -> None:
    # RSET (and a drop, which acts as RSET) forgets the deletions in the
    # session but leaves \Deleted in the store.
    from twisted.internet.defer import succeed

    from mailaccess.pop3 import maildrop

    def reset(self: Any) -> Any:
        for index in self._deleted_indexes():
            self._state[index] &= ~maildrop._DELETED
        return succeed(None)

    maildrop.Maildrop.reset = reset  # type: ignore[method-assign]


@breaks("rule4-quit-expunges-nothing")
def _quit_no_expunge() -> None:
    from twisted.internet.defer import succeed

    from mailaccess.pop3.maildrop import Maildrop

    Maildrop.commit = lambda self: succeed(())  # type: ignore[method-assign]


@breaks("rule4-drop-commits")
def _drop_commits() -> None:
    from mailaccess.pop3.maildrop import Maildrop

    Maildrop.reset = Maildrop.commit  # type: ignore[assignment]


@breaks("rule5-pop3-ignores-expunge")
def _pop3_ignores_expunge() -> None:
    from mailaccess.pop3.maildrop import Maildrop

    Maildrop._on_change = lambda self, event: None  # type: ignore[method-assign]


@breaks("rule6-pop3-sees-new-mail")
def _pop3_sees_new_mail() -> None:
    # The session's listing grows with deliveries (RFC 1939 §4 forbids it).
    from mailaccess.pop3.maildrop import Maildrop
    from mailaccess.store.model import MessagesAdded

    original = Maildrop._on_change

    def on_change(self: Any, event: Any) -> None:
        original(self, event)
        if isinstance(event, MessagesAdded):
            for record in event.records:
                self._index_of[record.uid] = len(self._uids)
                self._uids.append(record.uid)
                self._sizes.append(record.vsize)
                self._bases.append(record.base)
                self._state.append(0)
            self._unique_ids = None

    Maildrop._on_change = on_change  # type: ignore[method-assign]


@breaks("rule6-imap-misses-new-mail")
def _imap_misses_new_mail() -> None:
    from mailaccess.imap.view import MailboxView
    from mailaccess.store.model import MessagesAdded

    original = MailboxView._heard

    def heard(self: Any, event: Any) -> None:
        if not isinstance(event, MessagesAdded):
            original(self, event)

    MailboxView._heard = heard  # type: ignore[method-assign]


@breaks("rule7-exclusive-ignored")
def _exclusive_ignored() -> None:
    from mailaccess.pop3.server import POP3Server

    original = POP3Server._logged_in

    def logged_in(self: Any, result: Any) -> Any:
        self.factory.registry.in_use.pop(result.username, None)
        return original(self, result)

    POP3Server._logged_in = logged_in  # type: ignore[method-assign]


@breaks("rule7-always-exclusive")
def _always_exclusive() -> None:
    from mailaccess.pop3 import server

    original = server.POP3Server._logged_in

    def logged_in(self: Any, result: Any) -> Any:
        if result.username in self.factory.registry.in_use:
            raise server._SessionRefused("-ERR [IN-USE] broken on purpose")
        return original(self, result)

    server.POP3Server._logged_in = logged_in  # type: ignore[method-assign]


@breaks("rule8-expunge-any-time")
def _expunge_any_time() -> None:
    from mailaccess.imap.view import MailboxView

    original = MailboxView.flush

    def flush(self: Any, allow_expunge: bool = True, own_flags: Any = None) -> Any:
        return original(self, True, own_flags)

    MailboxView.flush = flush  # type: ignore[method-assign]


@breaks("rule9-append-ok-before-disk")
def _append_ok_early() -> None:
    # Answer OK at once and write the message five seconds later.
    from twisted.internet import reactor
    from twisted.internet.defer import succeed

    from mailaccess.store.mailbox import Mailbox
    from mailaccess.store.model import MessageRecord

    original = Mailbox.append

    def append(
        self: Any, message: bytes, flags: Any = frozenset(), internal_date: Any = None
    ) -> Any:
        clock: Any = reactor
        clock.callLater(5, original, self, message, flags, internal_date)
        record = MessageRecord(
            uid=self.uidnext,
            base="pending",
            flags=frozenset(flags),
            size=len(message),
            vsize=len(message),
            internal_date=internal_date or 0.0,
        )
        return succeed(record)

    Mailbox.append = append  # type: ignore[method-assign]


_name = os.environ.get("MAILACCESS_BREAK")
# Only the server (``python -c ... twistd``): the admin commands the fixture
# runs (``python -m mailaccess.cli init``, ``user add``) inherit the environment
# too, from the test's working directory, and must not leave markers there.
# At this point of start-up sys.argv[0] is still the literal "-m" for those.
if _name and (sys.argv[:1] or [""])[0] != "-m":
    BREAKS[_name]()
