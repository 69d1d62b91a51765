"""Integration tests share the sidecars of ``tests/sidecars.py``.

Its fixtures (``sidecar``, ``sidecar_factory``, ``sidecar_process``,
``sidecar_process_factory``) live in ``tests/conftest.py``, so unit tests use the same
ones; the helpers stay importable from here as well. ``programs`` holds the programs a
process-exit test starts (``tests/integration/exit_harness.py``), ``servers`` the app
servers a test starts (``tests/integration/servers.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sqlalchemy_pool_exporter.probes.base import ServerProbe
from tests.integration.exit_harness import Program
from tests.integration.servers import ServerProcess
from tests.sidecars import ROOT as ROOT
from tests.sidecars import RunningSidecar as RunningSidecar
from tests.sidecars import start_sidecar as start_sidecar
from tests.sidecars import start_sidecar_process as start_sidecar_process


@pytest.fixture
def programs() -> Iterator[list[Program]]:
    """Programs a test starts (exit_harness.Program); what is left of them is killed after."""
    started: list[Program] = []
    yield started
    for program in started:
        program.kill()


@pytest.fixture
def probes() -> Iterator[list[ServerProbe]]:
    """Database probes a test starts; all stopped afterwards."""
    started: list[ServerProbe] = []
    yield started
    for probe in started:
        probe.stop()


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Servers a test starts (servers.ServerProcess); all stopped afterwards."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()
