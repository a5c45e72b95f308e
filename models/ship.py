"""Turn a training run into the shipped model: export, thresholds chosen on val, test reports."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edge.detect.metadata import ModelMetadata
from edge.detect.onnx import OnnxDetector, OnnxDetectorConfig
from models.card import write_card
from models.evaluate import EvaluationReport, evaluate
from models.export import ExportSpec, Precision, export_model, write_metadata
from models.offline import REPO_ROOT, configure_offline
from models.thresholds import pick_threshold, sweep
from models.yolo_data import load_yolo_folder

log = logging.getLogger(__name__)

SHIPPED_MODEL = REPO_ROOT / "models" / "weights" / "gridwatch-det.onnx"
# Kept beside the shipped model by ``gridwatch export --run`` but not in git (over 20 MB).
SHIPPED_CHECKPOINT = SHIPPED_MODEL.with_suffix(".pt")
CHECKPOINT_HINT = (
    "the shipped model's checkpoint is not in the repository (22 MB); `make model` trains and "
    "ships it, `gridwatch export --run runs/train/shipped` writes it again from a training run"
)
TRAINING_DATA = [
    "street-garbage (Roboflow Universe project-shb1t/-111-ehcfr v2, CC BY 4.0), train split",
    "manhole-crops (evenstar123/well-detect data/, no licence stated; internal use) "
    "composited into street-garbage scenes, train split of crops",
]


class ShipPlan(BaseModel):
    """How to ship a run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    precision: Precision = Field(default="fp32")
    out: Path = Field(default=SHIPPED_MODEL)
    weights: str = Field(default="best.pt", description="Which checkpoint of the run.")
    calibration_count: int = Field(default=100, ge=1, description="int8 calibration images.")


class ShipResult(BaseModel):
    """What was shipped and how it measured."""

    model_config = ConfigDict(extra="forbid")

    metadata: ModelMetadata
    path: Path
    size_bytes: int
    reports: dict[str, dict[str, object]]


def run_record(run_dir: Path) -> dict[str, object]:
    """The run's ``gridwatch_run.json`` (written by ``models.train``)."""
    path = run_dir / "gridwatch_run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a gridwatch training run (no {path.name})")
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def evaluate_splits(model: Path, data: dict[str, object]) -> dict[str, EvaluationReport]:
    """``model`` (ONNX, through the edge's detector) on the val and test splits of the real
    garbage photos and of the manhole composites."""
    detector = OnnxDetector(OnnxDetectorConfig(model=model))
    reports: dict[str, EvaluationReport] = {}
    for label, yaml_path in (
        ("street-garbage", Path(str(data["garbage_yaml"]))),
        ("manhole-composite", Path(str(data["composite_yaml"]))),
    ):
        folder = load_yolo_folder(yaml_path)
        for split in ("val", "test"):
            reports[f"{label}/{split}"] = evaluate(detector, folder, split, model_name=str(model))
    return reports


def fp32_reference(
    weights: Path, meta: ModelMetadata, data: dict[str, object]
) -> dict[str, dict[str, object]]:
    """The same checkpoint exported at fp32 with the same thresholds, on the same splits: what
    a reduced precision costs."""
    with tempfile.TemporaryDirectory(prefix="gw-fp32-") as tmp:
        out = Path(tmp) / "reference.onnx"
        ref = export_model(
            ExportSpec(
                weights=weights,
                out=out,
                imgsz=meta.input_size[0],
                precision="fp32",
                model_version=f"{meta.model_version}-fp32-reference",
                thresholds=meta.thresholds,
                iou=meta.iou,
                architecture=meta.architecture,
            )
        )
        log.info("evaluating the fp32 reference %s", ref.model_version)
        return {k: r.summary() for k, r in evaluate_splits(out, data).items()}


def keep_checkpoint(weights: Path, dst: Path) -> None:
    """Copy the run's checkpoint beside the shipped model, without its optimizer state: the
    baseline of the benchmarks (ultralytics' own predict on the .pt) and a start for
    fine-tuning on a site's own frames."""
    configure_offline()
    from ultralytics.utils.torch_utils import strip_optimizer

    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, dst)
    strip_optimizer(str(dst))
    log.info("checkpoint kept: %s (%.1f MB)", dst, dst.stat().st_size / 1e6)


