"""The README's gunicorn recipe: the exporter's server hooks, nothing else."""

from sqlalchemy_pool_exporter.integrations.gunicorn import post_fork, worker_exit

__all__ = ["post_fork", "worker_exit"]
