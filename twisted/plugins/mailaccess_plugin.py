"""The twistd plugin: ``twistd -n mailaccess --config FILE``.

This directory must not get an ``__init__.py``: ``twisted.plugins`` is Twisted's
own package, and plugin files from every ``twisted/plugins`` directory on
``sys.path`` join it.  Keep this module light; ``twistd --help`` imports it.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    """Command-line options of ``twistd mailaccess``."""

    optParameters = [
        [
            "config",
            "c",
            None,
            "The configuration file (default: $MAILACCESS_CONFIG, then etc/mailaccess.toml).",
        ],
    ]


@implementer(IServiceMaker, IPlugin)
class MailaccessServiceMaker:
    """Builds the mailaccess service for twistd."""

    tapname = "mailaccess"
    description = "POP3 and IMAP4 mail access server over one Maildir store."
    options = Options

    def makeService(self, options: Options) -> Any:
        """Load the config and build the service; a bad config exits with one line."""
        from mailaccess.config import ConfigError, default_config_path, load_config
        from mailaccess.service import StartupError, make_service, tune_garbage_collector

        path = options["config"] or default_config_path()
        try:
            config = load_config(path)
            service = make_service(config)
        except (ConfigError, StartupError) as e:
            # Logging has not begun yet: stderr reaches the operator.  No
            # traceback, the message says what to fix.
            print(f"mailaccess: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        service.exit_on_startup_error = True
        tune_garbage_collector()
        return service


serviceMaker = MailaccessServiceMaker()
