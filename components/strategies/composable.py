"""Composable strategies: entry signals, filters and exit rules as declared blocks.

A spec is the ``params`` of strategy ``composable`` in a system config (YAML or JSON), validated like any
other parameters, so errors name the field, the value and what is allowed::

    strategy:
      id: composable
      params:
        allow_short: true
        confluence: all                 # all / any / N: how many entry blocks must agree
        entries:
          - {block: ma_trend, kind: ema, fast: 20, slow: 50}
          - {block: rsi_zone, period: 14, long_above: 55, short_below: 45}
        filters:
          - {block: adx_min, period: 14, min: 20}
        exits:
          - {block: opposite}           # the default: leave (or reverse) when the other side agrees

Each entry block says, for a bar, long (+1), short (-1) or nothing (0); entries fire when ``confluence``
of them agree and every filter passes, while flat (or, with exits, to reverse). Any exit rule that fires
closes the position. Position sizing and stops are the risk section's (fixed fraction or risk per trade,
ATR or percent stops, take-profit). Everything a decision reads is the current and previous bar's
features, so nothing looks ahead.

A spec compiles to an ordinary ``StrategyDef``: its features, and a numba ``decide`` generated from the
spec's *structure* (which blocks, in which order) that reads every number (thresholds, confluence) from
the parameter vector. Specs that differ only in numbers share one compiled function, and the event-driven
strategy host and the sweep kernel run that same function.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Annotated, Literal, Union

import numba as nb
import numpy as np
from pydantic import Field, field_validator, model_validator

from tradebus.components.strategies import api as strategies
from tradebus.components.features import Feature, f
from tradebus.components.strict import StrictModel


class _Block(StrictModel):
    pass


class _FastSlow(_Block):
    kind: Literal["sma", "ema"] = "ema"
    fast: int = Field(20, ge=1)
    slow: int = Field(50, ge=2)

    @model_validator(mode="after")
    def _order(self):
        strategies.require_below(self, "fast", "slow")
        return self


# --- entry blocks: +1 long, -1 short, 0 no opinion -------------------------------------------------


class MaTrend(_FastSlow):
    """Long while the fast average is above the slow one, short while below."""
    block: Literal["ma_trend"] = "ma_trend"


class RsiZone(_Block):
    """Momentum: long while RSI is above ``long_above``, short while below ``short_below``."""
    block: Literal["rsi_zone"] = "rsi_zone"
    period: int = Field(14, ge=2)
    long_above: float = Field(55.0, ge=0, le=100)
    short_below: float = Field(45.0, ge=0, le=100)


class RsiReversion(_Block):
    """Mean reversion: long while RSI is below ``oversold``, short while above ``overbought``."""
    block: Literal["rsi_reversion"] = "rsi_reversion"
    period: int = Field(14, ge=2)
    oversold: float = Field(30.0, ge=0, le=100)
    overbought: float = Field(70.0, ge=0, le=100)


class MacdTrend(_Block):
    """Long while the MACD line is above its signal line, short while below."""
    block: Literal["macd_trend"] = "macd_trend"
    fast: int = Field(12, ge=1)
    slow: int = Field(26, ge=2)
    signal: int = Field(9, ge=1)


class BollingerReversion(_Block):
    """Long when the close is below the lower band, short when above the upper band."""
    block: Literal["bollinger_reversion"] = "bollinger_reversion"
    period: int = Field(20, ge=2)
    k: float = Field(2.0, gt=0)


class DonchianBreakout(_Block):
    """Long when the close breaks above the previous bar's ``period`` high, short below its low."""
    block: Literal["donchian_breakout"] = "donchian_breakout"
    period: int = Field(20, ge=2)


# --- filters: entries only when every one passes --------------------------------------------------


class AdxMin(_Block):
    """Trending: ADX at least ``min``."""
    block: Literal["adx_min"] = "adx_min"
    period: int = Field(14, ge=2)
    min: float = Field(20.0, ge=0, le=100)


class AdxMax(_Block):
    """Ranging: ADX below ``max``."""
    block: Literal["adx_max"] = "adx_max"
    period: int = Field(14, ge=2)
    max: float = Field(25.0, ge=0, le=100)


class ChopMax(_Block):
    """Not choppy: the choppiness index below ``max``."""
    block: Literal["chop_max"] = "chop_max"
    period: int = Field(14, ge=2)
    max: float = Field(50.0, gt=0, le=100)


# --- exits: any one that fires closes the position ------------------------------------------------


class Opposite(_Block):
    """Leave when the entries agree on the other side (and reverse into it if allowed and filters pass)."""
    block: Literal["opposite"] = "opposite"


class SignalLost(_Block):
    """Leave as soon as the entries no longer agree on the position's side."""
    block: Literal["signal_lost"] = "signal_lost"


class MaCrossBack(_FastSlow):
    """Leave a long when the fast average falls below the slow one (a short when it rises above)."""
    block: Literal["ma_cross_back"] = "ma_cross_back"


