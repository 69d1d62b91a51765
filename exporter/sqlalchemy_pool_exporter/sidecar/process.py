"""What the sidecar sets in a process: open-file limit, connection caps, and (``serve``) GC.

**File descriptors.** Every connection is a file descriptor. If the caps of all
listeners together exceed ``RLIMIT_NOFILE``, a connection flood ends in ``accept()``
failing with EMFILE — and then nothing else can open a file or socket either (the
database probe, a log file).
So at start the sidecar raises its soft limit as far as the hard limit allows (as Go's
runtime does), keeps :data:`RESERVED` descriptors for everything else, and lowers
``max_connections`` per listener to what remains, with one warning saying so.

**Garbage collection** (:func:`tune_gc`, only in a process ``serve`` owns). The sidecar
holds the latest push of every process: hundreds of thousands of long-lived, acyclic
containers at scale (1,000 processes x 64 pools). With CPython's default thresholds a
full collection re-scans all of them every few hundred pushes, a pause of 0.1-0.4 s
that every push and scrape waiting at that moment pays. Pushes replace state rather
than growing it, and that state has no reference cycles, so the sidecar asks for young
collections far less often and for full ones only after many of them.
"""

from __future__ import annotations

import gc

from sqlalchemy_pool_exporter.logs import get_logger

try:
    import resource
except ImportError:  # not on Windows: no limit to fit under
    resource = None  # type: ignore[assignment]

log = get_logger(__name__)
#: Descriptors kept for what is not a connection: sockets, log files, the probe, epoll.
RESERVED = 64


def open_file_limit() -> int | None:
    """The soft open-file limit, raised to the hard limit where allowed; None if unknown."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(wanted: int, *, listeners: int) -> int:
    """``wanted`` connections per listener, lowered to fit the open-file limit."""
    limit = open_file_limit()
    if limit is None:
        return wanted
    room = max(4, (limit - RESERVED) // listeners)
    if room < wanted:
        log.warning(
            "max_connections lowered to fit the open-file limit",
            max_connections=wanted,
            lowered_to=room,
            open_file_limit=limit,
        )
        return room
    return wanted


#: gen0 allocations, gen0 collections per gen1, gen1 collections per full collection.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect garbage less often: for a process whose state is large and acyclic."""
    gc.set_threshold(*GC_THRESHOLDS)
