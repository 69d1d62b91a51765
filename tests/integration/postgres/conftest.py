"""Session fixture: one throwaway PostgreSQL cluster shared by every test in this package.

The cluster is created on first use and destroyed at the end of the session. Without
PostgreSQL's server binaries the tests skip on a developer machine and FAIL in CI (``CI``
set): the suite must never go green by skipping the scenarios it exists to prove.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import IN_CI
from tests.integration.pgcluster import PgCluster, find_bindir


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL server (max_connections=20, 3 reserved for superusers)."""
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found"
        if IN_CI:
            pytest.fail(message + " (CI must run every integration test)")
        pytest.skip(message)
    cluster = PgCluster(bindir, max_connections=20, reserved_connections=3)
    try:
        cluster.init()
        cluster.start()
        cluster.setup_roles()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The shared server, up and free of client backends; left up for the next test."""
    pg_cluster.ensure_running()
    pg_cluster.wait_quiet()
    yield pg_cluster
    pg_cluster.ensure_running()
