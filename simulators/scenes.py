"""Street-scene videos with known ground truth, for the demo and the edge agent's tests.

A scene is a real street photo (a ``street-garbage`` image without garbage, from the chosen
split) seen by a fixed camera. Real objects appear at ``appear_s`` and are removed at
``disappear_s``: a garbage pile (a crop of a labelled ``street-garbage`` box) and/or a manhole
cover (a ``manhole-crops`` photo, warped to the camera's view as in ``simulators.composite``).
Transient objects (a bag, cut from a garbage photo) cross the frame briefly; they must not
become incidents. Mild sensor noise and a slow illumination drift run throughout.

Usage::

    from simulators.scenes import SceneObject, SceneSpec, make_scene_video

    spec = SceneSpec(
        duration_s=20, objects=[SceneObject(kind="garbage", appear_s=4, disappear_s=14)]
    )
    truth = make_scene_video(spec, Path("street.mp4"), seed=7)   # also writes street.json

The video is MP4 (OpenCV ``mp4v``); the JSON beside it (``SceneTruth``) lists every object with
its class (``garbage``, ``manhole_missing``, ``manhole_broken``, ``manhole_ok``; transients as
``transient``), its box normalised to the frame as ``x1, y1, x2, y2``, and its appear/disappear
seconds; a transient also has its box per frame. A frame at time t = index / fps shows an
object when ``appear_s <= t < disappear_s``. Same spec and seed, same video and truth. By default
the pools are the ``test`` split, so a demo never shows training images.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulators.composite import (
    CLASSES,
    DATASETS_ENV,
    CoverLook,
    Image,
    Mask,
    Split,
    blend,
    box_overlap,
    datasets_root,
    light_patch,
    list_crops,
    near_duplicate_groups,
    read_image,
    read_yolo_boxes,
    render_cover,
    rng_for,
    sample_look,
    solid_box,
    split_crops,
)

log = logging.getLogger(__name__)

ObjectKind = Literal["garbage", "manhole_missing", "manhole_broken", "manhole_ok"]


class SceneObject(BaseModel):
    """A real object that appears in the scene and is later removed (or stays)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ObjectKind = Field(description="Detector class of the object.")
    appear_s: float = Field(ge=0, description="When it appears (seconds from the start).")
    disappear_s: float | None = Field(
        default=None, gt=0, description="When it is removed; None: stays to the end."
    )
    centre: tuple[float, float] | None = Field(
        default=None, description="Normalised (x, y) centre; default: a random spot on the ground."
    )
    width_frac: float | None = Field(
        default=None, gt=0.02, le=0.6, description="Width as a fraction of the frame width."
    )

    @model_validator(mode="after")
    def _order(self) -> SceneObject:
        if self.disappear_s is not None and self.disappear_s <= self.appear_s:
            raise ValueError("disappear_s must be after appear_s")
        return self


class TransientObject(BaseModel):
    """Something that crosses the frame and leaves (a blown bag, a pedestrian's bag)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enter_s: float = Field(ge=0, description="When it enters the frame.")
    duration_s: float = Field(default=1.5, gt=0, le=30, description="Time to cross the frame.")
    direction: Literal["left_to_right", "right_to_left"] = "left_to_right"
    y_frac: float = Field(default=0.75, ge=0.3, le=0.95, description="Height of its path.")
    width_frac: float = Field(default=0.08, gt=0.02, le=0.3)


class SceneSpec(BaseModel):
    """What the video shows; the seed given to ``make_scene_video`` fixes everything else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(default=640, ge=64, le=3840)
    height: int = Field(default=360, ge=64, le=2160)
    fps: float = Field(default=10.0, gt=0, le=60)
    duration_s: float = Field(default=20.0, gt=0, le=3600)
    split: Split = Field(default="test", description="Which split's photos and crops to use.")
    background: str | None = Field(
        default=None, description="File name of the street photo; default: a random negative."
    )
    objects: list[SceneObject] = Field(
        default_factory=lambda: [SceneObject(kind="garbage", appear_s=3.0, disappear_s=15.0)]
    )
    transients: list[TransientObject] = Field(
        default_factory=lambda: [TransientObject(enter_s=6.0)]
    )
    noise_sigma: float = Field(default=2.0, ge=0, le=20, description="Per-frame pixel noise.")
    drift: float = Field(default=0.06, ge=0, le=0.5, description="Brightness drift amplitude.")
    drift_period_s: float = Field(default=30.0, gt=0)
    datasets: Path | None = Field(default=None, description="Datasets root (default as usual).")
    crop_seed: int = Field(default=0, description="Seed of the crop split (as in training).")

    @property
    def frames(self) -> int:
        """Number of frames in the video."""
        return max(1, round(self.duration_s * self.fps))


