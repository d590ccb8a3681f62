"""mailaccess.service and the twistd plugin: listeners, TLS wrapping, SIGHUP, exits.

The wiring is tested in process with Twisted's memory reactor and a stand-in
protocol module (this file's ``make_factory``); the real thing is tested by
running ``twistd -n mailaccess`` (the ``mail_server`` fixture and direct runs).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography import x509
from OpenSSL import SSL
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, RaisingMemoryReactor
from twisted.logger import capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailaccess.cli import generate_self_signed
from mailaccess.cli import main as cli_main
from mailaccess.config import Config, load_config
from mailaccess.context import ServerContext
from mailaccess.service import DEFAULT_BACKLOG, StartupError, make_service, with_backlog
from tests.conftest import MailServer, subprocess_env, twistd_command

THIS_MODULE = __name__
MISSING_MODULE = "mailaccess.no_such_protocol_yet"

made_factories: list[tuple[Any, bool]] = []


def make_factory(context: ServerContext, implicit_tls: bool) -> Factory:
    """The stand-in protocol package's factory (the contract's signature)."""
    made_factories.append((context, implicit_tls))
    return Factory.forProtocol(Protocol)


class ImmediateReactor(MemoryReactor):
    """A memory reactor whose callFromThread runs the call at once."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    assert cli_main(["init", str(tmp_path / "s")]) == 0
    return load_config(tmp_path / "s/mailaccess.toml")


def fake_context(config: Config, reactor: Any, tls: Any) -> ServerContext:
    return ServerContext(config=config, store=None, authenticator=None, clock=reactor, tls=tls)  # type: ignore[arg-type]


def messages(events: Sequence[Mapping[str, Any]]) -> list[str]:
    return [e["log_format"].format(**e) for e in events]


# --- wiring ----------------------------------------------------------------------


def test_listeners_bound_in_privileged_start(config: Config) -> None:
    made_factories.clear()
    reactor = ImmediateReactor()
    protocols = {
        "imap": (THIS_MODULE, False),
        "imaps": (THIS_MODULE, True),
        "pop3": (MISSING_MODULE, False),
    }
    with capturedLogs() as events:
        service = make_service(config, reactor, protocols, fake_context)
        # Bound before twistd drops privileges, i.e. in privilegedStartService.
        service.privilegedStartService()
        assert [(port, iface) for port, _f, _b, iface in reactor.tcpServers] == [
            (1143, "127.0.0.1"),
            (1993, "127.0.0.1"),
        ]
        service.startService()
    plain_factory, tls_factory = (f for _p, f, _b, _i in reactor.tcpServers)
    assert not isinstance(plain_factory, TLSMemoryBIOFactory)
    # RFC 8314 §3.3: implicit TLS from the first octet, with our context factory.
    assert isinstance(tls_factory, TLSMemoryBIOFactory)
    assert [implicit for _c, implicit in made_factories] == [False, True]
    context = made_factories[0][0]
    assert context is made_factories[1][0]  # one shared context
    assert context.tls is service.tls is not None
    text = messages(events)
    assert any("pop3 is not implemented yet" in m and MISSING_MODULE in m for m in text)
    assert any(
        m.startswith("mailaccess ready: listening on imap tcp:1143:interface=127.0.0.1, imaps")
        for m in text
    )
    assert service.not_started == ["pop3"]
    service.stopService()


def test_listeners_get_a_deep_listen_queue_unless_they_set_one(config: Config) -> None:
    """Twisted's default backlog of 50 strands clients when hundreds connect at once."""
    made_factories.clear()
    reactor = ImmediateReactor()
    config = attrs.evolve(
        config,
        listen=attrs.evolve(
            config.listen,
            imap=("tcp:1143:interface=127.0.0.1", "tcp:1144:interface=127.0.0.1:backlog=7"),
            imaps=(),
        ),
    )
    service = make_service(config, reactor, {"imap": (THIS_MODULE, False)}, fake_context)
    service.privilegedStartService()
    assert [(port, backlog) for port, _f, backlog, _i in reactor.tcpServers] == [
        (1143, DEFAULT_BACKLOG),
        (1144, 7),
    ]
    service.stopService()


