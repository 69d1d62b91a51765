"""The app side: everything that runs inside the instrumented process.

Data path: ``engines`` (``instrument()``) wires ``listeners`` and the ``acquire``-path
wrappers onto an engine; they update a ``stats.PoolStats`` per engine (kept in
``registry``); ``snapshot`` reads stats (a ``readings`` copy) and pool into the wire
form, which ``embedded`` exposes in-process and ``push`` sends to the sidecar;
``runtime`` owns the background threads and the fork hooks, ``forks`` what a fork hands
down (inherited connections, a parent's capacity), ``exits`` the final push wherever a
process ends (atexit, SIGTERM, uvicorn, Celery, multiprocessing). SQLAlchemy's private
names live in ``compat``.
"""
