"""Read a YOLO-format data set the way ultralytics reads it.

A ``data.yaml`` gives ``names`` (a list, or a mapping of id to name) and, per split, where the
images are: ``train:`` / ``val:`` / ``test:`` (or any other key) name a folder of images, a
``.txt`` list of image paths, or a list of either, relative to the yaml's ``path:`` (itself
relative to the yaml's folder), with ultralytics' ``../`` fallback (Roboflow exports write
``test: ../test/images`` beside the yaml). A split without a key falls back to
``images/<split>`` (or Roboflow's ``<split>/images``). Each image's label file is found as
ultralytics finds it: the last ``/images/`` of its path replaced by ``/labels/`` and the
extension by ``.txt``. Label lines are boxes (``cls cx cy w h``, normalised) or polygons
(``cls x1 y1 x2 y2 ...``), which become their bounding box, as ultralytics does; a label file
that ultralytics would reject (bad class id, coordinates out of range, mixed rows) raises
``CorruptLabelError`` with ultralytics' reason, so the caller can skip that image as it does.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from numpy.typing import NDArray

log = logging.getLogger(__name__)

# ultralytics.data.utils.IMG_FORMATS: the suffixes it lists as images.
IMG_FORMATS = frozenset(
    {
        "avif",
        "bmp",
        "dng",
        "heic",
        "heif",
        "jp2",
        "jpeg",
        "jpg",
        "mpo",
        "png",
        "tif",
        "tiff",
        "webp",
    }
)
IMAGE_SUFFIXES = tuple(f".{s}" for s in sorted(IMG_FORMATS))
YAML_NAMES = ("data.yaml", "data.yml")
NOT_SPLITS = frozenset({"path", "names", "nc", "download", "channels", "yaml_file"})


class YoloDataError(ValueError):
    """The folder is not a usable YOLO data set; the message says what is missing."""


class CorruptLabelError(YoloDataError):
    """One label file that ultralytics would reject (and skip its image)."""


def class_key(name: str) -> str:
    """A class name compared ignoring case and ``-``/``_``/space (``Garbage`` = ``garbage``,
    ``Manhole-Missing`` = ``manhole_missing``)."""
    return re.sub(r"[\s_-]+", "", name).casefold()


def label_path_for(image: Path) -> Path:
    """ultralytics' ``img2label_paths``: the last ``/images/`` becomes ``/labels/``, the
    extension ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(os.fspath(image).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def _is_image(path: str) -> bool:
    return path.rpartition(".")[-1].lower() in IMG_FORMATS


@dataclass(frozen=True, slots=True)
class YoloFolder:
    """A YOLO data set on disk: its root (the yaml's ``path``), class names (id order) and the
    yaml's split entries (each a folder, a ``.txt`` list or an image, as written there)."""

    root: Path
    names: tuple[str, ...]
    yaml_path: Path | None = None
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

    def images(self, split: str) -> list[Path]:
        """Image files of ``split``, sorted by path as ultralytics sorts them."""
        entries = self.splits.get(split)
        if entries is None:
            return self._fallback_images(split)
        found: list[str] = []
        for entry in entries:
            found += self._list(entry, split)
        images = sorted(x for x in found if _is_image(x))
        if not images:
            raise YoloDataError(f"{self._where()}: no images found for '{split}: {_show(entries)}'")
        return [Path(x) for x in images]

    def label_path(self, image: Path, split: str | None = None) -> Path:
        """The label file that belongs to ``image`` (``split`` is not needed, kept for callers)."""
        return label_path_for(image)

    def labels(
        self, image: Path, split: str | None, hw: tuple[int, int]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Class ids and xyxy pixel boxes of an image (none when the label file is absent);
        ``CorruptLabelError`` where ultralytics would reject the file."""
        path = self.label_path(image, split)
        if not path.is_file():
            return np.zeros(0, dtype=np.int64), np.zeros((0, 4))
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptLabelError(f"{path}: cannot read: {exc}") from exc
        lb = parse_label_lines(text, len(self.names), path)
        if not len(lb):
            return np.zeros(0, dtype=np.int64), np.zeros((0, 4))
        h, w = hw
        arr = lb.astype(np.float64)
        cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        return arr[:, 0].astype(np.int64), boxes

    def available_splits(self) -> list[str]:
        """Split keys of the yaml, and ``images/<name>`` folders."""
        names = set(self.splits)
        images = self.root / "images"
        if images.is_dir():
            names |= {p.name for p in images.iterdir() if p.is_dir()}
        return sorted(names)

    def _where(self) -> str:
        return str(self.yaml_path or self.root)

    def _resolve(self, entry: str) -> Path:
        """ultralytics' resolution (``path / entry``, then without a leading ``../``), then
        relative to the yaml's own folder."""
        candidates = [self.root / entry]
        if entry.startswith("../"):
            candidates.append(self.root / entry[3:])
        if self.yaml_path is not None:
            candidates.append(self.yaml_path.parent / entry)
        for c in candidates:
            if c.exists():
                return c.resolve()
        return candidates[0]

    def _list(self, entry: str, split: str) -> list[str]:
        """The image paths one split entry stands for."""
        p = self._resolve(entry)
        if p.is_dir():
            return glob.glob(str(Path(glob.escape(str(p))) / "**" / "*.*"), recursive=True)
        if p.is_file() and _is_image(p.name):
            return [str(p)]
        if p.is_file():
            return self._read_list(p)
        raise YoloDataError(f"{self._where()}: '{split}: {entry}' does not exist (looked at {p})")

    def _read_list(self, path: Path) -> list[str]:
        """A ``.txt`` list of images: ``./x`` is relative to the list, other relative paths to
        the data set's root (or, failing that, to the list)."""
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise YoloDataError(f"{path}: cannot read the image list: {exc}") from exc
        out: list[str] = []
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            if line.startswith("./"):
                out.append(str(path.parent / line[2:]))
                continue
            p = Path(line)
            if not p.is_absolute():
                p = self.root / line if (self.root / line).exists() else path.parent / line
            out.append(str(p))
        return out

    def _fallback_images(self, split: str) -> list[Path]:
        for d in (self.root / "images" / split, self.root / split / "images"):
            if d.is_dir():
                return self._images_in(d, split)
        raise YoloDataError(
            f"{self._where()}: no '{split}:' key and no images/{split} folder; splits here: "
            f"{', '.join(self.available_splits()) or 'none'}"
        )

    def _images_in(self, folder: Path, split: str) -> list[Path]:
        """Images under ``folder`` (recursively, as ultralytics lists a split folder)."""
        found = glob.glob(
            str(Path(glob.escape(str(folder.resolve()))) / "**" / "*.*"), recursive=True
        )
        images = sorted(x for x in found if _is_image(x))
        if not images:
            raise YoloDataError(f"{self._where()}: no images in {folder} (split '{split}')")
        return [Path(x) for x in images]


def _show(entries: tuple[str, ...]) -> str:
    return entries[0] if len(entries) == 1 else str(list(entries))


def parse_label_lines(text: str, nc: int, path: Path) -> NDArray[np.float32]:
    """``(n, 5)`` rows ``cls cx cy w h`` from a label file's text, checked and de-duplicated as
    ultralytics' ``verify_image_label`` does; polygons become their bounding boxes."""
    rows = [x.split() for x in text.strip().splitlines() if x.strip()]
    segments: list[NDArray[np.float32]] = []
    is_segment = any(len(x) > 6 for x in rows)
    if is_segment and any(len(x) == 5 for x in rows):
        raise CorruptLabelError(f"{path}: labels mix segment and detection rows")
    try:
        if is_segment:
            classes = np.array([x[0] for x in rows], dtype=np.float32)
            segments = [np.array(x[1:], dtype=np.float32).reshape(-1, 2) for x in rows]
            lb = np.concatenate((classes.reshape(-1, 1), segments_to_boxes(segments)), 1)
        else:
            lb = np.array(rows, dtype=np.float32)
    except ValueError as exc:
        raise CorruptLabelError(f"{path}: unreadable label rows: {exc}") from exc
    if not len(lb):
        return np.zeros((0, 5), dtype=np.float32)
    if lb.ndim != 2 or lb.shape[1] != 5:
        width = lb.shape[1] if lb.ndim == 2 else "?"
        raise CorruptLabelError(f"{path}: labels require 5 columns, {width} columns detected")
    points = lb[:, 1:]
    if points.max() > 1.01:
        raise CorruptLabelError(f"{path}: non-normalized or out of bounds coordinates")
    if not (lb.min() >= 0 or (lb.min() >= -0.01 and lb[:, 3:5].min() >= 0)):
        raise CorruptLabelError(f"{path}: negative label values")
    if not (lb[:, 0] % 1 == 0).all():
        raise CorruptLabelError(f"{path}: non-integer class labels")
    if lb[:, 0].max() >= nc:
        raise CorruptLabelError(
            f"{path}: label class {int(lb[:, 0].max())} exceeds the data set's class count {nc}; "
            f"possible class labels are 0-{nc - 1}"
        )
    n = len(lb)
    _, keep = np.unique(lb, axis=0, return_index=True)
    if len(keep) < n and segments:  # distinct polygons may share a class and a box
        tags = np.array(
            [c.tobytes() + s.tobytes() for c, s in zip(lb[:, 0], segments, strict=True)],
            dtype=object,
        )
        _, keep = np.unique(tags, return_index=True)
    if len(keep) < n:
        log.info("%s: %d duplicate labels removed", path, n - len(keep))
        lb = lb[keep]
    return lb


def segments_to_boxes(segments: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    """ultralytics' ``segments2boxes``: each polygon's bounding box, ``(n, 4)`` cx cy w h."""
    boxes = np.array(
        [[s[:, 0].min(), s[:, 1].min(), s[:, 0].max(), s[:, 1].max()] for s in segments]
    )
    xyxy = boxes.reshape(-1, 4).astype(np.float32)
    out = np.empty_like(xyxy)
    out[:, 0] = (xyxy[:, 0] + xyxy[:, 2]) / 2
    out[:, 1] = (xyxy[:, 1] + xyxy[:, 3]) / 2
    out[:, 2] = xyxy[:, 2] - xyxy[:, 0]
    out[:, 3] = xyxy[:, 3] - xyxy[:, 1]
    return out


def find_yaml(path: Path) -> Path:
    """The data yaml of a folder: ``data.yaml``/``data.yml``, else its only ``*.yaml``."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise YoloDataError(f"{path}: no such folder or data.yaml")
    for name in YAML_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.yaml")) or sorted(path.glob("*.yml"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise YoloDataError(f"{path}: no data.yaml")
    raise YoloDataError(
        f"{path}: no data.yaml and {len(found)} other yaml files ({', '.join(f.name for f in found)}); "
        "give the one to use"
    )


def parse_names(doc: Mapping[str, object], where: Path) -> tuple[str, ...]:
    """``names`` as a list or a mapping of id (0..n-1) to name; ``nc`` alone gives class_<i>."""
    names = doc.get("names")
    nc = doc.get("nc")
    if names is None:
        count = _as_int(nc)
        if count is not None and count > 0:
            return tuple(f"class_{i}" for i in range(count))
        raise YoloDataError(f"{where}: 'names' is missing (a list, or a mapping of id to name)")
    if isinstance(names, list):
        ordered = tuple(str(n) for n in names)
    elif isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as exc:
            raise YoloDataError(f"{where}: 'names' keys must be class ids 0..n-1") from exc
        if set(by_id) != set(range(len(by_id))):
            raise YoloDataError(
                f"{where}: 'names' keys must be the class ids 0..{len(by_id) - 1}, "
                f"got {sorted(by_id)}"
            )
        ordered = tuple(by_id[i] for i in range(len(by_id)))
    else:
        raise YoloDataError(f"{where}: 'names' must be a list or a mapping of id to name")
    if not ordered:
        raise YoloDataError(f"{where}: 'names' is empty")
    if nc is not None and _as_int(nc) != len(ordered):
        raise YoloDataError(f"{where}: 'names' has {len(ordered)} entries but 'nc' is {nc}")
    return ordered


def _as_int(value: object) -> int | None:
    """An integer-like ``nc`` (2, 2.0, "2") as an int; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _split_entries(doc: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for key, value in doc.items():
        if not isinstance(key, str) or key in NOT_SPLITS:
            continue
        if isinstance(value, str) and value:
            out[key] = (value,)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            out[key] = tuple(value)
    if "val" not in out and "validation" in out:
        out["val"] = out["validation"]
    return out


def load_yolo_folder(path: Path) -> YoloFolder:
    """A YOLO data set from its folder or its yaml (see the module doc)."""
    yaml_path = find_yaml(Path(path))
    try:
        doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise YoloDataError(f"{yaml_path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise YoloDataError(f"{yaml_path}: not valid YAML ({first})") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise YoloDataError(f"{yaml_path}: expected a mapping with 'names' and split keys")
    names = parse_names(doc, yaml_path)
    base = yaml_path.parent.resolve()
    root = base
    given = doc.get("path")
    if isinstance(given, str) and given.strip():
        candidate = Path(given).expanduser()
        candidate = candidate if candidate.is_absolute() else base / candidate
        if candidate.is_dir():
            root = candidate.resolve()
        else:
            log.warning("%s: path %s does not exist; using the yaml's folder", yaml_path, given)
    return YoloFolder(root=root, names=names, yaml_path=yaml_path, splits=_split_entries(doc))
