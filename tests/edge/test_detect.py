"""edge.detect: letterbox/NMS identical to ultralytics, the backend registry, the onnx backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.detect import DetectorConfigError, build_detector, parse_detector_config
from edge.detect.base import Detection, DetectorConfig, resolve_thresholds
from edge.detect.letterbox import letterbox, rect_input_hw, scale_boxes_to_frame
from edge.detect.metadata import ModelMetadata
from edge.detect.postprocess import non_max_suppression
from tests.models.fake_onnx import write_fake_detector

SHAPES = [(640, 640), (480, 640), (720, 1280), (1080, 1920), (600, 337), (50, 3000), (200, 150)]


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    return write_fake_detector(
        tmp_path_factory.mktemp("m") / "fake.onnx",
        boxes_xyxy=[(10, 10, 110, 110), (12, 12, 112, 112), (200, 40, 300, 140)],
        scores=[(0.9, 0.0), (0.8, 0.0), (0.0, 0.6)],
        classes=("garbage", "manhole_ok"),
        input_size=320,
        thresholds={"garbage": 0.5, "manhole_ok": 0.5},
    )


def test_edge_detect_imports_no_torch_or_ultralytics() -> None:
    code = (
        "import sys, edge.detect, edge.detect.onnx, edge.detect.ultralytics_backend, "
        "edge.detect.letterbox, edge.detect.postprocess;"
        "bad = [m for m in ('torch', 'ultralytics', 'torchvision') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [(320, 320), (640, 640), (384, 640)])
def test_letterbox_is_ultralytics_letterbox(shape: tuple[int, int], size: tuple[int, int]) -> None:
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import LetterBox

    frame = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    ours, _ = letterbox(frame, size)
    theirs = LetterBox(size, auto=False, stride=32)(image=frame)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("shape", SHAPES)
def test_rect_letterbox_is_ultralytics_auto_letterbox(shape: tuple[int, int]) -> None:
    """The smallest input (ultralytics' ``auto``) for a model that takes any input size."""
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import LetterBox

    frame = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    ours, _ = letterbox(frame, rect_input_hw(shape, (320, 320)))
    theirs = LetterBox((320, 320), auto=True, stride=32)(image=frame)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def test_dynamic_model_runs_a_wide_frame_at_its_smallest_input(tmp_path: Path) -> None:
    """A 16:9 frame goes in at 320 x 192; boxes come back in frame pixels as from the square.
    The fake outputs the same box (in input pixels) whatever the input, so where it lands in
    the frame shows which input the model got."""
    pytest.importorskip("onnx")
    model = write_fake_detector(
        tmp_path / "dynamic.onnx",
        boxes_xyxy=[(100, 50, 140, 90)],
        scores=[(0.9,)],
        classes=("garbage",),
        thresholds={"garbage": 0.5},
        dynamic=True,
    )
    frame = np.full((360, 640, 3), 255, np.uint8)  # scale 0.5 to 320 x 180
    rect = build_detector({"type": "onnx", "model": str(model), "threads": 1, "rect": True})
    assert rect.input_hw_for((360, 640)) == (192, 320)  # type: ignore[attr-defined]
    assert rect.input_hw_for((320, 320)) == (320, 320)  # type: ignore[attr-defined]
    # 6 rows of padding above the frame at 320 x 192: y 50 -> (50 - 6) / 0.5
    assert rect.detect(frame)[0].xyxy == pytest.approx((200, 88, 280, 168), abs=1e-3)
    square = build_detector({"type": "onnx", "model": str(model), "threads": 1})
    assert square.input_hw_for((360, 640)) == (320, 320)  # type: ignore[attr-defined]
    # 70 rows of padding at 320 x 320: the box is above the frame, clipped to its top edge
    assert square.detect(frame)[0].xyxy == pytest.approx((200, 0, 280, 40), abs=1e-3)


@pytest.mark.parametrize("shape", SHAPES)
def test_scale_boxes_is_ultralytics_scale_boxes(shape: tuple[int, int]) -> None:
    torch = pytest.importorskip("torch")
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(1)
    xy = rng.uniform(-20, 300, (50, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 80, (50, 2)).astype(np.float32)], axis=1)
    ours = scale_boxes_to_frame(boxes, (320, 320), shape)
    theirs = scale_boxes((320, 320), torch.from_numpy(boxes.copy()), shape).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_nms_is_ultralytics_nms(multi_label: bool, seed: int) -> None:
    torch = pytest.importorskip("torch")
    from ultralytics.utils.nms import non_max_suppression as u_nms

    rng = np.random.default_rng(seed)
    n, nc = 2100, 4
    centres = rng.uniform(0, 320, (2, n))
    sizes = rng.uniform(4, 120, (2, n))
    scores = rng.uniform(0, 1, (nc, n)) ** 6  # mostly low, a few high, like a real head
    pred = np.concatenate([centres, sizes, scores]).astype(np.float32)
    for conf, iou in [(0.25, 0.7), (0.001, 0.7), (0.1, 0.45)]:
        ours = non_max_suppression(pred, conf, iou, multi_label=multi_label)
        theirs = u_nms(torch.from_numpy(pred[None]), conf, iou, multi_label=multi_label)[0].numpy()
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_registry_rejects_unknown_type_and_extra_keys(fake_model: Path) -> None:
    with pytest.raises(DetectorConfigError, match="unknown detector type 'nope'"):
        build_detector({"type": "nope", "model": str(fake_model)})
    with pytest.raises(DetectorConfigError, match="modle"):
        parse_detector_config({"type": "onnx", "modle": str(fake_model)})
    with pytest.raises(DetectorConfigError, match="'type'"):
        parse_detector_config({"model": str(fake_model)})
    cfg = parse_detector_config({"type": "onnx", "model": str(fake_model), "threads": 1})
    assert cfg.type == "onnx"


