"""gridwatch config."""
