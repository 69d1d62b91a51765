"""Database probes: what only the database server knows about connections.

The sidecar runs one probe when ``POOL_EXPORTER_DATABASE_URL`` is set. Which probe is
decided by the URL's scheme (:mod:`~sqlalchemy_pool_exporter.probes.factory`):
PostgreSQL (``postgres``), MySQL and MariaDB (``mysql``). Each driver is an extra
(``[postgres]``, ``[mysql]``), imported only when a probe of its kind is made; what the
probes share (result, loop, redaction) is in ``base``, which imports no driver.
"""
