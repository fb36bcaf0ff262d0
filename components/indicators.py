"""Technical indicators as streaming state machines: one bar in, the values at its close out (numba).

Each indicator is a state (a numpy record with named fields, plus ring buffers where it needs a window)
and a step that takes one bar's input and returns the indicator at that bar. The whole-series functions
(``sma(x, n)`` ...) are the very same step run in a loop from a fresh state, so a replay that computes a
series at once, a daemon that updates one bar at a time and the sweep kernel all run one implementation
and cannot drift apart. Runners (``*_run``) advance a given state over a batch of bars and write each
bar's values, which is both how a series is computed and how a live bar (a batch of one) is added.

Every indicator is causal: the value at index i uses inputs at indices <= i only. Values before an
indicator has enough history are NaN. Conventions follow TA-Lib (seeding, Wilder smoothing, population
standard deviation) so they can be checked against it; CHOP and VWAP, which TA-Lib lacks, are checked
against their direct formulas.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from tradebus.components.timeframes import DAY

_jit = nb.njit(cache=True, nogil=True)
_i8, _f8 = np.int64, np.float64

# --- states: named fields (records), ring buffers beside them -------------------------------------------

WINDOW = np.dtype([("n", _i8), ("count", _i8), ("sum", _f8)])  # SMA; rolling sums
SMOOTH = np.dtype([("n", _i8), ("count", _i8), ("sum", _f8), ("prev", _f8)])  # EMA; Wilder ATR
RSI = np.dtype([("n", _i8), ("count", _i8), ("prev_close", _f8), ("gain", _f8), ("loss", _f8)])
ATR = np.dtype([("n", _i8), ("count", _i8), ("prev_close", _f8), ("sum", _f8), ("prev", _f8)])
DEQUE = np.dtype([("n", _i8), ("count", _i8), ("head", _i8), ("size", _i8)])  # rolling max (monotonic deque)
ADX = np.dtype([("n", _i8), ("count", _i8), ("prev_high", _f8), ("prev_low", _f8), ("prev_close", _f8),
                ("pdm", _f8), ("mdm", _f8), ("tr", _f8), ("dx_sum", _f8), ("adx", _f8)])
CHOP = np.dtype([("n", _i8), ("count", _i8), ("prev_close", _f8), ("tr_sum", _f8)])
OBV = np.dtype([("count", _i8), ("prev_close", _f8), ("acc", _f8)])
VWAP = np.dtype([("session", _i8), ("day", _i8), ("pv", _f8), ("v", _f8)])


@_jit
def _record(dtype, n):
    st = np.zeros(1, dtype=dtype)
    st[0].n = n
    return st


# --- simple moving average ----------------------------------------------------------------------------


@_jit
def sma_state(n):
    """(state, ring) of an SMA over n values."""
    return _record(WINDOW, n), np.zeros(max(n, 1))


@_jit
def sma_step(s, ring, x):
    """Running sum, as TA-Lib: the first n values summed in order, then add the new, drop the oldest."""
    n = s.n
    i = s.count
    s.count = i + 1
    if n < 1:
        return np.nan
    if i < n:
        s.sum += x
        ring[i] = x
        return s.sum / n if i + 1 == n else np.nan
    j = i % n
    s.sum += x - ring[j]
    ring[j] = x
    return s.sum / n


@_jit
def sma_run(st, ring, x, out):
    s = st[0]
    for i in range(x.shape[0]):
        out[i] = sma_step(s, ring, x[i])


@_jit
def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average."""
    st, ring = sma_state(n)
    out = np.empty(x.shape[0])
    sma_run(st, ring, x, out)
    return out


# --- exponential moving average ---------------------------------------------------------------------


@_jit
def ema_state(n):
    return _record(SMOOTH, n)


@_jit
def ema_step(s, x):
    """alpha = 2 / (n + 1), seeded with the SMA of the first n values."""
    n = s.n
    i = s.count
    s.count = i + 1
    if n < 1:
        return np.nan
    if i < n:
        s.sum += x
        if i + 1 < n:
            return np.nan
        s.prev = s.sum / n
        return s.prev
    alpha = 2.0 / (n + 1)
    s.prev = (x - s.prev) * alpha + s.prev
    return s.prev


@_jit
def ema_run(st, x, out):
    s = st[0]
    for i in range(x.shape[0]):
        out[i] = ema_step(s, x[i])


@_jit
def ema(x: np.ndarray, n: int) -> np.ndarray:
    """Exponential moving average, seeded with the SMA of the first n values."""
    st = ema_state(n)
    out = np.empty(x.shape[0])
    ema_run(st, x, out)
    return out


