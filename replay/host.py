"""Hosts: run components over a bus, one clock step at a time.

A step starts with the events the driver publishes for one timestamp (a bar) and ends when every event
they caused has been handled; only then does the clock move on (``on_step_end``). Within a step events
are handled in publish order (FIFO), each by the matching components in registration order.

- ``LocalHost``: in-process and synchronous; routing is the bus's subject matching, cached per subject.
- ``NatsHost``: every event really travels through NATS: it is published, comes back through one
  subscription (one connection keeps publish order), and only then is dispatched. It counts the events
  in flight, so the step ends exactly when the last one has come back and been handled. Same order,
  same components, same results as ``LocalHost``.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Sequence

from tradebus.bus import subjects
from tradebus.bus.base import Bus, Subscription
from tradebus.bus.events import Event
from tradebus.components.base import Component

Sink = Callable[[Event], None]
"""Sees every event of the run, in handling order (the recorder, the events.jsonl writer)."""


class _Router:
    """Subject routing (the bus's wildcard rules), resolved once per (subject, event type) to handlers."""

    def __init__(self, components: Sequence[Component]) -> None:
        self._patterns = [(c, c.patterns()) for c in components]
        self._routes: dict[tuple[str, type], tuple[Callable[[Event], Sequence[Event]], ...]] = {}
        # Only components that act at step end are called there (most do not).
        self._step_enders = [c.on_step_end for c in components
                             if type(c).on_step_end is not Component.on_step_end]

    def route(self, subject: str, kind: type) -> tuple[Callable[[Event], Sequence[Event]], ...]:
        key = (subject, kind)
        handlers = self._routes.get(key)
        if handlers is None:
            found = []
            for c, pats in self._patterns:
                if any(subjects.matches(p, subject) for p in pats):
                    handler = c.handler_for(kind)
                    if handler is not None:
                        found.append(handler)
            handlers = self._routes[key] = tuple(found)
        return handlers

    def step_end(self, ts: int) -> None:
        for end in self._step_enders:
            end(ts)


class LocalHost:
    """Deterministic in-process host."""

    def __init__(self, components: Sequence[Component], sinks: Sequence[Sink] = ()) -> None:
        self._router = _Router(components)
        self._sinks = tuple(sinks)

    def step(self, events: Iterable[Event], ts: int) -> None:
        """Handle ``events`` and everything they cause, then end the step at ``ts``."""
        queue = deque(events)
        route, sinks, subject_for = self._router.route, self._sinks, subjects.subject_for
        pop, extend = queue.popleft, queue.extend
        while queue:
            event = pop()
            for sink in sinks:
                sink(event)
            for handle in route(subject_for(event), type(event)):
                caused = handle(event)
                if caused:
                    extend(caused)
        self._router.step_end(ts)


class NatsHost:
    """The same contract over NATS; create with ``await NatsHost.start(bus, components, run)``."""

    def __init__(self, bus: Bus, components: Sequence[Component], run: str, sinks: Sequence[Sink]) -> None:
        self._bus = bus
        self._router = _Router(components)
        self._run = run
        self._sinks = tuple(sinks)
        self._sub: Subscription | None = None

    @classmethod
    async def start(cls, bus: Bus, components: Sequence[Component], run: str, sinks: Sequence[Sink] = (),
                    maxsize: int = 1_000_000) -> "NatsHost":
        host = cls(bus, components, run, sinks)
        host._sub = await bus.subscribe(subjects.ALL, maxsize=maxsize)
        return host

    async def step(self, events: Iterable[Event], ts: int, timeout: float = 30.0) -> None:
        """Publish ``events``, handle each as it comes back and what it causes, then end the step."""
        assert self._sub is not None
        in_flight = 0
        for event in events:
            await self._bus.publish(event)
            in_flight += 1
        route, sinks, subject_for = self._router.route, self._sinks, subjects.subject_for
        while in_flight:
            event = await self._sub.next(timeout)
            if event.run != self._run:
                continue  # another run's traffic on a shared server
            in_flight -= 1
            for sink in sinks:
                sink(event)
            for handle in route(subject_for(event), type(event)):
                for caused in handle(event):
                    await self._bus.publish(caused)
                    in_flight += 1
        self._router.step_end(ts)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.close()
