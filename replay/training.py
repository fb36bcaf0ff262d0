"""Per-bar training rows (``--log-features``): what was known at each bar's close, and what came next.

One row per traded bar, written to ``training_rows.parquet``. Schema (stable; columns are only added):

=====================  ===========================  ===================================================
column                 type                         meaning
=====================  ===========================  ===================================================
time                   timestamp[ns, UTC]           the bar's close (when the row's features were known)
symbol, timeframe      string                       the series
strategy               string                       the system's strategy id
f.<name>               float64                      own-timeframe feature, as in the bar's snapshot
f.<tf>.<name>          float64                      last closed higher-timeframe bar's feature
position_qty           float64                      signed position at the bar's close
position_side          int8                         -1 short, 0 flat, 1 long
target_return_<N>      float64                      close[t+N] / close[t] - 1
target_vol_<N>         float64                      sqrt(sum of squared log returns over t+1..t+N)
target_regime_<N>      string                       crash / trend_up / trend_down / chop over t+1..t+N
=====================  ===========================  ===================================================

Targets are computed here, outside the strategy, from the closes after t; the last N rows have no
future and hold NaN / "". Regime over the horizon: ``crash`` if the close falls at least
``crash_drawdown`` below the close at t at any point; else ``trend_up`` / ``trend_down`` when the net
log return is at least one realised volatility up / down; else ``chop``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tradebus.engine.snapshot import FeatureTable


def forward_targets(close: np.ndarray, horizon: int, crash_drawdown: float = 0.05
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (forward return, forward realised vol, regime label) for each bar."""
    n = len(close)
    ret = np.full(n, np.nan)
    vol = np.full(n, np.nan)
    regime = np.full(n, "", dtype=object)
    if n <= horizon:
        return ret, vol, regime
    logp = np.log(close)
    r2 = np.concatenate(([0.0], np.diff(logp) ** 2))
    csum = np.cumsum(r2)
    t = np.arange(n - horizon)
    ret[t] = close[t + horizon] / close[t] - 1.0
    vol[t] = np.sqrt(csum[t + horizon] - csum[t])
    windows = np.lib.stride_tricks.sliding_window_view(close[1:], horizon)[: n - horizon]
    worst = windows.min(axis=1) / close[t] - 1.0
    net = logp[t + horizon] - logp[t]
    labels = np.where(worst <= -crash_drawdown, "crash",
                      np.where(net >= vol[t], "trend_up", np.where(net <= -vol[t], "trend_down", "chop")))
    regime[t] = labels
    return ret, vol, regime


def training_table(times: np.ndarray, symbol: str, timeframe: str, strategy: str, own: FeatureTable,
                   higher: list[FeatureTable], first: int, position_qty: np.ndarray, close: np.ndarray,
                   horizon: int) -> pa.Table:
    """Assemble the rows for the traded bars (indices ``first..`` of the feature tables)."""
    n = len(times)
    cols: dict[str, pa.Array] = {
        "time": pa.array(times, type=pa.timestamp("ns", tz="UTC")),
        "symbol": pa.array([symbol] * n, type=pa.string()),
        "timeframe": pa.array([timeframe] * n, type=pa.string()),
        "strategy": pa.array([strategy] * n, type=pa.string()),
    }
    for j, name in enumerate(own.names):
        cols[f"f.{name}"] = pa.array(own.values[first:first + n, j], type=pa.float64())
    for table in higher:
        rows = table.row_for_bar[first:first + n]
        for j, name in enumerate(table.names):
            values = np.where(rows >= 0, table.values[np.maximum(rows, 0), j], np.nan)
            cols[f"f.{table.timeframe}.{name}"] = pa.array(values, type=pa.float64())
    cols["position_qty"] = pa.array(position_qty, type=pa.float64())
    cols["position_side"] = pa.array(np.sign(position_qty).astype(np.int8), type=pa.int8())
    ret, vol, regime = forward_targets(close, horizon)
    cols[f"target_return_{horizon}"] = pa.array(ret, type=pa.float64())
    cols[f"target_vol_{horizon}"] = pa.array(vol, type=pa.float64())
    cols[f"target_regime_{horizon}"] = pa.array(regime.astype(str), type=pa.string())
    return pa.table(cols)


def write(table: pa.Table, path: Path) -> None:
    """Write atomically (temp name, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
