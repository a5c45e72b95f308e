"""The model's operating thresholds (chosen on val, in its metadata) start tracks for every
class the site does not configure; a configured class keeps its own rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.site import ClassRule
from edge.agent import detector_floor, sidecar_thresholds
from edge.detect.onnx import OnnxDetector, OnnxDetectorConfig
from edge.settings import load_edge_settings, model_default_rule

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "weights" / "gridwatch-det.onnx"
GROUND = """    ground_plane:
      image: [[0.05, 0.98], [0.95, 0.98], [0.75, 0.40], [0.25, 0.40]]
      geo: [{lat: 39.95622, lon: 116.41644}, {lat: 39.95622, lon: 116.41656},
            {lat: 39.9564, lon: 116.4166}, {lat: 39.9564, lon: 116.4164}]"""


def test_the_default_rule_starts_at_the_model_threshold_and_keeps_below_it() -> None:
    assert model_default_rule(None) == ClassRule()
    rule = model_default_rule(0.5)
    assert (rule.min_confidence, rule.keep_confidence) == (0.5, 0.2)
    low = model_default_rule(0.15)
    assert low.min_confidence == 0.15 and low.keep_confidence == pytest.approx(0.09)
    assert low.confirm_hits == ClassRule().confirm_hits


def test_configured_classes_keep_their_rule_others_take_the_model_s(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"""
device_id: edge-01
broker: {{password: "x"}}
classes: {{manhole_ok: {{min_confidence: 0.6, keep_confidence: 0.4}}}}
cameras:
  - id: cam-01
    name: gate
    position: {{lat: 39.9, lon: 116.4}}
    source: a.mp4
    classes: {{garbage: {{min_confidence: 0.5, keep_confidence: 0.3}}}}
{GROUND}
""",
        encoding="utf-8",
    )
    s = load_edge_settings(path).settings
    cam = s.cameras[0]
    assert s.rule_for(cam, "garbage", 0.25).min_confidence == 0.5  # the camera's rule
    assert s.rule_for(cam, "manhole_ok", 0.25).min_confidence == 0.6  # the box's rule
    assert s.rule_for(cam, "manhole_broken", 0.25).min_confidence == 0.25  # the model's
    assert s.rule_for(cam, "manhole_broken").min_confidence == 0.35  # no model threshold
    assert detector_floor(s, s.cameras) == 0.2
    assert detector_floor(s, s.cameras, {"manhole_broken": 0.25}) == pytest.approx(0.15)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model")
def test_the_shipped_model_s_thresholds_reach_the_camera_unloaded_and_loaded() -> None:
    detector = OnnxDetector(OnnxDetectorConfig(model=SHIPPED))
    assert dict(detector.operating_thresholds) == dict(detector.metadata.thresholds)
    assert sidecar_thresholds(str(SHIPPED)) == dict(detector.metadata.thresholds)
    assert set(detector.operating_thresholds) == set(detector.classes)
    assert sidecar_thresholds(str(SHIPPED.with_suffix(".missing.onnx"))) == {}
