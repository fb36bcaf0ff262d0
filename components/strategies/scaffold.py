"""``tradebus strategies new NAME``: the files of a new strategy of the user's own (a module, its test,
a system config that runs it). Pure: the command line writes them."""

from __future__ import annotations

import keyword
import re

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name a strategy module (None: it can)."""
    if not _NAME_RE.match(name) or keyword.iskeyword(name):
        return (f"{name!r}: a strategy name is a Python module name: lowercase letters, digits and '_', "
                "starting with a letter (e.g. my_breakout)")
    if name in ("tradebus", "test", "tests", "numpy", "numba", "pydantic", "strategies"):
        return f"{name!r} would shadow a package of the same name: choose another"
    return None


def files(name: str) -> dict[str, str]:
    """File name -> text, for a strategy module ``name``."""
    cls = class_name(name)
    ident = f"{name}:{cls}"
    return {f"{name}.py": _MODULE.format(name=name, cls=cls, ident=ident),
            f"test_{name}.py": _TEST.format(name=name, cls=cls, ident=ident),
            f"{name}.yaml": _CONFIG.format(name=name, cls=cls, ident=ident)}


_MODULE = '''"""{cls}: a trend follower to start from. Edit the parameters, features and decide below.

The API (tradebus.components.strategies.api) in short: ``features`` names the indicators ``decide`` reads,
``decide`` sees this bar's row (``cur``) and the previous one (``prev``) by those names, the position's
direction ``pos`` (-1, 0, 1) and the parameters ``p`` by name, and returns LONG, SHORT, FLAT or HOLD.
It must depend on nothing else: the replay asks it ahead of time on quiet bars.

    tradebus replay {name}.yaml                  run it (from this folder)
    pytest test_{name}.py                        its tests: by hand, no look-ahead, kernel = replay
    strategy: {ident}         in a sweep job or any config
"""

from pydantic import model_validator

from tradebus.components.strategies import FLAT, HOLD, LONG, SHORT, Field, Params, Strategy, f, require_below


class {cls}Params(Params):
    """Validated when a config is read: a bad value is refused naming the field."""

    fast: int = Field(20, ge=1, description="fast EMA period (bars)")
    slow: int = Field(100, ge=2, description="slow EMA period (bars)")
    rsi_period: int = Field(14, ge=2, description="RSI period (bars)")
    rsi_max: float = Field(70.0, ge=0, le=100, description="no new long while RSI is above this")

    @model_validator(mode="after")
    def _fast_below_slow(self):
        require_below(self, "fast", "slow")
        return self


class {cls}(Strategy):
    """Long when the fast EMA crosses above the slow one (unless RSI is overbought); out, or short, when it
    crosses below."""

    params = {cls}Params
    # numba compiles decide: replay, paper and sweeps run the same compiled step, sweeps at full speed.
    # Set False to write decide in plain Python (any library): replay and daemons run it, sweeps refuse it.
    compiled = True

    @staticmethod
    def features(p):
        return {{"fast": f("ema", p.fast), "slow": f("ema", p.slow), "rsi": f("rsi", p.rsi_period)}}

    @staticmethod
    def decide(cur, prev, pos, p):
        crossed_up = prev.fast <= prev.slow and cur.fast > cur.slow
        crossed_down = prev.fast >= prev.slow and cur.fast < cur.slow
        if crossed_up and cur.rsi < p.rsi_max:
            return LONG
        if crossed_down and pos != -1:
            return SHORT if p.allow_short > 0 else FLAT
        return HOLD
'''

_TEST = '''"""Tests of {cls}: decisions worked by hand, then the checks every strategy must pass."""

from types import SimpleNamespace as Row

import pytest

from tradebus.components.strategies import FLAT, HOLD, LONG, SHORT
from tradebus.replay import checks

from {name} import {cls}, {cls}Params

ID = "{ident}"
BELOW, ABOVE = Row(fast=99.0, slow=100.0, rsi=50.0), Row(fast=101.0, slow=100.0, rsi=50.0)


def test_long_on_the_cross_up_unless_overbought():
    p = {cls}Params()
    assert {cls}.decide(ABOVE, BELOW, 0, p) == LONG
    assert {cls}.decide(Row(fast=101.0, slow=100.0, rsi=80.0), BELOW, 0, p) == HOLD
    assert {cls}.decide(ABOVE, ABOVE, 0, p) == HOLD  # no cross, no trade


def test_out_or_short_on_the_cross_down():
    assert {cls}.decide(BELOW, ABOVE, 1, {cls}Params()) == FLAT
    assert {cls}.decide(BELOW, ABOVE, 1, {cls}Params(allow_short=True)) == SHORT


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="fast"):
        {cls}Params(fast=50, slow=20)


def test_decisions_never_see_the_future():
    checks.no_lookahead(checks.practice_config(ID, {{"fast": 10, "slow": 40}}))


def test_the_sweep_kernel_trades_it_as_the_replay_does():
    checks.kernel_equals_replay(checks.practice_config(ID, {{"fast": 10, "slow": 40, "allow_short": True}}))
'''

_CONFIG = '''# {cls} ({name}.py) on BTCUSDT 1h: 1% of equity at risk per trade behind an ATR stop.
# Run it from this folder: tradebus replay {name}.yaml  (then --window test, once, when you are done tuning)
# Data: tradebus data import ../shared/data/bybit/linear/5m/BTCUSDT.parquet (1h is resampled from 5m).
system: {name}
symbol: BTCUSDT
timeframe: 1h
windows:
  hygiene: {{preset: first_70pct}}
  test: {{preset: last_30pct}}
strategy:
  id: {ident}
  params: {{fast: 20, slow: 100, rsi_period: 14, rsi_max: 70, allow_short: true}}
risk:
  sizing: risk_per_trade
  risk_per_trade: 0.01
  max_leverage: 3
  stop: {{kind: atr, atr_period: 14, atr_mult: 2.5}}
costs:
  taker_fee: 0.00055
  spread_bps: 1.0
  slippage: {{model: fixed_bps, bps: 1.0}}
'''
