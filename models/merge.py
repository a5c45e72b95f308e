"""Evaluate with classes merged (e.g. any manhole condition as one class), on model and data alike.

``MergedModel`` wraps a model so that each group's score is the highest score of its member
classes; ``merged_folder`` writes a YOLO folder whose labels use the group ids (images are
linked, not copied). Used to ask "is a manhole found at all?" apart from "is its condition right?".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml
from numpy.typing import NDArray

from models.evaluate import RawModel
from models.yolo_data import YoloFolder, load_yolo_folder


def group_names(classes: tuple[str, ...], groups: Mapping[str, str]) -> tuple[str, ...]:
    """Group names in first-seen order; a class not in ``groups`` stays itself."""
    out: list[str] = []
    for c in classes:
        g = groups.get(c, c)
        if g not in out:
            out.append(g)
    return tuple(out)


class MergedModel:
    """A model whose classes are merged into groups (group score = max of its members)."""

    def __init__(self, model: RawModel, groups: Mapping[str, str]) -> None:
        self._model = model
        self._names = group_names(model.classes, groups)
        self._members = [
            [i for i, c in enumerate(model.classes) if groups.get(c, c) == g] for g in self._names
        ]
        thr = model.thresholds
        self._thresholds = {
            g: min(thr.get(model.classes[i], 0.25) for i in m)
            for g, m in zip(self._names, self._members, strict=True)
        }

    @property
    def classes(self) -> tuple[str, ...]:
        return self._names

    @property
    def input_size(self) -> tuple[int, int]:
        return self._model.input_size

    @property
    def model_version(self) -> str:
        return f"{self._model.model_version} (merged)"

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self._thresholds)

    @property
    def iou(self) -> float:
        return self._model.iou

    def raw_output(self, frame_bgr: NDArray[np.uint8]) -> NDArray[np.float32]:
        raw = self._model.raw_output(frame_bgr)
        scores = raw[4:]
        merged = np.stack([scores[m].max(axis=0) for m in self._members])
        return np.concatenate([raw[:4], merged]).astype(np.float32)


def merged_folder(src: Path, dst: Path, split: str, groups: Mapping[str, str]) -> YoloFolder:
    """A copy of ``src``'s split with labels renumbered to the groups; images are symlinks."""
    folder = load_yolo_folder(src)
    names = group_names(folder.names, groups)
    new_id = [names.index(groups.get(c, c)) for c in folder.names]
    (dst / "images").mkdir(parents=True, exist_ok=True)
    labels = dst / "labels" / split
    labels.mkdir(parents=True, exist_ok=True)
    link = dst / "images" / split
    if not link.exists():
        os.symlink(folder.root / "images" / split, link)
    for image in folder.images(split):
        src_label = folder.label_path(image, split)
        lines = []
        if src_label.is_file():
            for line in src_label.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 5:
                    lines.append(" ".join([str(new_id[int(parts[0])]), *parts[1:]]))
        (labels / f"{image.stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (dst / "data.yaml").write_text(
        yaml.safe_dump(
            {"path": str(dst), split: f"images/{split}", "names": dict(enumerate(names))}
        ),
        encoding="utf-8",
    )
    return load_yolo_folder(dst)
