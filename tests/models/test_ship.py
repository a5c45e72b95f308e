"""Shipping a run: export, thresholds on val, reports on val and test, the fp32 reference of a
reduced precision, and the model card's measured section."""

from __future__ import annotations

import json
from pathlib import Path

from edge.detect.metadata import ModelMetadata, sidecar_path
from models.card import render
from models.ship import ShipPlan, best_epoch, run_record, ship


def load_metadata(model: Path) -> ModelMetadata:
    return ModelMetadata.model_validate_json(sidecar_path(model).read_text())


def test_int8_ship_measures_its_cost_against_fp32_and_renders_a_card(
    smoke_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shipped.onnx"
    result = ship(smoke_run, ShipPlan(precision="int8", out=out, calibration_count=4))

    meta = load_metadata(out)
    assert meta.precision == "int8" and set(meta.thresholds) == set(meta.classes)
    evaluation = json.loads(out.with_suffix(".eval.json").read_text())
    keys = {"street-garbage/val", "street-garbage/test", "manhole-composite/val"}
    assert keys <= set(evaluation["reports"]) == set(result.reports)
    assert set(evaluation["fp32_reference"]) == set(evaluation["reports"])
    assert evaluation["threshold_sweep_val"]
    assert not out.with_suffix(".pt").exists()  # the checkpoint is kept only for models/weights

    text = render(meta, out, evaluation, run_record(smoke_run), smoke_run)
    assert "| street-garbage/test | garbage |" in text
    assert "What int8 costs" in text and "AP50 fp32" in text
    assert "| epoch | mAP50 |" in text


def test_fp32_ship_has_no_reference(smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "shipped.onnx"
    ship(smoke_run, ShipPlan(out=out))
    evaluation = json.loads(out.with_suffix(".eval.json").read_text())
    assert "fp32_reference" not in evaluation
    assert "What" not in render(
        load_metadata(out), out, evaluation, run_record(smoke_run), smoke_run
    )


def test_best_epoch_is_the_first_with_the_highest_map50_95(tmp_path: Path) -> None:
    """A stripped best.pt no longer knows its epoch; the run's results.csv does (as
    ultralytics picks best.pt: the highest mAP50-95, the first of equals)."""
    csv_path = tmp_path / "results.csv"
    csv_path.write_text(
        "                  epoch,  metrics/mAP50(B),  metrics/mAP50-95(B)\n"
        "1,0.50,0.30\n2,0.70,0.41\n3,0.72,0.40\n4,0.69,0.41\n"
    )
    assert best_epoch(csv_path) == 2
    assert best_epoch(tmp_path / "missing.csv") == 0
