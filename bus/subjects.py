"""NATS subjects: built here and nowhere else.

Scheme: every subject starts with ``tb.`` so one wildcard, ``tb.>``, is exactly tradebus's traffic on a
shared NATS cluster (and the recorder can take it through one subscription, which keeps one publisher's
order). Tokens are dot-separated; ``*`` matches one token, ``>`` one or more trailing tokens::

    tb.md.bar.{venue}.{symbol}.{tf}     closed bars                 BarClosed
    tb.md.snap.{venue}.{symbol}.{tf}    bars + features             Snapshot
    tb.fc.{model}.{symbol}              forecasts                   Forecast
    tb.sig.{system}                     strategy signals            Signal
    tb.ord.{system}                     order lifecycle             OrderIntent .. OrderExpired
    tb.fill.{system}                    executions, funding         Fill, FundingPaid
    tb.pos.{system}                     positions                   PositionChanged
    tb.acct.{system}                    balances                    AccountState
    tb.life.{system}                    lifecycle                   Promotion, Allocation
    tb.risk.{system}                    risk state                  RiskStateChanged (system "_" = global)
    tb.run.{system}                     run started / finished      RunStarted, RunFinished
    tb.hb.{system}                      heartbeats                  Heartbeat
    tb.work.sweep.{job}                 sweep work (JetStream queue) SweepTask
    tb.res.sweep.{job}                  sweep results (JetStream)    SweepResult

Market data leads with venue and symbol so ``tb.md.bar.bybit.BTCUSDT.>`` or ``tb.md.*.*.*.5m`` select
naturally; what a system does leads with its kind so ``tb.ord.>`` is every system's orders and
``tb.*.{system}`` everything one system does. People may leave out the ``tb.`` (``qualify`` adds it).
"""

from __future__ import annotations

import re
from functools import lru_cache

from tradebus.bus import events as ev

PREFIX = "tb"
ROOTS = ("md", "fc", "sig", "ord", "fill", "pos", "acct", "life", "risk", "run", "hb", "work", "res")
ALL = f"{PREFIX}.>"
NO_SYSTEM = "_"
# Sweep work and results live in their own streams; everything else is captured by the event stream.
CAPTURED_ROOTS = tuple(root for root in ROOTS if root not in ("work", "res"))
CAPTURED = tuple(f"{PREFIX}.{root}.>" for root in CAPTURED_ROOTS)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class SubjectError(ValueError):
    """A subject or pattern that NATS would not accept or that breaks the scheme."""


@lru_cache(maxsize=4096)  # every event names its system: check each name once
def token(value: str, what: str) -> str:
    """Check one subject token (a system id, a symbol, ...)."""
    if not _TOKEN_RE.match(value):
        raise SubjectError(f"{what} {value!r} cannot be a subject token: use letters, digits, '_' or '-'")
    return value


def _sys(event: ev.Event) -> str:
    return token(event.system, "system") if event.system else NO_SYSTEM


_BY_TYPE = {
    ev.BarClosed: lambda e: f"tb.md.bar.{e.venue}.{e.symbol}.{e.timeframe}",
    ev.Snapshot: lambda e: f"tb.md.snap.{e.bar.venue}.{e.bar.symbol}.{e.bar.timeframe}",
    ev.Forecast: lambda e: f"tb.fc.{e.model_id}.{e.symbol}",
    ev.ForecastScored: lambda e: f"tb.fc.{e.model_id}.{e.symbol}",
    ev.Signal: lambda e: f"tb.sig.{_sys(e)}",
    ev.PolicyDecision: lambda e: f"tb.sig.{_sys(e)}",
    ev.OrderIntent: lambda e: f"tb.ord.{_sys(e)}",
    ev.OrderSubmitted: lambda e: f"tb.ord.{_sys(e)}",
    ev.OrderAccepted: lambda e: f"tb.ord.{_sys(e)}",
    ev.OrderRejected: lambda e: f"tb.ord.{_sys(e)}",
    ev.OrderCancelled: lambda e: f"tb.ord.{_sys(e)}",
    ev.OrderExpired: lambda e: f"tb.ord.{_sys(e)}",
    ev.Fill: lambda e: f"tb.fill.{_sys(e)}",
    ev.FundingPaid: lambda e: f"tb.fill.{_sys(e)}",
    ev.PositionChanged: lambda e: f"tb.pos.{_sys(e)}",
    ev.AccountState: lambda e: f"tb.acct.{_sys(e)}",
    ev.Promotion: lambda e: f"tb.life.{_sys(e)}",
    ev.Allocation: lambda e: f"tb.life.{_sys(e)}",
    ev.RiskStateChanged: lambda e: f"tb.risk.{_sys(e)}",
    ev.RunStarted: lambda e: f"tb.run.{_sys(e)}",
    ev.RunFinished: lambda e: f"tb.run.{_sys(e)}",
    ev.Heartbeat: lambda e: f"tb.hb.{_sys(e)}",
    ev.SweepTask: lambda e: f"tb.work.sweep.{token(e.job, 'job')}",
    ev.SweepResult: lambda e: f"tb.res.sweep.{token(e.job, 'job')}",
}
assert set(_BY_TYPE) == set(ev.EVENT_TYPES), "every event type needs a subject"


