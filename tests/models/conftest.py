"""Fixtures for the model pipeline tests: offline switches and a hand-made labelled data set."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.models.fake_onnx import write_fake_detector

# Model classes; the fixture data names only two of them, in another order.
FAKE_CLASSES = ("garbage", "manhole_missing", "manhole_ok")
# Anchors: A and B are garbage, C is manhole_ok, D is manhole_missing (not named in the data).
FAKE_BOXES = [(10, 10, 110, 110), (200, 200, 300, 300), (10, 200, 60, 250), (150, 20, 250, 120)]
FAKE_SCORES = [(0.9, 0, 0), (0.6, 0, 0), (0, 0, 0.4), (0, 0.7, 0)]
FAKE_THRESHOLDS = {"garbage": 0.5, "manhole_missing": 0.5, "manhole_ok": 0.3}


@pytest.fixture(scope="session", autouse=True)
def offline(tmp_path_factory: pytest.TempPathFactory) -> None:
    """ultralytics/matplotlib/onnxruntime offline and writing under a temp folder."""
    import os

    os.environ.setdefault("GW_CACHE_DIR", str(tmp_path_factory.mktemp("gw-cache")))
    from models.offline import configure_offline

    configure_offline()


@pytest.fixture(scope="session")
def fake_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    path = tmp_path_factory.mktemp("fake-model") / "fake.onnx"
    return write_fake_detector(
        path, FAKE_BOXES, FAKE_SCORES, FAKE_CLASSES, thresholds=FAKE_THRESHOLDS
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 320x320 uniform grey images: two labelled, one negative (see test_evaluate)."""
    root = tmp_path_factory.mktemp("tiny-data")
    (root / "images" / "test").mkdir(parents=True)
    (root / "labels" / "test").mkdir(parents=True)
    (root / "data.yaml").write_text(
        yaml.safe_dump(
            {"path": ".", "test": "images/test", "names": {0: "manhole_ok", 1: "garbage"}}
        )
    )

    def label(cls: int, x1: float, y1: float, x2: float, y2: float) -> str:
        return f"{cls} {(x1 + x2) / 640} {(y1 + y2) / 640} {(x2 - x1) / 320} {(y2 - y1) / 320}\n"

    images = {
        "img1": (255, label(1, 10, 10, 110, 110) + label(0, 10, 200, 60, 250)),
        "img2": (204, label(1, 200, 200, 300, 282)),
        "img3": (153, ""),
    }
    for name, (grey, text) in images.items():
        cv2.imwrite(
            str(root / "images" / "test" / f"{name}.png"), np.full((320, 320, 3), grey, np.uint8)
        )
        if text:
            (root / "labels" / "test" / f"{name}.txt").write_text(text)
    return root


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the 'smoke' recipe on a handful of real images (offline, ~10 s on 2 cores)."""
    from simulators.composite import datasets_root

    if not (datasets_root() / "street-garbage").is_dir():
        pytest.skip("shared datasets not present")
    pytest.importorskip("ultralytics")
    from models.train import PRESETS, train

    return train(PRESETS["smoke"], runs_dir=tmp_path_factory.mktemp("runs"))
