"""A running demo daemon (real NATS, the fake Bybit over real pybit) takes the lifecycle's messages: an
allocation scales its entries and can never raise them, a demotion flattens it and leaves it taking exits
only, across a restart; a forged promotion on the bus can wind a daemon down, never up."""

from __future__ import annotations

import time


from tradebus.bus import events as ev
from tradebus.components.base import COMMAND
from tradebus.components.lifecycle import LIFECYCLE

from .livekit import (check_store_equals_venue, creates, running, settings_for, trade,
                      venue_qty)


def stamp(i: int, run: str = f"{COMMAND}lifecycle") -> dict:
    now = time.time_ns()
    return {"id": f"lc-test-{i}", "ts_event": now, "ts_init": now, "system": "livetest", "run": run}


def entry_qtys(v) -> list[float]:
    return [float(b["qty"]) for b in creates(v) if b["orderLinkId"].endswith("-entry")]


async def test_allocations_scale_entries_down_never_up(venue, daemon_bus, tmp_path):
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        await trade(r, venue, 8)
        full = entry_qtys(venue)
        assert full, "the wave must make the strategy enter"
        await daemon_bus.publish(ev.Allocation(**stamp(1), weight=0.25, method="inverse_vol"))
        await r.until(lambda: r.daemon.risk.weight == 0.25, what="the allocation")
        n = len(full)
        await trade(r, venue, 10)
        quarter = entry_qtys(venue)[n:]
        assert quarter and max(quarter) < 0.3 * min(full)
        for i, w in enumerate((5.0, float("inf"), float("nan"), -1.0), start=2):  # nothing raises a size past 1
            await daemon_bus.publish(ev.Allocation(**stamp(i), weight=w, method="agent"))
        await daemon_bus.publish(ev.Allocation(**stamp(9, run="agent-run"), weight=1.0, method="agent"))
        await r.settle()
        # 5 is taken as 1, inf and NaN are ignored, -1 is 0; the one from outside a command's run is not taken.
        assert r.daemon.risk.weight == 0.0
    check_store_equals_venue(venue, tmp_path / "demo.sqlite")


async def test_a_demotion_flattens_and_takes_exits_only_across_a_restart(venue, daemon_bus, tmp_path):
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        for _ in range(40):
            if venue_qty(venue) != 0:
                break
            await trade(r, venue, 1)
        assert venue_qty(venue) != 0
        demote = ev.Promotion(**stamp(1), from_status="production", to_status="live_test", rule="drawdown",
                              evidence={"max_drawdown": 0.2})
        await daemon_bus.publish(demote)
        await r.until(lambda: venue_qty(venue) == 0, what="the flattening")
        assert r.daemon.guard.state == "reducing" and LIFECYCLE in r.daemon.guard.reason()
        sent = len(entry_qtys(venue))
        await trade(r, venue, 12)
        assert len(entry_qtys(venue)) == sent, "no entry after the demotion"
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:  # the store says it: still exits only
        assert r.daemon.guard.state == "reducing" and r.daemon.risk.wound_down
        await trade(r, venue, 12)
        assert len(entry_qtys(venue)) == sent and venue_qty(venue) == 0
    flatten = [b for b in creates(venue) if b["orderLinkId"].endswith("-flatten")]
    assert len(flatten) == 1 and flatten[0]["reduceOnly"] in (True, "true")
    check_store_equals_venue(venue, tmp_path / "demo.sqlite")


async def test_a_promotion_from_outside_a_command_run_is_ignored(venue, daemon_bus, tmp_path):
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        forged = ev.Promotion(**stamp(1, run="agent-run"), from_status="demo", to_status="production", rule="agent",
                              evidence={"approved_by": "agent"})
        await daemon_bus.publish(forged)
        await trade(r, venue, 10)
        assert r.daemon.guard.state == "active" and not r.daemon.risk.wound_down
        assert entry_qtys(venue), "it trades on as before"
