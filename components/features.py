"""Named features: which indicator, with which arguments, under which name, and how much history it needs.

A strategy declares the features it reads as ``Feature``s; ``compute`` evaluates a list of them over
candles once per run (each indicator call shared by the features that use its outputs) into a matrix
whose columns follow the list. Names are stable and readable (``ema_20``, ``bb_lower_20_2``) because
they appear in snapshots, training rows and reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tradebus.components import indicators as ind

Candles = dict[str, np.ndarray]


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x).replace(".", "p")


# kind -> (output names, function of (candles, *args) returning a tuple of arrays, lookback(*args))
_KINDS: dict[str, tuple[tuple[str, ...], Callable[..., tuple[np.ndarray, ...]], Callable[..., int]]] = {
    "close": (("close",), lambda c: (c["close"],), lambda: 0),
    "open": (("open",), lambda c: (c["open"],), lambda: 0),
    "high": (("high",), lambda c: (c["high"],), lambda: 0),
    "low": (("low",), lambda c: (c["low"],), lambda: 0),
    "volume": (("volume",), lambda c: (c["volume"],), lambda: 0),
    "sma": (("sma",), lambda c, n: (ind.sma(c["close"], int(n)),), lambda n: int(n) - 1),
    "ema": (("ema",), lambda c, n: (ind.ema(c["close"], int(n)),), lambda n: int(n) - 1),
    "rsi": (("rsi",), lambda c, n: (ind.rsi(c["close"], int(n)),), lambda n: int(n)),
    "atr": (("atr",), lambda c, n: (ind.atr(c["high"], c["low"], c["close"], int(n)),), lambda n: int(n)),
    "macd": (("macd", "macd_signal", "macd_hist"),
             lambda c, f, s, g: ind.macd(c["close"], int(f), int(s), int(g)), lambda f, s, g: int(s) + int(g) - 2),
    "bb": (("bb_upper", "bb_mid", "bb_lower"),
           lambda c, n, k: ind.bollinger(c["close"], int(n), float(k)), lambda n, k: int(n) - 1),
    "donchian": (("dc_upper", "dc_mid", "dc_lower"),
                 lambda c, n: ind.donchian(c["high"], c["low"], int(n)), lambda n: int(n) - 1),
    "adx": (("adx", "plus_di", "minus_di"),
            lambda c, n: ind.adx(c["high"], c["low"], c["close"], int(n)), lambda n: 2 * int(n) - 1),
    "chop": (("chop",), lambda c, n: (ind.chop(c["high"], c["low"], c["close"], int(n)),), lambda n: int(n)),
    "stochrsi": (("stochrsi_k", "stochrsi_d"),
                 lambda c, r, s, k, d: ind.stoch_rsi(c["close"], int(r), int(s), int(k), int(d)),
                 lambda r, s, k, d: int(r) + int(s) + int(k) + int(d) - 3),
    "obv": (("obv",), lambda c: (ind.obv(c["close"], c["volume"]),), lambda: 0),
    "vwap": (("vwap",), lambda c: (ind.vwap(c["open_time"], c["high"], c["low"], c["close"], c["volume"]),),
             lambda: 0),
}


@dataclass(frozen=True)
class Feature:
    """One output of one indicator call, e.g. ``Feature("bb", (20, 2.0), "bb_lower")``."""

    kind: str
    args: tuple[float, ...] = ()
    output: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown feature kind {self.kind!r}; known: {', '.join(sorted(_KINDS))}")
        outputs = _KINDS[self.kind][0]
        if not self.output:
            object.__setattr__(self, "output", outputs[0])
        elif self.output not in outputs:
            raise ValueError(f"feature {self.kind!r} has outputs {outputs}, not {self.output!r}")

    @property
    def name(self) -> str:
        return "_".join((self.output, *map(_fmt, self.args)))

    @property
    def lookback(self) -> int:
        """Index of the first valid value: bars of history needed before it."""
        return _KINDS[self.kind][2](*self.args)


def f(kind: str, *args: float, output: str = "") -> Feature:
    """Shorthand: ``f("ema", 20)``, ``f("macd", 12, 26, 9, output="macd_hist")``."""
    return Feature(kind, tuple(args), output)


def compute(candles: Candles, features: list[Feature]) -> np.ndarray:
    """Evaluate features over candles into an (n_bars, n_features) float64 matrix."""
    n = len(candles["close"])
    out = np.empty((n, len(features)), dtype=np.float64)
    cache: dict[tuple[str, tuple[float, ...]], tuple[np.ndarray, ...]] = {}
    for j, feat in enumerate(features):
        key = (feat.kind, feat.args)
        if key not in cache:
            cache[key] = _KINDS[feat.kind][1](candles, *feat.args)
        out[:, j] = cache[key][_KINDS[feat.kind][0].index(feat.output)]
    return out


def lookback(features: list[Feature]) -> int:
    """Bars of history the slowest feature needs."""
    return max((feat.lookback for feat in features), default=0)
