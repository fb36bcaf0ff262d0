"""Regime-adaptive systems: one strategy, a parameter set per market regime.

The ``params`` of strategy ``regime_switch`` name a base strategy (built-in or composable), a regime
indicator with a threshold, and the base strategy's parameters on each side of it::

    strategy:
      id: regime_switch
      params:
        strategy: sma_cross
        regime: {indicator: adx, period: 14, threshold: 25}
        below: {fast: 10, slow: 40, allow_short: true}    # ADX < 25: ranging
        above: {fast: 30, slow: 100, allow_short: true}   # ADX >= 25: trending
        flatten_on_switch: false

At each bar the regime is read from that bar's indicator value (so nothing looks ahead) and the base
strategy's step runs with that side's parameters and features; ``null`` for a side means stay flat in
that regime. The position is the one account's: a regime change hands the open position to the other
side's rules, or closes it with ``flatten_on_switch``. While the indicator is still warming up the
system has no opinion.

Like a composable spec, a switch compiles to an ordinary ``StrategyDef`` (once per structure: which
steps, how many features and numbers each reads), so replay and the sweep kernel run the same code.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numba as nb
import numpy as np
from pydantic import Field, model_validator

from tradebus.components.strategies import api as strategies
from tradebus.components.features import Feature, f
from tradebus.components.strict import StrictModel

class Regime(StrictModel):
    indicator: Literal["adx", "chop", "rsi"] = "adx"
    period: int = Field(14, ge=2)
    threshold: float = Field(25.0, ge=0, le=100)

    def feature(self) -> Feature:
        return f(self.indicator, self.period)


class RegimeSwitchParams(strategies.Params):
    """A base strategy with a parameter set below and above a regime indicator's threshold."""

    strategy: str
    regime: Regime = Regime()
    below: dict[str, Any] | None = None
    above: dict[str, Any] | None = None
    flatten_on_switch: bool = False

    @model_validator(mode="after")
    def _sides(self) -> "RegimeSwitchParams":
        if self.strategy == "regime_switch":
            raise ValueError("strategy: a regime switch cannot switch regime switches")
        if self.allow_short:
            raise ValueError("allow_short: set it inside below/above, each side's parameters decide")
        if self.below is None and self.above is None:
            raise ValueError("below and above are both null: give parameters for at least one regime")
        for side in self.sides():
            if side is not None and strategies.for_params(self.strategy, side).htf_features(side):
                raise ValueError(f"strategy {self.strategy!r} reads higher-timeframe features; "
                                 "a regime switch takes strategies on their own timeframe only")
        return self

    def sides(self) -> tuple[strategies.Params | None, strategies.Params | None]:
        """(below, above) as the base strategy's validated parameters (None: flat in that regime)."""
        try:
            model = strategies.get(self.strategy).params
        except KeyError as exc:
            raise ValueError(f"strategy: {exc.args[0]}") from None
        return tuple(None if s is None else model.model_validate(s) for s in (self.below, self.above))  # type: ignore[return-value]

    def vector(self) -> np.ndarray:
        """threshold, flatten flag, then the below side's vector and the above side's."""
        parts = [np.array([self.regime.threshold, float(self.flatten_on_switch)])]
        parts += [s.vector() for s in self.sides() if s is not None]
        return np.concatenate(parts)


def _layout(params: RegimeSwitchParams) -> tuple[list[Feature], list[tuple[strategies.StrategyDef, int, int, int, int] | None]]:
    """Features in column order (below's, above's, the regime's), and per side its definition with its
    [feature columns) and [parameter slots)."""
    feats: list[Feature] = []
    sides = []
    p = 2
    for side in params.sides():
        if side is None:
            sides.append(None)
            continue
        defn = strategies.for_params(params.strategy, side)
        own = defn.features(side)
        n = len(side.vector())
        sides.append((defn, len(feats), len(feats) + len(own), p, p + n))
        feats += own
        p += n
    feats.append(params.regime.feature())
    return feats, sides


def _branch(side: tuple | None, name: str) -> list[str]:
    if side is None:
        return ["        return FLAT"]
    _, c0, c1, p0, p1 = side
    return [f"        return {name}(cur[{c0}:{c1}], prev[{c0}:{c1}], pos, p[{p0}:{p1}])"]


_COMPILED: dict[tuple, strategies.StrategyDef] = {}


def specialize(params: strategies.Params) -> strategies.StrategyDef:
    """The ``StrategyDef`` of one switch (compiled once per structure)."""
    assert isinstance(params, RegimeSwitchParams)
    feats, sides = _layout(params)
    key = tuple(None if s is None else (s[0].id, *s[1:]) for s in sides)
    if key not in _COMPILED:
        k = len(feats) - 1
        lines = ["def decide(cur, prev, pos, p):",
                 f"    x = cur[{k}]",
                 "    if x != x:",
                 "        return HOLD",  # the regime indicator is still warming up
                 "    above = x >= p[0]",
                 f"    if p[1] > 0 and pos != 0 and prev[{k}] == prev[{k}] and (prev[{k}] >= p[0]) != above:",
                 "        return FLAT",
                 "    if above:", *_branch(sides[1], "step_above"),
                 "    else:", *_branch(sides[0], "step_below")]
        scope = {"FLAT": strategies.FLAT, "HOLD": strategies.HOLD}
        for s, name in zip(sides, ("step_below", "step_above")):
            if s is not None:
                scope[name] = s[0].decide
        exec(compile("\n".join(lines) + "\n", f"<regime_switch {key}>", "exec"), scope)  # source built above
        _COMPILED[key] = strategies.StrategyDef(
            f"regime_switch-{hashlib.sha256(repr(key).encode()).hexdigest()[:16]}", RegimeSwitchParams, lambda p: _layout(p)[0],
            nb.njit(nogil=True)(scope["decide"]),
            description=f"{params.strategy} with parameters per {params.regime.indicator} regime")
    return _COMPILED[key]


strategies.register(strategies.StrategyDef(
    "regime_switch", RegimeSwitchParams, lambda p: _layout(p)[0],
    specialize(RegimeSwitchParams(strategy="sma_cross", below={})).decide,
    description="A base strategy with one parameter set per regime (ADX, CHOP or RSI above/below a threshold).",
    specialize=specialize,
))
