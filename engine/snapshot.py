"""Snapshot builder: a closed bar in, the bar plus every feature known at its close out.

Features are streamed (``components.features.FeatureSet``): the builder is seeded once with the history
before the first bar it serves (the replay's warm-up rule) and then advances its indicators one bar at
a time. A replay seeds it with every loaded bar at once, which is the same code over a longer batch, so
a replay and a daemon fed the same bars from the same warm-up start publish identical snapshots.

Higher timeframes are built from the system's own bars by ``bucket_run``: a higher bar closes with the
own bar that ends its bucket (or, after a gap, when a bar of a later bucket arrives), and a feature at
bar t comes from the last higher bar that had *closed* by t's close, never from the one still forming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numba as nb
import numpy as np
from msgspec.structs import replace

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.components.base import NO_EVENTS, Component, Stamper
from tradebus.components.features import Candles, Feature, FeatureSet, Memo, compute
from tradebus.components.timeframes import bucket_offset, check_resample, tf_ns

_i8, _f8 = np.int64, np.float64
BUCKET = np.dtype([("length", _i8), ("offset", _i8), ("source", _i8), ("count", _i8), ("open_time", _i8),
                   ("open", _f8), ("high", _f8), ("low", _f8), ("close", _f8), ("volume", _f8), ("turnover", _f8)])
HIGHER_FIELDS = ("open_time", "open", "high", "low", "close", "volume", "turnover")


class GapError(RuntimeError):
    """A bar that does not follow the last one held."""


@nb.njit(cache=True, nogil=True)
def _emit(s, k, ot, o, h, l, c, v, tv):
    ot[k], o[k], h[k], l[k], c[k], v[k], tv[k] = s.open_time, s.open, s.high, s.low, s.close, s.volume, s.turnover
    s.count = 0
    return k + 1


@nb.njit(cache=True, nogil=True)
def bucket_run(st, t, o, h, l, c, v, tv, ot_out, o_out, h_out, l_out, c_out, v_out, tv_out, closed_after):
    """Aggregate own bars into higher ones (epoch-aligned buckets). Writes each higher bar the moment it
    closes; ``closed_after[i]``: higher bars closed so far in this batch, after own bar i. Returns how many."""
    s = st[0]
    k = 0
    for i in range(t.shape[0]):
        b = (t[i] - s.offset) // s.length * s.length + s.offset
        if s.count > 0 and b != s.open_time:  # a bar of a later bucket: the held one closed in a gap
            k = _emit(s, k, ot_out, o_out, h_out, l_out, c_out, v_out, tv_out)
        if s.count == 0:
            s.open_time, s.open, s.high, s.low, s.close, s.volume, s.turnover = b, o[i], h[i], l[i], c[i], v[i], tv[i]
        else:
            s.high = max(s.high, h[i])
            s.low = min(s.low, l[i])
            s.close = c[i]
            s.volume += v[i]
            s.turnover += tv[i]
        s.count += 1
        if t[i] + s.source >= b + s.length:  # this bar ends the bucket
            k = _emit(s, k, ot_out, o_out, h_out, l_out, c_out, v_out, tv_out)
        closed_after[i] = k
    return k


class Bucketer:
    """Streams own bars into closed higher-timeframe bars."""

    def __init__(self, source: str, target: str) -> None:
        check_resample(source, target)
        self._st = np.zeros(1, dtype=BUCKET)
        self._st[0]["length"], self._st[0]["offset"], self._st[0]["source"] = tf_ns(target), bucket_offset(target), tf_ns(source)

    def update(self, bars: Candles) -> tuple[Candles, np.ndarray]:
        """(higher bars closed during ``bars``, for each own bar how many of them had closed by its close)."""
        n = len(bars["open_time"])
        out = {k: np.empty(n + 1, dtype=np.int64 if k == "open_time" else np.float64) for k in HIGHER_FIELDS}
        closed_after = np.empty(n, dtype=np.int64)
        tv = bars["turnover"] if "turnover" in bars else np.zeros(n)
        k = bucket_run(self._st, np.asarray(bars["open_time"], dtype=np.int64), bars["open"], bars["high"],
                       bars["low"], bars["close"], bars["volume"], tv, *(out[f] for f in HIGHER_FIELDS), closed_after)
        return {f: a[:k] for f, a in out.items()}, closed_after


@dataclass
class FeatureTable:
    """Feature columns of one timeframe, and for each own bar the row to read (-1: none closed yet)."""

    timeframe: str
    names: list[str]
    values: np.ndarray  # (rows, features)
    row_for_bar: np.ndarray  # index into values for each own bar


class MarketFeatures:
    """Every feature a system reads, streamed: its own timeframe's and each higher timeframe's."""

    def __init__(self, timeframe: str, own: list[Feature], higher: Mapping[str, list[Feature]]) -> None:
        self.timeframe = timeframe
        self._own = FeatureSet(own)
        self._higher = [(tf, Bucketer(timeframe, tf), FeatureSet(feats)) for tf, feats in sorted(higher.items())]

    def update(self, bars: Candles) -> tuple[FeatureTable, list[FeatureTable]]:
        """Advance over ``bars`` (own timeframe, in order); the tables of this batch: own rows, and per higher
        timeframe the rows of the higher bars that closed in it, with ``row_for_bar`` into them (-1 where
        the last closed one is from an earlier batch, or none has closed yet)."""
        own = FeatureTable(self.timeframe, self._own.names, self._own.update(bars),
                           np.arange(len(bars["close"]), dtype=np.int64))
        higher = []
        for tf, bucketer, fs in self._higher:
            closed, after = bucketer.update(bars)
            higher.append(FeatureTable(tf, fs.names, fs.update(closed), after - 1))
        return own, higher


def seed_tables(timeframe: str, own: list[Feature], higher: Mapping[str, list[Feature]], bars: Candles,
                memo: Memo | None = None) -> tuple[FeatureTable, list[FeatureTable]]:
    """What a fresh ``MarketFeatures(timeframe, own, higher).update(bars)`` returns. With ``memo`` (bound to
    these bars) indicator outputs and higher-timeframe buckets are shared with earlier calls over the same
    bars, keyed by timeframe: the values are the same, computed once."""
    if memo is None:
        return MarketFeatures(timeframe, own, higher).update(bars)
    n = len(bars["close"])
    table = FeatureTable(timeframe, [f.name for f in own], compute(bars, own, lambda k, fn: memo((timeframe, *k), fn)),
                         np.arange(n, dtype=np.int64))
    tables = []
    for tf, feats in sorted(higher.items()):
        closed, after = memo((tf, "buckets"), lambda tf=tf: Bucketer(timeframe, tf).update(bars))
        values = compute(closed, feats, lambda k, fn, tf=tf: memo((tf, *k), fn))
        tables.append(FeatureTable(tf, [f.name for f in feats], values, after - 1))
    return table, tables


class SnapshotBuilder(Component):
    """Publishes a ``Snapshot`` for every closed bar of one symbol and timeframe.

    Seeded with ``history``; bars opening before ``serve_from`` (the warm-up) get no snapshot. A bar
    in the seed (a replay seeds with its whole series) is served from the seeded rows; a bar that follows
    the last one held is streamed; a repeat is ignored; anything else is a gap (the daemon backfills
    before it hands over the bar after one).
    """

    name = "snapshot"
    runs_ahead = True  # a pure function of bars, stamped with the bar's own time

    def __init__(self, stamp: Stamper, venue: str, symbol: str, features: MarketFeatures, history: Candles,
                 serve_from: int) -> None:
        super().__init__()
        self._stamp = stamp
        self._features = features
        self._step = tf_ns(features.timeframe)
        self._subject = subjects.bars(venue, symbol, features.timeframe)
        own, higher = features.update(history)
        self.seeded = (own, higher)
        times = np.asarray(history["open_time"], dtype=np.int64)
        self._index = dict(zip(times.tolist(), range(len(times))))
        self.last_open: int | None = int(times[-1]) if len(times) else None
        self._served = serve_from - 1  # open time of the last bar a snapshot was published for
        # Plain Python rows: per-bar dict building is the hot path, and lists beat numpy scalars there.
        self._own_names = own.names
        self._own_rows = own.values.tolist()
        nan_rows = {t.timeframe: [float("nan")] * len(t.names) for t in higher}
        self._higher = [(t.timeframe, t.names, t.values.tolist(), t.row_for_bar.tolist()) for t in higher]
        # The higher rows in force after the last bar held (what the next streamed bar starts from).
        self._last_higher = {t.timeframe: (t.values[-1].tolist() if len(t.values) else nan_rows[t.timeframe])
                             for t in higher}
        self._handlers[ev.BarClosed] = self._on_bar
        self._tpl: ev.Snapshot | None = None

    def patterns(self) -> tuple[str, ...]:
        return (self._subject,)

    def _stream(self, bar: ev.BarClosed) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        last = self.last_open
        if last is not None and bar.open_time != last + self._step:
            raise GapError(f"{bar.symbol} {bar.timeframe}: bar at {bar.open_time} after {last}: backfill first")
        one = {"open_time": np.array([bar.open_time], dtype=np.int64), "open": np.array([bar.open]),
               "high": np.array([bar.high]), "low": np.array([bar.low]), "close": np.array([bar.close]),
               "volume": np.array([bar.volume]), "turnover": np.array([bar.turnover])}
        own, higher = self._features.update(one)
        self.last_open = bar.open_time
        htf = {}
        for t in higher:
            if t.row_for_bar[0] >= 0:
                self._last_higher[t.timeframe] = t.values[t.row_for_bar[0]].tolist()
            htf[t.timeframe] = dict(zip(t.names, self._last_higher[t.timeframe]))
        return dict(zip(own.names, own.values[0].tolist())), htf

    def _on_bar(self, bar: ev.BarClosed) -> tuple[ev.Snapshot, ...]:
        t = bar.open_time
        i = self._index.get(t)
        if t <= self._served or (i is None and self.last_open is not None and t <= self.last_open):
            return NO_EVENTS  # warm-up, or a repeat (a websocket push and a backfill overlapping)
        if i is None:
            features, htf = self._stream(bar)
        else:  # the replay's path, once per bar: kept inline
            features = dict(zip(self._own_names, self._own_rows[i]))
            htf = {}
            for tf, names, rows, row_for_bar in self._higher:
                r = row_for_bar[i]
                htf[tf] = dict(zip(names, rows[r])) if r >= 0 else {n: float("nan") for n in names}
        self._served = t
        if self._tpl is None:
            self._tpl = self._stamp.template(ev.Snapshot, bar=bar)
        now = bar.ts_init
        return (replace(self._tpl, id=self._stamp.next_id(now), ts_event=bar.ts_event, ts_init=now, cause=bar.id,
                        bar=bar, features=features, htf=htf),)
