"""Sequence sets: parsing, resolving ``*`` and compacting (RFC 3501 §9, RFC 4315 §3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailaccess.imap.lexer import ParseError
from mailaccess.imap.sequence import STAR, SequenceSet, compact_sequence_set


def test_parse_forms_rfc3501_9() -> None:
    assert SequenceSet.parse("1").ranges == ((1, 1),)
    assert SequenceSet.parse("2:4").ranges == ((2, 4),)
    assert SequenceSet.parse("*").ranges == ((STAR, STAR),)
    assert SequenceSet.parse("5:*,1,3:2").ranges == ((5, STAR), (1, 1), (3, 2))
    assert SequenceSet.parse("$").saved


@pytest.mark.parametrize(
    "text", ["", "0", "1:0", "1,", ",1", "1::2", "a", "1:*:3", "-1", "4294967296", "$,1", "1 2"]
)
def test_invalid_sets_rfc3501_9(text: str) -> None:
    with pytest.raises(ParseError):
        SequenceSet.parse(text)


def test_reversed_range_is_the_same_range_rfc3501_9() -> None:
    assert SequenceSet.parse("4:2").resolve(10) == [(2, 4)]


def test_star_is_the_largest_number_rfc3501_9() -> None:
    s = SequenceSet.parse("3:*")
    assert s.resolve(7) == [(3, 7)]
    assert s.contains(7, 7)
    assert not s.contains(2, 7)


def test_star_range_above_largest_names_the_largest_rfc3501_6_4_8() -> None:
    # "UID 8:*" when the largest UID is 5 still matches UID 5.
    s = SequenceSet.parse("8:*")
    assert s.resolve(5) == [(5, 8)]
    assert s.contains(5, 5)


def test_iter_numbers_merges_and_clips() -> None:
    s = SequenceSet.parse("5:*,1,2,4,9:12")
    assert list(s.iter_numbers(10)) == [1, 2, 4, 5, 6, 7, 8, 9, 10]


def test_saved_set_must_be_resolved_by_the_session_rfc5182() -> None:
    with pytest.raises(ValueError):
        SequenceSet(saved=True).resolve(3)


def test_bytes_round_trip_rfc3501_9() -> None:
    for text in [b"1", b"2:4", b"*", b"1:*,7", b"$"]:
        assert bytes(SequenceSet.parse(text)) == text


def test_compact_rfc4315_3() -> None:
    assert compact_sequence_set([1, 2, 3, 5]) == b"1:3,5"
    assert compact_sequence_set([304, 319, 320]) == b"304,319:320"
    assert compact_sequence_set([7]) == b"7"


def test_compact_keeps_order_for_copyuid_rfc4315_3() -> None:
    # COPYUID pairs source and destination UIDs by position, so no sorting.
    assert compact_sequence_set([5, 6, 1, 2]) == b"5:6,1:2"


def test_compact_refuses_impossible_input() -> None:
    with pytest.raises(ValueError):
        compact_sequence_set([])
    with pytest.raises(ValueError):
        compact_sequence_set([0])


@given(st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=50))
def test_compact_parse_round_trip(numbers: list[int]) -> None:
    parsed = SequenceSet.parse(compact_sequence_set(numbers))
    expanded = [n for a, b in parsed.resolve(2**32 - 1) for n in range(a, b + 1)]
    assert expanded == numbers


@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), min_size=1, max_size=20
    )
)
def test_bytes_parse_round_trip(ranges: list[tuple[int, int]]) -> None:
    # 0 is STAR; any mix of numbers and * must survive bytes() → parse().
    s = SequenceSet(tuple(ranges))
    again = SequenceSet.parse(bytes(s))
    assert again.resolve(1000) == s.resolve(1000)
