"""Strategy ``pool``: the members of a composite system (a system config's ``pool``), as the engine sees them.

Its features are every member's (so the snapshot carries what each one reads) and its step is never called:
a composite runs ``components.policy.PoolHost``, which steps each member on the snapshot and lets the
policy, on the bar's forecast, decide what the system holds. Its step is plain Python (``compiled`` False),
so a sweep refuses it; a composite is judged by replays (``tradebus forecast compare``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from tradebus.components.features import Feature
from tradebus.components.strategies import api as strategies
from tradebus.components.strict import StrictModel

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


class Member(StrictModel):
    id: str
    params: dict[str, Any] = {}


class PoolParams(strategies.Params):
    """The pool's members by name: each a strategy with its parameters."""

    members: dict[str, Member] = Field(min_length=1, max_length=20)

    @field_validator("members")
    @classmethod
    def _known(cls, v: dict[str, Member]) -> dict[str, Member]:
        for name, m in v.items():
            if not _NAME.match(name):
                raise ValueError(f"member name {name!r}: a letter, then letters, digits or _ (at most 32)")
            if m.id == "pool":
                raise ValueError(f"member {name}: a pool cannot hold a pool")
            try:
                strategies.for_params(m.id, strategies.get(m.id).params.model_validate(m.params))
            except ValueError as exc:
                raise ValueError(f"member {name}: {exc}") from None
        return v

    def resolved(self) -> dict[str, tuple[strategies.StrategyDef, strategies.Params]]:
        """Each member's definition (specialised for its parameters) and validated parameters."""
        out = {}
        for name, m in self.members.items():
            p = strategies.get(m.id).params.model_validate(m.params)
            out[name] = (strategies.for_params(m.id, p), p)
        return out

    def numbers(self) -> list[str]:
        return []  # the pool host steps each member with its own parameters; the pool decides nothing itself


def _union(lists: list[list[Feature]]) -> list[Feature]:
    out: list[Feature] = []
    for feats in lists:
        out += [f for f in feats if f not in out]
    return out


def _features(p: PoolParams) -> list[Feature]:
    return _union([d.features(mp) for d, mp in p.resolved().values()])


def _higher(p: PoolParams) -> dict[str, list[Feature]]:
    out: dict[str, list[Feature]] = {}
    for d, mp in p.resolved().values():
        for tf, feats in d.htf_features(mp).items():
            out[tf] = _union([out.get(tf, []), feats])
    return out


def _never(cur: Any, prev: Any, pos: int, p: Any) -> int:
    raise strategies.StrategyError("a pool's members decide through the pool host, not this step")


strategies.register(strategies.StrategyDef(
    "pool", PoolParams, _features, _never, htf_features=_higher, compiled=False,
    description="The members of a composite system (forecaster + policy + pool); set by a config's pool section."))
