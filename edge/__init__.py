"""gridwatch edge."""
