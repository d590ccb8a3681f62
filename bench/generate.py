"""Deterministic benchmark mail: seeded Maildirs generated once, cached under bench/data/.

Every data set is a function of its name alone (seed, count, size profile), so two
machines — or two runs a month apart — benchmark the same octets.  A generated Maildir
is the *pristine* copy; each server under test gets its own full copy of it (see
``copy_maildir``) because both servers rename files when flags change and a hard-linked
copy would let one server's renames leak into the other's view.

The mail is meant to look like a real inbox to an indexer:

* sizes 2 KB - 1 MB, about 68 KB on average (the long tail is the ~10 % of messages
  carrying a base64 attachment);
* threads through ``In-Reply-To``/``References`` with ``Re:`` subjects;
* RFC 2047 encoded-words in subjects and display names (B and Q encodings, UTF-8 and
  ISO-8859-1);
* ``multipart/alternative`` text + HTML, ``multipart/mixed`` with attachments;
* a few malformed messages (no header/body separator, an unterminated MIME multipart,
  raw 8-bit header bytes, an unfolded 2,000-octet header line, a header line without a
  colon) — every server must index them without losing them.

Files are stored as Dovecot would leave them: LF line ends, most in ``cur/`` with
``,S=<size>,W=<crlf size>:2,<flags>`` names (as Dovecot's LDA writes), the newest ~5 % in
``new/`` with MTA-style names that carry no size, so both servers have to read those.
The file's mtime is the message's INTERNALDATE.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

#: Bump when the generator's output changes, so stale caches are rebuilt.
GENERATOR_VERSION = 1

DATA_DIR = Path(__file__).resolve().parent / "data"

#: The first message's date; later ones follow at seeded intervals.
EPOCH = 1_700_000_000


@dataclass(frozen=True)
class DataSet:
    """The parameters that fully determine one generated Maildir."""

    name: str
    count: int
    seed: int
    #: "realistic": the 2 KB-1 MB mix; "small": ~1.5 KB messages for index-memory runs.
    profile: str = "realistic"


#: The data sets the benchmark uses, by name.
DATASETS: dict[str, DataSet] = {
    "10k": DataSet("10k", 10_000, seed=10_000),
    "1k": DataSet("1k", 1_000, seed=1_000),
    "idle": DataSet("idle", 20, seed=20),
    "100k-small": DataSet("100k-small", 100_000, seed=100_000, profile="small"),
}

MIN_SIZE = 2 * 1024
MAX_SIZE = 1024 * 1024

FIRST_NAMES = [
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
    "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter",
    "José", "Zoë", "Søren", "Müller", "François", "Łukasz", "Håkon", "Ångström", "李雷",
    "Иван", "Αλέξης",
]  # fmt: skip
LAST_NAMES = [
    "Smith", "Jones", "Taylor", "Brown", "Wilson", "Evans", "Thomas", "Roberts", "Núñez",
    "Ødegaard", "Dvořák", "Schröder", "Çelik", "Petrov", "Kowalski", "Wang",
]  # fmt: skip
DOMAINS = ["example.com", "example.org", "example.net", "lists.example.com", "corp.example"]
_WORDS_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when "
    "if so no will what can more out up about said them some could into than other time "
    "meeting budget report quarterly server mailbox deadline review project release "
    "invoice schedule draft proposal contract customer shipment backup migration outage "
    "agenda minutes feedback question answer attached please thanks regards update plan "
    "résumé naïve café über straße garçon"
)
WORDS = _WORDS_TEXT.split()
SUBJECT_TOPICS = [
    "Quarterly report", "Lunch on Friday?", "Server outage tonight", "Invoice 2023-{n}",
    "Re-org announcement", "Build {n} failed", "Your order #{n} has shipped",
    "Meeting minutes {n}", "Holiday schedule", "Café meeting über alles", "Résumé for {n}",
    "Straße {n} closed", "Budget draft v{n}", "Migration plan", "Question about ticket {n}",
]  # fmt: skip
ATTACHMENTS = [
    ("application/pdf", "report.pdf"),
    ("image/jpeg", "photo.jpg"),
    ("application/zip", "archive.zip"),
    ("image/png", "screenshot.png"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "budget.xlsx"),
]


def _encoded_word(text: str, rng: random.Random) -> str:
    """``text`` as one RFC 2047 encoded-word, B or Q, UTF-8 or Latin-1 when it fits."""
    charset = "utf-8"
    try:
        raw = text.encode("iso-8859-1")
        if rng.random() < 0.5:
            charset = "iso-8859-1"
        else:
            raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    if rng.random() < 0.5:
        payload = base64.b64encode(raw).decode("ascii")
        return f"=?{charset}?B?{payload}?="
    # RFC 2047 §4.2: Q encoding; "_" stands for space, specials are =XX.
    out = []
    for byte in raw:
        ch = chr(byte)
        if ch == " ":
            out.append("_")
        elif ch.isascii() and (ch.isalnum() or ch in "!*+-/"):
            out.append(ch)
        else:
            out.append(f"={byte:02X}")
    return f"=?{charset}?Q?{''.join(out)}?="


def _header_text(text: str, rng: random.Random) -> str:
    """Plain when ASCII, otherwise an encoded-word (RFC 2047 §5)."""
    return text if text.isascii() else _encoded_word(text, rng)


def _person(rng: random.Random) -> tuple[str, str]:
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    local = "".join(c for c in f"{first}.{last}".lower() if c.isascii() and c != " ")
    local = local.strip(".") or f"user{rng.randrange(1000)}"
    return f"{first} {last}", f"{local}@{rng.choice(DOMAINS)}"


def _address(rng: random.Random) -> str:
    name, addr = _person(rng)
    if name.isascii():
        return f'"{name}" <{addr}>'
    return f"{_encoded_word(name, rng)} <{addr}>"


def _words(rng: random.Random, approx_octets: int) -> str:
    """Plain text wrapped at ~72 columns, about *approx_octets* long."""
    count = max(8, approx_octets // 6)
    words = rng.choices(WORDS, k=count)
    lines: list[str] = []
    line: list[str] = []
    width = 0
    for word in words:
        if width + len(word) > 72:
            lines.append(" ".join(line))
            line, width = [], 0
            if rng.random() < 0.08:
                lines.append("")
        line.append(word)
        width += len(word) + 1
    lines.append(" ".join(line))
    # A line starting with "." exercises POP3 dot-stuffing (RFC 1939 §3).
    if rng.random() < 0.2:
        lines.insert(len(lines) // 2, ".signature line starting with a dot")
    return "\n".join(lines) + "\n"


def _base64_block(rng: random.Random, octets: int) -> str:
    """Base64 of seeded random bytes, in 76-column lines (RFC 2045 §6.8)."""
    raw = rng.randbytes(max(1, octets * 3 // 4))
    encoded = base64.b64encode(raw).decode("ascii")
    return "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"


def _target_size(rng: random.Random, profile: str) -> tuple[int, bool]:
    """The message's target size and whether it carries an attachment.

    Text mail is log-normal around 8 KB (mean ~11 KB); the 10 % with an attachment
    spread over 150 KB-1 MB, peaking at 550 KB (mean ~575 KB): 0.9·11 + 0.1·575 ≈ 68 KB.
    """
    if profile == "small":
        return rng.randint(1000, 2000), False
    if rng.random() < 0.10:
        return int(rng.triangular(150 * 1024, MAX_SIZE, 550 * 1024)), True
    size = int(math.exp(rng.gauss(math.log(8000), 0.8)))
    return min(max(size, MIN_SIZE), 200 * 1024), False


@dataclass
class _Thread:
    message_id: str
    references: list[str]
    subject: str


def _message(
    index: int, rng: random.Random, when: int, threads: list[_Thread], profile: str
) -> bytes:
    target, attach = _target_size(rng, profile)
    message_id = f"<{index}.{rng.getrandbits(48):012x}@bench.example>"
    headers: list[tuple[str, str]] = []
    reply_to: _Thread | None = (
        rng.choice(threads[-200:]) if threads and rng.random() < 0.3 else None
    )
    if reply_to is not None:
        subject = (
            reply_to.subject if reply_to.subject.startswith("Re: ") else "Re: " + reply_to.subject
        )
        references = [*reply_to.references[-10:], reply_to.message_id]
    else:
        subject = rng.choice(SUBJECT_TOPICS).format(n=rng.randrange(1, 10_000))
        references = []
    threads.append(_Thread(message_id, references, subject))

    headers.append(("Return-Path", f"<{_person(rng)[1]}>"))
    date = format_datetime(datetime.fromtimestamp(when, UTC))
    relay = f"mx{rng.randrange(9)}.example.net (mx.example.net [192.0.2.{rng.randrange(1, 255)}])"
    received = (
        f"from {relay}\n\tby mail.example.com with ESMTPS id {rng.getrandbits(40):010X}"
        f"\n\tfor <bench@example.com>; {date}"
    )
    headers.append(("Received", received))
    headers.append(("From", _address(rng)))
    tos = ", ".join(_address(rng) for _ in range(rng.choice([1, 1, 1, 2, 3])))
    headers.append(("To", tos))
    if rng.random() < 0.3:
        headers.append(("Cc", ", ".join(_address(rng) for _ in range(rng.randint(1, 4)))))
    headers.append(("Subject", _header_text(subject, rng)))
    headers.append(("Date", date))
    headers.append(("Message-ID", message_id))
    if reply_to is not None:
        headers.append(("In-Reply-To", reply_to.message_id))
        refs = references[0]
        for ref in references[1:]:
            refs += "\n " + ref  # folded, as clients write long References
        headers.append(("References", refs))
    headers.append(("MIME-Version", "1.0"))

    header_octets = sum(len(k) + len(v) + 3 for k, v in headers) + 200
    budget = max(200, target - header_octets)
    boundary = f"=_bench_{index}_{rng.getrandbits(32):08x}"
    style = rng.random()
    if attach:
        ctype, filename = rng.choice(ATTACHMENTS)
        text_len = min(budget // 10, 4000)
        headers.append(("Content-Type", f'multipart/mixed; boundary="{boundary}"'))
        body = (
            "This is a multi-part message in MIME format.\n\n"
            f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            + _words(rng, text_len)
            + f'\n--{boundary}\nContent-Type: {ctype}; name="{filename}"\n'
            f'Content-Disposition: attachment; filename="{filename}"\n'
            "Content-Transfer-Encoding: base64\n\n"
            + _base64_block(rng, max(100, budget - text_len - 400))
            + f"\n--{boundary}--\n"
        )
    elif style < 0.35 and profile != "small":
        # multipart/alternative: the same text twice, plain and HTML (RFC 2046 §5.1.4).
        half = budget // 2
        text = _words(rng, half * 10 // 11)
        html = "<html><body>\n<p>" + text.replace("\n\n", "</p>\n<p>") + "</p>\n</body></html>\n"
        headers.append(("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
        body = (
            f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            + text
            + f"\n--{boundary}\nContent-Type: text/html; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n" + html + f"\n--{boundary}--\n"
        )
    else:
        headers.append(("Content-Type", "text/plain; charset=utf-8; format=flowed"))
        headers.append(("Content-Transfer-Encoding", "8bit"))
        body = _words(rng, budget)

    head = "".join(f"{k}: {v}\n" for k, v in headers)
    raw = (head + "\n" + body).encode("utf-8")
    if len(raw) < MIN_SIZE and profile != "small":
        # Header estimates run short for tiny bodies; top up so 2 KB stays the floor.
        raw += _words(rng, MIN_SIZE - len(raw) + 80).encode("utf-8")
    if profile != "small" and index % 200 == 199:
        raw = _malform(raw, index // 200, rng)
    return raw


def _malform(raw: bytes, which: int, rng: random.Random) -> bytes:
    """One of several real-world defects; every server must still index the message."""
    head, _, body = raw.partition(b"\n\n")
    kind = which % 5
    if kind == 0:  # no empty line between header and body (RFC 5322 §3.5 violated)
        return head + b"\n" + body
    if kind == 1:  # multipart whose closing boundary never comes
        return (
            head.replace(
                b"Content-Type: text/plain; charset=utf-8; format=flowed",
                b'Content-Type: multipart/mixed; boundary="never-closed"',
            )
            + b"\n\n--never-closed\nContent-Type: text/plain\n\n"
            + body
        )
    if kind == 2:  # raw 8-bit Latin-1 in a header, no encoded-word
        return b"X-Note: caf\xe9 cr\xe8me br\xfbl\xe9e\n" + head + b"\n\n" + body
    if kind == 3:  # one unfolded header line far beyond RFC 5322 §2.1.1's 998 octets
        return b"X-Long: " + b"x" * 2000 + b"\n" + head + b"\n\n" + body
    # A header line without a colon, and a broken encoded-word in the subject.
    return head + b"\nThis line is not a header\nX-Broken: =?utf-8?B?not*base64?=\n\n" + body


def _maildir_name(when: int, index: int, raw: bytes, in_new: bool, flags: str) -> str:
    if in_new:
        # What an MTA (postfix) writes: no size, no info.
        return f"{when}.V801I{index:x}M{index % 1_000_000}.mta.example"
    size = len(raw)
    vsize = size + raw.count(b"\n")  # CRLF size: every LF counts as two octets
    return f"{when}.M{index % 1_000_000}P{4242}.bench.example,S={size},W={vsize}:2,{flags}"


def iter_messages(dataset: DataSet) -> Iterator[tuple[str, bool, int, bytes]]:
    """(file name, goes in new/, internal date, octets) for every message, in order."""
    rng = random.Random(dataset.seed)
    threads: list[_Thread] = []
    when = EPOCH
    new_from = int(dataset.count * 0.95)
    for index in range(dataset.count):
        when += rng.randint(30, 3600)
        raw = _message(index, rng, when, threads, dataset.profile)
        in_new = index >= new_from
        flags = ""
        if not in_new:
            roll = rng.random()
            # Maildir info letters in ASCII order (DESIGN.md, On-disk format).
            flags = "RS" if roll < 0.2 else "FS" if roll < 0.25 else "S" if roll < 0.85 else ""
        yield _maildir_name(when, index, raw, in_new, flags), in_new, when, raw


def maildir_path(name: str, data_dir: Path = DATA_DIR) -> Path:
    """Where the pristine Maildir of data set *name* lives (``<dir>/<name>/Maildir``)."""
    return data_dir / name / "Maildir"


def ensure_dataset(dataset: DataSet, data_dir: Path = DATA_DIR, quiet: bool = False) -> Path:
    """Generate *dataset* unless an identical one is cached; return its Maildir."""
    root = data_dir / dataset.name
    stamp = root / "stamp.json"
    wanted = {"version": GENERATOR_VERSION, **asdict(dataset)}
    maildir = root / "Maildir"
    if stamp.exists():
        try:
            if json.loads(stamp.read_text()) == wanted:
                return maildir
        except ValueError:
            pass  # a half-written stamp: regenerate
    if root.exists():
        shutil.rmtree(root)
    building = data_dir / f".{dataset.name}.building"
    if building.exists():
        shutil.rmtree(building)
    target = building / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (target / sub).mkdir(parents=True)
    started = time.monotonic()
    total = 0
    for i, (name, in_new, when, raw) in enumerate(iter_messages(dataset)):
        path = target / ("new" if in_new else "cur") / name
        path.write_bytes(raw)
        os.utime(path, (when, when))
        total += len(raw)
        if not quiet and (i + 1) % 1000 == 0:
            print(
                f"  {dataset.name}: {i + 1}/{dataset.count} messages, {total / 1e6:.0f} MB",
                file=sys.stderr,
            )
    (building / "stamp.json").write_text(json.dumps(wanted, sort_keys=True))
    building.rename(root)
    if not quiet:
        print(
            f"generated {dataset.name}: {dataset.count} messages, {total / 1e6:.1f} MB"
            f" in {time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )
    return maildir


def copy_maildir(source: Path, destination: Path) -> None:
    """A real copy of *source* (reflinks where the filesystem has them, never hard links).

    Both servers rename message files to change flags; with ``cp -al`` a rename in one
    copy would not show in the other but a write through a shared inode would, so each
    server gets its own files.  mtimes are kept: they are the INTERNALDATEs.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["cp", "-a", "--reflink=auto", str(source), str(destination)],
        check=True,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.generate [NAME ...]``: build (or confirm) the cached data sets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # No list default: argparse (3.11) checks a list default against choices as
    # one value and refuses it.
    parser.add_argument("names", nargs="*", choices=sorted(DATASETS), metavar="NAME")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    for name in args.names or ["10k", "1k", "idle"]:
        path = ensure_dataset(DATASETS[name], args.data_dir)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
