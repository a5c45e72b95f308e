"""gridwatch simulators."""
