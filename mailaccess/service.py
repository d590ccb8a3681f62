"""The twistd service: one ``MultiService`` with a listener per configured endpoint.

``make_service(config)`` builds the shared :class:`ServerContext` (store,
login, TLS, clock) and, for each endpoint string under ``[listen]``, asks the
protocol package for its factory (``make_factory(context, implicit_tls)``).
Implicit-TLS listeners (imaps, pop3s) wrap that factory in TLS with our
reloadable context factory.  Listening happens in ``privilegedStartService``,
so ports below 1024 are bound before twistd drops to ``--uid``/``--gid``.
SIGHUP reloads the certificate; sessions already running keep theirs.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailaccess.config import Config
from mailaccess.context import ServerContext
from mailaccess.tls import ServerTLS, make_tls

log = Logger(namespace="mailaccess")

#: Listener name -> (module with make_factory, implicit TLS).
PROTOCOLS: dict[str, tuple[str, bool]] = {
    "imap": ("mailaccess.imap.server", False),
    "imaps": ("mailaccess.imap.server", True),
    "pop3": ("mailaccess.pop3.server", False),
    "pop3s": ("mailaccess.pop3.server", True),
    "lmtp": ("mailaccess.lmtp.server", False),
}

ContextBuilder = Callable[[Config, Any, ServerTLS | None], ServerContext | str]


class StartupError(Exception):
    """The server cannot start; the message says why in one line."""


def _module_missing(name: str) -> bool:
    """True if *name* is not written yet (as opposed to broken, which must fail loudly)."""
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:  # a parent package is missing
        return True


#: The listen queue for tcp:, tcp6: and unix: listeners that name none.  Twisted's
#: default of 50 overflows when a few hundred clients connect at once (a
#: morning's mail check behind NAT): the kernel then completes connections that
#: are never accepted, and IMAP/POP3 clients wait forever for the greeting.
DEFAULT_BACKLOG = 1024


def with_backlog(description: str) -> str:
    """*description* with ``backlog=DEFAULT_BACKLOG`` unless it sets one."""
    kind = description.split(":", 1)[0].strip().lower()
    if kind not in ("tcp", "tcp6", "unix") or "backlog=" in description:
        return description
    return f"{description}:backlog={DEFAULT_BACKLOG}"


def build_context(config: Config, reactor: Any, tls: ServerTLS | None) -> ServerContext | str:
    """The shared ServerContext, or a reason why it cannot be built yet."""
    for name in ("mailaccess.store.account", "mailaccess.auth.login"):
        if _module_missing(name):
            return f"{name} is not implemented yet"
    from mailaccess.auth.login import make_authenticator
    from mailaccess.store.account import Store
    from mailaccess.store.quota import policy_from_config

    # The mail root is not created here: this runs before twistd drops to
    # --uid, and a root-owned directory would lock the mail user out.  The
    # store creates what it needs at first login, as the mail user.  The quota
    # is the store's: IMAP APPEND, LMTP and deliver all meet it there.
    store = Store(
        config.server.mail_root,
        config.mailboxes,
        reactor,
        quota_policy=policy_from_config(config),
    )
    authenticator = make_authenticator(config, store, reactor)
    return ServerContext(
        config=config, store=store, authenticator=authenticator, clock=reactor, tls=tls
    )


class Listener(StreamServerEndpointService):
    """One listening endpoint of one protocol, named for log lines."""

    _raiseSynchronously = True  # a port in use must stop the start, not just log

    def __init__(self, protocol: str, description: str, endpoint: Any, factory: Any) -> None:
        super().__init__(endpoint, factory)
        self.protocol = protocol
        self.description = description
        self.setName(f"{protocol} {description}")


class MailService(MultiService):
    """The whole server; its children are :class:`Listener` services."""

    def __init__(self, config: Config, tls: ServerTLS | None, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.tls = tls
        self._reactor = reactor
        self._previous_sighup: Any = None
        self.not_started: list[str] = []
        # Under twistd a failed start must end the process with one line,
        # not a traceback; the plugin sets this.
        self.exit_on_startup_error = False

    def privilegedStartService(self) -> None:
        """Bind every listener (as root if twistd was started so)."""
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = e.socketError.strerror if e.socketError is not None else e
            error = StartupError(f"cannot listen on {e.interface or '*'}:{e.port}: {reason}")
            if not self.exit_on_startup_error:
                raise error from None
            log.critical("mailaccess cannot start: {error}", error=str(error))
            print(f"mailaccess: {error}", file=sys.__stderr__)
            raise SystemExit(1) from None

    def startService(self) -> None:
        """Start, install the SIGHUP handler and say what listens."""
        super().startService()
        # Installed even without TLS: SIGHUP's default action would end the
        # server, and `systemctl reload` sends it.
        self._previous_sighup = signal.signal(signal.SIGHUP, self._on_sighup)
        listening = [str(child.name) for child in self if isinstance(child, Listener)]
        log.info(
            "mailaccess ready: listening on {listening}",
            listening=", ".join(listening) or "nothing",
        )

    def stopService(self) -> Any:
        """Stop the listeners and give SIGHUP back to whoever had it."""
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        return super().stopService()

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt the reactor anywhere: do the work
        # in the reactor's own time.
        self._reactor.callFromThread(self.reload_tls)
        previous = self._previous_sighup
        if callable(previous):
            previous(signum, frame)

    def reload_tls(self) -> bool:
        """Reload the certificate (what SIGHUP does); True if the new one is in use."""
        if self.tls is None:
            log.info("SIGHUP: no TLS certificate configured, nothing to reload")
            return False
        log.info("SIGHUP: reloading the TLS certificate")
        return self.tls.reload()


#: gc.set_threshold for the server process.  CPython's default first threshold
#: (700 allocations) is tuned for small scripts; a mail server moves objects by
#: the ten thousand (a STORE 1:* builds 10,000 records and as many short-lived
#: tuples), so temporaries live through dozens of young collections, get
#: promoted, and trigger full collections of the whole index, 30-50 ms each
#: with every session waiting.  With 50,000 they mostly die young: the
#: benchmark's STORE 1:* (three runs each way, alternating) went from medians
#: of 178-189 ms with spikes to 250 to 150-180 ms without them.
#: A young collection of 50,000 objects takes 5-13 ms (logged in the benchmark).
GC_THRESHOLDS = (50_000, 20, 10)


def tune_garbage_collector() -> None:
    """Set :data:`GC_THRESHOLDS` (twistd's plugin calls it; tests keep the defaults)."""
    gc.set_threshold(*GC_THRESHOLDS)


def make_service(
    config: Config,
    reactor: Any = None,
    protocols: dict[str, tuple[str, bool]] | None = None,
    context_builder: ContextBuilder = build_context,
) -> MailService:
    """The server for *config*; raises StartupError (one clear line) if it cannot run.

    *protocols* and *context_builder* default to the real ones; tests pass
    their own to exercise the wiring without the full server.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    protocols = PROTOCOLS if protocols is None else protocols

    from mailaccess.tls import TLSSetupError

    try:
        tls = make_tls(config.tls)
    except TLSSetupError as e:
        raise StartupError(f"{config.source}: tls: {e}") from None

    service = MailService(config, tls, reactor)
    context: ServerContext | str | None = None
    for name, (module_name, implicit_tls) in protocols.items():
        descriptions = getattr(config.listen, name)
        if not descriptions:
            continue
        if _module_missing(module_name):
            log.warn(
                "{protocol} is not implemented yet ({module} is missing): "
                "not starting {endpoints}",
                protocol=name,
                module=module_name,
                endpoints=", ".join(descriptions),
            )
            service.not_started.append(name)
            continue
        if context is None:
            context = context_builder(config, reactor, tls)
        if isinstance(context, str):
            log.warn(
                "not starting {protocol} on {endpoints}: {reason}",
                protocol=name,
                endpoints=", ".join(descriptions),
                reason=context,
            )
            service.not_started.append(name)
            continue
        module = importlib.import_module(module_name)
        factory: Any = module.make_factory(context, implicit_tls=implicit_tls)
        # A protocol may wrap its implicit-TLS factory itself; wrapping twice
        # would put TLS inside TLS.
        if implicit_tls and not isinstance(factory, TLSMemoryBIOFactory):
            assert tls is not None  # the config loader insists on a certificate
            factory = TLSMemoryBIOFactory(tls, False, factory)  # type: ignore[arg-type]
        for description in descriptions:
            endpoint = endpoints.serverFromString(reactor, with_backlog(description))
            Listener(name, description, endpoint, factory).setServiceParent(service)
    return service
