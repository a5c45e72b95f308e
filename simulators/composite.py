"""Manhole-cover composites: real cover crops placed into real street scenes, with known boxes.

No box-labelled street dataset of manholes exists here, so detection data is made from
``manhole-crops/`` (240 real photos of single covers, five condition folders) and the real
street photos of ``street-garbage/``:

- ``split_crops`` splits the crops into train/val/test *before compositing*, keeping
  near-duplicate photos (``near_duplicate_groups``) together, so a cover never appears in two
  splits (8 val and 8 test crops per folder by default).
- ``render_cover`` turns a crop into a patch and alpha mask as a street camera would see it:
  a feathered elliptical or rectangular edge, in-plane rotation, a ground-plane perspective warp
  (vertical foreshortening, keystone, shear), scale, blur; ``paste_cover`` blends it into a
  scene with lighting matched to the spot, a colour cast, an optional soft shadow and noise, and
  returns the box of the visible cover (alpha > 0.5) in scene pixels.
- ``composite_scene`` places one or more covers on the lower (ground) part of a scene, away from
  existing labelled objects and from each other; ``full_frame_example`` uses a crop as a whole
  image whose box is the frame.

Everything is deterministic given a seed: each image draws from its own
``numpy.random.default_rng([seed, stream, index])``, so results do not depend on order.
The datasets root defaults to ``../shared/datasets`` next to the repository, or ``GW_DATASETS``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_ENV = "GW_DATASETS"

# The detector's class map (ids are the positions).
CLASSES: tuple[str, ...] = ("garbage", "manhole_missing", "manhole_broken", "manhole_ok")
MANHOLE_CLASSES: tuple[str, ...] = CLASSES[1:]
# manhole-crops folder -> detector class (see the dataset README).
CROP_FOLDER_CLASS: dict[str, str] = {
    "lose": "manhole_missing",
    "uncovered": "manhole_missing",
    "broke": "manhole_broken",
    "circle": "manhole_broken",
    "good": "manhole_ok",
}
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

Image = NDArray[np.uint8]
Mask = NDArray[np.float32]


def datasets_root(root: Path | str | None = None) -> Path:
    """The datasets folder: ``root``, else ``$GW_DATASETS``, else ``<repo>/../shared/datasets``."""
    if root is not None:
        return Path(root).expanduser().resolve()
    env = os.environ.get(DATASETS_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT / ".." / "shared" / "datasets").resolve()


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    """An independent random stream per (seed, purpose, item), stable across runs and orders."""
    tag = int.from_bytes(stream.encode("utf-8")[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng([seed, tag, index])


@dataclass(frozen=True, slots=True)
class CropRef:
    """One manhole crop file and the detector class it stands for."""

    path: Path
    folder: str
    class_name: str

    @property
    def name(self) -> str:
        """``folder/file`` – unique within manhole-crops."""
        return f"{self.folder}/{self.path.name}"


def list_crops(crops_root: Path) -> list[CropRef]:
    """All crops under ``crops_root/<folder>/`` for the known condition folders, sorted."""
    crops: list[CropRef] = []
    for folder, cls in sorted(CROP_FOLDER_CLASS.items()):
        d = crops_root / folder
        if not d.is_dir():
            raise FileNotFoundError(f"manhole crops folder missing: {d}")
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        crops.extend(CropRef(path=p, folder=folder, class_name=cls) for p in files)
    return crops


# Two crops whose 32x32 grey thumbnails correlate above this are the same photo (re-encoded,
# re-cropped or re-filed): measured on manhole-crops, such pairs score 0.93-1.00 and the next
# pair 0.88.
NEAR_DUPLICATE = 0.9


def near_duplicate_groups(
    crops: Sequence[CropRef], threshold: float = NEAR_DUPLICATE
) -> dict[str, str]:
    """Crop name -> its group's name (the group's first crop name, sorted): crops linked by a
    chain of near-duplicate pairs form one group, so that a split keeps them together."""
    ordered = sorted(crops, key=lambda c: c.name)
    if not ordered:
        return {}
    thumbs = []
    for c in ordered:
        grey = cv2.cvtColor(read_image(c.path), cv2.COLOR_BGR2GRAY)
        t = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        t = (t - t.mean()) / (t.std() + 1e-6)
        thumbs.append(t / np.sqrt(t.size))
    corr = np.stack(thumbs) @ np.stack(thumbs).T
    parent = list(range(len(ordered)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(corr, k=1) > threshold), strict=True):
        a, b = root(int(i)), root(int(j))
        parent[max(a, b)] = min(a, b)
    return {c.name: ordered[root(i)].name for i, c in enumerate(ordered)}


def split_crops(
    crops: Sequence[CropRef],
    seed: int,
    n_val: int = 8,
    n_test: int = 8,
    groups: Mapping[str, str] | None = None,
) -> dict[Split, list[CropRef]]:
    """Split crops per folder into train/val/test (at least ``n_val`` and ``n_test`` per folder).

    Crops of one group (``groups``: crop name -> group name, e.g. ``near_duplicate_groups``) go
    to the same split; a group that fills val or test past its count makes that split larger.
    """
    out: dict[Split, list[CropRef]] = {s: [] for s in SPLITS}
    for i, folder in enumerate(sorted({c.folder for c in crops})):
        members = sorted((c for c in crops if c.folder == folder), key=lambda c: c.path.name)
        if len(members) <= n_val + n_test:
            raise ValueError(f"folder {folder} has {len(members)} crops, too few to split")
        units: dict[str, list[CropRef]] = {}
        for c in members:
            units.setdefault(groups.get(c.name, c.name) if groups else c.name, []).append(c)
        keys = list(units)
        order = rng_for(seed, "cropsplit", i).permutation(len(keys))
        for k in order:
            unit = units[keys[k]]
            taken_val = sum(c.folder == folder for c in out["val"])
            taken_test = sum(c.folder == folder for c in out["test"])
            split: Split = (
                "val" if taken_val < n_val else "test" if taken_test < n_test else "train"
            )
            out[split].extend(unit)
    return out


class CoverLook(BaseModel):
    """How one cover is drawn into a scene; every field is drawn by ``sample_look``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width_frac: float = Field(gt=0, le=1, description="Cover width as a fraction of scene width.")
    edge: Literal["ellipse", "rect"] = Field(description="Shape of the alpha edge.")
    feather: float = Field(ge=0, le=0.3, description="Edge softness, fraction of the crop size.")
    margin: float = Field(ge=0, le=0.2, description="Alpha edge inset from the crop border.")
    rotation_deg: float = Field(ge=-180, le=180, description="In-plane rotation of the cover.")
    foreshorten: float = Field(gt=0, le=1.2, description="Vertical squash by the camera's tilt.")
    keystone: float = Field(gt=0, le=1, description="Far (top) edge width over near edge width.")
    shear: float = Field(ge=-0.5, le=0.5, description="Top edge shift, fraction of width.")
    blur_sigma: float = Field(ge=0, le=5, description="Gaussian blur of the patch, pixels.")
    light_match: float = Field(ge=0, le=1, description="How far brightness moves to the spot's.")
    gain: float = Field(gt=0, le=3, description="Extra brightness gain.")
    colour: tuple[float, float, float] = Field(description="Per-channel (BGR) gain: colour cast.")
    shadow: float = Field(ge=0, le=1, description="Shadow strength over the spot (0 = none).")
    shadow_angle_deg: float = Field(ge=0, le=360, description="Direction of the shadow's edge.")
    noise_sigma: float = Field(ge=0, le=20, description="Gaussian pixel noise on the patch.")


