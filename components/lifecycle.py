"""The lifecycle of a trading system: stages, which moves are allowed, and the status folded from the store.

A system moves along ``PATH`` one stage at a time (``paper`` may stand in for, or precede, ``demo``), can
be sent back (production -> live_test -> demo) or out (disabled, rework_required, rejected, retired) at
any stage, and comes back from disabled or rework_required only through ``candidate``. Every move is a
``Promotion`` event naming the rule that decided it and the numbers it read.

The guardrail lives in ``allowed``, which both the writer (``move``) and the reader (``fold``) apply:
nothing enters ``live_test`` or ``production`` except by the rule ``approved``, whose evidence names the
person who approved it (``tradebus lifecycle approve``). A promotion that breaks a rule, whoever
published it (a command, an agent, a message on the bus), is not folded into the status: ``fold`` lists
it under ``refused`` with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numba as nb
import numpy as np
from tradebus.bus import events as ev
from tradebus.components.base import is_command

if TYPE_CHECKING:
    from tradebus.configs.lifecycle import Demo, Demote, Hygiene, Test

PATH = ("candidate", "hygiene", "test", "demo", "live_test", "production")
OUT = ("disabled", "rework_required", "rejected", "retired")
GATED = ("live_test", "production")  # entered only with a person's approval
APPROVED = "approved"
ADMITTED = "admitted"


class LifecycleError(ValueError):
    """A move the lifecycle rules do not allow, and why."""


def allowed(frm: str | None, to: str, rule: str, evidence: dict) -> str:
    """Why the move ``frm`` -> ``to`` by ``rule`` is not allowed ('' if it is). ``frm`` None: no status yet."""
    if frm is None:
        return "" if to == "candidate" and rule == ADMITTED else f"a system enters as a candidate, not {to}"
    if frm in ("rejected", "retired"):
        return f"{frm} is final; admit the system again under a new id"
    if frm in ("production", "live_test") and to in ("live_test", "demo") and PATH.index(frm) == PATH.index(to) + 1:
        return ""  # sent back one stage (a smaller allocation, or back to demo): no approval needed to go down
    if to in GATED:
        if rule != APPROVED or not str(evidence.get("approved_by") or "").strip():
            return f"{to} is entered only with a person's approval (tradebus lifecycle approve), not by rule {rule!r}"
        before = PATH[PATH.index(to) - 1]
        return "" if frm == before else f"approval moves {before} -> {to}; the system is {frm}"
    if to in OUT:
        return "" if frm != to else f"already {to}"
    if to == "candidate":
        return "" if frm in ("disabled", "rework_required") else f"{frm} cannot go back to candidate"
    if to == "paper":
        return "" if frm == "test" else f"paper follows test, not {frm}"
    if frm in OUT:
        return f"a {frm} system returns as a candidate first"
    i, j = PATH.index(to), (PATH.index(frm) if frm in PATH else PATH.index("test"))  # paper stands where test does
    if j == i - 1 or (frm == "paper" and to == "demo"):
        return ""
    return f"{frm} -> {to} skips or reverses a stage (the path is {' -> '.join(PATH)})"


@dataclass
class Status:
    system: str
    status: str
    since: int  # ns: the move's ts_event
    rule: str
    evidence: dict
    moves: int = 0


@dataclass
class Folded:
    systems: dict[str, Status] = field(default_factory=dict)
    refused: list[tuple[ev.Promotion, str]] = field(default_factory=list)


def fold(promotions: Iterable[ev.Promotion]) -> Folded:
    """Every system's status from its promotions, in store order; a move the rules refuse is skipped and listed."""
    out = Folded()
    for p in promotions:
        current = out.systems.get(p.system)
        frm = None if current is None else current.status
        why = allowed(frm, p.to_status, p.rule, dict(p.evidence))
        if not why and frm is not None and p.from_status != frm:
            why = f"it moves from {p.from_status}, but the system is {frm}"
        if why:
            out.refused.append((p, why))
            continue
        out.systems[p.system] = Status(p.system, p.to_status, p.ts_event, p.rule, dict(p.evidence),
                                       (current.moves if current else 0) + 1)
    return out


