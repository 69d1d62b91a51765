"""The ``pool_exporter`` SQLAlchemy plugin: same series as ``instrument()``, strict options."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import create_async_engine

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation.plugin import PoolExporterPlugin
from tests.pool_series import async_workload, pool_series, workload

#: How the plugin is asked for: in the URL, or as ``plugins=`` (options as keywords).
WAYS: dict[str, Callable[[str, str], tuple[str, dict[str, Any]]]] = {
    "url": lambda url, name: (f"{url}?plugin=pool_exporter&pool_exporter_name={name}", {}),
    "plugins": lambda url, name: (url, {"plugins": ["pool_exporter"], "pool_exporter_name": name}),
    "plugins+url options": lambda url, name: (
        f"{url}?pool_exporter_name={name}",
        {"plugins": ["pool_exporter"]},
    ),
}


def test_entry_point_is_registered() -> None:
    (ep,) = entry_points(group="sqlalchemy.plugins", name="pool_exporter")
    assert ep.load() is PoolExporterPlugin


@pytest.mark.parametrize("way", WAYS)
def test_plugin_gives_the_same_series_as_instrument(
    way: str, sqlite_url: str, engines: list[Engine]
) -> None:
    direct = create_engine(sqlite_url, pool_size=3, max_overflow=1)
    engines.append(direct)
    sqlalchemy_pool_exporter.instrument(direct, name="direct", registry=None)
    url, kwargs = WAYS[way](sqlite_url, "plugged")
    plugged = create_engine(url, pool_size=3, max_overflow=1, **kwargs)
    engines.append(plugged)
    assert str(plugged.url) == str(direct.url)  # the dialect never sees pool_exporter_*
    for engine in (direct, plugged):
        workload(engine)
    series = pool_series("plugged")
    assert series == pool_series("direct")
    assert series["sqlalchemy_pool_checkouts_total", frozenset()] == 8


@pytest.mark.parametrize("way", WAYS)
def test_async_plugin_gives_the_same_series_as_instrument(
    way: str, tmp_path: Path, engines: list[Engine]
) -> None:
    base = f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"

    async def main() -> None:
        direct = create_async_engine(base, pool_size=3, max_overflow=1)
        sqlalchemy_pool_exporter.instrument(direct, name="direct", registry=None)
        url, kwargs = WAYS[way](base, "plugged")
        plugged = create_async_engine(url, pool_size=3, max_overflow=1, **kwargs)
        engines.extend([direct.sync_engine, plugged.sync_engine])
        for engine in (direct, plugged):
            await async_workload(engine)
        for engine in (direct, plugged):
            await engine.dispose()

    asyncio.run(main())
    series = pool_series("plugged")
    assert series == pool_series("direct")
    assert series["sqlalchemy_pool_checkouts_total", frozenset()] == 8


def test_options_reach_instrument(sqlite_url: str, engines: list[Engine]) -> None:
    engine = create_engine(
        f"{sqlite_url}?plugin=pool_exporter&pool_exporter_leak_threshold=2.5"
        "&pool_exporter_peak_window=10&pool_exporter_buckets=0.01,0.1,1"
    )
    engines.append(engine)
    (inst,) = [i for i in sqlalchemy_pool_exporter.instrumentations() if i.engine is engine]
    assert inst.stats.name == f"sqlite:///{sqlite_url.removeprefix('sqlite:///')}"
    assert (inst.stats.leak_threshold, inst.stats.peak_window) == (2.5, 10.0)
    assert inst.stats.wait.bounds == (0.01, 0.1, 1.0)
    assert engine.url.query == {}


def test_plugin_named_twice_instruments_once(sqlite_url: str, engines: list[Engine]) -> None:
    engine = create_engine(f"{sqlite_url}?plugin=pool_exporter", plugins=["pool_exporter"])
    engines.append(engine)
    workload(engine)
    (inst,) = [i for i in sqlalchemy_pool_exporter.instrumentations() if i.engine is engine]
    assert inst.stats.checkouts == 8


KNOWN = (
    "pool_exporter_name, pool_exporter_app, pool_exporter_leak_threshold, "
    "pool_exporter_peak_window, pool_exporter_push_url, pool_exporter_push_interval, "
    "pool_exporter_buckets, pool_exporter_otel"
)
BAD = {
    "pool_exporter_nmae=x": f"unknown option pool_exporter_nmae (known: {KNOWN})",
    "pool_exporter_leak_threshold=soon": "invalid pool_exporter_leak_threshold: must be a number",
    "pool_exporter_leak_threshold=-1": (
        "invalid pool_exporter_leak_threshold: Input should be greater than or equal to 0"
    ),
    "pool_exporter_push_url=ftp://sidecar": (
        "invalid pool_exporter_push_url: must start with http:// or https://"
    ),
    "pool_exporter_push_interval=0": (
        "invalid pool_exporter_push_interval: Input should be greater than 0"
    ),
    "pool_exporter_buckets=1,0.5": (
        "invalid pool_exporter_buckets: buckets must be strictly increasing"
    ),
    "pool_exporter_buckets=fast": (
        "invalid pool_exporter_buckets: must be comma-separated numbers of seconds"
    ),
    "pool_exporter_otel=maybe": "invalid pool_exporter_otel: must be true or false",
    "pool_exporter_name=" + "x" * 201: "invalid pool_exporter_name: must be 1..200 characters",
    "pool_exporter_name=a&pool_exporter_name=b": "pool_exporter_name given more than once",
}


@pytest.mark.parametrize("query", BAD)
def test_bad_option_fails_create_engine_with_one_line(sqlite_url: str, query: str) -> None:
    before = sqlalchemy_pool_exporter.instrumentations()
    with pytest.raises(ArgumentError) as info:
        create_engine(f"{sqlite_url}?plugin=pool_exporter&{query}")
    assert str(info.value) == f"pool_exporter plugin: {BAD[query]}"
    assert sqlalchemy_pool_exporter.instrumentations() == before  # nothing was built


def test_bad_keyword_option_fails_create_engine(sqlite_url: str) -> None:
    before = sqlalchemy_pool_exporter.instrumentations()
    with pytest.raises(ArgumentError) as info:
        create_engine(sqlite_url, plugins=["pool_exporter"], pool_exporter_leak=1)
    assert (
        str(info.value)
        == f"pool_exporter plugin: unknown option pool_exporter_leak (known: {KNOWN})"
    )
    assert sqlalchemy_pool_exporter.instrumentations() == before
