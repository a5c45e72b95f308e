"""Edge agent cost: ultralytics on the .pt, our onnx backend, and the agent with its motion gate
on static street scenes (1 camera, 8 cameras, and 8 cameras at 2 fps in real time).

Run from the repository root::

    python -m bench.edge_agent                               # shipped model, prints the table
    python -m bench.edge_agent --append docs/benchmarks.md   # and appends it there

Rows (a) and (b) run the detector on every frame in this process. Rows (c)-(e) run the real
agent (``EdgeAgent``, dry run: everything but the network) in a child process on street videos
made by ``simulators.scenes`` with no object in them (sensor noise and a slow brightness drift
only), and read the child's own CPU time and resident memory. "Frames watched" are the sampled
frames the agent looked at (each went through the motion gate; the detector ran on those the
gate let through). CPU-seconds count user + system time of all the process's threads.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import typer
import yaml

from bench.machine import cpu_name
from models.ship import CHECKPOINT_HINT, SHIPPED_CHECKPOINT, SHIPPED_MODEL

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO / "runs" / ".cache" / "bench-edge-scenes"
GROUND = {
    "image": [[0.05, 0.98], [0.95, 0.98], [0.75, 0.40], [0.25, 0.40]],
    "geo": [
        {"lat": 39.95622, "lon": 116.41644},
        {"lat": 39.95622, "lon": 116.41656},
        {"lat": 39.9564, "lon": 116.4166},
        {"lat": 39.9564, "lon": 116.4164},
    ],
}

app = typer.Typer(add_completion=False)


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    """Resident memory of this process now, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def other_work() -> str:
    """What else runs on the machine: the load average and any training process."""
    names = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(k in cmd for k in ("gridwatch train", "models.cli train", "yolo train")):
            names.append(f"pid {proc.name}: {cmd.strip()[:80]}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load average {load}" + (f"; also running: {'; '.join(names)}" if names else "")


def make_scenes(n: int, seconds: float) -> list[Path]:
    """``n`` static street videos (no objects; noise and brightness drift), cached."""
    from simulators.scenes import SceneSpec, make_scene_video

    SCENES.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in range(1, n + 1):
        path = SCENES / f"static-{seed}-{int(seconds)}s.mp4"
        if not path.is_file():
            spec = SceneSpec(fps=10, duration_s=seconds, objects=[], transients=[])
            make_scene_video(spec, path, seed=seed)
        out.append(path)
    return out


def agent_yaml(folder: Path, model: Path, videos: list[Path], realtime: bool) -> Path:
    doc: dict[str, Any] = {
        "device_id": "bench-edge",
        "broker": {"password": "unused-in-dry-run"},
        "detector": {"type": "onnx", "model": str(model)},
        "status_interval_s": 3600,
        "cameras": [
            {
                "id": f"cam-{i + 1}",
                "name": f"static {i + 1}",
                "source": str(v),
                "sample_fps": 2,
                "loop": True,
                "realtime": realtime,
                "position": {"lat": 39.9563, "lon": 116.4165},
                "ground_plane": GROUND,
            }
            for i, v in enumerate(videos)
        ],
    }
    path = folder / f"edge-{len(videos)}-{'rt' if realtime else 'fast'}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def agent_run(config: Path, seconds: float, warmup: float = 5.0) -> None:
    """Child process: run the agent, print one JSON line with its counters and costs."""
    from edge.agent import EdgeAgent
    from edge.settings import load_edge_settings

    agent = EdgeAgent(load_edge_settings(config), dry_run=True, out=StringIO())
    agent.start()
    time.sleep(warmup)

    def totals() -> tuple[int, int]:
        snaps = [w.snapshot().counters for w in agent.workers.values()]
        return sum(c.samples for c in snaps), sum(c.checks for c in snaps)

    s0, c0 = totals()
    cpu0, t0, busy0 = cpu_seconds(), time.monotonic(), machine_busy()
    peak = rss_mb()
    end = t0 + seconds
    while time.monotonic() < end:
        time.sleep(0.5)
        peak = max(peak, rss_mb())
    s1, c1 = totals()
    cpu1, t1, busy1 = cpu_seconds(), time.monotonic(), machine_busy()
    agent.stop()
    wall = t1 - t0
    cores = os.cpu_count() or 1
    machine = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1) * 100
    print(
        json.dumps(
            {
                "cameras": len(agent.workers),
                "samples": s1 - s0,
                "checks": c1 - c0,
                "cpu_s": cpu1 - cpu0,
                "wall_s": wall,
                "rss_mb": rss_mb(),
                "peak_rss_mb": peak,
                "cores": cores,
                "machine_busy_pct": machine,
            }
        )
    )


