"""Keeping the sidecar's state in ``--state-dir``, so counters survive its restart.

:class:`StateKeeper` owns the directory while the sidecar runs (an exclusive ``flock`` on
``sidecar-state.lock``, released by the kernel even on ``kill -9``, so two sidecars can
never write one file). At start it restores ``sidecar-state.json``; a file it cannot
use — corrupt, foreign, another version, over the cap — is refused with one log line,
renamed to ``sidecar-state.json.refused-<UTC time>`` (never deleted) and the sidecar
starts fresh.

**When it saves.** Every write is atomic (a temporary file, ``fsync``, ``rename``,
``fsync`` of the directory), so a kill at any moment leaves the previous file or the
new one. It saves what changed:

* *before a scrape shows it* — :meth:`persist` wraps the collector's read: if anything
  changed since the last save, the state the scrape is about to show is written first.
  So whatever Prometheus ever saw is on disk, and after a restart, even after
  ``kill -9``, no counter is below a value it scraped;
* every :data:`SAVE_EVERY` seconds in the background, for what no scrape has shown
  yet (a process that retired since);
* at shutdown.

A failed write (disk full, permissions) is logged at most once a minute and retried at
the next occasion; the sidecar keeps serving.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy_pool_exporter.logs import get_logger
from sqlalchemy_pool_exporter.sidecar.aggregator import Aggregator
from sqlalchemy_pool_exporter.sidecar.restore import decode
from sqlalchemy_pool_exporter.sidecar.state import (
    MAX_STATE_BYTES,
    Capture,
    StateRefused,
    StateTooLarge,
    capture,
    encode,
)

log = get_logger("sqlalchemy_pool_exporter.sidecar")
T = TypeVar("T")

FILE = "sidecar-state.json"
LOCK = "sidecar-state.lock"
#: Seconds between background saves of changed state.
SAVE_EVERY = 10.0


class StateError(Exception):
    """The state directory cannot be used (held by another sidecar, unreadable)."""


class StateKeeper:
    """Restores, saves and locks the state of one aggregator in one directory."""

    def __init__(
        self,
        directory: str | Path,
        aggregator: Aggregator,
        *,
        every: float = SAVE_EVERY,
        max_bytes: int = MAX_STATE_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE
        self.aggregator = aggregator
        self.every = every
        self.max_bytes = max_bytes
        self.saves = 0
        self._lock_fd: int | None = None
        self._write_lock = threading.Lock()
        self._captured = -1  # aggregator version last captured for a save
        self._written = -1  # aggregator version last written
        self._complained = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory and restore the saved state (call before the first push)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot use {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StateError(f"{self.directory} is in use by another sidecar") from None
        self._lock_fd = fd
        try:
            self._load()
        except BaseException:
            self._unlock()
            raise

    def start(self) -> None:
        """Save changed state in the background every ``every`` seconds."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pool-exporter-state", daemon=True)
        self._thread.start()

    def close(self, *, save: bool = True) -> None:
        """Stop saving in the background, save a last time, and release the directory."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        try:
            if save and self._lock_fd is not None:
                self.save()
        except Exception as exc:  # shutting down must not fail on a bug in saving
            self._complain("state not saved", f"{type(exc).__name__}: {exc}")
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.save()
            except Exception as exc:  # a bug here must not end the saving for good
                self._complain("state not saved", f"{type(exc).__name__}: {exc}")

    # -- loading ------------------------------------------------------------------------

    def _load(self) -> None:
        with self.aggregator.lock:
            if self.aggregator.groups or self.aggregator.processes:
                return  # started again in-process: what it holds is newer than any file
        try:
            size = self.path.stat().st_size
            raw = self.path.read_bytes() if size <= self.max_bytes + 4096 else b""
        except FileNotFoundError:
            log.info("no saved state, starting fresh", state_file=str(self.path))
            return
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            if not raw:
                raise StateRefused(f"larger than {self.max_bytes} bytes")
            restored = decode(raw)
        except StateRefused as exc:
            self._refuse(str(exc))
            return
        self.aggregator.restore(restored.groups, restored.tombstones, restored.frozen)
        with self.aggregator.lock:
            self._captured = self._written = self.aggregator.version
        log.info(
            "state restored",
            state_file=str(self.path),
            pools=len(restored.groups),
            processes=len(restored.tombstones),
            saved_at=datetime.datetime.fromtimestamp(
                restored.saved_at, datetime.timezone.utc
            ).isoformat(),
        )

    def _refuse(self, reason: str) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{FILE}.refused-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{FILE}.refused-{stamp}-{n}")
        try:
            self.path.rename(aside)
        except OSError as exc:
            raise StateError(
                f"cannot move refused state {self.path} aside: {exc.strerror or exc}"
            ) from None
        log.warning("saved state refused, starting fresh", reason=reason, moved_to=str(aside))

    # -- saving -------------------------------------------------------------------------

    def persist(self, read: Callable[[], T]) -> T:
        """``read()`` under the aggregator's lock; what it read is on disk when this returns."""
        agg = self.aggregator
        with agg.lock:
            result = read()
            snap = capture(agg) if agg.version != self._captured else None
            if snap is not None:
                self._captured = agg.version
        if snap is not None:
            self._save(snap)
        elif self._written < self._captured:
            with self._write_lock:  # what it read is being written by another caller: wait
                pass
        return result

    def save(self) -> None:
        """Save the state now if it changed since the last save."""
        self.persist(lambda: None)

    def _save(self, snap: Capture) -> None:
        with self._write_lock:
            if snap.version <= self._written:
                return  # a newer state is on disk already
            try:
                data, left_out = encode(snap, self.max_bytes)
                self._write(data)
            except (OSError, StateTooLarge) as exc:
                self._captured = -1  # try again at the next occasion
                self._complain("state not saved", str(exc))
                return
            self._written = snap.version
            self.saves += 1
        if left_out:
            self._complain("state cap reached", f"{left_out} oldest retired processes left out")

    def _write(self, data: bytes) -> None:
        tmp = self.path.with_name(FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a crash of the machine
        finally:
            os.close(dir_fd)

    def _complain(self, event: str, error: str) -> None:
        now = time.monotonic()
        if now - self._complained >= 60.0:
            self._complained = now
            log.error(event, error=error, state_file=str(self.path))
