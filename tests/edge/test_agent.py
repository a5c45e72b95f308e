"""The agent end to end against the real Mosquitto, with the tiny known-behaviour detector:
events with evidence and position, zones and masks, live config, commands, bad input."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import onnxruntime as ort
import pytest
import yaml

from broker import topics
from broker.messages import CameraOverride, Command, DeviceConfig, ModelRef
from broker.mosquitto import MosquittoServer, free_port
from config.site import ClassRule, Site
from edge.agent import EdgeAgent
from edge.settings import load_edge_settings
from edge.sources import ImageFolderSource
from tests.conftest import wait_until
from tests.edge.conftest import (
    FAKE_BOX,
    ListenerFactory,
    camera,
    clear_retained,
    edge_yaml,
    image_sequence,
)

FAST = {
    "garbage": {"confirm_hits": 2, "confirm_checks": 3, "confirm_seconds": 1, "clear_seconds": 2}
}


@contextmanager
def running(path: Path) -> Iterator[EdgeAgent]:
    agent = EdgeAgent(load_edge_settings(path))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def drained(agent: EdgeAgent) -> bool:
    return agent.finished() and agent.outbox is not None and agent.outbox.depth == 0


def test_a_pile_for_35_seconds_is_one_new_and_one_cleared(
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    listen: ListenerFactory,
    fake_model: Path,
) -> None:
    present = [5 <= i / 2 < 40 for i in range(140)]  # 70 s at 2 fps; the pile from 5 s to 40 s
    frames = image_sequence(tmp_path / "frames", present)
    listener = listen()
    clear_retained(listener)
    path = edge_yaml(
        tmp_path,
        site,
        mosquitto.port,
        [camera("cam-01", frames, realtime=False)],
        detector={"type": "onnx", "model": str(fake_model), "threads": 1},
    )
    with running(path) as agent:
        wait_until(lambda: drained(agent), 60)
        wait_until(lambda: len(listener.camera_events()) >= 2, 10)
        worker = agent.workers["cam-01"]
        assert isinstance(worker.source, ImageFolderSource)
        epoch = worker.source.epoch
        wait_until(lambda: (s := listener.last_status()) and s.cameras and s.cameras[0].checks, 10)
    events = listener.camera_events()
    assert [e.state for e in events] == ["new", "cleared"]
    new, cleared = events
    assert (new.ts - epoch).total_seconds() == pytest.approx(15.0)  # appeared at 5 s, T = 10 s
    assert (cleared.ts - epoch).total_seconds() == pytest.approx(60.0)  # gone at 40 s + 20 s
    assert new.first_seen is not None and (new.first_seen - epoch).total_seconds() == 5.0
    assert new.track_id == cleared.track_id and new.seq < cleared.seq
    assert new.kind == "garbage" and new.model_version == "fake-1"
    assert new.bbox == pytest.approx(FAKE_BOX, abs=0.01)
    assert new.position is not None
    assert 39.95622 <= new.position.lat <= 39.9564 and 116.4164 <= new.position.lon <= 116.4166
    assert new.snapshot is not None and new.snapshot.jpeg()[:2] == b"\xff\xd8"
    assert new.snapshot.crop() is not None and new.snapshot.width == 640
    assert cleared.snapshot is None
    status = listener.last_status()
    assert status is not None and status.model == "fake-det.onnx"
    cam = status.cameras[0]
    assert cam.camera_id == "cam-01" and cam.checks > 0 and cam.inference_ms is not None
    # the detector ran only while something was changing or waiting to be confirmed/cleared
    assert 0.3 < cam.skipped_ratio < 0.9


def test_masked_and_out_of_zone_piles_yield_nothing(
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    listen: ListenerFactory,
    fake_model: Path,
) -> None:
    present = [5 <= i / 2 < 30 for i in range(120)]
    frames = image_sequence(tmp_path / "frames", present)
    mask = [[0.3, 0.2], [0.7, 0.2], [0.7, 0.8], [0.3, 0.8]]  # over the pile
    elsewhere = [[0.0, 0.8], [0.3, 0.8], [0.3, 1.0], [0.0, 1.0]]  # a zone away from it
    listener = listen()
    clear_retained(listener)
    path = edge_yaml(
        tmp_path,
        site,
        mosquitto.port,
        [
            camera("cam-open", frames, realtime=False),
            camera("cam-masked", frames, realtime=False, masks=[mask]),
            camera("cam-zoned", frames, realtime=False, zones=[elsewhere]),
        ],
        detector={"type": "onnx", "model": str(fake_model), "threads": 1},
    )
    with running(path) as agent:
        wait_until(lambda: drained(agent), 60)
        wait_until(lambda: listener.camera_events("cam-open"), 10)
    assert [e.state for e in listener.camera_events("cam-open")] == ["new", "cleared"]
    assert listener.camera_events("cam-masked") == []
    assert listener.camera_events("cam-zoned") == []


def test_live_config_applies_a_mask_without_restart_and_rejects_a_bad_one(
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    listen: ListenerFactory,
    fake_model: Path,
) -> None:
    frames = image_sequence(tmp_path / "frames", [True] * 8)
    listener = listen()
    clear_retained(listener)
    path = edge_yaml(
        tmp_path,
        site,
        mosquitto.port,
        [camera("cam-01", frames, loop=True, sample_fps=4, classes=FAST)],
        detector={"type": "onnx", "model": str(fake_model), "threads": 1},
    )
    try:
        with running(path) as agent:
            wait_until(lambda: [e.state for e in listener.camera_events()] == ["new"], 20)
            mask = ((0.2, 0.2), (0.8, 0.2), (0.8, 0.9), (0.2, 0.9))
            config = DeviceConfig(
                device_id="edge-01",
                revision=7,
                issued_at=datetime.now(UTC),
                cameras={"cam-01": CameraOverride(masks=(mask,), sample_fps=2)},
            )
            listener.publish(topics.device_config("edge-01"), config.to_json(), retain=True)
            wait_until(
                lambda: [e.state for e in listener.camera_events()] == ["new", "cleared"], 20
            )
            assert agent.workers["cam-01"].camera.masks == (mask,)
            assert agent.workers["cam-01"].camera.sample_fps == 2
            wait_until(lambda: (s := listener.last_status()) and s.config_revision == 7, 10)
            # a new model, and a stricter rule, without a restart
            other = tmp_path / "models" / "other-det.onnx"
            other.parent.mkdir()
            shutil.copyfile(fake_model, other)
            props = ort.InferenceSession(str(fake_model)).get_modelmeta().custom_metadata_map
            meta = json.loads(props["gridwatch"])
            other.with_suffix(".json").write_text(json.dumps({**meta, "model_version": "fake-2"}))
            strict = {"garbage": ClassRule(min_confidence=0.9, keep_confidence=0.9)}
            config = DeviceConfig(
                device_id="edge-01",
                revision=8,
                issued_at=datetime.now(UTC),
                cameras={"cam-01": CameraOverride(classes=strict)},
                model=ModelRef(path=str(other)),
            )
            listener.publish(topics.device_config("edge-01"), config.to_json(), retain=True)
            wait_until(
                lambda: (
                    (s := listener.last_status())
                    and s.config_revision == 8
                    and s.model == "other-det.onnx"
                    and s.model_version == "fake-2"
                ),
                15,
            )
            assert agent.workers["cam-01"].camera.masks == ()  # revision 8 replaces revision 7
            assert (
                agent.settings.rule_for(agent.workers["cam-01"].camera, "garbage")
                == strict["garbage"]
            )
            listener.publish(
                topics.device_config("edge-01"), b'{"schema": "gw.config", "v": 1}', retain=True
            )
            wait_until(
                lambda: (
                    (s := listener.last_status())
                    and any("bad config message" in e for e in s.errors)
                ),
                10,
            )
            status = listener.last_status()
            assert status is not None and status.config_revision == 8
            assert status.cameras[0].state == "ok"
            # the strict rule holds: the pile (0.56) starts no track, so nothing new was sent
            assert [e.state for e in listener.camera_events()] == ["new", "cleared"]
    finally:
        clear_retained(listener)


def command(action: str, camera_id: str | None = None, **fields: object) -> Command:
    return Command(
        command_id=uuid.uuid4(),
        device_id="edge-01",
        action=action,  # type: ignore[arg-type]
        issued_at=datetime.now(UTC),
        camera_id=camera_id,
        **fields,
    )  # type: ignore[arg-type]


def test_commands_verify_snapshot_and_reload(
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    listen: ListenerFactory,
    fake_model: Path,
) -> None:
    bright = image_sequence(tmp_path / "bright", [True] * 4)
    dark = image_sequence(tmp_path / "dark", [False] * 4)
    listener = listen()
    clear_retained(listener)
    cams = [
        camera("cam-pile", bright, loop=True, sample_fps=4),
        camera("cam-clean", dark, loop=True, sample_fps=4),
    ]
    path = edge_yaml(
        tmp_path,
        site,
        mosquitto.port,
        cams,
        detector={"type": "onnx", "model": str(fake_model), "threads": 1},
    )

    def ask(cmd: Command) -> object:
        listener.publish(topics.command("edge-01"), cmd.to_json())
        return wait_until(
            lambda: next((r for r in listener.results if r.command_id == cmd.command_id), None), 20
        )

    with running(path) as agent:
        wait_until(
            lambda: (
                (s := listener.last_status())
                and len(s.cameras) == 2
                and all(c.state == "ok" for c in s.cameras)
            ),
            20,
        )
        still = ask(command("verify", "cam-pile", kind="garbage", region=FAKE_BOX, checks=3))
        assert still.outcome == "still_present" and still.confidence  # type: ignore[attr-defined]
        assert still.snapshot is not None and still.snapshot.jpeg()[:2] == b"\xff\xd8"  # type: ignore[attr-defined]
        elsewhere = ask(
            command("verify", "cam-pile", kind="garbage", region=(0.0, 0.8, 0.1, 1.0), checks=2)
        )
        assert elsewhere.outcome == "clear"  # type: ignore[attr-defined]
        clean = ask(command("verify", "cam-clean", kind="garbage", region=FAKE_BOX, checks=2))
        assert clean.outcome == "clear"  # type: ignore[attr-defined]
        missing = ask(command("verify", "cam-nope", kind="garbage"))
        assert missing.outcome == "error" and "cam-nope" in missing.detail  # type: ignore[attr-defined]
        snap = ask(command("snapshot", "cam-pile"))
        assert snap.outcome == "done" and snap.snapshot is not None  # type: ignore[attr-defined]
        # reload: a third camera and a sensor on a serial line appear without a restart
        master, slave = os.openpty()
        doc = yaml.safe_load(path.read_text())
        doc["cameras"].append(camera("cam-new", dark, loop=True))
        doc["sensors"] = [
            {
                "id": "tilt-r1",
                "device": "edge-01",
                "kind": "manhole_tilt",
                "measure": "tilt_deg",
                "position": {"lat": 39.957, "lon": 116.417},
                "threshold": 15,
                "clear_below": 5,
                "debounce_seconds": 0,
            }
        ]
        doc["sensor_inputs"] = [{"type": "serial", "port": os.ttyname(slave)}]
        path.write_text(yaml.safe_dump(doc))
        reloaded = ask(command("reload"))
        assert reloaded.outcome == "done"  # type: ignore[attr-defined]
        wait_until(
            lambda: "cam-new" in agent.workers and agent.workers["cam-new"].counters.samples > 0, 10
        )
        try:
            time.sleep(0.5)  # the reader opens the line
            os.write(master, b"tilt-r1 40\n")
            wait_until(lambda: [e.state for e in listener.camera_events("tilt-r1")] == ["new"], 10)
        finally:
            os.close(master)
            os.close(slave)
        # a typo: the reload is refused, everything keeps running
        path.write_text(path.read_text().replace("status_interval_s", "status_intervall_s"))
        refused = ask(command("reload"))
        assert refused.outcome == "error"  # type: ignore[attr-defined]
        assert "status_intervall_s" in refused.detail  # type: ignore[attr-defined]
        before = agent.workers["cam-pile"].counters.samples
        wait_until(lambda: agent.workers["cam-pile"].counters.samples > before + 2, 10)
        assert set(agent.workers) == {"cam-pile", "cam-clean", "cam-new"}


def test_bad_input_is_reported_and_the_other_cameras_keep_running(
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    listen: ListenerFactory,
    fake_model: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = image_sequence(tmp_path / "good", [True, False] * 4)
    corrupt = image_sequence(tmp_path / "corrupt", [True, False, True])
    (corrupt / "f00001.png").unlink()
    (corrupt / "f00001.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    broken_model = tmp_path / "broken.onnx"
    broken_model.write_bytes(b"not an onnx model")
    listener = listen()
    clear_retained(listener)
    cams = [
        camera("cam-good", good, loop=True, sample_fps=4),
        camera("cam-missing", tmp_path / "no-such-video.mp4", reconnect_min_s=0.5),
        camera("cam-rtsp", f"rtsp://127.0.0.1:{free_port()}/stream", reconnect_min_s=0.5),
        camera("cam-corrupt", corrupt, loop=True, sample_fps=4),
        camera(
            "cam-model",
            good,
            loop=True,
            sample_fps=4,
            detector={"type": "onnx", "model": str(broken_model)},
        ),
        {**camera("cam-typo", good), "sample_fsp": 3},
    ]
    path = edge_yaml(
        tmp_path,
        site,
        mosquitto.port,
        cams,
        detector={"type": "onnx", "model": str(fake_model), "threads": 1},
    )
    with running(path) as agent:

        def by_camera() -> dict[str, object]:
            s = listener.last_status()
            return {c.camera_id: c for c in s.cameras} if s else {}

        wait_until(
            lambda: (
                {"cam-missing", "cam-rtsp", "cam-model", "cam-typo"} <= set(by_camera())
                and by_camera()["cam-rtsp"].error  # type: ignore[attr-defined]
                and by_camera()["cam-corrupt"].error  # type: ignore[attr-defined]
                and by_camera()["cam-model"].state == "error"
            ),
            40,
        )  # type: ignore[attr-defined]
        cams_now = by_camera()
        assert cams_now["cam-missing"].state == "reconnecting"  # type: ignore[attr-defined]
        assert "video file not found" in cams_now["cam-missing"].error  # type: ignore[attr-defined]
        assert cams_now["cam-rtsp"].state in ("reconnecting", "connecting")  # type: ignore[attr-defined]
        assert "corrupt frame" in cams_now["cam-corrupt"].error  # type: ignore[attr-defined]
        assert cams_now["cam-corrupt"].state == "ok"  # type: ignore[attr-defined]
        assert "did not load" in cams_now["cam-model"].error  # type: ignore[attr-defined]
        assert cams_now["cam-typo"].state == "error"  # type: ignore[attr-defined]
        assert "sample_fsp" in cams_now["cam-typo"].error  # type: ignore[attr-defined]
        checks = agent.workers["cam-good"].counters.checks
        wait_until(lambda: agent.workers["cam-good"].counters.checks > checks, 10)
        assert cams_now["cam-good"].state == "ok" and cams_now["cam-good"].fps > 0  # type: ignore[attr-defined]
    for needle in ("video file not found", "corrupt frame", "did not load", "sample_fsp"):
        assert needle in caplog.text