class TruthObject(BaseModel):
    """One object in the ground truth."""

    model_config = ConfigDict(extra="forbid")

    id: int
    class_name: str
    box: tuple[float, float, float, float] = Field(description="Normalised x1, y1, x2, y2.")
    appear_s: float
    disappear_s: float | None
    source: str
    track: list[tuple[float, tuple[float, float, float, float]]] | None = Field(
        default=None, description="Transients only: (t, box) per frame while in view."
    )

    def visible_at(self, t: float) -> bool:
        """Whether the object is in view at time ``t``."""
        t += 1e-9  # frame times are index / fps; keep 0.1 * 3 from falling before 0.3
        return self.appear_s <= t and (self.disappear_s is None or t < self.disappear_s)


class SceneTruth(BaseModel):
    """The ground-truth file written next to the video."""

    model_config = ConfigDict(extra="forbid")

    schema_: Literal["gridwatch.scene-truth"] = Field(
        default="gridwatch.scene-truth", alias="schema"
    )
    v: Literal[1] = 1
    video: str
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    seed: int
    background: str
    objects: list[TruthObject]
    spec: SceneSpec

    def visible_at(self, t: float, *, transients: bool = False) -> list[TruthObject]:
        """Objects in view at ``t`` (real ones only unless ``transients``)."""
        return [
            o
            for o in self.objects
            if o.visible_at(t) and (transients or o.class_name != "transient")
        ]


def _street_frame(path: Path, width: int, height: int) -> tuple[Image, tuple[float, float, float]]:
    """The photo resized to the frame width and cropped to the frame height from its lower part.

    Returns the frame and the mapping (scale, x offset, y offset) from photo to frame pixels.
    """
    photo = read_image(path)
    ph, pw = photo.shape[:2]
    scale = max(width / pw, height / ph)
    resized = cv2.resize(
        photo,
        (math.ceil(pw * scale), math.ceil(ph * scale)),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    rh, rw = resized.shape[:2]
    y0 = int((rh - height) * 0.7)
    x0 = (rw - width) // 2
    frame = np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])
    return np.asarray(frame, dtype=np.uint8), (scale, float(x0), float(y0))


def _garbage_crops(
    garbage_root: Path, split: str
) -> list[tuple[Path, tuple[float, float, float, float]]]:
    """Garbage boxes at least 60 px wide and high in the split's photos: (photo, pixel box)."""
    out = []
    for label in sorted((garbage_root / "labels" / split).glob("*.txt")):
        image = garbage_root / "images" / split / f"{label.stem}.jpg"
        for cls, box in read_yolo_boxes(label, (640, 640)):
            w, h = box[2] - box[0], box[3] - box[1]
            if cls == 0 and w >= 60 and h >= 60 and w >= 0.8 * h:  # pile-shaped, not a tall bin
                out.append((image, box))
    return out


def _negatives(garbage_root: Path, split: str) -> list[Path]:
    """Photos without garbage that look like streets: no bin box covering a quarter of them."""
    out = []
    for image in sorted((garbage_root / "images" / split).glob("*.jpg")):
        label = garbage_root / "labels" / split / f"{image.stem}.txt"
        if label.is_file() and label.read_text(encoding="utf-8").strip():
            continue
        boxes = _original_boxes(garbage_root, split, image.stem)
        if any((b[2] - b[0]) * (b[3] - b[1]) >= 0.25 * 640 * 640 for b in boxes):
            continue
        small = cv2.resize(read_image(image), (64, 64), interpolation=cv2.INTER_AREA)
        if float((small.min(axis=2) > 225).mean()) < 0.2:  # not a product shot on white
            out.append(image)
    return out


def _original_boxes(
    garbage_root: Path, split: str, stem: str
) -> list[tuple[float, float, float, float]]:
    """All boxes (garbage, overflow, bins) of a 640x640 photo, from the original 3-class labels."""
    label = garbage_root / "labels_original_3class" / split / f"{stem}.txt"
    return [b for _, b in read_yolo_boxes(label, (640, 640))]


def _cut_garbage(photo: Path, box: Sequence[float]) -> Image:
    img = read_image(photo)
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    return np.asarray(img[y1:y2, x1:x2], dtype=np.uint8)


