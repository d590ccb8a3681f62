"""lmtp layer of mailaccess (see DESIGN.md)."""
