"""The sidecar: receives pushed pool snapshots from every process of an app, aggregates
them per (app, pool) and serves ``/metrics``.

Data path: ``server`` and ``pushserver`` (HTTP) → the protocol's validation (body →
:class:`~sqlalchemy_pool_exporter.protocol.records.Push`) → ``aggregator`` (latest push
per live process, one ``group`` per (app, pool) whose ``ledger`` adds up ``totals``,
expiry) → ``views``/``collector`` → exposition. With a state directory, ``keeper`` saves
and restores the aggregator (``state`` writes the file format, ``restore`` reads it).
:class:`~sqlalchemy_pool_exporter.sidecar.server.Sidecar` wires it together; ``command``
is ``serve``; ``settings`` its options. Nothing here imports the app side or SQLAlchemy.
"""
