"""MetadataCache: persistence, staleness, rebuild of bad files, thread use."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from mailaccess.store import cache as cache_module
from mailaccess.store.cache import (
    CACHE_FILENAME,
    FORMAT_VERSION,
    MetadataCache,
    decode_info,
    encode_info,
)
from mailaccess.store.mime import MAX_DEPTH, MessageInfo, parse_message

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mime"
SAMPLES = {p.name: parse_message(p.read_bytes()) for p in sorted(FIXTURES.glob("*.eml"))}


@pytest.fixture
def cache(tmp_path: Path):
    c = MetadataCache(tmp_path)
    yield c
    c.close()


def info(name: str = "nested_rfc822.eml") -> MessageInfo:
    return SAMPLES[name]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_encode_decode_round_trip(name: str) -> None:
    assert decode_info(encode_info(SAMPLES[name])) == SAMPLES[name]


def test_decode_garbage_is_value_error() -> None:
    for blob in (b"", b"\x00\x01garbage", encode_info(info())[:-5]):
        with pytest.raises(ValueError):
            decode_info(blob)


def test_file_is_plain_file_in_maildir(tmp_path: Path, cache: MetadataCache) -> None:
    cache.put(1, "base1", info())
    assert cache.path == tmp_path / CACHE_FILENAME
    assert (tmp_path / CACHE_FILENAME).is_file()


def test_put_get_and_persist_across_reopen(tmp_path: Path) -> None:
    c = MetadataCache(tmp_path)
    c.put(7, "1700000000.M1P1.host", info())
    assert c.get(7, "1700000000.M1P1.host") == info()
    c.close()
    c2 = MetadataCache(tmp_path)
    assert c2.get(7, "1700000000.M1P1.host") == info()
    c2.close()


def test_get_missing_or_stale_base_is_none(cache: MetadataCache) -> None:
    cache.put(1, "old-base", info())
    assert cache.get(2, "old-base") is None
    assert cache.get(1, "new-base") is None  # the UID now names another file


def test_put_replaces(cache: MetadataCache) -> None:
    cache.put(1, "a", info("simple.eml"))
    cache.put(1, "b", info("digest.eml"))
    assert cache.get(1, "a") is None
    assert cache.get(1, "b") == info("digest.eml")


def test_get_many_small_and_large(cache: MetadataCache) -> None:
    names = sorted(SAMPLES)
    items = [(uid, f"base{uid}", SAMPLES[names[uid % len(names)]]) for uid in range(1, 1201)]
    cache.put_many(items)
    few = cache.get_many([(3, "base3"), (4, "wrong"), (5000, "base5000")])
    assert few == {3: items[2][2]}
    many = cache.get_many((uid, base) for uid, base, _ in items if uid % 3)
    assert len(many) == 800
    assert all(many[uid] == items[uid - 1][2] for uid in many)
    assert cache.get_many([]) == {}


def test_discard(cache: MetadataCache) -> None:
    cache.put_many([(1, "a", info()), (2, "b", info()), (3, "c", info())])
    cache.discard([1, 3, 99])
    assert cache.get_many([(1, "a"), (2, "b"), (3, "c")]) == {2: info()}


def test_reset_drops_all_when_uidvalidity_changes(cache: MetadataCache) -> None:
    assert cache.reset(100) is True
    cache.put(1, "a", info())
    assert cache.reset(100) is False
    assert cache.get(1, "a") == info()
    assert cache.reset(200) is True
    assert cache.get(1, "a") is None


def test_reset_survives_reopen(tmp_path: Path) -> None:
    c = MetadataCache(tmp_path)
    c.reset(5)
    c.put(1, "a", info())
    c.close()
    c = MetadataCache(tmp_path)
    assert c.reset(5) is False
    assert c.get(1, "a") == info()
    c.close()


def test_first_recent_uid_only_rises_and_persists_rfc3501_2_3_2(tmp_path: Path) -> None:
    c = MetadataCache(tmp_path)
    c.reset(5)
    assert c.first_recent_uid() is None
    c.raise_first_recent_uid(7)
    c.raise_first_recent_uid(3)  # a late, older claim never brings \Recent back
    assert c.first_recent_uid() == 7
    c.close()
    c = MetadataCache(tmp_path)
    assert c.reset(5) is False and c.first_recent_uid() == 7
    # New UIDVALIDITY: the UIDs it counted are void.
    assert c.reset(6) is True and c.first_recent_uid() is None
    c.close()


def test_corrupt_file_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILENAME).write_bytes(b"this is not a database" * 100)
    c = MetadataCache(tmp_path)
    assert c.get(1, "a") is None
    c.put(1, "a", info())
    assert c.get(1, "a") == info()
    c.close()


def test_old_format_version_is_rebuilt(tmp_path: Path) -> None:
    c = MetadataCache(tmp_path)
    c.put(1, "a", info())
    c.close()
    db = sqlite3.connect(tmp_path / CACHE_FILENAME)
    db.execute(f"PRAGMA user_version={FORMAT_VERSION + 1}")
    db.commit()
    db.close()
    c = MetadataCache(tmp_path)
    assert c.get(1, "a") is None
    c.put(1, "a", info())
    assert c.get(1, "a") == info()
    c.close()


def test_foreign_sqlite_file_is_rebuilt(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / CACHE_FILENAME)
    db.execute("CREATE TABLE messages (x)")
    db.commit()
    db.close()
    c = MetadataCache(tmp_path)
    c.put(1, "a", info())
    assert c.get(1, "a") == info()
    c.close()


def test_bad_blob_is_a_miss(tmp_path: Path, cache: MetadataCache) -> None:
    cache.put(1, "a", info())
    cache.put(2, "b", info())
    db = sqlite3.connect(tmp_path / CACHE_FILENAME)
    db.execute("UPDATE messages SET info = X'00ff' WHERE uid = 1")
    db.commit()
    db.close()
    assert cache.get(1, "a") is None
    assert cache.get_many([(1, "a"), (2, "b")]) == {2: info()}


def test_unwritable_location_acts_empty(tmp_path: Path) -> None:
    c = MetadataCache(tmp_path / "no" / "such" / "dir" / CACHE_FILENAME)
    c.put(1, "a", info())
    assert c.get(1, "a") is None
    assert c.get_many([(1, "a")]) == {}
    assert c.reset(1) is True
    c.discard([1])
    c.close()


def test_closed_cache_acts_empty(cache: MetadataCache) -> None:
    cache.put(1, "a", info())
    cache.close()
    assert cache.get(1, "a") is None
    cache.put(2, "b", info())
    cache.close()


def test_threads_share_one_cache(cache: MetadataCache) -> None:
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(50):
                uid = offset * 1000 + i
                cache.put(uid, f"b{uid}", info())
                assert cache.get(uid, f"b{uid}") == info()
        except BaseException as e:  # collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (
        len(
            cache.get_many((n * 1000 + i, f"b{n * 1000 + i}") for n in range(4) for i in range(50))
        )
        == 200
    )


def test_in_list_limit_boundary(cache: MetadataCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "_IN_LIST_MAX", 2)
    cache.put_many([(u, "x", info()) for u in (1, 5, 9)])
    assert sorted(cache.get_many([(1, "x"), (9, "x")])) == [1, 9]
    assert sorted(cache.get_many([(1, "x"), (5, "x"), (9, "y")])) == [1, 5]


def test_deepest_and_widest_trees_round_trip(cache: MetadataCache) -> None:
    deep = b"Content-Type: message/rfc822\n\n" * (MAX_DEPTH * 2) + b"x\n"
    nested = b"Content-Type: multipart/mixed; boundary=b0\n\n" + b"".join(
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
        for i in range(MAX_DEPTH * 2)
    )
    wide = b"Content-Type: multipart/mixed; boundary=w\n\n" + b"--w\n\nx\n" * 20000 + b"--w--\n"
    items = [(1, "deep", parse_message(deep)), (2, "nested", parse_message(nested))]
    items.append((3, "wide", parse_message(wide)))
    cache.put_many(items)
    got = cache.get_many([(1, "deep"), (2, "nested"), (3, "wide")])
    assert got == {uid: info for uid, _, info in items}
    assert len(got[3].body.children) == 20000


def test_load_parses_on_miss_then_serves_from_cache(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    (maildir / "cur").mkdir(parents=True)
    msg = maildir / "cur" / "1.M1P1.host:2,S"
    msg.write_bytes((FIXTURES / "digest.eml").read_bytes())
    cache = MetadataCache(maildir)
    assert cache.load(1, "1.M1P1.host", msg) == SAMPLES["digest.eml"]
    # Served from the cache now: the file's content no longer matters.
    msg.write_bytes(b"Subject: changed\n\n")
    assert cache.load(1, "1.M1P1.host", msg) == SAMPLES["digest.eml"]
    # Another base name for the UID is a miss: parsed afresh.
    assert cache.load(1, "2.M2P2.host", msg).envelope.subject == b"changed"
    cache.close()


def test_load_many_reports_vanished_files(tmp_path: Path, cache: MetadataCache) -> None:
    there = tmp_path / "there"
    there.write_bytes((FIXTURES / "simple.eml").read_bytes())
    got = cache.load_many([(1, "there", there), (2, "gone", tmp_path / "gone")])
    assert got[1] == SAMPLES["simple.eml"]
    assert isinstance(got[2], FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        cache.load(2, "gone", tmp_path / "gone")
    assert cache.get(1, "there") == SAMPLES["simple.eml"]


def test_new_parser_version_voids_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = MetadataCache(tmp_path)
    c.put(1, "a", info())
    c.close()
    # A parser that answers differently makes every stored entry stale.
    monkeypatch.setattr(cache_module, "_USER_VERSION", cache_module._USER_VERSION + 1)
    c = MetadataCache(tmp_path)
    assert c.get(1, "a") is None
    c.close()


def test_get_without_waiting_is_a_miss_while_the_cache_is_busy(cache: MetadataCache) -> None:
    # The reactor thread asks with wait=False: a writer's transaction in a
    # worker thread must not hold every session until it commits.
    cache.put(1, "a", info())
    with cache._lock:  # what a put_many in another thread holds
        assert cache.get(1, "a", wait=False) is None
    assert cache.get(1, "a", wait=False) == info()
