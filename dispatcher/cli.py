"""``gridwatch dispatcher …``: run the dispatcher service (bus consumer + HTTP API)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="The dispatcher: events in, tickets out, HTTP API and web pages.", no_args_is_help=True
)
log = logging.getLogger(__name__)


@app.command("run")
def run(
    site: Annotated[Path, typer.Option(envvar="GW_SITE", help="site YAML file")],
    state_dir: Annotated[Path, typer.Option(envvar="GW_STATE_DIR", help="state folder")] = Path(
        "state/dispatcher"
    ),
    host: Annotated[
        str, typer.Option(envvar="GW_HTTP_HOST", help="HTTP bind address")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="GW_HTTP_PORT", help="HTTP port")] = 8000,
    influx_url: Annotated[str, typer.Option(envvar="GW_INFLUX_URL")] = "http://127.0.0.1:8086",
    influx_db: Annotated[str, typer.Option(envvar="GW_INFLUX_DB")] = "gridwatch",
    db_url: Annotated[
        str | None, typer.Option(envvar="GW_DB_URL", help="SQLAlchemy URL (default: SQLite)")
    ] = None,
    client_id: Annotated[
        str, typer.Option(envvar="GW_MQTT_CLIENT_ID", help="MQTT client id, unique per process")
    ] = "dispatcher-1",
) -> None:
    """Run one dispatcher process until Ctrl-C (or SIGTERM).

    Each option can also be set by its GW_* environment variable, the other settings only so
    (docs/deployment.md). A bad setting or site file ends it at once with exit status 2 and a
    message that names it; a state folder or ticket store that cannot be opened, with status 1.
    """
    import uvicorn
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from config.loader import ConfigError
    from config.logs import setup_logging
    from config.site import load_site
    from dispatcher.api.app import create_app
    from dispatcher.service import Dispatcher
    from dispatcher.settings import DispatcherSettings, describe_settings_error

    try:
        setup_logging()
    except ValueError as exc:
        typer.echo(f"GW_LOG_LEVEL: {exc} (expected DEBUG, INFO, WARNING or ERROR)", err=True)
        raise typer.Exit(2) from exc
    try:
        settings = DispatcherSettings(
            site=site,
            state_dir=state_dir,
            http_host=host,
            http_port=port,
            influx_url=influx_url,
            influx_db=influx_db,
            db_url=db_url,
            mqtt_client_id=client_id,
        )
    except ValidationError as exc:
        lines = "\n".join(f"  - {p}" for p in describe_settings_error(exc))
        typer.echo(f"invalid dispatcher settings:\n{lines}", err=True)
        raise typer.Exit(2) from exc
    try:
        site_cfg = load_site(settings.site)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    try:
        dispatcher = Dispatcher(settings, site_cfg)
    except (OSError, SQLAlchemyError) as exc:
        # The state folder or the ticket store cannot be opened (a path, a permission, a
        # database server that does not answer).
        typer.echo(f"dispatcher did not start: {exc}", err=True)
        raise typer.Exit(1) from exc
    dispatcher.start(wait_s=None)
    try:
        # Live streams (the worker app's) never end by themselves: give them 3 s on shutdown.
        uvicorn.run(
            create_app(dispatcher),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=3,
        )
    finally:
        dispatcher.stop()
