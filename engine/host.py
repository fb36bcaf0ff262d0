"""Hosts: run components over a bus, one clock step at a time.

A step starts with the events the driver publishes for one timestamp (a bar): the host sets the
simulated clock to it, handles those events and everything they cause, and only then starts the next. Within a step events are handled in FIFO order, each by the matching components in
registration order. That order is the contract; both hosts follow it exactly.

- ``LocalHost``: in-process and synchronous; routing is the bus's subject matching, cached.
- ``NatsHost``: every event travels through NATS and is handled only once it has come back through one
  subscription. Waiting for each event's round trip in turn would cost several network round trips per
  bar, so the host pipelines without changing the order: it publishes bars up to ``ahead`` steps early,
  lets components that depend on market data alone (``runs_ahead``, e.g. the snapshot builder) handle
  them as they arrive, and then dispatches every event in exactly the FIFO order ``LocalHost`` would use,
  taking each one as it arrives. The results, ids included, are identical (a test checks it).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator, Sequence

from tradebus.bus import subjects
from tradebus.bus.base import Bus, Subscription
from tradebus.bus.events import Event
from tradebus.components.base import Component, SimClock

Sink = Callable[[Event], None]
"""Sees every event of the run, in handling order (the recorder, the events.jsonl writer)."""
Handler = Callable[[Event], Sequence[Event]]
Step = tuple[int, Sequence[Event]]


class Router:
    """Subject routing (the bus's wildcard rules), resolved once per (subject, event type) to handlers."""

    def __init__(self, components: Sequence[Component]) -> None:
        self._patterns = [(c, c.patterns()) for c in components]
        self._routes: dict[tuple[str, type], tuple[tuple[Handler, bool], ...]] = {}

    def route(self, subject: str, kind: type) -> tuple[tuple[Handler, bool], ...]:
        """(handler, runs_ahead) for each component that takes this event, in registration order."""
        key = (subject, kind)
        handlers = self._routes.get(key)
        if handlers is None:
            found = []
            for c, pats in self._patterns:
                if any(subjects.matches(p, subject) for p in pats):
                    handler = c.handler_for(kind)
                    if handler is not None:
                        found.append((handler, c.runs_ahead))
            handlers = self._routes[key] = tuple(found)
        return handlers


class LocalHost:
    """Deterministic in-process host."""

    def __init__(self, components: Sequence[Component], clock: SimClock, sinks: Sequence[Sink] = ()) -> None:
        self._router = Router(components)
        self._clock = clock
        self._sinks = tuple(sinks)

    def step(self, events: Iterable[Event], ts: int) -> None:
        """Handle ``events`` and everything they cause, with the clock at ``ts``."""
        self._clock.t = ts
        queue = deque(events)
        route, sinks, subject_for = self._router.route, self._sinks, subjects.subject_for
        pop, extend = queue.popleft, queue.extend
        while queue:
            event = pop()
            for sink in sinks:
                sink(event)
            for handle, _ in route(subject_for(event), type(event)):
                caused = handle(event)
                if caused:
                    extend(caused)

    def run(self, steps: Iterable[Step], progress: Callable[[int], None] | None = None) -> None:
        for n, (ts, events) in enumerate(steps, start=1):
            self.step(events, ts)
            if progress is not None and n % 2048 == 0:
                progress(n)


class NatsHost:
    """The same contract over NATS; create with ``await NatsHost.start(bus, components, clock, run)``."""

    def __init__(self, bus: Bus, components: Sequence[Component], clock: SimClock, run: str,
                 sinks: Sequence[Sink], ahead: int) -> None:
        self._bus = bus
        self._router = Router(components)
        self._clock = clock
        self._run = run
        self._sinks = tuple(sinks)
        self._ahead = ahead
        self._sub: Subscription | None = None
        self._arrived: dict[str, tuple[Event, tuple[tuple[Handler, bool], ...]]] = {}  # back, not yet dispatched
        # event id -> for each of its handlers (in route order), the ids a run-ahead one already produced
        self._early: dict[str, list[list[str]]] = {}

    @classmethod
    async def start(cls, bus: Bus, components: Sequence[Component], clock: SimClock, run: str,
                    sinks: Sequence[Sink] = (), ahead: int = 256, maxsize: int = 1_000_000) -> "NatsHost":
        host = cls(bus, components, clock, run, sinks, ahead)
        host._sub = await bus.subscribe(subjects.ALL, maxsize=maxsize)
        return host

    async def _receive(self, timeout: float) -> None:
        """Take one event from NATS; run market-data-only components on it at once."""
        assert self._sub is not None
        event = await self._sub.next(timeout)
        if event.run != self._run:
            return  # another run's traffic on a shared server
        route = self._router.route(subjects.subject_for(event), type(event))
        self._arrived[event.id] = (event, route)
        if any(runs_ahead for _, runs_ahead in route):
            early: list[list[str]] = []
            for handle, runs_ahead in route:
                ids: list[str] = []
                if runs_ahead:
                    for caused in handle(event):
                        await self._bus.publish(caused)
                        ids.append(caused.id)
                early.append(ids)
            self._early[event.id] = early

    async def _dispatch_step(self, first: Sequence[str], ts: int, timeout: float) -> None:
        self._clock.t = ts
        expected = deque(first)  # the FIFO LocalHost would hold, by id
        sinks, arrived = self._sinks, self._arrived
        while expected:
            eid = expected.popleft()
            while eid not in arrived:
                await self._receive(timeout)
            event, route = arrived.pop(eid)
            for sink in sinks:
                sink(event)
            early = self._early.pop(eid, None)
            for i, (handle, runs_ahead) in enumerate(route):
                if runs_ahead:  # handled on arrival: queue what it produced, in its place
                    expected.extend(early[i])
                    continue
                for caused in handle(event):
                    await self._bus.publish(caused)
                    expected.append(caused.id)

    async def run(self, steps: Iterator[Step] | Iterable[Step], progress: Callable[[int], None] | None = None,
                  timeout: float = 30.0) -> None:
        """Publish steps up to ``ahead`` early and dispatch each in order."""
        it = iter(steps)
        queued: deque[tuple[int, list[str]]] = deque()
        done = 0
        exhausted = False
        while True:
            while not exhausted and len(queued) < self._ahead:
                try:
                    ts, events = next(it)
                except StopIteration:
                    exhausted = True
                    break
                for event in events:
                    await self._bus.publish(event)
                queued.append((ts, [e.id for e in events]))
            if not queued:
                return
            ts, ids = queued.popleft()
            await self._dispatch_step(ids, ts, timeout)
            done += 1
            if progress is not None and done % 512 == 0:
                progress(done)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.close()
