"""gridwatch models."""
