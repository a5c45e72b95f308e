"""``evaluate`` on a tiny labelled fixture whose figures were worked out by hand.

The fake model (tests/models/fake_onnx.py) outputs four anchors; each image is uniform grey so
every score is multiplied by grey/255 (img1 1.0, img2 0.8, img3 0.6):

    anchor  class            box                  img1   img2   img3
    A       garbage          (10,10,110,110)      0.90   0.72   0.54
    B       garbage          (200,200,300,300)    0.60   0.48   0.36
    C       manhole_ok       (10,200,60,250)      0.40   0.32   0.24
    D       manhole_missing  (150,20,250,120)     0.70   0.56   0.42   (not in the data: ignored)

Labels: img1 garbage at A and manhole_ok at C (exact); img2 garbage (200,200,300,282), IoU 0.82
with B; img3 none. Data names are {0: manhole_ok, 1: garbage} (matched by name).

garbage, by confidence: .90 TP, .72 FP, .60 FP, .54 FP, .48 TP (IoU .82: thresholds .50-.80
only), .36 FP; 2 objects. At IoU .5: recall .5 .5 .5 .5 1 1, precision 1 .5 .33 .25 .4 .33;
envelope 1 up to recall .5, then .4 up to recall 1, then 0 at the sentinel. 101-point
trapezoid: 0.49 (x=0..0.49 at 1) + 0.007 (0.49..0.5: 1 -> .4) + 0.196 (0.5..0.99 at .4)
+ 0.002 (0.99..1: .4 -> 0) = 0.695 for IoU .50-.80 (7 thresholds). At .85-.95 only the first
detection is right: 0.49 + 0.005 (0.49..0.5: 1 -> 0) = 0.495. AP50-95 = (7 x .695 + 3 x .495)/10
= 0.635.
manhole_ok: .40 TP, .32 FP, .24 FP; 1 object: precision 1 until recall 1 -> 0.99 + 0.005 =
0.995 at every IoU threshold.

Operating thresholds (metadata): garbage 0.5, manhole_ok 0.3. Kept: img1 A(TP) B(FP) C(TP);
img2 A(FP) C(FP); img3 A(FP). garbage P = 1/4, R = 1/2; manhole_ok P = 1/2, R = 1/1.
One detection on the one image without objects: 1.0 FP per negative image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models.cli import app
from models.evaluate import evaluate_path
from models.metrics import ap_per_class, match_predictions


def test_evaluate_matches_hand_computed_figures(fake_model: Path, tiny_data: Path) -> None:
    report = evaluate_path(fake_model, tiny_data, "test")
    garbage, ok = report.classes["garbage"], report.classes["manhole_ok"]
    assert list(report.classes) == ["manhole_ok", "garbage"]
    assert report.images == 3 and report.negative_images == 1
    assert garbage.support == 2 and ok.support == 1
    assert garbage.ap50 == pytest.approx(0.695, abs=1e-9)
    assert garbage.ap50_95 == pytest.approx(0.635, abs=1e-9)
    assert ok.ap50 == pytest.approx(0.995, abs=1e-9)
    assert ok.ap50_95 == pytest.approx(0.995, abs=1e-9)
    assert (garbage.tp, garbage.fp, garbage.precision, garbage.recall) == (1, 3, 0.25, 0.5)
    assert (ok.tp, ok.fp, ok.precision, ok.recall) == (1, 1, 0.5, 1.0)
    assert report.fp_per_negative_image == 1.0
    assert report.map50 == pytest.approx((0.695 + 0.995) / 2, abs=1e-9)
    # rows predicted, columns true: manhole_ok, garbage, background
    assert report.confusion_matrix == [[1, 0, 1], [0, 1, 3], [0, 1, 0]]


def test_evaluate_cli_json(fake_model: Path, tiny_data: Path) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", "--model", str(fake_model), "--data", str(tiny_data), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["model"] == str(fake_model)
    assert doc["images"] == 3
    assert doc["fp_per_negative_image"] == 1.0
    assert set(doc["classes"]) == {"garbage", "manhole_ok"}
    assert doc["classes"]["garbage"]["ap50"] == pytest.approx(0.695)
    assert set(doc["classes"]["garbage"]) >= {"ap50", "ap50_95", "precision", "recall", "support"}


def test_evaluate_cli_table_and_bad_data(fake_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    table = runner.invoke(app, ["evaluate", "--model", str(fake_model), "--data", str(tiny_data)])
    assert table.exit_code == 0, table.output
    assert "garbage" in table.output and "confusion matrix" in table.output
    bad = runner.invoke(app, ["evaluate", "--model", str(fake_model), "--data", str(tmp_path)])
    assert bad.exit_code != 0
    assert "data.yaml" in bad.output


def test_ap_and_matching_equal_ultralytics_on_random_inputs() -> None:
    torch = pytest.importorskip("torch")
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import ap_per_class as u_ap_per_class

    rng = np.random.default_rng(3)
    validator = DetectionValidator()
    for _ in range(20):
        n_true, n_pred = int(rng.integers(0, 8)), int(rng.integers(0, 30))
        iou = rng.uniform(0, 1, (n_true, n_pred)) ** 2
        pred_cls = rng.integers(0, 3, n_pred)
        true_cls = rng.integers(0, 3, n_true)
        ours = match_predictions(pred_cls, true_cls, iou)
        theirs = validator.match_predictions(
            torch.from_numpy(pred_cls), torch.from_numpy(true_cls), torch.from_numpy(iou)
        ).numpy()
        np.testing.assert_array_equal(ours, theirs)
    tp = rng.uniform(0, 1, (400, 10)) < np.linspace(0.7, 0.2, 10)
    conf = rng.uniform(0, 1, 400)
    pred_cls = rng.integers(0, 4, 400)
    target_cls = rng.integers(0, 4, 150)
    classes, ap = ap_per_class(tp, conf, pred_cls, target_cls)
    u = u_ap_per_class(tp, conf, pred_cls, target_cls)
    np.testing.assert_array_equal(classes, u[6])
    np.testing.assert_allclose(ap, u[5], rtol=0, atol=1e-12)
