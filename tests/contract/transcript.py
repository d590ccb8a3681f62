"""Multi-connection transcripts: POP3 and IMAP side by side on one real server.

A scenario is a text file that reads like the protocol (see CONVENTIONS.md,
"Tests read like the protocol"; the shape follows imaptest's scripts).  Header
lines come first, then a blank line, then the script::

    title: RETR sets \\Seen, and an IMAP session in IDLE hears it at once
    rule: DESIGN.md rule 3; RFC 1939 §5; RFC 2177
    connections: imap1=imap pop=pop3
    vary: pop3.retr_sets_seen = true, false
    config: pop3.exclusive = false
    xfail: <reason>                 (the scenario is known to fail: strict xfail)

    deliver 2
    imap1 connect
    imap1< * OK ...
    imap1> a1 LOGIN alice secret
    imap1< a1 OK ...
    pop> RETR 1
    pop< +OK $size1 octets
    [pop3.retr_sets_seen=true] imap1 within 2000ms< * 1 FETCH (FLAGS (\\Seen))
    [pop3.retr_sets_seen=false] imap1 silent 500ms

Script lines:

- ``NAME> text``: send *text* and CRLF on connection NAME.  ``$var`` names
  bound earlier are replaced by their values.
- ``NAME< pattern``: the next line from NAME must match *pattern* (within
  the default timeout, :data:`DEFAULT_WAIT`).  ``NAME within 500ms< pattern``
  waits at most 500 ms: for pushes the RFC says come "at once" (IDLE).
- ``NAME<< pattern``: skip lines until one matches *pattern* (a message
  body: ``pop<< .`` reads up to the end of a RETR answer).
- ``NAME<~ pattern``: consecutive ``<~`` lines of one connection form an
  unordered block: the next lines must match them in any order (untagged
  responses whose order the RFC leaves open).
- ``NAME silent 500ms``: nothing at all arrives on NAME for 500 ms.
- ``NAME login``: connect, read the greeting and log in as alice (IMAP
  ``a0 LOGIN``, POP3 ``USER``/``PASS``), each line checked and recorded.
- ``NAME connect`` / ``NAME drop`` (close without QUIT) / ``NAME closed``
  (the server must close the connection, e.g. after QUIT or LOGOUT).
- ``deliver N``: deliver N messages to alice over LMTP (RFC 2033); each gets
  the subject ``message K`` (K counts up over the whole scenario).
- ``maildir new N``: another program (an MDA such as procmail) writes N
  messages straight into alice's ``Maildir/new/`` (tmp/, then rename).
- ``server restart`` (SIGTERM, start again) and ``server crash`` (SIGKILL,
  start again); every open connection is gone after either.
- ``[key=value] line``: the line only counts in the variant where the option
  *key* (``section.name`` as in the config) has *value*.
- ``# comment`` lines and blank lines are skipped.

Patterns: the text must match the whole line.  ``...`` matches any text
(also none); ``$name`` matches a token (no space, parenthesis or bracket)
and binds it the first time, and must equal the bound value afterwards;
``${name:08x}`` matches the bound value formatted as an integer with that
format spec (e.g. a UIDVALIDITY seen by IMAP, as hex in a POP3 UIDL).
Everything else is literal.
"""

from __future__ import annotations

import itertools
import os
import re
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How long a plain ``<`` line waits for its line (the machine may be loaded).
DEFAULT_WAIT = 10.0

USER = "alice"
PASSWORD = "secret"

_CONNECTION = r"(?P<conn>[A-Za-z][A-Za-z0-9_]*)"
_LINE = re.compile(
    rf"^{_CONNECTION}(?: within (?P<ms>\d+)ms)?(?P<dir>>|<~|<<|<)(?: (?P<text>.*)|$)"
)
_ACTION = re.compile(
    rf"^{_CONNECTION} (?P<action>connect|login|drop|closed|silent (?P<ms>\d+)ms)$"
)
_CONDITION = re.compile(r"^\[(?P<key>[a-z0-9_]+\.[a-z0-9_]+)=(?P<value>[^\]]+)\] (?P<rest>.*)$")
_TOKEN = r"[^\s()\[\]]+"
_PATTERN_PART = re.compile(r"\.\.\.|\$\{(?P<fname>\w+):(?P<fmt>[^}]*)\}|\$(?P<name>[A-Za-z_]\w*)")


