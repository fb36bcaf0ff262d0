"""Read candle, mark-price and funding files (Parquet, CSV, Arrow/feather) into numpy columns.

Column names are matched case-insensitively from a short list of common spellings (tradebus/Bybit,
freqtrade, exchange dumps); the time column may be a timestamp, an ISO string, or epoch seconds,
milliseconds, microseconds or nanoseconds (told apart by magnitude). Anything unrecognised is an
error that names the file, what was found and what is accepted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow
import pyarrow.feather

from tradebus import duck
from tradebus.components.timeframes import TIMEFRAMES, infer_timeframe
from tradebus.configs.yamlfile import clip
from tradebus.engine.marketdata import Columns, SeriesKey

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


@dataclass(frozen=True)
class NameGuess:
    """What a file's name and folder say about it (None: they do not say)."""

    symbol: str | None = None
    timeframe: str | None = None
    kind: str | None = None


# freqtrade: BTC_USDT-5m.feather, SOL_USDT_USDT-5m-futures.feather, ...-1h-mark.feather, ...-8h-funding_rate.feather
_FREQTRADE = re.compile(r"^(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)(?:_[A-Za-z0-9]+)?-(?P<tf>[0-9]+[a-zA-Z]+)"
                        r"(?:-(?P<what>futures|spot|mark|funding_rate|index|premiumIndex))?$")
_KIND_WORDS = {"mark": "mark", "funding_rate": "funding", "funding": "funding"}


def guess_from_name(path: Path) -> NameGuess:
    """Symbol, timeframe and kind from a file's name and its folder: ``BTCUSDT.parquet`` under ``5m/`` or
    ``mark_1h/``, or freqtrade's ``SOL_USDT_USDT-5m-futures.feather``."""
    m = _FREQTRADE.match(path.stem)
    if m:
        tf = m["tf"] if m["tf"] in TIMEFRAMES else None
        return NameGuess(f"{m['base']}{m['quote']}".upper(), tf, _KIND_WORDS.get(m["what"] or "", None))
    folder = path.parent.name.lower()
    kind = next((k for word, k in _KIND_WORDS.items() if word in folder), None)
    tf = next((t for t in folder.replace("-", "_").split("_") if t in TIMEFRAMES), None)
    symbol = path.stem.upper() if re.fullmatch(r"[A-Za-z0-9]+", path.stem) else None
    return NameGuess(symbol, tf, kind)


def columns_of(path: Path) -> list[str]:
    """The column names of a market data file (lower-cased), without reading its rows."""
    fmt = _format(path)
    con = duck.connect()
    try:
        try:
            _view(con, path, fmt)
            return [row[0].lower() for row in con.execute("DESCRIBE src").fetchall()]
        except (duck.DuckError, pyarrow.ArrowException, OSError) as exc:
            raise _unreadable(path, fmt, exc) from None
    finally:
        con.close()


def kind_of(columns: list[str]) -> str:
    """What the columns hold: funding rates, candles (with volume) or mark prices (OHLC, no volume)."""
    named = {c: c for c in columns}
    if _pick(named, VALUE_NAMES["funding"]["rate"]):
        return "funding"
    return "candles" if _pick(named, VALUE_NAMES["candles"]["volume"]) else "mark"


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
    fmt = _format(path)
    con = duck.connect()
    try:
        try:
            cols, time_col, numeric = _select(con, path, fmt, kind)
        except (duck.DuckError, pyarrow.ArrowException, OSError) as exc:
            raise _unreadable(path, fmt, exc) from None
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


def _format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImportFormatError(f"{path}: unknown file type {path.suffix!r}; allowed: {', '.join(FORMATS)}")
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    return fmt


def _unreadable(path: Path, fmt: str, exc: Exception) -> ImportFormatError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ImportFormatError(f"{path}: not a readable {fmt} file ({clip(first)})")


def _view(con, path: Path, fmt: str) -> None:
    """The file as view ``src``."""
    con.execute("SET TimeZone = 'UTC'")  # naive times in files are UTC, whatever this machine's zone
    if fmt == "feather":
        con.register("src", pyarrow.feather.read_table(path))
    else:
        reader = "read_parquet" if fmt == "parquet" else "read_csv"
        escaped = str(path).replace("'", "''")
        con.execute(f"CREATE VIEW src AS SELECT * FROM {reader}('{escaped}')")


def _select(con, path: Path, fmt: str, kind: str) -> tuple[Columns, str, bool]:
    """The file's time and value columns, sorted by time; nulls refused by column."""
    _view(con, path, fmt)
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
        first = str(exc).strip().splitlines()[0]  # DuckDB appends the generated SQL: not the user's concern
        raise ImportFormatError(f"{path}: cannot read its columns as market data: {clip(first)}") from None
    return {k: np.asarray(v) for k, v in result.items()}, time_col, numeric


def _iso(ns: int) -> str:
    return str(np.datetime64(ns, "ns"))[:19] + "Z"


@dataclass
class ImportPlan:
    """One file, read and checked, and the series it goes to; ``told`` says where each part came from."""

    path: Path
    key: SeriesKey
    cols: Columns
    told: list[str]


def plan_import(path: Path, venue: str, market: str, *, symbol: str | None = None, timeframe: str | None = None,
                kind: str | None = None) -> ImportPlan:
    """Read ``path`` and decide its series: what the options say, else what its name, columns and rows
    show. A timeframe the rows contradict is refused, not stored under the wrong name."""
    name = guess_from_name(path)
    told = []
    if kind is None:
        kind = name.kind or kind_of(columns_of(path))
        told.append(f"kind from the {'name' if name.kind else 'columns'}")
    cols = read_file(path, kind)
    if symbol is None:
        if name.symbol is None:
            raise ImportFormatError(f"{path}: the name does not say which symbol it holds; pass --symbol")
        symbol = name.symbol
        told.append("symbol from the name")
    if kind == "funding":
        return ImportPlan(path, SeriesKey(venue, market, symbol, "-", kind), cols, told)
    rows = infer_timeframe(cols["open_time"])
    for said, by in ((timeframe, "--timeframe"), (name.timeframe, "its name")):
        if said is not None and rows is not None and said != rows:
            raise ImportFormatError(f"{path}: {by} says {said} but its rows are {rows} apart; a series stored"
                                    f" under the wrong timeframe reads as gaps or overlaps")
    if timeframe is None:
        timeframe = rows or name.timeframe
        if timeframe is None:
            raise ImportFormatError(f"{path}: neither its rows nor its name show the timeframe; pass --timeframe")
        told.append(f"timeframe from the {'rows' if rows else 'name'}")
    return ImportPlan(path, SeriesKey(venue, market, symbol, timeframe, kind), cols, told)
