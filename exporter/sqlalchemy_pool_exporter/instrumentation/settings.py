"""Options of the instrumentation inside the app, from arguments or ``POOL_EXPORTER_*``.

Read when ``instrument()`` runs; explicit arguments win over the environment. An empty
variable counts as unset (``POOL_EXPORTER_APP=`` keeps the default). A push URL without
a path (``http://127.0.0.1:9188``) gets the sidecar's push path, ``/v1/push``. Invalid
variables are dropped one by one by
:func:`~sqlalchemy_pool_exporter.instrumentation.engines.load_settings`, so one typo
never switches the others off.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sqlalchemy_pool_exporter.instrumentation.appname import default_app
from sqlalchemy_pool_exporter.protocol.wire import PUSH_PATH
from sqlalchemy_pool_exporter.settings import PREFIX


class AppSettings(BaseSettings):
    """Options of the instrumentation inside the app."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="ignore", env_ignore_empty=True, hide_input_in_errors=True
    )

    push_url: str | None = Field(
        default=None, description="Sidecar push endpoint; unset means embedded only."
    )
    push_interval: float = Field(default=5.0, gt=0, le=3600, description="Seconds between pushes.")
    push_timeout: float = Field(default=2.0, gt=0, le=60, description="Seconds per push request.")
    app: str = Field(
        default_factory=default_app,
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
    otel: bool = Field(
        default=False,
        description="Also report through the OpenTelemetry Metrics API (needs the [otel] extra).",
    )
    stamp_application_name: bool = Field(
        default=False,
        description="Name new PostgreSQL connections after the app process (attribution).",
    )

    @field_validator("push_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            raise ValueError("is not a valid URL (host:port?)") from None
        if not parts.hostname:
            raise ValueError("has no host")
        if parts.path in ("", "/"):  # the sidecar's address alone: push to its push path
            return urlunsplit(parts._replace(path=PUSH_PATH))
        return value
