"""Options of ``sqlalchemy-pool-exporter serve``: each a flag and a ``POOL_EXPORTER_*`` variable.

An invalid value fails at start with one line naming the setting
(:func:`sqlalchemy_pool_exporter.settings.describe_error`). An empty value means unset;
``state_dir`` is created if missing and must be writable.
Secrets can come from files (``token_file``, ``database_url_file``; read by
:mod:`~sqlalchemy_pool_exporter.sidecar.secrets`), so they never need to be on a command
line, where every local user can read them in ``/proc/<pid>/cmdline``. The limits at the
end bound what the sidecar holds under hostile load (README, "Reliability and limits").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sqlalchemy_pool_exporter.probes.url import probe_target
from sqlalchemy_pool_exporter.settings import PREFIX


def _check_hostport(value: str) -> str:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


class SidecarSettings(BaseSettings):
    """Options of ``sqlalchemy-pool-exporter serve``."""

    # An empty variable is unset: POOL_EXPORTER_TOKEN= must not mean "a token is
    # required" to the log and "any token will do" to the check.
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", env_ignore_empty=True)

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
    retired_retention: float = Field(
        default=900.0,
        ge=0,
        le=86_400,
        description="Seconds a retired process keeps its frozen per-process series.",
    )
    state_dir: str | None = Field(
        default=None, description="Directory for state that survives a restart (unset: none)."
    )
    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL, MySQL or MariaDB URL for the probe."
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

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str | None) -> str | None:
        # Fail at start, naming the setting, rather than at the first save.
        if not value:
            return None
        try:
            os.makedirs(value, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create directory {value!r}: {exc.strerror or exc}") from None
        if not os.access(value, os.W_OK | os.X_OK):
            raise ValueError(f"directory {value!r} is not writable")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        # Fail at start, naming the setting, rather than when the probe first runs.
        if value is not None and value.get_secret_value():
            probe_target(value.get_secret_value())  # its ValueError never carries the URL
        return value

    # -- secrets from files, and the bounds that keep the sidecar up (README "Reliability")
    token_file: Path | None = Field(
        default=None, description="File holding the push token (instead of TOKEN)."
    )
    database_url_file: Path | None = Field(
        default=None, description="File holding the probe's database URL (instead of DATABASE_URL)."
    )
    api_listen: str = Field(
        default="push",
        pattern="^(push|metrics|off)$",
        description="Listener serving /api/pools: push (loopback), metrics, or off.",
    )
    max_connections: int = Field(
        default=256, ge=4, le=65536, description="Open connections per listener."
    )
    request_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds for a whole request to arrive, and for a response to be read.",
    )
    max_buffered_bytes: int = Field(
        default=16 * 1_048_576,
        ge=65536,
        le=4096 * 1_048_576,
        description="Request body bytes held at once across all connections.",
    )
    max_state_bytes: int = Field(
        default=32 * 1_048_576,
        ge=65536,
        le=64 * 1024 * 1_048_576,
        description="Push body bytes kept as the latest state of all live processes.",
    )
    max_groups: int = Field(
        default=1024, ge=1, le=1_000_000, description="Distinct (app, pool) groups kept."
    )
    group_retention: float = Field(
        default=3600.0,
        ge=0,
        le=30 * 86400,
        description="Seconds an (app, pool) with no live process is kept.",
    )
    max_series: int = Field(
        default=100_000,
        ge=100,
        le=100_000_000,
        description="Per-process output beyond this many series serves aggregated series.",
    )

    @field_validator("token", "database_url", "token_file", "database_url_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value
