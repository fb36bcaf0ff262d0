"""``tradebus lifecycle run`` over 50 running systems (the target: under a minute on 2 cores, validation
excluded): 40 in demo and 10 in production, each with a 30-day paper record in its own store, on five
synthetic 1h markets. One evaluation reads every store, replays each system's shadow over its record's
bars and its test window for the CUSUM's edge, applies every demotion rule, and allocates production.

The reference, in the same run: reading the 50 stores alone (the I/O floor); the ratio says what the
evaluation costs on top.

Usage: python bench/bench_lifecycle.py [--quick]   (--quick: 10 systems)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

from tradebus.bus import events as ev
from tradebus.components import lifecycle as lc
from tradebus.configs.lifecycle import LifecycleRules
from tradebus.configs.schema import parse_config
from tradebus.engine.marketdata import MarketData, SeriesKey
from tradebus.eventstore.store import EventStore
from tradebus.factory.lifecycle import Sources, admission_evidence

HOUR = 3_600 * 10**9
DAYS = 400
T0 = 1_735_689_600 * 10**9  # 2025-01-01
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT", "EEEUSDT")


def market(md: MarketData) -> None:
    rng = np.random.default_rng(7)
    n = DAYS * 24
    for k, symbol in enumerate(SYMBOLS):
        close = 100 * (k + 1) * np.exp(np.cumsum(rng.normal(0, 0.008, n)))
        open_ = np.r_[close[0], close[:-1]]
        md.write(SeriesKey("bybit", "linear", symbol, "1h"), {
            "open_time": T0 + np.arange(n, dtype=np.int64) * HOUR, "open": open_, "close": close,
            "high": np.maximum(open_, close) * 1.002, "low": np.minimum(open_, close) * 0.998,
            "volume": np.full(n, 1e3), "turnover": close * 1e3})


def config(i: int):
    return parse_config({
        "system": f"sys{i:02d}", "symbol": SYMBOLS[i % len(SYMBOLS)], "timeframe": "1h",
        "windows": {"hygiene": {"preset": "first_70pct"}, "test": {"preset": "last_30pct"}},
        "strategy": {"id": "sma_cross", "params": {"fast": 5 + i % 7, "slow": 30 + 3 * (i % 9), "allow_short": True}},
        "risk": {"sizing": "fixed_fraction", "fraction": 0.5, "max_leverage": 1},
        "costs": {"funding": False}, "initial_capital": 10_000})


def main() -> int:
    from tradebus.live import supervisor
    from tradebus.replay.backtest import run_replay

    n_systems = 10 if "--quick" in sys.argv else 50
    home = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    os.environ["TRADEBUS_HOME"] = str(home)
    md = MarketData.open(home / "market.duckdb")
    market(md)
    end = T0 + DAYS * 24 * HOUR
    record = f"{np.datetime64(end - 30 * 24 * HOUR, 'ns')}:{np.datetime64(end, 'ns')}"
    store = home / "store" / "events.sqlite"
    moves: list[ev.Promotion] = []
    t = T0
    for i in range(n_systems):
        c = config(i)
        stage = "production" if i < n_systems // 5 else "demo"
        path = ["candidate", "hygiene", "test", "demo"] + (["live_test", "production"] if stage == "production" else [])
        for frm, to in zip(["candidate", *path], path):
            t += 1
            gated = to in lc.GATED
            evidence = admission_evidence(c, "bench") if to == "candidate" else ({"approved_by": "bench"} if gated else {})
            moves.append(ev.Promotion(id=f"b{i}-{to}", ts_event=t, ts_init=t, system=c.system, run="bench",
                                      from_status=frm, to_status=to, rule=lc.APPROVED if gated else
                                      (lc.ADMITTED if to == "candidate" else "bench"), evidence=evidence))
        mode = "paper" if stage == "demo" else "live"
        events = run_replay(c, record, md, keep_market_data=True).events  # what a paper daemon stores on these bars
        events = [msgspec.structs.replace(e, mode=mode) if isinstance(e, ev.RunStarted) else e for e in events]
        daemon_store = supervisor.store_of(c.system, mode)
        with EventStore.open_writer(daemon_store) as st:
            st.append(events)
    with EventStore.open_writer(store) as st:
        st.append(moves)
    md.close()

    stores = sorted((home / "lifecycle" / "stores").glob("*.sqlite"))
    t0 = time.perf_counter()
    n_events = sum(len(supervisor.read_store(p)) for p in stores)
    read_s = time.perf_counter() - t0
    with MarketData.open(home / "market.duckdb", read_only=True) as md:
        src = Sources(md, None, supervisor.store_of, supervisor.read_store)
        t0 = time.perf_counter()
        report = supervisor.run_once(store, src, LifecycleRules(), daemons=False)
        run_s = time.perf_counter() - t0
    moved = [f"{p.system} {p.from_status}->{p.to_status} ({p.rule})" for p in report.promotions]
    print(f"{n_systems} systems ({n_systems // 5} production, the rest demo), {n_events:,} stored daemon events")
    print(f"lifecycle run (no daemons): {run_s:.2f} s  ({run_s / n_systems * 1e3:.0f} ms a system; target < 60 s "
          f"for 50)")
    print(f"reference, reading the stores alone: {read_s:.2f} s; the evaluation is {run_s / read_s:.1f}x that")
    print(f"moves: {len(moved)} ({', '.join(sorted({m.split('(')[1][:-1] for m in moved})) or 'none'}), "
          f"allocations: {len(report.allocations)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
