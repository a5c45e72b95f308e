"""Manhole composites: boxes are where the crops went, splits are disjoint, output is seeded."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from simulators.composite import (
    CROP_FOLDER_CLASS,
    CropRef,
    close_up_example,
    composite_scene,
    datasets_root,
    draw_boxes,
    list_crops,
    near_duplicate_groups,
    paste_cover,
    read_image,
    read_yolo_boxes,
    render_cover,
    rng_for,
    sample_look,
    split_crops,
)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "composite-check"
ROOT = datasets_root()
needs_data = pytest.mark.skipif(
    not (ROOT / "manhole-crops").is_dir(), reason="shared datasets not present"
)


def fake_crops(n_per_folder: int = 20) -> list[CropRef]:
    return [
        CropRef(path=Path(f"/x/{folder}/{folder}_{i:03d}.jpg"), folder=folder, class_name=cls)
        for folder, cls in CROP_FOLDER_CLASS.items()
        for i in range(n_per_folder)
    ]


def test_split_is_disjoint_complete_and_seeded() -> None:
    crops = fake_crops()
    split = split_crops(crops, seed=5, n_val=4, n_test=3)
    names = {s: {c.name for c in split[s]} for s in split}
    assert not names["train"] & names["val"]
    assert not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    assert set().union(*names.values()) == {c.name for c in crops}
    for folder in CROP_FOLDER_CLASS:
        assert sum(c.folder == folder for c in split["val"]) == 4
        assert sum(c.folder == folder for c in split["test"]) == 3
    assert split == split_crops(list(reversed(crops)), seed=5, n_val=4, n_test=3)
    assert split != split_crops(crops, seed=6, n_val=4, n_test=3)


def test_a_group_of_near_duplicates_stays_in_one_split() -> None:
    crops = fake_crops()
    names = [c.name for c in crops if c.folder == "broke"]
    groups = {n: names[0] for n in names[:6]}  # six copies of one photo
    for seed in range(20):
        split = split_crops(crops, seed=seed, n_val=4, n_test=3, groups=groups)
        holding = {s for s, members in split.items() for c in members if c.name in groups}
        assert len(holding) == 1, (seed, holding)
        assert sum(c.folder == "broke" for c in split["val"]) >= 4
        assert sum(c.folder == "broke" for c in split["test"]) >= 3


@needs_data
def test_near_duplicate_photos_are_grouped_and_never_split() -> None:
    crops = list_crops(ROOT / "manhole-crops")
    groups = near_duplicate_groups(crops)
    assert groups["broke/uncovered_circle128.jpg"] == groups["broke/uncovered_circle203.jpg"]
    assert groups["circle/circle_circle922.jpg"] == groups["circle/circle_circle988.jpg"]
    assert len(set(groups.values())) > 200  # most photos stand alone
    split = split_crops(crops, seed=0, groups=groups)
    owner = {groups[c.name]: s for s, members in split.items() for c in members}
    assert all(owner[groups[c.name]] == s for s, members in split.items() for c in members)


@pytest.mark.parametrize("seed", range(12))
def test_box_is_where_the_crop_was_put(seed: int) -> None:
    """A pure red crop on a grey scene: the red pixels' extent is the recorded box (±1 px)."""
    rng = np.random.default_rng(seed)
    crop = np.zeros((120, 90 + 10 * seed, 3), np.uint8)
    crop[:] = (0, 0, 255)
    scene = np.full((480, 640, 3), 100, np.uint8)
    look = sample_look(rng, crop.shape[:2]).model_copy(
        update={
            "light_match": 0.0,
            "gain": 1.0,
            "colour": (1.0, 1.0, 1.0),
            "noise_sigma": 0.0,
            "shadow": 0.0,
            "blur_sigma": 0.0,  # blur darkens the rim (colour mixed with the black canvas)
        }
    )
    patch, alpha = render_cover(crop, look, scene.shape[1])
    x, y = int(rng.integers(0, 640 - alpha.shape[1])), int(rng.integers(0, 480 - alpha.shape[0]))
    out, box = paste_cover(scene, patch, alpha, x, y, look, rng)
    red = out[:, :, 2].astype(int) - out[:, :, 1].astype(int) > 127  # R - G = 255 * alpha
    ys, xs = np.nonzero(red)
    found = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert np.abs(np.array(found) - np.array(box)).max() <= 1, (found, box)


