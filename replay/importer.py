"""Read candle, mark-price and funding files (Parquet, CSV, Arrow/feather) into numpy columns.

Column names are matched case-insensitively from a short list of common spellings (tradebus/Bybit,
freqtrade, exchange dumps); the time column may be a timestamp, an ISO string, or epoch seconds,
milliseconds, microseconds or nanoseconds (told apart by magnitude). Anything unrecognised is an
error that names the file, what was found and what is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.feather

from tradebus import duck
from tradebus.engine.marketdata import Columns

TIME_NAMES = {
    "candles": ("open_time", "date", "timestamp", "time", "datetime", "start", "starttime", "open_time_ms"),
    "mark": ("open_time", "date", "timestamp", "time", "datetime", "start", "starttime"),
    "funding": ("funding_time", "fundingratetimestamp", "timestamp", "time", "date", "open_time"),
}
VALUE_NAMES = {
    "candles": {"open": ("open",), "high": ("high",), "low": ("low",), "close": ("close",),
                "volume": ("volume", "vol"), "turnover": ("turnover", "quote_volume")},
    "mark": {"open": ("open",), "high": ("high",), "low": ("low",), "close": ("close",)},
    "funding": {"rate": ("funding_rate", "fundingrate", "rate")},
}
OPTIONAL = {"turnover"}
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".feather": "feather", ".arrow": "feather",
           ".ipc": "feather"}


class ImportFormatError(ValueError):
    """A file tradebus cannot read as market data."""


def _pick(columns: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in columns:
            return columns[name]
    return None


def _epoch_ns(raw: np.ndarray, path: Path, column: str) -> np.ndarray:
    """Scale integer epoch times to nanoseconds by their magnitude."""
    if len(raw) == 0:
        return raw.astype(np.int64)
    top = float(np.nanmax(np.abs(raw)))
    for limit, scale in ((1e11, 10**9), (1e14, 10**6), (1e17, 10**3), (1e20, 1)):
        if top < limit:
            return (raw.astype(np.int64) * scale).astype(np.int64)
    raise ImportFormatError(f"{path}: column {column!r} holds numbers too large to be epoch times")


def read_file(path: Path, kind: str = "candles") -> Columns:
    """Read one market data file into columns sorted by time."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImportFormatError(f"{path}: unknown file type {path.suffix!r}; allowed: {', '.join(FORMATS)}")
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    con = duck.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")  # naive times in files are UTC, whatever this machine's zone
        if fmt == "feather":
            con.register("src", pyarrow.feather.read_table(path))
        else:
            reader = "read_parquet" if fmt == "parquet" else "read_csv"
            escaped = str(path).replace("'", "''")
            con.execute(f"CREATE VIEW src AS SELECT * FROM {reader}('{escaped}')")
        described = con.execute("DESCRIBE src").fetchall()
        columns = {row[0].lower(): row[0] for row in described}
        types = {row[0]: row[1].upper() for row in described}
        time_col = _pick(columns, TIME_NAMES[kind])
        if time_col is None:
            raise ImportFormatError(
                f"{path}: no time column among {sorted(columns)}; expected one of {', '.join(TIME_NAMES[kind])}"
            )
        selects = []
        for target, names in VALUE_NAMES[kind].items():
            source = _pick(columns, names)
            if source is None:
                if target in OPTIONAL:
                    selects.append(f"0.0::DOUBLE AS {target}")
                    continue
                raise ImportFormatError(
                    f"{path}: no {target!r} column among {sorted(columns)}; expected one of {', '.join(names)}"
                )
            selects.append(f'"{source}"::DOUBLE AS {target}')
        ttype = types[time_col]
        if "TIMESTAMP" in ttype or ttype == "DATE":
            time_expr, numeric = f'epoch_ns("{time_col}"::TIMESTAMPTZ)', False
        elif ttype == "VARCHAR":
            time_expr, numeric = f'epoch_ns("{time_col}"::TIMESTAMPTZ)', False
        else:
            time_expr, numeric = f'"{time_col}"::DOUBLE', True
        try:
            result = con.execute(
                f"SELECT {time_expr} AS open_time, {', '.join(selects)} FROM src ORDER BY 1"
            ).fetchnumpy()
        except duck.DuckError as exc:
            raise ImportFormatError(f"{path}: cannot read its columns as market data: {exc}") from None
    finally:
        con.close()
    cols = {k: np.asarray(v) for k, v in result.items()}
    if numeric:
        cols["open_time"] = _epoch_ns(cols["open_time"], path, time_col)
    return cols
