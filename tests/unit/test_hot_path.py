"""The hot path's compiled shortcuts give exactly what the plain code would."""

from __future__ import annotations

import ast
import importlib.util
import random
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.pool import SingletonThreadPool
from sqlalchemy.pool.base import _ConnectionFairy

import exporter
from exporter import acquire, buckets
from exporter.histogram import DEFAULT_BUCKETS

LAYOUTS = [(1.0,), (0.5, 1.0), DEFAULT_BUCKETS, tuple(float(2**i) for i in range(-10, 11))]


def compiled_tree(bounds: tuple[float, ...]) -> Callable[[float], int]:
    """``lambda value: <decision tree>`` compiled from the tree's AST."""
    args = ast.arguments(
        posonlyargs=[], args=[ast.arg("value")], kwonlyargs=[], kw_defaults=[], defaults=[]
    )
    tree = ast.Expression(ast.Lambda(args, buckets.decision_tree(bounds, "value")))
    fn: Callable[[float], int] = eval(compile(ast.fix_missing_locations(tree), "<tree>", "eval"))
    return fn


@pytest.mark.parametrize("bounds", LAYOUTS, ids=lambda b: f"{len(b)}-bounds")
def test_decision_tree_is_bisect_left_for_every_value(bounds: tuple[float, ...]) -> None:
    tree = compiled_tree(bounds)
    rng = random.Random(7)
    # Each bound itself (le: it falls in its own bucket), just above it, and in between.
    values = [0.0, -1.0, 1e12, *bounds, *(b * (1 + 1e-12) for b in bounds)]
    values += [rng.uniform(0, bounds[-1] * 1.5) for _ in range(20_000)]
    assert [tree(v) for v in values] == [bisect_left(bounds, v) for v in values]


def test_specialised_factories_carry_no_bucket_call_and_keep_their_file_and_lines() -> None:
    bounds = (0.01, 0.1, 1.0)
    for factory in (acquire._wrap_connect, acquire._wrap_creator, acquire._end_of_checkout):
        fast = buckets.specialise(factory, bounds)
        assert fast is not factory
        assert buckets.specialise(factory, bounds) is fast  # compiled once per layout
        assert fast.__code__.co_filename == factory.__code__.co_filename
        assert fast.__code__.co_firstlineno == factory.__code__.co_firstlineno
        inner = [c for c in fast.__code__.co_consts if hasattr(c, "co_names")]
        assert inner and all("bucket_index" not in c.co_names for c in inner)


def test_a_factory_without_source_is_used_as_written() -> None:
    namespace: dict[str, Any] = {"bucket_index": buckets.bucket_index}
    exec("def factory(b):\n    return lambda v: bucket_index(b, v)\n", namespace)
    factory = namespace["factory"]
    assert buckets.specialise(factory, (1.0, 2.0)) is factory
    assert factory((1.0, 2.0))(1.5) == 1


FACTORY_SOURCE = """\
from exporter.buckets import bucket_index, inlinable


@inlinable
def factory(bounds):
    def observe(value):
        return ("{version}", bucket_index(bounds, value))
    return observe
"""


def import_factory(tmp_path: Path, name: str) -> Callable[..., Any]:
    path = tmp_path / f"{name}.py"
    path.write_text(FACTORY_SOURCE.format(version="as imported"))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory: Callable[..., Any] = module.factory
    return factory


def test_a_file_replaced_after_import_is_not_what_gets_compiled(tmp_path: Path) -> None:
    factory = import_factory(tmp_path, "replaced_after_import")
    # A deploy writes new code over the running process's files.
    (tmp_path / "replaced_after_import.py").write_text(FACTORY_SOURCE.format(version="new"))
    fast = buckets.specialise(factory, (1.0, 2.0))
    assert fast is not factory
    observe = fast((1.0, 2.0))
    assert "bucket_index" not in observe.__code__.co_names
    assert [observe(v) for v in (0.5, 1.0, 1.5, 3.0)] == [
        ("as imported", 0), ("as imported", 0), ("as imported", 1), ("as imported", 2)
    ]


