"""Byte-level transcripts for the IMAP command parser: wire bytes → command object.

Every transcript goes through the real framer first (``parse``), accepting each
synchronizing literal as the session would, so framing and parsing are tested
together exactly as a client drives them.
"""

from __future__ import annotations

import datetime

import pytest

from mailaccess.imap import commands as c
from mailaccess.imap.fetch import FetchItem
from mailaccess.imap.framing import CommandFramer, LiteralRequest, RawCommand
from mailaccess.imap.lexer import ParseError
from mailaccess.imap.parser import decode_sasl_response, is_idle_done, parse_command
from mailaccess.imap.search import All, And, Flag
from mailaccess.imap.sequence import STAR, SequenceSet


def frame(data: bytes) -> RawCommand:
    """Frame exactly one command from ``data``, accepting synchronizing literals."""
    framer = CommandFramer()
    framer.feed(data)
    while True:
        event = framer.next_event()
        if isinstance(event, LiteralRequest):
            framer.accept_literal()
            continue
        if isinstance(event, ParseError):
            raise event
        assert isinstance(event, RawCommand), f"framer gave {event!r} for {data!r}"
        assert framer.next_event() is None, "test data holds more than one command"
        return event


def parse(data: bytes) -> c.Command:
    """The command object for one command's wire bytes (CRLF included)."""
    return parse_command(frame(data))


def bad(data: bytes) -> ParseError:
    """The ParseError that ``data`` must cause."""
    with pytest.raises(ParseError) as info:
        parse(data)
    return info.value


def seq(text: str) -> SequenceSet:
    return SequenceSet.parse(text)


# --- tags and command names (RFC 3501 §2.2.1, §9) ---------------------------------


def test_command_names_are_case_insensitive_rfc3501_9() -> None:
    assert parse(b"a1 noop\r\n") == c.Noop("a1")
    assert parse(b"A.1 CaPaBiLiTy\r\n") == c.Capability("A.1")


def test_tag_may_hold_any_astring_char_but_plus_rfc3501_9() -> None:
    assert parse(b"x]y NOOP\r\n") == c.Noop("x]y")
    assert bad(b"+x NOOP\r\n").tag is None
    assert bad(b"a+b NOOP\r\n").tag is None


def test_missing_command_name_is_bad_with_tag_rfc3501_9() -> None:
    err = bad(b"a1\r\n")
    assert err.tag == "a1"
    assert "space" in err.reason


def test_unknown_command_names_it_rfc3501_9() -> None:
    err = bad(b"t7 FROB x\r\n")
    assert err.tag == "t7"
    assert "FROB" in err.reason


def test_empty_line_is_an_untagged_error_rfc3501_9() -> None:
    assert bad(b"\r\n").tag is None


def test_double_space_is_rejected_rfc3501_9() -> None:
    assert bad(b"a1  NOOP\r\n").tag == "a1"
    assert bad(b"a1 SELECT  INBOX\r\n").tag == "a1"


def test_trailing_garbage_is_rejected_rfc3501_9() -> None:
    err = bad(b"a1 NOOP extra\r\n")
    assert err.tag == "a1"
    assert "end of command" in err.reason


def test_bare_lf_line_end_is_tolerated() -> None:
    # Some clients (and telnet users) send LF alone; Dovecot accepts it too.
    assert parse(b"a1 NOOP\n") == c.Noop("a1")


# --- any state (RFC 3501 §6.1) --------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "cls"),
    [
        (b"a CAPABILITY\r\n", c.Capability),
        (b"a NOOP\r\n", c.Noop),
        (b"a LOGOUT\r\n", c.Logout),
        (b"a STARTTLS\r\n", c.StartTLS),
        (b"a CHECK\r\n", c.Check),
        (b"a CLOSE\r\n", c.Close),
        (b"a UNSELECT\r\n", c.Unselect),
        (b"a IDLE\r\n", c.Idle),
        (b"a NAMESPACE\r\n", c.Namespace),
    ],
)
def test_commands_without_arguments_rfc3501_6_1(line: bytes, cls: type[c.Command]) -> None:
    assert parse(line) == cls("a")
    assert bad(line[:-2] + b" x\r\n").tag == "a"


def test_id_with_parameters_rfc2971_3_1() -> None:
    assert parse(b'a ID ("name" "sodr" "version" "19.34" "vendor" NIL)\r\n') == c.Id(
        "a", (("name", "sodr"), ("version", "19.34"), ("vendor", None))
    )


