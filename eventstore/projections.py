"""Projections: the state tradebus rebuilds by folding the event store from seq 1.

``rebuild`` folds events into a ``State``: positions per account from fills (deduplicated by the venue's
exec id), the last reported venue position and account, open orders, each system's lifecycle status and
risk state, and runs. An account is the system itself for demo and live runs (its positions carry over
from one daemon session to the next) and ``system/run`` for a replay or sweep run, each of which trades
its own simulated account. ``state_hash`` is a SHA-256 of the state's canonical JSON, so two rebuilds of the
same store print the same hash, and a daemon can prove its in-memory state equals the store's.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable

import msgspec

from tradebus.bus import events as ev
from tradebus.components.lifecycle import allowed
from tradebus.components.portfolio import Position, apply_fill

GLOBAL = "_global"


class OpenOrder(msgspec.Struct, kw_only=True):
    order_id: str
    system: str
    symbol: str
    side: str
    order_type: str
    qty: float
    price: float | None = None
    filled: float = 0.0
    status: str = "intent"
    venue_order_id: str = ""


class State(msgspec.Struct, kw_only=True):
    """Everything a restart needs, rebuilt from events alone."""

    last_seq: int = 0
    events: int = 0
    by_type: dict[str, int] = {}
    positions: dict[str, dict[str, Position]] = {}
    venue_positions: dict[str, dict[str, ev.PositionChanged]] = {}
    accounts: dict[str, ev.AccountState] = {}
    open_orders: dict[str, OpenOrder] = {}
    closed_orders: int = 0
    lifecycle: dict[str, str] = {}
    risk: dict[str, str] = {}
    runs: dict[str, str] = {}
    run_modes: dict[str, str] = {}
    exec_ids: set[str] = set()
    duplicate_fills: int = 0


def account(s: State, e: ev.Event) -> str:
    """The account an event belongs to: the system live, ``system/run`` for simulated runs."""
    mode = s.run_modes.get(e.run)
    return e.system if mode is None or mode in ("paper", "demo", "live") else f"{e.system}/{e.run}"


def _intent(s: State, e: ev.OrderIntent) -> None:
    s.open_orders[e.order_id] = OpenOrder(
        order_id=e.order_id, system=e.system, symbol=e.symbol, side=e.side,
        order_type=e.order_type, qty=e.qty, price=e.price,
    )


def _status(status: str) -> Callable[[State, ev.Event], None]:
    def apply(s: State, e: ev.Event) -> None:
        order = s.open_orders.get(e.order_id)  # type: ignore[attr-defined]
        if order is not None:
            order.status = status
            if isinstance(e, ev.OrderAccepted):
                order.venue_order_id = e.venue_order_id

    return apply


def _close_order(s: State, e: ev.Event) -> None:
    if s.open_orders.pop(e.order_id, None) is not None:  # type: ignore[attr-defined]
        s.closed_orders += 1


def _fill(s: State, e: ev.Fill) -> None:
    acct = account(s, e)
    key = f"{acct}|{e.exec_id}"
    if key in s.exec_ids:
        s.duplicate_fills += 1
        return
    s.exec_ids.add(key)
    book = s.positions.setdefault(acct, {})
    pos = book.get(e.symbol) or Position(symbol=e.symbol)
    book[e.symbol] = apply_fill(pos, e.side, e.qty, e.price, e.fee)
    order = s.open_orders.get(e.order_id)
    if order is not None:
        order.filled += e.qty
        order.status = "partially_filled"
        if e.leaves_qty <= 0 or order.filled >= order.qty * (1 - 1e-9):
            del s.open_orders[e.order_id]
            s.closed_orders += 1


def _venue_position(s: State, e: ev.PositionChanged) -> None:
    s.venue_positions.setdefault(account(s, e), {})[e.symbol] = e


def _account(s: State, e: ev.AccountState) -> None:
    s.accounts[account(s, e)] = e


def _promotion(s: State, e: ev.Promotion) -> None:
    # The lifecycle's rules decide what counts: a move they refuse (a forged promotion) changes nothing.
    frm = s.lifecycle.get(e.system)
    if not allowed(frm, e.to_status, e.rule, dict(e.evidence)) and (frm is None or e.from_status == frm):
        s.lifecycle[e.system] = e.to_status


def _risk(s: State, e: ev.RiskStateChanged) -> None:
    s.risk[GLOBAL if e.scope == "global" else e.system] = e.state


def _run_started(s: State, e: ev.RunStarted) -> None:
    s.runs[e.run] = "running"
    s.run_modes[e.run] = e.mode


def _run_finished(s: State, e: ev.RunFinished) -> None:
    s.runs[e.run] = e.status


_HANDLERS: dict[type, Callable[[State, ev.Event], None]] = {
    ev.OrderIntent: _intent,
    ev.OrderSubmitted: _status("submitted"),
    ev.OrderAccepted: _status("accepted"),
    ev.OrderRejected: _close_order,
    ev.OrderCancelled: _close_order,
    ev.OrderExpired: _close_order,
    ev.Fill: _fill,
    ev.PositionChanged: _venue_position,
    ev.AccountState: _account,
    ev.Promotion: _promotion,
    ev.RiskStateChanged: _risk,
    ev.RunStarted: _run_started,
    ev.RunFinished: _run_finished,
}


def apply(state: State, event: ev.Event, seq: int = 0) -> None:
    """Fold one event into ``state``."""
    state.events += 1
    state.last_seq = seq or state.last_seq + 1
    tag = ev.tag_of(event)
    state.by_type[tag] = state.by_type.get(tag, 0) + 1
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(state, event)


def rebuild(records: Iterable[tuple[int, ev.Event]]) -> State:
    """Fold (seq, event) pairs in order into a fresh state."""
    state = State()
    for seq, event in records:
        apply(state, event, seq)
    return state


_hash_encoder = msgspec.json.Encoder(order="sorted")


def state_hash(state: State) -> str:
    """Return a SHA-256 hex digest of the state's canonical JSON."""
    return hashlib.sha256(_hash_encoder.encode(state)).hexdigest()
