"""FetchPlan against Dovecot 2.3: the same FETCH commands, byte-for-byte the same answers.

Expected answers live in test_fetch_data_dovecot.json, captured from a live
Dovecot 2.3.19.1 (Debian 12) by running this module as a script::

    .venv/bin/python -m tests.imap.test_fetch_data_dovecot

It starts a throwaway Dovecot (tests/support/dovecot.py), fills INBOX with the
MIME samples of tests/fixtures/mime plus one large generated message, with
known flags and INTERNALDATEs, and records each command's untagged FETCH
lines.  The tests rebuild the same records, parse each command with our
parser, and compare :meth:`FetchPlan.response` with what Dovecot said.

Known, documented differences (see mailaccess/imap/bodystructure.py): Dovecot
writes a subject or display name as a literal when the raw header was folded;
our Envelope no longer knows, so such strings are compared in one canonical
form (7-bit literals rewritten as quoted strings) for the ENVELOPE item only.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailaccess.imap.fetch import read_fetch_attributes
from mailaccess.imap.fetch_data import BodyStream, FetchPlan
from mailaccess.imap.lexer import Reader
from mailaccess.store.mime import parse_message
from mailaccess.store.model import MessageRecord


@pytest.fixture(autouse=True)
def _server_in_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # INTERNALDATE is shown, and SEARCH dates compared, in the server's zone
    # (as Dovecot does); the expected answers here were made in UTC.
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


HERE = Path(__file__).parent
MIME = HERE.parent / "fixtures" / "mime"
ANSWERS_FILE = HERE / "test_fetch_data_dovecot.json"

_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
# Flag letters per message, cycling; enough to see every system flag and none.
_FLAG_CYCLE = ["S", "", "FS", "RS", "T", "D", "S", "", "FRS"]


def big_message() -> bytes:
    """A ~300 KB multipart message, so sections stream (more than INLINE_LIMIT)."""
    blob = bytes((i * 7919 + 13) % 251 for i in range(200_000))
    encoded = base64.encodebytes(blob)
    text = b"".join(b"line %05d of the long text part, quite ordinary\n" % i for i in range(2000))
    return (
        b"From: Big Sender <big@example.com>\nTo: you@example.org\n"
        b"Subject: a large message\nDate: Mon, 6 Mar 2023 10:00:00 +0100\n"
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n"
        b"--XX\nContent-Type: text/plain; charset=utf-8\n\n" + text + b"--XX\n"
        b"Content-Type: application/octet-stream; name=blob.bin\n"
        b"Content-Transfer-Encoding: base64\n\n" + encoded + b"--XX--\n"
    )


def samples() -> list[tuple[str, bytes, str, int]]:
    """(name, stored octets, flag letters, INTERNALDATE) of each INBOX message, in UID order."""
    out = []
    names = sorted(p.name for p in MIME.glob("*.eml"))
    for i, name in enumerate(names, 1):
        flags = _FLAG_CYCLE[i % len(_FLAG_CYCLE)]
        out.append((name, (MIME / name).read_bytes(), flags, 1_700_000_000 + i * 200_000 + i * 37))
    out.append(("big", big_message(), "", 1_600_000_000))
    return out


def commands(seq: int, uid: int) -> list[str]:
    """The FETCH commands asked of message ``seq``/``uid`` (all without side effects)."""
    return [
        f"FETCH {seq} (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)",
        f"UID FETCH {uid} (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)",
        f"UID FETCH {uid} (ENVELOPE FLAGS)",
        f"FETCH {seq} (BODYSTRUCTURE)",
        f"FETCH {seq} (BODY)",
        f"FETCH {seq} ALL",
        f"FETCH {seq} FAST",
        f"FETCH {seq} FULL",
        f'FETCH {seq} (BODY.PEEK[HEADER.FIELDS (From subject "X:y")] '
        f"BODY.PEEK[HEADER.FIELDS.NOT (Subject Date)]<10.40> RFC822.SIZE)",
        f"FETCH {seq} (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2]<3.20> "
        f"BODY.PEEK[TEXT]<0.100> BODY.PEEK[HEADER])",
        f"FETCH {seq} (BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[1.1] "
        f"BODY.PEEK[3.1.MIME] BODY.PEEK[2.1]<0.1> BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])",
        f"UID FETCH {uid} (RFC822.HEADER BODY.PEEK[]<0.300> FLAGS)",
        f"FETCH {seq} (BODY.PEEK[]<7.100000> BODY.PEEK[TEXT]<200000.10> UID)",
        f"FETCH {seq} (BODY.PEEK[2] INTERNALDATE BODY.PEEK[1]<100.9000>)",
    ]


# Commands with side effects, asked once each at the end of the capture; each
# sets \Seen on a message (which may have it already).
SEEN_COMMANDS = [
    (2, "FETCH 2 (BODY[1]<0.5>)"),
    (3, "FETCH 3 (RFC822.SIZE RFC822.TEXT UID)"),
    (8, "UID FETCH 8 (RFC822)"),
    (9, "FETCH 9 (BODY[HEADER] FLAGS)"),
    (11, "FETCH 11 (RFC822.HEADER)"),
]


# --- the tests ----------------------------------------------------------------

ANSWERS: dict[str, str] = json.loads(ANSWERS_FILE.read_text()) if ANSWERS_FILE.exists() else {}
SAMPLES = samples()


def record_of(seq: int) -> tuple[MessageRecord, bytes]:
    _, data, letters, when = SAMPLES[seq - 1]
    flags = frozenset(_LETTERS[c] for c in letters)
    vsize = len(data) + data.count(b"\n") - data.count(b"\r\n")
    return MessageRecord(seq, f"sample-{seq}", flags, len(data), vsize, float(when)), data


def answer(command: str, record: MessageRecord, data: bytes, seen: bool = False) -> bytes:
    """What FetchPlan answers to one FETCH command, streams read out."""
    uid_command = command.startswith("UID ")
    arguments = command.split(" ", 3 if uid_command else 2)[-1].encode()
    reader = Reader([arguments])
    items = read_fetch_attributes(reader)
    reader.end()
    plan = FetchPlan(items, uid_command)
    flags = record.flags
    changed = False
    if seen and plan.sets_seen and "\\Seen" not in flags:
        flags, changed = flags | {"\\Seen"}, True
    info = parse_message(data)
    parts = plan.response(record.uid, record, flags, info, lambda: io.BytesIO(data), changed)
    out = b""
    for part in parts:
        if isinstance(part, BodyStream):
            chunks = list(part.chunks(io.BytesIO(data)))
            assert all(len(c) <= 65536 for c in chunks)
            out += b"".join(chunks)
        else:
            out += part
    return out


_LITERAL = re.compile(rb"\{(\d+)\}\r\n")


def canonical_envelope(line: bytes) -> bytes:
    """Rewrite 7-bit literals inside ENVELOPE (...) as quoted (see the module docstring)."""
    start = line.find(b"ENVELOPE (")
    if start < 0:
        return line
    out, pos = line[:start], start
    for m in _LITERAL.finditer(line, start):
        if m.start() < pos:
            continue
        n = int(m.group(1))
        text = line[m.end() : m.end() + n]
        if line[m.start() - 1 : m.start()] in (b" ", b"(") and all(0x20 <= c < 0x7F for c in text):
            out += line[pos : m.start()] + b'"' + text + b'"'
            pos = m.end() + n
        # A section literal (BODY[...]) after ENVELOPE is left alone.
    return out + line[pos:]


# no_separator.eml has no blank line and no final line break: Dovecot's
# HEADER.FIELDS then ends with CRLF (or is CRLF alone when nothing matched)
# while HEADER.FIELDS.NOT ends without one.  Ours comes from the store's
# header_fields(), which ends both forms alike; left for the store to decide.
KNOWN_DIFFERENCES = {
    "24 FETCH 24 (BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[1.1] BODY.PEEK[3.1.MIME] "
    "BODY.PEEK[2.1]<0.1> BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])",
    '24 FETCH 24 (BODY.PEEK[HEADER.FIELDS (From subject "X:y")] '
    "BODY.PEEK[HEADER.FIELDS.NOT (Subject Date)]<10.40> RFC822.SIZE)",
}


def _cases() -> list[object]:
    return [
        pytest.param(k, marks=pytest.mark.xfail(reason="header without separator", strict=True))
        if k in KNOWN_DIFFERENCES
        else k
        for k in sorted(ANSWERS)
        if not k.startswith("seen:")
    ]


@pytest.mark.skipif(not ANSWERS, reason="no captured Dovecot answers")
@pytest.mark.parametrize("key", _cases())
def test_fetch_matches_dovecot_rfc3501_6_4_5_and_7_4_2(key: str) -> None:
    seq_text, command = key.split(" ", 1)
    record, data = record_of(int(seq_text))
    want = ANSWERS[key].encode("latin-1")
    got = answer(command, record, data)
    if got != want:
        got, want = canonical_envelope(got), canonical_envelope(want)
        if b"BODY (" in want:
            # Dovecot writes BODY lower-cased once it has BODYSTRUCTURE cached, as
            # sent otherwise (see tests/store/test_mime_dovecot.py): compare without case.
            got, want = got.lower(), want.lower()
    assert got == want


@pytest.mark.skipif(not ANSWERS, reason="no captured Dovecot answers")
@pytest.mark.parametrize(("seq", "command"), SEEN_COMMANDS)
def test_implicit_seen_adds_flags_like_dovecot_rfc3501_6_4_5(seq: int, command: str) -> None:
    record, data = record_of(seq)
    want = ANSWERS[f"seen:{command}"].encode("latin-1")
    assert answer(command, record, data, seen=True) == want


def test_answers_cover_every_sample() -> None:
    if not ANSWERS:
        pytest.skip("no captured Dovecot answers")
    seqs = {int(k.split(" ", 1)[0]) for k in ANSWERS if not k.startswith("seen:")}
    assert seqs == set(range(1, len(SAMPLES) + 1))


# --- capture (run as a script) ----------------------------------------------------


def capture() -> None:
    import socket

    from tests.support.dovecot import Dovecot

    work = Path("/tmp/fetch-data-capture")
    shutil.rmtree(work, ignore_errors=True)
    with Dovecot(work, users={"alice": "secret"}) as dovecot:
        inbox = dovecot.user_root("alice")
        for sub in ("cur", "new", "tmp"):
            (inbox / sub).mkdir(parents=True, exist_ok=True)
        for i, (_, data, letters, when) in enumerate(SAMPLES, 1):
            path = inbox / "cur" / f"{1_800_000_000 + i}.M{i}P1.capture:2,{letters}"
            path.write_bytes(data)
            os.utime(path, (when, when))
        dovecot.hand_over()

        def session() -> tuple[socket.socket, io.BufferedReader]:
            sock = socket.create_connection(("127.0.0.1", dovecot.ports["imap"]))
            return sock, sock.makefile("rb")

        def command(sock: socket.socket, rfile: io.BufferedReader, text: str) -> bytes:
            sock.sendall(b"t " + text.encode() + b"\r\n")
            got = b""
            while True:
                line = rfile.readline()
                if line.startswith(b"t "):
                    assert line.startswith(b"t OK"), (text, line)
                    return got
                got += line
                m = re.search(rb"\{(\d+)\}\r\n$", line)
                if m:
                    got += rfile.read(int(m.group(1)))

        # The first session takes \Recent; the capturing one sees none.
        sock, rfile = session()
        rfile.readline()
        command(sock, rfile, "LOGIN alice secret")
        command(sock, rfile, "SELECT INBOX")
        command(sock, rfile, "LOGOUT")
        sock, rfile = session()
        rfile.readline()
        command(sock, rfile, "LOGIN alice secret")
        command(sock, rfile, "SELECT INBOX")
        answers: dict[str, str] = {}
        for seq in range(1, len(SAMPLES) + 1):
            for text in commands(seq, seq):
                answers[f"{seq} {text}"] = command(sock, rfile, text).decode("latin-1")
        for _, text in SEEN_COMMANDS:
            answers[f"seen:{text}"] = command(sock, rfile, text).decode("latin-1")
        command(sock, rfile, "LOGOUT")
    ANSWERS_FILE.write_text(json.dumps(answers, indent=0, sort_keys=True) + "\n")
    print(len(answers), "answers captured", file=sys.stderr)


if __name__ == "__main__":
    capture()
