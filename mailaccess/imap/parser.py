"""The IMAP4rev1 command parser: a framed command in, a command object out.

``parse_command(raw)`` takes a :class:`~mailaccess.imap.framing.RawCommand` from
the framer and returns one of the classes in :mod:`mailaccess.imap.commands`, or
raises :class:`~mailaccess.imap.lexer.ParseError` (carrying the tag when it could
be read) for the session to answer with ``BAD``.  It never raises anything else
on client input.

The grammar is RFC 3501 §9, read by recursive descent: one function per command,
registered in ``_COMMANDS`` (``_UID_COMMANDS`` for those allowed after ``UID``).
An extension that adds a command adds a function and a table entry; one that
adds arguments to an existing command (CONDSTORE, ESEARCH, LIST-EXTENDED,
BINARY…) extends that command's function, whose command class has a field
reserved for it.  IMAP4rev2 (RFC 9051) changes no syntax that this parser
rejects except the UTF-8 it already lets through in quoted strings.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Callable

from mailaccess.imap import commands as c
from mailaccess.imap.fetch import read_fetch_attributes
from mailaccess.imap.framing import RawCommand
from mailaccess.imap.lexer import MAX_NUMBER64, ParseError, Reader
from mailaccess.imap.search import And, read_search_program
from mailaccess.imap.sequence import read_sequence_set

__all__ = [
    "SYSTEM_FLAGS",
    "ParseError",
    "decode_sasl_response",
    "is_idle_done",
    "parse_command",
    "parse_date_time",
]

#: RFC 3501 §2.3.2 system flags by upper-case name, for case-insensitive matching.
SYSTEM_FLAGS = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}

_MONTHS = {
    m.encode(): i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}


def parse_command(raw: RawCommand) -> c.Command:
    """Parse one framed command into its command object; raises ParseError."""
    reader = Reader(raw.lines, raw.literals)
    if not raw.lines[0] and not raw.literals:
        raise ParseError("empty command line")
    reader.read_tag()
    reader.sp()
    name = reader.keyword("a command name")
    parse = _COMMANDS.get(name)
    if parse is None:
        raise reader.error(f"unknown command {name}")
    command = parse(reader)
    reader.end()
    return command


def decode_sasl_response(line: bytes, tag: str | None = None) -> bytes:
    """Decode one AUTHENTICATE client response line (RFC 3501 §6.2.2, RFC 4959 ``=``).

    Raises ParseError for data that is not base64; the caller checks for ``*``
    (the client cancelling) before calling this.
    """
    if line == b"=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError("invalid base64 in authentication data", tag) from None


def is_idle_done(line: bytes) -> bool:
    """Whether a raw line ends IDLE (RFC 2177 §3: ``DONE``, case-insensitive)."""
    return line.upper() == b"DONE"


def parse_date_time(text: bytes) -> datetime.datetime:
    """RFC 3501 §9 ``date-time`` contents, e.g. ``17-Jul-1996 02:44:25 -0700``.

    The day may be ``" 7"``, ``"07"`` or (leniently, as some clients send it) ``"7"``.
    Raises ValueError; the parser turns that into a ParseError.
    """
    if len(text) == 26 and text[0:1] == b" ":
        text = b"0" + text[1:]
    elif len(text) == 25:
        text = b"0" + text
    bad = "date-time must look like 17-Jul-1996 02:44:25 -0700"
    # Fixed layout: dd-Mon-yyyy hh:mm:ss +zzzz (26 octets).
    if len(text) != 26 or text[2:3] != b"-" or text[6:7] != b"-":
        raise ValueError(bad)
    if text[11:12] != b" " or text[14:15] != b":" or text[17:18] != b":" or text[20:21] != b" ":
        raise ValueError(bad)
    month = _MONTHS.get(text[3:6].upper())
    if month is None:
        raise ValueError("invalid month in date-time (Jan, Feb, ... Dec)")
    sign = text[21:22]
    digits = (text[0:2], text[7:11], text[12:14], text[15:17], text[18:20], text[22:26])
    if sign not in (b"+", b"-") or not all(d.isdigit() and d.isascii() for d in digits):
        raise ValueError(bad)
    day, year, hour, minute, second, zone = (int(d) for d in digits)
    if zone % 100 >= 60:
        raise ValueError("invalid time zone in date-time")
    zone_minutes = (zone // 100) * 60 + zone % 100
    offset = datetime.timedelta(minutes=zone_minutes if sign == b"+" else -zone_minutes)
    # datetime raises ValueError for 31-Feb or hour 25, which the caller reports.
    return datetime.datetime(
        year, month, day, hour, minute, second, tzinfo=datetime.timezone(offset)
    )


# --- shared pieces ---------------------------------------------------------------


def _flag(reader: Reader, allow_recent: bool = False) -> str:
    """RFC 3501 §9 ``flag``: a system flag (case folded to its usual spelling) or keyword."""
    if reader.maybe(0x5C):  # "\"
        name = "\\" + reader.atom("a flag name after \\").decode("ascii")
        canonical = SYSTEM_FLAGS.get(name.upper())
        if canonical == "\\Recent" and not allow_recent:
            # RFC 3501 §2.3.2: \Recent is set by the server only.
            raise reader.error("\\Recent cannot be set by a client")
        return canonical or name
    return reader.atom("a flag").decode("ascii")


def _flag_list(reader: Reader) -> tuple[str, ...]:
    """RFC 3501 §9 ``flag-list = "(" [flag *(SP flag)] ")"``."""
    reader.skip(0x28, '"(" to start the flag list')
    flags: list[str] = []
    if not reader.maybe(0x29):
        flags.append(_flag(reader))
        while reader.maybe(0x20):
            flags.append(_flag(reader))
        reader.skip(0x29, '")" to close the flag list')
    return tuple(dict.fromkeys(flags))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _parameters(reader: Reader, known: dict[str, str]) -> tuple[c.Parameter, ...]:
    """A parenthesized extension parameter list, e.g. ``(CHANGEDSINCE 5 VANISHED)``.

    ``known`` maps each parameter the command accepts to the kind of value it
    takes: ``"none"``, ``"number"`` (number64) or ``"list"``.  Knowing the kind is
    what makes ``(CONDSTORE QRESYNC (...))`` unambiguous.
    """
    reader.skip(0x28, '"(" to start the parameter list')
    params = []
    while True:
        name = reader.keyword("a parameter name")
        kind = known.get(name)
        if kind is None:
            raise reader.error(f"unknown parameter {name}")
        value: c.ParameterValue = None
        if kind == "number":
            reader.sp()
            value = reader.number(f"a number for {name}", MAX_NUMBER64)
        elif kind == "list":
            reader.sp()
            value = _generic_list(reader, 0)
        params.append(c.Parameter(name, value))
        if not reader.maybe(0x20):
            break
    reader.skip(0x29, '")" to close the parameter list')
    return tuple(params)


def _generic_list(reader: Reader, depth: int) -> tuple[c.ParameterValue, ...]:
    # A parenthesized list of numbers, atoms, strings and lists, for parameters whose
    # meaning the session interprets (QRESYNC, CREATE USE, LIST RETURN STATUS).
    if depth > 8:
        raise reader.error("parameter list nested too deeply")
    reader.skip(0x28, '"(" to start a list')
    items: list[c.ParameterValue] = []
    if reader.maybe(0x29):
        return ()
    while True:
        ch = reader.peek()
        if ch == 0x28:
            items.append(_generic_list(reader, depth + 1))
        elif ch in (0x22, 0x7B):
            items.append(_text(reader.string()))
        elif ch == 0x5C:
            reader.pos += 1
            items.append("\\" + reader.atom().decode("ascii"))
        else:
            word = reader.atom("a list element").decode("ascii")
            items.append(int(word) if word.isdigit() and len(word) <= 20 else word)
        if not reader.maybe(0x20):
            break
    reader.skip(0x29, '")" to close a list')
    return tuple(items)


def _no_arguments(cls: Callable[[str], c.Command]) -> Callable[[Reader], c.Command]:
    def parse(reader: Reader) -> c.Command:
        assert reader.tag is not None
        return cls(reader.tag)

    return parse


# --- the commands ------------------------------------------------------------------


def _authenticate(reader: Reader) -> c.Command:
    # RFC 3501 §6.2.2 and §9; SASL-IR RFC 4959 §3: [SP initial-response]
    reader.sp()
    mechanism = reader.keyword("a SASL mechanism name")
    initial = None
    if reader.maybe(0x20):
        initial = decode_sasl_response(reader.atom("an initial response"), reader.tag)
    return c.Authenticate(_tag(reader), mechanism, initial)


def _login(reader: Reader) -> c.Command:
    # RFC 3501 §6.2.3: LOGIN SP userid SP password
    reader.sp()
    user = reader.astring("a user name")
    reader.sp()
    password = reader.astring("a password")
    return c.Login(_tag(reader), user, password)


def _select(reader: Reader) -> c.Command:
    # RFC 3501 §6.3.1, RFC 7162 §3.1.8/§3.2.5 select-params
    reader.sp()
    mailbox = reader.mailbox()
    params: tuple[c.Parameter, ...] = ()
    if reader.maybe(0x20):
        params = _parameters(reader, {"CONDSTORE": "none", "QRESYNC": "list"})
    return c.Select(_tag(reader), mailbox, params)


def _examine(reader: Reader) -> c.Command:
    # RFC 3501 §6.3.2
    sel = _select(reader)
    assert isinstance(sel, c.Select)
    return c.Examine(sel.tag, sel.mailbox, sel.parameters)


def _create(reader: Reader) -> c.Command:
    # RFC 3501 §6.3.3; RFC 6154 §3: create-param "USE" SP "(" use-attr ... ")"
    reader.sp()
    mailbox = reader.mailbox()
    params: tuple[c.Parameter, ...] = ()
    if reader.maybe(0x20):
        params = _parameters(reader, {"USE": "list"})
    return c.Create(_tag(reader), mailbox, params)


def _one_mailbox(
    cls: type[c.Delete] | type[c.Subscribe] | type[c.Unsubscribe],
) -> Callable[[Reader], c.Command]:
    def parse(reader: Reader) -> c.Command:
        reader.sp()
        return cls(_tag(reader), reader.mailbox())

    return parse


def _rename(reader: Reader) -> c.Command:
    # RFC 3501 §6.3.5
    reader.sp()
    old = reader.mailbox()
    reader.sp()
    return c.Rename(_tag(reader), old, reader.mailbox())


def _list(reader: Reader) -> c.Command:
    # RFC 3501 §6.3.8; RFC 5258 §6 list = "LIST" [SP list-select-opts] SP mailbox
    #   SP mbox-or-pat [SP list-return-opts]
    reader.sp()
    extended = False
    selection: tuple[str, ...] = ()
    if reader.peek() == 0x28:
        extended = True
        selection = _atom_list(reader, "a LIST selection option")
        reader.sp()
    reference = _text(reader.astring("a reference name"))
    reader.sp()
    if reader.peek() == 0x28:
        extended = True
        reader.pos += 1
        patterns = [_text(reader.list_mailbox())]
        while reader.maybe(0x20):
            patterns.append(_text(reader.list_mailbox()))
        reader.skip(0x29, '")" to close the pattern list')
    else:
        patterns = [_text(reader.list_mailbox())]
    returns: list[c.ListReturnOption] = []
    if reader.maybe(0x20):
        extended = True
        if reader.keyword("RETURN") != "RETURN":
            raise reader.error("expected RETURN after the LIST pattern")
        reader.sp()
        reader.skip(0x28, '"(" after RETURN')
        if not reader.maybe(0x29):
            while True:
                name = reader.keyword("a LIST return option")
                args: tuple[str, ...] = ()
                if reader.peek_bytes(2) == b" (":
                    reader.pos += 1
                    args = _atom_list(reader, "a return option argument")
                returns.append(c.ListReturnOption(name, args))
                if not reader.maybe(0x20):
                    break
            reader.skip(0x29, '")" to close the return options')
    return c.List(_tag(reader), reference, tuple(patterns), selection, tuple(returns), extended)


def _atom_list(reader: Reader, what: str) -> tuple[str, ...]:
    reader.skip(0x28, '"("')
    items: list[str] = []
    if not reader.maybe(0x29):
        items.append(reader.keyword(what))
        while reader.maybe(0x20):
            items.append(reader.keyword(what))
        reader.skip(0x29, '")"')
    return tuple(items)


def _lsub(reader: Reader) -> c.Command:
    # RFC 3501 §6.3.9
    reader.sp()
    reference = _text(reader.astring("a reference name"))
    reader.sp()
    return c.Lsub(_tag(reader), reference, _text(reader.list_mailbox()))


# RFC 3501 §6.3.10 status-att; HIGHESTMODSEQ RFC 7162 §3.1.6; SIZE RFC 8438;
# DELETED RFC 9051 §6.3.11; APPENDLIMIT RFC 7889.
_STATUS_ITEMS = frozenset(
    {
        "MESSAGES",
        "RECENT",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "HIGHESTMODSEQ",
        "SIZE",
        "DELETED",
        "APPENDLIMIT",
    }
)


def _status(reader: Reader) -> c.Command:
    # RFC 3501 §6.3.10: STATUS SP mailbox SP "(" status-att *(SP status-att) ")"
    reader.sp()
    mailbox = reader.mailbox()
    reader.sp()
    items = _atom_list(reader, "a STATUS item")
    if not items:
        raise reader.error("STATUS needs at least one item")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise reader.error(f"unknown STATUS item {item}")
    return c.Status(_tag(reader), mailbox, items)


def _append(reader: Reader) -> c.Command:
    # RFC 3501 §6.3.11: APPEND SP mailbox [SP flag-list] [SP date-time] SP literal
    # RFC 3502 §6 (MULTIAPPEND): further *(SP [flag-list SP] [date-time SP] literal)
    reader.sp()
    mailbox = reader.mailbox()
    messages = []
    while reader.maybe(0x20):
        flags: tuple[str, ...] = ()
        when = None
        if reader.peek() == 0x28:
            flags = _flag_list(reader)
            reader.sp()
        if reader.peek() == 0x22:
            raw = reader.quoted()
            try:
                when = parse_date_time(raw)
            except ValueError as e:
                raise reader.error(
                    f"APPEND takes [flags] [date-time] and a literal message; {e}"
                ) from None
            reader.sp()
        binary = reader.maybe(0x7E)  # "~{n}" literal8, RFC 3516 §4.4
        if reader.peek() != 0x7B:
            raise reader.error("APPEND needs the message as a literal {size}")
        messages.append(c.AppendMessage(reader.literal(), flags, when, binary))
    if not messages:
        raise reader.error("APPEND needs a message")
    return c.Append(_tag(reader), mailbox, tuple(messages))


def _enable(reader: Reader) -> c.Command:
    # RFC 5161 §3.1: ENABLE 1*(SP capability)
    caps = []
    while reader.maybe(0x20):
        caps.append(reader.keyword("a capability name"))
    if not caps:
        raise reader.error("ENABLE needs at least one capability")
    return c.Enable(_tag(reader), tuple(caps))


def _id(reader: Reader) -> c.Command:
    # RFC 2971 §4: "ID" SP id-params-list; id-params-list = "(" *(string SP nstring) ")" / nil
    reader.sp()
    if reader.peek() != 0x28:
        if reader.keyword("NIL or a list") != "NIL":
            raise reader.error("ID takes NIL or a parenthesized list")
        return c.Id(_tag(reader), None)
    reader.pos += 1
    params: list[tuple[str, str | None]] = []
    if not reader.maybe(0x29):
        while True:
            key = _text(reader.string("an ID field name"))
            reader.sp()
            value = reader.nstring("an ID field value")
            params.append((key, None if value is None else _text(value)))
            if not reader.maybe(0x20):
                break
        reader.skip(0x29, '")" to close the ID list')
    if len(params) > 30:
        # RFC 2971 §3.3: no more than 30 field-value pairs.
        raise reader.error("ID sends at most 30 field-value pairs")
    return c.Id(_tag(reader), tuple(params))


def _expunge(reader: Reader, uid: bool = False) -> c.Command:
    # RFC 3501 §6.4.3; UID EXPUNGE SP sequence-set (RFC 4315 §2.1)
    if not uid:
        return c.Expunge(_tag(reader))
    reader.sp()
    return c.Expunge(_tag(reader), read_sequence_set(reader))


def _search(reader: Reader, uid: bool = False) -> c.Command:
    # RFC 3501 §6.4.4: SEARCH [SP "CHARSET" SP astring] 1*(SP search-key)
    # RFC 4731 §3: [SP "RETURN" SP "(" [search-return-opt *(SP ...)] ")"] first.
    reader.sp()
    returns = None
    charset = None
    if reader.peek_bytes(7).upper() == b"RETURN ":
        reader.pos += 7
        returns = _atom_list(reader, "a SEARCH return option")
        reader.sp()
    if reader.peek_bytes(8).upper() == b"CHARSET ":
        reader.pos += 8
        charset = _text(reader.astring("a charset name")).upper()
        reader.sp()
    program = read_search_program(reader, charset)
    return c.Search(_tag(reader), uid, program, charset, returns)


def _fetch(reader: Reader, uid: bool = False) -> c.Command:
    # RFC 3501 §6.4.5: FETCH SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att /
    #   "(" fetch-att *(SP fetch-att) ")");  RFC 7162 §3.1.4 [SP fetch-modifiers]
    reader.sp()
    seqset = read_sequence_set(reader)
    reader.sp()
    attributes = read_fetch_attributes(reader)
    modifiers: tuple[c.Parameter, ...] = ()
    if reader.maybe(0x20):
        modifiers = _parameters(reader, {"CHANGEDSINCE": "number", "VANISHED": "none"})
    return c.Fetch(_tag(reader), uid, seqset, attributes, modifiers)


def _store(reader: Reader, uid: bool = False) -> c.Command:
    # RFC 3501 §6.4.6: STORE SP sequence-set SP store-att-flags
    # RFC 7162 §3.1.3: [SP store-modifiers] before the flags.
    reader.sp()
    seqset = read_sequence_set(reader)
    reader.sp()
    modifiers: tuple[c.Parameter, ...] = ()
    if reader.peek() == 0x28:
        modifiers = _parameters(reader, {"UNCHANGEDSINCE": "number"})
        reader.sp()
    mode = "replace"
    if reader.maybe(0x2B):  # "+"
        mode = "add"
    elif reader.maybe(0x2D):  # "-"
        mode = "remove"
    item = reader.keyword("FLAGS, +FLAGS or -FLAGS")
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise reader.error(f"unknown STORE item {item}: expected FLAGS or FLAGS.SILENT")
    reader.sp()
    if reader.peek() == 0x28:
        flags = _flag_list(reader)
    else:
        # store-att-flags also allows bare flags: flag *(SP flag)
        found = [_flag(reader)]
        while reader.maybe(0x20):
            found.append(_flag(reader))
        flags = tuple(dict.fromkeys(found))
    return c.Store(_tag(reader), uid, seqset, mode, item == "FLAGS.SILENT", flags, modifiers)


def _copy(reader: Reader, uid: bool = False) -> c.Command:
    # RFC 3501 §6.4.7: COPY SP sequence-set SP mailbox
    reader.sp()
    seqset = read_sequence_set(reader)
    reader.sp()
    return c.Copy(_tag(reader), uid, seqset, reader.mailbox())


def _move(reader: Reader, uid: bool = False) -> c.Command:
    # RFC 6851 §3.1: MOVE SP sequence-set SP mailbox
    reader.sp()
    seqset = read_sequence_set(reader)
    reader.sp()
    return c.Move(_tag(reader), uid, seqset, reader.mailbox())


# RFC 5256 §3 sort-key; DISPLAYFROM/DISPLAYTO are RFC 5957.
_SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)


def _search_criteria(reader: Reader) -> tuple[str, And]:
    # RFC 5256 §3: search-criteria = charset 1*(SP search-key); the charset is required.
    charset = _text(reader.astring("a charset name")).upper()
    reader.sp()
    return charset, read_search_program(reader, charset)


def _sort(reader: Reader, uid: bool = False) -> c.Command:
    # RFC 5256 §3: SORT SP sort-criteria SP search-criteria
    reader.sp()
    reader.skip(0x28, '"(" to start the sort criteria')
    criteria = []
    while True:
        key = reader.keyword("a sort key")
        reverse = key == "REVERSE"
        if reverse:
            reader.sp()
            key = reader.keyword("a sort key")
        if key not in _SORT_KEYS:
            raise reader.error(f"unknown sort key {key}")
        criteria.append((key, reverse))
        if not reader.maybe(0x20):
            break
    reader.skip(0x29, '")" to close the sort criteria')
    reader.sp()
    charset, program = _search_criteria(reader)
    return c.Sort(_tag(reader), uid, tuple(criteria), charset, program)


def _thread(reader: Reader, uid: bool = False) -> c.Command:
    # RFC 5256 §3: THREAD SP thread-alg SP search-criteria
    reader.sp()
    algorithm = reader.keyword("a threading algorithm")
    reader.sp()
    charset, program = _search_criteria(reader)
    return c.Thread(_tag(reader), uid, algorithm, charset, program)


_UID_COMMANDS: dict[str, Callable[[Reader, bool], c.Command]] = {
    "COPY": _copy,
    "MOVE": _move,
    "FETCH": _fetch,
    "SEARCH": _search,
    "STORE": _store,
    "EXPUNGE": _expunge,
    "SORT": _sort,
    "THREAD": _thread,
}


def _uid(reader: Reader) -> c.Command:
    # RFC 3501 §6.4.8: UID SP (copy / fetch / search / store); UIDPLUS adds EXPUNGE,
    # RFC 6851 adds MOVE.
    reader.sp()
    name = reader.keyword("a command after UID")
    parse = _UID_COMMANDS.get(name)
    if parse is None:
        raise reader.error(f"UID {name} is not a command")
    return parse(reader, True)


def _tag(reader: Reader) -> str:
    tag = reader.tag
    assert tag is not None  # read_tag ran before any command function
    return tag


_COMMANDS: dict[str, Callable[[Reader], c.Command]] = {
    "CAPABILITY": _no_arguments(c.Capability),
    "NOOP": _no_arguments(c.Noop),
    "LOGOUT": _no_arguments(c.Logout),
    "STARTTLS": _no_arguments(c.StartTLS),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _select,
    "EXAMINE": _examine,
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "CHECK": _no_arguments(c.Check),
    "CLOSE": _no_arguments(c.Close),
    "UNSELECT": _no_arguments(c.Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _move,
    "UID": _uid,
    "IDLE": _no_arguments(c.Idle),
    "NAMESPACE": _no_arguments(c.Namespace),
    "ID": _id,
    "ENABLE": _enable,
    "SORT": _sort,
    "THREAD": _thread,
}
