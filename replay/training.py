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

Targets are computed outside the strategy, from the closes after t, by the forecasting contract's rule
(``components.forecast.forward_targets``); the last N rows have no future and hold NaN / "".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tradebus.components.forecast import REGIMES, forward_targets
from tradebus.engine.snapshot import FeatureTable


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
    labels = np.array(("", *REGIMES), dtype=object)[regime.astype(np.int64) + 1]
    cols[f"target_return_{horizon}"] = pa.array(ret, type=pa.float64())
    cols[f"target_vol_{horizon}"] = pa.array(vol, type=pa.float64())
    cols[f"target_regime_{horizon}"] = pa.array(labels.astype(str), type=pa.string())
    return pa.table(cols)


def write(table: pa.Table, path: Path) -> None:
    """Write atomically (temp name, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