class ScenarioError(Exception):
    """The scenario file itself is malformed (a mistake in the test)."""


class TranscriptMismatch(AssertionError):
    """The server said something other than the scenario expects."""


@dataclass(frozen=True)
class Step:
    """One script line: where it is, what it does."""

    lineno: int
    source: str
    kind: str  # send, expect, unordered, silent, connect, drop, closed, deliver, server
    conn: str = ""
    text: str = ""
    wait: float = DEFAULT_WAIT
    condition: tuple[str, str] | None = None


@dataclass
class Scenario:
    """A parsed scenario file."""

    path: Path
    title: str
    rule: str
    connections: dict[str, str]
    config: dict[str, Any]
    vary: dict[str, list[Any]]
    xfail: str | None
    steps: list[Step]

    @property
    def name(self) -> str:
        return self.path.stem

    def variants(self) -> list[dict[str, Any]]:
        """Every combination of the ``vary:`` options (one empty dict if none)."""
        keys = list(self.vary)
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(self.vary[k] for k in keys))
        ]


def _toml_value(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def parse_scenario(path: Path) -> Scenario:
    """Read *path*; ScenarioError names the line of any mistake."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header: dict[str, str] = {}
    index = 0
    while index < len(lines) and lines[index].strip():
        key, sep, value = lines[index].partition(":")
        if not sep or key.strip() not in {
            "title",
            "rule",
            "connections",
            "config",
            "vary",
            "xfail",
        }:
            raise ScenarioError(f"{path}:{index + 1}: unknown header line {lines[index]!r}")
        k = key.strip()
        header[k] = (header[k] + "; " + value.strip()) if k in header else value.strip()
        index += 1
    connections = dict(item.split("=", 1) for item in header.get("connections", "").split())
    for name, proto in connections.items():
        if proto not in ("imap", "pop3"):
            raise ScenarioError(f"{path}: connection {name}: protocol {proto!r} is not imap/pop3")
    config: dict[str, Any] = {}
    for item in filter(None, header.get("config", "").split(";")):
        key, _, value = item.partition("=")
        config[key.strip()] = _toml_value(value)
    vary: dict[str, list[Any]] = {}
    for item in filter(None, header.get("vary", "").split(";")):
        key, _, values = item.partition("=")
        vary[key.strip()] = [_toml_value(v) for v in values.split(",")]
    steps = [
        step
        for number, line in enumerate(lines[index:], start=index + 1)
        for step in _parse_steps(path, number, line, connections)
    ]
    return Scenario(
        path=path,
        title=header.get("title", path.stem),
        rule=header.get("rule", ""),
        connections=connections,
        config=config,
        vary=vary,
        xfail=header.get("xfail"),
        steps=steps,
    )


def _parse_steps(path: Path, lineno: int, line: str, connections: dict[str, str]) -> list[Step]:
    """The steps of one script line (``NAME login`` stands for four)."""
    step = _parse_step(path, lineno, line, connections)
    if step is None:
        return []
    if step.kind != "login":
        return [step]
    c, n, cond = step.conn, lineno, step.condition
    if connections[c] == "imap":
        lines = [("connect", ""), ("expect", "* OK ..."), ("send", f"a0 LOGIN {USER} {PASSWORD}")]
        lines.append(("expect", "a0 OK ..."))
    else:
        lines = [("connect", ""), ("expect", "+OK ..."), ("send", f"USER {USER}")]
        lines += [("expect", "+OK ..."), ("send", f"PASS {PASSWORD}"), ("expect", "+OK ...")]
    return [Step(n, line, kind, c, text, condition=cond) for kind, text in lines]


def _parse_step(path: Path, lineno: int, line: str, connections: dict[str, str]) -> Step | None:
    source = line
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    condition = None
    if m := _CONDITION.match(line):
        condition = (m["key"], m["value"])
        line = m["rest"]
    where = f"{path}:{lineno}"

    def known(conn: str) -> str:
        if conn not in connections:
            raise ScenarioError(f"{where}: connection {conn!r} is not in the connections header")
        return conn

    if m := _ACTION.match(line):
        action = m["action"].split()[0]
        wait = int(m["ms"]) / 1000 if m["ms"] else DEFAULT_WAIT
        return Step(lineno, source, action, known(m["conn"]), wait=wait, condition=condition)
    if m := _LINE.match(line):
        kind = {">": "send", "<": "expect", "<~": "unordered", "<<": "skip"}[m["dir"]]
        wait = int(m["ms"]) / 1000 if m["ms"] else DEFAULT_WAIT
        text = m["text"] or ""
        return Step(lineno, source, kind, known(m["conn"]), text, wait, condition)
    if m := re.fullmatch(r"deliver (\d+)", line):
        return Step(lineno, source, "deliver", text=m[1], condition=condition)
    if m := re.fullmatch(r"maildir new (\d+)", line):
        return Step(lineno, source, "maildir", text=m[1], condition=condition)
    if m := re.fullmatch(r"server (restart|crash)", line):
        return Step(lineno, source, "server", text=m[1], condition=condition)
    raise ScenarioError(f"{where}: cannot read {line!r}")


# --- matching --------------------------------------------------------------------


def match_line(pattern: str, line: str, bound: dict[str, str]) -> dict[str, str] | None:
    """The new bindings if *line* matches *pattern* given *bound*, else None."""
    regex = []
    new_names: list[str] = []
    pos = 0
    for m in _PATTERN_PART.finditer(pattern):
        regex.append(re.escape(pattern[pos : m.start()]))
        pos = m.end()
        if m[0] == "...":
            regex.append(".*")
        elif m["fname"]:
            if m["fname"] not in bound:
                raise ScenarioError(f"${{{m['fname']}:...}} used before $%s is bound" % m["fname"])
            regex.append(re.escape(format(int(bound[m["fname"]]), m["fmt"])))
        else:
            name = m["name"]
            if name in bound:
                regex.append(re.escape(bound[name]))
            elif name in new_names:
                regex.append(f"(?P={name})")
            else:
                new_names.append(name)
                regex.append(f"(?P<{name}>{_TOKEN})")
    regex.append(re.escape(pattern[pos:]))
    found = re.fullmatch("".join(regex), line)
    if found is None:
        return None
    return {name: found[name] for name in new_names}


def substitute(text: str, bound: dict[str, str]) -> str:
    """*text* with each bound ``$name`` replaced (sent lines)."""

    def value(m: re.Match[str]) -> str:
        if m[0] == "...":
            return m[0]
        name = m["fname"] or m["name"]
        if name not in bound:
            raise ScenarioError(f"${name} is sent before any line bound it")
        return format(int(bound[name]), m["fmt"]) if m["fname"] else bound[name]

    return _PATTERN_PART.sub(value, text)


# --- running ---------------------------------------------------------------------


class Connection:
    """A blocking line-oriented client socket (loopback, short timeouts)."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def connect(self) -> None:
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=DEFAULT_WAIT)
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def send(self, text: str) -> None:
        if self.sock is None:
            raise TranscriptMismatch(f"{self.name} is not connected (add '{self.name} connect')")
        self.sock.sendall(text.encode("utf-8") + b"\r\n")

    def read_line(self, wait: float) -> str | None:
        """The next line without its CRLF; None if none within *wait*; '' -> EOF marker."""
        if self.sock is None:
            raise TranscriptMismatch(f"{self.name} is not connected")
        deadline = time.monotonic() + wait
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            except ConnectionResetError:
                data = b""
            if not data:
                raise EOFError
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.removesuffix(b"\r").decode("utf-8", errors="replace")


