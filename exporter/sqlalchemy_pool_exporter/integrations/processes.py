"""Plain ``multiprocessing`` (and ``concurrent.futures.ProcessPoolExecutor``) children.

With the fork start method a child inherits the parent's instrumented engines: the
exporter's own fork hook already gives it a fresh identity, zeroed stats and its own
push thread, but its engines still hold the parent's pooled connections. Pass
:func:`child_init` as the pool's ``initializer`` (or call it first in a ``Process``
target)::

    with multiprocessing.Pool(4, initializer=child_init) as pool: ...
    ProcessPoolExecutor(4, initializer=child_init)

It gives every instrumented engine a fresh pool (``dispose(close=False)``): that is what
it is for. The child's final push needs no help: ``multiprocessing`` children leave with
``os._exit``, which skips ``atexit``, but :mod:`~sqlalchemy_pool_exporter.instrumentation.exits`
registers a ``multiprocessing`` finalizer in every child that sends it. The finalizer
:func:`child_init` also registers predates that and is redundant; a process sends one
final push however often it is asked. (A child killed or terminated sends none; the
sidecar retires it after three silent push intervals, totals kept.)

With the spawn or forkserver start method the child imports the main module afresh, so
an engine instrumented at import is instrumented there too, with an empty pool, and
:func:`child_init` changes nothing. It is a module-level function, so it pickles for
spawn.
"""

from __future__ import annotations

import multiprocessing.util

from sqlalchemy_pool_exporter.instrumentation import registry, runtime

#: Runs before multiprocessing's own finalizers of the child (higher runs first).
_FINALIZER_PRIORITY = 100


def fresh_pools() -> int:
    """Give every instrumented engine an empty pool, leaving inherited connections alone."""
    count = 0
    for inst in registry.instrumentations():
        engine = inst.engine
        if engine is not None:
            engine.dispose(close=False)
            count += 1
    return count


def final_push() -> None:
    """Send this process's final push now (retiring it at the sidecar), if it pushes."""
    pusher = runtime.pusher()
    if pusher is not None:
        pusher.stop(final=True)


def child_init() -> None:
    """``initializer`` for process pools: fresh pools now, a final push at normal exit."""
    fresh_pools()
    multiprocessing.util.Finalize(None, final_push, exitpriority=_FINALIZER_PRIORITY)
