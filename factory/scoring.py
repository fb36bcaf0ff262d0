"""The score a sweep ranks its trials by (their metrics are ``engine.metrics``'): a trial with too few
trades is disqualified (no score) rather than ranked on noise."""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from tradebus.components.strict import StrictModel


class ScoreSpec(StrictModel):
    """How a sweep scores its trials: a weighted sum of metrics, after disqualification."""

    min_trades: int = Field(30, ge=0)
    weights: dict[str, float] = Field(default_factory=lambda: {"sharpe": 1.0})

    @field_validator("weights")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(SCORABLE))
        if unknown:
            raise ValueError(f"cannot score by {', '.join(unknown)}; allowed: {', '.join(SCORABLE)}")
        return v


SCORABLE = ("sharpe", "sortino", "return_pct", "annualised_return", "max_drawdown", "profit_factor", "win_rate",
            "calmar")


def score(metrics: dict[str, float], spec: ScoreSpec) -> tuple[float | None, str | None]:
    """(score, None) or (None, why the trial is disqualified)."""
    if metrics["total_trades"] < spec.min_trades:
        return None, f"{metrics['total_trades']} trades < min_trades {spec.min_trades}"
    total = 0.0
    for name, w in spec.weights.items():
        value = metrics[name]
        if not math.isfinite(value):
            return None, f"{name} is undefined"
        total += w * value
    return total, None
