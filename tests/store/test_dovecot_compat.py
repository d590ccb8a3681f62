"""Dovecot on-disk compatibility, both directions (issue 3 item 3; DESIGN.md).

A sysadmin must be able to move a Maildir between Dovecot 2.3 and mailaccess
without any client noticing: same UIDVALIDITY (RFC 3501 §2.3.1.1), same UIDs
(§2.3.1.1), same flags and keywords (§2.3.2), same subscriptions (§6.3.6), and
so the same POP3 unique-ids (RFC 1939 §7, Dovecot's ``%08Xu%08Xv``).

(a) the committed fixture (written by a real Dovecot, see
    tests/fixtures/make_dovecot_fixtures.py) opens in our store with the
    values Dovecot itself reported — runs without Dovecot installed;
(b) live: a Dovecot writes a Maildir now, we open it → same;
(c) live: our store writes a Maildir, Dovecot serves it over IMAP and POP3
    with our UIDVALIDITY, UIDs, flags, keywords and subscriptions;
(d) live: Dovecot changes a Maildir we wrote (APPEND, STORE, EXPUNGE), we
    see the new message under Dovecot's UID, and its flags and expunges.
"""

from __future__ import annotations

import datetime
import imaplib
import importlib.util
import json
import os
import poplib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from mailaccess.config import MailboxesConfig
from mailaccess.pop3.uidl import UIDLFormat
from mailaccess.store import mutf7
from mailaccess.store.account import Account, Store
from mailaccess.store.mailbox import run_synchronously
from mailaccess.store.model import MessageRecord
from tests.support.dovecot import Dovecot, require_dovecot

FIXTURES = Path(__file__).parent.parent / "fixtures"
FIXTURE = FIXTURES / "dovecot"
FACTS: dict[str, Any] = json.loads((FIXTURE / "facts.json").read_text("utf-8"))
USER, PASSWORD = "alice", "secret"
DOVECOT_UIDL = UIDLFormat.parse("%08Xu%08Xv")


# --- helpers -------------------------------------------------------------------


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (the store runs synchronously here)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def open_account(mail_root: Path) -> Account:
    # Clock provides IReactorTime through zope.interface, which mypy cannot see.
    clock: Any = Clock()
    store = Store(mail_root, MailboxesConfig(), clock, run_synchronously)
    return store.account(USER)


def our_view(record: MessageRecord) -> dict[str, Any]:
    """What a client sees of one message, in the shape of facts.json."""
    return {
        "uid": record.uid,
        "flags": sorted(record.flags),
        "vsize": record.vsize,
        "size": record.size,
        # INTERNALDATE has whole seconds (RFC 3501 §9 date-time).
        "internal_date": float(int(record.internal_date)),
    }


def dovecot_view(message: dict[str, Any]) -> dict[str, Any]:
    return {key: message[key] for key in ("uid", "flags", "vsize", "size", "internal_date")}


def install_fixture(mail_root: Path) -> Path:
    """Copy the committed fixture to *mail_root*/alice as a faithful copy would.

    Git keeps neither mtimes (INTERNALDATE) nor empty directories; facts.json
    lists both, so restore them like ``cp -a`` or ``rsync -a`` would have.
    """
    root = mail_root / USER
    shutil.copytree(FIXTURE / USER, root)
    for directory in FACTS["empty_dirs"]:
        (root / directory).mkdir(parents=True, exist_ok=True)
    for box in FACTS["mailboxes"].values():
        folder = root / box["directory"] if box["directory"] else root
        for message in box["messages"]:
            (path,) = (folder / message["subdir"]).glob(message["base"] + "*")
            os.utime(path, (message["mtime"], message["mtime"]))
    return root


def _item(pattern: bytes, response: bytes) -> bytes:
    match = re.search(pattern, response)
    assert match is not None, f"no {pattern!r} in {response!r}"
    return match.group(1)


def _quoted(name: str) -> str:
    return '"' + mutf7.encode(name) + '"'


