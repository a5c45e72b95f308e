"""``gridwatch dispatcher run`` with a bad setting: exit status 2 and a message that names the
environment variable and what was expected, never a traceback; in development, a warning
when tokens are signed with the placeholder key."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from config.site import SAMPLE_SITE, Site
from dispatcher.service import Dispatcher
from dispatcher.settings import PLACEHOLDER_SECRET


def dispatcher_run(site_file: Path = SAMPLE_SITE, **env: str) -> subprocess.CompletedProcess[str]:
    """``gridwatch dispatcher run`` on the sample site (its secrets are in the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "simulators.cli", "dispatcher", "run", "--site", str(site_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GW_LOG_FORMAT": "console", **env},
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"GW_ENVIRONMENT": "production"},
            "GW_SECRET_KEY must be set to a real secret outside development "
            "(GW_ENVIRONMENT is 'production')",
        ),
        (
            {"GW_TOKEN_TTL_MINUTES": "-5"},
            "GW_TOKEN_TTL_MINUTES: Input should be greater than 0 (got '-5')",
        ),
        ({"GW_SHARE_GROUP": "a b"}, "GW_SHARE_GROUP: String should match pattern"),
        (
            {"GW_DB_URL": "postgresql://gridwatch:s3cret-pw@db:port/gridwatch"},
            "GW_DB_URL: ",
        ),
        ({"GW_LOG_LEVEL": "LOUD"}, "GW_LOG_LEVEL: Unknown level: 'LOUD'"),
    ],
    ids=["placeholder-secret-in-production", "ttl", "share-group", "db-url", "log-level"],
)
def test_a_bad_setting_is_named_without_a_traceback(
    site: Site, env: dict[str, str], expected: str
) -> None:
    done = dispatcher_run(**env)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr and "ValidationError" not in done.stderr
    assert "s3cret-pw" not in done.stderr  # a database password is never shown


def test_a_site_file_with_a_written_secret_is_named(site: Site, tmp_path: Path) -> None:
    shutil.copy(SAMPLE_SITE.parent / "grids.geojson", tmp_path / "grids.geojson")
    text = SAMPLE_SITE.read_text(encoding="utf-8")
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        text.replace('"${GW_MQTT_DISPATCHER}"', "written-here-1"), encoding="utf-8"
    )
    done = dispatcher_run(site_file)
    assert done.returncode == 2, done.stderr
    assert f"invalid configuration in {site_file}" in done.stderr
    assert "broker.dispatcher_password: expected a ${NAME} placeholder" in done.stderr
    assert "written-here-1" not in done.stderr and "Traceback" not in done.stderr


def test_the_placeholder_key_is_warned_about_in_development(
    make_dispatcher: Callable[..., Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dispatcher.service")
    make_dispatcher(secret_key=PLACEHOLDER_SECRET)
    assert "GW_SECRET_KEY is not set (or is the placeholder 'change-me')" in caplog.text
    caplog.clear()
    make_dispatcher()  # a real key: no warning
    assert "GW_SECRET_KEY" not in caplog.text
