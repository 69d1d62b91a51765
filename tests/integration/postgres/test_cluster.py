"""The throwaway cluster itself: configured limits, roles, restart on the same port."""

from __future__ import annotations

from tests.integration.pgcluster import PgCluster


def test_cluster_settings_roles_and_restart(pg: PgCluster) -> None:
    with pg.admin() as cur:
        cur.execute(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int"
        )
        assert cur.fetchone() == (20, 3)
        cur.execute(
            "SELECT rolname, rolsuper FROM pg_roles"
            " WHERE rolname IN ('app', 'monitor', 'pwuser') ORDER BY 1"
        )
        assert cur.fetchall() == [("app", False), ("monitor", False), ("pwuser", False)]
    port = pg.port
    pg.restart()
    assert pg.port == port
    assert pg.backends() == []
