"""gridwatch dispatcher."""
