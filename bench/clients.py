"""Minimal asyncio clients speaking raw IMAP, POP3 and LMTP lines, for load generation.

These are deliberately thin: the benchmark needs to push commands and recognise where
a response ends, counting octets, without building Python objects for every FETCH
item.  imaplib and poplib parse everything and are synchronous; with them the load
generator, not the server, would be what is measured.

Response framing only, but exact framing:

* IMAP (RFC 3501 §7.5, §4.3): a response ends at the line starting with the
  command's tag; a line ending in ``{n}`` is followed by an n-octet literal that may
  contain anything, tags included, so it is skipped by count, not scanned.
* POP3 (RFC 1939 §3): a multi-line response ends with ``CRLF.CRLF``; data lines that
  begin with "." were dot-stuffed by the server, so a lone "." line only ends it.
* LMTP (RFC 2033 §4.2): after DATA, one reply per accepted recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
from dataclasses import dataclass, field

#: How long a greeting may take before the connection counts as failed.  A client
#: stuck in an overflowed accept queue would otherwise wait for it forever.
GREETING_TIMEOUT = 30.0

#: Generous: a SEARCH result of 100,000 UIDs is one line, and RETR reads whole messages.
STREAM_LIMIT = 64 * 1024 * 1024

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class ProtocolFailure(Exception):
    """The server answered NO/BAD/-ERR/4xx/5xx where the workload expected success."""


@functools.cache
def insecure_tls_context() -> ssl.SSLContext:
    """One client context, shared, that accepts the servers' self-signed certificates.

    Both servers run on loopback with throwaway certificates; what is measured is
    the handshake and encryption cost, which verification does not change.  Built
    once: ``ssl.create_default_context()`` loads the system CA store, tens of
    milliseconds of the generator's CPU that would be charged to every login.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _open(
    host: str, port: int, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        host, port, ssl=tls, limit=STREAM_LIMIT, server_hostname="localhost" if tls else None
    )


async def _greeting(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.readline(), GREETING_TIMEOUT)
    except TimeoutError:
        raise ProtocolFailure(f"no greeting within {GREETING_TIMEOUT:.0f} s") from None


@dataclass
class IMAPResponse:
    """A completed command: its tagged status line and what came before it."""

    status: bytes  # "OK", "NO" or "BAD"
    tagged: bytes  # the whole tagged line
    untagged: list[bytes] = field(default_factory=list)  # kept only when asked for
    octets: int = 0  # everything received for this command, literals included


