"""Round-trip trades rebuilt from fill and funding events (the trades.csv ledger).

A trade opens when a symbol's position leaves zero and closes when it returns to zero; a fill that
flips the position closes one trade and opens the next with the remainder, splitting its fee in
proportion. Funding paid while a trade is open belongs to it. ``pnl`` is net of fees and funding;
``return_pct`` is ``pnl`` over the entry notional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numba as nb
import numpy as np

from tradebus.bus import events as ev
from tradebus.components import kernel as K

_jit = nb.njit(cache=True, nogil=True)


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


TRADE = np.dtype([("open", np.bool_), ("side", np.int64), ("entry_time", np.int64), ("entry_price", np.float64),
                  ("qty", np.float64), ("exit_time", np.int64), ("exit_price", np.float64), ("gross", np.float64),
                  ("fees", np.float64), ("funding", np.float64), ("exit_qty", np.float64), ("exit_value", np.float64),
                  ("row", np.int64)])
"""A trade as the compiled code keeps it (``row``: the ledger row that opened it, or, once closed, closed it)."""


@_jit
def trade_fill(tr, done: np.ndarray, q0: float, realized0: float, qty: float, avg: float, realized: float,
               signed: float, price: float, fee: float, ts: int, row: int) -> bool:
    """Book a fill of ``signed`` at ``price`` into the trade open on its symbol (``tr``), the position having
    gone from ``q0`` (realised ``realized0``) to ``qty`` at ``avg`` (realised ``realized``).

    The part that reduces the position exits the trade; the rest opens one or adds to it; a fill that flips
    the position closes one trade and opens the next with the remainder, its fee split in proportion.
    Returns True when the fill closed the trade: it is then ``done[0]`` (and ``tr`` the next, if any).
    """
    fill_qty = abs(signed)
    closing = min(abs(q0), fill_qty) if (q0 != 0.0 and (q0 > 0.0) != (signed > 0.0)) else 0.0
    opening = fill_qty - closing
    closed = False
    if closing != 0.0:
        tr.fees += fee * (closing / fill_qty)
        tr.gross += realized - realized0
        tr.exit_qty += closing
        tr.exit_value += closing * price
        if qty == 0.0 or (qty > 0.0) != (q0 > 0.0):
            tr.exit_time = ts
            tr.exit_price = tr.exit_value / tr.exit_qty
            tr.row = row
            tr.open = False
            done[0] = tr
            closed = True
    if opening > 1e-12 * fill_qty:
        if not tr.open:
            tr.open, tr.side, tr.entry_time, tr.row = True, 1 if signed > 0.0 else -1, ts, row
            tr.entry_price = tr.qty = tr.gross = tr.fees = tr.funding = tr.exit_qty = tr.exit_value = 0.0
            tr.exit_time = 0
            tr.exit_price = 0.0
        tr.fees += fee * (opening / fill_qty)
        tr.entry_price = abs(avg)
        tr.qty = max(tr.qty, abs(qty))
    return closed


@_jit
def trade_funding(tr, amount: float) -> None:
    """Funding paid while a trade is open belongs to it."""
    if tr.open:
        tr.funding += amount


@_jit
def _ledger_trades(ts: np.ndarray, signed: np.ndarray, price: np.ndarray, fee: np.ndarray, amount: np.ndarray,
                   rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One symbol's ledger: (its closed trades, its open trade if ``[0].open``)."""
    closed = np.empty(len(ts), dtype=TRADE)
    open_ = np.zeros(1, dtype=TRADE)
    tr = open_[0]
    n = 0
    q = avg = realized = 0.0
    for k in range(len(ts)):
        if signed[k] == 0.0:
            trade_funding(tr, amount[k])
            continue
        new_q, new_avg, new_realized = K.apply_fill(q, avg, realized, signed[k], price[k])
        if trade_fill(tr, closed[n:n + 1], q, realized, new_q, new_avg, new_realized, signed[k], price[k], fee[k],
                      ts[k], rows[k]):
            n += 1
        q, avg, realized = new_q, new_avg, new_realized
    return closed[:n], open_


def _trade(symbol: str, r: tuple, bar_ns: int) -> Trade:
    is_open, side, entry_time, entry_price, qty, exit_time, exit_price, gross, fees, funding, exit_qty, exit_value = r[:12]
    return Trade(symbol, "long" if side > 0 else "short", entry_time, entry_price, qty, exit_time, exit_price, gross,
                 fees, funding, 0 if is_open else round((exit_time - entry_time) / bar_ns), exit_qty, exit_value)


def trades_from_ledger(ledger: Ledger, bar_ns: int) -> tuple[list[Trade], list[Trade]]:
    """The trades of a ledger (from events, or from the sweep kernel's arrays): closed ones in the order they
    closed, open ones in the order they opened. ``trade_fill`` splits each fill, per symbol."""
    by_symbol: dict[str, list[tuple[int, int, float, float, float, float]]] = {}
    for row, (symbol, ts, signed, price, fee, amount) in enumerate(ledger):
        by_symbol.setdefault(symbol, []).append((ts, row, signed, price, fee, amount))
    closed: list[tuple[int, Trade]] = []
    open_: list[tuple[int, Trade]] = []
    for symbol, entries in by_symbol.items():
        ts, rows, signed, price, fee, amount = zip(*entries)
        done, still = _ledger_trades(np.array(ts, dtype=np.int64), np.array(signed, dtype=np.float64),
                                     np.array(price, dtype=np.float64), np.array(fee, dtype=np.float64),
                                     np.array(amount, dtype=np.float64), np.array(rows, dtype=np.int64))
        closed += [(r[-1], _trade(symbol, r, bar_ns)) for r in done.tolist()]
        open_ += [(r[-1], _trade(symbol, r, bar_ns)) for r in still.tolist() if r[0]]
    return [t for _, t in sorted(closed, key=lambda x: x[0])], [t for _, t in sorted(open_, key=lambda x: x[0])]
