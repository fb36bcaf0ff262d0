"""Streaming features: one bar at a time equals the whole series at once, on real data, bit for bit.

The whole-series functions the replay seed and the sweep kernel use are the streaming steps in a loop, so
this is the check that the state carried between calls is complete: a daemon that seeds with history and
then adds one bar at a time must publish exactly what a replay computes over the same bars. Higher
timeframes: the streaming bucketer equals the vectorised resampler and its no-look-ahead alignment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tradebus.bus import events as ev
from tradebus.components.base import SimClock, Stamper
from tradebus.components.features import FeatureSet, compute, f
from tradebus.components.timeframes import tf_ns
from tradebus.engine.resample import resample
from tradebus.engine.snapshot import Bucketer, MarketFeatures, SnapshotBuilder

from tradebus.replay.checks import random_walk as synthetic

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bybit" / "linear" / "5m" / "ETHUSDT.parquet"

FEATURES = [f("close"), f("volume"), f("sma", 1), f("sma", 20), f("ema", 2), f("ema", 50), f("rsi", 2), f("rsi", 14),
            f("atr", 14), f("macd", 12, 26, 9), f("macd", 12, 26, 9, output="macd_signal"),
            f("macd", 5, 35, 5, output="macd_hist"), f("bb", 20, 2.0, output="bb_upper"),
            f("bb", 20, 2.0, output="bb_lower"), f("donchian", 55, output="dc_upper"),
            f("donchian", 55, output="dc_lower"), f("donchian", 55, output="dc_mid"), f("adx", 14),
            f("adx", 14, output="plus_di"), f("adx", 14, output="minus_di"), f("chop", 14),
            f("stochrsi", 14, 14, 3, 3), f("stochrsi", 14, 14, 3, 3, output="stochrsi_d"),
            f("stochrsi", 7, 10, 1, 4), f("obv"), f("vwap")]


def _series(n: int) -> dict[str, np.ndarray]:
    if DATA.exists():
        import pyarrow.parquet as pq

        t = pq.read_table(DATA).slice(50_000, n)
        cols = {k: t.column(k).to_numpy().astype(np.float64) for k in ("open", "high", "low", "close", "volume")}
        cols["open_time"] = t.column("open_time").cast("int64").to_numpy()
        cols["turnover"] = cols["volume"] * cols["close"]
        return cols
    return synthetic(n, seed=3)


def last_closed_index(htf_open_time: np.ndarray, htf: str, at_close_ns: np.ndarray) -> np.ndarray:
    """The reference rule, vectorised: for each close, the last higher bar closed by then (-1: none)."""
    return np.searchsorted(htf_open_time + tf_ns(htf), at_close_ns, side="right") - 1


def _rows(cols: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    return {k: v[a:b] for k, v in cols.items()}


def test_one_bar_at_a_time_equals_the_whole_series_bit_for_bit():
    cols = _series(6_000)
    whole = compute(cols, FEATURES)
    fs = FeatureSet(FEATURES)
    seed = 1_000  # a daemon's warm-up: one batch, then bar by bar
    parts = [fs.update(_rows(cols, 0, seed))] + [fs.update(_rows(cols, i, i + 1)) for i in range(seed, len(cols["close"]))]
    streamed = np.vstack(parts)
    assert np.isfinite(whole[-1]).all(), "every feature is warm by the end"
    for j, feat in enumerate(FEATURES):
        assert np.array_equal(streamed[:, j], whole[:, j], equal_nan=True), feat.name


def test_uneven_batches_carry_the_whole_state():
    cols = _series(3_000)
    whole = compute(cols, FEATURES)
    fs = FeatureSet(FEATURES)
    cuts = [0, 7, 8, 500, 501, 1_999, 3_000]
    streamed = np.vstack([fs.update(_rows(cols, a, b)) for a, b in zip(cuts, cuts[1:])])
    assert np.array_equal(streamed, whole, equal_nan=True)


@pytest.mark.parametrize("target", ["15m", "1h", "4h"])
def test_the_bucketer_equals_the_resampler_and_its_alignment(target):
    cols = _series(5_000)
    keep = np.ones(len(cols["close"]), dtype=bool)
    keep[[100, 101, 102, 2_000, 2_011]] = False  # exchange gaps, one at a bucket's end
    cols = {k: v[keep] for k, v in cols.items()}
    want = resample(cols, "5m", target)
    own_close = cols["open_time"] + 5 * 60 * 10**9
    want_rows = last_closed_index(want["open_time"], target, own_close)

    b = Bucketer("5m", target)
    got, after = b.update(_rows(cols, 0, 1_234))
    more = [b.update(_rows(cols, i, i + 1)) for i in range(1_234, len(cols["close"]))]
    for k in ("open_time", "open", "high", "low", "close"):
        merged = np.concatenate([got[k]] + [m[0][k] for m in more])
        assert np.array_equal(merged, want[k]), k
    np.testing.assert_allclose(np.concatenate([got["volume"]] + [m[0]["volume"] for m in more]), want["volume"],
                               rtol=1e-12)
    counts = np.concatenate([after] + [m[1] + len(got["open_time"]) + sum(len(x[0]["open_time"]) for x in more[:i])
                                       for i, m in enumerate(more)])
    assert np.array_equal(counts - 1, want_rows), "a higher bar is readable from the own bar whose close closes it"


def test_a_streamed_snapshot_equals_the_seeded_one():
    cols = _series(4_000)
    step = 5 * 60 * 10**9
    feats = MarketFeatures("5m", [f("ema", 20), f("rsi", 14), f("close")], {"1h": [f("atr", 14), f("ema", 20)]})
    replay = SnapshotBuilder(Stamper(SimClock(), "a"), "bybit", "BTCUSDT", feats, cols, int(cols["open_time"][2_000]))
    live_feats = MarketFeatures("5m", [f("ema", 20), f("rsi", 14), f("close")], {"1h": [f("atr", 14), f("ema", 20)]})
    live = SnapshotBuilder(Stamper(SimClock(), "b"), "bybit", "BTCUSDT", live_feats, _rows(cols, 0, 2_000),
                           int(cols["open_time"][1_999]) + step)
    for i in range(2_000, 4_000):
        t = int(cols["open_time"][i])
        bar = ev.BarClosed(id=f"b{i}", ts_event=t + step, ts_init=t + step, venue="bybit", market="linear",
                           symbol="BTCUSDT", timeframe="5m", open_time=t, open=cols["open"][i], high=cols["high"][i],
                           low=cols["low"][i], close=cols["close"][i], volume=cols["volume"][i],
                           turnover=cols["turnover"][i])
        (a,), (b,) = replay.on_event(bar), live.on_event(bar)
        assert (a.features, a.htf) == (b.features, b.htf), i
        assert live.on_event(bar) == (), "a repeat is ignored"
