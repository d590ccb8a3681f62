"""UIDL formats: Dovecot's pop3_uidl_format variables, checked against a real Dovecot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailaccess.pop3.uidl import UIDLFormat, UIDLFormatError

FACTS = Path(__file__).parent.parent / "fixtures" / "dovecot" / "facts.json"
UIDLIST = Path(__file__).parent.parent / "fixtures" / "dovecot" / "alice" / "dovecot-uidlist"


def test_dovecot_default_matches_what_dovecot_2_3_answered() -> None:
    # facts.json holds the UIDL answers of a real Dovecot 2.3 on this Maildir.
    facts = json.loads(FACTS.read_text())
    header = UIDLIST.read_text().split("\n", 1)[0].split()
    uidvalidity = int(next(field[1:] for field in header if field.startswith("V")))
    fmt = UIDLFormat.parse(facts["pop3_uidl_format"])
    assert facts["pop3"], "the fixture lists POP3 messages"
    for message in facts["pop3"]:
        assert fmt.unique_id(message["uid"], uidvalidity, "") == message["uidl"]


def test_hex_is_lower_case_and_zero_padded() -> None:
    assert UIDLFormat.parse("%08Xu%08Xv").unique_id(0xAB, 0x6B0987D1, "") == "000000ab6b0987d1"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("%u", "171"),
        ("%v.%u", "1234567890.171"),
        ("%{uidvalidity}-%{uid}", "1234567890-171"),
        ("%Xu", "ab"),
        ("%XUu", "AB"),  # modifiers apply as written: hex, then upper case
        ("%UXu", "ab"),
        ("%f", "1700000000.M1P2.host"),
        ("%4f", "1700"),  # a width without 0 cuts
        ("%2.3f", "000"),  # offset.width takes a substring
        ("%Rv", "0987654321"),
        ("u%%%u", "u%171"),
        ("%06u", "000171"),
    ],
)
def test_dovecot_variables_and_modifiers(source: str, expected: str) -> None:
    fmt = UIDLFormat.parse(source)
    assert fmt.unique_id(171, 1234567890, "1700000000.M1P2.host") == expected
    # The per-mailbox fast path gives the same answer.
    assert fmt.for_mailbox(1234567890)(171, "1700000000.M1P2.host") == expected


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ("%m", "unknown variable '%m'"),
        ("%{guid}", "unknown variable"),
        ("static", "names no variable"),
        ("%u %v", "0x21-0x7E"),
        ("%u%", "stray '%'"),
        ("", "names no variable"),
    ],
)
def test_unusable_formats_are_refused_with_a_reason_rfc1939_7(source: str, complaint: str) -> None:
    with pytest.raises(UIDLFormatError, match=complaint.replace("(", r"\(")):
        UIDLFormat.parse(source)
