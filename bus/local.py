"""In-process bus: deterministic, single-threaded, no serialisation.

``publish`` hands the event object to every matching subscription synchronously, in subscription
order, so delivery order is a pure function of publish order. Routing is cached per subject.
"""

from __future__ import annotations

import asyncio

from tradebus.bus import subjects
from tradebus.bus.base import DEFAULT_MAXSIZE, BusClosedError, Subscription
from tradebus.bus.events import Event


class LocalBus:
    """The in-process implementation of ``Bus``."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        self._closed = False

    def _route(self, subject: str) -> tuple[Subscription, ...]:
        targets = tuple(s for s in self._subs if subjects.matches(s.pattern, subject))
        self._routes[subject] = targets
        return targets

    async def publish(self, event: Event, subject: str | None = None) -> None:
        if self._closed:
            raise BusClosedError("publish on a closed bus")
        subject = subject or subjects.subject_for(event)
        targets = self._routes.get(subject)
        if targets is None:
            targets = self._route(subject)
        behind = False
        for sub in targets:
            sub.push(event)
            if sub.pending >= sub.high_water:
                behind = True
        if behind:
            # A courtesy yield so a consumer that is merely busy can catch up; one that never reads
            # still overflows and gets SlowConsumerError.
            await asyncio.sleep(0)

    async def subscribe(self, pattern: str, *, maxsize: int = DEFAULT_MAXSIZE) -> Subscription:
        if self._closed:
            raise BusClosedError("subscribe on a closed bus")
        subjects.validate_pattern(pattern)
        sub = Subscription(pattern, maxsize, self._remove)
        self._subs.append(sub)
        self._routes.clear()
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._routes.clear()

    async def flush(self, timeout: float = 10.0) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            sub.end()
        self._subs.clear()
        self._routes.clear()

    async def __aenter__(self) -> "LocalBus":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
