"""A Celery app whose tasks use an engine instrumented by ``instrument_celery``.

Broker and queue come from ``CELERY_TEST_BROKER`` and ``CELERY_TEST_QUEUE`` (each test
run has its own queue), the SQLite file from ``CELERY_TEST_DB``. ``celery_app.query``
makes exactly one checkout. Remote control is off: no broadcast queues are left behind.
"""

from __future__ import annotations

import os

from celery import Celery
from sqlalchemy import create_engine, text

from sqlalchemy_pool_exporter.integrations.celery import instrument_celery

app = Celery("celery_app", broker=os.environ["CELERY_TEST_BROKER"])
app.conf.update(
    task_default_queue=os.environ["CELERY_TEST_QUEUE"],
    worker_enable_remote_control=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
engine = create_engine(f"sqlite:///{os.environ['CELERY_TEST_DB']}", pool_size=2, max_overflow=0)
with engine.connect() as warm_up:  # the parent's pool holds a connection when it forks
    warm_up.execute(text("SELECT 1"))
instrument_celery(engine, name="tasks")


@app.task(name="celery_app.query")
def query() -> int:
    """One checkout; returns the pid of the process that ran it."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return os.getpid()
