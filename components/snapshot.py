"""Snapshot builder: a closed bar in, the bar plus every feature known at its close out.

Features are computed once per run over the loaded history (``features.compute``; every indicator is
causal) and served bar by bar. A higher-timeframe feature at bar t comes from the last higher bar that
had *closed* by t's close (``resample.last_closed_index``), never from the one still forming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from msgspec.structs import replace

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.components.base import Component, Stamper
from tradebus.components.features import Feature, compute


@dataclass
class FeatureTable:
    """Feature columns of one timeframe, and for each primary bar the row to read (-1: none yet)."""

    timeframe: str
    names: list[str]
    values: np.ndarray  # (rows, features)
    row_for_bar: np.ndarray  # index into values for each primary bar


def feature_table(candles: dict[str, np.ndarray], features: list[Feature], timeframe: str,
                  row_for_bar: np.ndarray | None = None) -> FeatureTable:
    """Compute a table; ``row_for_bar`` defaults to the identity (primary timeframe)."""
    values = compute(candles, features)
    rows = np.arange(len(candles["close"])) if row_for_bar is None else row_for_bar
    return FeatureTable(timeframe, [feat.name for feat in features], values, rows)


class SnapshotBuilder(Component):
    """Publishes a ``Snapshot`` for every closed bar of one symbol and timeframe."""

    name = "snapshot"
    runs_ahead = True  # a pure function of bars, stamped with the bar's own time

    def __init__(self, stamp: Stamper, venue: str, symbol: str, timeframe: str, open_time: np.ndarray,
                 own: FeatureTable, higher: Sequence[FeatureTable] = ()) -> None:
        super().__init__()
        self._stamp = stamp
        self._subject = subjects.bars(venue, symbol, timeframe)
        self._index = {int(t): i for i, t in enumerate(open_time)}
        self._own = own
        # Plain Python rows: per-bar dict building is the hot path, and lists beat numpy scalars there.
        self._own_rows = own.values.tolist()
        self._higher = [(t.timeframe, t.names, t.values.tolist(), t.row_for_bar.tolist()) for t in higher]
        self._handlers[ev.BarClosed] = self._on_bar
        self._tpl: ev.Snapshot | None = None

    def patterns(self) -> tuple[str, ...]:
        return (self._subject,)

    def _on_bar(self, bar: ev.BarClosed) -> tuple[ev.Snapshot, ...]:
        i = self._index.get(bar.open_time)
        if i is None:
            raise ValueError(f"snapshot builder has no features for the bar opening at {bar.open_time}")
        features = dict(zip(self._own.names, self._own_rows[i]))
        htf = {}
        for tf, names, rows, row_for_bar in self._higher:
            r = row_for_bar[i]
            htf[tf] = dict(zip(names, rows[r])) if r >= 0 else {n: float("nan") for n in names}
        if self._tpl is None:
            self._tpl = self._stamp.template(ev.Snapshot, bar=bar)
        now = bar.ts_init
        return (replace(self._tpl, id=self._stamp.next_id(now), ts_event=bar.ts_event, ts_init=now, cause=bar.id,
                        bar=bar, features=features, htf=htf),)