def checkpoint_epoch(weights: Path) -> int:
    """The (1-based) epoch a checkpoint was saved at; 0 when unknown.

    Ultralytics strips ``best.pt`` when training ends and sets its epoch to -1; the epoch is
    then the row of the run's ``results.csv`` with the best fitness (mAP50-95, as
    ultralytics picks ``best.pt``)."""
    import torch

    ckpt = torch.load(str(weights), map_location="cpu", weights_only=False)
    saved = int(ckpt.get("epoch", -1)) if isinstance(ckpt, dict) else -1
    if saved >= 0:
        return saved + 1
    return best_epoch(weights.parent.parent / "results.csv")


def best_epoch(results_csv: Path) -> int:
    """The epoch (as numbered in ``results.csv``) with the highest box mAP50-95; 0 when none."""
    if not results_csv.is_file():
        return 0
    with results_csv.open(newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]
    scored = [(float(r["metrics/mAP50-95(B)"]), int(float(r["epoch"]))) for r in rows if r]
    return max(scored, key=lambda s: (s[0], -s[1]))[1] if scored else 0


def ship(run_dir: Path, plan: ShipPlan) -> ShipResult:
    """Export the run's checkpoint, pick thresholds on val, and evaluate val and test splits."""
    record = run_record(run_dir)
    recipe = record["recipe"]
    data = record["data"]
    assert isinstance(recipe, dict) and isinstance(data, dict)
    imgsz = int(recipe["imgsz"])
    train_yaml = Path(str(data["train_yaml"]))
    combined = load_yolo_folder(train_yaml)
    train_images = combined.images("train")
    step = max(1, len(train_images) // plan.calibration_count)
    calibration = train_images[::step][: plan.calibration_count]
    arch = str(recipe["model"]).removesuffix(".yaml")
    weights = run_dir / "weights" / plan.weights
    epoch = checkpoint_epoch(weights)
    version = f"gw-det-{arch}-{imgsz}-{plan.precision}-e{epoch}-{datetime.now(UTC):%Y%m%d}"
    meta = export_model(
        ExportSpec(
            weights=weights,
            out=plan.out,
            imgsz=imgsz,
            precision=plan.precision,
            model_version=version,
            training_data=TRAINING_DATA,
            calibration_images=calibration,
            architecture=arch,
            notes=f"recipe {recipe['name']} ({recipe['epochs']} epochs planned) from "
            f"{recipe['start']}; {plan.weights} = epoch {epoch}",
        )
    )
    detector = OnnxDetector(OnnxDetectorConfig(model=plan.out))
    points = sweep(detector, combined, "val")
    thresholds = {name: pick_threshold(points.get(name, [])) for name in meta.classes}
    log.info("operating thresholds chosen on val: %s", thresholds)
    meta = meta.model_copy(update={"thresholds": thresholds})
    write_metadata(plan.out, meta)
    reports = evaluate_splits(plan.out, data)
    summary = {k: r.summary() for k, r in reports.items()}
    evaluation: dict[str, object] = {"reports": summary}
    if plan.precision != "fp32":
        evaluation["fp32_reference"] = fp32_reference(weights, meta, data)
    evaluation["threshold_sweep_val"] = {
        n: [p.model_dump() | {"f1": p.f1} for p in pts] for n, pts in points.items()
    }
    plan.out.with_suffix(".eval.json").write_text(
        json.dumps(evaluation, indent=1) + "\n", encoding="utf-8"
    )
    if plan.out.resolve() == SHIPPED_MODEL.resolve():
        keep_checkpoint(weights, SHIPPED_CHECKPOINT)
        card = write_card(meta, plan.out, evaluation, record, run_dir)
        log.info("model card updated: %s", card)
    return ShipResult(
        metadata=meta, path=plan.out, size_bytes=plan.out.stat().st_size, reports=summary
    )
