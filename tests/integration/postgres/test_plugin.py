"""The ``pool_exporter`` plugin on PostgreSQL, psycopg2 and asyncpg: same series as instrument()."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import create_async_engine

import sqlalchemy_pool_exporter
from tests.integration.pgcluster import PgCluster
from tests.pool_series import async_workload, pool_series, workload

pytestmark = pytest.mark.integration
#: How the plugin is asked for: in the URL query, or as ``plugins=`` with keyword options.
WAYS = ("url", "plugins")


def plugged(pg: PgCluster, driver: str, way: str) -> tuple[str, dict[str, Any]]:
    """URL and keyword arguments that ask for the plugin ``way``, naming the pool."""
    if way == "url":
        return pg.url(driver, plugin="pool_exporter", pool_exporter_name="plugged"), {}
    return pg.url(driver), {"plugins": ["pool_exporter"], "pool_exporter_name": "plugged"}


@pytest.mark.parametrize("way", WAYS)
def test_psycopg2(pg: PgCluster, way: str) -> None:
    direct = create_engine(pg.url("psycopg2"), pool_size=3, max_overflow=1)
    url, kwargs = plugged(pg, "psycopg2", way)
    engine = create_engine(url, pool_size=3, max_overflow=1, **kwargs)
    try:
        sqlalchemy_pool_exporter.instrument(direct, name="direct", registry=None)
        assert engine.url == direct.url  # the dialect never sees the plugin or its options
        for each in (direct, engine):
            workload(each)
        series = pool_series("plugged")
        assert series == pool_series("direct")
        assert series["sqlalchemy_pool_checkouts_total", frozenset()] == 8
        assert series["sqlalchemy_pool_connections_created_total", frozenset()] == 2
    finally:
        for each in (direct, engine):
            sqlalchemy_pool_exporter.uninstrument(each)
            each.dispose()


@pytest.mark.parametrize("way", WAYS)
def test_asyncpg(pg: PgCluster, way: str) -> None:
    async def main() -> None:
        direct = create_async_engine(pg.url("asyncpg"), pool_size=3, max_overflow=1)
        url, kwargs = plugged(pg, "asyncpg", way)
        engine = create_async_engine(url, pool_size=3, max_overflow=1, **kwargs)
        try:
            sqlalchemy_pool_exporter.instrument(direct, name="direct", registry=None)
            for each in (direct, engine):
                await async_workload(each)
            series = pool_series("plugged")
            assert series == pool_series("direct")
            assert series["sqlalchemy_pool_checkouts_total", frozenset()] == 8
        finally:
            for each in (direct, engine):
                sqlalchemy_pool_exporter.uninstrument(each)
                await each.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg"])
def test_bad_option_fails_create_engine(pg: PgCluster, driver: str) -> None:
    url = pg.url(driver, plugin="pool_exporter", pool_exporter_leak_threshold="soon")
    make = create_engine if driver == "psycopg2" else create_async_engine
    before = sqlalchemy_pool_exporter.instrumentations()
    with pytest.raises(ArgumentError) as info:
        make(url)
    assert str(info.value) == (
        "pool_exporter plugin: invalid pool_exporter_leak_threshold: must be a number"
    )
    assert sqlalchemy_pool_exporter.instrumentations() == before  # nothing was built
