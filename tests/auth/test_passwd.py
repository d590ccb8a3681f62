"""Dovecot's passwd-file: reading with problems by line, atomic round-trip writes."""

from __future__ import annotations

import imaplib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailaccess.auth.passwd import (
    UserEntry,
    parse_line,
    read_users,
    render_users,
    write_users,
)
from mailaccess.auth.schemes import hash_password, verify_password

DATA = Path(__file__).parent / "data"
DOVECOT_USERS = DATA / "dovecot-users"


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    shutil.copyfile(DOVECOT_USERS, path)
    path.chmod(0o600)
    return path


def test_reads_dovecot_file_and_reports_problems_by_line(users_file: Path) -> None:
    warnings: list[str] = []
    entries, problems = read_users(users_file, warnings=warnings)
    assert [e.user for e in entries] == [
        "alice",
        "bob",
        "carol@example.org",
        "dave",
        "erin",
        "grace",
        "heidi",
        "judy",
    ]
    where = f"{users_file}:"
    assert problems == [
        where + "7: no user name before the first ':'; line ignored",
        where + "9: user name 'bad name' is not allowed "
        "(no spaces, control characters, '/', or leading '.' or '#'); line ignored",
        where + "11: user 'alice' already defined on line 4; line ignored",
        where + "12: uid '12x' is neither a number nor a name; line ignored",
        where + "14: user name '  # an indented hash sign is not a comment' is not allowed "
        "(no spaces, control characters, '/', or leading '.' or '#'); line ignored",
        where + "16: not valid UTF-8; line ignored",
    ]
    # Valid lines whose user cannot log in here are entries, with a warning.
    assert warnings == [
        where + "8: user 'dave' cannot log in: unsupported password scheme {SSHA}",
        where + "13: user 'grace' cannot log in: has no password",
    ]


def test_fields_as_dovecot_reads_them(users_file: Path) -> None:
    entries = {e.user: e for e in read_users(users_file)[0]}
    alice = entries["alice"]
    assert alice.uid == "1000" and alice.gid == "1000"
    assert alice.gecos == "Alice Liddell" and alice.home == "/home/alice" and alice.shell == ""
    # Everything after the 7th colon is extra_fields: values keep their colons.
    assert alice.extra == ("userdb_mail=maildir:~/Maildir", "userdb_quota_rule=*:storage=1G")
    assert alice.extra_fields() == {
        "userdb_mail": "maildir:~/Maildir",
        "userdb_quota_rule": "*:storage=1G",
    }
    assert verify_password(alice.password, "secret")  # the first alice line wins
    carol = entries["carol@example.org"]
    assert (carol.uid, carol.gid, carol.shell) == ("vmail", "vmail", "/bin/false")
    assert carol.extra_fields() == {"nologin": ""}
    assert entries["bob"] == UserEntry("bob", entries["bob"].password)
    assert entries["judy"].password == "{PLAIN}secret"  # CRLF line end dropped


def test_parse_line_fewer_fields() -> None:
    assert parse_line("zoe") == UserEntry("zoe")
    assert parse_line("zoe:{PLAIN}x") == UserEntry("zoe", "{PLAIN}x")
    assert parse_line("zoe:{PLAIN}x:::::") == UserEntry("zoe", "{PLAIN}x")


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_users(tmp_path / "nope")


def test_unchanged_write_keeps_the_file_byte_for_byte(users_file: Path) -> None:
    before = users_file.read_bytes()
    entries, _ = read_users(users_file)
    write_users(users_file, entries)
    assert users_file.read_bytes() == before


