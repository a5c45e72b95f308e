"""Cross-check our evaluation against ultralytics' own ``val`` on the same model and data."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from models.offline import configure_offline
from models.yolo_data import load_yolo_folder

log = logging.getLogger(__name__)


def mirror_yolo_folder(src: Path, dst: Path, split: str) -> Path:
    """A data.yaml in ``dst`` whose split links to ``src``, so caches are written in ``dst``."""
    folder = load_yolo_folder(src)
    for kind in ("images", "labels"):
        (dst / kind).mkdir(parents=True, exist_ok=True)
        link = dst / kind / split
        if not link.exists():
            os.symlink(folder.root / kind / split, link)
    doc = {
        "path": str(dst),
        "train": f"images/{split}",
        "val": f"images/{split}",
        "names": dict(enumerate(folder.names)),
    }
    out = dst / "data.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


def ultralytics_val(
    model: Path, data: Path, split: str = "test", imgsz: int = 320
) -> dict[str, dict[str, float]]:
    """Per-class AP50 / AP50-95 as ultralytics' ``val`` reports them (conf 0.001, IoU 0.7)."""
    configure_offline()
    from ultralytics import YOLO  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory(prefix="gw-uval-") as tmp:
        yaml_path = mirror_yolo_folder(data, Path(tmp) / "data", split)
        metrics: Any = YOLO(str(model), task="detect").val(
            data=str(yaml_path),
            split="val",
            imgsz=imgsz,
            batch=1,
            device="cpu",
            plots=False,
            project=str(Path(tmp) / "runs"),
            name="val",
            verbose=False,
            workers=0,
        )
    box = metrics.box
    names = metrics.names
    return {
        str(names[int(c)]): {"ap50": float(box.ap50[i]), "ap50_95": float(box.ap[i])}
        for i, c in enumerate(box.ap_class_index)
    }