def test_with_backlog_only_where_the_endpoint_takes_one() -> None:
    assert with_backlog("unix:/run/lmtp.sock") == f"unix:/run/lmtp.sock:backlog={DEFAULT_BACKLOG}"
    assert with_backlog("tcp6:143") == f"tcp6:143:backlog={DEFAULT_BACKLOG}"
    assert with_backlog("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"


def test_factory_already_tls_is_not_wrapped_twice(config: Config, monkeypatch: Any) -> None:
    reactor = ImmediateReactor()

    def wrapping_factory(context: ServerContext, implicit_tls: bool) -> Any:
        return TLSMemoryBIOFactory(context.tls, False, Factory.forProtocol(Protocol))  # type: ignore[arg-type]

    monkeypatch.setattr(f"{THIS_MODULE}.make_factory", wrapping_factory)
    service = make_service(config, reactor, {"imaps": (THIS_MODULE, True)}, fake_context)
    service.privilegedStartService()
    (_port, factory, _b, _i) = reactor.tcpServers[0]
    assert isinstance(factory, TLSMemoryBIOFactory)
    assert not isinstance(factory.wrappedFactory, TLSMemoryBIOFactory)


def test_context_not_buildable_yet_is_logged(config: Config) -> None:
    reactor = ImmediateReactor()
    with capturedLogs() as events:
        service = make_service(
            config, reactor, {"imap": (THIS_MODULE, False)}, lambda c, r, t: "store is missing"
        )
        service.privilegedStartService()
    assert reactor.tcpServers == []
    assert any("not starting imap" in m and "store is missing" in m for m in messages(events))


def test_port_in_use_is_one_clear_error(config: Config) -> None:
    error = CannotListenError("127.0.0.1", 1143, OSError(98, "Address already in use"))
    reactor = RaisingMemoryReactor(listenException=error)
    service = make_service(config, reactor, {"imap": (THIS_MODULE, False)}, fake_context)
    with pytest.raises(StartupError, match=r"cannot listen on 127\.0\.0\.1:1143: Address already"):
        service.privilegedStartService()
    # Under twistd the same failure ends the process quietly with status 1.
    service = make_service(config, reactor, {"imap": (THIS_MODULE, False)}, fake_context)
    service.exit_on_startup_error = True
    with pytest.raises(SystemExit) as info:
        service.privilegedStartService()
    assert info.value.code == 1


def test_unreadable_certificate_stops_the_start(config: Config) -> None:
    assert config.tls.certificate is not None
    config.tls.certificate.write_text("garbage\n")
    with pytest.raises(StartupError, match="holds no PEM certificate"):
        make_service(config, ImmediateReactor(), {}, fake_context)


# --- SIGHUP ------------------------------------------------------------------------


def serial_of(service: Any) -> int:
    # The certificate a new connection would present.
    local = SSL.Connection(service.tls.getContext(), None).get_certificate()
    assert local is not None
    return int(local.get_serial_number())


def test_sighup_reloads_certificate(config: Config) -> None:
    reactor = ImmediateReactor()
    service = make_service(config, reactor, {}, fake_context)
    previous = signal.getsignal(signal.SIGHUP)
    service.startService()
    try:
        before = serial_of(service)
        assert config.tls.certificate is not None and config.tls.private_key is not None
        cert_pem, key_pem = generate_self_signed()
        config.tls.certificate.write_bytes(cert_pem)
        config.tls.private_key.write_bytes(key_pem)
        with capturedLogs() as events:
            os.kill(os.getpid(), signal.SIGHUP)
        assert serial_of(service) == x509.load_pem_x509_certificate(cert_pem).serial_number
        assert serial_of(service) != before
        assert any("TLS certificate reloaded" in m for m in messages(events))
    finally:
        service.stopService()
    assert signal.getsignal(signal.SIGHUP) == previous  # handed back


def test_sighup_with_broken_certificate_keeps_the_old(config: Config) -> None:
    reactor = ImmediateReactor()
    service = make_service(config, reactor, {}, fake_context)
    service.startService()
    try:
        before = serial_of(service)
        assert config.tls.certificate is not None
        config.tls.certificate.write_text("-----BEGIN CERTIFICATE-----\n")
        with capturedLogs() as events:
            os.kill(os.getpid(), signal.SIGHUP)
        assert serial_of(service) == before
        assert any("keeping the previous certificate" in m for m in messages(events))
    finally:
        service.stopService()


# --- twistd, for real ----------------------------------------------------------------


def run_twistd(config_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        twistd_command("-n", "--pidfile=", "mailaccess", f"--config={config_path}"),
        cwd=cwd,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("max_line_length", "max_line_lenght", None),  # not in init's file: added below
        ("exclusive = false", 'exclusive = "no"', "pop3.exclusive: expected true or false"),
        (
            'certificate = "tls/cert.pem"',
            'certificate = "nope.pem"',
            "tls.certificate: file not found",
        ),
    ],
    ids=["typo", "wrong-type", "missing-cert"],
)
def test_twistd_bad_config_exits_with_one_line(
    tmp_path: Path, old: str, new: str, says: str | None
) -> None:
    assert cli_main(["init", str(tmp_path / "s")]) == 0
    path = tmp_path / "s/mailaccess.toml"
    text = path.read_text()
    if says is None:
        text = text.replace("[limits]\n", "[limits]\nmax_line_lenght = 9000\n")
        says = "limits.max_line_lenght: unknown key"
    else:
        text = text.replace(old, new)
    path.write_text(text)
    result = run_twistd(path, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines == [f"mailaccess: {path}: {says}" + lines[0].split(says, 1)[1]]


def test_twistd_unreadable_certificate_exits_with_one_line(tmp_path: Path) -> None:
    assert cli_main(["init", str(tmp_path / "s")]) == 0
    (tmp_path / "s/tls/cert.pem").write_text("garbage\n")
    result = run_twistd(tmp_path / "s/mailaccess.toml", tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "holds no PEM certificate" in result.stderr


def test_server_starts_listeners_and_logs_the_missing(mail_server: MailServer) -> None:
    log = mail_server.log_text()
    for proto in ("imap", "imaps", "pop3", "pop3s", "lmtp"):
        if proto in mail_server.started:
            with socket.create_connection(("127.0.0.1", mail_server.ports[proto]), timeout=5):
                pass
        else:
            assert f"{proto} is not implemented yet" in log or f"not starting {proto}" in log
    # twistd's --pidfile holds the running server's pid.
    assert mail_server.process is not None
    assert int(mail_server.pid_path.read_text()) == mail_server.process.pid


def test_restart_keeps_ports(mail_server: MailServer) -> None:
    ports = dict(mail_server.ports)
    mail_server.restart()
    assert mail_server.ports == ports
    assert mail_server.log_text().count("mailaccess ready") == 2
    mail_server.stop()
    assert not mail_server.pid_path.exists()  # twistd removed it on a clean stop


def tls_serial(server: MailServer, port: int) -> tuple[ssl.SSLSocket, int]:
    context = ssl.create_default_context(cafile=str(server.cert))
    sock = context.wrap_socket(
        socket.create_connection(("localhost", port), timeout=10), server_hostname="localhost"
    )
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return sock, x509.load_der_x509_certificate(der).serial_number


def wait_for_log(server: MailServer, text: str, count: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while server.log_text().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in log:\n{server.log_text()}"
        time.sleep(0.05)


def test_sighup_reload_end_to_end_without_dropping_sessions(mail_server: MailServer) -> None:
    tls_protos = [p for p in ("pop3s", "imaps") if p in mail_server.started]
    if not tls_protos:
        pytest.skip("no implicit-TLS protocol implemented yet")
    port = mail_server.ports[tls_protos[0]]
    old_session, old_serial = tls_serial(mail_server, port)
    greeting = old_session.recv(1024)
    assert greeting

    # A renewed certificate: SIGHUP, and new sessions get it.
    cert_pem, key_pem = generate_self_signed()
    (mail_server.directory / "tls/key.pem").write_bytes(key_pem)
    mail_server.cert.write_bytes(cert_pem)
    mail_server.signal(signal.SIGHUP)
    wait_for_log(mail_server, "TLS certificate reloaded", 1)
    new_session, new_serial = tls_serial(mail_server, port)
    assert new_serial == x509.load_pem_x509_certificate(cert_pem).serial_number != old_serial
    new_session.close()

    # The session from before the reload is still served.
    command = b"CAPA\r\n" if tls_protos[0] == "pop3s" else b"a1 CAPABILITY\r\n"
    old_session.sendall(command)
    assert old_session.recv(1024)
    old_session.close()

    # A broken certificate: logged, and the good one stays in use.
    mail_server.cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
    mail_server.signal(signal.SIGHUP)
    wait_for_log(mail_server, "keeping the previous certificate", 1)
    mail_server.cert.write_bytes(cert_pem)  # for the client's trust only
    session, serial = tls_serial(mail_server, port)
    assert serial == new_serial
    session.close()


def free_privileged_port() -> int:
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a port below 1024 needs root")
def test_privileged_port_bound_before_uid_drop(tmp_path: Path) -> None:
    import time

    port = free_privileged_port()
    directory = tmp_path / "s"
    listen = [f"--listen={p}=" for p in ("imap", "imaps", "pop3s", "lmtp")]
    listen.append(f"--listen=pop3=tcp:{port}:interface=127.0.0.1")
    assert cli_main(["init", str(directory), *listen]) == 0
    log = directory / "twistd.log"
    process = subprocess.Popen(
        twistd_command(
            "-n",
            "--pidfile=",
            f"--logfile={log}",
            "--uid=nobody",
            "--gid=nogroup",
            "mailaccess",
            f"--config={directory / 'mailaccess.toml'}",
        ),
        cwd=tmp_path,
        env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while "mailaccess ready" not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        if f"pop3 tcp:{port}" not in log.read_text():
            pytest.skip("pop3 is not implemented yet")
        status = Path(f"/proc/{process.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert set(uid_line.split()[1:]) == {"65534"}  # nobody, for real and saved
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert s.recv(100).startswith(b"+OK")
    finally:
        process.terminate()
        process.wait(15)
    assert "Traceback" not in log.read_text()


def test_twistd_config_from_environment_variable(tmp_path: Path) -> None:
    # No --config: $MAILACCESS_CONFIG names the file (here a broken one, so
    # the message proves which file was read).
    bad = tmp_path / "from-env.toml"
    bad.write_text("[limits]\nimap_autologout = 60\n")
    result = subprocess.run(
        twistd_command("-n", "--pidfile=", "mailaccess"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env() | {"MAILACCESS_CONFIG": str(bad)},
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"mailaccess: {bad}: limits.imap_autologout: must be at least")


def test_start_mail_server_applies_overrides(start_mail_server: Callable[..., MailServer]) -> None:
    server = start_mail_server(pop3={"exclusive": True}, limits={"imap_autologout": 3600})
    config = load_config(server.config_path)
    assert config.pop3.exclusive is True
    assert config.limits.imap_autologout == 3600
    assert config.mailboxes.auto_create["Sent"] == "\\Sent"  # init's values kept
    assert config.listen.pop3 == (f"tcp:{server.ports['pop3']}:interface=127.0.0.1",)


def test_sighup_without_tls_does_not_end_the_server(tmp_path: Path) -> None:
    path = tmp_path / "plain.toml"
    path.write_text('[listen]\nimap = "tcp:1143"\n')
    service = make_service(load_config(path), ImmediateReactor(), {}, fake_context)
    service.startService()
    try:
        with capturedLogs() as events:
            os.kill(os.getpid(), signal.SIGHUP)  # default action: terminate
        assert any("nothing to reload" in m for m in messages(events))
    finally:
        service.stopService()


def test_curl_trusts_the_init_certificate_for_localhost(mail_server: MailServer) -> None:
    # A real client's verification of what `mailaccess init` generated:
    # curl checks the chain against --cacert and the name against the SAN.
    import shutil

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    proto = next((p for p in ("pop3s", "imaps") if p in mail_server.started), None)
    if proto is None:
        pytest.skip("no implicit-TLS protocol implemented yet")
    mail_server.add_user("alice", "secret")
    url = f"{proto}://localhost:{mail_server.ports[proto]}/"
    argv = ["curl", "-sS", "--max-time", "20", "-u", "alice:secret", url]
    trusted = subprocess.run(
        [*argv[:1], "--cacert", str(mail_server.cert), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert trusted.returncode == 0, trusted.stderr
    untrusted = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert untrusted.returncode == 60, untrusted.stderr  # CURLE_PEER_FAILED_VERIFICATION


def test_mail_server_fixture_fails_a_test_whose_server_logged_a_traceback(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(
        test_inner="""
        def test_clean(mail_server):
            assert "mailaccess ready" in mail_server.log_text()

        def test_server_crashed(mail_server):
            # Stopped first: twistd writes its log at its own offset, so a
            # line appended while it runs could be overwritten.
            mail_server.stop()
            with open(mail_server.log_path, "a") as log:
                log.write("Traceback (most recent call last):\\n  boom\\n")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_server_crashed*"])


def test_twistd_daemon_mode_pidfile_and_logfile(tmp_path: Path) -> None:
    # Without -n twistd daemonizes: the command returns, the pid file names
    # the daemon, the log goes to --logfile, SIGTERM ends it and the pid file
    # goes away -- as twistd users expect.
    import time

    assert cli_main(["init", str(tmp_path / "s"), *[f"--listen={p}=" for p in
                     ("imap", "imaps", "pop3", "pop3s", "lmtp")]]) == 0  # fmt: skip
    pid_file, log_file = tmp_path / "mailaccess.pid", tmp_path / "mailaccess.log"
    result = subprocess.run(
        twistd_command(
            f"--pidfile={pid_file}",
            f"--logfile={log_file}",
            "mailaccess",
            f"--config={tmp_path / 's/mailaccess.toml'}",
        ),
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 30
    while "mailaccess ready" not in (log_file.read_text() if log_file.exists() else ""):
        assert time.monotonic() < deadline, "daemon did not start"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    while pid_file.exists():
        assert time.monotonic() < deadline + 30, "daemon did not stop"
        time.sleep(0.05)
    assert "Server Shut Down." in log_file.read_text()
    assert "Traceback" not in log_file.read_text()


def test_twistd_plugin_raises_the_garbage_collector_thresholds(tmp_path: Path) -> None:
    # Only the server process: the plugin sets them, building a service does not.
    import gc

    from mailaccess.service import GC_THRESHOLDS
    from twisted.plugins.mailaccess_plugin import Options, serviceMaker

    assert cli_main(["init", str(tmp_path / "s")]) == 0
    before = gc.get_threshold()
    options = Options()
    options.parseOptions(["--config", str(tmp_path / "s/mailaccess.toml")])
    try:
        serviceMaker.makeService(options)
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
