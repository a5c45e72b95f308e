"""Build the detector's training data: real garbage photos plus manhole composites, one class map.

Output (under ``out_dir``), all YOLO format, built deterministically from ``seed``:

- ``gridwatch-det/`` – what ``train`` uses. ``images/train``: every street-garbage train photo
  (symlinked as is), a share of them replaced by a copy with 1–2 train-split manhole covers
  composited in, plus each train crop as a full-frame example and as ``close_ups`` close-up
  views on street backgrounds. ``val``/``test``: the
  street-garbage photos of that split unchanged, plus a composite copy of each with covers from
  that split's crops, plus that split's crops as full-frame examples.
- ``manhole-composite/`` – only the composite and full-frame images of each split (symlinks into
  ``gridwatch-det``), to report manhole metrics on composites, labelled as such.
- ``manifest.json`` – the spec, the crop split and, per generated image, what was placed where.

Street-garbage val/test photos are evaluated from the shared folder itself (unchanged).

Hard negatives (``spec.hard_negatives``: the dispatcher's ``hard_negatives/`` folder, or one of
its per-kind YOLO folders) join ``images/train`` only, never val or test, all of them (``limit``
does not apply): each image as one without an object of the kind that was rejected. Its label
keeps any objects of other classes that the folder carries (a person may label them there) and
drops those of the rejected kind; ``manifest.json`` lists each image with its source, ticket,
kind and model version, and counts them per kind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from models.yolo_data import (
    CorruptLabelError,
    YoloDataError,
    class_key,
    find_yaml,
    label_path_for,
    load_yolo_folder,
    parse_label_lines,
)
from simulators.composite import (
    CLASSES,
    SPLITS,
    CropRef,
    PlacedObject,
    Split,
    close_up_example,
    composite_scene,
    datasets_root,
    full_frame_example,
    list_crops,
    near_duplicate_groups,
    read_image,
    read_yolo_boxes,
    rng_for,
    split_crops,
    yolo_line,
)

log = logging.getLogger(__name__)

TRAIN_SET = "gridwatch-det"
COMPOSITE_SET = "manhole-composite"
GARBAGE_SET = "street-garbage"
CROPS_SET = "manhole-crops"
COMPOSITE_PREFIX = "mc_"
FULLFRAME_PREFIX = "mf_"
HARD_NEGATIVE_PREFIX = "hn"
HARD_NEGATIVE_MANIFEST = "manifest.jsonl"
JPEG_QUALITY = 92


class DatasetSpec(BaseModel):
    """What to build and from where; everything that changes the output is here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datasets: Path | None = Field(
        default=None,
        description="Shared datasets root; default $GW_DATASETS or ../shared/datasets.",
    )
    out_dir: Path = Field(description="Where the built data sets go.")
    seed: int = Field(default=0, description="Seed for the crop split and every composite.")
    composite_share: float = Field(
        default=0.6, ge=0, le=1, description="Share of garbage train photos given manhole covers."
    )
    covers_per_image: tuple[int, int] = Field(
        default=(1, 2), description="Inclusive range of covers placed per composite image."
    )
    cover_width: tuple[float, float] = Field(
        default=(0.10, 0.32),
        description="Cover width range in composites, as fractions of the scene's width "
        "(log-uniform). Smaller covers are a few pixels at 320 px: their condition cannot be "
        "seen, and labelling it teaches noise.",
    )
    close_ups: int = Field(
        default=3,
        ge=0,
        description="Train only: close-up examples per crop (the cover rotated, tilted and lit "
        "anew, filling most of a frame cut from a street photo).",
    )
    crops_val: int = Field(default=8, ge=1, description="Val crops per condition folder.")
    crops_test: int = Field(default=8, ge=1, description="Test crops per condition folder.")
    limit: int | None = Field(
        default=None, ge=1, description="Use at most this many scenes per split (smoke tests)."
    )
    hard_negatives: list[Path] = Field(
        default_factory=list,
        description="Folders of hard negatives (the dispatcher's hard_negatives/ or one of its "
        "kind folders); their images join the train split only, without objects of the "
        "rejected kind.",
    )


