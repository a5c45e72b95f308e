"""Cross-check our evaluation against ultralytics' own ``val`` on the same model and data.

``python -m models.crosscheck --model M --data D --split S`` runs ``gridwatch evaluate``'s
code and ultralytics' ``val`` on the same images and prints AP50 and AP50-95 per class from
both, and their difference; it exits 1 where a difference exceeds ``--tolerance``.

ultralytics writes a ``labels/<split>.cache`` beside the labels it reads, and rewrites corrupt
JPEGs in place, so it never sees the source folder: ``mirror_yolo_folder`` builds a data set
in a temp dir from real folders holding one symlink per image, and label files rewritten to
the model's class ids (ultralytics matches classes by id, we match them by name).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel, ConfigDict

from models.evaluate import VAL_CONF, VAL_IOU, VAL_MAX_DET, RawModel, evaluate, load_model
from models.offline import configure_offline
from models.yolo_data import YoloFolder, class_key, load_yolo_folder

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.01


def mirror_yolo_folder(
    src: Path | YoloFolder,
    dst: Path,
    split: str,
    model_classes: tuple[str, ...] | None = None,
    limit: int | None = None,
) -> Path:
    """A YOLO data set in ``dst`` (which must not exist or be empty) with ``src``'s ``split``
    as ``images/<split>``: real folders, one symlink per image, label files rewritten with the
    class ids of ``model_classes`` (matched by name; rows of classes the model lacks are left
    out; ids the data does not define stay invalid). Returns its data.yaml (train = val =
    that split). ``limit`` keeps the first images only. Nothing is written under ``src``."""
    folder = src if isinstance(src, YoloFolder) else load_yolo_folder(src)
    names = model_classes or folder.names
    index = {class_key(n): i for i, n in enumerate(names)}
    remap = {i: index.get(class_key(n)) for i, n in enumerate(folder.names)}
    images_dir = dst / "images" / split
    labels_dir = dst / "labels" / split
    images_dir.mkdir(parents=True, exist_ok=False)
    labels_dir.mkdir(parents=True, exist_ok=False)
    images = folder.images(split)
    for i, image in enumerate(images[:limit] if limit else images):
        stem = f"{i:06d}_{image.name.rsplit('.', 1)[0]}"
        os.symlink(image.resolve(), images_dir / f"{stem}.{image.name.rsplit('.', 1)[-1]}")
        label = folder.label_path(image, split)
        if label.is_file():
            text = label.read_text(encoding="utf-8-sig")
            lines = [_remap_line(line, remap, len(names)) for line in text.splitlines()]
            (labels_dir / f"{stem}.txt").write_text(
                "".join(f"{x}\n" for x in lines if x is not None), encoding="utf-8"
            )
    doc = {
        "path": str(dst),
        "train": f"images/{split}",
        "val": f"images/{split}",
        "names": dict(enumerate(names)),
    }
    out = dst / "data.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


def _remap_line(line: str, remap: dict[int, int | None], nc: int) -> str | None:
    """One label row with its class id in the model's numbering; None to leave it out.
    A token that is not a class id of the data is kept invalid, so ultralytics rejects the
    file as our reader does."""
    parts = line.split()
    if not parts:
        return None
    try:
        data_id = int(parts[0])
    except ValueError:
        return line
    if data_id not in remap:
        return " ".join([str(nc if data_id >= 0 else data_id), *parts[1:]])
    model_id = remap[data_id]
    return None if model_id is None else " ".join([str(model_id), *parts[1:]])


@contextmanager
def _logger_on_stderr(name: str, quiet: bool) -> Iterator[None]:
    """For the duration, the named logger writes to stderr (ultralytics logs to stdout, where
    the command prints its result), at WARNING when ``quiet``."""
    logger = logging.getLogger(name)
    handlers, level = logger.handlers[:], logger.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def model_imgsz(model: RawModel) -> int:
    """The square input size our evaluation runs the model at."""
    h, w = model.input_size
    if h != w:
        raise ValueError(f"the cross-check needs a square input, the model's is {h}x{w}")
    return h


def ultralytics_val(
    model: Path,
    data: Path,
    split: str = "test",
    imgsz: int = 320,
    *,
    model_classes: tuple[str, ...] | None = None,
    limit: int | None = None,
    quiet: bool = True,
) -> dict[str, dict[str, float]]:
    """Per-class AP50 / AP50-95 as ultralytics' ``val`` reports them (conf 0.001, IoU 0.7,
    square letterbox at ``imgsz`` as the edge runs it), on a mirror of ``data``'s ``split``.
    ultralytics' log goes to stderr, only its warnings when ``quiet``."""
    configure_offline()
    from ultralytics import YOLO  # type: ignore[attr-defined]

    with (
        tempfile.TemporaryDirectory(prefix="gw-uval-") as tmp,
        _logger_on_stderr("ultralytics", quiet),
    ):
        yaml_path = mirror_yolo_folder(data, Path(tmp) / "data", split, model_classes, limit)
        metrics: Any = YOLO(str(model), task="detect").val(
            data=str(yaml_path),
            split="val",
            imgsz=imgsz,
            batch=1,
            rect=False,  # the edge letterboxes to a square; a .pt would get rect batches
            conf=VAL_CONF,
            iou=VAL_IOU,
            max_det=VAL_MAX_DET,
            device="cpu",
            plots=False,
            save_json=False,
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


class ClassCheck(BaseModel):
    """One class: our figures and ultralytics' on the same images."""

    model_config = ConfigDict(extra="forbid")

    support: int
    ap50: float | None
    ap50_95: float | None
    ultralytics_ap50: float | None
    ultralytics_ap50_95: float | None

    @property
    def difference(self) -> float | None:
        """The larger absolute difference of the two figures (None when one is missing)."""
        pairs = [(self.ap50, self.ultralytics_ap50), (self.ap50_95, self.ultralytics_ap50_95)]
        if any(a is None or b is None for a, b in pairs):
            return None
        return max(abs(a - b) for a, b in pairs if a is not None and b is not None)


class CrossCheck(BaseModel):
    """The cross-check of one model on one split."""

    model_config = ConfigDict(extra="forbid")

    model: str
    data: str
    split: str
    images: int
    imgsz: int
    classes: dict[str, ClassCheck]

    def agrees(self, tolerance: float = DEFAULT_TOLERANCE) -> bool:
        """Every class with objects has both figures within ``tolerance``."""
        checked = [c for c in self.classes.values() if c.support]
        return bool(checked) and all(
            (d := c.difference) is not None and d <= tolerance for c in checked
        )


def crosscheck(
    model: Path,
    data: Path,
    split: str = "test",
    *,
    imgsz: int | None = None,
    limit: int | None = None,
) -> CrossCheck:
    """Our evaluation and ultralytics' ``val`` on the same model and images (ultralytics' log
    on stderr, warnings only)."""
    configure_offline()
    with contextlib.redirect_stdout(sys.stderr):  # its first import may print a settings notice
        importlib.import_module("ultralytics")  # sets its logger up, redirected below
    with (
        _logger_on_stderr("ultralytics", quiet=True),
        tempfile.TemporaryDirectory(prefix="gw-xcheck-") as tmp,
    ):
        ours_model = load_model(model, imgsz=imgsz if model.suffix == ".pt" else None)
        size = model_imgsz(ours_model)
        # Both sides read the same mirror, so both see exactly the same images.
        mirror = mirror_yolo_folder(data, Path(tmp) / "data", split, ours_model.classes, limit)
        folder = load_yolo_folder(mirror)
        report = evaluate(ours_model, folder, "val", model_name=str(model))
        theirs = ultralytics_val(model, mirror, "val", size, model_classes=ours_model.classes)
    classes = {
        name: ClassCheck(
            support=c.support,
            ap50=c.ap50,
            ap50_95=c.ap50_95,
            ultralytics_ap50=theirs.get(name, {}).get("ap50"),
            ultralytics_ap50_95=theirs.get(name, {}).get("ap50_95"),
        )
        for name, c in report.classes.items()
    }
    return CrossCheck(
        model=str(model),
        data=str(data),
        split=split,
        images=report.images,
        imgsz=size,
        classes=classes,
    )


def render(check: CrossCheck) -> str:
    """A table of both figures per class."""

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [
        f"model {check.model} at {check.imgsz}px, data {check.data} split {check.split}: "
        f"{check.images} images",
        f"{'class':<18}{'support':>8}{'AP50':>9}{'ultra':>9}{'AP50-95':>9}{'ultra':>9}{'diff':>9}",
    ]
    for name, c in check.classes.items():
        lines.append(
            f"{name:<18}{c.support:>8}{fmt(c.ap50):>9}{fmt(c.ultralytics_ap50):>9}"
            f"{fmt(c.ap50_95):>9}{fmt(c.ultralytics_ap50_95):>9}{fmt(c.difference):>9}"
        )
    return "\n".join(lines)


app = typer.Typer(
    help="Cross-check gridwatch evaluate against ultralytics' val.", add_completion=False
)


@app.command()
def main(
    model: Annotated[
        Path,
        typer.Option(help="Model file: .pt, or .onnx exported by ultralytics (gridwatch export)."),
    ],
    data: Annotated[Path, typer.Option(help="YOLO data set: its folder or its data.yaml.")],
    split: Annotated[str, typer.Option(help="Which split (the data.yaml key).")] = "test",
    imgsz: Annotated[
        int | None, typer.Option(min=32, help="Input size for a .pt (ONNX files fix their own).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N images of the split.")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="Largest AP difference accepted (exit 1 beyond).")
    ] = DEFAULT_TOLERANCE,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """AP50 and AP50-95 per class from `gridwatch evaluate` and from ultralytics' val on the
    same images (through a temp mirror: nothing is written into the data folder)."""
    from config.logs import setup_logging

    setup_logging("WARNING")
    try:
        check = crosscheck(model, data, split, imgsz=imgsz, limit=limit)
    except (OSError, ValueError) as exc:  # ModelLoadError, YoloDataError and the like
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(1) from exc
    ok = check.agrees(tolerance)
    if as_json:
        typer.echo(json.dumps(check.model_dump() | {"agrees": ok, "tolerance": tolerance}))
    else:
        typer.echo(render(check))
        typer.echo(f"{'agree' if ok else 'DISAGREE'} within {tolerance}")
    if not ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
