"""The forecasting contract, a model's inputs, the model, and the forecaster component.

**Contract.** A model has one timeframe and one horizon H (bars). At the close of bar t it forecasts,
from the features of t's snapshot only (what the strategies see, streamed the same way in every mode):

- the return ``close[t+H] / close[t] - 1``;
- the realised volatility over (t, t+H]: ``sqrt(sum of squared one-bar log returns over t+1..t+H)``;
- the regime over (t, t+H], one of ``REGIMES``, by the rule in ``forward_targets``;
- a confidence: one minus the normalised entropy of the regime probabilities.

**Inputs** are named transforms of library features (``INPUT_KINDS``), so each is a number a strategy
could read, made comparable across symbols (ratios, log distances, scaled oscillators). ``4h:ret_6``
reads the last closed 4h bar's. One function (``input_matrix``) turns feature columns into the model's
matrix for a whole history (datasets, a replay's seed) and for one streamed snapshot (a daemon).

**The model** is three LightGBM boosters: return (L2 on the winsorised return), log variance (scaled
on the training rows so its variance forecast is QLIKE-unbiased) and regime (multiclass). LightGBM
because its models are plain text (a registry entry is data that loads without running code, unlike
a pickled scikit-learn estimator), its training is deterministic when asked, and it is the field's
reference (Qlib's baseline). LightGBM is imported here only.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping

import lightgbm as lgb
import numpy as np
from msgspec.structs import replace

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.components.base import NO_EVENTS, Component, Stamper
from tradebus.components.features import Feature, f
from tradebus.components.timeframes import HOUR, day, tf_ns

REGIMES = ("trend_up", "trend_down", "chop", "crash")
CRASH_DRAWDOWN = 0.05


# --- targets ---------------------------------------------------------------------------------------


def forward_targets(close: np.ndarray, horizon: int, crash_drawdown: float = CRASH_DRAWDOWN
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forward return, forward realised vol, regime index or -1) for each bar; the last ``horizon`` bars
    have no future (NaN, -1). Regime over (t, t+H]: ``crash`` (3) if any close in it is at least
    ``crash_drawdown`` below close[t]; else ``trend_up`` (0) / ``trend_down`` (1) when the net log return is
    at least one realised volatility up / down; else ``chop`` (2)."""
    n = len(close)
    ret = np.full(n, np.nan)
    vol = np.full(n, np.nan)
    regime = np.full(n, -1, dtype=np.int8)
    if n <= horizon:
        return ret, vol, regime
    logp = np.log(close)
    csum = np.cumsum(np.concatenate(([0.0], np.diff(logp) ** 2)))
    t = np.arange(n - horizon)
    ret[t] = close[t + horizon] / close[t] - 1.0
    vol[t] = np.sqrt(csum[t + horizon] - csum[t])
    windows = np.lib.stride_tricks.sliding_window_view(close[1:], horizon)[: n - horizon]
    worst = windows.min(axis=1) / close[t] - 1.0
    net = logp[t + horizon] - logp[t]
    regime[t] = np.where(worst <= -crash_drawdown, 3, np.where(net >= vol[t], 0, np.where(net <= -vol[t], 1, 2)))
    return ret, vol, regime


def confidence(probs: np.ndarray) -> np.ndarray:
    """1 - entropy / log(classes) per row: 1 when one regime is certain, 0 when all are equally likely."""
    p = np.clip(probs, 1e-12, 1.0)
    return 1.0 + (p * np.log(p)).sum(axis=-1) / math.log(p.shape[-1])


# --- inputs ----------------------------------------------------------------------------------------

Column = Callable[[Feature], np.ndarray]


def _ratio(num: Feature, den: Feature, log: bool = False) -> tuple[tuple[Feature, ...], Callable]:
    if log:
        return (num, den), lambda g: np.log(g(num) / g(den))
    return (num, den), lambda g: g(num) / g(den)


