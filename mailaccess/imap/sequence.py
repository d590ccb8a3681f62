"""Sequence sets (RFC 3501 §9 ``sequence-set``; ``$`` from RFC 5182 SEARCHRES).

A sequence set names message sequence numbers or UIDs: ``1``, ``2:4``, ``*`` (the
largest number in use), ``5:*``, and comma-separated lists of those.  A range may be
written either way round (``4:2`` is ``2:4``, RFC 3501 §9).  The parser keeps ``*``
symbolic; the session resolves it against the mailbox it has selected.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from mailaccess.imap.lexer import MAX_NUMBER, ParseError, Reader

__all__ = ["STAR", "SequenceSet", "compact_sequence_set", "read_sequence_set"]

#: Stands for ``*`` in a range: the largest number in use (RFC 3501 §9 seq-number).
STAR = 0

Range = tuple[int, int]  # (first, last) as written; STAR (0) for "*"


@attrs.frozen
class SequenceSet:
    """A parsed sequence set; ``saved`` is the RFC 5182 ``$`` (the saved search result)."""

    ranges: tuple[Range, ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[Range]:
        """The ranges with ``*`` replaced by ``largest``, each ordered low to high.

        RFC 3501 §6.4.8: ``n:*`` with ``n`` above the largest UID still names the
        largest, because the range is between the two; the result here does the
        same.  Ranges are not merged or clipped: the caller matches them against
        the numbers that exist.
        """
        if self.saved:
            raise ValueError("the saved result ($) must be resolved by the session")
        out = []
        for first, last in self.ranges:
            a = largest if first == STAR else first
            b = largest if last == STAR else last
            out.append((a, b) if a <= b else (b, a))
        return out

    def contains(self, number: int, largest: int) -> bool:
        """Whether ``number`` is in the set when ``*`` means ``largest``."""
        return any(a <= number <= b for a, b in self.resolve(largest))

    def iter_numbers(self, largest: int) -> Iterator[int]:
        """The distinct numbers named, ascending, with ``*`` as ``largest``.

        Only for message sequence numbers, where ``largest`` bounds the set; for
        UIDs, match :meth:`resolve` ranges against the UIDs that exist instead.
        """
        merged = _merge(self.resolve(largest))
        for a, b in merged:
            yield from range(max(a, 1), min(b, largest) + 1)

    def __bytes__(self) -> bytes:
        if self.saved:
            return b"$"
        parts = []
        for first, last in self.ranges:
            a = b"*" if first == STAR else str(first).encode()
            if first == last:
                parts.append(a)
            else:
                b = b"*" if last == STAR else str(last).encode()
                parts.append(a + b":" + b)
        return b",".join(parts)

    @classmethod
    def parse(cls, text: bytes | str) -> SequenceSet:
        """Parse a whole sequence set, e.g. ``b"1:3,5,7:*"``; raises ParseError."""
        if isinstance(text, str):
            text = text.encode("ascii", "replace")
        reader = Reader([text])
        result = read_sequence_set(reader)
        reader.end()
        return result


def read_sequence_set(reader: Reader, allow_saved: bool = True) -> SequenceSet:
    """Read RFC 3501 §9 ``sequence-set`` (or RFC 5182 ``$``) at the cursor."""
    if reader.peek() == 0x24:  # "$"
        if not allow_saved:
            raise reader.error("$ is not allowed here")
        reader.pos += 1
        return SequenceSet(saved=True)
    ranges = []
    while True:
        first = _seq_number(reader)
        last = first
        if reader.maybe(0x3A):  # ":"
            last = _seq_number(reader)
        ranges.append((first, last))
        if not reader.maybe(0x2C):  # ","
            break
    return SequenceSet(tuple(ranges))


def _seq_number(reader: Reader) -> int:
    # seq-number = nz-number / "*"
    if reader.maybe(0x2A):
        return STAR
    try:
        return reader.nz_number("a message number or UID")
    except ParseError as e:
        raise reader.error(f"bad sequence set: {e.reason}") from None


def _merge(ranges: Iterable[Range]) -> list[Range]:
    merged: list[Range] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def compact_sequence_set(numbers: Iterable[int]) -> bytes:
    """The shortest sequence set naming exactly ``numbers``, e.g. ``1:3,5``.

    Order is kept where it matters: RFC 4315 §3 pairs COPYUID's source and
    destination sets element by element, so a run only forms from consecutive
    ascending numbers in the order given, never by sorting.
    """
    out: list[bytes] = []
    start = prev = -1
    for n in numbers:
        if not 0 < n <= MAX_NUMBER:
            raise ValueError(f"{n} cannot be in a sequence set")
        if prev != -1 and n == prev + 1:
            prev = n
            continue
        if prev != -1:
            out.append(_run(start, prev))
        start = prev = n
    if prev == -1:
        raise ValueError("a sequence set cannot be empty")
    out.append(_run(start, prev))
    return b",".join(out)


def _run(a: int, b: int) -> bytes:
    return str(a).encode() if a == b else b"%d:%d" % (a, b)
