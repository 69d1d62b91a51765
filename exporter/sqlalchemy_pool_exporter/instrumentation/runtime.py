"""Process-wide machinery: the monitor thread, the pusher, collector registration, fork.

Started lazily by the first ``instrument()``:

* the **monitor** thread wakes every second to flag leaks (so the warning is logged
  when a connection crosses the threshold, not at the next scrape) and to slide the
  peak-utilization window;
* the **pusher** thread (push mode only) sends this process's snapshot to the sidecar;
* the **embedded collector** is registered once per prometheus_client registry.

``fork()`` (gunicorn ``preload_app``, multiprocessing): before forking, every stats lock
is taken so no thread is mid-update; in the child the locks are released, every counter
starts from zero (the parent's checkouts are the parent's), the process gets a new
identity, and the threads — which do not survive a fork — are started again. The child
also watches the pooled connections it inherited, and the parent marks its pools as
those of a forking parent (see :mod:`~sqlalchemy_pool_exporter.instrumentation.forks`).

At exit the pusher sends a final push (``retire``): from ``atexit`` here, and from the
hooks in ``exits`` for the processes that end without it (uvicorn, Celery prefork and
multiprocessing children, SIGTERM). ``flush`` is the same by hand, for anything else.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from sqlalchemy_pool_exporter.instrumentation import exits, forks, registry
from sqlalchemy_pool_exporter.instrumentation.embedded import PoolCollector
from sqlalchemy_pool_exporter.instrumentation.push import Pusher
from sqlalchemy_pool_exporter.instrumentation.settings import AppSettings
from sqlalchemy_pool_exporter.instrumentation.snapshot import ProcessIdentity
from sqlalchemy_pool_exporter.logs import get_logger

log = get_logger(__name__)
_lock = threading.RLock()
_registries: list[Any] = []
_monitor: threading.Thread | None = None
_monitor_stop = threading.Event()
_identity: ProcessIdentity | None = None
_pusher: Any = None
_push_settings: AppSettings | None = None
_fork_held: list[Any] = []  # stats locks taken before fork(), released after it
MONITOR_PERIOD = 1.0


def identity(app: str | None = None) -> ProcessIdentity:
    """This process's identity (created on first use, renewed after fork)."""
    global _identity
    with _lock:
        if _identity is None:
            _identity = ProcessIdentity(app=app or AppSettings.model_construct().app)
        return _identity


def started(settings: AppSettings, registry: Any) -> None:
    """Ensure the collector (unless ``registry`` is None), monitor and pusher are running."""
    identity(settings.app)
    with _lock:
        if registry is not None and not any(r is registry for r in _registries):
            registry.register(PoolCollector())
            _registries.append(registry)
        _start_monitor()
        if settings.push_url:
            _start_pusher(settings)
            exits.install(retire)


def _start_monitor() -> None:
    global _monitor
    if _monitor is not None and _monitor.is_alive():
        return
    _monitor_stop.clear()
    _monitor = exits.start_thread(_monitor_loop, "pool-exporter-monitor")


def _monitor_loop() -> None:
    while not _monitor_stop.wait(MONITOR_PERIOD):
        exits.watch()
        for inst in registry.instrumentations():
            try:
                inst.stats.scan_leaks()
                inst.stats.rotate_peak()
            except Exception as exc:  # the monitor must outlive any one bad read
                registry.reporter.report("monitor", exc)


def _start_pusher(settings: AppSettings) -> None:
    global _pusher, _push_settings

    if _pusher is not None and _pusher.alive():
        return
    _push_settings = settings
    _pusher = Pusher(
        url=str(settings.push_url),
        interval=settings.push_interval,
        timeout=settings.push_timeout,
        token=settings.token.get_secret_value() if settings.token else None,
        identity=identity,
    )
    _pusher.start()


def pusher() -> Any:
    """The running pusher, or None in embedded-only mode."""
    return _pusher


def retire(timeout: float | None = None) -> bool:
    """Send this process's final push (once); whether the sidecar accepted it."""
    current = _pusher
    return bool(current.stop(final=True, timeout=timeout)) if current is not None else False


def flush(final: bool = False, timeout: float | None = None) -> bool:
    """Push this process's snapshot now; ``final`` also retires the process (send it last)."""
    if final:
        return retire(timeout)
    current = _pusher
    return bool(current.push(timeout=timeout)) if current is not None else False


def _before_fork() -> None:
    # Hold every lock another thread (pusher, monitor, a request) could be inside, so the
    # child never inherits one locked by a thread that does not exist there: this
    # module's, the instrumentation registry's, and each pool's stats lock, in that order.
    _lock.acquire()
    registry.lock.acquire()
    _fork_held[:] = [inst.stats.lock for inst in registry.instrumentations()]
    for lock in _fork_held:
        lock.acquire()


def _release_fork_locks() -> None:
    for lock in _fork_held:
        lock.release()
    _fork_held.clear()
    registry.lock.release()


def _after_fork_parent() -> None:
    forks.after_fork_parent()
    _release_fork_locks()
    _lock.release()


def _after_fork_child() -> None:
    global _identity, _monitor, _pusher

    _release_fork_locks()
    forks.after_fork_child()  # reads what the parent held: before the reset
    for inst in registry.instrumentations():
        inst.stats.reset()
    registry.clear_retired()
    _identity = ProcessIdentity(app=_identity.app) if _identity is not None else None
    _monitor = None
    old_pusher, _pusher = _pusher, None
    _lock.release()
    if _identity is not None:
        _start_monitor()
        if old_pusher is not None and _push_settings is not None:
            _start_pusher(_push_settings)
            exits.install(retire)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_parent,
        after_in_child=_after_fork_child,
    )


@atexit.register
def _at_exit() -> None:
    _monitor_stop.set()
    exits.final_push()
