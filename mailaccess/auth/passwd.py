"""Dovecot's passwd-file: ``user:password:uid:gid:gecos:home:shell:extra_fields``.

The rules follow Dovecot 2.3's passwd-file driver, so an existing Dovecot file
works unchanged and survives our edits:

* Fields are separated by ``:``; trailing fields may be left out (a line with
  only ``user:password`` or even only ``user`` is valid).
* ``extra_fields`` is everything after the seventh colon, so its values may hold
  colons (``userdb_mail=maildir:~/Maildir``); it is a space-separated list of
  ``key=value`` items (a bare ``key`` is allowed: Dovecot reads it as ``key=``).
* Empty lines and lines starting with ``#`` are ignored.  CRLF line ends are
  accepted.  When a user is listed twice the first line wins, as in Dovecot.

``read_users`` never raises on a bad line: it reports it with its line number
and skips it.  ``write_users`` rewrites the file atomically and keeps every line
it does not change (comments, blank lines, lines it could not read) byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from mailaccess.auth.schemes import check_stored

NEW_FILE_MODE = 0o600

# A user name becomes a directory name under the mail root (store.account), so
# refuse what could escape it or confuse a shell, a log line or a protocol:
# whitespace, control characters, "/" and a leading dot.  A leading "#" would
# turn the line into a comment.
_USER_NAME = re.compile(r"^[^\s/.:#\x00-\x1f\x7f][^\s/:\x00-\x1f\x7f]*$")
# uid/gid: a number, or a system user/group name that Dovecot would look up.
_ID_FIELD = re.compile(r"^(?:[0-9]+|[A-Za-z_][A-Za-z0-9_.-]*\$?)?$")
_FORBIDDEN_IN_FIELD = re.compile(r"[:\r\n\x00]")


@attrs.frozen
class UserEntry:
    """One user of the passwd-file; fields are kept as the text of the file.

    ``uid`` and ``gid`` stay strings because Dovecot also accepts system user
    and group names there, and an edit must not rewrite what it did not touch.
    ``extra`` holds the ``key=value`` items of extra_fields in file order.
    """

    user: str
    password: str = ""
    uid: str = ""
    gid: str = ""
    gecos: str = ""
    home: str = ""
    shell: str = ""
    extra: tuple[str, ...] = ()

    def extra_fields(self) -> dict[str, str]:
        """The extra fields as a mapping; a bare ``key`` maps to ``""``."""
        fields: dict[str, str] = {}
        for item in self.extra:
            key, _, value = item.partition("=")
            fields.setdefault(key, value)
        return fields

    def to_line(self) -> str:
        """The passwd-file line (no line end), trailing empty fields left out."""
        fields = [
            self.user,
            self.password,
            self.uid,
            self.gid,
            self.gecos,
            self.home,
            self.shell,
            " ".join(self.extra),
        ]
        while len(fields) > 1 and fields[-1] == "":
            fields.pop()
        return ":".join(fields)


class MalformedLine(ValueError):
    """Why one line of a passwd-file cannot be a user entry."""


def parse_line(text: str) -> UserEntry:
    """Parse one non-comment line (no line end) into a UserEntry."""
    if text.startswith(":") or text == "":
        raise MalformedLine("no user name before the first ':'")
    parts = text.split(":", 7)
    user = parts[0]
    if not _USER_NAME.match(user):
        raise MalformedLine(
            f"user name {user!r} is not allowed "
            "(no spaces, control characters, '/', or leading '.' or '#')"
        )
    parts += [""] * (8 - len(parts))
    _, password, uid, gid, gecos, home, shell, extra = parts
    for name, value in (("uid", uid), ("gid", gid)):
        if not _ID_FIELD.match(value):
            raise MalformedLine(f"{name} {value!r} is neither a number nor a name")
    return UserEntry(
        user=user,
        password=password,
        uid=uid,
        gid=gid,
        gecos=gecos,
        home=home,
        shell=shell,
        extra=tuple(extra.split()),
    )


def _split_lines(data: bytes) -> list[tuple[bytes, bytes]]:
    """Each line of the file as (text without LF or CRLF, the line exactly)."""
    parts = data.split(b"\n")
    exact = [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return [(line.rstrip(b"\n").removesuffix(b"\r"), line) for line in exact]


@attrs.frozen
class _Row:
    raw: bytes  # the line as in the file, line end included
    entry: UserEntry | None = None  # None for comments, blanks and bad lines
    duplicate_of: str | None = None  # a later line of this user, ignored


def _classify(data: bytes, label: str) -> tuple[list[_Row], list[str], list[str]]:
    """Each raw line with what it is, the problems and the warnings found.

    A user's second and later lines count as bad lines: Dovecot uses the first.
    """
    rows: list[_Row] = []
    problems: list[str] = []
    warnings: list[str] = []
    first_line: dict[str, int] = {}
    for number, (line, raw) in enumerate(_split_lines(data), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{label}:{number}: not valid UTF-8; line ignored")
            rows.append(_Row(raw))
            continue
        if text.strip() == "" or text.startswith("#"):
            rows.append(_Row(raw))
            continue
        try:
            entry = parse_line(text)
        except MalformedLine as e:
            problems.append(f"{label}:{number}: {e}; line ignored")
            rows.append(_Row(raw))
            continue
        if entry.user in first_line:
            problems.append(
                f"{label}:{number}: user {entry.user!r} already defined on line "
                f"{first_line[entry.user]}; line ignored"
            )
            rows.append(_Row(raw, duplicate_of=entry.user))
            continue
        first_line[entry.user] = number
        why = check_stored(entry.password) if entry.password else "has no password"
        if why is not None:
            # A valid line (Dovecot may use it as a userdb-only entry, or know a
            # scheme we do not): kept, with a warning that this user cannot log in.
            warnings.append(f"{label}:{number}: user {entry.user!r} cannot log in: {why}")
        rows.append(_Row(raw, entry))
    return rows, problems, warnings


def read_users(
    path: str | os.PathLike[str], *, warnings: list[str] | None = None
) -> tuple[list[UserEntry], list[str]]:
    """The users of a passwd-file, and its problems as ``file:line: what`` texts.

    Problems are malformed lines: skipped and reported, never raised (and kept
    byte for byte by ``write_users``).  Valid lines whose user can never log
    in here (a scheme we do not know, no password) are returned as entries;
    pass a *warnings* list to hear about them, in the same form.  A missing or
    unreadable file raises OSError: that is not a line's problem.
    """
    data = Path(path).read_bytes()
    rows, problems, found = _classify(data, os.fspath(path))
    if warnings is not None:
        warnings.extend(found)
    return [row.entry for row in rows if row.entry is not None], problems


def _check_entry(entry: UserEntry) -> None:
    """Raise ValueError if *entry* cannot be written as one passwd-file line."""
    if not _USER_NAME.match(entry.user):
        raise ValueError(f"user name {entry.user!r} is not allowed")
    for name in ("password", "uid", "gid", "gecos", "home", "shell"):
        value = getattr(entry, name)
        if _FORBIDDEN_IN_FIELD.search(value):
            raise ValueError(f"{name} of {entry.user!r} cannot hold ':' or a line break")
    for name, value in (("uid", entry.uid), ("gid", entry.gid)):
        if not _ID_FIELD.match(value):
            raise ValueError(f"{name} of {entry.user!r} is neither a number nor a name")
    for item in entry.extra:
        if item == "" or re.search(r"[\s\x00]", item) or item.startswith("="):
            raise ValueError(f"extra field {item!r} of {entry.user!r} is not key=value")


def render_users(old: bytes, entries: Sequence[UserEntry]) -> bytes:
    """The new file content: *old* with its user lines replaced by *entries*.

    Comments, blank and unreadable lines stay byte for byte; a user whose
    entry did not change keeps its original line; users absent from *entries*
    are removed; new users are appended in the order given.  Ignored repeats
    of a user we change or remove go too: once the first line is gone a
    repeat would come back to life with the old password.
    """
    wanted: dict[str, UserEntry] = {}
    for entry in entries:
        _check_entry(entry)
        if entry.user in wanted:
            raise ValueError(f"user {entry.user!r} is given twice")
        wanted[entry.user] = entry
    rows, _, _ = _classify(old, "users file")
    touched = {
        row.entry.user
        for row in rows
        if row.entry is not None and wanted.get(row.entry.user) != row.entry
    }
    out: list[bytes] = []
    for row in rows:
        if row.duplicate_of is not None:
            if row.duplicate_of not in touched:
                out.append(row.raw)
        elif row.entry is None:
            out.append(row.raw)
        elif row.entry.user in wanted:
            new = wanted.pop(row.entry.user)
            out.append(row.raw if new == row.entry else new.to_line().encode("utf-8") + b"\n")
        # else: the user was deleted, drop the line.
    if out and not out[-1].endswith(b"\n"):
        out[-1] += b"\n"
    out.extend(entry.to_line().encode("utf-8") + b"\n" for entry in wanted.values())
    return b"".join(out)


def write_users(path: str | os.PathLike[str], entries: Iterable[UserEntry]) -> None:
    """Replace the users of the passwd-file at *path* with *entries*, atomically.

    The new content goes to a temporary file in the same directory, is fsynced,
    renamed over *path*, and the directory is fsynced: a crash at any moment
    leaves either the old file or the new one, never a mix.  An existing file
    keeps its permission bits (and owner, when we may set it); a new one is
    created mode 0600.  Raises ValueError for an entry that cannot be written.
    """
    target = Path(path)
    try:
        old = target.read_bytes()
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        old, st = b"", None
    content = render_users(old, list(entries))
    directory = target.parent
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, (st.st_mode & 0o7777) if st is not None else NEW_FILE_MODE)
        if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            # Only root may give the file back to its owner; others keep theirs.
            with contextlib.suppress(PermissionError):
                os.fchown(fd, st.st_uid, st.st_gid)
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp_name)
        raise
    os.close(fd)
    try:
        os.replace(temp_name, target)
    except BaseException:
        os.unlink(temp_name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in *directory* durable."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
