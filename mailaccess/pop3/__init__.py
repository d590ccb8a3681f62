"""pop3 layer of mailaccess (see DESIGN.md)."""
