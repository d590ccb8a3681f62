"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailaccess.store import mutf7
from mailaccess.store.model import InvalidMailboxName
from tests.support.dovecot import Dovecot, require_dovecot

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


def test_dovecot_agrees_on_valid_and_invalid_names_rfc3501_5_1_3(tmp_path: Path) -> None:
    """A real Dovecot stores our encoding as the folder name, and refuses the
    spellings we refuse."""
    require_dovecot()
    import imaplib

    # (Control characters are valid modified UTF-7 but Dovecot, like our
    # Account, refuses them in mailbox names; that is name policy, not codec.)
    valid = ["Entwürfe", "台北.日本語", "a&b", "📬 Post", "Ärger & Ölflecken"]
    invalid = ["&AOk", "&AGE-", "&U,BTFw-&ZeVnLIqe-", "&AO/-", "&AOl-", "&2D0-"]
    with Dovecot(tmp_path / "dovecot") as dovecot:
        imap = imaplib.IMAP4("127.0.0.1", dovecot.ports["imap"])
        try:
            assert imap.login("alice", "secret")[0] == "OK"
            for name in valid:
                assert imap.create(f'"{mutf7.encode(name)}"')[0] == "OK", name
            refused = []
            for encoded in invalid:
                with pytest.raises(InvalidMailboxName):
                    mutf7.decode(encoded)
                if imap.create(f'"{encoded}"')[0] != "OK":
                    refused.append(encoded)
        finally:
            imap.logout()
    root = dovecot.user_root("alice")
    folders = {p.name for p in root.iterdir() if p.name.startswith(".") and p.is_dir()}
    for name in valid:
        # Maildir++: "." between levels on disk too.
        assert "." + mutf7.encode(name) in folders, name
    # The one difference: Dovecot 2.3 ignores non-zero padding bits, so it
    # takes "&AOl-" as a second spelling of "é" ("&AOk-").  We refuse it: two
    # spellings of one name would be two folders that LIST shows alike, and
    # the second could never be opened by its decoded name.
    assert refused == [name for name in invalid if name != "&AOl-"]
