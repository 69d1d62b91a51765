"""Process exit: a final push wherever a process ends gracefully.

A process that sends a final push retires at the sidecar at once, with everything it
counted; one that just stops pushing expires after three intervals, and what it counted
since its last push is lost. ``atexit`` covers a normal interpreter exit (gunicorn sync
workers, scripts that return or call ``sys.exit``, Celery's main process), but the
commonest stacks end their workers without running it. ``install()`` — push mode, at
``instrument()`` and in every forked child — sets up what applies to this process; every
hook ends in ``final_push`` (the first caller pushes, later ones wait for that push):

* **SIGTERM**, where it would kill the process outright (``SIG_DFL``; only the main thread
  may set a handler): a handler that pushes, then ends the process by SIGTERM exactly as
  before (exit status -15 / 143). uvicorn restores the handler it found and re-raises
  the signal after its graceful shutdown, so where the app is imported before uvicorn
  takes the signal (``uvicorn app:app``, gunicorn's UvicornWorker) this handler runs last.
  A handler of the app's or a framework's own is never replaced: it decides how its
  process ends. Not in ``multiprocessing`` children (see below).
* **uvicorn** whose handler is already in place when the engine is instrumented
  (``--workers`` and ``--reload`` children import the app inside ``Server.serve``; a
  preloaded gunicorn UvicornWorker forks before it; an engine created at the first
  request): the handler it will restore is ``SIG_DFL``, which runs no Python code. So
  ``Server.shutdown`` is wrapped to push once the graceful shutdown is over (connections
  drained, lifespan shutdown done) — by a server that holds SIGTERM, i.e. owns the
  process. Done when uvicorn is imported: seen at ``instrument()``, in forked children and
  by the monitor thread every second.
* **Celery prefork** children end with ``os._exit`` — at shutdown and when recycled by
  ``--max-tasks-per-child`` — right after Celery's ``worker_process_shutdown`` signal: a
  receiver of it, connected only if Celery is already imported (never imported here).
* **multiprocessing** children (``Pool`` workers, ``Process``) end with ``os._exit`` after
  ``multiprocessing.util``'s finalizers: one is registered in each child, to run last.
  Workers killed by ``Pool.terminate()`` (also at the end of ``with Pool()``) are not
  covered: they keep ``SIG_DFL`` (``_in_child`` says why) and lose their last interval.

Never hooked: ``os._exit`` itself (anything may call it, mid-work) and SIGKILL. A push at
exit takes at most ``EXIT_BUDGET`` (1 s), so a hung sidecar never holds an exit up longer.
The exporter's own threads (``start_thread``) block the process's signals, so they always
reach a thread of the app.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

#: seconds a push at exit may take at most (waiting for a push in progress included)
EXIT_BUDGET = 1.0
# Signals that end or steer a process: the exporter's threads block them (see start_thread).
_NAMES = ("TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "CHLD", "ALRM", "WINCH", "TTIN", "TTOU")
_SIGNALS = {getattr(signal, f"SIG{n}") for n in _NAMES if hasattr(signal, f"SIG{n}")}
_retire: Callable[[], object] | None = None
_retiring: int | None = None  # the thread pushing at exit now
_signal: int | None = None  # SIGTERM received: the process ends after its push
_deferred: int | None = None  # the thread that ends the process once its push is done
_multiprocessing_hooked = False  # inherited through fork, like the registry it describes
_HOOKED = "_sqlalchemy_pool_exporter_retires"  # marks a uvicorn server's wrapped shutdown
_CELERY_UID = "sqlalchemy_pool_exporter.retire"
_LAST = -1000  # multiprocessing finalizer priority: after the app's own finalizers


def start_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """Start one of the exporter's daemon threads, which never takes the process's signals."""

    def run() -> None:
        # The kernel hands a process-wide signal to whichever thread is first to take it,
        # and CPython runs the Python handler only in the main thread, at its next bytecode:
        # taken here while the main thread sleeps in a lock (a Pool worker at terminate()),
        # the handler would wait for ever. Blocked here, the main thread gets it.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def install(retire: Callable[[], object]) -> None:
    """Set up every exit hook that applies to this process (idempotent)."""
    global _retire
    _retire = retire
    _take_sigterm()
    watch()
    _connect_celery()
    _hook_multiprocessing()


def watch() -> None:
    """Hook uvicorn if it has been imported since the last look (cheap; any thread)."""
    if _retire is None:
        return
    server_class: Any = getattr(sys.modules.get("uvicorn.server"), "Server", None)
    shutdown = getattr(server_class, "shutdown", None)
    if shutdown is None or getattr(shutdown, _HOOKED, False):
        return

    @functools.wraps(shutdown)
    async def shutdown_then_retire(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await shutdown(self, *args, **kwargs)
        finally:
            # Only a server that holds SIGTERM owns this process (it runs in the main thread
            # and ends the process when it returns); one started in a thread by a test
            # suite or an embedding app does not, and the process goes on pushing.
            if signal.getsignal(signal.SIGTERM) == self.handle_exit:
                final_push()

    setattr(shutdown_then_retire, _HOOKED, True)
    server_class.shutdown = shutdown_then_retire


def final_push(*_: Any, **__: Any) -> None:
    """Retire this process with its final push, if push mode is on (idempotent, bounded)."""
    global _retiring
    retire = _retire
    if retire is None:
        return
    _retiring = threading.get_ident()
    try:
        with contextlib.suppress(Exception):  # an exit is never broken by the exporter
            retire()
    finally:
        _retiring = None
        if _deferred == threading.get_ident() and _signal is not None:
            _die(_signal)


def _take_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread() or _in_multiprocessing_child():
        return  # Python lets only the main thread set handlers; uvicorn's is found by watch()
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter
        return


def _on_sigterm(signum: int, frame: Any) -> None:
    # Installed only over SIG_DFL, so after the push it does what SIG_DFL does: the process
    # ends by the signal, exit status unchanged — also when a framework calls it as "the
    # previous handler" (uvicorn restores it and re-raises; others chain to it).
    global _deferred, _signal
    if _signal is not None:
        _die(signum)  # a second one: end now, as SIG_DFL would have
    _signal = signum
    if _retiring == threading.get_ident():
        # This very thread was pushing at exit when the signal came (a multiprocessing
        # worker finishing on its own): that push ends the process when it is done.
        _deferred = _retiring
        return
    # The push runs on a thread of its own: a handler runs between two bytecodes of the
    # main thread, which may hold a lock the push needs (logging's, say); SIGTERM must end
    # the process within the budget all the same.
    try:
        pushing = start_thread(final_push, "pool-exporter-exit")
    except RuntimeError:  # the interpreter is finalizing: no new threads, push from here
        final_push()
    else:
        pushing.join(EXIT_BUDGET)
    _die(signum)


def _die(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _connect_celery() -> None:
    signals = sys.modules.get("celery.signals")
    if signals is not None:  # the uid makes connecting again (after fork, per engine) a no-op
        signals.worker_process_shutdown.connect(final_push, weak=False, dispatch_uid=_CELERY_UID)


class _Anchor:
    """Kept alive for ``register_after_fork``, whose registry holds its objects weakly."""


_anchor = _Anchor()


def _hook_multiprocessing() -> None:
    global _multiprocessing_hooked
    util = sys.modules.get("multiprocessing.util")
    if util is None or _multiprocessing_hooked:
        return
    _multiprocessing_hooked = True
    # A child clears the finalizers it inherits and then runs the after-fork callbacks, so
    # the finalizer is registered from one of those, in the child itself.
    util.register_after_fork(_anchor, _in_child)
    if _in_multiprocessing_child():
        _in_child(_anchor)  # instrumented inside a child: its callbacks have run


def _in_multiprocessing_child() -> bool:
    process = sys.modules.get("multiprocessing.process")
    return process is not None and process.parent_process() is not None


def _in_child(_: object) -> None:
    sys.modules["multiprocessing.util"].Finalize(None, final_push, exitpriority=_LAST)
    # No SIGTERM handler in a multiprocessing child (a forked one inherits ours): a Pool's
    # terminate() SIGTERMs workers it may leave blocked on a lock it holds, and a Python
    # handler can miss that signal (CPython runs it at the main thread's next bytecode; a
    # signal landing just before a lock wait leaves it pending for ever): ~1 terminate()
    # in 100 hung, with any Python handler. Workers it ends lose their last interval.
    if signal.getsignal(signal.SIGTERM) == _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
