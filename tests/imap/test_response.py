"""Response encoding (RFC 3501 §7 and §9 ``response``)."""

from __future__ import annotations

import datetime

import pytest

from mailaccess.imap.lexer import Reader
from mailaccess.imap.response import (
    Atom,
    Literal,
    ResponseCode,
    continuation,
    encode,
    encode_astring,
    encode_flags,
    encode_string,
    error_response,
    format_internaldate,
    literal_header,
    sequence_set_atom,
    tagged,
    untagged,
    untagged_status,
)


def test_tagged_ok_with_code_rfc3501_7_1() -> None:
    assert tagged("A142", "OK", "SELECT completed", ResponseCode("READ-WRITE")) == (
        b"A142 OK [READ-WRITE] SELECT completed\r\n"
    )


def test_tagged_no_bad_rfc3501_7_1() -> None:
    assert tagged("a", "NO", "no such mailbox") == b"a NO no such mailbox\r\n"
    assert tagged("a", "BAD", "unknown command FROB") == b"a BAD unknown command FROB\r\n"
    with pytest.raises(ValueError):
        tagged("a", "BYE", "x")


def test_response_codes_rfc3501_7_1() -> None:
    assert bytes(ResponseCode("UIDNEXT", (5,))) == b"[UIDNEXT 5]"
    assert bytes(ResponseCode("APPENDUID", (38505, 3955))) == b"[APPENDUID 38505 3955]"
    assert bytes(ResponseCode("TOOBIG")) == b"[TOOBIG]"
    flags = [Atom(b"\\Deleted"), Atom(b"\\Seen"), Atom(b"\\*")]
    assert (
        bytes(ResponseCode("PERMANENTFLAGS", (flags,)))
        == b"[PERMANENTFLAGS (\\Deleted \\Seen \\*)]"
    )
    assert bytes(ResponseCode("BADCHARSET", ([Atom(b"UTF-8"), Atom(b"US-ASCII")],))) == (
        b"[BADCHARSET (UTF-8 US-ASCII)]"
    )


def test_copyuid_with_compacted_sets_rfc4315_3() -> None:
    code = ResponseCode(
        "COPYUID",
        (38505, sequence_set_atom([304, 319, 320]), sequence_set_atom([3956, 3957, 3958])),
    )
    assert (
        tagged("a", "OK", "Done", code) == b"a OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"
    )


def test_untagged_status_rfc3501_7_1() -> None:
    assert untagged_status("OK", "Predicted next UID", ResponseCode("UIDNEXT", (4392,))) == (
        b"* OK [UIDNEXT 4392] Predicted next UID\r\n"
    )
    assert untagged_status("BYE", "Autologout; idle for too long") == (
        b"* BYE Autologout; idle for too long\r\n"
    )
    with pytest.raises(ValueError):
        untagged_status("MAYBE", "x")


def test_text_cannot_break_the_line_or_fake_a_code_rfc3501_9() -> None:
    assert tagged("a", "BAD", "bad\r\n* OK injected") == b"a BAD bad  * OK injected\r\n"
    assert tagged("a", "NO", "[ALERT] not really") == b"a NO  [ALERT] not really\r\n"


def test_untagged_data_rfc3501_7_3() -> None:
    assert untagged(23, Atom(b"EXISTS")) == b"* 23 EXISTS\r\n"
    assert untagged(Atom(b"FLAGS"), [Atom(b"\\Answered"), Atom(b"\\Seen")]) == (
        b"* FLAGS (\\Answered \\Seen)\r\n"
    )


def test_fetch_response_with_literal_rfc3501_7_4_2() -> None:
    line = untagged(
        12,
        Atom(b"FETCH"),
        [Atom(b"UID"), 7, Atom(b"BODY[]"), Literal(b"Hi\r\n"), Atom(b"ENVELOPE"), [None, "x"]],
    )
    assert line == b'* 12 FETCH (UID 7 BODY[] {4}\r\nHi\r\n ENVELOPE (NIL "x"))\r\n'


