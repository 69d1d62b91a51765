"""The SQLAlchemy plugin ``pool_exporter``: instrument an engine from its URL alone.

SQLAlchemy loads a :class:`~sqlalchemy.engine.CreateEnginePlugin` named in the
``sqlalchemy.plugins`` entry point group for every ``create_engine()`` (and so every
``create_async_engine()``) that asks for it, in either of two ways:

* in the URL — ``postgresql://db/shop?plugin=pool_exporter&pool_exporter_name=main`` —
  so a ``DATABASE_URL`` alone turns instrumentation on, in every program that reads it
  (the app, its workers, migrations), with no code change. SQLAlchemy takes ``plugin``
  out of the URL before the dialect sees it, so the engine's own ``engine.url`` no
  longer names the plugin: an engine built later from ``engine.url`` is not instrumented;
* as ``create_engine(url, plugins=["pool_exporter"])`` — in the code, for this engine
  only. Options may then also come as keyword arguments
  (``create_engine(url, plugins=["pool_exporter"], pool_exporter_name="main")``).

Options are the ``pool_exporter_*`` query parameters (or keyword arguments): ``name``,
``app``, ``leak_threshold``, ``peak_window``, ``push_url``, ``push_interval``,
``buckets`` (comma-separated seconds) and ``otel`` (true/false); anything not given
comes from the ``POOL_EXPORTER_*`` environment as for ``instrument()``. They are removed
before the dialect sees them (``update_url``). An unknown ``pool_exporter_*`` name or a
bad value fails ``create_engine()`` with one line naming it, before anything is built.

When the engine is built, ``engine_created`` calls :func:`instrument` with the options.
For ``create_async_engine()`` it receives the sync ``Engine`` inside the ``AsyncEngine``,
which is the engine ``instrument()`` attaches to in either case: the same series result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import CreateEnginePlugin, Engine
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError

from sqlalchemy_pool_exporter.instrumentation.engines import instrument
from sqlalchemy_pool_exporter.instrumentation.histogram import validate_buckets
from sqlalchemy_pool_exporter.instrumentation.settings import AppSettings

#: Name of the plugin (``?plugin=pool_exporter``) and prefix of its options.
PLUGIN = "pool_exporter"
PREFIX = "pool_exporter_"


def _text(value: str) -> str:
    return value


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError("must be a number") from None


def _flag(value: str) -> bool:
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _buckets(value: str) -> tuple[float, ...]:
    try:
        bounds = [float(b) for b in value.split(",")]
    except ValueError:
        raise ValueError("must be comma-separated numbers of seconds") from None
    return validate_buckets(bounds)


def _name(value: str) -> str:
    if not value or len(value) > 200:
        raise ValueError("must be 1..200 characters")
    return value


#: option -> parser of its text; each is an argument of ``instrument()``.
OPTIONS: dict[str, Callable[[str], Any]] = {
    "name": _name,
    "app": _text,
    "leak_threshold": _number,
    "peak_window": _number,
    "push_url": _text,
    "push_interval": _number,
    "buckets": _buckets,
    "otel": _flag,
}


def _fail(message: str) -> ArgumentError:
    return ArgumentError(f"{PLUGIN} plugin: {message}")


class PoolExporterPlugin(CreateEnginePlugin):
    """``create_engine(url)`` with ``?plugin=pool_exporter``: the engine is instrumented."""

    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        given: dict[str, Any] = {k: v for k, v in url.query.items() if k.startswith(PREFIX)}
        self._url_keys = list(given)
        # Keyword arguments are consumed here, by popping them (SQLAlchemy's contract).
        given.update({k: kwargs.pop(k) for k in list(kwargs) if k.startswith(PREFIX)})
        self.options = _parse(given)

    def update_url(self, url: URL) -> URL:
        """The URL without this plugin's options, as the dialect must see it."""
        return url.difference_update_query(self._url_keys)

    def engine_created(self, engine: Engine) -> None:
        """Instrument the new engine with the options."""
        instrument(engine, **self.options)


def _parse(given: dict[str, Any]) -> dict[str, Any]:
    """``instrument()`` arguments from ``pool_exporter_*`` texts; ArgumentError if any is bad."""
    unknown = sorted(k for k in given if k.removeprefix(PREFIX) not in OPTIONS)
    if unknown:
        known = ", ".join(PREFIX + k for k in OPTIONS)
        raise _fail(f"unknown option {', '.join(unknown)} (known: {known})")
    options: dict[str, Any] = {}
    for key, raw in given.items():
        option = key.removeprefix(PREFIX)
        if isinstance(raw, tuple):
            raise _fail(f"{key} given more than once")
        try:
            options[option] = raw if not isinstance(raw, str) else OPTIONS[option](raw)
        except ValueError as exc:
            raise _fail(f"invalid {key}: {exc}") from None
    _check_settings(options)
    return options


def _check_settings(options: dict[str, Any]) -> None:
    """Validate the options that are settings as ``instrument()`` will, before anything is built."""
    values = {k: v for k, v in options.items() if k in AppSettings.model_fields}
    try:
        AppSettings(**values)
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error.get("loc") else ""
            if field in values:  # the environment's own errors are instrument()'s to log
                message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
                raise _fail(f"invalid {PREFIX}{field}: {message}") from None
