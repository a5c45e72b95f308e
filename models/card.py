"""The measured part of ``models/MODEL_CARD.md``: written by ``ship`` from what it measured.

The card's prose (data, licences, choices, failure modes) is written by people; the section
between ``<!-- measured:begin -->`` and ``<!-- measured:end -->`` is this module's output, so
the figures in the card are always those of the shipped file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from config.markdown import write_section
from edge.detect.metadata import ModelMetadata
from models.offline import REPO_ROOT

MODEL_CARD = REPO_ROOT / "models" / "MODEL_CARD.md"
SECTION = "measured"


def _f(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _detail(report: dict[str, Any], key: str, default: object) -> object:
    """An evaluate summary's extra figure: under ``details`` (records written before it moved
    there have it at the top level)."""
    details = report.get("details")
    if isinstance(details, dict) and key in details:
        return details[key]
    return report.get(key, default)


def metrics_table(reports: dict[str, dict[str, Any]]) -> list[str]:
    """One row per (data set/split, class) with the evaluate figures."""
    lines = [
        "| data / split | class | AP50 | AP50-95 | precision | recall | boxes | images |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, report in reports.items():
        for name, c in report["classes"].items():
            lines.append(
                f"| {key} | {name} | {_f(c['ap50'])} | {_f(c['ap50_95'])} | "
                f"{_f(c['precision'])} | {_f(c['recall'])} | {c['support']} | {report['images']} |"
            )
    lines.append("")
    lines.append(
        "False positives per image without objects (at the operating thresholds): "
        + "; ".join(
            f"{key} {_f(r.get('fp_per_negative_image'))} over {_detail(r, 'negative_images', 0)} "
            "images"
            for key, r in reports.items()
        )
        + "."
    )
    return lines


def epochs_table(val_per_class: Path) -> list[str]:
    """Val AP50 per class after each epoch of the training run (ultralytics' own val)."""
    if not val_per_class.is_file():
        return ["(the run's per-epoch log is not available)"]
    rows = [json.loads(line) for line in val_per_class.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if not r.get("final_validation_of_best")]
    if not rows:
        return ["(no epoch was validated)"]
    names = list(rows[0]["classes"])
    lines = [
        "| epoch | mAP50 | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in rows:
        per = " | ".join(_f(r["classes"].get(n, {}).get("ap50")) for n in names)
        lines.append(f"| {r['epoch']} | {_f(r['map50'])} | {per} |")
    return lines


def precision_table(
    meta: ModelMetadata, reports: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]]
) -> list[str]:
    """AP50 of the shipped file next to the same checkpoint at fp32, per split and class."""
    lines = [
        f"| data / split | class | AP50 {meta.precision} | AP50 fp32 | difference |",
        "|---|---|---|---|---|",
    ]
    for key, report in reports.items():
        for name, c in report["classes"].items():
            ref = reference.get(key, {}).get("classes", {}).get(name)
            if ref is None:
                continue
            diff = c["ap50"] - ref["ap50"]
            lines.append(f"| {key} | {name} | {_f(c['ap50'])} | {_f(ref['ap50'])} | {diff:+.3f} |")
    return lines


def render(
    meta: ModelMetadata,
    model_path: Path,
    evaluation: dict[str, Any],
    run_record: dict[str, Any],
    run_dir: Path,
) -> str:
    """The measured section of the card for one shipped model (``evaluation``: the contents of
    its ``.eval.json``)."""
    reports: dict[str, dict[str, Any]] = evaluation["reports"]
    reference: dict[str, dict[str, Any]] | None = evaluation.get("fp32_reference")
    recipe = run_record.get("recipe", {})
    host = run_record.get("host", {})
    seconds = run_record.get("train_seconds") or 0
    resumed = run_record.get("resumed_train_seconds") or 0
    device = run_record.get("device", "?")
    lines = [
        f"Written by `gridwatch export --run {run_dir.name}` (models/ship.py) on "
        f"{meta.created:%Y-%m-%d %H:%M} UTC from commit `{meta.commit}`."
        if meta.created
        else "Written by models/ship.py.",
        "",
        "| item | value |",
        "|---|---|",
        f"| file | `{model_path.name}`, {model_path.stat().st_size / 1e6:.1f} MB, "
        f"{meta.precision}, input {meta.input_size[1]}x{meta.input_size[0]} |",
        f"| version | `{meta.model_version}` |",
        f"| architecture | {meta.architecture}, output layout {meta.layout}, NMS IoU {meta.iou} |",
        f"| classes | {', '.join(meta.classes)} |",
        f"| recipe | `{recipe.get('name')}`: {recipe.get('model')} from "
        f"{recipe.get('start') or 'random init'}, {recipe.get('epochs')} epochs, "
        f"batch {recipe.get('batch')}, mosaic {recipe.get('mosaic')}, seed {recipe.get('seed')}, "
        f"data seed {recipe.get('data_seed')} |",
        f"| trained on | {'GPU' if device != 'cpu' else 'CPU'} ({host.get('processor') or host.get('machine')}), "
        f"{(seconds + resumed) / 3600:.1f} h, torch {host.get('torch')}, "
        f"ultralytics {host.get('ultralytics')} |",
        f"| checkpoint | {meta.notes} |",
        "| operating thresholds (best F1 on val) | "
        + ", ".join(f"{k} {v:.2f}" for k, v in meta.thresholds.items())
        + " |",
        "",
        "Measured with `gridwatch evaluate` (onnxruntime, the edge's own letterbox and NMS) on "
        "the street-garbage photos as they are and on the manhole composites (synthetic "
        "placements of real cover photos into real street photos, plus the covers' own "
        "photos as full frames; **not** camera footage):",
        "",
        *metrics_table(reports),
        "",
        *(
            [
                f"What {meta.precision} costs: the same checkpoint exported at fp32 with the "
                "same thresholds, on the same images:",
                "",
                *precision_table(meta, reports, reference),
                "",
            ]
            if reference
            else []
        ),
        "Val AP50 per class after each training epoch (ultralytics' val on the combined val "
        "split; the run's `val_per_class.jsonl`):",
        "",
        *epochs_table(run_dir / "val_per_class.jsonl"),
    ]
    return "\n".join(lines)


def write_card(
    meta: ModelMetadata,
    model_path: Path,
    evaluation: dict[str, Any],
    run_record: dict[str, Any],
    run_dir: Path,
    card: Path = MODEL_CARD,
) -> Path:
    """Rewrite the card's measured section for the model just shipped."""
    return write_section(card, SECTION, render(meta, model_path, evaluation, run_record, run_dir))
