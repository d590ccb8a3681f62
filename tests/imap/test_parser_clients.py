"""Real client libraries' command bytes through the framer and parser.

``imaplib`` (stdlib) and ``imapclient`` talk to a tiny in-memory responder built
from our own framer, parser and encoder: it answers continuation requests,
switches to raw lines for AUTHENTICATE and IDLE, and says ``OK`` to every
command it could parse.  The tests then check which command objects the
client's real bytes became — no socket, no session, no store.
"""

from __future__ import annotations

import datetime
import imaplib
from typing import Any

import imapclient
import pytest

from mailaccess.imap import commands as c
from mailaccess.imap.fetch import FetchBody, FetchItem, Section
from mailaccess.imap.framing import CommandFramer, LiteralRequest, RawCommand, RawLine
from mailaccess.imap.lexer import ParseError
from mailaccess.imap.parser import decode_sasl_response, is_idle_done, parse_command
from mailaccess.imap.response import continuation, error_response, tagged, untagged_status
from mailaccess.imap.search import And, Date, Flag, Header, Not
from mailaccess.imap.sequence import SequenceSet

CAPABILITIES = (
    "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE MOVE UIDPLUS NAMESPACE UNSELECT AUTH=PLAIN"
)


class Responder:
    """Frames and parses what a client sends; answers just enough to keep it going."""

    def __init__(self) -> None:
        self.framer = CommandFramer()
        self.out = bytearray(untagged_status("OK", f"[CAPABILITY {CAPABILITIES}] ready"))
        self.commands: list[c.Command] = []
        self.errors: list[ParseError] = []
        self.raw: list[bytes] = []
        self._waiting: c.Command | None = None  # AUTHENTICATE or IDLE in progress

    def receive(self, data: bytes) -> None:
        self.framer.feed(data)
        while (event := self.framer.next_event()) is not None:
            if isinstance(event, LiteralRequest):
                self.framer.accept_literal()
                self.out += continuation()
            elif isinstance(event, ParseError):
                self.errors.append(event)
                self.out += error_response(event)
            elif isinstance(event, RawLine):
                self._raw_line(event.line)
            else:
                assert isinstance(event, RawCommand)
                self._command(event)

    def _command(self, raw: RawCommand) -> None:
        try:
            command = parse_command(raw)
        except ParseError as e:
            self.errors.append(e)
            self.out += error_response(e)
            return
        self.commands.append(command)
        if isinstance(command, c.Capability):
            self.out += b"* CAPABILITY " + CAPABILITIES.encode() + b"\r\n"
        if isinstance(command, c.Authenticate) and command.initial_response is None:
            self._waiting = command
            self.framer.raw_lines = True
            self.out += continuation(b"", base64_data=True)
            return
        if isinstance(command, c.Idle):
            self._waiting = command
            self.framer.raw_lines = True
            self.out += continuation("idling")
            return
        if isinstance(command, c.Select | c.Examine):
            self.out += b"* 0 EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen)\r\n"
        if isinstance(command, c.Logout):
            self.out += untagged_status("BYE", "logging out")
        self.out += tagged(command.tag, "OK", f"{command.name} completed")

    def _raw_line(self, line: bytes) -> None:
        waiting = self._waiting
        assert waiting is not None, f"raw line {line!r} outside AUTHENTICATE/IDLE"
        if isinstance(waiting, c.Idle):
            assert is_idle_done(line)
        else:
            self.raw.append(decode_sasl_response(line, waiting.tag))
        self.framer.raw_lines = False
        self._waiting = None
        self.out += tagged(waiting.tag, "OK", f"{waiting.name} completed")

    # --- the file-like side imaplib reads from -------------------------------

    def readline(self) -> bytes:
        end = self.out.find(b"\n")
        assert end >= 0, f"client waits for a line; commands so far: {self.commands}"
        line = bytes(self.out[: end + 1])
        del self.out[: end + 1]
        return line

    def read(self, size: int) -> bytes:
        data = bytes(self.out[:size])
        del self.out[:size]
        return data