def run_child(config: Path, seconds: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.edge_agent",
        "--child",
        str(config),
        "--seconds",
        str(seconds),
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "GW_LOG_FORMAT": "console", "GW_LOG_LEVEL": "WARNING"},
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def detector_rate(fn: Any, frames: list[np.ndarray], runs: int) -> tuple[float, float]:
    """(frames per wall second, frames per CPU-second) running ``fn`` on every frame."""
    for f in frames[:3]:
        fn(f)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for i in range(runs):
        fn(frames[i % len(frames)])
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return runs / wall, runs / cpu


@app.command()
def main(
    onnx: Annotated[
        Path, typer.Option(help="the ONNX model; default: the shipped one")
    ] = SHIPPED_MODEL,
    pt: Annotated[
        Path, typer.Option(help="the .pt checkpoint it was exported from")
    ] = SHIPPED_CHECKPOINT,
    seconds: Annotated[float, typer.Option(min=5, help="measured seconds per agent run")] = 40,
    runs: Annotated[int, typer.Option(min=10, help="frames per detector row")] = 60,
    append: Annotated[Path | None, typer.Option(help="Markdown file to append to")] = None,
    child: Annotated[Path | None, typer.Option(hidden=True, help="internal: run one agent")] = None,
) -> None:
    """Print the table (and append it to a Markdown file with --append)."""
    if child is not None:
        agent_run(child, seconds)
        return
    if not onnx.is_file():
        raise typer.BadParameter(f"no model at {onnx}")
    if not pt.is_file():
        raise typer.BadParameter(
            f"no checkpoint at {pt} (row (a) is ultralytics' predict on it): {CHECKPOINT_HINT}",
            param_hint="--pt",
        )
    started = datetime.now(UTC)
    context_before = other_work()
    videos = make_scenes(8, 60)
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        folder = Path(tmp)
        one = run_child(agent_yaml(folder, onnx, videos[:1], realtime=False), seconds)
        eight = run_child(agent_yaml(folder, onnx, videos, realtime=False), seconds)
        live = run_child(agent_yaml(folder, onnx, videos, realtime=True), seconds)
    frames = []
    for v in videos:
        cap = cv2.VideoCapture(str(v))
        for _ in range(5):
            ok, f = cap.read()
            if ok:
                frames.append(f)
            for _ in range(40):
                cap.grab()
        cap.release()

    from edge.detect.onnx import OnnxDetector, OnnxDetectorConfig

    det = OnnxDetector(OnnxDetectorConfig(model=onnx))
    imgsz = det.input_size[0]
    b_fps, b_cpu = detector_rate(det.detect, frames, runs)
    spinning = OnnxDetector(OnnxDetectorConfig(model=onnx, allow_spinning=True))
    b2_fps, b2_cpu = detector_rate(spinning.detect, frames, runs)
    rect = OnnxDetector(OnnxDetectorConfig(model=onnx, rect=True))
    rect_hw = rect.input_hw_for((frames[0].shape[0], frames[0].shape[1]))
    b3_fps, b3_cpu = detector_rate(rect.detect, frames, runs)
    from models.offline import configure_offline

    configure_offline()
    from ultralytics import YOLO  # type: ignore[attr-defined]

    model = YOLO(str(pt), task="detect")

    def predict(frame: np.ndarray) -> object:
        return model.predict(frame, imgsz=imgsz, conf=0.25, device="cpu", verbose=False)

    a_fps, a_cpu = detector_rate(predict, frames, runs)
    a_name = f"(a) ultralytics predict, {pt.name} (torch)"
    context_after = other_work()

    def agent_row(name: str, r: dict[str, Any]) -> tuple[str, float, float, str, str]:
        fps = r["samples"] / r["wall_s"]
        per_cpu = r["samples"] / max(r["cpu_s"], 1e-9)
        cpu_pct = r["cpu_s"] / r["wall_s"] * 100
        n = r["cameras"]
        share = (
            f"{cpu_pct:.0f}% of one core ({cpu_pct / r['cores']:.0f}% of the machine), "
            f"{cpu_pct / n:.1f}% per camera"
        )
        mem = f"{r['peak_rss_mb']:.0f} MiB ({r['peak_rss_mb'] / n:.0f} per camera)"
        gated = 1 - r["checks"] / max(r["samples"], 1)
        return (
            f"{name}; detector ran on {100 * (1 - gated):.1f}% of frames",
            fps,
            per_cpu,
            share,
            mem,
        )

    rows: list[tuple[str, float, float, str, str]] = [
        (a_name, a_fps, a_cpu, "all cores", "-"),
        (f"(b) gridwatch onnx backend, {onnx.name}", b_fps, b_cpu, "all cores", "-"),
        (
            "(b2) the same with onnxruntime's threads spinning (allow_spinning: true)",
            b2_fps,
            b2_cpu,
            "all cores",
            "-",
        ),
        (
            f"(b3) the same with rect: true (input {rect_hw[1]}x{rect_hw[0]}; off by default, "
            "see models/MODEL_CARD.md)",
            b3_fps,
            b3_cpu,
            "all cores",
            "-",
        ),
        agent_row("(c) agent, 1 static camera, as fast as it can", one),
        agent_row("(d) agent, 8 static cameras, as fast as it can", eight),
        agent_row("(e) agent, 8 static cameras at 2 fps each, real time", live),
    ]
    base = a_cpu
    lines = [
        f"Model {onnx.name} at {imgsz}x{imgsz}; {cpu_name()}, {os.cpu_count()} cores; "
        f"{started:%Y-%m-%d %H:%M} UTC. Agent rows: {seconds:.0f} s each after 5 s warm-up, "
        "640x360 10 fps videos sampled at 2 fps, motion gate on, static check every 30 s.",
        f"Machine before: {context_before}. After: {context_after}.",
        f"Machine busy during (e): {live['machine_busy_pct']:.0f}% of all cores (agent and "
        "everything else).",
        "",
        "| run | frames/s | frames per CPU-second | vs (a) per CPU-second | CPU | memory (RSS) |",
        "|---|---|---|---|---|---|",
    ]
    for name, fps, per_cpu, share, mem in rows:
        ratio = f"{per_cpu / base:.1f}x"
        lines.append(f"| {name} | {fps:.1f} | {per_cpu:.1f} | {ratio} | {share} | {mem} |")
    speedup = b_fps / a_fps
    live_pct = live["cpu_s"] / live["wall_s"] * 100 / live["cores"]
    lines += [
        "",
        f"Targets: (b) >= 1.8x (a) in frames/s: {speedup:.2f}x ((b2): {b2_fps / a_fps:.2f}x, "
        f"(b3): {b3_fps / a_fps:.2f}x). "
        f"(c) >= 10x (a) in frames per CPU-second: {one['samples'] / one['cpu_s'] / base:.1f}x. "
        f"(e) under 70% CPU and 1.5 GB: {live_pct:.0f}% of the machine, "
        f"{live['peak_rss_mb']:.0f} MiB.",
    ]
    table = "\n".join(lines)
    print(table)
    if append is not None:
        append.parent.mkdir(parents=True, exist_ok=True)
        header = "" if append.is_file() else "# Benchmarks\n\nOne section per benchmark.\n"
        with append.open("a", encoding="utf-8") as out:
            out.write(f"{header}\n## Edge agent (bench/edge_agent.py)\n\n{table}\n")


if __name__ == "__main__":
    app()
