"""Technical indicators over whole series, computed once per run (numba / numpy).

Every indicator is causal: the value at index i uses inputs at indices <= i only, so a decision at the
close of bar i may read it (tests change the future and check nothing at or before i moves). Values
before an indicator has enough history are NaN. Conventions follow TA-Lib (seeding, Wilder smoothing,
population standard deviation) so they can be checked against it; CHOP and VWAP, which TA-Lib lacks,
are checked against their direct formulas.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from tradebus.components.timeframes import DAY

_jit = nb.njit(cache=True, nogil=True)


@_jit
def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average (running sum, as TA-Lib)."""
    out = np.full(x.shape[0], np.nan)
    if n < 1 or x.shape[0] < n:
        return out
    s = 0.0
    for i in range(n):
        s += x[i]
    out[n - 1] = s / n
    for i in range(n, x.shape[0]):
        s += x[i] - x[i - n]
        out[i] = s / n
    return out


@_jit
def ema(x: np.ndarray, n: int) -> np.ndarray:
    """Exponential moving average, alpha = 2 / (n + 1), seeded with the SMA of the first n values."""
    out = np.full(x.shape[0], np.nan)
    if n < 1 or x.shape[0] < n:
        return out
    alpha = 2.0 / (n + 1)
    s = 0.0
    for i in range(n):
        s += x[i]
    prev = s / n
    out[n - 1] = prev
    for i in range(n, x.shape[0]):
        prev = (x[i] - prev) * alpha + prev
        out[i] = prev
    return out


@_jit
def _ema_from(x: np.ndarray, n: int, start: int) -> np.ndarray:
    """EMA over x[start:], NaN before; x must be finite from ``start``."""
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] - start < n:
        return out
    seg = ema(x[start:], n)
    out[start:] = seg
    return out


