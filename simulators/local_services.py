"""Real services on loopback for the demo and the tests: InfluxDB 1.x and PostgreSQL in temp folders."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from broker.mosquitto import LocalServer, free_port, wait_for_port

log = logging.getLogger(__name__)


class InfluxServer(LocalServer):
    """``influxd`` (Debian's 1.6) with its own config, data folders and free ports."""

    def __init__(self, state: Path, port: int | None = None) -> None:
        self.state = state.resolve()
        self.port = port or free_port()
        self.rpc_port = free_port()
        self.state.mkdir(parents=True, exist_ok=True)
        self.conf = self.state / "influxdb.conf"
        self.conf.write_text(
            f"""reporting-enabled = false
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.state}/meta"
[data]
  dir = "{self.state}/data"
  wal-dir = "{self.state}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[logging]
  level = "warn"
""",
            encoding="utf-8",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> None:
        binary = shutil.which("influxd") or "/usr/bin/influxd"
        if not os.path.exists(binary):
            raise FileNotFoundError("influxd not found: install the Debian package influxdb")
        with open(self.state / "influxd.log", "ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-config", str(self.conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/ping", timeout=1).status_code == 204:
                    log.info("influxd listening on %s (state %s)", self.url, self.state)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        tail = (self.state / "influxd.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"influxd did not answer on {self.url}:\n{tail}")


class PostgresServer(LocalServer):
    """A throw-away PostgreSQL cluster (Debian's ``postgresql``) on a free port, run as ``postgres``."""

    stop_signal = signal.SIGINT  # "fast shutdown"

    def __init__(self, state: Path, port: int | None = None) -> None:
        self.state = state.resolve()
        self.port = port or free_port()
        self.bindir = self._bindir()

    @staticmethod
    def _bindir() -> Path:
        base = Path("/usr/lib/postgresql")
        versions = sorted(base.glob("*/bin/postgres")) if base.exists() else []
        if not versions:
            raise FileNotFoundError("PostgreSQL not found: install the Debian package postgresql")
        return versions[-1].parent

    def _as_postgres(self) -> dict[str, object]:
        if os.getuid() != 0:
            return {}
        pw = pwd.getpwnam("postgres")

        def demote() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

        return {"preexec_fn": demote}

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://gridwatch@127.0.0.1:{self.port}/gridwatch"

    def start(self, timeout_s: float = 30) -> None:
        data = self.state / "data"
        self.state.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.state, pw.pw_uid, pw.pw_gid)
        if not data.exists():
            subprocess.run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "gridwatch",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                **self._as_postgres(),  # type: ignore[call-overload]
            )
        with open(self.state / "postgres.log", "ab") as out:
            if os.getuid() == 0:
                pw = pwd.getpwnam("postgres")
                os.chown(self.state / "postgres.log", pw.pw_uid, pw.pw_gid)
            self.proc = subprocess.Popen(  # type: ignore[call-overload]
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.state}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._as_postgres(),
            )
        if not wait_for_port("127.0.0.1", self.port, timeout_s):
            self.stop()
            raise RuntimeError((self.state / "postgres.log").read_text(errors="replace")[-2000:])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = subprocess.run(
                [
                    str(self.bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "gridwatch",
                    "gridwatch",
                ],
                capture_output=True,
            )
            if r.returncode == 0 or b"already exists" in r.stderr:
                return
            time.sleep(0.2)
        raise RuntimeError(f"could not create database: {r.stderr.decode(errors='replace')}")
