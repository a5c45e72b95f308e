"""``gridwatch edge``: run the edge agent from its YAML file, or probe a source with the detector."""

from __future__ import annotations

import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

app = typer.Typer(help="The edge agent: cameras and sensors to events.", no_args_is_help=True)


@app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="the edge YAML file (see docs/edge.md)")],
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="connect to nothing; print each message it would publish"),
    ] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run the agent until Ctrl-C or SIGTERM (with --dry-run: until every source has ended).

    The YAML can be re-read without a restart by the ``reload`` command; the dispatcher's
    retained ``config`` topic is applied live. A bad file or option ends it at once with exit
    status 2 and a message that names it; an outbox that cannot be opened, with status 1.
    """
    import sqlite3

    from config.loader import ConfigError
    from config.logs import setup_logging
    from edge.agent import EdgeAgent
    from edge.settings import load_edge_settings

    try:
        setup_logging(log_level)
    except ValueError as exc:
        typer.echo(f"--log-level: {exc} (expected DEBUG, INFO, WARNING or ERROR)", err=True)
        raise typer.Exit(2) from None
    try:
        loaded = load_edge_settings(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    try:
        agent = EdgeAgent(loaded, dry_run=dry_run)
    except (OSError, sqlite3.Error) as exc:
        # The outbox (``outbox.path`` in the file) cannot be created or is not an outbox.
        typer.echo(f"edge agent did not start: {config}: {exc}", err=True)
        raise typer.Exit(1) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.start()
    try:
        while not stop.wait(0.5):
            if dry_run and agent.finished():
                break
    finally:
        agent.stop()


@app.command("probe")
def probe(
    source: Annotated[str, typer.Argument(help="file, folder, rtsp:// or http:// URL, or usb:N")],
    model: Annotated[
        Path | None, typer.Option(help="model file; default: the shipped ONNX model")
    ] = None,
    backend: Annotated[str, typer.Option("--type", help="detector backend: onnx, ultralytics")] = (
        "onnx"
    ),
    frames: Annotated[int, typer.Option(min=1, help="frames to run the detector on")] = 5,
    sample_fps: Annotated[float, typer.Option(min=0.01, help="frames per second to sample")] = 2,
    conf: Annotated[
        float | None, typer.Option(min=0, max=1, help="confidence threshold for all classes")
    ] = None,
) -> None:
    """Open a source, run the detector on a few frames, print timings and detections."""
    from config.clock import SystemClock
    from edge.detect import build_detector
    from edge.settings import SHIPPED_MODEL
    from edge.sources import SourceEnded, SourceError, describe, open_source

    stop = threading.Event()
    config: dict[str, object] = {"type": backend, "model": str(model or SHIPPED_MODEL)}
    if conf is not None:
        config["conf"] = conf
    started = time.perf_counter()
    try:
        detector = build_detector(config)
    except Exception as exc:
        typer.echo(f"model did not load: {exc}", err=True)
        raise typer.Exit(1) from None
    load_ms = (time.perf_counter() - started) * 1000
    typer.echo(
        f"model {config['model']} ({backend}) version {detector.model_version}: "
        f"classes {', '.join(detector.classes)}, input {detector.input_size}, "
        f"loaded in {load_ms:.0f} ms"
    )
    src = open_source(source, sample_fps, SystemClock(), stop, loop=False, realtime=False)
    started = time.perf_counter()
    try:
        src.open()
    except SourceError as exc:
        typer.echo(f"source did not open: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{describe(source)} {source} opened in {(time.perf_counter() - started) * 1000:.0f} ms"
    )
    read_ms: list[float] = []
    infer_ms: list[float] = []
    try:
        for _ in range(frames):
            t0 = time.perf_counter()
            try:
                frame = src.read()
            except SourceEnded:
                break
            except SourceError as exc:
                typer.echo(f"  frame skipped: {exc}", err=True)
                continue
            t1 = time.perf_counter()
            dets = detector.detect(frame.image)
            t2 = time.perf_counter()
            read_ms.append((t1 - t0) * 1000)
            infer_ms.append((t2 - t1) * 1000)
            h, w = frame.image.shape[:2]
            found = "; ".join(
                f"{d.class_name} {d.confidence:.2f} [{d.x1:.0f},{d.y1:.0f},{d.x2:.0f},{d.y2:.0f}]"
                for d in dets
            )
            typer.echo(
                f"  t={frame.t:7.2f}s {w}x{h} read {read_ms[-1]:6.1f} ms  "
                f"detect {infer_ms[-1]:6.1f} ms  {len(dets)} found{': ' + found if dets else ''}"
            )
    finally:
        src.close()
        detector.close()
    if not infer_ms:
        typer.echo("no frames could be read", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"{len(infer_ms)} frames: read median {statistics.median(read_ms):.1f} ms, "
        f"detect median {statistics.median(infer_ms):.1f} ms "
        f"(min {min(infer_ms):.1f}, max {max(infer_ms):.1f})"
    )


if __name__ == "__main__":
    app(sys.argv[1:])