@_jit
def rsi(close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI (first value at index n, seeded with simple averages of the first n changes)."""
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] <= n:
        return out
    gain = 0.0
    loss = 0.0
    for i in range(1, n + 1):
        d = close[i] - close[i - 1]
        if d > 0:
            gain += d
        else:
            loss -= d
    gain /= n
    loss /= n
    out[n] = 100.0 * gain / (gain + loss) if gain + loss != 0 else 0.0
    for i in range(n + 1, close.shape[0]):
        d = close[i] - close[i - 1]
        g = d if d > 0 else 0.0
        l = -d if d < 0 else 0.0
        gain = (gain * (n - 1) + g) / n
        loss = (loss * (n - 1) + l) / n
        out[i] = 100.0 * gain / (gain + loss) if gain + loss != 0 else 0.0
    return out


@_jit
def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """True range; NaN at index 0 (no previous close)."""
    out = np.full(high.shape[0], np.nan)
    for i in range(1, high.shape[0]):
        out[i] = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
    return out


@_jit
def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's average true range (first value at index n)."""
    tr = true_range(high, low, close)
    out = np.full(high.shape[0], np.nan)
    if high.shape[0] <= n:
        return out
    s = 0.0
    for i in range(1, n + 1):
        s += tr[i]
    prev = s / n
    out[n] = prev
    for i in range(n + 1, high.shape[0]):
        prev = (prev * (n - 1) + tr[i]) / n
        out[i] = prev
    return out


@_jit
def macd(close: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD line (EMA fast - EMA slow), signal line (EMA of MACD), histogram."""
    line = ema(close, fast) - ema(close, slow)
    sig = _ema_from(line, signal, slow - 1)
    return line, sig, line - sig


@_jit
def bollinger(close: np.ndarray, n: int, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands: SMA(n) +/- k population standard deviations."""
    mid = sma(close, n)
    upper = np.full(close.shape[0], np.nan)
    lower = np.full(close.shape[0], np.nan)
    for i in range(n - 1, close.shape[0]):
        m = mid[i]
        v = 0.0
        for j in range(i - n + 1, i + 1):
            v += (close[j] - m) ** 2
        sd = math.sqrt(v / n)
        upper[i] = m + k * sd
        lower[i] = m - k * sd
    return upper, mid, lower


@_jit
def rolling_max(x: np.ndarray, n: int) -> np.ndarray:
    """Highest value of the last n (monotonic deque, O(len))."""
    out = np.full(x.shape[0], np.nan)
    idx = np.empty(x.shape[0], dtype=np.int64)
    head = 0
    tail = 0
    for i in range(x.shape[0]):
        while tail > head and x[idx[tail - 1]] <= x[i]:
            tail -= 1
        idx[tail] = i
        tail += 1
        if idx[head] <= i - n:
            head += 1
        if i >= n - 1:
            out[i] = x[idx[head]]
    return out


@_jit
def rolling_min(x: np.ndarray, n: int) -> np.ndarray:
    """Lowest value of the last n."""
    return -rolling_max(-x, n)


@_jit
def donchian(high: np.ndarray, low: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Donchian channel: highest high and lowest low of the last n bars, and their midpoint."""
    up = rolling_max(high, n)
    lo = rolling_min(low, n)
    return up, (up + lo) / 2.0, lo


@_jit
def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wilder's ADX with +DI and -DI (TA-Lib's seeding: first ADX at index 2n - 1)."""
    size = high.shape[0]
    adx_out = np.full(size, np.nan)
    pdi_out = np.full(size, np.nan)
    mdi_out = np.full(size, np.nan)
    if size < 2 * n:
        return adx_out, pdi_out, mdi_out
    pdm_s = 0.0
    mdm_s = 0.0
    tr_s = 0.0
    dx_sum = 0.0
    adx_prev = 0.0
    for i in range(1, size):
        up = high[i] - high[i - 1]
        down = low[i - 1] - low[i]
        pdm = up if (up > down and up > 0) else 0.0
        mdm = down if (down > up and down > 0) else 0.0
        tr = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        if i < n:
            pdm_s += pdm
            mdm_s += mdm
            tr_s += tr
            continue
        pdm_s = pdm_s - pdm_s / n + pdm
        mdm_s = mdm_s - mdm_s / n + mdm
        tr_s = tr_s - tr_s / n + tr
        pdi = 100.0 * pdm_s / tr_s if tr_s != 0 else 0.0
        mdi = 100.0 * mdm_s / tr_s if tr_s != 0 else 0.0
        pdi_out[i] = pdi
        mdi_out[i] = mdi
        dx = 100.0 * abs(pdi - mdi) / (pdi + mdi) if pdi + mdi != 0 else 0.0
        if i < 2 * n - 1:
            dx_sum += dx
        elif i == 2 * n - 1:
            adx_prev = (dx_sum + dx) / n
            adx_out[i] = adx_prev
        else:
            adx_prev = (adx_prev * (n - 1) + dx) / n
            adx_out[i] = adx_prev
    return adx_out, pdi_out, mdi_out


@_jit
def chop(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """Choppiness index: 100 * log10(sum of true range over n / (highest high - lowest low)) / log10(n)."""
    tr = true_range(high, low, close)
    tr[0] = high[0] - low[0]
    hh = rolling_max(high, n)
    ll = rolling_min(low, n)
    out = np.full(high.shape[0], np.nan)
    s = 0.0
    for i in range(high.shape[0]):
        s += tr[i]
        if i >= n:
            s -= tr[i - n]
        if i >= n:  # needs n true ranges with a previous close
            rng = hh[i] - ll[i]
            out[i] = 100.0 * math.log10(s / rng) / math.log10(n) if rng > 0 else np.nan
    return out


@_jit
def stoch_rsi(close: np.ndarray, rsi_n: int, stoch_n: int, k_smooth: int, d_smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic RSI in [0, 100]: %K = SMA(k_smooth) of the stochastic of RSI over stoch_n; %D = SMA of %K."""
    r = rsi(close, rsi_n)
    hi = rolling_max(r, stoch_n)
    lo = rolling_min(r, stoch_n)
    raw = np.full(close.shape[0], np.nan)
    for i in range(close.shape[0]):
        if not (math.isnan(hi[i]) or math.isnan(lo[i])):
            raw[i] = 100.0 * (r[i] - lo[i]) / (hi[i] - lo[i]) if hi[i] > lo[i] else 0.0
    start = rsi_n + stoch_n - 1
    k = raw.copy() if k_smooth <= 1 else _sma_from(raw, k_smooth, start)
    d = _sma_from(k, d_smooth, start + max(k_smooth, 1) - 1)
    return k, d


@_jit
def _sma_from(x: np.ndarray, n: int, start: int) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] - start >= n:
        out[start:] = sma(x[start:], n)
    return out


@_jit
def obv(close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """On-balance volume (TA-Lib: starts at the first bar's volume)."""
    out = np.empty(close.shape[0])
    if close.shape[0] == 0:
        return out
    acc = volume[0]
    out[0] = acc
    for i in range(1, close.shape[0]):
        if close[i] > close[i - 1]:
            acc += volume[i]
        elif close[i] < close[i - 1]:
            acc -= volume[i]
        out[i] = acc
    return out


@_jit
def _vwap(open_time: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
          session: int) -> np.ndarray:
    out = np.full(close.shape[0], np.nan)
    pv = 0.0
    v = 0.0
    day = -1
    for i in range(close.shape[0]):
        d = open_time[i] // session
        if d != day:
            day = d
            pv = 0.0
            v = 0.0
        typical = (high[i] + low[i] + close[i]) / 3.0
        pv += typical * volume[i]
        v += volume[i]
        out[i] = pv / v if v > 0 else typical
    return out


def vwap(open_time: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
         session_ns: int = DAY) -> np.ndarray:
    """Session VWAP of the typical price, reset at each UTC session start (daily by default)."""
    return _vwap(open_time.astype(np.int64), high, low, close, volume, session_ns)
