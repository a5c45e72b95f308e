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
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
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
    """The issue's record exactly, everything else under ``details``."""
    result = CliRunner().invoke(
        app, ["evaluate", "--model", str(fake_model), "--data", str(tiny_data), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["model", "images", "classes", "fp_per_negative_image", "details"]
    assert doc["model"] == str(fake_model)
    assert doc["images"] == 3
    assert doc["fp_per_negative_image"] == 1.0
    assert list(doc["classes"]) == ["manhole_ok", "garbage"]
    for figures in doc["classes"].values():
        assert list(figures) == ["ap50", "ap50_95", "precision", "recall", "support"]
    assert doc["classes"]["garbage"] == {
        "ap50": pytest.approx(0.695),
        "ap50_95": pytest.approx(0.635),
        "precision": 0.25,
        "recall": 0.5,
        "support": 2,
    }
    details = doc["details"]
    # 0.3 is 0.30000001192092896 as the float32 the metadata is read into
    assert details["thresholds"] == {"manhole_ok": 0.3, "garbage": 0.5}
    assert details["negative_images"] == 1 and details["skipped_images"] == 0
    assert details["split"] == "test" and details["input_size"] == [320, 320]
    assert details["confusion_matrix"]["rows_predicted"] == [[1, 0, 1], [0, 1, 3], [0, 1, 0]]
    assert details["operating_point"]["garbage"] == {"tp": 1, "fp": 3}


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


def grey(path: Path, value: int, size: int = 320) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8))


def polygon(cls: int, x1: float, y1: float, x2: float, y2: float) -> str:
    pts = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    return f"{cls} " + " ".join(f"{x / 320} {y / 320}" for x, y in pts) + "\n"


def test_roboflow_export_with_polygons_and_other_name_spelling(
    fake_model: Path, tmp_path: Path
) -> None:
    """The hand-computed fixture as a Roboflow export: ``test: ../test/images``, names
    ``Manhole OK``/``Garbage``, polygon labels; the figures are the same to the last digit."""
    root = tmp_path / "export"
    root.mkdir()
    (root / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "train": "../train/images",
                "val": "../valid/images",
                "test": "../test/images",
                "nc": 2,
                "names": ["Manhole OK", "Garbage"],
            }
        )
    )
    labels = {
        "img1": (255, polygon(1, 10, 10, 110, 110) + polygon(0, 10, 200, 60, 250)),
        "img2": (204, polygon(1, 200, 200, 300, 282)),
        "img3": (153, ""),
    }
    for name, (value, text) in labels.items():
        grey(root / "test" / "images" / f"{name}.jpg", value)
        (root / "test" / "labels").mkdir(parents=True, exist_ok=True)
        if text:
            (root / "test" / "labels" / f"{name}.txt").write_text(text)
    report = evaluate_path(fake_model, root, "test")
    assert list(report.classes) == ["manhole_ok", "garbage"]
    assert report.classes["garbage"].data_name == "Garbage"
    garbage, ok = report.classes["garbage"], report.classes["manhole_ok"]
    assert garbage.ap50 == pytest.approx(0.695, abs=1e-9)
    assert garbage.ap50_95 == pytest.approx(0.635, abs=1e-9)
    assert ok.ap50 == pytest.approx(0.995, abs=1e-9)
    assert (garbage.tp, garbage.fp, ok.tp, ok.fp) == (1, 3, 1, 1)
    assert report.summary()["details"]["data_names"] == {  # type: ignore[index]
        "manhole_ok": "Manhole OK",
        "garbage": "Garbage",
    }


