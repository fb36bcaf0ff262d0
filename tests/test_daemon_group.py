"""Several systems in one daemon process: one store, one NATS connection, one private stream for the account;
each system trades its own symbol, keeps its own state and obeys its own kill switch. Two systems on one
symbol of one account are refused before anything starts."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import yaml

from tradebus.bus import events as ev
from tradebus.components.timeframes import tf_ns
from tradebus.engine.guard import command
from tradebus.eventstore.store import EventStore
from tradebus.live.daemon import DaemonGroup

from tradebus.live.fake_bybit import Instrument
from .livekit import CONFIG, SYMBOL, creates, nats_bus, price_at, settings_for, start_venue, stored_state
from .proc import run_tradebus

ETH = "ETHUSDT"
ETH_CONFIG = {**CONFIG, "system": "livetest-eth", "symbol": ETH}


def eth_price(i: int) -> float:
    return round(price_at(i + 2) / 15, 2)  # another wave, out of step with BTC's


@pytest.fixture
def venue():
    v = start_venue()
    v.state.instruments[ETH] = Instrument(ETH, tick="0.01", step="0.01", min_qty="0.01")
    step = tf_ns(v.tf) // 1_000_000
    for i in range(v.next_bar):  # the same history for ETH
        c, o = eth_price(i), eth_price(i - 1)
        v.state.add_candle(ETH, v.tf, v.t0_ms + i * step, o, max(o, c) + 0.5, min(o, c) - 0.5, c, 100.0, push=False)
    yield v
    v.close()


def push_both(v) -> None:
    i = v.next_bar
    c, o = eth_price(i), eth_price(i - 1)
    v.state.add_candle(ETH, v.tf, v.t0_ms + i * tf_ns(v.tf) // 1_000_000, o, max(o, c) + 0.5, min(o, c) - 0.5, c,
                       100.0, push=True)
    v.push_bar()


async def settle(group: DaemonGroup, quiet: float = 0.3) -> None:
    last, since = None, time.monotonic()
    while time.monotonic() - since < quiet:
        n = tuple((d.steps, d.in_flight, d.requests.qsize(), d.inbox.qsize()) for d in group.daemons)
        if n != last:
            last, since = n, time.monotonic()
        await asyncio.sleep(0.05)


async def trade(group: DaemonGroup, venue, bars: int) -> list[dict]:
    """Close ``bars`` bars of both symbols, letting the group settle after each; the order creates they caused."""
    before = len(creates(venue))
    for _ in range(bars):
        push_both(venue)
        await settle(group, 0.15)
    await settle(group)
    return creates(venue)[before:]


@asynccontextmanager
async def running_group(venue, nats_server, tmp_path) -> AsyncIterator[tuple[DaemonGroup, object]]:
    """The BTC and ETH systems in one group on one store, trading until the block ends; then they must stop
    with exit code 0."""
    bus = await nats_bus(nats_server)
    group = DaemonGroup([settings_for(venue, bus, tmp_path), settings_for(venue, bus, tmp_path, config=ETH_CONFIG)])
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(group.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield group, bus
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 30)
        await bus.close()
    assert code == 0


async def test_two_systems_in_one_process_trade_their_own_symbols_on_one_account(venue, nats_server, tmp_path):
    async with running_group(venue, nats_server, tmp_path) as (group, bus):
        btc, eth = group.daemons
        sent = await trade(group, venue, 16)
        sent = {s: sum(b["symbol"] == s for b in sent) for s in (SYMBOL, ETH)}
        assert sent[SYMBOL] >= 2 and sent[ETH] >= 2, f"both systems trade: {sent}"

        # The kill switch of one system halts that one only.
        await bus.publish(command("livetest-eth", "halted", "test"))
        deadline = time.monotonic() + 10
        while eth.guard.state != "halted" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert eth.guard.state == "halted" and btc.guard.state == "active"
        later = await trade(group, venue, 8)
        assert later and all(b["symbol"] == SYMBOL for b in later), "BTC trades on, halted ETH sends nothing"

    # One store holds both systems, each with its own symbol's fills and the venue's position.
    path = tmp_path / "demo.sqlite"
    with EventStore.open_reader(path) as st:
        events = [r.event for r in st.read()]
    fills = [e for e in events if isinstance(e, ev.Fill)]
    assert {(e.system, e.symbol) for e in fills} == {("livetest", SYMBOL), ("livetest-eth", ETH)}
    state = stored_state(path)
    for system, symbol in (("livetest", SYMBOL), ("livetest-eth", ETH)):
        assert state.positions[system][symbol].qty == pytest.approx(float(venue.state.positions[symbol].size))
    assert state.duplicate_fills == 0 and len(state.exec_ids) == len(venue.state.executions)
    # A wallet push (one after each fill) is one account event, however many systems read it: it belongs to the
    # first system's run; the others record only what their own reconciliations read.
    wallets = [e for e in events if isinstance(e, ev.AccountState) and e.system == ""]
    pushed = [e for e in wallets if e.run == btc.run_id]
    assert len(pushed) >= len(fills) // 2
    assert len({(e.ts_event, e.balance, e.equity) for e in pushed}) == len(pushed)
    assert sum(e.run == eth.run_id for e in wallets) <= 2
    statuses = [json.loads(f.read_text()) for f in (tmp_path / "daemons").glob("*.json")]
    assert {s["system"] for s in statuses} == {"livetest", "livetest-eth"}

    # Restarted on the same store, each system folds back its own position and risk state, agrees with the
    # venue (no fail-closed exit), and trades on.
    async with running_group(venue, nats_server, tmp_path) as (again, _):
        btc2, eth2 = again.daemons
        for d, symbol in ((btc2, SYMBOL), (eth2, ETH)):
            assert d.portfolio.positions[symbol].qty == pytest.approx(float(venue.state.positions[symbol].size))
        assert eth2.guard.state == "halted" and btc2.guard.state == "active", "the kill survives the restart"
        later = await trade(again, venue, 8)
        assert later and all(b["symbol"] == SYMBOL for b in later)


def test_two_systems_on_one_symbol_of_one_account_are_refused(tmp_path):
    for name, symbol in (("a", SYMBOL), ("b", SYMBOL)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**CONFIG, "system": f"sys-{name}", "symbol": symbol}))
    (tmp_path / "pf.yaml").write_text(yaml.safe_dump({
        "portfolio": "two", "initial_capital": 20000,
        "windows": {"hygiene": {"start": "2025-01-01", "end": "2025-02-01"},
                    "test": {"start": "2025-02-01", "end": "2025-03-01"}},
        "systems": [{"config": "a.yaml", "weight": 0.5}, {"config": "b.yaml", "weight": 0.5}]}))

    done = run_tradebus("paper", str(tmp_path / "pf.yaml"), "--store", str(tmp_path / "p.sqlite"))

    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "sys-a" in done.stderr and "sys-b" in done.stderr and f"both trade {SYMBOL}" in done.stderr
    assert not (tmp_path / "p.sqlite").exists(), "nothing started, nothing written"
