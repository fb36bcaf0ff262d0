"""The account of several systems: what the venue would report for the whole account, from the systems' own.

Where several systems share an account at the simulated exchange (a portfolio replay), no venue reports
the account, so this component does: at every change of a system's balance or position it publishes the
account's balance and equity (systems' balances, their positions marked at the last closes, and the cash no
system holds) and the net position per symbol, with no system (``tb.acct._``, ``tb.pos._``), as Bybit's
wallet and position pushes are. Each system's guard reads its account caps from these.
"""

from __future__ import annotations

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.components.base import NO_EVENTS, Component, Stamper


class AccountBook(Component):
    name = "account"

    def __init__(self, stamp: Stamper, *, venue: str, cash: float) -> None:
        """``cash``: the account's capital that no system was given."""
        super().__init__()
        self._stamp = stamp
        self._venue = venue
        self._cash = cash
        self._balances: dict[str, float] = {}
        self._positions: dict[tuple[str, str], tuple[float, float]] = {}  # (system, symbol) -> (qty, avg)
        self._marks: dict[str, float] = {}
        self._handlers.update({ev.AccountState: self._on_account, ev.PositionChanged: self._on_position,
                               ev.BarClosed: self._on_bar})

    def patterns(self) -> tuple[str, ...]:
        return (subjects.accounts(), subjects.positions(), subjects.bars(self._venue, ">"))

    def open_balances(self, balances: dict[str, float]) -> None:
        """Each system's balance before its first account event (its initial capital)."""
        self._balances.update(balances)

    def _on_bar(self, bar: ev.BarClosed) -> tuple[ev.Event, ...]:
        self._marks[bar.symbol] = bar.close
        return NO_EVENTS

    def _equity(self) -> float:
        upl = sum(q * (self._marks.get(sym, avg) - avg) for (_, sym), (q, avg) in self._positions.items() if q)
        return self._cash + sum(self._balances.values()) + upl

    def _account(self, cause: ev.Event) -> ev.AccountState:
        return ev.AccountState(**self._stamp(cause.ts_event, cause.id), balance=self._cash + sum(self._balances.values()),
                               equity=self._equity())

    def _on_account(self, acct: ev.AccountState) -> tuple[ev.Event, ...]:
        if not acct.system:
            return NO_EVENTS  # the account's own (this component's)
        self._balances[acct.system] = acct.balance
        return (self._account(acct),)

    def _on_position(self, pos: ev.PositionChanged) -> tuple[ev.Event, ...]:
        if not pos.system:
            return NO_EVENTS
        self._positions[(pos.system, pos.symbol)] = (pos.qty, pos.avg_price)
        if pos.mark_price > 0:
            self._marks[pos.symbol] = pos.mark_price
        held = [(q, avg) for (_, sym), (q, avg) in self._positions.items() if sym == pos.symbol and q]
        net = sum(q for q, _ in held)
        cost = sum(q * avg for q, avg in held)
        net_pos = ev.PositionChanged(**self._stamp(pos.ts_event, pos.id), symbol=pos.symbol, qty=net,
                                     avg_price=cost / net if net else 0.0, mark_price=self._marks.get(pos.symbol, 0.0))
        return (net_pos, self._account(pos))
