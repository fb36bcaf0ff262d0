"""Position accounting: pure functions of (position, fill) -> position.

A position is signed quantity at an average entry price. A fill in the same direction averages in; an
opposite fill realises PnL on the closed part, and one larger than the position flips it, opening the
remainder at the fill price. Fees are accumulated separately (realised PnL is before fees).
"""

from __future__ import annotations

import msgspec

from tradebus.bus.events import Side

# Quantities below this are float dust from averaging, not a position.
QTY_EPS = 1e-12


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
    signed = qty if side == "buy" else -qty
    old = pos.qty
    new = old + signed
    realized = pos.realized_pnl
    if old == 0 or (old > 0) == (signed > 0):
        avg = (pos.avg_price * abs(old) + price * qty) / abs(new)
    else:
        closed = min(abs(old), qty)
        realized += closed * (price - pos.avg_price) * (1.0 if old > 0 else -1.0)
        if abs(new) <= QTY_EPS:
            new, avg = 0.0, 0.0
        elif (new > 0) == (old > 0):
            avg = pos.avg_price
        else:
            avg = price
    return msgspec.structs.replace(pos, qty=new, avg_price=avg, realized_pnl=realized, fees=pos.fees + fee)
