"""A small forecaster trained and promoted in a data home, for tests that run systems with one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tradebus.components.timeframes import HOUR
from tradebus.configs.forecast import ModelSpec
from tradebus.engine import models
from tradebus.factory import datasets, forecasting
from tradebus.replay.checks import random_walk

INPUTS = ["ret_1", "ret_12", "rv_12", "rsi_14", "ema_50", "atr_14", "hour"]


def spec(model: str = "test_fc", symbol: str = "BTCUSDT", timeframe: str = "5m", **kw) -> ModelSpec:
    return ModelSpec.model_validate({"model": model, "symbols": [symbol], "timeframe": timeframe, "horizon": 12,
                                     "inputs": INPUTS, "lightgbm": {"rounds": 20, "min_data_in_leaf": 50},
                                     "walk_forward": {"folds": 3}, "valid_for_days": 3650, **kw})


def train_and_promote(home: Path, candles: dict[str, np.ndarray], s: ModelSpec | None = None) -> str:
    """Train on ``candles`` (every bar of them is the model's data), store and promote; the version."""
    s = s or spec()
    table = datasets.symbol_table(s, s.symbols[0], candles)
    rows = forecasting.Rows.of(table, s.inputs)
    model = forecasting.final_model(s, rows, datasets.content_id(table))
    manifest = {"model": s.model, "version": model.version, "created": "2026-01-01T00:00:00Z", "dataset": "test",
                "timeframe": s.timeframe, "horizon": s.horizon, "inputs": s.inputs,
                "trained_until": "", "trained_until_ns": model.trained_until, "valid_until": "",
                "valid_until_ns": model.valid_until, "vol_scale": model.vol_scale}
    models.save(home, model, manifest)
    if models.promoted(home, s.model) != model.version:
        models.promote(home, s.model, model.version)
    return model.version


def walk(n: int, seed: int = 1, step: int = HOUR) -> dict[str, np.ndarray]:
    """Candles (hourly by default) of a seeded walk whose volatility clusters: a volatility forecast has
    something to find."""
    c = random_walk(n, step=step, seed=seed)
    rng = np.random.default_rng(seed)
    vol = 0.004 * np.exp(np.convolve(rng.normal(0, 0.6, n), np.ones(48) / 48, mode="same") * 4)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1, n) * vol))
    c["open"] = np.concatenate(([100.0], close[:-1]))
    c["close"] = close
    c["high"] = np.maximum(c["open"], close) * (1 + vol / 2)
    c["low"] = np.minimum(c["open"], close) * (1 - vol / 2)
    return c
