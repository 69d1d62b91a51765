"""Push mode: a daemon thread that sends this process's snapshot to the sidecar.

Every ``interval`` seconds the pusher builds a cumulative snapshot and POSTs it as JSON
to the sidecar's ``/v1/push``. The app never waits for it: the thread is a daemon, each
push has one deadline for the whole exchange (``timeout``; connect, send and reply, see
:mod:`~sqlalchemy_pool_exporter.instrumentation.exchange`) and reads at most a small
reply, and a failed or abandoned push is simply dropped — the next one carries the same
cumulative totals, so nothing is lost. Failures are counted (``failed``) and logged once
when the sidecar becomes unreachable or stuck and once when it comes back, not on every
attempt. When the process ends, a final push marks it retired so the sidecar folds it in
at once (``stop``; the exit hooks that call it are in ``exits``). After the final push
nothing else is sent: a later ordinary push would make the sidecar take the process for
alive again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from sqlalchemy_pool_exporter.instrumentation import registry
from sqlalchemy_pool_exporter.instrumentation.exchange import ExchangeFailed, Reply, post
from sqlalchemy_pool_exporter.instrumentation.exits import EXIT_BUDGET, start_thread
from sqlalchemy_pool_exporter.instrumentation.snapshot import ProcessIdentity, process_snapshot
from sqlalchemy_pool_exporter.logs import get_logger

log = get_logger(__name__)


class Pusher:
    """Background sender of cumulative snapshots to one sidecar URL."""

    def __init__(
        self,
        url: str,
        interval: float,
        timeout: float,
        token: str | None,
        identity: Callable[[], ProcessIdentity],
    ) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self._token = token
        self._identity = identity
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self.seq = 0
        self.sent = 0
        self.failed = 0
        self.retired = False  # the sidecar accepted this process's final push
        self._healthy = True

    def start(self) -> None:
        """Start the push thread."""
        _warm_up(self.url)
        self._thread = start_thread(self._run, "pool-exporter-push")

    def alive(self) -> bool:
        """True while the push thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, final: bool = True, timeout: float | None = None) -> bool:
        """Stop pushing; with ``final`` send one last snapshot marking this process gone.

        Returns whether this process's final snapshot was accepted (now or by an earlier
        call: atexit and the exit hooks may each call this, the first one does the work).
        """
        if timeout is None:
            # At exit every second counts (gunicorn's graceful timeout, a pod's grace
            # period): a short budget, and only a brief try if the sidecar was already gone.
            timeout = min(self.timeout, EXIT_BUDGET) if self._healthy else 0.2
        if self._stop.is_set():
            # A final push may be on its way from another thread (a multiprocessing worker
            # told to stop and SIGTERMed at once): the process must not end under it.
            if self._send_lock.acquire(timeout=timeout):
                self._send_lock.release()
            return self.retired
        self._stop.set()
        return self.push(final=True, timeout=timeout) if final else False

    def _run(self) -> None:
        self.push()
        while not self._stop.wait(self.interval):
            self.push()

    def push(self, final: bool = False, timeout: float | None = None) -> bool:
        """Send one snapshot now; returns whether the sidecar accepted it.

        ``timeout`` bounds the whole call, including waiting for a push in progress on
        another thread (one stuck on a hung sidecar must not hold up a final push for
        longer than its caller allows).
        """
        budget = timeout or self.timeout
        deadline = time.monotonic() + budget
        if not self._send_lock.acquire(timeout=budget):
            return False
        try:
            if self.retired or (self._stop.is_set() and not final):
                return False  # retired, or stopping: only the final push may still go out
            return self._send(final, round(max(deadline - time.monotonic(), 0.05), 3))
        finally:
            self._send_lock.release()

    def _send(self, final: bool, timeout: float) -> bool:
        try:
            self.seq += 1
            body = json.dumps(
                process_snapshot(
                    self._identity(),
                    registry.instrumentations(),
                    seq=self.seq,
                    interval=self.interval,
                    final=final,
                ),
                separators=(",", ":"),
            ).encode()
            headers = {"Content-Type": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            reply = post(self.url, body, headers, timeout)
            if reply.status != 200:
                raise ExchangeFailed(_refused(reply))
        except Exception as exc:
            self.failed += 1
            if self._healthy:
                self._healthy = False
                log.warning(
                    "push to sidecar failed; will retry each interval",
                    url=_redact(self.url),
                    error=_reason(exc),
                )
            return False
        self.sent += 1
        self.retired = final
        if not self._healthy:
            self._healthy = True
            log.info("push to sidecar recovered", url=_redact(self.url))
        return True


def _warm_up(url: str) -> None:
    # Do in the caller's thread what the first push would import lazily (the idna codec
    # for getaddrinfo). A fork() while the push thread is inside an import leaves that
    # module's import lock held for ever in the child — a gunicorn worker forked right
    # after preload — and the child's own push thread would hang on it at its first push.
    "localhost".encode("idna")


def _refused(reply: Reply) -> str:
    try:
        detail = str(json.loads(reply.body or b"{}").get("error", ""))[:200]
    except Exception:
        detail = ""
    return f"HTTP {reply.status} {detail}".strip()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ExchangeFailed):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _redact(url: str) -> str:
    # A push URL should carry no credentials, but never echo userinfo if it does.
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