def test_id_nil_and_empty_rfc2971_3_1() -> None:
    assert parse(b"a ID NIL\r\n") == c.Id("a", None)
    assert parse(b"a ID ()\r\n") == c.Id("a", ())


def test_id_invalid_forms_rfc2971_4() -> None:
    bad(b"a ID\r\n")
    bad(b"a ID foo\r\n")
    bad(b'a ID ("name")\r\n')
    many = b" ".join(b'"k%d" "v"' % i for i in range(31))
    assert "30" in bad(b"a ID (" + many + b")\r\n").reason


# --- not authenticated state (RFC 3501 §6.2) ---------------------------------------


def test_login_atoms_rfc3501_6_2_3() -> None:
    assert parse(b"a1 LOGIN alice secret\r\n") == c.Login("a1", b"alice", b"secret")


def test_login_quoted_with_escapes_rfc3501_9() -> None:
    cmd = parse(b'a1 LOGIN "al ice" "pa\\"ss\\\\word"\r\n')
    assert cmd == c.Login("a1", b"al ice", b'pa"ss\\word')


def test_login_literals_rfc3501_4_3() -> None:
    cmd = parse(b"a1 LOGIN {5}\r\nalice {6+}\r\nse\r\nrt\r\n")
    assert cmd == c.Login("a1", b"alice", b"se\r\nrt")


def test_login_empty_quoted_password_rfc3501_9() -> None:
    assert parse(b'a1 LOGIN alice ""\r\n') == c.Login("a1", b"alice", b"")


def test_login_password_not_in_repr() -> None:
    assert "secret" not in repr(parse(b"a1 LOGIN alice secret\r\n"))


def test_login_invalid_forms_rfc3501_6_2_3() -> None:
    bad(b"a1 LOGIN alice\r\n")
    bad(b"a1 LOGIN alice secret more\r\n")
    bad(b'a1 LOGIN "alice secret\r\n')
    bad(b'a1 LOGIN "a\\lice" secret\r\n')  # only \\ and \" are escapes
    bad(b"a1 LOGIN al(ice secret\r\n")


def test_authenticate_without_initial_response_rfc3501_6_2_2() -> None:
    assert parse(b"a AUTHENTICATE plain\r\n") == c.Authenticate("a", "PLAIN", None)


def test_authenticate_sasl_ir_rfc4959_3() -> None:
    cmd = parse(b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert cmd == c.Authenticate("a", "PLAIN", b"\0alice\0secret")


def test_authenticate_empty_initial_response_rfc4959_3() -> None:
    assert parse(b"a AUTHENTICATE EXTERNAL =\r\n") == c.Authenticate("a", "EXTERNAL", b"")


def test_authenticate_invalid_base64_rfc4959_3() -> None:
    assert "base64" in bad(b"a AUTHENTICATE PLAIN AGFsa!!\r\n").reason
    assert "base64" in bad(b"a AUTHENTICATE PLAIN abc\r\n").reason


def test_sasl_continuation_lines_rfc3501_6_2_2() -> None:
    assert decode_sasl_response(b"YWxpY2U=") == b"alice"
    assert decode_sasl_response(b"=") == b""
    with pytest.raises(ParseError):
        decode_sasl_response(b"not base64!", "a1")


def test_idle_done_rfc2177_3() -> None:
    assert is_idle_done(b"DONE")
    assert is_idle_done(b"done")
    assert not is_idle_done(b"DONE now")


# --- authenticated state (RFC 3501 §6.3) -------------------------------------------


def test_select_inbox_any_case_rfc3501_5_1() -> None:
    assert parse(b"a SELECT inbox\r\n") == c.Select("a", "INBOX")
    assert parse(b'a SELECT "InBoX"\r\n') == c.Select("a", "INBOX")
    assert parse(b"a SELECT INBOX.Sub\r\n") == c.Select("a", "INBOX.Sub")
    assert parse(b"a SELECT inboxes\r\n") == c.Select("a", "inboxes")


def test_select_modified_utf7_name_kept_as_sent_rfc3501_5_1_3() -> None:
    assert parse(b"a SELECT &ZeVnLIqe-\r\n") == c.Select("a", "&ZeVnLIqe-")


def test_select_condstore_parameter_rfc7162_3_1_8() -> None:
    assert parse(b"a SELECT INBOX (CONDSTORE)\r\n") == c.Select(
        "a", "INBOX", (c.Parameter("CONDSTORE"),)
    )


def test_select_qresync_parameter_rfc7162_3_2_5() -> None:
    cmd = parse(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211))\r\n")
    assert cmd == c.Select(
        "a", "INBOX", (c.Parameter("QRESYNC", (67890007, 20050715194045000, "41,43:211")),)
    )


