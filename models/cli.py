"""Commands ``gridwatch train | evaluate | export``: the detector's training pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from config.logs import setup_logging

log = logging.getLogger(__name__)

app = typer.Typer(help="Detector training, evaluation and export.", no_args_is_help=True)


@app.command()
def train(
    preset: Annotated[
        str, typer.Option(help="Named recipe: 'shipped' (the model in models/weights) or 'smoke'.")
    ] = "shipped",
    model: Annotated[
        str | None, typer.Option(help="Model yaml, e.g. yolov8s.yaml (overrides the preset).")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Starting weights: 'fall-detection', a .pt path, or 'none' for random init."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs (overrides the preset).")
    ] = None,
    imgsz: Annotated[int | None, typer.Option(min=32, help="Input size (overrides).")] = None,
    batch: Annotated[int | None, typer.Option(min=1, help="Batch size (overrides).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (folder under runs/train).")] = None,
    runs: Annotated[Path | None, typer.Option(help="Runs folder; default <repo>/runs.")] = None,
    datasets: Annotated[
        Path | None,
        typer.Option(help="Shared datasets root; default $GW_DATASETS or ../shared/datasets."),
    ] = None,
    ship: Annotated[
        bool,
        typer.Option(
            help="After training, export the model, choose thresholds on val and write "
            "test reports (to --ship-to)."
        ),
    ] = False,
    ship_to: Annotated[
        Path | None, typer.Option(help="ONNX file to ship to; default models/weights/.")
    ] = None,
    precision: Annotated[
        str, typer.Option(help="Shipped precision: fp32, fp16 or int8 (its cost is measured).")
    ] = "fp32",
    hard_negatives: Annotated[
        list[Path] | None,
        typer.Option(
            "--hard-negatives",
            metavar="DIR",
            help="A folder of hard negatives: the dispatcher's <state>/hard_negatives/ or one "
            "of its kind folders (repeatable). Its images join the train split only, as images "
            "without the rejected kind; counted in the data manifest.",
        ),
    ] = None,
) -> None:
    """Build the combined data set (garbage + manhole composites) and train with ultralytics.

    Runs on CPU (a GPU is used when present). Writes runs/train/<name>/ with weights/best.pt,
    ultralytics' curves, val_per_class.jsonl and gridwatch_run.json (recipe, data, commit).
    """
    setup_logging()
    from models.train import PRESETS
    from models.train import train as run_training

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    overrides: dict[str, object] = {}
    for key, value in (
        ("model", model),
        ("epochs", epochs),
        ("imgsz", imgsz),
        ("batch", batch),
        ("name", name),
    ):
        if value is not None:
            overrides[key] = value
    if start is not None:
        overrides["start"] = None if start.lower() == "none" else start
    if hard_negatives:
        missing = [str(p) for p in hard_negatives if not p.is_dir()]
        if missing:
            raise typer.BadParameter(
                f"not a folder: {', '.join(missing)}", param_hint="--hard-negatives"
            )
        overrides["hard_negatives"] = [p.resolve() for p in hard_negatives]
    recipe = PRESETS[preset].model_copy(update=overrides)
    recipe = type(recipe).model_validate(recipe.model_dump())
    run_dir = run_training(recipe, runs_dir=runs, datasets=datasets)
    typer.echo(f"run folder: {run_dir}")
    if ship:
        _ship(run_dir, ship_to, precision)


def _ship(run_dir: Path, out: Path | None, precision: str) -> None:
    from models.ship import SHIPPED_MODEL, ShipPlan, ship

    plan = ShipPlan.model_validate({"precision": precision, "out": out or SHIPPED_MODEL})
    result = ship(run_dir, plan)
    typer.echo(
        f"shipped {result.path} ({result.size_bytes / 1e6:.1f} MB), "
        f"thresholds {result.metadata.thresholds}"
    )
    for key, report in result.reports.items():
        typer.echo(f"{key}: {json.dumps(report['classes'])}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Model file: .onnx (edge runtime) or .pt.")],
    data: Annotated[
        Path,
        typer.Option(
            help="YOLO data set: its folder or its data.yaml (names as a list or a map; each "
            "split where the yaml's train:/val:/test: key says, relative to its path:, else "
            "images/<split>; labels where ultralytics looks, boxes or polygons)."
        ),
    ],
    split: Annotated[
        str, typer.Option(help="Which split: the data.yaml key (or images/<split> folder).")
    ] = "test",
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object: model, images, per-class ap50/ap50_95/precision/"
            "recall/support, fp_per_negative_image, and the rest under details.",
        ),
    ] = False,
    imgsz: Annotated[
        int | None, typer.Option(min=32, help="Input size for a .pt (ONNX files fix their own).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="onnxruntime threads; default all cores.")
    ] = None,
) -> None:
    """Per-class precision/recall at the operating thresholds, AP50, AP50-95, confusion matrix
    and false positives per image without objects. ONNX runs through the edge's own code.
    Unreadable images and rejected label files are skipped and named, as ultralytics does;
    a problem with the model or the data is a one-line error and exit code 1."""
    setup_logging("WARNING")
    from models.evaluate import ModelLoadError, evaluate_path, render_report
    from models.yolo_data import YoloDataError

    try:
        report = evaluate_path(model, data, split, imgsz=imgsz, threads=threads)
    except ModelLoadError as exc:
        _fail(f"--model: {exc}")
    except YoloDataError as exc:
        _fail(f"--data: {exc}")
    except (OSError, ValueError) as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    if as_json:
        typer.echo(json.dumps(report.summary()))
    else:
        typer.echo(render_report(report))
    if report.skipped:
        typer.echo(
            f"warning: {len(report.skipped)} of {report.images + len(report.skipped)} images "
            f"skipped (unreadable or rejected labels), e.g. {report.skipped[0].path}: "
            f"{report.skipped[0].reason}",
            err=True,
        )


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit code 1 (no traceback)."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(1)


@app.command()
def export(
    weights: Annotated[
        Path | None, typer.Option(help="A trained .pt checkpoint (or give --run).")
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            help="A training run folder: exports its best.pt, picks thresholds on its "
            "val split and writes test reports."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="ONNX file to write; default models/weights/gridwatch-det.onnx."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="fp32, fp16 or int8 (int8 needs calibration images).")
    ] = "fp32",
    imgsz: Annotated[int, typer.Option(min=32, help="Fixed input size (with --weights).")] = 320,
    version: Annotated[
        str | None, typer.Option(help="Model version string (with --weights).")
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(help="Folder of images for int8 calibration (with --weights)."),
    ] = None,
) -> None:
    """Export to ONNX at a fixed input size with the metadata record the edge agent reads
    (classes, input size, thresholds, training data, commit), optionally int8 or fp16."""
    setup_logging()
    from models.export import ExportSpec, export_model
    from models.ship import SHIPPED_MODEL

    if precision not in ("fp32", "fp16", "int8"):
        raise typer.BadParameter("choose fp32, fp16 or int8", param_hint="--precision")
    if (weights is None) == (run is None):
        raise typer.BadParameter("give exactly one of --weights and --run")
    if run is not None:
        _ship(run, out, precision)
        return
    assert weights is not None
    images = (
        sorted(p for p in calibration.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[
            :200
        ]
        if calibration
        else []
    )
    if precision == "int8" and not images:
        raise typer.BadParameter(
            "int8 needs --calibration: a folder of training images (jpg or png)",
            param_hint="--calibration",
        )
    meta = export_model(
        ExportSpec.model_validate(
            {
                "weights": weights,
                "out": out or SHIPPED_MODEL,
                "imgsz": imgsz,
                "precision": precision,
                "model_version": version or weights.stem,
                "calibration_images": images,
            }
        )
    )
    typer.echo(meta.to_json())


if __name__ == "__main__":
    app()
