"""ENVELOPE, BODY and BODYSTRUCTURE as IMAP bytes (RFC 3501 §7.4.2), as Dovecot 2.3 writes them.

The store parses a message once into ``mailaccess.store.mime.MessageInfo``;
this module turns its ``Envelope`` and ``Part`` tree into the octets of a
FETCH response.  Byte-for-byte agreement with Dovecot matters to clients that
cache BODYSTRUCTURE across servers and to our tests, so strings are written
with Dovecot's rules rather than :func:`mailaccess.imap.response.encode_string`:

* an nstring is quoted unless it holds CR, LF, an 8-bit octet or more than
  four ``"``/``\\`` (escaping that many is left to a literal);
* "strings for humans" (the subject and address display names) are written
  as a literal whenever they hold ``"``, ``\\``, 8-bit octets or control
  white space, and ``""`` when empty — Dovecot's ``imap_append_string_for_humans``.

One known difference remains: Dovecot also writes a subject or display name
as a literal when the *raw* header value was folded or had runs of white
space, which the store's Envelope (already unfolded) no longer shows.  Such a
value comes out quoted here; the string a client reads is the same.
"""

from __future__ import annotations

import re

from mailaccess.store.mime import Envelope, Params, Part

__all__ = ["encode_body", "encode_envelope", "human_string", "nstring"]

# Octets that force a literal: CR, LF and every 8-bit octet (NUL never reaches
# us: the store turns it into 0x80 in envelopes).  Regexes, not Python loops:
# FETCH ENVELOPE of a whole mailbox writes a few hundred thousand strings.
_LITERAL_RE = re.compile(rb"[\r\n\x80-\xff]")
_HUMAN_RE = re.compile(rb'[\t\r\n"\\\x80-\xff]')


def nstring(value: bytes | None) -> bytes:
    """RFC 3501 §4.3/§4.5 nstring, Dovecot's choice of quoted or literal."""
    if value is None:
        return b"NIL"
    if _LITERAL_RE.search(value) is None:
        if b'"' not in value and b"\\" not in value:
            return b'"' + value + b'"'
        if value.count(b'"') + value.count(b"\\") <= 4:
            return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def human_string(value: bytes | None) -> bytes:
    """A subject or display name (Dovecot's imap_append_string_for_humans)."""
    if value is None:
        return b"NIL"
    if _HUMAN_RE.search(value) is None:
        return b'"' + value + b'"'
    return b"{%d}\r\n" % len(value) + value


def _addresses(addrs: tuple[tuple[bytes | None, ...], ...] | None) -> bytes:
    # RFC 3501 §7.4.2: a list of (name adl mailbox host); NIL for no addresses.
    if not addrs:
        return b"NIL"
    return (
        b"("
        + b"".join(
            b"(%s %s %s %s)" % (human_string(name), nstring(adl), nstring(mailbox), nstring(host))
            for name, adl, mailbox, host in addrs
        )
        + b")"
    )


#: Encoded address lists by value: mail between the same people repeats the
#: same From/To/Cc lists, and Sender/Reply-To usually repeat From.  Bounded.
ADDRESS_CACHE_SIZE = 65536
_ADDRESS_LISTS: dict[tuple[tuple[bytes | None, ...], ...], bytes] = {}


def _address_list(addrs: tuple[tuple[bytes | None, ...], ...] | None) -> bytes:
    if not addrs:
        return b"NIL"
    got = _ADDRESS_LISTS.get(addrs)
    if got is None:
        got = _addresses(addrs)
        if len(_ADDRESS_LISTS) >= ADDRESS_CACHE_SIZE:
            del _ADDRESS_LISTS[next(iter(_ADDRESS_LISTS))]
        _ADDRESS_LISTS[addrs] = got
    return got


def encode_envelope(env: Envelope) -> bytes:
    """The parenthesized ENVELOPE (RFC 3501 §7.4.2), fields in the RFC's order."""
    return b"(%s %s %s %s %s %s %s %s %s %s)" % (
        nstring(env.date),
        human_string(env.subject),
        _address_list(env.from_),
        _address_list(env.sender),
        _address_list(env.reply_to),
        _address_list(env.to),
        _address_list(env.cc),
        _address_list(env.bcc),
        nstring(env.in_reply_to),
        nstring(env.message_id),
    )


def _params(plist: Params | None) -> bytes:
    if not plist:
        return b"NIL"
    return b"(" + b" ".join(nstring(k) + b" " + nstring(v) for k, v in plist) + b")"


def _extension(part: Part) -> bytes:
    # body-ext-1part / body-ext-mpart after MD5 or params: disposition, language, location.
    disp = b"NIL"
    if part.disposition is not None:
        disp = b"(" + nstring(part.disposition[0]) + b" " + _params(part.disposition[1]) + b")"
    lang = b"NIL"
    if part.language:
        lang = b"(" + b" ".join(nstring(x) for x in part.language) + b")"
    return disp + b" " + lang + b" " + nstring(part.location)


def encode_body(part: Part, extensible: bool) -> bytes:
    """BODYSTRUCTURE (``extensible=True``) or BODY of a part tree (RFC 3501 §7.4.2)."""
    if part.children:
        # body-type-mpart: the parts, then the subtype; extension data for BODYSTRUCTURE.
        out = (
            b"".join(encode_body(c, extensible) for c in part.children)
            + b" "
            + nstring(part.subtype)
        )
        if extensible:
            out += b" " + _params(part.params) + b" " + _extension(part)
        return b"(" + out + b")"
    fields = [
        nstring(part.type),
        nstring(part.subtype),
        _params(part.params),
        nstring(part.id),
        nstring(part.description),
        nstring(part.encoding),
        b"%d" % part.size,
    ]
    if part.message is not None:
        # body-type-msg: envelope, body and line count of the encapsulated message.
        env = part.envelope if part.envelope is not None else Envelope()
        fields += [encode_envelope(env), encode_body(part.message, extensible), b"%d" % part.lines]
    elif part.type.lower() == b"text":
        fields.append(b"%d" % part.lines)  # body-type-text: body-fld-lines
    if extensible:
        fields += [nstring(part.md5), _extension(part)]
    return b"(" + b" ".join(fields) + b")"
