"""Storage: the SQLite database and what lives in it (users, login sessions, the roster)."""
