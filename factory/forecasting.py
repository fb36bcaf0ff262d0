"""Training and judging a forecaster: purged, embargoed walk-forward against classical baselines on the same
folds, then the final model on every row, stored as a registry version.

**Folds.** The last ``test_fraction`` of the dataset's time range is cut into ``folds`` equal blocks. Fold k
tests on block k and trains on rows closing before the block's start less ``embargo`` bars (at least H,
so no training target reaches into the block: purged), every ``train_stride``-th bar; with ``rolling``,
only the ``train_bars`` bars before that gap. The model's settings are the file's: nothing is tuned on
a test block.

**Baselines**, each fitted on the fold's training rows only and forecasting from data up to t:
return: zero and momentum (the last H bars' return); volatility: EWMA(0.94), GARCH(1,1) (arch) and
HAR-RV; regime: the training base rate and persistence (a Markov chain: the training rows' frequency of
each regime after the regime of the H bars just ended).

**Metrics** per fold and pooled over every fold's test rows: IC, rank IC, monthly IC's IR and share of
months above zero; QLIKE and RMSE of the volatility (QLIKE on variances); Brier score, its skill against
each regime baseline, log loss and classwise calibration error. Rows overlap by H - 1 bars, so adjacent
rows are not independent: a monthly IC's spread, not the row count, says how sure an IC is.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tradebus.components import forecast
from tradebus.components.timeframes import DAY, day, tf_ns
from tradebus.configs.forecast import ModelSpec
from tradebus.factory import forecast_eval as fe
from tradebus.identity import code_digest

RETURN_MODELS = ("model", "zero", "momentum")
VOL_MODELS = ("model", "ewma", "garch", "har")
REGIME_MODELS = ("model", "base_rate", "persistence")


@dataclass(frozen=True)
class Fold:
    index: int
    test_start: int  # ns, bar close times: [test_start, test_end)
    test_end: int
    train_end: int  # training rows close before this
    train_start: int  # ... and at or after this


def make_folds(times: np.ndarray, spec: ModelSpec, test_from: int | None = None) -> list[Fold]:
    """The walk-forward folds over the dataset's bar close times (ns); ``test_from``: test only bars closing
    after it (a retrain tests on the data its frozen model never saw) instead of the last ``test_fraction``."""
    step = tf_ns(spec.timeframe)
    t0, t1 = int(times.min()), int(times.max()) + step
    wf = spec.walk_forward
    if test_from is not None:
        first = (test_from // step + 1) * step
    else:
        first = t0 + int((t1 - t0) * (1 - wf.test_fraction)) // step * step
    edges = [first + (t1 - first) * k // wf.folds // step * step for k in range(wf.folds)] + [t1]
    out = []
    for k in range(wf.folds):
        train_end = edges[k] - spec.embargo * step
        train_start = train_end - wf.train_bars * step if wf.rolling else t0
        out.append(Fold(k, edges[k], edges[k + 1], train_end, train_start))
    return out


@dataclass
class Rows:
    """The dataset as arrays (sorted by symbol, then time: each symbol's rows are one contiguous run)."""

    time: np.ndarray
    symbol: np.ndarray
    close: np.ndarray
    x: np.ndarray
    past_regime: np.ndarray
    ret: np.ndarray
    vol: np.ndarray
    regime: np.ndarray

    @classmethod
    def of(cls, table: pa.Table, inputs: list[str]) -> "Rows":
        sym = np.asarray(table.column("symbol").to_pylist(), dtype=object)
        t = table.column("time").to_numpy().astype("datetime64[ns]").astype(np.int64)
        order = np.lexsort((t, sym))
        col = lambda n: np.asarray(table.column(n).to_numpy(zero_copy_only=False))[order]  # noqa: E731
        x = np.column_stack([col(f"x.{n}") for n in inputs]).astype(np.float64)
        return cls(t[order], sym[order], col("close"), x, col("past_regime").astype(np.int64), col("target_return"),
                   col("target_vol"), col("target_regime").astype(np.int64))

    def spans(self) -> list[tuple[str, slice]]:
        """(symbol, its rows)."""
        change = np.flatnonzero(self.symbol[1:] != self.symbol[:-1]) + 1
        bounds = [0, *change.tolist(), len(self.symbol)]
        return [(str(self.symbol[a]), slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _past_var(logret: np.ndarray, n: int, h: int) -> np.ndarray:
    """Realised variance over the last n bars, scaled to h bars (NaN until n returns are known)."""
    r2 = np.where(np.isfinite(logret), logret ** 2, 0.0)
    c = np.concatenate(([0.0], np.cumsum(r2)))
    out = np.full(len(logret), np.nan)
    if len(logret) > n:
        idx = np.arange(n, len(logret))
        out[n:] = (c[idx + 1] - c[idx + 1 - n]) * h / n
    return out


def baselines(rows: Rows, train: np.ndarray, horizon: int) -> dict[str, np.ndarray]:
    """Every baseline's forecast for every row, fitted on ``train`` rows only (per symbol where a baseline
    reads a series: momentum, EWMA, GARCH, HAR)."""
    n = len(rows.time)
    out = {"momentum": np.full(n, np.nan), "ewma": np.full(n, np.nan), "garch": np.full(n, np.nan),
           "har": np.full(n, np.nan)}
    for _, s in rows.spans():
        close = rows.close[s]
        logret = np.concatenate(([np.nan], np.diff(np.log(close))))
        out["momentum"][s] = fe.momentum(close, horizon)
        out["ewma"][s] = fe.ewma_variance(logret, horizon)
        if train[s].sum() > 200:
            mask = train[s]
            # GARCH's training block: this symbol's training rows form one run (expanding or rolling).
            out["garch"][s] = fe.garch_variance(logret, mask, horizon)
            out["har"][s] = fe.har_variance(_past_var(logret, horizon, horizon), _past_var(logret, 5 * horizon, horizon),
                                            _past_var(logret, 22 * horizon, horizon), rows.vol[s] ** 2, mask)
    labels = rows.regime[train]
    ok = labels >= 0
    out["base_rate"] = np.tile(fe.base_rate(labels[ok]), (n, 1))
    okp = ok & (rows.past_regime[train] >= 0)
    out["persistence"] = fe.markov_persistence(rows.past_regime[train][okp], labels[okp], rows.past_regime)
    return out


def scores(times: np.ndarray, real: dict[str, np.ndarray], fc: dict[str, np.ndarray]) -> dict:
    """Every metric of every model and baseline on one set of rows."""
    ret = {}
    for name in RETURN_MODELS:
        pred = np.zeros_like(real["ret"]) if name == "zero" else fc[f"ret_{name}"]
        _, mic, mrank = fe.monthly_ic(times, pred, real["ret"])
        ret[name] = {"ic": fe.ic(pred, real["ret"]), "rank_ic": fe.rank_ic(pred, real["ret"]),
                     "icir": fe.icir(mic), "rank_icir": fe.icir(mrank), "months_positive": fe.share_positive(mic),
                     "months": int(len(mic)), "rmse": fe.rmse(pred, real["ret"])}
    var_real = real["vol"] ** 2
    vol = {name: {"qlike": fe.qlike(var_real, fc[f"var_{name}"]),
                  "rmse": fe.rmse(np.sqrt(fc[f"var_{name}"]), real["vol"])} for name in VOL_MODELS}
    regime = {name: {"brier": fe.brier(fc[f"p_{name}"], real["regime"]),
                     "log_loss": fe.log_loss(fc[f"p_{name}"], real["regime"]),
                     "calibration_error": fe.calibration_error(fc[f"p_{name}"], real["regime"])}
              for name in REGIME_MODELS}
    for ref in REGIME_MODELS[1:]:
        regime["model"][f"skill_vs_{ref}"] = fe.brier_skill(regime["model"]["brier"], regime[ref]["brier"])
    return {"rows": int(np.isfinite(real["ret"]).sum()), "return": ret, "vol": vol, "regime": regime}


@dataclass
class Evaluation:
    folds: list[dict]
    pooled: dict
    per_symbol: dict[str, dict]
    predictions: pa.Table
    seconds: float
    extra: dict = field(default_factory=dict)


def _fit_predict(spec: ModelSpec, rows: Rows, train: np.ndarray, test: np.ndarray) -> tuple[dict[str, str], float,
                                                                                             tuple]:
    idx = np.flatnonzero(train)[:: spec.train_stride]
    texts, scale = forecast.fit(rows.x[idx], rows.ret[idx], rows.vol[idx], rows.regime[idx],
                                spec.lightgbm.params(), spec.lightgbm.rounds)
    model = forecast.Model(spec.model, "", spec.timeframe, spec.horizon, spec.inputs, 0, 0, scale, texts)
    return texts, scale, model.predict(rows.x[test])


def walk_forward(spec: ModelSpec, rows: Rows, progress=None, test_from: int | None = None) -> Evaluation:
    """Train and test every fold; score the model and the baselines on each and pooled."""
    t0 = time.perf_counter()
    folds = make_folds(rows.time, spec, test_from)
    n = len(rows.time)
    keys = ["ret_model", "ret_momentum", *(f"var_{m}" for m in VOL_MODELS)]
    fc = {k: np.full(n, np.nan) for k in keys} | {f"p_{m}": np.full((n, 4), np.nan) for m in REGIME_MODELS}
    fold_of = np.full(n, -1)
    results = []
    for fold in folds:
        train = (rows.time < fold.train_end) & (rows.time >= fold.train_start)
        test = (rows.time >= fold.test_start) & (rows.time < fold.test_end)
        if train.sum() < 100 or test.sum() == 0:
            raise ValueError(f"fold {fold.index + 1}: {int(train.sum())} training and {int(test.sum())} test rows; "
                             "store more history or use fewer folds / a smaller test_fraction")
        _, _, (ret, vol, probs) = _fit_predict(spec, rows, train, test)
        base = baselines(rows, train, spec.horizon)
        fc["ret_model"][test], fc["var_model"][test], fc["p_model"][test] = ret, vol ** 2, probs
        fc["ret_momentum"][test] = base["momentum"][test]
        for m in ("ewma", "garch", "har"):
            fc[f"var_{m}"][test] = base[m][test]
        fc["p_base_rate"][test], fc["p_persistence"][test] = base["base_rate"][test], base["persistence"][test]
        fold_of[test] = fold.index
        real = {"ret": rows.ret[test], "vol": rows.vol[test], "regime": rows.regime[test]}
        results.append({"fold": fold.index + 1, "train_start": day(fold.train_start), "train_end": day(fold.train_end),
                        "test_start": day(fold.test_start), "test_end": day(fold.test_end),
                        "train_rows": int(train[::1].sum()), "test_rows": int(test.sum()),
                        **scores(rows.time[test], real, {k: v[test] for k, v in fc.items()})})
        if progress:
            progress(fold.index + 1, len(folds))
    tested = fold_of >= 0
    real = {"ret": rows.ret, "vol": rows.vol, "regime": rows.regime}
    pooled = scores(rows.time[tested], {k: v[tested] for k, v in real.items()}, {k: v[tested] for k, v in fc.items()})
    per_symbol = {}
    for sym, s in rows.spans():
        m = np.zeros(n, dtype=bool)
        m[s] = True
        m &= tested
        per_symbol[sym] = scores(rows.time[m], {k: v[m] for k, v in real.items()}, {k: v[m] for k, v in fc.items()})
    pred = {"time": pa.array(rows.time[tested], type=pa.timestamp("ns", tz="UTC")),
            "symbol": pa.array(rows.symbol[tested].tolist(), type=pa.string()),
            "fold": pa.array(fold_of[tested] + 1, type=pa.int16()),
            "target_return": rows.ret[tested], "target_vol": rows.vol[tested],
            "target_regime": pa.array(rows.regime[tested], type=pa.int8())}
    for k, v in fc.items():
        if v.ndim == 1:
            pred[k] = v[tested]
        else:
            for j, r in enumerate(forecast.REGIMES):
                pred[f"{k}_{r}"] = v[tested, j]
    return Evaluation(results, pooled, per_symbol, pa.table(pred), time.perf_counter() - t0)


def version_of(dataset_id: str, spec: ModelSpec) -> str:
    """The registry version: data, settings and code."""
    h = hashlib.sha256(json.dumps({"dataset": dataset_id, "spec": spec.model_dump(mode="json"),
                                   "code": code_digest()}, sort_keys=True).encode())
    return h.hexdigest()[:12]


def version_manifest(spec: ModelSpec, model: forecast.Model, dataset_id: str, **extra) -> dict:
    """What the registry keeps beside a version's boosters: what built it, what it covers, and ``extra``
    (its walk-forward evaluation, or the fold of a comparison it was trained for)."""
    return {"model": spec.model, "version": model.version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dataset": dataset_id, "timeframe": spec.timeframe, "horizon": spec.horizon, "inputs": spec.inputs,
            "spec": spec.model_dump(mode="json"), "trained_until": day(model.trained_until),
            "trained_until_ns": model.trained_until, "valid_until": day(model.valid_until),
            "valid_until_ns": model.valid_until, "vol_scale": model.vol_scale, **extra}


def final_model(spec: ModelSpec, rows: Rows, dataset_id: str) -> forecast.Model:
    """The model on every row with a target; it covers bars closing after its data, for ``valid_for_days``."""
    has = np.isfinite(rows.ret)
    idx = np.flatnonzero(has)[:: spec.train_stride]
    texts, scale = forecast.fit(rows.x[idx], rows.ret[idx], rows.vol[idx], rows.regime[idx],
                                spec.lightgbm.params(), spec.lightgbm.rounds)
    step = tf_ns(spec.timeframe)
    # The last bar whose data it saw: the last row's close (its features) or the close H bars after the
    # last row with a target, whichever is later.
    seen = int(max(rows.time.max(), rows.time[has].max() + spec.horizon * step))
    return forecast.Model(spec.model, version_of(dataset_id, spec), spec.timeframe, spec.horizon, spec.inputs, seen,
                          seen + spec.valid_for_days * DAY, scale, texts, spec.crash_drawdown)


def report_series(ev: Evaluation) -> tuple[dict, dict]:
    """(monthly rank IC per return model, reliability curve per regime model) from the pooled predictions."""
    p = ev.predictions
    t = p.column("time").to_numpy().astype("datetime64[ns]").astype(np.int64)
    real = p.column("target_return").to_numpy()
    monthly = {}
    for name, col in (("model", "ret_model"), ("momentum", "ret_momentum")):
        keys, _, ranks = fe.monthly_ic(t, p.column(col).to_numpy(), real)
        monthly[name] = ([f"{k // 100}-{k % 100:02d}" for k in keys.tolist()], ranks.tolist())
    labels = p.column("target_regime").to_numpy().astype(np.int64)
    ok = labels >= 0
    onehot = np.eye(len(forecast.REGIMES))[labels[ok]].ravel()
    calibration = {}
    for name in REGIME_MODELS:
        probs = np.column_stack([p.column(f"p_{name}_{r}").to_numpy() for r in forecast.REGIMES])[ok].ravel()
        bins = np.minimum((probs * 10).astype(int), 9)
        xs, ys = [], []
        for b in range(10):
            m = bins == b
            if m.sum() >= 50:
                xs.append(float(probs[m].mean()))
                ys.append(float(onehot[m].mean()))
        calibration[name] = (xs, ys)
    return monthly, calibration


def verdict(pooled: dict, per_symbol: dict[str, dict]) -> list[str]:
    """The issue's targets, each as one plain sentence with its numbers."""
    lines = []
    ew = [s for s, v in per_symbol.items() if v["vol"]["model"]["qlike"] <= 0.9 * v["vol"]["ewma"]["qlike"]]
    lines.append(f"volatility: QLIKE at least 10% below EWMA(0.94) on {len(ew)} of {len(per_symbol)} symbols "
                 f"(pooled {pooled['vol']['model']['qlike']:.4f} vs {pooled['vol']['ewma']['qlike']:.4f})")
    g = pooled["regime"]["model"]
    lines.append(f"regime: Brier skill {g['skill_vs_base_rate']:+.4f} vs the base rate, "
                 f"{g['skill_vs_persistence']:+.4f} vs persistence (target: at least +0.05 against both)")
    r, mom = pooled["return"]["model"], pooled["return"]["momentum"]
    lines.append(f"return: rank IC {r['rank_ic']:+.4f} (momentum {mom['rank_ic']:+.4f}), monthly rank ICIR "
                 f"{r['rank_icir']:+.2f}, IC above zero in {r['months_positive']:.0%} of {r['months']} months")
    return lines


def live_scores(scored) -> list[dict]:
    """Per (model, version, system, symbol): how many forecasts were scored and their rank IC, mean QLIKE and
    mean Brier, from ``ForecastScored`` events (a daemon's store, or a replay's)."""
    groups: dict[tuple, list] = {}
    for e in scored:
        groups.setdefault((e.model_id, e.model_version, e.system, e.symbol), []).append(e)
    out = []
    for (mid, ver, system, symbol), evs in sorted(groups.items()):
        exp = np.array([e.expected_return for e in evs])
        real = np.array([e.realised_return for e in evs])
        q = np.array([e.qlike for e in evs], dtype=np.float64)
        out.append({"model": mid, "version": ver, "system": system, "symbol": symbol, "scored": len(evs),
                    "rank_ic": fe.rank_ic(exp, real), "qlike": float(np.nanmean(q)) if np.isfinite(q).any() else None,
                    "brier": float(np.mean([e.brier for e in evs]))})
    return out


def against_frozen(ev: Evaluation, rows: Rows, frozen: forecast.Model) -> dict:
    """The frozen model's scores on the rows the walk-forward tested (data it never saw), beside the
    retrained folds': the IC change of retraining, and the volatility and regime scores' change."""
    p = ev.predictions
    t = p.column("time").to_numpy().astype("datetime64[ns]").astype(np.int64)
    sym = np.asarray(p.column("symbol").to_pylist(), dtype=object)
    index = {(s_, t_): i for i, (s_, t_) in enumerate(zip(rows.symbol.tolist(), rows.time.tolist()))}
    idx = np.array([index[(s_, t_)] for s_, t_ in zip(sym.tolist(), t.tolist())], dtype=np.int64)
    ret, vol, probs = frozen.predict(rows.x[idx])
    real_ret, real_vol, real_reg = rows.ret[idx], rows.vol[idx], rows.regime[idx]
    retrained = {"ret": p.column("ret_model").to_numpy(), "var": p.column("var_model").to_numpy(),
                 "p": np.column_stack([p.column(f"p_model_{r}").to_numpy() for r in forecast.REGIMES])}
    out = {}
    for name, (r, v, pr) in {"frozen": (ret, vol ** 2, probs),
                             "retrained": (retrained["ret"], retrained["var"], retrained["p"])}.items():
        _, mic, _ = fe.monthly_ic(t, r, real_ret)
        out[name] = {"ic": fe.ic(r, real_ret), "rank_ic": fe.rank_ic(r, real_ret), "icir": fe.icir(mic),
                     "qlike": fe.qlike(real_vol ** 2, v), "brier": fe.brier(pr, real_reg)}
    out["rows"] = int(len(idx))
    out["ic_change"] = out["retrained"]["ic"] - out["frozen"]["ic"]
    out["rank_ic_change"] = out["retrained"]["rank_ic"] - out["frozen"]["rank_ic"]
    return out


def fold_model(spec: ModelSpec, rows: Rows, dataset_id: str, fold: Fold) -> forecast.Model:
    """A model trained on one walk-forward fold's training rows only, covering exactly its test block (a
    composite's walk-forward comparison runs each block on the model that never saw it)."""
    train = (rows.time < fold.train_end) & (rows.time >= fold.train_start) & np.isfinite(rows.ret)
    idx = np.flatnonzero(train)[:: spec.train_stride]
    texts, scale = forecast.fit(rows.x[idx], rows.ret[idx], rows.vol[idx], rows.regime[idx],
                                spec.lightgbm.params(), spec.lightgbm.rounds)
    seen = int(rows.time[train].max() + spec.horizon * tf_ns(spec.timeframe))
    # Valid for the bars closing in the block: [test_start, test_end).
    return forecast.Model(spec.model, version_of(f"{dataset_id}@{fold.train_end}", spec), spec.timeframe,
                          spec.horizon, spec.inputs, seen, fold.test_end - tf_ns(spec.timeframe), scale, texts,
                          spec.crash_drawdown)
