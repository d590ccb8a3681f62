"""Differential check against a real Dovecot: do we call BAD what it calls BAD?

Each command line goes to a private Dovecot (logged in, INBOX selected, one
message in it) and through our framer and parser.  A ``BAD`` from Dovecot must
match a ParseError from us, and anything else must parse — except where we
are deliberately stricter than Dovecot because the RFC grammar says so; those
lines are listed with the rule, and the test checks they really differ, so
the list cannot go stale.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailaccess.imap.lexer import ParseError
from mailaccess.imap.parser import parse_command
from tests.imap.test_parser import frame
from tests.support.dovecot import Dovecot, require_dovecot

AGREED = [
    b"a NOOP",
    b"a noop",
    b"a  NOOP",
    b"a1 LOGIN",
    b"+a NOOP",
    b"a+b NOOP",
    b"a SELECT inbox",
    b'a SELECT "INBOX" (CONDSTORE)',
    b"a SELECT INBOX (FOO)",
    b"a EXAMINE INBOX",
    b"a STATUS INBOX (MESSAGES UIDNEXT)",
    b"a STATUS INBOX (FOO)",
    b"a STATUS INBOX ()",
    b"a STATUS INBOX MESSAGES",
    b'a LIST "" *',
    b'a LIST "" ""',
    b'a LIST ""',
    b'a LIST (SUBSCRIBED) "" *',
    b'a LIST () "" "*"',
    b'a LIST "" % RETURN (CHILDREN)',
    b'a LIST "" "*" RETURN ()',
    b'a LIST "" * EXTRA',
    b'a LSUB "" *',
    b'a CREATE "a(b"',
    b"a CREATE foo (USE (\\Sent))",
    b"a RENAME x",
    b"a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)",
    b"a UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (From x-Foo)])",
    b"a UID FETCH 1:* BODY[HEADER.FIELDS (a:b)]",
    b"a UID FETCH 1:* FAST",
    b"a UID FETCH 1:* (FAST)",
    b"a UID FETCH 1:* (FLAGS FAST)",
    b"a UID FETCH 1:* BODY[]",
    b"a UID FETCH 1:* BODY[MIME]",
    b"a UID FETCH 1:* BODY[1.MIME]",
    b"a UID FETCH 1:* BODY[1.]",
    b"a UID FETCH 1:* BODY[FOO]",
    b"a UID FETCH 1:* BODY[HEADER.FIELDS]",
    b"a UID FETCH 1:* BODY[HEADER.FIELDS ()]",
    b"a UID FETCH 1:* BODY[]<>",
    b"a UID FETCH 1:* BODY.PEEK",
    b"a UID FETCH 1:* RFC822[]",
    b"a UID FETCH 1:* FOO",
    b"a UID FETCH 1:* ()",
    b"a UID FETCH 1:* (FLAGS)(UID)",
    b"a UID FETCH 0 FLAGS",
    b"a UID FETCH 4:2 FLAGS",
    b"a UID FETCH $ FLAGS",
    b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
    b"a UID FETCH 1:* (FLAGS MODSEQ)",
    b"a UID FETCH 1:* BINARY[1]",
    b"a FETCH 1 BODY[TEXT]<0.10>",
    b"a FETCH * FLAGS",
    b"a UID SEARCH ALL",
    b"a UID SEARCH NEW OLD",
    b"a UID SEARCH SINCE 1-Feb-1994",
    b'a UID SEARCH SINCE "01-feb-1994"',
    b"a UID SEARCH SINCE 1-Feb-94",
    b"a UID SEARCH SINCE 001-Feb-1994",
    b"a UID SEARCH OR (SEEN FLAGGED) NOT (DELETED)",
    b"a UID SEARCH ()",
    b"a UID SEARCH (SEEN",
    b"a UID SEARCH FOO",
    b"a UID SEARCH CHARSET UTF-8 SUBJECT x",
    b"a UID SEARCH CHARSET KOI8-R SUBJECT x",
    b'a UID SEARCH HEADER "bad:name" x',
    b'a UID SEARCH HEADER Subject ""',
    b"a UID SEARCH LARGER -1",
    b"a UID SEARCH UID 1:*",
    b"a UID SEARCH 1:*",
    b"a UID SEARCH RETURN (MIN) ALL",
    b"a UID SEARCH MODSEQ 5",
    b"a UID SEARCH",
    b"a UID SEARCH NOT",
    b"a UID SEARCH OR SEEN",
    b"a SEARCH CHARSET",
    b"a SEARCH $",
    b"a UID STORE 1 +FLAGS (\\Seen)",
    b"a UID STORE 1 +FLAGS \\Seen \\Flagged",
    b"a UID STORE 1 FLAGS ()",
    b"a UID STORE 1 +FLAGS (\\Recent)",
    b"a UID STORE 1 +FLAGS (\\*)",
    b"a UID STORE 1 +LABELS (x)",
    b"a UID STORE 1 +FLAGS (\\Seen",
    b"a UID STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)",
    b"a STORE 1 FLAGS.SILENT (\\Seen)",
    b"a STORE 1 -FLAGS.silent (\\Seen)",
    b"a UID COPY 1 INBOX",
    b"a UID MOVE 1 INBOX",
    b"a UID EXPUNGE 1",
    b"a UID EXPUNGE",
    b"a ID NIL",
    b"a ID ()",
    b'a ID ("name" "x")',
    b"a ENABLE CONDSTORE",
    b'a APPEND INBOX "message"',
    b"a APPEND INBOX",
    b"a1 LOGIN a b c",
    b"a AUTHENTICATE PLAIN abc",
    b"a UNSELECT",
    b"a NAMESPACE",
    b"a CHECK",
    b"a UID SORT (REVERSE DATE subject) UTF-8 ALL",
    b"a SORT (FOO) UTF-8 ALL",
    b"a SORT (DATE) ALL",
    b"a SORT () UTF-8 ALL",
    b"a THREAD REFERENCES UTF-8 ALL",
    b"a THREAD REFERENCES",
]

#: Lines Dovecot accepts but RFC grammar does not; we answer BAD, naming the rule.
STRICTER = {
    b"a NOOP x": "RFC 3501 §6.1.2: NOOP takes no arguments",
    b"a CLOSE x": "RFC 3501 §6.4.2: CLOSE takes no arguments",
    b"a EXPUNGE 1": "RFC 3501 §6.4.3: EXPUNGE takes no arguments (UID EXPUNGE does)",
    b"a UID FETCH 1:* BODY[0]": "RFC 3501 §9: section-part is nz-number",
    b"a UID FETCH 1:* BODY[]<1>": 'RFC 3501 §9: partial is "<" number "." nz-number ">"',
    b"a UID FETCH 1:* BODY[]<1.0>": "RFC 3501 §9: the partial length is nz-number",
    b"a UID FETCH 1:* (FLAGS  UID)": "RFC 3501 §9: exactly one SP between FETCH items",
    b"a UID FETCH 1, FLAGS": "RFC 3501 §9: sequence-set has no empty element",
    b"a UID FETCH 1:* BINARY[HEADER]": "RFC 3516 §4.2: section-binary is a part number",
    b"a UID SEARCH SINCE 31-Feb-1994": "no such date; refused with the date in the reason",
    b"a UID SEARCH KEYWORD \\Seen": "RFC 3501 §9: flag-keyword is an atom, not \\flag",
    b"a UID STORE 1 +FLAGS": "RFC 3501 §9: store-att-flags needs a flag list",
    b"a ID foo": 'RFC 2971 §4: id-params-list is "(" ... ")" or NIL',
    b"a ENABLE": "RFC 5161 §4: ENABLE 1*(SP capability)",
}

#: Lines Dovecot refuses for session state, not syntax: the session must do it.
SESSION_CHECKS = {
    b"a UID FETCH 1:* (UID) (VANISHED)": "VANISHED needs ENABLE QRESYNC (RFC 7162 §3.2.6)",
    b"a SELECT INBOX (QRESYNC (1 2))": "QRESYNC needs ENABLE QRESYNC (RFC 7162 §3.2.5)",
}


def we_refuse(line: bytes) -> bool:
    try:
        parse_command(frame(line + b"\r\n"))
    except ParseError:
        return True
    return False


def _exchange(sock: socket.socket, reader: io.BufferedReader, line: bytes, tag: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    while True:
        answer = reader.readline()
        if not answer or answer.startswith((tag + b" ", b"* BAD", b"+ ")):
            return answer


@pytest.fixture(scope="module")
def dovecot_says(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bytes, bytes]]:
    require_dovecot()
    lines = [*AGREED, *STRICTER, *SESSION_CHECKS]
    answers: dict[bytes, bytes] = {}
    workdir: Path = tmp_path_factory.mktemp("dovecot")
    with Dovecot(workdir, users={"alice": "secret"}) as dovecot:
        for line in lines:
            with socket.create_connection(("127.0.0.1", dovecot.ports["imap"]), 10) as sock:
                reader = sock.makefile("rb")
                reader.readline()
                _exchange(sock, reader, b"x1 LOGIN alice secret", b"x1")
                _exchange(sock, reader, b"x2 APPEND INBOX {5}", b"x2")
                _exchange(sock, reader, b"hello", b"x2")
                _exchange(sock, reader, b"x3 SELECT INBOX", b"x3")
                tag = line.split(b" ", 1)[0]
                answers[line] = _exchange(sock, reader, line, tag)
        yield answers


def _is_bad(answer: bytes) -> bool:
    return b" BAD " in answer[:40] or answer.startswith(b"* BAD")


@pytest.mark.parametrize("line", AGREED)
def test_bad_exactly_when_dovecot_says_bad(line: bytes, dovecot_says: dict[bytes, bytes]) -> None:
    answer = dovecot_says[line]
    assert answer, "Dovecot closed the connection"
    assert we_refuse(line) == _is_bad(answer), answer


@pytest.mark.parametrize("line", list(STRICTER))
def test_stricter_than_dovecot_by_rfc(line: bytes, dovecot_says: dict[bytes, bytes]) -> None:
    assert we_refuse(line), STRICTER[line]
    assert not _is_bad(dovecot_says[line]), "Dovecot refuses it now: move it to AGREED"


@pytest.mark.parametrize("line", list(SESSION_CHECKS))
def test_state_checks_left_to_the_session(line: bytes, dovecot_says: dict[bytes, bytes]) -> None:
    assert not we_refuse(line)
    assert _is_bad(dovecot_says[line]), SESSION_CHECKS[line]
