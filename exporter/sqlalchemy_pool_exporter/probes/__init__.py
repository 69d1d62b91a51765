"""Database probes: what only the database server knows about connections.

The sidecar runs one probe when ``POOL_EXPORTER_DATABASE_URL`` is set. Which probe is
decided by the URL's scheme (:mod:`~sqlalchemy_pool_exporter.probes.url`); its driver
is an extra (``[postgres]``), imported only when a probe is configured.
"""
