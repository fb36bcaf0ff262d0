"""The capital allocator's methods against each other out of sample, on a pool of systems from the shipped
sweep jobs (trend_4h on the eight perps, sma_cross_quick on BTC and ETH).

The pool: each job's two best trials per symbol by their sweep score, which the sweeps measured on the
hygiene window (the first 70% of the history). Every member runs over the whole history; the allocators
(1/N, inverse volatility, Sharpe-scaled inverse volatility with correlated systems sharing a weight) are
walked forward, rebalancing every 7 days from the trailing lookback only, and scored on the last 30% of
the days: the days none of the pool was chosen on. Same caps for all: max weight 0.5, turnover 0.5.

Usage: python bench/bench_allocator.py [--quick]   (TRADEBUS_HOME with the eight perps' 5m candles and
funding imported; the two sweeps are run there first, resuming what is stored)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tradebus.engine.marketdata import MarketData
from tradebus.factory.allocator import compare, pool_from_sweeps
from tradebus.factory.experiments import Tracker
from tradebus.factory.market import MemoryMarket

ROOT = Path(__file__).resolve().parents[1]
JOBS = ("trend_4h", "sma_cross_quick")


def main() -> int:
    quick = "--quick" in sys.argv
    with MarketData.open(None) as md:
        stored = {c.key.symbol for c in md.series() if c.key.kind == "candles"}
    if not {"BTCUSDT", "ETHUSDT"} <= stored:
        print("skipped: needs the perps' candles in TRADEBUS_HOME (tradebus data import "
              "../shared/data/bybit/linear/{5m,funding}/*.parquet)")
        return 0
    for job in JOBS:
        subprocess.run([sys.executable, "-m", "tradebus", "sweep", str(ROOT / "configs" / "sweeps" / f"{job}.yaml")],
                       check=True, stdout=subprocess.DEVNULL)
    with MarketData.open(None, read_only=True) as md, Tracker.open(None, read_only=True) as tracker:
        symbols = sorted({c.key.symbol for c in md.series() if c.key.kind == "candles"})
        mem = MemoryMarket.load(md, "bybit", "linear", symbols)
        labels, days, r = pool_from_sweeps(tracker, mem, list(JOBS), 1 if quick else 2)
    oos_from = int(len(days) * 0.7)
    print(f"pool: {len(labels)} systems, {len(days)} common days, out of sample: the last {len(days) - oos_from} "
          f"days (from {np.datetime64(int(days[oos_from]), 'D')})")
    rows = []
    for lookback in (30, 60, 90):
        res = compare(r, oos_from, lookback, 7, 0.5, 0.5)
        for method, bt in res.items():
            rows.append((lookback, method, bt.sharpe, bt.max_drawdown, bt.total_return, bt.turnover))
    print(f"{'lookback':>8} {'method':<12} {'Sharpe':>7} {'max DD':>7} {'return':>8} {'turnover':>8}")
    for lb, m, s, dd, tr, to in rows:
        print(f"{lb:>8} {m:<12} {s:>7.2f} {dd:>7.1%} {tr:>+8.1%} {to:>8.3f}")
    best = {}
    for lb, m, s, dd, _, _ in rows:
        best.setdefault(m, []).append(s)
    print("mean Sharpe over the lookbacks: " + ", ".join(f"{m} {np.nanmean(v):.2f}" for m, v in best.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
