"""Whole-sweep throughput: trials/s and bar-evaluations/s of ``run_sweep`` (plan, slices, shared indicators,
kernel, scoring, the experiments table), next to the kernel's own rate on the same trials and vectorbt on
the same sma_cross pairs, in the same run.

A bar-evaluation is one traded bar of one parameter set. Data: the real Bybit BTCUSDT and ETHUSDT 5m
series with funding and marks when ../shared/data is present (else a random walk). Jobs:

- sma_cross, the 62 (fast, slow) pairs of bench_kernel, 5m, both symbols: comparable with vectorbt;
- stochrsi_mean_reversion, a slice of the shipped grid (rsi x stoch periods, thresholds, ATR stop), on
  5m, 15m and 1h (resampled from 5m): the shape of ``configs/sweeps/stochrsi_grid.yaml``.

"vs kernel" is the whole sweep's bar-evaluation rate over the kernel's alone (``sim.simulate`` on inputs
built beforehand, one thread): what the per-trial Python work costs. Target: >= 50%.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_int, fmt_ratio, fmt_verdict, parser, print_header, print_table, resolve_n  # noqa: E402
from bench_kernel import grid  # noqa: E402

from tradebus.engine.market import load_market  # noqa: E402
from tradebus.engine.marketdata import MarketData, SeriesKey  # noqa: E402
from tradebus.factory import sim  # noqa: E402
from tradebus.factory.experiments import Tracker  # noqa: E402
from tradebus.factory.market import MemoryMarket  # noqa: E402
from tradebus.factory.sweep import parse_job, plan, run_sweep  # noqa: E402
from tradebus.replay.checks import random_walk  # noqa: E402
from tradebus.replay.importer import read_file  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bybit" / "linear"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
BASE = {"costs": {"taker_fee": 0.00055, "maker_fee": 0.0002, "spread_bps": 1.0, "funding": True},
        "risk": {"sizing": "risk_per_trade", "risk_per_trade": 0.01, "max_leverage": 3,
                 "stop": {"kind": "atr", "atr_period": 14, "atr_mult": 2.0}},
        "fill": "next_open", "initial_capital": 10_000}


def load(md: MarketData, bars: int) -> str:
    """The last ``bars`` 5m bars of each symbol (with funding and marks), real when present."""
    source = "random walk"
    for i, sym in enumerate(SYMBOLS):
        path = DATA / "5m" / f"{sym}.parquet"
        if path.exists():
            cols = {k: v[-bars:] for k, v in read_file(path).items()}
            md.write(SeriesKey("bybit", "linear", sym, "5m"), cols)
            for kind, folder, tf in (("funding", "funding", "-"), ("mark", "mark_1h", "1h")):
                extra = DATA / folder / f"{sym}.parquet"
                if extra.exists():
                    md.write(SeriesKey("bybit", "linear", sym, tf, kind), read_file(extra, kind))
            source = "Bybit 5m (real)"
        else:
            md.write(SeriesKey("bybit", "linear", sym, "5m"), random_walk(bars, seed=40 + i))
    return source


def jobs(quick: bool) -> dict[str, dict]:
    fast, slow = zip(*grid())
    stoch = {"rsi_period": [7, 14, 21], "stoch_period": [7, 14, 21], "overbought": [75, 80],
             "oversold": [20, 25], "adx_threshold": [20, 30], "risk.stop.atr_mult": [2.0] if quick else [1.5, 2.5],
             "allow_short": True}
    return {
        "sma_cross": {"job": "bench-sma", "base": BASE, "score": {"min_trades": 1}, "tasks": [
            {"strategy": "sma_cross", "params": {"fast": sorted(set(fast)), "slow": sorted(set(slow)),
                                                 "allow_short": True},
             "symbols": list(SYMBOLS), "timeframes": ["5m"], "window": "hygiene"}]},
        "stochrsi": {"job": "bench-stochrsi", "base": BASE, "score": {"min_trades": 1}, "tasks": [
            {"strategy": "stochrsi_mean_reversion", "params": stoch, "symbols": list(SYMBOLS),
             "timeframes": ["5m", "15m", "1h"], "window": "hygiene"}]},
    }


def kernel_alone(job, mem: MemoryMarket) -> tuple[float, int, int]:
    """(seconds, bar-evaluations, trials) of the kernel alone over every trial of ``job``, inputs built first."""
    trials = plan(job, mem).trials
    inputs, evals = [], 0
    for t in trials:
        m = load_market(t.config, t.window, mem)
        inputs.append((sim.simulator(t.config.strategy_def()), sim.kernel_inputs(t.config, m, False)))
        evals += len(m.candles["close"]) - m.first
    for simulate, args in inputs[:3]:
        simulate(*args)  # compile outside the timing
    t0 = time.perf_counter()
    for simulate, args in inputs:
        simulate(*args)
    return time.perf_counter() - t0, evals, len(trials)


def vectorbt_rate(md: MarketData) -> float | None:
    """Bar-evaluations/s of vectorbt's from_signals on the same sma_cross pairs over BTCUSDT (MAs outside)."""
    try:
        import pandas as pd
        import vectorbt as vbt
    except ImportError:
        return None
    combos = grid()
    close = pd.Series(md.read(SeriesKey("bybit", "linear", "BTCUSDT", "5m"))["close"])

    def run(series: "pd.Series") -> None:
        fast = vbt.MA.run(series, [f for f, _ in combos], short_name="fast")
        slow = vbt.MA.run(series, [s for _, s in combos], short_name="slow")
        entries, exits = fast.ma_crossed_above(slow), fast.ma_crossed_below(slow)
        vbt.Portfolio.from_signals(series, entries, exits, fees=0.00055, short_entries=exits, short_exits=entries)

    run(close[:2_000])  # compile outside the timing
    t0 = time.perf_counter()
    run(close)
    return len(close) * len(combos) / (time.perf_counter() - t0)


