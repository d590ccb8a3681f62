"""``mailaccess demo``: POP3 and IMAP on one mailbox, side by side in a terminal.

The demo is a client of a running server (by default the one ``make run``
starts, whose config is ``var/mailaccess.toml``).  It adds a throw-away user
``demo-pop-imap-<random>`` to the users file (the server re-reads the file
when it changes), delivers a few messages to it over LMTP, and plays a
scripted story: a POP3 client and an IMAP client work on that one mailbox
while both wire transcripts are printed in two columns, each step with one
line saying what POP3 can and cannot see and what IMAP sees at once
(DESIGN.md, cross-protocol contract).  At the end its mail is expunged over
IMAP and the user is removed from the users file (its empty Maildir stays:
the running server owns it); no other mailbox is touched and no password is
printed.

This is a command-line client, not server code: plain blocking sockets with
timeouts are the right tool here (there is no reactor to block).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import smtplib
import socket
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mailaccess.config import Config, load_config

#: The config ``make run`` writes and starts (README.md).
MAKE_RUN_CONFIG = Path("var/mailaccess.toml")
USER_PREFIX = "demo-pop-imap-"
#: How long to wait for a server's answer, and for a push into IDLE.
ANSWER_TIMEOUT = 15.0
PUSH_TIMEOUT = 3.0
MASK = "********"

# ANSI colours (only when writing to a terminal and --plain is not given).
_COLOURS = {
    "client": "\033[1;36m",  # what a client sends: bold cyan
    "server": "\033[32m",  # server answers: green
    "error": "\033[1;31m",  # -ERR / NO / BAD: bold red
    "push": "\033[1;35m",  # untagged news pushed into IDLE: bold magenta
    "title": "\033[1;33m",  # step explanations: bold yellow
    "note": "\033[2m",  # remarks in brackets: dim
}
_RESET = "\033[0m"


class DemoError(Exception):
    """Something the person running the demo must fix (one line, no traceback)."""


# --- where the server is -----------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A place to connect to: a TCP host and port, or a UNIX socket path."""

    host: str
    port: int = 0

    @property
    def is_unix(self) -> bool:
        return self.port == 0


def _split_endpoint(description: str) -> list[str]:
    # Twisted endpoint strings separate fields with ':' and escape it as '\:'.
    parts, current, escaped = [], "", False
    for char in description:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def client_endpoint(description: str) -> Endpoint | None:
    """Where a client reaches a server listening on *description* (None if unusable)."""
    kind, *fields = _split_endpoint(description)
    positional = [f for f in fields if "=" not in f]
    named = dict(f.split("=", 1) for f in fields if "=" in f)
    if kind == "tcp" or kind == "tcp6":
        port_text = named.get("port") or (positional[0] if positional else "")
        if not port_text.isdigit():
            return None
        interface = named.get("interface", "")
        # A wildcard listener is reachable on loopback.
        if interface in ("", "0.0.0.0", "::"):
            interface = "127.0.0.1" if kind == "tcp" else "::1"
        return Endpoint(interface, int(port_text))
    if kind == "unix":
        path = named.get("address") or (positional[0] if positional else "")
        return Endpoint(path) if path else None
    return None


def _first_endpoint(descriptions: Sequence[str]) -> Endpoint | None:
    for description in descriptions:
        endpoint = client_endpoint(description)
        if endpoint is not None:
            return endpoint
    return None


def default_config_file(given: str | None) -> Path:
    """*given*, else $MAILACCESS_CONFIG, else ``make run``'s var/mailaccess.toml."""
    if given:
        return Path(given)
    env = os.environ.get("MAILACCESS_CONFIG", "")
    return Path(env) if env else MAKE_RUN_CONFIG


# --- the throw-away user ---------------------------------------------------------------


@dataclass
class DemoUser:
    """A user that exists only for one run of the demo."""

    name: str
    password: str
    maildir: Path


