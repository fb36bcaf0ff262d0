"""Sweep kernel throughput: bar-evaluations per second of the compiled replay loop over a parameter grid,
next to a hand-written numba sma-cross loop (the floor of what a sweep could cost) and vectorbt when it
is installed (``pip install -e '.[bench]'``), on the same grid and the same real data, in the same run.

A bar-evaluation is one bar of one parameter set. The grid is sma_cross fast x slow (fast < slow) on
the real Bybit BTCUSDT 5m series (163,212 bars) when ../shared/data is present, else a random walk.
Rows:

- hand loop: crossings, position, fees and equity only; indicators precomputed (as for the kernel);
- kernel: ``factory.sim`` with the replay's full semantics (sizing, spread, fees, order book, stats),
  one thread, then one thread per core (the loop releases the GIL);
- sweep trial alone: one trial by itself (load the slice, compute features, run the kernel, score), one
  process; then what ``tradebus sweep`` does (indicators shared between trials through the memo, trials
  on the same rows in one compiled batch).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba as nb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_int, fmt_ratio, fmt_verdict, parser, print_header, print_table, resolve_n  # noqa: E402
from bench_replay import KEY, config, real_or_walk, window  # noqa: E402

from tradebus.components import indicators  # noqa: E402
from tradebus.factory import sim  # noqa: E402
from tradebus.factory.market import FeatureMemo, MemoryMarket  # noqa: E402
from tradebus.factory.sweep import run_trial, run_trials  # noqa: E402
from tradebus.engine.market import load_market  # noqa: E402

FAST = (5, 10, 15, 20, 30, 40, 50, 60)
SLOW = (50, 80, 100, 120, 150, 200, 250, 300)


@nb.njit(cache=True, nogil=True)
def hand_loop(fast: np.ndarray, slow: np.ndarray, o: np.ndarray, c: np.ndarray, first: int, fee: float) -> float:
    """Long/short on strict crossings, filled at the next open, fees on notional; returns final equity."""
    cash, qty, pending = 1.0, 0.0, 0
    for i in range(first, len(c)):
        if pending != 0:
            target = pending * cash / o[i] if qty == 0.0 else pending * (cash + qty * o[i]) / o[i]
            trade = target - qty
            cash -= trade * o[i] + abs(trade) * o[i] * fee
            qty = target
            pending = 0
        if fast[i - 1] < slow[i - 1] and fast[i] > slow[i]:
            pending = 1
        elif fast[i - 1] > slow[i - 1] and fast[i] < slow[i]:
            pending = -1
    return cash + qty * c[-1]


def grid() -> list[tuple[int, int]]:
    return [(f, s) for f in FAST for s in SLOW if f < s]


def main() -> None:
    p = parser("sweep kernel bar-evaluations/s vs a hand-written loop and vectorbt", default_n=163_212, quick_n=40_000)
    args = p.parse_args()
    n = resolve_n(args)
    cols, source = real_or_walk(n)
    combos = grid()
    print_header("bench_kernel", f"{len(combos)} sma_cross parameter sets x {len(cols['close']):,} bars of {source}")
    mem = MemoryMarket({KEY: cols})
    win = window(cols)
    base = config("sma_cross")
    cfgs = [base.model_copy(update={"strategy": base.strategy.model_copy(update={"params": {
        "fast": f, "slow": s, "allow_short": True}})}) for f, s in combos]
    slices = [load_market(c, win, mem) for c in cfgs]
    defn = base.strategy_def()
    inputs = []
    for c, m in zip(cfgs, slices):
        inputs.append(sim.kernel_inputs(c, m, False))
    bar_evals = sum(len(m.candles["close"]) - m.first for m in slices)
    rows = []

    # hand loop (indicators precomputed, like the kernel's rows)
    smas = {k: indicators.sma(cols["close"], k) for k in set(FAST) | set(SLOW)}
    hand_loop(smas[FAST[0]], smas[SLOW[0]], cols["open"], cols["close"], SLOW[-1], 0.00055)
    t0 = time.perf_counter()
    for (f, s), m in zip(combos, slices):  # the same bars the kernel trades (after its warm-up)
        hand_loop(smas[f], smas[s], cols["open"], cols["close"], m.first, 0.00055)
    hand_s = time.perf_counter() - t0
    hand_rate = bar_evals / hand_s
    rows.append(["hand numba loop, 1 thread (reference)", f"{hand_s:.3f}", fmt_int(hand_rate), "1.00x"])

    simulate = sim.simulator(defn)
    simulate(*inputs[0])  # compile
    t0 = time.perf_counter()
    for a in inputs:
        simulate(*a)
    k1 = time.perf_counter() - t0
    rows.append(["kernel, 1 thread", f"{k1:.3f}", fmt_int(bar_evals / k1), fmt_ratio(hand_s / k1)])

    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda a: simulate(*a), inputs))
        kn = time.perf_counter() - t0
    kernel_rate = bar_evals / kn
    rows.append([f"kernel, {threads} threads", f"{kn:.3f}", fmt_int(kernel_rate), fmt_ratio(hand_s / kn)])

    t0 = time.perf_counter()
    for c in cfgs:
        run_trial(c, win, mem)
    trial_s = time.perf_counter() - t0
    rows.append(["sweep trial alone, 1 process", f"{trial_s:.3f}",
                 fmt_int(bar_evals / trial_s), fmt_ratio(hand_s / trial_s)])

    # What `tradebus sweep` runs: indicators shared through the memo, trials on the same rows batched.
    batch = [(str(i), c, win) for i, c in enumerate(cfgs)]
    run_trials(batch[:2], mem, FeatureMemo())  # compile the batch loop outside the timing
    t0 = time.perf_counter()
    run_trials(batch, mem, FeatureMemo())
    swept_s = time.perf_counter() - t0
    rows.append(["sweep trials, shared + batched, 1 process", f"{swept_s:.3f}",
                 fmt_int(bar_evals / swept_s), fmt_ratio(hand_s / swept_s)])

    try:
        import pandas as pd
        import vectorbt as vbt

        # The kernel's 62 (fast, slow) pairs, column by column (MA.run pairs its windows positionally); the
        # averages are computed outside the timing, as the kernel's feature rows are.
        def averages(close: "pd.Series") -> tuple:
            return (vbt.MA.run(close, [f for f, _ in combos], short_name="fast"),
                    vbt.MA.run(close, [s for _, s in combos], short_name="slow"))

        def vbt_grid(close: "pd.Series", fast_ma, slow_ma) -> None:
            entries = fast_ma.ma_crossed_above(slow_ma)
            exits = fast_ma.ma_crossed_below(slow_ma)
            vbt.Portfolio.from_signals(close, entries, exits, fees=0.00055, short_entries=exits, short_exits=entries)

        small = pd.Series(cols["close"][:2_000])
        vbt_grid(small, *averages(small))  # compile vectorbt's numba functions outside the timing, as the kernel's
        close = pd.Series(cols["close"])
        mas = averages(close)
        t0 = time.perf_counter()
        vbt_grid(close, *mas)
        vbt_s = time.perf_counter() - t0
        vbt_evals = len(close) * len(combos)
        rows.append(["vectorbt from_signals, same pairs", f"{vbt_s:.3f}", fmt_int(vbt_evals / vbt_s),
                     fmt_ratio((vbt_evals / vbt_s) / hand_rate)])
    except ImportError:
        rows.append(["vectorbt", "-", "not installed (pip install -e '.[bench]')", "-"])

    print_table(f"{len(combos)} parameter sets, {bar_evals:,} bar-evaluations",
                ["engine", "seconds", "bar-evals/s", "vs hand loop"], rows)
    print_table("Targets", ["target", "result", ""], [
        [f"kernel >= 100M bar-evaluations/s ({threads} threads)", fmt_int(kernel_rate), fmt_verdict(kernel_rate >= 100e6)],
    ])


if __name__ == "__main__":
    main()
