"""The series ceiling of per-process output: no multi-gigabyte scrapes.

Per-process output (``per_process``) serves every live process's own series, so its size
is processes x pools x series per pool: a thousand processes with sixty-four pools each
are millions of series, a scrape of gigabytes that takes a minute to render. Before
each per-process scrape, :class:`SeriesCeiling` counts the series it would serve — from
the group sizes and bucket layouts alone, without building anything — and if that is
over ``max_series`` the scrape serves the aggregated series (labels ``app, pool``, whose
``sum by (app, pool)`` equals that of the per-process series) instead, sets
``pool_exporter_per_process_limited`` to 1, counts ``pool_exporter_limit_hits_total
{limit="series"}`` and logs ``limit reached`` (once a minute). It goes back to
per-process series by itself once they fit again.
"""

from __future__ import annotations

from sqlalchemy_pool_exporter.protocol.catalog import COUNTER_FIELDS, GAUGE_FIELDS
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator
from sqlalchemy_pool_exporter.sidecar.limits import LimitHits

#: Series per pool item besides histograms: gauges, counters and the info series.
_FLAT = len(GAUGE_FIELDS) + len(COUNTER_FIELDS) + 1


def per_process_series(agg: Aggregator) -> int:
    """Series a per-process scrape would serve now (one item per live or frozen label)."""
    with agg.lock:
        return sum(
            max(len(g.series or {}), len(g.members))
            * (_FLAT + sum(len(bounds) + 3 for bounds in g.ledger.shown))
            + 1  # sqlalchemy_pool_processes
            for g in agg.groups.values()
        )


class SeriesCeiling:
    """Decides, per scrape, whether per-process series fit under ``max_series``."""

    def __init__(self, max_series: int, hits: LimitHits) -> None:
        self.max_series = max_series
        self.hits = hits
        self.limited = False

    def allows(self, agg: Aggregator) -> bool:
        """True if per-process series fit; else count and log the hit."""
        series = per_process_series(agg)
        self.limited = series > self.max_series
        if self.limited:
            self.hits.hit("series", series=series, max_series=self.max_series)
        return not self.limited