def imap_login(dovecot: Dovecot) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", dovecot.ports["imap"])
    assert imap.login(USER, PASSWORD)[0] == "OK"
    return imap


def imap_mailbox(imap: imaplib.IMAP4, name: str) -> dict[str, Any]:
    """Dovecot's view of one mailbox over IMAP: UIDVALIDITY, UIDNEXT, messages."""
    status, data = imap.status(_quoted(name), "(UIDVALIDITY UIDNEXT MESSAGES)")
    assert status == "OK", data
    numbers = {k.decode(): int(v) for k, v in re.findall(rb"([A-Z]+) (\d+)", data[0])}
    status, data = imap.select(_quoted(name), readonly=True)
    assert status == "OK", data
    messages = []
    if numbers["MESSAGES"]:
        status, data = imap.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
        assert status == "OK", data
        for line in data:
            assert isinstance(line, bytes)
            flags = _item(rb"FLAGS \(([^)]*)\)", line).decode().split()
            date = _item(rb'INTERNALDATE "([^"]+)"', line).decode().strip()
            messages.append(
                {
                    "uid": int(_item(rb"UID (\d+)", line)),
                    "flags": sorted(f for f in flags if f != "\\Recent"),
                    "vsize": int(_item(rb"RFC822.SIZE (\d+)", line)),
                    "internal_date": datetime.datetime.strptime(
                        date, "%d-%b-%Y %H:%M:%S %z"
                    ).timestamp(),
                }
            )
    return {
        "uidvalidity": numbers["UIDVALIDITY"],
        "uidnext": numbers["UIDNEXT"],
        "messages": sorted(messages, key=lambda m: m["uid"]),
    }


def imap_list(imap: imaplib.IMAP4) -> set[str]:
    """Every name LIST "" "*" returns (RFC 3501 §7.2.2), decoded."""
    status, data = imap.list()
    assert status == "OK", data
    names = set()
    for line in data:
        assert isinstance(line, bytes)
        match = re.fullmatch(rb'\([^)]*\) (?:"."|NIL) (?:"((?:[^"\\]|\\.)*)"|(\S+))', line)
        assert match is not None, line
        names.add(mutf7.decode((match.group(1) or match.group(2)).decode()))
    return names


def imap_subscriptions(imap: imaplib.IMAP4) -> list[str]:
    status, data = imap.lsub()
    assert status == "OK", data
    names = []
    for line in data:
        if line is None:
            continue
        assert isinstance(line, bytes)
        names.append(mutf7.decode(line.rsplit(b" ", 1)[1].decode().strip('"')))
    return names


def pop3_uidls(dovecot: Dovecot) -> list[str]:
    pop = poplib.POP3("127.0.0.1", dovecot.ports["pop3"])
    try:
        pop.user(USER)
        pop.pass_(PASSWORD)
        return [line.decode().split()[1] for line in pop.uidl()[1]]
    finally:
        pop.quit()


