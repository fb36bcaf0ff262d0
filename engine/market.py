"""Historical market data for a run: which stored series, which window, how much warm-up, loaded at once.

Replays, sweeps, validation and scenarios all load through ``load_market``, so each sees the same bars
with the same warm-up: the history before the window that seeds the indicators (``warmup_ns``).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from tradebus.components.timeframes import HOUR, TIMEFRAMES, day, tf_ns
from tradebus.configs.schema import SystemConfig, WindowSpec
from tradebus.engine.marketdata import Columns, MarketData, SeriesKey
from tradebus.engine.resample import resample
from tradebus.engine.wiring import warmup_ns


class MissingDataError(RuntimeError):
    """The market data a replay needs is not stored; ``commands`` fill it."""

    def __init__(self, message: str, commands: list[str], keys: list[tuple[SeriesKey, int, int]]) -> None:
        super().__init__(message)
        self.commands = commands
        self.keys = keys


@dataclass
class MarketSlice:
    """Everything a replay reads, already cut to the window plus warm-up."""

    start: int  # first traded bar's open time
    end: int  # exclusive
    candles: Columns  # primary timeframe, warm-up included
    first: int  # index of the first traded bar in ``candles``
    higher: dict[str, Columns] = field(default_factory=dict)
    funding: Columns | None = None
    marks: Columns | None = None
    source: str = ""  # which stored series the candles came from
    requested_start: int = 0  # the window's start; ``start`` is later when history was short for warm-up

    @functools.cached_property
    def data_hash(self) -> str:
        """SHA-256 over every input the replay reads: candles, higher-timeframe candles, funding, marks
        (once: the run id and the manifest both name it)."""
        h = hashlib.sha256()
        for cols in (self.candles, *(self.higher[tf] for tf in sorted(self.higher)), self.funding, self.marks):
            for name in sorted(cols or {}):
                h.update(name.encode())
                h.update(np.ascontiguousarray(cols[name]).tobytes())
        return h.hexdigest()


def resolve_window(spec: WindowSpec | str, data_first: int | None, data_end: int | None) -> tuple[int, int]:
    """Turn dates, a preset or START:END into [start, end) ns."""
    if isinstance(spec, str):
        try:
            # The separating colon is the one followed by a date (times may hold colons too).
            a, b = re.split(r":(?=\d{4}-\d{2}-\d{2})", spec)
            start, end = int(np.datetime64(a, "ns").astype(np.int64)), int(np.datetime64(b, "ns").astype(np.int64))
        except ValueError:
            raise ValueError(f"window {spec!r}: use hygiene, test or START:END dates (2025-01-01:2025-06-01)") from None
        if end <= start:
            raise ValueError(f"window {spec!r}: END must be after START")
        return start, end
    if spec.preset is None:
        return (int(np.datetime64(spec.start, "ns").astype(np.int64)), int(np.datetime64(spec.end, "ns").astype(np.int64)))
    if data_first is None or data_end is None:
        raise ValueError(f"window preset {spec.preset!r} is measured on the stored data, and there is none")
    span = data_end - data_first
    kind, _, rest = spec.preset.partition("_")
    if rest.endswith("pct"):
        cut = data_first + span * int(rest[:-3]) // 100
        return (data_first, cut) if kind == "first" else (data_end - span * int(rest[:-3]) // 100, data_end)
    return data_end - int(rest[:-1]) * 86_400 * 10**9, data_end


def base_key(config: SystemConfig, md: MarketData) -> SeriesKey:
    """The stored series to read: the system's timeframe if stored, else the coarsest finer one that divides it."""
    return stored_key(md, config.venue, config.market, config.symbol, config.timeframe)


def stored_key(md: MarketData, venue: str, market: str, symbol: str, timeframe: str) -> SeriesKey:
    """The stored candles a ``timeframe`` series is read from: itself, else the coarsest finer stored one
    that divides it (resampled), else itself (which then reports as missing)."""
    primary = tf_ns(timeframe)
    for tf in sorted(TIMEFRAMES, key=TIMEFRAMES.__getitem__, reverse=True):
        length = tf_ns(tf)
        if length <= primary and primary % length == 0:
            key = SeriesKey(venue, market, symbol, tf)
            if md.coverage(key).rows:
                return key
    return SeriesKey(venue, market, symbol, timeframe)


def read_series(md: MarketData, venue: str, market: str, symbol: str, timeframe: str, start: int | None = None,
                end: int | None = None) -> tuple[SeriesKey, Columns]:
    """(the stored key read, the candles of ``timeframe`` over [start, end)), resampled when needed."""
    key = stored_key(md, venue, market, symbol, timeframe)
    cols = md.read(key, start, end)
    return key, cols if key.timeframe == timeframe else resample(cols, key.timeframe, timeframe)


