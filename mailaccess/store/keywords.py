"""``dovecot-keywords``: which Maildir flag letter (``a`` to ``z``) is which keyword.

Each line is ``<index> <keyword>``; index 0 is letter ``a``, 25 is ``z``.
Maildir file names can carry at most these 26 keywords per folder.  The file
is replaced atomically under its own dotlock (``dovecot-keywords.lock``), as
Dovecot does.
"""

from __future__ import annotations

import string
from pathlib import Path

from mailaccess.store.dotlock import DotLock
from mailaccess.store.maildir import atomic_write
from mailaccess.store.model import StoreError
from mailaccess.store.uidlist import FileStamp

FILENAME = "dovecot-keywords"
LETTERS = string.ascii_lowercase
MAX_KEYWORDS = len(LETTERS)


class TooManyKeywords(StoreError):
    """A 27th keyword: Maildir file names have only 26 keyword letters."""


def parse(text: str) -> dict[str, str]:
    """Letter → keyword from the file's text; malformed lines are skipped."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        index, _, name = line.partition(" ")
        if index.isdigit() and int(index) < MAX_KEYWORDS and name:
            result[LETTERS[int(index)]] = name
    return result


def format_keywords(by_letter: dict[str, str]) -> str:
    """The file's text for a letter → keyword map."""
    return "".join(
        f"{LETTERS.index(letter)} {name}\n" for letter, name in sorted(by_letter.items())
    )


class Keywords:
    """The keyword letters of one Maildir folder, kept in step with the file."""

    def __init__(self, maildir: Path) -> None:
        self.path = maildir / FILENAME
        self.by_letter: dict[str, str] = {}
        self.by_name: dict[str, str] = {}
        # What the file looked like when last read: another program (Dovecot,
        # a second server process) may add letters without touching cur/.
        self.stamp: FileStamp | None = None

    def load(self) -> None:
        """(Re)read the file; a missing file means no keywords yet."""
        stamp = FileStamp.of(self.path)
        try:
            text = self.path.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        self._set(parse(text))
        self.stamp = stamp

    def changed_on_disk(self) -> bool:
        """True if the file differs from what ``load`` last read."""
        return FileStamp.of(self.path) != self.stamp

    def _set(self, by_letter: dict[str, str]) -> None:
        self.by_letter = by_letter
        self.by_name = {name: letter for letter, name in by_letter.items()}

    def ensure(self, names: set[str]) -> None:
        """Give every keyword in *names* a letter, writing the file if needed.

        Blocking (dotlock and fsync).  Raises TooManyKeywords when the 26
        letters are used up, leaving the file unchanged.
        """
        if names <= self.by_name.keys():
            return
        with DotLock(self.path).held():
            self.load()  # another process may have added letters meanwhile
            missing = sorted(names - self.by_name.keys())
            if not missing:
                return
            free = [letter for letter in LETTERS if letter not in self.by_letter]
            if len(missing) > len(free):
                raise TooManyKeywords("this mailbox cannot hold more than 26 different keywords")
            updated = dict(self.by_letter)
            updated.update(zip(free, missing, strict=False))
            atomic_write(self.path, format_keywords(updated).encode("utf-8"))
            self._set(updated)