class RsiExit(_Block):
    """Take profit on momentum exhaustion: leave a long above ``long_exit``, a short below ``short_exit``."""
    block: Literal["rsi_exit"] = "rsi_exit"
    period: int = Field(14, ge=2)
    long_exit: float = Field(70.0, ge=0, le=100)
    short_exit: float = Field(30.0, ge=0, le=100)


Entry = Annotated[Union[MaTrend, RsiZone, RsiReversion, MacdTrend, BollingerReversion, DonchianBreakout],
                  Field(discriminator="block")]
Filter = Annotated[Union[AdxMin, AdxMax, ChopMax], Field(discriminator="block")]
Exit = Annotated[Union[Opposite, SignalLost, MaCrossBack, RsiExit], Field(discriminator="block")]


class ComposableParams(strategies.Params):
    """The spec: entry blocks and how many must agree, filters, exits."""

    confluence: Union[int, Literal["all", "any"]] = "all"
    entries: list[Entry] = Field(min_length=1, max_length=8)
    filters: list[Filter] = Field(default_factory=list, max_length=8)
    exits: list[Exit] = Field(default_factory=lambda: [Opposite()], min_length=1, max_length=8)

    @field_validator("confluence")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError(f"confluence {v}: give all, any or how many entries must agree (>= 1)")
        return v

    @model_validator(mode="after")
    def _fits(self):
        if isinstance(self.confluence, int) and self.confluence > len(self.entries):
            raise ValueError(f"confluence {self.confluence} is more than the {len(self.entries)} entries")
        return self

    def needed(self) -> int:
        """How many entries must agree."""
        return {"all": len(self.entries), "any": 1}.get(self.confluence, self.confluence)  # type: ignore[arg-type]

    def vector(self) -> np.ndarray:
        """allow_short, confluence count, then every block's numbers in spec order."""
        values = [float(self.allow_short), float(self.needed())]
        for b in (*self.entries, *self.filters, *self.exits):
            values += [float(getattr(b, k)) for k in _number_fields(b)]
        return np.array(values, dtype=np.float64)


def _number_fields(block: _Block) -> list[str]:
    """A block's numbers, in the order the parameter vector holds them (and generated code reads them)."""
    return [k for k in type(block).model_fields if k not in ("block", "kind")]


# --- code generation --------------------------------------------------------------------------------


@dataclass
class _Slots:
    """Feature columns and parameter-vector slots handed out while generating a spec's code."""

    features: list[Feature]
    p: int = 2  # 0: allow_short, 1: confluence

    def col(self, feat: Feature) -> int:
        self.features.append(feat)
        return len(self.features) - 1

    def num(self) -> int:
        self.p += 1
        return self.p - 1


def _numbers(block: _Block, slots: _Slots) -> dict[str, str]:
    """``p[i]`` for every number of a block, in the order ``vector`` lays them out."""
    return {k: f"p[{slots.num()}]" for k in _number_fields(block)}


def _ma(block: _FastSlow, s: _Slots) -> tuple[int, int]:
    return s.col(f(block.kind, block.fast)), s.col(f(block.kind, block.slow))


def _entry(b: _Block, s: _Slots) -> str:
    """An expression, in ``cur``/``prev``/``p``, that is +1, -1 or 0."""
    n = _numbers(b, s)
    if isinstance(b, MaTrend):
        a, c = _ma(b, s)
        return f"_side(cur[{a}] > cur[{c}], cur[{a}] < cur[{c}])"
    if isinstance(b, RsiZone):
        r = s.col(f("rsi", b.period))
        return f"_side(cur[{r}] > {n['long_above']}, cur[{r}] < {n['short_below']})"
    if isinstance(b, RsiReversion):
        r = s.col(f("rsi", b.period))
        return f"_side(cur[{r}] < {n['oversold']}, cur[{r}] > {n['overbought']})"
    if isinstance(b, MacdTrend):
        m = s.col(f("macd", b.fast, b.slow, b.signal, output="macd"))
        g = s.col(f("macd", b.fast, b.slow, b.signal, output="macd_signal"))
        return f"_side(cur[{m}] > cur[{g}], cur[{m}] < cur[{g}])"
    if isinstance(b, BollingerReversion):
        lo, hi = s.col(f("bb", b.period, b.k, output="bb_lower")), s.col(f("bb", b.period, b.k, output="bb_upper"))
        c = s.col(f("close"))
        return f"_side(cur[{c}] < cur[{lo}], cur[{c}] > cur[{hi}])"
    if isinstance(b, DonchianBreakout):
        hi, lo = s.col(f("donchian", b.period, output="dc_upper")), s.col(f("donchian", b.period, output="dc_lower"))
        c = s.col(f("close"))
        # The previous bar's channel: the current one already holds this bar's extremes.
        return f"_side(cur[{c}] > prev[{hi}], cur[{c}] < prev[{lo}])"
    raise TypeError(f"no code for entry block {b!r}")


def _filter(b: _Block, s: _Slots) -> str:
    n = _numbers(b, s)
    if isinstance(b, AdxMin):
        return f"cur[{s.col(f('adx', b.period))}] >= {n['min']}"
    if isinstance(b, AdxMax):
        return f"cur[{s.col(f('adx', b.period))}] < {n['max']}"
    if isinstance(b, ChopMax):
        return f"cur[{s.col(f('chop', b.period))}] < {n['max']}"
    raise TypeError(f"no code for filter block {b!r}")


