"""Hostile configuration files: the site loader, its GeoJSON grids and the edge loader never crash.

Every property writes a file and accepts two outcomes: it loads, or it raises ``ConfigError``
naming the file and at least one problem. A traceback of any other exception is a crash.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from config.loader import ConfigError
from config.site import SAMPLE_SITE, Site, load_site
from tests.hostile.strategies import TRIED, fuzz, json_values, mutated_doc

SAMPLE_DOC: dict[str, Any] = yaml.safe_load(SAMPLE_SITE.read_text(encoding="utf-8"))
SAMPLE_GRIDS: dict[str, Any] = json.loads((SAMPLE_SITE.parent / "grids.geojson").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Path:
    """A folder holding a copy of the sample grids; ``site`` puts the secrets in the environment."""
    path = tmp_path_factory.mktemp("hostile-config")
    shutil.copy(SAMPLE_SITE.parent / "grids.geojson", path / "grids.geojson")
    return path


def expect_load_or_config_error(path: Path, load: Any = load_site) -> None:
    TRIED["config files"] += 1
    try:
        load(path)
    except ConfigError as exc:
        assert exc.problems and all(p.strip() for p in exc.problems)
        assert str(path.name) in str(exc)


@fuzz(60)
@given(st.text(max_size=400))
def test_any_text_as_site_file(folder: Path, text: str) -> None:
    path = folder / "text.yaml"
    path.write_text(text, encoding="utf-8")
    expect_load_or_config_error(path)


@fuzz(60)
@given(json_values)
def test_any_yaml_document_as_site_file(folder: Path, doc: Any) -> None:
    path = folder / "doc.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    expect_load_or_config_error(path)


@fuzz(40)
@given(mutated_doc(SAMPLE_DOC))
def test_sample_site_with_one_thing_broken(folder: Path, case: tuple[dict[str, Any], str]) -> None:
    doc, _where = case
    path = folder / "mutated.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    expect_load_or_config_error(path)


@fuzz(25)
@given(mutated_doc(SAMPLE_GRIDS))
def test_grid_file_with_one_thing_broken(folder: Path, case: tuple[dict[str, Any], str]) -> None:
    doc, _where = case
    sub = folder / "grids-mutated"
    sub.mkdir(exist_ok=True)
    (sub / "grids.geojson").write_text(json.dumps(doc), encoding="utf-8")
    path = sub / "site.yaml"
    path.write_text(yaml.safe_dump(SAMPLE_DOC, allow_unicode=True), encoding="utf-8")
    TRIED["config files"] += 1
    try:
        load_site(path)
    except ConfigError as exc:
        assert exc.problems
        assert "grids.geojson" in str(exc) or "site.yaml" in str(exc)


@pytest.mark.parametrize(
    "text",
    [
        "grids_file: /etc/passwd\n",
        "grids_file: ../../../../../../etc/shadow\n",
        "!!python/object/apply:os.system ['echo pwned']\n",
        "office: !!binary aGVsbG8=\n",
        "\ufeffoffice: {id: x}\n",
        "office: {id: " + "[" * 5000 + "\n",
        "office: " + "[" * 5000 + "]" * 5000 + "\n",
        "office: &o {id: x, again: *o}\n",
    ],
    ids=["abs-path", "dotdot", "python-tag", "binary-tag", "bom", "unclosed-deep", "deep", "cycle"],
)
def test_hostile_site_files_get_a_config_error(folder: Path, text: str) -> None:
    path = folder / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    TRIED["config files"] += 1
    with pytest.raises(ConfigError):
        load_site(path)


@fuzz(60)
@given(st.binary(max_size=300))
def test_any_bytes_as_site_file(folder: Path, data: bytes) -> None:
    path = folder / "bytes.yaml"
    path.write_bytes(data)
    expect_load_or_config_error(path)


def test_yaml_alias_bomb_is_refused(folder: Path) -> None:
    """Nine levels of nine aliases would expand to 387 million strings ("billion laughs")."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    path = folder / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="aliases expand"):
        load_site(path)


EDGE_DOC: dict[str, Any] = {
    "device_id": "edge-01",
    "broker": {"host": "127.0.0.1", "port": 1883, "password": "pw"},
    "outbox": {"path": "outbox.sqlite", "max_messages": 1000, "window": 20},
    "status_interval_s": 15,
    "cameras": [
        {
            "id": "cam-01",
            "name": "gate",
            "position": {"lat": 39.9, "lon": 116.4},
            "source": "videos/a.mp4",
            "zones": [[[0, 0.5], [1, 0.5], [1, 1], [0, 1]]],
            "classes": {"garbage": {"min_confidence": 0.5, "keep_confidence": 0.3}},
            "ground_plane": {
                "image": [[0.05, 0.98], [0.95, 0.98], [0.75, 0.4], [0.25, 0.4]],
                "geo": [
                    {"lat": 39.95622, "lon": 116.41644},
                    {"lat": 39.95622, "lon": 116.41656},
                    {"lat": 39.9564, "lon": 116.4166},
                    {"lat": 39.9564, "lon": 116.4164},
                ],
            },
        }
    ],
    "sensors": [
        {
            "id": "mh-1",
            "device": "edge-01",
            "kind": "manhole_tilt",
            "measure": "tilt_deg",
            "threshold": 15,
            "clear_below": 5,
            "position": {"lat": 39.9, "lon": 116.4},
        }
    ],
    "sensor_inputs": [{"type": "serial", "port": "/dev/ttyUSB0"}],
}


@fuzz(40)
@given(mutated_doc(EDGE_DOC))
def test_edge_file_with_one_thing_broken(folder: Path, case: tuple[dict[str, Any], str]) -> None:
    """The edge loader: a broken camera entry is set aside with its reason; anything else
    broken is a ConfigError naming the file."""
    from edge.settings import load_edge_settings

    doc, _where = case
    path = folder / "edge.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    TRIED["config files"] += 1
    try:
        loaded = load_edge_settings(path)
    except ConfigError as exc:
        assert exc.problems and "edge.yaml" in str(exc)
        return
    assert all("edge.yaml" in reason for reason in loaded.rejected_cameras.values())


@fuzz(40)
@given(st.text(max_size=300) | json_values.map(lambda d: yaml.safe_dump(d)))
def test_any_text_as_edge_file(folder: Path, text: str) -> None:
    from edge.settings import load_edge_settings

    path = folder / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    expect_load_or_config_error(path, load_edge_settings)


@pytest.mark.parametrize(
    "features",
    [True, "cells", {"a": 1}, [True], [None], [[1, 2]], [{"properties": [1], "geometry": None}]],
    ids=["bool", "string", "object", "bool-feature", "null-feature", "list-feature", "list-props"],
)
def test_grid_file_with_malformed_features_is_a_config_error(folder: Path, features: Any) -> None:
    sub = folder / "grids-malformed"
    sub.mkdir(exist_ok=True)
    (sub / "grids.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8"
    )
    path = sub / "site.yaml"
    path.write_text(yaml.safe_dump(SAMPLE_DOC, allow_unicode=True), encoding="utf-8")
    TRIED["config files"] += 1
    with pytest.raises(ConfigError, match=r"grids\.geojson"):
        load_site(path)
