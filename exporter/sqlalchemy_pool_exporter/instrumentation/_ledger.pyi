"""Types of the compiled ledger (``_ledger_c/``); ``ledger.py`` documents the behaviour."""

from collections.abc import Callable
from typing import Any

from sqlalchemy_pool_exporter.instrumentation.stats import PoolStats
from sqlalchemy_pool_exporter.logs import RateLimitedReporter

class Ledger:
    """What a checkout and a checkin write into one pool's PoolStats."""

    def __init__(self, stats: PoolStats, clock: Callable[[], float]) -> None: ...
    def checked_out(self, fairy: Any, start: float, now: float, code: Any, lasti: int) -> None:
        """Book a checkout: its wait, its held entry and the peak."""

class Checkin:
    """Ends a checkout in the ledger, then calls ``forward(record)``."""

    forward: Callable[[Any], None]
    def __init__(
        self, ledger: Ledger, forward: Callable[[Any], None], reporter: RateLimitedReporter
    ) -> None: ...
    def __call__(self, rec: Any) -> None: ...

class Checkout:
    """pool.connect(): times the checkout, finds its site, books it in the ledger."""

    checkout: Callable[[Any], Any]
    target: Any
    def __init__(
        self,
        ledger: Ledger,
        checkout: Callable[[Any], Any],
        target: Any,
        finder: Any,
        getframe: Callable[[int], Any],
        wait_failed: Callable[..., None],
        reporter: RateLimitedReporter,
        reentrant: bool,
    ) -> None: ...
    def __call__(self) -> Any: ...