def _exit(b: _Block, s: _Slots) -> tuple[str, str]:
    """(leave a long, leave a short) expressions."""
    n = _numbers(b, s)
    if isinstance(b, Opposite):
        return "shorts >= need", "longs >= need"
    if isinstance(b, SignalLost):
        return "longs < need", "shorts < need"
    if isinstance(b, MaCrossBack):
        a, c = _ma(b, s)
        return f"cur[{a}] < cur[{c}]", f"cur[{a}] > cur[{c}]"
    if isinstance(b, RsiExit):
        r = s.col(f("rsi", b.period))
        return f"cur[{r}] > {n['long_exit']}", f"cur[{r}] < {n['short_exit']}"
    raise TypeError(f"no code for exit block {b!r}")


@nb.njit(inline="always")
def _side(long_: bool, short: bool) -> int:
    return 1 if long_ else (-1 if short else 0)


def generate(spec: ComposableParams) -> tuple[str, list[Feature]]:
    """The Python source of the spec's ``decide`` and the features it reads, in column order."""
    s = _Slots([])
    entries = [_entry(b, s) for b in spec.entries]
    filters = [_filter(b, s) for b in spec.filters] or ["True"]
    exits = [_exit(b, s) for b in spec.exits]
    lines = ["def decide(cur, prev, pos, p):", "    need = p[1]", "    longs = 0", "    shorts = 0"]
    for i, e in enumerate(entries):
        lines += [f"    e{i} = {e}", f"    longs += e{i} == 1", f"    shorts += e{i} == -1"]
    lines += [f"    gate = {' and '.join(f'({x})' for x in filters)}",
              "    go_long = longs >= need and gate",
              "    go_short = p[0] > 0 and shorts >= need and gate",
              f"    leave_long = {' or '.join(f'({x})' for x, _ in exits)}",
              f"    leave_short = {' or '.join(f'({y})' for _, y in exits)}",
              "    if pos == 1:",
              "        if leave_long:",
              "            return SHORT if go_short else FLAT",
              "        return HOLD",
              "    if pos == -1:",
              "        if leave_short:",
              "            return LONG if go_long else FLAT",
              "        return HOLD",
              "    if go_long:",
              "        return LONG",
              "    if go_short:",
              "        return SHORT",
              "    return HOLD"]
    return "\n".join(lines) + "\n", s.features


def structure(spec: ComposableParams) -> str:
    """What decides the generated code: the blocks and their kinds, not their numbers."""
    shape = [(b.block, getattr(b, "kind", "")) for b in (*spec.entries, *spec.filters, *spec.exits)]
    shape.append((len(spec.entries), len(spec.filters), len(spec.exits)))  # type: ignore[arg-type]
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:16]


_COMPILED: dict[str, strategies.StrategyDef] = {}


def specialize(params: strategies.Params) -> strategies.StrategyDef:
    """The ``StrategyDef`` of one spec (compiled once per structure)."""
    assert isinstance(params, ComposableParams)
    key = structure(params)
    if key not in _COMPILED:
        source, _ = generate(params)
        scope = {"_side": _side, "LONG": strategies.LONG, "SHORT": strategies.SHORT, "FLAT": strategies.FLAT,
                 "HOLD": strategies.HOLD}
        exec(compile(source, f"<composable {key}>", "exec"), scope)  # the source is built above, not read
        decide = nb.njit(nogil=True)(scope["decide"])
        _COMPILED[key] = strategies.StrategyDef(
            f"composable-{key}", ComposableParams, lambda p: generate(p)[1], decide,
            description="A composable spec: " + ", ".join(b.block for b in (*params.entries, *params.filters,
                                                                          *params.exits)))
    return _COMPILED[key]


# The family's own ``decide`` is the default spec's (one ma_trend entry); everything that runs a config
# asks ``SystemConfig.strategy_def()``, which specializes for the config's spec.
strategies.register(strategies.StrategyDef(
    "composable", ComposableParams, lambda p: generate(p)[1], specialize(ComposableParams(entries=[MaTrend()])).decide,
    description="Entry blocks with a confluence rule, filters and exit rules, declared in the config.",
    specialize=specialize,
))


# --- a combination generator for sweeps --------------------------------------------------------------

def combinations(entries: list[dict], *, sizes: tuple[int, ...] = (1, 2), filters: list[list[dict]] | None = None,
                 exits: list[list[dict]] | None = None) -> list[dict]:
    """Every spec made of ``sizes`` entries from ``entries`` (all must agree), times each filter set
    and exit set: what a sweep task's ``combine`` expands into."""
    out = []
    for k in sizes:
        for chosen in itertools.combinations(entries, k):
            for fs in filters or [[]]:
                for xs in exits or [[{"block": "opposite"}]]:
                    out.append({"entries": list(chosen), "confluence": "all", "filters": fs, "exits": xs})
    return out

