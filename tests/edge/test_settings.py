"""The edge YAML: inline or from a site file, relative paths, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import ConfigError
from config.site import SAMPLE_SITE
from edge.settings import load_edge_settings

GROUND = """
    ground_plane:
      image: [[0.05, 0.98], [0.95, 0.98], [0.75, 0.40], [0.25, 0.40]]
      geo: [{lat: 39.95622, lon: 116.41644}, {lat: 39.95622, lon: 116.41656},
            {lat: 39.9564, lon: 116.4166}, {lat: 39.9564, lon: 116.4164}]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_inline_cameras_relative_paths_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_EDGE_PW", "s3cret")
    p = write(
        tmp_path,
        f"""
device_id: edge-01
broker: {{host: 10.0.0.5, password: "${{T_EDGE_PW}}"}}
detector: {{type: onnx, model: models/det.onnx, threads: 2}}
cameras:
  - id: cam-01
    name: gate
    position: {{lat: 39.9, lon: 116.4}}
    source: videos/a.mp4
    loop: true
    zones: [[[0, 0.5], [1, 0.5], [1, 1], [0, 1]]]
    classes: {{garbage: {{min_confidence: 0.5, keep_confidence: 0.3}}}}
{GROUND}
  - id: cam-02
    name: street
    position: {{lat: 39.9, lon: 116.4}}
    source: rtsp://10.0.0.7/stream1
    sample_fps: 1
{GROUND}
""",
    )
    loaded = load_edge_settings(p)
    s = loaded.settings
    assert loaded.rejected_cameras == {}
    assert s.broker.password.get_secret_value() == "s3cret"
    assert s.detector["model"] == str(tmp_path / "models" / "det.onnx")
    assert s.outbox.path == tmp_path / "edge-01-outbox.sqlite"
    cam1, cam2 = s.cameras
    assert cam1.source == str(tmp_path / "videos" / "a.mp4") and cam1.loop
    assert cam1.device == "edge-01"
    assert cam2.source == "rtsp://10.0.0.7/stream1" and cam2.sample_fps == 1
    assert s.rule_for(cam1, "garbage").min_confidence == 0.5
    assert s.rule_for(cam2, "garbage").min_confidence == 0.35  # the default rule


def test_cameras_and_sensors_from_the_site_need_no_other_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GW_MQTT_DISPATCHER", "GW_PW_W01", "GW_MQTT_EDGE_02"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GW_VIDEO_DIR", "/srv/videos")
    p = write(
        tmp_path,
        f"""
device_id: edge-01
broker: {{password: pw}}
site: {SAMPLE_SITE}
camera_options:
  cam-02: {{loop: true, realtime: false}}
""",
    )
    s = load_edge_settings(p).settings
    assert [c.id for c in s.cameras] == ["cam-01", "cam-02"]
    assert s.cameras[0].source == "/srv/videos/cam-01.mp4"
    assert s.cameras[1].loop and not s.cameras[1].realtime
    node = write(
        tmp_path,
        f"device_id: node-01\nbroker: {{password: pw}}\nsite: {SAMPLE_SITE}\n"
        "sensor_inputs: [{type: simulated}]\n",
    )
    s = load_edge_settings(node).settings
    assert s.cameras == () and [x.id for x in s.sensors] == ["mh-tilt-01", "bin-fill-01"]


def test_a_typo_in_one_camera_leaves_that_camera_out(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        f"""
device_id: edge-01
broker: {{password: pw}}
cameras:
  - id: cam-01
    name: ok
    position: {{lat: 39.9, lon: 116.4}}
    source: a.mp4
{GROUND}
  - id: cam-02
    name: typo
    position: {{lat: 39.9, lon: 116.4}}
    source: b.mp4
    sample_fsp: 2
{GROUND}
""",
    )
    loaded = load_edge_settings(p)
    assert [c.id for c in loaded.settings.cameras] == ["cam-01"]
    message = loaded.rejected_cameras["cam-02"]
    assert str(p) in message and "cameras[1].sample_fsp" in message
    assert "Extra inputs are not permitted" in message


def test_a_typo_at_the_top_is_fatal_and_named(tmp_path: Path) -> None:
    p = write(tmp_path, "device_id: edge-01\nbroker: {password: pw}\nstatus_intervall_s: 5\n")
    with pytest.raises(ConfigError) as err:
        load_edge_settings(p)
    assert str(p) in str(err.value) and "status_intervall_s" in str(err.value)
    p = write(tmp_path, 'device_id: edge-01\nbroker: {password: "${T_NOT_SET_ANYWHERE}"}\n')
    with pytest.raises(ConfigError, match="T_NOT_SET_ANYWHERE is not set"):
        load_edge_settings(p)
    p = write(tmp_path, "device_id: edge-01\nbroker: {password: pw}\ndetector: {type: onnx\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_edge_settings(p)


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("outbox: true", "outbox: Input should be a valid dictionary"),  # found by hypothesis
        ("cameras: 5", "cameras: expected a list (got int)"),
        ("cameras: {a: 1}", "cameras: expected a list (got dict)"),
        ("sensors: true", "sensors: expected a list (got bool)"),
        ("site: 3", "site: expected a path (got int)"),
    ],
)
def test_a_section_of_the_wrong_type_is_named(tmp_path: Path, line: str, named: str) -> None:
    p = write(tmp_path, f"device_id: edge-01\nbroker: {{password: pw}}\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_edge_settings(p)
    assert str(p) in str(err.value) and named in str(err.value)


def test_docs_describe_every_setting() -> None:
    """docs/edge.md is the installer's reference: every key of the edge YAML appears in it."""
    from edge.settings import (
        BrokerSettings,
        CameraOptions,
        EdgeSettings,
        EvidenceSettings,
        MotionSettings,
        MqttInput,
        OutboxSettings,
        SerialInput,
        SimulatedInput,
        TrackingSettings,
    )

    doc = (Path(__file__).resolve().parents[2] / "docs" / "edge.md").read_text(encoding="utf-8")
    missing = [
        f"{m.__name__}.{name}"
        for m in (
            EdgeSettings,
            BrokerSettings,
            OutboxSettings,
            EvidenceSettings,
            MotionSettings,
            TrackingSettings,
            CameraOptions,
            SerialInput,
            MqttInput,
            SimulatedInput,
        )
        for name in m.model_fields
        if f"`{name}`" not in doc
    ]
    assert missing == []