def test_unreadable_images_and_rejected_labels_are_skipped_counted_and_said(
    fake_model: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """As ultralytics: a file that is not an image, an empty file, an image under 10 px and
    an image whose label file has a class id the data does not define are left out; the
    figures are those of the three good images."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    images, labels = data / "images" / "test", data / "labels" / "test"
    (images / "img0.png").write_bytes(b"this is not a png")
    (images / "img5.jpg").write_bytes(b"")
    cv2.imwrite(str(images / "img6.png"), np.full((5, 5, 3), 255, np.uint8))
    grey(images / "img7.png", 255)
    (labels / "img7.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    report = evaluate_path(fake_model, data, "test")
    assert report.images == 3 and report.negative_images == 1
    assert [Path(s.path).name for s in report.skipped] == [
        "img0.png",
        "img5.jpg",
        "img6.png",
        "img7.png",
    ]
    reasons = [s.reason for s in report.skipped]
    assert reasons[0] == "not a decodable image" and reasons[1] == "empty file"
    assert "<10 pixels" in reasons[2] and "exceeds the data set's class count 2" in reasons[3]
    assert report.classes["garbage"].ap50 == pytest.approx(0.695, abs=1e-9)
    assert report.fp_per_negative_image == 1.0

    result = CliRunner().invoke(
        app, ["evaluate", "--model", str(fake_model), "--data", str(data), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["images"] == 3 and doc["details"]["skipped_images"] == 4
    assert doc["details"]["skipped"][0]["reason"] == "not a decodable image"
    assert "warning: 4 of 7 images skipped" in result.stderr
    table = CliRunner().invoke(app, ["evaluate", "--model", str(fake_model), "--data", str(data)])
    assert "4 images skipped" in table.stdout and "img7.png" in table.stdout


def cli_error(*args: str) -> str:
    """Run evaluate expecting a failure: exit 1, no traceback, and one error line last on
    stderr (after any warnings logged on the way), returned."""
    result = CliRunner().invoke(app, ["evaluate", *args])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    errors = [x for x in lines if x.startswith("error: ")]
    assert errors == lines[-1:], result.stderr
    assert "Traceback" not in result.output and not result.stdout
    return errors[0]


def test_evaluate_cli_problems_are_one_line_errors(
    fake_model: Path, tiny_data: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    grey(other / "images" / "test" / "a.png", 200)
    (other / "data.yaml").write_text(yaml.safe_dump({"names": ["cat", "Dog"]}))
    line = cli_error("--model", str(fake_model), "--data", str(other))
    assert "['cat', 'Dog']" in line and "['garbage', 'manhole_missing', 'manhole_ok']" in line

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert "broken.onnx" in cli_error("--model", str(broken), "--data", str(tiny_data))
    assert "not found" in cli_error(
        "--model", str(tmp_path / "nope.onnx"), "--data", str(tiny_data)
    )
    text_model = tmp_path / "model.txt"
    text_model.write_text("x")
    assert "unsupported" in cli_error("--model", str(text_model), "--data", str(tiny_data))

    assert "data.yaml" in cli_error("--model", str(fake_model), "--data", str(tmp_path / "none"))
    bad_yaml = tmp_path / "bad"
    bad_yaml.mkdir()
    (bad_yaml / "data.yaml").write_text("names: [a\n")
    assert "not valid YAML" in cli_error("--model", str(fake_model), "--data", str(bad_yaml))
    assert "no 'val:' key" in cli_error(
        "--model", str(fake_model), "--data", str(tiny_data), "--split", "val"
    )
    unreadable = tmp_path / "unreadable"
    shutil.copytree(tiny_data, unreadable)
    for img in (unreadable / "images" / "test").iterdir():
        img.write_bytes(b"")
    assert "none of the 3 images" in cli_error(
        "--model", str(fake_model), "--data", str(unreadable)
    )


def test_evaluating_an_onnx_imports_no_torch(fake_model: Path, tiny_data: Path) -> None:
    """The evaluate command on an ONNX runs with the edge's dependencies only."""
    code = (
        "import sys\n"
        "from models.cli import app\n"
        f"app(['evaluate', '--model', {str(fake_model)!r}, '--data', {str(tiny_data)!r},"
        " '--json'], standalone_mode=False)\n"
        "bad = [m for m in ('torch', 'torchvision', 'ultralytics') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"] == 3
