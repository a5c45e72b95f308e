"""Where a model came from: the source commit and the software that built it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from models.offline import REPO_ROOT


def git_commit(repo: Path = REPO_ROOT) -> str | None:
    """The current commit hash (with ``-dirty`` if tracked files changed), or None."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head
