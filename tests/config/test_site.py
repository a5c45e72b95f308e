"""The site loader: the sample loads; a bad file gets an error naming file, key and expectation;
a secret written into the file instead of a ${ENV} placeholder is refused."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.loader import ConfigError, placeholders
from config.site import SAMPLE_SITE, Site, load_site


def copy_sample(tmp_path: Path, edit: object = None) -> Path:
    """The sample site (and its grids) in a temp folder, optionally edited."""
    shutil.copy(SAMPLE_SITE.parent / "grids.geojson", tmp_path / "grids.geojson")
    doc = yaml.safe_load(SAMPLE_SITE.read_text(encoding="utf-8"))
    if callable(edit):
        edit(doc)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_sample_site_is_complete(site: Site) -> None:
    assert len(site.grids) == 4 and len(site.workers) == 6 and len(site.cameras) == 8
    assert len(site.sensors) == 6 and len(site.streets) == 2
    assert {"garbage", "manhole_missing", "manhole_broken"} <= set(site.categories)
    assert site.categories["manhole_missing"].priority == 1
    assert site.categories["manhole_missing"].notify_supervisor
    assert all(site.cameras_of(d.id) for d in site.devices if d.kind == "edge")


def test_secrets_are_placeholders_not_literals() -> None:
    text = SAMPLE_SITE.read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    assert all(str(d["password"]).startswith("${") for d in doc["devices"])
    assert all(str(w["password"]).startswith("${") for w in doc["workers"])
    assert "GW_MQTT_DISPATCHER" in placeholders(SAMPLE_SITE)


def test_missing_environment_variable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: Site
) -> None:
    path = copy_sample(tmp_path)
    monkeypatch.delenv("GW_MQTT_EDGE_02")
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert str(path) in str(err.value)
    assert "devices[1].password: environment variable GW_MQTT_EDGE_02 is not set" in str(err.value)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["cameras"][2].update(sample_fsp=3), "cameras[2].sample_fsp: Extra inputs"),
        (
            lambda d: d["categories"]["garbage"].update(priority=9),
            "categories.garbage.priority: Input should be less than or equal to 5",
        ),
        (lambda d: d["workers"][0].update(grid="g9"), "workers[0].grid: unknown grid cell 'g9'"),
        (
            lambda d: d["cameras"][0].update(device="node-01"),
            "cameras[0].device: 'node-01' is not an edge device",
        ),
        (
            lambda d: d["workers"][1]["shifts"][0].update(start="25:00"),
            "workers[1].shifts[0].start: Input should be in a valid time format",
        ),
        (
            lambda d: d["sensors"][0].update(clear_below=99),
            "sensors[0]: Value error, clear_below must be at or below threshold",
        ),
        (lambda d: d["office"].update(timezone="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_errors_name_the_key_and_the_expectation(
    tmp_path: Path, site: Site, edit: object, expected: str
) -> None:
    path = copy_sample(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert f"invalid configuration in {path}" in str(err.value)
    assert expected in str(err.value)


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("office:\n  id: x\n  name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: YAML syntax error"):
        load_site(path)


def test_bad_grid_file_is_named(tmp_path: Path, site: Site) -> None:
    path = copy_sample(tmp_path)
    (tmp_path / "grids.geojson").write_text(
        '{"type": "FeatureCollection", "features": [{"type":'
        ' "Feature", "properties": {}, "geometry": {"type":'
        ' "Point", "coordinates": [1, 2]}}]}'
    )
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert "grids.geojson" in str(err.value)
    assert "features[0].geometry: expected a valid Polygon, got Point" in str(err.value)


LITERAL = "hunter2-written-into-the-file"


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d["devices"][1].update(password=LITERAL), "devices[1].password"),
        (lambda d: d["workers"][0].update(password=LITERAL), "workers[0].password"),
        (lambda d: d["supervisors"][1].update(password=LITERAL), "supervisors[1].password"),
        (
            lambda d: d["broker"].update(dispatcher_password=LITERAL),
            "broker.dispatcher_password",
        ),
        (  # a default is a secret in the file all the same
            lambda d: d["devices"][0].update(password="${GW_MQTT_EDGE_01:-" + LITERAL + "}"),
            "devices[0].password",
        ),
        (lambda d: d["workers"][2].update(password=12345678), "workers[2].password"),
        (  # a placeholder with more around it
            lambda d: d["workers"][3].update(password="x${GW_PW_W04}"),
            "workers[3].password",
        ),
    ],
)
def test_a_secret_written_into_the_file_is_refused(
    tmp_path: Path, site: Site, edit: object, key: str
) -> None:
    path = copy_sample(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_site(path)
    message = str(err.value)
    assert f"invalid configuration in {path}" in message
    assert f"{key}: expected a ${{NAME}} placeholder" in message
    assert "naming the environment variable that holds the secret" in message
    assert LITERAL not in message and "12345678" not in message  # never echoed
    assert len(err.value.problems) == 1


def test_every_literal_secret_is_named_at_once(tmp_path: Path, site: Site) -> None:
    def edit(d: dict[str, Any]) -> None:
        for device in d["devices"]:
            device["password"] = LITERAL

    with pytest.raises(ConfigError) as err:
        load_site(copy_sample(tmp_path, edit))
    assert [p.split(":")[0] for p in err.value.problems] == [
        f"devices[{i}].password" for i in range(7)
    ]


def test_an_absent_or_null_optional_secret_is_fine(tmp_path: Path, site: Site) -> None:
    def edit(d: dict[str, Any]) -> None:
        del d["workers"][0]["password"]
        d["supervisors"][0]["password"] = None

    loaded = load_site(copy_sample(tmp_path, edit))
    assert loaded.workers[0].password is None and loaded.supervisors[0].password is None
