"""An app process for the attribution scenario: one stamped connection, held.

``python attribution_app.py <url> idle-in-transaction|idle``: instruments a psycopg2
engine with ``stamp_application_name``, pushes to ``POOL_EXPORTER_PUSH_URL``, checks out
one connection and either leaves a transaction open on it (the culprit) or commits and
just holds it. Prints ``ready <pid> <checkout line>`` and waits for stdin to close.
"""

from __future__ import annotations

import sys

from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter


def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    engine = create_engine(url, pool_size=2, max_overflow=0)
    sqlalchemy_pool_exporter.instrument(engine, name="shop", stamp_application_name=True)
    conn, line = engine.connect(), sys._getframe().f_lineno
    conn.execute(text("SELECT 1"))  # opens a transaction (autobegin)
    if mode == "idle":
        conn.commit()
    print(f"ready {__import__('os').getpid()} {line}", flush=True)
    sys.stdin.read()
    conn.close()
    engine.dispose()


if __name__ == "__main__":
    main()
