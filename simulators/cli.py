"""The ``gridwatch`` command: one entry point, a sub-command per part.

It lives in ``simulators/`` because simulators is the one package allowed to import every
other part. Each part keeps its own commands in its ``cli.py`` and imports heavy libraries
only inside the commands, so ``gridwatch edge run`` never loads torch or the dispatcher's
web stack.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from broker.cli import app as broker_app
from config.site import SAMPLE_SITE
from dispatcher.cli import app as dispatcher_app
from edge.cli import app as edge_app
from models.cli import evaluate as models_evaluate
from models.cli import export as models_export
from models.cli import train as models_train

app = typer.Typer(
    help="gridwatch: street cameras and sensors → tickets for grid workers → closed on camera proof.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(broker_app, name="broker")
app.add_typer(dispatcher_app, name="dispatcher")
app.add_typer(edge_app, name="edge")
# The detector's pipeline sits at the top level, as DESIGN.md names it: gridwatch train|evaluate|export.
app.command("train")(models_train)
app.command("evaluate")(models_evaluate)
app.command("export")(models_export)

sim_app = typer.Typer(
    help="Simulated devices and workers that use the real bus and API.", no_args_is_help=True
)
app.add_typer(sim_app, name="sim")


@app.command("demo")
def demo(
    site: Annotated[Path, typer.Option(help="site YAML file")] = SAMPLE_SITE,
    state: Annotated[Path, typer.Option(help="state folder for this run")] = Path("state/demo"),
    duration: Annotated[float, typer.Option(help="seconds of simulated street life")] = 60,
) -> None:
    """Run the end-to-end demo and print a closure report read back from InfluxDB."""
    from rich.console import Console

    from config.logs import setup_logging
    from simulators.demo import run_demo

    setup_logging("WARNING", json_lines=False)
    code = run_demo(site, state, duration, Console())
    raise typer.Exit(code)


@sim_app.command("devices")
def sim_devices(
    site: Annotated[Path, typer.Option(envvar="GW_SITE", help="site YAML file")],
    duration: Annotated[float, typer.Option(help="seconds to run (0: until Ctrl-C)")] = 0,
    rate: Annotated[float, typer.Option(help="new problems per device per minute")] = 1.0,
    only: Annotated[list[str] | None, typer.Option(help="device ids to simulate")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 1,
) -> None:
    """Simulate the site's cameras and sensors (each device with its own broker account)."""
    from config.logs import setup_logging
    from config.site import load_site
    from simulators.devices import DeviceSimulator

    setup_logging()
    s = load_site(site)
    sims = [
        DeviceSimulator(
            s,
            d.id,
            d.password.get_secret_value(),
            seed=seed + i,
            problem_rate_per_min=rate,
            kind=d.kind,
        )
        for i, d in enumerate(s.devices)
        if not only or d.id in only
    ]
    for sim in sims:
        sim.start()
    for sim in sims:
        for cam in sim.cameras[:1]:
            sim.raise_problem(cam)
    started = time.monotonic()
    last_status = started
    stop = threading.Event()
    try:
        while not stop.wait(0.5):
            now = time.monotonic()
            if duration and now - started >= duration:
                break
            for sim in sims:
                sim.tick(0.5)
            if now - last_status >= 5:
                last_status = now
                for sim in sims:
                    sim.publish_status()
    except KeyboardInterrupt:
        pass
    finally:
        for sim in sims:
            sim.stop()
        typer.echo(f"devices sent {sum(s.sent for s in sims)} events")


@sim_app.command("load")
def sim_load(
    state: Annotated[Path, typer.Option(help="state folder for this run")] = Path("state/load"),
    duration: Annotated[float, typer.Option(help="seconds of load")] = 600,
    cameras: Annotated[int, typer.Option(help="cameras (2 per edge box)")] = 1000,
    sensors: Annotated[int, typer.Option(help="sensors (2 per sensor node)")] = 1000,
    burst_factor: Annotated[float, typer.Option(help="how much busier the burst minute is")] = 10,
    seed: Annotated[int, typer.Option(help="random seed")] = 1,
    write_docs: Annotated[
        bool, typer.Option("--write-docs", help="put the figures into docs/reliability.md")
    ] = False,
) -> None:
    """Load test: simulated cameras and sensors against one dispatcher on loopback.

    Starts Mosquitto, InfluxDB and the dispatcher, runs every device on its own connection
    for DURATION seconds with a burst minute in the middle, and reports events/s, loss,
    tickets, latency p50/p99 and every process's memory and CPU (see docs/reliability.md).
    """
    from config.logs import setup_logging
    from config.markdown import write_section
    from simulators.load import DOCS, LoadPlan, load_markdown, machine, run_load

    setup_logging("WARNING")
    plan = LoadPlan(
        edge_boxes=max(1, cameras // 2),
        sensor_nodes=max(1, sensors // 2),
        duration_s=duration,
        burst_at_s=duration * 0.45,
        burst_s=min(60, duration / 5),
        burst_factor=burst_factor,
        seed=seed,
    )
    results = run_load(state, plan, say=typer.echo)
    text = load_markdown(results, machine())
    typer.echo(text)
    if write_docs:
        typer.echo(f"wrote {write_section(DOCS, 'load', text)}")
    if results["events_lost"] or results["tickets_made_for_them"] < results["tickets_expected"]:
        raise typer.Exit(1)


@sim_app.command("workers")
def sim_workers(
    site: Annotated[Path, typer.Option(envvar="GW_SITE", help="site YAML file")],
    api: Annotated[str, typer.Option(help="dispatcher base URL")] = "http://127.0.0.1:8000",
    seed: Annotated[int, typer.Option(help="random seed")] = 1,
) -> None:
    """Simulate every worker of the site, acting through the HTTP API until Ctrl-C."""
    from config.logs import setup_logging
    from config.site import load_site
    from simulators.workers import WorkerSimulator

    setup_logging()
    s = load_site(site)
    sims = [
        WorkerSimulator(api, w.id, w.password.get_secret_value(), seed=seed + i)
        for i, w in enumerate(s.workers)
        if w.password is not None
    ]
    try:
        while True:
            for sim in sims:
                try:
                    sim.step()
                except Exception as exc:  # the API may be restarting; keep simulating
                    typer.echo(f"{sim.username}: {exc}", err=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for sim in sims:
            sim.close()


def main() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    app()


if __name__ == "__main__":
    main()
