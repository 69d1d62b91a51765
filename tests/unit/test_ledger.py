"""The compiled ledger and its Python twin: the same writes, the same figures, clear errors."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.pool import SingletonThreadPool

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import acquire, ledger, sites
from sqlalchemy_pool_exporter.instrumentation.registry import reporter
from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats

try:
    from sqlalchemy_pool_exporter.instrumentation import _ledger
except ImportError as exc:  # the test script builds it: its absence is a failure, not a skip
    raise ImportError(
        "the compiled ledger was not built (pip install -e . with a C compiler)"
    ) from exc


class Ticks:
    """A clock that moves only when told: both ledgers see the very same readings."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["compiled", "python"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Instrument with the compiled ledger and wrappers, or with the Python ones."""
    if request.param == "compiled":
        parts = (_ledger.Checkout, _ledger.Ledger, _ledger.Checkin)
    else:
        parts = (None, ledger.PyLedger, ledger.py_checkin)
    monkeypatch.setattr(acquire, "Checkout", parts[0])
    monkeypatch.setattr(acquire, "Ledger", parts[1])
    monkeypatch.setattr(acquire, "Checkin", parts[2])
    return str(request.param)


def workload(engine: Engine, ticks: Ticks, stats: PoolStats) -> Iterator[str]:
    """Checkouts held for set times, a nested one, a dropped one and a flagged leak."""
    for held in (0.0001, 0.003, 0.2, 7.0):
        conn = engine.raw_connection()
        ticks.now += held
        conn.close()
        yield f"held {held}"
    outer = engine.raw_connection()
    inner = engine.raw_connection()
    ticks.now += 0.04
    inner.close()
    outer.close()
    yield "nested"
    dropped = engine.raw_connection()
    ticks.now += 0.45
    del dropped  # the garbage collector's checkin
    yield "dropped"
    leaking = engine.raw_connection()
    ticks.now += 60.0
    stats.scan_leaks()  # the ticks stand 1,000 s behind its clock: this one is flagged
    assert stats.leaks == 1 and len(stats.leaked) == 1
    leaking.close()
    assert not stats.leaked
    yield "leak"


def figures(stats: PoolStats) -> dict[str, Any]:
    """Every figure the ledger writes."""
    return {
        "wait": (list(stats.wait.counts), stats.wait.sum),
        "use": (list(stats.use.counts), stats.use.sum),
        "held": len(stats.held),
        "waiting": list(stats.waiting),
        "peak": stats.peak,
        "gc_reclaimed": stats.gc_reclaimed,
    }


def test_both_ledgers_write_the_same_figures(
    make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    start = time.perf_counter() - 1000.0
    for name in ("compiled", "python"):
        with monkeypatch.context() as patch:
            if name == "python":
                patch.setattr(acquire, "Checkout", None)
                patch.setattr(acquire, "Ledger", ledger.PyLedger)
                patch.setattr(acquire, "Checkin", ledger.py_checkin)
            else:
                patch.setattr(acquire, "Checkout", _ledger.Checkout)
                patch.setattr(acquire, "Ledger", _ledger.Ledger)
                patch.setattr(acquire, "Checkin", _ledger.Checkin)
            ticks = Ticks(start)
            patch.setattr(acquire, "perf_counter", ticks)
            engine = make_engine(pool_size=2, max_overflow=1)
            stats = sqlalchemy_pool_exporter.instrument(
                engine, name=name, registry=CollectorRegistry()
            )
            compiled = isinstance(engine.pool.__dict__["_return_conn"], _ledger.Checkin)
            assert compiled == (name == "compiled")
            seen[name] = [(step, figures(stats)) for step in workload(engine, ticks, stats)]
    assert seen["compiled"] == seen["python"]
    final = seen["compiled"][-1][1]
    # 0.1 ms, 3 ms, 40 ms twice (nested), 0.2 s, 0.45 s, 7 s and 60 s (+Inf last)
    assert final["use"][0] == [1, 0, 0, 1, 0, 0, 2, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1]
    assert final["wait"][0] == [8] + [0] * 16  # the clock stood still during each checkout
    assert (final["peak"], final["gc_reclaimed"], final["held"]) == (2, 1, 0)


def test_checkout_sites_and_threads_are_kept(
    make_engine: Callable[..., Engine], implementation: str
) -> None:
    engine = make_engine()
    stats = sqlalchemy_pool_exporter.instrument(engine, name="site", registry=CollectorRegistry())
    before = time.perf_counter()
    conn = engine.raw_connection()  # the line the held entry must name
    line = sys._getframe().f_lineno - 1
    after = time.perf_counter()
    ((checked_out, code, lasti, ident, ref),) = stats.held.values()
    # The compiled ledger reads time.perf_counter's own clock without calling it.
    assert before <= checked_out <= after
    assert code is test_checkout_sites_and_threads_are_kept.__code__
    assert sites.line_of(code, lasti) == line
    assert ident == threading.get_ident() and ref() is conn
    conn.close()
    assert not stats.held


def test_a_reentrant_checkout_is_not_a_new_one(
    make_engine: Callable[..., Engine], implementation: str
) -> None:
    engine = make_engine(poolclass=SingletonThreadPool)
    stats = sqlalchemy_pool_exporter.instrument(engine, name="stp", registry=CollectorRegistry())
    first = engine.raw_connection()
    again = engine.raw_connection()  # the same proxy, handed back to the same thread
    assert first is again
    assert (stats.checkouts, len(stats.held), stats.waiting) == (1, 1, [])
    again.close()
    first.close()
    assert not stats.held


def test_bad_input_is_refused_with_one_clear_error() -> None:
    stats = PoolStats("bad")
    with pytest.raises(AttributeError, match="held"):
        _ledger.Ledger(object(), time.perf_counter)
    with pytest.raises(TypeError, match="Checkin\\(\\) argument 1 must be"):
        _ledger.Checkin(object(), print, reporter)
    blank = _ledger.Ledger.__new__(_ledger.Ledger)
    with pytest.raises(TypeError, match="Ledger was not initialised"):
        blank.checked_out(object(), 1.0, 2.0, None, 0)
    book = _ledger.Ledger(stats, time.perf_counter)
    with pytest.raises(TypeError, match="takes 5 arguments"):
        book.checked_out(object())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="Ledger is initialised once"):
        book.__init__(stats, time.perf_counter)  # type: ignore[misc]
    checkin = _ledger.Checkin(book, print, reporter)
    with pytest.raises(TypeError, match="takes one connection record"):
        checkin()  # type: ignore[call-arg]
    assert not stats.held and stats.waiting == []
