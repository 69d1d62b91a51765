"""Settings for both halves, from arguments or the ``POOL_EXPORTER_*`` environment.

App side (:class:`AppSettings`): read when ``instrument()`` runs; explicit arguments win.
Sidecar (:class:`SidecarSettings`): every field is also a ``serve`` flag. An invalid
value fails with one line naming the setting (:func:`describe_error`).
"""

from __future__ import annotations

import os
import sys

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "POOL_EXPORTER_"


def _default_app() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    name = name.removesuffix(".py")
    return name if name and not name.startswith("-") else "python"


def _check_hostport(value: str) -> str:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


class AppSettings(BaseSettings):
    """Options of the instrumentation inside the app."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    push_url: str | None = Field(
        default=None, description="Sidecar push endpoint; unset means embedded only."
    )
    push_interval: float = Field(default=5.0, gt=0, le=3600, description="Seconds between pushes.")
    push_timeout: float = Field(default=2.0, gt=0, le=60, description="Seconds per push request.")
    app: str = Field(
        default_factory=_default_app,
        min_length=1,
        max_length=128,
        description="Application name (the `app` label).",
    )
    leak_threshold: float = Field(
        default=30.0, ge=0, description="Seconds; 0 turns leak detection off."
    )
    peak_window: float = Field(
        default=30.0, gt=0, le=3600, description="Peak utilization window, s."
    )
    token: SecretStr | None = Field(default=None, description="Bearer token for pushes.")

    @field_validator("push_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class SidecarSettings(BaseSettings):
    """Options of ``sqlalchemy-pool-exporter serve``."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    listen: str = Field(
        default="0.0.0.0:9187", description="host:port for /metrics, /healthz, /api/pools."
    )
    push_listen: str = Field(default="127.0.0.1:9188", description="host:port for POST /v1/push.")
    token: SecretStr | None = Field(default=None, description="Bearer token required on pushes.")
    per_process: bool = Field(default=False, description="Also expose per-process series.")
    max_processes: int = Field(default=1000, ge=1, le=100_000, description="Live processes kept.")
    max_pools: int = Field(default=64, ge=1, le=10_000, description="Pools per process.")
    max_label_length: int = Field(default=256, ge=8, le=4096, description="Label value length.")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=64 * 1_048_576, description="Largest push body accepted."
    )
    expiry_factor: float = Field(
        default=3.0,
        ge=1.0,
        le=100.0,
        description="A process expires after this many silent intervals.",
    )
    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL for the probe."
    )
    probe_interval: float = Field(
        default=15.0, gt=0, le=3600, description="Seconds between probes."
    )
    log_format: str = Field(
        default="auto",
        pattern="^(auto|json|console)$",
        description="json, console or auto (console on a TTY).",
    )
    log_level: str = Field(
        default="info",
        pattern="^(?i)(debug|info|warning|error|critical)$",
        description="Log level.",
    )

    _hostport = field_validator("listen", "push_listen")(_check_hostport)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        # Fail at start, naming the setting, rather than when the probe first runs.
        if value is not None and value.get_secret_value():
            from exporter.probe import connect_kwargs

            connect_kwargs(value.get_secret_value())  # ValueError never carries the password
        return value


def describe_error(exc: ValidationError) -> str:
    """One line naming the first invalid setting and what is wrong with it."""
    err = exc.errors()[0]
    name = ".".join(str(p) for p in err.get("loc", ())) or "settings"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"invalid setting {PREFIX}{name.upper()} ({name}): {msg}"
