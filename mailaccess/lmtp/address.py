"""Envelope addresses: parsing MAIL/RCPT arguments and mapping recipients to users.

Pure functions, no I/O: the session and ``mailaccess deliver`` look users up
themselves (the users file is read off the reactor).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

from mailaccess.config import LMTPConfig


class AddressError(ValueError):
    """A MAIL or RCPT argument that is not ``<path> [parameters]``; text for the client."""


@attrs.frozen
class Recipient:
    """An accepted recipient: the address as given, whose mail it is, and where it goes."""

    address: str  # as in RCPT TO, without the angle brackets
    user: str  # the users-file name
    detail: str = ""  # the part after the detail delimiter, or ""


# RFC 5321 §4.1.2 esmtp-keyword / esmtp-value.
_PARAMETER = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?$")


def parse_path_argument(argument: str, keyword: str) -> tuple[str, dict[str, str]]:
    """Split ``FROM:<path> PARAM=VALUE ...`` (RFC 5321 §4.1.1.2, §4.1.1.3).

    Returns the address without brackets or source route, and the parameters
    with upper-cased keywords.  A space after the colon and a path without
    brackets are accepted, as most servers do.
    """
    head, colon, rest = argument.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise AddressError(f"syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>")
    rest = rest.strip()
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            raise AddressError("the address has no closing '>'")
        path, tail = rest[1:end], rest[end + 1 :]
        if tail and not tail.startswith(" "):
            raise AddressError("expected a space between the address and its parameters")
    else:
        path, _, tail = rest.partition(" ")
    if path.startswith("@"):
        # RFC 5321 §4.1.2 A-d-l: an obsolete source route, to be ignored (Appendix C).
        _, _, path = path.partition(":")
    if any(c.isspace() or ord(c) < 0x20 or c in "<>" for c in path):
        raise AddressError(f"invalid address {path[:80]!r}")
    parameters: dict[str, str] = {}
    for item in tail.split():
        match = _PARAMETER.match(item)
        if match is None:
            raise AddressError(f"invalid parameter {item[:40]!r}")
        parameters[match.group(1).upper()] = match.group(2) or ""
    return path, parameters


def candidate_users(address: str, config: LMTPConfig) -> tuple[list[tuple[str, str]], str | None]:
    """Users-file names that *address* may be, most specific first, each with its detail.

    The second item is why the address is refused when no candidate is a
    user (a domain that is not ours), else None.  ``alice+news@example.org`` gives
    ``alice+news@example.org``, ``alice@example.org``, ``alice+news``,
    ``alice`` (a users file may list full addresses or bare names).
    """
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        local = local[1:-1]  # RFC 5321 §4.1.2 Quoted-string
    if not local:
        return [], "the address has no local part"
    domains = {d.lower() for d in config.domains}
    ours = not domain or not domains or domain.lower() in domains
    delimiter = config.detail_delimiter
    base, detail = local, ""
    if delimiter and delimiter in local:
        base, _, detail = local.partition(delimiter)
    candidates: list[tuple[str, str]] = []
    if domain:
        candidates.append((f"{local}@{domain}", ""))
        if detail and base:
            candidates.append((f"{base}@{domain}", detail))
    if ours:
        candidates.append((local, ""))
        if detail and base:
            candidates.append((base, detail))
    refusal = None if ours else f"{domain} is not a domain of this server"
    return candidates, refusal


def resolve(
    address: str, config: LMTPConfig, lookup: Callable[[str], str | None]
) -> Recipient | None:
    """The Recipient *address* names, using *lookup* (name -> users-file name or None).

    Blocking if *lookup* is.  None if no candidate is a user; raises
    AddressError for an address in a domain that is not ours.
    """
    candidates, refusal = candidate_users(address, config)
    for name, detail in candidates:
        user = lookup(name)
        if user is not None:
            return Recipient(address, user, detail)
    if refusal is not None:
        raise AddressError(refusal)
    return None