def _flat_look(rng: np.random.Generator, width_frac: float) -> CoverLook:
    """A look for objects that stand on the ground (no tilt or spin): soft elliptical edge."""
    return CoverLook(
        width_frac=width_frac,
        edge="ellipse",
        feather=float(rng.uniform(0.08, 0.15)),
        margin=0.0,
        rotation_deg=0.0,
        foreshorten=1.0,
        keystone=1.0,
        shear=0.0,
        blur_sigma=float(rng.uniform(0.0, 0.6)),
        light_match=float(rng.uniform(0.2, 0.5)),
        gain=float(rng.uniform(0.9, 1.1)),
        colour=(1.0, 1.0, 1.0),
        shadow=0.0,
        shadow_angle_deg=0.0,
        noise_sigma=0.0,
    )


class _Placed:
    """A pre-rendered object: lit patch, alpha and top-left corner in the frame."""

    def __init__(self, lit: Mask, alpha: Mask, x: int, y: int) -> None:
        self.lit, self.alpha, self.x, self.y = lit, alpha, x, y


def _spot(
    rng: np.random.Generator,
    frame_hw: tuple[int, int],
    patch_hw: tuple[int, int],
    centre: tuple[float, float] | None,
    taken: list[tuple[int, int, int, int]],
) -> tuple[int, int]:
    H, W = frame_hw
    ph, pw = patch_hw
    if ph >= H or pw >= W:
        raise ValueError("object is larger than the frame")
    if centre is not None:
        x = int(np.clip(round(centre[0] * W - pw / 2), 0, W - pw))
        y = int(np.clip(round(centre[1] * H - ph / 2), 0, H - ph))
        return x, y
    y_lo = int(min(H - ph, max(0, 0.45 * H - ph / 2)))
    best: tuple[int, int] = (0, H - ph)
    for _ in range(60):
        x = int(rng.integers(0, W - pw + 1))
        y = int(rng.integers(y_lo, H - ph + 1))
        best = (x, y)
        if all(box_overlap((x, y, x + pw, y + ph), b) <= 0.02 for b in taken):
            break
    return best