def _input(kind: str, n: int) -> tuple[tuple[Feature, ...], Callable[[Column], np.ndarray]]:
    """(features it reads, its value from them) for an input kind and period."""
    close = f("close")
    if kind == "ret":
        return (f("logret", n),), lambda g: g(f("logret", n))
    if kind == "rv":
        return (f("rvol", n),), lambda g: g(f("rvol", n))
    if kind == "rsi":
        return (f("rsi", n),), lambda g: (g(f("rsi", n)) - 50.0) / 50.0
    if kind == "adx":
        return (f("adx", n),), lambda g: g(f("adx", n)) / 100.0
    if kind == "di":
        p, m = f("adx", n, output="plus_di"), f("adx", n, output="minus_di")
        return (p, m), lambda g: (g(p) - g(m)) / 100.0
    if kind == "chop":
        return (f("chop", n),), lambda g: g(f("chop", n)) / 100.0
    if kind in ("ema", "sma"):
        return _ratio(close, f(kind, n), log=True)
    if kind == "atr":
        return _ratio(f("atr", n), close)
    if kind in ("bb", "dc"):
        names = ("bb_upper", "bb_mid", "bb_lower") if kind == "bb" else ("dc_upper", "dc_mid", "dc_lower")
        up, _, lo = (f("bb", n, 2.0, output=o) if kind == "bb" else f("donchian", n, output=o) for o in names)

        def position(g: Column) -> np.ndarray:
            width = g(up) - g(lo)
            return np.where(width > 0, (g(close) - g(lo)) / np.where(width > 0, width, 1.0) - 0.5, 0.0)
        return (close, up, lo), position
    if kind == "macd":
        h = f("macd", 12, 26, 9, output="macd_hist")
        return _ratio(h, close)
    if kind == "relvol":
        return (f("relvol", n),), lambda g: np.log(np.maximum(g(f("relvol", n)), 1e-6))
    raise AssertionError(kind)


INPUT_KINDS = {
    "ret": "log return over N bars", "rv": "realised volatility over N bars",
    "rsi": "(RSI(N) - 50) / 50", "adx": "ADX(N) / 100", "di": "(+DI - -DI) / 100 of ADX(N)",
    "chop": "choppiness(N) / 100", "ema": "log(close / EMA(N))", "sma": "log(close / SMA(N))",
    "atr": "ATR(N) / close", "bb": "close's place in Bollinger(N, 2), -0.5..0.5",
    "dc": "close's place in Donchian(N), -0.5..0.5", "macd": "MACD(12, 26, 9) histogram / close",
    "relvol": "log(volume / mean volume over N)", "hour": "UTC hour of the bar's close (0-23)",
}
_NO_PERIOD = ("macd", "hour")
_NAME = re.compile(r"^(?:(?P<tf>[0-9]+[mhdw]):)?(?P<kind>[a-z]+)(?:_(?P<n>[0-9]{1,4}))?$")


@dataclass(frozen=True)
class Input:
    """One model input: its name as written (``ret_12``, ``4h:ema_50``), timeframe (None: the model's own),
    the features it reads and its value from their columns."""

    name: str
    timeframe: str | None
    features: tuple[Feature, ...]
    value: Callable[[Column, np.ndarray], np.ndarray] = field(compare=False)  # (columns, close times) -> values


