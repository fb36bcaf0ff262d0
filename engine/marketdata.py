"""Historical market data in DuckDB: candles, mark-price candles and funding rates.

One file, ``$TRADEBUS_HOME/market.duckdb``. Times are int64 nanoseconds since the epoch (UTC), the bar's
*open* time, so columns move to numpy without conversion. Every write is an upsert keyed by
(venue, market, symbol, timeframe, open_time) inside one transaction: re-importing or re-fetching the
same data changes nothing, and a failed write leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from tradebus import duck, settings
from tradebus.components.timeframes import bucket_offset, infer_timeframe, tf_ns

Columns = dict[str, np.ndarray]

KINDS = ("candles", "mark", "funding")
_TABLE = {"candles": "candles", "mark": "mark_candles", "funding": "funding"}
VALUE_COLUMNS = {
    "candles": ("open", "high", "low", "close", "volume", "turnover"),
    "mark": ("open", "high", "low", "close"),
    "funding": ("rate",),
}

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS candles (
        venue VARCHAR NOT NULL, market VARCHAR NOT NULL, symbol VARCHAR NOT NULL, timeframe VARCHAR NOT NULL,
        open_time BIGINT NOT NULL, open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL,
        close DOUBLE NOT NULL, volume DOUBLE NOT NULL, turnover DOUBLE NOT NULL,
        PRIMARY KEY (venue, market, symbol, timeframe, open_time))""",
    """CREATE TABLE IF NOT EXISTS mark_candles (
        venue VARCHAR NOT NULL, market VARCHAR NOT NULL, symbol VARCHAR NOT NULL, timeframe VARCHAR NOT NULL,
        open_time BIGINT NOT NULL, open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL,
        close DOUBLE NOT NULL,
        PRIMARY KEY (venue, market, symbol, timeframe, open_time))""",
    # Funding has no timeframe; the column holds FUNDING_TF so every table has the same key.
    """CREATE TABLE IF NOT EXISTS funding (
        venue VARCHAR NOT NULL, market VARCHAR NOT NULL, symbol VARCHAR NOT NULL, timeframe VARCHAR NOT NULL,
        open_time BIGINT NOT NULL, rate DOUBLE NOT NULL,
        PRIMARY KEY (venue, market, symbol, timeframe, open_time))""",
)
FUNDING_TF = "-"


class MarketDataError(ValueError):
    """Market data that is missing, malformed or inconsistent."""


class SeriesRefused(MarketDataError):
    """Rows of one series that fail ``validate``; ``key`` says which series."""

    def __init__(self, key: "SeriesKey", problems: list[str]) -> None:
        super().__init__(f"{key}: " + "; ".join(problems) + "; nothing was written")
        self.key = key


@dataclass(frozen=True)
class SeriesKey:
    """Which series: venue, market, symbol, timeframe and kind (candles, mark or funding)."""

    venue: str
    market: str
    symbol: str
    timeframe: str
    kind: str = "candles"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MarketDataError(f"kind {self.kind!r}: allowed are {', '.join(KINDS)}")
        if self.kind == "funding":
            object.__setattr__(self, "timeframe", FUNDING_TF)
        else:
            tf_ns(self.timeframe)

    def __str__(self) -> str:
        tf = "" if self.kind == "funding" else f" {self.timeframe}"
        return f"{self.kind} {self.venue}/{self.market} {self.symbol}{tf}"


@dataclass(frozen=True)
class Coverage:
    key: SeriesKey
    rows: int
    first: int | None
    last: int | None


@dataclass
class CheckReport:
    key: SeriesKey
    rows: int
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (last open_time before, first after)
    missing_bars: int = 0
    misaligned: int = 0
    ohlc_violations: list[int] = field(default_factory=list)  # open_times
    spacing: str | None = None  # the timeframe the rows' spacing shows

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.misaligned or self.ohlc_violations)

    @property
    def likely_cause(self) -> str:
        """What most likely explains the problems, and what to do, or ''."""
        k = self.key
        if self.spacing is not None and self.spacing != k.timeframe:
            return (f"its rows are {self.spacing} apart: a {self.spacing} file stored as {k.timeframe}? Delete it"
                    f" (tradebus data delete --symbol {k.symbol} --kind {k.kind} --timeframe {k.timeframe}) and"
                    f" import the file again: the timeframe is now read from its rows")
        if self.gaps and not self.misaligned:
            return "the venue or the file is missing those bars: fetch the range again (tradebus data fetch)"
        return ""


