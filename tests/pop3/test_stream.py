"""RETR/TOP octets: CRLF, dot-stuffing at any chunk boundary, and the producer."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.interfaces import IPushProducer

from mailaccess.pop3.stream import DotStuffer, MessageProducer, TopLimiter


def reference_response(stored: bytes) -> bytes:
    """RFC 1939 §3 spelled out line by line: the multi-line body RETR must send."""
    text = stored.replace(b"\r\n", b"\n")
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = b""
    for line in lines:
        if line.startswith(b"."):
            line = b"." + line
        out += line + b"\r\n"
    return out + b".\r\n"


def stuff_in_chunks(stored: bytes, cuts: list[int]) -> bytes:
    stuffer = DotStuffer()
    out = b""
    previous = 0
    for cut in [*sorted(set(cuts)), len(stored)]:
        out += stuffer.feed(stored[previous:cut])
        previous = cut
    return out + stuffer.finish()


def test_dot_at_chunk_boundary_is_stuffed_rfc1939_3() -> None:
    stored = b"Subject: x\n\nline\n.starts with a dot\n..two dots\n.\n"
    expected = b"Subject: x\r\n\r\nline\r\n..starts with a dot\r\n...two dots\r\n..\r\n.\r\n"
    for cut in range(len(stored) + 1):
        assert stuff_in_chunks(stored, [cut]) == expected, cut


def test_crlf_split_between_chunks_is_not_doubled() -> None:
    stored = b"a\r\n.b\r\n"
    for cut in range(len(stored) + 1):
        assert stuff_in_chunks(stored, [cut]) == b"a\r\n..b\r\n.\r\n", cut


def test_message_without_final_newline_gets_one_before_terminator_rfc1939_3() -> None:
    assert stuff_in_chunks(b"Subject: x\n\nno newline", []) == (
        b"Subject: x\r\n\r\nno newline\r\n.\r\n"
    )
    assert stuff_in_chunks(b"", []) == b".\r\n"


def test_lone_cr_is_kept_as_is() -> None:
    assert stuff_in_chunks(b"a\rb\n", [2]) == b"a\rb\r\n.\r\n"


# Bodies over an alphabet dense in the interesting octets.
bodies = (
    st.binary(max_size=200)
    .map(lambda raw: bytes(b".\n\rax"[byte % 5] for byte in raw))
    .filter(lambda b: b"\r" not in b.replace(b"\r\n", b""))
)


@given(bodies, st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_any_chunking_gives_the_reference_octets_rfc1939_3(stored: bytes, cuts: list[int]) -> None:
    cuts = [c for c in cuts if c <= len(stored)]
    assert stuff_in_chunks(stored, cuts) == reference_response(stored)


def limit_in_chunks(stored: bytes, body_lines: int, cut: int) -> bytes:
    limiter = TopLimiter(body_lines)
    out = limiter.feed(stored[:cut])
    if not limiter.done:
        out += limiter.feed(stored[cut:])
    return out


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_top_limiter_cuts_after_header_and_n_lines_rfc1939_7(newline: bytes) -> None:
    stored = newline.join([b"A: 1", b"B: 2", b"", b"one", b"two", b"three", b""])
    header = newline.join([b"A: 1", b"B: 2", b""]) + newline
    for cut in range(len(stored) + 1):
        assert limit_in_chunks(stored, 0, cut) == header, cut
        assert limit_in_chunks(stored, 2, cut) == header + b"one" + newline + b"two" + newline
        assert limit_in_chunks(stored, 10, cut) == stored


def test_top_of_message_without_body_is_the_whole_message_rfc1939_7() -> None:
    assert limit_in_chunks(b"A: 1\nB: 2\n", 0, 3) == b"A: 1\nB: 2\n"


class PausingConsumer:
    """A consumer that pauses its streaming producer after every write, like a
    full socket buffer does."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming and IPushProducer.providedBy(producer)
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.producer.pauseProducing()


def test_producer_sends_one_chunk_per_resume_and_closes_the_file() -> None:
    stored = b"Subject: big\n\n" + b"x" * 70 + b"\n" + b".y\n" * 30
    source = io.BytesIO(stored)
    consumer = PausingConsumer()
    done = MessageProducer(source, consumer, chunk_size=16).start()
    assert len(consumer.writes) == 1 and len(consumer.writes[0]) <= 32  # one chunk only
    resumes = 0
    while consumer.producer is not None:
        consumer.producer.resumeProducing()
        resumes += 1
        assert resumes < 100
    assert resumes >= len(stored) // 16  # the message went out piece by piece
    assert b"".join(consumer.writes) == reference_response(stored)
    assert source.closed
    assert done.called


def test_producer_stopped_by_the_connection_fails_and_closes_the_file() -> None:
    source = io.BytesIO(b"x\n" * 100)
    consumer = PausingConsumer()
    done = MessageProducer(source, consumer, chunk_size=8).start()
    failures: list[Any] = []
    done.addErrback(failures.append)
    consumer.producer.stopProducing()
    assert source.closed and len(failures) == 1
    assert consumer.producer is None


def test_producer_read_error_fails_the_stream() -> None:
    class BrokenFile(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError(5, "Input/output error")

    consumer = PausingConsumer()
    failures: list[Any] = []
    MessageProducer(BrokenFile(b""), consumer).start().addErrback(failures.append)
    assert failures and failures[0].check(OSError)
    assert consumer.producer is None


def test_top_through_producer_stops_reading_early() -> None:
    stored = b"A: 1\n\n" + b"body line\n" * 1000
    source = io.BytesIO(stored)
    consumer = PausingConsumer()
    MessageProducer(source, consumer, body_lines=1, chunk_size=64).start()
    while consumer.producer is not None:
        consumer.producer.resumeProducing()
    assert b"".join(consumer.writes) == b"A: 1\r\n\r\nbody line\r\n.\r\n"
    assert source.closed


def test_short_reads_from_an_unbuffered_source_never_truncate_the_message() -> None:
    class Trickle(io.RawIOBase):
        """A source whose read(n) hands out at most 5 octets, like a pipe may."""

        def __init__(self, data: bytes) -> None:
            self._data = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            piece, self._data = self._data[:5], self._data[5:]
            return piece

    stored = b"Subject: slow\n\n" + b".dotted\n" * 20
    consumer = PausingConsumer()
    MessageProducer(Trickle(stored), consumer, chunk_size=64).start()  # type: ignore[arg-type]
    while consumer.producer is not None:
        consumer.producer.resumeProducing()
    assert b"".join(consumer.writes) == reference_response(stored)
