"""Smoke training offline, export with metadata, and ONNX/ultralytics parity."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.detect.onnx import OnnxDetector, OnnxDetectorConfig
from models.cli import app
from simulators.composite import datasets_root

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "weights" / "gridwatch-det.onnx"


def test_smoke_train_writes_a_run_folder(smoke_run: Path) -> None:
    assert (smoke_run / "weights" / "best.pt").is_file()
    record = json.loads((smoke_run / "gridwatch_run.json").read_text())
    assert record["recipe"]["name"] == "smoke" and record["device"] in ("cpu", "0")
    assert record["train_seconds"] < 60
    assert (smoke_run / "val_per_class.jsonl").read_text().strip()
    assert os.environ["YOLO_OFFLINE"] == "1"


def test_export_fp32_metadata_and_raw_parity(smoke_run: Path, tmp_path: Path) -> None:
    """The exported ONNX, run by the edge backend, gives torch's raw output on real images."""
    import torch

    from models.evaluate import TorchModel

    out = tmp_path / "smoke.onnx"
    result = CliRunner().invoke(
        app,
        [
            "export",
            "--weights",
            str(smoke_run / "weights" / "best.pt"),
            "--out",
            str(out),
            "--precision",
            "fp32",
            "--imgsz",
            "64",
            "--version",
            "smoke-1",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["classes"] == ["garbage", "manhole_missing", "manhole_broken", "manhole_ok"]
    assert meta["input_size"] == [64, 64] and meta["model_version"] == "smoke-1"
    assert set(meta["thresholds"]) == set(meta["classes"]) and meta["commit"]
    onnx_model = OnnxDetector(OnnxDetectorConfig(model=out, threads=1))
    torch_model = TorchModel(smoke_run / "weights" / "best.pt", imgsz=64)
    images = sorted((datasets_root() / "street-garbage" / "images" / "val").glob("*.jpg"))[:3]
    for path in images:
        frame = cv2.imread(str(path))
        np.testing.assert_allclose(
            onnx_model.raw_output(frame), torch_model.raw_output(frame), rtol=1e-3, atol=1e-3
        )
    assert torch.get_num_threads() >= 1


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model yet")
@pytest.mark.parametrize("rect", [False, True])
def test_shipped_onnx_gives_ultralytics_boxes(rect: bool) -> None:
    """Our letterbox/decode/NMS on the shipped ONNX = ultralytics' predictor on the same file:
    at the square input (our default; ultralytics' ``rect=False``) and at the smallest
    stride-32 input (our ``rect``; ultralytics' default for a model of any input size)."""
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    root = datasets_root()
    if not root.is_dir():
        pytest.skip("shared datasets not present")
    images = sorted((root / "street-garbage" / "images" / "test").glob("*.jpg"))[:6]
    images += sorted((root / "manhole-crops" / "lose").glob("*.jpg"))[:3]  # not square
    ours = OnnxDetector(OnnxDetectorConfig(model=SHIPPED, conf=0.05, rect=rect))
    theirs = YOLO(str(SHIPPED), task="detect")
    compared = 0
    for path in images:
        frame = cv2.imread(str(path))
        mine = ours.detect(frame)
        ref = theirs.predict(
            frame, conf=0.05, iou=ours.iou, imgsz=ours.input_size[0], rect=rect, verbose=False
        )[0].boxes
        assert len(mine) == len(ref), path
        for d, box, conf, cls in zip(
            mine, ref.xyxy.numpy(), ref.conf.numpy(), ref.cls.numpy(), strict=True
        ):
            assert d.class_id == int(cls)
            assert np.abs(np.array(d.xyxy) - box).max() <= 1.0
            assert abs(d.confidence - float(conf)) <= 1e-3
            compared += 1
    assert compared > 0


def test_smoke_train_cli_help_runs_offline() -> None:
    t0 = time.monotonic()
    for command in ("train", "evaluate", "export"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "--" in result.output
    assert time.monotonic() - t0 < 30
