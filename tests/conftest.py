"""Shared fixtures: real engines on throwaway SQLite files, and binary requirements.

Integration tests need real programs (PostgreSQL's initdb, prometheus, promtool,
alertmanager, gunicorn). :func:`require_binary` skips a test when one is missing on a
developer's machine, but in CI (``CI`` set) a missing binary is a failure: the suite must
never go green by skipping what it is meant to prove.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine

import sqlalchemy_pool_exporter

IN_CI = bool(os.environ.get("CI"))


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
