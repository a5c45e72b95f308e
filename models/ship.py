"""Turn a training run into the shipped model: export, thresholds chosen on val, test reports."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edge.detect.metadata import ModelMetadata
from edge.detect.onnx import OnnxDetector, OnnxDetectorConfig
from models.evaluate import EvaluationReport, evaluate
from models.export import ExportSpec, Precision, export_model, write_metadata
from models.offline import REPO_ROOT
from models.thresholds import pick_threshold, sweep
from models.yolo_data import load_yolo_folder

log = logging.getLogger(__name__)

SHIPPED_MODEL = REPO_ROOT / "models" / "weights" / "gridwatch-det.onnx"
TRAINING_DATA = [
    "street-garbage (Roboflow Universe project-shb1t/-111-ehcfr v2, CC BY 4.0), train split",
    "manhole-crops (evenstar123/well-detect data/, no licence stated; internal use) "
    "composited into street-garbage scenes, train split of crops",
]


class ShipPlan(BaseModel):
    """How to ship a run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    precision: Precision = Field(default="int8")
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


def checkpoint_epoch(weights: Path) -> int:
    """The (1-based) epoch a checkpoint was saved at."""
    import torch

    ckpt = torch.load(str(weights), map_location="cpu", weights_only=False)
    return int(ckpt.get("epoch", -1)) + 1 if isinstance(ckpt, dict) else 0


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
    detector = OnnxDetector(OnnxDetectorConfig(model=plan.out))
    reports: dict[str, EvaluationReport] = {}
    for label, yaml_path in (
        ("street-garbage", Path(str(data["garbage_yaml"]))),
        ("manhole-composite", Path(str(data["composite_yaml"]))),
    ):
        folder = load_yolo_folder(yaml_path)
        for split in ("val", "test"):
            reports[f"{label}/{split}"] = evaluate(
                detector, folder, split, model_name=str(plan.out)
            )
    summary = {k: r.summary() for k, r in reports.items()}
    sweep_table = {n: [p.model_dump() | {"f1": p.f1} for p in pts] for n, pts in points.items()}
    plan.out.with_suffix(".eval.json").write_text(
        json.dumps({"reports": summary, "threshold_sweep_val": sweep_table}, indent=1) + "\n",
        encoding="utf-8",
    )
    return ShipResult(
        metadata=meta, path=plan.out, size_bytes=plan.out.stat().st_size, reports=summary
    )
