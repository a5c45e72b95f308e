"""Reading any YOLO folder the way ultralytics reads it: yaml paths, label paths, polygons."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from models.yolo_data import (
    CorruptLabelError,
    YoloDataError,
    class_key,
    label_path_for,
    load_yolo_folder,
    parse_label_lines,
)


def image(path: Path, size: tuple[int, int] = (32, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 128, np.uint8))
    return path


def write_yaml(path: Path, doc: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_roboflow_export_layout(tmp_path: Path) -> None:
    """``test: ../test/images`` beside the yaml (ultralytics strips the ``../``), names a list."""
    root = tmp_path / "export"
    write_yaml(
        root / "data.yaml",
        {
            "train": "../train/images",
            "val": "../valid/images",
            "test": "../test/images",
            "nc": 1,
            "names": ["Garbage"],
        },
    )
    b = image(root / "test" / "images" / "b.jpg")
    a = image(root / "test" / "images" / "a.jpg")
    image(root / "valid" / "images" / "v.jpg")
    (root / "test" / "labels").mkdir()
    (root / "test" / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    folder = load_yolo_folder(root)
    assert folder.names == ("Garbage",)
    assert folder.images("test") == [a.resolve(), b.resolve()]
    assert [p.name for p in folder.images("val")] == ["v.jpg"]
    cls, boxes = folder.labels(folder.images("test")[0], "test", (32, 48))
    assert cls.tolist() == [0]
    np.testing.assert_allclose(boxes, [[12, 8, 36, 24]])
    assert folder.labels(folder.images("test")[1], "test", (32, 48))[0].size == 0
    with pytest.raises(YoloDataError, match=r"'train: \.\./train/images' does not exist"):
        folder.images("train")


def test_path_key_relative_to_the_yaml_and_a_folder_without_images_component(
    tmp_path: Path,
) -> None:
    data = tmp_path / "elsewhere" / "ds"
    yaml_path = write_yaml(
        tmp_path / "cfg" / "holdout.yaml",
        {"path": "../elsewhere/ds", "test": "pics/holdout", "names": {"0": "a", "1": "b"}},
    )
    img = image(data / "pics" / "holdout" / "sub" / "x.png")
    (img.parent / "x.txt").write_text("1 0.5 0.5 1 1\n")  # no /images/: label beside the image
    folder = load_yolo_folder(yaml_path)
    assert folder.root == data.resolve() and folder.names == ("a", "b")
    assert folder.images("test") == [img.resolve()]  # listed recursively, as ultralytics does
    assert folder.labels(img.resolve(), "test", (32, 48))[0].tolist() == [1]


def test_a_txt_list_of_images(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    a = image(root / "images" / "all" / "a.jpg")
    b = image(root / "images" / "all" / "b.jpg")
    c = image(tmp_path / "other" / "images" / "c.jpg")
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "test.txt").write_text(f"./../images/all/a.jpg\nimages/all/b.jpg\n\n{c}\n")
    write_yaml(root / "data.yaml", {"path": ".", "test": "splits/test.txt", "names": ["x"]})
    folder = load_yolo_folder(root / "data.yaml")
    listed = folder.images("test")
    assert sorted(p.resolve() for p in listed) == sorted([a.resolve(), b.resolve(), c.resolve()])
    assert folder.label_path(c) == tmp_path / "other" / "labels" / "c.txt"


def test_split_without_key_falls_back_to_images_split_and_errors_name_what_exists(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ds"
    img = image(root / "images" / "holdout" / "a.jpg")
    write_yaml(root / "data.yaml", {"names": ["x"], "val": "images/val"})
    folder = load_yolo_folder(root)
    assert folder.images("holdout") == [img.resolve()]
    with pytest.raises(YoloDataError) as err:
        folder.images("test")
    assert "no 'test:' key and no images/test folder" in str(err.value)
    assert "holdout" in str(err.value) and "val" in str(err.value)
    with pytest.raises(YoloDataError, match="does not exist"):
        folder.images("val")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"names": {0: "a", 2: "b"}}, "class ids 0..1"),
        ({"names": ["a", "b"], "nc": 3}, "'nc' is 3"),
        ({"names": ["a", "b"], "nc": "two"}, "'nc' is two"),
        ({"names": "a b"}, "list or a mapping"),
        ({"test": "images/test"}, "'names' is missing"),
        ({"names": []}, "empty"),
    ],
)
def test_bad_names_are_clear_errors(tmp_path: Path, doc: dict[str, object], message: str) -> None:
    with pytest.raises(YoloDataError, match=message):
        load_yolo_folder(write_yaml(tmp_path / "data.yaml", doc))


def test_names_as_string_keyed_map_and_integer_like_nc(tmp_path: Path) -> None:
    doc = {"names": {"1": "b", "0": "a"}, "nc": "2"}
    assert load_yolo_folder(write_yaml(tmp_path / "data.yaml", doc)).names == ("a", "b")
    only_nc = write_yaml(tmp_path / "n" / "data.yaml", {"nc": 2})
    assert load_yolo_folder(only_nc).names == ("class_0", "class_1")


def test_bad_yaml_and_missing_yaml(tmp_path: Path) -> None:
    with pytest.raises(YoloDataError, match=r"no data\.yaml"):
        load_yolo_folder(tmp_path)
    (tmp_path / "data.yaml").write_text("names: [a\n")
    with pytest.raises(YoloDataError, match="not valid YAML"):
        load_yolo_folder(tmp_path)
    with pytest.raises(YoloDataError, match="no such folder"):
        load_yolo_folder(tmp_path / "nope")


def test_class_key_ignores_case_and_separators() -> None:
    assert class_key("Garbage") == class_key("garbage")
    assert (
        class_key("Manhole-Missing") == class_key("manhole_missing") == class_key("manhole missing")
    )
    assert class_key("manhole_ok") != class_key("manhole_broken")


def test_label_paths_are_ultralytics_label_paths() -> None:
    pytest.importorskip("ultralytics")
    from ultralytics.data.utils import img2label_paths

    paths = [
        "/d/images/test/a.jpg",
        "/d/images/x/images/b.c.png",
        "/d/test/images/c.JPG",
        "/d/pics/d.jpg",
        "/images/e.jpeg",
    ]
    assert [str(label_path_for(Path(p))) for p in paths] == img2label_paths(paths)


LABEL_TEXTS = [
    "0 0.5 0.5 0.2 0.2\n1 0.1 0.2 0.1 0.1\n",
    "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n",  # a duplicate row
    "1 0.1 0.1 0.4 0.1 0.4 0.3 0.1 0.3\n0 0.5 0.5 0.9 0.6 0.7 0.9\n",  # polygons
    "1 0.1 0.1 0.4 0.1 0.4 0.3\n1 0.1 0.1 0.4 0.3 0.2 0.2\n",  # two polygons, one box
    "\ufeff0 0.5 0.5 0.2 0.2\n\n",  # a byte-order mark and a blank line
    "",
    "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.4 0.1 0.4 0.3 0.1 0.3\n",  # mixed rows
    "2 0.5 0.5 0.2 0.2\n",  # class 2 of a 2-class set
    "0 0.5 0.5 1.2 0.2\n",  # out of bounds
    "0 0.5 0.5 0.2\n",  # 4 fields
    "0 0.5 0.5 0.2 0.2 0.1\n",  # 6 fields
    "0.5 0.5 0.5 0.2 0.2\n",  # non-integer class
    "0 a 0.5 0.2 0.2\n",  # not a number
    "0 0.1 0.1 0.4 0.1 0.4\n",  # an odd number of polygon coordinates
    "-1 0.5 0.5 0.2 0.2\n",
]


@pytest.mark.parametrize("text", LABEL_TEXTS)
def test_label_rows_are_ultralytics_rows(tmp_path: Path, text: str) -> None:
    """Our rows (boxes from polygons, duplicates removed) or our rejection = ultralytics'."""
    pytest.importorskip("ultralytics")
    from ultralytics.data.utils import verify_image_label

    img = image(tmp_path / "images" / "a.jpg")
    label = tmp_path / "labels" / "a.txt"
    label.parent.mkdir()
    label.write_text(text, encoding="utf-8")
    result = verify_image_label((str(img), str(label), "", False, 2, 0, 0, False))
    theirs_corrupt = result[8] == 1
    try:
        ours = parse_label_lines(label.read_text(encoding="utf-8-sig"), 2, label)
    except CorruptLabelError:
        assert theirs_corrupt, result[-1]
        return
    assert not theirs_corrupt, result[-1]
    np.testing.assert_allclose(ours, result[1], rtol=0, atol=1e-6)


def test_label_file_with_polygons_gives_pixel_boxes(tmp_path: Path) -> None:
    write_yaml(tmp_path / "data.yaml", {"names": ["a", "b"]})
    img = image(tmp_path / "images" / "test" / "p.jpg", (100, 200))
    (tmp_path / "labels" / "test").mkdir(parents=True)
    (tmp_path / "labels" / "test" / "p.txt").write_text("1 0.1 0.2 0.5 0.2 0.3 0.6\n")
    folder = load_yolo_folder(tmp_path)
    cls, boxes = folder.labels(img, "test", (100, 200))
    assert cls.tolist() == [1]
    np.testing.assert_allclose(boxes, [[20, 20, 100, 60]], atol=1e-4)
