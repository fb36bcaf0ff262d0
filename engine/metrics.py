"""Performance metrics from an equity curve and a trade list (pure numpy).

Returns are per bar (``equity[t] / equity[t-1] - 1``, the first against the initial capital) and are
annualised with the number of bars in a 365-day year for the timeframe (crypto trades every day).
Sharpe uses the sample standard deviation; Sortino the root mean square of the negative returns, as
empyrical does; both assume a zero risk-free rate.
"""

from __future__ import annotations

import math
from typing import Sequence

import numba as nb
import numpy as np

from tradebus.components.timeframes import DAY
from tradebus.engine.trades import Trade

YEAR_NS = 365 * DAY


def bar_returns(equity: np.ndarray, initial: float) -> np.ndarray:
    """Per-bar simple returns of an equity curve."""
    prev = np.concatenate(([initial], equity[:-1]))
    return equity / prev - 1.0


def underwater(equity: np.ndarray) -> np.ndarray:
    """Each bar's drawdown from the running peak, as a negative fraction (0 at a new high)."""
    return equity / np.maximum.accumulate(equity) - 1.0 if len(equity) else np.asarray(equity, dtype=np.float64)


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
    return float(underwater(equity).min()), longest


STATS = np.dtype([
    ("bars", np.int64), ("final_equity", np.float64),
    ("ret_mean", np.float64), ("ret_m2", np.float64), ("down_sq", np.float64),  # bar returns: mean, sum of squared
    ("max_dd", np.float64), ("dd_ns", np.int64), ("exposed", np.int64),        # deviations, sum of squared losses
    ("trades", np.int64), ("wins", np.int64), ("win_sum", np.float64), ("loss_sum", np.float64),
    ("pnl_sum", np.float64), ("held_ns", np.int64),
    ("fees", np.float64), ("funding", np.float64), ("liquidations", np.int64),
])
"""What every metric of a run is computed from: the sweep's compiled loop keeps it as it goes (it keeps no
curve), a replay computes it from its curve and trades; ``from_stats`` is the one place metrics are defined."""

NAMES = ("return_pct", "annualised_return", "sharpe", "sortino", "calmar", "max_drawdown", "max_drawdown_duration_days",
         "total_trades", "trades_per_year", "win_rate", "profit_factor", "expectancy", "avg_holding_hours", "exposure",
         "fees_paid", "funding_paid", "final_equity", "bars")
"""The one vocabulary of run metrics: artifacts, reports, the experiments table and validation. Returns,
drawdowns, rates and exposure are fractions (0.05 is 5%); PnL, fees and funding are in the quote currency."""


@nb.njit(cache=True, nogil=True)
def add_trade(st, pnl: float, held_ns: int) -> None:
    """Count a closed trade (its PnL net of costs, and how long it was held) in a ``STATS`` record."""
    st.trades += 1
    st.pnl_sum += pnl
    st.held_ns += held_ns
    if pnl > 0:
        st.wins += 1
        st.win_sum += pnl
    elif pnl < 0:
        st.loss_sum += pnl


@nb.njit(cache=True, nogil=True)
def _add_trades(stats: np.ndarray, pnls: np.ndarray, held: np.ndarray) -> None:
    for k in range(len(pnls)):
        add_trade(stats[0], pnls[k], held[k])


def from_stats(st: np.void, initial: float, bar_ns: int) -> dict[str, float | int]:
    """Every headline metric of a run from its statistics (a ``STATS`` record)."""
    bars = int(st["bars"])
    periods = YEAR_NS / bar_ns
    total = float(st["final_equity"] / initial - 1.0)
    years = bars * bar_ns / YEAR_NS
    cagr = (1.0 + total) ** (1.0 / years) - 1.0 if years > 0 and total > -1 else math.nan
    sd = math.sqrt(st["ret_m2"] / (bars - 1)) if bars > 1 and st["ret_m2"] > 0 else 0.0
    down = math.sqrt(st["down_sq"] / bars) if bars > 1 else 0.0
    trades = int(st["trades"])
    max_dd = float(st["max_dd"])
    loss = float(st["loss_sum"])
    return {
        "return_pct": total,
        "annualised_return": cagr,
        "sharpe": float(st["ret_mean"] / sd * math.sqrt(periods)) if sd > 0 else math.nan,
        "sortino": float(st["ret_mean"] / down * math.sqrt(periods)) if down > 0 else math.nan,
        "calmar": cagr / abs(max_dd) if max_dd < 0 else math.nan,
        "max_drawdown": max_dd,
        "max_drawdown_duration_days": int(st["dd_ns"]) / DAY,
        "total_trades": trades,
        "trades_per_year": trades / years if years > 0 else math.nan,
        "win_rate": float(st["wins"] / trades) if trades else math.nan,
        "profit_factor": float(st["win_sum"] / -loss) if loss < 0 else math.nan,
        "expectancy": float(st["pnl_sum"] / trades) if trades else math.nan,
        "avg_holding_hours": int(st["held_ns"]) / trades / 3.6e12 if trades else math.nan,
        "exposure": int(st["exposed"]) / bars if bars else 0.0,
        "fees_paid": float(st["fees"]),
        "funding_paid": float(st["funding"]),
        "final_equity": float(st["final_equity"]),
        "bars": bars,
    }


def curve_stats(times: np.ndarray, equity: np.ndarray, position: np.ndarray, initial: float,
                trades: Sequence[Trade], fees: float, funding: float) -> np.void:
    """A run's ``STATS`` from its curve (each bar's close time, equity and position) and closed trades."""
    stats = np.zeros(1, dtype=STATS)
    st = stats[0]
    rets = bar_returns(equity, initial)
    n = len(equity)
    st["bars"] = n
    st["final_equity"] = equity[-1] if n else initial
    if n:
        mean = rets.mean()
        st["ret_mean"], st["ret_m2"] = mean, ((rets - mean) ** 2).sum()
        st["down_sq"] = (np.minimum(rets, 0.0) ** 2).sum()
    st["max_dd"], st["dd_ns"] = drawdown(equity, times)
    st["exposed"] = int(np.count_nonzero(position))
    _add_trades(stats, np.array([t.pnl for t in trades], dtype=np.float64),
                np.array([t.exit_time - t.entry_time for t in trades], dtype=np.int64))
    st["fees"], st["funding"] = fees, funding
    return st


def summarize(times: np.ndarray, equity: np.ndarray, position: np.ndarray, initial: float, bar_ns: int,
              trades: Sequence[Trade], fees: float, funding: float) -> dict[str, float | int]:
    """All headline metrics of a run from its curve and trades."""
    return from_stats(curve_stats(times, equity, position, initial, trades, fees, funding), initial, bar_ns)


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