def move(folded: Folded, stamp: dict, system: str, to: str, rule: str, evidence: dict[str, ev.Scalar]
         ) -> ev.Promotion:
    """The ``Promotion`` for a move the rules allow from the system's folded status; ``LifecycleError`` if not.
    ``stamp``: the envelope (id, times, run, cause)."""
    current = folded.systems.get(system)
    frm = None if current is None else current.status
    why = allowed(frm, to, rule, evidence)
    if why:
        raise LifecycleError(f"{system}: {why}")
    return ev.Promotion(**{**stamp, "system": system}, from_status=frm or "candidate", to_status=to, rule=rule,
                        evidence=evidence)


# --- demotion: an edge that went to zero ---------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def cusum_break(returns: np.ndarray, mu0: float, sigma: float, h: float) -> int:
    """The first bar at which a one-sided CUSUM says the mean return fell from ``mu0`` (the edge the
    backtest measured, per bar) to zero, or -1. Page's CUSUM on the log-likelihood ratio of N(0, sigma)
    against N(mu0, sigma): S = max(0, S + mu0 (mu0 / 2 - r) / sigma^2), alarm when S > h. It reads returns
    in order and stops at the alarm: nothing after a bar changes the decision at it."""
    if mu0 <= 0.0 or sigma <= 0.0:
        return -1
    k = mu0 / (sigma * sigma)
    s = 0.0
    for i in range(returns.shape[0]):
        r = returns[i]
        if r != r:
            continue
        s = max(0.0, s + k * (0.5 * mu0 - r))
        if s > h:
            return i
    return -1


# --- the rules: what a system's evidence decides --------------------------------------------------------

LIFECYCLE = "lifecycle:"  # how a guard state set by a demotion starts its reason (not a cap breach)
TRADING = ("demo", "live_test", "production")  # stages a daemon runs
DEMOTED_TO = {"demo": "rework_required", "live_test": "demo", "production": "live_test"}
YEAR_DAYS = 365.0  # crypto trades every day
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Decision:
    """A rule's verdict on one system: move ``to`` (``''``: stay), by ``rule``, with the numbers it read."""

    to: str
    rule: str
    evidence: dict
    why: str = ""  # a person's sentence: what decided it, or what is still missing


def _hold(rule: str, why: str, evidence: dict | None = None) -> Decision:
    return Decision("", rule, dict(evidence or {}), why)


def _r(x: float, digits: int = 6) -> float | None:
    """A number for a Promotion's evidence (finite, rounded so a rerun writes the same bytes)."""
    return round(float(x), digits) if x is not None and np.isfinite(x) else None


def admission_gate(runnable: str) -> Decision:
    """candidate -> hygiene: the config parses and the data its windows read are stored (``runnable``:
    why not, '' if so)."""
    if runnable:
        return _hold("runnable", runnable)
    return Decision("hygiene", "runnable", {}, "config valid, its data stored")


def hygiene_gate(m: dict, r: Hygiene) -> Decision:
    """hygiene -> test, from the hygiene window's run metrics, or rejected."""
    ev_ = {"trades": int(m["total_trades"]), "trades_per_year": _r(m["trades_per_year"], 2),
           "max_drawdown": _r(-m["max_drawdown"]), "sharpe": _r(m["sharpe"])}
    bad = []
    if m["total_trades"] < r.min_trades:
        bad.append(f"{m['total_trades']} trades < {r.min_trades}")
    if -m["max_drawdown"] > r.max_drawdown:
        bad.append(f"drawdown {-m['max_drawdown']:.1%} > {r.max_drawdown:.0%}")
    if not m["trades_per_year"] >= r.min_trades_per_year:
        bad.append(f"{m['trades_per_year']:.1f} trades a year < {r.min_trades_per_year:g}")
    if bad:
        return Decision("rejected", "hygiene_failed", ev_, "; ".join(bad))
    return Decision("test", "hygiene_passed", ev_, f"{m['total_trades']} trades, drawdown {-m['max_drawdown']:.1%}")