@dataclass
class Run:
    """One run of a scenario in one variant against one server."""

    scenario: Scenario
    variant: dict[str, Any]
    server: Any  # tests.conftest.MailServer
    bound: dict[str, str] = field(default_factory=dict)
    transcript: list[str] = field(default_factory=list)
    delivered: int = 0

    def __post_init__(self) -> None:
        self.connections = {
            name: Connection(name, self.server.ports[proto])
            for name, proto in self.scenario.connections.items()
        }

    def applies(self, step: Step) -> bool:
        if step.condition is None:
            return True
        key, value = step.condition
        if key not in self.variant:
            raise ScenarioError(f"line {step.lineno}: [{key}=...] but {key} is not in vary:")
        return str(self.variant[key]).lower() == value.lower()

    def fail(self, step: Step, message: str) -> None:
        variant = ", ".join(f"{k}={v}" for k, v in self.variant.items()) or "no options varied"
        so_far = "\n".join(self.transcript[-60:])
        raise TranscriptMismatch(
            f"scenario {self.scenario.name} ({variant}), "
            f"{self.scenario.path.name} line {step.lineno}: {step.source.strip()}\n"
            f"{message}\n--- transcript so far (C: sent, S: received) ---\n{so_far}"
        )

    def run(self) -> None:
        try:
            steps = [s for s in self.scenario.steps if self.applies(s)]
            index = 0
            while index < len(steps):
                step = steps[index]
                if step.kind == "unordered":
                    block = [step]
                    for later in steps[index + 1 :]:
                        if later.kind != "unordered" or later.conn != step.conn:
                            break
                        block.append(later)
                    self.expect_unordered(block)
                    index += len(block)
                    continue
                self.do(step)
                index += 1
        finally:
            for conn in self.connections.values():
                conn.close()

    def do(self, step: Step) -> None:
        conn = self.connections.get(step.conn)
        if step.kind == "send":
            assert conn is not None
            text = substitute(step.text, self.bound)
            self.transcript.append(f"{step.conn} C: {text}")
            try:
                conn.send(text)
            except OSError as e:
                self.fail(step, f"could not send: {e}")
        elif step.kind == "expect":
            self.expect(step)
        elif step.kind == "skip":
            self.skip_to(step)
        elif step.kind == "silent":
            assert conn is not None
            got = self.read(step, step.wait)
            if got is not None:
                self.fail(step, f"expected nothing for {step.wait * 1000:.0f} ms, got {got!r}")
        elif step.kind == "connect":
            assert conn is not None
            conn.connect()
            self.transcript.append(f"{step.conn} (connected)")
        elif step.kind == "drop":
            assert conn is not None
            conn.close()
            self.transcript.append(f"{step.conn} (dropped without a goodbye)")
        elif step.kind == "closed":
            assert conn is not None
            try:
                line = conn.read_line(step.wait)
            except EOFError:
                self.transcript.append(f"{step.conn} (closed by the server)")
                conn.close()
                return
            got = f"{line!r}" if line is not None else f"nothing within {step.wait:g} s"
            self.fail(step, f"expected the server to close the connection, got {got}")
        elif step.kind == "deliver":
            for _ in range(int(step.text)):
                self.deliver_one(step)
        elif step.kind == "maildir":
            for _ in range(int(step.text)):
                self.drop_into_new()
        elif step.kind == "server":
            self.transcript.append(f"(server {step.text})")
            for c in self.connections.values():
                c.close()
            if step.text == "crash":
                process = self.server.process
                assert process is not None
                process.kill()  # SIGKILL: no shutdown code runs
                process.wait()
                if process.stdout is not None:
                    process.stdout.close()
                self.server.process = None
                self.server.start()
            else:
                self.server.restart()

    def read(self, step: Step, wait: float) -> str | None:
        conn = self.connections[step.conn]
        try:
            line = conn.read_line(wait)
        except EOFError:
            conn.close()
            self.transcript.append(f"{step.conn} (closed by the server)")
            self.fail(step, "the server closed the connection")
            raise AssertionError("unreachable") from None
        except OSError as e:
            self.fail(step, f"reading failed: {e}")
            raise AssertionError("unreachable") from None
        if line is not None:
            self.transcript.append(f"{step.conn} S: {line}")
        return line

    def expect(self, step: Step) -> None:
        line = self.read(step, step.wait)
        if line is None:
            self.fail(step, f"expected {step.text!r}, got nothing within {step.wait:g} s")
            return
        new = match_line(step.text, line, self.bound)
        if new is None:
            bound = {k: v for k, v in self.bound.items() if "$" + k in step.text}
            self.fail(step, f"expected {step.text!r}\n     got {line!r}\n   bound {bound}")
            return
        self.bound.update(new)

    def skip_to(self, step: Step) -> None:
        deadline = time.monotonic() + step.wait
        while (left := deadline - time.monotonic()) > 0:
            line = self.read(step, left)
            if line is None:
                break
            new = match_line(step.text, line, self.bound)
            if new is not None:
                self.bound.update(new)
                return
        self.fail(step, f"no line matching {step.text!r} within {step.wait:g} s")

    def expect_unordered(self, block: list[Step]) -> None:
        waiting = list(block)
        while waiting:
            line = self.read(waiting[0], max(s.wait for s in waiting))
            if line is None:
                expected = [s.text for s in waiting]
                self.fail(waiting[0], f"still expected (any order) {expected}, got nothing")
                return
            for step in waiting:
                new = match_line(step.text, line, self.bound)
                if new is not None:
                    self.bound.update(new)
                    waiting.remove(step)
                    break
            else:
                expected = [s.text for s in waiting]
                self.fail(waiting[0], f"expected one of (any order) {expected}\n got {line!r}")

    def drop_into_new(self) -> None:
        self.delivered += 1
        k = self.delivered
        maildir = self.server.maildir(USER)
        name = f"{int(time.time())}.M{k}P{os.getpid()}.contract"
        tmp = maildir / "tmp" / name
        tmp.write_bytes(self.message(k).replace("\r\n", "\n").encode())
        os.rename(tmp, maildir / "new" / name)
        self.transcript.append(f"(message {k} written into Maildir/new/ by another program)")

    @staticmethod
    def message(k: int) -> str:
        return (
            f"From: sender@example.org\r\nTo: {USER}@localhost\r\n"
            f"Subject: message {k}\r\nMessage-ID: <contract-{k}@example.org>\r\n\r\n"
            f"Body of message {k}.\r\n"
        )

    def deliver_one(self, step: Step) -> None:
        self.delivered += 1
        k = self.delivered
        message = self.message(k)
        self.transcript.append(f"(LMTP delivers 'message {k}')")
        try:
            with smtplib.LMTP(
                "127.0.0.1", self.server.ports["lmtp"], timeout=DEFAULT_WAIT
            ) as lmtp:
                refused = lmtp.sendmail("sender@example.org", [USER], message)
        except (smtplib.SMTPException, OSError) as e:
            self.fail(step, f"LMTP delivery of message {k} failed: {e}")
            return
        if refused:
            self.fail(step, f"LMTP refused message {k}: {refused}")


def scenario_files(directory: Path) -> list[Path]:
    """The scenario files of *directory*, in name order."""
    return sorted(directory.glob("*.txt"))


def run_scenario(
    scenario: Scenario, variant: dict[str, Any], start_server: Callable[..., Any]
) -> Run:
    """Start a server for *variant*, add alice, play the scenario; raise on mismatch."""
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in itertools.chain(scenario.config.items(), variant.items()):
        section, _, name = key.partition(".")
        overrides.setdefault(section, {})[name] = value
    server = start_server(**overrides)
    server.add_user(USER, PASSWORD)
    run = Run(scenario, variant, server)
    run.run()
    return run


def iter_cases(directory: Path) -> Iterator[tuple[Scenario, dict[str, Any]]]:
    """(scenario, variant) for every scenario file and variant in *directory*."""
    for path in scenario_files(directory):
        scenario = parse_scenario(path)
        for variant in scenario.variants():
            yield scenario, variant