def main() -> None:
    p = parser("whole-sweep trials/s and bar-evaluations/s vs the kernel alone and vectorbt", default_n=163_212,
               quick_n=40_000)
    args = p.parse_args()
    bars = resolve_n(args)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        md = MarketData.open(Path(tmp) / "m.duckdb")
        source = load(md, bars)
        print_header("bench_sweep", f"{len(SYMBOLS)} symbols x {bars:,} bars of {source}")
        mem = MemoryMarket.load(md, "bybit", "linear", list(SYMBOLS))
        rows, ratios = [], {}
        for name, data in jobs(args.quick).items():
            job = parse_job(data)
            k_s, evals, n = kernel_alone(job, mem)
            rows.append([f"{name}: kernel alone", f"{n:,}", f"{k_s:.2f}", f"{n / k_s:,.0f}",
                         fmt_int(evals / k_s), "1.00x"])
            with Tracker.open(Path(tmp) / f"warm-{name}.duckdb") as tracker:
                run_sweep(job, md, tracker, workers=1)  # compile the batch loop outside the timing, as the kernel's
            for workers in (1, 2):
                with Tracker.open(Path(tmp) / f"e-{name}-{workers}.duckdb") as tracker:
                    t0 = time.perf_counter()
                    report = run_sweep(job, md, tracker, workers=workers)
                    s = time.perf_counter() - t0
                assert report.ran == n and not report.failed, (report.ran, report.failed[:3])
                ratio = (evals / s) / (evals / k_s)
                ratios[(name, workers)] = ratio
                rows.append([f"{name}: sweep, {workers} worker{'s' if workers > 1 else ''}", f"{n:,}",
                             f"{s:.2f}", f"{n / s:,.0f}", fmt_int(evals / s), fmt_ratio(ratio)])
        vbt = vectorbt_rate(md)
        rows.append(["vectorbt, sma_cross pairs, BTCUSDT", "-", "-", "-",
                     fmt_int(vbt) if vbt else "not installed: pip install vectorbt", "-"])
        md.close()
    print_table("Sweeps", ["run", "trials", "seconds", "trials/s", "bar-evals/s", "vs kernel"], rows)
    one = min(r for (_, w), r in ratios.items() if w == 1)
    print_table("Targets", ["target", "result", ""], [
        ["whole sweep >= 50% of the kernel's bar-evaluation rate (1 worker, each job)", f"{one:.0%}",
         fmt_verdict(one >= 0.5)],
    ])


if __name__ == "__main__":
    main()
