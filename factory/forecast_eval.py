"""Scores for forecasts and the classical baselines a forecasting layer must beat, on an H-bar horizon.

Targets per bar t: the forward return ``close[t+H]/close[t] - 1``, the forward realised volatility
``sqrt(sum of squared 1-bar log returns over t+1..t+H)`` and a regime class in ``0..K-1``; NaN (returns,
variances) and -1 (classes) mark rows without a target and are left out of every score.

- Return forecasts: Pearson and Spearman information coefficients, per calendar month and their IR.
- Variance forecasts: QLIKE (Patton, "Volatility forecast comparison using imperfect volatility proxies",
  J. Econometrics 2011), robust to noise in the realised-variance proxy, and RMSE.
- Class probabilities: multiclass Brier score and its skill, log loss, classwise calibration error.

Baselines forecast at bar t from data up to and including bar t only, with parameters fitted only on the
training rows given: momentum, RiskMetrics EWMA, GARCH(1,1) (through ``arch``), HAR-RV (Corsi, "A Simple
Approximate Long-Memory Model of Realized Volatility", J. Financial Econometrics 2009), the class base rate and
a first-order Markov chain of regimes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

MIN_MONTH_ROWS = 10  # a month with fewer scored rows gives an IC too noisy to count
EWMA_WARMUP = 30  # returns averaged to seed the EWMA; its forecasts start after them
# arch seeds the GARCH recursion ("backcast") with an average of the first 75 squared returns of the sample it
# filters: a forecast made before the 75th return would see later returns through that seed.
ARCH_BACKCAST_OBS = 75


# ---------------------------------------------------------------------------------------------------------------
# Return forecasts


def _pairs(pred: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows where both the prediction and the realisation are finite."""
    p, r = np.asarray(pred, dtype=np.float64), np.asarray(real, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"pred and real differ in shape: {p.shape} vs {r.shape}")
    ok = np.isfinite(p) & np.isfinite(r)
    return p[ok], r[ok]


def _varies(x: np.ndarray) -> bool:
    """Whether a series takes more than one value (a correlation with a constant is undefined)."""
    return len(x) >= 2 and bool(np.any(x != x[0]))


def ic(pred: np.ndarray, real: np.ndarray) -> float:
    """Pearson correlation of predictions and realisations over their finite rows; nan if undefined."""
    p, r = _pairs(pred, real)
    if not (_varies(p) and _varies(r)):
        return math.nan
    p, r = p - p.mean(), r - r.mean()
    return float(np.dot(p, r) / math.sqrt(np.dot(p, p) * np.dot(r, r)))


def rank_ic(pred: np.ndarray, real: np.ndarray) -> float:
    """Spearman rank correlation of predictions and realisations over their finite rows; nan if undefined."""
    p, r = _pairs(pred, real)
    # Checked here: scipy warns and returns nan on a constant input, and the warning would be noise.
    if not (_varies(p) and _varies(r)):
        return math.nan
    return float(spearmanr(p, r).statistic)


