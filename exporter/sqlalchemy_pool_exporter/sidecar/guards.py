"""What a push must satisfy against what the sidecar already holds for its process.

**Identity.** A push for a known instance (live, or retired and remembered) must carry a
sequence number above the last one (else 409 ``stale_sequence``: a duplicate or
out-of-order push), the ``process.key`` its first push set (else 409
``identity_changed``, checked before app, host and pid, so an impostor learns nothing
more), and the same app, host and pid (else 400 ``identity_changed``).

**Plausibility.** Validation (:mod:`~sqlalchemy_pool_exporter.protocol.validation`)
bounds each number on its own: counts up to 2**53, histogram sums up to 2**40 s. That is
not enough, because totals add many pushes up, and a float64 total above 2**53 no longer
moves by 1: one push of a huge value would freeze a pool's total for good. So before a
push is applied, each of its cumulative values (counters, histogram counts and sums) must

* grow by at most :data:`MAX_RATE` per second of the sidecar's own clock since the
  process's previous accepted push (plus one second of slack for batching). 10**6 per
  second is ten times the fastest checkout rate one Python process reaches (the hot path
  alone costs about a microsecond, a real checkout ten or more); a histogram sum is
  seconds of waiting or holding, and grows by more than 10**6 per second only with a
  million connections held at once;
* or, for a process the sidecar has no previous push from (new, back from retirement,
  or a pool that restarted from zero), be at most :data:`FIRST_LIMIT` — 2**40 checkouts
  is 35 years at 1,000 a second, so a long-lived process that meets a freshly started
  sidecar fits, while a thousand fake processes together stay below 2**50;
* and keep the (app, pool) total at or below 2**53 (sums: :data:`MAX_TOTAL_SUM`).

A push that breaks one is refused whole with 400 ``implausible_value`` and changes
nothing; the process's next honest push is accepted as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy_pool_exporter.protocol.catalog import HISTOGRAM_FIELDS
from sqlalchemy_pool_exporter.protocol.records import PoolData, Push, PushRejected
from sqlalchemy_pool_exporter.sidecar.totals import Totals, layout_of, regression

MAX_RATE = 1_000_000
FIRST_LIMIT = 2**40
MAX_TOTAL = 2**53
#: 2**43 s keeps a summed total's float resolution at 2 ms or finer.
MAX_TOTAL_SUM = float(2**43)


def _refuse(pool: str, what: str) -> PushRejected:
    name = pool if len(pool) <= 40 else pool[:40] + "…"
    return PushRejected(400, "implausible_value", f"pool {name!r}: {what}")


def check_identity(push: Push, app: str, label: str, seq: int, key: str) -> None:
    """Raise :class:`PushRejected` unless ``push`` continues the instance known so."""
    if push.seq <= seq:
        raise PushRejected(
            409, "stale_sequence", f"seq {push.seq} is not above {seq} for this process"
        )
    if key != push.key:  # before the identity: an impostor is told only this
        raise PushRejected(
            409, "identity_changed", "process.key differs: the instance is another's"
        )
    if app != push.app:
        raise PushRejected(400, "identity_changed", "process.app changed for this instance")
    if label != push.process:
        raise PushRejected(400, "identity_changed", "process.host or pid changed for this instance")


def check_growth(
    push: Push,
    previous: Mapping[str, PoolData],
    elapsed: float | None,
    totals: Callable[[str], Totals | None],
) -> None:
    """Raise :class:`PushRejected` if ``push`` would grow any value or total implausibly.

    ``previous`` holds the process's last accepted values per pool (empty for a new
    process), ``elapsed`` the seconds since that push (None: no live previous push), and
    ``totals(pool)`` the (app, pool) total the push would add to (None for a new group).
    """
    for name, data in push.pools.items():
        old = previous.get(name)
        if old is not None and regression(data, old):
            old = None  # a pool that restarted from zero: all of it is new
        limit = FIRST_LIMIT if old is None or elapsed is None else MAX_RATE * (elapsed + 1.0)
        total = totals(name)
        for field, value in data.counters.items():
            grown = value - (old.counters[field] if old is not None else 0)
            if grown > limit:
                raise _refuse(name, f"counter {field} grew by more than {limit:.0f}")
            if total is not None and total.counters[field] + grown > MAX_TOTAL:
                raise _refuse(name, f"counter {field} total would pass 2**53")
        for field in HISTOGRAM_FIELDS:
            hist = data.histograms[field]
            before = old.histograms[field] if old is not None else None
            count = hist.count - (before.count if before is not None else 0)
            seconds = hist.sum - (before.sum if before is not None else 0.0)
            if count > limit or seconds > limit:
                raise _refuse(name, f"histogram {field} grew by more than {limit:.0f}")
            held = total.hists.get(layout_of(data)) if total is not None else None
            if held is not None and (
                held[field].count + count > MAX_TOTAL or held[field].sum + seconds > MAX_TOTAL_SUM
            ):
                raise _refuse(name, f"histogram {field} total would pass its exact range")