class BuiltDataset(BaseModel):
    """Where the built data sets are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_yaml: Path
    composite_yaml: Path
    garbage_yaml: Path
    manifest: Path
    counts: dict[str, dict[str, int]]


def _write_yaml(path: Path, names: Sequence[str], splits: Sequence[str]) -> None:
    doc = {
        "path": str(path.parent.resolve()),
        **{s: f"images/{s}" for s in splits},
        "nc": len(names),
        "names": dict(enumerate(names)),
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    os.symlink(src.resolve(), dst)


def _labels(objects: Sequence[PlacedObject], hw: tuple[int, int]) -> str:
    ids = {n: i for i, n in enumerate(CLASSES)}
    return "".join(yolo_line(ids[o.class_name], o.box, hw) + "\n" for o in objects)


def _existing_objects(
    garbage: Path, split: str, stem: str, hw: tuple[int, int]
) -> tuple[list[PlacedObject], list[tuple[float, float, float, float]]]:
    """The scene's garbage labels, and every box to keep clear (incl. the original bin boxes)."""
    boxes = read_yolo_boxes(garbage / "labels" / split / f"{stem}.txt", hw)
    objects = [
        PlacedObject(
            class_name="garbage",
            box=(round(b[0]), round(b[1]), round(b[2]), round(b[3])),
            source="street-garbage",
        )
        for c, b in boxes
        if c == 0
    ]
    original = read_yolo_boxes(garbage / "labels_original_3class" / split / f"{stem}.txt", hw)
    avoid = [b for _, b in boxes] + [b for _, b in original]
    return objects, avoid


def _pick_covers(rng: np.random.Generator, crops: Sequence[CropRef], count: int) -> list[CropRef]:
    """``count`` crops, class first (uniform over manhole classes) then a crop of that class."""
    by_class: dict[str, list[CropRef]] = {}
    for c in crops:
        by_class.setdefault(c.class_name, []).append(c)
    classes = sorted(by_class)
    picks = []
    for _ in range(count):
        group = by_class[classes[int(rng.integers(len(classes)))]]
        picks.append(group[int(rng.integers(len(group)))])
    return picks


