"""mailaccess.config: load_config checks every key and names what is wrong."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import attrs
import pytest

from mailaccess.cli import main as cli_main
from mailaccess.config import (
    Config,
    ConfigError,
    default_config_path,
    load_config,
)

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "mailaccess.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def make_cert(tmp_path: Path) -> None:
    assert (
        cli_main(["gencert", "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem")])
        == 0
    )


# --- what loads ----------------------------------------------------------------


def test_empty_file_gives_defaults_with_paths_beside_it(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.limits == Config().limits
    assert config.pop3 == Config().pop3
    assert config.server.mail_root == tmp_path.resolve() / "var/mail"
    assert config.server.users_file == tmp_path.resolve() / "var/users"
    assert config.listen.imap == ()


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    make_cert(tmp_path / "conf")
    write(
        tmp_path / "conf",
        '[server]\nmail_root = "mail"\nusers_file = "/abs/users"\n'
        '[tls]\ncertificate = "c.pem"\nprivate_key = "k.pem"\n'
        '[listen]\nlmtp = "unix:lmtp.sock:mode=660"\n',
    )
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    config = load_config(Path("conf/mailaccess.toml"))
    base = (tmp_path / "conf").resolve()
    assert config.server.mail_root == base / "mail"
    assert config.server.users_file == Path("/abs/users")
    assert config.tls.certificate == base / "c.pem"
    assert config.listen.lmtp == (f"unix:{base}/lmtp.sock:mode=660",)


def test_listener_may_be_one_string_or_a_list(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[listen]\nimap = "tcp:143"\npop3 = ["tcp:110", "tcp6:110"]\n')
    )
    assert config.listen.imap == ("tcp:143",)
    assert config.listen.pop3 == ("tcp:110", "tcp6:110")


def test_special_use_names_are_normalised_rfc6154_2(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[mailboxes.auto_create]\nSent = "Sent"\nBin = "\\\\Trash"\n')
    )
    assert config.mailboxes.auto_create == {"Sent": "\\Sent", "Bin": "\\Trash"}


def test_expire_never_or_days_rfc2449_6_7(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, '[pop3]\nexpire = "NEVER"\n')).pop3.expire == "NEVER"
    assert load_config(write(tmp_path, "[pop3]\nexpire = 30\n")).pop3.expire == 30


def test_example_config_works_as_is(tmp_path: Path) -> None:
    # etc/mailaccess.toml as shipped, in a tree where `mailaccess init var` ran.
    (tmp_path / "etc").mkdir()
    shutil.copy(ROOT / "etc/mailaccess.toml", tmp_path / "etc/mailaccess.toml")
    assert cli_main(["init", str(tmp_path / "var")]) == 0
    config = load_config(tmp_path / "etc/mailaccess.toml")
    assert config.tls.certificate == (tmp_path / "var/tls/cert.pem").resolve()
    assert config.listen.imap == ("tcp:1143:interface=127.0.0.1",)
    assert config.listen.imaps == ("tcp:1993:interface=127.0.0.1",)
    assert config.listen.pop3 == ("tcp:1110:interface=127.0.0.1",)
    assert config.listen.pop3s == ("tcp:1995:interface=127.0.0.1",)
    assert config.listen.lmtp == ("tcp:2424:interface=127.0.0.1",)


def test_default_config_path_env_then_etc() -> None:
    assert default_config_path({}) == Path("etc/mailaccess.toml")
    assert default_config_path({"MAILACCESS_CONFIG": "/x/y.toml"}) == Path("/x/y.toml")


# --- what is refused, and how it is said -------------------------------------------


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[limits]\nmax_line_lenght = 9000\n")
    assert error.key == "limits.max_line_lenght"
    assert "did you mean limits.max_line_length?" in str(error)
    assert str(error).startswith(str(tmp_path / "mailaccess.toml"))


def test_unknown_section(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[imap]\nfoo = 1\n")
    assert error.key == "imap"
    assert "unknown section" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[limits]\nmax_line_length = "8k"\n', "limits.max_line_length", "expected an integer"),
        ("[limits]\nmax_line_length = 9000.5\n", "limits.max_line_length", "expected an integer"),
        ("[limits]\nimap_autologout = true\n", "limits.imap_autologout", "expected a number"),
        ('[pop3]\nexclusive = "yes"\n', "pop3.exclusive", "expected true or false"),
        ("[server]\nhostname = 1\n", "server.hostname", "expected a string"),
        ("[server]\nmail_root = 5\n", "server.mail_root", "expected a file path"),
        ('[auth]\nallow_plaintext = "sometimes"\n', "auth.allow_plaintext", "'loopback'"),
        ('[tls]\nmin_version = "TLSv1.1"\n', "tls.min_version", "'TLSv1.2' or 'TLSv1.3'"),
        ("[listen]\nimap = 143\n", "listen.imap", "expected a string or an array"),
        ('[pop3]\nexpire = "soon"\n', "pop3.expire", "expected an integer or 'NEVER'"),
        ("server = 3\n", "server", "expected a table [server]"),
        ("[mailboxes]\nauto_create = 1\n", "mailboxes.auto_create", "expected a table"),
    ],
)
def test_wrong_type_names_key_and_expectation(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    error = error_of(tmp_path, text)
    assert error.key == key
    assert expected in str(error)
    assert "\n" not in str(error)


def test_missing_certificate_file(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[tls]\ncertificate = "nope.pem"\nprivate_key = "nope.key"\n')
    assert error.key == "tls.certificate"
    assert f"file not found: {tmp_path.resolve() / 'nope.pem'}" in str(error)


def test_certificate_without_key(tmp_path: Path) -> None:
    make_cert(tmp_path)
    error = error_of(tmp_path, '[tls]\ncertificate = "c.pem"\n')
    assert error.key == "tls.private_key"
    assert "given together" in str(error)


def test_implicit_tls_listener_needs_a_certificate_rfc8314_3(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[listen]\nimaps = "tcp:993"\n')
    assert error.key == "listen.imaps"
    assert "needs tls.certificate" in str(error)


@pytest.mark.parametrize(
    "endpoint", ["tcpp:143", "tcp:abc", "tcp:143:interfac=127.0.0.1", "nonsense"]
)
def test_bad_endpoint_string(tmp_path: Path, endpoint: str) -> None:
    error = error_of(tmp_path, f'[listen]\npop3 = ["tcp:110", "{endpoint}"]\n')
    assert error.key == "listen.pop3"
    assert repr(endpoint) in str(error)
    assert "expected e.g. 'tcp:143:interface=127.0.0.1'" in str(error)


def test_ssl_endpoint_is_refused_tls_comes_from_tls_section(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[listen]\nimaps = "ssl:993:privateKey=k.pem"\n')
    assert error.key == "listen.imaps"
    assert "use a plain endpoint" in str(error)


def test_imap_autologout_below_30_minutes_rfc3501_5_4(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[limits]\nimap_autologout = 1799\n")
    assert error.key == "limits.imap_autologout"
    assert "at least 1800" in str(error)
    load_config(write(tmp_path, "[limits]\nimap_autologout = 1800\n"))


def test_pop3_autologout_below_10_minutes_rfc1939_3(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[limits]\npop3_autologout = 599.5\n")
    assert error.key == "limits.pop3_autologout"
    assert "at least 600" in str(error)
    load_config(write(tmp_path, "[limits]\npop3_autologout = 600\n"))


def test_mailbox_unload_period_is_seconds_or_zero(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[mailboxes]\nunload_after = -1\n")
    assert error.key == "mailboxes.unload_after"
    assert (
        load_config(write(tmp_path, "[mailboxes]\nunload_after = 0\n")).mailboxes.unload_after == 0
    )
    assert load_config(write(tmp_path, "")).mailboxes.unload_after == 1800


def test_line_length_below_smtp_text_line_rfc5321_4_5_3_1_6(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[limits]\nmax_line_length = 999\n")
    assert error.key == "limits.max_line_length"


def test_idle_keepalive_must_fire_before_autologout_rfc2177(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[limits]\nimap_idle_keepalive = 1800\n")
    assert error.key == "limits.imap_idle_keepalive"


def test_login_delay_growth_bounds(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[auth]\nfailed_login_delay = 5\nfailed_login_max_delay = 1\n")
    assert error.key == "auth.failed_login_max_delay"
    assert error_of(tmp_path, "[auth]\nfailed_login_delay = -1\n").key == "auth.failed_login_delay"


def test_bad_uidl_format_rfc1939_7(tmp_path: Path) -> None:
    pytest.importorskip("mailaccess.pop3.uidl")
    error = error_of(tmp_path, '[pop3]\nuidl_format = "%q"\n')
    assert error.key == "pop3.uidl_format"


def test_unknown_special_use_rfc6154_2(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[mailboxes.auto_create]\nSpam = "Spam"\n')
    assert error.key == "mailboxes.auto_create"
    assert "Junk" in str(error)


def test_mail_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "mail").write_text("")
    error = error_of(tmp_path, '[server]\nmail_root = "mail"\n')
    assert error.key == "server.mail_root"


def test_invalid_toml_says_where(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[server]\nhostname = \n")
    assert error.key is None
    assert "invalid TOML" in str(error)
    assert "line 2" in str(error)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the file"):
        load_config(tmp_path / "missing.toml")


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "latin1.toml").write_bytes(b'[server]\nhostname = "m\xe4il"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "latin1.toml")


# --- the documentation keeps up ------------------------------------------------------


def all_keys() -> list[str]:
    sections = {f.name: f.type for f in attrs.fields(Config) if f.name != "source"}
    keys = []
    for name in sections:
        section_cls = type(getattr(Config(), name))
        keys += [f"{name}.{field.name}" for field in attrs.fields(section_cls)]
    return keys


def test_every_key_is_documented() -> None:
    text = (ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z0-9_]+\.[a-z0-9_]+)` \|", text, re.MULTILINE))
    assert documented == set(all_keys())


def test_every_key_appears_in_the_example() -> None:
    text = (ROOT / "etc/mailaccess.toml").read_text(encoding="utf-8")
    current = ""
    seen = set()
    for line in text.splitlines():
        line = line.lstrip("# ")
        if m := re.match(r"\[([a-z0-9_.]+)\]", line):
            current = m.group(1)
        elif m := re.match(r"([a-z0-9_]+) =", line):
            seen.add(f"{current}.{m.group(1)}")
    missing = set(all_keys()) - seen - {"mailboxes.auto_create"}
    assert not missing
    assert "[mailboxes.auto_create]" in text


def test_two_listeners_on_one_port(tmp_path: Path) -> None:
    error = error_of(
        tmp_path, '[listen]\nimap = "tcp:1143:interface=127.0.0.1"\npop3 = "tcp:1143"\n'
    )
    assert error.key == "listen.pop3"
    assert "port 1143, which listen.imap ('tcp:1143:interface=127.0.0.1') already uses" in str(
        error
    )
    # Same port on two different addresses is fine.
    load_config(
        write(
            tmp_path,
            '[listen]\nimap = "tcp:1143:interface=127.0.0.1"\n'
            'pop3 = "tcp:1143:interface=127.0.0.2"\n',
        )
    )
