"""Who may import whom (DESIGN.md), read from the source: every ``import`` statement, including
the ones inside functions, of every module of each part."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = ("broker", "config", "dispatcher", "edge", "models", "simulators")

# config is the foundation (site description, clock, logging) that every part may import.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "broker": {"config"},
    "edge": {"config", "broker"},
    "dispatcher": {"config", "broker"},
    "models": {"config", "broker", "edge", "simulators"},
    "simulators": set(PARTS),
}
# Third-party libraries only one place may use.
ONLY_IN: dict[str, tuple[str, ...]] = {
    "paho": ("broker/",),
    "torch": ("models/", "edge/detect/ultralytics_backend.py"),
    "ultralytics": ("models/", "edge/detect/ultralytics_backend.py"),
}


def imported_roots(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (absolute imports only)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def modules(part: str) -> list[Path]:
    return sorted((REPO / part).rglob("*.py"))


@pytest.mark.parametrize("part", PARTS)
def test_a_part_imports_only_what_design_allows(part: str) -> None:
    wrong = {
        str(path.relative_to(REPO)): sorted(
            (imported_roots(path) & set(PARTS)) - ALLOWED[part] - {part}
        )
        for path in modules(part)
    }
    assert not {k: v for k, v in wrong.items() if v}, wrong


@pytest.mark.parametrize("library", sorted(ONLY_IN))
def test_a_library_is_used_only_where_design_says(library: str) -> None:
    users = [
        str(path.relative_to(REPO))
        for part in PARTS
        for path in modules(part)
        if library in imported_roots(path)
    ]
    assert users, f"nothing imports {library}: the rule is stale"
    stray = [u for u in users if not u.startswith(ONLY_IN[library])]
    assert not stray, f"{library} imported outside {ONLY_IN[library]}: {stray}"
