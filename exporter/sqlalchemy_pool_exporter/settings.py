"""Settings shared by both halves: the ``POOL_EXPORTER_*`` prefix and error messages.

The app side's options are :class:`~sqlalchemy_pool_exporter.instrumentation.settings.AppSettings`,
the sidecar's :class:`~sqlalchemy_pool_exporter.sidecar.settings.SidecarSettings`; both read
the environment with this prefix, and both report an invalid value in one line naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

PREFIX = "POOL_EXPORTER_"


def error_message(error: Mapping[str, Any]) -> str:
    """What is wrong with one value, from one pydantic error (never the value itself)."""
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def describe_error(exc: ValidationError) -> str:
    """One line naming the first invalid setting and what is wrong with it."""
    err = exc.errors()[0]
    name = ".".join(str(p) for p in err.get("loc", ())) or "settings"
    return f"invalid setting {PREFIX}{name.upper()} ({name}): {error_message(err)}"
