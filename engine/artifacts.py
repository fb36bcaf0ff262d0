"""Replay artifacts: result.json, trades.csv, equity.csv, account_curve.csv, run_manifest.json, events.jsonl.

Every file is a pure function of the run, written with fixed formatting (sorted JSON keys, ``repr``
floats, ISO-8601 UTC times), so a rerun produces byte-identical files. Each is written to a temporary
name and renamed, so an interrupted run never leaves a half-written artifact.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tradebus.bus import codec
from tradebus.bus.events import Event
from tradebus.engine.trades import FIELDS, Trade

CURVE_COLUMNS = ("time", "close", "balance", "equity", "position_qty", "unrealized_pnl", "realized_pnl",
                 "fees", "funding")


def iso(ns: int) -> str:
    """ISO-8601 UTC with seconds: 2025-01-01T00:05:00Z."""
    return str(np.datetime64(int(ns), "ns").astype("datetime64[s]")) + "Z"


def clean(value: object) -> object:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name, then rename: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, (json.dumps(clean(data), indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def _csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue().encode())


def trade_rows(trades: Sequence[Trade]) -> list[list[object]]:
    return [[iso(t.entry_time), iso(t.exit_time), t.side, repr(t.qty), repr(t.entry_price), repr(t.exit_price),
             repr(t.pnl), repr(t.fees), repr(t.funding), repr(t.return_pct), t.bars_held] for t in trades]


def write_trades(path: Path, trades: Sequence[Trade]) -> None:
    _csv(path, FIELDS, trade_rows(trades))


def write_curves(out: Path, times: np.ndarray, curve: np.ndarray) -> None:
    """equity.csv (time, equity, drawdown) and account_curve.csv (everything per bar)."""
    equity = curve[:, 2]
    peak = np.maximum.accumulate(equity) if len(equity) else equity
    dd = equity / peak - 1.0 if len(equity) else equity
    _csv(out / "equity.csv", ("time", "equity", "drawdown"),
         ([iso(t), repr(e), repr(d)] for t, e, d in zip(times.tolist(), equity.tolist(), dd.tolist())))
    _csv(out / "account_curve.csv", CURVE_COLUMNS,
         ([iso(t), *map(repr, row)] for t, row in zip(times.tolist(), curve.tolist())))


def write_events(path: Path, events: Iterable[Event]) -> None:
    atomic_write(path, b"".join(codec.to_json(e) + b"\n" for e in events))
