"""Named features: which indicator, with which arguments, under which name, and how much history it needs.

A strategy declares the features it reads as ``Feature``s; a ``FeatureSet`` holds the state of the
indicators behind a list of them (each indicator call shared by the features that use its outputs) and
advances it over a batch of bars into a matrix whose columns follow the list. Names are stable and readable (``ema_20``, ``bb_lower_20_2``) because
they appear in snapshots, training rows and reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tradebus.components import indicators as ind
from tradebus.components.timeframes import DAY

Candles = dict[str, np.ndarray]


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x).replace(".", "p")


Runner = Callable[[Candles], tuple[np.ndarray, ...]]


def _column(name: str) -> Callable[[], Runner]:
    return lambda: (lambda c: (np.asarray(c[name], dtype=np.float64),))


def _out(c: Candles, k: int = 1) -> tuple[np.ndarray, ...]:
    n = len(c["close"])
    return tuple(np.empty(n) for _ in range(k))


# Each indicator as a runner factory: ``make(*args)`` returns a function that advances that indicator's
# own state over a batch of candles (a whole history, or one new bar) and returns the batch's values.
def _sma(n: float) -> Runner:
    st, ring = ind.sma_state(int(n))
    return lambda c: _done(ind.sma_run(st, ring, c["close"], o := _out(c)[0]), o)


def _ema(n: float) -> Runner:
    st = ind.ema_state(int(n))
    return lambda c: _done(ind.ema_run(st, c["close"], o := _out(c)[0]), o)


def _rsi(n: float) -> Runner:
    st = ind.rsi_state(int(n))
    return lambda c: _done(ind.rsi_run(st, c["close"], o := _out(c)[0]), o)


def _atr(n: float) -> Runner:
    st = ind.atr_state(int(n))
    return lambda c: _done(ind.atr_run(st, c["high"], c["low"], c["close"], o := _out(c)[0]), o)


def _macd(fast: float, slow: float, signal: float) -> Runner:
    st = ind.macd_state(int(fast), int(slow), int(signal))
    return lambda c: _done(ind.macd_run(st, c["close"], *(o := _out(c, 3))), *o)


def _bb(n: float, k: float) -> Runner:
    st, ring = ind.sma_state(int(n))
    return lambda c: _done(ind.bollinger_run(st, ring, c["close"], float(k), *(o := _out(c, 3))), *o)


def _donchian(n: float) -> Runner:
    st = ind.donchian_state(int(n))
    return lambda c: _done(ind.donchian_run(*st, c["high"], c["low"], *(o := _out(c, 3))), *o)


def _adx(n: float) -> Runner:
    st = ind.adx_state(int(n))
    return lambda c: _done(ind.adx_run(st, c["high"], c["low"], c["close"], *(o := _out(c, 3))), *o)


def _chop(n: float) -> Runner:
    st = ind.chop_state(int(n))
    return lambda c: _done(ind.chop_run(*st, c["high"], c["low"], c["close"], o := _out(c)[0]), o)


def _stochrsi(r: float, s: float, k: float, d: float) -> Runner:
    st = ind.stoch_rsi_state(int(r), int(s), int(k), int(d))
    return lambda c: _done(ind.stoch_rsi_run(*st, int(s), int(k), c["close"], *(o := _out(c, 2))), *o)


def _logret(n: float) -> Runner:
    st, ring = ind.logret_state(int(n))
    return lambda c: _done(ind.logret_run(st, ring, c["close"], o := _out(c)[0]), o)


def _rvol(n: float) -> Runner:
    st, ring = ind.rvol_state(int(n))
    return lambda c: _done(ind.rvol_run(st, ring, c["close"], o := _out(c)[0]), o)


def _relvol(n: float) -> Runner:
    st, ring = ind.sma_state(int(n))
    return lambda c: _done(ind.relvol_run(st, ring, np.asarray(c["volume"], dtype=np.float64), o := _out(c)[0]), o)


def _obv() -> Runner:
    st = ind.obv_state()
    return lambda c: _done(ind.obv_run(st, c["close"], c["volume"], o := _out(c)[0]), o)


def _vwap() -> Runner:
    st = ind.vwap_state(DAY)
    return lambda c: _done(ind.vwap_run(st, np.asarray(c["open_time"], dtype=np.int64), c["high"], c["low"],
                                        c["close"], c["volume"], o := _out(c)[0]), o)


def _done(_: None, *outputs: np.ndarray) -> tuple[np.ndarray, ...]:
    return outputs


# kind -> (output names, runner factory, lookback(*args))
_KINDS: dict[str, tuple[tuple[str, ...], Callable[..., Runner], Callable[..., int]]] = {
    "close": (("close",), _column("close"), lambda: 0),
    "open": (("open",), _column("open"), lambda: 0),
    "high": (("high",), _column("high"), lambda: 0),
    "low": (("low",), _column("low"), lambda: 0),
    "volume": (("volume",), _column("volume"), lambda: 0),
    "sma": (("sma",), _sma, lambda n: int(n) - 1),
    "ema": (("ema",), _ema, lambda n: int(n) - 1),
    "rsi": (("rsi",), _rsi, lambda n: int(n)),
    "atr": (("atr",), _atr, lambda n: int(n)),
    "macd": (("macd", "macd_signal", "macd_hist"), _macd, lambda f, s, g: int(s) + int(g) - 2),
    "bb": (("bb_upper", "bb_mid", "bb_lower"), _bb, lambda n, k: int(n) - 1),
    "donchian": (("dc_upper", "dc_mid", "dc_lower"), _donchian, lambda n: int(n) - 1),
    "adx": (("adx", "plus_di", "minus_di"), _adx, lambda n: 2 * int(n) - 1),
    "chop": (("chop",), _chop, lambda n: int(n)),
    "stochrsi": (("stochrsi_k", "stochrsi_d"), _stochrsi, lambda r, s, k, d: int(r) + int(s) + int(k) + int(d) - 3),
    "obv": (("obv",), _obv, lambda: 0),
    "logret": (("logret",), _logret, lambda n: int(n)),
    "rvol": (("rvol",), _rvol, lambda n: int(n)),
    "relvol": (("relvol",), _relvol, lambda n: int(n) - 1),
    "vwap": (("vwap",), _vwap, lambda: 0),
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


class FeatureSet:
    """Features of one timeframe with their indicators' state. ``update`` advances every indicator over a
    batch of candles (a whole history at once, or one new bar) and returns the batch's rows: the same
    code computes a replay's series and a daemon's next bar."""

    def __init__(self, features: list[Feature]) -> None:
        self.features = list(features)
        self.names = [feat.name for feat in self.features]
        self._runners: dict[tuple[str, tuple[float, ...]], Runner] = {}
        self._columns: list[tuple[tuple[str, tuple[float, ...]], int]] = []
        for feat in self.features:
            key = (feat.kind, feat.args)
            if key not in self._runners:
                self._runners[key] = _KINDS[feat.kind][1](*feat.args)
            self._columns.append((key, _KINDS[feat.kind][0].index(feat.output)))

    def update(self, candles: Candles) -> np.ndarray:
        """Advance over ``candles`` (columns of equal length, in time order); return (bars, features) float64."""
        n = len(candles["close"])
        results = {key: run(candles) for key, run in self._runners.items()}
        out = np.empty((n, len(self.features)), dtype=np.float64)
        for j, (key, k) in enumerate(self._columns):
            out[:, j] = results[key][k]
        return out


Memo = Callable[[tuple, Callable[[], tuple[np.ndarray, ...]]], tuple[np.ndarray, ...]]
"""``memo(key, compute)``: the outputs stored under ``key``, else ``compute()``'s (then stored)."""


def compute(candles: Candles, features: list[Feature], memo: Memo | None = None) -> np.ndarray:
    """Evaluate features over candles from a fresh state into an (n_bars, n_features) float64 matrix.

    With ``memo`` (bound to these very candles) each indicator call's outputs, keyed ``(kind, args)``, are
    taken from it when another evaluation over the same candles made them: a sweep's trials share them.
    """
    if memo is None:
        return FeatureSet(features).update(candles)
    out = np.empty((len(candles["close"]), len(features)), dtype=np.float64)
    for j, feat in enumerate(features):
        outputs = memo((feat.kind, feat.args), lambda feat=feat: _KINDS[feat.kind][1](*feat.args)(candles))
        out[:, j] = outputs[_KINDS[feat.kind][0].index(feat.output)]
    return out


def lookback(features: list[Feature]) -> int:
    """Bars of history the slowest feature needs."""
    return max((feat.lookback for feat in features), default=0)
