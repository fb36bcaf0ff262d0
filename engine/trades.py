"""Round-trip trades rebuilt from fill and funding events (the trades.csv ledger).

A trade opens when a symbol's position leaves zero and closes when it returns to zero; a fill that
flips the position closes one trade and opens the next with the remainder, splitting its fee in
proportion. Funding paid while a trade is open belongs to it. ``pnl`` is net of fees and funding;
``return_pct`` is ``pnl`` over the entry notional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from tradebus.bus import events as ev
from tradebus.components import kernel


@dataclass
class Trade:
    symbol: str
    side: str  # long / short
    entry_time: int
    entry_price: float = 0.0
    qty: float = 0.0  # largest absolute position held
    exit_time: int = 0
    exit_price: float = 0.0
    gross: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    bars_held: int = 0
    _exit_qty: float = field(default=0.0, repr=False)
    _exit_value: float = field(default=0.0, repr=False)

    @property
    def pnl(self) -> float:
        return self.gross - self.fees - self.funding

    @property
    def return_pct(self) -> float:
        notional = self.entry_price * self.qty
        return self.pnl / notional if notional else 0.0


FIELDS = ("entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "pnl", "fees", "funding",
          "return_pct", "bars_held")


Ledger = Iterable[tuple[str, int, float, float, float, float]]
"""Fills and funding in run order: (symbol, ts, signed qty, price, fee, funding amount); a funding
payment has qty 0 and a fill has amount 0."""


def build_trades(events: Iterable[ev.Event], bar_ns: int) -> tuple[list[Trade], list[Trade]]:
    """Return (closed trades, trades still open) from a run's fills and funding, in order."""
    ledger = ((e.symbol, e.ts_event, 0.0, 0.0, 0.0, e.amount) if isinstance(e, ev.FundingPaid)
              else (e.symbol, e.ts_event, e.qty if e.side == "buy" else -e.qty, e.price, e.fee, 0.0)
              for e in events if isinstance(e, (ev.Fill, ev.FundingPaid)))
    return trades_from_ledger(ledger, bar_ns)


def trades_from_ledger(ledger: Ledger, bar_ns: int) -> tuple[list[Trade], list[Trade]]:
    """The trades of a ledger (from events, or from the sweep kernel's arrays)."""
    closed: list[Trade] = []
    open_: dict[str, Trade] = {}
    pos: dict[str, tuple[float, float, float]] = {}  # symbol -> (qty, avg, realized)
    for symbol, ts, signed, price, fee, amount in ledger:
        if signed == 0.0:
            if symbol in open_:
                open_[symbol].funding += amount
            continue
        fill_qty = abs(signed)
        qty, avg, realized = pos.get(symbol, (0.0, 0.0, 0.0))
        new_qty, new_avg, new_realized = kernel.apply_fill(qty, avg, realized, signed, price)
        pos[symbol] = (new_qty, new_avg, new_realized)
        closing = min(abs(qty), fill_qty) if qty and (qty > 0) != (signed > 0) else 0.0
        opening = fill_qty - closing
        trade = open_.get(symbol)
        if closing:
            assert trade is not None
            share = closing / fill_qty
            trade.fees += fee * share
            trade.gross += new_realized - realized
            trade._exit_qty += closing
            trade._exit_value += closing * price
            if new_qty == 0 or (new_qty > 0) != (qty > 0):
                trade.exit_time = ts
                trade.exit_price = trade._exit_value / trade._exit_qty
                trade.bars_held = round((trade.exit_time - trade.entry_time) / bar_ns)
                closed.append(open_.pop(symbol))
        if opening > 1e-12 * fill_qty:
            trade = open_.get(symbol)
            if trade is None:
                trade = Trade(symbol, "long" if signed > 0 else "short", ts)
                open_[symbol] = trade
            trade.fees += fee * (opening / fill_qty)
            trade.entry_price = abs(new_avg)
            trade.qty = max(trade.qty, abs(new_qty))
    return closed, list(open_.values())