def default_path() -> Path:
    """Return the market data file in the data home."""
    return settings.data_home() / "market.duckdb"


def validate(cols: Columns, key: SeriesKey) -> list[str]:
    """Return what is wrong with columns about to be stored (empty if nothing)."""
    problems: list[str] = []
    t = cols["open_time"]
    values = VALUE_COLUMNS[key.kind]
    for name in values:
        bad = ~np.isfinite(cols[name])
        if bad.any():
            problems.append(f"{int(bad.sum())} non-finite {name} value(s), first at {_iso(int(t[bad][0]))}")
    if len(np.unique(t)) != len(t):
        problems.append(f"{len(t) - len(np.unique(t))} duplicate open_time value(s)")
    if key.kind == "funding":
        return problems
    length, offset = tf_ns(key.timeframe), bucket_offset(key.timeframe)
    misaligned = (t - offset) % length != 0
    if misaligned.any():
        problems.append(
            f"{int(misaligned.sum())} open_time value(s) not on a {key.timeframe} boundary,"
            f" first {_iso(int(t[misaligned][0]))}"
        )
    o, h, l, c = cols["open"], cols["high"], cols["low"], cols["close"]
    bad = (h < np.maximum(o, c)) | (l > np.minimum(o, c)) | (l <= 0)
    if bad.any():
        problems.append(f"{int(bad.sum())} bar(s) with inconsistent OHLC (high < max(open, close), low > min, or low <= 0), first at {_iso(int(t[bad][0]))}")
    if key.kind == "candles" and (cols["volume"] < 0).any():
        problems.append("negative volume")
    return problems


def _iso(ns: int) -> str:
    return str(np.datetime64(ns, "ns"))[:19] + "Z"


