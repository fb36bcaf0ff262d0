"""The demo daemon end to end against the fake Bybit: the replay's components trading over real pybit,
recorded to the store, restarted from it, reconciled with the venue, and guarded by risk caps."""

from __future__ import annotations

import asyncio

import pytest

from tradebus.bus import events as ev

from .livekit import SYMBOL, nats_bus, running, settings_for, start_venue, stored_state


@pytest.fixture
def venue():
    v = start_venue()
    yield v
    v.close()


def _venue_qty(v) -> float:
    pos = v.state.positions.get(SYMBOL)
    return float(pos.size) if pos else 0.0


async def test_demo_daemon_trades_pushed_bars_and_store_matches_venue(venue, nats_server, tmp_path):
    bus = await nats_bus(nats_server)
    try:
        async with running(settings_for(venue, bus, tmp_path)) as r:
            for _ in range(24):
                venue.push_bar()
                await r.settle(0.15)
            await r.settle()
            d = r.daemon
            creates = venue.state.count("/v5/order/create")
            assert creates >= 2, "the wave must make the strategy trade"
            assert d.portfolio.positions[SYMBOL].qty == pytest.approx(_venue_qty(venue))
    finally:
        await bus.close()
    state = stored_state(tmp_path / "demo.sqlite")
    links = [b["orderLinkId"] for p, b in venue.state.requests if p == "/v5/order/create"]
    assert len(links) == len(set(links)) == creates
    assert state.positions["livetest"][SYMBOL].qty == pytest.approx(_venue_qty(venue))
    assert len(state.exec_ids) == len(venue.state.executions)
    assert not state.open_orders
