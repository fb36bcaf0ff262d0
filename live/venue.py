"""The live venue as a component: order intents in, venue requests out; venue messages in, events out.

It replaces the simulated exchange and, like every component, touches no network: an approved intent
becomes an ``OrderSubmitted`` event plus a request in ``outbox``, which the daemon sends only after the
step's events are durably stored (so a crash can lose a request, never the record of one). What the
venue says back (acks, websocket pushes, REST lookups after a gap) comes in through ``from_*`` and
leaves as order, fill, position and account events, each said once: fills are deduplicated by exec id,
and an order's acceptance and its end are reported once whatever mix of ack, pushes and lookups told of
them (a cancel racing a fill can yield two ``Filled`` pushes; the execution may arrive before the order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from msgspec.structs import replace

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.components.base import NO_EVENTS, Component, Stamper
from tradebus.live import bybit_wire as w
from tradebus.engine.guard import RiskGuard

_SIDE = {"buy": "Buy", "sell": "Sell"}
_OPEN = frozenset({"New", "PartiallyFilled", "Untriggered", "Triggered"})


@dataclass
class Request:
    """A call for the daemon to make: ``create`` (params), ``cancel`` (order_id) or ``cancel_all``."""

    kind: str
    order_id: str = ""
    symbol: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Tracked:
    order_id: str
    symbol: str
    cause: str = ""  # the intent's id: what the order's events say caused them
    accepted: bool = False
    done: bool = False
    reduce_only: bool = False
    cancelling: bool = False


def order_params(intent: ev.OrderIntent, rules: w.InstrumentRules, last_price: float, category: str = "linear"
                 ) -> dict[str, Any]:
    """Bybit's create body for an intent, quantities and prices as decimal strings on the instrument's
    grid (a buy limit rounds its price down, a sell up: never a worse price than asked)."""
    market = intent.order_type in ("market", "stop")
    ref = intent.price or intent.trigger_price or last_price
    p: dict[str, Any] = {"category": category, "symbol": intent.symbol, "side": _SIDE[intent.side],
                         "orderType": "Market" if market else "Limit",
                         "qty": rules.qty(intent.qty, market=market, price=None if intent.reduce_only else ref),
                         "orderLinkId": intent.order_id, "positionIdx": 0}
    if not market:
        p["price"] = rules.price(intent.price, "down" if intent.side == "buy" else "up")
        p["timeInForce"] = "PostOnly" if intent.post_only else {"gtc": "GTC", "ioc": "IOC", "fok": "FOK",
                                                                 "post_only": "PostOnly"}[intent.time_in_force]
    if intent.trigger_price is not None:
        # A sell stop triggers as the price falls to it (2), a buy stop as it rises (1).
        p["triggerPrice"] = rules.price(intent.trigger_price, "nearest")
        p["triggerDirection"] = 2 if intent.side == "sell" else 1
    if intent.reduce_only:
        p["reduceOnly"] = True
    return p


class LiveVenue(Component):
    """One system's orders on one symbol at Bybit."""

    name = "venue"

    def __init__(self, stamp: Stamper, account: Stamper, guard: RiskGuard, rules: w.InstrumentRules, *,
                 venue: str, symbol: str, timeframe: str) -> None:
        """``account`` stamps what belongs to the account, not the system (venue positions and wallet)."""
        super().__init__()
        self._stamp = stamp
        self._account = account
        self._guard = guard
        self.rules = rules
        self._symbol = symbol
        system = subjects.token(stamp.system, "system")
        self._patterns = (subjects.bars(venue, symbol, timeframe), subjects.orders(system), subjects.positions(system),
                          subjects.risk(system), subjects.risk(subjects.NO_SYSTEM))
        self.orders: dict[str, _Tracked] = {}
        self.exec_ids: set[str] = set()
        self.last_exec_ms = 0
        self.outbox: list[Request] = []
        self.last_price = math.nan
        self.duplicates = 0
        self._handlers.update({ev.OrderIntent: self._on_intent, ev.RiskStateChanged: self._on_risk,
                               ev.BarClosed: self._on_bar, ev.PositionChanged: self._on_position})

    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    def take_outbox(self) -> list[Request]:
        out, self.outbox = self.outbox, []
        return out

    # -- from the system ----------------------------------------------------------------------------

    def _on_bar(self, bar: ev.BarClosed) -> tuple[ev.Event, ...]:
        self.last_price = bar.close
        return NO_EVENTS

    def _reject(self, intent: ev.OrderIntent, reason: str, code: str) -> ev.OrderRejected:
        return ev.OrderRejected(**self._stamp(intent.ts_event, intent.id), order_id=intent.order_id, reason=reason,
                                code=code)

    def _on_intent(self, intent: ev.OrderIntent) -> tuple[ev.Event, ...]:
        if intent.symbol != self._symbol or intent.order_id in self.orders:
            return NO_EVENTS
        now = self._stamp.now()
        why = self._guard.admit(intent, now, self.last_price if intent.order_type == "market" else None)
        if why:
            return (self._reject(intent, why, "risk"), *self._guard.take_breach(intent.ts_event, intent.id))
        try:
            params = order_params(intent, self.rules, self.last_price)
        except (w.OrderRuleError, TypeError) as exc:
            return (self._reject(intent, str(exc), "rules"),)
        self.orders[intent.order_id] = _Tracked(intent.order_id, intent.symbol, intent.id,
                                                reduce_only=intent.reduce_only)
        self.outbox.append(Request("create", intent.order_id, intent.symbol, params))
        return (ev.OrderSubmitted(**self._stamp(intent.ts_event, intent.id), order_id=intent.order_id, venue="bybit"),)

    def _on_risk(self, change: ev.RiskStateChanged) -> tuple[ev.Event, ...]:
        if change.state == "halted" and change.run == self._stamp.run:
            self.outbox.append(Request("cancel_all", symbol=self._symbol))
        return NO_EVENTS

    def _on_position(self, pos: ev.PositionChanged) -> tuple[ev.Event, ...]:
        """The system is flat: its reduce-only orders left (a stop, a target) are cancelled, as the
        simulated exchange does; a standalone conditional order at Bybit would otherwise wait there and
        close the next position at the old one's stop."""
        if pos.symbol == self._symbol and pos.qty == 0:
            self.cancel_reduce_only()
        return NO_EVENTS

    def cancel_reduce_only(self) -> None:
        """Ask for every open reduce-only order to be cancelled (once each, until ``cancel_failed``)."""
        for t in self.orders.values():
            if t.reduce_only and not t.done and not t.cancelling:
                t.cancelling = True
                self.outbox.append(Request("cancel", t.order_id, t.symbol))

    def cancel_failed(self, order_id: str) -> None:
        t = self.orders.get(order_id)
        if t is not None:
            t.cancelling = False

    def restore(self, intent: ev.OrderIntent, accepted: bool) -> None:
        """An order the store says is open (a restart); the venue is asked about it before trading."""
        self.orders[intent.order_id] = _Tracked(intent.order_id, intent.symbol, intent.id, accepted=accepted,
                                                reduce_only=intent.reduce_only)

    # -- from the venue -----------------------------------------------------------------------------

    def _tracked(self, link: str, venue_id: str, symbol: str) -> _Tracked:
        oid = w.venue_order_id(link, venue_id)
        t = self.orders.get(oid)
        if t is None:  # an order placed outside this daemon (by hand, or by an earlier tool)
            t = self.orders[oid] = _Tracked(oid, symbol)
        return t

    def _accept(self, t: _Tracked, venue_id: str, ts: int) -> list[ev.Event]:
        """The order's acceptance, the first time anything shows the venue has it."""
        if t.accepted:
            return []
        t.accepted = True
        return [ev.OrderAccepted(**self._stamp(ts, t.cause), order_id=t.order_id, venue_order_id=venue_id)]

    def from_order(self, item: w.Order) -> list[ev.Event]:
        """An order's state (a push, or a lookup): acceptance and end, each once."""
        if item.symbol != self._symbol:
            return []
        t = self._tracked(item.orderLinkId, item.orderId, item.symbol)
        ts = int(item.updatedTime or item.createdTime or 0) * w.MS
        out = self._accept(t, item.orderId, ts) if item.orderStatus != "Rejected" else []
        if item.orderStatus in _OPEN or item.orderStatus == "Filled" or t.done:
            t.done = t.done or item.orderStatus == "Filled"  # the fills themselves come from executions
            return out
        t.done = True
        event = w.order_event(item, self._stamp)
        if event is not None:
            out.append(replace(event, cause=t.cause))
        return out

    def from_ack(self, order_id: str, ack: w.OrderAck) -> list[ev.Event]:
        t = self.orders.get(order_id)
        return [] if t is None else self._accept(t, ack.orderId, self._stamp.now())

    def from_refusal(self, order_id: str, code: int | str, reason: str) -> list[ev.Event]:
        t = self.orders.get(order_id)
        if t is None or t.done:
            return []
        t.done = True
        return [ev.OrderRejected(**self._stamp(self._stamp.now(), t.cause), order_id=order_id, reason=reason,
                                 code=str(code))]

    def from_execution(self, item: w.Execution) -> list[ev.Event]:
        if item.symbol != self._symbol or item.execType != "Trade":
            return []
        if item.execId in self.exec_ids:
            self.duplicates += 1
            return []
        self.exec_ids.add(item.execId)
        self.last_exec_ms = max(self.last_exec_ms, int(item.execTime))
        t = self._tracked(item.orderLinkId, item.orderId, item.symbol)
        out = self._accept(t, item.orderId, int(item.execTime) * w.MS)  # the execution may overtake the order
        out.append(replace(w.fill(item, self._stamp), cause=t.cause))
        return out

    def from_position(self, item: w.Position) -> list[ev.Event]:
        return [w.position_event(item, self._account)] if item.symbol == self._symbol else []

    def from_wallet(self, item: w.Wallet, ts_ms: int) -> list[ev.Event]:
        event = w.account_event(item, ts_ms, self._account)
        return [] if event is None else [event]

    def from_frame(self, frame: w.Frame) -> list[ev.Event]:
        kind = frame.topic.split(".", 1)[0]
        out: list[ev.Event] = []
        for item in frame.data:
            if kind == "execution":
                out += self.from_execution(item)
            elif kind == "order":
                out += self.from_order(item)
            elif kind == "position":
                out += self.from_position(item)
            elif kind == "wallet":
                out += self.from_wallet(item, frame.ts)
        return out

    def open_order_ids(self) -> list[str]:
        return [oid for oid, t in self.orders.items() if not t.done]
