"""The ``gridwatch edge`` command as an installer uses it: ``run --dry-run`` and ``probe``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from config.site import Site
from tests.edge.conftest import camera, edge_yaml, image_sequence


def gridwatch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GW_LOG_FORMAT": "console"}
    return subprocess.run(
        [sys.executable, "-m", "simulators.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_dry_run_prints_what_it_would_publish_and_ends_with_its_sources(
    tmp_path: Path, site: Site, fake_model: Path
) -> None:
    frames = image_sequence(tmp_path / "frames", [2 <= i / 2 < 15 for i in range(80)])
    path = edge_yaml(
        tmp_path,
        site,
        1,
        [camera("cam-01", frames, realtime=False)],
        detector={"type": "onnx", "model": str(fake_model), "threads": 1},
    )
    done = gridwatch("edge", "run", str(path), "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    events = [x["message"] for x in lines if x["topic"] == "gw/v1/edge/edge-01/event"]
    assert [(e["state"], e["seq"]) for e in events] == [("new", 1), ("cleared", 2)]
    assert events[0]["snapshot"]["jpeg_b64"].endswith("bytes of JPEG>")
    statuses = [x["message"] for x in lines if x["topic"] == "gw/v1/edge/edge-01/status"]
    assert statuses and statuses[-1]["online"] is False
    assert not (tmp_path / "outbox.sqlite").exists()  # a dry run stores nothing


def test_run_with_a_broken_file_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "edge.yaml"
    bad.write_text("device_id: edge-01\nbroker: {password: x}\nmotion: {widht: 100}\n")
    done = gridwatch("edge", "run", str(bad))
    assert done.returncode == 2
    assert str(bad) in done.stderr and "motion.widht" in done.stderr


def test_probe_prints_timings_and_detections(tmp_path: Path, fake_model: Path) -> None:
    frames = image_sequence(tmp_path / "frames", [True, False, True])
    done = gridwatch("edge", "probe", str(frames), "--model", str(fake_model), "--frames", "3")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "fake-1" in out and "folder" in out
    assert out.count("1 found: garbage 0.5") == 2 and "0 found" in out
    assert "detect median" in out
    missing = gridwatch("edge", "probe", str(tmp_path / "nope.mp4"), "--model", str(fake_model))
    assert missing.returncode == 1 and "video file not found" in missing.stderr
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"nope")
    bad_model = gridwatch("edge", "probe", str(frames), "--model", str(broken))
    assert bad_model.returncode == 1 and "model did not load" in bad_model.stderr


def test_the_agent_loads_no_torch_dispatcher_models_or_simulators() -> None:
    """The edge installs and runs without torch, the dispatcher's web stack or the simulators."""
    code = (
        "import sys, edge.agent, edge.cli, edge.detect.onnx;"
        "bad = [m for m in ('torch', 'ultralytics', 'dispatcher', 'models', 'simulators',"
        " 'fastapi', 'sqlalchemy') if m in sys.modules];"
        "print(bad)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_run_with_a_bad_log_level_or_an_outbox_it_cannot_open_says_so(tmp_path: Path) -> None:
    good = tmp_path / "edge.yaml"
    good.write_text("device_id: edge-01\nbroker: {password: x}\n")
    loud = gridwatch("edge", "run", str(good), "--log-level", "LOUD")
    assert loud.returncode == 2
    assert "--log-level: Unknown level: 'LOUD' (expected DEBUG" in loud.stderr
    not_a_db = tmp_path / "outbox.sqlite"
    not_a_db.write_text("this is not an outbox")
    bad = tmp_path / "bad-outbox.yaml"
    bad.write_text(f"device_id: edge-01\nbroker: {{password: x}}\noutbox: {{path: {not_a_db}}}\n")
    done = gridwatch("edge", "run", str(bad))
    assert done.returncode == 1
    assert f"edge agent did not start: {bad}" in done.stderr
    for run in (loud, done):
        assert "Traceback" not in run.stderr
