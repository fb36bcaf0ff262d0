"""The recorder: subscribes to the bus and appends what it hears to the event store.

Group commit: it waits for one event, takes everything else already queued (up to ``max_batch``),
and appends that batch in a worker thread so the fsync never blocks the event loop. While one batch is
being fsynced the next accumulates, so under load batches grow by themselves and throughput follows
the disk, not the event rate.
"""

from __future__ import annotations

import asyncio

import structlog

from tradebus.bus import subjects
from tradebus.bus.base import Bus, Subscription
from tradebus.bus.events import Event
from tradebus.eventstore.store import EventStore

log = structlog.get_logger("tradebus.recorder")


class Recorder:
    """Append every event matching ``pattern`` to ``store``."""

    def __init__(
        self,
        bus: Bus,
        store: EventStore,
        *,
        pattern: str = subjects.ALL,
        max_batch: int = 10_000,
        maxsize: int = 1_000_000,
    ) -> None:
        self._bus = bus
        self._store = store
        self._pattern = pattern
        self._max_batch = max_batch
        self._maxsize = maxsize
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self.received = 0
        self.appended = 0
        self.duplicates = 0
        self.last_seq = store.last_seq
        self._committed = asyncio.Condition()

    async def start(self) -> None:
        """Subscribe (live when this returns) and start appending in the background."""
        self._sub = await self._bus.subscribe(self._pattern, maxsize=self._maxsize)
        self._task = asyncio.create_task(self._run(self._sub), name="recorder")

    async def _run(self, sub: Subscription) -> None:
        try:
            async for first in sub:
                batch: list[Event] = [first, *sub.drain_nowait()]
                for i in range(0, len(batch), self._max_batch):
                    await self._commit(batch[i : i + self._max_batch])
        finally:
            async with self._committed:  # wake sync() waiters so they see a failure
                self._committed.notify_all()

    async def _commit(self, batch: list[Event]) -> None:
        result = await asyncio.to_thread(self._store.append, batch)
        self.received += len(batch)
        self.appended += result.appended
        self.duplicates += len(result.duplicates)
        if result.duplicates:
            log.info("recorder skipped events already stored", count=len(result.duplicates))
        async with self._committed:
            self.last_seq = max(self.last_seq, result.last_seq)
            self._committed.notify_all()

    async def sync(self, received: int, timeout: float = 30.0) -> None:
        """Wait until at least ``received`` events have been committed (or the recorder failed)."""

        async def _wait() -> None:
            async with self._committed:
                await self._committed.wait_for(lambda: self.received >= received or self._task_done())

        await asyncio.wait_for(_wait(), timeout)
        self._raise_if_failed()

    @property
    def task(self) -> asyncio.Task[None]:
        """The appending task (done when the subscription ends or the recorder fails)."""
        assert self._task is not None, "start() first"
        return self._task

    def _task_done(self) -> bool:
        return self._task is not None and self._task.done()

    def _raise_if_failed(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            exc = self._task.exception()
            if exc is not None:
                raise exc

    async def stop(self) -> None:
        """Unsubscribe, commit everything already received, and surface any failure."""
        if self._sub is not None:
            await self._sub.close()
        if self._task is not None:
            await self._task
