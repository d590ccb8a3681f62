"""The twisted.cred realm: a logged-in user's avatar is their account in the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.portal import IRealm
from zope.interface import Attribute, Interface, implementer

from mailaccess.store.interfaces import IStore


class IMailAccount(Interface):
    """The avatar interface of every mail protocol.

    The avatar is the user's account object from the store, which satisfies
    ``mailaccess.store.interfaces.IAccount`` (a typing Protocol: the store's
    classes need not declare this zope interface).  All sessions of one user
    get the same account object, so they share mailboxes and change events.
    """

    username = Attribute("The user name, as written in the users file.")
    delimiter = Attribute("The hierarchy delimiter of mailbox names.")

    def mailbox(name: str) -> Any:
        """The open mailbox of that name (a Deferred, see IAccount.mailbox)."""


def _no_logout() -> None:
    """Nothing to release: the store keeps accounts for all sessions."""


@implementer(IRealm)
class MailRealm:
    """Hands out ``store.account(username)`` under ``IMailAccount``."""

    def __init__(self, store: IStore) -> None:
        self.store = store

    def requestAvatar(
        self,
        avatarId: bytes | str,
        mind: object,
        *interfaces: Any,
    ) -> tuple[Any, Any, Callable[[], None]]:
        """Return (IMailAccount, the account, logout) for a checked user name."""
        if IMailAccount not in interfaces:
            raise NotImplementedError("mailaccess only offers IMailAccount avatars")
        username = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        return IMailAccount, self.store.account(username), _no_logout
