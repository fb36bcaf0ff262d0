"""Forecast model files (``tradebus forecast train MODEL.yaml``), validated like system configs.

```yaml
model: majors_1h                 # id: letters, digits, _ and -
symbols: [BTCUSDT, ETHUSDT]      # one model pooled over these series
timeframe: 1h
horizon: 12                      # H: bars ahead (12 x 1h = half a day)
window: {start: 2025-01-01, end: 2026-07-21}   # the data it may see (end exclusive); default: all stored
inputs: [ret_1, ret_12, rv_12, rsi_14, ema_50, hour]   # see components.forecast.INPUT_KINDS
walk_forward: {folds: 6, test_fraction: 0.5, embargo: 12}
lightgbm: {num_leaves: 15, learning_rate: 0.03, min_data_in_leaf: 200, rounds: 200}
valid_for_days: 30               # the promoted model refuses bars closing later than this after its data
```
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from tradebus.components import forecast
from tradebus.configs.schema import _ID_RE, Timeframe, _Strict, parse_model, read_yaml

DEFAULT_INPUTS = ["ret_1", "ret_3", "ret_12", "ret_48", "rv_12", "rv_48", "rv_168", "rsi_14", "adx_14", "di_14",
                  "chop_14", "ema_20", "ema_50", "ema_200", "atr_14", "bb_20", "dc_48", "macd", "relvol_24", "hour"]


def _model_id(v: str) -> str:
    if not _ID_RE.match(v):
        raise ValueError(f"model id {v!r}: 1-64 letters, digits, _ or -")
    return v


def _input_name(v: str) -> str:
    forecast.parse_input(v)
    return v


class DateRange(_Strict):
    start: date | None = None
    end: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "DateRange":
        if self.start and self.end and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class WalkForward(_Strict):
    """Test folds: the last ``test_fraction`` of the time range in ``folds`` equal blocks; each fold trains on
    everything before its block less a gap of ``embargo`` bars (at least the horizon: no training target
    reaches into the test block), or with ``rolling`` on the ``train_bars`` bars before that gap."""

    folds: int = Field(6, ge=2, le=50)
    test_fraction: float = Field(0.5, gt=0.05, lt=0.95)
    embargo: int | None = Field(None, ge=1, description="bars; default the horizon")
    rolling: bool = False
    train_bars: int | None = Field(None, ge=100)

    @model_validator(mode="after")
    def _rolling_needs_length(self) -> "WalkForward":
        if self.rolling and self.train_bars is None:
            raise ValueError("rolling walk-forward needs train_bars")
        return self


class Booster(_Strict):
    num_leaves: int = Field(15, ge=2, le=1024)
    learning_rate: float = Field(0.03, gt=0, le=1)
    min_data_in_leaf: int = Field(200, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    max_bin: int = Field(63, ge=4, le=1024)
    rounds: int = Field(200, ge=1, le=5000)
    threads: int = Field(2, ge=1, le=64, description="fixed: LightGBM's results may depend on it")
    seed: int = Field(7, ge=0, le=2**31 - 1)

    def params(self) -> dict:
        """LightGBM's parameter names."""
        return {"num_leaves": self.num_leaves, "learning_rate": self.learning_rate,
                "min_data_in_leaf": self.min_data_in_leaf, "feature_fraction": self.feature_fraction,
                "bagging_fraction": self.bagging_fraction, "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
                "lambda_l2": self.lambda_l2, "max_bin": self.max_bin, "num_threads": self.threads, "seed": self.seed}


class ModelSpec(_Strict):
    model: Annotated[str, AfterValidator(_model_id)]
    venue: str = "bybit"
    market: str = "linear"
    symbols: list[str] = Field(min_length=1, max_length=100)
    timeframe: Timeframe
    horizon: int = Field(ge=1, le=10_000)
    window: DateRange = DateRange()
    inputs: list[Annotated[str, AfterValidator(_input_name)]] = Field(DEFAULT_INPUTS, min_length=1)
    crash_drawdown: float = Field(forecast.CRASH_DRAWDOWN, gt=0, lt=1)
    walk_forward: WalkForward = WalkForward()
    lightgbm: Booster = Booster()
    train_stride: int = Field(1, ge=1, le=1000, description="train on every Nth bar (targets overlap anyway)")
    valid_for_days: int = Field(30, ge=1, le=3650)

    @field_validator("symbols", "inputs")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        twice = sorted({x for x in v if v.count(x) > 1})
        if twice:
            raise ValueError(f"listed twice: {', '.join(twice)}")
        return v

    @model_validator(mode="after")
    def _embargo_covers_horizon(self) -> "ModelSpec":
        e = self.walk_forward.embargo
        if e is not None and e < self.horizon:
            raise ValueError(f"walk_forward.embargo {e} is shorter than the horizon {self.horizon}: training "
                             "targets would overlap the test block")
        return self

    @property
    def embargo(self) -> int:
        return self.walk_forward.embargo or self.horizon


def load_model_spec(path: Path | str) -> ModelSpec:
    """Read and validate a forecast model file."""
    return parse_model(ModelSpec, read_yaml(path), path, "a forecast model file")
