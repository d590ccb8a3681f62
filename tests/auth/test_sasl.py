"""SASL PLAIN (RFC 4616) and LOGIN, byte by byte."""

from __future__ import annotations

import base64

import pytest
from twisted.cred.credentials import IUsernamePassword

from mailaccess.auth.sasl import (
    LOGIN_PASSWORD_CHALLENGE,
    LOGIN_USERNAME_CHALLENGE,
    LoginExchange,
    PlainResponse,
    SASLCancelled,
    SASLError,
    decode_plain,
    decode_response,
    encode_challenge,
    parse_plain,
)


def test_plain_example_rfc4616_4() -> None:
    # RFC 4616 §4, first example: "\0tim\0tanstaaftanstaaf".
    message = b"\x00tim\x00tanstaaftanstaaf"
    assert parse_plain(message) == PlainResponse("", "tim", "tanstaaftanstaaf")
    line = base64.b64encode(message)
    assert line == b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
    assert decode_plain(line) == PlainResponse("", "tim", "tanstaaftanstaaf")


def test_plain_authzid_equal_to_authcid_rfc4616_2() -> None:
    assert parse_plain(b"tim\x00tim\x00pw") == PlainResponse("tim", "tim", "pw")


def test_plain_authzid_of_another_user_refused_rfc4616_4() -> None:
    # RFC 4616 §4, second example: Ursel acting as Kurt.  We allow no proxying.
    with pytest.raises(SASLError, match="another user"):
        parse_plain(b"Ursel\x00Kurt\x00xipj3plmq")


def test_plain_utf8_octets_rfc4616_2() -> None:
    message = "\0jürgen\0pässwörd €".encode()
    assert message == b"\x00j\xc3\xbcrgen\x00p\xc3\xa4ssw\xc3\xb6rd \xe2\x82\xac"
    result = parse_plain(message)
    assert (result.authcid, result.password) == ("jürgen", "pässwörd €")
    credentials = result.credentials()
    assert IUsernamePassword.providedBy(credentials)
    assert credentials.username == b"j\xc3\xbcrgen"
    assert credentials.password == b"p\xc3\xa4ssw\xc3\xb6rd \xe2\x82\xac"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"tim\x00tanstaaf", "authzid NUL authcid NUL password"),  # one NUL
        (b"\x00tim\x00tans\x00taaf", "authzid NUL authcid NUL password"),  # NUL in passwd
        (b"", "authzid NUL authcid NUL password"),
        (b"\x00\x00pw", "empty user name"),
        (b"\x00tim\x00", "empty password"),
        (b"\x00t\xffm\x00pw", "user name is not valid UTF-8"),
        (b"\x00tim\x00\xc3", "password is not valid UTF-8"),
        (b"\xff\x00tim\x00pw", "authorization identity is not valid UTF-8"),
    ],
)
def test_plain_malformed_rfc4616_2(message: bytes, error: str) -> None:
    with pytest.raises(SASLError, match=error):
        parse_plain(message)


@pytest.mark.parametrize(
    "line",
    [
        b"AHRpbQB0YW5zdGFhZg",
        b"AHRpbQB0YW5zdGFhZg==AA==",
        b" AHRpbQ==",
        b"AHRp bQ==",
        b"!!!!",
        b"dGlt=",
        b"dGlt==",
        b"dGltCg=\n",
    ],
)
def test_base64_is_strict_rfc4648_4(line: bytes) -> None:
    with pytest.raises(SASLError, match="not valid base64"):
        decode_response(line)


def test_cancel_and_empty_responses_rfc3501_6_2_2_rfc4959_3() -> None:
    with pytest.raises(SASLCancelled):
        decode_response(b"*")
    assert decode_response(b"=") == b""  # an empty initial response
    assert decode_response(b"") == b""
    with pytest.raises(SASLError, match="authzid NUL"):
        decode_plain(b"=")


def test_encode_challenge_has_no_line_break() -> None:
    assert encode_challenge(b"") == b""
    assert encode_challenge(b"Username:") == LOGIN_USERNAME_CHALLENGE
    assert encode_challenge(b"Password:") == LOGIN_PASSWORD_CHALLENGE
    assert encode_challenge(b"x" * 100).count(b"\n") == 0


def test_login_mechanism_two_steps() -> None:
    exchange = LoginExchange()
    assert not exchange.done
    assert exchange.challenge() == b"VXNlcm5hbWU6"  # "Username:"
    exchange.respond(b"dGlt")  # "tim"
    assert exchange.username == "tim" and not exchange.done
    assert exchange.challenge() == b"UGFzc3dvcmQ6"  # "Password:"
    exchange.respond(b"cMOkc3M=")  # "päss"
    assert exchange.done
    credentials = exchange.credentials()
    assert (credentials.username, credentials.password) == (b"tim", b"p\xc3\xa4ss")
    with pytest.raises(SASLError, match="already complete"):
        exchange.respond(b"eA==")


def test_login_mechanism_initial_response_is_the_user_name_rfc4959() -> None:
    exchange = LoginExchange(b"dGlt")
    assert exchange.username == "tim"
    assert exchange.challenge() == LOGIN_PASSWORD_CHALLENGE


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ([b""], "user name is empty"),
        ([b"dGlt", b""], "password is empty"),
        ([b"dAB4"], "contains a NUL"),  # "t\0x"
        ([b"/w=="], "user name is not valid UTF-8"),
        ([b"dGlt", b"dGlt="], "not valid base64"),
        ([b"dGlt", b"*"], "cancelled"),
    ],
)
def test_login_mechanism_bad_steps(lines: list[bytes], error: str) -> None:
    exchange = LoginExchange()
    with pytest.raises(SASLError, match=error):
        for line in lines:
            exchange.respond(line)
    assert not exchange.done
    with pytest.raises(SASLError, match="not complete"):
        exchange.credentials()