# --- RSI ----------------------------------------------------------------------------------------------


@_jit
def rsi_state(n):
    return _record(RSI, n)


@_jit
def rsi_step(s, close):
    """Wilder's RSI: first value once n changes are known, seeded with their simple averages."""
    n = s.n
    i = s.count
    s.count = i + 1
    if i == 0:
        s.prev_close = close
        return np.nan
    d = close - s.prev_close
    s.prev_close = close
    if i <= n:
        if d > 0:
            s.gain += d
        else:
            s.loss -= d
        if i < n:
            return np.nan
        s.gain /= n
        s.loss /= n
    else:
        g = d if d > 0 else 0.0
        l = -d if d < 0 else 0.0
        s.gain = (s.gain * (n - 1) + g) / n
        s.loss = (s.loss * (n - 1) + l) / n
    return 100.0 * s.gain / (s.gain + s.loss) if s.gain + s.loss != 0 else 0.0


@_jit
def rsi_run(st, close, out):
    s = st[0]
    for i in range(close.shape[0]):
        out[i] = rsi_step(s, close[i])


@_jit
def rsi(close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI (first value at index n)."""
    st = rsi_state(n)
    out = np.empty(close.shape[0])
    rsi_run(st, close, out)
    return out


# --- true range, ATR ------------------------------------------------------------------------------------


@_jit
def _tr(h, l, prev_close):
    return max(h - l, abs(h - prev_close), abs(l - prev_close))


@_jit
def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """True range; NaN at index 0 (no previous close)."""
    out = np.full(high.shape[0], np.nan)
    for i in range(1, high.shape[0]):
        out[i] = _tr(high[i], low[i], close[i - 1])
    return out


@_jit
def atr_state(n):
    return _record(ATR, n)


@_jit
def atr_step(s, h, l, c):
    """Wilder's average true range (first value once n true ranges are known)."""
    n = s.n
    i = s.count
    s.count = i + 1
    if i == 0:
        s.prev_close = c
        return np.nan
    tr = _tr(h, l, s.prev_close)
    s.prev_close = c
    if i <= n:
        s.sum += tr
        if i < n:
            return np.nan
        s.prev = s.sum / n
        return s.prev
    s.prev = (s.prev * (n - 1) + tr) / n
    return s.prev


@_jit
def atr_run(st, high, low, close, out):
    s = st[0]
    for i in range(close.shape[0]):
        out[i] = atr_step(s, high[i], low[i], close[i])


@_jit
def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's average true range (first value at index n)."""
    st = atr_state(n)
    out = np.empty(close.shape[0])
    atr_run(st, high, low, close, out)
    return out


# --- MACD ---------------------------------------------------------------------------------------------


@_jit
def macd_state(fast, slow, signal):
    """Three EMA states: fast, slow, and the signal line's (over the MACD line from the slow EMA's first value)."""
    st = np.zeros(3, dtype=SMOOTH)
    st[0].n, st[1].n, st[2].n = fast, slow, signal
    return st


@_jit
def macd_step(st, x):
    line = ema_step(st[0], x) - ema_step(st[1], x)
    sig = ema_step(st[2], line) if st[1].count >= st[1].n else np.nan
    return line, sig, line - sig


@_jit
def macd_run(st, close, line, sig, hist):
    for i in range(close.shape[0]):
        line[i], sig[i], hist[i] = macd_step(st, close[i])


@_jit
def macd(close: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD line (EMA fast - EMA slow), signal line (EMA of MACD), histogram."""
    st = macd_state(fast, slow, signal)
    n = close.shape[0]
    line, sig, hist = np.empty(n), np.empty(n), np.empty(n)
    macd_run(st, close, line, sig, hist)
    return line, sig, hist


# --- Bollinger bands -----------------------------------------------------------------------------------


@_jit
def bollinger_step(s, ring, x, k):
    """SMA(n) +/- k population standard deviations, the deviations summed oldest first."""
    m = sma_step(s, ring, x)
    if math.isnan(m):
        return np.nan, m, np.nan
    n = s.n
    j = s.count % n  # the oldest value's slot
    v = 0.0
    for _ in range(n):
        v += (ring[j] - m) ** 2
        j = j + 1 if j + 1 < n else 0
    sd = math.sqrt(v / n)
    return m + k * sd, m, m - k * sd


@_jit
def bollinger_run(st, ring, close, k, upper, mid, lower):
    s = st[0]
    for i in range(close.shape[0]):
        upper[i], mid[i], lower[i] = bollinger_step(s, ring, close[i], k)


@_jit
def bollinger(close: np.ndarray, n: int, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands: SMA(n) +/- k population standard deviations."""
    st, ring = sma_state(n)
    size = close.shape[0]
    upper, mid, lower = np.empty(size), np.empty(size), np.empty(size)
    bollinger_run(st, ring, close, k, upper, mid, lower)
    return upper, mid, lower


# --- rolling max / min, Donchian -------------------------------------------------------------------------


@_jit
def deque_state(n):
    """(state, indices, values) of a monotonic deque over the last n values (n + 1 slots: one is pushed
    before the oldest expires)."""
    return _record(DEQUE, n), np.zeros(max(n, 1) + 1, dtype=np.int64), np.zeros(max(n, 1) + 1)


@_jit
def max_step(s, idx, val, x):
    """Highest of the last n values (monotonic deque in a ring: O(1) amortised per value)."""
    cap = idx.shape[0]
    i = s.count
    s.count = i + 1
    while s.size > 0:  # drop from the back what x outranks
        b = s.head + s.size - 1
        if b >= cap:
            b -= cap
        if val[b] <= x:
            s.size -= 1
        else:
            break
    b = s.head + s.size
    if b >= cap:
        b -= cap
    idx[b] = i
    val[b] = x
    s.size += 1
    if idx[s.head] <= i - s.n:
        s.head = s.head + 1 if s.head + 1 < cap else 0
        s.size -= 1
    return val[s.head] if i >= s.n - 1 else np.nan


@_jit
def min_step(s, idx, val, x):
    """Lowest of the last n values."""
    return -max_step(s, idx, val, -x)


@_jit
def rolling_max(x: np.ndarray, n: int) -> np.ndarray:
    """Highest value of the last n."""
    st, idx, val = deque_state(n)
    s = st[0]
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = max_step(s, idx, val, x[i])
    return out


@_jit
def rolling_min(x: np.ndarray, n: int) -> np.ndarray:
    """Lowest value of the last n."""
    return -rolling_max(-x, n)


@_jit
def donchian_state(n):
    hs, hi, hv = deque_state(n)
    ls, li, lv = deque_state(n)
    return hs, hi, hv, ls, li, lv


@_jit
def donchian_run(hs, hi, hv, ls, li, lv, high, low, up, mid, lo):
    h, l = hs[0], ls[0]
    for i in range(high.shape[0]):
        up[i] = max_step(h, hi, hv, high[i])
        lo[i] = min_step(l, li, lv, low[i])
        mid[i] = (up[i] + lo[i]) / 2.0


@_jit
def donchian(high: np.ndarray, low: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Donchian channel: highest high and lowest low of the last n bars, and their midpoint."""
    hs, hi, hv, ls, li, lv = donchian_state(n)
    size = high.shape[0]
    up, mid, lo = np.empty(size), np.empty(size), np.empty(size)
    donchian_run(hs, hi, hv, ls, li, lv, high, low, up, mid, lo)
    return up, mid, lo


# --- ADX --------------------------------------------------------------------------------------------------


@_jit
def adx_state(n):
    return _record(ADX, n)


@_jit
def adx_step(s, h, l, c):
    """Wilder's ADX with +DI and -DI (TA-Lib's seeding: DI from index n, first ADX at index 2n - 1)."""
    n = s.n
    i = s.count
    s.count = i + 1
    if i == 0:
        s.prev_high, s.prev_low, s.prev_close = h, l, c
        return np.nan, np.nan, np.nan
    up = h - s.prev_high
    down = s.prev_low - l
    pdm = up if (up > down and up > 0) else 0.0
    mdm = down if (down > up and down > 0) else 0.0
    tr = _tr(h, l, s.prev_close)
    s.prev_high, s.prev_low, s.prev_close = h, l, c
    if i < n:
        s.pdm += pdm
        s.mdm += mdm
        s.tr += tr
        return np.nan, np.nan, np.nan
    s.pdm = s.pdm - s.pdm / n + pdm
    s.mdm = s.mdm - s.mdm / n + mdm
    s.tr = s.tr - s.tr / n + tr
    pdi = 100.0 * s.pdm / s.tr if s.tr != 0 else 0.0
    mdi = 100.0 * s.mdm / s.tr if s.tr != 0 else 0.0
    dx = 100.0 * abs(pdi - mdi) / (pdi + mdi) if pdi + mdi != 0 else 0.0
    if i < 2 * n - 1:
        s.dx_sum += dx
        return np.nan, pdi, mdi
    if i == 2 * n - 1:
        s.adx = (s.dx_sum + dx) / n
    else:
        s.adx = (s.adx * (n - 1) + dx) / n
    return s.adx, pdi, mdi


@_jit
def adx_run(st, high, low, close, a, p, m):
    s = st[0]
    for i in range(close.shape[0]):
        a[i], p[i], m[i] = adx_step(s, high[i], low[i], close[i])


@_jit
def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wilder's ADX with +DI and -DI."""
    st = adx_state(n)
    size = close.shape[0]
    a, p, m = np.empty(size), np.empty(size), np.empty(size)
    adx_run(st, high, low, close, a, p, m)
    return a, p, m


# --- choppiness index ------------------------------------------------------------------------------------


@_jit
def chop_state(n):
    hs, hi, hv = deque_state(n)
    ls, li, lv = deque_state(n)
    return _record(CHOP, n), np.zeros(max(n, 1)), hs, hi, hv, ls, li, lv


@_jit
def chop_step(s, ring, hs, hi, hv, ls, li, lv, h, l, c):
    """100 * log10(sum of true range over n / (highest high - lowest low)) / log10(n); the first bar's true
    range is its own range, and the first value needs n true ranges with a previous close."""
    n = s.n
    i = s.count
    s.count = i + 1
    tr = h - l if i == 0 else _tr(h, l, s.prev_close)
    s.prev_close = c
    j = i % n
    old = ring[j]
    ring[j] = tr
    s.tr_sum += tr
    if i >= n:
        s.tr_sum -= old
    hh = max_step(hs[0], hi, hv, h)
    ll = min_step(ls[0], li, lv, l)
    if i < n:
        return np.nan
    rng = hh - ll
    return 100.0 * math.log10(s.tr_sum / rng) / math.log10(n) if rng > 0 else np.nan


@_jit
def chop_run(st, ring, hs, hi, hv, ls, li, lv, high, low, close, out):
    s = st[0]
    for i in range(close.shape[0]):
        out[i] = chop_step(s, ring, hs, hi, hv, ls, li, lv, high[i], low[i], close[i])


@_jit
def chop(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """Choppiness index."""
    st, ring, hs, hi, hv, ls, li, lv = chop_state(n)
    out = np.empty(close.shape[0])
    chop_run(st, ring, hs, hi, hv, ls, li, lv, high, low, close, out)
    return out


# --- stochastic RSI --------------------------------------------------------------------------------------


@_jit
def stoch_rsi_state(rsi_n, stoch_n, k_smooth, d_smooth):
    """RSI, its rolling max and min over stoch_n, and the %K and %D averages."""
    hs, hi, hv = deque_state(stoch_n)
    ls, li, lv = deque_state(stoch_n)
    ks, kring = sma_state(max(k_smooth, 1))
    ds, dring = sma_state(d_smooth)
    return rsi_state(rsi_n), hs, hi, hv, ls, li, lv, ks, kring, ds, dring


@_jit
def stoch_rsi_step(r, hs, hi, hv, ls, li, lv, ks, kring, ds, dring, stoch_n, k_smooth, close):
    """%K = SMA(k_smooth) of 100 (RSI - lowest) / (highest - lowest) over stoch_n RSI values (0 when flat);
    %D = SMA(d_smooth) of %K. Each average starts at its input's first value."""
    i = r.count
    x = rsi_step(r, close)
    hi_ = max_step(hs, hi, hv, x)
    lo_ = min_step(ls, li, lv, x)
    raw = np.nan
    if not (math.isnan(hi_) or math.isnan(lo_)):
        raw = 100.0 * (x - lo_) / (hi_ - lo_) if hi_ > lo_ else 0.0
    start = r.n + stoch_n - 1
    if k_smooth <= 1:
        k = raw
    else:
        k = sma_step(ks, kring, raw) if i >= start else np.nan
    d = sma_step(ds, dring, k) if i >= start + max(k_smooth, 1) - 1 else np.nan
    return k, d


@_jit
def stoch_rsi_run(r, hs, hi, hv, ls, li, lv, ks, kring, ds, dring, stoch_n, k_smooth, close, k, d):
    for i in range(close.shape[0]):
        k[i], d[i] = stoch_rsi_step(r[0], hs[0], hi, hv, ls[0], li, lv, ks[0], kring, ds[0], dring, stoch_n,
                                    k_smooth, close[i])


@_jit
def stoch_rsi(close: np.ndarray, rsi_n: int, stoch_n: int, k_smooth: int, d_smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic RSI in [0, 100]: %K and %D."""
    r, hs, hi, hv, ls, li, lv, ks, kring, ds, dring = stoch_rsi_state(rsi_n, stoch_n, k_smooth, d_smooth)
    k, d = np.empty(close.shape[0]), np.empty(close.shape[0])
    stoch_rsi_run(r, hs, hi, hv, ls, li, lv, ks, kring, ds, dring, stoch_n, k_smooth, close, k, d)
    return k, d


# --- returns, realised volatility, relative volume (forecast inputs) ---------------------------------


@_jit
def logret_state(n):
    """(state, ring of the last n log closes) of the log return over n bars."""
    return _record(WINDOW, n), np.zeros(max(n, 1))


@_jit
def logret_run(st, ring, close, out):
    """log(close[t] / close[t-n]): NaN for the first n bars."""
    s = st[0]
    n = s.n
    for i in range(close.shape[0]):
        x = math.log(close[i])
        j = s.count % n
        out[i] = x - ring[j] if s.count >= n else np.nan
        ring[j] = x
        s.count += 1


@_jit
def logret(close: np.ndarray, n: int) -> np.ndarray:
    """Log return over n bars."""
    st, ring = logret_state(n)
    out = np.empty(close.shape[0])
    logret_run(st, ring, close, out)
    return out


@_jit
def rvol_state(n):
    """(state, ring of the last n squared log returns) of realised volatility over n bars; ``prev``: the last
    close (NaN before the first)."""
    st = _record(SMOOTH, n)
    st[0].prev = np.nan
    return st, np.zeros(max(n, 1))


@_jit
def rvol_run(st, ring, close, out):
    """sqrt(sum of the last n squared one-bar log returns), the SMA's rolling sum over them times n: NaN
    until n returns are known (n + 1 closes)."""
    s = st[0]
    for i in range(close.shape[0]):
        c = close[i]
        if s.prev != s.prev:
            s.prev = c
            out[i] = np.nan
            continue
        r = math.log(c / s.prev)
        s.prev = c
        mean = sma_step(s, ring, r * r)
        out[i] = math.sqrt(max(mean * s.n, 0.0)) if mean == mean else np.nan


@_jit
def rvol(close: np.ndarray, n: int) -> np.ndarray:
    """Realised volatility over n bars (not annualised)."""
    st, ring = rvol_state(n)
    out = np.empty(close.shape[0])
    rvol_run(st, ring, close, out)
    return out


@_jit
def relvol_run(st, ring, volume, out):
    """volume[t] / SMA(volume, n)[t]: NaN until the SMA is defined, 1.0 where it is zero."""
    s = st[0]
    for i in range(volume.shape[0]):
        m = sma_step(s, ring, volume[i])
        out[i] = (volume[i] / m if m > 0 else 1.0) if not math.isnan(m) else np.nan


def relvol(volume: np.ndarray, n: int) -> np.ndarray:
    """Volume relative to its n-bar mean."""
    st, ring = sma_state(n)
    out = np.empty(volume.shape[0])
    relvol_run(st, ring, np.asarray(volume, dtype=np.float64), out)
    return out


# --- OBV, VWAP ---------------------------------------------------------------------------------------------


@_jit
def obv_state():
    return np.zeros(1, dtype=OBV)


@_jit
def obv_run(st, close, volume, out):
    """On-balance volume (TA-Lib: starts at the first bar's volume)."""
    s = st[0]
    for i in range(close.shape[0]):
        if s.count == 0:
            s.acc = volume[i]
        elif close[i] > s.prev_close:
            s.acc += volume[i]
        elif close[i] < s.prev_close:
            s.acc -= volume[i]
        s.count += 1
        s.prev_close = close[i]
        out[i] = s.acc


@_jit
def obv(close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """On-balance volume."""
    out = np.empty(close.shape[0])
    obv_run(obv_state(), close, volume, out)
    return out


@_jit
def vwap_state(session):
    st = np.zeros(1, dtype=VWAP)
    st[0].session = session
    st[0].day = -(2 ** 62)
    return st


@_jit
def vwap_run(st, open_time, high, low, close, volume, out):
    """Session VWAP of the typical price, reset at each session start."""
    s = st[0]
    for i in range(close.shape[0]):
        d = open_time[i] // s.session
        if d != s.day:
            s.day = d
            s.pv = 0.0
            s.v = 0.0
        typical = (high[i] + low[i] + close[i]) / 3.0
        s.pv += typical * volume[i]
        s.v += volume[i]
        out[i] = s.pv / s.v if s.v > 0 else typical


def vwap(open_time: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
         session_ns: int = DAY) -> np.ndarray:
    """Session VWAP of the typical price, reset at each UTC session start (daily by default)."""
    out = np.empty(close.shape[0])
    vwap_run(vwap_state(session_ns), open_time.astype(np.int64), high, low, close, volume, out)
    return out