def funding_keys(config: SystemConfig) -> tuple[SeriesKey, ...]:
    """The funding and mark series a run reads when its costs charge funding (none otherwise)."""
    if not (config.costs.funding and config.market == "linear"):
        return ()
    return (SeriesKey(config.venue, config.market, config.symbol, "-", "funding"),
            SeriesKey(config.venue, config.market, config.symbol, "1h", "mark"))


def series_read(config: SystemConfig, md: MarketData) -> tuple[SeriesKey, ...]:
    """Every stored series a run of ``config`` reads: what its identity hashes, and nothing else (another
    timeframe, or funding for a run that charges none, changes no run)."""
    return (base_key(config, md), *funding_keys(config))


def load_market(config: SystemConfig, window: str, md: MarketData) -> MarketSlice:
    """Load the window plus warm-up; raise MissingDataError naming the command that fills any gap."""
    key = base_key(config, md)
    cov = md.coverage(key)
    spec: WindowSpec | str = config.windows[window] if window in config.windows else window
    data_end = None if cov.last is None else cov.last + tf_ns(key.timeframe)
    if cov.first is None and isinstance(spec, WindowSpec) and spec.preset is not None:
        raise MissingDataError(
            f"{key}: no candles stored, and window preset {spec.preset!r} is measured on them; import a file"
            f" (tradebus data import FILE --symbol {key.symbol} --timeframe {key.timeframe}) or fetch a range"
            f" (tradebus data fetch --symbol {key.symbol} --timeframe {key.timeframe} --start YYYY-MM-DD --end YYYY-MM-DD)",
            [], [],
        )
    start, end = resolve_window(spec, cov.first, data_end)
    step = tf_ns(config.timeframe)
    start = -(-start // step) * step
    requested = start
    warm = warmup_ns(config)
    load_from = start - warm
    base_len = tf_ns(key.timeframe)
    have = md.coverage(key, load_from, end)
    if have.first is not None and have.first > load_from and have.first < end - warm:
        # History starts inside the warm-up: start trading once the indicators are warm instead.
        load_from = have.first
        start = -(-(have.first + warm) // step) * step
        have = md.coverage(key, load_from, end)
    expected = (end - load_from) // base_len
    if have.rows < expected and (have.first is None or have.first > load_from or have.last + base_len < end):
        cmd = fill_command(key, load_from, end)
        raise MissingDataError(
            f"{key}: the replay needs {day(load_from)} .. {day(end)} (window plus warm-up) but the store has "
            + ("nothing" if have.first is None else f"{day(have.first)} .. {day(have.last + base_len)}")
            + f"; fill it with:\n  {cmd}\nor rerun with --fetch",
            [cmd], [(key, load_from, end)],
        )
    base = md.read(key, load_from, end)

    def as_timeframe(tf: str) -> Columns:
        return base if tf == key.timeframe else md.remember((key, load_from, end, tf),
                                                            lambda: resample(base, key.timeframe, tf))

    candles = as_timeframe(config.timeframe)
    higher = {tf: as_timeframe(tf) for tf in config.all_higher_timeframes()}
    first = int(np.searchsorted(candles["open_time"], start))
    funding = marks = None
    if keys := funding_keys(config):
        funding, marks = (md.read(k, start, end) for k in keys)
    return MarketSlice(start, end, candles, first, higher, funding, marks, str(key), requested)


def fill_command(key: SeriesKey, start_ns: int, end_ns: int) -> str:
    """Return the command that fetches a missing series, for error messages."""
    day = lambda ns: str(np.datetime64(ns, "ns"))[:10]  # noqa: E731
    what = {"candles": f"--timeframe {key.timeframe}", "mark": f"--no-candles --mark --mark-timeframe {key.timeframe}",
            "funding": "--no-candles --funding"}[key.kind]
    return f"tradebus data fetch --symbol {key.symbol} {what} --start {day(start_ns)} --end {day(end_ns)}"


def data_needed(config: SystemConfig, md: MarketData | None, start_ns: int, end_ns: int
                ) -> list[tuple[SeriesKey, int, str | None]]:
    """Each series a run of ``config`` reads, with the rows stored (``md`` None: no market data yet) and,
    when none are, the command that fetches [start, end) of it."""
    keys = (base_key(config, md) if md is not None else SeriesKey(config.venue, config.market, config.symbol,
                                                                   config.timeframe), *funding_keys(config))
    out = []
    for key in keys:
        rows = md.coverage(key).rows if md is not None else 0
        out.append((key, rows, None if rows else fill_command(key, start_ns, end_ns)))
    return out


FUNDING_EVERY = 8 * HOUR  # Bybit's usual interval; symbols settling more often have more rows


def funding_shortfall(config: SystemConfig, m: MarketSlice) -> tuple[int, int] | None:
    """(rates stored, about how many the window needs) when a run that charges funding has too few, so
    funding would be under-charged; None when it has enough or charges none."""
    if not (config.costs.funding and config.market == "linear") or m.funding is None:
        return None
    expected = (m.end - m.start) // FUNDING_EVERY
    stored = len(m.funding["open_time"])
    return (stored, expected) if stored < expected else None
