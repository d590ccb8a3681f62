"""A reference IMAP encoding of ENVELOPE/BODY/BODYSTRUCTURE for the MIME tests.

It writes strings the way Dovecot 2.3 does (quoted, or a literal when the
value holds CR, LF, NUL or 8-bit octets), so the tests can compare our parse
byte for byte with Dovecot's captured answers.  The IMAP layer has its own
encoder; this one only serves the store's tests.
"""

from __future__ import annotations

from mailaccess.store.mime import Envelope, Params, Part


def nstring(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    if any(c in value for c in b"\r\n\0") or any(c >= 0x80 for c in value):
        return b"{%d}\r\n" % len(value) + value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def addresses(addrs: tuple[tuple[bytes | None, ...], ...] | None) -> bytes:
    if not addrs:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(nstring(f) for f in a) + b")" for a in addrs) + b")"


def envelope(env: Envelope) -> bytes:
    return (
        b"("
        + b" ".join(
            [
                nstring(env.date),
                nstring(env.subject),
                addresses(env.from_),
                addresses(env.sender),
                addresses(env.reply_to),
                addresses(env.to),
                addresses(env.cc),
                addresses(env.bcc),
                nstring(env.in_reply_to),
                nstring(env.message_id),
            ]
        )
        + b")"
    )


def params(plist: Params | None) -> bytes:
    if not plist:
        return b"NIL"
    return b"(" + b" ".join(nstring(k) + b" " + nstring(v) for k, v in plist) + b")"


def body(part: Part, extensible: bool) -> bytes:
    if part.children:
        out = b"".join(body(c, extensible) for c in part.children) + b" " + nstring(part.subtype)
        if extensible:
            out += b" " + params(part.params) + b" " + _ext(part)
        return b"(" + out + b")"
    fields = [
        nstring(part.type),
        nstring(part.subtype),
        params(part.params),
        nstring(part.id),
        nstring(part.description),
        nstring(part.encoding),
        b"%d" % part.size,
    ]
    if part.message is not None:
        assert part.envelope is not None
        fields += [envelope(part.envelope), body(part.message, extensible), b"%d" % part.lines]
    elif part.type.lower() == b"text":
        fields.append(b"%d" % part.lines)
    if extensible:
        fields += [nstring(part.md5), _ext(part)]
    return b"(" + b" ".join(fields) + b")"


def _ext(part: Part) -> bytes:
    disp = b"NIL"
    if part.disposition is not None:
        disp = b"(" + nstring(part.disposition[0]) + b" " + params(part.disposition[1]) + b")"
    lang = b"NIL"
    if part.language:
        lang = b"(" + b" ".join(nstring(x) for x in part.language) + b")"
    return disp + b" " + lang + b" " + nstring(part.location)


def test_nstring_quotes_or_uses_literal_rfc3501_4_3() -> None:
    assert nstring(None) == b"NIL"
    assert nstring(b'a "b" \\c') == b'"a \\"b\\" \\\\c"'
    assert nstring(b"caf\xc3\xa9") == b"{5}\r\ncaf\xc3\xa9"
    assert nstring(b"a\r\nb") == b"{4}\r\na\r\nb"
