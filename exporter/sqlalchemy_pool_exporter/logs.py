"""Logging: structlog loggers that write through the standard ``logging`` hierarchy.

Inside a host app the exporter must never configure logging globally, so
:func:`get_logger` wraps a stdlib logger (``exporter.*``) with a private structlog
processor chain instead of calling ``structlog.configure``. Each record's message reads
``event key=value ...`` and the structured fields ride along in ``record.pool_exporter``
for JSON formatters. The sidecar, which owns its process, calls
:func:`configure_process_logging` to get JSON lines (containers) or console output (TTY).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import structlog


def _to_stdlib(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    event = str(event_dict.pop("event", ""))
    fields = " ".join(
        f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}"
        for k, v in event_dict.items()
    )
    extra = {"pool_exporter": {**event_dict, "event": event}}
    return {"msg": f"{event} {fields}".rstrip(), "extra": extra}


def get_logger(name: str) -> Any:
    """A structlog logger bound to the stdlib logger ``name`` (no global configuration)."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[_to_stdlib],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


class RateLimitedReporter:
    """Logs an error at most once per ``period`` seconds per key, counting every one."""

    def __init__(self, logger: Any, period: float = 60.0) -> None:
        self._log = logger
        self._period = period
        self._last: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def report(self, where: str, exc: BaseException) -> None:
        """Count one error at ``where``; log it unless logged within the period."""
        self.counts[where] = self.counts.get(where, 0) + 1
        now = time.monotonic()
        last = self._last.get(where)
        if last is None or now - last >= self._period:
            self._last[where] = now
            self._log.error(
                "exporter error suppressed",
                where=where,
                error=f"{type(exc).__name__}: {exc}",
                occurrences=self.counts[where],
            )


def configure_process_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog and stdlib logging for a process the exporter owns (the sidecar)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _unwrap_exporter_fields],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _unwrap_exporter_fields(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Records from get_logger() carry "event k=v" text plus the fields; in a process we
    # own, render the bare event with the fields as proper keys instead.
    fields = getattr(event_dict.get("_record"), "pool_exporter", None)
    if isinstance(fields, dict):
        event_dict.update(fields)
    return event_dict
