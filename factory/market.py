"""Market data held in memory for a sweep: read once from DuckDB, then sliced by thousands of trials.

``MemoryMarket`` answers ``read`` and ``coverage`` exactly as ``MarketData`` does, so each trial goes
through the very ``load_market`` a replay uses (same window, warm-up and resampling, hence the same
inputs to the kernel) without touching the database again. It pickles, so sweep workers get a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tradebus.engine.marketdata import VALUE_COLUMNS, Columns, Coverage, MarketData, SeriesKey


@dataclass
class MemoryMarket:
    series: dict[SeriesKey, Columns] = field(default_factory=dict)

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