class _NoSocket:
    def settimeout(self, timeout: float | None) -> None:
        pass

    def gettimeout(self) -> float | None:
        return None

    def setblocking(self, flag: bool) -> None:
        pass


class FakeIMAP4(imaplib.IMAP4):
    """imaplib over a Responder instead of a socket."""

    def __init__(self) -> None:
        self.responder = Responder()
        super().__init__("responder")

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        self.host, self.port = host, port
        self.sock = _NoSocket()  # type: ignore[assignment]  # imapclient only sets timeouts

    def send(self, data: Any) -> None:
        self.responder.receive(bytes(data))

    def readline(self) -> bytes:
        return self.responder.readline()

    def read(self, size: int) -> bytes:
        return self.responder.read(size)

    def shutdown(self) -> None:
        pass


def commands_of(imap: FakeIMAP4) -> list[c.Command]:
    assert imap.responder.errors == []
    return imap.responder.commands


def without_tags(commands: list[c.Command]) -> list[Any]:
    """The commands with tags blanked, since the client picks them."""
    import attrs

    return [attrs.evolve(cmd, tag="") for cmd in commands]


def test_imaplib_session_rfc3501_6() -> None:
    imap = FakeIMAP4()
    imap.login("alice", 'pa ss"word\\')
    imap.select("INBOX")
    imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])")
    imap.store("1:3", "+FLAGS", "(\\Deleted)")
    imap.copy("2", "Archive")
    imap.search(None, "UNSEEN", "SUBJECT", '"hello world"')
    imap.status("INBOX", "(MESSAGES UIDNEXT)")
    imap.list('""', "*")
    imap.expunge()
    imap.logout()
    got = without_tags(commands_of(imap))
    assert got[0] == c.Capability("")
    assert got[1:] == [
        c.Login("", b"alice", b'pa ss"word\\'),
        c.Select("", "INBOX"),
        c.Fetch(
            "",
            True,
            SequenceSet.parse("1:*"),
            (
                FetchItem("FLAGS"),
                FetchBody(Section((), "HEADER.FIELDS", ("FROM", "SUBJECT")), peek=True),
            ),
        ),
        c.Store("", False, SequenceSet.parse("1:3"), "add", False, ("\\Deleted",)),
        c.Copy("", False, SequenceSet.parse("2"), "Archive"),
        c.Search("", False, And((Not(Flag("\\Seen")), Header("SUBJECT", "hello world")))),
        c.Status("", "INBOX", ("MESSAGES", "UIDNEXT")),
        c.List("", "", ("*",)),
        c.Expunge(""),
        c.Logout(""),
    ]


def test_imaplib_append_with_synchronizing_literal_rfc3501_6_3_11() -> None:
    imap = FakeIMAP4()
    imap.login("alice", "secret")
    message = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    when = datetime.datetime(2024, 3, 5, 7, 8, 9, tzinfo=datetime.UTC)
    imap.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(when), message)
    (append,) = [cmd for cmd in commands_of(imap) if isinstance(cmd, c.Append)]
    assert append.mailbox == "INBOX"
    (msg,) = append.messages
    assert msg.message == message
    assert msg.flags == ("\\Seen",)
    assert msg.internal_date == when


def test_imaplib_authenticate_plain_continuation_rfc3501_6_2_2() -> None:
    imap = FakeIMAP4()
    imap.authenticate("PLAIN", lambda challenge: b"\0alice\0secret")
    (auth,) = [cmd for cmd in commands_of(imap) if isinstance(cmd, c.Authenticate)]
    assert auth.mechanism == "PLAIN"
    # imaplib sends the response on a continuation line or as SASL-IR, by version.
    sent = auth.initial_response if auth.initial_response is not None else imap.responder.raw[0]
    assert sent == b"\0alice\0secret"


class FakeIMAPClient(imapclient.IMAPClient):
    """imapclient over the same Responder."""

    def _create_IMAP4(self) -> imaplib.IMAP4:
        return FakeIMAP4()


@pytest.fixture
def client() -> FakeIMAPClient:
    return FakeIMAPClient("responder", ssl=False)


