"""Performance metrics from an equity curve and a trade list (pure numpy).

Returns are per bar (``equity[t] / equity[t-1] - 1``, the first against the initial capital) and are
annualised with the number of bars in a 365-day year for the timeframe (crypto trades every day).
Sharpe uses the sample standard deviation; Sortino the root mean square of the negative returns, as
empyrical does; both assume a zero risk-free rate.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tradebus.components.timeframes import DAY
from tradebus.engine.trades import Trade

YEAR_NS = 365 * DAY


def bar_returns(equity: np.ndarray, initial: float) -> np.ndarray:
    """Per-bar simple returns of an equity curve."""
    prev = np.concatenate(([initial], equity[:-1]))
    return equity / prev - 1.0


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    if len(returns) < 2:
        return math.nan
    sd = returns.std(ddof=1)
    return float(returns.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else math.nan


def sortino(returns: np.ndarray, periods_per_year: float) -> float:
    if len(returns) < 2:
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    return float(returns.mean() / downside * math.sqrt(periods_per_year)) if downside > 0 else math.nan


def drawdown(equity: np.ndarray, times: np.ndarray) -> tuple[float, int]:
    """Return (max drawdown as a negative fraction, longest time from a peak to its recovery, in ns).

    A drawdown still open at the end lasts until the last bar.
    """
    n = len(equity)
    if n == 0:
        return 0.0, 0
    peak = np.maximum.accumulate(equity)
    at_peak = equity >= peak
    peak_idx = np.maximum.accumulate(np.where(at_peak, np.arange(n), 0))
    recovered = np.flatnonzero(at_peak[1:] & ~at_peak[:-1]) + 1
    spans = [times[recovered] - times[peak_idx[recovered - 1]]]
    if not at_peak[-1]:
        spans.append(np.array([times[-1] - times[peak_idx[-1]]]))
    longest = int(np.concatenate(spans).max(initial=0))
    return float((equity / peak - 1.0).min()), longest


def summarize(times: np.ndarray, equity: np.ndarray, position: np.ndarray, initial: float, bar_ns: int,
              trades: Sequence[Trade], fees: float, funding: float) -> dict[str, float | int]:
    """All headline metrics of a run."""
    periods = YEAR_NS / bar_ns
    rets = bar_returns(equity, initial)
    total = float(equity[-1] / initial - 1.0) if len(equity) else 0.0
    years = len(equity) * bar_ns / YEAR_NS
    cagr = (1.0 + total) ** (1.0 / years) - 1.0 if years > 0 and total > -1 else math.nan
    max_dd, dd_ns = drawdown(equity, times)
    pnls = np.array([t.pnl for t in trades])
    wins, losses = pnls[pnls > 0], pnls[pnls < 0]
    held = np.array([t.exit_time - t.entry_time for t in trades], dtype=np.int64)
    return {
        "total_return": total,
        "annualized_return": cagr,
        "sharpe": sharpe(rets, periods),
        "sortino": sortino(rets, periods),
        "calmar": cagr / abs(max_dd) if max_dd < 0 else math.nan,
        "max_drawdown": max_dd,
        "max_drawdown_duration_days": dd_ns / DAY,
        "trades": len(trades),
        "win_rate": float(len(wins) / len(pnls)) if len(pnls) else math.nan,
        "profit_factor": float(wins.sum() / -losses.sum()) if len(losses) and losses.sum() < 0 else math.nan,
        "expectancy": float(pnls.mean()) if len(pnls) else math.nan,
        "avg_holding_hours": float(held.mean() / 3.6e12) if len(held) else math.nan,
        "exposure": float(np.mean(position != 0)) if len(position) else 0.0,
        "fees_paid": fees,
        "funding_paid": funding,
        "final_equity": float(equity[-1]) if len(equity) else initial,
        "bars": len(equity),
    }


def sum_accounts(members: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], initials: Sequence[float]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-accounts, each ``(times, equity, position)``, summed on the union of their bar times: each holds
    its last equity between its bars and its initial capital before its first. Returns (times, equity,
    exposed: 1.0 where any member holds a position)."""
    times = np.unique(np.concatenate([t for t, _, _ in members])) if members else np.zeros(0, dtype=np.int64)
    equity = np.zeros(len(times))
    exposed = np.zeros(len(times), dtype=bool)
    for (t, eq, pos), initial in zip(members, initials):
        j = np.searchsorted(t, times, side="right") - 1  # this member's latest bar at each time
        held = j >= 0
        equity += np.where(held, eq[np.maximum(j, 0)], initial)
        exposed |= held & (pos[np.maximum(j, 0)] != 0)
    return times, equity, exposed.astype(np.float64)
