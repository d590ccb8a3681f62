"""auth layer of mailaccess (see DESIGN.md): users, passwords and login.

- ``schemes``: Dovecot ``{SCHEME}`` passwords (ARGON2ID default, BLF-CRYPT,
  SHA512-CRYPT, SHA256-CRYPT, PLAIN): ``hash_password``, ``verify_password``,
  ``plaintext_of``; ``shacrypt`` is our own ``$5$``/``$6$``.
- ``passwd``: the Dovecot passwd-file: ``UserEntry``, ``read_users``,
  ``write_users`` (atomic, keeps what it does not change).
- ``checker`` / ``realm``: twisted.cred pieces; the avatar interface is
  ``IMailAccount`` and the avatar is the store's account.
- ``throttle`` / ``login``: ``make_authenticator(config, store, clock)`` gives
  the ``Authenticator`` every protocol logs in through (``LoginResult``,
  ``LoginFailed``).
- ``sasl``: AUTH PLAIN (RFC 4616) and LOGIN exchanges, pure functions.
"""