def responder_of(client: FakeIMAPClient) -> Responder:
    imap = client._imap
    assert isinstance(imap, FakeIMAP4)
    return imap.responder


def test_imapclient_commands(client: FakeIMAPClient) -> None:
    client.login("alice", "secret")
    client.select_folder("Sent Items", readonly=True)
    client.fetch([1, 2, 5], ["FLAGS", "RFC822.SIZE", "BODY.PEEK[1.MIME]<0.512>"])
    client.search(["FROM", "bob", "SINCE", datetime.date(2024, 2, 1)])
    client.add_flags([3], ["$Forwarded", "\\Flagged"], silent=True)
    client.move([4, 6], "Trash")
    client.delete_messages([7])
    client.expunge([7])
    client.unselect_folder()
    client.create_folder("Projects/2024")
    client.rename_folder("Projects/2024", "Old")
    client.subscribe_folder("Old")
    client.logout()
    responder = responder_of(client)
    assert responder.errors == []
    by_type = {type(cmd): cmd for cmd in responder.commands}
    examine = by_type[c.Examine]
    assert isinstance(examine, c.Examine)
    assert examine.mailbox == "Sent Items"
    fetch = by_type[c.Fetch]
    assert isinstance(fetch, c.Fetch)
    assert fetch.uid
    assert list(fetch.sequence_set.iter_numbers(10)) == [1, 2, 5]
    assert fetch.attributes[2] == FetchBody(Section((1,), "MIME"), peek=True, partial=(0, 512))
    search = by_type[c.Search]
    assert isinstance(search, c.Search)
    assert search.program == And((Header("FROM", "bob"), Date("SINCE", datetime.date(2024, 2, 1))))
    flags, deleted = [cmd for cmd in responder.commands if isinstance(cmd, c.Store)]
    assert (flags.uid, flags.mode, flags.silent) == (True, "add", True)
    assert flags.flags == ("$Forwarded", "\\Flagged")
    assert (deleted.mode, deleted.flags) == ("add", ("\\Deleted",))
    move = by_type[c.Move]
    assert isinstance(move, c.Move)
    assert move.mailbox == "Trash"
    assert list(move.sequence_set.iter_numbers(10)) == [4, 6]
    expunge = by_type[c.Expunge]
    assert isinstance(expunge, c.Expunge)
    assert expunge.uid
    assert by_type[c.Create] == c.Create(by_type[c.Create].tag, "Projects/2024")
    assert isinstance(by_type[c.Unselect], c.Unselect)


def test_imapclient_idle_and_done_rfc2177_3(client: FakeIMAPClient) -> None:
    client.login("alice", "secret")
    client.select_folder("INBOX")
    client.idle()
    client.idle_done()
    client.noop()
    responder = responder_of(client)
    assert responder.errors == []
    kinds = [type(cmd) for cmd in responder.commands]
    assert kinds[-2:] == [c.Idle, c.Noop]


def test_imapclient_non_ascii_folder_and_append(client: FakeIMAPClient) -> None:
    client.login("alice", "secret")
    client.create_folder("Entwürfe")
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    client.append("Entwürfe", b"Subject: x\r\n\r\ny\r\n", flags=["\\Draft"], msg_time=when)
    client.id_({"name": "imapclient", "version": imapclient.__version__})
    client.enable("CONDSTORE")
    responder = responder_of(client)
    assert responder.errors == []
    by_type = {type(cmd): cmd for cmd in responder.commands}
    # imapclient encodes names in modified UTF-7 (RFC 3501 §5.1.3); we keep them so.
    assert by_type[c.Create] == c.Create(by_type[c.Create].tag, "Entw&APw-rfe")
    append = by_type[c.Append]
    assert isinstance(append, c.Append)
    assert append.mailbox == "Entw&APw-rfe"
    assert append.messages[0].internal_date == when
    ident = by_type[c.Id]
    assert isinstance(ident, c.Id)
    assert ident.parameters is not None
    assert ("name", "imapclient") in ident.parameters
    assert by_type[c.Enable] == c.Enable(by_type[c.Enable].tag, ("CONDSTORE",))