def build_dataset(spec: DatasetSpec) -> BuiltDataset:
    """Build ``gridwatch-det`` and ``manhole-composite`` under ``spec.out_dir``; see module doc."""
    root = datasets_root(spec.datasets)
    garbage, crops_root = root / GARBAGE_SET, root / CROPS_SET
    if not (garbage / "images").is_dir():
        raise FileNotFoundError(f"street-garbage data set not found under {root}")
    out = spec.out_dir.resolve()
    train_dir, comp_dir = out / TRAIN_SET, out / COMPOSITE_SET
    for d in (train_dir, comp_dir):
        if d.exists():
            shutil.rmtree(d)
    crops = list_crops(crops_root)
    groups = near_duplicate_groups(crops)
    crop_split = split_crops(crops, spec.seed, spec.crops_val, spec.crops_test, groups)
    crop_cache: dict[Path, np.ndarray] = {}

    def crop_image(ref: CropRef) -> np.ndarray:
        if ref.path not in crop_cache:
            crop_cache[ref.path] = read_image(ref.path)
        return crop_cache[ref.path]

    manifest: dict[str, object] = {
        "spec": json.loads(spec.model_dump_json()),
        "datasets_root": str(root),
        "classes": list(CLASSES),
        "crop_split": {s: [c.name for c in crop_split[s]] for s in SPLITS},
        "near_duplicate_groups": {
            g: sorted(n for n, h in groups.items() if h == g)
            for g in sorted(set(groups.values()))
            if sum(h == g for h in groups.values()) > 1
        },
        "images": {},
    }
    images: dict[str, list[dict[str, object]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        n_split = _build_split(
            split, spec, garbage, crop_split[split], crop_image, train_dir, comp_dir, images
        )
        counts[split] = n_split
    manifest["hard_negatives"] = _add_hard_negatives(spec.hard_negatives, train_dir, counts)
    manifest["images"] = images
    manifest["counts"] = counts
    _write_yaml(train_dir / "data.yaml", CLASSES, SPLITS)
    _write_yaml(comp_dir / "data.yaml", CLASSES, SPLITS)
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    log.info("built data sets under %s: %s", out, counts)
    return BuiltDataset(
        train_yaml=train_dir / "data.yaml",
        composite_yaml=comp_dir / "data.yaml",
        garbage_yaml=garbage / "data.yaml",
        manifest=manifest_path,
        counts=counts,
    )


def _build_split(
    split: Split,
    spec: DatasetSpec,
    garbage: Path,
    crops: Sequence[CropRef],
    crop_image: Callable[[CropRef], np.ndarray],
    train_dir: Path,
    comp_dir: Path,
    images: dict[str, list[dict[str, object]]],
) -> dict[str, int]:
    """Write one split of both data sets; returns image and object counts."""
    img_out, lab_out = train_dir / "images" / split, train_dir / "labels" / split
    cimg_out, clab_out = comp_dir / "images" / split, comp_dir / "labels" / split
    for d in (img_out, lab_out, cimg_out, clab_out):
        d.mkdir(parents=True, exist_ok=True)
    scenes = sorted((garbage / "images" / split).glob("*.jpg"))
    if spec.limit is not None:
        scenes = scenes[: spec.limit]
    counts: Counter[str] = Counter()
    records: list[dict[str, object]] = []
    for i, scene_path in enumerate(scenes):
        rng = rng_for(spec.seed, f"scene-{split}", i)
        stem = scene_path.stem
        label_src = garbage / "labels" / split / f"{stem}.txt"
        with_covers = split != "train" or rng.random() < spec.composite_share
        keep_original = split != "train" or not with_covers
        if keep_original:
            _link(scene_path, img_out / scene_path.name)
            text = label_src.read_text(encoding="utf-8") if label_src.is_file() else ""
            (lab_out / f"{stem}.txt").write_text(text, encoding="utf-8")
            counts["images_original"] += 1
        if not with_covers:
            continue
        scene = read_image(scene_path)
        hw = (scene.shape[0], scene.shape[1])
        objects, avoid = _existing_objects(garbage, split, stem, hw)
        n = int(rng.integers(spec.covers_per_image[0], spec.covers_per_image[1] + 1))
        picks = _pick_covers(rng, crops, n)
        img, placed = composite_scene(
            scene, [(c, crop_image(c)) for c in picks], rng, avoid, spec.cover_width
        )
        name = f"{COMPOSITE_PREFIX}{stem}"
        cv2.imwrite(str(img_out / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        (lab_out / f"{name}.txt").write_text(_labels(objects + placed, hw), encoding="utf-8")
        _link(img_out / f"{name}.jpg", cimg_out / f"{name}.jpg")
        _link(lab_out / f"{name}.txt", clab_out / f"{name}.txt")
        counts["images_composite"] += 1
        counts.update(o.class_name for o in placed)
        records.append(
            {
                "image": f"{name}.jpg",
                "scene": scene_path.name,
                "objects": [o.model_dump() for o in objects + placed],
            }
        )
    if spec.limit is not None:
        crops = list(crops)[:: max(1, len(crops) // spec.limit)][: spec.limit]
    for j, ref in enumerate(crops):
        rng = rng_for(spec.seed, f"full-{split}", j)
        img, obj = full_frame_example(crop_image(ref), rng)
        obj = obj.model_copy(update={"class_name": ref.class_name, "source": ref.name})
        name = f"{FULLFRAME_PREFIX}{ref.folder}_{ref.path.stem}"
        cv2.imwrite(str(img_out / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        (lab_out / f"{name}.txt").write_text(
            _labels([obj], (img.shape[0], img.shape[1])), encoding="utf-8"
        )
        _link(img_out / f"{name}.jpg", cimg_out / f"{name}.jpg")
        _link(lab_out / f"{name}.txt", clab_out / f"{name}.txt")
        counts["images_fullframe"] += 1
        counts[ref.class_name] += 1
        records.append({"image": f"{name}.jpg", "crop": ref.name, "objects": [obj.model_dump()]})
        for k in range(spec.close_ups if split == "train" and scenes else 0):
            rng = rng_for(spec.seed, f"close-{split}", j * 100 + k)
            background = read_image(scenes[int(rng.integers(len(scenes)))])
            img, obj = close_up_example(crop_image(ref), background, rng)
            obj = obj.model_copy(update={"class_name": ref.class_name, "source": ref.name})
            name = f"{FULLFRAME_PREFIX}{ref.folder}_{ref.path.stem}_close{k}"
            cv2.imwrite(str(img_out / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            (lab_out / f"{name}.txt").write_text(
                _labels([obj], (img.shape[0], img.shape[1])), encoding="utf-8"
            )
            counts["images_closeup"] += 1
            counts[ref.class_name] += 1
            records.append(
                {"image": f"{name}.jpg", "crop": ref.name, "objects": [obj.model_dump()]}
            )
    images[split] = records
    return dict(counts)


def hard_negative_folders(path: Path) -> list[Path]:
    """The YOLO folders that ``path`` stands for: itself when it has a data yaml, else each of
    its subfolders that has one (the dispatcher's root, one folder per rejected kind)."""
    if not path.is_dir():
        raise FileNotFoundError(f"hard negatives: {path} is not a folder")
    if _has_yaml(path):
        return [path]
    found = [d for d in sorted(path.iterdir()) if d.is_dir() and _has_yaml(d)]
    if not found:
        log.warning("hard negatives: no data.yaml in %s nor in its subfolders", path)
    return found


def _has_yaml(folder: Path) -> bool:
    try:
        find_yaml(folder)
    except YoloDataError:
        return False
    return True


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The folder's manifest lines by image name (a later line for an image wins)."""
    path = folder / HARD_NEGATIVE_MANIFEST
    if not path.is_file():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            log.warning("%s:%d: not a JSON line (%s); skipped", path, n, exc)
            continue
        if isinstance(line, dict) and isinstance(line.get("image"), str):
            out[line["image"]] = line
        else:
            log.warning("%s:%d: no image named; skipped", path, n)
    return out


def _add_hard_negatives(
    folders: Sequence[Path], train_dir: Path, counts: dict[str, dict[str, int]]
) -> dict[str, object]:
    """Link every hard-negative image into ``train_dir``'s train split with its label (objects
    of other classes only); returns the manifest section and adds to ``counts['train']``."""
    img_out, lab_out = train_dir / "images" / "train", train_dir / "labels" / "train"
    ids = {class_key(n): i for i, n in enumerate(CLASSES)}
    total: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    seen: set[Path] = set()
    sources: list[dict[str, object]] = []
    records: list[dict[str, object]] = []
    kinds = [k for p in folders for k in hard_negative_folders(p.resolve())]
    for i, folder in enumerate(kinds):
        data = load_yolo_folder(folder)
        lines = _read_manifest(folder)
        splits = list(data.splits) or ["train"]
        images = sorted({p.resolve() for s in splits for p in data.images(s)})
        mine: Counter[str] = Counter()
        for image in images:
            if image in seen:
                mine["skipped_duplicate"] += 1
                continue
            seen.add(image)
            line = lines.get(image.name, {})
            # without a manifest line, a folder that names one class holds negatives of it
            kind = line.get("kind") or (data.names[0] if len(data.names) == 1 else None)
            if kind is None or class_key(str(kind)) not in ids:
                why = "skipped_no_kind" if kind is None else "skipped_kind_not_trained"
                log.warning("hard negative %s: %s (%s)", image, why, kind)
                mine[why] += 1
                continue
            rejected = ids[class_key(str(kind))]
            label = label_path_for(image)
            try:
                text = label.read_text(encoding="utf-8-sig") if label.is_file() else ""
                rows = parse_label_lines(text, len(data.names), label)
            except (OSError, UnicodeDecodeError, CorruptLabelError) as exc:
                log.warning("hard negative %s skipped: its label: %s", image, exc)
                mine["skipped_bad_label"] += 1
                continue
            kept: list[str] = []
            for row in rows:
                target = ids.get(class_key(data.names[int(row[0])]))
                if target == rejected:
                    mine["labels_dropped_rejected_kind"] += 1
                elif target is None:
                    mine["labels_dropped_not_trained"] += 1
                else:
                    box = " ".join(f"{float(v):.6f}" for v in row[1:])
                    kept.append(f"{target} {box}\n")
            name = f"{HARD_NEGATIVE_PREFIX}{i}_{CLASSES[rejected]}_{image.stem}{image.suffix}"
            _link(image, img_out / name)
            (lab_out / f"{Path(name).stem}.txt").write_text("".join(kept), encoding="utf-8")
            mine["images"] += 1
            mine["objects_kept"] += len(kept)
            by_kind[CLASSES[rejected]] += 1
            records.append(
                {
                    "image": name,
                    "source": str(image),
                    "kind": CLASSES[rejected],
                    "objects": len(kept),
                    **{k: line.get(k) for k in ("ticket_id", "camera_id", "model_version")},
                }
            )
        if mine["labels_dropped_rejected_kind"]:
            log.warning(
                "hard negatives in %s: %d labelled object(s) of the rejected kind dropped (a "
                "hard negative trains as an image without that kind)",
                folder,
                mine["labels_dropped_rejected_kind"],
            )
        sources.append({"path": str(folder), "names": list(data.names), **mine})
        total.update(mine)
    if total["images"]:
        counts["train"]["images_hard_negative"] = total["images"]
    if kinds:
        log.info("hard negatives in train: %s by kind, %s", dict(by_kind), dict(total))
    return {
        "counts": {**total, "by_kind": dict(by_kind)},
        "folders": sources,
        "images": records,
    }
