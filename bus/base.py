"""The Bus protocol and the bounded subscription both buses share.

Semantics, identical for the in-process and the NATS bus (one contract suite checks both):
- ``publish`` routes an event to every subscription whose pattern matches its subject (NATS wildcards);
- events from one publisher reach each subscriber in publish order, each exactly once;
- a subscription holds at most ``maxsize`` undelivered events. Overflowing it is an explicit
  ``SlowConsumerError`` raised to its consumer on the next read, never a silent drop: from that point
  the subscription is dead and the consumer must resubscribe (and, live, reconcile from the store);
- closing a subscription or the bus ends iteration after the events already queued are delivered.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import Any, Awaitable, Callable, Protocol, runtime_checkable

from tradebus.bus.events import Event

DEFAULT_MAXSIZE = 65_536


class BusError(RuntimeError):
    """Infrastructure failure of a bus."""


class SlowConsumerError(BusError):
    """A subscription overflowed its bound; events after that point were not delivered."""


class BusClosedError(BusError):
    """Publish or subscribe on a closed bus."""


class Subscription:
    """A bounded, async-iterable queue of the events matching one pattern."""

    __slots__ = ("pattern", "maxsize", "high_water", "_queue", "_waiter", "_error", "_ended", "_on_close")

    def __init__(self, pattern: str, maxsize: int, on_close: Callable[["Subscription"], Awaitable[Any] | None]) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.pattern = pattern
        self.maxsize = maxsize
        self.high_water = max(1, maxsize // 2)
        self._queue: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._ended = False
        self._on_close = on_close

    # -- producer side (the bus, on the event loop's thread) --

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push(self, event: Event) -> None:
        """Queue one event; overflowing the bound fails the subscription."""
        if self._ended or self._error is not None:
            return
        if len(self._queue) >= self.maxsize:
            self.fail(
                SlowConsumerError(
                    f"subscription {self.pattern!r} overflowed its bound of {self.maxsize} events:"
                    " the consumer fell behind and events were not delivered; resubscribe"
                )
            )
            return
        self._queue.append(event)
        if self._waiter is not None:
            self._wake()

    def fail(self, exc: BaseException) -> None:
        """Kill the subscription: its consumer gets ``exc`` on the next read."""
        if self._error is None:
            self._error = exc
            self._queue.clear()
        self._wake()

    def end(self) -> None:
        """Stop accepting events; the consumer drains what is queued, then iteration stops."""
        self._ended = True
        self._wake()

    # -- consumer side --

    @property
    def pending(self) -> int:
        """Events queued and not yet read."""
        return len(self._queue)

    @property
    def failed(self) -> bool:
        return self._error is not None

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._error is not None:
                raise self._error
            if self._queue:
                return self._queue.popleft()
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def next(self, timeout: float | None = None) -> Event:
        """Return the next event; raise ``TimeoutError`` after ``timeout`` s, ``StopAsyncIteration`` at end."""
        if self._queue and self._error is None:
            return self._queue.popleft()
        async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
            return await self.__anext__()

    def drain_nowait(self) -> list[Event]:
        """Take every queued event without waiting (raises if the subscription failed)."""
        if self._error is not None:
            raise self._error
        items = list(self._queue)
        self._queue.clear()
        return items

    async def close(self) -> None:
        """Unsubscribe; already-queued events can still be read."""
        if not self._ended:
            self.end()
            result = self._on_close(self)
            if inspect.isawaitable(result):
                await result

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@runtime_checkable
class Bus(Protocol):
    """What components need from a message bus."""

    async def publish(self, event: Event, subject: str | None = None) -> None:
        """Publish ``event`` on ``subject`` (default: the scheme's subject for its type)."""

    async def subscribe(self, pattern: str, *, maxsize: int = DEFAULT_MAXSIZE) -> Subscription:
        """Subscribe to a subject pattern; the subscription is live when this returns."""

    async def flush(self, timeout: float = 10.0) -> None:
        """Return once everything published so far has left this process (or been queued locally)."""

    async def close(self) -> None:
        """Drain in-flight events to subscribers, end every subscription, release resources."""
