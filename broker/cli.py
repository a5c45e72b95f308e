"""``gridwatch broker …``: generate the Mosquitto configuration for a site and run it."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="The MQTT bus: Mosquitto configuration and a local broker.", no_args_is_help=True
)


PortOption = Annotated[
    int | None, typer.Option(min=1, max=65535, help="listener port (default: the site's)")
]


def _server(site: Path, state: Path, port: int | None, bind: str) -> object:
    """The Mosquitto server for a site, its files written to ``state``; a bad site file ends
    the command with status 2, a state folder it cannot write with status 1."""
    from broker.mosquitto import BrokerOptions, MosquittoServer, site_accounts
    from config.site import load_site

    try:
        s = load_site(site)
        accounts = site_accounts(s)
    except ValueError as exc:  # a ConfigError, or device ids that clash with service accounts
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    try:
        return MosquittoServer(
            state, accounts, BrokerOptions(port=port or s.broker.port, bind=bind)
        )
    except OSError as exc:
        typer.echo(f"cannot write the broker's files in {state}: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command("config")
def config(
    site: Annotated[Path, typer.Option(envvar="GW_SITE", help="site YAML file")],
    state: Annotated[
        Path, typer.Option(help="folder for mosquitto.conf, passwd, acl, data")
    ] = Path("state/broker"),
    port: PortOption = None,
    bind: Annotated[str, typer.Option(help="listener address")] = "127.0.0.1",
) -> None:
    """Write mosquitto.conf, the password file and the ACL for a site, and print the conf path."""
    server = _server(site, state, port, bind)
    typer.echo(str(server.conf))  # type: ignore[attr-defined]


@app.command("run")
def run(
    site: Annotated[Path, typer.Option(envvar="GW_SITE", help="site YAML file")],
    state: Annotated[Path, typer.Option(help="state folder (config, persistence, log)")] = Path(
        "state/broker"
    ),
    port: PortOption = None,
    bind: Annotated[str, typer.Option(help="listener address")] = "127.0.0.1",
) -> None:
    """Run a local Mosquitto for the site until Ctrl-C. A bad site file or option ends it at
    once with exit status 2; a Mosquitto that does not start (missing, a port in use, an
    address it cannot listen on) with status 1 and Mosquitto's own words."""
    from broker.mosquitto import MosquittoServer
    from config.logs import setup_logging

    try:
        setup_logging()
    except ValueError as exc:
        typer.echo(f"GW_LOG_LEVEL: {exc} (expected DEBUG, INFO, WARNING or ERROR)", err=True)
        raise typer.Exit(2) from exc
    server = _server(site, state, port, bind)
    assert isinstance(server, MosquittoServer)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        typer.echo(f"mosquitto did not start: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"mosquitto on {bind}:{server.port}, state in {server.state}")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(1) and server.running():
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