def test_source_that_does_not_compile_leaves_the_factory_as_written(tmp_path: Path) -> None:
    factory = import_factory(tmp_path, "broken_source")
    _, first, filename = buckets._sources[factory]
    buckets._sources[factory] = ("def factory(bounds:\n", first, filename)
    assert buckets.specialise(factory, (1.0, 2.0)) is factory
    assert factory((1.0, 2.0))(1.5) == ("as imported", 1)


def test_custom_buckets_count_waits_uses_and_connects_in_the_right_bucket(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(pool_size=1, max_overflow=0)
    exporter.instrument(engine, name="b", registry=registry, buckets=[0.004, 0.05, 0.5])
    for hold in (0.0, 0.01, 0.01, 0.1):
        conn = engine.raw_connection()
        time.sleep(hold)
        conn.close()

    def bucket(name: str, le: str) -> float | None:
        return registry.get_sample_value(f"sqlalchemy_pool_{name}_bucket", {"pool": "b", "le": le})

    # Held ~0 s, 10 ms, 10 ms, 100 ms: one per bucket up to 0.004, three up to 0.05, ...
    assert [bucket("use_seconds", le) for le in ("0.004", "0.05", "0.5", "+Inf")] == [1, 3, 4, 4]
    assert bucket("wait_seconds", "0.5") == 4
    assert bucket("connect_seconds", "+Inf") == 1


def closure_of(fn: Any) -> dict[str, Any]:
    """The names a closure took from its factory, with their values."""
    cells = (c.cell_contents for c in fn.__closure__)
    return dict(zip(fn.__code__.co_freevars, cells, strict=True))


def test_sqlalchemy_forwarders_are_recognised_so_the_short_path_is_taken(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    exporter.instrument(engine, name="fwd", registry=registry)
    pool = engine.pool
    # Pool.connect and Pool._return_conn only forward: the wrappers call their targets
    # themselves, one frame less per checkout and per checkin, on SQLAlchemy 2.0 and 2.1.
    connect = closure_of(pool.__dict__["connect"])
    assert connect["checkout"] == _ConnectionFairy._checkout and connect["target"] is pool
    end = closure_of(pool.__dict__["_return_conn"])
    assert end["forward"] == type(pool)._do_return_conn.__get__(pool)
    assert getattr(pool.__dict__["_do_return_conn"], acquire._MARK) is not None
    exporter.uninstrument(engine)
    assert not {"connect", "_return_conn", "_do_return_conn"} & set(pool.__dict__)


def test_a_pool_class_with_its_own_connect_keeps_it(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine(poolclass=SingletonThreadPool)
    exporter.instrument(engine, name="stp", registry=registry)
    connect = closure_of(engine.pool.__dict__["connect"])
    assert connect["checkout"] is SingletonThreadPool.connect and connect["target"] is engine.pool


def test_another_librarys_wrappers_keep_working_and_are_put_back(
    make_engine: Callable[..., Engine], registry: CollectorRegistry
) -> None:
    engine = make_engine()
    pool = engine.pool
    calls: list[str] = []
    their_connect, their_return = pool.connect, pool._do_return_conn

    def connect() -> Any:
        calls.append("connect")
        return their_connect()

    def do_return_conn(rec: Any) -> None:
        calls.append("return")
        their_return(rec)

    pool.connect = connect  # type: ignore[method-assign]
    pool._do_return_conn = do_return_conn  # type: ignore[method-assign]
    exporter.instrument(engine, name="other", registry=registry)
    for _ in range(3):
        engine.raw_connection().close()
    assert calls == ["connect", "return"] * 3
    assert registry.get_sample_value("sqlalchemy_pool_checkouts_total", {"pool": "other"}) == 3
    exporter.uninstrument(engine)
    assert pool.connect is connect and pool._do_return_conn is do_return_conn
    engine.raw_connection().close()
    assert calls[-2:] == ["connect", "return"]
