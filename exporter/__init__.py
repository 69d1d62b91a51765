"""Prometheus exporter for SQLAlchemy connection pools.

``exporter.instrument(engine)`` is the one line an app needs: pool metrics then appear
in prometheus_client's default registry (embedded mode) and, when
``POOL_EXPORTER_PUSH_URL`` is set, are pushed to the ``sqlalchemy-pool-exporter serve``
sidecar, which aggregates every worker process of the app.
"""

from exporter.embedded import PoolCollector, start_http_server
from exporter.instrument import instrument, instrumentations, uninstrument
from exporter.stats import PoolStats

__all__ = [
    "PoolCollector",
    "PoolStats",
    "instrument",
    "instrumentations",
    "start_http_server",
    "uninstrument",
]
__version__ = "0.1.0"
