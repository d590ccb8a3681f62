"""store layer of mailaccess (see DESIGN.md)."""
