"""Plain Python programs for the process-exit tests (``python -m tests.integration.exit_script``).

``wait N HANDLER`` — makes N checkouts, prints ``ready`` and sleeps until a signal ends
it. HANDLER is the program's own SIGTERM handling: ``default`` (none: SIGTERM kills it),
``before`` / ``after`` (a handler that exits with status 3, installed before / after the
engine is instrumented).

``pool N START`` — a ``multiprocessing`` pool of 2 workers runs N one-checkout tasks,
then ``close()`` + ``join()``: the workers return and end with ``os._exit``. START is
the start method: ``fork`` (engine instrumented in the parent; workers recycled every 10
tasks), ``spawn`` or ``forkserver`` (engine made by the pool's initializer; no recycling,
a new interpreter costs seconds). Prints the number of tasks done.

Push mode comes from the ``POOL_EXPORTER_*`` environment, the database file from
``EXIT_SCRIPT_DB``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from typing import Any

from sqlalchemy import Engine, create_engine, text

import sqlalchemy_pool_exporter

engine: Engine | None = None


def make_engine() -> None:
    """Create and instrument this process's engine (also a pool initializer)."""
    global engine
    if engine is None:
        engine = create_engine(f"sqlite:///{os.environ['EXIT_SCRIPT_DB']}")
        sqlalchemy_pool_exporter.instrument(engine, name="main", registry=None)


def checkout(_: object = None) -> int:
    """One checkout."""
    assert engine is not None
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    return 1


def exit_3(signum: int, frame: Any) -> None:
    """The program's own SIGTERM handler."""
    sys.exit(3)


def wait(n: int, handler: str) -> None:
    if handler == "before":
        signal.signal(signal.SIGTERM, exit_3)
    make_engine()
    if handler == "after":
        signal.signal(signal.SIGTERM, exit_3)
    for _ in range(n):
        checkout()
    print("ready", flush=True)
    while True:
        time.sleep(60)


def pool(n: int, start: str) -> None:
    context = multiprocessing.get_context(start)
    if start == "fork":
        make_engine()  # instrumented in the parent: the forked workers inherit it
    recycle = 10 if start == "fork" else None
    workers = context.Pool(2, initializer=make_engine, maxtasksperchild=recycle)
    done = sum(workers.map(checkout, range(n), chunksize=1))
    workers.close()
    workers.join()
    print(done, flush=True)


if __name__ == "__main__":
    mode, count, *rest = sys.argv[1:]
    if mode == "wait":
        wait(int(count), *rest)
    else:
        pool(int(count), *rest)
