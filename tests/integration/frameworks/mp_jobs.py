"""A script that fans work out to a ``multiprocessing`` pool, the README's recipe.

The parent instruments its engine and uses it once before forking; the pool's
``initializer=child_init`` gives each child a fresh pool; its final push is automatic. ``job``
makes one checkout and returns the child's pid; the script prints the pids that ran
jobs as JSON. The SQLite file is the first argument.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.integrations.processes import child_init

engine = create_engine(f"sqlite:///{sys.argv[1]}", pool_size=2, max_overflow=0)
sqlalchemy_pool_exporter.instrument(engine, name="jobs")


def job(_: int) -> int:
    """One checkout in a child."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return os.getpid()


if __name__ == "__main__":
    with engine.connect() as conn:  # the parent's pool holds a connection when it forks
        conn.execute(text("SELECT 1"))
    pool = multiprocessing.get_context("fork").Pool(3, initializer=child_init)
    pids = pool.map(job, range(30), chunksize=1)
    pool.close()  # not terminate(): children that exit normally send their final push
    pool.join()
    print(json.dumps(sorted(set(pids))))
