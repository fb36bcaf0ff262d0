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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tradebus.bus import codec
from tradebus.bus.events import Event
from tradebus.engine.metrics import underwater
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
    dd = underwater(equity)
    _csv(out / "equity.csv", ("time", "equity", "drawdown"),
         ([iso(t), repr(e), repr(d)] for t, e, d in zip(times.tolist(), equity.tolist(), dd.tolist())))
    _csv(out / "account_curve.csv", CURVE_COLUMNS,
         ([iso(t), *map(repr, row)] for t, row in zip(times.tolist(), curve.tolist())))


def write_events(path: Path, events: Iterable[Event]) -> None:
    atomic_write(path, b"".join(codec.to_json(e) + b"\n" for e in events))


@dataclass
class RunFolder:
    """What a replay's folder says about it: enough to compare two runs."""

    path: Path
    system: str
    window: str
    start: str
    end: str
    run: str
    metrics: dict
    times: np.ndarray  # bar close times, ns
    equity: np.ndarray


def read_run(folder: Path) -> RunFolder:
    """Read ``result.json`` and ``equity.csv`` of a replay's output folder; a missing or malformed file is
    a ValueError naming it."""
    result_path, equity_path = folder / "result.json", folder / "equity.csv"
    for path in (result_path, equity_path):
        if not path.is_file():
            raise ValueError(f"{path}: not found; a run folder holds what `tradebus replay` writes "
                             "(runs/SYSTEM/WINDOW)")
    try:
        result = json.loads(result_path.read_text())
        fields = {k: result[k] for k in ("system", "window", "start", "end", "run", "metrics")}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{result_path}: not a replay's result ({type(exc).__name__}: {exc})") from None
    try:
        rows = list(csv.reader(io.StringIO(equity_path.read_text())))
        if rows[0][:2] != ["time", "equity"]:
            raise ValueError(f"header {rows[0]}")
        times = np.array([np.datetime64(r[0].rstrip("Z"), "ns") for r in rows[1:]]).astype(np.int64)
        equity = np.array([float(r[1]) for r in rows[1:]])
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"{equity_path}: not a replay's equity curve ({exc})") from None
    return RunFolder(folder, times=times, equity=equity, **fields)