@pytest.mark.parametrize("seed", range(8))
def test_close_up_box_is_the_cover_and_fills_most_of_the_frame(seed: int) -> None:
    """A pure red crop on a grey street: the box is the red area, 55-90 % of the frame wide or
    high (minus the rotation's corners), and the same seed draws the same image."""
    crop = np.zeros((100, 80 + 7 * seed, 3), np.uint8)
    crop[:] = (0, 0, 255)
    background = np.full((480, 640, 3), 100, np.uint8)
    img, obj = close_up_example(crop, background, rng_for(seed, "closeup", 0))
    again, same = close_up_example(crop, background, rng_for(seed, "closeup", 0))
    np.testing.assert_array_equal(img, again)
    assert obj == same
    x1, y1, x2, y2 = obj.box
    h, w = img.shape[:2]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert max((x2 - x1) / w, (y2 - y1) / h) > 0.45
    redness = img[:, :, 2].astype(int) - img[:, :, 1].astype(int)  # lit cover x alpha
    ys, xs = np.nonzero(redness > 0.6 * redness.max())
    assert xs.min() >= x1 - 2 and xs.max() < x2 + 2 and ys.min() >= y1 - 2 and ys.max() < y2 + 2


@needs_data
def test_real_composites_boxes_drawn_and_seeded() -> None:
    """Composite a few real scenes; save them with boxes drawn for a visual check."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    crops = split_crops(list_crops(ROOT / "manhole-crops"), seed=0)["test"]
    scenes = sorted((ROOT / "street-garbage" / "images" / "test").glob("*.jpg"))[:4]
    for i, scene_path in enumerate(scenes):
        scene = read_image(scene_path)
        hw = scene.shape[:2]
        label = ROOT / "street-garbage" / "labels" / "test" / f"{scene_path.stem}.txt"
        avoid = [b for _, b in read_yolo_boxes(label, hw)]
        picks = [(c, read_image(c.path)) for c in crops[i::10][:2]]
        a, placed_a = composite_scene(scene, picks, rng_for(0, "check", i), avoid)
        b, placed_b = composite_scene(scene, picks, rng_for(0, "check", i), avoid)
        np.testing.assert_array_equal(a, b)
        assert placed_a == placed_b and placed_a
        for p in placed_a:
            x1, y1, x2, y2 = p.box
            assert 0 <= x1 < x2 <= hw[1] and 0 <= y1 < y2 <= hw[0]
            assert all(
                max(0, min(x2, g[2]) - max(x1, g[0])) * max(0, min(y2, g[3]) - max(y1, g[1]))
                <= 0.05 * (x2 - x1) * (y2 - y1) + 1
                for g in avoid
            )
            # the patch changed the pixels inside its box
            assert np.abs(a[y1:y2, x1:x2].astype(int) - scene[y1:y2, x1:x2]).mean() > 3
        cv2.imwrite(str(ARTIFACTS / f"composite_{i}.jpg"), draw_boxes(a, placed_a))


@needs_data
def test_built_dataset_keeps_crop_splits_apart(tmp_path: Path) -> None:
    from models.dataset import DatasetSpec, build_dataset

    built = build_dataset(DatasetSpec(out_dir=tmp_path, limit=6))
    manifest = json.loads(built.manifest.read_text())
    split_names = {s: set(v) for s, v in manifest["crop_split"].items()}
    assert not split_names["train"] & split_names["val"]
    assert not split_names["train"] & split_names["test"]
    assert not split_names["val"] & split_names["test"]
    for split, records in manifest["images"].items():
        used = {o["source"] for r in records for o in r["objects"] if o["class_name"] != "garbage"}
        assert used and used <= split_names[split], split
    for split in ("train", "val", "test"):
        images = sorted((built.train_yaml.parent / "images" / split).iterdir())
        labels = built.train_yaml.parent / "labels" / split
        assert images and all((labels / f"{p.stem}.txt").is_file() for p in images)
