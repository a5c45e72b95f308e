"""The onnx backend's intra-op threads sleep when idle unless the config lets them spin
(docs/benchmarks.md: spinning threads burn CPU and run slower on shared cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.detect import DetectorConfigError, build_detector, parse_detector_config
from edge.detect.onnx import OnnxDetector, OnnxDetectorConfig
from tests.models.fake_onnx import write_fake_detector


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    return write_fake_detector(
        tmp_path_factory.mktemp("m") / "fake.onnx",
        boxes_xyxy=[(10, 10, 110, 110)],
        scores=[(0.9,)],
        classes=("garbage",),
        input_size=320,
        thresholds={"garbage": 0.5},
    )


def test_spinning_is_off_by_default(fake_model: Path) -> None:
    assert OnnxDetectorConfig(model=fake_model).allow_spinning is False
    det = build_detector({"type": "onnx", "model": str(fake_model), "threads": 2})
    assert isinstance(det, OnnxDetector)
    assert det.spinning is False
    frame = np.full((320, 320, 3), 255, np.uint8)
    assert [d.class_name for d in det.detect(frame)] == ["garbage"]
    det.close()


def test_spinning_can_be_allowed(fake_model: Path) -> None:
    det = build_detector(
        {"type": "onnx", "model": str(fake_model), "threads": 2, "allow_spinning": True}
    )
    assert isinstance(det, OnnxDetector)
    assert det.spinning is True
    det.close()


def test_allow_spinning_must_be_a_boolean(fake_model: Path) -> None:
    with pytest.raises(DetectorConfigError, match="allow_spinning"):
        parse_detector_config({"type": "onnx", "model": str(fake_model), "allow_spinning": "x"})