def test_gate(verdict: str, reasons: list[str], test_sharpe: float, correlations: dict[str, float], r: Test
              ) -> Decision:
    """test -> demo: the validation verdict, the test window's Sharpe, correlation with production."""
    worst = max(correlations.items(), key=lambda kv: abs(kv[1]), default=("", 0.0))
    ev_ = {"validation": verdict, "test_sharpe": _r(test_sharpe), "max_correlation": _r(worst[1]),
           "correlated_with": worst[0]}
    if verdict not in r.accept:
        to = "rejected" if verdict == "rejected" else "rework_required"
        return Decision(to, "validation_failed", ev_, f"validation {verdict}: {'; '.join(reasons) or '-'}")
    if not test_sharpe >= r.min_test_sharpe:
        return Decision("rework_required", "out_of_sample", ev_,
                        f"test-window Sharpe {test_sharpe:.2f} < {r.min_test_sharpe:g}")
    if abs(worst[1]) > r.max_correlation:
        return Decision("rework_required", "correlated", ev_,
                        f"correlation {worst[1]:+.2f} with {worst[0]} > {r.max_correlation:g}")
    return Decision("demo", "validated", ev_, f"validation {verdict}, test Sharpe {test_sharpe:.2f}")


@dataclass(frozen=True)
class Track:
    """A running system's record, per bar of its own timeframe: closes (ns), equity at each close, and the
    counts its store holds."""

    times: np.ndarray
    equity: np.ndarray
    entries: int = 0  # entry fills
    rejections: int = 0
    breaches: int = 0  # guard states other than active, set by a breached cap
    breach_reasons: tuple[str, ...] = ()

    @property
    def days(self) -> float:
        return float(self.times[-1] - self.times[0]) / DAY_NS if len(self.times) > 1 else 0.0


def bar_returns(equity: np.ndarray) -> np.ndarray:
    """Each bar's return from one equity to the next."""
    e = np.asarray(equity, dtype=np.float64)
    return e[1:] / e[:-1] - 1.0 if len(e) > 1 else np.empty(0)


def track_from(events: Iterable[ev.Event], system: str, symbol: str, timeframe: str, initial: float,
               modes: tuple[str, ...]) -> Track:
    """A running system's record from its store, in store order: equity at each of its bars' close is the
    balance the portfolio last reported plus the open position marked at that close (the portfolio's own
    marking), once the fills the bar caused (stored after it) are in; runs of other modes (a paper run in a
    demo store) are left out."""
    ours: set[str] = set()
    balance, qty, avg, close = initial, 0.0, 0.0, 0.0
    times: list[int] = []
    equity: list[float] = []
    entries = rejections = breaches = 0
    reasons: list[str] = []
    entry_ids: set[str] = set()
    for e in events:
        if isinstance(e, ev.RunStarted):
            if e.system == system and e.mode in modes:
                ours.add(e.run)
            continue
        if e.run not in ours:
            continue
        if isinstance(e, ev.BarClosed):
            if e.symbol == symbol and e.timeframe == timeframe:
                if times:  # the bar before is marked once everything it caused (its fills) is in
                    equity.append(balance + qty * (close - avg))
                times.append(e.ts_event)
                close = e.close
        elif e.system != system:
            continue
        elif isinstance(e, ev.AccountState):
            balance = e.balance
        elif isinstance(e, ev.PositionChanged):
            qty, avg = e.qty, e.avg_price
        elif isinstance(e, ev.OrderIntent):
            if e.label == "entry":
                entry_ids.add(e.order_id)
        elif isinstance(e, ev.Fill):
            entries += e.order_id in entry_ids and e.leaves_qty <= 0
        elif isinstance(e, ev.OrderRejected):
            rejections += 1
        elif (isinstance(e, ev.RiskStateChanged) and e.state != "active" and not is_command(e)
              and not e.reason.startswith(LIFECYCLE)):
            breaches += 1
            reasons.append(e.reason)
    if times:
        equity.append(balance + qty * (close - avg))
    return Track(np.asarray(times, dtype=np.int64), np.asarray(equity, dtype=np.float64), entries, rejections,
                 breaches, tuple(reasons))


def _per_year(times: np.ndarray) -> float:
    return YEAR_DAYS * DAY_NS / float(np.median(np.diff(times))) if len(times) > 2 else math.nan


