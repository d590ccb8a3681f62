"""POP3 sessions over the real Maildir store on a temp dir (no fakes below the session).

The store runs its disk work synchronously here (``run_synchronously``) so the
transcripts stay deterministic; everything else is the code the server runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from mailaccess.config import MailboxesConfig
from mailaccess.store.account import Store
from mailaccess.store.mailbox import run_synchronously
from mailaccess.store.model import SEEN
from tests.pop3.conversation import LOOPBACK, Conversation, make_context

FIXTURE = Path(__file__).parent.parent / "fixtures" / "dovecot"
FACTS = json.loads((FIXTURE / "facts.json").read_text())


def fired(d: Any) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the store should have answered synchronously"
    return box[0]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Store:
    return Store(tmp_path / "mail", MailboxesConfig(), clock, run_synchronously)


@pytest.fixture
def context(store: Store, clock: Clock) -> Any:
    context = make_context(clock=clock)
    context.store = store
    return context


def login(context: Any, user: str = "alice") -> Conversation:
    context.authenticator.add_user(user, "secret", account=context.store.account(user))
    conversation = Conversation(context, peer=LOOPBACK)
    conversation.login(user)
    return conversation


def inbox_of(context: Any, user: str = "alice") -> Any:
    return fired(context.store.account(user).mailbox("INBOX"))


def listing(conversation: Conversation, command: bytes) -> list[list[str]]:
    conversation.send(command + b"\r\n")
    lines = conversation.take().decode().split("\r\n")
    assert lines[0].startswith("+OK") and lines[-2:] == [".", ""], lines
    return [line.split(" ") for line in lines[1:-2]]


def test_dovecot_maildir_lists_with_dovecots_sizes_and_uidls(tmp_path: Path, context: Any) -> None:
    shutil.copytree(FIXTURE / "alice", tmp_path / "mail" / "alice")
    for directory in FACTS["empty_dirs"]:
        (tmp_path / "mail" / "alice" / directory).mkdir(parents=True, exist_ok=True)
    conversation = login(context)
    inbox = FACTS["mailboxes"]["INBOX"]["messages"]
    deleted = {m["uid"] for m in inbox if "\\Deleted" in m["flags"]}
    # What Dovecot 2.3 answered, without the \Deleted messages it lists and
    # DESIGN.md rule 1 leaves out.
    dovecot = [m for m in FACTS["pop3"] if m["uid"] not in deleted]
    assert deleted and len(dovecot) < len(FACTS["pop3"])

    sizes = listing(conversation, b"LIST")
    uidls = listing(conversation, b"UIDL")
    assert [int(size) for _, size in sizes] == [m["size"] for m in dovecot]
    assert [uidl for _, uidl in uidls] == [m["uidl"] for m in dovecot]
    assert [int(n) for n, _ in sizes] == list(range(1, len(dovecot) + 1))

    # Every RETR sends exactly the octets LIST announced.
    for number, size in sizes:
        conversation.send(f"TOP {number} 0\r\nRETR {number}\r\n".encode())
        reply = conversation.take()
        retr = reply[reply.index(f"+OK {size} octets\r\n".encode()) :]
        body = retr.split(b"\r\n", 1)[1][: -len(b".\r\n")]
        unstuffed = body.replace(b"\r\n..", b"\r\n.")
        assert len(unstuffed) == int(size)


def test_retr_dele_quit_reach_the_disk(context: Any) -> None:
    inbox = inbox_of(context)
    for n in range(3):
        fired(inbox.append(b"Subject: %d\n\n.hidden dot\nbody\n" % n))
    conversation = login(context)
    conversation.exchange("""
        C: RETR 2
        S: +OK 33 octets
        S: Subject: 1
        S:
        S: ..hidden dot
        S: body
        S: .
        C: DELE 1
        S: +OK message 1 deleted
        C: DELE 3
        S: +OK message 3 deleted
        C: RSET
        S: +OK maildrop has 3 messages (99 octets)
        C: DELE 3
        S: +OK message 3 deleted
        C: QUIT
        S: +OK bye, 1 deleted, 2 left in maildrop
    """)
    assert [r.uid for r in inbox.records()] == [1, 2]
    assert SEEN in inbox.record(2).flags
    files = sorted(p.name for p in (context.store.mail_root / "alice" / "cur").iterdir())
    assert len(files) == 2 and files[1].endswith(":2,S")  # RETR's \Seen is on disk
    # A new session sees what QUIT left: numbers 1..2 again.
    login(context).exchange("""
        C: STAT
        S: +OK 2 66
    """)


def test_dropped_session_leaves_no_deleted_flag_on_disk(context: Any) -> None:
    inbox = inbox_of(context)
    fired(inbox.append(b"Subject: keep\n\nme\n"))
    conversation = login(context)
    conversation.exchange("""
        C: DELE 1
        S: +OK message 1 deleted
    """)
    assert any(p.name.endswith("T") for p in (inbox_dir(context) / "cur").iterdir())
    conversation.drop()
    assert not any(p.name.endswith("T") for p in (inbox_dir(context) / "cur").iterdir())
    assert len(inbox.records()) == 1


def inbox_dir(context: Any) -> Path:
    return context.store.mail_root / "alice"


def test_expunge_by_another_session_answers_err_design_rule5(context: Any) -> None:
    inbox = inbox_of(context)
    for n in range(2):
        fired(inbox.append(b"Subject: %d\n\nx\n" % n))
    conversation = login(context)
    fired(inbox.expunge([1]))  # as an IMAP EXPUNGE would
    conversation.exchange("""
        C: RETR 1
        S: -ERR message 1 was removed by another session
        C: STAT
        S: +OK 1 17
        C: QUIT
        S: +OK bye, 0 deleted, 1 left in maildrop
    """)
