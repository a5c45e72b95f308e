"""The one-command demo: real Mosquitto, InfluxDB and dispatcher, simulated devices and workers.

Everything runs in a state folder on free loopback ports. The run shows live progress, and
ends with a closure report read back from InfluxDB. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from broker.mosquitto import BrokerOptions, MosquittoServer, free_port, site_accounts
from config.loader import placeholders
from config.site import Site, load_site
from dispatcher import metrics
from simulators import street_cameras
from simulators.local_services import InfluxServer

log = logging.getLogger(__name__)


def demo_secrets(site_file: Path) -> dict[str, str]:
    """Random values for every ${ENV} placeholder the site asks for (kept in the environment)."""
    return {name: secrets.token_urlsafe(12) for name in sorted(placeholders(site_file))}


@dataclass
class DemoProcesses:
    """The child processes of a demo run, stopped in reverse order."""

    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    finite: set[str] = field(default_factory=set)

    def spawn(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path, *, ends: bool = False
    ) -> None:
        """Start a child; ``ends`` marks one that finishes by itself (not a failure)."""
        with open(log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append((name, proc))
        if ends:
            self.finite.add(name)

    def check(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None and (name not in self.finite or p.returncode != 0):
                raise RuntimeError(f"{name} exited with code {p.returncode}; see its log")

    def stop(self, timeout_s: float = 10) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for _, p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def _cli() -> list[str]:
    return [sys.executable, "-m", "simulators.cli"]


@contextmanager
def services(site: Site, state: Path) -> Iterator[tuple[MosquittoServer, InfluxServer]]:
    broker = MosquittoServer(
        state / "broker", site_accounts(site), BrokerOptions(port=site.broker.port)
    )
    influx = InfluxServer(state / "influxdb")
    try:
        broker.start()
        influx.start()
        yield broker, influx
    finally:
        influx.stop()
        broker.stop()


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"dispatcher did not answer on {url}/health within {timeout_s}s")


def progress_table(site: Site, api: httpx.Client, started: float, duration_s: float) -> Table:
    tickets = api.get("/tickets", params={"limit": 500}).json().get("items", [])
    health = api.get("/health").json()
    by_grid: dict[str, Counter[str]] = {g.id: Counter() for g in site.grids}
    for t in tickets:
        by_grid.setdefault(t["grid_id"] or "none", Counter())[t["status"]] += 1
    elapsed = time.monotonic() - started
    table = Table(
        title=f"gridwatch demo — {elapsed:4.0f}s / {duration_s:.0f}s — events {health['events_received']}"
        f", dead letters {health['dead_letters']}",
    )
    for col in ("grid 网格", "open", "assigned", "accepted", "resolved", "closed", "cancelled"):
        table.add_column(col, justify="right" if col != "grid 网格" else "left")
    for gid, c in by_grid.items():
        active_open = c["open"]
        table.add_row(
            gid,
            str(active_open),
            str(c["assigned"]),
            str(c["accepted"]),
            str(c["resolved"]),
            str(c["closed"]),
            str(c["cancelled"]),
        )
    return table


def report_table(rows: list[metrics.GridReport], period: str) -> Table:
    table = Table(title=f"Closure report (read back from InfluxDB, last {period})")
    for col in (
        "grid",
        "opened",
        "assigned",
        "closed",
        "cancelled",
        "closure rate",
        "median time to close",
        "p90",
        "SLA met",
    ):
        table.add_column(col, justify="left" if col == "grid" else "right")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    def secs(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}s"

    for r in rows:
        table.add_row(
            r.grid,
            str(r.opened),
            str(r.assigned),
            str(r.closed),
            str(r.cancelled),
            pct(r.closure_rate),
            secs(r.median_close_s),
            secs(r.p90_close_s),
            pct(r.sla_compliance),
        )
    return table


# What one demo run writes and the next must not inherit: accounts seeded with this run's
# random passwords, the broker's sessions, last run's tickets and InfluxDB points (the closure
# report would count them). The rendered street videos are kept: they only depend on the model.
RUN_FOLDERS = ("broker", "influxdb", "dispatcher", "edge", "logs")


def fresh_run_folders(state: Path) -> None:
    """Remove the previous run's per-run folders under ``state``."""
    for name in RUN_FOLDERS:
        folder = state / name
        if folder.exists():
            log.info("removing the previous run's %s", folder)
            shutil.rmtree(folder)