def test_select_unknown_parameter_rfc3501_6_3_1() -> None:
    assert "FOO" in bad(b"a SELECT INBOX (FOO)\r\n").reason


def test_examine_is_its_own_class_rfc3501_6_3_2() -> None:
    cmd = parse(b"a EXAMINE Archive\r\n")
    assert cmd == c.Examine("a", "Archive")
    assert not isinstance(cmd, c.Select)


def test_create_delete_subscribe_rfc3501_6_3_3() -> None:
    assert parse(b"a CREATE owatagusiam/\r\n") == c.Create("a", "owatagusiam/")
    assert parse(b"a DELETE blurdybloop\r\n") == c.Delete("a", "blurdybloop")
    assert parse(b"a SUBSCRIBE #news.comp.mail.mime\r\n") == c.Subscribe(
        "a", "#news.comp.mail.mime"
    )
    assert parse(b'a UNSUBSCRIBE "x y"\r\n') == c.Unsubscribe("a", "x y")
    bad(b"a CREATE\r\n")
    bad(b"a DELETE a b\r\n")


def test_create_special_use_rfc6154_3() -> None:
    assert parse(b"a CREATE Sent (USE (\\Sent))\r\n") == c.Create(
        "a", "Sent", (c.Parameter("USE", ("\\Sent",)),)
    )


def test_rename_rfc3501_6_3_5() -> None:
    assert parse(b"a RENAME blurdybloop sarasoop\r\n") == c.Rename("a", "blurdybloop", "sarasoop")
    bad(b"a RENAME blurdybloop\r\n")


def test_list_rfc3501_6_3_8() -> None:
    assert parse(b'a LIST "" *\r\n') == c.List("a", "", ("*",))
    assert parse(b"a LIST ~/Mail/ %\r\n") == c.List("a", "~/Mail/", ("%",))
    assert parse(b'a LIST "" ""\r\n') == c.List("a", "", ("",))
    assert parse(b"a LIST #news. comp.mail.*\r\n") == c.List("a", "#news.", ("comp.mail.*",))


def test_list_extended_rfc5258_6() -> None:
    cmd = parse(
        b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Drafts" %) '
        b"RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n"
    )
    assert cmd == c.List(
        "a",
        "",
        ("INBOX", "Drafts", "%"),
        ("SUBSCRIBED", "RECURSIVEMATCH"),
        (c.ListReturnOption("CHILDREN"), c.ListReturnOption("STATUS", ("MESSAGES", "UNSEEN"))),
        extended=True,
    )


def test_list_extended_return_only_rfc5258_6() -> None:
    cmd = parse(b'a LIST "" % RETURN (SPECIAL-USE)\r\n')
    assert isinstance(cmd, c.List)
    assert cmd.returns == (c.ListReturnOption("SPECIAL-USE"),)
    assert cmd.extended


def test_list_invalid_rfc3501_6_3_8() -> None:
    bad(b'a LIST ""\r\n')
    bad(b'a LIST "" * EXTRA\r\n')
    bad(b'a LIST "" * RETURN CHILDREN\r\n')


def test_lsub_rfc3501_6_3_9() -> None:
    assert parse(b'a LSUB "#news." "comp.mail.*"\r\n') == c.Lsub("a", "#news.", "comp.mail.*")


def test_status_rfc3501_6_3_10() -> None:
    assert parse(b"a STATUS blurdybloop (UIDNEXT messages)\r\n") == c.Status(
        "a", "blurdybloop", ("UIDNEXT", "MESSAGES")
    )


def test_status_invalid_rfc3501_6_3_10() -> None:
    assert "FOO" in bad(b"a STATUS INBOX (FOO)\r\n").reason
    assert "at least one" in bad(b"a STATUS INBOX ()\r\n").reason
    bad(b"a STATUS INBOX MESSAGES\r\n")


MESSAGE = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nSubject: hi\r\n\r\nHello\r\n"