def test_edit_changes_only_that_user_line(users_file: Path) -> None:
    before = users_file.read_bytes().split(b"\n")
    entries, _ = read_users(users_file)
    new_password = hash_password("new secret", "SHA256-CRYPT")
    edited = [
        UserEntry(e.user, new_password, e.uid, e.gid, e.gecos, e.home, e.shell, e.extra)
        if e.user == "alice"
        else e
        for e in entries
    ]
    write_users(users_file, edited)
    after = users_file.read_bytes().split(b"\n")
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b]
    # Line 4 is alice; her ignored second line (11) goes too, or deleting or
    # editing alice would bring the old password back.
    assert changed[0] == 3
    assert (
        after[3]
        == (
            f"alice:{new_password}:1000:1000:Alice Liddell:/home/alice::"
            "userdb_mail=maildir:~/Maildir userdb_quota_rule=*:storage=1G"
        ).encode()
    )
    assert b"alice:{PLAIN}second-alice-line-is-ignored" not in after
    assert len(after) == len(before) - 1
    reread, _ = read_users(users_file)
    alice = next(e for e in reread if e.user == "alice")
    assert verify_password(alice.password, "new secret")


def test_delete_and_add_keep_comments_and_bad_lines(users_file: Path) -> None:
    entries, _ = read_users(users_file)
    kept = [e for e in entries if e.user != "bob"]
    kept.append(UserEntry("zoe", "{PLAIN}z", extra=("userdb_quota_rule=*:storage=10M",)))
    write_users(users_file, kept)
    text = users_file.read_bytes()
    assert b"\nbob:" not in text
    assert text.startswith(DOVECOT_USERS.read_bytes().split(b"\n")[0])  # the comment
    assert b"bad name:{PLAIN}secret\n" in text  # a line we could not read stays
    assert b"ivan:{PLAIN}s\xffcret\n" in text
    assert text.endswith(b"zoe:{PLAIN}z::::::userdb_quota_rule=*:storage=10M\n")
    assert [e.user for e in read_users(users_file)[0]][-1] == "zoe"


