"""An instrumented app for the adversarial suite: a SQLite pool in push mode, busy.

Push settings come from ``POOL_EXPORTER_*`` (URL, interval, timeout, app). The
exporter's log lines go to stderr as plain messages. Once instrumented it prints
``ready`` on stdout, then checks a connection out and in every 10 ms until killed.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time

from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
engine = create_engine(f"sqlite:///{tempfile.mkdtemp()}/app.db")
sqlalchemy_pool_exporter.instrument(engine, name="db", registry=None)
print("ready", flush=True)
while True:
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    time.sleep(0.01)
