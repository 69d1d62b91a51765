"""gunicorn server hooks: fresh pools in every forked worker, a final push as it exits.

Put them in ``gunicorn.conf.py`` (gunicorn reads hooks from the config module by name)::

    from sqlalchemy_pool_exporter.integrations.gunicorn import post_fork, worker_exit

or call them from hooks of your own with the same arguments. With ``--preload`` the
master imports the app — engine, ``instrument()`` and whatever connections the import
made (a ``create_all()``, a warm-up query) — before forking, and every worker would go
on using the master's pooled sockets. :func:`post_fork` runs in each new worker before
it serves anything and gives every instrumented engine a fresh pool
(``engine.dispose(close=False)``: the master's connections stay the master's). Without
``--preload`` the app is imported in each worker after the fork and it changes nothing.

:func:`worker_exit` runs in the worker as it leaves — stopped, recycled by
``max_requests`` or timed out — and sends its final push, so the sidecar retires it at
once. (Sync workers also run ``atexit``, which would send it too; the hook covers
worker classes whose exit skips it. A second final push is never sent.)

The master itself reports as one more process with an idle pool if it instrumented the
engine (``--preload``); an app factory that instruments lazily (see
:mod:`.flask`) has only its workers report.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy_pool_exporter.integrations.processes import final_push, fresh_pools


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn ``post_fork`` hook: fresh pools for the engines inherited from the master."""
    fresh_pools()


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn ``worker_exit`` hook: this worker's final push to the sidecar."""
    final_push()
