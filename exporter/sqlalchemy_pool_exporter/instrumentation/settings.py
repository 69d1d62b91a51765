"""Options of the instrumentation inside the app, from arguments or ``POOL_EXPORTER_*``.

Read when ``instrument()`` runs; explicit arguments win over the environment.
"""

from __future__ import annotations

import os
import sys

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sqlalchemy_pool_exporter.settings import PREFIX


def _default_app() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    name = name.removesuffix(".py")
    return name if name and not name.startswith("-") else "python"


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
        return value
