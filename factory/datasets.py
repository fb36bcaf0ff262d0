"""Forecasting datasets, built from the stored candles with the engine's own feature code, written to Parquet
through DuckDB and keyed by a hash of their content.

**Market dataset** (``tradebus dataset market MODEL.yaml``): one row per symbol and bar of the model's
timeframe whose open lies in its window, after the features' warm-up. Schema (stable; columns are only
added):

=================  ==================  ==============================================================
column             type                meaning
=================  ==================  ==============================================================
time               timestamp[ns, UTC]  the bar's close: when every ``x.`` value was known
symbol, timeframe  string              the series
close              float64             the bar's close
x.<input>          float64             a model input (``components.forecast``), from features at t only
past_regime        int8                regime index over (t-H, t], known at t (-1: unknown); baselines
target_return      float64             close[t+H] / close[t] - 1
target_vol         float64             sqrt(sum of squared one-bar log returns over t+1..t+H)
target_regime      int8                0 trend_up, 1 trend_down, 2 chop, 3 crash over (t, t+H]; -1 none
=================  ==================  ==============================================================

**Strategy dataset** (``tradebus dataset strategies COMPOSITE.yaml``): one row per symbol, bar and pool
member of a composite system, on its forecaster's symbols, timeframe, horizon and window: the market
row's ``x.`` inputs at t, the member's static descriptors (``member``, ``strategy``, ``params`` as JSON,
``position`` it holds at t's close) and its forward performance over (t, t+H], from its equity curve
as the sweep kernel trades it alone on the composite's risk and costs: ``fwd_return`` (equity[t+H] /
equity[t] - 1), ``fwd_sharpe`` (mean over standard deviation of its H bar returns, times sqrt(H); 0 when
flat throughout) and ``fwd_max_drawdown`` (the largest fall from a peak within (t, t+H], <= 0). It is
``$TRADEBUS_HOME/datasets/strategies/ID.parquet``, keyed the same way.

Targets read only closes inside the window: the last H rows of each symbol, and rows whose horizon spans
a gap in the stored bars, have none (NaN, -1). The file is ``$TRADEBUS_HOME/datasets/market/ID.parquet``
with ``ID.json`` beside it (what built it: the spec, each series' hash, the code digest); ID is the first
16 hex characters of SHA-256 over the table's columns, so equal content means an equal id.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tradebus import duck
from tradebus.components import forecast
from tradebus.components.features import lookback
from tradebus.components.timeframes import DAY, tf_ns
from tradebus.configs.forecast import ModelSpec
from tradebus.engine import artifacts
from tradebus.engine.market import day, fill_command, read_series
from tradebus.engine.marketdata import MarketData
from tradebus.engine.snapshot import seed_tables
from tradebus.engine.wiring import WARMUP_FACTOR, table_column
from tradebus.identity import code_digest


class DatasetError(ValueError):
    """A dataset that cannot be built from what is stored, and what to do about it."""


@dataclass
class Dataset:
    id: str
    path: Path
    manifest: dict
    table: pa.Table


def _ns(d) -> int | None:
    return None if d is None else int(np.datetime64(d, "ns").astype(np.int64))


def symbol_table(spec: ModelSpec, symbol: str, cols: dict[str, np.ndarray]) -> pa.Table:
    """The market rows of one symbol's candles (its whole stored history up to the window's end)."""
    tf, step, h = spec.timeframe, tf_ns(spec.timeframe), spec.horizon
    inputs = [forecast.parse_input(n) for n in spec.inputs]
    own_feats, higher_feats = forecast.input_features(inputs)
    own, higher = seed_tables(tf, own_feats, higher_feats, cols)
    open_t = np.asarray(cols["open_time"], dtype=np.int64)
    close = np.asarray(cols["close"], dtype=np.float64)
    x = forecast.input_matrix(inputs, lambda t, feat: table_column(own, higher, t, feat.name), open_t + step)
    ret, vol, regime = forecast.forward_targets(close, h, spec.crash_drawdown)
    n = len(open_t)
    spans = np.full(n, -1, dtype=np.int64)
    spans[: max(n - h, 0)] = open_t[h:] - open_t[: max(n - h, 0)]
    broken = spans != h * step  # a gap inside (t, t+H]: the target would mix bars far apart
    ret[broken], vol[broken], regime[broken] = np.nan, np.nan, -1
    past = np.full(n, -1, dtype=np.int8)
    past[h:] = regime[:-h] if h < n else past[h:]
    warm = WARMUP_FACTOR * max([lookback(own_feats)] + [(lookback(fs) + 1) * tf_ns(t) // step
                                                          for t, fs in higher_feats.items()])
    start = _ns(spec.window.start)
    keep = np.arange(n) >= warm
    if start is not None:
        keep &= open_t >= start
    data: dict[str, pa.Array] = {
        "time": pa.array(open_t[keep] + step, type=pa.timestamp("ns", tz="UTC")),
        "symbol": pa.array([symbol] * int(keep.sum()), type=pa.string()),
        "timeframe": pa.array([tf] * int(keep.sum()), type=pa.string()),
        "close": pa.array(close[keep], type=pa.float64()),
    }
    for j, inp in enumerate(inputs):
        data[f"x.{inp.name}"] = pa.array(x[keep, j], type=pa.float64())
    data["past_regime"] = pa.array(past[keep], type=pa.int8())
    data["target_return"] = pa.array(ret[keep], type=pa.float64())
    data["target_vol"] = pa.array(vol[keep], type=pa.float64())
    data["target_regime"] = pa.array(regime[keep], type=pa.int8())
    return pa.table(data)


def content_id(table: pa.Table) -> str:
    """16 hex characters of SHA-256 over the column names, types and values (row order included)."""
    h = hashlib.sha256()
    for name in table.column_names:
        col = table.column(name)
        h.update(f"\0{name}\0{col.type}\0".encode())
        if pa.types.is_string(col.type):
            h.update("\0".join(col.to_pylist()).encode())
        else:
            h.update(np.ascontiguousarray(col.to_numpy(zero_copy_only=False)).tobytes())
    return h.hexdigest()[:16]


def _series_hash(cols: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(cols):
        h.update(name.encode())
        h.update(np.ascontiguousarray(cols[name]).tobytes())
    return h.hexdigest()[:16]


def _write(tables: list[pa.Table], folder: Path, order_by: str) -> tuple[str, Path, pa.Table]:
    """Stack the tables into ``folder/ID.parquet`` (ID: the content's id), staged under a temporary name
    and renamed; (id, path, the table as written)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".building-{os.getpid()}.parquet"
    duck.write_parquet(tables, tmp, order_by)
    table = duck.read_parquet(tmp)
    ident = content_id(table)
    path = folder / f"{ident}.parquet"
    tmp.replace(path)
    return ident, path, table


def datasets_dir(home: Path, kind: str = "market") -> Path:
    return home / "datasets" / kind


def spec_part(spec: ModelSpec) -> dict:
    """What of a model file decides its market dataset."""
    return {"venue": spec.venue, "market": spec.market, "symbols": spec.symbols, "timeframe": spec.timeframe,
            "horizon": spec.horizon, "inputs": spec.inputs, "crash_drawdown": spec.crash_drawdown,
            "window": {"start": str(spec.window.start) if spec.window.start else None,
                       "end": str(spec.window.end) if spec.window.end else None}}


def build_market(spec: ModelSpec, md: MarketData, home: Path) -> Dataset:
    """Build (or find, when the same spec, data and code built it before) the model's market dataset."""
    end = _ns(spec.window.end)
    read: dict[str, tuple[str, dict[str, np.ndarray]]] = {}
    missing = []
    for symbol in spec.symbols:
        key, cols = read_series(md, spec.venue, spec.market, symbol, spec.timeframe, None, end)
        if len(cols["close"]) <= spec.horizon:
            last = end or time.time_ns() // DAY * DAY
            first = _ns(spec.window.start) or last - 365 * DAY  # no start given: a year of history
            missing.append(f"{symbol} {spec.timeframe}: {len(cols['close'])} bars stored; fill with:\n  "
                           + fill_command(key, first, last))
        read[symbol] = (str(key), cols)
    if missing:
        raise DatasetError("the dataset needs candles that are not stored:\n" + "\n".join(missing))
    series = {s: {"source": k, "hash": _series_hash(c)} for s, (k, c) in read.items()}
    build = {"kind": "market", "spec": spec_part(spec), "series": series, "code": code_digest()}
    build_key = hashlib.sha256(json.dumps(build, sort_keys=True).encode()).hexdigest()[:16]
    folder = datasets_dir(home)
    for found in sorted(folder.glob("*.json")) if folder.exists() else ():
        man = json.loads(found.read_text())
        parquet = found.with_suffix(".parquet")
        if man.get("build_key") == build_key and parquet.exists():
            return Dataset(man["id"], parquet, man, duck.read_parquet(parquet))
    tables = [symbol_table(spec, s, c) for s, (_, c) in read.items()]
    empty = [s for s, t in zip(read, tables) if t.num_rows == 0]
    if empty:
        raise DatasetError(f"no rows for {', '.join(empty)} in the window after the features' warm-up: "
                           "widen the window or store more history before it")
    ident, path, table = _write(tables, folder, "time, symbol")
    times = table.column("time").to_numpy().astype("datetime64[ns]").astype(np.int64)
    manifest = {**build, "id": ident, "build_key": build_key, "rows": table.num_rows, "columns": table.column_names,
                "first": day(int(times.min())), "last": day(int(times.max())),
                "rows_by_symbol": {s: t.num_rows for s, t in zip(read, tables)}}
    artifacts.write_json(path.with_suffix(".json"), manifest)
    return Dataset(ident, path, manifest, table)


def forward_performance(equity: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(return, Sharpe, max drawdown) of an equity curve over (t, t+H] for each bar t (NaN for the last H)."""
    n = len(equity)
    ret, sharpe, mdd = (np.full(n, np.nan) for _ in range(3))
    if n <= horizon:
        return ret, sharpe, mdd
    t = np.arange(n - horizon)
    ret[t] = equity[t + horizon] / equity[t] - 1.0
    bar = np.diff(equity) / equity[:-1]  # bar[i]: the return of bar i+1
    windows = np.lib.stride_tricks.sliding_window_view(bar, horizon)[: n - horizon]
    sd = windows.std(axis=1, ddof=1) if horizon > 1 else np.zeros(len(t))
    sharpe[t] = np.where(sd > 0, windows.mean(axis=1) / np.where(sd > 0, sd, 1.0) * np.sqrt(horizon), 0.0)
    path = np.lib.stride_tricks.sliding_window_view(equity, horizon + 1)[: n - horizon]
    peaks = np.maximum.accumulate(path, axis=1)
    mdd[t] = (path / peaks - 1.0).min(axis=1)
    return ret, sharpe, mdd


def build_strategies(config, spec: ModelSpec, md: MarketData, home: Path) -> Dataset:
    """The strategy dataset of a composite's pool (``config``) on its forecaster's spec."""
    from tradebus.engine.market import load_market
    from tradebus.factory.sim import run_kernel

    market = build_market(spec, md, home)
    step = tf_ns(spec.timeframe)
    mt = market.table
    times_all = mt.column("time").to_numpy().astype("datetime64[ns]").astype(np.int64)
    syms_all = np.asarray(mt.column("symbol").to_pylist(), dtype=object)
    xs = [n for n in mt.column_names if n.startswith("x.")]
    tables, series = [], {}
    for symbol in spec.symbols:
        rows = syms_all == symbol
        t_sym = times_all[rows]
        window = f"{np.datetime64(int(t_sym.min()) - step, 'ns')}:{np.datetime64(int(t_sym.max()), 'ns')}"
        for name, member in (config.pool or {}).items():
            mc = config.member(name, symbol)
            m = load_market(mc, window, md)
            run = run_kernel(mc, m)
            series[f"{symbol}/{name}"] = m.data_hash[:16]
            pos_at = {int(t): q for t, q in zip(run.times.tolist(), run.curve[:, 3].tolist())}
            eq = run.curve[:, 2]
            ret, sharpe, mdd = forward_performance(eq, spec.horizon)
            at = {int(t): i for i, t in enumerate(run.times.tolist())}
            idx = np.array([at.get(int(t), -1) for t in t_sym.tolist()], dtype=np.int64)
            ok = idx >= 0
            pick = lambda a: np.where(ok, a[np.maximum(idx, 0)], np.nan)  # noqa: E731
            data: dict[str, pa.Array] = {
                "time": pa.array(t_sym, type=pa.timestamp("ns", tz="UTC")),
                "symbol": pa.array([symbol] * len(t_sym), type=pa.string()),
                "timeframe": pa.array([spec.timeframe] * len(t_sym), type=pa.string()),
                "member": pa.array([name] * len(t_sym), type=pa.string()),
                "strategy": pa.array([member.id] * len(t_sym), type=pa.string()),
                "params": pa.array([json.dumps(mc.params().model_dump(mode="json"), sort_keys=True)] * len(t_sym),
                                   type=pa.string()),
                "position": pa.array(np.sign([pos_at.get(int(t), 0.0) for t in t_sym.tolist()]).astype(np.int8),
                                     type=pa.int8()),
            }
            for x in xs:
                data[x] = pa.array(mt.column(x).to_numpy()[rows], type=pa.float64())
            data["fwd_return"] = pa.array(pick(ret), type=pa.float64())
            data["fwd_sharpe"] = pa.array(pick(sharpe), type=pa.float64())
            data["fwd_max_drawdown"] = pa.array(pick(mdd), type=pa.float64())
            tables.append(pa.table(data))
    ident, path, table = _write(tables, datasets_dir(home, "strategies"), "time, symbol, member")
    manifest = {"kind": "strategies", "id": ident, "market_dataset": market.id, "spec": spec_part(spec),
                "pool": {k: v.model_dump(mode="json") for k, v in (config.pool or {}).items()},
                "risk": config.risk.model_dump(mode="json"), "costs": config.costs.model_dump(mode="json"),
                "series": series, "code": code_digest(), "rows": table.num_rows, "columns": table.column_names}
    artifacts.write_json(path.with_suffix(".json"), manifest)
    return Dataset(ident, path, manifest, table)
