"""Header-level parsing for the MIME parser: fields, parameters, addresses, dates.

Pure functions on ``bytes``.  They never raise on malformed input: a field
that cannot be understood degrades to what a lenient reader (Dovecot is the
reference) would make of it.  Values stay raw bytes because RFC 3501 §7.4.2
wants ENVELOPE and BODYSTRUCTURE strings as sent; decoding for display or
SEARCH is in ``decode_words``.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import functools
import re
from collections.abc import Iterable

Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
Params = tuple[tuple[bytes, bytes], ...]

_WSP = b" \t"


def iter_fields(header: bytes) -> Iterable[tuple[bytes, bytes]]:
    """Yield (name, unfolded value) for each field of a header block.

    RFC 5322 §2.2.3: unfolding removes the line break before a continuation
    line and keeps its leading white space.  Lines that are neither a field
    nor a continuation (no colon) are skipped, as Dovecot does.  The value's
    leading white space is stripped; trailing white space is kept (Dovecot
    keeps it in ENVELOPE strings).
    """
    name: bytes | None = None
    value: list[bytes] = []
    for line in header.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value.append(line)
            continue
        if name is not None:
            yield name, b"".join(value).lstrip(b" \t")
            name = None
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].rstrip(_WSP)
        value = [line[colon + 1 :]]
    if name is not None:
        yield name, b"".join(value).lstrip(b" \t")


# --- Content-Type and friends (RFC 2045 §5, RFC 2183, RFC 2231) --------------

_UNQUOTE_RE = re.compile(rb"\\(.)", re.S)
_SECTION_RE = re.compile(rb"^(.*?)\*(\d+)(\*?)$|^(.*?)\*$", re.S)
# RFC 2045 §5.1: token := 1*<any CHAR except SPACE, CTLs or tspecials>.
_MIME_TOKEN_RE = re.compile(rb'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]*')
_LWSP_RE = re.compile(rb"[ \t\r\n]*")
_QUOTED_RE = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.S)
_TYPE_RE = re.compile(
    rb'[ \t\r\n]*([^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+)'
    rb'(?:[ \t\r\n]*/[ \t\r\n]*([^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+))?'
)


def _params(value: bytes, pos: int) -> list[tuple[bytes, bytes]]:
    """Parameters from *pos* on, read the way Dovecot 2.3 reads them.

    Junk after a value is skipped up to the next ``;``; a name without ``=``
    ends the list when a ``;`` or the end follows it, and is skipped
    otherwise; an unterminated quoted string ends the list.  Values are
    tokens or quoted strings (RFC 2045 §5.1), so an unquoted ``a/b`` is
    ``a`` — as in Dovecot.
    """
    out: list[tuple[bytes, bytes]] = []
    end = len(value)
    while True:
        semi = _next_semicolon(value, pos)
        if semi < 0:
            return out
        pos = _LWSP_RE.match(value, semi + 1).end()  # type: ignore[union-attr]
        key_m = _MIME_TOKEN_RE.match(value, pos)
        assert key_m is not None
        key = key_m.group(0)
        pos = _LWSP_RE.match(value, key_m.end()).end()  # type: ignore[union-attr]
        if pos >= end or value[pos] != 0x3D:  # "="
            if pos >= end or value[pos] == 0x3B:  # ";"
                return out
            continue  # junk: skip to the next ";"
        pos = _LWSP_RE.match(value, pos + 1).end()  # type: ignore[union-attr]
        if value.startswith(b'"', pos):
            q = _QUOTED_RE.match(value, pos)
            if q is None:
                return out
            raw = q.group(1)
            val = _UNQUOTE_RE.sub(rb"\1", raw) if b"\\" in raw else raw
            pos = q.end()
        else:
            v = _MIME_TOKEN_RE.match(value, pos)
            assert v is not None
            val = v.group(0)
            pos = v.end()
        out.append((key, val))


def _next_semicolon(value: bytes, pos: int) -> int:
    """The next ``;`` at or after *pos* that is not inside a quoted string."""
    while True:
        semi = value.find(b";", pos)
        quote = value.find(b'"', pos)
        if semi < 0 or quote < 0 or semi < quote:
            return semi
        q = _QUOTED_RE.match(value, quote)
        if q is None:
            return -1
        pos = q.end()


def _join_rfc2231(plist: list[tuple[bytes, bytes]]) -> Params:
    """Join RFC 2231 continuations as Dovecot 2.3 presents them in BODYSTRUCTURE.

    Plain parameters first in their order, then the joined ones sorted by
    name.  A joined value whose first section is extended (``*0*``), or a
    lone ``name*``, keeps its ``charset'lang'`` prefix and %-escapes under
    the name ``name*`` (clients decode them, RFC 2231 §4).  Sections with a
    gap in their numbering are not joined but listed as sent.
    """
    plain: list[tuple[bytes, bytes]] = []
    sections: list[tuple[bytes, int, bool, bytes, bytes]] = []
    for name, val in plist:
        sm = _SECTION_RE.match(name) if b"*" in name else None
        if sm is None:
            plain.append((name, val))
        elif sm.group(4) is not None:
            sections.append((sm.group(4), 0, True, val, name))
        else:
            sections.append((sm.group(1), int(sm.group(2)), bool(sm.group(3)), val, name))
    if not sections:
        return tuple(plain)
    sections.sort(key=lambda s: (s[0].lower(), s[1]))
    joined: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(sections):
        key = sections[i][0]
        group = []
        while i < len(sections) and sections[i][0].lower() == key.lower():
            group.append(sections[i])
            i += 1
        if [g[1] for g in group] != list(range(len(group))):
            joined.extend((g[4], g[3]) for g in group)
            continue
        name = key + b"*" if group[0][2] else key
        joined.append((name, b"".join(g[3] for g in group)))
    return tuple(plain) + tuple(joined)


def parse_content_type(value: bytes) -> tuple[bytes, bytes, Params]:
    """(type, subtype, parameters) of a Content-Type value (RFC 2045 §5.1).

    As in Dovecot: a lone token is a type with an empty subtype; anything
    else that is not ``token/token`` optionally followed by parameters gives
    ("", "") and no parameters.
    """
    if b"(" in value:
        value = strip_comments(value)
    m = _TYPE_RE.match(value)
    if m is None:
        return b"", b"", ()
    rest = _LWSP_RE.match(value, m.end()).end()  # type: ignore[union-attr]
    if m.group(2) is None:
        if m.end() == len(value):
            return m.group(1), b"", ()
        return b"", b"", ()
    if rest < len(value) and value[rest] != 0x3B:
        return b"", b"", ()
    return m.group(1), m.group(2), _join_rfc2231(_params(value, rest))


def parse_disposition(value: bytes) -> tuple[bytes, Params]:
    """(disposition type, parameters) of a Content-Disposition value (RFC 2183)."""
    if b"(" in value:
        value = strip_comments(value)
    pos = _LWSP_RE.match(value).end()  # type: ignore[union-attr]
    m = _MIME_TOKEN_RE.match(value, pos)
    assert m is not None
    return m.group(0), _join_rfc2231(_params(value, m.end()))


def parse_token(value: bytes) -> bytes | None:
    """A value that must be one token (Content-Transfer-Encoding), else None."""
    if b"(" in value:
        value = strip_comments(value)
    value = value.strip(b" \t\r\n")
    m = _MIME_TOKEN_RE.fullmatch(value)
    return value if m is not None and value else None


def parse_languages(value: bytes) -> tuple[bytes, ...] | None:
    """Content-Language tags (RFC 3282): a comma list, read up to the first junk."""
    if b"(" in value:
        value = strip_comments(value)
    out: list[bytes] = []
    pos = 0
    while True:
        pos = _LWSP_RE.match(value, pos).end()  # type: ignore[union-attr]
        m = _MIME_TOKEN_RE.match(value, pos)
        assert m is not None
        if not m.group(0):
            break
        out.append(m.group(0))
        pos = _LWSP_RE.match(value, m.end()).end()  # type: ignore[union-attr]
        if not value.startswith(b",", pos):
            break
        pos += 1
    return tuple(out) or None


_QUOTED_OR_COMMENT_RE = re.compile(
    rb'("(?:[^"\\]|\\.)*")|\((?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\)', re.S
)


def strip_comments(value: bytes) -> bytes:
    """Remove RFC 5322 comments (one level of nesting) outside quoted strings."""
    return _QUOTED_OR_COMMENT_RE.sub(lambda m: m.group(1) or b" ", value)


def param(params: Params | None, name: bytes) -> bytes | None:
    """The value of parameter *name* (case-insensitive), or None."""
    if params:
        lname = name.lower()
        for key, value in params:
            if key.lower() == lname:
                return value
    return None


# --- addresses (RFC 5322 §3.4, RFC 3501 §7.4.2) ------------------------------

# Tokens of the address grammar: quoted-string, comment, domain literal,
# specials, atoms (anything else up to white space or a special).
_TOKEN_RE = re.compile(
    rb'"(?:[^"\\]|\\.)*"?'
    rb"|\((?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\)?"
    rb"|\[(?:[^\]\\]|\\.)*\]?"
    rb"|[<>:;@,.]"
    rb'|[^\s"()<>\[\]:;@,.]+'
    rb"|\s+",
    re.S,
)


def _phrase(words: list[bytes]) -> bytes | None:
    out: list[bytes] = []
    for w in words:
        if w == b"." and out:
            # obs-phrase (RFC 5322 §4.1): "John Q. Public" keeps its dot.
            out[-1] += w
            continue
        if w[:1] == b'"':
            w = w[1:-1] if w.endswith(b'"') and len(w) > 1 else w[1:]
            if b"\\" in w:
                w = _UNQUOTE_RE.sub(rb"\1", w)
        out.append(w)
    return b" ".join(out) or None


def _join(tokens: list[bytes]) -> bytes:
    return b"".join(t for t in tokens if t[:1] not in (b" ", b"\t", b"\r", b"\n"))


_ADDR_CHARS = rb'[^<>@\s",;:()\[\]\\]+'
_FAST_ITEM_RE = re.compile(
    rb'[ \t\r\n]*(?:"([^"\\\r\n]*)"[ \t]*|([^"<>@,.;:()\[\]\\\r\n]*?))<('
    + _ADDR_CHARS
    + rb")@("
    + _ADDR_CHARS
    + rb")>[ \t\r\n]*(?:,|\Z)"
    + rb"|[ \t\r\n]*("
    + _ADDR_CHARS
    + rb")@("
    + _ADDR_CHARS
    + rb")[ \t\r\n]*(?:,|\Z)"
)


def _fast_addresses(value: bytes) -> list[Address] | None:
    """The common shapes (``a@b``, ``Name <a@b>``, ``"Name" <a@b>``) by regex.

    None when anything else shows up; the full parser then gives the same
    answer the slow way (tests check both agree).
    """
    out: list[Address] = []
    pos = 0
    end = len(value)
    while pos < end:
        m = _FAST_ITEM_RE.match(value, pos)
        if m is None or m.end() == pos:
            return None
        pos = m.end()
        if m.group(3) is not None:
            quoted, bare = m.group(1), m.group(2)
            if quoted is not None:
                name: bytes | None = quoted or None
            else:
                name = b" ".join(bare.split()) or None
            out.append((name, None, m.group(3), m.group(4)))
        else:
            out.append((None, None, m.group(5), m.group(6)))
    return out


def parse_addresses(value: bytes) -> list[Address]:
    """Parse an address-list header value into ENVELOPE address structures.

    RFC 3501 §7.4.2: (name, adl, mailbox, host); a group opens with
    (NIL, NIL, group name, NIL) and closes with (NIL, NIL, NIL, NIL).  When a
    mailbox has no display name, its last comment is used as the name, as
    Dovecot does.  Anything unparseable yields what could be salvaged.
    Display names are returned as written (see ``humanize`` for ENVELOPE).
    """
    fast = _fast_addresses(value)
    if fast is not None:
        return fast
    return _parse_addresses(value)


def _is_space(t: bytes) -> bool:
    return t[:1] in (b" ", b"\t", b"\r", b"\n")


def _parse_addresses(value: bytes) -> list[Address]:
    """The full tokenizing parser behind parse_addresses (Dovecot's rules).

    An empty element before a comma becomes MISSING_MAILBOX@MISSING_DOMAIN;
    junk after a complete address (``x@y junk``, ``<a@b> trailing``) ends
    the list there; a quoted string alone is a display name without address.
    """
    out: list[Address] = []
    tokens = _TOKEN_RE.findall(value)
    n = len(tokens)
    i = 0
    in_group = False
    junk = False
    while i < n and not junk:
        words: list[bytes] = []  # phrase words before '<' or ':'
        plain: list[bytes] = []  # raw tokens of a bare addr-spec
        comment: bytes | None = None
        angle: list[bytes] | None = None
        unclosed = False
        ended_by = b""
        prev = b""  # the last significant token
        spaced = False  # white space or a comment since it
        while i < n:
            t = tokens[i]
            i += 1
            c = t[:1]
            if _is_space(t):
                if plain:
                    plain.append(t)
                spaced = True
                continue
            if c == b"(":
                # Only a comment inside or after the addr-spec names the
                # mailbox ("u@h (Real Name)"); one before it does not (Dovecot).
                if plain:
                    inner = t[1:-1] if t.endswith(b")") else t[1:]
                    comment = inner.strip() or comment
                spaced = True
                continue
            if t in (b",", b";") or (
                t == b":" and not in_group and angle is None and b"@" not in plain
            ):
                ended_by = t
                break
            if angle is not None or (
                b"@" in plain and spaced and prev not in (b"@", b".") and t != b"."
            ):
                # Something after a complete address: Dovecot stops here.
                junk = True
                break
            if t == b"<":
                angle = []
                while i < n and tokens[i] != b">":
                    if tokens[i][:1] != b"(":
                        angle.append(tokens[i])
                    i += 1
                if i >= n:
                    unclosed = True
                i += 1  # the '>'
                prev, spaced = b">", False
                continue
            if t == b":" and not in_group:
                junk = True  # "a@b: …" is no group name
                break
            plain.append(t)
            if t != b"@" and c != b"[":
                words.append(t)
            prev, spaced = t, False
        if ended_by == b":":
            out.append((None, None, _phrase(words) or b"", None))
            in_group = True
            continue
        significant = [t for t in plain if not _is_space(t)]
        if angle is not None:
            name = _phrase(words)
            route: bytes | None = None
            spec = angle
            if b":" in spec:
                colon = spec.index(b":")
                route = _join(spec[:colon]) or None
                spec = spec[colon + 1 :]
            addr = _addr_spec(name, route, spec)
            if unclosed:
                addr = (addr[0], addr[1], addr[2], SYNTAX_ERROR)
            out.append(addr)
        elif significant and significant[0][:1] == b'"' and b"@" not in significant:
            out.append((_phrase(words), None, MISSING_MAILBOX, MISSING_DOMAIN))
        elif significant:
            out.append(_addr_spec(comment, None, plain))
        elif ended_by == b",":
            out.append((None, None, MISSING_MAILBOX, MISSING_DOMAIN))
        if ended_by == b";" and in_group:
            out.append((None, None, None, None))
            in_group = False
            # After a group only a comma may follow (else Dovecot stops).
            while i < n and (_is_space(tokens[i]) or tokens[i][:1] == b"("):
                i += 1
            if i < n:
                if tokens[i] != b",":
                    break
                i += 1
    if in_group:
        out.append((None, None, None, None))
    return out


#: Hosts Dovecot puts in ENVELOPE for addresses it could not read; a NIL
#: host would mean "start of group" (RFC 3501 §7.4.2), so something is needed.
MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
SYNTAX_ERROR = b"SYNTAX_ERROR"


def _local(tokens: list[bytes]) -> bytes:
    out = []
    for t in tokens:
        if t[:1] == b'"':
            t = t[1:-1] if t.endswith(b'"') and len(t) > 1 else t[1:]
            if b"\\" in t:
                t = _UNQUOTE_RE.sub(rb"\1", t)
        elif t[:1] in (b" ", b"\t", b"\r", b"\n"):
            continue
        out.append(t)
    return b"".join(out)


def _addr_spec(name: bytes | None, route: bytes | None, spec: list[bytes]) -> Address:
    host = b""
    if b"@" in spec:
        at = len(spec) - 1 - spec[::-1].index(b"@")
        local = _local(spec[:at])
        host = _join(spec[at + 1 :])
    else:
        local = _local(spec)
    return (name, route, local or MISSING_MAILBOX, host or MISSING_DOMAIN)


_LWSP_RUN_RE = re.compile(rb"[ \t\r\n]+")


def humanize(value: bytes) -> bytes:
    """A free-text value as Dovecot puts it in ENVELOPE (subject, display names).

    Runs of white space and line breaks become one space, leading and
    trailing white space goes, and NUL (not allowed in IMAP strings) becomes
    0x80 — what Dovecot's imap_append_string_for_humans does.
    """
    value = _LWSP_RUN_RE.sub(b" ", value).strip(b" ")
    return value.replace(b"\0", b"\x80") if b"\0" in value else value


# --- dates (RFC 5322 §3.3) ---------------------------------------------------


def parse_date(value: bytes | None) -> tuple[float, int] | None:
    """(UTC timestamp, offset in seconds east of UTC) of a Date: value, or None."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value.decode("ascii", "replace"))
        if parsed is None:
            return None
        stamp = email.utils.mktime_tz(parsed)
        offset = parsed[9] or 0
        if not -86400 < offset < 86400:
            return None
        return float(stamp), offset
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


# --- RFC 2047 encoded words -------------------------------------------------

_ENCODED_WORD_RE = re.compile(
    rb"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?\s]*)\?=(?:[ \t\r\n]+(?==\?))?"
)
_QP_HEX_RE = re.compile(rb"=([0-9A-Fa-f]{2})")
_QP_WELL_FORMED_RE = re.compile(rb"(?:[^=]|=[0-9A-Fa-f]{2})*")
_BASE64_RE = re.compile(rb"[A-Za-z0-9+/]*=*")


@functools.lru_cache(maxsize=256)
def _codec_name(charset: str) -> str:
    """The codec for a MIME charset name; UTF-8 for one Python does not know."""
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"


def _charset_decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(_codec_name(charset), "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


def decode_raw(data: bytes) -> str:
    """Text of raw (possibly 8-bit) header bytes: UTF-8 if valid, else Latin-1."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_words(value: bytes) -> str:
    """Decode RFC 2047 encoded words in a header value to text.

    White space between two adjacent encoded words is dropped (RFC 2047 §6.2).
    Unknown charsets fall back to UTF-8 with replacement; broken base64 or
    quoted-printable keeps what could be decoded.  Never raises.
    """
    if b"=?" not in value:
        return decode_raw(value)
    out: list[str] = []
    pos = 0
    for m in _ENCODED_WORD_RE.finditer(value):
        start = m.start()
        if start > pos:
            out.append(decode_raw(value[pos:start]))
        pos = m.end()
        charset, kind, text = m.groups()
        if kind in (b"B", b"b"):
            if not _BASE64_RE.fullmatch(text):
                # Not base64 at all: show the word as sent rather than garbage.
                out.append(decode_raw(m.group(0)))
                continue
            text = text.rstrip(b"=")
            if len(text) % 4 == 1:
                text = text[:-1]  # a dangling sextet carries no whole octet
            try:
                raw = binascii.a2b_base64(text + b"=" * (-len(text) % 4))
            except (binascii.Error, ValueError):
                raw = b""
        elif _QP_WELL_FORMED_RE.fullmatch(text):
            # Every "=" starts a hex pair: binascii's header mode ("_" is a
            # space, RFC 2047 §4.2) decodes it exactly, in C.
            raw = binascii.a2b_qp(text, header=True)
        else:
            # A stray "=": binascii would drop or merge it; keep it as sent.
            raw = _QP_HEX_RE.sub(lambda h: bytes([int(h.group(1), 16)]), text.replace(b"_", b" "))
        out.append(_charset_decode(raw, charset.decode("ascii", "replace")))
    if pos < len(value):
        out.append(decode_raw(value[pos:]))
    return "".join(out)
