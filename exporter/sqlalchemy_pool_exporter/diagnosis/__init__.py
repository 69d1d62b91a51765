"""Diagnosis: from the numbers to the causes of ``QueuePool limit ... reached``.

Each known way a pool runs dry has a number (the causes table of the runbook) and one
small function in :mod:`~sqlalchemy_pool_exporter.diagnosis.causes` that looks at one
pool (in the shape of an ``/api/pools`` entry: info, gauges, counters, held connections,
checkout sites, processes; see :mod:`~sqlalchemy_pool_exporter.diagnosis.inputs`) and at
the database server (values keyed by catalog name, plus the stamped server sessions) and
returns a :class:`~.findings.Finding` — the evidence it saw and the setting or code to
change — or nothing. The functions read catalog-named values only, never a database's
own tables, so every probe serves them.

Used by the sidecar's ``/api/diagnosis``, by ``sqlalchemy-pool-exporter doctor`` and
by ``sqlalchemy_pool_exporter.diagnose(engine)`` in the app itself.
"""
