"""Our evaluate against ultralytics' own val on the same model and real images, through a
mirror that writes nothing into the data folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from models.crosscheck import crosscheck, mirror_yolo_folder
from models.evaluate import evaluate_path
from simulators.composite import datasets_root
from tests.models.conftest import FAKE_CLASSES

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "weights" / "gridwatch-det.onnx"
SHIPPED_PT = SHIPPED.with_suffix(".pt")
TOLERANCE = 0.01


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    """Every path under ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime)
    return out


def test_mirror_links_files_in_real_folders_and_renumbers_labels(
    tiny_data: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    shutil.copytree(tiny_data, src)
    (src / "labels" / "test" / "img3.txt").write_text("5 0.5 0.5 0.1 0.1\n")  # no class 5
    before = snapshot(src)
    out = mirror_yolo_folder(src, tmp_path / "mirror", "test", FAKE_CLASSES)
    assert snapshot(src) == before
    mirror = out.parent
    images, labels = mirror / "images" / "test", mirror / "labels" / "test"
    assert not images.is_symlink() and not labels.is_symlink()
    links = sorted(images.iterdir())
    assert [p.name for p in links] == ["000000_img1.png", "000001_img2.png", "000002_img3.png"]
    assert all(p.is_symlink() for p in links)
    assert links[0].resolve() == (src / "images" / "test" / "img1.png").resolve()
    # data {0: manhole_ok, 1: garbage} -> model (garbage, manhole_missing, manhole_ok)
    img1 = (labels / "000000_img1.txt").read_text().splitlines()
    assert [line.split()[0] for line in img1] == ["0", "2"]
    assert (labels / "000002_img3.txt").read_text().split()[0] == "3"  # still out of range
    assert not any(p.is_symlink() for p in labels.iterdir())
    doc = yaml.safe_load(out.read_text())
    assert doc["names"] == dict(enumerate(FAKE_CLASSES)) and doc["val"] == "images/test"


def real_subset(dst: Path, count: int = 16) -> Path:
    """``count`` real street-garbage test photos with their labels, as a Roboflow export
    (``test: ../test/images``, names ``[Garbage]``), plus a corrupt file and a photo whose
    label file has a class the data does not define: both skipped by both sides."""
    root = datasets_root() / "street-garbage"
    if not root.is_dir():
        pytest.skip("shared datasets not present")
    images = sorted((root / "images" / "test").glob("*.jpg"))[:count]
    (dst / "test" / "images").mkdir(parents=True)
    (dst / "test" / "labels").mkdir(parents=True)
    for img in images:
        shutil.copyfile(img, dst / "test" / "images" / img.name)
        label = root / "labels" / "test" / f"{img.stem}.txt"
        if label.is_file():
            shutil.copyfile(label, dst / "test" / "labels" / label.name)
    (dst / "test" / "images" / "zz_corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    shutil.copyfile(images[0], dst / "test" / "images" / "zz_badlabel.jpg")
    (dst / "test" / "labels" / "zz_badlabel.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    (dst / "data.yaml").write_text(
        yaml.safe_dump({"test": "../test/images", "nc": 1, "names": ["Garbage"]})
    )
    return dst


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model yet")
def test_shipped_onnx_ap_agrees_with_ultralytics_val(tmp_path: Path) -> None:
    """``python -m models.crosscheck`` on the shipped ONNX and real photos: AP50 and AP50-95
    from our evaluate and from ultralytics' val (its ONNX backend) within 0.01."""
    pytest.importorskip("ultralytics")
    data = real_subset(tmp_path / "subset")
    shared = datasets_root() / "street-garbage"
    before, shared_before = snapshot(data), snapshot(shared)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "models.crosscheck", "--model", str(SHIPPED)),
            *("--data", str(data), "--split", "test", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    check = json.loads(done.stdout)
    garbage = check["classes"]["garbage"]
    print("crosscheck shipped onnx:", json.dumps(garbage))
    assert check["agrees"] and check["images"] == 16 and garbage["support"] > 0
    assert abs(garbage["ap50"] - garbage["ultralytics_ap50"]) <= TOLERANCE
    assert abs(garbage["ap50_95"] - garbage["ultralytics_ap50_95"]) <= TOLERANCE
    # the mirror changes nothing: the figures are those of evaluate on the folder itself
    direct = evaluate_path(SHIPPED, data, "test")
    assert direct.images == 16 and len(direct.skipped) == 2
    assert direct.classes["garbage"].ap50 == pytest.approx(garbage["ap50"], abs=1e-12)
    assert direct.classes["garbage"].ap50_95 == pytest.approx(garbage["ap50_95"], abs=1e-12)
    assert snapshot(data) == before and snapshot(shared) == shared_before


@pytest.mark.slow
@pytest.mark.parametrize("which", ["smoke", "shipped"])
def test_checkpoint_ap_agrees_with_ultralytics_val(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The .pt path (torch on the edge's square letterbox) against ultralytics' val of the same
    checkpoint at the same size (``rect=False``). The 1-epoch smoke model finds nothing (AP 0
    on both sides: the plumbing only); the shipped checkpoint, once there, gives real figures."""
    if which == "shipped":
        if not SHIPPED_PT.is_file():
            pytest.skip("no shipped checkpoint yet")
        weights = SHIPPED_PT
    else:
        weights = request.getfixturevalue("smoke_run") / "weights" / "best.pt"
    data = real_subset(tmp_path / "subset", count=12)
    check = crosscheck(weights, data, "test")
    garbage = check.classes["garbage"]
    print(f"crosscheck {which} pt:", garbage.model_dump())
    assert check.images == 12 and garbage.support > 0
    assert garbage.difference is not None and garbage.difference <= TOLERANCE
    assert check.agrees(TOLERANCE)
    if which == "shipped":
        assert garbage.ap50 is not None and garbage.ap50 > 0.3


def test_crosscheck_command_errors_are_one_line(fake_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    from typer.testing import CliRunner

    from models.crosscheck import app

    result = CliRunner().invoke(
        app, ["--model", str(fake_model), "--data", str(tmp_path / "none"), "--split", "test"]
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no such folder" in result.stderr and "Traceback" not in result.output
