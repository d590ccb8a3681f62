"""The ``mailaccess`` admin command: init, gencert, check-config, user ...

The one-line error tests run the real console entry point in a subprocess,
because "one clear line and a non-zero exit" is about what a person sees.
"""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from mailaccess.cli import main
from mailaccess.config import load_config
from mailaccess.tls import ServerTLS
from tests.conftest import cli_command, subprocess_env
from tests.test_tls import MemoryTLS


def run(
    *args: str, input: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args),
        input=input,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=cwd,
        timeout=60,
    )


@pytest.fixture
def setup_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "var"
    assert main(["init", str(directory)]) == 0
    return directory


def config_of(directory: Path) -> str:
    return f"--config={directory / 'mailaccess.toml'}"


# --- check-config: one clear line, non-zero -----------------------------------------------


def break_config(directory: Path, old: str, new: str) -> None:
    path = directory / "mailaccess.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        # a typo'd key
        ("imap_autologout = 1800", "imap_autologut = 1800", "limits.imap_autologut: unknown key"),
        # a wrong type
        ("exclusive = false", 'exclusive = "no"', "pop3.exclusive: expected true or false"),
        # a missing certificate file
        ('certificate = "tls/cert.pem"', 'certificate = "tls/missing.pem"', "file not found"),
    ],
    ids=["typo", "wrong-type", "missing-cert"],
)
def test_check_config_one_clear_line(setup_dir: Path, old: str, new: str, says: str) -> None:
    break_config(setup_dir, old, new)
    result = run("check-config", config_of(setup_dir))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"mailaccess: {setup_dir / 'mailaccess.toml'}: ")
    assert says in lines[0]
    assert result.stdout == ""


def test_check_config_ok(setup_dir: Path) -> None:
    result = run("check-config", config_of(setup_dir))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "imap tcp:1143:interface=127.0.0.1" in result.stdout


