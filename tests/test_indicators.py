"""Indicators against TA-Lib (or their direct formula), and proof that none looks ahead."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from tradebus.components import indicators as ind
from tradebus.components.timeframes import DAY, MINUTE

from .conftest import SHARED_DATA
from tradebus.replay.checks import random_walk as synthetic


def series():
    """Real BTCUSDT 5m bars when ../shared/data is there, else a synthetic walk (same length)."""
    path = SHARED_DATA / "bybit" / "linear" / "5m" / "BTCUSDT.parquet"
    if path.exists():
        from tradebus.replay.importer import read_file

        cols = read_file(path)
        return {k: v[:20_000] for k, v in cols.items()}
    return synthetic(20_000)


@pytest.fixture(scope="module")
def bars():
    return series()


def same(ours, ref, start=0):
    ours, ref = np.asarray(ours)[start:], np.asarray(ref)[start:]
    # Where TA-Lib has a value we must have the same one; TA-Lib may start later (its lookback trims).
    has = ~np.isnan(ref)
    assert not np.isnan(ours[has]).any()
    np.testing.assert_allclose(ours[has], ref[has], rtol=1e-9, atol=1e-9)


def test_sma_ema_rsi_atr_match_talib(bars):
    c, h, l = bars["close"], bars["high"], bars["low"]
    for n in (2, 14, 50):
        same(ind.sma(c, n), talib.SMA(c, n))
        same(ind.ema(c, n), talib.EMA(c, n))
        same(ind.rsi(c, n), talib.RSI(c, n))
        same(ind.atr(h, l, c, n), talib.ATR(h, l, c, n))


def test_first_values_sit_where_talib_puts_them(bars):
    c, h, l = bars["close"], bars["high"], bars["low"]

    assert np.isnan(ind.sma(c, 20)[18]) and not np.isnan(ind.sma(c, 20)[19])
    assert np.isnan(ind.rsi(c, 14)[13]) and not np.isnan(ind.rsi(c, 14)[14])
    assert np.isnan(ind.atr(h, l, c, 14)[13]) and not np.isnan(ind.atr(h, l, c, 14)[14])
    assert np.isnan(ind.adx(h, l, c, 14)[0][26]) and not np.isnan(ind.adx(h, l, c, 14)[0][27])


def test_macd_matches_talib_once_seeding_has_decayed(bars):
    line, signal, hist = ind.macd(bars["close"], 12, 26, 9)
    t_line, t_signal, t_hist = talib.MACD(bars["close"], 12, 26, 9)

    for ours, ref in ((line, t_line), (signal, t_signal), (hist, t_hist)):
        same(ours, ref, start=400)


def test_bollinger_and_donchian_match_talib(bars):
    c, h, l = bars["close"], bars["high"], bars["low"]
    upper, mid, lower = ind.bollinger(c, 20, 2.0)
    t_upper, t_mid, t_lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    d_up, d_mid, d_lo = ind.donchian(h, l, 55)

    same(upper, t_upper)
    same(mid, t_mid)
    same(lower, t_lower)
    same(d_up, talib.MAX(h, 55))
    same(d_lo, talib.MIN(l, 55))
    same(d_mid, (talib.MAX(h, 55) + talib.MIN(l, 55)) / 2)


def test_adx_and_directional_indexes_match_talib(bars):
    h, l, c = bars["high"], bars["low"], bars["close"]
    for n in (7, 14):
        a, pdi, mdi = ind.adx(h, l, c, n)
        same(a, talib.ADX(h, l, c, n))
        same(pdi, talib.PLUS_DI(h, l, c, n))
        same(mdi, talib.MINUS_DI(h, l, c, n))


def test_stoch_rsi_matches_talib_and_its_smoothing_is_an_sma(bars):
    c = bars["close"]
    raw_k, d = ind.stoch_rsi(c, 14, 14, 1, 3)
    t_k, t_d = talib.STOCHRSI(c, 14, 14, 3, 0)
    k3, d3 = ind.stoch_rsi(c, 14, 14, 3, 3)

    same(raw_k, t_k)
    same(d, t_d)
    same(k3, talib.SMA(np.nan_to_num(raw_k, nan=0.0), 3), start=40)
    same(d3, talib.SMA(np.nan_to_num(k3, nan=0.0), 3), start=40)


def test_obv_matches_talib(bars):
    same(ind.obv(bars["close"], bars["volume"]), talib.OBV(bars["close"], bars["volume"]))


def test_chop_matches_its_formula(bars):
    h, l, c = bars["high"][:600], bars["low"][:600], bars["close"][:600]
    n = 14

    got = ind.chop(h, l, c, n)

    for i in range(n, 600):
        tr = [max(h[j] - l[j], abs(h[j] - c[j - 1]), abs(l[j] - c[j - 1])) for j in range(i - n + 1, i + 1)]
        expected = 100 * math.log10(sum(tr) / (max(h[i - n + 1 : i + 1]) - min(l[i - n + 1 : i + 1]))) / math.log10(n)
        assert got[i] == pytest.approx(expected, rel=1e-9), i
    assert np.isnan(got[:n]).all()


def test_vwap_resets_each_utc_day_and_matches_its_formula():
    cols = synthetic(3 * 288 + 50, start=1_735_689_600_000_000_000 + 100 * 5 * MINUTE)
    t, h, l, c, v = (cols[k] for k in ("open_time", "high", "low", "close", "volume"))

    got = ind.vwap(t, h, l, c, v)

    day = t // DAY
    for i in range(len(t)):
        same_day = (day == day[i]) & (np.arange(len(t)) <= i)
        tp = (h + l + c) / 3
        assert got[i] == pytest.approx((tp[same_day] * v[same_day]).sum() / v[same_day].sum(), rel=1e-12)


def test_log_return_and_relative_volume_match_talib(bars):
    c, v = bars["close"], bars["volume"]
    same(ind.logret(c, 12), np.log(talib.ROCR(c, 12)))
    assert np.isnan(ind.logret(c, 12)[:12]).all()
    sma = talib.SMA(v, 20)
    expected = np.where(np.isnan(sma), np.nan, np.where(sma > 0, v / np.where(sma > 0, sma, 1.0), 1.0))
    same(ind.relvol(v, 20), expected)
    assert np.isnan(ind.relvol(v, 20)[:19]).all()


def test_realised_volatility_matches_its_formula(bars):
    c = bars["close"][:800]
    n = 24

    got = ind.rvol(c, n)

    r = np.diff(np.log(c))
    for i in range(n, 800):
        assert got[i] == pytest.approx(math.sqrt(np.sum(r[i - n:i] ** 2)), rel=1e-9), i
    assert np.isnan(got[:n]).all()


ALL = {
    "sma": lambda b: ind.sma(b["close"], 20),
    "ema": lambda b: ind.ema(b["close"], 20),
    "rsi": lambda b: ind.rsi(b["close"], 14),
    "atr": lambda b: ind.atr(b["high"], b["low"], b["close"], 14),
    "macd": lambda b: np.column_stack(ind.macd(b["close"], 12, 26, 9)),
    "bollinger": lambda b: np.column_stack(ind.bollinger(b["close"], 20, 2.0)),
    "donchian": lambda b: np.column_stack(ind.donchian(b["high"], b["low"], 20)),
    "adx": lambda b: np.column_stack(ind.adx(b["high"], b["low"], b["close"], 14)),
    "chop": lambda b: ind.chop(b["high"], b["low"], b["close"], 14),
    "stoch_rsi": lambda b: np.column_stack(ind.stoch_rsi(b["close"], 14, 14, 3, 3)),
    "obv": lambda b: ind.obv(b["close"], b["volume"]),
    "vwap": lambda b: ind.vwap(b["open_time"], b["high"], b["low"], b["close"], b["volume"]),
    "logret": lambda b: ind.logret(b["close"], 12),
    "rvol": lambda b: ind.rvol(b["close"], 12),
    "relvol": lambda b: ind.relvol(b["volume"], 20),
}


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("t", [60, 333, 1_500])
def test_changing_the_future_changes_nothing_at_or_before_t(name, t):
    base = synthetic(2_000, seed=3)
    future = {k: v.copy() for k, v in base.items()}
    rng = np.random.default_rng(t)
    scale = rng.uniform(0.5, 2.0, len(base["close"]) - t - 1)
    for k in ("open", "high", "low", "close"):
        future[k][t + 1 :] *= scale
    future["volume"][t + 1 :] *= rng.uniform(0, 5, len(scale))

    before, after = ALL[name](base), ALL[name](future)

    np.testing.assert_array_equal(before[: t + 1], after[: t + 1])
    assert not np.array_equal(before[t + 1 :], after[t + 1 :])  # the change did reach the future
