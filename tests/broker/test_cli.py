"""``gridwatch broker run`` with a bad option, site file or address: a message that says what is
wrong and an exit status (2 for what the user gave, 1 for a Mosquitto that does not start),
never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from broker.mosquitto import free_port
from config.site import SAMPLE_SITE, Site


def broker_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulators.cli", "broker", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GW_LOG_FORMAT": "console"},
    )


def test_a_port_out_of_range_is_refused_by_name(site: Site, tmp_path: Path) -> None:
    done = broker_run("--site", str(SAMPLE_SITE), "--state", str(tmp_path), "--port", "99999")
    assert done.returncode == 2
    assert "--port" in done.stderr and "65535" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_site_file_with_a_written_password_is_named(site: Site, tmp_path: Path) -> None:
    shutil.copy(SAMPLE_SITE.parent / "grids.geojson", tmp_path / "grids.geojson")
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        SAMPLE_SITE.read_text(encoding="utf-8").replace('"${GW_MQTT_EDGE_02}"', "plain-pw-2"),
        encoding="utf-8",
    )
    done = broker_run("--site", str(site_file), "--state", str(tmp_path / "state"))
    assert done.returncode == 2
    assert f"invalid configuration in {site_file}" in done.stderr
    assert "devices[1].password: expected a ${NAME} placeholder" in done.stderr
    assert "plain-pw-2" not in done.stderr and "Traceback" not in done.stderr


def test_an_address_mosquitto_cannot_listen_on_is_said_in_its_words(
    site: Site, tmp_path: Path
) -> None:
    done = broker_run(
        "--site",
        str(SAMPLE_SITE),
        "--state",
        str(tmp_path),
        "--port",
        str(free_port()),
        "--bind",
        "no-such-host.invalid",
    )
    assert done.returncode == 1
    assert "mosquitto did not start" in done.stderr and "listener" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_state_folder_it_cannot_write_is_named(site: Site, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    done = broker_run("--site", str(SAMPLE_SITE), "--state", str(blocked / "state"))
    assert done.returncode == 1
    assert f"cannot write the broker's files in {blocked / 'state'}" in done.stderr
    assert "Traceback" not in done.stderr
