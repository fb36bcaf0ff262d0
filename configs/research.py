"""The research loop's settings, which a person writes (``configs/research.yaml`` is the shipped default).

A model's proposal names a strategy and the values of its own parameters, nothing else: the symbols,
timeframes and window a proposal is swept on, the costs, fills, sizing and capital of its trials (``base``),
how trials are scored and validated, and the budget all come from here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field

from tradebus.configs.schema import _Strict, parse_model, read_yaml
from tradebus.factory.scoring import ScoreSpec
from tradebus.factory.validation import ValidationRules


class Prices(_Strict):
    input: float = Field(gt=0, description="USD per million input tokens")
    output: float = Field(gt=0, description="USD per million output tokens")


class ResearchSettings(_Strict):
    model: str = "claude-sonnet-4-5"
    max_tokens: int = Field(2048, ge=256, le=64_000)
    budget_usd: float = Field(2.0, gt=0, description="the whole run's spend, hard")
    budget_tokens: int = Field(2_000_000, gt=0)
    price_per_mtok: Prices | None = None
    max_retries: int = Field(4, ge=0, le=10)
    repair_turns: int = Field(2, ge=0, le=5, description="a refused proposal goes back this many times")
    max_trials: int = Field(200, ge=1, le=100_000, description="trials one proposal may sweep")
    novelty: float = Field(0.8, gt=0, le=1, description="refused when this share of its trials was already tried")
    symbols: list[str] = Field(["BTCUSDT", "ETHUSDT"], min_length=1)
    timeframes: list[str] = Field(["1h"], min_length=1)
    window: str = "hygiene"
    base: dict[str, Any] = Field(default_factory=lambda: {
        "costs": {"taker_fee": 0.00055, "maker_fee": 0.0002, "spread_bps": 1.0, "funding": True},
        "risk": {"sizing": "risk_per_trade", "risk_per_trade": 0.01, "max_leverage": 2,
                 "stop": {"kind": "atr", "atr_period": 14, "atr_mult": 2.5}},
        "fill": "next_open", "initial_capital": 10_000})
    score: ScoreSpec = ScoreSpec()
    validation: ValidationRules = ValidationRules()
    validate_top: int = Field(1, ge=0, le=10, description="best trials of each proposal validated")


def default_path() -> Path:
    return Path(str(resources.files("tradebus.configs") / "research.yaml"))


def load_settings(path: Path | str | None = None) -> ResearchSettings:
    p = default_path() if path is None else path
    data = read_yaml(p)
    return parse_model(ResearchSettings, {} if data is None else data, p, "research settings")