def sharpe(times: np.ndarray, equity: np.ndarray) -> float:
    """Annualised Sharpe of bar returns (ddof=1); NaN with fewer than three bars or no variation."""
    r = bar_returns(equity)
    if len(r) < 2 or not r.std(ddof=1) > 0:
        return math.nan
    return float(r.mean() / r.std(ddof=1) * math.sqrt(_per_year(times)))


def max_drawdown(equity: np.ndarray) -> float:
    e = np.asarray(equity, dtype=np.float64)
    if len(e) == 0:
        return 0.0
    peak = np.maximum.accumulate(e)
    return float(np.max((peak - e) / peak))


def demo_eligible(track: Track, shadow: dict, r: Demo) -> Decision:
    """Is the demo record enough for a person to approve live_test? (days, entries, not significantly worse
    than its shadow replay). It moves nothing itself: ``approved`` does, and only when this holds."""
    ev_ = {"demo_days": _r(track.days, 2), "entries": track.entries, **shadow}
    missing = []
    if track.days < r.min_days:
        missing.append(f"{track.days:.1f} demo days < {r.min_days:g}")
    if track.entries < r.min_trades:
        missing.append(f"{track.entries} entries < {r.min_trades}")
    if "worse" not in shadow:
        missing.append("no shadow replay of the demo's bars yet (their candles are not stored: tradebus refresh)")
    elif shadow["worse"]:
        missing.append(f"demo significantly worse than its shadow replay (p {shadow['p_worse']:.3f})")
    if missing:
        return _hold("demo_record", "; ".join(missing), ev_)
    return Decision("live_test", "demo_record", ev_, "demo record complete: a person may approve live_test")


def demotion(stage: str, track: Track, shadow: dict, edge: tuple[float, float], r: Demote) -> Decision:
    """The first demotion rule a running system's record breaks, or a hold. ``edge``: the backtest's mean
    and standard deviation of bar returns on the test window (the CUSUM's "edge" hypothesis)."""
    to = DEMOTED_TO[stage]
    dd = max_drawdown(track.equity)
    ev_ = {"bars": len(track.times), "max_drawdown": _r(dd), "rejections": track.rejections,
           "risk_breaches": track.breaches}
    if track.breaches > r.max_risk_breaches:
        return Decision("disabled", "risk_breach", ev_, f"{track.breaches} risk-cap breaches: "
                        + "; ".join(track.breach_reasons[:3]))
    if dd >= r.max_drawdown:
        return Decision(to, "drawdown", ev_, f"drawdown {dd:.1%} >= {r.max_drawdown:.0%}")
    if track.rejections > r.max_rejections:
        return Decision(to, "rejections", ev_, f"{track.rejections} orders rejected > {r.max_rejections}")
    if shadow.get("divergence") is not None and shadow["divergence"] > r.max_divergence:
        return Decision(to, "shadow_divergence", {**ev_, "divergence": shadow["divergence"]},
                        f"equity diverged {shadow['divergence']:.2%} from the shadow replay > {r.max_divergence:.0%}")
    window = r.sharpe_window_days * DAY_NS
    if len(track.times) > 2 and track.times[-1] - track.times[0] >= window:
        k = int(np.searchsorted(track.times, track.times[-1] - window))
        s = sharpe(track.times[k:], track.equity[k:])
        ev_["rolling_sharpe"] = _r(s)
        if s < r.min_rolling_sharpe:
            return Decision(to, "rolling_sharpe", ev_, f"Sharpe {s:.2f} over {r.sharpe_window_days:g} days "
                            f"< {r.min_rolling_sharpe:g}")
    mu, sd = edge
    alarm = cusum_break(bar_returns(track.equity), mu, sd, r.cusum_threshold) if len(track.equity) > 1 else -1
    if alarm >= 0:
        return Decision(to, "edge_lost", {**ev_, "alarm_bar": alarm + 1, "edge_per_bar": _r(mu, 9)},
                        f"CUSUM: the backtest's edge is gone (alarm at bar {alarm + 1})")
    return _hold("healthy", f"drawdown {dd:.1%}, {track.rejections} rejections", ev_)
