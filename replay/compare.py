"""A composite system against the baselines its owner names, out of sample, symbol by symbol.

For each symbol (the forecaster's, or those given) three things trade the same test window, the bars
after the forecaster's training data (so the forecasts are out of sample) up to its expiry or the data's
end:

- the composite (forecaster + policy + pool), replayed with the live components;
- the best single pool member, chosen by Sharpe on the config's ``hygiene`` window (which must end before
  the test window: the choice sees no test bar);
- the equal-weight blend of the pool: each member on 1/N of the capital, equity summed.

Every run is an event-driven replay (the forecaster is not in the sweep kernel). The composite's
deflated Sharpe counts every trial that built it: each version of its forecaster in the registry and each
composite (policy, pool) this command has compared with it before, logged in the model's folder; the
Sharpe variance is that of every candidate's on the test window. PBO (CSCV, 16 blocks of the test window)
asks whether picking the best of {composite, each member, the blend} in half the blocks holds in the other
half.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tradebus import settings
from tradebus.components.timeframes import tf_ns
from tradebus.configs.schema import SystemConfig, parse_config
from tradebus.engine import models
from tradebus.engine.market import day, resolve_window, stored_key
from tradebus.engine.marketdata import MarketData
from tradebus.engine.metrics import bar_returns, summarize, sum_accounts
from tradebus.engine.wiring import ModelRefused, forecast_model
from tradebus.factory import overfit
from tradebus.factory.validation import (ValidationRules, Verdict, brief, disqualifications, multi_asset,
                                        span_window)
from tradebus.replay.backtest import run_replay

BLOCKS = 16
MIN_TRAIN_BARS = 500  # a walk-forward fold chooses its best single member on at least this many bars


class TooLittleHistory(ModelRefused):
    """A (fold, symbol) whose history before the fold is too short to choose on: skipped, and said so."""


@dataclass
class Leg:
    name: str
    metrics: dict
    times: np.ndarray
    equity: np.ndarray  # per unit of capital
    position: np.ndarray  # signed quantity held at each close


@dataclass
class SymbolResult:
    symbol: str
    window: str
    composite: Leg
    best_single: Leg
    chosen_by: dict[str, float]  # member -> its train-window Sharpe
    equal_weight: Leg
    members: list[Leg]
    dsr: float
    pbo: float | None


def _window(start: int, end: int) -> str:
    return f"{np.datetime64(start, 'ns')}:{np.datetime64(end, 'ns')}"


def _leg(name: str, result, capital: float) -> Leg:
    return Leg(name, result.metrics, result.times, result.curve[:, 2] / capital, result.curve[:, 3])


def _blend(legs: list[Leg], bar_ns: int) -> Leg:
    n = len(legs)
    times, equity, exposed = sum_accounts([(leg.times, leg.equity / n, leg.position) for leg in legs],
                                          [1.0 / n] * n)
    m = summarize(times, equity, exposed, 1.0, bar_ns, [], 0.0, 0.0)
    m["total_trades"] = sum(int(leg.metrics.get("total_trades", 0)) for leg in legs)
    return Leg("equal_weight", m, times, equity, exposed)


def _block_stats(legs: list[Leg]) -> np.ndarray:
    """(candidates, blocks, 3): bar count, sum and sum of squares of each candidate's bar returns per block."""
    rets = [bar_returns(leg.equity, 1.0) for leg in legs]
    n = min(len(r) for r in rets)
    edges = np.linspace(0, n, BLOCKS + 1).astype(int)
    out = np.zeros((len(legs), BLOCKS, 3))
    for i, r in enumerate(rets):
        for b in range(BLOCKS):
            x = r[edges[b]:edges[b + 1]]
            out[i, b] = (len(x), x.sum(), (x * x).sum())
    return out


def trials_log(home: Path, model_id: str) -> Path:
    return models.models_dir(home) / model_id / "compare_trials.jsonl"