@contextmanager
def throwaway_user(config: Config) -> Iterator[DemoUser]:
    """Add ``demo-pop-imap-<random>`` to the users file for the demo; remove it afterwards."""
    from mailaccess.auth import passwd, schemes

    users_file = config.server.users_file
    name = USER_PREFIX + secrets.token_hex(4)
    password = secrets.token_urlsafe(18)
    maildir = config.server.mail_root / name

    def current_entries() -> list[passwd.UserEntry]:
        if not users_file.exists():
            raise DemoError(f"{users_file}: the users file does not exist (run `mailaccess init`)")
        entries, problems = passwd.read_users(users_file)
        if problems:
            # Rewriting the file would drop the lines we cannot read.
            raise DemoError(f"{users_file} has malformed lines; fix them first: {problems[0]}")
        return list(entries)

    entries = current_entries()
    if maildir.exists() or any(e.user == name for e in entries):
        raise DemoError(f"{name} exists already; run the demo again")
    # A quick scheme: the user lives for a minute and the password is random.
    hashed = schemes.hash_password(password, "SHA512-CRYPT")
    passwd.write_users(users_file, [*entries, passwd.UserEntry(user=name, password=hashed)])
    try:
        yield DemoUser(name, password, maildir)
    finally:
        # Read again: an admin may have changed the file meanwhile.
        kept = [e for e in current_entries() if e.user != name]
        passwd.write_users(users_file, kept)
        # The Maildir stays (emptied over IMAP by Demo.empty_mailbox): removing
        # a directory the running server watches upsets its store, and the
        # server, not this command, owns the files under the mail root.


# --- wire clients ------------------------------------------------------------------------


@dataclass
class Entry:
    """One transcript line: which client, who spoke, and what."""

    side: str  # "pop3", "imap", or "both" (full width)
    kind: str  # client, server, error, push, note
    text: str


@dataclass
class Transcript:
    """The lines of the current step, in the order they happened."""

    entries: list[Entry] = field(default_factory=list)

    def add(self, side: str, kind: str, text: str) -> None:
        self.entries.append(Entry(side, kind, text))


class LineClient:
    """A blocking CRLF line client that records what it sends and receives."""

    side = ""

    def __init__(self, endpoint: Endpoint, transcript: Transcript) -> None:
        self.transcript = transcript
        try:
            self.sock = socket.create_connection(
                (endpoint.host, endpoint.port), timeout=ANSWER_TIMEOUT
            )
        except OSError as e:
            raise DemoError(
                f"cannot connect to {self.side.upper()} at {endpoint.host}:{endpoint.port} "
                f"({e.strerror or e}); is the server running (`make run`)?"
            ) from None
        self.buffer = b""

    def send(self, line: str, shown: str | None = None) -> None:
        self.transcript.add(self.side, "client", "C: " + (shown or line))
        self.sock.sendall(line.encode("utf-8") + b"\r\n")

    def read_line(self, timeout: float = ANSWER_TIMEOUT) -> str | None:
        """The next line without CRLF, or None if none came within *timeout*."""
        while b"\n" not in self.buffer:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise DemoError(f"the {self.side.upper()} server closed the connection")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.removesuffix(b"\r").decode("utf-8", errors="replace")

    def answer(self, kind: str = "server", timeout: float = ANSWER_TIMEOUT) -> str:
        line = self.read_line(timeout)
        if line is None:
            raise DemoError(f"the {self.side.upper()} server did not answer in {timeout:g} s")
        failed = line.startswith("-ERR") or re.match(r"^\S+ (NO|BAD) ", line)
        self.transcript.add(self.side, "error" if failed else kind, "S: " + line)
        return line

    def close(self) -> None:
        self.sock.close()


class POP3Client(LineClient):
    """Just enough RFC 1939 for the story."""

    side = "pop3"

    def __init__(self, endpoint: Endpoint, transcript: Transcript) -> None:
        super().__init__(endpoint, transcript)
        self.answer()  # greeting

    def command(self, line: str, shown: str | None = None, multiline: bool = False) -> str:
        self.send(line, shown)
        first = self.answer()
        if multiline and first.startswith("+OK"):
            self._read_multiline(body=line.startswith(("RETR", "TOP")))
        return first

    def _read_multiline(self, body: bool) -> None:
        lines: list[str] = []
        while (line := self.read_line()) is not None and line != ".":
            lines.append(line)
        if body:
            # A message body says little here; its Subject tells which one it is.
            subject = next((s for s in lines if s.lower().startswith("subject:")), "")
            self.transcript.add(self.side, "note", f"   [{len(lines)} lines: {subject}]")
        else:
            for text in lines:
                self.transcript.add(self.side, "server", "S: " + text)
        self.transcript.add(self.side, "server", "S: .")

    def login(self, user: DemoUser) -> None:
        self.command(f"USER {user.name}")
        reply = self.command(f"PASS {user.password}", shown=f"PASS {MASK}")
        if not reply.startswith("+OK"):
            raise DemoError(f"POP3 login as {user.name} failed: {reply}")