# Cover width as a fraction of the scene's width: a cover 0.6-0.7 m across, 5-25 m from a
# street camera. The lower end is what a 320 px detector input can still tell apart.
COVER_WIDTH: tuple[float, float] = (0.07, 0.32)


def sample_look(
    rng: np.random.Generator,
    crop_hw: tuple[int, int],
    width_range: tuple[float, float] = COVER_WIDTH,
) -> CoverLook:
    """Random but plausible camera view of a cover; mild tilt for crops already seen obliquely.
    The width is log-uniform in ``width_range`` (fractions of the scene's width)."""
    h, w = crop_hw
    already_oblique = h / max(w, 1) < 0.6
    fore = rng.uniform(0.85, 1.1) if already_oblique else rng.uniform(0.45, 1.0)
    rotation = rng.uniform(-12, 12) if already_oblique else rng.uniform(-180, 180)
    lo, hi = width_range
    return CoverLook(
        width_frac=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
        edge="ellipse" if rng.random() < 0.55 else "rect",
        feather=float(rng.uniform(0.02, 0.08)),
        margin=float(rng.uniform(0.0, 0.04)),
        rotation_deg=float(rotation),
        foreshorten=float(fore),
        keystone=float(rng.uniform(0.8, 1.0)),
        shear=float(rng.uniform(-0.12, 0.12)),
        blur_sigma=float(rng.choice([0.0, rng.uniform(0.3, 1.6)])),
        light_match=float(rng.uniform(0.2, 0.7)),
        gain=float(rng.uniform(0.7, 1.25)),
        colour=(
            float(rng.uniform(0.92, 1.08)),
            float(rng.uniform(0.95, 1.05)),
            float(rng.uniform(0.92, 1.08)),
        ),
        shadow=float(rng.uniform(0.25, 0.55)) if rng.random() < 0.3 else 0.0,
        shadow_angle_deg=float(rng.uniform(0, 360)),
        noise_sigma=float(rng.uniform(0, 4)),
    )


