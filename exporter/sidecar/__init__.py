"""The sidecar: receives pushed pool snapshots from every process of an app, aggregates
them per (app, pool) and serves ``/metrics``.

Data path: ``server`` (HTTP) → ``validation`` (body → :class:`Push`) → ``aggregator``
(latest push per live process, retired totals, expiry) → ``views``/``collector`` →
exposition. :class:`Sidecar` wires it together; ``command`` is ``serve``.
"""

from exporter.sidecar.aggregator import Aggregator
from exporter.sidecar.model import Limits, Push, PushRejected
from exporter.sidecar.server import Sidecar
from exporter.sidecar.validation import parse_push

__all__ = ["Aggregator", "Limits", "Push", "PushRejected", "Sidecar", "parse_push"]
