"""The lifecycle's thresholds: what promotes a system, what demotes it, how capital is split.

A person edits them (``configs/lifecycle.yaml`` is the shipped default; ``tradebus lifecycle run --rules
FILE``). They are thresholds only: the rules that read them are code (``components/lifecycle.py``), and
nothing here can raise a risk cap: the caps live in the limits file, and an allocation only scales a
system's size down (``RiskManager``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field
from tradebus.configs.schema import _Strict, parse_model, read_yaml
from tradebus.factory.validation import ValidationRules


class Hygiene(_Strict):
    """candidate -> hygiene -> test: the config runs on its hygiene window and behaves like a system."""

    min_trades: int = Field(20, ge=0, description="trades on the hygiene window")
    max_drawdown: float = Field(0.35, gt=0, le=1, description="deepest drawdown on the hygiene window")
    min_trades_per_year: float = Field(6.0, ge=0, description="a system that hardly trades cannot be judged")


class Test(_Strict):
    """test -> demo: validation (holdout, walk-forward, multi-asset, DSR, PBO) and out-of-sample numbers."""

    accept: list[Literal["passed", "marginal"]] = Field(["passed"], min_length=1,
                                                        description="validation verdicts that promote")
    min_test_sharpe: float = Field(0.0, description="annualised Sharpe on the test window")
    max_correlation: float = Field(0.7, gt=0, le=1,
                                   description="daily-return correlation with any system in live_test or production")


class Demo(_Strict):
    """demo: where it runs, and the record a person's approval into live_test needs."""

    mode: Literal["paper", "demo"] = Field("paper", description="paper: the live feed, simulated fills (no keys)")
    min_days: float = Field(14.0, ge=0, description="days of demo bars")
    min_trades: int = Field(10, ge=0, description="fills of entries in the demo")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="one-sided test: demo significantly worse than its shadow")


class Demote(_Strict):
    """Demotion, read from a running system's own store (demo, live_test, production)."""

    max_drawdown: float = Field(0.15, gt=0, le=1, description="from the run's peak equity")
    sharpe_window_days: float = Field(30.0, gt=0)
    min_rolling_sharpe: float = Field(-1.0, description="annualised, over the last window (once it is full)")
    max_divergence: float = Field(0.02, gt=0, description="|demo equity / shadow equity - 1| at any bar")
    max_risk_breaches: int = Field(0, ge=0, description="guard states other than active (caps breached)")
    max_rejections: int = Field(5, ge=0, description="orders rejected (by the guard or the venue)")
    cusum_threshold: float = Field(8.0, gt=0, description="CUSUM h: from the backtest's edge to none "
                                                           "(bench/bench_detector.py: false alarms vs delay)")


class Allocator(_Strict):
    method: Literal["equal", "inverse_vol", "sharpe_vol"] = "inverse_vol"
    lookback_days: int = Field(90, ge=7, le=3650)
    max_weight: float = Field(0.5, gt=0, le=1, description="a system's largest share of the account")
    max_turnover: float = Field(0.5, gt=0, le=2, description="sum of |weight change| at one rebalance")
    max_correlation: float = Field(0.7, gt=0, le=1, description="sharpe_vol: pairs above it share one weight")


class LifecycleRules(_Strict):
    hygiene: Hygiene = Hygiene()
    validation: ValidationRules = ValidationRules()  # tradebus validate's rules, applied at test
    test: Test = Test()
    demo: Demo = Demo()
    demote: Demote = Demote()
    allocator: Allocator = Allocator()


def default_path() -> Path:
    return Path(str(resources.files("tradebus.configs") / "lifecycle.yaml"))


def load_rules(path: Path | str | None = None) -> LifecycleRules:
    """The thresholds file (the shipped default when ``path`` is None), validated: errors name the file,
    the field, the value and what is allowed."""
    p = default_path() if path is None else path
    data = read_yaml(p)
    return parse_model(LifecycleRules, {} if data is None else data, p, "lifecycle rules")