def test_check_config_uses_environment_variable(setup_dir: Path, tmp_path: Path) -> None:
    env = subprocess_env() | {"MAILACCESS_CONFIG": str(setup_dir / "mailaccess.toml")}
    result = subprocess.run(
        cli_command("check-config"), capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr


def test_check_config_default_path_missing(tmp_path: Path) -> None:
    result = run("check-config", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "mailaccess: etc/mailaccess.toml: cannot read the file: No such file or directory"
    )


def test_check_config_mismatched_key(setup_dir: Path) -> None:
    assert main(["gencert", "--force", "--cert", str(setup_dir / "other.pem"),
                 "--key", str(setup_dir / "tls/key.pem")]) == 0  # fmt: skip
    result = run("check-config", config_of(setup_dir))
    assert result.returncode == 1
    assert "do not work together" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_check_config_reports_missing_users_file(setup_dir: Path) -> None:
    (setup_dir / "users").unlink()
    result = run("check-config", config_of(setup_dir))
    assert result.returncode == 1
    assert "users file does not exist" in result.stderr


def test_check_config_reports_malformed_users_lines(setup_dir: Path) -> None:
    pytest.importorskip("mailaccess.auth.passwd")
    (setup_dir / "users").write_text("alice:{PLAIN}x:::::\nthis line is broken\n")
    result = run("check-config", config_of(setup_dir))
    assert result.returncode == 1
    assert "2" in result.stderr  # the line number


# --- init ------------------------------------------------------------------------------


def test_init_writes_a_working_setup(setup_dir: Path) -> None:
    config = load_config(setup_dir / "mailaccess.toml")
    assert config.server.mail_root == setup_dir / "mail"
    assert config.server.mail_root.is_dir()
    assert config.server.users_file.read_text() == ""
    assert config.tls.certificate == setup_dir / "tls/cert.pem"
    ServerTLS(config.tls)  # the pair works
    # Secrets are not for other users' eyes.
    assert stat.S_IMODE(os.stat(setup_dir / "tls/key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(setup_dir / "users").st_mode) == 0o600


def test_init_refuses_to_overwrite(setup_dir: Path) -> None:
    before = (setup_dir / "tls/cert.pem").read_bytes()
    result = run("init", str(setup_dir))
    assert result.returncode == 1
    assert "exists already; use --force" in result.stderr
    assert (setup_dir / "tls/cert.pem").read_bytes() == before


def test_init_listen_option(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    assert main(["init", str(directory), "--listen", "imap=tcp:9143", "--listen", "lmtp="]) == 0
    config = load_config(directory / "mailaccess.toml")
    assert config.listen.imap == ("tcp:9143",)
    assert config.listen.lmtp == ()
    assert config.listen.pop3 == ("tcp:1110:interface=127.0.0.1",)


def test_init_bad_listen_option(tmp_path: Path) -> None:
    result = run("init", str(tmp_path / "s"), "--listen", "smtp=tcp:25")
    assert result.returncode == 1
    assert "PROTO one of imap, imaps, pop3, pop3s, lmtp" in result.stderr
    assert not (tmp_path / "s").exists()


# --- gencert ----------------------------------------------------------------------------


def test_gencert_localhost_san_verified_by_a_tls_client(setup_dir: Path) -> None:
    # gencert from the config's [tls] paths replaces what init wrote.
    old = (setup_dir / "tls/cert.pem").read_bytes()
    result = run("gencert", "--force", config_of(setup_dir))
    assert result.returncode == 0, result.stderr
    pem = (setup_dir / "tls/cert.pem").read_bytes()
    assert pem != old
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)

    config = load_config(setup_dir / "mailaccess.toml")
    client = ssl.create_default_context(cafile=str(setup_dir / "tls/cert.pem"))
    connection = MemoryTLS(ServerTLS(config.tls).serverConnectionForTLS(None), client)
    connection.handshake()  # verifies the chain and the name "localhost"
    peer = connection.client.getpeercert()
    assert peer is not None
    assert peer["subjectAltName"][0] == ("DNS", "localhost")


def test_gencert_refuses_to_overwrite(setup_dir: Path) -> None:
    result = run("gencert", config_of(setup_dir))
    assert result.returncode == 1
    assert "exists already; use --force" in result.stderr


def test_gencert_explicit_paths_and_hostname(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert (
        main(["gencert", "--cert", str(cert), "--key", str(key), "--hostname", "mx.example"]) == 0
    )
    san = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "mx.example"]
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


# --- users --------------------------------------------------------------------------------


@pytest.fixture
def auth() -> tuple[object, object]:
    passwd = pytest.importorskip("mailaccess.auth.passwd")
    schemes = pytest.importorskip("mailaccess.auth.schemes")
    return passwd, schemes


def test_user_add_password_stdin_argon2id(setup_dir: Path, auth: tuple) -> None:
    passwd, schemes = auth
    result = run(
        "user", "add", "alice", "--password-stdin", config_of(setup_dir), input="s3cret\n"
    )
    assert result.returncode == 0, result.stderr
    entries, problems = passwd.read_users(setup_dir / "users")
    assert problems == []
    assert [e.user for e in entries] == ["alice"]
    assert entries[0].password.startswith("{ARGON2ID}")
    assert schemes.verify_password(entries[0].password, "s3cret")
    assert not schemes.verify_password(entries[0].password, "s3cret\n")


def test_user_add_twice_fails(setup_dir: Path, auth: tuple) -> None:
    assert (
        run("user", "add", "bob", "--password-stdin", config_of(setup_dir), input="x\n").returncode
        == 0
    )
    result = run("user", "add", "bob", "--password-stdin", config_of(setup_dir), input="y\n")
    assert result.returncode == 1
    assert "exists already" in result.stderr


def test_user_add_without_terminal_or_stdin_flag(setup_dir: Path, auth: tuple) -> None:
    result = run("user", "add", "carol", config_of(setup_dir), input="")
    assert result.returncode == 1
    assert "--password-stdin" in result.stderr


@pytest.mark.parametrize("name", ["a:b", "two words", "", 'q"uote'])
def test_user_add_rejects_bad_names(setup_dir: Path, auth: tuple, name: str) -> None:
    result = run("user", "add", name, "--password-stdin", config_of(setup_dir), input="x\n")
    assert result.returncode == 1
    assert "invalid user name" in result.stderr
    assert (setup_dir / "users").read_text() == ""


def test_user_add_empty_password_refused(setup_dir: Path, auth: tuple) -> None:
    result = run("user", "add", "dave", "--password-stdin", config_of(setup_dir), input="\n")
    assert result.returncode == 1
    assert "empty password" in result.stderr


def test_user_passwd_changes_only_the_password(setup_dir: Path, auth: tuple) -> None:
    passwd, schemes = auth
    users = setup_dir / "users"
    users.write_text("erin:{PLAIN}old:1000:1000:Erin E:/home/erin:/bin/sh:quota=1G\n")
    result = run("user", "passwd", "erin", "--password-stdin", config_of(setup_dir), input="new\n")
    assert result.returncode == 0, result.stderr
    (entry,), _ = passwd.read_users(users)
    assert schemes.verify_password(entry.password, "new")
    assert (entry.uid, entry.gid, entry.gecos, entry.home) == (
        "1000",
        "1000",
        "Erin E",
        "/home/erin",
    )


def test_user_passwd_unknown_user(setup_dir: Path, auth: tuple) -> None:
    result = run("user", "passwd", "nobody", "--password-stdin", config_of(setup_dir), input="x\n")
    assert result.returncode == 1
    assert "no user 'nobody'" in result.stderr


def test_user_del_and_list(setup_dir: Path, auth: tuple) -> None:
    users = setup_dir / "users"
    users.write_text("frank:{PLAIN}a:::::\ngrace:{SHA512-CRYPT}$6$x$y:::::\n")
    listed = run("user", "list", config_of(setup_dir))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["frank\tPLAIN", "grace\tSHA512-CRYPT"]
    assert "$6$" not in listed.stdout  # never the hash
    assert run("user", "del", "frank", config_of(setup_dir)).returncode == 0
    assert run("user", "list", config_of(setup_dir)).stdout.splitlines() == ["grace\tSHA512-CRYPT"]
    result = run("user", "del", "frank", config_of(setup_dir))
    assert result.returncode == 1
    assert "no user 'frank'" in result.stderr


def test_user_change_refused_when_file_has_malformed_lines(setup_dir: Path, auth: tuple) -> None:
    # Rewriting would drop the line the server skips; the admin fixes it first.
    users = setup_dir / "users"
    original = "henry:{PLAIN}a:::::\nbroken line without colons\n"
    users.write_text(original)
    result = run("user", "add", "ivy", "--password-stdin", config_of(setup_dir), input="x\n")
    assert result.returncode == 1
    assert "malformed" in result.stderr
    assert users.read_text() == original


def test_config_option_before_or_after_the_command(setup_dir: Path, auth: tuple) -> None:
    assert run(config_of(setup_dir), "user", "list").returncode == 0
    assert run("user", "list", config_of(setup_dir)).returncode == 0


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "mailaccess"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, env=subprocess_env()
    )
    assert result.returncode == 0
    for command in ("user", "check-config", "gencert", "init"):
        assert command in result.stdout


def test_init_demo_user_with_mail(tmp_path: Path, auth: tuple) -> None:
    passwd, schemes = auth
    directory = tmp_path / "var"
    result = run("init", str(directory), "--demo", "demo")
    assert result.returncode == 0, result.stderr
    password = (directory / "demo-password").read_text().strip()
    assert f"password {password}" in result.stdout
    assert stat.S_IMODE(os.stat(directory / "demo-password").st_mode) == 0o600
    (entry,), problems = passwd.read_users(directory / "users")
    assert problems == []
    assert entry.user == "demo"
    assert schemes.verify_password(entry.password, password)
    # Delivered as an MTA does: complete files in new/, nothing left in tmp/.
    maildir = directory / "mail/demo"
    delivered = sorted((maildir / "new").iterdir())
    assert len(delivered) == 3
    assert list((maildir / "tmp").iterdir()) == []
    for path in delivered:
        data = path.read_bytes()
        assert b"\r\n" not in data  # Maildir stores LF line ends
        assert data.startswith(b"From: ")
        assert b"\n\n" in data
    assert b"Content-Disposition: attachment" in delivered[-1].read_bytes()
    # The mtime is the message's date (INTERNALDATE), oldest first.
    mtimes = [p.stat().st_mtime for p in delivered]
    assert mtimes == sorted(mtimes)


def test_user_add_unknown_scheme_one_line(setup_dir: Path, auth: tuple) -> None:
    result = run(
        "user", "add", "kim", "--password-stdin", "--scheme", "MD5-NOPE", config_of(setup_dir),
        input="x\n",
    )  # fmt: skip
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "MD5-NOPE" in result.stderr
    assert "nothing changed" in result.stderr
    assert (setup_dir / "users").read_text() == ""


def test_user_add_other_schemes_verify(setup_dir: Path, auth: tuple) -> None:
    passwd, schemes = auth
    for i, scheme in enumerate(("BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT")):
        result = run(
            "user", "add", f"u{i}", "--password-stdin", "--scheme", scheme, config_of(setup_dir),
            input="pw\n",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    entries, _ = passwd.read_users(setup_dir / "users")
    assert [e.password.split("}")[0] for e in entries] == [
        "{BLF-CRYPT",
        "{SHA512-CRYPT",
        "{SHA256-CRYPT",
    ]
    assert all(schemes.verify_password(e.password, "pw") for e in entries)
