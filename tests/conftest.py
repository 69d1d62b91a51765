"""Shared fixtures: real engines on throwaway SQLite files, real sidecars, binaries.

Integration tests need real programs (PostgreSQL's initdb, prometheus, promtool,
alertmanager, gunicorn). :func:`require_binary` skips a test when one is missing on a
developer's machine, but in CI (``CI`` set) a missing binary is a failure: the suite must
never go green by skipping what it is meant to prove.

The sidecar fixtures (``sidecar``, ``sidecar_factory``, ``sidecar_process``,
``sidecar_process_factory``) are described in ``tests/sidecars.py``.

Every test is marked by its directory — ``unit`` (``tests/unit``: in-process, SQLite,
seconds), ``deploy`` (``tests/deploy``) or ``integration`` (the rest: real servers and
tools) — so ``pytest -m unit`` is the fast loop. Tests wait for conditions with
:func:`wait_for`, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import registry as instrumented
from tests.sidecars import RunningSidecar, start_sidecar, start_sidecar_process

IN_CI = bool(os.environ.get("CI"))
TESTS = Path(__file__).resolve().parent
#: The marker of each test directory; tests elsewhere (tests/*.py) drive real tools.
DIRECTORY_MARKERS = {"unit": "unit", "integration": "integration", "deploy": "deploy"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test ``unit``, ``integration`` or ``deploy`` by where it lives."""
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        marker = DIRECTORY_MARKERS.get(parts[0], "integration") if len(parts) > 1 else None
        item.add_marker(marker or "integration")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(step)


async def threads_finished(before: set[threading.Thread], timeout: float = 10.0) -> None:
    """Await, on a running loop, the end of every thread started since ``before``.

    aiosqlite answers each connection from a thread of its own: one whose connection was
    terminated may still deliver a last result, which must reach a loop that is running.
    """
    deadline = time.monotonic() + timeout
    while set(threading.enumerate()) - before:
        if time.monotonic() > deadline:
            raise AssertionError(f"threads still running after {timeout}s")
        await asyncio.sleep(0.01)


def load_script(path: Path, name: str) -> ModuleType:
    """A generator script (not part of the package) loaded as a module from ``path``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_binary(name: str) -> str:
    """Path of ``name`` on PATH; fails in CI and skips elsewhere when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"required binary {name!r} not found on PATH"
        if IN_CI:
            pytest.fail(message + " (CI must run every integration test)")
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def no_retired_stats() -> None:
    """Each test starts with no dropped engine's stats waiting for a successor.

    An engine of an earlier test that the cyclic garbage collector frees during this one
    would otherwise hand its counts to an engine of the same name here.
    """
    gc.collect()
    instrumented.clear_retired()


class _FailingTime:
    """A clock reading that cannot be used: booking a checkout timed with it fails."""

    def __init__(self, reading: float) -> None:
        self.reading = reading

    def __float__(self) -> float:
        raise RuntimeError("bookkeeping failed")

    def __sub__(self, other: object) -> float:
        raise RuntimeError("bookkeeping failed")


@pytest.fixture
def break_bookkeeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every checkout's booking in the ledger raise, the compiled and the Python one."""
    from sqlalchemy_pool_exporter.instrumentation import acquire

    monkeypatch.setattr(acquire, "perf_counter", lambda: _FailingTime(time.perf_counter()))


@pytest.fixture
def registry() -> CollectorRegistry:
    """A private prometheus_client registry, so tests never share series."""
    return CollectorRegistry()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a throwaway SQLite file database."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    """Engines created by a test; uninstrumented and disposed afterwards."""
    made: list[Engine] = []
    yield made
    for engine in made:
        sqlalchemy_pool_exporter.uninstrument(engine)
        engine.dispose()


@pytest.fixture
def make_engine(engines: list[Engine], sqlite_url: str):  # type: ignore[no-untyped-def]
    """Factory of SQLite file engines that are cleaned up after the test."""

    def make(url: str | None = None, **kwargs: object) -> Engine:
        engine = create_engine(url or sqlite_url, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    return make


# -- real sidecars (tests/sidecars.py) ---------------------------------------------


@pytest.fixture
def sidecar() -> Iterator[RunningSidecar]:
    """A fresh in-process sidecar (both listeners on 127.0.0.1, port 0)."""
    running = start_sidecar()
    yield running
    running.stop()


@pytest.fixture
def sidecar_factory() -> Iterator[Callable[..., RunningSidecar]]:
    """Start in-process sidecars with setting overrides; all stopped after the test."""
    started: list[RunningSidecar] = []

    def make(**settings: Any) -> RunningSidecar:
        running = start_sidecar(**settings)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture(scope="session")
def sidecar_process() -> Iterator[RunningSidecar]:
    """One real ``serve`` subprocess shared by the whole session."""
    running = start_sidecar_process()
    yield running
    running.stop()


@pytest.fixture
def sidecar_process_factory() -> Iterator[Callable[..., RunningSidecar]]:
    """Start ``serve`` subprocesses with extra flags/env; all terminated after the test."""
    started: list[RunningSidecar] = []

    def make(*flags: str, env: dict[str, str] | None = None) -> RunningSidecar:
        running = start_sidecar_process(*flags, env=env)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()