def run_demo(site_file: Path, state: Path, duration_s: float, console: Console) -> int:
    """Run the whole demo; return 0 when every grid cell closed at least one ticket."""
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    fresh_run_folders(state)
    env = dict(os.environ)
    env.update(demo_secrets(site_file))
    env.update(GW_MQTT_PORT=str(free_port()), GW_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    admin_password = secrets.token_urlsafe(12)
    http_port = free_port()
    env.update(GW_ADMIN_PASSWORD=admin_password, GW_SECRET_KEY=secrets.token_urlsafe(48))
    os.environ.update(env)
    site = load_site(site_file)
    api_url = f"http://127.0.0.1:{http_port}"
    logs = state / "logs"
    logs.mkdir(exist_ok=True)
    procs = DemoProcesses()
    street: street_cameras.StreetCameras | None = None
    staging = street_cameras.prepare(site, state)
    with services(site, state) as (_broker, influx):
        try:
            procs.spawn(
                "dispatcher",
                [
                    *_cli(),
                    "dispatcher",
                    "run",
                    "--site",
                    str(site_file),
                    "--state-dir",
                    str(state / "dispatcher"),
                    "--port",
                    str(http_port),
                    "--influx-url",
                    influx.url,
                ],
                env,
                logs,
            )
            wait_healthy(api_url, 60)
            console.print(
                f"[bold]API[/] {api_url}   [bold]docs[/] {api_url}/docs   "
                f"[bold]state[/] {state}   admin password: {admin_password}"
            )
            console.print(
                f"[bold]worker app[/] {api_url}/app/ (w01 / {env.get('GW_PW_W01', '?')})   "
                f"[bold]dashboard[/] {api_url}/dashboard/ (sup-s1 / "
                f"{env.get('GW_PW_SUP_S1', '?')}, or admin)"
            )
            street = street_cameras.start(
                site,
                site_file,
                state,
                env,
                lambda name, args: procs.spawn(name, args, env, logs),
                _cli(),
                console.print,
                staging,
            )
            if street is None:
                procs.spawn(
                    "devices",
                    [
                        *_cli(),
                        "sim",
                        "devices",
                        "--site",
                        str(site_file),
                        "--duration",
                        str(duration_s),
                    ],
                    env,
                    logs,
                    ends=True,
                )
            procs.spawn(
                "workers",
                [*_cli(), "sim", "workers", "--site", str(site_file), "--api", api_url],
                env,
                logs,
            )
            api = httpx.Client(base_url=api_url, timeout=10)
            token = api.post(
                "/auth/login", json={"username": "admin", "password": admin_password}
            ).json()
            api.headers["Authorization"] = f"Bearer {token['access_token']}"
            started = time.monotonic()
            with Live(console=console, refresh_per_second=2) as live:
                while time.monotonic() - started < duration_s + 15:
                    procs.check()
                    live.update(Group(progress_table(site, api, started, duration_s)))
                    time.sleep(1)
            cameras_stopped = datetime.now(UTC)
            procs.stop()
            time.sleep(2)
            rows = metrics.grid_report(metrics.InfluxV1(influx.url, "gridwatch"), "1h")
            console.print(report_table(rows, "1h"))
            if street is not None:
                console.print(street.report_table(cameras_stopped))
                street.stop()
            closed = {r.grid for r in rows if r.closed > 0}
            missing = [g.id for g in site.grids if g.id not in closed]
            if missing:
                console.print(f"[red]no closed ticket in grid cells {missing}[/]")
                return 1
            console.print("[green]every grid cell closed at least one ticket[/]")
            return 0
        except KeyboardInterrupt:
            console.print("stopping…")
            return 130
        finally:
            procs.stop()
            if street is not None:
                street.stop()
