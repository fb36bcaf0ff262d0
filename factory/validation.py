"""Validation: is a sweep's candidate an edge or the luck of many tries?

The validation pipeline (holdout, walk-forward, multi-asset), then the two selection statistics, each written back to the experiment:

1. **Disqualification** on the whole stored history: too few trades (in all, or per year), too deep a
   drawdown, too low a profit factor, a win rate outside a plausible band.
2. **Holdout**: the trial's own window (in-sample) against the config's ``test`` window; a losing
   out-of-sample run rejects it; the degradation is the drop in annualised return.
3. **Walk-forward**: the history split into equal segments; each fold runs ``train_segments`` of them and
   then the next one (rolling, or anchored at the start). Too few profitable test folds reject it.
4. **Multi-asset**: the same system on the related symbols (by default every other stored symbol of the
   venue and market) over their whole history; too few profitable ones make it marginal.
5. **Deflated Sharpe ratio** with the job's trial count and the spread of its trials' Sharpe ratios, and
   the **probability of backtest overfitting** of the job's selection on this symbol (CSCV over the
   stored block statistics); a low DSR or a high PBO makes it marginal.

Every run goes through the same kernel and ``load_market`` a sweep uses, so windows get their warm-up
from the bars before them and nothing sees past its window's end.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradebus.components.timeframes import tf_ns
from tradebus.configs.schema import SystemConfig, parse_config, parse_model, read_yaml
from tradebus.factory import overfit, sim
from tradebus.factory.experiments import Experiment, Tracker
from tradebus.factory.market import MemoryMarket
from tradebus.factory.sweep import DataIds, run_trial
from tradebus.engine.marketdata import MarketData
from tradebus.engine import metrics
from tradebus.engine.metrics import YEAR_NS, from_stats
from tradebus.engine.market import MissingDataError, base_key, load_market

class Disqualify(BaseModel):
    """Hard filters on the whole-history run (the defaults below)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_trades: int = Field(30, ge=0)
    min_trades_per_year: float = Field(6.0, ge=0)
    max_drawdown: float = Field(0.25, gt=0, le=1.0, description="deepest allowed drawdown, a fraction of equity")
    min_profit_factor: float = Field(1.1, ge=0)
    min_win_rate: float = Field(0.35, ge=0.0, le=1.0)
    max_win_rate: float = Field(0.85, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _band(self) -> "Disqualify":
        if self.min_win_rate > self.max_win_rate:
            raise ValueError(f"min_win_rate {self.min_win_rate} is above max_win_rate {self.max_win_rate}")
        return self


class WalkForward(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    folds: int = Field(4, ge=1, le=50)
    train_segments: int = Field(2, ge=1, le=50)
    anchored: bool = False
    min_pass_rate: float = Field(0.5, ge=0.0, le=1.0)


class ValidationRules(BaseModel):
    """What ``tradebus validate`` demands; every field has a default (YAML: ``--rules FILE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    disqualify: Disqualify = Disqualify()
    min_test_return: float = Field(0.0, description="holdout: below this out-of-sample return rejects")
    walk_forward: WalkForward = WalkForward()
    related_symbols: list[str] | None = Field(None, description="multi-asset set; default every other stored symbol")
    min_positive_rate: float = Field(0.6, ge=0.0, le=1.0)
    min_dsr: float = Field(0.95, ge=0.0, le=1.0)
    max_pbo: float = Field(0.5, ge=0.0, le=1.0)


def load_rules(path: Path | str | None) -> ValidationRules:
    if path is None:
        return ValidationRules()
    data = read_yaml(path)
    return parse_model(ValidationRules, {} if data is None else data, path, "validation rules")


def disqualifications(metrics: dict[str, float], rules: Disqualify) -> list[str]:
    """Why a run fails the hard filters (empty: it passes)."""
    out = []
    m = metrics
    if m["total_trades"] < rules.min_trades:
        out.append(f"{m['total_trades']} trades < {rules.min_trades}")
    if not m["trades_per_year"] >= rules.min_trades_per_year:
        out.append(f"{m['trades_per_year']:.1f} trades a year < {rules.min_trades_per_year:g}")
    if -m["max_drawdown"] > rules.max_drawdown:
        out.append(f"drawdown {-m['max_drawdown']:.1%} > {rules.max_drawdown:.0%}")
    if not m["profit_factor"] >= rules.min_profit_factor:
        out.append(f"profit factor {m['profit_factor']:.2f} < {rules.min_profit_factor:g}")
    if not rules.min_win_rate <= m["win_rate"] <= rules.max_win_rate:
        out.append(f"win rate {m['win_rate']:.1%} outside {rules.min_win_rate:.0%}..{rules.max_win_rate:.0%}")
    return out


def _iso(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns"))


def span_window(start: int, end: int) -> str:
    """A ``START:END`` window ``load_market`` reads (ns precision, end exclusive)."""
    return f"{_iso(start)}:{_iso(end)}"


def history(config: SystemConfig, mem: MemoryMarket) -> tuple[int, int]:
    """[first open, end) of the stored series a config reads."""
    key = base_key(config, mem)
    cov = mem.coverage(key)
    if cov.first is None:
        raise ValueError(f"{config.symbol} {config.timeframe}: no stored candles")
    return cov.first, cov.last + tf_ns(key.timeframe)


def fold_windows(start: int, end: int, wf: WalkForward) -> list[tuple[str, str]]:
    """(train, test) windows: ``folds + train_segments`` equal segments; fold k tests segment
    ``train_segments + k`` after training on the ones before it (all of them when anchored)."""
    n = wf.folds + wf.train_segments
    cut = [start + (end - start) * i // n for i in range(n + 1)]
    out = []
    for k in range(wf.folds):
        t = wf.train_segments + k
        train_from = cut[0] if wf.anchored else cut[t - wf.train_segments]
        out.append((span_window(train_from, cut[t]), span_window(cut[t], cut[t + 1])))
    return out


def brief(metrics: dict[str, float]) -> dict[str, float]:
    """The headline metrics a verdict's details keep."""
    keys = ("return_pct", "annualised_return", "sharpe", "max_drawdown", "total_trades", "win_rate", "profit_factor")
    return {k: metrics[k] for k in keys}


@dataclass
class SelectionStats:
    """What the DSR and PBO need from the job a candidate came from (computed once per job and group)."""

    trials: int
    sharpe_variance: float  # of the job's annualised Sharpe ratios
    pbo: dict[tuple[str, str, str], overfit.PboResult | None] = field(default_factory=dict)


def selection_stats(tracker: Tracker, job: str | None) -> SelectionStats:
    if job is None:
        return SelectionStats(1, 0.0)
    sharpes = np.array([s for s in tracker.job_sharpes(job) if s is not None and math.isfinite(s)])
    counted = tracker.job_trials(job)
    return SelectionStats(max(counted, len(sharpes), 1), float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0)


def _pbo(tracker: Tracker, sel: SelectionStats, exp: Experiment) -> overfit.PboResult | None:
    key = (exp["symbol"], exp["timeframe"], exp["train_period"])
    if key not in sel.pbo:
        blocks = tracker.block_stats(exp["job_id"], *key)
        shapes = {b.shape for b in blocks}
        ok = len(blocks) >= 2 and len(shapes) == 1 and next(iter(shapes))[0] % 2 == 0
        sel.pbo[key] = overfit.pbo_cscv(np.stack(blocks)) if ok else None
    return sel.pbo[key]


@dataclass
class Verdict:
    status: str  # passed / marginal / rejected
    reasons: list[str]
    details: dict[str, Any]
    test_return: float | None
    test_period: str | None


def validate(exp: Experiment, mem: MemoryMarket, rules: ValidationRules, sel: SelectionStats,
             tracker: Tracker) -> Verdict:
    """Run the whole pipeline on one experiment; nothing is written (``validate_and_record`` does)."""
    config = parse_config(json.loads(exp["config"]), f"experiment {exp['id']}")
    train = exp["train_period"] or "hygiene"
    details: dict[str, Any] = {}
    if exp["data_sha256"] and exp["data_sha256"] != DataIds(mem).of(config)[1]:
        details["data_changed"] = "the stored series this trial reads changed since the sweep ran it"
    first, end = history(config, mem)
    periods = YEAR_NS / tf_ns(config.timeframe)

    full = run_trial(config, span_window(first, end), mem)[0]
    details["full"] = brief(full)
    why = disqualifications(full, rules.disqualify)
    details["disqualified"] = why
    if why:
        return Verdict("rejected", [f"disqualified: {'; '.join(why)}"], details, None, None)

    test = "test" if train != "test" else "hygiene"
    # The train run once, with its curve: its metrics are the sweep's, its bar returns feed the DSR.
    k_train = sim.run_kernel(config, load_market(config, train, mem))
    m_train = from_stats(k_train.stats, config.initial_capital, tf_ns(config.timeframe))
    m_test = run_trial(config, test, mem)[0]
    details["holdout"] = {"train_window": train, "test_window": test, "train": brief(m_train), "test": brief(m_test),
                          "degradation": m_train["annualised_return"] - m_test["annualised_return"]}

    def verdict(status: str, reasons: list[str]) -> Verdict:
        return Verdict(status, reasons, details, m_test["return_pct"], test)

    if m_test["return_pct"] < rules.min_test_return:
        return verdict("rejected", [f"out of sample {m_test['return_pct']:+.2%} on {test} < {rules.min_test_return:+.0%}"])

    folds = []
    for tr, te in fold_windows(first, end, rules.walk_forward):
        folds.append({"train": tr, "test": te, "train_return": run_trial(config, tr, mem)[0]["return_pct"],
                      "test_return": run_trial(config, te, mem)[0]["return_pct"]})
    rate = sum(f["test_return"] > 0 for f in folds) / len(folds)
    details["walk_forward"] = {"folds": folds, "pass_rate": rate, "anchored": rules.walk_forward.anchored}
    if rate < rules.walk_forward.min_pass_rate:
        return verdict("rejected", [f"walk-forward: {rate:.0%} of test folds profitable < "
                                    f"{rules.walk_forward.min_pass_rate:.0%}"])

    marginal = []
    related = rules.related_symbols
    if related is None:
        related = sorted({k.symbol for k in mem.series if k.venue == config.venue and k.market == config.market})
    marginal += multi_asset(config, related, lambda other: run_trial(other, span_window(*history(other, mem)),
                                                                     mem)[0]["return_pct"], rules, details)

    sr, skew, kurt = overfit.moments(metrics.bar_returns(k_train.curve[:, 2], config.initial_capital))
    sr_var = sel.sharpe_variance / periods  # the job's spread, on this trial's per-bar scale
    dsr = overfit.deflated_sharpe(sr, int(m_train["bars"]), skew, kurt, sel.trials, sr_var)
    details["dsr"] = {"value": dsr, "sharpe_per_bar": sr, "benchmark_per_bar": overfit.expected_max_sharpe(sel.trials, sr_var),
                      "trials": sel.trials, "skew": skew, "kurtosis": kurt, "bars": int(m_train["bars"])}
    if not dsr >= rules.min_dsr:
        marginal.append(f"deflated Sharpe {dsr:.3f} < {rules.min_dsr:g} over {sel.trials} trials")

    pbo = _pbo(tracker, sel, exp) if exp["job_id"] else None
    if pbo is not None:
        details["pbo"] = {"value": pbo.pbo, "prob_oos_loss": pbo.prob_oos_loss, "splits": pbo.splits,
                          "trials": pbo.trials, "blocks": pbo.blocks}
        if pbo.pbo > rules.max_pbo:
            marginal.append(f"PBO {pbo.pbo:.2f} > {rules.max_pbo:g} for the job's selection on {config.symbol}")
    return verdict("marginal" if marginal else "passed", marginal)


def multi_asset(config: SystemConfig, related: list[str], return_of: Callable[[SystemConfig], float],
                rules: ValidationRules, details: dict[str, Any]) -> list[str]:
    """The system on each related symbol (``return_of`` runs it): the results go into ``details``; the reason
    it is marginal, if too few are profitable. A symbol that cannot be run is listed, not counted."""
    results: dict[str, float | None] = {}
    for symbol in (s for s in related if s != config.symbol):
        try:
            results[symbol] = float(return_of(config.model_copy(update={"symbol": symbol})))
        except (ValueError, MissingDataError) as exc:  # no candles there, a model that refuses the symbol
            results[symbol] = None
            details.setdefault("multi_asset_missing", []).append(f"{symbol}: {exc}")
    ran = [r for r in results.values() if r is not None]
    positive = sum(r > 0 for r in ran) / len(ran) if ran else math.nan
    details["multi_asset"] = {"results": results, "positive_rate": positive}
    if ran and positive < rules.min_positive_rate:
        return [f"multi-asset: profitable on {positive:.0%} of {len(ran)} related symbols "
                f"< {rules.min_positive_rate:.0%}"]
    return []


def validate_and_record(tracker: Tracker, exp: Experiment, mem: MemoryMarket, rules: ValidationRules,
                        sel: SelectionStats) -> Verdict:
    v = validate(exp, mem, rules, sel, tracker)
    v.details["reasons"] = v.reasons
    tracker.update_validation(exp["id"], v.status, v.details, test_return=v.test_return, test_period=v.test_period)
    return v


def select(tracker: Tracker, ids: list[str], job: str | None, top: int) -> list[Experiment]:
    """The experiments named by id (or unique prefix), else the ``top`` best by score (of a job)."""
    if not ids:
        return tracker.top(top, validated_only=False, job=job)
    out = []
    for i in ids:
        e = tracker.get(i)
        if e is None:
            raise KeyError(f"no experiment {i!r}")
        out.append(e)
    return out


def run_validation(tracker: Tracker, md: MarketData, exps: list[Experiment], rules: ValidationRules,
                   progress: Callable[[int, int], None] | None = None, selection: SelectionStats | None = None
                   ) -> list[tuple[Experiment, Verdict]]:
    """Validate each experiment and write the verdict back; market data is read once for all of them.
    ``selection``: the deflated Sharpe's trials when they are more than one job's (a research run's)."""
    out: list[tuple[Experiment, Verdict]] = []
    by_market: dict[tuple[str, str], list[Experiment]] = {}
    for e in exps:
        config = json.loads(e["config"])
        by_market.setdefault((config["venue"], config["market"]), []).append(e)
    sel_by_job: dict[str | None, SelectionStats] = {}
    for (venue, market), group in by_market.items():
        stored = {c.key.symbol for c in md.series() if c.key.venue == venue and c.key.market == market}
        wanted = {e["symbol"] for e in group} | set(rules.related_symbols if rules.related_symbols is not None else stored)
        mem = MemoryMarket.load(md, venue, market, sorted(wanted))
        for e in group:
            if e["job_id"] not in sel_by_job:
                sel_by_job[e["job_id"]] = selection or selection_stats(tracker, e["job_id"])
            out.append((e, validate_and_record(tracker, e, mem, rules, sel_by_job[e["job_id"]])))
            if progress is not None:
                progress(len(out), len(exps))
    return out

