"""Read a YOLO-format folder: data.yaml with ``names``, ``images/<split>``, ``labels/<split>``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from numpy.typing import NDArray

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class YoloDataError(ValueError):
    """The folder is not a usable YOLO data set; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class YoloFolder:
    """A YOLO data set on disk: its root, class names (id order) and where a split lives."""

    root: Path
    names: tuple[str, ...]

    def images(self, split: str) -> list[Path]:
        """Image files of ``split``, sorted by name."""
        d = self.root / "images" / split
        if not d.is_dir():
            raise YoloDataError(f"{self.root}: no images/{split} folder")
        return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def label_path(self, image: Path, split: str) -> Path:
        """The label file that belongs to ``image``."""
        return self.root / "labels" / split / f"{image.stem}.txt"

    def labels(
        self, image: Path, split: str, hw: tuple[int, int]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Class ids and xyxy pixel boxes of an image (none when the label file is absent)."""
        path = self.label_path(image, split)
        rows: list[list[float]] = []
        if path.is_file():
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise YoloDataError(f"{path}:{n}: expected 5 fields, got {len(parts)}")
                rows.append([float(v) for v in parts])
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 4))
        arr = np.asarray(rows, dtype=np.float64)
        cls = arr[:, 0].astype(np.int64)
        if cls.min() < 0 or cls.max() >= len(self.names):
            raise YoloDataError(f"{path}: class id outside 0..{len(self.names) - 1}")
        h, w = hw
        cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        return cls, boxes


def load_yolo_folder(path: Path) -> YoloFolder:
    """A YOLO folder from its directory or its ``data.yaml``; ``names`` may be a list or a map."""
    path = Path(path)
    yaml_path = path if path.is_file() else path / "data.yaml"
    if not yaml_path.is_file():
        raise YoloDataError(f"{path}: no data.yaml")
    doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    names = doc.get("names")
    if isinstance(names, dict):
        ordered = tuple(str(names[k]) for k in sorted(names, key=int))
    elif isinstance(names, list):
        ordered = tuple(str(n) for n in names)
    else:
        raise YoloDataError(f"{yaml_path}: 'names' must be a list or a mapping of id to name")
    return YoloFolder(root=yaml_path.parent.resolve(), names=ordered)
