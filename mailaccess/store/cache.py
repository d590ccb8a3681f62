"""The on-disk metadata cache: parsed MessageInfo per message, one file per mailbox.

A restart must not re-parse every message (DESIGN.md, "Performance shape"),
so each mailbox keeps ``mailaccess.cache`` — a plain sqlite3 file beside its
``dovecot-uidlist`` (a plain file, because in Maildir++ any ``.name``
directory would be a folder).  Everything in it can be rebuilt from the
Maildir alone, so the cache is never trusted blindly:

* an entry is keyed by UID and also records the Maildir base name; a lookup
  with another base name is a miss (the UID now names another file);
* the file carries a version (``PRAGMA user_version``: the entry format and
  ``mime.PARSER_VERSION``) and our application id; a file of another
  version, a foreign file or a corrupt one is deleted and started afresh;
* ``reset(uidvalidity)`` drops every entry when UIDVALIDITY changed;
* besides the entries it keeps one fact about the mailbox that is not in the
  Maildir: the UID from which messages are still \\Recent (what Dovecot keeps
  in its index header), so that \\Recent survives a restart;
* a failing disk (full, read-only, I/O error) makes the cache act empty —
  misses and dropped writes, logged — and never fails the store.

Entries are MessageInfo trees as nested tuples in ``marshal`` format: compact,
and decoded in C far faster than pickle or JSON; a bad blob is a miss.  The
part tree is marshalled separately inside the entry, so reading a mailbox's
envelopes does not unpack every tree.

Thread-safety: one sqlite3 connection opened with ``check_same_thread=False``
and every method serialised by a lock, so the store may call it from the
reactor thread and from ``deferToThread`` workers alike.  WAL journaling with
``synchronous=NORMAL`` and one transaction per ``put_many`` keep 10,000
writes to about 0.1 s; losing the last writes in a power cut only costs a
re-parse.
"""

from __future__ import annotations

import contextlib
import marshal
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from twisted.logger import Logger

from mailaccess.store.mime import (
    PARSER_VERSION,
    Envelope,
    MessageInfo,
    envelope_to_tuple,
    parse_message,
)

__all__ = ["CACHE_FILENAME", "FORMAT_VERSION", "MetadataCache", "decode_info", "encode_info"]

#: The cache file's name inside a mailbox's Maildir directory.
CACHE_FILENAME = "mailaccess.cache"

#: Bump whenever the serialised form of MessageInfo or the schema changes:
#: caches of another version are thrown away and rebuilt.
FORMAT_VERSION = 2

# What PRAGMA user_version holds: a change of either part voids the file.
_USER_VERSION = FORMAT_VERSION * 1000 + PARSER_VERSION

# sqlite's application_id: marks the file as ours ("MAcc").
_APPLICATION_ID = 0x4D416363

_log = Logger()

# Above this many UIDs, get_many reads the UID range in one scan instead of
# binding an IN list (sqlite limits bound parameters).
_IN_LIST_MAX = 500


# --- serialisation ----------------------------------------------------------------


def encode_info(info: MessageInfo) -> bytes:
    """The compact serialised form of *info* stored in the cache."""
    return marshal.dumps(
        (
            envelope_to_tuple(info.envelope),
            info.body_bytes(),
            info.size,
            info.vsize,
            info.date,
            info.date_offset,
            info.header_size,
        )
    )


def decode_info(blob: bytes) -> MessageInfo:
    """Inverse of encode_info; raises ValueError on anything malformed.

    The part tree is a marshal blob inside the blob, unpacked and built only
    when a caller first reads ``body``: ENVELOPE alone never pays for it.
    """
    try:
        env, body, size, vsize, date, offset, header_size = marshal.loads(blob)
        if type(body) is not bytes or type(header_size) is not int:
            raise ValueError("bad body")
        # Positional: this runs for every message of a FETCH 1:* ENVELOPE.
        return MessageInfo(Envelope._make(env), None, size, vsize, date, offset, header_size, body)
    except Exception as e:  # marshal raises several types on garbage
        raise ValueError(f"bad cache entry: {e}") from e


