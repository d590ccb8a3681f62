"""auth layer of mailaccess (see DESIGN.md)."""
