"""Built-in strategies: typed parameters, the features they read, and a numba decision step.

A strategy's step is ``decide(cur, prev, pos, p) -> target``: ``cur``/``prev`` are the feature rows of
this bar and the previous one (own-timeframe features in declared order, then each higher timeframe's),
``pos`` is the current direction (-1, 0, 1) and ``p`` the parameter vector. It returns LONG, SHORT,
FLAT or HOLD (no opinion). The event-driven strategy host calls the compiled function bar by bar; the
sweep engine is to call the same function over whole arrays, so the two can only agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numba as nb
import numpy as np
from pydantic import BaseModel, Field, model_validator

from tradebus.components.features import Feature, f
from tradebus.components.strict import StrictModel

LONG, SHORT, FLAT, HOLD = 1, -1, 0, 2

_jit = nb.njit(cache=True, nogil=True)


class Params(StrictModel):
    """Base of strategy parameters: strict, immutable, no unknown keys, finite numbers."""

    allow_short: bool = False

    def vector(self) -> np.ndarray:
        """Numeric parameters (bools as 0/1) as float64 in declaration order (what ``decide`` indexes);
        text parameters, such as a timeframe, shape the features, not the decision."""
        values = (getattr(self, k) for k in type(self).model_fields)
        return np.array([float(v) for v in values if not isinstance(v, str)], dtype=np.float64)


def require_below(model: BaseModel, low: str, high: str) -> None:
    """Refuse parameters whose ``low`` field is not below their ``high`` one (fast < slow, ...)."""
    a, b = getattr(model, low), getattr(model, high)
    if a >= b:
        raise ValueError(f"{low} ({a}) must be < {high} ({b})")


class FastSlowParams(Params):
    """Parameters of a strategy built on a fast and a slow average; fast must be the shorter."""

    fast: int = Field(10, ge=1)
    slow: int = Field(30, ge=2)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> "FastSlowParams":
        require_below(self, "fast", "slow")
        return self


@dataclass(frozen=True)
class StrategyDef:
    """A registered strategy."""

    id: str
    params: type[Params]
    features: Callable[[Params], list[Feature]]
    decide: Callable[[np.ndarray, np.ndarray, int, np.ndarray], int]
    htf_features: Callable[[Params], dict[str, list[Feature]]] = field(default=lambda p: {})
    description: str = ""
    # A family whose decision step depends on its parameters' structure (composable specs) returns the
    # definition compiled for given parameters.
    specialize: Callable[[Params], "StrategyDef"] | None = None


REGISTRY: dict[str, StrategyDef] = {}


def register(defn: StrategyDef) -> StrategyDef:
    REGISTRY[defn.id] = defn
    return defn


def for_params(strategy_id: str, params: Params) -> StrategyDef:
    """The definition that runs these parameters (a composable spec's own compiled step)."""
    defn = get(strategy_id)
    return defn.specialize(params) if defn.specialize is not None else defn


DECIDE = nb.types.int64(nb.types.float64[::1], nb.types.float64[::1], nb.types.int64, nb.types.float64[::1])
_DECISIONS: dict[str, Callable] = {}


def decision_function(defn: StrategyDef) -> Callable:
    """The strategy's decision step as a first-class compiled function (signature ``DECIDE``): one
    compilation of a loop that takes it serves every strategy, and is cached on disk with the step
    (a generated composable step has no file to cache in and compiles once per process)."""
    fn = _DECISIONS.get(defn.id)
    if fn is None:
        py = defn.decide.py_func
        fn = _DECISIONS[defn.id] = nb.cfunc(DECIDE, cache=Path(py.__code__.co_filename).is_file())(py)
    return fn


def get(strategy_id: str) -> StrategyDef:
    """Return a registered strategy or raise naming the known ones."""
    try:
        return REGISTRY[strategy_id]
    except KeyError:
        raise KeyError(f"unknown strategy {strategy_id!r}; known: {', '.join(sorted(REGISTRY))}") from None


# --- sma_cross -----------------------------------------------------------------------------------


class SmaCrossParams(FastSlowParams):
    fast: int = Field(10, ge=1)
    slow: int = Field(30, ge=2)


@_jit
def _sma_cross(cur: np.ndarray, prev: np.ndarray, pos: int, p: np.ndarray) -> int:
    # Strict crossings, as backtesting.py's crossover(): below then above.
    if prev[0] < prev[1] and cur[0] > cur[1]:
        return LONG
    if prev[0] > prev[1] and cur[0] < cur[1]:
        return SHORT if p[0] > 0 else FLAT
    return HOLD


register(StrategyDef(
    "sma_cross", SmaCrossParams, lambda p: [f("sma", p.fast), f("sma", p.slow)], _sma_cross,
    description="Long when the fast SMA crosses above the slow one; out (or short) on the cross below.",
))


# --- ema_rsi_atr ---------------------------------------------------------------------------------


class EmaRsiAtrParams(FastSlowParams):
    fast: int = Field(20, ge=1)
    slow: int = Field(50, ge=2)
    rsi_period: int = Field(14, ge=2)
    rsi_long: float = Field(55.0, ge=0, le=100)
    rsi_short: float = Field(45.0, ge=0, le=100)


@_jit
def _ema_rsi_atr(cur: np.ndarray, prev: np.ndarray, pos: int, p: np.ndarray) -> int:
    allow_short, rsi_long, rsi_short = p[0], p[4], p[5]
    bull = cur[0] > cur[1] and cur[2] > rsi_long
    was_bull = prev[0] > prev[1] and prev[2] > rsi_long
    bear = cur[0] < cur[1] and cur[2] < rsi_short
    was_bear = prev[0] < prev[1] and prev[2] < rsi_short
    if bull and not was_bull and pos != 1:
        return LONG
    if allow_short > 0 and bear and not was_bear and pos != -1:
        return SHORT
    if pos == 1 and cur[0] < cur[1]:
        return FLAT
    if pos == -1 and cur[0] > cur[1]:
        return FLAT
    return HOLD


register(StrategyDef(
    "ema_rsi_atr", EmaRsiAtrParams,
    lambda p: [f("ema", p.fast), f("ema", p.slow), f("rsi", p.rsi_period)], _ema_rsi_atr,
    description="Enter when the EMAs align and RSI confirms; exit when the EMAs cross back. Stops from risk (ATR).",
))


# --- donchian_breakout ---------------------------------------------------------------------------


class DonchianParams(Params):
    entry_period: int = Field(20, ge=2)
    exit_period: int = Field(10, ge=2)


@_jit
def _donchian(cur: np.ndarray, prev: np.ndarray, pos: int, p: np.ndarray) -> int:
    close = cur[4]
    # Compare with the previous bar's channel: the current one already contains this bar.
    if pos != 1 and close > prev[0]:
        return LONG
    if p[0] > 0 and pos != -1 and close < prev[1]:
        return SHORT
    if pos == 1 and close < prev[3]:
        return FLAT
    if pos == -1 and close > prev[2]:
        return FLAT
    return HOLD


register(StrategyDef(
    "donchian_breakout", DonchianParams,
    lambda p: [f("donchian", p.entry_period, output="dc_upper"), f("donchian", p.entry_period, output="dc_lower"),
               f("donchian", p.exit_period, output="dc_upper"), f("donchian", p.exit_period, output="dc_lower"),
               f("close")],
    _donchian,
    description="Breakout of the entry channel; exit on the opposite side of the (shorter) exit channel.",
))


# --- bollinger mean reversion --------------------------------------------------------------------


class BollingerParams(Params):
    period: int = Field(20, ge=2)
    k: float = Field(2.0, gt=0)


@_jit
def _bollinger(cur: np.ndarray, prev: np.ndarray, pos: int, p: np.ndarray) -> int:
    upper, mid, lower, close = cur[0], cur[1], cur[2], cur[3]
    if pos == 1 and close >= mid:
        return FLAT
    if pos == -1 and close <= mid:
        return FLAT
    if pos != 1 and close < lower:
        return LONG
    if p[0] > 0 and pos != -1 and close > upper:
        return SHORT
    return HOLD


register(StrategyDef(
    "bollinger_reversion", BollingerParams,
    lambda p: [f("bb", p.period, p.k, output="bb_upper"), f("bb", p.period, p.k, output="bb_mid"),
               f("bb", p.period, p.k, output="bb_lower"), f("close")],
    _bollinger,
    description="Buy a close below the lower band, sell above the upper; exit at the middle band.",
))


# --- macd_cross ----------------------------------------------------------------------------------


class MacdParams(FastSlowParams):
    fast: int = Field(12, ge=1)
    slow: int = Field(26, ge=2)
    signal: int = Field(9, ge=1)


@_jit
def _macd_cross(cur: np.ndarray, prev: np.ndarray, pos: int, p: np.ndarray) -> int:
    if prev[0] <= 0 and cur[0] > 0:
        return LONG
    if prev[0] >= 0 and cur[0] < 0:
        return SHORT if p[0] > 0 else FLAT
    return HOLD


register(StrategyDef(
    "macd_cross", MacdParams, lambda p: [f("macd", p.fast, p.slow, p.signal, output="macd_hist")], _macd_cross,
    description="Long when the MACD histogram turns positive; out (or short) when it turns negative.",
))


# --- stochrsi mean reversion ---------------------------------------------------------------------


class StochRsiParams(Params):
    rsi_period: int = Field(14, ge=2)
    stoch_period: int = Field(14, ge=2)
    k_smooth: int = Field(3, ge=1)
    d_smooth: int = Field(3, ge=1)
    oversold: float = Field(20.0, ge=0, le=100)
    overbought: float = Field(80.0, ge=0, le=100)
    adx_filter: bool = True
    adx_period: int = Field(14, ge=2)
    adx_threshold: float = Field(25.0, ge=0, le=100)

    @model_validator(mode="after")
    def _order(self) -> "StochRsiParams":
        require_below(self, "oversold", "overbought")
        return self


@_jit
def _stochrsi(cur: np.ndarray, prev: np.ndarray, pos: int, p: np.ndarray) -> int:
    allow_short, oversold, overbought, adx_filter, adx_threshold = p[0], p[5], p[6], p[7], p[9]
    k, k_prev, adx_now = cur[0], prev[0], cur[1]
    ranging = adx_filter <= 0 or adx_now < adx_threshold
    up = k_prev <= oversold and k > oversold
    down = k_prev >= overbought and k < overbought
    if up:
        if pos == -1:
            return LONG if ranging else FLAT
        if pos == 0 and ranging:
            return LONG
    if down:
        if pos == 1:
            return SHORT if (allow_short > 0 and ranging) else FLAT
        if pos == 0 and allow_short > 0 and ranging:
            return SHORT
    return HOLD


register(StrategyDef(
    "stochrsi_mean_reversion", StochRsiParams,
    lambda p: [f("stochrsi", p.rsi_period, p.stoch_period, p.k_smooth, p.d_smooth, output="stochrsi_k"),
               f("adx", p.adx_period)],
    _stochrsi,
    description="Buy StochRSI %K crossing up out of oversold, sell crossing down out of overbought; optional ADX ranging filter.",
))


# --- regime-gated trend --------------------------------------------------------------------------


class RegimeGatedParams(FastSlowParams):
    fast: int = Field(20, ge=1)
    slow: int = Field(50, ge=2)
    chop_period: int = Field(14, ge=2)
    chop_max: float = Field(50.0, gt=0, le=100)
    adx_period: int = Field(14, ge=2)
    adx_min: float = Field(20.0, ge=0, le=100)
    regime_timeframe: str = "1h"


@_jit
def _regime_gated(cur: np.ndarray, prev: np.ndarray, pos: int, p: np.ndarray) -> int:
    allow_short, chop_max, adx_min = p[0], p[4], p[6]
    trending = cur[2] < chop_max and cur[3] > adx_min  # own-timeframe CHOP, higher-timeframe ADX
    up = prev[0] <= prev[1] and cur[0] > cur[1]
    down = prev[0] >= prev[1] and cur[0] < cur[1]
    if pos == 1 and down:
        return SHORT if (allow_short > 0 and trending) else FLAT
    if pos == -1 and up:
        return LONG if trending else FLAT
    if pos == 0 and up and trending:
        return LONG
    if pos == 0 and down and trending and allow_short > 0:
        return SHORT
    return HOLD


register(StrategyDef(
    "regime_gated_trend", RegimeGatedParams,
    lambda p: [f("ema", p.fast), f("ema", p.slow), f("chop", p.chop_period)],
    _regime_gated,
    htf_features=lambda p: {p.regime_timeframe: [f("adx", p.adx_period)]},
    description="EMA cross entries only in a trending regime: CHOP below a ceiling and higher-timeframe ADX above a floor.",
))


# Composable specs and regime switches register their families (they build on the definitions above).
from tradebus.components import adaptive, composable  # noqa: E402,F401
