"""Dispatcher settings: one BaseSettings class, from GW_* environment variables or the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from config.loader import is_secret
from dispatcher.evidence import MAX_IMAGE_BYTES

PLACEHOLDER_SECRET = "change-me"


class DispatcherSettings(BaseSettings):
    """Where the dispatcher keeps its state and finds the broker, InfluxDB and the site."""

    model_config = SettingsConfigDict(env_prefix="GW_", extra="ignore")

    site: Path = Field(description="site YAML file")
    state_dir: Path = Field(
        default=Path("state/dispatcher"), description="evidence, hard negatives"
    )
    db_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite in state_dir"
    )
    influx_url: str = "http://127.0.0.1:8086"
    influx_db: str = Field(default="gridwatch", description="database (1.x) or bucket (2.x/3.x)")
    influx_token: SecretStr | None = None
    influx_org: str | None = None
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    mqtt_client_id: str = Field(
        default="dispatcher-1",
        description="unique and stable per process slot: a restarted process resumes its session",
    )
    share_group: str = Field(
        default="dispatchers",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="MQTT v5 shared-subscription group that splits the event stream",
    )
    secret_key: SecretStr = Field(default=SecretStr(PLACEHOLDER_SECRET), description="signs tokens")
    environment: str = Field(default="development", description="development or production")
    admin_password: SecretStr | None = Field(default=None, description="creates the admin account")
    token_ttl_minutes: float = Field(default=12 * 60, gt=0, description="access token lifetime")
    intake_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="events per intake transaction (1: one transaction per event)",
    )
    timer_tick_s: float = Field(
        default=1,
        gt=0,
        le=60,
        description="how often the ticket store is checked for due timers and shift changes",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="largest request body; a larger one is refused (413) before it is read",
    )
    max_upload_bytes: int = Field(
        default=MAX_IMAGE_BYTES + 1024 * 1024,
        gt=MAX_IMAGE_BYTES,
        description="largest body of a file upload (the after-photo and its form); "
        "above the photo limit so that the photo's own check can name what is wrong",
    )
    open311_api_key: SecretStr | None = Field(
        default=None,
        description="when set, Open311 POST requests must carry this api_key",
    )

    @field_validator("db_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            make_url(v).get_dialect()
        except (ArgumentError, ValueError) as exc:
            raise ValueError(
                f"{exc}; expected an SQLAlchemy database URL such as "
                "postgresql+psycopg://user:password@host:5432/gridwatch or "
                "sqlite:////var/lib/gridwatch/dispatcher.db"
            ) from exc
        return v

    @model_validator(mode="after")
    def _no_placeholder_in_production(self) -> DispatcherSettings:
        if self.environment != "development" and self.placeholder_secret:
            raise ValueError(
                f"GW_SECRET_KEY must be set to a real secret outside development "
                f"(GW_ENVIRONMENT is {self.environment!r})"
            )
        return self

    @property
    def placeholder_secret(self) -> bool:
        """Whether tokens are signed with the placeholder (or an empty) key: allowed only in
        development, and warned about there."""
        return self.secret_key.get_secret_value() in (PLACEHOLDER_SECRET, "")

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.state_dir / 'dispatcher.db').resolve()}"


# Settings whose value may hold a password without being a secret type: never shown either.
UNSHOWN_SETTINGS = frozenset({"db_url"})


def describe_settings_error(err: ValidationError) -> list[str]:
    """One line per problem: the setting's environment variable (``GW_*``, also read by the
    options of ``gridwatch dispatcher run``), what was expected, and what was given (never a
    secret's value)."""
    problems = []
    for e in err.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # a rule across settings: its message names them
            problems.append(msg)
            continue
        name = str(e["loc"][0])
        field = DispatcherSettings.model_fields.get(name)
        hidden = name in UNSHOWN_SETTINGS or (field is not None and is_secret(field.annotation))
        given = "" if hidden else f" (got {str(e.get('input'))[:80]!r})"
        problems.append(f"GW_{name.upper()}: {msg}{given}")
    return problems