def test_new_file_is_created_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "users"
    write_users(path, [UserEntry("amy", "{PLAIN}a")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "amy:{PLAIN}a\n"


def test_existing_file_keeps_its_mode(users_file: Path) -> None:
    users_file.chmod(0o640)
    write_users(users_file, read_users(users_file)[0][:1])
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    "entry",
    [
        UserEntry("a:b", "{PLAIN}x"),
        UserEntry("../etc", "{PLAIN}x"),
        UserEntry("#root", "{PLAIN}x"),  # would read back as a comment
        UserEntry("amy", "{PLAIN}x\ny"),
        UserEntry("amy", "{PLAIN}x", home="/a:b"),
        UserEntry("amy", "{PLAIN}x", uid="1 0"),
        UserEntry("amy", "{PLAIN}x", extra=("a b",)),
    ],
)
def test_write_refuses_entries_that_would_break_the_file(
    users_file: Path, entry: UserEntry
) -> None:
    before = users_file.read_bytes()
    with pytest.raises(ValueError):
        write_users(users_file, [entry])
    assert users_file.read_bytes() == before


def test_write_refuses_a_user_twice(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="twice"):
        render_users(b"", [UserEntry("amy"), UserEntry("amy", "{PLAIN}x")])


def test_failed_write_leaves_old_file_and_no_temp(
    users_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = users_file.read_bytes()

    def disk_full(fd: int, data: memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_users(users_file, [UserEntry("amy", "{PLAIN}a")])
    monkeypatch.undo()
    assert users_file.read_bytes() == before
    assert sorted(p.name for p in users_file.parent.iterdir()) == ["users"]


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from mailaccess.auth import passwd

    path, where = sys.argv[1], sys.argv[2]
    real_write = os.write

    def half_then_die(fd, data):
        # Half the new content reaches the temporary file, then the power fails.
        real_write(fd, bytes(data[: len(data) // 2]))
        os._exit(9)

    def die(*args):
        os._exit(9)

    if where == "write":
        os.write = half_then_die
    elif where == "fsync":
        os.fsync = die
    elif where == "rename":
        os.replace = die
    entries, _ = passwd.read_users(path)
    passwd.write_users(path, entries + [passwd.UserEntry("zoe", "{PLAIN}z" * 500)])
    """
)


@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
def test_crash_mid_write_leaves_the_old_file(users_file: Path, where: str) -> None:
    # A real process dies (os._exit: no cleanup, no finally) at each step.
    before = users_file.read_bytes()
    result = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(users_file), where],
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 9, result.stderr
    assert users_file.read_bytes() == before
    # The debris is a dot-file beside it, which the next write does not mind.
    leftovers = [p.name for p in users_file.parent.iterdir() if p.name != "users"]
    assert all(name.startswith(".users.") and name.endswith(".tmp") for name in leftovers)
    assert leftovers
    entries, _ = read_users(users_file)
    write_users(users_file, [*entries, UserEntry("zoe", "{PLAIN}z")])
    assert read_users(users_file)[0][-1] == UserEntry("zoe", "{PLAIN}z")


def test_dovecot_logs_in_users_of_a_file_we_wrote(tmp_path: Path) -> None:
    # The real test of "Dovecot-compatible": Dovecot's own passwd-file driver
    # reads our file and its own hashing code checks our hashes.
    from tests.support.dovecot import Dovecot, require_dovecot

    require_dovecot()
    with Dovecot(tmp_path / "dovecot", users={"alice": "secret"}) as dovecot:
        entries, problems = read_users(dovecot.passwd_path)
        assert problems == []
        home = str(dovecot.user_root("x"))[:-1]
        schemes = ["ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "PLAIN"]
        new = [
            UserEntry(
                f"u{i}",
                hash_password(f"pw-{scheme}", scheme, rounds=4 if scheme == "BLF-CRYPT" else None),
                home=home + f"u{i}",
            )
            for i, scheme in enumerate(schemes)
        ]
        write_users(dovecot.passwd_path, entries + new)
        for i, scheme in enumerate(schemes):
            imap = imaplib.IMAP4("127.0.0.1", dovecot.ports["imap"])
            try:
                assert imap.login(f"u{i}", f"pw-{scheme}")[0] == "OK"
            finally:
                imap.logout()
            imap = imaplib.IMAP4("127.0.0.1", dovecot.ports["imap"])
            try:
                with pytest.raises(imaplib.IMAP4.error):
                    imap.login(f"u{i}", "wrong")
            finally:
                imap.logout()


def test_last_line_without_line_end(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_bytes(b"amy:{PLAIN}a\r\nbea:{PLAIN}b")
    assert [e.user for e in read_users(path)[0]] == ["amy", "bea"]
    write_users(path, [*read_users(path)[0], UserEntry("cy", "{PLAIN}c")])
    assert path.read_bytes() == b"amy:{PLAIN}a\r\nbea:{PLAIN}b\ncy:{PLAIN}c\n"


SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_characters=":\r\n\x00", blacklist_categories=("Cs",)),
    max_size=20,
)
ENTRIES = st.lists(
    st.builds(
        UserEntry,
        user=st.from_regex(r"[A-Za-z0-9_@+-][A-Za-z0-9_@+.#-]{0,15}", fullmatch=True),
        password=SAFE_TEXT,
        uid=st.from_regex(r"[0-9]{0,5}", fullmatch=True),
        gid=st.from_regex(r"([0-9]{1,5}|[a-z_][a-z0-9_-]{0,7})?", fullmatch=True),
        gecos=SAFE_TEXT,
        home=SAFE_TEXT,
        shell=SAFE_TEXT,
        extra=st.lists(
            st.from_regex(r"[a-z_]{1,8}(=[^\s\x00]{0,10})?", fullmatch=True), max_size=3
        ).map(tuple),
    ),
    max_size=6,
    unique_by=lambda e: e.user,
)


def _with_alice(entries: list[UserEntry]) -> list[UserEntry]:
    # Half the time, also edit a user the old file already has.
    if len(entries) % 2 and all(e.user != "alice" for e in entries):
        return [*entries, UserEntry("alice", "{PLAIN}x")]
    return entries


@settings(max_examples=200, deadline=None)
@given(
    entries=ENTRIES.map(_with_alice),
    old=st.sampled_from([b"", DOVECOT_USERS.read_bytes()]),
)
def test_written_entries_read_back_unchanged(entries: list[UserEntry], old: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "users"
        path.write_bytes(old)
        write_users(path, entries)
        read, _ = read_users(path)
        if old == b"":
            assert read == entries
        else:
            # Users already in the file keep their place; new ones come last.
            assert sorted(read, key=lambda e: e.user) == sorted(entries, key=lambda e: e.user)
