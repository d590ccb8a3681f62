"""Password schemes: real doveadm hashes verify, ours verify in Dovecot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mailaccess.auth.schemes import (
    SchemeError,
    check_stored,
    hash_password,
    plaintext_of,
    split_scheme,
    verify_password,
)

DATA = Path(__file__).parent / "data" / "doveadm_pw.tsv"


def _doveadm_rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            scheme, password, stored = line.split("\t")
            rows.append((scheme, password, stored))
    return rows


DOVEADM_ROWS = _doveadm_rows()


def test_fixture_covers_every_scheme() -> None:
    assert {row[0] for row in DOVEADM_ROWS} == {
        "ARGON2ID",
        "BLF-CRYPT",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "PLAIN",
    }


@pytest.mark.parametrize(("scheme", "password", "stored"), DOVEADM_ROWS)
def test_doveadm_pw_hashes_verify(scheme: str, password: str, stored: str) -> None:
    assert stored.startswith("{" + scheme + "}")
    assert check_stored(stored) is None
    assert verify_password(stored, password)
    assert verify_password(stored, password.encode("utf-8"))


@pytest.mark.parametrize(("scheme", "password", "stored"), DOVEADM_ROWS)
def test_doveadm_pw_hashes_reject_wrong_password(scheme: str, password: str, stored: str) -> None:
    # Changes at the front: bcrypt ignores octets past the 72nd (see below).
    assert not verify_password(stored, "x" + password)
    assert not verify_password(stored, password[1:])
    assert not verify_password(stored, "")


def test_bcrypt_reads_only_72_octets_like_crypt3() -> None:
    # doveadm hashed a 100-character password; crypt_blowfish stops at 72.
    [stored] = [s for sch, pw, s in DOVEADM_ROWS if sch == "BLF-CRYPT" and len(pw) == 100]
    assert verify_password(stored, "0123456789" * 10)
    assert verify_password(stored, ("0123456789" * 10)[:72] + "different tail")
    assert not verify_password(stored, ("0123456789" * 10)[:71])


def test_password_with_nul_never_verifies() -> None:
    # RFC 4616 §2: a password holds no NUL; crypt(3) would truncate at one.
    assert not verify_password("{PLAIN}a\0b", "a\0b")
    assert not verify_password(hash_password("ab", "SHA256-CRYPT"), "ab\0")


def test_split_scheme_dovecot_rules() -> None:
    assert split_scheme("{sha512-crypt}$6$x$y") == ("SHA512-CRYPT", "$6$x$y")
    # No prefix: Dovecot's passwd-file default scheme is CRYPT.
    assert split_scheme("$6$x$y") == ("CRYPT", "$6$x$y")
    assert split_scheme("secret") == ("CRYPT", "secret")
    # libpam-pwdfile's "hash[34]" is MD5-CRYPT.
    assert split_scheme("$1$abc$def[34]") == ("MD5-CRYPT", "$1$abc$def")


def test_bare_crypt_hash_verifies_and_bare_text_is_never_plaintext() -> None:
    stored = next(s for sch, pw, s in DOVEADM_ROWS if sch == "SHA512-CRYPT" and pw == "secret")
    assert verify_password(split_scheme(stored)[1], "secret")
    with pytest.raises(SchemeError, match="DES and MD5 crypt are not supported"):
        verify_password("secret", "secret")


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("{SSHA}abcdef", "unsupported password scheme {SSHA}"),
        ("{MD5-CRYPT}$1$abc$def", "unsupported password scheme {MD5-CRYPT}"),
        ("{ARGON2ID}$argon2i$v=19$m=1,t=1,p=1$xx$yy", "does not start with $argon2id$"),
        ("{ARGON2ID}$argon2id$garbage", "not a valid argon2 hash"),
        ("{BLF-CRYPT}$2y$05$short", "not a valid bcrypt hash"),
        ("{SHA512-CRYPT}", "value is empty"),
        ("{PLAIN.B64}***", "not valid b64"),
    ],
)
def test_unusable_stored_values_raise_a_clear_error(stored: str, message: str) -> None:
    with pytest.raises(SchemeError, match=message.replace("$", r"\$").replace("{", r"\{")):
        verify_password(stored, "secret")


def test_check_stored_reports_without_hashing() -> None:
    assert check_stored("{SSHA}abc") == "unsupported password scheme {SSHA}"
    assert check_stored("{ARGON2ID}nope") == "{ARGON2ID} value is not a valid argon2 hash"
    assert check_stored("{PLAIN}x") is None
    assert check_stored("$5$salt$hash") is None
    assert check_stored("plaintext") is not None


def test_plain_aliases_and_encodings() -> None:
    assert verify_password("{CLEAR}secret", "secret")
    assert verify_password("{cleartext}secret", "secret")
    assert verify_password("{PLAIN.B64}c2VjcmV0", "secret")  # doveadm pw -s PLAIN.b64
    assert verify_password("{PLAIN.HEX}736563726574", "secret")
    assert not verify_password("{PLAIN.B64}c2VjcmV0", "c2VjcmV0")


def test_plaintext_of_only_for_plain() -> None:
    assert plaintext_of("{PLAIN}pässwörd €") == "pässwörd €"
    assert plaintext_of("{PLAIN.B64}c2VjcmV0") == "secret"
    assert plaintext_of("{SHA256-CRYPT}$5$abc$def") is None
    assert plaintext_of("secret") is None  # bare = CRYPT, not plaintext
    assert plaintext_of("{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA") is None


@pytest.mark.parametrize(
    ("scheme", "prefix"),
    [
        ("ARGON2ID", "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"),
        ("BLF-CRYPT", "{BLF-CRYPT}$2y$12$"),
        ("SHA512-CRYPT", "{SHA512-CRYPT}$6$"),
        ("SHA256-CRYPT", "{SHA256-CRYPT}$5$"),
        ("PLAIN", "{PLAIN}"),
    ],
)
def test_hash_password_round_trip(scheme: str, prefix: str) -> None:
    stored = hash_password("pässwörd €", scheme)
    assert stored.startswith(prefix)
    assert verify_password(stored, "pässwörd €")
    assert not verify_password(stored, "passwörd €")


def test_default_scheme_is_argon2id_and_salts_differ() -> None:
    first, second = hash_password("secret"), hash_password("secret")
    assert first.startswith("{ARGON2ID}$argon2id$")
    assert first != second


def test_hash_password_refuses_unknown_scheme_and_unstorable_plain() -> None:
    with pytest.raises(SchemeError, match="choose one of ARGON2ID"):
        hash_password("x", "SSHA")
    with pytest.raises(SchemeError, match="':'"):
        hash_password("a:b", "PLAIN")
    with pytest.raises(SchemeError, match="cost"):
        hash_password("x", "BLF-CRYPT", rounds=3)
    with pytest.raises(SchemeError, match="positive"):
        hash_password("x", "ARGON2ID", rounds=0)


DOVEADM = shutil.which("doveadm")


@pytest.mark.skipif(DOVEADM is None, reason="Dovecot's doveadm is not installed")
@pytest.mark.parametrize(
    "scheme", ["ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "PLAIN"]
)
def test_our_hashes_verify_in_dovecot(scheme: str) -> None:
    # doveadm pw -t checks a hash with Dovecot's own code: exit 0 and "(verified)".
    stored = hash_password("pässwörd €", scheme, rounds=4 if scheme == "BLF-CRYPT" else None)
    assert DOVEADM is not None
    good = subprocess.run(
        [DOVEADM, "pw", "-t", stored, "-p", "pässwörd €"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert "(verified)" in good.stdout
    bad = subprocess.run(
        [DOVEADM, "pw", "-t", stored, "-p", "wrong"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0


def test_password_length_is_bounded() -> None:
    stored = hash_password("x" * 1024, "SHA512-CRYPT")
    assert verify_password(stored, "x" * 1024)
    assert not verify_password(stored, "x" * 1025)
    with pytest.raises(SchemeError, match="longer than 1024"):
        hash_password("x" * 1025)
