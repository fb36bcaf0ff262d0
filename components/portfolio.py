"""Positions: a signed quantity at an average entry price, updated by fills (``kernel.apply_fill``).

Fees are accumulated separately: realised PnL is before fees.
"""

from __future__ import annotations

import math

import msgspec

from tradebus.bus import events as ev
from tradebus.bus.events import Side
from tradebus.components import kernel
from tradebus.components.base import NO_EVENTS, Component, Stamper


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol's position for one system."""

    symbol: str
    qty: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0

    def unrealized(self, mark: float) -> float:
        """PnL of the open quantity marked at ``mark``."""
        return (mark - self.avg_price) * self.qty


def apply_fill(pos: Position, side: Side, qty: float, price: float, fee: float = 0.0) -> Position:
    """Return the position after a fill of ``qty`` (> 0) at ``price``."""
    if qty <= 0:
        raise ValueError(f"fill qty must be > 0, got {qty}")
    new, avg, realized = kernel.apply_fill(pos.qty, pos.avg_price, pos.realized_pnl, qty if side == "buy" else -qty, price)
    return msgspec.structs.replace(pos, qty=new, avg_price=avg, realized_pnl=realized, fees=pos.fees + fee)


class Portfolio(Component):
    """Cash, positions, PnL, fees and funding for one system; publishes position and account changes.

    ``balance = initial + realised - fees - funding``; ``equity = balance + unrealised`` (positions marked
    at the last close). ``curve`` gets one row per step, after everything the step caused.
    """

    name = "portfolio"

    def __init__(self, stamp: Stamper, *, venue: str, symbol: str, timeframe: str, initial_capital: float,
                 max_leverage: float = 1.0) -> None:
        super().__init__()
        self._stamp = stamp
        self._patterns = (f"tb.fill.{stamp.system}", f"tb.md.bar.{venue}.{symbol}.{timeframe}")
        self._symbol = symbol
        self._leverage = max_leverage
        self.initial = initial_capital
        self.balance = initial_capital
        self.realized = 0.0
        self.fees = 0.0
        self.funding = 0.0
        self.positions: dict[str, Position] = {}
        self.marks: dict[str, float] = {}
        self.curve: list[tuple[int, float, float, float, float, float, float, float, float]] = []
        self._handlers.update({ev.Fill: self._on_fill, ev.FundingPaid: self._on_funding, ev.BarClosed: self._on_bar})

    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    def unrealized(self) -> float:
        return sum(p.unrealized(self.marks.get(s, p.avg_price)) for s, p in self.positions.items() if p.qty)

    def equity(self) -> float:
        return self.balance + self.unrealized()

    def _account(self, ts: int, cause: str) -> ev.AccountState:
        margin = sum(abs(p.qty) * self.marks.get(s, p.avg_price) for s, p in self.positions.items()) / self._leverage
        equity = self.equity()
        return ev.AccountState(**self._stamp(ts, cause), balance=self.balance, equity=equity, margin_used=margin,
                               available=equity - margin)

    def _on_bar(self, bar: ev.BarClosed) -> tuple[ev.Event, ...]:
        self.marks[bar.symbol] = bar.close
        return NO_EVENTS

    def _on_fill(self, fill: ev.Fill) -> tuple[ev.Event, ...]:
        pos = self.positions.get(fill.symbol) or Position(symbol=fill.symbol)
        new = apply_fill(pos, fill.side, fill.qty, fill.price, fill.fee)
        self.positions[fill.symbol] = new
        gained = new.realized_pnl - pos.realized_pnl
        self.realized += gained
        self.fees += fill.fee
        self.balance += gained - fill.fee
        mark = self.marks.get(fill.symbol, fill.price)
        return (
            ev.PositionChanged(**self._stamp(fill.ts_event, fill.id), symbol=fill.symbol, qty=new.qty,
                               avg_price=new.avg_price, realized_pnl=new.realized_pnl,
                               unrealized_pnl=new.unrealized(mark), mark_price=mark),
            self._account(fill.ts_event, fill.id),
        )

    def _on_funding(self, paid: ev.FundingPaid) -> tuple[ev.Event, ...]:
        self.funding += paid.amount
        self.balance -= paid.amount
        return (self._account(paid.ts_event, paid.id),)

    def on_step_end(self, ts: int) -> None:
        pos = self.positions.get(self._symbol)
        mark = self.marks.get(self._symbol, math.nan)
        if len(self.positions) <= 1:  # the common case: one symbol, no generator sums per bar
            qty = pos.qty if pos else 0.0
            unrealized = (mark - pos.avg_price) * qty if qty else 0.0
        else:
            qty, unrealized = (pos.qty if pos else 0.0), self.unrealized()
        self.curve.append((ts, mark, self.balance, self.balance + unrealized, qty, unrealized, self.realized,
                           self.fees, self.funding))