def count_trials(home: Path, config: SystemConfig, record: bool = True) -> int:
    """Trials that built this composite: its forecaster's versions, times the composites compared with it
    (this one included, logged once; with ``record`` False counted but not logged)."""
    assert config.forecaster is not None and config.policy is not None
    key = hashlib.sha256(json.dumps({"policy": config.policy.model_dump(mode="json"),
                                     "pool": {k: v.model_dump(mode="json") for k, v in (config.pool or {}).items()}},
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = trials_log(home, config.forecaster.id)
    seen = {json.loads(line)["composite"] for line in path.read_text().splitlines() if line} if path.exists() else set()
    if key not in seen and record:
        models.append_line(path, {"composite": key, "system": config.system})
    seen.add(key)
    return max(1, len(models.versions(home, config.forecaster.id))) * len(seen)


def compare_symbol(config: SystemConfig, symbol: str, md: MarketData, n_trials: int,
                   train_until: int | None = None, test_from: int | None = None,
                   test_until: int | None = None) -> SymbolResult:
    """The composite, the best single member and the equal-weight blend on one symbol's test window: the
    bars after its forecaster's data (from ``test_from``, an open time, if later) up to the model's expiry,
    the data's end or ``test_until`` (a close time), whichever is first. The best single member is chosen on
    the hygiene window, or with ``train_until`` on every bar opening before it."""
    model = forecast_model(config)
    bar_ns = tf_ns(config.timeframe)
    key = stored_key(md, config.venue, config.market, symbol, config.timeframe)
    cov = md.coverage(key)
    if cov.last is None:
        raise ModelRefused(f"{symbol}: no {config.timeframe} candles stored")
    start = max(-(-model.trained_until // bar_ns) * bar_ns, test_from or 0)
    end = min(model.valid_until, cov.last + tf_ns(key.timeframe), test_until or math.inf) // bar_ns * bar_ns
    if end - start < 50 * bar_ns:
        raise ModelRefused(f"{symbol}: only {(end - start) // bar_ns} bars between the model's data "
                           f"({day(model.trained_until)}) and {day(end)}: too few to compare (compare a version "
                           "trained on earlier data, or walk forward with --folds N)")
    if train_until is None:
        train_start, train_end = resolve_window(config.windows["hygiene"], cov.first, cov.last)
    else:
        train_start, train_end = int(cov.first), train_until
        if train_end - train_start < MIN_TRAIN_BARS * bar_ns:
            raise TooLittleHistory(f"{symbol}: fewer than {MIN_TRAIN_BARS} bars stored before {day(train_end)} to "
                                   "choose its best single member on")
    if train_end > start:
        raise ModelRefused(f"{config.system}: the hygiene window (choosing the best single member) ends "
                           f"{day(train_end)}, after the test window starts ({day(start)})")
    test, train = _window(start, end), _window(train_start, train_end)
    comp_cfg = parse_config({**config.model_dump(mode="json"), "system": f"{config.system}-{symbol}",
                             "symbol": symbol})
    composite = _leg("composite", run_replay(comp_cfg, test, md), config.initial_capital)
    members, chosen = [], {}
    for name in config.pool or {}:
        mc = config.member(name, symbol)
        chosen[name] = float(run_replay(mc, train, md).metrics.get("sharpe") or -math.inf)
        members.append(_leg(name, run_replay(mc, test, md), config.initial_capital))
    best_name = max(chosen, key=lambda k: chosen[k])
    best = next(leg for leg in members if leg.name == best_name)
    blend = _blend(members, bar_ns)
    legs = [composite, *members, blend]
    rets = bar_returns(composite.equity, 1.0)
    sr, skew, kurt = overfit.moments(rets)
    variances = [overfit.moments(bar_returns(leg.equity, 1.0))[0] for leg in legs]
    sr_var = float(np.nanvar(variances, ddof=1)) if len(variances) > 1 else 0.0
    dsr = overfit.deflated_sharpe(sr, len(rets), skew, kurt, n_trials, sr_var)
    pbo = overfit.pbo_cscv(_block_stats(legs)).pbo if min(len(leg.equity) for leg in legs) > 4 * BLOCKS else None
    return SymbolResult(symbol, f"{day(start)} .. {day(end)}", composite,
                        Leg(f"best_single ({best_name})", best.metrics, best.times, best.equity, best.position), chosen,
                        blend, members, dsr, pbo)


def fold_configs(config: SystemConfig, md: MarketData, home: Path, folds: int
                 ) -> list[tuple[int, int, SystemConfig]]:
    """Walk-forward: for each fold of the forecaster's own walk-forward (its model file's settings, ``folds``
    blocks), a version trained on the rows before the block only, stored in the registry (each is a trial),
    and the composite pinned to it. Returns (train end: the bars the fold's best single member is chosen
    on open before it, the open time of the block's first bar, the pinned config)."""
    from tradebus.configs.forecast import ModelSpec
    from tradebus.factory import datasets, forecasting

    base = forecast_model(config)
    manifest = models.get(home, base.model_id, base.version).manifest
    spec = ModelSpec.model_validate(manifest["spec"])
    spec = spec.model_copy(update={"walk_forward": spec.walk_forward.model_copy(update={"folds": folds})})
    ds = datasets.build_market(spec, md, home)
    rows = forecasting.Rows.of(ds.table, spec.inputs)
    step = tf_ns(spec.timeframe)
    out = []
    for fold in forecasting.make_folds(rows.time, spec):
        model = forecasting.fold_model(spec, rows, ds.id, fold)
        models.save(home, model, forecasting.version_manifest(
            spec, model, ds.id, walk_forward=None,
            fold={"of": base.version, "index": fold.index + 1, "folds": folds, "test_start": day(fold.test_start),
                  "test_end": day(fold.test_end)}))
        pinned = parse_config({**config.model_dump(mode="json"),
                               "forecaster": {"id": model.model_id, "version": model.version}})
        out.append((fold.train_end - step, fold.test_start - step, pinned))
    return out


def validate_composite(config: SystemConfig, md: MarketData, rules: ValidationRules, n_trials: int,
                       test_from: int, test_until: int) -> tuple[Verdict, Leg]:
    """The lifecycle's validation of a composite, on its test window's bars (``test_from``, an open time, to
    ``test_until``, a close time) after its forecaster's data. The hard filters and the holdout return
    reject; not beating its best single member or the equal-weight blend (the forecaster adds nothing), a
    deflated Sharpe below ``min_dsr`` over every trial that built it, PBO above ``max_pbo`` or too few
    related symbols profitable make it marginal. No walk-forward here: that retrains the forecaster per fold
    (``tradebus forecast compare --folds N``)."""
    r = compare_symbol(config, config.symbol, md, n_trials, test_from=test_from, test_until=test_until)
    m = r.composite.metrics
    sharpe = lambda leg: float(leg.metrics.get("sharpe") or 0.0)  # noqa: E731
    details: dict = {"test": brief(m), "test_window": r.window, "blend": brief(r.equal_weight.metrics),
                     "best_single": {"member": r.best_single.name, **brief(r.best_single.metrics)},
                     "walk_forward": "not run: tradebus forecast compare --folds N retrains the forecaster per fold"}

    def verdict(status: str, reasons: list[str]) -> tuple[Verdict, Leg]:
        return Verdict(status, reasons, details, m["return_pct"], r.window), r.composite

    why = disqualifications(m, rules.disqualify)
    if why:
        return verdict("rejected", [f"disqualified: {'; '.join(why)}"])
    if m["return_pct"] < rules.min_test_return:
        return verdict("rejected", [f"out of sample {m['return_pct']:+.2%} on {r.window} "
                                    f"< {rules.min_test_return:+.0%}"])
    marginal = [f"Sharpe {sharpe(r.composite):.2f} not above {leg.name}'s {sharpe(leg):.2f}: the forecaster adds "
                "nothing over it" for leg in (r.best_single, r.equal_weight) if not sharpe(r.composite) > sharpe(leg)]
    window = span_window(int(r.composite.times[0]) - tf_ns(config.timeframe), int(r.composite.times[-1]))
    related = rules.related_symbols if rules.related_symbols is not None else _model_symbols(config)
    marginal += multi_asset(config, related, lambda other: run_replay(other, window, md).metrics["return_pct"],
                            rules, details)
    details["dsr"] = {"value": r.dsr, "trials": n_trials}
    if not r.dsr >= rules.min_dsr:
        marginal.append(f"deflated Sharpe {r.dsr:.3f} < {rules.min_dsr:g} over {n_trials} trials")
    if r.pbo is not None:
        details["pbo"] = {"value": r.pbo}
        if r.pbo > rules.max_pbo:
            marginal.append(f"PBO {r.pbo:.2f} > {rules.max_pbo:g} choosing among the composite, its members and "
                            "the blend")
    return verdict("marginal" if marginal else "passed", marginal)


def _model_symbols(config: SystemConfig) -> list[str]:
    """The symbols the composite's forecaster was trained on (its related set)."""
    model = forecast_model(config)
    return list(models.get(settings.data_home(), model.model_id, model.version).manifest.get("spec", {})
                .get("symbols") or [])
