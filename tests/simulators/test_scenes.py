"""Street-scene videos: frames show the objects exactly while the ground truth says so."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from simulators.composite import datasets_root
from simulators.scenes import SceneObject, SceneSpec, TransientObject, make_scene_video, read_truth

pytestmark = pytest.mark.skipif(
    not (datasets_root() / "street-garbage").is_dir(), reason="shared datasets not present"
)


def frames_of(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


SPEC = SceneSpec(
    width=320,
    height=192,
    fps=5,
    duration_s=4,
    objects=[
        SceneObject(kind="garbage", appear_s=1.0, disappear_s=3.0, width_frac=0.25),
        SceneObject(kind="manhole_missing", appear_s=2.0, width_frac=0.2),
    ],
    transients=[TransientObject(enter_s=0.4, duration_s=0.8)],
    noise_sigma=1.0,
    drift=0.0,
)


def test_video_and_truth_agree(tmp_path: Path) -> None:
    truth = make_scene_video(SPEC, tmp_path / "s.mp4", seed=11)
    assert read_truth(tmp_path / "s.json") == truth
    frames = frames_of(tmp_path / "s.mp4")
    assert len(frames) == truth.frames == 20
    assert frames[0].shape == (192, 320, 3)
    garbage, manhole, transient = truth.objects
    assert (garbage.class_name, manhole.class_name, transient.class_name) == (
        "garbage",
        "manhole_missing",
        "transient",
    )

    def region_change(obj_box: tuple[float, float, float, float], a: int, b: int) -> float:
        x1, y1, x2, y2 = (int(v * s) for v, s in zip(obj_box, (320, 192, 320, 192), strict=True))
        return float(np.abs(frames[a][y1:y2, x1:x2].astype(int) - frames[b][y1:y2, x1:x2]).mean())

    # garbage: absent at t=0.0 (frame 0), present at t=2.0 (frame 10), gone at t=3.4 (frame 17)
    assert region_change(garbage.box, 0, 10) > 10
    assert region_change(garbage.box, 0, 17) < 4
    # manhole: appears at 2 s and stays
    assert region_change(manhole.box, 5, 19) > 10
    assert region_change(manhole.box, 12, 19) < 4
    # transient: in view only between 0.4 s and 1.2 s, one box per frame, moving right
    assert transient.track is not None and len(transient.track) == 4
    assert transient.appear_s == pytest.approx(0.4) and transient.disappear_s == pytest.approx(1.2)
    xs = [box[0] for _, box in transient.track]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    assert [o.id for o in truth.visible_at(2.5)] == [0, 1]
    assert truth.visible_at(0.6, transients=True)[-1].class_name == "transient"


def test_same_seed_same_video(tmp_path: Path) -> None:
    a = make_scene_video(SPEC, tmp_path / "a.mp4", seed=3)
    b = make_scene_video(SPEC, tmp_path / "b.mp4", seed=3)
    c = make_scene_video(SPEC, tmp_path / "c.mp4", seed=4)
    assert a.objects == b.objects and a.background == b.background
    assert (a.objects, a.background) != (c.objects, c.background)
    for fa, fb in zip(frames_of(tmp_path / "a.mp4"), frames_of(tmp_path / "b.mp4"), strict=True):
        np.testing.assert_array_equal(fa, fb)


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="disappear_s"):
        SceneObject(kind="garbage", appear_s=5, disappear_s=2)
    with pytest.raises(ValidationError, match="colour"):
        SceneSpec.model_validate({"colour": "red"})
    with pytest.raises(ValidationError):
        SceneObject.model_validate({"kind": "cat", "appear_s": 1})
