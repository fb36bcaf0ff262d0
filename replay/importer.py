"""Read candle, mark-price and funding files (Parquet, CSV, Arrow/feather) into numpy columns.

Column names are matched case-insensitively from a short list of common spellings (tradebus/Bybit,
freqtrade, exchange dumps); the time column may be a timestamp, an ISO string, or epoch seconds,
milliseconds, microseconds or nanoseconds (told apart by magnitude). Anything unrecognised is an
error that names the file, what was found and what is accepted.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow
import pyarrow.feather

from tradebus import duck
from tradebus.configs.yamlfile import clip
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
# Crypto market data starts after this, and no closed bar lies in the future: a time outside is a unit
# mistake (seconds read as milliseconds, a row counter taken for a time), not data.
EARLIEST_NS = 946_684_800 * 10**9  # 2000-01-01
FUTURE_SLACK_NS = 86_400 * 10**9
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
            if top * scale >= 2**63:  # a far-future time: refuse it rather than wrap around
                break
            return (raw.astype(np.int64) * scale).astype(np.int64)
    raise ImportFormatError(f"{path}: column {column!r} holds numbers too large to be epoch times")


def read_file(path: Path, kind: str = "candles") -> Columns:
    """Read one market data file into columns sorted by time; refuse, naming the file and what is wrong,
    one that is unreadable, mislabelled, empty, or has a missing value or an implausible time."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImportFormatError(f"{path}: unknown file type {path.suffix!r}; allowed: {', '.join(FORMATS)}")
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    con = duck.connect()
    try:
        try:
            cols, time_col, numeric = _select(con, path, fmt, kind)
        except (duck.DuckError, pyarrow.ArrowException, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImportFormatError(f"{path}: not a readable {fmt} file ({clip(first)})") from None
    finally:
        con.close()
    if len(cols["open_time"]) == 0:
        raise ImportFormatError(f"{path}: no rows")
    if numeric:
        raw = cols["open_time"]
        if not np.isfinite(raw).all():
            raise ImportFormatError(f"{path}: column {time_col!r} has {int((~np.isfinite(raw)).sum())} non-finite"
                                    " time value(s)")
        cols["open_time"] = _epoch_ns(raw, path, time_col)
    t = cols["open_time"]
    latest = time.time_ns() + FUTURE_SLACK_NS
    bad = (t < EARLIEST_NS) | (t > latest)
    if bad.any():
        raise ImportFormatError(
            f"{path}: column {time_col!r}: {int(bad.sum())} time(s) outside 2000-01-01 .. tomorrow, first"
            f" {_iso(int(t[bad][0]))}; is the column in the unit it seems to be?")
    return cols


def _select(con, path: Path, fmt: str, kind: str) -> tuple[Columns, str, bool]:
    """The file's time and value columns, sorted by time; nulls refused by column."""
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
    sources = {"open_time": time_col}
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
        sources[target] = source
        selects.append(f'"{source}"::DOUBLE AS {target}')
    nulls = con.execute("SELECT count(*), " + ", ".join(f'count(*) - count("{c}")' for c in sources.values())
                        + " FROM src").fetchone()
    for (target, source), missing in zip(sources.items(), nulls[1:]):
        if missing:
            raise ImportFormatError(f"{path}: column {source!r} is empty in {missing:,} of {nulls[0]:,} rows;"
                                    " every row needs a value")
    ttype = types[time_col]
    if "TIMESTAMP" in ttype or ttype in ("DATE", "VARCHAR"):
        time_expr, numeric = f'epoch_ns("{time_col}"::TIMESTAMPTZ)', False
    else:
        time_expr, numeric = f'"{time_col}"::DOUBLE', True
    try:
        result = con.execute(f"SELECT {time_expr} AS open_time, {', '.join(selects)} FROM src ORDER BY 1").fetchnumpy()
    except duck.DuckError as exc:
        raise ImportFormatError(f"{path}: cannot read its columns as market data: {clip(str(exc))}") from None
    return {k: np.asarray(v) for k, v in result.items()}, time_col, numeric


def _iso(ns: int) -> str:
    return str(np.datetime64(ns, "ns"))[:19] + "Z"
