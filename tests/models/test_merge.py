"""Merged-class evaluation: any manhole condition counted as one class."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.evaluate import evaluate, load_model
from models.merge import MergedModel, merged_folder

GROUPS = {"manhole_missing": "manhole", "manhole_ok": "manhole"}


def test_merged_manhole_ap(fake_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    """Anchors D (missing: .70/.56/.42) and C (ok: .40/.32/.24) become 'manhole'; the one
    manhole object (img1, at C) is found by the 4th detection by confidence: precision
    envelope .25 up to recall 1 -> AP = .25 x .99 + (.25 + 0) / 2 x .01 = 0.24875."""
    model = MergedModel(load_model(fake_model), GROUPS)
    assert model.classes == ("garbage", "manhole")
    assert model.thresholds == pytest.approx({"garbage": 0.5, "manhole": 0.3})
    data = merged_folder(tiny_data, tmp_path / "merged", "test", GROUPS)
    assert data.names == ("manhole", "garbage")
    report = evaluate(model, data, "test")
    assert report.classes["manhole"].ap50 == pytest.approx(0.24875, abs=1e-9)
    assert report.classes["garbage"].ap50 == pytest.approx(0.695, abs=1e-9)
    # operating point: D .70 (img1), .56 (img2), .42 (img3) and C .40 (img1), .32 (img2) pass 0.3
    assert (report.classes["manhole"].tp, report.classes["manhole"].fp) == (1, 4)
