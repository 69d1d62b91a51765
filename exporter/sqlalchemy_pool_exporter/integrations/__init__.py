"""Framework integrations: the hook each server or task runner offers, used for you.

``instrument(engine)`` works anywhere; these helpers put it — and the chores around it —
where each framework runs code in the right process at the right time:

* :mod:`.starlette` — FastAPI/Starlette (and so uvicorn, ``--workers`` included): a
  lifespan that instruments in the serving process;
* :mod:`.flask` — Flask + Flask-SQLAlchemy: every bind of ``db.engines``, instrumented
  lazily in each worker, no app context needed at import;
* :mod:`.celery` — Celery workers and their prefork children (``worker_process_init``);
* :mod:`.gunicorn` — ``post_fork``/``worker_exit`` hooks for ``gunicorn.conf.py``;
* :mod:`.processes` — plain ``multiprocessing`` and ``ProcessPoolExecutor`` children.

Importing this package imports no framework: each module imports its own when the app
imports it, and nothing else in the package imports these modules.

**Forked pools.** A process that forks with an engine (gunicorn ``--preload``, Celery
prefork, ``multiprocessing`` with the fork start method) hands its pooled connections —
open sockets — to every child; two processes talking over one socket corrupt both
sessions. SQLAlchemy's remedy is ``engine.dispose(close=False)`` first thing in the
child: a new, empty pool, the parent's connections left alone. Every helper here that
runs in a forked child does that for the engines it knows before any checkout there.
"""
