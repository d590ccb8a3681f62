"""Smoke tests of the benchmark's parts: data generation, framing, /proc parsing, table.

The benchmark is a tool, not a test: no figure it measures is asserted anywhere.  What
is tested is that its instruments are right — the same seed gives the same mail, the
mail has the features the workloads rely on, the clients find response ends exactly,
and the table puts each server's figure in its own column with the right ratio.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
from pathlib import Path

import pytest

from bench.clients import IMAPConnection, POP3Connection, dot_stuff
from bench.generate import DataSet, _malform, ensure_dataset, iter_messages
from bench.procstat import parse_pss, parse_stat, tree_cpu, tree_pss
from bench.run import NOT_IMPLEMENTED, Cell, Results, format_report, format_table
from bench.workloads import QUICK, Sizes, all_metrics

# 200 messages: index 199 is the first malformed one, and threads have time to form.
TINY = DataSet("tiny", 200, seed=7)


@pytest.fixture(scope="module")
def tiny_maildir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_dataset(TINY, tmp_path_factory.mktemp("data"), quiet=True)


def _files(maildir: Path) -> list[Path]:
    return sorted([*(maildir / "cur").iterdir(), *(maildir / "new").iterdir()])


def test_generation_is_deterministic(tmp_path: Path, tiny_maildir: Path) -> None:
    again = ensure_dataset(TINY, tmp_path, quiet=True)
    first = {p.name: p.read_bytes() for p in _files(tiny_maildir)}
    second = {p.name: p.read_bytes() for p in _files(again)}
    assert first == second
    assert len(first) == TINY.count


def test_generation_is_cached(tiny_maildir: Path) -> None:
    stamp_before = (tiny_maildir.parent / "stamp.json").stat().st_mtime_ns
    ensure_dataset(TINY, tiny_maildir.parent.parent, quiet=True)
    assert (tiny_maildir.parent / "stamp.json").stat().st_mtime_ns == stamp_before


def test_maildir_layout_and_sizes_in_names(tiny_maildir: Path) -> None:
    assert (tiny_maildir / "tmp").is_dir()
    in_new = list((tiny_maildir / "new").iterdir())
    assert in_new, "the newest messages are left in new/ for the servers to move"
    for path in (tiny_maildir / "cur").iterdir():
        base, _, flags = path.name.partition(":2,")
        assert flags == "".join(sorted(flags))  # Maildir info letters in ASCII order
        fields = dict(part.split("=", 1) for part in base.split(",")[1:])
        raw = path.read_bytes()
        assert int(fields["S"]) == len(raw)
        assert int(fields["W"]) == len(raw) + raw.count(b"\n")  # CRLF size
        assert b"\r\n" not in raw  # stored with LF line ends, as Maildir wants
    for path in in_new:
        assert ",S=" not in path.name and ":2," not in path.name


def test_mtime_is_the_internal_date(tiny_maildir: Path) -> None:
    for name, in_new, when, _raw in iter_messages(TINY):
        folder = "new" if in_new else "cur"
        assert (tiny_maildir / folder / name).stat().st_mtime == when


def test_mail_has_the_features_workloads_need(tiny_maildir: Path) -> None:
    messages = [email.message_from_bytes(p.read_bytes(), policy=email.policy.compat32)
                for p in _files(tiny_maildir)]  # fmt: skip
    sizes = [p.stat().st_size for p in _files(tiny_maildir)]
    assert min(sizes) >= 2048
    assert max(sizes) <= 1024 * 1024 + 64 * 1024
    assert any(m.get("In-Reply-To") and m.get("References") for m in messages)
    assert any("=?" in (m.get("Subject") or "") for m in messages)  # RFC 2047
    assert any("=?" in (m.get("From") or "") for m in messages)
    assert any(m.get_content_type() == "multipart/alternative" for m in messages)
    attachments = [
        m for m in messages
        if m.get_content_type() == "multipart/mixed" and "attachment" in str(m)
    ]  # fmt: skip
    assert 5 <= len(attachments) <= 45  # ~10 %
    raws = [p.read_bytes() for p in _files(tiny_maildir)]
    # Message 199 is the first malformed one (no blank line after the header).
    raw199 = list(iter_messages(TINY))[199][3]
    parsed = email.message_from_bytes(raw199, policy=email.policy.compat32)
    assert any("MissingHeaderBodySeparator" in type(d).__name__ for d in parsed.defects)
    assert any(b"\n.signature" in r for r in raws)  # exercises POP3 dot-stuffing


def test_every_malformation_changes_the_message() -> None:
    import random

    sample = b"From: a@example.com\nSubject: s\nContent-Type: text/plain; charset=utf-8; "
    sample += b"format=flowed\n\nbody\n"
    kinds = {_malform(sample, which, random.Random(1)) for which in range(5)}
    assert sample not in kinds
    assert len(kinds) == 5


def test_dot_stuff_rfc5321_4_5_2() -> None:
    assert dot_stuff(b".a\nb\n.\n") == b"..a\r\nb\r\n..\r\n"
    assert dot_stuff(b"no newline") == b"no newline\r\n"


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_imap_literal_is_skipped_by_count_rfc3501_4_3() -> None:
    # The literal contains what looks like the tagged completion; only the real one counts.
    literal = b"A0001 OK fake\r\n"
    data = (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(literal) + literal + b")\r\n"
        b"* 2 FETCH (FLAGS (\\Seen))\r\n"
        b"A0001 OK done\r\n"
    )

    async def go() -> tuple[bytes, int, int]:
        conn = IMAPConnection(_reader(data), None)  # type: ignore[arg-type]
        response = await conn.read_until_tagged(b"A0001", keep=True)
        return response.tagged, response.octets, len(response.untagged)

    tagged, octets, untagged = asyncio.run(go())
    assert tagged == b"A0001 OK done\r\n"
    assert octets == len(data)
    assert untagged == 2


def test_pop3_multiline_ends_only_at_lone_dot_rfc1939_3() -> None:
    body = b"line.\r\n..stuffed\r\nend.\r\n.\r\n"
    data = b"+OK 3 octets\r\n" + body + b"+OK next\r\n"

    async def go() -> bytes:
        conn = POP3Connection(_reader(data), None)  # type: ignore[arg-type]
        return await conn.read_multi()

    assert asyncio.run(go()) == body


def test_pop3_empty_multiline() -> None:
    async def go() -> bytes:
        conn = POP3Connection(_reader(b"+OK\r\n.\r\n"), None)  # type: ignore[arg-type]
        return await conn.read_multi()

    assert asyncio.run(go()) == b".\r\n"


def test_parse_stat_with_parentheses_in_the_name() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S", "1"] + ["0"] * 9 + [str(3 * ticks), str(ticks), str(2 * ticks), "0"]
    stat = parse_stat("42 (imap (x) y) " + " ".join(fields) + " 20 0 1 0")
    assert (stat.pid, stat.ppid) == (42, 1)
    assert (stat.utime, stat.stime, stat.cutime, stat.cstime) == (3.0, 1.0, 2.0, 0.0)


def test_parse_pss() -> None:
    text = "00400000-ffffffff ---p 00000000 00:00 0 [rollup]\nRss: 900 kB\nPss: 512 kB\n"
    assert parse_pss(text) == 512 * 1024


def test_own_process_tree_is_readable() -> None:
    # This process is alive and has used some CPU and memory: the /proc readers see it.
    assert tree_cpu(os.getpid()) > 0
    assert tree_pss(os.getpid()) > 0


def _results(sizes: Sizes) -> Results:
    metrics = all_metrics(sizes)
    results = Results({"date": "d", "cpu": "c"}, "quick", 1, metrics)
    for metric in metrics:
        results.owner[metric.key] = metric.key
        dovecot = Cell(values={metric.key: [4.0]}, cpu=[1.0], pss=[8e6], gen_cpu=[0.5])
        if metric.unit == "ms":
            ours = Cell(values={metric.key: [2.0]}, cpu=[0.5], pss=[4e6], gen_cpu=[0.25])
        else:
            ours = Cell(note=NOT_IMPLEMENTED)
        results.cells[metric.key] = {"mailaccess": ours, "Dovecot": dovecot}
    results.store_rows.append(("warm open", "ms", "1.5", "≤ 2"))
    return results


def test_table_has_one_row_per_metric_and_the_ratio_of_medians() -> None:
    results = _results(QUICK)
    table = format_table(results)
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[3:6] == ["mailaccess", "Dovecot", "ratio ma/dc"]
    body = [line for line in lines[2:] if line.startswith("| ")]
    by_label = {line.split(" | ")[0][2:]: line for line in body}
    for metric in results.metrics:
        row = [c.strip() for c in by_label[metric.label].strip("|").split("|")]
        assert row[2] == ("higher" if metric.higher_is_better else "lower")
        if metric.unit == "ms":
            assert row[3:6] == ["2.00", "4.00", "0.50"]
        else:
            assert row[3] == NOT_IMPLEMENTED
            assert row[5] == "—"
    assert "| warm open | ms | 1.5 | ≤ 2 |" in table


def test_report_names_the_machine() -> None:
    report = format_report(_results(Sizes()))
    assert report.startswith("Run d — mode quick, 1 repetition(s); c,")
    assert "10,000" in report  # full-size labels come from Sizes, not hard-coded
