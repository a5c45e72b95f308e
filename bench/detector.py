"""Detector speed: ultralytics predict on the .pt against our onnxruntime backend, same images.

Run from the repository root::

    python -m bench.detector                       # shipped ONNX vs ultralytics on its .pt and .onnx
    python -m bench.detector --onnx a.onnx --onnx b.onnx --append docs/benchmarks.md

Prints a table (median latency per frame, FPS, ratio to the .pt) and, with ``--append``, adds it
with the machine and date to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import typer

from bench.machine import cpu_name
from models.ship import CHECKPOINT_HINT, SHIPPED_CHECKPOINT, SHIPPED_MODEL

app = typer.Typer(add_completion=False)


def time_it(fn: Callable[[np.ndarray], object], frames: list[np.ndarray], runs: int) -> list[float]:
    for f in frames[:5]:
        fn(f)
    out = []
    for i in range(runs):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        fn(frame)
        out.append((time.perf_counter() - t0) * 1000)
    return out


@app.command()
def main(
    onnx: Annotated[
        list[Path] | None, typer.Option(help="ONNX model(s); default: shipped.")
    ] = None,
    pt: Annotated[
        Path, typer.Option(help="The .pt checkpoint to compare with.")
    ] = SHIPPED_CHECKPOINT,
    images: Annotated[
        Path | None, typer.Option(help="Folder of images; default street-garbage test.")
    ] = None,
    runs: Annotated[int, typer.Option(min=10, help="Timed frames per backend.")] = 100,
    append: Annotated[
        Path | None, typer.Option(help="Markdown file to append the table to.")
    ] = None,
) -> None:
    """Median single-frame latency and FPS for each backend at the model's input size."""
    from models.offline import configure_offline
    from simulators.composite import datasets_root

    configure_offline()
    from edge.detect.onnx import OnnxDetector, OnnxDetectorConfig

    if not pt.is_file():
        raise typer.BadParameter(
            f"no checkpoint at {pt} (the baseline is ultralytics' predict on it): {CHECKPOINT_HINT}",
            param_hint="--pt",
        )
    folder = images or datasets_root() / "street-garbage" / "images" / "test"
    read = [cv2.imread(str(p)) for p in sorted(folder.glob("*.jpg"))[:40]]
    frames: list[np.ndarray] = [f for f in read if f is not None]
    if not frames:
        raise typer.BadParameter(f"no .jpg images in {folder}")
    models = onnx or [SHIPPED_MODEL]
    rows: list[tuple[str, float]] = []
    size = None
    for path in models:
        det = OnnxDetector(OnnxDetectorConfig(model=path))
        size = det.input_size[0]
        rows.append(
            (
                f"gridwatch onnx backend: {path.name} ({det.metadata.precision})",
                statistics.median(time_it(det.detect, frames, runs)),
            )
        )
    imgsz = size or 320
    from ultralytics import YOLO  # type: ignore[attr-defined]

    cv2.setNumThreads(0)
    plain = []
    for path, what in ((pt, "torch, fp32"), (models[0], "its onnxruntime path")):
        model = YOLO(str(path), task="detect")

        def predict(frame: np.ndarray, model: Any = model) -> object:
            return model.predict(frame, imgsz=imgsz, conf=0.25, device="cpu", verbose=False)

        ms = statistics.median(time_it(predict, frames, runs))
        plain.append((f"ultralytics predict: {path.name} ({what})", ms))
    rows = plain + rows
    base = rows[0][1]
    threads = os.cpu_count()
    lines = [
        f"Detector at {imgsz}x{imgsz}, single frame, median of {runs} after 5 warm-up, "
        f"{len(frames)} street-garbage test images; {cpu_name()}, {threads} cores, "
        f"onnxruntime intra-op threads = {threads}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| backend | ms/frame | FPS | speed vs first row |",
        "|---|---|---|---|",
    ]
    for name, ms in rows:
        lines.append(f"| {name} | {ms:.1f} | {1000 / ms:.1f} | {base / ms:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if append is not None:
        append.parent.mkdir(parents=True, exist_ok=True)
        header = "" if append.is_file() else "# Benchmarks\n\nOne section per benchmark.\n"
        with append.open("a", encoding="utf-8") as f:
            f.write(f"{header}\n## Detector speed (bench/detector.py)\n\n{table}\n")


if __name__ == "__main__":
    app()
