"""The dispatcher's hard negatives (written by its own writer, tests/models/conftest.py) as the
models side reads them: in the train split only, with empty labels, counted in the manifest;
``gridwatch evaluate`` on a kind folder reports false positives per image; ultralytics reads
the folder and trains with them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from models.cli import app
from models.dataset import DatasetSpec, build_dataset
from models.evaluate import evaluate_path
from simulators.composite import CLASSES, datasets_root

needs_data = pytest.mark.skipif(
    not (datasets_root() / "street-garbage").is_dir(), reason="shared datasets not present"
)


def names_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@needs_data
def test_hard_negatives_join_train_only_with_empty_labels_and_are_counted(
    hard_negatives: Path, tmp_path: Path
) -> None:
    built = build_dataset(DatasetSpec(out_dir=tmp_path, limit=2, hard_negatives=[hard_negatives]))
    det = built.train_yaml.parent
    train = names_in(det / "images" / "train")
    hard = sorted(n for n in train if n.startswith("hn"))
    assert hard == [
        "hn0_garbage_ticket7-ev1.jpg",
        "hn0_garbage_ticket7-ev2.jpg",
        "hn1_manhole_missing_ticket8-ev3.jpg",
    ]
    for name in hard:
        assert (det / "images" / "train" / name).resolve().is_relative_to(hard_negatives)
        assert (det / "labels" / "train" / f"{Path(name).stem}.txt").read_text() == ""
    for data_set in (det, built.composite_yaml.parent):
        for split in ("val", "test"):
            leaked = {n for n in names_in(data_set / "images" / split) if n.startswith("hn")}
            assert not leaked, (data_set, split)
    assert not {n for n in names_in(built.composite_yaml.parent / "images" / "train") if "hn" in n}

    assert built.counts["train"]["images_hard_negative"] == 3
    assert "images_hard_negative" not in built.counts["val"] | built.counts["test"]
    manifest = json.loads(built.manifest.read_text())
    section = manifest["hard_negatives"]
    assert section["counts"]["images"] == 3
    assert section["counts"]["by_kind"] == {"garbage": 2, "manhole_missing": 1}
    assert manifest["spec"]["hard_negatives"] == [str(hard_negatives)]
    assert [f["path"] for f in section["folders"]] == [
        str(hard_negatives / "garbage"),
        str(hard_negatives / "manhole_missing"),
    ]
    by_image = {r["image"]: r for r in section["images"]}
    assert by_image["hn1_manhole_missing_ticket8-ev3.jpg"] == {
        "image": "hn1_manhole_missing_ticket8-ev3.jpg",
        "source": str(hard_negatives / "manhole_missing" / "images" / "ticket8-ev3.jpg"),
        "kind": "manhole_missing",
        "objects": 0,
        "ticket_id": 8,
        "camera_id": "cam-03",
        "model_version": "det-test",
    }


@needs_data
def test_other_labelled_objects_are_kept_and_the_rejected_kind_dropped(
    hard_negatives: Path, tmp_path: Path
) -> None:
    """A person labelled the garbage folder further: an intact cover (kept, renumbered to the
    trained class id) and a heap (the rejected kind: dropped and counted)."""
    folder = tmp_path / "labelled" / "garbage"
    shutil.copytree(hard_negatives / "garbage", folder)
    (folder / "data.yaml").write_text(
        yaml.safe_dump({"names": ["garbage", "Manhole-OK"], "train": "images", "test": "images"})
    )
    (folder / "labels" / "ticket7-ev1.txt").write_text("1 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.1 0.1\n")
    built = build_dataset(DatasetSpec(out_dir=tmp_path / "out", limit=2, hard_negatives=[folder]))
    labels = built.train_yaml.parent / "labels" / "train"
    kept = (labels / "hn0_garbage_ticket7-ev1.txt").read_text()
    assert kept == f"{CLASSES.index('manhole_ok')} 0.500000 0.500000 0.200000 0.200000\n"
    assert (labels / "hn0_garbage_ticket7-ev2.txt").read_text() == ""
    counts = json.loads(built.manifest.read_text())["hard_negatives"]["counts"]
    assert (counts["images"], counts["objects_kept"], counts["labels_dropped_rejected_kind"]) == (
        2,
        1,
        1,
    )


def test_evaluate_on_a_kind_folder_reports_false_positives_per_image(
    fake_model: Path, hard_negatives: Path
) -> None:
    """The fake model fires garbage twice (0.9 and 0.6 at grey 255, over the 0.5 threshold)
    and manhole_missing once per image; a kind folder counts only its own kind."""
    garbage = evaluate_path(fake_model, hard_negatives / "garbage", "test")
    assert (garbage.images, garbage.negative_images) == (2, 2)
    assert garbage.fp_per_negative_image == 2.0
    assert list(garbage.classes) == ["garbage"] and garbage.classes["garbage"].fp == 4
    missing = hard_negatives / "manhole_missing"
    result = CliRunner().invoke(
        app, ["evaluate", "--model", str(fake_model), "--data", str(missing), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["images"], report["fp_per_negative_image"]) == (1, 1.0)


def test_ultralytics_reads_a_kind_folder_as_background_images(hard_negatives: Path) -> None:
    pytest.importorskip("ultralytics")
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(hard_negatives / "garbage" / "data.yaml"))
    assert data["names"] == {0: "garbage"}
    dataset = YOLODataset(img_path=data["train"], data=data, task="detect", imgsz=64)
    assert sorted(Path(x["im_file"]).name for x in dataset.labels) == [
        "ticket7-ev1.jpg",
        "ticket7-ev2.jpg",
    ]
    assert all(len(x["cls"]) == 0 for x in dataset.labels)


def test_smoke_training_took_the_hard_negatives(smoke_run: Path) -> None:
    """The smoke run's data (conftest) has them in train, and ultralytics read them there as
    background images, none rejected."""
    from ultralytics.data.utils import load_dataset_cache_file

    record = json.loads((smoke_run / "gridwatch_run.json").read_text())
    assert record["data"]["counts"]["train"]["images_hard_negative"] == 3
    assert len(record["recipe"]["hard_negatives"]) == 1
    train_yaml = Path(record["data"]["train_yaml"])
    cache = load_dataset_cache_file(train_yaml.parent / "labels" / "train.cache")
    hard = [x for x in cache["labels"] if Path(x["im_file"]).name.startswith("hn")]
    assert len(hard) == 3 and all(len(x["cls"]) == 0 for x in hard)


def test_train_refuses_a_hard_negatives_path_that_is_not_a_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--preset", "smoke", "--hard-negatives", str(tmp_path / "nope")]
    )
    assert result.exit_code == 2 and "not a folder" in result.output
