"""Positions: a signed quantity at an average entry price, updated by fills (``kernel.apply_fill``).

Fees are accumulated separately: realised PnL is before fees.
"""

from __future__ import annotations

import msgspec
import numpy as np

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.bus.events import Side
from tradebus.components import kernel
from tradebus.components.base import Component, Stamper


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
    return book(pos, side, qty, price, fee, 0.0)[0]


def book(pos: Position, side: Side, qty: float, price: float, fee: float, balance: float) -> tuple[Position, float]:
    """(the position, the balance) after a fill of ``qty`` (> 0) at ``price`` paying ``fee`` (``kernel.book``)."""
    if qty <= 0:
        raise ValueError(f"fill qty must be > 0, got {qty}")
    new, avg, realized, balance = kernel.book(pos.qty, pos.avg_price, pos.realized_pnl, balance,
                                              qty if side == "buy" else -qty, price, fee)
    return msgspec.structs.replace(pos, qty=new, avg_price=avg, realized_pnl=realized, fees=pos.fees + fee), balance


class Portfolio(Component):
    """Cash, positions, PnL, fees and funding for one system; publishes position and account changes.

    ``balance = initial + realised - fees - funding``; ``equity = balance + unrealised``. The portfolio
    does no work per bar: it logs its state at each change (``changes``, stamped with the step), and
    ``curve`` marks that state to every bar's close afterwards, in one vectorised pass.
    """

    name = "portfolio"

    def __init__(self, stamp: Stamper, *, symbol: str, initial_capital: float, max_leverage: float = 1.0) -> None:
        super().__init__()
        self._stamp = stamp
        self._patterns = (subjects.fills(stamp.system),)
        self._symbol = symbol
        self._leverage = max_leverage
        self.initial = initial_capital
        self.balance = initial_capital
        self.realized = 0.0
        self.fees = 0.0
        self.funding = 0.0
        self.positions: dict[str, Position] = {}
        # The last price seen per symbol (fills, funding marks): AccountState's equity is marked there,
        # which is the market at that moment; the per-bar curve is marked at closes.
        self.marks: dict[str, float] = {}
        self.changes: list[tuple[int, float, float, float, float, float, float]] = []
        self._handlers.update({ev.Fill: self._on_fill, ev.FundingPaid: self._on_funding})

    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    def unrealized(self) -> float:
        return sum(p.unrealized(self.marks.get(s, p.avg_price)) for s, p in self.positions.items() if p.qty)

    def equity(self) -> float:
        return self.balance + self.unrealized()

    def _changed(self, ts: int, cause: str) -> ev.AccountState:
        pos = self.positions.get(self._symbol)
        self.changes.append((self._stamp.now(), pos.qty if pos else 0.0, pos.avg_price if pos else 0.0,
                             self.balance, self.realized, self.fees, self.funding))
        margin = sum(abs(p.qty) * self.marks.get(s, p.avg_price) for s, p in self.positions.items()) / self._leverage
        equity = self.equity()
        return ev.AccountState(**self._stamp(ts, cause), balance=self.balance, equity=equity, margin_used=margin,
                               available=equity - margin)

    def _on_fill(self, fill: ev.Fill) -> tuple[ev.Event, ...]:
        pos = self.positions.get(fill.symbol) or Position(symbol=fill.symbol)
        new, self.balance = book(pos, fill.side, fill.qty, fill.price, fill.fee, self.balance)
        self.positions[fill.symbol] = new
        self.marks[fill.symbol] = fill.price
        self.realized += new.realized_pnl - pos.realized_pnl
        self.fees += fill.fee
        return (
            ev.PositionChanged(**self._stamp(fill.ts_event, fill.id), symbol=fill.symbol, qty=new.qty,
                               avg_price=new.avg_price, realized_pnl=new.realized_pnl,
                               unrealized_pnl=new.unrealized(fill.price), mark_price=fill.price),
            self._changed(fill.ts_event, fill.id),
        )

    def _on_funding(self, paid: ev.FundingPaid) -> tuple[ev.Event, ...]:
        self.marks[paid.symbol] = paid.mark_price
        self.funding += paid.amount
        self.balance -= paid.amount
        return (self._changed(paid.ts_event, paid.id),)

    def curve(self, step_times: np.ndarray, closes: np.ndarray) -> np.ndarray:
        """Per step: close, balance, equity, qty, unrealised, realised, fees, funding (state at step end)."""
        initial = (0, 0.0, 0.0, self.initial, 0.0, 0.0, 0.0)
        log = np.array([initial, *self.changes], dtype=np.float64).reshape(-1, 7)
        stamps = np.array([initial[0], *(c[0] for c in self.changes)], dtype=np.int64)
        at = np.searchsorted(stamps, step_times, side="right") - 1
        state = log[at]
        return marked_curve(closes, state[:, 3], state[:, 1], state[:, 2], state[:, 4], state[:, 5], state[:, 6])


def marked_curve(closes: np.ndarray, balance: np.ndarray, qty: np.ndarray, avg: np.ndarray, realized: np.ndarray,
                 fees: np.ndarray, funding: np.ndarray) -> np.ndarray:
    """Per step: close, balance, equity, qty, unrealised, realised, fees, funding, from the state at each step's
    end marked at its close (the replay's portfolio and the compiled loop alike)."""
    unrealized = np.where(qty != 0, (closes - avg) * qty, 0.0)
    return np.column_stack((closes, balance, balance + unrealized, qty, unrealized, realized, fees, funding))