def edge_alpha(h: int, w: int, look: CoverLook) -> Mask:
    """A feathered elliptical or rectangular alpha mask over an ``h`` x ``w`` crop, values 0..1."""
    mask = np.zeros((h, w), dtype=np.uint8)
    mx, my = max(1, round(look.margin * w)), max(1, round(look.margin * h))
    if look.edge == "ellipse":
        cv2.ellipse(
            mask, (w // 2, h // 2), (max(1, w // 2 - mx), max(1, h // 2 - my)), 0, 0, 360, 255, -1
        )
    else:
        cv2.rectangle(mask, (mx, my), (w - 1 - mx, h - 1 - my), 255, -1)
    alpha = mask.astype(np.float32) / 255.0
    sigma = look.feather * min(h, w)
    if sigma > 0.3:
        # feather inwards: 0 on the drawn edge, rising to 1 about ``sigma`` inside it
        alpha = np.clip((cv2.GaussianBlur(alpha, (0, 0), sigma) - 0.5) * 2.0, 0.0, 1.0)
    return np.asarray(alpha, dtype=np.float32)


def render_cover(crop: Image, look: CoverLook, scene_width: int) -> tuple[Mask, Mask]:
    """The crop as seen by the camera: (patch float32 BGR, alpha 0..1), tightly cropped to alpha."""
    h, w = crop.shape[:2]
    rgba = np.dstack([crop.astype(np.float32), edge_alpha(h, w, look)])
    # in-plane rotation on an expanded canvas
    diag = math.ceil(math.hypot(h, w))
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), look.rotation_deg, 1.0)
    rot[0, 2] += (diag - w) / 2
    rot[1, 2] += (diag - h) / 2
    rgba = cv2.warpAffine(rgba, rot, (diag, diag), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    # ground-plane perspective: squash vertically, narrow the far edge, shear
    target_w = max(8.0, look.width_frac * scene_width)
    s = target_w / diag
    out_w = target_w
    out_h = max(6.0, diag * s * look.foreshorten)
    top_w = out_w * look.keystone
    dx = look.shear * out_w
    x0 = (out_w - top_w) / 2 + max(0.0, -dx)
    canvas_w = math.ceil(out_w + abs(dx)) + 2
    canvas_h = math.ceil(out_h) + 2
    src = np.array([[0, 0], [diag, 0], [diag, diag], [0, diag]], dtype=np.float32)
    base = max(0.0, -dx)
    dst = np.array(
        [
            [x0 + dx + 1, 1],
            [x0 + dx + top_w + 1, 1],
            [base + out_w + 1, out_h + 1],
            [base + 1, out_h + 1],
        ],
        dtype=np.float32,
    )
    persp = cv2.getPerspectiveTransform(src, dst)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    warped = cv2.warpPerspective(
        rgba, persp, (canvas_w, canvas_h), flags=interp, borderValue=(0, 0, 0, 0)
    )
    patch = warped[:, :, :3]
    alpha = np.clip(warped[:, :, 3], 0.0, 1.0)
    if look.blur_sigma > 0.05:
        patch = cv2.GaussianBlur(patch, (0, 0), look.blur_sigma)
        alpha = cv2.GaussianBlur(alpha, (0, 0), look.blur_sigma * 0.5)
    ys, xs = np.nonzero(alpha > 0.02)
    if ys.size == 0:
        raise ValueError("cover rendered to nothing")
    sl = np.s_[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return np.asarray(patch[sl], dtype=np.float32), np.asarray(alpha[sl], dtype=np.float32)


def _luma(img: NDArray[Any]) -> float:
    return float(np.mean(img[..., 0] * 0.114 + img[..., 1] * 0.587 + img[..., 2] * 0.299))


def light_patch(
    region: NDArray[np.float32], patch: Mask, alpha: Mask, look: CoverLook, rng: np.random.Generator
) -> NDArray[np.floating[Any]]:
    """The patch with the spot's lighting: brightness moved towards the spot's, a colour cast,
    noise. ``region`` is the scene under the patch (same height and width)."""
    weights = alpha > 0.5
    if not weights.any():
        raise ValueError("cover has no solid area")
    spot, cover = _luma(region), _luma(patch[weights])
    match = (max(spot, 8.0) / max(cover, 8.0)) ** look.light_match
    gain = np.clip(match * look.gain, 0.35, 2.5)
    lit = patch * gain * np.array(look.colour, dtype=np.float32)
    if look.noise_sigma > 0:
        lit = lit + rng.normal(0.0, look.noise_sigma, lit.shape).astype(np.float32)
    return np.asarray(lit)  # float64 (the gain is a float64 scalar); kept for reproducibility


def solid_box(alpha: Mask, x: int, y: int) -> tuple[int, int, int, int]:
    """Extent of alpha > 0.5 placed at ``(x, y)``: ``(x1, y1, x2, y2)``, right/bottom exclusive."""
    ys, xs = np.nonzero(alpha > 0.5)
    if not ys.size:
        raise ValueError("patch has no solid area")
    return (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)


def blend(
    img: NDArray[np.float32], lit: NDArray[np.floating[Any]], alpha: Mask, x: int, y: int
) -> None:
    """Alpha-blend ``lit`` into ``img`` (float, in place) at top-left ``(x, y)``."""
    ph, pw = alpha.shape
    region = img[y : y + ph, x : x + pw]
    if region.shape[:2] != (ph, pw):
        raise ValueError("patch does not fit in the image at this position")
    a = alpha[..., None]
    region[:] = lit * a + region * (1.0 - a)


def paste_cover(
    scene: Image,
    patch: Mask,
    alpha: Mask,
    x: int,
    y: int,
    look: CoverLook,
    rng: np.random.Generator,
) -> tuple[Image, tuple[int, int, int, int]]:
    """Blend a rendered cover at top-left ``(x, y)``; returns the image and the visible box.

    The box is the extent of alpha > 0.5 (where the cover dominates) in scene pixels, as
    ``(x1, y1, x2, y2)`` with exclusive right/bottom edges.
    """
    ph, pw = alpha.shape
    out = scene.astype(np.float32)
    region = out[y : y + ph, x : x + pw]
    if region.shape[:2] != (ph, pw):
        raise ValueError("cover does not fit in the scene at this position")
    blend(out, light_patch(region, patch, alpha, look, rng), alpha, x, y)
    if look.shadow > 0:
        _cast_shadow(out, (x, y, x + pw, y + ph), look)
    return np.clip(out, 0, 255).astype(np.uint8), solid_box(alpha, x, y)


def _cast_shadow(img: NDArray[np.float32], box: tuple[int, int, int, int], look: CoverLook) -> None:
    """Darken a soft half-plane across a region grown around ``box`` (a pole's or tree's shadow)."""
    x1, y1, x2, y2 = box
    gx, gy = (x2 - x1) // 2, (y2 - y1) // 2
    X1, Y1 = max(0, x1 - gx), max(0, y1 - gy)
    X2, Y2 = min(img.shape[1], x2 + gx), min(img.shape[0], y2 + gy)
    hh, ww = Y2 - Y1, X2 - X1
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    t = math.radians(look.shadow_angle_deg)
    d = (xx - ww / 2) * math.cos(t) + (yy - hh / 2) * math.sin(t)
    soft = max(2.0, 0.08 * max(hh, ww))
    inside = 1.0 / (1.0 + np.exp(-d / soft))
    # fade out towards the grown region's border so the shadow has no hard frame
    fy = np.minimum(yy, hh - 1 - yy) / max(1.0, hh * 0.25)
    fx = np.minimum(xx, ww - 1 - xx) / max(1.0, ww * 0.25)
    fade = np.clip(np.minimum(fx, fy), 0.0, 1.0)
    dark = 1.0 - look.shadow * inside * fade
    img[Y1:Y2, X1:X2] *= dark[..., None]


class PlacedObject(BaseModel):
    """One object in a generated image: its class and its box in pixels (x2/y2 exclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    class_name: str = Field(description="Detector class name.")
    box: tuple[int, int, int, int] = Field(description="x1, y1, x2, y2 in image pixels.")
    source: str = Field(default="", description="Where the pixels came from, e.g. a crop file.")


def box_overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection area over the smaller box's area (0 when apart)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / max(small, 1e-9))


def choose_spot(
    rng: np.random.Generator,
    scene_hw: tuple[int, int],
    patch_hw: tuple[int, int],
    avoid: Iterable[Sequence[float]],
    max_overlap: float = 0.05,
    tries: int = 40,
) -> tuple[int, int] | None:
    """A top-left corner on the ground (lower ~60% of the frame) clear of ``avoid`` boxes."""
    H, W = scene_hw
    ph, pw = patch_hw
    if ph >= H or pw >= W:
        return None
    avoid = list(avoid)
    y_lo = int(max(0, min(H - ph, 0.38 * H - ph / 2)))
    for _ in range(tries):
        x = int(rng.integers(0, W - pw + 1))
        y = int(rng.integers(y_lo, H - ph + 1))
        cand = (x, y, x + pw, y + ph)
        if all(box_overlap(cand, b) <= max_overlap for b in avoid):
            return x, y
    return None


def read_image(path: Path) -> Image:
    """Read a colour image or fail with the path in the message."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return np.asarray(img, dtype=np.uint8)


def composite_scene(
    scene: Image,
    crops: Sequence[tuple[CropRef, Image]],
    rng: np.random.Generator,
    avoid: Sequence[Sequence[float]] = (),
    width_range: tuple[float, float] = COVER_WIDTH,
) -> tuple[Image, list[PlacedObject]]:
    """Place each crop into ``scene`` where it fits; returns the image and the placed covers."""
    out = scene
    placed: list[PlacedObject] = []
    taken = [tuple(b) for b in avoid]
    for ref, crop in crops:
        for _attempt in range(4):
            look = sample_look(rng, (crop.shape[0], crop.shape[1]), width_range)
            patch, alpha = render_cover(crop, look, out.shape[1])
            spot = choose_spot(
                rng, (out.shape[0], out.shape[1]), (alpha.shape[0], alpha.shape[1]), taken
            )
            if spot is None:
                continue
            out, box = paste_cover(out, patch, alpha, spot[0], spot[1], look, rng)
            placed.append(PlacedObject(class_name=ref.class_name, box=box, source=ref.name))
            taken.append(box)
            break
        else:
            log.debug("no room for crop %s in this scene", ref.name)
    return out, placed


def full_frame_example(crop: Image, rng: np.random.Generator) -> tuple[Image, PlacedObject]:
    """The crop itself as a whole image (mild lighting change); its box is the frame."""
    gain = float(rng.uniform(0.8, 1.2))
    img = np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    return img, PlacedObject(class_name="", box=(0, 0, w, h))


def close_up_example(
    crop: Image, background: Image, rng: np.random.Generator
) -> tuple[Image, PlacedObject]:
    """The cover seen from close by: rendered like a composite (rotation, tilt, light, blur)
    and filling 55-90 % of a frame cut from ``background`` (a street photo); its box is where
    the cover is. Teaches the cover's condition at sizes a far camera cannot show."""
    look = sample_look(rng, (crop.shape[0], crop.shape[1]), (1.0, 1.0))
    patch, alpha = render_cover(crop, look, crop.shape[1])
    ph, pw = alpha.shape
    W = max(pw + 1, math.ceil(pw / rng.uniform(0.55, 0.9)))
    H = max(ph + 1, math.ceil(ph / rng.uniform(0.55, 0.9)))
    bh, bw = background.shape[:2]
    scale = min(1.0, bw / W, bh / H)  # the largest window of the background's pixels
    win_w, win_h = max(1, int(W * scale)), max(1, int(H * scale))
    bx = int(rng.integers(0, bw - win_w + 1))
    by = int(rng.integers(0, bh - win_h + 1))
    frame = cv2.resize(background[by : by + win_h, bx : bx + win_w], (W, H))
    x = int(rng.integers(0, W - pw + 1))
    y = int(rng.integers(0, H - ph + 1))
    img, box = paste_cover(np.asarray(frame, dtype=np.uint8), patch, alpha, x, y, look, rng)
    return img, PlacedObject(class_name="", box=box)


def yolo_line(class_id: int, box: Sequence[float], hw: tuple[int, int]) -> str:
    """A YOLO label line (class cx cy w h, normalised) for a pixel box."""
    H, W = hw
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = max(0.0, x1), min(float(W), x2)
    y1, y2 = max(0.0, y1), min(float(H), y2)
    return (
        f"{class_id} {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} "
        f"{(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}"
    )


def read_yolo_boxes(
    label_path: Path, hw: tuple[int, int]
) -> list[tuple[int, tuple[float, float, float, float]]]:
    """Boxes of a YOLO label file as (class id, pixel xyxy); a missing file means none."""
    if not label_path.is_file():
        return []
    H, W = hw
    out: list[tuple[int, tuple[float, float, float, float]]] = []
    for line in label_path.read_text(encoding="utf-8").split("\n"):
        parts = line.split()
        if len(parts) != 5:
            continue
        c, cx, cy, bw, bh = int(parts[0]), *(float(v) for v in parts[1:])
        out.append(
            (c, ((cx - bw / 2) * W, (cy - bh / 2) * H, (cx + bw / 2) * W, (cy + bh / 2) * H))
        )
    return out


def draw_boxes(img: Image, objects: Sequence[PlacedObject]) -> Image:
    """A copy of ``img`` with each object's box and class drawn (for visual checks)."""
    out = img.copy()
    palette = {
        "garbage": (0, 200, 255),
        "manhole_missing": (0, 0, 255),
        "manhole_broken": (255, 0, 255),
        "manhole_ok": (0, 255, 0),
    }
    for o in objects:
        x1, y1, x2, y2 = o.box
        colour = palette.get(o.class_name, (255, 255, 255))
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, 1)
        cv2.putText(
            out, o.class_name, (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1
        )
    return out
