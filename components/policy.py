"""A composite system's policy and its host: forecast in, which pool members count and what the system holds.

Each pool member is stepped on every snapshot as if it traded alone (its own position, -1/0/1, follows
its own decisions). On the bar's ``Forecast`` the policy (``decide``) takes the members listed for the
forecast's likeliest regime, with their weights, and nets what they hold:

- exposure = sum(weight x member position) / sum(weights), in [-1, 1];
- direction: long or short when |exposure| reaches ``agreement``, else flat;
- confidence below ``min_confidence``, no forecast (a refusing model), or a regime with no members: flat;
- scale (the entry's size, as a share of the risk section's): ``vol_target / expected_vol`` clipped to
  [``min_scale``, 1] (``vol_target`` null: 1). It applies when a position is entered.

A change of direction is a ``Signal`` (strength = scale) to the risk manager, as a strategy's would be;
a change of regime, weights, direction or reason is a ``PolicyDecision`` event. Everything is a pure
function of the snapshots and forecasts, so a daemon decides as a replay of the same bars does.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from pydantic import Field, field_validator

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.components.base import NO_EVENTS, Stamper
from tradebus.components.forecast import REGIMES
from tradebus.components.strategies import FLAT, HOLD, LONG, SHORT
from tradebus.components.strategies.pool import PoolParams
from tradebus.components.strategy_host import FollowsFills, row_names
from tradebus.components.strict import StrictModel

RegimeName = Literal["trend_up", "trend_down", "chop", "crash"]
_DIRECTION = {LONG: "long", SHORT: "short", FLAT: "flat"}


class PolicySpec(StrictModel):
    """A declarative policy (a system config's ``policy`` section); its version is a hash of its content."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    regimes: dict[RegimeName, dict[str, float]] = Field(
        description="per regime, the members that count and their weights (a regime left out: every member, 1)")
    min_confidence: float = Field(0.0, ge=0, le=1)
    agreement: float = Field(0.5, gt=0, le=1, description="|net exposure| needed to hold a side")
    vol_target: float | None = Field(None, gt=0, description="expected volatility over the horizon at scale 1")
    min_scale: float = Field(0.25, gt=0, le=1)

    @field_validator("regimes")
    @classmethod
    def _weights(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for regime, weights in v.items():
            for name, w in weights.items():
                if not (w >= 0 and math.isfinite(w)):
                    raise ValueError(f"{regime}.{name}: a weight is a finite number >= 0, got {w}")
        return v

    @property
    def version(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]

    def check_members(self, members: list[str]) -> None:
        """Refuse a weight for a member the pool does not have."""
        for regime, weights in self.regimes.items():
            unknown = sorted(set(weights) - set(members))
            if unknown:
                raise ValueError(f"policy.regimes.{regime}: {', '.join(unknown)} not in the pool "
                                 f"({', '.join(members)})")

    def weights(self, regime: str, members: list[str]) -> dict[str, float]:
        return self.regimes.get(regime, {m: 1.0 for m in members})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Decision:
    regime: str
    weights: dict[str, float]
    exposure: float
    direction: int  # LONG, SHORT or FLAT
    scale: float
    reason: str


def decide(policy: PolicySpec, forecast: ev.Forecast | None, positions: dict[str, int]) -> Decision:
    """What the system holds, from the forecast and the members' positions (pure)."""
    members = list(positions)
    if forecast is None:
        return Decision("unknown", {}, 0.0, FLAT, 0.0, "no forecast for this bar (the model refuses it)")
    if forecast.confidence < policy.min_confidence:
        return Decision(forecast.regime, {}, 0.0, FLAT, 0.0,
                        f"confidence {forecast.confidence:.3f} below {policy.min_confidence}")
    weights = {m: w for m, w in policy.weights(forecast.regime, members).items() if w > 0}
    total = sum(weights.values())
    if total <= 0:
        return Decision(forecast.regime, {}, 0.0, FLAT, 0.0, f"no member trades in {forecast.regime}")
    exposure = sum(w * positions[m] for m, w in weights.items()) / total
    direction = (LONG if exposure > 0 else SHORT) if abs(exposure) >= policy.agreement - 1e-12 else FLAT
    scale = 1.0
    if policy.vol_target is not None:
        scale = min(1.0, max(policy.min_scale, policy.vol_target / forecast.expected_vol)) \
            if forecast.expected_vol > 0 else policy.min_scale
    return Decision(forecast.regime, weights, exposure, direction, scale, "")


class PoolHost(FollowsFills):
    """Steps a composite's pool members and turns the policy's decision into signals."""

    name = "strategy"

    def __init__(self, stamp: Stamper, pool: PoolParams, policy: PolicySpec, model_id: str, venue: str, symbol: str,
                 timeframe: str, warm_rows: dict[str, np.ndarray], refusal: Callable[[str], str]) -> None:
        """``warm_rows``: each member's feature rows of the bars before the first one published: the members
        are stepped over them, from flat, so their positions are the same in a replay and in a daemon
        seeded with the same history. ``refusal(snapshot id)``: why the forecaster made no forecast for
        that bar ('' if it made one)."""
        super().__init__()
        self._stamp = stamp
        self._policy = policy
        self._version = policy.version
        self._symbol = symbol
        self._timeframe = timeframe
        self._refusal = refusal
        self._members = []
        self.positions: dict[str, int] = {}
        self._prev: dict[str, tuple[float, ...] | None] = {}
        for name, (defn, params) in pool.resolved().items():
            own, higher = row_names(defn, params)
            p = params.vector()
            self._members.append((name, defn.decide, p, own, higher))
            rows = warm_rows[name]
            pos = FLAT
            for j in range(1, len(rows)):
                target = defn.decide(rows[j], rows[j - 1], pos, p)
                if target != HOLD:
                    pos = target
            self.positions[name] = pos
            self._prev[name] = tuple(float(x) for x in rows[-1]) if len(rows) else None
        self.qty = 0.0
        self._last: tuple | None = None
        self._snap: ev.Snapshot | None = None
        self._patterns = (subjects.snapshots(venue, symbol, timeframe), subjects.forecasts(model_id, symbol),
                          subjects.fills(stamp.system))
        self._handlers.update({ev.Snapshot: self._on_snapshot, ev.Forecast: self._on_forecast, ev.Fill: self._on_fill})

    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    def _on_snapshot(self, snap: ev.Snapshot) -> tuple[ev.Event, ...]:
        if snap.system != self._stamp.system:
            return NO_EVENTS
        feats = snap.features
        for name, step, p, own, higher in self._members:
            values = [feats[n] for n in own] + [snap.htf[tf][n] for tf, n in higher]
            cur = tuple(values)
            prev, self._prev[name] = self._prev.get(name), cur
            if prev is None:
                continue
            target = step(cur, prev, self.positions[name], p)
            if target != HOLD:
                self.positions[name] = target
        self._snap = snap
        if self._refusal(snap.id):  # no forecast will come for this bar: the policy decides without one
            return self._act(None)
        return NO_EVENTS

    def _on_forecast(self, fc: ev.Forecast) -> tuple[ev.Event, ...]:
        if fc.system != self._stamp.system or self._snap is None or fc.cause != self._snap.id:
            return NO_EVENTS
        return self._act(fc)

    def _act(self, fc: ev.Forecast | None) -> tuple[ev.Event, ...]:
        d = decide(self._policy, fc, self.positions)
        cause = fc if fc is not None else self._snap
        assert cause is not None
        out: list[ev.Event] = []
        key = (d.regime, tuple(sorted(d.weights.items())), d.direction, d.reason)
        if key != self._last:
            self._last = key
            out.append(ev.PolicyDecision(
                **self._stamp(cause.ts_event, cause.id), policy_id=self._policy.id, policy_version=self._version,
                symbol=self._symbol, regime=d.regime if d.regime in REGIMES else "unknown",
                confidence=fc.confidence if fc else 0.0, expected_vol=fc.expected_vol if fc else 0.0,
                weights=d.weights, positions=dict(self.positions), exposure=d.exposure,
                direction=_DIRECTION[d.direction], scale=d.scale, reason=d.reason))
        if d.direction != self.held:
            out.append(ev.Signal(**self._stamp(cause.ts_event, cause.id), strategy=f"pool:{self._policy.id}",
                                 symbol=self._symbol, timeframe=self._timeframe, direction=_DIRECTION[d.direction],
                                 strength=d.scale if d.direction != FLAT else 1.0, reason=d.reason))
        return tuple(out)
