"""A plain script that never imports sqlalchemy_pool_exporter, and its children.

``python zero_code_script.py N``: N checkouts here, N in a multiprocessing ``spawn``
child, N in a ``subprocess`` Python (``… N leaf``), each on its own engine on
``ZERO_CODE_DB``; then exits with the spawn child's status.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

from sqlalchemy import Engine, create_engine, text

engines: list[Engine] = []  # kept until exit, as an app keeps its engine


def checkouts(n: int) -> None:
    """``n`` checkouts on a new engine."""
    engine = create_engine(f"sqlite:///{os.environ['ZERO_CODE_DB']}")
    engines.append(engine)
    for _ in range(n):
        with engine.connect() as conn:
            conn.execute(text("select 1"))


if __name__ == "__main__":
    n = int(sys.argv[1])
    checkouts(n)
    if sys.argv[2:] != ["leaf"]:
        child = multiprocessing.get_context("spawn").Process(target=checkouts, args=(n,))
        child.start()
        child.join()
        subprocess.run([sys.executable, __file__, str(n), "leaf"], check=True)
        sys.exit(child.exitcode)
