"""gunicorn settings: SQLAlchemy's fix for the fork hazard, as an app would write it."""

from typing import Any


def post_fork(server: Any, worker: Any) -> None:
    """Give the new worker a fresh pool; the master's connections stay the master's."""
    from tests.integration.postgres.gunicorn_fork_app import engine  # preloaded: no import

    engine.dispose(close=False)
