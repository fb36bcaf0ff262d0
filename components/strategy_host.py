"""Strategy host: hands each snapshot and the system's own position to a strategy's decision step.

It emits a ``Signal`` only when the strategy's target differs from the current direction; the position
is followed from the system's own fills, which reach the host before the next snapshot.
"""

from __future__ import annotations

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.components.base import NO_EVENTS, Component, Stamper
from tradebus.components.strategies import FLAT, HOLD, LONG, SHORT, Params, StrategyDef

_DIRECTION = {LONG: "long", SHORT: "short", FLAT: "flat"}


def row_names(defn: StrategyDef, params: Params) -> tuple[list[str], list[tuple[str, str]]]:
    """The strategy's row layout: own feature names, then (timeframe, name) of higher-timeframe ones."""
    own = [feat.name for feat in defn.features(params)]
    higher = [(tf, feat.name) for tf, feats in sorted(defn.htf_features(params).items()) for feat in feats]
    return own, higher


class FollowsFills(Component):
    """A decision component that knows the system's position in its symbol from the system's own fills."""

    _symbol: str
    qty: float = 0.0

    def _on_fill(self, fill: ev.Fill) -> tuple[ev.Event, ...]:
        if fill.symbol == self._symbol:
            self.qty += fill.qty if fill.side == "buy" else -fill.qty
            if abs(self.qty) <= 1e-12:
                self.qty = 0.0
        return NO_EVENTS

    @property
    def held(self) -> int:
        """The side held: 1 long, -1 short, 0 flat."""
        return 1 if self.qty > 0 else (-1 if self.qty < 0 else 0)


class StrategyHost(FollowsFills):
    """Runs one strategy for one system on one symbol and timeframe."""

    name = "strategy"

    def __init__(self, stamp: Stamper, defn: StrategyDef, params: Params, venue: str, symbol: str,
                 timeframe: str, prev_row: tuple[float, ...] | None = None) -> None:
        """``prev_row``: the feature row of the bar before the first one published (end of warm-up)."""
        super().__init__()
        self._stamp = stamp
        self._defn = defn
        self._decide = defn.decide
        self._p = params.vector()
        self._own, self._higher = row_names(defn, params)
        self._symbol = symbol
        self._timeframe = timeframe
        self._patterns = (subjects.snapshots(venue, symbol, timeframe), subjects.fills(stamp.system))
        self._prev = None if prev_row is None else tuple(float(x) for x in prev_row)
        self.qty = 0.0
        self._handlers[ev.Snapshot] = self._on_snapshot
        self._handlers[ev.Fill] = self._on_fill

    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    def skip_to(self, prev_row: tuple[float, ...]) -> None:
        """Bars were skipped (``engine.quiet``: the strategy held on each): the next snapshot's previous
        row is ``prev_row``, the row of the bar just before it."""
        self._prev = prev_row

    def _on_snapshot(self, snap: ev.Snapshot) -> tuple[ev.Event, ...]:
        if snap.system != self._stamp.system:
            return NO_EVENTS  # another system's features of this symbol
        feats = snap.features
        values = [feats[n] for n in self._own]
        if self._higher:
            values += [snap.htf[tf][n] for tf, n in self._higher]
        cur = tuple(values)  # a tuple reaches compiled code cheaper than a fresh array
        prev, self._prev = self._prev, cur
        if prev is None:
            return NO_EVENTS
        pos = self.held
        target = self._decide(cur, prev, pos, self._p)
        if target == HOLD or target == pos:
            return NO_EVENTS
        return (ev.Signal(**self._stamp(snap.ts_event, snap.id), strategy=self._defn.id, symbol=self._symbol,
                          timeframe=self._timeframe, direction=_DIRECTION[target]),)
