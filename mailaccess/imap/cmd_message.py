"""Message commands: APPEND (RFC 3501 §6.3.11), SEARCH, FETCH, STORE, COPY (§6.4.4-§6.4.7),
their UID forms (§6.4.8), MOVE (RFC 6851) and the UIDPLUS codes (RFC 4315).

FETCH answers through :class:`FetchRun`, a push producer: small responses are
gathered into batched writes, message sections stream from their files in
chunks, and a slow client pauses the run (so 500 messages of 1 MB never sit in
memory).  Per message there is no Deferred chain unless metadata must really be
read from disk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailaccess.imap import commands as c
from mailaccess.imap.cmd_mailbox import mailbox_name
from mailaccess.imap.fetch_data import (
    BodyStream,
    FetchPlan,
    UnsupportedFetchItem,
    encode_fetch_flags,
)
from mailaccess.imap.response import Atom, ResponseCode, sequence_set_atom, untagged_status
from mailaccess.imap.session import Outcome, Reply
from mailaccess.imap.view import MailboxView, OutOfRange
from mailaccess.store.model import SEEN, MessageGone, MessageRecord, NoSuchMailbox

if TYPE_CHECKING:
    from mailaccess.imap.server import IMAPServer

__all__ = ["FetchRun", "append", "copy", "fetch", "move", "search", "store"]

log = Logger(namespace="mailaccess.imap")

# Messages answered per reactor turn when nothing paces us (metadata-only FETCH).
_SLICE = 2000
_MISSING = object()
# Messages whose metadata is asked for ahead of the one being answered.
_READ_AHEAD = 32

_GONE_TEXT = "Some of the requested messages no longer exist"


def _view(server: IMAPServer) -> MailboxView:
    view = server.view
    assert view is not None, "a selected-state command without a selected mailbox"
    return view


def _select(
    view: MailboxView, command: c.Fetch | c.Store | c.Copy | c.Move
) -> list[tuple[int, MessageRecord]] | Reply:
    if command.sequence_set.saved:
        # RFC 5182 SEARCHRES is not advertised.
        return Reply.bad("$ (SEARCHRES) is not supported")
    try:
        return view.select(command.sequence_set, command.uid)
    except OutOfRange as error:
        # RFC 3501 §9: a message sequence number must exist (Dovecot: BAD too).
        return Reply.bad(str(error))


def _read_only(view: MailboxView, what: str) -> Reply | None:
    if view.readonly:
        return Reply.no(f"{what}: the mailbox is read-only (EXAMINE)", "READ-ONLY")
    return None


# --- RFC 3501 §6.3.11 APPEND, RFC 4315 §3 APPENDUID ------------------------------------


def append(server: IMAPServer, command: c.Append) -> Outcome:
    """Store one message; ``OK [APPENDUID uidvalidity uid]`` once it is on disk."""
    if len(command.messages) != 1:
        return Reply.bad("MULTIAPPEND is not supported: one message per APPEND")
    message = command.messages[0]
    if message.binary:
        return Reply.bad("BINARY literals (~{n}) are not supported")
    if not message.message:
        return Reply.no("an empty message cannot be appended")
    date = message.internal_date.timestamp() if message.internal_date is not None else None
    d: Deferred[Any] = server.account.mailbox(mailbox_name(command.mailbox))

    def opened(mailbox: Any) -> Deferred[Reply]:
        stored: Deferred[Any] = mailbox.append(message.message, frozenset(message.flags), date)
        return stored.addCallback(
            lambda record: Reply.ok(
                "APPEND completed",
                ResponseCode("APPENDUID", (mailbox.uidvalidity, record.uid)),
            )
        )

    def missing(failure: Failure) -> Reply:
        failure.trap(NoSuchMailbox)
        # RFC 3501 §6.3.11: TRYCREATE tells the client that CREATE may help.
        return Reply.no(f"APPEND failed: {failure.value}", "TRYCREATE")

    return d.addCallbacks(opened, missing)


# --- RFC 3501 §6.4.4 SEARCH --------------------------------------------------------------


def search(server: IMAPServer, command: c.Search) -> Outcome:
    """Evaluate the program over this session's view; numbers or UIDs ascending."""
    from mailaccess.imap.search_eval import BadCharset, UnsupportedSearchKey, evaluate

    if command.returns is not None:
        return Reply.bad("ESEARCH (SEARCH RETURN) is not supported")
    view = _view(server)
    records = view.records
    messages = [(seq, record, view.flags_of(record)) for seq, record in view.iter_all()]
    context = _SearchContext(
        highest_seq=len(records),
        highest_uid=records[-1].uid if records else 0,
        saved=None,
        mailbox=view.mailbox,
    )
    runner = server.factory.run_in_thread
    try:
        # The clock lets the header round give the reactor back between slices.
        if runner is None:
            d: Deferred[Any] = evaluate(
                command.program, messages, context, command.charset, clock=server.clock
            )
        else:
            d = evaluate(
                command.program, messages, context, command.charset, runner, clock=server.clock
            )
    except BadCharset as error:
        # RFC 3501 §6.4.4: NO, naming the charsets we do support.
        supported = [Atom.of(name) for name in error.supported]
        return Reply.no(str(error), ResponseCode("BADCHARSET", (supported,)))
    except UnsupportedSearchKey as error:
        return Reply.bad(str(error))

    def found(numbers: Sequence[int]) -> Reply:
        if server.view is not view:
            return Reply.no("the mailbox was closed during SEARCH")
        if command.uid:
            # Numbers are of the records as they were when the search began.
            numbers = [records[n - 1].uid for n in numbers]
        server.send(b"* SEARCH" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
        return Reply.ok("SEARCH completed")

    return d.addCallback(found)


@attrs.define
class _SearchContext:
    """What search_eval needs of the session (its SearchContext protocol)."""

    highest_seq: int
    highest_uid: int
    saved: Any
    mailbox: Any

    def message_info(self, uid: int) -> Deferred[Any]:
        result: Deferred[Any] = self.mailbox.message_info(uid)
        return result

    def message_infos(self, uids: list[int]) -> Deferred[dict[int, Any]]:
        # search_eval's optional bulk form: one cache read for the header round.
        result: Deferred[dict[int, Any]] = self.mailbox.message_infos(uids)
        return result

    def open_message(self, uid: int) -> IO[bytes]:
        result: IO[bytes] = self.mailbox.open_message(uid)
        return result


# --- RFC 3501 §6.4.5 FETCH -------------------------------------------------------------------


class _KeepOpen:
    """A file whose close() is ours to call: the plan reads it, we stream from it."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def close(self) -> None:
        pass


def fetch(server: IMAPServer, command: c.Fetch) -> Outcome:
    """FETCH / UID FETCH, setting \\Seen first for BODY[] and friends."""
    if command.modifiers:
        return Reply.bad("FETCH modifiers (CONDSTORE) are not supported")
    view = _view(server)
    targets = _select(view, command)
    if isinstance(targets, Reply):
        return targets
    try:
        plan = FetchPlan(command.attributes, command.uid)
    except UnsupportedFetchItem as error:
        return Reply.bad(str(error))
    if not targets:
        return Reply.ok("FETCH completed")
    unseen = []
    if plan.sets_seen and not view.readonly:
        unseen = [r.uid for _, r in targets if SEEN not in r.flags]
    if not unseen:
        return FetchRun(server, view, plan, targets, frozenset()).start()
    # RFC 3501 §6.4.5: BODY[...] (not PEEK), RFC822 and RFC822.TEXT set \Seen.
    d: Deferred[Any] = view.mailbox.store_flags(unseen, frozenset({SEEN}), "add")

    def seen(changed: dict[int, Any]) -> Deferred[Reply] | Reply:
        if server.view is not view:
            return Reply.no("the mailbox was closed during FETCH")
        # Our own \Seen changes are told in the FETCH lines themselves.
        server.report_updates(command.uid, own_flags=changed)
        again = _select(view, command)
        if isinstance(again, Reply):
            return again
        return FetchRun(server, view, plan, again, frozenset(changed)).start()

    return d.addCallback(seen)


@implementer(IPushProducer)
class FetchRun:
    """Writes the FETCH responses of one command, as fast as the client reads them."""

    def __init__(
        self,
        server: IMAPServer,
        view: MailboxView,
        plan: FetchPlan,
        targets: list[tuple[int, MessageRecord]],
        seen_changed: frozenset[int],
    ) -> None:
        self.server = server
        self.view = view
        self.plan = plan
        self.targets = targets
        self.seen_changed = seen_changed
        self.gone = 0  # messages that vanished under us (RFC 2180 §4.1)
        self._next = 0
        self._paused = False
        self._running = False
        self._finished = False
        self._waiting_info = False
        self._infos: dict[int, Any] = {}  # target index -> MessageInfo or Failure
        self._requested = 0  # targets whose metadata has been asked for
        self._parts: deque[bytes | BodyStream] = deque()
        self._file: IO[bytes] | None = None
        self._chunks: Iterator[bytes] | None = None
        self._done: Deferred[Reply] = Deferred()
        self._registered = False

    def start(self) -> Deferred[Reply]:
        """Begin; fires with the tagged reply once every response is written."""
        self.server.producer = self
        if self.plan.needs_file:
            # Message text may be large: go as fast as the client reads.
            self.server.transport.registerProducer(self, True)
            self._registered = True
        # Metadata only (FLAGS, ENVELOPE…) is a few hundred octets a message:
        # written in one go, it avoids a reactor turn per 64 KB of answer.
        self.resumeProducing()
        return self._done

    # --- IPushProducer ------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._running or self._finished or self._waiting_info:
            return
        self._running = True
        stop_at = self._next + _SLICE
        try:
            while not self._paused and not self._finished and not self._waiting_info:
                if self._next >= stop_at and not self._registered:
                    # Let other sessions have the reactor between slices; the
                    # transport sends what we wrote meanwhile.
                    self.server.flush_output()
                    self._paused = True
                    self.server.clock.callLater(0, self.resumeProducing)
                    break
                if self.plan.needs_file:
                    self._step()
                else:
                    self._metadata(stop_at)
        except Exception:
            self._finish(Failure())
        finally:
            self._running = False

    def stopProducing(self) -> None:
        self._finish(None, stopped=True)

    # --- the work -----------------------------------------------------------------

    def _metadata(self, stop_at: int) -> None:
        """Answer messages up to *stop_at* from the index and cached metadata alone.

        The hot loop of ``UID FETCH 1:* (FLAGS ENVELOPE ...)``: no files, one
        response line a message, gathered into one write.
        """
        targets, infos = self.targets, self._infos
        needs_info = self.plan.needs_info
        response, flags_of = self.plan.response, self.view.flags_of
        seen_changed = self.seen_changed
        lines: list[bytes] = []
        stop = min(len(targets), stop_at)
        try:
            while self._next < stop:
                index = self._next
                seq, record = targets[index]
                info: Any = None
                if needs_info:
                    if self._requested - index <= _SLICE // 2:
                        # The next slice's read overlaps this slice's writing.
                        self._read_ahead()
                    info = infos.pop(index, _MISSING)
                    if info is _MISSING:
                        self._waiting_info = True  # _got_info resumes us
                        return
                self._next = index + 1
                if isinstance(info, Failure):
                    if not info.check(MessageGone):
                        info.raiseException()
                    self.gone += 1  # RFC 2180 §4.1.2: left out, NO at the end
                    continue
                parts = response(
                    seq, record, flags_of(record), info, None, record.uid in seen_changed
                )
                lines.append(cast(bytes, parts[0]))
        finally:
            if lines:
                self.server.send(b"".join(lines))
        if self._next >= len(targets):
            self._finish(None)

    def _step(self) -> None:
        if self._chunks is not None:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._chunks = None
            else:
                self.server.transport.write(chunk)
            return
        if self._parts:
            part = self._parts.popleft()
            if isinstance(part, BodyStream):
                self.server.flush_output()
                assert self._file is not None
                self._chunks = part.chunks(self._file)
            else:
                self.server.send(part)
            return
        self._close_file()
        if self._next >= len(self.targets):
            self._finish(None)
            return
        seq, record = self.targets[self._next]
        info: Any = None
        if self.plan.needs_info:
            self._read_ahead()
            if self._next not in self._infos:
                self._waiting_info = True
                return
            info = self._infos.pop(self._next)
        self._next += 1
        if isinstance(info, Failure):
            if info.check(MessageGone):
                self.gone += 1
                return
            info.raiseException()
        self._respond(seq, record, info)

    def _read_ahead(self) -> None:
        # Ask for the metadata of a run of messages in one store call
        # (IMailbox.message_infos: one bulk cache read, misses parsed in a
        # worker thread), not one Deferred and one sqlite row per message.
        # Metadata-only answers take a whole slice at once; answers that
        # stream files need only stay a little ahead of the writer.
        ahead = _READ_AHEAD if self.plan.needs_file else _SLICE
        start = self._requested
        if start - self._next > ahead // 2:
            return  # enough asked for already
        stop = min(len(self.targets), max(self._next, start) + ahead)
        if start >= stop:
            return
        self._requested = stop
        uids = [record.uid for _, record in self.targets[start:stop]]
        d: Deferred[Any] = self.view.mailbox.message_infos(uids)
        d.addBoth(self._got_infos, start, uids)

    def _got_infos(self, result: Any, start: int, uids: list[int]) -> None:
        if self._finished:
            return
        infos = self._infos
        if isinstance(result, Failure):
            for index in range(start, start + len(uids)):
                infos[index] = result
        else:
            for index, uid in enumerate(uids, start):
                info = result.get(uid, _MISSING)
                # Absent: expunged or its file removed (RFC 2180 §4.1.2).
                infos[index] = (
                    info
                    if info is not _MISSING
                    else Failure(MessageGone(f"message UID {uid} no longer exists"))
                )
        if self._waiting_info and self._next in infos:
            self._waiting_info = False
            if not self._running:
                # It came later, from disk: carry on.
                self.resumeProducing()

    def _respond(self, seq: int, record: MessageRecord, info: Any) -> None:
        plan = self.plan
        open_message = None
        if plan.needs_file:
            try:
                self._file = self.view.mailbox.open_message(record.uid)
            except MessageGone:
                # RFC 2180 §4.1.2: leave it out; the tagged NO says why.
                self.gone += 1
                return
            keep = cast(IO[bytes], _KeepOpen(self._file))
            open_message = lambda: keep  # noqa: E731
        try:
            parts = plan.response(
                seq,
                record,
                self.view.flags_of(record),
                info,
                open_message,
                seen_changed=record.uid in self.seen_changed,
            )
        except MessageGone:
            self.gone += 1
            return
        if len(parts) == 1 and isinstance(parts[0], bytes):
            # The common case (no section to stream): straight into the batch.
            self.server.send(parts[0])
        else:
            self._parts = deque(parts)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _finish(self, failure: Failure | None, stopped: bool = False) -> None:
        if self._finished:
            return
        self._finished = True
        self._close_file()
        self._chunks = None
        server = self.server
        if server.producer is self:
            server.producer = None
        if self._registered:
            self._registered = False
            server.transport.unregisterProducer()
        if stopped:
            return  # the connection is gone; nobody hears the answer
        if failure is not None:
            self._done.errback(failure)
        elif self.gone:
            # RFC 2180 §4.1.2, RFC 5530 EXPUNGEISSUED: what still exists was sent.
            self._done.callback(Reply.no(_GONE_TEXT, "EXPUNGEISSUED"))
        else:
            self._done.callback(Reply.ok("FETCH completed"))


# --- RFC 3501 §6.4.6 STORE -----------------------------------------------------------------


def store(server: IMAPServer, command: c.Store) -> Outcome:
    """Change flags; the new flags come back as FETCH responses unless .SILENT."""
    if command.modifiers:
        return Reply.bad("STORE modifiers (CONDSTORE) are not supported")
    view = _view(server)
    targets = _select(view, command)
    if isinstance(targets, Reply):
        return targets
    if view.readonly:
        # RFC 3501 §6.3.2 forbids changing a mailbox opened with EXAMINE, but
        # names no answer for STORE.  Dovecot 2.3 (checked live) answers OK
        # and changes nothing; we answer as it does, since clients are tested
        # against it (a NO would make some retry or give up the sync).
        return Reply.ok("STORE ignored: the mailbox is read-only (EXAMINE)")
    if not targets:
        return Reply.ok("STORE completed")
    uids = [r.uid for _, r in targets]
    d: Deferred[Any] = view.mailbox.store_flags(
        uids, frozenset(command.flags), cast(Any, command.mode)
    )

    def stored(changed: dict[int, Any]) -> Reply:
        if server.view is not view:
            return Reply.no("the mailbox was closed during STORE")
        server.report_updates(command.uid, own_flags=changed)
        if not command.silent:
            records = view.records
            count = len(records)
            lines = []
            # A STORE 1:* answers 10,000 lines: each distinct flag set is
            # encoded once, and a message's number is looked up only if an
            # EXPUNGE reported just now moved it.
            encoded: dict[Any, bytes] = {}
            flags_of = view.flags_of
            for seq, target in targets:
                uid = target.uid
                if seq > count or records[seq - 1].uid != uid:
                    found = view.seq_of(uid)
                    if found is None:
                        continue
                    seq = found
                record = records[seq - 1]
                flags = flags_of(record)
                text = encoded.get(flags)
                if text is None:
                    text = encoded[flags] = encode_fetch_flags(flags)
                if command.uid:
                    # RFC 3501 §6.4.8: UID STORE answers carry the UID.
                    lines.append(b"* %d FETCH (UID %d FLAGS %s)\r\n" % (seq, uid, text))
                else:
                    lines.append(b"* %d FETCH (FLAGS %s)\r\n" % (seq, text))
            server.send(b"".join(lines))
        return Reply.ok("STORE completed")

    return d.addCallback(stored)


# --- RFC 3501 §6.4.7 COPY, RFC 6851 MOVE, RFC 4315 §3 COPYUID ----------------------------------


def _copyuid(destination: Any, pairs: list[tuple[int, int]]) -> ResponseCode:
    return ResponseCode(
        "COPYUID",
        (
            destination.uidvalidity,
            sequence_set_atom(old for old, _ in pairs),
            sequence_set_atom(new for _, new in pairs),
        ),
    )


def _transfer(server: IMAPServer, command: c.Copy | c.Move, moving: bool) -> Outcome:
    view = _view(server)
    targets = _select(view, command)
    if isinstance(targets, Reply):
        return targets
    if moving:
        refused = _read_only(view, "MOVE")
        if refused is not None:
            return refused
    name = mailbox_name(command.mailbox)
    d: Deferred[Any] = server.account.mailbox(name)
    verb = command.name

    def opened(destination: Any) -> Deferred[Reply] | Reply:
        if not targets:
            return Reply.ok(f"{verb} completed")
        uids = [r.uid for _, r in targets]
        source = view.mailbox
        # RFC 3501 §6.4.7: all or nothing.  A message this session still
        # shows but another expunged fails the whole command and nothing is
        # copied (Dovecot: NO [EXPUNGEISSUED], destination unchanged).
        done: Deferred[Any] = (
            source.move(uids, destination, strict=True)
            if moving
            else source.copy(uids, destination, strict=True)
        )

        def finished(pairs: list[tuple[int, int]]) -> Reply:
            if not pairs:
                return Reply.ok(f"{verb} completed")
            code = _copyuid(destination, pairs)
            if moving:
                # RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGEs.
                server.send(untagged_status("OK", "Moved UIDs", code))
                return Reply.ok("MOVE completed")
            return Reply.ok("COPY completed", code)

        def gone(failure: Failure) -> Reply:
            failure.trap(MessageGone)
            return Reply.no(_GONE_TEXT, "EXPUNGEISSUED")

        return done.addCallbacks(finished, gone)

    def missing(failure: Failure) -> Reply:
        failure.trap(NoSuchMailbox)
        # RFC 3501 §6.4.7: TRYCREATE when the destination does not exist.
        return Reply.no(f"{verb} failed: {failure.value}", "TRYCREATE")

    return d.addCallbacks(opened, missing)


def copy(server: IMAPServer, command: c.Copy) -> Outcome:
    """RFC 3501 §6.4.7 COPY / UID COPY, with COPYUID (RFC 4315 §3)."""
    return _transfer(server, command, moving=False)


def move(server: IMAPServer, command: c.Move) -> Outcome:
    """RFC 6851 §3.1 MOVE / UID MOVE."""
    return _transfer(server, command, moving=True)
