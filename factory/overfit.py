"""Selection statistics: how much of a sweep's best result is luck.

- The **deflated Sharpe ratio** (Bailey & López de Prado, "The Deflated Sharpe Ratio", JPM 2014): the
  probability that the true Sharpe ratio of the chosen trial exceeds the best one expected from N trials
  of pure noise, allowing for the skewness and fat tails of its returns and the length of its record.
- The **probability of backtest overfitting** (Bailey, Borwein, López de Prado & Zhu, "The Probability of
  Backtest Overfitting", J. Computational Finance 2017), by combinatorially symmetric cross-validation:
  split time into S blocks; for every choice of S/2 blocks as in-sample, pick the trial with the best
  in-sample Sharpe and see where it ranks among all trials on the other half. PBO is the share of
  splits in which the in-sample winner lands in the bottom half out of sample.

Pure functions on numbers: the sweep stores, per trial and time block, the bar count and the sum and
sum of squares of the bar returns, from which the Sharpe ratio of any union of blocks follows exactly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

EULER_GAMMA = 0.5772156649015329


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """The Sharpe ratio the best of ``n_trials`` skill-less trials is expected to show (per period, like
    ``sr_variance``, the variance of the trials' Sharpe ratios): the DSR's benchmark SR0."""
    if n_trials <= 1 or sr_variance <= 0:
        return 0.0
    return math.sqrt(sr_variance) * ((1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials)
                                    + EULER_GAMMA * norm.ppf(1 - 1 / (n_trials * math.e)))


def probabilistic_sharpe(sr: float, benchmark: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """P(true Sharpe > benchmark) given an observed per-period Sharpe over ``n_obs`` returns with this
    skewness and (non-excess) kurtosis; a normal distribution has kurtosis 3."""
    if n_obs < 2 or not math.isfinite(sr):
        return math.nan
    spread = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if spread <= 0:
        return math.nan
    return float(norm.cdf((sr - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(spread)))


def deflated_sharpe(sr: float, n_obs: int, skew: float, kurtosis: float, n_trials: int, sr_variance: float) -> float:
    """DSR: the probabilistic Sharpe ratio against the expected maximum of ``n_trials`` noise trials."""
    return probabilistic_sharpe(sr, expected_max_sharpe(n_trials, sr_variance), n_obs, skew, kurtosis)


def moments(returns: np.ndarray) -> tuple[float, float, float]:
    """(per-period Sharpe with ddof=1, skewness, non-excess kurtosis) of a return series."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        return math.nan, math.nan, math.nan
    mean, sd = r.mean(), r.std(ddof=1)
    centred = r - mean
    m2 = float(np.mean(centred ** 2))
    if sd == 0 or m2 == 0:
        return math.nan, 0.0, 3.0
    return float(mean / sd), float(np.mean(centred ** 3) / m2 ** 1.5), float(np.mean(centred ** 4) / m2 ** 2)


@dataclass(frozen=True)
class PboResult:
    pbo: float  # share of splits whose in-sample winner ranks in the bottom half out of sample
    prob_oos_loss: float  # share of splits whose in-sample winner has a negative out-of-sample Sharpe
    logits: np.ndarray  # one per split: ln(w / (1 - w)) of the winner's relative out-of-sample rank w
    splits: int
    trials: int
    blocks: int


def _sharpe(n: np.ndarray, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-bar Sharpe (ddof=1) from pooled bar counts, sums and sums of squares; flat or empty is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (q - s * s / n) / (n - 1)
        sr = (s / n) / np.sqrt(var)
    # A flat trial (no position, or too few bars) has no edge: rank it at zero, not at NaN.
    return np.where((n > 1) & (var > 1e-300), sr, 0.0)


def pbo_cscv(block_stats: np.ndarray, *, chunk: int = 512) -> PboResult:
    """PBO of choosing the best of N trials, from their block statistics ``(N, S, 3)``: per trial and
    time block the number of bar returns, their sum and their sum of squares. S must be even."""
    stats = np.asarray(block_stats, dtype=np.float64)
    if stats.ndim != 3 or stats.shape[2] != 3:
        raise ValueError(f"block statistics must be shaped (trials, blocks, 3), got {stats.shape}")
    n_trials, n_blocks, _ = stats.shape
    if n_trials < 2:
        raise ValueError("PBO compares trials: it needs at least two")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"CSCV splits time into an even number of blocks, got {n_blocks}")
    bars, sums, squares = (stats[:, :, k].T for k in range(3))  # each (S, N)
    totals = bars.sum(0), sums.sum(0), squares.sum(0)
    masks = np.array([np.isin(np.arange(n_blocks), c) for c in itertools.combinations(range(n_blocks), n_blocks // 2)],
                     dtype=np.float64)
    logits, losses = [], []
    for lo in range(0, len(masks), chunk):
        m = masks[lo:lo + chunk]
        ins = [m @ x for x in (bars, sums, squares)]  # (C, N)
        sr_in = _sharpe(*ins)
        sr_out = _sharpe(*(t - i for t, i in zip(totals, ins)))
        best = np.argmax(sr_in, axis=1)
        winner = sr_out[np.arange(len(m)), best][:, None]
        # Rank 1..N of the winner among all trials out of sample (ties share the middle rank).
        rank = (sr_out < winner).sum(1) + ((sr_out == winner).sum(1) + 1) / 2
        w = rank / (n_trials + 1)
        logits.append(np.log(w / (1 - w)))
        losses.append(winner[:, 0] < 0)
    lam = np.concatenate(logits)
    return PboResult(float(np.mean(lam <= 0)), float(np.mean(np.concatenate(losses))), lam, len(lam), n_trials,
                     n_blocks)


def min_track_record(sr: float, benchmark: float, skew: float, kurtosis: float, alpha: float = 0.05) -> float:
    """Minimum track record length (Bailey & López de Prado 2012): how many returns, at this per-period
    Sharpe, skewness and (non-excess) kurtosis, before the Sharpe is above ``benchmark`` with confidence
    1 - alpha; infinite when it is not above the benchmark at all."""
    if not (math.isfinite(sr) and sr > benchmark):
        return math.inf
    spread = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    return 1.0 + spread * (norm.ppf(1 - alpha) / (sr - benchmark)) ** 2
