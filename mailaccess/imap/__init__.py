"""imap layer of mailaccess (see DESIGN.md)."""