def test_append_plain_rfc3501_6_3_11() -> None:
    data = b"A003 APPEND saved-messages {%d}\r\n%s\r\n" % (len(MESSAGE), MESSAGE)
    assert parse(data) == c.Append("A003", "saved-messages", (c.AppendMessage(MESSAGE),))


def test_append_flags_and_date_rfc3501_6_3_11() -> None:
    data = (
        b'A003 APPEND INBOX (\\seen $Forwarded) " 7-Feb-1994 21:52:25 -0800" {%d+}\r\n%s\r\n'
        % (
            len(MESSAGE),
            MESSAGE,
        )
    )
    cmd = parse(data)
    when = datetime.datetime(
        1994, 2, 7, 21, 52, 25, tzinfo=datetime.timezone(datetime.timedelta(hours=-8))
    )
    assert cmd == c.Append(
        "A003", "INBOX", (c.AppendMessage(MESSAGE, ("\\Seen", "$Forwarded"), when),)
    )


def test_append_empty_flag_list_rfc3501_9() -> None:
    cmd = parse(b"a APPEND INBOX () {1}\r\nx\r\n")
    assert cmd == c.Append("a", "INBOX", (c.AppendMessage(b"x", ()),))


def test_multiappend_rfc3502_6_3_11() -> None:
    cmd = parse(b"a APPEND INBOX {1+}\r\nx (\\Draft) {2+}\r\nyz\r\n")
    assert cmd == c.Append(
        "a", "INBOX", (c.AppendMessage(b"x"), c.AppendMessage(b"yz", ("\\Draft",)))
    )


def test_append_invalid_rfc3501_6_3_11() -> None:
    assert "literal" in bad(b'a APPEND INBOX "message"\r\n').reason
    assert "message" in bad(b"a APPEND INBOX\r\n").reason
    assert "date-time" in bad(b'a APPEND INBOX "7-Feb-94 21:52" {1}\r\nx\r\n').reason
    assert "month" in bad(b'a APPEND INBOX "07-Fob-1994 21:52:25 -0800" {1}\r\nx\r\n').reason
    bad(b'a APPEND INBOX "31-Feb-1994 21:52:25 -0800" {1}\r\nx\r\n')
    assert "Recent" in bad(b"a APPEND INBOX (\\Recent) {1}\r\nx\r\n").reason


def test_enable_rfc5161_3_1() -> None:
    assert parse(b"a ENABLE condstore X-GOOD-IDEA\r\n") == c.Enable(
        "a", ("CONDSTORE", "X-GOOD-IDEA")
    )
    bad(b"a ENABLE\r\n")


# --- selected state (RFC 3501 §6.4) ------------------------------------------------


def test_expunge_and_uid_expunge_rfc4315_2_1() -> None:
    assert parse(b"a EXPUNGE\r\n") == c.Expunge("a")
    cmd = parse(b"a UID EXPUNGE 3000:3002\r\n")
    assert cmd == c.Expunge("a", seq("3000:3002"))
    assert isinstance(cmd, c.Expunge)
    assert cmd.uid
    bad(b"a UID EXPUNGE\r\n")


def test_store_forms_rfc3501_6_4_6() -> None:
    assert parse(b"a STORE 2:4 +FLAGS (\\Deleted)\r\n") == c.Store(
        "a", False, seq("2:4"), "add", False, ("\\Deleted",)
    )
    assert parse(b"a STORE 1 -flags.silent (\\Seen foo)\r\n") == c.Store(
        "a", False, seq("1"), "remove", True, ("\\Seen", "foo")
    )
    assert parse(b"a STORE * FLAGS ()\r\n") == c.Store("a", False, seq("*"), "replace", False, ())


def test_store_bare_flags_rfc3501_9() -> None:
    assert parse(b"a STORE 1 +FLAGS \\Seen \\Flagged\r\n") == c.Store(
        "a", False, seq("1"), "add", False, ("\\Seen", "\\Flagged")
    )


def test_uid_store_unchangedsince_rfc7162_3_1_3() -> None:
    assert parse(b"a UID STORE 5 (UNCHANGEDSINCE 12345) +FLAGS.SILENT (\\Seen)\r\n") == c.Store(
        "a", True, seq("5"), "add", True, ("\\Seen",), (c.Parameter("UNCHANGEDSINCE", 12345),)
    )


