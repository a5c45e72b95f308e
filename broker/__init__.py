"""gridwatch broker."""
