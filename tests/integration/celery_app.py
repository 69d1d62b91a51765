"""A Celery app for the process-exit tests: one checkout per task.

Broker and result backend: ``CELERY_APP_REDIS`` (a Redis URL with the test's own database
number); queue: ``CELERY_APP_QUEUE``; database file: ``CELERY_APP_DB``. The engine is
created and instrumented at import, in the worker's main process, before the prefork
children are forked: each child gets its own identity and pusher, and ends with
``os._exit`` (at shutdown, and when recycled by ``--max-tasks-per-child``).
"""

from __future__ import annotations

import os

from celery import Celery
from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter

TASK = "exit_test.checkout"

app = Celery("exit_test", broker=os.environ["CELERY_APP_REDIS"])
app.conf.update(
    result_backend=os.environ["CELERY_APP_REDIS"],
    task_default_queue=os.environ["CELERY_APP_QUEUE"],
    worker_enable_remote_control=False,  # no pidbox queues left behind in Redis
    broker_connection_retry_on_startup=False,
    result_expires=300,
)

engine = create_engine(f"sqlite:///{os.environ['CELERY_APP_DB']}", pool_size=5, max_overflow=5)
sqlalchemy_pool_exporter.instrument(engine, name="main", registry=None)


@app.task(name=TASK)
def checkout() -> int:
    """One checkout; returns the pid of the child that ran it."""
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    return os.getpid()
