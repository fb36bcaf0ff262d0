"""Metrics of a trial from the kernel's running statistics, and the score a sweep ranks by.

Sharpe and Sortino use per-bar returns annualised with the bars in a 365-day year for the timeframe
(crypto trades every day), exactly as ``replay.metrics`` does; a trial with too few trades is
disqualified (no score) rather than ranked on noise.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradebus.factory import sim
from tradebus.engine.metrics import YEAR_NS


class ScoreSpec(BaseModel):
    """How a sweep scores its trials: a weighted sum of metrics, after disqualification."""

    model_config = ConfigDict(extra="forbid", frozen=True)
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


def metrics_from_stats(stats: np.ndarray, initial: float, bar_ns: int) -> dict[str, float]:
    """The experiments table's metrics from ``simulate``'s statistics vector."""
    bars = int(stats[sim.M_BARS])
    periods = YEAR_NS / bar_ns
    total = float(stats[sim.M_FINAL_EQUITY] / initial - 1.0)
    years = bars * bar_ns / YEAR_NS
    cagr = (1.0 + total) ** (1.0 / years) - 1.0 if years > 0 and total > -1 else math.nan
    mean = stats[sim.M_RET_MEAN]
    sd = math.sqrt(stats[sim.M_RET_M2] / (bars - 1)) if bars > 1 and stats[sim.M_RET_M2] > 0 else 0.0
    down = math.sqrt(stats[sim.M_DOWN_SQ] / bars) if bars else 0.0
    trades = int(stats[sim.M_TRADES])
    max_dd = float(stats[sim.M_MAX_DD])
    loss = stats[sim.M_LOSS_SUM]
    return {
        "return_pct": total,
        "annualised_return": cagr,
        "max_drawdown": max_dd,
        "total_trades": trades,
        "trades_per_year": trades / years if years > 0 else math.nan,
        "win_rate": stats[sim.M_WINS] / trades if trades else math.nan,
        "profit_factor": float(stats[sim.M_WIN_SUM] / -loss) if loss < 0 else math.nan,
        "sharpe": float(mean / sd * math.sqrt(periods)) if sd > 0 else math.nan,
        "sortino": float(mean / down * math.sqrt(periods)) if down > 0 else math.nan,
        "calmar": cagr / abs(max_dd) if max_dd < 0 else math.nan,
        "exposure": stats[sim.M_EXPOSED] / bars if bars else 0.0,
        "fees_paid": float(stats[sim.M_FEES]),
        "funding_paid": float(stats[sim.M_FUNDING]),
        "bars": bars,
    }


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