class IMAPClient(LineClient):
    """Just enough RFC 3501 (and RFC 2177 IDLE) for the story."""

    side = "imap"

    def __init__(self, endpoint: Endpoint, transcript: Transcript) -> None:
        super().__init__(endpoint, transcript)
        self.answer()  # greeting
        self.counter = 0
        self.idle_tag: str | None = None

    def command(self, text: str, shown: str | None = None) -> str:
        """Send a tagged command and read up to its tagged answer."""
        self.counter += 1
        tag = f"a{self.counter}"
        self.send(f"{tag} {text}", shown=f"{tag} {shown}" if shown else None)
        while True:
            line = self.answer()
            if line.startswith(tag + " "):
                return line

    def login(self, user: DemoUser) -> None:
        reply = self.command(
            f"LOGIN {user.name} {user.password}", shown=f"LOGIN {user.name} {MASK}"
        )
        if " OK " not in reply:
            raise DemoError(f"IMAP login as {user.name} failed: {reply}")

    def idle(self) -> None:
        """RFC 2177: start IDLE; the server may now push untagged news at once."""
        self.counter += 1
        self.idle_tag = f"a{self.counter}"
        self.send(f"{self.idle_tag} IDLE")
        self.answer()  # "+ idling"

    def pushed(self) -> int:
        """Record what the server pushes into IDLE now; returns the number of lines."""
        count = 0
        timeout = PUSH_TIMEOUT
        while (line := self.read_line(timeout)) is not None:
            self.transcript.add(self.side, "push", "S: " + line)
            count += 1
            timeout = 0.3  # the rest of a burst comes right behind
        if count == 0:
            self.transcript.add(self.side, "note", f"   [nothing pushed in {PUSH_TIMEOUT:g} s]")
        return count

    def done(self) -> None:
        """End IDLE (RFC 2177 DONE) and read its tagged answer."""
        tag, self.idle_tag = self.idle_tag, None
        self.send("DONE")
        while True:
            line = self.answer()
            if tag and line.startswith(tag + " "):
                return


def deliver(endpoint: Endpoint, user: DemoUser, subject: str, body: str) -> None:
    """Deliver one message to *user* over LMTP (RFC 2033), as an MTA would."""
    message = (
        f"From: Alice Example <alice@example.org>\r\nTo: {user.name}@localhost\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{secrets.token_hex(8)}@demo.example.org>\r\n"
        f"\r\n{body}\r\n"
    )
    try:
        if endpoint.is_unix:
            lmtp = smtplib.LMTP(endpoint.host, timeout=ANSWER_TIMEOUT)
        else:
            lmtp = smtplib.LMTP(endpoint.host, endpoint.port, timeout=ANSWER_TIMEOUT)
        with lmtp:
            refused = lmtp.sendmail("alice@example.org", [user.name], message)
    except (smtplib.SMTPException, OSError) as e:
        raise DemoError(f"LMTP delivery failed: {e}") from None
    if refused:
        raise DemoError(f"LMTP refused the demo message: {refused}")


# --- two columns ----------------------------------------------------------------------


