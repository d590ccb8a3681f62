"""The IMAP encoding of ENVELOPE/BODY/BODYSTRUCTURE the MIME tests compare with Dovecot.

It used to live here as a test-only reference encoder; it is now the IMAP
layer's own (mailaccess/imap/bodystructure.py), so the store's tests check the
parser through exactly the bytes FETCH sends.  The names below are kept for
the tests and fixture scripts that import them.
"""

from __future__ import annotations

from mailaccess.imap.bodystructure import encode_body, encode_envelope, nstring
from mailaccess.store.mime import Envelope, Part

__all__ = ["body", "envelope", "nstring"]


def envelope(env: Envelope) -> bytes:
    """ENVELOPE's parenthesized list (RFC 3501 §7.4.2)."""
    return encode_envelope(env)


def body(part: Part, extensible: bool) -> bytes:
    """BODYSTRUCTURE (``extensible``) or BODY (RFC 3501 §7.4.2)."""
    return encode_body(part, extensible)


def test_nstring_quotes_or_uses_literal_rfc3501_4_3() -> None:
    assert nstring(None) == b"NIL"
    assert nstring(b'a "b" \\c') == b'"a \\"b\\" \\\\c"'
    assert nstring(b"caf\xc3\xa9") == b"{5}\r\ncaf\xc3\xa9"
    assert nstring(b"a\r\nb") == b"{4}\r\na\r\nb"
    # Dovecot leaves more than four quote/backslash escapes to a literal.
    assert nstring(b'"""""') == b'{5}\r\n"""""'
