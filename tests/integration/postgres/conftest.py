"""Session fixture: one throwaway PostgreSQL cluster shared by every test in this package.

The cluster is created on first use and destroyed at the end of the session. Without
PostgreSQL's server binaries the tests skip on a developer machine and FAIL in CI (``CI``
set): the suite must never go green by skipping the scenarios it exists to prove.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.pgcluster import PgCluster, throwaway_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL server (max_connections=20, 3 reserved for superusers)."""
    with throwaway_cluster(max_connections=20, reserved_connections=3) as cluster:
        yield cluster


@pytest.fixture
def pg(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The shared server, up and free of client backends; left up for the next test."""
    pg_cluster.ensure_running()
    pg_cluster.wait_quiet()
    yield pg_cluster
    pg_cluster.ensure_running()
