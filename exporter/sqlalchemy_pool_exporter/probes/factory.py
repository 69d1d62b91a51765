"""The probe for a database URL, chosen by its scheme.

``postgresql://``/``postgres://`` (or a libpq ``key=value`` string) get the PostgreSQL
probe, ``mysql://``/``mariadb://`` (any ``+driver``) the MySQL/MariaDB probe. Each
probe's driver is an extra (``[postgres]``, ``[mysql]``; ``[sidecar]`` has both) and is
imported here only when a probe of that kind is made.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy_pool_exporter.probes.url import probe_target

#: backend -> the extra that installs its driver
EXTRAS = {"postgresql": "postgres", "mysql": "mysql"}


class ProbeUnavailable(Exception):
    """The probe's driver is not installed; the message names the extra to install."""


def make_probe(url: str, **options: Any) -> Any:
    """A started-later probe of ``url`` (``interval``, ``statement_timeout`` pass through).

    ValueError for an unusable URL (never quoting it), :class:`ProbeUnavailable` when the
    driver's extra is missing.
    """
    backend = probe_target(url).backend
    try:
        # Lazy: the drivers are optional extras, and an app never needs them.
        if backend == "mysql":
            from sqlalchemy_pool_exporter.probes.mysql import MySQLProbe

            return MySQLProbe(url, **options)
        from sqlalchemy_pool_exporter.probes.postgres import DatabaseProbe

        return DatabaseProbe(url, **options)
    except ImportError as exc:
        raise ProbeUnavailable(
            f"{exc}; install sqlalchemy-pool-exporter[{EXTRAS[backend]}]"
        ) from None