# --- the cache -------------------------------------------------------------------


class MetadataCache:
    """Parsed metadata of one mailbox's messages, persisted in sqlite3.

    *path* is the cache file, or a Maildir directory (then the file is
    ``CACHE_FILENAME`` inside it).  See the module docstring for the rules.
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / CACHE_FILENAME
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        with self._lock:
            self._open()

    # -- opening, validation and rebuilding --

    def _open(self) -> None:
        try:
            self._db = self._connect()
        except sqlite3.Error as e:
            _log.warn(
                "metadata cache {path} unusable ({error}); rebuilding", path=self.path, error=e
            )
            self._remove_files()
            try:
                self._db = self._connect()
            except sqlite3.Error as e2:
                _log.error("metadata cache {path} disabled: {error}", path=self.path, error=e2)
                self._db = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables and (app_id != _APPLICATION_ID or version != _USER_VERSION):
                raise sqlite3.DatabaseError(
                    f"version {version} (app id {app_id:#x}), want {_USER_VERSION}"
                )
            if not tables:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(
                    f"""
                    PRAGMA application_id={_APPLICATION_ID};
                    PRAGMA user_version={_USER_VERSION};
                    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER);
                    CREATE TABLE messages (
                        uid INTEGER PRIMARY KEY, base TEXT NOT NULL, info BLOB NOT NULL
                    );
                    """
                )
            else:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
        except BaseException:
            db.close()
            raise
        return db

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                Path(str(self.path) + suffix).unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                _log.warn("cannot remove {file}: {error}", file=str(self.path) + suffix, error=e)

    def _failed(self, error: sqlite3.Error) -> None:
        """A query failed: a corrupt file is rebuilt, a sick disk disables writes."""
        _log.warn("metadata cache {path}: {error}", path=self.path, error=error)
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(
            error, sqlite3.OperationalError
        ):
            if self._db is not None:
                self._db.close()
            self._remove_files()
            self._open()

    # -- reads --

    def get(self, uid: int, base: str, *, wait: bool = True) -> MessageInfo | None:
        """The cached info of *uid*, or None if missing, stale or unreadable.

        With ``wait=False`` it also answers None at once when another thread
        holds the cache (a batch of writes in progress): the reactor thread
        asks that way, because waiting for a writer's transaction would hold
        every other session for as long.
        """
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            if self._db is None:
                return None
            try:
                row = self._db.execute(
                    "SELECT base, info FROM messages WHERE uid = ?", (uid,)
                ).fetchone()
            except sqlite3.Error as e:
                self._failed(e)
                return None
        finally:
            self._lock.release()
        if row is None or row[0] != base:
            return None
        try:
            return decode_info(row[1])
        except ValueError:
            return None

    def get_many(self, uids_and_bases: Iterable[tuple[int, str]]) -> dict[int, MessageInfo]:
        """The cached infos of many messages at once; misses are left out."""
        wanted: Mapping[int, str] = dict(uids_and_bases)
        if not wanted:
            return {}
        out: dict[int, MessageInfo] = {}
        with self._lock:
            if self._db is None:
                return out
            try:
                if len(wanted) > _IN_LIST_MAX:
                    rows = self._db.execute(
                        "SELECT uid, base, info FROM messages WHERE uid BETWEEN ? AND ?",
                        (min(wanted), max(wanted)),
                    ).fetchall()
                else:
                    marks = ",".join("?" * len(wanted))
                    rows = self._db.execute(
                        f"SELECT uid, base, info FROM messages WHERE uid IN ({marks})",
                        tuple(wanted),
                    ).fetchall()
            except sqlite3.Error as e:
                self._failed(e)
                return out
        for uid, base, blob in rows:
            if wanted.get(uid) == base:
                try:
                    out[uid] = decode_info(blob)
                except ValueError:
                    continue
        return out

    # -- writes --

    def put(self, uid: int, base: str, info: MessageInfo) -> None:
        """Store the info of *uid* (replacing any older entry)."""
        self.put_many([(uid, base, info)])

    def put_many(self, items: Iterable[tuple[int, str, MessageInfo]]) -> None:
        """Store many entries in one transaction."""
        rows = [(uid, base, encode_info(info)) for uid, base, info in items]
        if not rows:
            return
        with self._lock:
            if self._db is None:
                return
            try:
                with self._transaction():
                    self._db.executemany(
                        "INSERT OR REPLACE INTO messages (uid, base, info) VALUES (?, ?, ?)",
                        rows,
                    )
            except sqlite3.Error as e:
                self._failed(e)

    def discard(self, uids: Iterable[int]) -> None:
        """Forget these messages (expunged)."""
        rows = [(uid,) for uid in uids]
        with self._lock:
            if self._db is None or not rows:
                return
            try:
                with self._transaction():
                    self._db.executemany("DELETE FROM messages WHERE uid = ?", rows)
            except sqlite3.Error as e:
                self._failed(e)

    def reset(self, uidvalidity: int) -> bool:
        """Record the mailbox's UIDVALIDITY; if it changed, drop every entry.

        Returns True when entries were dropped (or the value was new).
        """
        with self._lock:
            if self._db is None:
                return True
            try:
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'uidvalidity'"
                ).fetchone()
                if row is not None and row[0] == uidvalidity:
                    return False
                with self._transaction():
                    self._db.execute("DELETE FROM messages")
                    self._db.execute("DELETE FROM meta WHERE key = 'first_recent_uid'")
                    self._db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('uidvalidity', ?)",
                        (uidvalidity,),
                    )
                return True
            except sqlite3.Error as e:
                self._failed(e)
                return True

    # -- \Recent (RFC 3501 §2.3.2) --

    def first_recent_uid(self) -> int | None:
        """The lowest UID that may still be \\Recent, or None if never recorded."""
        with self._lock:
            if self._db is None:
                return None
            try:
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'first_recent_uid'"
                ).fetchone()
            except sqlite3.Error as e:
                self._failed(e)
                return None
        return None if row is None else int(row[0])

    def raise_first_recent_uid(self, uid: int) -> None:
        """Messages below *uid* are no longer \\Recent (it never moves down)."""
        with self._lock:
            if self._db is None:
                return
            try:
                with self._transaction():
                    self._db.execute(
                        "INSERT INTO meta (key, value) VALUES ('first_recent_uid', ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                        (uid,),
                    )
            except sqlite3.Error as e:
                self._failed(e)

    # -- read through --

    def load(self, uid: int, base: str, path: Path) -> MessageInfo:
        """The info of one message: from the cache, else parsed from *path* and cached.

        Blocking (file read, parse, sqlite): call it with ``deferToThread``.
        Raises OSError (FileNotFoundError when the file vanished: the store's
        MessageGone) if the file cannot be read.
        """
        result = self.load_many([(uid, base, path)])[uid]
        if isinstance(result, OSError):
            raise result
        return result

    def load_many(
        self, items: Iterable[tuple[int, str, Path]]
    ) -> dict[int, MessageInfo | OSError]:
        """``load`` for many messages; misses are parsed and stored in one transaction.

        A message whose file cannot be read maps to the OSError instead, so
        one vanished file does not void the batch.  Blocking: run it in a
        thread, in batches small enough to let the store report progress.
        """
        items = list(items)
        found: dict[int, MessageInfo | OSError] = dict(
            self.get_many((uid, base) for uid, base, _ in items)
        )
        parsed: list[tuple[int, str, MessageInfo]] = []
        for uid, base, path in items:
            if uid in found:
                continue
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                found[uid] = e
                continue
            info = parse_message(data).compact()
            parsed.append((uid, base, info))
            found[uid] = info
        self.put_many(parsed)
        return found

    def close(self) -> None:
        """Close the database; later calls act as an empty, read-only cache."""
        with self._lock:
            if self._db is not None:
                try:
                    self._db.close()
                finally:
                    self._db = None

    def _transaction(self) -> _Transaction:
        assert self._db is not None
        return _Transaction(self._db)


class _Transaction:
    """BEGIN … COMMIT, or ROLLBACK on error (the connection is in autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
