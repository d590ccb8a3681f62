"""SHA-crypt against the test vectors of Drepper's specification and glibc."""

from __future__ import annotations

import pytest

from mailaccess.auth import shacrypt

# The test vectors published with the specification (SHA-crypt.txt).  The
# fourth key really is "morethan": two C string literals joined without a space.
LONG_KEY = "a very much longer text to encrypt.  This one even stretches over morethan one line."
SPEC_VECTORS = [
    ("$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    (
        "$5$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
    ),
    (
        "$5$rounds=5000$toolongsaltstring",
        "This is just a test",
        "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5",
    ),
    (
        "$5$rounds=1400$anotherlongsaltstring",
        LONG_KEY,
        "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1",
    ),
    (
        "$5$rounds=77777$short",
        "we have a short salt string but not a short password",
        "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/",
    ),
    (
        "$5$rounds=123456$asaltof16chars..",
        "a short string",
        "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD",
    ),
    (
        "$5$rounds=10$roundstoolow",
        "the minimum number is still observed",
        "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC",
    ),
    (
        "$6$saltstring",
        "Hello world!",
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJu"
        "esI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
    ),
    (
        "$6$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sb"
        "HbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
    (
        "$6$rounds=5000$toolongsaltstring",
        "This is just a test",
        "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQ"
        "zQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
    ),
    (
        "$6$rounds=1400$anotherlongsaltstring",
        LONG_KEY,
        "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wP"
        "vMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
    ),
    (
        "$6$rounds=77777$short",
        "we have a short salt string but not a short password",
        "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0g"
        "ge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0",
    ),
    (
        "$6$rounds=123456$asaltof16chars..",
        "a short string",
        "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwc"
        "elCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1",
    ),
    (
        "$6$rounds=10$roundstoolow",
        "the minimum number is still observed",
        "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1x"
        "hLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.",
    ),
]


@pytest.mark.parametrize(("setting", "key", "expected"), SPEC_VECTORS)
def test_spec_test_vectors(setting: str, key: str, expected: str) -> None:
    assert shacrypt.sha_crypt(key.encode(), setting) == expected
    assert shacrypt.sha_crypt_verify(key.encode(), expected)
    assert not shacrypt.sha_crypt_verify(key.encode() + b"x", expected)


def test_rounds_are_clamped_to_the_spec_range() -> None:
    # Spec: rounds below 1000 become 1000, above 999999999 become 999999999.
    assert shacrypt.parse_setting("$6$rounds=1$s")[1] == 1000
    assert shacrypt.parse_setting("$6$rounds=9999999999$s")[1] == 999_999_999
    assert shacrypt.parse_setting("$5$s") == ("5", 5000, False, "s")


def test_explicit_default_rounds_are_kept_in_the_output() -> None:
    # "rounds=5000$" given explicitly is echoed (spec vector 3), bare is not.
    assert shacrypt.sha_crypt(b"x", "$6$rounds=5000$abc").startswith("$6$rounds=5000$abc$")
    assert shacrypt.sha_crypt(b"x", "$6$abc").startswith("$6$abc$")


def test_salt_is_cut_to_16_characters() -> None:
    assert shacrypt.parse_setting("$5$0123456789abcdefXYZ")[3] == "0123456789abcdef"


def test_empty_password_and_empty_salt_hash() -> None:
    # Lengths of 0 exercise the loops' edges; glibc gives these results.
    assert (
        shacrypt.sha_crypt(b"", "$5$test1234")
        == "$5$test1234$UA0OvNpssFd2pcJm0sJ0ne3E6b518x/YEIPtJO8m841"
    )
    assert shacrypt.sha_crypt(b"test1234", "$6$") == (
        "$6$$XHu9fB3LkQSyG0r.FKxZjQlfe/lTi.Vq4qY0fCfJmN0JrDiG8Lv9eYhLuMlnTXFVcSbW/0hPyeKsVpjsk66qo."
    )


def test_new_hashes_have_a_random_16_character_salt() -> None:
    first = shacrypt.sha_crypt_hash(b"pw", "6")
    second = shacrypt.sha_crypt_hash(b"pw", "6")
    assert first != second
    assert len(first.split("$")[2]) == 16
    assert shacrypt.sha_crypt_verify(b"pw", first)
    assert shacrypt.sha_crypt_hash(b"pw", "5", rounds=1200).startswith("$5$rounds=1200$")


@pytest.mark.parametrize("bad", ["", "$1$abc$def", "$7$x", "plain", "$6"])
def test_non_sha_crypt_strings_never_verify(bad: str) -> None:
    assert not shacrypt.sha_crypt_verify(b"", bad)
    with pytest.raises(shacrypt.InvalidSetting):
        shacrypt.sha_crypt(b"", bad)
