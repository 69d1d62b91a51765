"""Celery: instrument engines in every worker process that runs tasks.

::

    engine = create_engine(...)             # in the module that defines the tasks
    instrument_celery(engine)               # instead of instrument(engine)

Celery runs tasks in different processes depending on the pool. With ``prefork`` (the
default) the main worker process only supervises; tasks run in children it forks —
again whenever one is replaced (``--max-tasks-per-child``, ``--max-memory-per-child``,
a crash). Celery's ``worker_process_init`` signal runs in each new child before its
first task: there each engine gets a fresh pool if it was created before the fork
(``dispose(close=False)``: the parent's connections stay the parent's) and is
instrumented. With ``solo``, ``threads``, ``gevent`` or ``eventlet`` tasks run in the
main worker process itself, which is instrumented at ``worker_ready``.

So only processes that run tasks report: the sidecar's
``sqlalchemy_pool_processes`` equals the concurrency, and the app that only *sends*
tasks (and imports the same module) is not affected — it instruments its own engines
as it always does. The signal handlers are kept alive by Celery (connected strongly).
"""

from __future__ import annotations

import os
from typing import Any

from celery import signals
from celery.concurrency.prefork import TaskPool as PreforkPool

from sqlalchemy_pool_exporter.instrumentation.engines import check_options, instrument, sync_engine


def instrument_celery(*engines: Any, **options: Any) -> None:
    """Instrument ``engines`` in each Celery process that runs tasks, with these options."""
    check_options(**options)  # a wrong argument fails at import, not in every child
    for engine in engines:
        sync_engine(engine)
    created_in = os.getpid()

    def instrument_here() -> None:
        forked = os.getpid() != created_in
        for engine in engines:
            if forked:
                sync_engine(engine).dispose(close=False)
            instrument(engine, **options)

    def child_started(**_: Any) -> None:
        instrument_here()

    def worker_ready(sender: Any = None, **_: Any) -> None:
        if not isinstance(getattr(sender, "pool", None), PreforkPool):
            instrument_here()  # no children: tasks run here

    signals.worker_process_init.connect(child_started, weak=False)
    signals.worker_ready.connect(worker_ready, weak=False)
