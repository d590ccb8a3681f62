"""One session's view of its selected mailbox (RFC 3501 §2.3.1.2, §5.2, §7.4.1; RFC 2180).

Each IMAP session numbers the messages of its selected mailbox itself: message
sequence number *n* is the *n*-th record of the view, and the view changes only
when this session has told its client about the change.  The store's change
events (from other IMAP sessions, POP3, delivery, other programs) queue in the
view and become untagged responses at the moments the session allows:

- ``MessagesAdded``   -> ``* n EXISTS`` and ``* r RECENT``
- ``FlagsChanged``    -> ``* n FETCH (FLAGS (...))``
- ``MessagesExpunged``-> ``* n EXPUNGE`` — never while answering a non-UID FETCH,
  STORE or SEARCH (RFC 3501 §7.4.1); held back until a command that allows it.

Memory: a session with a 10,000-message mailbox selected must stay small, so the
view shares the mailbox's immutable record snapshot (``IMailbox.records()``) for
as long as it agrees with it, and only holds a private list while an EXPUNGE is
held back.  Records are never mutated by the store (a flag change makes a new
record), so a shared snapshot is exactly what this session was told.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterator, Sequence

import attrs

from mailaccess.imap.fetch_data import encode_fetch_flags
from mailaccess.imap.sequence import SequenceSet
from mailaccess.store.interfaces import IMailbox
from mailaccess.store.model import (
    RECENT,
    ChangeEvent,
    Flags,
    FlagsChanged,
    MailboxDeleted,
    MailboxReset,
    MessageRecord,
    MessagesAdded,
    MessagesExpunged,
)

__all__ = ["MailboxView", "OutOfRange", "flags_line", "known_keywords"]

_uid_of = operator.attrgetter("uid")

#: RFC 3501 §2.3.2 system flags a client may set, in the order Dovecot lists them.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")

# Above this many UIDs in one expunge event the view is rebuilt in one pass
# instead of deleting entries one by one (each deletion moves the list's tail).
_REBUILD_AT = 32


class OutOfRange(ValueError):
    """A message sequence number beyond the messages this session knows (RFC 3501 §9)."""


class MailboxView:
    """The selected mailbox as one session knows it.

    ``notify`` is called (with no arguments) whenever an event is queued, so a
    session in IDLE can flush at once (RFC 2177 §3).
    """

    __slots__ = (
        "_notify",
        "_pending",
        "_recent",
        "_records",
        "bye_text",
        "keywords",
        "mailbox",
        "readonly",
        "renaming",
        "void",
    )

    def __init__(
        self,
        mailbox: IMailbox,
        readonly: bool,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.readonly = readonly
        #: The mailbox's UIDVALIDITY changed under us: the session must end.
        self.void = False
        #: Why the session must end when ``void`` (the text of its ``* BYE``).
        self.bye_text = ""
        #: True while this session's own RENAME runs (its rename keeps the view).
        self.renaming = False
        self._notify = notify
        self._records: Sequence[MessageRecord] = mailbox.records()
        #: The keywords this session's client was told of (SELECT's FLAGS).
        self.keywords: frozenset[str] = frozenset(known_keywords(self._records))
        self._pending: list[ChangeEvent] = []
        # RFC 3501 §3 (EXAMINE): a read-only selection must not take \Recent away
        # from a session that selects read-write, so it claims none.
        self._recent: set[int] | None = None
        # RFC 3501 §6.3.2: EXAMINE shows the \Recent messages (count and flag,
        # as Dovecot does) but leaves them to a session that selects.
        recent = mailbox.peek_recent() if readonly else mailbox.take_recent()
        if recent:
            self._recent = set(recent)
        mailbox.add_listener(self._heard)

    # --- lifetime ----------------------------------------------------------------

    def close(self) -> None:
        """Stop listening (UNSELECT, CLOSE, another SELECT, logout)."""
        self.mailbox.remove_listener(self._heard)
        self._pending = []

    def _heard(self, event: ChangeEvent) -> None:
        if isinstance(event, MailboxDeleted) and event.new_name is not None and self.renaming:
            return  # our own RENAME: the mailbox object follows, the view stays true
        if isinstance(event, MailboxDeleted):
            # Deleted or renamed by another session: void at once, so that no
            # further command runs on a name that no longer means this mailbox.
            self.void = True
            if event.new_name is None:
                self.bye_text = f"Mailbox {event.mailbox} was deleted by another session"
            else:
                self.bye_text = (
                    f"Mailbox {event.mailbox} was renamed to {event.new_name} by another session"
                )
        elif isinstance(event, MessagesAdded):
            # RFC 3501 §2.3.2: the first session to hear of new mail claims
            # \Recent; a read-only one only looks at what is still unclaimed.
            if self.readonly:
                peek = self.mailbox.peek_recent()
                claimed = frozenset(r.uid for r in event.records if r.uid in peek)
            else:
                claimed = self.mailbox.take_recent()
            if claimed:
                if self._recent is None:
                    self._recent = set()
                self._recent.update(claimed)
        self._pending.append(event)
        if self._notify is not None:
            self._notify()

    # --- what the session knows ------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> Sequence[MessageRecord]:
        """The records in message sequence number order (index 0 is message 1)."""
        return self._records

    @property
    def has_pending(self) -> bool:
        """Whether events wait to be reported."""
        return bool(self._pending)

    @property
    def recent_count(self) -> int:
        """RFC 3501 §7.3.2: how many of this session's messages are \\Recent."""
        return len(self._recent) if self._recent else 0

    def is_recent(self, uid: int) -> bool:
        """Whether *uid* is \\Recent for this session."""
        return self._recent is not None and uid in self._recent

    def flags_of(self, record: MessageRecord) -> Flags:
        """The flags this session reports: the stored ones plus its \\Recent."""
        if self._recent is not None and record.uid in self._recent:
            return record.flags | {RECENT}
        return record.flags

    def seq_of(self, uid: int) -> int | None:
        """The message sequence number of *uid*, or None if this session has no such UID."""
        records = self._records
        i = bisect.bisect_left(records, uid, key=_uid_of)
        if i < len(records) and records[i].uid == uid:
            return i + 1
        return None

    def select(self, numbers: SequenceSet, uid: bool) -> list[tuple[int, MessageRecord]]:
        """The (sequence number, record) pairs a sequence set names, ascending.

        For UIDs (RFC 3501 §6.4.8) numbers that match no message are ignored,
        and ``*`` is the largest UID in the view.  Message sequence numbers must
        exist (RFC 3501 §9): one beyond the count raises :class:`OutOfRange`.
        """
        records = self._records
        count = len(records)
        if not uid:
            for low, high in numbers.resolve(count):
                if high > count:
                    raise OutOfRange(
                        f"message sequence number {high} does not exist"
                        f" (this mailbox has {count} messages)"
                    )
                if low < 1:
                    raise OutOfRange("message sequence numbers start at 1")
            return [(n, records[n - 1]) for n in numbers.iter_numbers(count)]
        if not count:
            return []
        largest = records[-1].uid
        ranges = numbers.resolve(largest)
        if len(ranges) == 1:
            # The usual UID FETCH 1:* or a single UID: no merging needed.
            low, high = ranges[0]
            start = bisect.bisect_left(records, low, key=_uid_of)
            stop = bisect.bisect_right(records, high, key=_uid_of)
            return [(i + 1, records[i]) for i in range(start, stop)]
        found: dict[int, MessageRecord] = {}
        for low, high in ranges:
            start = bisect.bisect_left(records, low, key=_uid_of)
            stop = bisect.bisect_right(records, high, key=_uid_of)
            for i in range(start, stop):
                found[i] = records[i]
        return [(i + 1, found[i]) for i in sorted(found)]

    def iter_all(self) -> Iterator[tuple[int, MessageRecord]]:
        """Every (sequence number, record) of the view."""
        return enumerate(self._records, 1)

    # --- reporting changes ------------------------------------------------------------

    def flush(
        self, allow_expunge: bool = True, own_flags: dict[int, Flags] | None = None
    ) -> list[bytes]:
        """Apply the queued events and return the untagged lines that report them.

        ``allow_expunge`` False keeps expunges queued (RFC 3501 §7.4.1); the
        messages stay in the view meanwhile.  ``own_flags`` are flag changes
        this session made itself and reports in its own STORE/FETCH responses
        (RFC 3501 §6.4.6): matching events update the view silently.
        """
        events = self._pending
        if not events:
            return []
        self._pending = []
        if self.void and self.bye_text:
            # The mailbox is gone: nothing about it is worth telling now.
            return []
        # Without a held EXPUNGE the view ends as the store's snapshot, so the
        # per-record flag updates below are only needed when it will not.
        keep_private = not allow_expunge and any(isinstance(e, MessagesExpunged) for e in events)
        records: Sequence[MessageRecord] = self._records
        copied = False
        lines: list[bytes] = []
        held: list[ChangeEvent] = []
        grew = False

        # Flag sets already checked for new keywords: the store shares equal
        # sets, so a 10,000-message FlagsChanged has only a handful of them.
        known_sets: set[Flags] = set()

        def announce_keywords(flags: Flags) -> None:
            # RFC 3501 §7.2.6: a new keyword changes the mailbox's FLAGS; say so
            # before a line that uses it.
            if flags in known_sets:
                return
            known_sets.add(flags)
            new = {f for f in flags if f not in self.keywords and not f.startswith("\\")}
            if new:
                self.keywords = self.keywords | new
                lines.extend(self.flags_responses())

        def announce_size() -> None:
            # New messages must be announced before any line numbers them.
            nonlocal grew
            if grew:
                lines.append(b"* %d EXISTS\r\n" % len(records))
                lines.append(b"* %d RECENT\r\n" % self.recent_count)
                grew = False

        for event in events:
            if isinstance(event, MessagesAdded):
                last = records[-1].uid if records else 0
                added = [r for r in event.records if r.uid > last]
                if added:
                    for record in added:
                        if record.flags:
                            announce_keywords(record.flags)
                    if not copied:
                        records, copied = list(records), True
                    assert isinstance(records, list)
                    records.extend(added)
                    grew = True
            elif isinstance(event, FlagsChanged):
                if (
                    own_flags is not None
                    and not keep_private
                    and len(event.changes) == len(own_flags)
                    and own_flags == dict(event.changes)
                ):
                    # Exactly our own STORE (10,000 changes for STORE 1:*): the
                    # session answers it itself, and the view will share the
                    # store's snapshot again; only new keywords need saying.
                    for flags in set(own_flags.values()):
                        announce_keywords(flags)
                    continue
                # Changes come in UID order: look just past the last one first.
                i = -1
                for uid, flags in event.changes:
                    i += 1
                    if i >= len(records) or records[i].uid != uid:
                        i = bisect.bisect_left(records, uid, key=_uid_of)
                        if i >= len(records) or records[i].uid != uid:
                            i -= 1
                            continue
                    if keep_private:
                        if not copied:
                            records, copied = list(records), True
                        assert isinstance(records, list)
                        records[i] = attrs.evolve(records[i], flags=flags)
                    announce_keywords(flags)
                    if own_flags is not None and own_flags.get(uid) == flags:
                        continue
                    announce_size()
                    if self._recent is not None and uid in self._recent:
                        flags = flags | {RECENT}
                    lines.append(b"* %d FETCH (FLAGS %s)\r\n" % (i + 1, encode_fetch_flags(flags)))
            elif isinstance(event, MessagesExpunged):
                if not allow_expunge:
                    held.append(event)
                    continue
                announce_size()
                if not copied:
                    records, copied = list(records), True
                assert isinstance(records, list)
                records = self._expunge(records, event.uids, lines)
            elif isinstance(event, MailboxReset):
                # RFC 3501 §2.3.1.1: every UID this session knows is void.
                self.void = True
                self.bye_text = "Mailbox UIDVALIDITY changed; please reconnect"
        announce_size()
        self._pending = held
        snapshot = self.mailbox.records()
        if (
            not held
            and len(snapshot) == len(records)
            and (not records or snapshot[-1].uid == records[-1].uid)
        ):
            # Back in step with the store: share its snapshot again.
            self._records = snapshot
        elif copied:
            self._records = records
        return lines

    def flags_responses(self) -> list[bytes]:
        """``* FLAGS`` and ``* OK [PERMANENTFLAGS ...]`` (RFC 3501 §7.2.6, §7.1)."""
        flags = " ".join([*SYSTEM_FLAGS, *sorted(self.keywords)])
        lines = [b"* FLAGS (%s)\r\n" % flags.encode("ascii", "replace")]
        if self.readonly:
            lines.append(b"* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n")
        else:
            # \* : clients may create keywords.
            permanent = (flags + " \\*").encode("ascii", "replace")
            lines.append(b"* OK [PERMANENTFLAGS (%s)] Flags permitted\r\n" % permanent)
        return lines

    def _expunge(
        self, records: list[MessageRecord], uids: Sequence[int], lines: list[bytes]
    ) -> list[MessageRecord]:
        positions = []
        for uid in uids:
            i = bisect.bisect_left(records, uid, key=_uid_of)
            if i < len(records) and records[i].uid == uid:
                positions.append(i)
        if not positions:
            return records
        positions.sort(reverse=True)
        # Highest first: each EXPUNGE then leaves the lower numbers as they were
        # (RFC 3501 §7.4.1: a number is decremented for every EXPUNGE before it).
        lines.extend(b"* %d EXPUNGE\r\n" % (i + 1) for i in positions)
        if self._recent:
            self._recent.difference_update(records[i].uid for i in positions)
        if len(positions) >= _REBUILD_AT:
            gone = set(positions)
            return [r for i, r in enumerate(records) if i not in gone]
        for i in positions:
            del records[i]
        return records

    def __repr__(self) -> str:
        return f"<MailboxView {self.mailbox.name!r} {len(self._records)} messages>"


def known_keywords(records: Sequence[MessageRecord]) -> list[str]:
    """The keywords in use (for SELECT's FLAGS, RFC 3501 §7.2.6), sorted."""
    every: set[str] = set().union(*(r.flags for r in records)) if records else set()
    return sorted(f for f in every if not f.startswith("\\"))


def flags_line(view: MailboxView, record: MessageRecord) -> bytes:
    """``(\\Seen $Label)`` as this session shows the message (with its \\Recent)."""
    return encode_fetch_flags(view.flags_of(record))
