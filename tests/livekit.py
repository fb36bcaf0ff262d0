"""What the daemon tests share: the sandbox (``live.sandbox``: a fake Bybit with history, a config that
trades often, a daemon running in-process against them) and checks of a store against the venue."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradebus.bus import events as ev
from tradebus.bus.nats import NatsBus
from tradebus.eventstore import projections
from tradebus.eventstore.store import EventStore
from tradebus.live.sandbox import (CONFIG, SYMBOL, TF, Running, Venue, price_at, running,  # noqa: F401 - shared
                                   settings_for, start_venue)


async def trade(r: Running, v: Venue, bars: int, pause: float = 0.15) -> None:
    """Push ``bars`` bars, letting the daemon settle after each."""
    for _ in range(bars):
        v.push_bar()
        await r.settle(pause)
    await r.settle()


def stored_state(path: Path) -> projections.State:
    with EventStore.open_reader(path) as st:
        return projections.rebuild(st.read())


async def nats_bus(server) -> NatsBus:
    return await NatsBus.connect(server.url, name="daemon-test")


def venue_qty(v: Venue) -> float:
    pos = v.state.positions.get(SYMBOL)
    return float(pos.size) if pos else 0.0


def creates(v: Venue) -> list[dict]:
    """Every order create the venue received (refused ones too), in order."""
    return [b for p, b in v.state.requests if p == "/v5/order/create"]


def check_store_equals_venue(v: Venue, path: Path, system: str = "livetest") -> projections.State:
    """The store's orders, fills and position are the venue's: each order there once, nothing missing."""
    state = stored_state(path)
    with EventStore.open_reader(path) as st:
        events = [r.event for r in st.read()]
    # An order stored as submitted whose request never left (a kill between the two) is rejected at restart.
    never_sent = {e.order_id for e in events if isinstance(e, ev.OrderRejected) and e.code == "not_sent"}
    submitted = sorted(e.order_id for e in events if isinstance(e, ev.OrderSubmitted) and e.order_id not in never_sent)
    at_venue = sorted(o["orderLinkId"] for o in v.state.orders.values())
    assert at_venue == submitted, (f"every order sent is at the venue exactly once, and nothing else is: only at "
                                   f"the venue {set(at_venue) - set(submitted)}, only stored {set(submitted) - set(at_venue)}")
    assert state.positions[system][SYMBOL].qty == pytest.approx(venue_qty(v))
    mine = {k.split("|", 1)[1] for k in state.exec_ids if k.startswith(f"{system}|")}
    assert mine == {e["execId"] for e in v.state.executions}
    assert state.duplicate_fills == 0
    return state
