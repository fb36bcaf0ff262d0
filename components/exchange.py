"""Simulated exchange: accepts orders and fills them against bars like a venue would.

Order of work at each bar of its symbol:

1. funding: every funding time up to the bar's open settles on the position held then
   (``amount = qty x mark x rate``: longs pay positive rates), before anything trades at that open;
2. market orders waiting for the next open fill at the open;
3. resting orders, in the order they were placed: stops trigger when the bar trades through the
   trigger and fill at the trigger, or at the open if the bar gapped past it (a triggered stop is a
   market order: what a participation cap leaves fills at the next open); limits fill at their price
   (or the better open) as maker; a stop-limit becomes a limit once triggered;
4. when the position is flat, reduce-only orders left over are cancelled (like position-attached TP/SL);
5. liquidation: if the bar's worst price takes equity (the venue's own wallet balance plus unrealised
   PnL) to maintenance margin (``maintenance_margin x notional``), the whole position is closed at the
   price where that happens (or the open, if the bar gapped past it) by a venue order
   ``liquidation-N``, and its reduce-only orders are cancelled.

Market orders with ``on_close`` timing fill at the close of the bar that produced the signal. Taker fills
pay half the spread plus slippage (fixed bps, or bps per percent of the bar's volume taken); maker fills
pay neither. With a participation cap an order fills at most that share of a bar's volume and the rest
waits for the next bar (``leaves_qty`` says how much).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tradebus.bus import events as ev
from tradebus.components import kernel
from tradebus.bus import subjects
from tradebus.components.base import NO_EVENTS, Component, Gate, Stamper, is_command

_SIDE = {"buy": 1, "sell": -1}
_NEVER = 2**63 - 1  # a funding time no bar reaches
_NO_ORDERS = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.bool_), np.empty(0),
              np.empty(0))


@dataclass
class _Order:
    intent: ev.OrderIntent
    venue_id: str
    remaining: float
    triggered: bool = False
    # What the compiled steps read, converted once when the order is accepted, not on every bar it rests.
    kind: int = 0
    side: int = 0
    price: float = math.nan
    trigger: float = math.nan

    @classmethod
    def accept(cls, intent: ev.OrderIntent, venue_id: str) -> "_Order":
        return cls(intent, venue_id, intent.qty, kind=kernel.ORDER_TYPES[intent.order_type], side=_SIDE[intent.side],
                   price=math.nan if intent.price is None else intent.price,
                   trigger=math.nan if intent.trigger_price is None else intent.trigger_price)


@dataclass(frozen=True)
class CostParams:
    maker_fee: float
    taker_fee: float
    spread_bps: float
    slippage_model: str = "none"
    slippage_bps: float = 0.0
    slippage_impact: float = 0.0


class SimExchange(Component):
    """One symbol's venue for one system."""

    name = "exchange"

    def __init__(self, stamp: Stamper, *, venue: str, symbol: str, timeframe: str, fill_timing: str,
                 costs: CostParams, participation: float | None = None,
                 funding_times: np.ndarray | None = None, funding_rates: np.ndarray | None = None,
                 mark_times: np.ndarray | None = None, mark_opens: np.ndarray | None = None,
                 initial_capital: float = math.inf, maintenance_margin: float = 0.0, gate: Gate | None = None) -> None:
        """``gate``: the risk guard every order passes before it is accepted, as at a real venue."""
        super().__init__()
        self._stamp = stamp
        self._symbol = symbol
        self.gate = gate
        system = subjects.token(stamp.system, "system")
        self._patterns = (subjects.bars(venue, symbol, timeframe), subjects.orders(system), subjects.risk(system),
                          subjects.risk(subjects.NO_SYSTEM))
        self._on_close = fill_timing == "on_close"
        self._c = costs
        self._slip_model = kernel.SLIPPAGE_MODELS[costs.slippage_model]
        self._participation = math.nan if participation is None else participation
        self._funding_t = [] if funding_times is None else funding_times.tolist()
        self._funding_r = [] if funding_rates is None else funding_rates.tolist()
        self._funding_i = 0
        self._marks = {} if mark_times is None else dict(zip(mark_times.tolist(), mark_opens.tolist()))
        self._pending: list[_Order] = []  # market orders for the next open
        self._resting: list[_Order] = []  # stop / limit / stop_limit
        self.position = 0.0
        # The venue's own view of the account, for liquidation: wallet balance and average entry.
        self._avg = 0.0
        self._realized = 0.0
        self._wallet = initial_capital
        self._mm = maintenance_margin
        self._liq_price = math.nan  # where equity meets maintenance margin; NaN when flat
        self.liquidations = 0
        self._bar: ev.BarClosed | None = None
        self._seq = 0
        self._handlers.update({ev.BarClosed: self._on_bar, ev.OrderIntent: self._on_intent,
                               ev.RiskStateChanged: self._on_risk})

    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    def skip_funding_before(self, ts: int) -> None:
        """Funding times before the first traded bar are history, not charges."""
        while self._funding_i < len(self._funding_t) and self._funding_t[self._funding_i] < ts:
            self._funding_i += 1

    # -- orders --------------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        """Venue ids, unique across runs (projections deduplicate fills by exec id)."""
        self._seq += 1
        return f"{prefix}{self._stamp.run}-{self._seq}"

    def _reject(self, intent: ev.OrderIntent, reason: str, code: str = "") -> tuple[ev.Event, ...]:
        return (ev.OrderRejected(**self._stamp(intent.ts_event, intent.id), order_id=intent.order_id, reason=reason,
                                 code=code),)

    def _on_risk(self, change: ev.RiskStateChanged) -> tuple[ev.Event, ...]:
        """The guard's halt cancels every open order, as the live venue component does (a kill command is
        answered by the guard's own halt; a halt stored by an earlier session, folded at a restart, counts)."""
        if change.state != "halted" or is_command(change):
            return NO_EVENTS
        out = []
        for book in (self._pending, self._resting):
            for order in book:
                out.append(ev.OrderCancelled(**self._stamp(change.ts_event, change.id),
                                             order_id=order.intent.order_id, reason="risk halted"))
            book.clear()
        return tuple(out)

    def _on_intent(self, intent: ev.OrderIntent) -> tuple[ev.Event, ...]:
        if intent.symbol != self._symbol:
            return NO_EVENTS
        if not (intent.qty > 0 and math.isfinite(intent.qty)):
            return self._reject(intent, f"qty must be a positive number, got {intent.qty}")
        if intent.order_type in ("limit", "stop_limit") and not (intent.price and intent.price > 0):
            return self._reject(intent, f"{intent.order_type} order needs a positive price")
        if intent.order_type in ("stop", "stop_limit") and not (intent.trigger_price and intent.trigger_price > 0):
            return self._reject(intent, f"{intent.order_type} order needs a positive trigger price")
        if self.gate is not None:
            price = self._bar.close if intent.order_type == "market" and self._bar is not None else None
            why = self.gate.admit(intent, self._stamp.now(), price)
            if why:
                return (*self._reject(intent, why, "risk"), *self.gate.take_breach(intent.ts_event, intent.id))
        order = _Order.accept(intent, self._next_id("sim-"))
        out: list[ev.Event] = [ev.OrderAccepted(**self._stamp(intent.ts_event, intent.id), order_id=intent.order_id,
                                                venue_order_id=order.venue_id)]
        if intent.order_type == "market":
            if self._on_close and self._bar is not None:
                bar = self._bar
                out += self._fill(order, bar.close, bar.ts_event, bar.volume, taker=True)
                out += self._after_fills(bar.ts_event, intent.id)
                if order.remaining > 0:
                    self._pending.append(order)
            else:
                self._pending.append(order)
        else:
            self._resting.append(order)
        return tuple(out)

    def open_order_ids(self) -> list[str]:
        return [o.intent.order_id for o in (*self._pending, *self._resting)]

    def quiet_state(self) -> tuple | None:
        """What decides whether the next bars change anything here (``engine.quiet``): the next funding
        time, the resting orders (kinds, sides, triggered, prices, triggers), the position and its
        liquidation price. None when the next bar acts for sure (a market order waits for its open)."""
        if self._pending or (self.position == 0 and any(o.intent.reduce_only for o in self._resting)):
            return None
        i = self._funding_i
        funding_next = self._funding_t[i] if i < len(self._funding_t) else _NEVER
        rest = self._resting
        book = _NO_ORDERS if not rest else (
            np.array([o.kind for o in rest], dtype=np.int64), np.array([o.side for o in rest], dtype=np.int64),
            np.array([o.triggered for o in rest], dtype=np.bool_), np.array([o.price for o in rest]),
            np.array([o.trigger for o in rest]))
        return (funding_next, *book, self.position, self._liq_price)

    # -- fills ---------------------------------------------------------------------------------

    def _fill(self, order: _Order, ref: float, ts: int, bar_volume: float, taker: bool) -> list[ev.Event]:
        intent = order.intent
        c = self._c
        qty, price, fee = kernel.fill_terms(order.side, order.remaining, intent.reduce_only, self.position,
                                            self._participation, bar_volume, ref, taker, c.maker_fee, c.taker_fee,
                                            c.spread_bps, self._slip_model, c.slippage_bps, c.slippage_impact)
        if qty < 0:
            order.remaining = 0.0
            return [ev.OrderCancelled(**self._stamp(ts, intent.id), order_id=intent.order_id,
                                      reason="reduce-only order would open a position")]
        if qty == 0:
            return []
        order.remaining = kernel.left_after(order.remaining, qty, intent.qty)
        return [self._book(ts, intent.id, intent.order_id, order.venue_id, intent.side, price, qty, fee, taker,
                           order.remaining)]

    def _book(self, ts: int, cause: str, order_id: str, venue_id: str, side: str, price: float, qty: float,
              fee: float, taker: bool, leaves: float) -> ev.Fill:
        """Apply a fill to the venue's account and return its event."""
        self.position, self._avg, self._realized, self._wallet = kernel.book(
            self.position, self._avg, self._realized, self._wallet, qty if side == "buy" else -qty, price, fee)
        self._update_liquidation_price()
        return ev.Fill(**self._stamp(ts, cause), order_id=order_id, venue_order_id=venue_id,
                       exec_id=self._next_id("simx-"), symbol=self._symbol, side=side, price=price, qty=qty, fee=fee,
                       liquidity="taker" if taker else "maker", leaves_qty=leaves)

    def _update_liquidation_price(self) -> None:
        """Once per change of position or wallet rather than on every bar."""
        self._liq_price = kernel.liquidation_price(self.position, self._avg, self._wallet, self._mm)

    def _liquidate(self, bar: ev.BarClosed) -> list[ev.Event]:
        """Close the whole position if the bar traded through the liquidation price."""
        q, liq = self.position, self._liq_price
        if not kernel.liquidated(q, liq, bar.high, bar.low):
            return []
        price = kernel.liquidation_fill(q, liq, bar.open)
        qty = abs(q)
        self.liquidations += 1
        fill = self._book(bar.ts_event, bar.id, f"liquidation-{self.liquidations}", self._next_id("sim-"),
                          "sell" if q > 0 else "buy", price, qty, kernel.fee(qty, price, self._c.taker_fee), True,
                          0.0)
        return [fill, *self._after_fills(bar.ts_event, bar.id)]

    def _after_fills(self, ts: int, cause: str, *more: list[_Order]) -> list[ev.Event]:
        """Cancel reduce-only orders (resting, waiting for an open, or in ``more``) once the position is flat."""
        if self.position != 0:
            return []
        out: list[ev.Event] = []
        for book in (self._resting, self._pending, *more):
            keep = []
            for order in book:
                if order.intent.reduce_only:
                    order.remaining = 0.0
                    out.append(ev.OrderCancelled(**self._stamp(ts, cause), order_id=order.intent.order_id,
                                                 reason="position closed"))
                else:
                    keep.append(order)
            book[:] = keep
        return out

    def _on_bar(self, bar: ev.BarClosed) -> tuple[ev.Event, ...]:
        self._bar = bar
        out: list[ev.Event] = []
        while self._funding_i < len(self._funding_t) and self._funding_t[self._funding_i] <= bar.open_time:
            t, rate = self._funding_t[self._funding_i], self._funding_r[self._funding_i]
            self._funding_i += 1
            if self.position != 0:
                mark = self._marks.get(t, bar.open)
                amount = kernel.funding_amount(self.position, mark, rate)
                self._wallet -= amount
                self._update_liquidation_price()
                out.append(ev.FundingPaid(**self._stamp(t, bar.id), symbol=self._symbol, rate=rate, mark_price=mark,
                                          position_qty=self.position, amount=amount))
        if self._pending:
            queue, self._pending = self._pending, []
            while queue:
                order = queue.pop(0)
                out += self._fill(order, bar.open, bar.open_time, bar.volume, taker=True)
                if order.remaining > 0:
                    self._pending.append(order)
                # After each fill: an exit that flattens cancels the old protection before a new entry.
                out += self._after_fills(bar.open_time, bar.id, queue)
        if self._resting:
            still = []
            for order in self._resting:
                if order.intent.reduce_only and self.position == 0:
                    still.append(order)  # cancelled below, as "position closed"
                    continue
                ref, taker = self._crossed(order, bar)
                if ref is not None:
                    out += self._fill(order, ref, bar.ts_event, bar.volume, taker)
                if order.remaining > 0:
                    still.append(order)
            self._resting = still
            out += self._after_fills(bar.ts_event, bar.id)
        if self.position != 0:
            out += self._liquidate(bar)
        return tuple(out)

    @staticmethod
    def _crossed(order: _Order, bar: ev.BarClosed) -> tuple[float | None, bool]:
        """Return (reference price, taker) if the bar fills the order, else (None, _)."""
        ref, taker, order.triggered = kernel.crossed(order.kind, order.side, order.triggered, order.price,
                                                     order.trigger, bar.open, bar.high, bar.low)
        return (None if math.isnan(ref) else ref), taker
