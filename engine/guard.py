"""The risk guard: hard caps on what one system (and the whole account) may do, and the kill switch.

States, per scope (this system; the account, "global"):

- ``active``: orders pass the caps below;
- ``reducing``: only reduce-only orders pass (a daily-loss breach, or a position grown past its notional
  or leverage cap by the market moving). A daily-loss state lifts at the next UTC day; a position cap
  lifts once the position is back inside it;
- ``halted``: nothing passes and open orders are cancelled (drawdown from peak, a runaway order rate,
  ``tradebus kill``, or a position the daemon cannot reconcile). Only a person lifts it
  (``tradebus resume``).

An order that would breach the notional or leverage cap is refused on its own without changing state.
Every change is a ``RiskStateChanged`` event, so a restart restores the state by replaying the store.
Commands (kill, resume) arrive as ``RiskStateChanged`` events from another run; the guard answers with its
own. The guard is a pure component: the venue component asks ``admit`` before an order leaves.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.bus.ids import IdGenerator
from tradebus.components.base import COMMAND, NO_EVENTS, Component, Stamper, is_command
from tradebus.components.lifecycle import LIFECYCLE
from tradebus.configs.limits import Caps, Limits

DAY_NS = 86_400 * 10**9
MINUTE_NS = 60 * 10**9
DAILY_LOSS = "daily loss"  # how a daily-loss state's reason starts: a restart restores it till midnight
_RANK = {"active": 0, "reducing": 1, "halted": 2}
_SIGN = {"buy": 1.0, "sell": -1.0}


@dataclass
class _Scope:
    """What one scope's caps read, and the state they put it in."""

    name: str  # "system" or "global"
    caps: Caps
    state: str = "active"
    reason: str = ""
    sticky: bool = False  # set by a breach only a person may lift (halted), or by a daily loss (till midnight)
    balance: float = math.nan
    equity_reported: float = math.nan  # the venue's wallet equity (global scope)
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)  # symbol -> (qty, avg)
    marks: dict[str, float] = field(default_factory=dict)  # symbol -> last reported mark (other symbols')
    day: int = -1
    day_start: float = math.nan
    peak: float = math.nan


def command(system: str, state: str, reason: str) -> ev.RiskStateChanged:
    """A kill (``halted``) or resume (``active``) for one system, or for the account when ``system`` is ''."""
    now = time.time_ns()
    ids = IdGenerator()
    return ev.RiskStateChanged(id=ids.next(now), ts_event=now, ts_init=now, system=system,
                               run=f"{COMMAND}{ids.next(now)[:16].lower()}", scope="system" if system else "global",
                               state=state, previous="halted" if state == "active" else "active", reason=reason)


