"""Prometheus exporter for SQLAlchemy connection pools.

``sqlalchemy_pool_exporter.instrument(engine)`` is the one line an app needs: pool
metrics then appear in prometheus_client's default registry (embedded mode) and, when
``POOL_EXPORTER_PUSH_URL`` is set, are pushed to the ``sqlalchemy-pool-exporter serve``
sidecar, which aggregates every worker process of the app.

The package is split by side of the wire: ``instrumentation`` (inside the app),
``protocol`` (the metric catalog and the push format), ``exposition`` (metric families,
shared), ``sidecar``, ``probes`` (the database server's view) and ``cli``. The public
names below are loaded on first use, so the sidecar, which never imports the app side,
does not load SQLAlchemy by importing this package.
"""

from __future__ import annotations

import importlib

# Not ``typing.TYPE_CHECKING``: ``run`` imports this package into every Python process of
# its command at start-up, and typing alone would double what that costs them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sqlalchemy_pool_exporter.instrumentation.diagnose import diagnose as diagnose
    from sqlalchemy_pool_exporter.instrumentation.embedded import PoolCollector as PoolCollector
    from sqlalchemy_pool_exporter.instrumentation.embedded import (
        start_http_server as start_http_server,
    )
    from sqlalchemy_pool_exporter.instrumentation.engines import instrument as instrument
    from sqlalchemy_pool_exporter.instrumentation.engines import uninstrument as uninstrument
    from sqlalchemy_pool_exporter.instrumentation.registry import (
        instrumentations as instrumentations,
    )
    from sqlalchemy_pool_exporter.instrumentation.runtime import flush as flush
    from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats as PoolStats

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "PoolCollector": "sqlalchemy_pool_exporter.instrumentation.embedded",
    "PoolStats": "sqlalchemy_pool_exporter.instrumentation.stats",
    "flush": "sqlalchemy_pool_exporter.instrumentation.runtime",
    "diagnose": "sqlalchemy_pool_exporter.instrumentation.diagnose",
    "instrument": "sqlalchemy_pool_exporter.instrumentation.engines",
    "instrumentations": "sqlalchemy_pool_exporter.instrumentation.registry",
    "start_http_server": "sqlalchemy_pool_exporter.instrumentation.embedded",
    "uninstrument": "sqlalchemy_pool_exporter.instrumentation.engines",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
