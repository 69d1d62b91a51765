"""The sidecar: receives pushed pool snapshots from every process of an app, aggregates
them per (app, pool) and serves ``/metrics``.

Data path: ``listeners`` and ``http`` (one bounded asyncio HTTP server for both
listeners) → ``routes`` → the protocol's validation (body →
:class:`~sqlalchemy_pool_exporter.protocol.records.Push`) → ``guards`` (the instance's
identity, plausible numbers) → ``aggregator`` (latest push per live process, one
``group`` per (app, pool) whose ``ledger`` adds up ``totals``; ``tombstones``, expiry,
group retention) → ``views``/``collector`` → exposition; ``api`` is ``/api/pools`` and
``diagnosis`` ``/api/diagnosis``. With a state directory, ``keeper`` saves and restores
the aggregator (``state`` writes the file format, ``restore`` reads it). What keeps it
bounded: ``limits``, ``renders``, ``ceiling``, ``process``, reported by ``health``.
:class:`~sqlalchemy_pool_exporter.sidecar.server.Sidecar` wires it together; ``command``
is ``serve``; ``settings`` its options, ``secrets`` the ones read from files. Nothing
here imports the app side or SQLAlchemy.
"""
