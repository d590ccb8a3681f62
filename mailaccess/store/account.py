"""One user's mail (INBOX plus Maildir++ folders) and the Store of all users.

Layout, as Dovecot's ``mail_location = maildir:<mail_root>/%u``: the user's
root ``<mail_root>/<user>/`` is INBOX (``cur/ new/ tmp/``); a folder
``Parent.Child`` is the directory ``.Parent.Child/`` (each level in modified
UTF-7) holding its own ``cur/ new/ tmp/`` and a ``maildirfolder`` file.

The IMAP hierarchy delimiter is ``.``, Dovecot's default for Maildir++: the
names a migrated user sees stay the same, and a ``.`` could not be stored
inside a level name anyway.  ``/`` is refused in names (it cannot be part of
a directory name).

Special-use attributes (RFC 6154) live in ``mailaccess-special-use`` in the
user's root: a plain file (Maildir++ would take a ``.name`` directory for a
folder), one ``<attribute> TAB <name>`` a line.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from mailaccess.config import MailboxesConfig
from mailaccess.store import mutf7
from mailaccess.store.interfaces import IAccount, IMailbox, IStore
from mailaccess.store.mailbox import Mailbox, RunInThread
from mailaccess.store.maildir import atomic_write, disk_error, ensure_maildir, fsync_dir
from mailaccess.store.model import (
    InvalidMailboxName,
    MailboxDeleted,
    MailboxExists,
    MessagesExpunged,
    NoSuchMailbox,
    StoreError,
)

log = Logger()

DELIMITER = "."
SPECIAL_USE_FILE = "mailaccess-special-use"
#: Dovecot's name for a folder being deleted; ``..`` can never be a folder.
TRASH_DIR = "..DOVECOT-TRASH"

#: RFC 6154 §2 attributes.
SPECIAL_USE_ATTRIBUTES = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)


@attrs.frozen
class Listing:
    """One LIST line: a name and its attributes (RFC 3501 §7.2.2, RFC 3348, RFC 6154)."""

    name: str
    attributes: frozenset[str]


def normalize_name(name: str) -> str:
    """Validate an IMAP mailbox name; INBOX in any case becomes ``INBOX``.

    RFC 3501 §5.1: INBOX is case-insensitive (also as the first level, as
    Dovecot treats it).  Raises InvalidMailboxName with the reason.
    """
    if not name:
        raise InvalidMailboxName("the mailbox name is empty")
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == "INBOX":
        name = "INBOX" + sep + rest
    levels = name.split(DELIMITER)
    if any(level == "" for level in levels):
        raise InvalidMailboxName(
            f"mailbox name {name!r} has an empty level (leading, trailing or doubled '.')"
        )
    for char in name:
        if char == "/" or ord(char) < 0x20 or ord(char) == 0x7F:
            raise InvalidMailboxName(f"mailbox names cannot contain {char!r}")
    if levels[0].startswith("~"):
        raise InvalidMailboxName("mailbox names cannot start with '~'")
    return name


class Account(IAccount):
    """All of one user's mailboxes; shared by every session of that user."""

    delimiter = DELIMITER

    def __init__(
        self,
        username: str,
        root: Path,
        clock: IReactorTime,
        run_in_thread: RunInThread = deferToThread,
        watch: Any = None,
        quota: Any = None,
        unload_after: float = 0.0,
    ) -> None:
        self.username = username
        #: [quota hook, issue 6] mailaccess.store.quota.Quota, or None: no limit.
        self.quota = quota
        self.root = root
        # Typed Any: zope interface methods confuse mypy without a plugin.
        self._clock: Any = clock
        self._run_in_thread = run_in_thread
        self._watch = watch
        self._open: dict[str, Mailbox] = {}
        self._opening: dict[str, list[Deferred[IMailbox]]] = {}
        # A mailbox nobody has used for this many seconds leaves memory (0: never).
        self._unload_after = unload_after
        self._unload_call: Any = None  # IDelayedCall of the next look
        # CREATE/DELETE/RENAME run one at a time: they move directories that
        # open mailboxes live in.
        self._lock = DeferredLock()
        self._special_use: dict[str, str] = {}

    # --- setup ----------------------------------------------------------------

    def prepare(self, mailboxes: MailboxesConfig) -> None:
        """Create the root and the configured special-use folders (first access)."""
        try:
            ensure_maildir(self.root, folder=False)
        except OSError as exc:
            raise disk_error(exc, f"create the mailbox root of {self.username}") from exc
        self._special_use = self._read_special_use()
        for name, attribute in mailboxes.auto_create.items():
            name = normalize_name(name)
            if not self._path(name).is_dir():
                self.create(name, special_use=attribute)
                if mailboxes.auto_subscribe:
                    self.subscribe(name)
            elif self._special_use.get(name) != attribute:
                self._special_use[name] = attribute
                self._write_special_use()

    # --- names and paths ------------------------------------------------------

    def _path(self, name: str) -> Path:
        if name == "INBOX":
            return self.root
        return self.root / ("." + DELIMITER.join(mutf7.encode(x) for x in name.split(DELIMITER)))

    def _folder_names(self) -> set[str]:
        """Names of the folders that exist as directories (not INBOX)."""
        names: set[str] = set()
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return names
        for entry in entries:
            if not entry.name.startswith(".") or entry.name.startswith(".."):
                continue
            if not entry.is_dir():
                continue
            try:
                levels = [mutf7.decode(x) for x in entry.name[1:].split(DELIMITER)]
            except InvalidMailboxName:
                log.warn("ignoring folder with an invalid name {name!r}", name=entry.name)
                continue
            if all(levels):
                names.add(DELIMITER.join(levels))
        return names

    def _exists(self, name: str) -> bool:
        return name == "INBOX" or self._path(name).is_dir()

    # --- IAccount ----------------------------------------------------------------

    def mailbox(self, name: str) -> Deferred[IMailbox]:
        """The shared open Mailbox of *name*; NoSuchMailbox if it does not exist."""
        try:
            name = normalize_name(name)
        except StoreError:
            return fail()
        if name in self._open:
            mailbox = self._open[name]
            mailbox.last_used = self._clock.seconds()
            return succeed(mailbox)
        if not self._exists(name):
            return fail(NoSuchMailbox(f"mailbox {name!r} does not exist"))
        waiting: Deferred[IMailbox] = Deferred()
        if name in self._opening:
            self._opening[name].append(waiting)
            return waiting
        self._opening[name] = [waiting]
        mailbox = Mailbox(
            name,
            self._path(name),
            self._clock,
            self._new_uidvalidity,
            self._run_in_thread,
            folder=name != "INBOX",
        )
        mailbox.quota = self.quota  # [quota hook]
        mailbox.watcher = self._watch
        # Watch before the first scan, so nothing delivered meanwhile is
        # missed; a folder without cur/ new/ yet is watched once they exist.
        watched_early = self._watch is not None and _has_maildir_dirs(mailbox.path)
        if watched_early:
            self._watch.watch(mailbox)
        d = mailbox.load()

        def opened(mailbox: Mailbox) -> None:
            self._open[name] = mailbox
            mailbox.last_used = self._clock.seconds()
            self._schedule_unload()
            if self._watch is not None and not watched_early:
                self._watch.watch(mailbox)
                mailbox.schedule_rescan()  # what arrived before the watch
            for w in self._opening.pop(name):
                w.callback(mailbox)

        def failed(failure: Any) -> None:
            if watched_early:
                self._watch.unwatch(mailbox)
            for w in self._opening.pop(name):
                w.errback(failure)

        d.addCallbacks(opened, failed)
        return waiting

    # --- unloading unused mailboxes -------------------------------------------

    def _schedule_unload(self, delay: float | None = None) -> None:
        if self._unload_after <= 0 or (self._unload_call and self._unload_call.active()):
            return
        delay = self._unload_after if delay is None else delay
        self._unload_call = self._clock.callLater(delay, self._unload_unused)

    def _unload_unused(self) -> None:
        """Drop the index of every mailbox nobody has used for ``unload_after`` seconds.

        A server that runs for months must not keep every folder any user ever
        opened: a 100,000-message index is ~85 MB.  Reopening reads the
        uidlist and the metadata cache again (~0.2 s for 10,000 messages).
        """
        self._unload_call = None
        now = self._clock.seconds()
        next_look = self._unload_after
        # CREATE/DELETE/RENAME hold the account lock and the mailboxes they move.
        if not self._lock.locked:
            for name, mailbox in list(self._open.items()):
                if not mailbox.is_idle():
                    continue  # looked at again one period after it was last used
                due = mailbox.last_used + self._unload_after
                if due <= now:
                    self._unload(name, mailbox)
                else:
                    next_look = min(next_look, due - now)
        if self._open:
            self._schedule_unload(max(1.0, next_look))

    def _unload(self, name: str, mailbox: Mailbox) -> None:
        del self._open[name]
        if self._watch is not None:
            self._watch.unwatch(mailbox)
        mailbox._unload()
        log.debug("unloaded unused mailbox {name} of {user}", name=name, user=self.username)

    def close(self) -> None:
        """Stop the unloading timer (server shutdown)."""
        if self._unload_call is not None and self._unload_call.active():
            self._unload_call.cancel()
        self._unload_call = None

    def _new_uidvalidity(self) -> int:
        from mailaccess.store.uidvalidity import next_uidvalidity

        return next_uidvalidity(self.root)

    def list_mailboxes(self) -> list[Listing]:
        """Every mailbox name with its LIST attributes, INBOX first."""
        folders = self._folder_names()
        names = set(folders)
        for name in folders:
            levels = name.split(DELIMITER)
            for i in range(1, len(levels)):
                names.add(DELIMITER.join(levels[:i]))
        names.add("INBOX")
        parents = {n.rsplit(DELIMITER, 1)[0] for n in names if DELIMITER in n}
        listings = []
        for name in sorted(names, key=lambda n: (n != "INBOX", n)):
            attributes = set()
            # RFC 3348: children are reported either way.
            attributes.add("\\HasChildren" if name in parents else "\\HasNoChildren")
            if name != "INBOX" and name not in folders:
                # Exists only as the path of its children (RFC 3501 §7.2.2).
                attributes.add("\\Noselect")
            special = self._special_use.get(name)
            if special:
                attributes.add(special)  # RFC 6154 §2
            listings.append(Listing(name, frozenset(attributes)))
        return listings

    def special_use(self) -> dict[str, str]:
        """Mailbox name -> its RFC 6154 attribute."""
        return dict(self._special_use)

    def create(self, name: str, special_use: str | None = None) -> None:
        """RFC 3501 §6.3.3: create *name* and any missing superior names.

        MailboxExists if it exists; InvalidMailboxName for a bad name or an
        unknown special-use attribute (RFC 6154 §5.3 USEATTR).
        """
        name = normalize_name(name)
        if special_use is not None and special_use not in SPECIAL_USE_ATTRIBUTES:
            raise InvalidMailboxName(f"{special_use} is not a special-use attribute (RFC 6154)")
        if self._exists(name):
            raise MailboxExists(f"mailbox {name!r} already exists")
        levels = name.split(DELIMITER)
        try:
            for i in range(1, len(levels) + 1):
                partial = DELIMITER.join(levels[:i])
                if partial != "INBOX" and not self._path(partial).is_dir():
                    ensure_maildir(self._path(partial), folder=True)
                    # Its cur/ new/ tmp/ entries must survive a crash too.
                    fsync_dir(self._path(partial))
            fsync_dir(self.root)
        except OSError as exc:
            raise disk_error(exc, f"create mailbox {name!r}") from exc
        if special_use is not None:
            self._special_use[name] = special_use
            self._write_special_use()

    def delete(self, name: str) -> Deferred[None]:
        """RFC 3501 §6.3.4: remove *name* and its messages.

        A mailbox with children is emptied and removed; its name stays, as
        ``\\Noselect``, for as long as the children exist (that is how Maildir++
        shows a parent that is only a path).  INBOX cannot be deleted, nor
        can a ``\\Noselect`` name that has children.
        """
        try:
            name = normalize_name(name)
        except StoreError:
            return fail()
        if name == "INBOX":
            return fail(InvalidMailboxName("INBOX cannot be deleted"))
        if not self._path(name).is_dir():
            prefix = name + DELIMITER
            if any(n.startswith(prefix) for n in self._folder_names()):
                return fail(
                    NoSuchMailbox(
                        f"{name!r} is \\Noselect with inferior names; delete those first"
                    )
                )
            return fail(NoSuchMailbox(f"mailbox {name!r} does not exist"))
        return self._lock.run(self._delete, name)

    def _delete(self, name: str) -> Deferred[None]:
        mailbox = self._open.get(name)
        path = self._path(name)

        def remove() -> None:
            trash = self.root / TRASH_DIR
            try:
                if trash.exists():
                    shutil.rmtree(trash)
                # Rename first: a crash half-way through the removal must
                # not leave a half-emptied folder behind.
                os.rename(path, trash)
                fsync_dir(self.root)
                shutil.rmtree(trash)
            except OSError as exc:
                raise disk_error(exc, f"delete mailbox {name!r}") from exc

        def removed(_: None) -> None:
            if self._special_use.pop(name, None) is not None:
                self._write_special_use()
            if mailbox is not None:
                del self._open[name]
                if self._watch is not None:
                    self._watch.unwatch(mailbox)
                mailbox._mark_deleted()
                uids = tuple(r.uid for r in mailbox.records())
                if uids:
                    mailbox._drop_all()
                    mailbox._emit(MessagesExpunged(mailbox.name, uids))
                # Sessions with it selected must end (RFC 3501 §7.1.5 BYE).
                mailbox._emit(MailboxDeleted(mailbox.name))

        def run() -> Deferred[None]:
            return self._run_in_thread(remove).addCallback(removed)

        if mailbox is None:
            return run()
        # Wait until mutations queued on the mailbox are done, then hold it.
        return mailbox._lock.run(run)

    def rename(self, old: str, new: str) -> Deferred[None]:
        """RFC 3501 §6.3.5: rename *old* and its inferiors to *new*.

        Superior names of *new* are created.  Renaming INBOX moves its
        messages into a new mailbox *new* and leaves INBOX empty; its
        inferiors stay where they are.
        """
        try:
            old = normalize_name(old)
            new = normalize_name(new)
        except StoreError:
            return fail()
        if not self._exists(old):
            return fail(NoSuchMailbox(f"mailbox {old!r} does not exist"))
        if self._exists(new):
            return fail(MailboxExists(f"mailbox {new!r} already exists"))
        if new == "INBOX" or new.startswith(old + DELIMITER):
            return fail(InvalidMailboxName(f"cannot rename {old!r} to {new!r}"))
        if old == "INBOX":
            return self._lock.run(self._rename_inbox, new)
        return self._lock.run(self._rename_folder, old, new)

    def _rename_inbox(self, new: str) -> Deferred[None]:
        try:
            self.create(new)
        except StoreError:
            return fail()
        d = self.mailbox("INBOX")

        def move(inbox: IMailbox) -> Deferred[None]:
            target = self.mailbox(new)

            def go(destination: IMailbox) -> Deferred[None]:
                uids = [r.uid for r in inbox.records()]
                return inbox.move(uids, destination).addCallback(lambda _: None)

            return target.addCallback(go)

        return d.addCallback(move)

    def _rename_folder(self, old: str, new: str) -> Deferred[None]:
        prefix = old + DELIMITER
        moving = sorted(n for n in self._folder_names() if n == old or n.startswith(prefix))
        renames = [(n, new + n[len(old) :]) for n in moving]
        if any(self._path(target).exists() for _, target in renames):
            return fail(MailboxExists(f"an inferior name of {new!r} exists already"))
        open_boxes = [self._open[n] for n, _ in renames if n in self._open]

        def work() -> None:
            levels = new.split(DELIMITER)
            try:
                for i in range(1, len(levels)):
                    parent = DELIMITER.join(levels[:i])
                    if not self._path(parent).is_dir():
                        ensure_maildir(self._path(parent), folder=True)
                for source, target in renames:
                    os.rename(self._path(source), self._path(target))
                fsync_dir(self.root)
            except OSError as exc:
                raise disk_error(exc, f"rename {old!r}") from exc

        def done(_: None) -> None:
            for source, target in renames:
                mailbox = self._open.pop(source, None)
                if mailbox is not None:
                    # The same object lives on under its new name (inotify
                    # watches follow the renamed directories).
                    mailbox._relocate(target, self._path(target))
                    self._open[target] = mailbox
                    # A session that selected the old name must not carry on
                    # under it: the view ends (as Dovecot's does).
                    mailbox._emit(MailboxDeleted(source, target))
                if source in self._special_use:
                    self._special_use[target] = self._special_use.pop(source)
                    self._write_special_use()

        def run() -> Deferred[None]:
            return self._run_in_thread(work).addCallback(done)

        return _holding([m._lock for m in open_boxes], run)

    # --- subscriptions (RFC 3501 §6.3.6, §6.3.7) ----------------------------------

    def subscriptions(self) -> list[str]:
        """Subscribed names, in file order."""
        from mailaccess.store.subscriptions import read_subscriptions

        return read_subscriptions(self.root / "subscriptions", DELIMITER)

    def subscribe(self, name: str) -> None:
        """Add *name* to the subscriptions (it need not exist, RFC 3501 §6.3.6)."""
        from mailaccess.store.subscriptions import set_subscribed

        set_subscribed(self.root / "subscriptions", normalize_name(name), True, DELIMITER)

    def unsubscribe(self, name: str) -> None:
        """Remove *name* from the subscriptions."""
        from mailaccess.store.subscriptions import set_subscribed

        set_subscribed(self.root / "subscriptions", normalize_name(name), False, DELIMITER)

    # --- special-use file ------------------------------------------------------------

    def _read_special_use(self) -> dict[str, str]:
        result: dict[str, str] = {}
        try:
            text = (self.root / SPECIAL_USE_FILE).read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return result
        for line in text.splitlines():
            attribute, sep, name = line.partition("\t")
            if sep and attribute in SPECIAL_USE_ATTRIBUTES and name:
                result[name] = attribute
        return result

    def _write_special_use(self) -> None:
        text = "".join(f"{a}\t{n}\n" for n, a in sorted(self._special_use.items()))
        try:
            atomic_write(self.root / SPECIAL_USE_FILE, text.encode("utf-8"))
        except OSError as exc:
            raise disk_error(exc, "record special-use folders") from exc


