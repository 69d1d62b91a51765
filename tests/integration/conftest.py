"""Integration tests share the sidecars of ``tests/sidecars.py``.

Its fixtures (``sidecar``, ``sidecar_factory``, ``sidecar_process``,
``sidecar_process_factory``) live in ``tests/conftest.py``, so unit tests use the same
ones; the helpers stay importable from here as well.
"""

from __future__ import annotations

from tests.sidecars import ROOT as ROOT
from tests.sidecars import RunningSidecar as RunningSidecar
from tests.sidecars import start_sidecar as start_sidecar
from tests.sidecars import start_sidecar_process as start_sidecar_process