def month_keys(times_ns: np.ndarray) -> np.ndarray:
    """Calendar month (UTC) of epoch-nanosecond times as ``yyyymm`` integers, e.g. 202403."""
    months = np.asarray(times_ns, dtype=np.int64).astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64)
    return (months // 12 + 1970) * 100 + months % 12 + 1


def monthly_ic(times_ns: np.ndarray, pred: np.ndarray,
               real: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(month keys ``yyyymm``, Pearson IC, rank IC) per UTC calendar month with >= ``MIN_MONTH_ROWS`` finite rows."""
    keys = month_keys(times_ns)
    p, r = np.asarray(pred, dtype=np.float64), np.asarray(real, dtype=np.float64)
    if not keys.shape == p.shape == r.shape:
        raise ValueError(f"times, pred and real differ in shape: {keys.shape}, {p.shape}, {r.shape}")
    ok = np.isfinite(p) & np.isfinite(r)
    keys, p, r = keys[ok], p[ok], r[ok]
    months, counts = np.unique(keys, return_counts=True)
    months = months[counts >= MIN_MONTH_ROWS]
    ics = np.array([ic(p[keys == m], r[keys == m]) for m in months], dtype=np.float64)
    rank_ics = np.array([rank_ic(p[keys == m], r[keys == m]) for m in months], dtype=np.float64)
    return months.astype(np.int64), ics, rank_ics


def icir(values: np.ndarray) -> float:
    """Mean over std (ddof=1) of per-period ICs (nan ones left out); nan under two periods or a zero std."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    # Equal values are checked directly: their float std can come out as 1e-17 rather than 0.
    if not _varies(v):
        return math.nan
    return float(np.mean(v) / np.std(v, ddof=1))


def share_positive(values: np.ndarray) -> float:
    """Share of the finite values that are strictly positive; nan if there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.mean(v > 0)) if len(v) else math.nan


# ---------------------------------------------------------------------------------------------------------------
# Variance forecasts


def qlike(var_real: np.ndarray, var_fc: np.ndarray) -> float:
    """Mean QLIKE ``r/f - log(r/f) - 1`` of variance forecasts f vs realised r; rows with r <= 0 or f <= 0 excluded."""
    # Excluded rather than clipped: the log is undefined there, and a zero realised variance (a flat market or
    # missing trades) is a data problem, not a forecast error.
    r, f = _pairs(var_real, var_fc)
    ok = (r > 0) & (f > 0)
    if not ok.any():
        return math.nan
    ratio = r[ok] / f[ok]
    return float(np.mean(ratio - np.log(ratio) - 1.0))


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean squared difference over the rows where both are finite; nan if there are none."""
    x, y = _pairs(a, b)
    return float(np.sqrt(np.mean((x - y) ** 2))) if len(x) else math.nan


# ---------------------------------------------------------------------------------------------------------------
# Class probabilities


def _scored(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows with a label in 0..K-1 and finite probabilities (K = the number of columns)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"probs must be (n, K) and labels (n,), got {p.shape} and {y.shape}")
    ok = (y >= 0) & (y < p.shape[1]) & np.isfinite(p).all(axis=1)
    return p[ok], y[ok].astype(np.int64)


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of the sum over classes of (prob - outcome)^2, in [0, 2]."""
    p, y = _scored(probs, labels)
    if not len(y):
        return math.nan
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def brier_skill(model: float, reference: float) -> float:
    """Brier skill score ``1 - model/reference``: > 0 when the model beats the reference; nan if undefined."""
    if not (math.isfinite(model) and math.isfinite(reference)) or reference == 0:
        return math.nan
    return 1.0 - model / reference


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log probability of the realised class, probabilities clipped to [eps, 1] and renormalised."""
    p, y = _scored(probs, labels)
    if not len(y):
        return math.nan
    # Clipped so one confident miss costs about -log(eps) instead of infinity and a whole fold's score.
    p = np.clip(p, eps, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Classwise ECE: per class, row-weighted |mean prob - hit rate| over equal-width prob bins; mean over classes."""
    p, y = _scored(probs, labels)
    if not len(y):
        return math.nan
    n, k = p.shape
    errors = []
    for c in range(k):
        pc, hit = p[:, c], (y == c).astype(np.float64)
        # Probability 1 belongs in the top bin, not in a bin of its own.
        b = np.minimum((pc * bins).astype(np.int64), bins - 1).clip(0)
        count = np.bincount(b, minlength=bins)
        gap = np.abs(np.bincount(b, pc, minlength=bins) - np.bincount(b, hit, minlength=bins))
        # sum_b (n_b/n) * |sum_pred_b/n_b - sum_hit_b/n_b| = sum_b |sum_pred_b - sum_hit_b| / n
        errors.append(float(gap[count > 0].sum() / n))
    return float(np.mean(errors))


# ---------------------------------------------------------------------------------------------------------------
# Baselines: returns


def momentum(close: np.ndarray, horizon: int) -> np.ndarray:
    """The past H-bar return ``close[t]/close[t-H] - 1`` as the forecast of the next H-bar return (NaN for t < H)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.shape, np.nan)
    out[horizon:] = c[horizon:] / c[:-horizon] - 1.0
    return out


# ---------------------------------------------------------------------------------------------------------------
# Baselines: variance of the next H bars (in squared log-return units)


def ewma_variance(logret: np.ndarray, horizon: int, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics H-bar variance ``H*sigma2_t``; NaN at NaN returns (skipped) and the first 30 valid ones (warm-up)."""
    # sigma2_t = lam*sigma2_{t-1} + (1-lam)*r_t^2 takes in r_t: it is known at bar t's close.
    r = np.asarray(logret, dtype=np.float64)
    out = np.full(r.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(r))
    if len(idx) <= EWMA_WARMUP:
        return out
    # The seed is the mean square of the first EWMA_WARMUP returns: it is known only after the last of them,
    # so the recursion (and the forecasts) begin with the next return.
    sigma2 = float(np.mean(r[idx[:EWMA_WARMUP]] ** 2))
    for i in idx[EWMA_WARMUP:]:
        sigma2 = lam * sigma2 + (1.0 - lam) * r[i] * r[i]
        out[i] = horizon * sigma2
    return out


def _block(mask: np.ndarray) -> tuple[int, int]:
    """(first, last + 1) of the True run of a mask that must be one contiguous block."""
    where = np.flatnonzero(mask)
    if not len(where):
        raise ValueError("the training mask selects no row")
    if where[-1] - where[0] + 1 != len(where):
        raise ValueError("the training rows must form one contiguous block")
    return int(where[0]), int(where[-1]) + 1


def garch_variance(logret: np.ndarray, train_mask: np.ndarray, horizon: int) -> np.ndarray:
    """GARCH(1,1) H-bar variance at each bar from returns up to it, fitted on the training block; NaN in warm-up."""
    # Zero mean, normal errors. The parameters come from the contiguous training block only; the filter then runs
    # over the whole series. NaN at NaN returns (skipped) and at the first ARCH_BACKCAST_OBS - 1 valid returns.
    # Imported here so the rest of the module (the metrics) does not need arch.
    from arch import arch_model

    r = np.asarray(logret, dtype=np.float64)
    train = np.asarray(train_mask, dtype=bool)
    if train.shape != r.shape:
        raise ValueError(f"logret and train_mask differ in shape: {r.shape} vs {train.shape}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    out = np.full(r.shape, np.nan)
    valid = np.isfinite(r)
    idx = np.flatnonzero(valid)
    first, stop = _block(train[valid])  # the block, in positions among the valid returns
    y = r[idx]
    # arch's optimiser expects returns of unit order (it warns about the scale of hourly returns ~1e-2); scale by
    # the training RMS, which the fit is allowed to see, and scale the variances back.
    scale = 1.0 / math.sqrt(float(np.mean(y[first:stop] ** 2)))
    model = arch_model(y * scale, mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    fitted = model.fit(first_obs=first, last_obs=stop, disp="off")
    # fix() resets the model's sample to the whole series and keeps the trained parameters; its forecast row t
    # (origin alignment) is the path of conditional variances for t+1..t+H given the returns up to and including
    # t, whatever arch's docstring says about y[:t]. The fitted result's own forecast would start at the training
    # block and leave any bars before it out.
    fixed = model.fix(fitted.params.to_numpy())
    paths = fixed.forecast(horizon=horizon, start=0, reindex=False, method="analytic").variance.to_numpy()
    h_var = paths.sum(axis=1) / scale ** 2
    # The recursion starts from arch's backcast, an average of the first ARCH_BACKCAST_OBS squared returns of the
    # series; row i depends only on returns 0..max(i, ARCH_BACKCAST_OBS - 1), so earlier rows would look ahead.
    # (arch also clamps the recursion to bounds from whole-series statistics, but they are a factor 1e6 around an
    # EWMA and never bind for a fitted GARCH: the tests check later returns leave earlier forecasts bit-identical.)
    h_var[:ARCH_BACKCAST_OBS - 1] = np.nan
    out[idx] = h_var
    return out


def har_variance(rv_past_h: np.ndarray, rv_past_5h: np.ndarray, rv_past_22h: np.ndarray, target_var: np.ndarray,
                 train_mask: np.ndarray) -> np.ndarray:
    """Log HAR-RV forecast of the next H bars' realised variance, fitted on the training rows, smearing-corrected."""
    # Regress log(target) on [1, log RV of the last H, 5H/5, 22H/22 bars] by OLS; forecast exp(fit) * mean(exp(
    # residual)) (Duan 1983): exp of the mean log is below the mean. NaN where a regressor is missing or <= 0. The
    # caller purges training rows whose target reaches into the evaluation period.
    xs = [np.asarray(a, dtype=np.float64) for a in (rv_past_h, rv_past_5h, rv_past_22h)]
    y = np.asarray(target_var, dtype=np.float64)
    train = np.asarray(train_mask, dtype=bool)
    if not xs[0].shape == xs[1].shape == xs[2].shape == y.shape == train.shape:
        raise ValueError("rv_past_h, rv_past_5h, rv_past_22h, target_var and train_mask must align")
    # Longer windows are scaled to H bars so all three regressors are in the same units as the target.
    xs = [xs[0], xs[1] / 5.0, xs[2] / 22.0]
    usable = np.logical_and.reduce([np.isfinite(x) & (x > 0) for x in xs])
    design = np.ones((len(y), 4))
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, x in enumerate(xs, start=1):
            design[:, j] = np.where(usable, np.log(x), np.nan)
        log_y = np.log(y)
    fit = train & usable & np.isfinite(y) & (y > 0)
    if fit.sum() < design.shape[1]:
        raise ValueError(f"HAR needs at least {design.shape[1]} usable training rows, got {int(fit.sum())}")
    coef, *_ = np.linalg.lstsq(design[fit], log_y[fit], rcond=None)
    smear = float(np.mean(np.exp(log_y[fit] - design[fit] @ coef)))
    out = np.full(y.shape, np.nan)
    out[usable] = np.exp(design[usable] @ coef) * smear
    return out


# ---------------------------------------------------------------------------------------------------------------
# Baselines: regime probabilities


def base_rate(train_labels: np.ndarray, k: int = 4) -> np.ndarray:
    """Class frequencies of the training labels in 0..k-1 (-1 ignored), add-one smoothed so none is 0."""
    y = np.asarray(train_labels)
    y = y[(y >= 0) & (y < k)].astype(np.int64)
    return (np.bincount(y, minlength=k) + 1.0) / (len(y) + k)


def markov_persistence(train_prev: np.ndarray, train_next: np.ndarray, test_prev: np.ndarray,
                       k: int = 4) -> np.ndarray:
    """(n_test, k) rows of P(next | previous window's regime) from train transitions, add-one smoothed."""
    # A test row with no previous regime (-1) gets the base rate of the training ``next`` labels.
    prev, nxt = np.asarray(train_prev), np.asarray(train_next)
    if prev.shape != nxt.shape:
        raise ValueError(f"train_prev and train_next differ in shape: {prev.shape} vs {nxt.shape}")
    ok = (prev >= 0) & (prev < k) & (nxt >= 0) & (nxt < k)
    counts = np.zeros((k, k))
    np.add.at(counts, (prev[ok].astype(np.int64), nxt[ok].astype(np.int64)), 1.0)
    transition = (counts + 1.0) / (counts.sum(axis=1, keepdims=True) + k)
    test = np.asarray(test_prev).astype(np.int64)
    known = (test >= 0) & (test < k)
    out = np.tile(base_rate(nxt, k), (len(test), 1))
    out[known] = transition[test[known]]
    return out