def make_scene_video(spec: SceneSpec, out_path: Path, seed: int) -> SceneTruth:
    """Render the scene to ``out_path`` (mp4) and its truth to ``out_path.with_suffix('.json')``."""
    root = datasets_root(spec.datasets)
    garbage_root = root / "street-garbage"
    if not (garbage_root / "images" / spec.split).is_dir():
        raise FileNotFoundError(
            f"shared datasets not found: no {garbage_root / 'images' / spec.split} "
            f"(set {DATASETS_ENV} to the folder that holds street-garbage/ and manhole-crops/)"
        )
    rng = rng_for(seed, "scene", 0)
    negatives = _negatives(garbage_root, spec.split)
    if spec.background is not None:
        background = garbage_root / "images" / spec.split / spec.background
        if not background.is_file():
            raise FileNotFoundError(f"background photo not found: {background}")
    else:
        background = negatives[int(rng.integers(len(negatives)))]
    base, (scale, x0, y0) = _street_frame(background, spec.width, spec.height)
    base_f = base.astype(np.float32)
    hw = (spec.height, spec.width)
    every = list_crops(root / "manhole-crops")
    crops = split_crops(every, spec.crop_seed, groups=near_duplicate_groups(every))[spec.split]
    piles = _garbage_crops(garbage_root, spec.split)
    placed: list[_Placed] = []
    truth: list[TruthObject] = []
    taken: list[tuple[int, int, int, int]] = [
        (
            int(b[0] * scale - x0),
            int(b[1] * scale - y0),
            int(b[2] * scale - x0),
            int(b[3] * scale - y0),
        )
        for b in _original_boxes(garbage_root, spec.split, background.stem)
    ]
    for i, obj in enumerate(spec.objects):
        orng = rng_for(seed, "object", i)
        if obj.kind == "garbage":
            photo, box = piles[int(orng.integers(len(piles)))]
            crop = _cut_garbage(photo, box)
            look = _flat_look(orng, obj.width_frac or float(orng.uniform(0.15, 0.3)))
            source = f"street-garbage/{spec.split}/{photo.name}"
        else:
            pool = [c for c in crops if c.class_name == obj.kind]
            ref = pool[int(orng.integers(len(pool)))]
            crop = read_image(ref.path)
            look = sample_look(orng, (crop.shape[0], crop.shape[1])).model_copy(
                update={
                    "width_frac": obj.width_frac or float(orng.uniform(0.1, 0.22)),
                    "shadow": 0.0,
                    "noise_sigma": 0.0,
                }
            )
            source = f"manhole-crops/{ref.name}"
        patch, alpha = render_cover(crop, look, spec.width)
        x, y = _spot(orng, hw, alpha.shape, obj.centre, taken)
        region = base_f[y : y + alpha.shape[0], x : x + alpha.shape[1]]
        lit = light_patch(region, patch, alpha, look, orng)
        box = solid_box(alpha, x, y)
        taken.append(box)
        placed.append(_Placed(lit, alpha, x, y))
        truth.append(
            TruthObject(
                id=i,
                class_name=obj.kind,
                box=_norm(box, hw),
                appear_s=obj.appear_s,
                disappear_s=obj.disappear_s,
                source=source,
            )
        )
    movers = []
    for j, tr in enumerate(spec.transients):
        trng = rng_for(seed, "transient", j)
        photo, box = piles[int(trng.integers(len(piles)))]
        look = _flat_look(trng, tr.width_frac)
        patch, alpha = render_cover(_cut_garbage(photo, box), look, spec.width)
        y = int(
            np.clip(tr.y_frac * spec.height - alpha.shape[0] / 2, 0, spec.height - alpha.shape[0])
        )
        lit = light_patch(
            base_f[y : y + alpha.shape[0], : alpha.shape[1]], patch, alpha, look, trng
        )
        movers.append((tr, lit, alpha, y))
    tracks: list[list[tuple[float, tuple[float, float, float, float]]]] = [[] for _ in movers]
    writer = cv2.VideoWriter(
        str(out_path), cv2.VideoWriter.fourcc(*"mp4v"), spec.fps, (spec.width, spec.height)
    )
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {out_path}")
    try:
        for k in range(spec.frames):
            t = k / spec.fps
            frame = base_f.copy()
            for obj_truth, p in zip(truth, placed, strict=True):
                if obj_truth.visible_at(t):
                    blend(frame, p.lit, p.alpha, p.x, p.y)
            for m, (tr, lit, alpha, y) in enumerate(movers):
                first = math.ceil(tr.enter_s * spec.fps - 1e-6)
                steps = max(1, round(tr.duration_s * spec.fps))
                if not first <= k < first + steps:
                    continue
                u = (k - first) / steps
                pw = alpha.shape[1]
                span = spec.width - pw
                x = round(u * span) if tr.direction == "left_to_right" else round((1 - u) * span)
                blend(frame, lit, alpha, x, y)
                tracks[m].append((round(t, 4), _norm(solid_box(alpha, x, y), hw)))
            frame *= np.float32(1.0 + spec.drift * math.sin(2 * math.pi * t / spec.drift_period_s))
            if spec.noise_sigma > 0:
                noise = rng_for(seed, "noise", k).normal(0, spec.noise_sigma, frame.shape)
                frame += noise.astype(np.float32)
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    for m in range(len(movers)):
        if tracks[m]:
            truth.append(
                TruthObject(
                    id=len(spec.objects) + m,
                    class_name="transient",
                    box=tracks[m][0][1],
                    appear_s=tracks[m][0][0],
                    disappear_s=round(tracks[m][-1][0] + 1 / spec.fps, 4),
                    source="street-garbage garbage crop (bag)",
                    track=tracks[m],
                )
            )
    result = SceneTruth(
        video=out_path.name,
        width=spec.width,
        height=spec.height,
        fps=spec.fps,
        frames=spec.frames,
        duration_s=spec.duration_s,
        seed=seed,
        background=f"street-garbage/{spec.split}/{background.name}",
        objects=truth,
        spec=spec,
    )
    out_path.with_suffix(".json").write_text(
        json.dumps(json.loads(result.model_dump_json(by_alias=True)), indent=1), encoding="utf-8"
    )
    log.info("wrote scene video %s (%d frames, %d objects)", out_path, spec.frames, len(truth))
    return result


def _norm(box: Sequence[float], hw: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = hw
    return (round(box[0] / w, 5), round(box[1] / h, 5), round(box[2] / w, 5), round(box[3] / h, 5))


def read_truth(path: Path) -> SceneTruth:
    """Load a scene's ground-truth JSON."""
    return SceneTruth.model_validate_json(path.read_text(encoding="utf-8"))


__all__ = [
    "CLASSES",
    "SceneObject",
    "SceneSpec",
    "SceneTruth",
    "TransientObject",
    "TruthObject",
    "make_scene_video",
    "read_truth",
]
