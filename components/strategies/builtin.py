"""The built-in strategies, written with the same API as a user's own (``api``): parameters by name,
features by name, a compiled step.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tradebus.components.features import f
from tradebus.components.strategies.api import (FLAT, HOLD, LONG, SHORT, FastSlowParams, Params, Strategy, define,
                                                register, require_below)


# --- sma_cross -----------------------------------------------------------------------------------


class SmaCrossParams(FastSlowParams):
    fast: int = Field(10, ge=1)
    slow: int = Field(30, ge=2)


class SmaCross(Strategy):
    """Long when the fast SMA crosses above the slow one; out (or short) on the cross below."""

    id = "sma_cross"
    params = SmaCrossParams

    @staticmethod
    def features(p):
        return {"fast": f("sma", p.fast), "slow": f("sma", p.slow)}

    @staticmethod
    def decide(cur, prev, pos, p):
        # Strict crossings, as backtesting.py's crossover(): below then above.
        if prev.fast < prev.slow and cur.fast > cur.slow:
            return LONG
        if prev.fast > prev.slow and cur.fast < cur.slow:
            return SHORT if p.allow_short > 0 else FLAT
        return HOLD


# --- ema_rsi_atr ---------------------------------------------------------------------------------


class EmaRsiAtrParams(FastSlowParams):
    fast: int = Field(20, ge=1)
    slow: int = Field(50, ge=2)
    rsi_period: int = Field(14, ge=2)
    rsi_long: float = Field(55.0, ge=0, le=100)
    rsi_short: float = Field(45.0, ge=0, le=100)


class EmaRsiAtr(Strategy):
    """Enter when the EMAs align and RSI confirms; exit when the EMAs cross back. Stops from risk (ATR)."""

    id = "ema_rsi_atr"
    params = EmaRsiAtrParams

    @staticmethod
    def features(p):
        return {"fast": f("ema", p.fast), "slow": f("ema", p.slow), "rsi": f("rsi", p.rsi_period)}

    @staticmethod
    def decide(cur, prev, pos, p):
        bull = cur.fast > cur.slow and cur.rsi > p.rsi_long
        was_bull = prev.fast > prev.slow and prev.rsi > p.rsi_long
        bear = cur.fast < cur.slow and cur.rsi < p.rsi_short
        was_bear = prev.fast < prev.slow and prev.rsi < p.rsi_short
        if bull and not was_bull and pos != 1:
            return LONG
        if p.allow_short > 0 and bear and not was_bear and pos != -1:
            return SHORT
        if pos == 1 and cur.fast < cur.slow:
            return FLAT
        if pos == -1 and cur.fast > cur.slow:
            return FLAT
        return HOLD


# --- donchian_breakout ---------------------------------------------------------------------------


class DonchianParams(Params):
    entry_period: int = Field(20, ge=2)
    exit_period: int = Field(10, ge=2)


class DonchianBreakout(Strategy):
    """Breakout of the entry channel; exit on the opposite side of the (shorter) exit channel."""

    id = "donchian_breakout"
    params = DonchianParams

    @staticmethod
    def features(p):
        return {"entry_upper": f("donchian", p.entry_period, output="dc_upper"),
                "entry_lower": f("donchian", p.entry_period, output="dc_lower"),
                "exit_upper": f("donchian", p.exit_period, output="dc_upper"),
                "exit_lower": f("donchian", p.exit_period, output="dc_lower"),
                "close": f("close")}

    @staticmethod
    def decide(cur, prev, pos, p):
        # Compare with the previous bar's channel: the current one already contains this bar.
        if pos != 1 and cur.close > prev.entry_upper:
            return LONG
        if p.allow_short > 0 and pos != -1 and cur.close < prev.entry_lower:
            return SHORT
        if pos == 1 and cur.close < prev.exit_lower:
            return FLAT
        if pos == -1 and cur.close > prev.exit_upper:
            return FLAT
        return HOLD


# --- bollinger mean reversion --------------------------------------------------------------------


class BollingerParams(Params):
    period: int = Field(20, ge=2)
    k: float = Field(2.0, gt=0)


class BollingerReversion(Strategy):
    """Buy a close below the lower band, sell above the upper; exit at the middle band."""

    id = "bollinger_reversion"
    params = BollingerParams

    @staticmethod
    def features(p):
        return {"upper": f("bb", p.period, p.k, output="bb_upper"), "mid": f("bb", p.period, p.k, output="bb_mid"),
                "lower": f("bb", p.period, p.k, output="bb_lower"), "close": f("close")}

    @staticmethod
    def decide(cur, prev, pos, p):
        if pos == 1 and cur.close >= cur.mid:
            return FLAT
        if pos == -1 and cur.close <= cur.mid:
            return FLAT
        if pos != 1 and cur.close < cur.lower:
            return LONG
        if p.allow_short > 0 and pos != -1 and cur.close > cur.upper:
            return SHORT
        return HOLD


# --- macd_cross ----------------------------------------------------------------------------------


class MacdParams(FastSlowParams):
    fast: int = Field(12, ge=1)
    slow: int = Field(26, ge=2)
    signal: int = Field(9, ge=1)


class MacdCross(Strategy):
    """Long when the MACD histogram turns positive; out (or short) when it turns negative."""

    id = "macd_cross"
    params = MacdParams

    @staticmethod
    def features(p):
        return {"hist": f("macd", p.fast, p.slow, p.signal, output="macd_hist")}

    @staticmethod
    def decide(cur, prev, pos, p):
        if prev.hist <= 0 and cur.hist > 0:
            return LONG
        if prev.hist >= 0 and cur.hist < 0:
            return SHORT if p.allow_short > 0 else FLAT
        return HOLD


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


class StochRsiMeanReversion(Strategy):
    """Buy StochRSI %K crossing up out of oversold, sell crossing down out of overbought; optional ADX ranging filter."""

    id = "stochrsi_mean_reversion"
    params = StochRsiParams

    @staticmethod
    def features(p):
        return {"k": f("stochrsi", p.rsi_period, p.stoch_period, p.k_smooth, p.d_smooth, output="stochrsi_k"),
                "adx": f("adx", p.adx_period)}

    @staticmethod
    def decide(cur, prev, pos, p):
        ranging = p.adx_filter <= 0 or cur.adx < p.adx_threshold
        up = prev.k <= p.oversold and cur.k > p.oversold
        down = prev.k >= p.overbought and cur.k < p.overbought
        if up:
            if pos == -1:
                return LONG if ranging else FLAT
            if pos == 0 and ranging:
                return LONG
        if down:
            if pos == 1:
                return SHORT if (p.allow_short > 0 and ranging) else FLAT
            if pos == 0 and p.allow_short > 0 and ranging:
                return SHORT
        return HOLD


# --- regime-gated trend --------------------------------------------------------------------------


class RegimeGatedParams(FastSlowParams):
    fast: int = Field(20, ge=1)
    slow: int = Field(50, ge=2)
    chop_period: int = Field(14, ge=2)
    chop_max: float = Field(50.0, gt=0, le=100)
    adx_period: int = Field(14, ge=2)
    adx_min: float = Field(20.0, ge=0, le=100)
    regime_timeframe: str = "1h"


class RegimeGatedTrend(Strategy):
    """EMA cross entries only in a trending regime: CHOP below a ceiling and higher-timeframe ADX above a floor."""

    id = "regime_gated_trend"
    params = RegimeGatedParams

    @staticmethod
    def features(p):
        return {"fast": f("ema", p.fast), "slow": f("ema", p.slow), "chop": f("chop", p.chop_period)}

    @staticmethod
    def higher(p):
        return {p.regime_timeframe: {"adx": f("adx", p.adx_period)}}

    @staticmethod
    def decide(cur, prev, pos, p):
        trending = cur.chop < p.chop_max and cur.adx > p.adx_min  # own-timeframe CHOP, higher-timeframe ADX
        up = prev.fast <= prev.slow and cur.fast > cur.slow
        down = prev.fast >= prev.slow and cur.fast < cur.slow
        if pos == 1 and down:
            return SHORT if (p.allow_short > 0 and trending) else FLAT
        if pos == -1 and up:
            return LONG if trending else FLAT
        if pos == 0 and up and trending:
            return LONG
        if pos == 0 and down and trending and p.allow_short > 0:
            return SHORT
        return HOLD


BUILTINS = (SmaCross, EmaRsiAtr, DonchianBreakout, BollingerReversion, MacdCross, StochRsiMeanReversion,
            RegimeGatedTrend)
for _cls in BUILTINS:
    register(define(_cls))