def parse_input(name: str) -> Input:
    """The input a name means; ``ValueError`` naming what is allowed otherwise."""
    m = _NAME.match(name)
    kind = m and m["kind"]
    if not m or kind not in INPUT_KINDS or (kind in _NO_PERIOD) != (m["n"] is None) or (m["n"] and int(m["n"]) < 1):
        raise ValueError(f"input {name!r}: allowed KIND_N or TF:KIND_N with KIND one of "
                         f"{', '.join(k for k in INPUT_KINDS if k not in _NO_PERIOD)}, or macd, hour")
    if kind == "hour":
        if m["tf"]:
            raise ValueError(f"input {name!r}: hour is allowed only for the model's own bars, without a timeframe")
        return Input(name, None, (), lambda g, close_times: (close_times // HOUR) % 24)
    feats, value = _input(kind, int(m["n"] or 0))
    return Input(name, m["tf"], feats, lambda g, close_times: value(g))


def input_features(inputs: list[Input]) -> tuple[list[Feature], dict[str, list[Feature]]]:
    """(own-timeframe features, higher timeframe -> features) the inputs read, each once."""
    own: list[Feature] = []
    higher: dict[str, list[Feature]] = {}
    for inp in inputs:
        target = own if inp.timeframe is None else higher.setdefault(inp.timeframe, [])
        target += [feat for feat in (f("close"), *inp.features) if feat not in target]
    return own, higher


def input_matrix(inputs: list[Input], column: Callable[[str | None, Feature], np.ndarray],
                 close_times: np.ndarray) -> np.ndarray:
    """The (rows, inputs) float64 matrix: ``column(tf, feature)`` gives a feature's values on the rows
    (NaN where unknown), ``close_times`` the rows' bar close times (ns). One function for a whole history
    and for one streamed row, so a daemon computes exactly what a replay computes."""
    out = np.empty((len(close_times), len(inputs)), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, inp in enumerate(inputs):
            out[:, j] = inp.value(lambda feat, tf=inp.timeframe: column(tf, feat), close_times)
    out[~np.isfinite(out)] = np.nan
    return out


# --- the model ---------------------------------------------------------------------------------------


@dataclass
class Model:
    """A trained forecaster: its identity and validity, and three boosters (as LightGBM text)."""

    model_id: str
    version: str
    timeframe: str
    horizon: int
    inputs: list[str]
    trained_until: int  # ns: no bar closing at or before this may be forecast (it is in the training data)
    valid_until: int  # ns: expiry; a bar closing after it is refused
    vol_scale: float  # multiplies exp(log-variance prediction): the training rows' QLIKE-optimal scale
    boosters: dict[str, str]  # "return", "logvar", "regime" -> model text
    crash_drawdown: float = CRASH_DRAWDOWN  # the regime rule its targets (and so its scores) use
    _loaded: dict[str, lgb.Booster] = field(default_factory=dict, repr=False, compare=False)
    _inputs: list[Input] = field(default_factory=list, repr=False, compare=False)

    def parsed_inputs(self) -> list[Input]:
        if not self._inputs:
            self._inputs = [parse_input(n) for n in self.inputs]
        return self._inputs

    def booster(self, name: str) -> lgb.Booster:
        if name not in self._loaded:
            self._loaded[name] = lgb.Booster(model_str=self.boosters[name])
        return self._loaded[name]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(expected return, expected volatility, regime probabilities (rows, 4)) for input rows ``x``."""
        ret = self.booster("return").predict(x, num_threads=1)
        var = np.exp(self.booster("logvar").predict(x, num_threads=1)) * self.vol_scale
        probs = self.booster("regime").predict(x, num_threads=1).reshape(len(x), len(REGIMES))
        return ret, np.sqrt(var), probs

    def covers(self, close_time: int) -> str:
        """Why a bar closing at ``close_time`` may not be forecast ('' if it may)."""
        if close_time <= self.trained_until:
            return (f"model {self.model_id} {self.version} was trained on bars up to "
                    f"{day(self.trained_until)}: a forecast at {day(close_time)} would be in sample")
        if close_time > self.valid_until:
            return (f"model {self.model_id} {self.version} expired at {day(self.valid_until)}; "
                    f"retrain it (tradebus forecast retrain) or promote a newer version")
        return ""


LGB_COMMON = {"verbosity": -1, "deterministic": True, "force_row_wise": True, "seed": 7}


def fit(x: np.ndarray, ret: np.ndarray, vol: np.ndarray, regime: np.ndarray, params: Mapping[str, object],
        rounds: int) -> tuple[dict[str, str], float]:
    """Train the three boosters on rows with targets; (model texts, vol scale). Deterministic for the same
    rows, parameters and thread count."""
    base = {**LGB_COMMON, **params}
    ok = np.isfinite(ret) & np.isfinite(vol) & (vol > 0) & (regime >= 0)
    x, ret, vol, regime = x[ok], ret[ok], vol[ok], regime[ok]
    lo, hi = np.quantile(ret, [0.01, 0.99])
    texts = {}
    b_ret = lgb.train({**base, "objective": "regression"}, lgb.Dataset(x, np.clip(ret, lo, hi), free_raw_data=True),
                      num_boost_round=rounds)
    texts["return"] = b_ret.model_to_string()
    logvar = np.log(vol ** 2)
    b_var = lgb.train({**base, "objective": "regression"}, lgb.Dataset(x, logvar, free_raw_data=True),
                      num_boost_round=rounds)
    texts["logvar"] = b_var.model_to_string()
    # exp(E[log v]) underestimates E[v]: scale by the training rows' mean ratio, QLIKE's optimum for c * f.
    scale = float(np.mean(vol ** 2 / np.exp(b_var.predict(x))))
    b_reg = lgb.train({**base, "objective": "multiclass", "num_class": len(REGIMES)},
                      lgb.Dataset(x, regime.astype(np.int32), free_raw_data=True), num_boost_round=rounds)
    texts["regime"] = b_reg.model_to_string()
    return texts, scale


# --- the component ---------------------------------------------------------------------------------


class Forecaster(Component):
    """Publishes a ``Forecast`` at every bar close the model covers, and scores each one with a
    ``ForecastScored`` at the close of the bar ``horizon`` bars later.

    Reads the system's snapshots (their features include the model's: ``engine.wiring`` adds them). Rows
    of the seeded history are predicted in one batch when it is built (the replay's path); a streamed
    snapshot's row is built from its features by the same ``input_matrix`` (the daemon's path). A bar the
    model does not cover (in its training data, or past its expiry) gets no forecast; ``refusal`` says why.
    """

    name = "forecaster"
    runs_ahead = True  # a pure function of snapshots, stamped with the bar's own time

    def __init__(self, stamp: Stamper, model: Model, venue: str, symbol: str, seeded: Mapping[int, np.ndarray]
                 ) -> None:
        """``seeded``: bar open time -> the model's input row, for the bars of the seeded history."""
        super().__init__()
        self._stamp = stamp
        self.model = model
        self._symbol = symbol
        self._step = tf_ns(model.timeframe)
        self._subject = subjects.snapshots(venue, symbol, model.timeframe)
        self._inputs = model.parsed_inputs()
        self._seeded: dict[int, tuple] = {}
        if seeded:
            times = list(seeded)
            self._seeded = dict(zip(times, self._values(np.vstack([seeded[t] for t in times]))))
        # The last H + 1 closes, and the forecasts (None: a bar not forecast) of the last H bars.
        self._closes: deque[float] = deque(maxlen=model.horizon + 1)
        self._pending: deque[ev.Forecast | None] = deque()
        self.refusal = ""
        self._refused: dict[str, str] = {}  # snapshot id -> why no forecast (the last few bars')
        self._handlers[ev.Snapshot] = self._on_snapshot
        self._tpl = stamp.template(ev.Forecast, model_id=model.model_id, model_version=model.version, symbol=symbol,
                                   timeframe=model.timeframe, horizon_bars=model.horizon, expected_return=0.0,
                                   expected_vol=0.0)

    def patterns(self) -> tuple[str, ...]:
        return (self._subject,)

    def restore(self, open_times: np.ndarray, closes: np.ndarray, stored: list[ev.Forecast]) -> None:
        """After a restart: the history's last bars (open times, closes) and the forecasts the last session
        stored, so a forecast made up to H bars before the restart is still scored on time."""
        h = self.model.horizon
        by_time = {f.ts_event: f for f in stored if f.model_id == self.model.model_id}
        for t, c in zip(open_times[-h:].tolist(), closes[-h:].tolist()):
            self._closes.append(float(c))
            self._pending.append(by_time.get(t + self._step))

    def refused(self, snapshot_id: str) -> str:
        """Why this snapshot's bar got no forecast ('' if it got one, or is not among the last 64 bars)."""
        return self._refused.get(snapshot_id, "")

    def row(self, snap: ev.Snapshot) -> np.ndarray:
        """The model's input row from one snapshot's features."""
        def column(tf: str | None, feat: Feature) -> np.ndarray:
            src = snap.features if tf is None else snap.htf.get(tf, {})
            return np.array([src.get(feat.name, math.nan)])
        return input_matrix(self._inputs, column, np.array([snap.bar.open_time + self._step]))[0]

    def _on_snapshot(self, snap: ev.Snapshot) -> tuple[ev.Event, ...]:
        if snap.system != self._stamp.system:
            return NO_EVENTS
        out: list[ev.Event] = []
        close_time = snap.bar.open_time + self._step
        self._closes.append(snap.bar.close)
        if len(self._pending) == self.model.horizon:  # the forecast made H bars ago is due
            due = self._pending.popleft()
            if due is not None:
                out.append(self._score(due, snap))
        why = self.model.covers(close_time)
        forecast = None
        if why:
            self.refusal = why
            self._refused[snap.id] = why
            if len(self._refused) > 64:
                del self._refused[next(iter(self._refused))]
        else:
            self.refusal = ""
            hit = self._seeded.get(snap.bar.open_time)
            if hit is None:
                hit = self._values(self.row(snap)[None, :])[0]
            forecast = self._forecast(snap, *hit)
            out.append(forecast)
        self._pending.append(forecast)
        return tuple(out)

    def _values(self, x: np.ndarray) -> list[tuple]:
        """Per input row, what its Forecast carries: (return, vol, regime, confidence, the four probabilities),
        computed a batch at a time (the seeded history) or for one streamed row, by the same code."""
        ret, vol, probs = self.model.predict(x)
        regime = np.argmax(probs, axis=1)
        return list(zip(ret.tolist(), vol.tolist(), [REGIMES[k] for k in regime.tolist()],
                        confidence(probs).tolist(), probs.tolist()))

    def _forecast(self, snap: ev.Snapshot, ret: float, vol: float, regime: str, conf: float, p: list[float]
                  ) -> ev.Forecast:
        return replace(self._tpl, id=self._stamp.next_id(snap.ts_init), ts_event=snap.ts_event, ts_init=snap.ts_init,
                       cause=snap.id, expected_return=ret, expected_vol=vol, regime=regime, confidence=conf,
                       p_trend_up=p[0], p_trend_down=p[1], p_chop=p[2], p_crash=p[3])

    def _score(self, fc: ev.Forecast, snap: ev.Snapshot) -> ev.ForecastScored:
        closes = np.fromiter(self._closes, dtype=np.float64)
        ret, vol, regime = forward_targets(closes, self.model.horizon, self.model.crash_drawdown)
        probs = (fc.p_trend_up, fc.p_trend_down, fc.p_chop, fc.p_crash)
        k = int(regime[0])
        ratio = vol[0] ** 2 / fc.expected_vol ** 2 if fc.expected_vol > 0 else math.nan
        return ev.ForecastScored(
            id=self._stamp.next_id(snap.ts_init), ts_event=snap.ts_event, ts_init=snap.ts_init,
            system=self._stamp.system, run=self._stamp.run, cause=fc.id, model_id=fc.model_id, model_version=fc.model_version,
            symbol=fc.symbol, timeframe=fc.timeframe, horizon_bars=fc.horizon_bars, forecast_time=fc.ts_event,
            expected_return=fc.expected_return, realised_return=float(ret[0]), expected_vol=fc.expected_vol,
            realised_vol=float(vol[0]), regime_probs=probs, realised_regime=REGIMES[k],
            return_error=float((ret[0] - fc.expected_return) ** 2),
            qlike=float(ratio - math.log(ratio) - 1.0) if ratio > 0 else math.nan,
            brier=float(sum((p - (1.0 if i == k else 0.0)) ** 2 for i, p in enumerate(probs))))
