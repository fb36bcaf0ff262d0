"""Market data held in memory for a sweep: read once from DuckDB, then sliced by thousands of trials, and
the indicator outputs computed over those slices (``FeatureMemo``), shared by the trials that read them.

``MemoryMarket`` answers ``read`` and ``coverage`` exactly as ``MarketData`` does, so each trial goes
through the very ``load_market`` a replay uses (same window, warm-up and resampling, hence the same
inputs to the kernel) without touching the database again. It pickles, so sweep workers get a copy.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tradebus.engine.marketdata import VALUE_COLUMNS, Columns, Coverage, MarketData, SeriesKey


@dataclass
class MemoryMarket:
    series: dict[SeriesKey, Columns] = field(default_factory=dict)
    derived: OrderedDict = field(default_factory=OrderedDict, repr=False)  # resampled slices and runs, by their making

    DERIVED_KEPT = 32  # trials run grouped by symbol and timeframe: a few recent slices are all that recur

    def remember(self, key: tuple, make: Callable[[], Any]) -> Any:
        """Something derived from the stored series, made once: a resampled slice (every trial of a timeframe
        with the same warm-up reads the same one), or a run of a config over a window (validation and
        scenarios ask for the same (config, window) more than once)."""
        if key in self.derived:
            self.derived.move_to_end(key)
        else:
            self.derived[key] = make()
            while len(self.derived) > self.DERIVED_KEPT:
                self.derived.popitem(last=False)
        return self.derived[key]

    @classmethod
    def load(cls, md: MarketData, venue: str, market: str, symbols: list[str]) -> "MemoryMarket":
        """Every stored series (candles of any timeframe, marks, funding) of these symbols."""
        mem = cls()
        for cov in md.series():
            k = cov.key
            if k.venue == venue and k.market == market and k.symbol in symbols:
                mem.series[k] = md.read(k)
        return mem

    def _range(self, key: SeriesKey, start: int | None, end: int | None) -> tuple[Columns | None, int, int]:
        cols = self.series.get(key)
        if cols is None:
            return None, 0, 0
        t = cols["open_time"]
        lo = 0 if start is None else int(np.searchsorted(t, start, side="left"))
        hi = len(t) if end is None else int(np.searchsorted(t, end, side="left"))
        return cols, lo, max(lo, hi)

    def read(self, key: SeriesKey, start: int | None = None, end: int | None = None) -> Columns:
        cols, lo, hi = self._range(key, start, end)
        if cols is None:
            return {"open_time": np.empty(0, dtype=np.int64), **{n: np.empty(0) for n in VALUE_COLUMNS[key.kind]}}
        return {name: v[lo:hi] for name, v in cols.items()}

    def coverage(self, key: SeriesKey, start: int | None = None, end: int | None = None) -> Coverage:
        cols, lo, hi = self._range(key, start, end)
        if cols is None or hi == lo:
            return Coverage(key, 0, None, None)
        t = cols["open_time"]
        return Coverage(key, hi - lo, int(t[lo]), int(t[hi - 1]))


def _nbytes(value: object) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


@dataclass
class FeatureMemo:
    """Indicator outputs over market slices, computed once per (slice, timeframe, indicator call) and shared
    by every trial that reads them; the least recently used go beyond ``max_bytes``.

    A slice is named by its series, timeframe, first bar and length: trials of one symbol, timeframe and
    window with the same warm-up read the very same bars, and an indicator run from a fresh state over
    the same bars gives the same values (the parity tests hold a memoised sweep to the replay).
    """

    max_bytes: int = 1 << 30
    computed: int = 0
    reused: int = 0
    bytes: int = 0
    peak_bytes: int = 0
    _items: OrderedDict = field(default_factory=OrderedDict)

    def bind(self, candles: Columns, source: str, timeframe: str) -> Callable:
        """The memo for one slice of candles (``features.Memo``)."""
        t = candles["open_time"]
        base = (source, timeframe, int(t[0]) if len(t) else 0, len(t))
        return lambda key, make: self._get((*base, *key), make)

    def _get(self, key: tuple, make: Callable) -> object:
        if key in self._items:
            self._items.move_to_end(key)
            self.reused += 1
            return self._items[key]
        value = make()
        self.computed += 1
        self._items[key] = value
        self.bytes += _nbytes(value)
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.bytes -= _nbytes(old)
        return value

    def counts(self) -> tuple[int, int, int]:
        """(computed, reused, peak bytes)."""
        return self.computed, self.reused, self.peak_bytes
