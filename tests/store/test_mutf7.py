"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailaccess.store import mutf7
from mailaccess.store.model import InvalidMailboxName

# Pairs checked against Dovecot 2.3 (its lib-imap test vectors and the folder
# names in tests/fixtures/dovecot) and the RFC's own example.
KNOWN = [
    ("INBOX", "INBOX"),
    ("&", "&-"),
    ("&&x&&", "&-&-x&-&-"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("tietäjä", "tiet&AOQ-j&AOQ-"),
    # RFC 3501 §5.1.3's example.
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    # Outside the BMP: a surrogate pair in UTF-16.
    ("📬 Post", "&2D3c7A- Post"),
    ("a\tb", "a&AAk-b"),
    ("é\t", "&AOkACQ-"),
    ("", ""),
]


@pytest.mark.parametrize(("name", "encoded"), KNOWN)
def test_encode_known_rfc3501_5_1_3(name: str, encoded: str) -> None:
    assert mutf7.encode(name) == encoded


@pytest.mark.parametrize(("name", "encoded"), KNOWN)
def test_decode_known_rfc3501_5_1_3(name: str, encoded: str) -> None:
    assert mutf7.decode(encoded) == name


@given(st.text())
def test_round_trip_rfc3501_5_1_3(name: str) -> None:
    try:
        encoded = mutf7.encode(name)
    except InvalidMailboxName:
        # Only text that is not valid Unicode (lone surrogates) is refused.
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in name)
        return
    assert all(" " <= c <= "~" for c in encoded)
    assert mutf7.decode(encoded) == name


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_decode_accepts_only_canonical_rfc3501_5_1_3(candidate: str) -> None:
    # Any printable-ASCII string either is the encoding of its decoding, or is
    # refused: one name, one spelling.
    try:
        decoded = mutf7.decode(candidate)
    except InvalidMailboxName:
        return
    assert mutf7.encode(decoded) == candidate


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("&AOk", "not terminated"),
        ("Entw&APw", "not terminated"),
        ("&", "not terminated"),
        ("&AGE-", "printable US-ASCII"),  # "a" must represent itself
        ("&ACY-", "printable US-ASCII"),  # "&" must be "&-"
        ("&U,BTFw-&ZeVnLIqe-", "adjacent"),  # Dovecot rejects this too
        ("&AO/-", "not modified BASE64"),  # "/" is ","  in modified BASE64
        ("&AO=-", "not modified BASE64"),  # no "=" padding
        ("&Jjo!", "not modified BASE64"),  # Dovecot's own invalid example
        ("&AOl-", "padding bits"),
        ("&AO-", "truncated"),
        ("&A-", "truncated"),
        ("&2D0-", "surrogate"),  # a high surrogate alone
        ("&3GzYPQ-", "surrogate"),  # the pair in the wrong order
        ("tab\there", "not allowed"),
        ("caf\u00e9", "not allowed"),  # raw 8-bit: RFC 3501 §5.1.3 forbids it
    ],
)
def test_decode_rejects_malformed_rfc3501_5_1_3(encoded: str, reason: str) -> None:
    with pytest.raises(InvalidMailboxName, match=reason):
        mutf7.decode(encoded)


def test_encode_rejects_lone_surrogate() -> None:
    with pytest.raises(InvalidMailboxName, match="surrogate"):
        mutf7.encode("bad\ud800name")
