"""What every protocol factory is built from: config, store, login, TLS, clock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.interfaces import IReactorTime

from mailaccess.config import Config

if TYPE_CHECKING:
    from mailaccess.auth.login import Authenticator
    from mailaccess.store.interfaces import IStore


@attrs.define
class ServerContext:
    """The shared parts a protocol session needs; one per running server.

    Each protocol package exposes ``make_factory(context, implicit_tls: bool)``
    returning a Twisted protocol factory; ``service.py`` calls it per listener.
    """

    config: Config
    store: IStore
    authenticator: Authenticator
    clock: IReactorTime
    # A pyOpenSSL-backed Twisted context factory (mailaccess.tls), or None when
    # no certificate is configured: then STARTTLS/STLS are not offered.
    tls: Any = None