class RiskGuard(Component):
    """Caps for one system on one symbol, and for the account it trades in."""

    name = "guard"

    def __init__(self, stamp: Stamper, limits: Limits, *, venue: str, symbol: str, timeframe: str,
                 initial_balance: float = math.nan) -> None:
        """``initial_balance``: the system's balance before its first account event (its initial capital)."""
        super().__init__()
        self._stamp = stamp
        self._symbol = symbol
        system = subjects.token(stamp.system, "system")
        account = subjects.NO_SYSTEM
        self._patterns = (subjects.bars(venue, symbol, timeframe), subjects.positions(system), subjects.accounts(system),
                          subjects.positions(account), subjects.accounts(account), subjects.risk(system),
                          subjects.risk(account), subjects.lifecycle(system))
        self._scopes = {"system": _Scope("system", limits.for_system(stamp.system), balance=initial_balance),
                        "global": _Scope("global", limits.global_)}
        self._uncapped = all(v is None for sc in self._scopes.values() for v in sc.caps.model_dump().values())
        self._orders: deque[int] = deque()
        self._halt_later: tuple[str, str] | None = None  # an order-rate breach admit() found
        self.price = math.nan
        self._handlers.update({ev.BarClosed: self._on_bar, ev.PositionChanged: self._on_position,
                               ev.AccountState: self._on_account, ev.RiskStateChanged: self._on_risk,
                               ev.Promotion: self._on_promotion})

    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    @property
    def state(self) -> str:
        """The stricter of the two scopes' states."""
        return max((s.state for s in self._scopes.values()), key=_RANK.__getitem__)

    @property
    def idle(self) -> bool:
        """Nothing to enforce and nothing to lift: no caps (a replay without limits) and both scopes active."""
        return self._uncapped and self._scopes["system"].state == "active" and self._scopes["global"].state == "active"

    def reason(self) -> str:
        return "; ".join(f"{s.name}: {s.reason}" for s in self._scopes.values() if s.state != "active")

    # -- the gate ---------------------------------------------------------------------------------

    def admit(self, intent: ev.OrderIntent, now: int, price: float | None = None) -> str:
        """Why ``intent`` may not be sent ('' if it may). A refused order changes nothing, except that a
        runaway order rate halts."""
        state = self.state
        if state == "halted":
            return f"risk halted ({self.reason()})"
        if state == "reducing" and not intent.reduce_only:
            return f"risk reducing: only reduce-only orders ({self.reason()})"
        while self._orders and self._orders[0] <= now - MINUTE_NS:
            self._orders.popleft()
        for scope in self._scopes.values():
            cap = scope.caps.max_orders_per_minute
            if cap is not None and len(self._orders) >= cap:
                self._halt_later = (scope.name, f"order rate: more than {cap} orders in 60 s")
                return f"order rate cap {cap}/min reached"
        if not intent.reduce_only:
            px = price or intent.price or self.price
            for scope in self._scopes.values():
                why = self._exposure_after(scope, intent, px)
                if why:
                    return why
        self._orders.append(now)
        return ""

    def halt(self, reason: str, ts: int, cause: str = "") -> tuple[ev.Event, ...]:
        """Halt this system now (its position cannot be reconciled with the venue's); a person resumes it."""
        return self._set(self._scopes["system"], "halted", reason, ts, cause, sticky=True)

    def take_breach(self, ts: int, cause: str) -> tuple[ev.Event, ...]:
        """The state change an ``admit`` decided (an order-rate halt), as events."""
        breach, self._halt_later = self._halt_later, None
        if breach is None:
            return NO_EVENTS
        return self._set(self._scopes[breach[0]], "halted", breach[1], ts, cause, sticky=True)

    def _exposure_after(self, scope: _Scope, intent: ev.OrderIntent, price: float) -> str:
        caps = scope.caps
        if caps.max_position_notional is None and caps.max_leverage is None:
            return ""
        positions = self._view(scope).positions
        qty, _ = positions.get(intent.symbol, (0.0, 0.0))
        after = abs(qty + _SIGN[intent.side] * intent.qty) * price
        if caps.max_position_notional is not None and after > caps.max_position_notional:
            return (f"{scope.name} position notional {after:,.2f} would exceed the cap "
                    f"{caps.max_position_notional:,.2f}")
        if caps.max_leverage is not None:
            equity = self._equity(scope)
            view = self._view(scope)
            marked = (abs(q) * self._mark(view, s) for s, (q, _) in positions.items() if s != intent.symbol)
            others = sum(x for x in marked if not math.isnan(x))
            lev = (after + others) / equity if equity > 0 else math.inf
            if lev > caps.max_leverage:
                return f"{scope.name} leverage {lev:.2f} would exceed the cap {caps.max_leverage:g}"
        return ""

    # -- state ------------------------------------------------------------------------------------

    def _view(self, scope: _Scope) -> _Scope:
        """Whose numbers a scope's caps read: the account's own reports, or, where the venue reports no
        account (the simulated exchange of a replay or a paper run), the system's, which are then the
        whole account's."""
        if scope.name == "global" and math.isnan(scope.balance):
            return self._scopes["system"]
        return scope

    def _equity(self, scope: _Scope) -> float:
        if scope.name == "global" and not math.isnan(scope.equity_reported):
            return scope.equity_reported
        view = self._view(scope)
        marked = ((q, avg, self._mark(view, s)) for s, (q, avg) in view.positions.items() if q)
        return view.balance + sum(q * (m - avg) for q, avg, m in marked if not math.isnan(m))

    def _mark(self, scope: _Scope, symbol: str) -> float:
        """A symbol's price: this system's from its bars, another's as the account last reported it."""
        return self.price if symbol == self._symbol else scope.marks.get(symbol, math.nan)

    def _set(self, scope: _Scope, state: str, reason: str, ts: int, cause: str, sticky: bool = False,
             answer: bool = False) -> tuple[ev.Event, ...]:
        """Change state and say so; ``answer``: say it even if unchanged (a command is always answered)."""
        if scope.state == state and not answer:
            return NO_EVENTS
        previous, scope.state, scope.reason, scope.sticky = scope.state, state, reason, sticky
        stamp = self._stamp(ts, cause)
        if scope.name == "global":
            stamp["system"] = ""  # the account's state: tb.risk._
        return (ev.RiskStateChanged(**stamp, scope=scope.name, state=state, previous=previous, reason=reason),)

    def _check(self, scope: _Scope, ts: int, cause: str) -> tuple[ev.Event, ...]:
        """Breaches read from equity and position; called whenever either may have moved."""
        equity = self._equity(scope)
        if math.isnan(equity) or scope.state == "halted" and scope.sticky:
            return NO_EVENTS
        caps = scope.caps
        day = ts // DAY_NS
        if day != scope.day:
            scope.day, scope.day_start = day, equity
            if scope.state == "reducing" and scope.sticky and scope.reason.startswith(DAILY_LOSS):  # ends with the day
                out = self._set(scope, "active", "new UTC day", ts, cause)
                return out + self._check(scope, ts, cause)
        scope.peak = equity if math.isnan(scope.peak) else max(scope.peak, equity)
        if caps.max_drawdown is not None and scope.peak > 0 and (scope.peak - equity) / scope.peak >= caps.max_drawdown:
            return self._set(scope, "halted", f"drawdown {(scope.peak - equity) / scope.peak:.1%} from peak "
                             f"{scope.peak:,.2f} reached the cap {caps.max_drawdown:.1%}", ts, cause, sticky=True)
        if caps.max_daily_loss is not None and scope.day_start > 0 and (
                scope.day_start - equity) / scope.day_start >= caps.max_daily_loss:
            return self._set(scope, "reducing", f"{DAILY_LOSS} {(scope.day_start - equity) / scope.day_start:.1%} "
                             f"reached the cap {caps.max_daily_loss:.1%}", ts, cause, sticky=True)
        if scope.sticky:
            return NO_EVENTS
        view = self._view(scope)
        marked = (abs(q) * self._mark(view, s) for s, (q, _) in view.positions.items() if q)
        notional = sum(x for x in marked if not math.isnan(x))
        over = ""
        if caps.max_position_notional is not None and notional > caps.max_position_notional:
            over = f"position notional {notional:,.2f} above the cap {caps.max_position_notional:,.2f}"
        elif caps.max_leverage is not None and equity > 0 and notional / equity > caps.max_leverage:
            over = f"leverage {notional / equity:.2f} above the cap {caps.max_leverage:g}"
        if over:
            return self._set(scope, "reducing", over, ts, cause)
        if scope.state == "reducing":
            return self._set(scope, "active", "back inside the caps", ts, cause)
        return NO_EVENTS

    def _check_all(self, ts: int, cause: str) -> tuple[ev.Event, ...]:
        return self._check(self._scopes["system"], ts, cause) + self._check(self._scopes["global"], ts, cause)

    def _on_bar(self, bar: ev.BarClosed) -> tuple[ev.Event, ...]:
        self.price = bar.close
        if self.idle:
            return NO_EVENTS
        return self._check_all(bar.ts_event, bar.id)

    def _scope_of(self, event: ev.Event) -> _Scope:
        return self._scopes["global" if not event.system else "system"]

    def _on_position(self, pos: ev.PositionChanged) -> tuple[ev.Event, ...]:
        scope = self._scope_of(pos)
        scope.positions[pos.symbol] = (pos.qty, pos.avg_price)
        if pos.mark_price > 0:
            scope.marks[pos.symbol] = pos.mark_price
            if pos.symbol == self._symbol:
                self.price = pos.mark_price
        return self._checks_after(scope, pos.ts_event, pos.id)

    def _on_account(self, acct: ev.AccountState) -> tuple[ev.Event, ...]:
        scope = self._scope_of(acct)
        scope.balance = acct.balance
        if scope.name == "global":
            scope.equity_reported = acct.equity
        return self._checks_after(scope, acct.ts_event, acct.id)

    def _checks_after(self, scope: _Scope, ts: int, cause: str) -> tuple[ev.Event, ...]:
        """The scope's caps, and the account's too where it reads this scope's numbers."""
        if self.idle:
            return NO_EVENTS
        if scope.name == "system" and self._view(self._scopes["global"]) is scope:
            return self._check_all(ts, cause)
        return self._check(scope, ts, cause)

    def _on_promotion(self, p: ev.Promotion) -> tuple[ev.Event, ...]:
        """The system moved stage while this session trades it (a demotion, or an approval that hands it to
        another mode's daemon): exits only from now on, until a person resumes it; the risk manager
        closes the position."""
        if p.system != self._stamp.system or p.run == self._stamp.run:
            return NO_EVENTS
        scope = self._scopes["system"]
        if scope.state == "halted":
            return NO_EVENTS
        return self._set(scope, "reducing", f"{LIFECYCLE} {p.from_status} -> {p.to_status} by {p.rule}",
                         p.ts_event, p.id, sticky=True)

    def _on_risk(self, change: ev.RiskStateChanged) -> tuple[ev.Event, ...]:
        scope = self._scopes[change.scope]
        if change.run == self._stamp.run:
            return NO_EVENTS  # our own announcement coming back
        if not is_command(change):
            # A state recorded by an earlier session: restore it, quietly, with what lifts it. A halt waits
            # for a person; a daily loss for the end of the day it was recorded in; a position over its
            # cap for the position (re-checked at the next bar).
            daily = change.state == "reducing" and change.reason.startswith(DAILY_LOSS)
            scope.state, scope.reason = change.state, change.reason
            scope.sticky = change.state == "halted" or daily or change.reason.startswith(LIFECYCLE)
            if daily:
                scope.day = change.ts_event // DAY_NS
            return NO_EVENTS
        sticky = change.state != "active"
        # `resume --all` lifts every halt, the system's own too: "all systems -> active" must be true.
        scopes = [scope]
        if change.state == "active" and scope.name == "global" and self._scopes["system"].state != "active":
            scopes.append(self._scopes["system"])
        out: tuple[ev.Event, ...] = ()
        for sc in scopes:
            if change.state == "active":
                sc.peak = math.nan  # a person resumed: measure drawdown from here
                sc.day = -1
            out += self._set(sc, change.state, change.reason, change.ts_event, change.id, sticky=sticky, answer=True)
            if change.state == "active":
                out += self._check(sc, change.ts_event, change.id)
        return out