class MarketData(duck.Database):
    """The market data file. Open with ``MarketData.open(path, read_only=...)``; close when done."""

    SCHEMA = _SCHEMA

    @classmethod
    def open(cls, path: Path | str | None = None, *, read_only: bool = False) -> "MarketData":
        """Open (creating unless ``read_only``) the market data file; ``path`` None means the data home's."""
        return cls._open(Path(path) if path is not None else default_path(), read_only)

    @classmethod
    def missing(cls, path: Path) -> Exception:
        return MarketDataError(f"no market data at {path}: import or fetch some first (`tradebus data --help`)")

    # -- writing --------------------------------------------------------------------------------

    def write(self, key: SeriesKey, cols: Columns) -> int:
        """Validate and upsert rows of one series atomically; return how many rows were new."""
        return self.write_all([(key, cols)])[0]

    def write_all(self, series: list[tuple[SeriesKey, Columns]]) -> list[int]:
        """Validate every series, then upsert them all in one transaction: all or nothing. Return how many
        rows were new in each."""
        ready = []
        for key, cols in series:
            cols = dict(cols)
            if key.kind == "candles" and "turnover" not in cols:
                cols["turnover"] = np.zeros(len(cols["open_time"]))
            problems = validate(cols, key)
            if problems:
                raise SeriesRefused(key, problems)
            frame = {"open_time": np.asarray(cols["open_time"], dtype=np.int64)}
            frame.update({name: np.asarray(cols[name], dtype=np.float64) for name in VALUE_COLUMNS[key.kind]})
            ready.append((key, frame))
        before = [self._count(key) for key, _ in ready]
        self._con.execute("BEGIN TRANSACTION")
        try:
            for key, frame in ready:
                if len(frame["open_time"]) == 0:
                    continue
                names = ", ".join(VALUE_COLUMNS[key.kind])
                self._con.register("incoming", frame)
                self._con.execute(
                    f"INSERT OR REPLACE INTO {_TABLE[key.kind]} (venue, market, symbol, timeframe, open_time, {names})"
                    f" SELECT ?, ?, ?, ?, open_time, {names} FROM incoming",
                    [key.venue, key.market, key.symbol, key.timeframe],
                )
                self._con.unregister("incoming")
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        return [self._count(key) - n for (key, _), n in zip(ready, before)]

    def delete(self, key: SeriesKey, start: int | None = None, end: int | None = None) -> int:
        """Delete a series' rows with ``start <= open_time < end`` in one transaction; return how many."""
        where, params = self._where(key, start, end)
        before = self._count(key)
        self._con.execute("BEGIN TRANSACTION")
        try:
            self._con.execute(f"DELETE FROM {_TABLE[key.kind]} WHERE {where}", params)
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        return before - self._count(key)

    # -- reading --------------------------------------------------------------------------------

    @staticmethod
    def _where(key: SeriesKey, start: int | None = None, end: int | None = None) -> tuple[str, list]:
        where = "venue = ? AND market = ? AND symbol = ? AND timeframe = ?"
        params: list = [key.venue, key.market, key.symbol, key.timeframe]
        if start is not None:
            where += " AND open_time >= ?"
            params.append(start)
        if end is not None:
            where += " AND open_time < ?"
            params.append(end)
        return where, params

    def _count(self, key: SeriesKey) -> int:
        where, params = self._where(key)
        return self._con.execute(f"SELECT count(*) FROM {_TABLE[key.kind]} WHERE {where}", params).fetchone()[0]

    def read(self, key: SeriesKey, start: int | None = None, end: int | None = None) -> Columns:
        """Return a series' rows with ``start <= open_time < end`` as numpy columns, in time order."""
        where, params = self._where(key, start, end)
        names = ", ".join(("open_time", *VALUE_COLUMNS[key.kind]))
        result = self._con.execute(
            f"SELECT {names} FROM {_TABLE[key.kind]} WHERE {where} ORDER BY open_time", params
        ).fetchnumpy()
        return {k: np.asarray(v) for k, v in result.items()}

    def coverage(self, key: SeriesKey, start: int | None = None, end: int | None = None) -> Coverage:
        """Return how many rows a series has (optionally within [start, end)) and its first/last open time."""
        where, params = self._where(key, start, end)
        rows, first, last = self._con.execute(
            f"SELECT count(*), min(open_time), max(open_time) FROM {_TABLE[key.kind]} WHERE {where}", params
        ).fetchone()
        return Coverage(key, rows, first, last)

    def remember(self, key: tuple, make: Callable[[], Any]) -> Any:
        """Something derived from stored series, made afresh (``MemoryMarket`` keeps them for a sweep)."""
        return make()

    def series(self) -> Iterator[Coverage]:
        """Yield the coverage of every stored series."""
        for kind in KINDS:
            rows = self._con.execute(
                f"SELECT venue, market, symbol, timeframe, count(*), min(open_time), max(open_time)"
                f" FROM {_TABLE[kind]} GROUP BY ALL ORDER BY ALL"
            ).fetchall()
            for venue, market, symbol, tf, n, first, last in rows:
                yield Coverage(SeriesKey(venue, market, symbol, tf, kind), n, first, last)

    def check(self, key: SeriesKey) -> CheckReport:
        """Look for gaps, misaligned times and inconsistent OHLC in a stored series."""
        cols = self.read(key)
        t = cols["open_time"]
        report = CheckReport(key, len(t))
        if key.kind == "funding" or len(t) == 0:
            return report
        length, offset = tf_ns(key.timeframe), bucket_offset(key.timeframe)
        report.misaligned = int(((t - offset) % length != 0).sum())
        report.spacing = infer_timeframe(t)
        step = np.diff(t)
        for i in np.flatnonzero(step > length):
            report.gaps.append((int(t[i]), int(t[i + 1])))
            report.missing_bars += int(step[i] // length - 1)
        o, h, l, c = cols["open"], cols["high"], cols["low"], cols["close"]
        bad = (h < np.maximum(o, c)) | (l > np.minimum(o, c)) | (l <= 0)
        report.ohlc_violations = [int(x) for x in t[bad]]
        return report
