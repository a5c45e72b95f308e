"""The motion gate on synthetic frames: static scenes are skipped but still checked, slow changes
and motion run the detector, masked regions do not."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edge.motion import MotionGate
from edge.settings import MotionSettings


def street(seed: int = 1, h: int = 360, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=(h // 8, w // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 8, axis=0), 8, axis=1)


def noisy(img: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_static_scene_is_skipped_but_checked_periodically() -> None:
    gate = MotionGate(MotionSettings(static_check_s=30))
    rng = np.random.default_rng(0)
    img = street()
    frames = [noisy(img, rng) for _ in range(7)]  # sensor noise differs from frame to frame
    reasons: Counter[str] = Counter()
    runs = []
    for i in range(240):  # 2 minutes at 2 fps
        t = i * 0.5
        d = gate.observe(frames[i % 7], t)
        reasons[d.reason] += 1
        if d.run:
            runs.append(t)
    assert runs == [0.0, 30.0, 60.0, 90.0]
    assert reasons["first"] == 1 and reasons["periodic"] == 3
    assert gate.skipped_ratio == pytest.approx(236 / 240)


def test_an_object_appearing_runs_the_detector_at_once() -> None:
    gate = MotionGate(MotionSettings())
    img = street()
    gate.observe(img, 0.0)
    gate.observe(img, 0.5)
    with_pile = img.copy()
    with_pile[250:320, 300:380] = (30, 90, 160)  # about 2.4% of the frame
    d = gate.observe(with_pile, 1.0)
    assert d.run and d.reason == "motion"
    assert not gate.observe(with_pile, 1.5).run


def test_a_slow_change_is_not_missed() -> None:
    """Dumping over minutes: each step is below the motion threshold, the sum is not."""
    gate = MotionGate(MotionSettings(static_check_s=3600))
    img = street(h=180, w=320).astype(np.float32)
    runs = []
    for i in range(600):  # 5 minutes at 2 fps
        t = i * 0.5
        frame = img.copy()
        grown = int(i * 0.075)  # the pile grows by one row every few seconds
        frame[150 - grown : 150, 140:200] = (20, 60, 120)
        d = gate.observe(frame.astype(np.uint8), t)
        assert d.reason != "motion"
        if d.run:
            runs.append((t, d.reason))
    assert runs[0] == (0.0, "first")
    slow = [t for t, r in runs[1:] if r == "slow_change"]
    assert slow, "the growing pile never ran the detector"
    assert slow[0] < 120


def test_dusk_is_a_slow_change() -> None:
    gate = MotionGate(MotionSettings(static_check_s=3600))
    img = street(h=180, w=320).astype(np.float32)
    reasons = []
    for i in range(1200):  # 10 minutes, the light drops to 40 %
        d = gate.observe((img * (1 - 0.6 * i / 1200)).astype(np.uint8), i * 0.5)
        if d.run:
            reasons.append(d.reason)
    assert "motion" not in reasons
    assert reasons.count("slow_change") >= 2


def test_changes_under_a_mask_do_not_run_the_detector() -> None:
    road = [(0.0, 0.0), (1.0, 0.0), (1.0, 0.5), (0.0, 0.5)]
    gate = MotionGate(MotionSettings(), masks=[road])
    img = street()
    gate.observe(img, 0.0)
    for i in range(1, 40):
        frame = img.copy()
        x = (i * 37) % 560
        frame[20:150, x : x + 80] = 255  # traffic in the masked upper half
        assert not gate.observe(frame, i * 0.5).run
    frame = img.copy()
    frame[250:330, 100:200] = 0  # the same in the open lower half
    assert gate.observe(frame, 20.0).reason == "motion"


def test_forced_runs_and_a_disabled_gate() -> None:
    gate = MotionGate(MotionSettings())
    img = street()
    gate.observe(img, 0.0)
    assert gate.observe(img, 0.5, force=True).reason == "forced"
    off = MotionGate(MotionSettings(enabled=False))
    assert all(off.observe(img, i * 0.5).run for i in range(10))
