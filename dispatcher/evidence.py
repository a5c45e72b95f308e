"""Evidence images (snapshots, crops, after-photos): checked, size-bounded, stored by content hash."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin
from sqlalchemy import Connection, insert

from dispatcher.store.schema import evidence

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 40_000_000
# Each accepted format's PIL image class, opened directly rather than through ``Image.open``:
# that name can be replaced by another library in the process (ultralytics swaps in a version
# that tries to install a HEIF plugin when Pillow does not know a file), and the decoder of
# evidence must not depend on what else was imported.
OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
}
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


def sniff_format(data: bytes) -> str | None:
    """The image format named by the file's first bytes (its signature), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_image(data: bytes) -> tuple[int, int, str]:
    """Validate an image without decoding its pixels: size, format and dimensions."""
    if not data:
        raise BadImage("empty image")
    if len(data) > MAX_IMAGE_BYTES:
        raise BadImage(f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    fmt = sniff_format(data)
    if fmt is None:
        raise BadImage(f"not a readable image: not JPEG, PNG or WEBP (it starts with {data[:8]!r})")
    try:
        with OPENERS[fmt](io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > MAX_PIXELS or w <= 0 or h <= 0:
                raise BadImage(f"image is {w}x{h} pixels; the limit is {MAX_PIXELS} pixels")
            img.verify()
    except BadImage:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadImage(f"not a readable image: {fmt}: {exc}") from exc
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


def record(
    conn: Connection,
    stored: StoredImage,
    kind: EvidenceKind,
    at: datetime,
    ticket_id: int | None = None,
) -> int:
    """The evidence row of a stored image (of a ticket, or of an incident's event); its id."""
    return int(
        conn.execute(
            insert(evidence)
            .values(
                kind=kind,
                path=stored.path,
                sha256=stored.sha256,
                bytes=stored.size,
                ticket_id=ticket_id,
                created_at=at,
            )
            .returning(evidence.c.id)
        ).scalar_one()
    )
