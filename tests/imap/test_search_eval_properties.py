"""Property tests for SEARCH evaluation: the rounds never change an answer.

evaluate() decides what it can from the index, then from the cache, then from
the files, in three-valued logic.  Whatever the program, the result must be
what plain two-valued logic gives when every key is computed in full for every
message — the rounds only save work.  Programs are drawn at random from every
kind of key over the hand-made mailbox of test_search_eval.py.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailaccess.imap import search_eval
from mailaccess.imap.lexer import Reader
from mailaccess.imap.search import SearchKey, read_search_program
from mailaccess.imap.search_eval import evaluate
from tests.imap.test_search_eval import FakeContext, messages, sync_runner


@pytest.fixture(autouse=True)
def _server_in_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


LEAVES = [
    "ALL",
    "SEEN",
    "UNSEEN",
    "FLAGGED",
    "DELETED",
    "RECENT",
    "NEW",
    "OLD",
    "KEYWORD $Label1",
    "LARGER 400",
    "SMALLER 300",
    "2:4",
    "UID 8:*",
    "*",
    "SINCE 3-Jan-2024",
    "BEFORE 5-Jan-2024",
    "SENTBEFORE 3-Jan-2024",
    "SENTON 2-Jan-2024",
    "FROM example",
    "TO bob",
    "SUBJECT hello",
    "CC carol",
    "HEADER X-Mailer foo",
    'HEADER Message-ID "<"',
    "BODY the",
    "BODY secret",
    "TEXT example",
    "TEXT needle",
]


def programs() -> st.SearchStrategy[str]:
    leaf = st.sampled_from(LEAVES)
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda t: f"OR {t[0]} {t[1]}"),
            inner.map(lambda k: f"NOT {k}"),
            st.lists(inner, min_size=1, max_size=3).map(lambda ks: "(" + " ".join(ks) + ")"),
        ),
        max_leaves=6,
    )


def parse(text: str) -> SearchKey:
    reader = Reader([text.encode()])
    program = read_search_program(reader, None)
    reader.end()
    return program


def two_valued(program: SearchKey) -> list[int]:
    """Every key computed in full for every message: the reference answer."""
    context = FakeContext()
    node = search_eval._compile(program, context)
    out = []
    for msg in messages():
        uid = msg[1].uid
        info = context.infos[uid]
        data = search_eval._MessageFile(io.BytesIO(context.data[uid]), info)
        result = node(msg, search_eval._FILE, info, data)
        assert result is not None  # at the last round every key is decided
        if result:
            out.append(msg[0])
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_rounds_agree_with_full_evaluation_rfc3501_6_4_4(text: str) -> None:
    program = parse(text)
    got: list[list[int]] = []
    evaluate(program, messages(), FakeContext(), None, sync_runner).addCallback(got.append)
    assert got == [two_valued(program)]


@settings(max_examples=100, deadline=None)
@given(programs())
def test_not_is_the_complement_rfc3501_6_4_4(text: str) -> None:
    inner: list[list[int]] = []
    negated: list[list[int]] = []
    evaluate(parse(text), messages(), FakeContext(), None, sync_runner).addCallback(inner.append)
    evaluate(parse(f"NOT ({text})"), messages(), FakeContext(), None, sync_runner).addCallback(
        negated.append
    )
    assert sorted(inner[0] + negated[0]) == [1, 2, 3, 4, 5]
    assert not set(inner[0]) & set(negated[0])
