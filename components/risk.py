"""Risk manager: turns a strategy's wish into sized orders, or into a rejection.

Sizing is ``fixed_fraction`` (notional = equity x fraction) or ``risk_per_trade`` (the stop distance
loses that share of equity), then capped by leverage and by the maximum position notional. Protective
orders are placed once an entry has filled, at the actual average entry price: a reduce-only stop
(ATR multiple or percent away) and optionally a take-profit limit at a reward/risk multiple. Every order
id derives from the event that caused it, so replaying the same events can never create a second order.
"""

from __future__ import annotations

import math

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.bus.ids import order_id_for
from tradebus.components import kernel
from tradebus.components.base import NO_EVENTS, Component, Stamper
from tradebus.components.features import Feature, f

_SIGN = {"long": 1, "short": -1, "flat": 0}


def risk_features(stop_kind: str, atr_period: int) -> list[Feature]:
    """Features the risk manager reads from snapshots."""
    return [f("close")] + ([f("atr", atr_period)] if stop_kind == "atr" else [])


class RiskManager(Component):
    """Sizes and protects one system's orders on one symbol."""

    name = "risk"

    def __init__(self, stamp: Stamper, *, venue: str, symbol: str, timeframe: str, sizing: str, fraction: float,
                 risk_per_trade: float, max_leverage: float, max_position_notional: float | None,
                 stop_kind: str, atr_period: int, atr_mult: float, stop_percent: float,
                 take_profit_rr: float | None, initial_capital: float, qty_step: float = 0.0) -> None:
        super().__init__()
        self._stamp = stamp
        self._venue = venue
        self._symbol = symbol
        system = stamp.system
        self._patterns = (subjects.snapshots(venue, symbol, timeframe), subjects.signals(system),
                          subjects.positions(system), subjects.accounts(system), subjects.fills(system),
                          subjects.orders(system), subjects.lifecycle(system))
        self._sizing = kernel.SIZINGS[sizing]
        self._fraction = fraction
        self._risk = risk_per_trade
        self._max_leverage = max_leverage
        self._max_notional = max_position_notional or math.inf
        self._stop_kind = kernel.STOP_KINDS[stop_kind]
        self._atr_name = f("atr", atr_period).name
        self._atr_mult = atr_mult
        self._stop_percent = stop_percent
        self._tp_rr = take_profit_rr or 0.0
        self._qty_step = qty_step
        self.balance = initial_capital
        self.qty = 0.0
        self.avg = 0.0
        self._snap: ev.Snapshot | None = None
        self.weight = 1.0  # the allocator's share (Allocation)
        self.wound_down = False  # a lifecycle move took the system off the stage this session trades
        self._entries: dict[str, float] = {}  # entry order id -> stop distance decided with it
        self._protect: dict[str, float] = {}  # id of an entry's final fill -> its stop distance
        self._handlers.update({
            ev.Snapshot: self._on_snapshot, ev.Signal: self._on_signal, ev.PositionChanged: self._on_position,
            ev.AccountState: self._on_account, ev.Fill: self._on_fill, ev.OrderIntent: self._on_intent,
            ev.Allocation: self._on_allocation, ev.Promotion: self._on_promotion,
        })

    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    # -- state ---------------------------------------------------------------------------------

    def _on_snapshot(self, snap: ev.Snapshot) -> tuple[ev.Event, ...]:
        if snap.system == self._stamp.system:  # another system's features of this symbol are not this one's
            self._snap = snap  # read only when a signal needs it
        return NO_EVENTS

    def _on_account(self, acct: ev.AccountState) -> tuple[ev.Event, ...]:
        self.balance = acct.balance
        return NO_EVENTS

    def _on_allocation(self, a: ev.Allocation) -> tuple[ev.Event, ...]:
        # Clamped to [0, 1]: an allocation scales a system down; no number on the bus can size it up.
        if a.system == self._stamp.system and math.isfinite(a.weight):
            self.weight = min(max(a.weight, 0.0), 1.0)
        return NO_EVENTS

    def _on_promotion(self, p: ev.Promotion) -> tuple[ev.Event, ...]:
        """The system left the stage this session trades (the guard now passes exits only): flatten."""
        if p.system != self._stamp.system:
            return NO_EVENTS
        self.wound_down = True
        if self.qty == 0:
            return NO_EVENTS
        return (self._intent(p, "flatten", "sell" if self.qty > 0 else "buy", abs(self.qty), reduce_only=True),)

    def _on_intent(self, intent: ev.OrderIntent) -> tuple[ev.Event, ...]:
        # The one place an entry's stop is kept: its intent comes back through the bus, in a replay, live,
        # and from the stored stream a restart folds, alike.
        if intent.stop_distance is not None:
            self._entries[intent.order_id] = intent.stop_distance
        return NO_EVENTS

    def _on_fill(self, fill: ev.Fill) -> tuple[ev.Event, ...]:
        stop = self._entries.get(fill.order_id)
        if stop is not None and fill.leaves_qty <= 0:
            del self._entries[fill.order_id]
            self._protect[fill.id] = stop  # protect once the portfolio reports this fill's position
        return NO_EVENTS

    def _on_position(self, pos: ev.PositionChanged) -> tuple[ev.Event, ...]:
        self.qty, self.avg = pos.qty, pos.avg_price
        stop = self._protect.pop(pos.cause, None)  # the position caused by an entry's final fill
        if stop is None or pos.qty == 0:
            return NO_EVENTS
        return self._protective_orders(pos, stop)

    # -- decisions -----------------------------------------------------------------------------

    def _stop_distance(self, price: float) -> float:
        atr = self._snap.features[self._atr_name] if self._snap and self._stop_kind == kernel.STOP_ATR else math.nan
        return kernel.stop_distance(self._stop_kind, self._atr_mult, atr, self._stop_percent, price)

    def size(self, equity: float, price: float, stop_distance: float, strength: float = 1.0) -> tuple[float, str]:
        """Return (qty, reason if refused); ``strength`` (a signal's, in (0, 1]) scales the fraction or the
        risk per trade (a strategy's signals carry 1: the sweep kernel's sizes)."""
        qty, notional, code = kernel.size(self._sizing, equity, price, stop_distance, self._fraction * strength,
                                          self._risk * strength, self._max_leverage, self._max_notional,
                                          self._qty_step)
        if code == kernel.SIZE_NO_EQUITY:
            return 0.0, f"no equity to trade (equity {equity:.2f})"
        if code == kernel.SIZE_NO_STOP:
            return 0.0, "no stop distance yet (indicator warming up)"
        if code == kernel.SIZE_TOO_SMALL:
            return 0.0, f"order notional {notional:.2f} below the minimum {kernel.MIN_NOTIONAL}"
        return qty, ""

    def _intent(self, cause: ev.Event, leg: str, side: str, qty: float, order_type: str = "market",
                price: float | None = None, trigger: float | None = None, reduce_only: bool = False,
                stop_distance: float | None = None) -> ev.OrderIntent:
        return ev.OrderIntent(
            **self._stamp(cause.ts_event, cause.id), order_id=order_id_for(cause.id, leg), venue=self._venue,
            symbol=self._symbol, side=side, order_type=order_type, qty=qty, price=price, trigger_price=trigger,
            reduce_only=reduce_only, label=leg, stop_distance=stop_distance,
        )

    def _on_signal(self, sig: ev.Signal) -> tuple[ev.Event, ...]:
        target = _SIGN[sig.direction]
        out: list[ev.Event] = []
        q = self.qty
        if q != 0 and target != (1 if q > 0 else -1):  # flat, or the other side
            out.append(self._intent(sig, "exit", "sell" if q > 0 else "buy", abs(q), reduce_only=True))
            q = 0.0
        if target != 0 and q == 0:
            price = self._snap.bar.close if self._snap else math.nan
            equity = kernel.marked(self.balance, self.qty, self.avg, price)
            stop = self._stop_distance(price)
            qty, reason = self.size(equity, price, stop, sig.strength * self.weight)
            if self.wound_down or self.weight <= 0:
                reason = "no allocation: " + ("the lifecycle moved the system off this stage" if self.wound_down
                                              else "the allocator's weight is 0")
            if reason:
                out.append(ev.OrderRejected(**self._stamp(sig.ts_event, sig.id),
                                            order_id=order_id_for(sig.id, "entry"), reason=reason))
            else:
                out.append(self._intent(sig, "entry", "buy" if target > 0 else "sell", qty,
                                        stop_distance=stop if stop > 0 else None))
        return tuple(out)

    def _protective_orders(self, pos: ev.PositionChanged, stop_distance: float) -> tuple[ev.Event, ...]:
        if not (stop_distance > 0):
            return NO_EVENTS
        side = "sell" if pos.qty > 0 else "buy"
        qty = abs(pos.qty)
        trigger, take_profit = kernel.protective_prices(pos.qty, pos.avg_price, stop_distance, self._tp_rr)
        out: list[ev.Event] = [self._intent(pos, "sl", side, qty, "stop", trigger=trigger, reduce_only=True)]
        if self._tp_rr:
            out.append(self._intent(pos, "tp", side, qty, "limit", price=take_profit, reduce_only=True))
        return tuple(out)
