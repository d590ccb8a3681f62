"""Envelope address parsing (RFC 5321 §4.1.2) and the address -> user mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailaccess.config import ConfigError, LMTPConfig, config_from_dict
from mailaccess.lmtp.address import AddressError, Recipient, parse_path_argument, resolve


@pytest.mark.parametrize(
    ("argument", "path", "parameters"),
    [
        ("FROM:<a@b.test>", "a@b.test", {}),
        ("from: <a@b.test>", "a@b.test", {}),
        ("FROM:<>", "", {}),
        ("FROM:<a@b.test> size=10 BODY=8BITMIME", "a@b.test", {"SIZE": "10", "BODY": "8BITMIME"}),
        ("FROM:<@relay.test,@other.test:a@b.test>", "a@b.test", {}),  # RFC 5321 Appendix C
        ("FROM:a@b.test", "a@b.test", {}),
        ('FROM:<"x y"@b.test>', None, None),
    ],
)
def test_parse_path_argument_rfc5321_4_1_2(
    argument: str, path: str | None, parameters: dict[str, str] | None
) -> None:
    if path is None:
        with pytest.raises(AddressError):
            parse_path_argument(argument, "FROM")
        return
    assert parse_path_argument(argument, "FROM") == (path, parameters)


@pytest.mark.parametrize(
    "argument",
    ["TO:<a@b.test>", "FROM <a@b.test>", "FROM:<a@b.test>x", "FROM:<a\x01@b>", "FROM:<a"],
)
def test_parse_path_argument_errors(argument: str) -> None:
    with pytest.raises(AddressError):
        parse_path_argument(argument, "FROM")


USERS = {"alice": "alice", "carol@example.org": "carol@example.org", "a-b": "a-b"}


def lookup(name: str) -> str | None:
    return USERS.get(name)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("alice", Recipient("alice", "alice")),
        ("alice@example.org", Recipient("alice@example.org", "alice")),
        ("alice+news@example.org", Recipient("alice+news@example.org", "alice", "news")),
        ("alice+a+b", Recipient("alice+a+b", "alice", "a+b")),
        ("carol@example.org", Recipient("carol@example.org", "carol@example.org")),
        ("carol+x@example.org", Recipient("carol+x@example.org", "carol@example.org", "x")),
        ('"alice"@example.org', Recipient('"alice"@example.org', "alice")),
        ("a-b@example.org", Recipient("a-b@example.org", "a-b")),
        ("bob@example.org", None),
        ("+news@example.org", None),
    ],
)
def test_resolve_users_and_details(address: str, expected: Recipient | None) -> None:
    assert resolve(address, LMTPConfig(domains=("example.org",)), lookup) == expected


def test_resolve_foreign_domain_is_refused_unless_listed_in_full() -> None:
    config = LMTPConfig(domains=("example.org",))
    with pytest.raises(AddressError, match="not a domain of this server"):
        resolve("alice@elsewhere.test", config, lookup)
    users = {"dave@elsewhere.test": "dave@elsewhere.test"}
    assert resolve("dave@elsewhere.test", config, users.get) == Recipient(
        "dave@elsewhere.test", "dave@elsewhere.test"
    )


def test_resolve_without_domains_takes_any_domain_and_details_can_be_off() -> None:
    assert resolve("alice@anything.test", LMTPConfig(), lookup) == Recipient(
        "alice@anything.test", "alice"
    )
    assert resolve("alice+news", LMTPConfig(detail_delimiter=""), lookup) is None
    assert resolve("a-b", LMTPConfig(detail_delimiter="-"), lookup) == Recipient("a-b", "a-b")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"lmtp": {"domains": ["a@b"]}}, "lmtp.domains"),
        ({"lmtp": {"detail_delimiter": "++"}}, "lmtp.detail_delimiter"),
        ({"lmtp": {"detail_mailbox": "Lists"}}, "lmtp.detail_mailbox"),
        ({"lmtp": {"max_message_size": 1000}}, "lmtp.max_message_size"),
        ({"lmtp": {"max_recipients": 10}}, "lmtp.max_recipients"),
        ({"quota": {"storage": "1 gigabyte"}}, "quota.storage"),
        ({"quota": {"over_quota": "bounce"}}, "quota.over_quota"),
        ({"quota": {"storag": "1G"}}, "quota.storag"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, Path("/etc/mailaccess.toml"))
    assert info.value.key == key


def test_config_quota_sizes_in_dovecot_units() -> None:
    config = config_from_dict({"quota": {"storage": "2G"}}, Path("/x.toml"))
    assert config.quota.storage == "2G"
    assert config_from_dict({"quota": {"storage": 5000}}, Path("/x.toml")).quota.storage == 5000
