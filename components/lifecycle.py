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

from dataclasses import dataclass, field
from typing import Iterable

import numba as nb
import numpy as np

from tradebus.bus import events as ev

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
