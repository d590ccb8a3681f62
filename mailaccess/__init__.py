"""mailaccess: POP3 and IMAP4 over one shared, Dovecot-compatible Maildir store."""

__version__ = "0.1.0"
