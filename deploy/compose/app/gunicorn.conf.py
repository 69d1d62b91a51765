"""gunicorn settings of the compose example app: 4 worker processes, 8 threads each.

No ``preload_app``: each worker imports ``shop`` itself after the fork, so each creates
its own engine and push thread (threads do not survive a fork).
"""

bind = "0.0.0.0:8000"
workers = 4
worker_class = "gthread"
threads = 8
timeout = 60
graceful_timeout = 20
