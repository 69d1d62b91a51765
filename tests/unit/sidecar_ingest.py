"""A sidecar driven by hand: pushes go straight to ``ingest``, time is a :class:`Clock`.

Unit tests of the sidecar's state build a :class:`~sqlalchemy_pool_exporter.sidecar.server.Sidecar`
that is never started, with a clock they move themselves, so expiry and retention
happen exactly when a test says; :func:`push` sends one payload of ``sidecar_payloads``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from tests.unit.sidecar_payloads import encode, payload


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def push(sc: Sidecar, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Ingest ``payload(*args, **kwargs)``: the status and the answer's body."""
    return sc.ingest(encode(payload(*args, **kwargs)))
