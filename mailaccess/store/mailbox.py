"""One Maildir folder as an in-memory index with serialised, durable mutations.

The index is the list of ``MessageRecord`` in UID order; a UID is found by
bisection (O(log n)).  Every mutation (append, flag change, expunge, copy in,
a rescan that finds other programs' changes) runs under one ``DeferredLock``:
its disk work happens in a worker thread (fsync must not block the reactor),
then the index is updated and one change event is sent to every listener on
the reactor thread, and only then does the mutation's Deferred fire.

Our own renames do come back from inotify, but the rescan they trigger is
queued behind the mutation on the same lock, finds the index already equal to
the directory and so emits nothing: no double events.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence, Set
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from mailaccess.store import uidlist as uidlist_file
from mailaccess.store.dotlock import DotLock
from mailaccess.store.interfaces import FlagMode, IMailbox, Listener
from mailaccess.store.keywords import Keywords
from mailaccess.store.maildir import (
    INFO_SEPARATOR,
    crlf_size,
    disk_error,
    ensure_maildir,
    file_crlf_size,
    flags_to_letters,
    fsync_dir,
    intern_flags,
    letters_to_flags,
    new_base_name,
    normalize_flags,
    size_fields,
    split_filename,
    to_lf,
    unlink_quietly,
    write_file_durably,
)
from mailaccess.store.model import (
    ChangeEvent,
    Flags,
    FlagsChanged,
    MailboxReset,
    MessageGone,
    MessageRecord,
    MessagesAdded,
    MessagesExpunged,
    NoSuchMailbox,
    StoreError,
)
from mailaccess.store.uidlist import FileStamp, UidEntry, UidList, UidListCorrupt

T = TypeVar("T")
RunInThread = Callable[[Callable[[], Any]], Deferred[Any]]

log = Logger()

#: A file in tmp/ older than this is debris of a crashed delivery (Dovecot's rule).
TMP_STALE_AFTER = 36 * 3600
#: dovecot-uidlist is rewritten on open once this many lines are dead (and
#: they outnumber the living ones).
COMPACT_AFTER = 1000
#: Cache misses parsed per sqlite transaction by ``message_infos``.
INFO_BATCH = 256
#: A flag change of at least this many messages unwatches the folder while it
#: renames: inotify would hand the reactor two events per rename (20,000 for a
#: STORE 1:* of 10,000, about 0.5 s to read and discard in Twisted's reader),
#: all of them our own.  One rescan afterwards finds what others did meanwhile.
QUIET_BATCH = 512
#: Seconds before that rescan: a client sending several big STOREs in a row
#: (+FLAGS then -FLAGS, or a sync of many ranges) gets one rescan after them
#: all, not one holding the mailbox lock before each next STORE.
QUIET_RESCAN_DELAY = 0.25
#: Parsed infos kept in memory per mailbox (about 1.7 KB each, measured with
#: tracemalloc on the benchmark's mail): a repeated FETCH ENVELOPE or SEARCH
#: SUBJECT of a 10,000-message mailbox then costs dictionary lookups instead
#: of 10,000 sqlite rows decoded again.  Oldest dropped first.
INFO_MEMORY = 32768
_uid_of = attrgetter("uid")


def run_synchronously(work: Callable[[], T]) -> Deferred[T]:
    """A ``RunInThread`` that runs *work* at once (tests, and a child without a reactor)."""
    try:
        return succeed(work())
    except BaseException:
        return fail()


@attrs.define
class _Found:
    """A message file found on disk that the index does not know yet."""

    base: str
    filename: str  # its name in cur/ (after any move from new/)
    from_new: bool


@attrs.define
class _SyncResult:
    """What a scan of the directory found, to be applied on the reactor thread."""

    added: list[MessageRecord] = attrs.field(factory=list)
    changed: list[tuple[int, Flags]] = attrs.field(factory=list)
    expunged: list[int] = attrs.field(factory=list)
    odd_names: dict[int, str | None] = attrs.field(factory=dict)
    recent: set[int] = attrs.field(factory=set)
    uidnext: int = 0
    uidvalidity: int = 0
    reset: bool = False
    # the whole index, when the scan rebuilt it (opening, or UIDVALIDITY changed)
    records: list[MessageRecord] | None = None


@attrs.define
class _Prepared:
    """A message file made ready in tmp/ for ``_add_prepared`` (append, copy)."""

    tmp_path: Path
    base: str
    flags: Flags
    size: int
    vsize: int
    source_uid: int = 0


class Mailbox(IMailbox):
    """A Maildir folder implementing ``IMailbox``; get it from ``Account.mailbox``."""

    def __init__(
        self,
        name: str,
        path: Path,
        clock: IReactorTime,
        new_uidvalidity: Callable[[], int],
        run_in_thread: RunInThread = deferToThread,
        folder: bool = True,
    ) -> None:
        self.name = name
        self.path = path
        # Typed Any: zope interface methods confuse mypy without a plugin.
        self._clock: Any = clock
        self._new_uidvalidity = new_uidvalidity
        self._run_in_thread = run_in_thread
        self._folder = folder
        self._cur = path / "cur"
        # The same directory as a string prefix: opening a message per RETR or
        # FETCH should not pay for a pathlib join.
        self._cur_prefix = os.path.join(path, "cur", "")
        self._new = path / "new"
        self._tmp = path / "tmp"
        self._uidlist_path = path / uidlist_file.FILENAME
        self._keywords = Keywords(path)
        self._lock = DeferredLock()
        self._listeners: list[Listener] = []
        self._records: list[MessageRecord] = []
        self._snapshot: tuple[MessageRecord, ...] | None = ()
        # Files whose name is not base + ":2," + canonical letters (unknown
        # letters, another program's order): uid -> actual name in cur/.
        self._odd_names: dict[int, str] = {}
        self._recent: set[int] = set()
        self._uidvalidity = 0
        self._uidnext = 1
        self._guid = ""
        self._uidlist_stamp: FileStamp | None = None
        self._rescan_call: Any = None
        self._deleted = False
        self._opened_at = 0.0
        #: The clock's time of the last session leaving, handing out or change:
        #: Account unloads a mailbox unused for [mailboxes] unload_after seconds.
        self.last_used = 0.0
        # (cur/, new/) mtimes of the last listing, when they can be trusted.
        self._dir_stamps: tuple[int, int] | None = None
        #: True once inotify watches this folder; without it, protocol layers
        #: call rescan() on NOOP/IDLE/SELECT (issue 3, item 4).
        self.watched = False
        self._expected_lock = threading.Lock()
        self._expected: dict[tuple[str, str], int] = {}
        self._cache: Any = None  # mailaccess.store.cache.MetadataCache once open
        # uid -> (base name, MessageInfo): the decoded infos last served
        # (reactor thread only; the base name guards against a reused UID).
        self._infos: dict[int, tuple[str, Any]] = {}
        # Counts index changes that remove messages (expunge, re-index), so a
        # bulk read can tell cheaply whether any of its UIDs may have gone.
        self._removals = 0
        # [quota hook, issue 6] mailaccess.store.quota.Quota of the account, set
        # by Account.mailbox; checked before a message enters cur/, updated
        # after appends, copies and expunges.
        self.quota: Any = None
        #: The account's MailboxWatch while this folder is watched (set by
        #: Account), so that big batches can pause it; see QUIET_BATCH.
        self.watcher: Any = None

    # --- opening ------------------------------------------------------------

    @classmethod
    def open(
        cls,
        name: str,
        path: Path,
        clock: IReactorTime,
        new_uidvalidity: Callable[[], int],
        run_in_thread: RunInThread = deferToThread,
        folder: bool = True,
    ) -> Deferred[Mailbox]:
        """Open (creating cur/new/tmp if missing) and index the folder at *path*."""
        return cls(name, path, clock, new_uidvalidity, run_in_thread, folder).load()

    def load(self) -> Deferred[Mailbox]:
        """Index the folder (once, right after construction); fires with self.

        A watch set up before this sees every change made during the scan.
        """
        self._opened_at = self._clock.seconds()

        def opened(_: None) -> Mailbox:
            return self

        return self._locked(self._open_work, self._apply_sync).addCallback(opened)

    def _open_work(self) -> _SyncResult:
        from mailaccess.store.cache import MetadataCache

        try:
            ensure_maildir(self.path, self._folder)
            self._remove_stale_tmp(self._opened_at - TMP_STALE_AFTER)
            self._keywords.load()
            result = self._scan(full=True)
        except OSError as exc:
            raise disk_error(exc, f"open mailbox {self.name}") from exc
        # The cache never fails the store: a sick file acts as an empty cache.
        self._cache = MetadataCache(self.path)
        self._cache.reset(result.uidvalidity)
        # RFC 3501 §2.3.2: \Recent lasts until a session is told, restarts
        # and unloading included.  The cache keeps the UID it starts from.
        first = self._cache.first_recent_uid()
        if first is None:
            # Never recorded: what this scan found in new/ is recent, and
            # whatever arrives from now on.
            first = min(result.recent, default=result.uidnext)
            self._cache.raise_first_recent_uid(first)
        assert result.records is not None
        result.recent.update(r.uid for r in result.records if r.uid >= first)
        return result

    def _remove_stale_tmp(self, older_than: float) -> None:
        """Drop tmp/ files of deliveries that died long ago (Dovecot: 36 hours)."""
        with os.scandir(self._tmp) as it:
            for entry in it:
                try:
                    if entry.is_file() and entry.stat().st_mtime < older_than:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    # --- reading ------------------------------------------------------------

    @property
    def uidvalidity(self) -> int:
        return self._uidvalidity

    @property
    def uidnext(self) -> int:
        return self._uidnext

    def records(self) -> Sequence[MessageRecord]:
        """The index in ascending UID order (an immutable snapshot)."""
        if self._snapshot is None:
            self._snapshot = tuple(self._records)
        return self._snapshot

    def record(self, uid: int) -> MessageRecord | None:
        """The record of *uid* (bisection), or None."""
        i = bisect.bisect_left(self._records, uid, key=_uid_of)
        if i < len(self._records) and self._records[i].uid == uid:
            return self._records[i]
        return None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
            self.last_used = self._clock.seconds()

    def is_idle(self) -> bool:
        """No session listens, no change runs or waits, no rescan is due."""
        return (
            not self._listeners
            and not self._lock.locked
            and not (self._rescan_call is not None and self._rescan_call.active())
        )

    def take_recent(self) -> frozenset[int]:
        """RFC 3501 §2.3.2: hand the \\Recent UIDs to exactly one session."""
        recent, self._recent = frozenset(self._recent), set()
        if recent and self._cache is not None:
            # Every UID below UIDNEXT has been told now; record it, in turn
            # with the mailbox's other disk work.
            cache, below = self._cache, self._uidnext
            d = self._locked(lambda: cache.raise_first_recent_uid(below), lambda _: None)
            d.addErrback(self._recent_not_recorded)
        return recent

    def _recent_not_recorded(self, failure: Any) -> None:
        if not failure.check(NoSuchMailbox):  # deleted meanwhile: nothing to keep
            log.failure("could not record \\Recent of {name}", failure, name=self.name)

    def recent_count(self) -> int:
        """RFC 3501 §6.3.10, §6.3.2: the \\Recent count, leaving them unclaimed."""
        return len(self._recent)

    def peek_recent(self) -> frozenset[int]:
        """The UIDs still \\Recent, leaving them unclaimed (EXAMINE, RFC 3501 §6.3.2)."""
        return frozenset(self._recent)

    def open_message(self, uid: int) -> IO[bytes]:
        """The stored octets (LF line ends); MessageGone if expunged or vanished."""
        record = self.record(uid)
        if record is None:
            raise MessageGone(f"message UID {uid} has been expunged")
        try:
            return open(self._cur_prefix + self._filename(record), "rb")
        except FileNotFoundError:
            pass
        # Renamed by another program (a flag change) before we noticed: find
        # it by its base name; the rescan this schedules will report the flags.
        self.schedule_rescan()
        name = self._find_file(record.base)
        if name is None:
            raise MessageGone(f"message UID {uid} was removed by another program")
        try:
            return open(self._cur / name, "rb")
        except FileNotFoundError:
            raise MessageGone(f"message UID {uid} was removed by another program") from None

    def message_path(self, uid: int) -> Path:
        """Where the file of *uid* is now (for the metadata cache and parser)."""
        record = self.record(uid)
        if record is None:
            raise MessageGone(f"message UID {uid} has been expunged")
        return self._cur / self._filename(record)

    def message_info(self, uid: int) -> Deferred[Any]:
        """Parsed metadata (``mime.MessageInfo``): from the cache, else parsed off the reactor.

        Fails with MessageGone.  Not serialised with mutations: it only reads,
        and a concurrent rename is followed by ``open_message``.
        """
        from mailaccess.store.mime import parse_message

        record = self.record(uid)
        if record is None:
            return fail(MessageGone(f"message UID {uid} has been expunged"))
        remembered = self._infos.get(uid)
        if remembered is not None and remembered[0] == record.base:
            return succeed(remembered[1])
        cache = self._cache
        if cache is not None:
            # Without waiting: during a first scan the workers below hold the
            # cache for their writes, and the reactor must not queue behind them.
            cached = cache.get(uid, record.base, wait=False)
            if cached is not None:
                self._remember_infos({uid: (record.base, cached)})
                return succeed(cached)
        base = record.base
        path = self._cur / self._filename(record)

        def parse() -> tuple[Any, bool]:
            # Worker thread: no reactor calls in here.
            renamed = False
            if cache is not None:
                # The reactor's look was a miss, or found the cache busy.
                cached = cache.get(uid, base)
                if cached is not None:
                    return cached, renamed
            try:
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    name = self._find_file(base)
                    if name is None:
                        raise MessageGone(
                            f"message UID {uid} was removed by another program"
                        ) from None
                    renamed = True
                    data = (self._cur / name).read_bytes()
            except FileNotFoundError:
                raise MessageGone(f"message UID {uid} was removed by another program") from None
            except OSError as exc:
                raise disk_error(exc, f"read message UID {uid}") from exc
            info = parse_message(data).compact()
            if cache is not None:
                cache.put(uid, base, info)
            return info, renamed

        def parsed(result: tuple[Any, bool]) -> Any:
            info, renamed = result
            if renamed:
                self.schedule_rescan()  # another program renamed it: learn its flags
            if self._alive(uid, base):
                self._remember_infos({uid: (base, info)})
            return info

        return self._run_in_thread(parse).addCallback(parsed)

    def message_infos(self, uids: Iterable[int]) -> Deferred[dict[int, Any]]:
        """Parsed metadata of many messages at once: {uid: ``mime.MessageInfo``}.

        One bulk cache read (``MetadataCache.get_many``) in a worker thread
        instead of one sqlite row and one Deferred per message; misses are
        parsed and cached in the same thread, :data:`INFO_BATCH` at a time,
        each batch one transaction.  UIDs that are expunged, or whose file
        vanished, are left out of the dict (the caller reports them gone).
        Fails only with StoreUnavailable.
        """
        wanted: list[tuple[int, str, MessageRecord]] = []
        hits: dict[int, Any] = {}
        remembered = self._infos
        for uid in uids:
            known = remembered.get(uid)
            if known is not None:
                # Remembered infos are dropped when their UID is expunged or
                # the index is rebuilt, so a hit needs no index lookup.
                hits[uid] = known[1]
                continue
            record = self.record(uid)
            if record is not None:
                wanted.append((uid, record.base, record))
        if not wanted:
            # All in memory: no thread hop, the Deferred has fired already.
            return succeed(hits)
        cache = self._cache
        cur = str(self._cur)
        removals = self._removals

        def load() -> tuple[dict[int, Any], bool]:
            # Worker thread: no reactor calls in here.
            from mailaccess.store.mime import parse_message

            found: dict[int, Any] = {}
            if cache is not None:
                found.update(cache.get_many((uid, base) for uid, base, _ in wanted))
            renamed = False
            misses = [item for item in wanted if item[0] not in found]
            for start in range(0, len(misses), INFO_BATCH):
                parsed = []
                for uid, base, record in misses[start : start + INFO_BATCH]:
                    # The file name only for a miss: most come from the cache.
                    name = self._filename(record)
                    try:
                        try:
                            with open(os.path.join(cur, name), "rb") as f:
                                data = f.read()
                        except FileNotFoundError:
                            # Renamed by another program since we looked.
                            other = self._find_file(base)
                            if other is None:
                                continue  # removed: the caller reports it gone
                            renamed = True
                            with open(os.path.join(cur, other), "rb") as f:
                                data = f.read()
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise disk_error(exc, f"read message UID {uid}") from exc
                    info = parse_message(data).compact()
                    found[uid] = info
                    parsed.append((uid, base, info))
                if cache is not None:
                    cache.put_many(parsed)
            return found, renamed

        def loaded(result: tuple[dict[int, Any], bool]) -> dict[int, Any]:
            found, renamed = result
            if renamed:
                self.schedule_rescan()  # another program renamed files: learn their flags
            # A remembered info must only ever belong to a living UID: if any
            # message left the index while the thread read, check each one.
            check = self._removals != removals
            self._remember_infos(
                {
                    uid: (base, found[uid])
                    for uid, base, _ in wanted
                    if uid in found and (not check or self._alive(uid, base))
                }
            )
            hits.update(found)
            return hits

        return self._run_in_thread(load).addCallback(loaded)

    def _alive(self, uid: int, base: str) -> bool:
        record = self.record(uid)
        return record is not None and record.base == base

    def _remember_infos(self, infos: dict[int, tuple[str, Any]]) -> None:
        """Keep decoded infos in memory, dropping the oldest beyond INFO_MEMORY."""
        remembered = self._infos
        remembered.update(infos)
        excess = len(remembered) - INFO_MEMORY
        if excess > 0:
            for uid in list(itertools.islice(remembered, excess)):
                del remembered[uid]

    # --- mutations ----------------------------------------------------------

    def append(
        self,
        message: bytes,
        flags: Flags = frozenset(),
        internal_date: float | None = None,
    ) -> Deferred[MessageRecord]:
        """Store a message durably (tmp → fsync → cur/ → fsync dir → uidlist → fsync)."""
        now = self._clock.seconds()
        clean_flags = normalize_flags(flags)

        def prepare() -> list[_Prepared]:
            data = to_lf(message)
            size, vsize = len(data), crlf_size(data)
            base = f"{new_base_name(now)},S={size},W={vsize}"
            tmp_path = self._tmp / base
            try:
                write_file_durably(tmp_path, data, internal_date)
            except OSError as exc:
                raise disk_error(exc, "store the message") from exc
            return [_Prepared(tmp_path, base, clean_flags, size, vsize)]

        def record_of(pairs: list[tuple[int, int]]) -> MessageRecord:
            record = self.record(pairs[0][1])
            assert record is not None  # added under the lock just now
            return record

        return self._add_prepared(prepare).addCallback(record_of)

    def store_flags(
        self, uids: Iterable[int], flags: Flags, mode: FlagMode
    ) -> Deferred[dict[int, Flags]]:
        """Change flags by renaming the files; fires with {uid: new flags} of those changed.

        The whole batch is one worker-thread call and one event: a STORE on
        10,000 messages is 10,000 ``os.rename`` calls in a tight loop, one
        ``dovecot-keywords`` update before them and one fsync of ``cur/``
        after them (renames within one directory need no fsync per file; the
        one directory fsync makes all of them durable before the Deferred
        fires).  If a rename fails, the ones already made are undone and
        nothing is reported.
        """
        wanted = normalize_flags(flags)
        uid_list = list(uids)

        def work() -> list[tuple[int, int, Flags, str | None]]:
            targets = self._flag_targets(uid_list, wanted, mode)
            if not targets:
                return []
            # Keywords of the distinct new sets (a batch has few of them).
            new_sets = {new for _, _, new in targets}
            keywords = {f for new in new_sets for f in new if not f.startswith("\\")}
            try:
                self._keywords.ensure(keywords)
            except OSError as exc:
                raise disk_error(exc, "record the new keywords") from exc
            return self._rename_for_flags(targets, wanted, mode)

        def apply(result: list[tuple[int, int, Flags, str | None]]) -> dict[int, Flags]:
            if not result:
                return {}
            records, odd_names = self._records, self._odd_names
            changes: dict[int, Flags] = {}
            count = len(records)
            for i, uid, new, odd in result:
                r = records[i] if i < count else None
                if r is None or r.uid != uid:
                    # The index moved (cannot under the lock, but be safe).
                    self._replace_flags(uid, new, odd)
                else:
                    # A new record, not a mutation: snapshots others hold stay true.
                    records[i] = MessageRecord(uid, r.base, new, r.size, r.vsize, r.internal_date)
                    if odd is None:
                        if odd_names:
                            odd_names.pop(uid, None)
                    else:
                        odd_names[uid] = odd
                changes[uid] = new
            self._snapshot = None
            # One event for the whole batch, before the Deferred fires.
            self._emit(FlagsChanged(self.name, tuple(changes.items())))
            return changes

        return self._locked(work, apply, quiet=len(uid_list) >= QUIET_BATCH)

    def _flag_targets(
        self, uid_list: list[int], wanted: Flags, mode: FlagMode
    ) -> list[tuple[int, MessageRecord, Flags]]:
        """(index position, record, new flags) of the messages whose flags change.

        Worker thread, mailbox lock held: the index cannot change meanwhile.
        The new flags depend only on the old set, and a mailbox has a handful
        of distinct sets, so each is computed once.
        """
        records = self._records
        if len(uid_list) * 8 >= len(records):
            # Most of the mailbox (STORE 1:*): one pass beats a bisection each.
            wanted_uids = set(uid_list)
            positions: Iterable[tuple[int, MessageRecord]] = (
                (i, r) for i, r in enumerate(records) if r.uid in wanted_uids
            )
        else:
            found = []
            for uid in sorted(set(uid_list)):
                i = bisect.bisect_left(records, uid, key=_uid_of)
                if i < len(records) and records[i].uid == uid:
                    found.append((i, records[i]))
            positions = found
        transition: dict[Flags, Flags] = {}
        targets = []
        for i, record in positions:
            old = record.flags
            new = transition.get(old)
            if new is None:
                new = transition[old] = intern_flags(_changed_flags(old, wanted, mode))
            if new is not old and new != old:
                targets.append((i, record, new))
        return targets

    def _rename_for_flags(
        self, targets: list[tuple[int, MessageRecord, Flags]], wanted: Flags, mode: FlagMode
    ) -> list[tuple[int, int, Flags, str | None]]:
        """Rename each file to its new flag letters; [(position, uid, flags, odd name)]."""
        by_name = self._keywords.by_name
        odd_names = self._odd_names
        letters_of: dict[Flags, str] = {}
        # ":2,<letters>" of each distinct flag set, made once: this loop runs
        # 10,000 times for a STORE 1:*, and beside the rename syscall itself
        # (~11 us) every step in Python shows.
        suffixes: dict[Flags, str] = {}

        def suffix(flags: Flags) -> str:
            text = suffixes[flags] = INFO_SEPARATOR + self._letters(flags, letters_of, by_name)
            return text

        # Names relative to one open descriptor of cur/: the kernel does not
        # walk the whole path again for each of 10,000 renames.
        try:
            cur_fd = os.open(self._cur, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise disk_error(exc, "change flags") from exc

        def rename(old: str, new: str) -> None:
            os.rename(old, new, src_dir_fd=cur_fd, dst_dir_fd=cur_fd)

        expect = self._expect if self.watched else None
        done: list[tuple[str, str]] = []
        result: list[tuple[int, int, Flags, str | None]] = []
        try:
            for i, record, new in targets:
                uid = record.uid
                odd = odd_names.get(uid) if odd_names else None
                if odd is None:
                    # The common case: canonical names, letters made once per set.
                    base = record.base
                    old_suffix = suffixes.get(record.flags) or suffix(record.flags)
                    new_suffix = suffixes.get(new) or suffix(new)
                    old_name = base + old_suffix
                    new_name = base + new_suffix
                    extra = ""
                else:
                    old_name = odd
                    extra = self._odd_extra(record)
                    new_name = self._canonical_name(record.base, new, extra)
                try:
                    if expect is not None:
                        expect("cur", old_name, new_name)
                    os.rename(old_name, new_name, src_dir_fd=cur_fd, dst_dir_fd=cur_fd)
                except FileNotFoundError:
                    # Renamed by another program (mutt set a flag) since
                    # we looked: apply our change to the flags it has now.
                    found = self._find_file(record.base)
                    if found is None:
                        continue  # removed: the next rescan reports it
                    _, letters = split_filename(found)
                    current, extra = letters_to_flags(letters or "", self._keywords.by_letter)
                    new = _changed_flags(current, wanted, mode)
                    new_name = self._canonical_name(record.base, new, extra)
                    old_name = found
                    if new_name != found:
                        if expect is not None:
                            expect("cur", found, new_name)
                        rename(found, new_name)
                    if new == record.flags:
                        continue
                done.append((old_name, new_name))
                result.append((i, uid, new, new_name if extra else None))
            if done:
                # One directory fsync makes every rename above durable.
                os.fsync(cur_fd)
        except OSError as exc:
            for old_name, new_name in reversed(done):
                try:
                    rename(new_name, old_name)
                except OSError:
                    log.warn("could not undo flag rename of {name}", name=new_name)
            raise disk_error(exc, "change flags") from exc
        finally:
            os.close(cur_fd)
        return result

    @staticmethod
    def _letters(flags: Flags, memo: dict[Flags, str], by_name: dict[str, str]) -> str:
        """Info letters of *flags* (memoised per set: a batch has few distinct sets)."""
        letters = memo.get(flags)
        if letters is None:
            try:
                letters = flags_to_letters(flags, by_name, "")
            except KeyError:
                # A keyword without a letter cannot be in a file name.
                letters = flags_to_letters(
                    frozenset(f for f in flags if f.startswith("\\") or f in by_name), by_name
                )
            memo[flags] = letters
        return letters

    def expunge(self, uids: Iterable[int]) -> Deferred[tuple[int, ...]]:
        """Unlink the messages' files; fires with the UIDs actually removed."""
        uid_list = sorted(set(uids))

        def work() -> tuple[list[int], StoreError | None]:
            removed = []
            error = None
            for uid in uid_list:
                record = self.record(uid)
                if record is None:
                    continue
                try:
                    name = self._filename(record)
                    self._expect("cur", name)
                    os.unlink(self._cur / name)
                except FileNotFoundError:
                    found = self._find_file(record.base)
                    if found is not None:
                        try:
                            self._expect("cur", found)
                            os.unlink(self._cur / found)
                        except FileNotFoundError:
                            pass
                        except OSError as exc:
                            error = disk_error(exc, "expunge")
                            break
                except OSError as exc:
                    error = disk_error(exc, "expunge")
                    break
                removed.append(uid)
            if removed:
                if self.quota is not None:  # [quota hook]
                    sizes = [r.size for r in map(self.record, removed) if r is not None]
                    _update_quota(self.quota, -sum(sizes), -len(sizes))
                try:
                    fsync_dir(self._cur)
                except OSError as exc:
                    error = error or disk_error(exc, "expunge")
                if self._cache is not None:
                    self._cache.discard(removed)
            return removed, error

        def apply(result: tuple[list[int], StoreError | None]) -> tuple[int, ...]:
            removed, error = result
            if removed:
                self._remove_uids(removed)
                self._emit(MessagesExpunged(self.name, tuple(removed)))
            if error is not None:
                # Files already unlinked are gone whatever happens next, so
                # their event went out; the caller still learns of the failure.
                raise error
            return tuple(removed)

        return self._locked(work, apply)

    def copy(
        self, uids: Iterable[int], destination: IMailbox, strict: bool = False
    ) -> Deferred[list[tuple[int, int]]]:
        """Hard-link (or copy) the messages into *destination*; [(old uid, new uid)].

        The source is locked only while the links are made in the
        destination's tmp/, the destination only while they move into its
        cur/ and get UIDs: two copies in opposite directions cannot deadlock.
        Messages that no longer exist are skipped; with *strict* (IMAP COPY,
        RFC 3501 §6.4.7: all or nothing) one of them fails the whole copy
        with MessageGone and nothing reaches *destination*.
        """
        return self._copy(uids, destination, strict, check_quota=True)

    def _copy(
        self, uids: Iterable[int], destination: IMailbox, strict: bool, check_quota: bool
    ) -> Deferred[list[tuple[int, int]]]:
        if not isinstance(destination, Mailbox):
            return fail(TypeError("copy needs a Maildir Mailbox as destination"))
        target = destination
        uid_list = sorted(set(uids))
        now = self._clock.seconds()

        def link_work() -> list[_Prepared]:
            prepared: list[_Prepared] = []
            try:
                for uid in uid_list:
                    record = self.record(uid)
                    if record is None:
                        if strict:
                            raise MessageGone(f"message UID {uid} has been expunged")
                        continue
                    base = f"{new_base_name(now)},S={record.size},W={record.vsize}"
                    tmp_path = target._tmp / base
                    source = self._cur / self._filename(record)
                    if not source.exists():
                        found = self._find_file(record.base)
                        if found is None:
                            if strict:
                                raise MessageGone(
                                    f"message UID {uid} was removed by another program"
                                )
                            continue  # removed meanwhile: nothing to copy
                        source = self._cur / found
                    _link_or_copy(source, tmp_path)
                    prepared.append(
                        _Prepared(tmp_path, base, record.flags, record.size, record.vsize, uid)
                    )
            except OSError as exc:
                for item in prepared:
                    unlink_quietly(item.tmp_path)
                raise disk_error(exc, "copy messages") from exc
            except MessageGone:
                for item in prepared:
                    unlink_quietly(item.tmp_path)
                raise
            return prepared

        d = self._locked(link_work, lambda prepared: prepared)
        d.addCallback(lambda prepared: target._add_prepared(lambda: prepared, check_quota))
        return d

    def move(
        self, uids: Iterable[int], destination: IMailbox, strict: bool = False
    ) -> Deferred[list[tuple[int, int]]]:
        """RFC 6851: copy, then expunge the originals that were copied (*strict*: see copy)."""
        # A MOVE within one quota (one account) adds nothing in the end: it
        # must work for a user at the limit, whose client deletes by moving
        # to Trash.  Dovecot's quota plugin skips the check the same way.
        within_quota = getattr(destination, "quota", None) is self.quota
        d = self._copy(uids, destination, strict, check_quota=not within_quota)

        def expunge_originals(pairs: list[tuple[int, int]]) -> Deferred[list[tuple[int, int]]]:
            def copied(_: tuple[int, ...]) -> list[tuple[int, int]]:
                return pairs

            return self.expunge(old for old, _ in pairs).addCallback(copied)

        d.addCallback(expunge_originals)
        return d

    def rescan(self) -> Deferred[None]:
        """Compare the directory with the index and report what others changed."""

        def work() -> _SyncResult:
            try:
                if self._unchanged_since_last_scan():
                    return _SyncResult(uidvalidity=self._uidvalidity, uidnext=self._uidnext)
                self._keywords.load()
                return self._scan(full=False)
            except OSError as exc:
                raise disk_error(exc, f"read mailbox {self.name}") from exc

        d = self._locked(work, self._apply_sync)
        d.addCallback(lambda _: None)
        return d

    def notice_change(self, subdir: str, filename: str, delay: float = 0.0) -> None:
        """inotify saw *filename* change in cur/ or new/: rescan unless it was us.

        Our own link, rename and unlink calls announce themselves first
        (``_expect``), so they cost no rescan of a big directory.
        """
        key = (subdir, filename)
        with self._expected_lock:
            count = self._expected.get(key, 0)
            if count:
                if count == 1:
                    del self._expected[key]
                else:
                    self._expected[key] = count - 1
                return
        self.schedule_rescan(delay)

    def _expect(self, subdir: str, *names: str) -> None:
        """Note that we are about to change *names* (worker thread, lock held)."""
        if not self.watched:
            return  # no inotify: nothing will come back to match
        with self._expected_lock:
            for name in names:
                self._expected[(subdir, name)] = self._expected.get((subdir, name), 0) + 1

    def schedule_rescan(self, delay: float = 0.0) -> None:
        """Rescan soon; many notifications within *delay* become one rescan."""
        if self._rescan_call is not None and self._rescan_call.active():
            return

        def run() -> None:
            self._rescan_call = None
            self.rescan().addErrback(
                lambda f: log.failure("rescan of {name} failed", f, name=self.name)
            )

        self._rescan_call = self._clock.callLater(delay, run)

    # --- the serialised core ------------------------------------------------

    def _locked(
        self, work: Callable[[], Any], apply: Callable[[Any], T], quiet: bool = False
    ) -> Deferred[T]:
        """Run *work* in a thread, then *apply* on the reactor, all under the lock.

        *quiet* unwatches the folder meanwhile (a big batch of our own renames,
        see QUIET_BATCH) and rescans after it.
        """

        def run() -> Deferred[T]:
            if self._deleted:
                return fail(NoSuchMailbox(f"mailbox {self.name!r} has been deleted"))
            paused = quiet and self._pause_watch()
            d = self._run_in_thread(work)
            d.addCallback(apply)
            if paused:
                d.addBoth(self._resume_watch)
            d.addBoth(self._used)
            return d

        return self._lock.run(run)

    def _used(self, result: T) -> T:
        self.last_used = self._clock.seconds()
        return result

    def _pause_watch(self) -> bool:
        watcher = self.watcher
        if watcher is None or not self.watched:
            return False
        watcher.unwatch(self)
        return True

    def _resume_watch(self, result: T) -> T:
        """Watch again (reactor thread, after the batch's event) and look once at the folder."""
        if not self._deleted:
            try:
                self.watcher.watch(self)
            except Exception:
                # NOOP/IDLE rescans cover an unwatched folder; say why in the log.
                log.failure("could not watch {name} again", name=self.name)
            # Changes by other programs during the batch raised no event.
            self.schedule_rescan(QUIET_RESCAN_DELAY)
        return result

    def _add_prepared(
        self, prepare: Callable[[], list[_Prepared]], check_quota: bool = True
    ) -> Deferred[list[tuple[int, int]]]:
        """Move prepared tmp/ files into cur/, give them UIDs, announce them.

        *check_quota* False: the caller frees as much as it adds (a MOVE).
        """

        def work() -> tuple[_SyncResult | None, list[MessageRecord], list[int]]:
            items = prepare()
            if not items:
                return None, [], []
            created: list[Path] = []
            try:
                try:
                    if self.quota is not None and check_quota:
                        # [quota hook] refuse before cur/ sees it
                        self.quota.check(sum(i.size for i in items), len(items))
                    keywords = {f for i in items for f in i.flags if not f.startswith("\\")}
                    self._keywords.ensure(keywords)
                    names = []
                    for item in items:
                        name = self._canonical_name(item.base, item.flags, "")
                        self._expect("cur", name)
                        os.link(item.tmp_path, self._cur / name)
                        created.append(self._cur / name)
                        names.append(name)
                    fsync_dir(self._cur)
                    with DotLock(self._uidlist_path).held():
                        synced = None
                        if FileStamp.of(self._uidlist_path) != self._uidlist_stamp:
                            # Another program changed the uidlist: learn its
                            # messages first so our UIDs come after theirs.
                            synced = self._scan(full=False, lock_held=True, skip=set(names))
                        uidnext = synced.uidnext if synced else self._uidnext
                        uids = self._assign_uids(
                            [UidEntry(0, item.base) for item in items], uidnext
                        )
                except OSError as exc:
                    raise disk_error(exc, "store the message") from exc
            except BaseException:
                for path in created:
                    unlink_quietly(path)
                raise
            finally:
                for item in items:
                    unlink_quietly(item.tmp_path)
            if self.quota is not None:  # [quota hook] the messages are durable now
                _update_quota(self.quota, sum(i.size for i in items), len(items))
            records = []
            for item, uid, path in zip(items, uids, created, strict=True):
                mtime = os.stat(path).st_mtime
                records.append(
                    MessageRecord(uid, item.base, item.flags, item.size, item.vsize, mtime)
                )
            return synced, records, [item.source_uid for item in items]

        def apply(
            result: tuple[_SyncResult | None, list[MessageRecord], list[int]],
        ) -> list[tuple[int, int]]:
            synced, records, sources = result
            if synced is not None:
                self._apply_sync(synced)
            if not records:
                return []
            self._records.extend(records)
            self._snapshot = None
            self._uidnext = max(self._uidnext, records[-1].uid + 1)
            self._recent.update(r.uid for r in records)
            self._emit(MessagesAdded(self.name, tuple(records)))
            return [(old, r.uid) for old, r in zip(sources, records, strict=True)]

        return self._locked(work, apply)

    def _assign_uids(self, entries: list[UidEntry], uidnext: int) -> list[int]:
        """Give *entries* UIDs and append them to dovecot-uidlist (dotlock held).

        The caller has checked that nobody changed the file since we last
        read or wrote it.  It is fsynced before this returns: a UID exists
        only once it is on disk; if writing fails the file is cut back and no
        UID is used.
        """
        uid = max(uidnext, self._uidnext)
        for entry in entries:
            entry.uid = uid
            uid += 1
        uidlist_file.append(self._uidlist_path, entries)
        self._uidlist_stamp = FileStamp.of(self._uidlist_path)
        return [e.uid for e in entries]

    def _scan(
        self, full: bool, lock_held: bool = False, skip: Set[str] = frozenset()
    ) -> _SyncResult:
        """Compare cur/ and new/ with the index (thread; mailbox lock held).

        *full* rebuilds the index from scratch (opening).  Files in new/ move
        to cur/ with ``:2,`` as Dovecot does.  Unknown files get their UID from
        dovecot-uidlist, or a new one appended to it under its dotlock.
        *lock_held* says the caller holds that dotlock already; *skip* names
        files in cur/ that the caller is adding itself.
        """
        result = _SyncResult(uidvalidity=self._uidvalidity, uidnext=self._uidnext)
        dir_stamps = self._dir_stamps_now()
        started_ns = time.time_ns()
        on_disk = self._list_files(skip)
        if not full:
            self._compare(on_disk, result)
            if not on_disk and FileStamp.of(self._uidlist_path) == self._uidlist_stamp:
                self._remember_dir_stamps(dir_stamps, started_ns)
                return result
        with contextlib.nullcontext() if lock_held else DotLock(self._uidlist_path).held():
            uidlist = self._read_uidlist() or self._create_uidlist()
            if not full and uidlist.uidvalidity != self._uidvalidity:
                # Another program replaced the uidlist: every UID we know is void.
                reset = self._scan(full=True, lock_held=True, skip=skip)
                reset.reset = True
                return reset
            if full:
                result.uidvalidity = uidlist.uidvalidity
                result.uidnext = 1
            highest = self._records[-1].uid if (self._records and not full) else 0
            found, unlisted = _classify(on_disk, uidlist, highest)
            uidnext = max(uidlist.uidnext, result.uidnext)
            sized = self._fill_missing_vsizes(found, on_disk)
            rewritten = False
            if full and not unlisted and not uidlist.damaged:
                rewritten = self._compact(uidlist, found)
            if sized and not rewritten and not unlisted and not uidlist.damaged:
                uidlist.next_uid = uidlist.uidnext  # N must not fall back
                uidlist_file.rewrite(self._uidlist_path, uidlist)
                self._uidlist_stamp = FileStamp.of(self._uidlist_path)
            if unlisted or uidlist.damaged:
                # The sizes just added reach the file only by a rewrite.
                uidlist.damaged = uidlist.damaged or sized
                new_entries = []
                for base in sorted(unlisted):
                    name = on_disk[base][0]
                    extensions = {}
                    if size_fields(base)[1] is None:
                        # Dovecot's "W" extension: the CRLF size, so that a
                        # restart need not read the file again.
                        extensions["W"] = str(file_crlf_size(self._cur / name))
                    new_entries.append(UidEntry(0, base, extensions))
                self._write_new_entries(uidlist, new_entries, uidnext)
                found.extend((e.uid, e.base, e) for e in new_entries)
        found.sort(key=lambda item: item[0])
        for uid, base, entry in found:
            name, from_new = on_disk[base]
            record = self._make_record(uid, base, name, entry)
            if record is None:
                continue
            result.added.append(record)
            if from_new or not full:
                result.recent.add(uid)
            if self._canonical_name(base, record.flags, "") != name:
                result.odd_names[uid] = name
        if result.added:
            uidnext = max(uidnext, result.added[-1].uid + 1)
        result.uidnext = max(uidnext, result.uidnext)
        if full:
            result.records, result.added = result.added, []
        self._remember_dir_stamps(dir_stamps, started_ns)
        return result

    def _dir_stamps_now(self) -> tuple[int, int]:
        return (os.stat(self._cur).st_mtime_ns, os.stat(self._new).st_mtime_ns)

    def _remember_dir_stamps(self, stamps: tuple[int, int], started_ns: int) -> None:
        """Let the next rescan skip listing if neither directory changes.

        Trusted only when both mtimes are over a second older than the scan:
        a change in the same timestamp tick as our stat would not move the
        mtime, and could otherwise be missed.
        """
        old_enough = max(stamps) < started_ns - 1_000_000_000
        self._dir_stamps = stamps if old_enough else None

    def _unchanged_since_last_scan(self) -> bool:
        """True if cur/, new/ and the uidlist are as the last full listing left them."""
        return (
            self._dir_stamps is not None
            and self._dir_stamps_now() == self._dir_stamps
            and FileStamp.of(self._uidlist_path) == self._uidlist_stamp
            and not self._keywords.changed_on_disk()
        )

    def _list_files(self, skip: Set[str]) -> dict[str, tuple[str, bool]]:
        """base -> (name in cur/, came from new/); new/ files are moved to cur/."""
        with self._expected_lock:
            # A listing sees everything; an expectation whose event never
            # came (a failed rename) must not hide a later change of that name.
            self._expected.clear()
        on_disk: dict[str, tuple[str, bool]] = {}
        with os.scandir(self._cur) as it:
            for entry in it:
                if entry.name.startswith(".") or entry.name in skip:
                    continue
                on_disk.setdefault(split_filename(entry.name)[0], (entry.name, False))
        with os.scandir(self._new) as it:
            new_names = [e.name for e in it if not e.name.startswith(".")]
        for name in new_names:
            base, _ = split_filename(name)
            if base in on_disk:
                continue
            target = base + INFO_SEPARATOR
            try:
                self._expect("new", name)
                self._expect("cur", target)
                os.rename(self._new / name, self._cur / target)
            except FileNotFoundError:
                continue
            on_disk[base] = (target, True)
        if new_names:
            fsync_dir(self._cur)
            fsync_dir(self._new)
        return on_disk

    def _compare(self, on_disk: dict[str, tuple[str, bool]], result: _SyncResult) -> None:
        """Find expunged and re-flagged messages; pops known files from *on_disk*."""
        odd_names = self._odd_names
        by_name = self._keywords.by_name
        letters_of: dict[Flags, str] = {}
        for record in self._records:
            found = on_disk.pop(record.base, None)
            if found is None:
                result.expunged.append(record.uid)
                continue
            name = found[0]
            # A name with letters we could not name (dovecot-keywords lagging
            # behind a rename by Dovecot) is resolved again at every scan.
            # The canonical letters are computed once per distinct flag set:
            # this loop runs over every message after each big STORE.
            if record.uid not in odd_names and name == (
                record.base + INFO_SEPARATOR + self._letters(record.flags, letters_of, by_name)
            ):
                continue
            _, letters = split_filename(name)
            flags, _ = letters_to_flags(letters or "", self._keywords.by_letter)
            canonical = self._canonical_name(record.base, flags, "") == name
            result.odd_names[record.uid] = None if canonical else name
            if flags != record.flags:
                result.changed.append((record.uid, flags))

    def _fill_missing_vsizes(
        self, found: list[tuple[int, str, UidEntry | None]], on_disk: dict[str, tuple[str, bool]]
    ) -> bool:
        """Give listed files with no CRLF size anywhere a ``W`` extension.

        Files an MTA dropped carry no ``,W=`` in their name; computing it
        reads the whole file, so it is done once and kept in the uidlist
        (as Dovecot does) rather than at every open.  True if any was added.
        """
        added = False
        for _, base, entry in found:
            if entry is None or entry.vsize is not None or size_fields(base)[1] is not None:
                continue
            try:
                vsize = file_crlf_size(self._cur / on_disk[base][0])
            except FileNotFoundError:
                continue
            entry.extensions = {**entry.extensions, "W": str(vsize)}
            added = True
        return added

    def _compact(self, uidlist: UidList, found: list[tuple[int, str, UidEntry | None]]) -> bool:
        """Drop the lines of long-expunged messages when they outnumber the living.

        Expunge leaves lines behind (Dovecot is lazy the same way).  Only
        lines below the highest UID seen on disk go: a line above it may
        belong to a file another program created after our listing.
        """
        if not found:
            return False
        highest_seen = max(uid for uid, _, _ in found)
        alive = {base for _, base, _ in found}
        dead = sum(1 for e in uidlist.entries if e.base not in alive and e.uid < highest_seen)
        if dead <= max(COMPACT_AFTER, len(alive)):
            return False
        uidlist.next_uid = uidlist.uidnext  # N must not fall back
        uidlist.entries = [e for e in uidlist.entries if e.base in alive or e.uid > highest_seen]
        uidlist_file.rewrite(self._uidlist_path, uidlist)
        self._uidlist_stamp = FileStamp.of(self._uidlist_path)
        return True

    def _write_new_entries(self, uidlist: UidList, entries: list[UidEntry], uidnext: int) -> None:
        """Number *entries* from *uidnext* and write them (dotlock held)."""
        uid = max(uidnext, uidlist.uidnext)
        for entry in entries:
            entry.uid = uid
            uid += 1
        relisted = {e.base for e in entries}
        if uidlist.damaged or any(e.base in relisted for e in uidlist.entries):
            # A torn line, or a base listed under a UID that is too old to
            # use: rewrite the whole file rather than append to it.
            uidlist.entries = [e for e in uidlist.entries if e.base not in relisted]
            uidlist.entries.extend(entries)
            uidlist.next_uid = uid
            uidlist_file.rewrite(self._uidlist_path, uidlist)
        elif entries:
            uidlist_file.append(self._uidlist_path, entries)
        self._uidlist_stamp = FileStamp.of(self._uidlist_path)

    def _read_uidlist(self) -> UidList | None:
        stamp = FileStamp.of(self._uidlist_path)
        try:
            uidlist = uidlist_file.read(self._uidlist_path)
        except UidListCorrupt as exc:
            log.warn("{path}: {error}; making a new one", path=self._uidlist_path, error=exc)
            return None
        if uidlist is not None and not uidlist.damaged:
            self._uidlist_stamp = stamp
        return uidlist

    def _create_uidlist(self) -> UidList:
        """A new empty uidlist with a fresh UIDVALIDITY (dotlock held)."""
        created = uidlist_file.create(
            self._uidlist_path, self._new_uidvalidity(), os.urandom(16).hex()
        )
        self._uidlist_stamp = FileStamp.of(self._uidlist_path)
        return created

    def _make_record(
        self, uid: int, base: str, name: str, entry: UidEntry | None
    ) -> MessageRecord | None:
        try:
            # A plain string join: pathlib costs more than the stat itself
            # when a first scan does this for every message.
            st = os.stat(os.path.join(self._cur, name))
        except FileNotFoundError:
            return None
        _size, vsize = size_fields(base)
        if vsize is None and entry is not None:
            vsize = entry.vsize
        if vsize is None:
            vsize = file_crlf_size(self._cur / name)
        _, letters = split_filename(name)
        flags, _ = letters_to_flags(letters or "", self._keywords.by_letter)
        return MessageRecord(uid, base, flags, st.st_size, vsize, st.st_mtime)

    def _apply_sync(self, result: _SyncResult) -> None:
        """Bring the index up to date with a scan and emit its events, in order."""
        if result.records is not None:
            self._records = result.records
            self._snapshot = None
            self._infos.clear()  # a new index (UIDVALIDITY may have changed)
            self._removals += 1
            self._odd_names = {u: n for u, n in result.odd_names.items() if n is not None}
            self._uidvalidity = result.uidvalidity
            self._uidnext = result.uidnext
            self._recent = set(result.recent)
            if result.reset:
                self._emit(MailboxReset(self.name, self._uidvalidity))
            return
        if result.expunged:
            self._remove_uids(result.expunged)
            self._emit(MessagesExpunged(self.name, tuple(result.expunged)))
        for uid, odd in result.odd_names.items():
            if odd is None:
                self._odd_names.pop(uid, None)
            else:
                self._odd_names[uid] = odd
        if result.changed:
            for uid, flags in result.changed:
                self._replace_flags(uid, flags, self._odd_names.get(uid))
            self._emit(FlagsChanged(self.name, tuple(result.changed)))
        self._uidnext = max(self._uidnext, result.uidnext)
        if result.added:
            self._records.extend(result.added)
            self._snapshot = None
            self._recent.update(result.recent)
            self._emit(MessagesAdded(self.name, tuple(result.added)))

    # --- for Account (DELETE, RENAME, unloading) ------------------------------

    def _unload(self) -> None:
        """Stop as the live mailbox (Account drops it; \\Recent is in the cache).

        Nothing is closed that a late holder of this object could still need:
        its operations stay correct on disk (UIDs are assigned under the
        uidlist dotlock after re-reading it), and the cache connection closes
        with the object.
        """
        if self._rescan_call is not None and self._rescan_call.active():
            self._rescan_call.cancel()

    def _mark_deleted(self) -> None:
        self._deleted = True
        if self._cache is not None:
            self._cache.close()
        if self._rescan_call is not None and self._rescan_call.active():
            self._rescan_call.cancel()

    def _drop_all(self) -> None:
        self._removals += 1
        self._infos.clear()
        self._records = []
        self._snapshot = None
        self._odd_names.clear()
        self._recent.clear()

    def _relocate(self, name: str, path: Path) -> None:
        """The folder was renamed on disk: follow it (same index, same UIDs)."""
        self.name = name
        self.path = path
        self._cur = path / "cur"
        self._new = path / "new"
        self._tmp = path / "tmp"
        self._uidlist_path = path / uidlist_file.FILENAME
        self._keywords.path = path / self._keywords.path.name
        self._dir_stamps = None

    # --- helpers ------------------------------------------------------------

    def _emit(self, event: ChangeEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                # One broken session must not stop the others hearing it.
                log.failure("listener failed on {event!r}", event=event)

    def _filename(self, record: MessageRecord) -> str:
        odd = self._odd_names.get(record.uid)
        if odd is not None:
            return odd
        return self._canonical_name(record.base, record.flags, "")

    def _canonical_name(self, base: str, flags: Flags, extra: str) -> str:
        try:
            letters = flags_to_letters(flags, self._keywords.by_name, extra)
        except KeyError:
            # A keyword without a letter cannot be in a file name; it is
            # dropped from the name (the caller ensures letters first).
            letters = flags_to_letters(
                frozenset(f for f in flags if f.startswith("\\") or f in self._keywords.by_name),
                self._keywords.by_name,
                extra,
            )
        return base + INFO_SEPARATOR + letters

    def _odd_extra(self, record: MessageRecord) -> str:
        """Letters in the current file name that are no IMAP flag (kept on rename)."""
        odd = self._odd_names.get(record.uid)
        if odd is None:
            return ""
        _, letters = split_filename(odd)
        return letters_to_flags(letters or "", self._keywords.by_letter)[1]

    def _find_file(self, base: str) -> str | None:
        with os.scandir(self._cur) as it:
            for entry in it:
                if split_filename(entry.name)[0] == base:
                    return entry.name
        return None

    def _replace_flags(self, uid: int, flags: Flags, odd: str | None) -> None:
        i = bisect.bisect_left(self._records, uid, key=_uid_of)
        if i < len(self._records) and self._records[i].uid == uid:
            # A new record, not a mutation: snapshots others hold stay true.
            self._records[i] = attrs.evolve(self._records[i], flags=flags)
            self._snapshot = None
        if odd is None:
            self._odd_names.pop(uid, None)
        else:
            self._odd_names[uid] = odd

    def _remove_uids(self, uids: Iterable[int]) -> None:
        self._removals += 1
        gone = set(uids)
        self._records = [r for r in self._records if r.uid not in gone]
        self._snapshot = None
        for uid in gone:
            self._odd_names.pop(uid, None)
            self._recent.discard(uid)
            self._infos.pop(uid, None)


def _update_quota(quota: Any, storage: int, messages: int) -> None:
    """[quota hook] Record a change of usage; a failure must not undo the mutation."""
    try:
        quota.update(storage, messages)
    except OSError as exc:
        # maildirsize is a cache: the next recount puts it right.
        log.warn("could not update maildirsize: {error}", error=exc)


def _changed_flags(current: Flags, flags: Flags, mode: FlagMode) -> Flags:
    """RFC 3501 §6.4.6: FLAGS (replace), +FLAGS (add), -FLAGS (remove)."""
    if mode == "add":
        return intern_flags(current | flags)
    if mode == "remove":
        return intern_flags(current - flags)
    return flags


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link *source* as *target*; copy (fsynced, mtime kept) where links fail."""
    try:
        os.link(source, target)
        return
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
    try:
        shutil.copyfile(source, target)
        shutil.copystat(source, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        unlink_quietly(target)
        raise


def _classify(
    on_disk: dict[str, tuple[str, bool]], uidlist: UidList, highest: int
) -> tuple[list[tuple[int, str, UidEntry | None]], list[str]]:
    """Split unknown files into (uid, base, entry) listed usably, and unlisted bases.

    A file listed at or below *highest* (a UID already handed out to a later
    message) counts as unlisted: it gets a fresh UID, because sequence
    numbers must follow UID order.
    """
    listed = {e.base: e for e in uidlist.entries if e.base in on_disk}
    found: list[tuple[int, str, UidEntry | None]] = []
    unlisted: list[str] = []
    for base in on_disk:
        entry = listed.get(base)
        if entry is not None and entry.uid > highest:
            found.append((entry.uid, base, entry))
        else:
            unlisted.append(base)
    return found, unlisted