class Screen:
    """Prints steps: a title line, then POP3 (left) and IMAP (right) in columns."""

    def __init__(self, out: TextIO, colour: bool, width: int) -> None:
        self.out = out
        self.colour = colour
        self.width = max(width, 60)
        self.column = (self.width - 3) // 2

    def paint(self, kind: str, text: str) -> str:
        if not self.colour or kind not in _COLOURS:
            return text
        return f"{_COLOURS[kind]}{text}{_RESET}"

    def wrap(self, text: str) -> list[str]:
        # Continuation lines are indented under the text after "C: "/"S: ".
        return textwrap.wrap(
            text,
            self.column,
            subsequent_indent="     ",
            break_long_words=True,
            break_on_hyphens=False,
        ) or [""]

    def say(self, text: str) -> None:
        """A full-width remark, wrapped to the terminal."""
        lines = textwrap.wrap(text, self.width, subsequent_indent="  ", break_on_hyphens=False)
        for line in lines or [""]:
            self.out.write(line + "\n")
        self.out.flush()

    def header(self) -> None:
        left, right = "POP3 client", "IMAP client"
        self.out.write(f"{left:<{self.column}} | {right}\n")
        self.out.write(f"{'-' * self.column}-+-{'-' * self.column}\n")

    def step(self, number: int, title: str, transcript: Transcript) -> None:
        self.out.write("\n")
        for line in textwrap.wrap(f"Step {number}. {title}", self.width) or [""]:
            self.out.write(self.paint("title", line) + "\n")
        self.header()
        for entry in transcript.entries:
            if entry.side == "both":
                # Something that is neither client's doing, e.g. a delivery.
                for line in textwrap.wrap(entry.text, self.width, break_on_hyphens=False):
                    self.out.write(self.paint(entry.kind, line) + "\n")
                continue
            for piece in self.wrap(entry.text):
                if entry.side == "pop3":
                    self.out.write(self.paint(entry.kind, piece) + "\n")
                else:
                    self.out.write(
                        " " * self.column + " | " + self.paint(entry.kind, piece) + "\n"
                    )
        self.out.flush()


# --- the story ------------------------------------------------------------------------


@dataclass
class Demo:
    """One run of the scripted story against a server."""

    pop3: Endpoint
    imap: Endpoint
    lmtp: Endpoint
    screen: Screen
    pause: Callable[[], None]
    steps_done: int = 0
    #: The current step's lines; both clients write into it.
    t: Transcript = field(default_factory=Transcript)

    def show(self, title: str) -> None:
        """Print the step that just happened, then start a new one."""
        if self.steps_done:
            self.pause()
        self.steps_done += 1
        self.screen.step(self.steps_done, title, self.t)
        self.t.entries.clear()

    def play(self, user: DemoUser) -> None:
        """The story: seven steps, each printed when it has happened."""
        t = self.t
        for subject, body in (
            ("Welcome", "One mailbox, two protocols."),
            ("Lunch on Friday?", "The new place on the corner?"),
            ("Minutes of Monday", "Nothing decided."),
        ):
            deliver(self.lmtp, user, subject, body)
        t.add("both", "note", f"[LMTP delivered 3 messages to {user.name}]")
        imap = IMAPClient(self.imap, t)
        imap.login(user)
        imap.command("SELECT INBOX")
        pop = POP3Client(self.pop3, t)
        pop.login(user)
        pop.command("UIDL", multiline=True)
        self.show(
            "Both log in to the same mailbox. POP3 gets a numbered list fixed for the whole "
            "session; IMAP selects INBOX and will be told of every change.",
        )

        imap.idle()
        pop.command("RETR 1", multiline=True)
        imap.pushed()
        self.show(
            "POP3 downloads message 1. The server marks it \\Seen at once, and the IMAP "
            "client, waiting in IDLE, is told right away.",
        )

        imap.done()
        imap.command("STORE 3 +FLAGS.SILENT (\\Deleted)")
        imap.command("EXPUNGE")
        pop.command("LIST", multiline=True)
        pop.command("RETR 3", multiline=True)
        imap.idle()
        self.show(
            "IMAP expunges message 3. POP3's numbers do not shift: 3 just drops out of LIST, "
            "and RETR 3 says another session removed it.",
        )

        pop.command("DELE 2")
        imap.pushed()
        self.show(
            "POP3 deletes message 2. Nothing is removed yet (that happens at QUIT), but IMAP "
            "sees the \\Deleted flag immediately.",
        )

        deliver(self.lmtp, user, "Just arrived", "Sent while both were connected.")
        t.add("both", "note", "[LMTP delivers a 4th message]")
        imap.pushed()
        pop.command("STAT")
        pop.command("LIST", multiline=True)
        self.show(
            "New mail arrives. IMAP hears EXISTS at once; POP3 cannot see it: its list was "
            "fixed at login (RFC 1939).",
        )

        pop.command("QUIT")
        pop.close()
        imap.pushed()
        self.show(
            "POP3 says QUIT: only now is message 2 expunged, and IMAP hears the EXPUNGE at "
            "once. A connection dropped without QUIT would have deleted nothing.",
        )

        pop = POP3Client(self.pop3, t)
        pop.login(user)
        pop.command("UIDL", multiline=True)
        pop.command("QUIT")
        pop.close()
        imap.done()
        imap.command("LOGOUT")
        imap.close()
        self.show(
            "A new POP3 session sees the new mail. Each UIDL is the same as before, so a "
            '"leave mail on server" client knows what it already has.',
        )