def subject_for(event: ev.Event) -> str:
    """Return the subject an event is published on."""
    return _BY_TYPE[type(event)](event)


def captured(subject: str) -> bool:
    """Whether the event stream keeps ``subject``."""
    return any(matches(pattern, subject) for pattern in CAPTURED)


def sweep_work(job: str = "*") -> str:
    """Pattern for a sweep job's queued work (``*``: every job's)."""
    return f"tb.work.sweep.{job}"


def sweep_results(job: str = "*") -> str:
    """Pattern for a sweep job's results."""
    return f"tb.res.sweep.{job}"


def bars(venue: str = "*", symbol: str = "*", timeframe: str = "*") -> str:
    """Pattern for closed bars, e.g. ``bars("bybit", "BTCUSDT")``; ``bars(venue, ">")``: every bar of a venue."""
    return f"tb.md.bar.{venue}.{symbol}" + ("" if symbol == ">" else f".{timeframe}")


def snapshots(venue: str = "*", symbol: str = "*", timeframe: str = "*") -> str:
    """Pattern for snapshots (bars with their features)."""
    return f"tb.md.snap.{venue}.{symbol}.{timeframe}"


def _of(root: str, system: str) -> str:
    """Pattern for one kind of a system's events: ``system`` a system id, ``NO_SYSTEM`` (the account's),
    or ``*`` (everyone's)."""
    return f"{PREFIX}.{root}.{system if system in ('*', '>', NO_SYSTEM) else token(system, 'system')}"


def forecasts(model: str = "*", symbol: str = "*") -> str:
    """Pattern for a model's forecasts (and their scores)."""
    return f"tb.fc.{model}.{symbol}"


def signals(system: str = "*") -> str:
    return _of("sig", system)


def orders(system: str = "*") -> str:
    return _of("ord", system)


def fills(system: str = "*") -> str:
    return _of("fill", system)


def positions(system: str = "*") -> str:
    return _of("pos", system)


def accounts(system: str = "*") -> str:
    return _of("acct", system)


def risk(system: str = "*") -> str:
    """Pattern for risk states and commands (``NO_SYSTEM``: the account's)."""
    return _of("risk", system)


def lifecycle(system: str = "*") -> str:
    """Pattern for a system's lifecycle moves and allocations."""
    return _of("life", system)


def system_pattern(system: str) -> str:
    """The pattern that carries everything one system does (signals, orders, fills, ...)."""
    return f"{PREFIX}.*.{token(system, 'system')}"


def qualify(pattern: str) -> str:
    """Add the ``tb.`` prefix to a pattern a person typed without it (``ord.>`` -> ``tb.ord.>``)."""
    if pattern in (">", "tb", f"{PREFIX}.>"):
        return ALL
    if pattern.startswith(f"{PREFIX}.") or pattern.split(".")[0] not in (*ROOTS, "*"):
        return validate_pattern(pattern)
    return validate_pattern(f"{PREFIX}.{pattern}")


def validate_pattern(pattern: str) -> str:
    """Check a subscription pattern: non-empty tokens, ``>`` only last."""
    tokens = pattern.split(".")
    for i, tok in enumerate(tokens):
        if tok == ">" and i != len(tokens) - 1:
            raise SubjectError(f"pattern {pattern!r}: '>' must be the last token")
        if tok in ("*", ">"):
            continue
        if not tok or any(c in tok for c in " \t\r\n*>"):
            raise SubjectError(f"pattern {pattern!r}: bad token {tok!r}")
    return pattern


@lru_cache(maxsize=65536)
def matches(pattern: str, subject: str) -> bool:
    """Return whether ``subject`` matches ``pattern`` under NATS wildcard rules."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if tok != "*" and tok != s[i]:
            return False
    return len(p) == len(s)