def _fixture_builder() -> ModuleType:
    """tests/fixtures/make_dovecot_fixtures.py, which drives a live Dovecot."""
    spec = importlib.util.spec_from_file_location(
        "make_dovecot_fixtures", FIXTURES / "make_dovecot_fixtures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_store_matches(account: Account, facts: dict[str, Any]) -> None:
    """Our store shows exactly what Dovecot reported in *facts*."""
    for name, box in facts["mailboxes"].items():
        mailbox = result_of(account.mailbox(name))
        assert mailbox.uidvalidity == box["uidvalidity"], name
        # Dovecot's uidlist is lazy: its N may lag; both must agree anyway.
        assert mailbox.uidnext == box["uidnext"], name
        assert [our_view(r) for r in mailbox.records()] == [
            dovecot_view(m) for m in box["messages"]
        ], name
    listed = {listing.name for listing in account.list_mailboxes()}
    assert set(facts["mailboxes"]) <= listed
    assert account.subscriptions() == facts["subscriptions"]
    inbox = result_of(account.mailbox("INBOX"))
    for pop in facts["pop3"]:
        record = inbox.record(pop["uid"])
        assert record is not None
        assert DOVECOT_UIDL.unique_id(record.uid, inbox.uidvalidity, record.base) == pop["uidl"]
        assert record.vsize == pop["size"]  # RFC 1939 §5 LIST counts CRLF


# --- (a) the committed fixture --------------------------------------------------


def test_fixture_facts_are_plausible() -> None:
    # Guards the fixture itself: what the other tests rely on is in it.
    inbox = FACTS["mailboxes"]["INBOX"]
    uids = [m["uid"] for m in inbox["messages"]]
    assert 3 not in uids and max(uids) > 3  # the EXPUNGE gap
    assert any(m["subdir"] == "new" for m in inbox["messages"])
    keywords = {
        f for box in FACTS["mailboxes"].values() for m in box["messages"] for f in m["flags"]
    }
    assert {"$Forwarded", "$Junk", "custom", "\\Deleted", "\\Draft"} <= keywords
    assert "Entwürfe" in FACTS["mailboxes"] and "台北.日本語" in FACTS["mailboxes"]
    assert "Doomed" in FACTS["subscriptions"] and "Doomed" not in FACTS["mailboxes"]


def test_fixture_opens_with_dovecot_values_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    install_fixture(tmp_path / "mail")
    assert_store_matches(open_account(tmp_path / "mail"), FACTS)


def test_fixture_reopens_unchanged_after_our_sync(tmp_path: Path) -> None:
    """Opening rewrites what Dovecot left lazily (new/, the uidlist); a second open,
    as after a restart, must still show Dovecot's values."""
    install_fixture(tmp_path / "mail")
    assert_store_matches(open_account(tmp_path / "mail"), FACTS)
    assert_store_matches(open_account(tmp_path / "mail"), FACTS)


def test_fixture_keeps_dovecot_uidvalidity_counter_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    install_fixture(tmp_path / "mail")
    account = open_account(tmp_path / "mail")
    account.create("Neu")
    created = result_of(account.mailbox("Neu")).uidvalidity
    assert created == FACTS["dovecot_uidvalidity"] + 1


def test_fixture_flag_change_keeps_uid_and_keywords_rfc3501_6_4_6(tmp_path: Path) -> None:
    install_fixture(tmp_path / "mail")
    account = open_account(tmp_path / "mail")
    inbox = result_of(account.mailbox("INBOX"))
    fifth = next(m for m in FACTS["mailboxes"]["INBOX"]["messages"] if "$Junk" in m["flags"])
    result_of(inbox.store_flags([fifth["uid"]], frozenset({"\\Seen", "$Forwarded"}), "add"))
    again = open_account(tmp_path / "mail")
    record = result_of(again.mailbox("INBOX")).record(fifth["uid"])
    assert record is not None
    assert sorted(record.flags) == sorted({*fifth["flags"], "\\Seen", "$Forwarded"})
    # The keyword letters are Dovecot's: $Forwarded was letter a already.
    assert (tmp_path / "mail" / USER / "dovecot-keywords").read_text().startswith("0 $Forwarded\n")


# --- live Dovecot -----------------------------------------------------------------


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    require_dovecot()
    server = Dovecot(tmp_path / "dovecot", users={USER: PASSWORD}, mail_root=tmp_path / "mail")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_live_dovecot_maildir_opens_with_its_values_rfc3501_2_3_1_1(dovecot: Dovecot) -> None:
    """(b) Dovecot writes a Maildir now; we open it and agree with Dovecot."""
    builder = _fixture_builder()
    builder.build(dovecot)
    facts = builder.collect(dovecot, dovecot.user_root(USER))
    assert_store_matches(open_account(dovecot.mail_root), facts)


def _write_with_our_store(mail_root: Path) -> tuple[Account, dict[str, list[int]]]:
    """(c) A Maildir made by our store only: folders, flags, keywords, a gap."""
    account = open_account(mail_root)
    for name in ("Entwürfe", "Archive.2024", "台北.日本語"):
        account.create(name)
    for name in ("INBOX", "Entwürfe", "台北.日本語", "Gone"):
        account.subscribe(name)
    appended: dict[str, list[int]] = {}
    plan = {
        "INBOX": [
            ({"\\Seen"}, 1704106800.0),
            ({"\\Answered", "\\Flagged"}, 1704110400.0),
            (set(), 1704114000.0),  # expunged below: a UID gap
            ({"$Forwarded", "\\Seen"}, 1704117600.0),
            ({"$Junk", "custom"}, 1704121200.0),
            ({"\\Draft", "\\Deleted"}, 1704124800.0),
        ],
        "Entwürfe": [({"\\Draft"}, 1704128400.0)],
        "Archive.2024": [({"custom", "$Forwarded"}, 1704132000.0), (set(), 1704135600.0)],
        "台北.日本語": [({"\\Seen"}, 1704139200.0)],
    }
    for name, messages in plan.items():
        mailbox = result_of(account.mailbox(name))
        appended[name] = []
        for n, (flags, date) in enumerate(messages):
            body = (
                f"From: bob@example.org\r\nSubject: {name} {n} Grüße\r\n"
                f"Message-ID: <ours-{n}@example.org>\r\n\r\nLine one.\r\nLine two.\r\n"
            ).encode()
            record = result_of(mailbox.append(body, frozenset(flags), date))
            appended[name].append(record.uid)
    inbox = result_of(account.mailbox("INBOX"))
    gap = appended["INBOX"][2]
    assert result_of(inbox.expunge([gap])) == (gap,)
    result_of(inbox.store_flags([appended["INBOX"][0]], frozenset({"$Forwarded"}), "add"))
    return account, appended


def test_our_maildir_served_by_dovecot_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    """(c) Our store writes; Dovecot serves our UIDVALIDITY, UIDs, flags, keywords."""
    require_dovecot()
    mail_root = tmp_path / "mail"
    account, _ = _write_with_our_store(mail_root)
    ours = {}
    for listing in account.list_mailboxes():
        if "\\Noselect" in listing.attributes:
            continue
        mailbox = result_of(account.mailbox(listing.name))
        ours[listing.name] = {
            "uidvalidity": mailbox.uidvalidity,
            "uidnext": mailbox.uidnext,
            "messages": [
                {k: v for k, v in our_view(r).items() if k != "size"} for r in mailbox.records()
            ],
        }
    inbox = result_of(account.mailbox("INBOX"))
    our_uidls = [DOVECOT_UIDL.unique_id(r.uid, inbox.uidvalidity, r.base) for r in inbox.records()]
    subscriptions = account.subscriptions()

    with Dovecot(tmp_path / "dovecot", users={USER: PASSWORD}, mail_root=mail_root) as dovecot:
        imap = imap_login(dovecot)
        try:
            theirs = {name: imap_mailbox(imap, name) for name in ours}
            their_subscriptions = imap_subscriptions(imap)
            their_names = imap_list(imap)
        finally:
            imap.logout()
        their_uidls = pop3_uidls(dovecot)
    assert theirs == ours
    # Our own files (metadata cache, special-use list) are no folders to Dovecot.
    assert their_names == {listing.name for listing in account.list_mailboxes()}
    assert sorted(their_subscriptions) == sorted(subscriptions)  # LSUB order is its own
    # Dovecot's POP3 lists \Deleted messages too; ours leaves them out
    # (DESIGN.md rule 1), so compare the unique-ids of every message.
    assert their_uidls == our_uidls
    # Spelled out: Dovecot 2.3's "%08Xu%08Xv" is lower-case hex (DESIGN.md rule 2).
    assert their_uidls == [f"{r.uid:08x}{inbox.uidvalidity:08x}" for r in inbox.records()]


def test_dovecot_changes_to_our_maildir_seen_by_us_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    """(d) Dovecot appends, flags and expunges in a Maildir we wrote; we follow."""
    require_dovecot()
    mail_root = tmp_path / "mail"
    account, appended = _write_with_our_store(mail_root)
    inbox = result_of(account.mailbox("INBOX"))
    before = {r.uid: r for r in inbox.records()}
    first, second = appended["INBOX"][0], appended["INBOX"][1]

    with Dovecot(tmp_path / "dovecot", users={USER: PASSWORD}, mail_root=mail_root) as dovecot:
        imap = imap_login(dovecot)
        try:
            status, data = imap.append(
                "INBOX",
                "(\\Flagged $Junk newkeyword)",
                1704200000,
                b"From: carol@example.org\r\nSubject: from Dovecot\r\n\r\nHello.\r\n",
            )
            assert status == "OK", data
            # RFC 4315 §3: APPENDUID <uidvalidity> <uid>
            uidvalidity, new_uid = map(int, _item(rb"APPENDUID (\d+ \d+)", data[0]).split())
            assert imap.select("INBOX")[0] == "OK"
            assert imap.uid("STORE", str(first), "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
            assert imap.expunge()[0] == "OK"
            assert (
                imap.uid("STORE", str(second), "+FLAGS.SILENT", "(\\Seen $Forwarded)")[0] == "OK"
            )
        finally:
            imap.logout()

    assert uidvalidity == inbox.uidvalidity
    assert new_uid > max(before)  # RFC 3501 §2.3.1.1: strictly ascending
    events: list[Any] = []
    inbox.add_listener(events.append)
    result_of(inbox.rescan())
    new = inbox.record(new_uid)
    assert new is not None, "Dovecot's APPEND not seen under its UID"
    assert sorted(new.flags) == sorted({"\\Flagged", "$Junk", "newkeyword"})
    assert int(new.internal_date) == 1704200000
    assert inbox.record(first) is None  # Dovecot's EXPUNGE
    changed = inbox.record(second)
    assert changed is not None
    assert changed.flags == before[second].flags | {"\\Seen", "$Forwarded"}
    assert inbox.uidnext == new_uid + 1
    # The same changes arrive as events, so open sessions hear of them.
    kinds = {type(event).__name__ for event in events}
    assert {"MessagesAdded", "MessagesExpunged", "FlagsChanged"} <= kinds
    # And a fresh process (restart) agrees.
    again = result_of(open_account(mail_root).mailbox("INBOX"))
    assert [our_view(r) for r in again.records()] == [our_view(r) for r in inbox.records()]


# --- the harness itself (the benchmark relies on every listener) -------------------


def test_harness_listeners_tls_and_lmtp(dovecot: Dovecot) -> None:
    import smtplib
    import ssl

    context = ssl.create_default_context(cafile=str(dovecot.cert_path))
    # Implicit TLS, certificate checked for "localhost" (CLIENTS.md).
    imaps = imaplib.IMAP4_SSL("localhost", dovecot.ports["imaps"], ssl_context=context)
    assert imaps.login(USER, PASSWORD)[0] == "OK"
    imaps.logout()
    pop3s = poplib.POP3_SSL("localhost", dovecot.ports["pop3s"], context=context)
    assert pop3s.user(USER).startswith(b"+OK")
    assert pop3s.pass_(PASSWORD).startswith(b"+OK")
    pop3s.quit()
    # STARTTLS (RFC 3501 §6.2.1) and STLS (RFC 2595 §4) on the plain ports.
    imap = imaplib.IMAP4("localhost", dovecot.ports["imap"])
    assert imap.starttls(context)[0] == "OK"
    assert imap.login(USER, PASSWORD)[0] == "OK"
    imap.logout()
    pop = poplib.POP3("localhost", dovecot.ports["pop3"])
    assert pop.stls(context).startswith(b"+OK")
    pop.quit()
    # LMTP delivers into the Maildir we share with Dovecot.
    with smtplib.LMTP("127.0.0.1", dovecot.ports["lmtp"]) as lmtp:
        assert not lmtp.sendmail("bob@example.org", [USER], b"Subject: by LMTP\r\n\r\nHi.\r\n")
    assert len(list((dovecot.user_root(USER) / "new").iterdir())) == 1
    found = dovecot.doveadm("search", "-u", USER, "mailbox", "INBOX", "subject", "LMTP")
    assert len(found.stdout.split()) == 2  # "<mailbox guid> <uid>"


# --- files other programs drop (an MTA's new/ file has no ,S= or ,W=) -------------

_DROPPED = (
    b"From: mta@example.org\nSubject: dropped by an MTA\n\nNo size in my name.\nTwo lines.\n"
)


def _drop(folder: Path, name: str) -> None:
    # Maildir delivery (https://cr.yp.to/proto/maildir.html): write in tmp/,
    # rename into new/.
    (folder / "tmp" / name).write_bytes(_DROPPED)
    os.rename(folder / "tmp" / name, folder / "new" / name)


@pytest.mark.parametrize("first", ["dovecot", "ours"])
def test_dropped_file_gets_one_uid_for_both_rfc3501_2_3_1_1(tmp_path: Path, first: str) -> None:
    """Whoever sees an MTA's file first assigns its UID; the other agrees, and
    both count its size with CRLF line ends (RFC 3501 §6.4.5 RFC822.SIZE)."""
    require_dovecot()
    mail_root = tmp_path / "mail"
    account, _ = _write_with_our_store(mail_root)
    root = mail_root / USER
    _drop(root, "1704300000.P4242Q1.mta.example.org")
    crlf_size = len(_DROPPED.replace(b"\n", b"\r\n"))
    inbox = result_of(account.mailbox("INBOX"))
    if first == "ours":
        result_of(inbox.rescan())
    with Dovecot(tmp_path / "dovecot", users={USER: PASSWORD}, mail_root=mail_root) as dovecot:
        imap = imap_login(dovecot)
        try:
            theirs = imap_mailbox(imap, "INBOX")
        finally:
            imap.logout()
    if first == "dovecot":
        result_of(inbox.rescan())
    dropped = [m for m in theirs["messages"] if m["vsize"] == crlf_size]
    assert len(dropped) == 1
    ours = inbox.record(dropped[0]["uid"])
    assert ours is not None, "the dropped file has a different UID for us and for Dovecot"
    assert ours.vsize == crlf_size
    assert ours.size == len(_DROPPED)
    assert theirs["uidnext"] == inbox.uidnext
    assert [m["uid"] for m in theirs["messages"]] == [r.uid for r in inbox.records()]


def test_folder_names_with_ampersand_rfc3501_5_1_3(tmp_path: Path) -> None:
    """'&' is the one printable character modified UTF-7 escapes ("&-")."""
    require_dovecot()
    mail_root = tmp_path / "mail"
    account = open_account(mail_root)
    account.create("Tom & Jerry.Ärger")
    result_of(result_of(account.mailbox("Tom & Jerry.Ärger")).append(b"Subject: x\r\n\r\ny\r\n"))
    assert (mail_root / USER / ".Tom &- Jerry.&AMQ-rger").is_dir()
    with Dovecot(tmp_path / "dovecot", users={USER: PASSWORD}, mail_root=mail_root) as dovecot:
        imap = imap_login(dovecot)
        try:
            listed = imap_list(imap)
            assert {"Tom & Jerry", "Tom & Jerry.Ärger"} <= listed
            assert imap_mailbox(imap, "Tom & Jerry.Ärger")["messages"][0]["uid"] == 1
            assert imap.create(_quoted("Tom & Jerry.Ölfleck"))[0] == "OK"
        finally:
            imap.logout()
    assert "Tom & Jerry.Ölfleck" in {listing.name for listing in account.list_mailboxes()}


def test_dovecot_rename_keeps_uidvalidity_for_us_rfc3501_6_3_5(tmp_path: Path) -> None:
    require_dovecot()
    mail_root = tmp_path / "mail"
    account, appended = _write_with_our_store(mail_root)
    archive = result_of(account.mailbox("Archive.2024"))
    uidvalidity, uids = archive.uidvalidity, [r.uid for r in archive.records()]
    with Dovecot(tmp_path / "dovecot", users={USER: PASSWORD}, mail_root=mail_root) as dovecot:
        dovecot.doveadm("mailbox", "rename", "-u", USER, "Archive", "Alt")
    # A fresh process (the open Mailbox object belongs to the old path).
    renamed = result_of(open_account(mail_root).mailbox("Alt.2024"))
    assert renamed.uidvalidity == uidvalidity  # RFC 3501 §6.3.5: a rename is no re-create
    assert [r.uid for r in renamed.records()] == uids == appended["Archive.2024"]


def test_migrate_from_dovecot_and_back_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    """A Dovecot Maildir, used by mailaccess for a while, goes back to Dovecot:
    Dovecot shows our changes and every untouched message as it was."""
    require_dovecot()
    mail_root = tmp_path / "mail"
    install_fixture(mail_root)
    account = open_account(mail_root)
    inbox = result_of(account.mailbox("INBOX"))
    facts_inbox = FACTS["mailboxes"]["INBOX"]
    first_uid = facts_inbox["messages"][0]["uid"]
    result_of(inbox.store_flags([first_uid], frozenset({"$Junk", "\\Flagged"}), "add"))
    added = result_of(inbox.append(b"Subject: while on mailaccess\r\n\r\nHi.\r\n", frozenset()))
    assert added.uid == facts_inbox["uidnext"]  # RFC 3501 §2.3.1.1: next UID, no reuse
    account.subscribe("Archive")
    ours = {
        name: {
            "uidvalidity": result_of(account.mailbox(name)).uidvalidity,
            "uidnext": result_of(account.mailbox(name)).uidnext,
            "messages": [
                {k: v for k, v in our_view(r).items() if k != "size"}
                for r in result_of(account.mailbox(name)).records()
            ],
        }
        for name in FACTS["mailboxes"]
    }
    with Dovecot(tmp_path / "dovecot", users={USER: PASSWORD}, mail_root=mail_root) as dovecot:
        imap = imap_login(dovecot)
        try:
            theirs = {name: imap_mailbox(imap, name) for name in FACTS["mailboxes"]}
            subscriptions = imap_subscriptions(imap)
        finally:
            imap.logout()
        uidls = pop3_uidls(dovecot)
    assert theirs == ours
    for name, box in FACTS["mailboxes"].items():
        assert theirs[name]["uidvalidity"] == box["uidvalidity"]
    assert sorted(subscriptions) == sorted([*FACTS["subscriptions"], "Archive"])
    # Clients' POP3 caches stay valid: old unique-ids unchanged, one new.
    assert uidls == [pop["uidl"] for pop in FACTS["pop3"]] + [
        DOVECOT_UIDL.unique_id(added.uid, inbox.uidvalidity, added.base)
    ]


# --- both at once -------------------------------------------------------------------


def _message_id(data: bytes) -> str:
    return _item(rb"Message-ID: <([^>]+)>", data).decode()


def test_concurrent_appends_with_live_dovecot_rfc3501_2_3_1_1(tmp_path: Path) -> None:
    """Dovecot (IMAP APPEND) and our store append to one INBOX at the same time:
    under dovecot-uidlist.lock every message gets one UID, both agree on it,
    and no UID is given twice."""
    require_dovecot()
    import threading

    # As root, the block below runs as Dovecot's mail user, who cannot read
    # this Python's library directory: import lazily imported modules now.
    import mailaccess.store.cache
    import mailaccess.store.mime  # noqa: F401

    count = 25
    mail_root = tmp_path / "mail"
    with Dovecot(tmp_path / "dovecot", users={USER: PASSWORD}, mail_root=mail_root) as dovecot:
        with dovecot.as_mail_user():
            inbox = result_of(open_account(mail_root).mailbox("INBOX"))
        errors: list[BaseException] = []

        def dovecot_appends() -> None:
            try:
                imap = imap_login(dovecot)
                for n in range(count):
                    message = f"Message-ID: <dovecot-{n}@x>\r\nSubject: d{n}\r\n\r\nD.\r\n"
                    flags = f"(kd{n % 4} \\Seen)"  # keywords added concurrently
                    assert imap.append("INBOX", flags, None, message.encode())[0] == "OK"
                imap.logout()
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        thread = threading.Thread(target=dovecot_appends)
        thread.start()
        with dovecot.as_mail_user():
            for n in range(count):
                message = f"Message-ID: <ours-{n}@x>\r\nSubject: o{n}\r\n\r\nO.\r\n"
                result_of(inbox.append(message.encode(), frozenset({f"ko{n % 4}"})))
        thread.join(120)
        assert not errors, errors
        with dovecot.as_mail_user():
            result_of(inbox.rescan())
        imap = imap_login(dovecot)
        try:
            assert imap.select("INBOX", readonly=True)[0] == "OK"
            status, data = imap.uid(
                "FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
            )
            assert status == "OK", data
        finally:
            imap.logout()
    theirs = {
        _message_id(part[1]): (
            int(_item(rb"UID (\d+)", part[0])),
            sorted(
                flag
                for flag in _item(rb"FLAGS \(([^)]*)\)", part[0]).decode().split()
                if flag != "\\Recent"  # a session's, not stored (RFC 3501 §2.3.2)
            ),
        )
        for part in data
        if isinstance(part, tuple)
    }
    # Flags from a fresh open (what is on disk): the long-running Mailbox can
    # miss a keyword whose letter it met before dovecot-keywords named it;
    # see test_keyword_letter_resolved_when_dovecot_keywords_catches_up.
    fresh = result_of(open_account(mail_root).mailbox("INBOX"))
    ours = {}
    for record in fresh.records():
        with fresh.open_message(record.uid) as stream:
            ours[_message_id(stream.read())] = (record.uid, sorted(record.flags))
    assert len(ours) == 2 * count
    assert ours == theirs
    assert [r.uid for r in inbox.records()] == [r.uid for r in fresh.records()]
    # Each side's keywords landed on its own messages: one dovecot-keywords.
    assert ours["ours-5@x"][1] == ["ko1"]
    assert ours["dovecot-6@x"][1] == ["\\Seen", "kd2"]


def test_require_dovecot_skips_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Dovecot is missing, live tests skip saying what to install."""
    import tests.support.dovecot as harness

    monkeypatch.setattr(harness.shutil, "which", lambda name: None)
    monkeypatch.setattr(harness, "_binary_exists", lambda name: False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install dovecot-imapd"):
        harness.require_dovecot()
    monkeypatch.undo()
    monkeypatch.setattr(harness, "_LIBEXEC", Path("/nonexistent/dovecot"))
    if harness.shutil.which("dovecot") or Path("/usr/sbin/dovecot").exists():
        with pytest.raises(pytest.skip.Exception, match="install dovecot-imapd"):
            harness.require_dovecot()


def test_keyword_letter_resolved_when_dovecot_keywords_catches_up_rfc3501_2_3_2(
    tmp_path: Path,
) -> None:
    """Dovecot renames a file to a new keyword letter and writes dovecot-keywords;
    a rescan between the two sees a letter it cannot name yet.  Once the
    keywords file has it, the open mailbox must show the keyword, as a fresh
    open does (seen in the concurrent test with a live Dovecot)."""
    mail_root = tmp_path / "mail"
    account = open_account(mail_root)
    inbox = result_of(account.mailbox("INBOX"))
    record = result_of(inbox.append(b"Subject: k\r\n\r\nk\r\n", frozenset({"first"})))
    root = mail_root / USER
    assert (root / "dovecot-keywords").read_text() == "0 first\n"
    (old,) = (root / "cur").glob(record.base + "*")
    os.rename(old, old.with_name(record.base + ":2,Sab"))  # "b" not yet named
    result_of(inbox.rescan())
    (root / "dovecot-keywords").write_text("0 first\n1 late\n")
    result_of(inbox.rescan())
    fresh = result_of(open_account(mail_root).mailbox("INBOX")).record(record.uid)
    assert fresh is not None and fresh.flags == {"\\Seen", "first", "late"}
    live = inbox.record(record.uid)
    assert live is not None and live.flags == fresh.flags
