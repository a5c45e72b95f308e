"""Hostile-input tests: write how many cases each family tried when the report command asks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.strategies import TRIED


@pytest.fixture(scope="session", autouse=True)
def count_cases() -> Iterator[None]:
    """With GW_HOSTILE_COUNTS=FILE, the per-family case counts go to FILE (JSON) at the end."""
    yield
    target = os.environ.get("GW_HOSTILE_COUNTS")
    if target:
        Path(target).write_text(json.dumps(dict(TRIED), indent=1), encoding="utf-8")
