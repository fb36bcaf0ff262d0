"""Forecasting: training all eight perps (walk-forward + final model) at 1h and 5m, and the forecaster's cost
per streamed bar (snapshot in -> Forecast out) against the snapshot builder's own per-bar cost in the same run.

Reads the eight perps' 5m candles from ../shared/data into a temporary data home (skips with a message when
they are absent). Usage: python bench/bench_forecast.py [--quick]  (--quick: 1h only)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tradebus import settings
from tradebus.bus import events as ev
from tradebus.components import forecast
from tradebus.components.base import SimClock, Stamper
from tradebus.configs.forecast import load_model_spec
from tradebus.engine.marketdata import MarketData
from tradebus.engine.snapshot import MarketFeatures
from tradebus.factory import datasets, forecasting

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "bybit" / "linear" / "5m"


def import_perps(home: Path) -> int:
    """The eight perps' 5m candles into ``home``'s market data; how many series."""
    from tradebus.engine.marketdata import SeriesKey
    from tradebus.replay.importer import read_file

    files = sorted(SHARED.glob("*.parquet"))
    with MarketData.open(home / "market.duckdb") as md:
        md.write_all([(SeriesKey("bybit", "linear", f.stem, "5m"), read_file(f)) for f in files])
    return len(files)


def train(spec) -> tuple[float, float, forecast.Model, dict]:
    with MarketData.open(None, read_only=True) as md:
        t0 = time.perf_counter()
        ds = datasets.build_market(spec, md, settings.data_home())
    t1 = time.perf_counter()
    rows = forecasting.Rows.of(ds.table, spec.inputs)
    ev_ = forecasting.walk_forward(spec, rows)
    model = forecasting.final_model(spec, rows, ds.id)
    return t1 - t0, time.perf_counter() - t1, model, {"rows": ds.manifest["rows"], "pooled": ev_.pooled}


def latency(model: forecast.Model, n: int = 2_000) -> tuple[np.ndarray, np.ndarray]:
    """Per streamed bar: the snapshot's feature update, then the forecaster's handling (ns each)."""
    from tradebus.replay.checks import random_walk

    step = 3_600 * 10**9 if model.timeframe == "1h" else 300 * 10**9
    cols = random_walk(3_000 + n, step=step)
    own, higher = forecast.input_features(model.parsed_inputs())
    feats = MarketFeatures(model.timeframe, own, higher)
    feats.update({k: v[:3_000] for k, v in cols.items()})
    model.trained_until, model.valid_until = 0, 2**62
    fc = forecast.Forecaster(Stamper(SimClock(), "b"), model, "bybit", "BTCUSDT", {})
    snap_ns, fc_ns = np.empty(n), np.empty(n)
    for i in range(3_000, 3_000 + n):
        t0 = time.perf_counter_ns()
        row, _ = feats.update({k: v[i:i + 1] for k, v in cols.items()})
        bar = ev.BarClosed(id=f"b{i}", ts_event=int(cols["open_time"][i]) + step, ts_init=0, venue="bybit",
                           market="linear", symbol="BTCUSDT", timeframe=model.timeframe,
                           open_time=int(cols["open_time"][i]), open=cols["open"][i], high=cols["high"][i],
                           low=cols["low"][i], close=cols["close"][i], volume=cols["volume"][i])
        snap = ev.Snapshot(id=f"s{i}", ts_event=bar.ts_event, ts_init=0, bar=bar,
                           features=dict(zip(row.names, row.values[0].tolist())))
        t1 = time.perf_counter_ns()
        fc.on_event(snap)
        t2 = time.perf_counter_ns()
        snap_ns[i - 3_000], fc_ns[i - 3_000] = t1 - t0, t2 - t1
    return snap_ns, fc_ns


def main() -> None:
    if not SHARED.exists():
        print(f"bench_forecast: {SHARED} is absent; nothing to measure")
        return
    with tempfile.TemporaryDirectory(prefix="tradebus-bench-forecast-", dir="/tmp") as tmp:
        home = Path(tmp)
        os.environ["TRADEBUS_HOME"] = str(home)
        print(f"bench_forecast: {import_perps(home)} perps imported into a temporary data home")
        measure("--quick" in sys.argv)


def measure(quick: bool) -> None:
    spec = load_model_spec(ROOT / "configs" / "forecasts" / "perps_1h.yaml")
    specs = [spec] if quick else [spec, spec.model_copy(update={"model": "perps_5m", "timeframe": "5m",
                                                                 "train_stride": 6})]
    for s in specs:
        build, fit, model, info = train(s)
        p = info["pooled"]
        print(f"{s.model}: {info['rows']:,} rows; dataset {build:.1f} s, walk-forward ({s.walk_forward.folds} folds) "
              f"+ final model {fit:.1f} s on 2 cores; QLIKE {p['vol']['model']['qlike']:.4f} vs EWMA "
              f"{p['vol']['ewma']['qlike']:.4f}, rank IC {p['return']['model']['rank_ic']:+.4f}")
        snap, fc = latency(model)
        print(f"  per streamed bar: snapshot features p50 {np.median(snap) / 1e3:.0f} us; forecaster (predict + "
              f"score) p50 {np.median(fc) / 1e3:.0f} us, p99 {np.percentile(fc, 99) / 1e3:.0f} us "
              f"({np.median(fc) / np.median(snap):.1f}x the snapshot's)")


if __name__ == "__main__":
    main()
