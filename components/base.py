"""What every component is: events in, events out, a clock, and nothing else.

A component never touches a bus, a file or the wall clock. A host (``tradebus.engine.host``) feeds it
the events matching its subject patterns and publishes what it returns; backtest and live differ only
in the host's bus, the clock and the venue component.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol, Sequence, TypeVar

from tradebus.bus.events import Event
from tradebus.bus.ids import IdGenerator

NO_EVENTS: tuple[Event, ...] = ()
E = TypeVar("E", bound=Event)


class Clock(Protocol):
    def now(self) -> int:
        """Current time in ns (simulated in a replay)."""


class SimClock:
    """A clock the replay driver sets to each bar's close."""

    __slots__ = ("t",)

    def __init__(self, t: int = 0) -> None:
        self.t = t

    def now(self) -> int:
        return self.t


class WallClock:
    """Live time. ``t`` is there because hosts set it at each step; live, the wall decides."""

    t = 0

    def now(self) -> int:
        return time.time_ns()


class Stamper:
    """Builds envelopes for one component: ids (seeded for reproducible replays), clock time, system, run."""

    __slots__ = ("_ids", "_clock", "system", "run")

    def __init__(self, clock: Clock, seed: str | None, system: str = "", run: str = "") -> None:
        self._ids = IdGenerator(seed)
        self._clock = clock
        self.system = system
        self.run = run

    def __call__(self, ts_event: int, cause: str = "") -> dict[str, Any]:
        now = self._clock.now()
        return {"id": self._ids.next(now), "ts_event": ts_event, "ts_init": now, "system": self.system,
                "run": self.run, "cause": cause}

    def now(self) -> int:
        return self._clock.now()

    def next_id(self, now: int) -> str:
        return self._ids.next(now)

    def template(self, cls: type[E], **fields: Any) -> E:
        """An event to copy with ``msgspec.structs.replace`` on hot paths (5x cheaper than building one).

        The caller must replace every field that varies; the template holds the constant ones.
        """
        return cls(id="", ts_event=0, ts_init=0, system=self.system, run=self.run, **fields)


COMMAND = "command-"  # the run of a kill or resume a person sent (``tradebus kill|resume``)


def is_command(event: Event) -> bool:
    """A kill or resume a person sent (the guard answers it with a state change of its own)."""
    return event.run.startswith(COMMAND)


class Gate(Protocol):
    """What a venue component asks before an order leaves (the risk guard)."""

    def admit(self, intent: Any, now: int, price: float | None = None) -> str:
        """Why the order may not be sent ('' if it may)."""

    def take_breach(self, ts: int, cause: str) -> tuple[Event, ...]:
        """The state change the last refusal decided, as events."""


class Component:
    """Base: route each event type to a handler; unknown types are ignored."""

    name: str = "component"
    runs_ahead: bool = False
    """True if the component reads market data only and stamps events with the data's own time, so a
    host may run it ahead of the clock (it must then produce the same events in the same order)."""

    def __init__(self) -> None:
        self._handlers: dict[type, Callable[[Any], Sequence[Event]]] = {}

    def patterns(self) -> tuple[str, ...]:
        """Subject patterns this component consumes."""
        raise NotImplementedError

    def on_event(self, event: Event) -> Sequence[Event]:
        """Handle one event; return the events it causes, in order."""
        handler = self._handlers.get(type(event))
        return handler(event) if handler is not None else NO_EVENTS

    def handler_for(self, kind: type) -> Callable[[Any], Sequence[Event]] | None:
        """The handler for one event type, or None if this component ignores it (hosts cache this)."""
        return self._handlers.get(kind)
