"""Live market data: closed bars into snapshots over a rolling window of history.

A replay computes every feature once over the whole series; live, the series grows a bar at a time. This
component keeps the last ``keep`` candles (enough for 3x every lookback, as the replay's warm-up) and at
each new closed bar recomputes the system's features over them with the very same functions
(``feature_tables``), so live and replay see identical numbers for the same history. The cost is one
vectorised pass over a few hundred rows per bar (tens of microseconds for the example configs).

Bars must arrive in order without gaps: the daemon backfills a gap from REST before it hands over the bar
after it. A bar at or before the last one held is a repeat (websocket and backfill overlapping) and is
dropped; a bar that is not the next one is refused with an error (it would silently shift every feature).
"""

from __future__ import annotations

import numpy as np

from tradebus.bus import events as ev
from tradebus.components.base import NO_EVENTS, Component, Stamper
from tradebus.components.timeframes import tf_ns
from tradebus.configs.schema import SystemConfig
from tradebus.replay.marketdata import Columns
from tradebus.replay.resample import resample
from tradebus.replay.runner import MarketSlice, feature_tables, strategy_rows, warmup_ns

FIELDS = ("open_time", "open", "high", "low", "close", "volume", "turnover")


class GapError(RuntimeError):
    """A bar that does not follow the last one held."""


def history_rows(config: SystemConfig) -> int:
    """Candles of the system's own timeframe to hold: the replay's warm-up, plus a margin."""
    return warmup_ns(config) // tf_ns(config.timeframe) + 8


class RollingFeatures(Component):
    """Publishes a ``Snapshot`` for every new closed bar of the system's symbol and timeframe."""

    name = "features"
    runs_ahead = True

    def __init__(self, stamp: Stamper, config: SystemConfig, history: Columns) -> None:
        super().__init__()
        self._stamp = stamp
        self._config = config
        self._step = tf_ns(config.timeframe)
        self._keep = history_rows(config)
        self._cols = {k: np.asarray(history.get(k, np.zeros(len(history["open_time"]))),
                                    dtype=np.int64 if k == "open_time" else np.float64)[-self._keep:] for k in FIELDS}
        self._handlers[ev.BarClosed] = self._on_bar

    def patterns(self) -> tuple[str, ...]:
        c = self._config
        return (f"tb.md.bar.{c.venue}.{c.symbol}.{c.timeframe}",)

    @property
    def last_open(self) -> int | None:
        t = self._cols["open_time"]
        return int(t[-1]) if len(t) else None

    def _tables(self):
        cols = self._cols
        n = len(cols["open_time"])
        m = MarketSlice(start=int(cols["open_time"][0]) if n else 0, end=0, candles=cols, first=max(n - 1, 0),
                        higher={tf: resample(cols, self._config.timeframe, tf)
                                for tf in self._config.all_higher_timeframes()})
        return feature_tables(self._config, m)

    def prev_row(self) -> np.ndarray | None:
        """The strategy's row at the last bar held (what it compares the first live bar with)."""
        if not len(self._cols["open_time"]):
            return None
        own, higher = self._tables()
        return strategy_rows(self._config.strategy_def(), self._config.params(), own, higher)[-1]

    def _on_bar(self, bar: ev.BarClosed) -> tuple[ev.Event, ...]:
        last = self.last_open
        if last is not None and bar.open_time <= last:
            return NO_EVENTS
        if last is not None and bar.open_time != last + self._step:
            raise GapError(f"{bar.symbol} {bar.timeframe}: bar at {bar.open_time} after {last}: backfill first")
        row = (bar.open_time, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.turnover)
        self._cols = {k: np.append(self._cols[k][-(self._keep - 1):], v) for k, v in zip(FIELDS, row)}
        own, higher = self._tables()
        features = dict(zip(own.names, own.values[-1].tolist()))
        htf = {}
        for table in higher:
            r = int(table.row_for_bar[-1])
            htf[table.timeframe] = dict(zip(table.names, table.values[r].tolist() if r >= 0
                                            else [float("nan")] * len(table.names)))
        return (ev.Snapshot(**self._stamp(bar.ts_event, bar.id), bar=bar, features=features, htf=htf),)