class IMAPConnection:
    """One IMAP4rev1 connection: send tagged commands, read until their completion."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._tag = 0
        self.greeting = b""

    @classmethod
    async def connect(
        cls, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> IMAPConnection:
        """Connect and read the greeting (RFC 3501 §7.1.1)."""
        reader, writer = await _open(host, port, tls)
        conn = cls(reader, writer)
        conn.greeting = await _greeting(reader)
        if not conn.greeting.startswith(b"* OK") and not conn.greeting.startswith(b"* PREAUTH"):
            raise ProtocolFailure(f"IMAP greeting: {conn.greeting!r}")
        return conn

    def next_tag(self) -> bytes:
        self._tag += 1
        return b"A%04d" % self._tag

    async def read_until_tagged(self, tag: bytes, keep: bool = False) -> IMAPResponse:
        """Read responses up to the tagged completion of *tag*."""
        reader = self.reader
        prefix = tag + b" "
        untagged: list[bytes] = []
        octets = 0
        while True:
            line = await reader.readline()
            if not line:
                raise ProtocolFailure("IMAP server closed the connection")
            octets += len(line)
            # RFC 3501 §4.3: a literal's octets follow its "{n}" line and are skipped by
            # count; the response line goes on after them, so keep reading lines.
            while line.endswith(b"}\r\n"):
                match = _LITERAL.search(line)
                if match is None:
                    break
                size = int(match.group(1))
                await reader.readexactly(size)
                octets += size
                rest = await reader.readline()
                octets += len(rest)
                line = line + b"<literal>" + rest if keep else rest
            if line.startswith(prefix):
                status = line[len(prefix) :].split(b" ", 1)[0].rstrip()
                return IMAPResponse(status, line, untagged, octets)
            if keep:
                untagged.append(line)

    async def command(self, text: bytes, keep: bool = False, check: bool = True) -> IMAPResponse:
        """Send ``<tag> text`` and wait for its completion; NO/BAD raise when *check*."""
        tag = self.next_tag()
        self.writer.write(tag + b" " + text + b"\r\n")
        response = await self.read_until_tagged(tag, keep)
        if check and response.status != b"OK":
            raise ProtocolFailure(f"{text[:60]!r} -> {response.tagged!r}")
        return response

    async def login(self, user: str, password: str) -> None:
        """LOGIN with quoted arguments (RFC 3501 §6.2.3)."""
        await self.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))

    async def append(self, mailbox: str, message: bytes) -> IMAPResponse:
        """APPEND with a synchronising literal (RFC 3501 §6.3.11, §7.5)."""
        tag = self.next_tag()
        self.writer.write(b'%s APPEND "%s" {%d}\r\n' % (tag, mailbox.encode(), len(message)))
        line = await self.reader.readline()
        if not line.startswith(b"+"):
            raise ProtocolFailure(f"APPEND continuation: {line!r}")
        self.writer.write(message + b"\r\n")
        response = await self.read_until_tagged(tag)
        if response.status != b"OK":
            raise ProtocolFailure(f"APPEND -> {response.tagged!r}")
        return response

    async def logout(self) -> None:
        """LOGOUT and close; a server that already hung up is fine."""
        with contextlib.suppress(ProtocolFailure, ConnectionError, asyncio.IncompleteReadError):
            await self.command(b"LOGOUT", check=False)
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


class POP3Connection:
    """One POP3 connection (RFC 1939)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> POP3Connection:
        """Connect and read the +OK greeting (RFC 1939 §4)."""
        reader, writer = await _open(host, port, tls)
        conn = cls(reader, writer)
        greeting = await _greeting(reader)
        if not greeting.startswith(b"+OK"):
            raise ProtocolFailure(f"POP3 greeting: {greeting!r}")
        return conn

    async def simple(self, text: bytes) -> bytes:
        """A single-line command; its +OK line."""
        self.writer.write(text + b"\r\n")
        line = await self.reader.readline()
        if not line.startswith(b"+OK"):
            raise ProtocolFailure(f"{text.split(b' ')[0]!r} -> {line!r}")
        return line

    async def multi(self, text: bytes) -> bytes:
        """A multi-line command (RFC 1939 §3); the data, still dot-stuffed, and the end."""
        self.writer.write(text + b"\r\n")
        return await self.read_multi(text)

    async def read_multi(self, text: bytes = b"") -> bytes:
        line = await self.reader.readline()
        if not line.startswith(b"+OK"):
            raise ProtocolFailure(f"{text.split(b' ')[0]!r} -> {line!r}")
        # After the status line the data ends at the first ".\r\n" that starts a line:
        # either right away (empty) or after a CRLF.  readuntil() searches in C.
        chunks = []
        while True:
            chunk = await self.reader.readuntil(b".\r\n")
            chunks.append(chunk)
            if chunk == b".\r\n" or chunk.endswith(b"\r\n.\r\n"):
                return b"".join(chunks)

    async def login(self, user: str, password: str) -> None:
        """USER/PASS (RFC 1939 §7)."""
        await self.simple(b"USER " + user.encode())
        await self.simple(b"PASS " + password.encode())

    async def quit(self) -> None:
        """QUIT (UPDATE state) and close."""
        try:
            await self.simple(b"QUIT")
        finally:
            self.writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self.writer.wait_closed()


class LMTPConnection:
    """One LMTP connection (RFC 2033) delivering to one recipient at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> LMTPConnection:
        """Connect, read the 220 greeting and say LHLO (RFC 2033 §4.1)."""
        reader, writer = await _open(host, port, None)
        conn = cls(reader, writer)
        await conn._reply(b"220")
        writer.write(b"LHLO bench.example\r\n")
        await conn._reply(b"250")
        return conn

    async def _reply(self, expected: bytes) -> bytes:
        # Multi-line replies continue with "250-"; the last line has "250 ".
        while True:
            line = await self.reader.readline()
            if not line.startswith(expected):
                raise ProtocolFailure(f"LMTP expected {expected!r}, got {line!r}")
            if line[3:4] != b"-":
                return line

    async def deliver(self, sender: str, recipient: str, message: bytes) -> None:
        """One transaction; *message* must already be CRLF and dot-stuffed."""
        self.writer.write(
            b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (sender.encode(), recipient.encode())
        )
        # Written at once, read in order: PIPELINING-style (RFC 2920), which both
        # servers advertise for LMTP; the replies still come one per command.
        await self._reply(b"250")
        await self._reply(b"250")
        await self._reply(b"354")
        self.writer.write(message + b".\r\n")
        await self._reply(b"250")  # RFC 2033 §4.2: one reply for the one recipient

    async def quit(self) -> None:
        self.writer.write(b"QUIT\r\n")
        with contextlib.suppress(ProtocolFailure, ConnectionError):
            await self._reply(b"221")
        self.writer.close()


def dot_stuff(message: bytes) -> bytes:
    """CRLF line ends and RFC 5321 §4.5.2 dot-stuffing; ends with CRLF."""
    text = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\r\n.", b"\r\n..")
