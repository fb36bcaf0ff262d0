"""The demotion detector on synthetic equity: how fast it sees an edge go to zero, and how often it demotes a
system whose edge is intact.

For each annual Sharpe ratio of a system on 1h bars, bar returns are drawn normal with the backtest's
mean and volatility (in control), or with the mean set to zero from bar 2,000 on (the break). The CUSUM
threshold h is the smallest on a grid whose in-control runs demote at most once per system-year; the table
gives, at that h, false demotions per system-year and the time from the break to the demotion (median and
the share within the 2-week target). Statistics set the limit here: telling an edge of Sharpe S from none
takes about 2 h / (S^2 / 8760) bars, so only very large Sharpe ratios can be told apart in 2 weeks.

Usage: python bench/bench_detector.py [--quick]
"""

from __future__ import annotations

import math
import sys

import numpy as np

from tradebus.components.lifecycle import cusum_break

BARS_PER_YEAR = 8_760  # 1h
BREAK = 2_000
TWO_WEEKS = 14 * 24


def false_per_year(mu0: float, sigma: float, h: float, years: int, rng) -> float:
    alarms = 0
    for _ in range(years):
        r = rng.normal(mu0, sigma, BARS_PER_YEAR)
        start = 0
        while start < len(r):  # a demoted system is re-admitted: count every alarm in the year
            i = cusum_break(r[start:], mu0, sigma, h)
            if i < 0:
                break
            alarms += 1
            start += i + 1
    return alarms / years


def delays(mu0: float, sigma: float, h: float, runs: int, rng) -> np.ndarray:
    out = []
    for _ in range(runs):
        r = np.concatenate((rng.normal(mu0, sigma, BREAK), rng.normal(0.0, sigma, 20 * BARS_PER_YEAR)))
        i = cusum_break(r, mu0, sigma, h)
        out.append(math.inf if i < 0 else max(i - BREAK, 0))  # an alarm before the break counts as at once
    return np.array(out)


def main() -> None:
    quick = "--quick" in sys.argv
    years, runs = (20, 40) if quick else (100, 200)
    rng = np.random.default_rng(7)
    sigma = 0.004  # per bar; the ratio, not the level, decides
    print(f"{'Sharpe/yr':>9} {'h':>6} {'false/sys-yr':>12} {'median delay (days)':>20} {'<= 2 weeks':>10}")
    for sharpe in (1, 2, 5, 10, 20, 40):
        mu0 = sharpe / math.sqrt(BARS_PER_YEAR) * sigma
        chosen = None
        for h in (1, 2, 3, 4, 5, 6, 8, 10, 12, 15):
            if false_per_year(mu0, sigma, h, years, rng) <= 1.0:
                chosen = h
                break
        if chosen is None:
            print(f"{sharpe:>9} {'-':>6} no threshold on the grid demotes at most once a year")
            continue
        fp = false_per_year(mu0, sigma, chosen, years, rng)
        d = delays(mu0, sigma, chosen, runs, rng)
        med = np.median(d)
        print(f"{sharpe:>9} {chosen:>6} {fp:>12.2f} {med / 24 if math.isfinite(med) else math.inf:>20.1f} "
              f"{np.mean(d <= TWO_WEEKS):>10.0%}")


if __name__ == "__main__":
    main()
