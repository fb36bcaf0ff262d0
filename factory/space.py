"""Parameter spaces: a grid, random draws or a Latin hypercube over declared values and ranges.

A parameter is declared as a list of values, a range ``{min, max}`` (``step`` to grid it; integers stay
integers), or one fixed value. A grid is the cartesian product (ranges need a step); random and Latin
hypercube draws are seeded, so a job names the same trials every time it runs (scipy's ``qmc``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from scipy.stats import qmc

from tradebus.components.strict import StrictModel

SpaceKind = Literal["grid", "random", "lhs"]
MAX_POINTS = 2_000_000  # a task's trials, at most (the full StochRSI grid over 3 timeframes is 82,944)


class Range(StrictModel):
    min: float
    max: float
    step: float | None = Field(None, gt=0)
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self

    def count(self) -> int:
        """How many values the stepped range holds (counted, not listed: a tiny step must not fill memory)."""
        if self.step is None:
            raise ValueError("a grid needs a step for every range")
        return int(math.floor((self.max - self.min) / self.step + 1e-9)) + 1

    def grid(self) -> list[float | int]:
        n = self.count()
        if n > MAX_POINTS:
            raise ValueError(f"{n:,} values from min {self.min} to max {self.max} by step {self.step}: at most "
                             f"{MAX_POINTS:,}")
        return [self._cast(self.min + k * self.step) for k in range(n)]

    def at(self, u: float) -> float | int:
        """The value at quantile ``u`` in [0, 1) (snapped to the step when there is one)."""
        if self.step is not None:
            values = self.grid()
            return values[min(int(u * len(values)), len(values) - 1)]
        if self.integer:
            return int(self.min + math.floor(u * (self.max - self.min + 1)))
        return self.min + u * (self.max - self.min)

    def _cast(self, x: float) -> float | int:
        return int(round(x)) if self.integer else round(x, 12)


Declared = list[Any] | Range | bool | int | float | str


def _values(decl: Declared) -> list[Any]:
    if isinstance(decl, Range):
        return decl.grid()
    return list(decl) if isinstance(decl, list) else [decl]


def _at(decl: Declared, u: float) -> Any:
    if isinstance(decl, Range):
        return decl.at(u)
    values = _values(decl)
    return values[min(int(u * len(values)), len(values) - 1)]


def expand(space: dict[str, Declared], kind: SpaceKind = "grid", samples: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """The trials of a space, in a stable order."""
    names = sorted(space)
    if kind == "grid":
        return [dict(zip(names, combo)) for combo in itertools.product(*(_values(space[n]) for n in names))]
    if samples <= 0:
        raise ValueError(f"a {kind} space needs samples > 0")
    if kind == "random":
        u = np.random.default_rng(seed).random((samples, len(names)))
    else:
        u = qmc.LatinHypercube(d=max(len(names), 1), seed=seed).random(samples)
    return [{n: _at(space[n], float(u[i, j])) for j, n in enumerate(names)} for i in range(samples)]


def grid_size(space: dict[str, Declared]) -> int:
    """How many points a grid over ``space`` has (counted, not listed)."""
    return math.prod(d.count() if isinstance(d, Range) else len(_values(d)) for d in space.values())