def test_continuation_rfc3501_7_5() -> None:
    assert continuation() == b"+ Ready\r\n"
    assert continuation("idling") == b"+ idling\r\n"
    assert continuation(b"", base64_data=True) == b"+ \r\n"
    assert continuation(b"\x00abc", base64_data=True) == b"+ AGFiYw==\r\n"


def test_string_quoted_when_safe_rfc3501_4_3() -> None:
    assert encode_string("hello world") == b'"hello world"'
    assert encode_string(b'say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    assert encode_string("") == b'""'


@pytest.mark.parametrize(
    "data", [b"line\r\nbreak", b"bare\nlf", b"caf\xc3\xa9", b"nul\x00", b"x" * 1025]
)
def test_string_literal_when_not_safe_rfc3501_4_3(data: bytes) -> None:
    assert encode_string(data) == b"{%d}\r\n" % len(data) + data


def test_utf8_quoted_when_enabled_rfc6855_3() -> None:
    assert encode_string("café", utf8=True) == '"café"'.encode()
    assert encode_string(b"\xff", utf8=True) == b"{1}\r\n\xff"


def test_astring_atom_or_string_rfc3501_9() -> None:
    assert encode_astring("INBOX") == b"INBOX"
    assert encode_astring("two words") == b'"two words"'
    assert encode_astring("NIL") == b'"NIL"'
    assert encode_astring("") == b'""'
    assert encode_astring("a(b") == b'"a(b"'


def test_encode_values_rfc3501_4() -> None:
    assert encode(None) == b"NIL"
    assert encode(0) == b"0"
    assert encode([]) == b"()"
    assert encode([1, [2, "x"], None]) == b'(1 (2 "x") NIL)'
    with pytest.raises(ValueError):
        encode(-1)
    with pytest.raises(TypeError):
        encode(True)


def test_literal_header_rfc3501_4_3() -> None:
    assert literal_header(310) == b"{310}\r\n"


def test_flags_system_first_stable_rfc3501_2_3_2() -> None:
    assert (
        encode_flags(["$Forwarded", "\\Seen", "\\Answered"]) == b"(\\Answered \\Seen $Forwarded)"
    )
    assert encode_flags([]) == b"()"


def test_internaldate_format_rfc3501_9() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=-7))
    when = datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=tz)
    assert format_internaldate(when) == b'"17-Jul-1996 02:44:25 -0700"'


def test_internaldate_day_is_space_padded_rfc3501_9() -> None:
    # date-day-fixed = (SP DIGIT) / 2DIGIT
    assert format_internaldate(0.0) == b'" 1-Jan-1970 00:00:00 +0000"'


def test_internaldate_from_epoch_in_zone_rfc3501_9() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    assert format_internaldate(86400 * 365, tz) == b'" 1-Jan-1971 05:30:00 +0530"'
    with pytest.raises(ValueError):
        format_internaldate(datetime.datetime(2020, 1, 1))


def test_internaldate_parses_back_rfc3501_9() -> None:
    from mailaccess.imap.parser import parse_date_time

    tz = datetime.timezone(datetime.timedelta(hours=-3, minutes=-30))
    when = datetime.datetime(2026, 11, 5, 23, 59, 1, tzinfo=tz)
    encoded = format_internaldate(when)
    assert parse_date_time(Reader([encoded]).quoted()) == when


def test_error_response_tagged_or_untagged_rfc3501_7_1_3() -> None:
    from mailaccess.imap.lexer import ParseError

    assert error_response(ParseError("unknown command FROB", "a1")) == (
        b"a1 BAD unknown command FROB\r\n"
    )
    assert error_response(ParseError("line too long", None, "TOOBIG")) == (
        b"* BAD [TOOBIG] line too long\r\n"
    )


def test_text_is_never_empty_rfc3501_9() -> None:
    # resp-text needs 1*TEXT-CHAR after the code.
    assert tagged("a", "OK", "", ResponseCode("READ-WRITE")) == b"a OK [READ-WRITE] done\r\n"
    assert untagged_status("OK", "") == b"* OK done\r\n"
