"""Evidence images (snapshots, crops, after-photos): checked, size-bounded, stored by content hash."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 40_000_000
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
EvidenceKind = Literal["snapshot", "crop", "after_photo", "verify"]


class BadImage(ValueError):
    """An upload or snapshot that is not an acceptable image; the message says why."""


@dataclass(frozen=True)
class StoredImage:
    path: str
    sha256: str
    size: int
    width: int
    height: int


def check_image(data: bytes) -> tuple[int, int, str]:
    """Validate an image without decoding its pixels: size, format and dimensions."""
    if not data:
        raise BadImage("empty image")
    if len(data) > MAX_IMAGE_BYTES:
        raise BadImage(f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format or "", img.size
            if fmt not in ALLOWED_FORMATS:
                raise BadImage(f"image format {fmt or 'unknown'} is not one of JPEG, PNG, WEBP")
            if w * h > MAX_PIXELS or w <= 0 or h <= 0:
                raise BadImage(f"image is {w}x{h} pixels; the limit is {MAX_PIXELS} pixels")
            img.verify()
    except BadImage:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise BadImage(f"not a readable image: {exc}") from exc
    return w, h, fmt


class EvidenceStore:
    """Files under one folder, named by their SHA-256, so the same bytes are stored once."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, data: bytes, kind: EvidenceKind, at: datetime) -> StoredImage:
        w, h, fmt = check_image(data)
        digest = hashlib.sha256(data).hexdigest()
        ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
        rel = f"{at:%Y/%m/%d}/{kind}-{digest[:32]}.{ext}"
        path = self.root / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        return StoredImage(rel, digest, len(data), w, h)

    def open(self, rel: str) -> Path:
        """Resolve a stored relative path; refuses anything outside the evidence folder."""
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise FileNotFoundError(rel)
        return path