def test_store_invalid_rfc3501_6_4_6() -> None:
    assert "LABELS" in bad(b"a STORE 1 +LABELS (x)\r\n").reason
    bad(b"a STORE 1 +FLAGS\r\n")
    bad(b"a STORE 0 +FLAGS (\\Seen)\r\n")
    bad(b"a STORE 1 +FLAGS (\\Seen\r\n")
    bad(b"a STORE 1 FLAGS (\\*)\r\n")
    assert "Recent" in bad(b"a STORE 1 +FLAGS (\\Recent)\r\n").reason


def test_copy_and_move_rfc6851_3_1() -> None:
    assert parse(b"a COPY 2:4 MEETING\r\n") == c.Copy("a", False, seq("2:4"), "MEETING")
    assert parse(b"a UID COPY 1:* inbox\r\n") == c.Copy("a", True, seq("1:*"), "INBOX")
    cmd = parse(b"a UID MOVE 42:69 foo\r\n")
    assert cmd == c.Move("a", True, seq("42:69"), "foo")
    assert not isinstance(cmd, c.Copy)
    bad(b"a COPY 2:4\r\n")
    bad(b"a MOVE x y\r\n")


def test_uid_unknown_subcommand_rfc3501_6_4_8() -> None:
    assert "UID SELECT" in bad(b"a UID SELECT INBOX\r\n").reason


# --- FETCH (RFC 3501 §6.4.5; detailed item tests in test_parser_fetch.py) -----------


def test_fetch_macro_rfc3501_6_4_5() -> None:
    cmd = parse(b"a FETCH 2:4 fast\r\n")
    assert cmd == c.Fetch(
        "a",
        False,
        seq("2:4"),
        (FetchItem("FLAGS"), FetchItem("INTERNALDATE"), FetchItem("RFC822.SIZE")),
    )


def test_fetch_changedsince_modifier_rfc7162_3_1_4() -> None:
    cmd = parse(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n")
    assert isinstance(cmd, c.Fetch)
    assert cmd.modifiers == (c.Parameter("CHANGEDSINCE", 12345), c.Parameter("VANISHED"))


# --- SEARCH (RFC 3501 §6.4.4; detailed key tests in test_parser_search.py) ----------


def test_search_charset_and_return_rfc4731_3() -> None:
    cmd = parse(b"a UID SEARCH RETURN (MIN COUNT) CHARSET utf-8 SEEN\r\n")
    assert cmd == c.Search("a", True, And((Flag("\\Seen"),)), "UTF-8", ("MIN", "COUNT"))


def test_sequence_set_star_rfc3501_9() -> None:
    cmd = parse(b"a FETCH *:4,7 UID\r\n")
    assert isinstance(cmd, c.Fetch)
    assert cmd.sequence_set.ranges == ((STAR, 4), (7, 7))


def test_mailbox_name_with_crlf_or_bad_utf8_is_refused_rfc3501_5_1() -> None:
    assert "CR" in bad(b"a CREATE {5}\r\na\r\nbc\r\n").reason
    assert "UTF-8" in bad(b'a CREATE "caf\xe9"\r\n').reason
    assert parse(b'a CREATE "caf\xc3\xa9"\r\n') == c.Create("a", "café")


def test_append_literal8_marks_binary_rfc3516_4_4() -> None:
    cmd = parse(b"a APPEND INBOX ~{3}\r\n\x00\xff\n\r\n")
    assert cmd == c.Append("a", "INBOX", (c.AppendMessage(b"\x00\xff\n", binary=True),))
    assert "literal" in bad(b"a APPEND INBOX ~x\r\n").reason


def test_sort_rfc5256_3() -> None:
    cmd = parse(b"a UID SORT (REVERSE DATE subject) UTF-8 ALL\r\n")
    assert cmd == c.Sort("a", True, (("DATE", True), ("SUBJECT", False)), "UTF-8", And((All(),)))
    assert "FOO" in bad(b"a SORT (FOO) UTF-8 ALL\r\n").reason
    bad(b"a SORT (DATE) ALL\r\n")  # the charset is required
    bad(b"a SORT () UTF-8 ALL\r\n")
    bad(b"a SORT (REVERSE) UTF-8 ALL\r\n")


def test_thread_rfc5256_3() -> None:
    cmd = parse(b"a THREAD references US-ASCII SINCE 1-Feb-1994\r\n")
    assert isinstance(cmd, c.Thread)
    assert (cmd.uid, cmd.algorithm, cmd.charset) == (False, "REFERENCES", "US-ASCII")
    bad(b"a THREAD REFERENCES\r\n")