def empty_mailbox(endpoint: Endpoint, user: DemoUser) -> None:
    """Expunge everything the demo left in INBOX, through the server (not shown)."""
    imap = IMAPClient(endpoint, Transcript())
    try:
        imap.login(user)
        imap.command("SELECT INBOX")
        imap.command("STORE 1:* +FLAGS.SILENT (\\Deleted)")
        imap.command("EXPUNGE")
        imap.command("LOGOUT")
    finally:
        imap.close()


def run_demo(
    config_path: Path,
    out: TextIO,
    *,
    host: str | None = None,
    pop3_port: int | None = None,
    imap_port: int | None = None,
    plain: bool = False,
    step: bool = False,
    stdin: TextIO | None = None,
) -> int:
    """Play the demo against the server *config_path* describes; returns the exit status."""
    if not config_path.exists():
        raise DemoError(
            f"{config_path} does not exist: start a server with `make run` first, "
            "or name its config with --config"
        )
    config = load_config(config_path)
    pop3 = _first_endpoint(config.listen.pop3)
    imap = _first_endpoint(config.listen.imap)
    lmtp = _first_endpoint(config.listen.lmtp)
    if pop3_port is not None:
        pop3 = Endpoint(pop3.host if pop3 and not pop3.is_unix else "127.0.0.1", pop3_port)
    if imap_port is not None:
        imap = Endpoint(imap.host if imap and not imap.is_unix else "127.0.0.1", imap_port)
    if host is not None:
        pop3 = Endpoint(host, pop3.port) if pop3 else None
        imap = Endpoint(host, imap.port) if imap else None
    if pop3 is None or pop3.is_unix:
        raise DemoError(f"{config_path}: no plain TCP POP3 listener; give --pop3-port")
    if imap is None or imap.is_unix:
        raise DemoError(f"{config_path}: no plain TCP IMAP listener; give --imap-port")
    if lmtp is None:
        raise DemoError(f"{config_path}: the demo delivers its mail over LMTP; add [listen] lmtp")
    colour = not plain and out.isatty()
    width = shutil.get_terminal_size((100, 24)).columns
    reader = stdin or sys.stdin

    def pause() -> None:
        if step:
            out.write(_COLOURS["note"] + "[Enter: next step]" + _RESET if colour else "[Enter]")
            out.flush()
            reader.readline()

    screen = Screen(out, colour, width)
    demo = Demo(pop3, imap, lmtp, screen, pause)
    with throwaway_user(config) as user:
        screen.say(
            f"mailaccess demo: POP3 {pop3.host}:{pop3.port} and IMAP {imap.host}:{imap.port}, "
            f"throw-away user {user.name} (removed at the end)"
        )
        try:
            demo.play(user)
        except OSError as e:
            raise DemoError(f"connection failed: {e.strerror or e}") from None
        finally:
            try:
                empty_mailbox(imap, user)
            except (OSError, DemoError) as e:
                print(
                    f"mailaccess demo: could not empty {user.name}'s INBOX: {e}", file=sys.stderr
                )
    out.write("\n")
    screen.say(f"done: {demo.steps_done} steps; user {user.name} removed, its mail expunged")
    return 0
