"""Mailbox commands on the real Maildir store: SELECT, EXAMINE, CREATE, DELETE, RENAME,
SUBSCRIBE, LIST, LSUB, STATUS (RFC 3501 §6.3), CHILDREN and SPECIAL-USE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.imap.conversation import IMAPConversation, fired, store_context


@pytest.fixture
def context(tmp_path: Path) -> Any:
    return store_context(tmp_path)


@pytest.fixture
def conv(context: Any) -> IMAPConversation:
    conv = IMAPConversation(context)
    conv.login()
    return conv


def inbox(context: Any, user: str = "alice") -> Any:
    return fired(context.store.account(user).mailbox("INBOX"))


def deliver(context: Any, *bodies: bytes, flags: frozenset[str] = frozenset()) -> list[int]:
    box = inbox(context)
    return [fired(box.append(body, flags)).uid for body in bodies]


def test_select_reports_mailbox_state_rfc3501_6_3_1(context: Any, conv: IMAPConversation) -> None:
    deliver(context, b"Subject: a\n\nx\n", flags=frozenset({"\\Seen"}))
    deliver(context, b"Subject: b\n\ny\n", flags=frozenset({"$Work"}))
    box = inbox(context)
    conv.exchange(
        f"""
        C: a SELECT inbox
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)
        S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted
        S: * 2 EXISTS
        S: * 2 RECENT
        S: * OK [UNSEEN 2] First unseen is 2
        S: * OK [UIDVALIDITY {box.uidvalidity}] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: a OK [READ-WRITE] SELECT completed
        """  # noqa: E501
    )


def test_recent_goes_to_one_session_rfc3501_2_3_2(context: Any) -> None:
    deliver(context, b"Subject: a\n\nx\n")
    first, second = IMAPConversation(context), IMAPConversation(context)
    first.login()
    second.login()
    assert b"* 1 RECENT\r\n" in first.select()
    assert b"* 0 RECENT\r\n" in second.select()


def test_examine_is_read_only_and_keeps_recent_rfc3501_6_3_2(context: Any) -> None:
    deliver(context, b"Subject: a\n\nx\n")
    reader, writer = IMAPConversation(context), IMAPConversation(context)
    reader.login()
    writer.login()
    answer = reader.command("a EXAMINE INBOX")
    assert b"* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n" in answer
    assert answer.endswith(b"a OK [READ-ONLY] EXAMINE completed\r\n")
    # EXAMINE must not take \Recent away (RFC 3501 §6.3.2).
    assert b"* 1 RECENT\r\n" in writer.select()
    reader.exchange(
        """
        C: b STORE 1 +FLAGS (\\Seen)
        S: b OK STORE ignored: the mailbox is read-only (EXAMINE)
        C: c EXPUNGE
        S: c NO [READ-ONLY] the mailbox is read-only (EXAMINE)
        """
    )
    # As Dovecot 2.3: OK, but nothing changed and no FETCH was sent.
    assert inbox(context).record(1).flags == frozenset()


def test_select_missing_mailbox_leaves_authenticated_state_rfc3501_6_3_1(
    conv: IMAPConversation,
) -> None:
    conv.select()
    conv.exchange(
        """
        C: a SELECT Nowhere
        S: a NO [NONEXISTENT] SELECT failed: mailbox 'Nowhere' does not exist
        C: b CHECK
        S: b BAD CHECK is not valid in the authenticated state
        """
    )


def test_select_refuses_condstore_parameter(conv: IMAPConversation) -> None:
    conv.exchange(
        """
        C: a SELECT INBOX (CONDSTORE)
        S: a BAD SELECT parameters are not supported
        """
    )


def test_create_list_children_rfc3501_6_3_3_rfc3348(conv: IMAPConversation) -> None:
    conv.exchange(
        """
        C: a CREATE Work.Projects.
        S: a OK CREATE completed
        C: b CREATE Work
        S: b NO [ALREADYEXISTS] CREATE failed: mailbox 'Work' already exists
        C: c CREATE INBOX
        S: c NO [ALREADYEXISTS] INBOX exists always
        C: d LIST "" *
        S: * LIST (\\HasNoChildren) "." INBOX
        S: * LIST (\\HasChildren) "." Work
        S: * LIST (\\HasNoChildren) "." Work.Projects
        S: d OK LIST completed
        C: e LIST "" %
        S: * LIST (\\HasNoChildren) "." INBOX
        S: * LIST (\\HasChildren) "." Work
        S: e OK LIST completed
        C: f LIST Work. %
        S: * LIST (\\HasNoChildren) "." Work.Projects
        S: f OK LIST completed
        C: g LIST "" ""
        S: * LIST (\\Noselect) "." ""
        S: g OK LIST completed
        C: h LIST "" inbox
        S: * LIST (\\HasNoChildren) "." INBOX
        S: h OK LIST completed
        """
    )


def test_create_rejects_bad_names(conv: IMAPConversation) -> None:
    answer = conv.command("a CREATE &Jjo")
    assert answer.startswith(b"a NO [CANNOT] "), answer


def test_special_use_rfc6154(conv: IMAPConversation) -> None:
    conv.exchange(
        """
        C: a CREATE Sent (USE (\\Sent))
        S: a OK CREATE completed
        C: b CREATE Bin (USE (\\Bogus))
        S: b NO [USEATTR] \\Bogus is not a special use (RFC 6154)
        C: c LIST "" Sent
        S: * LIST (\\HasNoChildren \\Sent) "." Sent
        S: c OK LIST completed
        """
    )


def test_unicode_names_are_modified_utf7_rfc3501_5_1_3(conv: IMAPConversation) -> None:
    conv.exchange(
        """
        C: a CREATE &ZeVnLIqe-
        S: a OK CREATE completed
        C: b LIST "" *
        S: * LIST (\\HasNoChildren) "." INBOX
        S: * LIST (\\HasNoChildren) "." &ZeVnLIqe-
        S: b OK LIST completed
        C: c STATUS &ZeVnLIqe- (MESSAGES)
        S: * STATUS &ZeVnLIqe- (MESSAGES 0)
        S: c OK STATUS completed
        """
    )


def test_rename_and_delete_rfc3501_6_3_4_5(conv: IMAPConversation) -> None:
    conv.exchange(
        """
        C: a CREATE Old.Child
        S: a OK CREATE completed
        C: b RENAME Old New
        S: b OK RENAME completed
        C: c LIST "" *
        S: * LIST (\\HasNoChildren) "." INBOX
        S: * LIST (\\HasChildren) "." New
        S: * LIST (\\HasNoChildren) "." New.Child
        S: c OK LIST completed
        C: d DELETE New.Child
        S: d OK DELETE completed
        C: e DELETE New.Child
        S: ~e NO \\[NONEXISTENT\\] DELETE failed: .*
        C: f DELETE INBOX
        S: f NO [CANNOT] INBOX cannot be deleted
        """
    )


def test_delete_selected_mailbox_refused(conv: IMAPConversation) -> None:
    conv.command("a CREATE Box")
    conv.select("Box")
    conv.exchange(
        """
        C: b DELETE Box
        S: b NO [INUSE] the selected mailbox cannot be deleted; UNSELECT it first
        """
    )


def test_subscribe_lsub_rfc3501_6_3_6_9(conv: IMAPConversation) -> None:
    conv.exchange(
        """
        C: a CREATE Lists.Python
        S: a OK CREATE completed
        C: b SUBSCRIBE Lists.Python
        S: b OK SUBSCRIBE completed
        C: c LSUB "" *
        S: * LSUB () "." Lists.Python
        S: c OK LSUB completed
        C: d LSUB "" %
        S: * LSUB (\\Noselect) "." Lists
        S: d OK LSUB completed
        C: e UNSUBSCRIBE Lists.Python
        S: e OK UNSUBSCRIBE completed
        C: f LSUB "" Lists*
        S: f OK LSUB completed
        """
    )


def test_status_rfc3501_6_3_10(context: Any, conv: IMAPConversation) -> None:
    deliver(context, b"a\n", b"b\n", flags=frozenset())
    deliver(context, b"c\n", flags=frozenset({"\\Seen"}))
    box = inbox(context)
    conv.exchange(
        f"""
        C: a STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT)
        S: * STATUS INBOX (MESSAGES 3 UNSEEN 2 UIDNEXT 4 UIDVALIDITY {box.uidvalidity} RECENT 3)
        S: a OK STATUS completed
        C: b STATUS Nowhere (MESSAGES)
        S: b NO [NONEXISTENT] STATUS failed: mailbox 'Nowhere' does not exist
        C: c STATUS INBOX (HIGHESTMODSEQ)
        S: c BAD STATUS item HIGHESTMODSEQ is not supported
        """
    )


def test_list_extended_refused(conv: IMAPConversation) -> None:
    conv.exchange(
        """
        C: a LIST (SUBSCRIBED) "" *
        S: a BAD LIST-EXTENDED is not supported
        """
    )
