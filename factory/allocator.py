"""Capital across the systems in live_test and production: each one's share of the account.

Three methods, one set of bounds:

- ``equal``: 1/N (DeMiguel, Garlappi & Uppal 2009: none of 14 optimisers beat it reliably out of sample);
- ``inverse_vol``: weights proportional to 1 / the daily return volatility over the lookback;
- ``sharpe_vol``: inverse volatility scaled by the lookback's Sharpe ratio shrunk toward zero (no weight to a
  system whose recent Sharpe is not positive), its drawdown, and with systems correlated above
  ``max_correlation`` sharing one weight.

Then: no system above ``max_weight`` (the excess goes to the others while any has room, else stays cash), the
sum at most 1, a rebalance moves at most ``max_turnover`` (sum of |change|), and the leverage the systems'
sizing can reach in total stays inside the account's cap in the limits file. ``compare`` runs every method
walk-forward on the same daily returns (weights from the trailing lookback only, held to the next
rebalance): ``bench/bench_allocator.py`` runs it on a pool from the shipped sweep jobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

METHODS = ("equal", "inverse_vol", "sharpe_vol")


def _inverse_vol(r: np.ndarray) -> np.ndarray:
    sd = r.std(axis=0, ddof=1) if len(r) > 1 else np.zeros(r.shape[1])
    inv = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
    return inv / inv.sum() if inv.sum() > 0 else np.full(r.shape[1], 1.0 / r.shape[1])


def _sharpe_vol(r: np.ndarray, max_correlation: float) -> np.ndarray:
    n_days, n = r.shape
    base = _inverse_vol(r)
    sd = r.std(axis=0, ddof=1)
    sr = np.where(sd > 0, r.mean(axis=0) / np.where(sd > 0, sd, 1.0), 0.0)
    # Shrink toward zero by the Sharpe's own standard error (sqrt(1/n)): only an edge the lookback can tell apart
    # from noise earns a weight.
    tilt = np.maximum(sr - 1.0 / math.sqrt(max(n_days, 1)), 0.0)
    equity = np.cumprod(1.0 + r, axis=0)
    dd = np.max(1.0 - equity / np.maximum.accumulate(equity, axis=0), axis=0)
    w = base * tilt * (1.0 - np.minimum(dd, 0.99))
    if n > 1 and w.sum() > 0:
        c = np.corrcoef(r.T)
        seen: set[int] = set()
        for i in range(n):  # clusters of correlated systems split what one of them would get
            if i in seen or w[i] == 0:
                continue
            group = [j for j in range(n) if j not in seen and w[j] > 0 and (j == i or c[i, j] > max_correlation)]
            seen.update(group)
            w[group] = w[group] / len(group)
    return w / w.sum() if w.sum() > 0 else np.zeros(n)


def target(r: np.ndarray, method: str, max_correlation: float = 0.7) -> np.ndarray:
    """Unbounded weights (summing to 1, or all 0: cash) from a days x systems matrix of daily returns."""
    n = r.shape[1]
    if n == 0:
        return np.zeros(0)
    if method == "equal" or len(r) < 2:
        return np.full(n, 1.0 / n)
    if method == "inverse_vol":
        return _inverse_vol(r)
    if method == "sharpe_vol":
        return _sharpe_vol(r, max_correlation)
    raise ValueError(f"allocator method {method!r}: one of {', '.join(METHODS)}")


def capped(w: np.ndarray, max_weight: float) -> np.ndarray:
    """No weight above ``max_weight``; what is cut goes to the others in proportion while they have room."""
    w = np.clip(np.asarray(w, dtype=np.float64), 0.0, None)
    for _ in range(len(w) + 1):
        over = w > max_weight + 1e-12
        if not over.any():
            break
        excess = float((w[over] - max_weight).sum())
        w[over] = max_weight
        room = (~over) & (w > 0) & (w < max_weight)
        if not room.any():
            break
        w[room] += excess * w[room] / w[room].sum()
    return np.minimum(w, max_weight)


def bounded(new: np.ndarray, old: np.ndarray, max_turnover: float) -> np.ndarray:
    """Move from ``old`` toward ``new`` by at most ``max_turnover`` (sum of |change|)."""
    step = new - old
    turnover = float(np.abs(step).sum())
    return new if turnover <= max_turnover else old + step * (max_turnover / turnover)


def within_leverage(w: np.ndarray, leverages: np.ndarray, account_cap: float | None) -> np.ndarray:
    """Scale every weight down when the sizing's leverages, so weighted, could exceed the account's cap."""
    if account_cap is None:
        return w
    reach = float((w * leverages).sum())
    return w * (account_cap / reach) if reach > account_cap else w


def allocate(r: np.ndarray, old: np.ndarray, method: str, max_weight: float, max_turnover: float,
             max_correlation: float = 0.7) -> np.ndarray:
    """One rebalance: the method's target, capped, then at most ``max_turnover`` away from ``old`` (the first
    allocation, from nothing, is not bounded)."""
    if not np.any(old):
        return capped(target(r, method, max_correlation), max_weight)
    return bounded(capped(target(r, method, max_correlation), max_weight), old, max_turnover)


@dataclass
class Backtest:
    method: str
    returns: np.ndarray  # the allocated account's daily returns, out of sample
    turnover: float  # mean per rebalance

    @property
    def sharpe(self) -> float:
        r = self.returns
        return float(r.mean() / r.std(ddof=1) * math.sqrt(365)) if len(r) > 1 and r.std(ddof=1) > 0 else math.nan

    @property
    def max_drawdown(self) -> float:
        e = np.cumprod(1.0 + self.returns)
        return float(np.max(1.0 - e / np.maximum.accumulate(e))) if len(e) else 0.0

    @property
    def total_return(self) -> float:
        return float(np.prod(1.0 + self.returns) - 1.0)


def walk_forward(r: np.ndarray, method: str, lookback: int, every: int, max_weight: float, max_turnover: float,
                 max_correlation: float = 0.7) -> Backtest:
    """Rebalance every ``every`` days from day ``lookback`` on, each time from the trailing ``lookback``
    days only; the weights of a rebalance earn the days after it, never the days they were fitted on.
    Weights drift with their systems' returns between rebalances, as an account's would."""
    n_days, n = r.shape
    w = np.zeros(n)
    out, turns = [], []
    for t in range(lookback, n_days):
        if (t - lookback) % every == 0:
            new = allocate(r[t - lookback:t], w, method, max_weight, max_turnover, max_correlation)
            turns.append(float(np.abs(new - w).sum()))
            w = new
        day = float((w * r[t]).sum())
        out.append(day)
        grown = w * (1.0 + r[t])
        total = 1.0 + day
        w = grown / total if total > 0 else grown
    return Backtest(method, np.asarray(out), float(np.mean(turns)) if turns else 0.0)


def compare(r: np.ndarray, oos_from: int, lookback: int, every: int, max_weight: float, max_turnover: float,
            max_correlation: float = 0.7) -> dict[str, Backtest]:
    """Every method walk-forward on the same daily returns, scored on the days from ``oos_from`` on (the
    lookback before them may reach back into the days the pool was chosen on: weights at a day read only
    the days before it)."""
    start = max(0, oos_from - lookback)
    return {m: walk_forward(r[start:], m, lookback, every, max_weight, max_turnover, max_correlation) for m in METHODS}


def pool_from_sweeps(tracker, mem, jobs: list[str], per_symbol: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A pool of systems from sweep jobs: each job's best ``per_symbol`` trials per symbol by their score
    (on the window the sweep ran them on), each run over the whole stored history; their daily returns on
    the days every one of them covers. Returns (labels, UTC days, days x systems returns)."""
    import json

    from tradebus.configs.schema import parse_config
    from tradebus.engine.market import load_market
    from tradebus.factory import sim
    from tradebus.factory.lifecycle import daily_returns
    from tradebus.factory.validation import history, span_window

    labels, series = [], []
    for job in jobs:
        for exp in tracker.top(10_000, validated_only=False, job=job):
            if sum(lab.startswith(f"{job}:{exp['symbol']}:") for lab in labels) >= per_symbol:
                continue
            config = parse_config(json.loads(exp["config"]), f"experiment {exp['id']}")
            k = sim.run_kernel(config, load_market(config, span_window(*history(config, mem)), mem))
            labels.append(f"{job}:{exp['symbol']}:{config.strategy.id}:{exp['id'][:8]}")
            series.append(daily_returns(k.times, k.curve[:, 2]))
    days = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return labels, np.array(days), np.array([[s[d] for s in series] for d in days])
