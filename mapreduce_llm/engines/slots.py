"""Request slots that let the most urgent waiter in first: an ``asyncio.Semaphore`` ordered by priority.

Each vLLM replica takes at most ``engine.max_concurrent_requests`` requests at a time; the others wait in the
driver. With a plain semaphore they would be let in by arrival, so a document's collapse call would queue behind
every map call sent before it. :class:`PrioritySlots` lets waiters in by (priority, arrival) — lower priority
value first, as in vLLM — so reduce-tree calls overtake waiting map calls here as they do in vLLM's scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator


class PrioritySlots:
    """``size`` slots; a waiter with a lower ``priority`` gets the next free slot first, ties by arrival.

    Use ``async with slots.hold(priority):``. A waiter cancelled while it waits leaves no trace; one cancelled
    just after it was given a slot hands the slot on.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        """Waiters not yet let in (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._waiters if not f.done())

    @contextlib.asynccontextmanager
    async def hold(self, priority: int = 0) -> AsyncIterator[None]:
        """Wait for a slot (by priority, then arrival), hold it for the block, then hand it on."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrivals), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # the slot was given just before the cancellation: pass it on
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, granted = heapq.heappop(self._waiters)
            if not granted.done():  # skip waiters that were cancelled
                granted.set_result(None)
                return
        self._free += 1
