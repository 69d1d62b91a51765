"""Render lanes: how many ``/metrics`` or ``/api/pools`` renders run and wait at once.

A render is CPU work in a worker thread, so under the GIL every render running takes
CPU from the event loop that applies pushes. Each kind of render has its own
:class:`RenderLane` — one running, a few waiting (each for at most ``timeout``), any
more answered 503 at once — so a burst of ``/api/pools`` requests never delays a
scrape, nor a burst of scrapes the API, and neither has more than one thread.

``/api/pools`` at a thousand processes costs most of a second of CPU per rendering, and
eight clients asking at once made eight. So its renderings are shared
(:class:`Shared`): requests that arrive while one is being made get that one, and it
is served again for twice what it cost to make — a few milliseconds for a small
sidecar, about a second at that scale — so however many requests come, rendering the
API takes at most a third of a core, and an answer is never older than that.
``/metrics`` is never shared: a scrape sees every push accepted before it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

#: Lanes of the sidecar: (running at once, waiting at most).
LANES = {"metrics": (1, 4), "api": (1, 2)}


class Busy(Exception):
    """No render slot within the wait allowed."""


class RenderLane:
    """Slots of one kind of render, with a short bounded queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, running: int, waiting: int) -> None:
        self.loop = loop
        self.free = running
        self.max_waiting = waiting
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def acquire(self, timeout: float) -> None:
        """Take a slot, waiting at most ``timeout`` s; :class:`Busy` if none comes."""
        if self.free:
            self.free -= 1
            return
        if len(self.waiting) >= self.max_waiting:
            raise Busy
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.waiting.append(waiter)

        def give_up() -> None:
            if not waiter.done():
                waiter.set_exception(Busy())

        timer = self.loop.call_later(timeout, give_up)
        try:
            await waiter  # on success the releasing render handed its slot over
        finally:
            timer.cancel()
            if waiter in self.waiting:
                self.waiting.remove(waiter)

    def release(self) -> None:
        """Give the slot to the next waiter, or back to the lane."""
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


@dataclass
class Shared:
    """One rendering that requests may share: in progress, or done and still fresh."""

    future: asyncio.Future[Any]
    fresh_until: float = float("inf")

    def usable(self, now: float) -> bool:
        """True while it is being made or is fresh enough to serve again."""
        return not self.future.done() or now < self.fresh_until

    def done(self, result: Any, began: float, now: float) -> None:
        """Publish ``result``; it stays fresh for twice what it cost to make."""
        self.future.set_result(result)
        self.fresh_until = now + 2 * (now - began)
