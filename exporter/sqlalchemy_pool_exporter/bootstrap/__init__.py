"""The directory ``sqlalchemy-pool-exporter run`` puts first on its command's ``PYTHONPATH``.

It holds nothing but :mod:`sitecustomize` (this file must never be imported by that
path: ``__init__`` is no importable name), so putting it on the path shadows no module
of the app.
"""