def _has_maildir_dirs(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _holding(locks: list[DeferredLock], run: Callable[[], Deferred[None]]) -> Deferred[None]:
    """Run *run* while holding all *locks* (taken one after another)."""
    if not locks:
        return run()
    first, rest = locks[0], locks[1:]
    return first.run(_holding, rest, run)


class Store(IStore):
    """All accounts under *mail_root*: one Account per user, shared by its sessions."""

    def __init__(
        self,
        mail_root: Path,
        mailboxes: MailboxesConfig,
        clock: IReactorTime,
        run_in_thread: RunInThread = deferToThread,
        quota_policy: Any = None,
    ) -> None:
        from mailaccess.store.watch import MailboxWatch, inotify_available

        self.mail_root = Path(mail_root)
        self._mailboxes = mailboxes
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._accounts: dict[str, Account] = {}
        #: [quota hook, issue 6] mailaccess.store.quota.QuotaPolicy, or None.
        self.quota_policy = quota_policy
        # inotify needs a real reactor; with a test Clock, rescans stand in.
        self._watch = MailboxWatch(clock) if inotify_available(clock) else None

    def account(self, username: str) -> Account:
        """The Account of *username*, created (with its special-use folders) on first use."""
        account = self._accounts.get(username)
        if account is None:
            if not username or username.startswith(".") or "/" in username or "\x00" in username:
                raise StoreError(f"{username!r} cannot name a mail directory")
            account = Account(
                username,
                self.mail_root / username,
                self._clock,
                self._run_in_thread,
                self._watch,
                quota=self._quota_of(username),
                unload_after=self._mailboxes.unload_after,
            )
            account.prepare(self._mailboxes)
            self._accounts[username] = account
        return account

    def _quota_of(self, username: str) -> Any:
        """[quota hook] The Quota of *username* under the store's policy, or None."""
        policy = self.quota_policy
        if policy is None or not policy.enabled:
            return None
        from mailaccess.store.quota import Quota

        clock: Any = self._clock
        return Quota(self.mail_root / username, lambda: policy.limit_for(username), clock.seconds)

    def close(self) -> None:
        """Stop watching directories and unloading mailboxes (server shutdown)."""
        for account in self._accounts.values():
            account.close()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