def test_onnx_detector_reads_metadata_and_detects(fake_model: Path) -> None:
    det = build_detector({"type": "onnx", "model": str(fake_model), "threads": 1})
    assert det.classes == ("garbage", "manhole_ok")
    assert det.input_size == (320, 320)
    assert det.model_version == "fake-1"
    frame = np.full((640, 640, 3), 255, np.uint8)  # scale 2 from the 320 input, no padding
    found = det.detect(frame)
    # anchors 1 and 2 overlap (IoU ~0.92): NMS keeps the 0.9 one; anchor 3 is manhole_ok
    assert [(d.class_name, round(d.confidence, 4)) for d in found] == [
        ("garbage", 0.9),
        ("manhole_ok", 0.6),
    ]
    assert found[0].xyxy == pytest.approx((20, 20, 220, 220), abs=1e-3)
    assert found[1].xyxy == pytest.approx((400, 80, 600, 280), abs=1e-3)
    # a darker frame scales scores by 0.6: garbage 0.54 stays, manhole_ok 0.36 drops (< 0.5)
    dim = det.detect(np.full((640, 640, 3), 153, np.uint8))
    assert [d.class_name for d in dim] == ["garbage"]
    det.close()


def test_onnx_detector_config_overrides(fake_model: Path) -> None:
    frame = np.full((320, 320, 3), 153, np.uint8)
    low = build_detector(
        {"type": "onnx", "model": str(fake_model), "class_conf": {"manhole_ok": 0.3}}
    )
    assert [d.class_name for d in low.detect(frame)] == ["garbage", "manhole_ok"]
    only = build_detector(
        {"type": "onnx", "model": str(fake_model), "conf": 0.1, "classes": ["manhole_ok"]}
    )
    assert [d.class_name for d in only.detect(frame)] == ["manhole_ok"]
    with pytest.raises(DetectorConfigError, match="lacks"):
        build_detector({"type": "onnx", "model": str(fake_model), "classes": ["cat"]})


def test_sidecar_metadata_wins(fake_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m.onnx"
    copy.write_bytes(fake_model.read_bytes())
    meta = ModelMetadata(
        model_version="sidecar-7",
        classes=["garbage", "manhole_ok"],
        input_size=(320, 320),
        thresholds={"garbage": 0.95},
    )
    copy.with_suffix(".json").write_text(meta.to_json())
    det = build_detector({"type": "onnx", "model": str(copy)})
    assert det.model_version == "sidecar-7"
    assert [d.class_name for d in det.detect(np.full((320, 320, 3), 255, np.uint8))] == [
        "manhole_ok"
    ]


def test_metadata_validation() -> None:
    with pytest.raises(ValueError, match="unknown classes"):
        ModelMetadata(
            model_version="x", classes=["a"], input_size=(320, 320), thresholds={"b": 0.5}
        )
    doc = json.loads(
        ModelMetadata(model_version="x", classes=["a"], input_size=(320, 320)).to_json()
    )
    assert doc["schema"] == "gridwatch.detector-model" and doc["v"] == 1


def test_thresholds_and_detection_helpers() -> None:
    cfg = DetectorConfig(type="x", conf=0.4, class_conf={"b": 0.9})
    thr = resolve_thresholds(("a", "b", "c"), {"a": 0.2, "c": 0.3}, cfg)
    np.testing.assert_allclose(thr, [0.4, 0.9, 0.4])
    thr = resolve_thresholds(("a", "b"), {"a": 0.2}, DetectorConfig(type="x"))
    np.testing.assert_allclose(thr, [0.2, 0.25])
    d = Detection("a", 0, 0.5, 10, 20, 30, 60)
    assert d.area == 800 and d.normalised(100, 200) == (0.1, 0.1, 0.3, 0.3)
