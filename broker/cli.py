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


def _server(site: Path, state: Path, port: int | None, bind: str) -> object:
    from broker.mosquitto import BrokerOptions, MosquittoServer, site_accounts
    from config.site import load_site

    s = load_site(site)
    return MosquittoServer(
        state, site_accounts(s), BrokerOptions(port=port or s.broker.port, bind=bind)
    )


@app.command("config")
def config(
    site: Annotated[Path, typer.Option(envvar="GW_SITE", help="site YAML file")],
    state: Annotated[
        Path, typer.Option(help="folder for mosquitto.conf, passwd, acl, data")
    ] = Path("state/broker"),
    port: Annotated[int | None, typer.Option(help="listener port (default: the site's)")] = None,
    bind: Annotated[str, typer.Option(help="listener address")] = "127.0.0.1",
) -> None:
    """Write mosquitto.conf, the password file and the ACL for a site, and print the conf path."""
    from config.loader import ConfigError

    try:
        server = _server(site, state, port, bind)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(str(server.conf))  # type: ignore[attr-defined]


@app.command("run")
def run(
    site: Annotated[Path, typer.Option(envvar="GW_SITE", help="site YAML file")],
    state: Annotated[Path, typer.Option(help="state folder (config, persistence, log)")] = Path(
        "state/broker"
    ),
    port: Annotated[int | None, typer.Option(help="listener port (default: the site's)")] = None,
    bind: Annotated[str, typer.Option(help="listener address")] = "127.0.0.1",
) -> None:
    """Run a local Mosquitto for the site until Ctrl-C."""
    from broker.mosquitto import MosquittoServer
    from config.loader import ConfigError
    from config.logs import setup_logging

    setup_logging()
    try:
        server = _server(site, state, port, bind)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    assert isinstance(server, MosquittoServer)
    server.start()
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
