"""Fixtures for the model pipeline tests: offline switches and a hand-made labelled data set."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from dispatcher.evidence import EvidenceStore
from dispatcher.hard_negatives import Rejection, Snapshot, keep_hard_negatives
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


# Hard negatives as the dispatcher writes them: (ticket, kind, grey level of the 320x320 image).
HARD_NEGATIVES = [(7, "garbage", 255), (7, "garbage", 250), (8, "manhole_missing", 245)]


def write_hard_negatives(root: Path) -> Path:
    """The dispatcher's ``hard_negatives/`` folder, written by its own writer: three uniform
    grey snapshots (the fake model's scores scale with grey/255), two rejected as garbage (one
    ticket, two cameras), one as manhole_missing."""
    store = EvidenceStore(root.parent / "evidence")
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    by_ticket: dict[int, list[Snapshot]] = {}
    for eid, (ticket, kind, grey) in enumerate(HARD_NEGATIVES, 1):
        ok, jpeg = cv2.imencode(".jpg", np.full((320, 320, 3), grey, np.uint8))
        assert ok
        stored = store.save(jpeg.tobytes(), "snapshot", at)
        by_ticket.setdefault(ticket, []).append(
            Snapshot(
                evidence_id=eid,
                path=stored.path,
                sha256=stored.sha256,
                event_id=f"event-{eid}",
                kind=kind,
                device_id="edge-01",
                camera_id=f"cam-0{eid}",
                bbox=(0.1 * eid, 0.2, 0.1 * eid + 0.2, 0.6),
                confidence=0.7,
                model_version="det-test",
                seen_at=at,
            )
        )
    for ticket, snaps in by_ticket.items():
        kind = snaps[0].kind or ""
        keep_hard_negatives(store, root, Rejection(ticket, kind, at, "误报", tuple(snaps)))
    return root


@pytest.fixture(scope="session")
def hard_negatives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hard_negatives(tmp_path_factory.mktemp("dispatcher-state") / "hard_negatives")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, hard_negatives: Path) -> Path:
    """One epoch of the 'smoke' recipe on a handful of real images and the dispatcher's hard
    negatives (offline, ~10 s on 2 cores)."""
    from simulators.composite import datasets_root

    if not (datasets_root() / "street-garbage").is_dir():
        pytest.skip("shared datasets not present")
    pytest.importorskip("ultralytics")
    from models.train import PRESETS, train

    recipe = PRESETS["smoke"].model_copy(update={"hard_negatives": [hard_negatives]})
    return train(recipe, runs_dir=tmp_path_factory.mktemp("runs"))
