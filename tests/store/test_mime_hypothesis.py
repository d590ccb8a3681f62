"""Property tests: parse_message never raises and its offsets stay within the data."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailaccess.store.cache import decode_info, encode_info
from mailaccess.store.mime import (
    find_section,
    iter_crlf,
    iter_crlf_partial,
    parse_message,
    section_range,
    to_crlf,
)
from mailaccess.store.mime_header import _fast_addresses, _parse_addresses
from tests.store.test_mime import check_offsets
from tests.store.test_mime_encode import body, envelope

# Pieces real messages are made of, so that random mixing reaches the deep
# paths (nested multiparts, digests, boundaries that are prefixes of others,
# headers that run into boundaries) far more often than random bytes would.
_PIECES = [
    b"Content-Type: multipart/mixed; boundary=a\n",
    b"Content-Type: multipart/digest; boundary=ab\n",
    b'Content-Type: multipart/alternative; boundary="a-b"\n',
    b"Content-Type: message/rfc822\n",
    b"Content-Type: text/plain; charset*0*=utf-8''%C3; charset*1=x\n",
    b"Content-Transfer-Encoding: base64\n",
    b'Content-Disposition: attachment; filename="x"\n',
    b"From: A <a@b.c>, (c) d@e, G: h@i;\n",
    b"Subject: =?utf-8?q?x?=\n \tfolded\n",
    b"Date: Mon, 1 Jan 2024 00:00:00 +0100\n",
    b"--a\n",
    b"--a--\n",
    b"--ab\n",
    b"--a-b\n",
    b"--a-b--\n",
    b"\n",
    b"\r\n",
    b"\r",
    b"body text\n",
    b"\0\xff\x80",
    b"--",
    b":",
]


def _check(data: bytes) -> None:
    info = parse_message(data)
    check_offsets(data, info)
    # Everything the IMAP layer will do with it works too.
    body(info.body, True)
    body(info.body, False)
    envelope(info.envelope)
    assert decode_info(encode_info(info)) == info
    for path in [(), (1,), (2,), (1, 1), (1, 2), (2, 1), (1, 1, 1), (3, 2, 1)]:
        find_section(info, path)
        for spec in ("", "HEADER", "TEXT", "MIME"):
            section = section_range(info, path, spec)
            if section is not None:
                assert 0 <= section.start <= section.end <= len(data)
                got = b"".join(iter_crlf(io.BytesIO(data), section.start, section.end, 3))
                assert len(got) == section.size


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_any_bytes_parse(data: bytes) -> None:
    _check(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES) | st.binary(max_size=8), max_size=60))
def test_mime_shaped_bytes_parse(pieces: list[bytes]) -> None:
    _check(b"".join(pieces))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300).map(lambda b: b.replace(b"x", b"\n").replace(b"y", b"\r")),
    st.integers(0, 400),
    st.integers(0, 400) | st.none(),
    st.integers(1, 9),
)
def test_partial_equals_slice_of_crlf_view(
    raw: bytes, offset: int, length: int | None, chunk: int
) -> None:
    view = to_crlf(raw)
    want = view[offset:] if length is None else view[offset : offset + length]
    got = b"".join(
        iter_crlf_partial(io.BytesIO(raw), 0, len(raw), offset, length, chunk, replace_nul=False)
    )
    assert got == want
    sent = b"".join(iter_crlf_partial(io.BytesIO(raw), 0, len(raw), offset, length, chunk))
    assert sent == want.replace(b"\0", b"\x80")  # RFC 3501 §4.3: no NUL in a literal


_ADDRESS_ALPHABET = st.sampled_from(
    [
        b"a",
        b"b.c",
        b"@",
        b"<",
        b">",
        b",",
        b" ",
        b'"',
        b"Q. ",
        b"=?utf-8?q?x?=",
        b"\\",
        b"(",
        b")",
        b":",
        b";",
        b"\t",
        b"\r\n ",
        b"[1.2.3.4]",
        b"x",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_ADDRESS_ALPHABET, max_size=25).map(b"".join))
@example(b"x  x\t x <a@b.c>, a@b.c")
@example(b'"Q. x" <a@b.c>,x <a@b.c>')
def test_fast_address_path_agrees_with_full_parser(value: bytes) -> None:
    fast = _fast_addresses(value)
    if fast is not None:
        assert fast == _parse_addresses(value)
