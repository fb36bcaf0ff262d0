"""The lifecycle's evaluation: every system's evidence read, its rule applied, the moves it makes.

``evaluate`` is the pure core of ``tradebus lifecycle run``: given the store's promotions, the market data,
the experiments table and each running system's own store, it returns the ``Promotion`` events to append
and the daemons to start or stop. It reads no clock: a second run on the same store and data finds every
system where the first left it and moves nothing, and re-evaluating the same store gives the same moves
with the same ids (derived from the system's last move and the rule).

A system is taken as far as its evidence allows in one run: a new candidate is checked (hygiene), run on
its hygiene window, validated (holdout, walk-forward, multi-asset, deflated Sharpe with every trial of its
job counted, PBO; a forecast-driven composite, which the kernel cannot run, on the event-driven replay and
against its own pool members and their blend), compared with what trades already, and put on demo in one
pass. From demo on, only a
person moves it up (``tradebus lifecycle approve``); the rules only move it down.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import norm
from tradebus import settings
from tradebus.bus import events as ev
from tradebus.components import lifecycle as lc
from tradebus.components.timeframes import tf_ns
from tradebus.configs.lifecycle import LifecycleRules
from tradebus.configs.schema import ConfigError, SystemConfig, parse_config
from tradebus.engine.market import MissingDataError, load_market
from tradebus.engine.marketdata import MarketData
from tradebus.engine.wiring import model_refuses
from tradebus.factory import overfit, sim
from tradebus.factory.experiments import Experiment, Tracker
from tradebus.factory.market import MemoryMarket
from tradebus.replay.backtest import ReplayResult, run_replay
from tradebus.replay.compare import count_trials, validate_composite
from tradebus.factory.validation import (
    SelectionStats,
    selection_stats,
    span_window,
    validate,
    validate_and_record,
)

ERROR = "error"  # a row's rule when its system could not be evaluated (the run says so and exits 1)
CONFIG_KEY = "config_json"  # an admission's evidence: the config it admitted, whole (the store is enough)
EXPERIMENT_KEY = "experiment"


def admission_evidence(config: SystemConfig, source: str, experiment: str = "") -> dict[str, ev.Scalar]:
    return {"config": source, "config_hash": config.config_hash()[:16], EXPERIMENT_KEY: experiment,
            CONFIG_KEY: json.dumps(config.model_dump(mode="json"), sort_keys=True)}


def admitted_config(promotions: Iterable[ev.Promotion], system: str) -> tuple[SystemConfig, str]:
    """The config (and experiment id) of the system's latest admission."""
    found = None
    for p in promotions:
        if p.system == system and p.to_status == "candidate" and CONFIG_KEY in p.evidence:
            found = p
    if found is None:
        raise ConfigError(f"{system}: no admission with its config in the store (tradebus lifecycle add)")
    return (parse_config(json.loads(str(found.evidence[CONFIG_KEY])), f"{system}'s admission"),
            str(found.evidence.get(EXPERIMENT_KEY) or ""))


def move_id(system: str, last_move: str, to: str, rule: str) -> str:
    """A move's event id: the same system, from the same last move, by the same rule, is the same event."""
    return "lc-" + hashlib.sha256(f"{system}|{last_move}|{to}|{rule}".encode()).hexdigest()[:21]  # + a leg: <= 36


# --- evidence ---------------------------------------------------------------------------------------------


def daily_returns(times: np.ndarray, equity: np.ndarray) -> dict[int, float]:
    """UTC day -> that day's return (last equity of the day against the last of the day before)."""
    days = np.asarray(times, dtype=np.int64) // lc.DAY_NS
    last = np.flatnonzero(np.r_[days[1:] != days[:-1], True])
    e = np.asarray(equity, dtype=np.float64)[last]
    return {int(d): float(r) for d, r in zip(days[last][1:], e[1:] / e[:-1] - 1.0)}


def correlation(a: dict[int, float], b: dict[int, float]) -> float:
    common = sorted(set(a) & set(b))
    if len(common) < 10:
        return math.nan
    x, y = np.array([a[d] for d in common]), np.array([b[d] for d in common])
    if not (x.std() > 0 and y.std() > 0):
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def against_shadow(track: lc.Track, shadow: "Run | None", alpha: float) -> dict[str, ev.Scalar]:
    """Demo against a shadow replay of the same bars with the same config: per-bar returns paired on the
    bars both have; is the demo significantly worse (one-sided t on the differences, p < alpha)? With the
    demo's probabilistic Sharpe (against 0) and the minimum track record length its Sharpe would need."""
    if shadow is None:
        return {}
    common, i, j = np.intersect1d(track.times, shadow.times, return_indices=True)
    if len(common) < 3:
        return {"paired_bars": len(common)}
    d_eq, s_eq = track.equity[i], shadow.curve[j, 2]
    rd, rs = lc.bar_returns(d_eq), lc.bar_returns(s_eq)
    diff = rd - rs
    sd = diff.std(ddof=1)
    p = float(norm.cdf(diff.mean() / (sd / math.sqrt(len(diff))))) if sd > 0 else (0.0 if diff.mean() < 0 else 1.0)
    sr, skew, kurt = overfit.moments(rd)
    per_year = lc.YEAR_DAYS * lc.DAY_NS / float(np.median(np.diff(common)))
    mintrl = overfit.min_track_record(sr, 0.0, skew, kurt, alpha)
    return {"paired_bars": len(common), "demo_return": lc._r(d_eq[-1] / d_eq[0] - 1),
            "shadow_return": lc._r(s_eq[-1] / s_eq[0] - 1), "p_worse": lc._r(p), "worse": bool(p < alpha),
            "divergence": lc._r(float(np.max(np.abs(d_eq / s_eq - 1.0)))),
            "psr": lc._r(overfit.probabilistic_sharpe(sr, 0.0, len(rd), skew, kurt)),
            "min_track_record_days": lc._r(mintrl / per_year * lc.YEAR_DAYS, 1) if math.isfinite(mintrl) else None}


Run = sim.KernelRun | ReplayResult  # a system over a window: times, curve, metrics


@dataclass
class Sources:
    """Where the evidence is: market data, the experiments table, each running system's store."""

    md: MarketData | None  # None: no market data (no shadow replay can run)
    tracker: Tracker | None
    store_of: Callable[[str, str], Path]  # (system, mode) -> its daemon's store
    read_store: Callable[[Path], list[ev.Event]]
    _mem: dict[tuple[str, str], MemoryMarket] = field(default_factory=dict)
    _selection: dict[str | None, SelectionStats] = field(default_factory=dict)

    def mem(self, config: SystemConfig) -> MemoryMarket:
        key = (config.venue, config.market)
        if key not in self._mem:
            symbols = sorted({c.key.symbol for c in self.md.series() if (c.key.venue, c.key.market) == key})
            self._mem[key] = MemoryMarket.load(self.md, config.venue, config.market, symbols)
        return self._mem[key]

    def run(self, config: SystemConfig, window: str) -> Run:
        """The system over a window: the sweep kernel, or for what it cannot run (a composite's pool, a
        plain-Python step) the event-driven replay; either has the bar closes, the curve and the metrics."""
        mem = self.mem(config)

        def go() -> Run:
            m = load_market(config, window, mem)
            return sim.run_kernel(config, m) if config.strategy_def().compiled else run_replay(config, window,
                                                                                                   self.md, market=m)
        return mem.remember(("run", config.config_hash(), window), go)


def _runnable(config: SystemConfig, src: Sources) -> str:
    """Why the system cannot be evaluated ('' if it can): a step the validation can run, its windows' candles,
    and a composite's forecaster out of sample on both windows."""
    if config.pool is None and not config.strategy_def().compiled:
        return (f"strategy {config.strategy.id!r} has a plain-Python step: its validation runs the sweep kernel, "
                "which needs a step numba compiles (compiled = True)")
    try:
        for window in ("hygiene", "test"):
            m = load_market(config, window, src.mem(config))
            why = model_refuses(config, m.start, m.end) if config.pool is not None else ""
            if why:
                return f"{window} window: {why}"
    except (MissingDataError, ValueError) as exc:  # ModelRefused (no such model, wrong timeframe) is a ValueError
        return f"{exc}"
    return ""


def _experiment(config: SystemConfig, exp_id: str, src: Sources) -> Experiment:
    if exp_id and src.tracker is not None:
        e = src.tracker.get(exp_id)
        if e is not None:
            return e
    # A hand-written config is its own one trial: the DSR then counts one.
    return Experiment({"id": config.system, "config": json.dumps(config.model_dump(mode="json")), "job_id": None,
                       "train_period": "hygiene", "data_sha256": None, "symbol": config.symbol,
                       "timeframe": config.timeframe})


def _test_decision(system: str, config: SystemConfig, exp_id: str, trading: dict[str, SystemConfig], src: Sources,
                   rules: LifecycleRules) -> lc.Decision:
    mem = src.mem(config)
    if config.pool is not None:  # a composite: against its members and their blend, past its forecaster's data
        m = load_market(config, "test", mem)
        verdict, leg = validate_composite(config, src.md, rules.validation,
                                          count_trials(settings.data_home(), config, record=False), m.start, m.end)
        times, equity, test_sharpe = leg.times, leg.equity, float(leg.metrics["sharpe"])
    else:
        exp = _experiment(config, exp_id, src)
        job = exp["job_id"]
        if job not in src._selection:
            src._selection[job] = (selection_stats(src.tracker, job) if src.tracker is not None and job
                                   else SelectionStats(1, 0.0))
        sel = src._selection[job]
        if job and src.tracker is not None:
            verdict = validate_and_record(src.tracker, exp, mem, rules.validation, sel)
        else:
            verdict = validate(exp, mem, rules.validation, sel, src.tracker)  # type: ignore[arg-type]
        ours = src.run(config, "test")
        times, equity, test_sharpe = ours.times, ours.curve[:, 2], float(ours.metrics["sharpe"])
    mine = daily_returns(times, equity)
    corr = {}
    for other, oc in trading.items():
        if other != system:
            k = src.run(oc, _span(times, config))
            corr[other] = correlation(mine, daily_returns(k.times, k.curve[:, 2]))
    corr = {k: v for k, v in corr.items() if math.isfinite(v)}
    d = lc.test_gate(verdict.status, verdict.reasons, test_sharpe, corr, rules.test)
    dsr = verdict.details.get("dsr", {}).get("value")
    pbo = verdict.details.get("pbo", {}).get("value")
    return lc.Decision(d.to, d.rule, {**d.evidence, "dsr": lc._r(dsr) if dsr is not None else None,
                                      "pbo": lc._r(pbo) if pbo is not None else None,
                                      "trials": verdict.details.get("dsr", {}).get("trials")}, d.why)


def _span(times: np.ndarray, config: SystemConfig) -> str:
    """A ``START:END`` window over these bar closes (their opens to the last close)."""
    return span_window(int(times[0]) - tf_ns(config.timeframe), int(times[-1]))


def running_record(system: str, config: SystemConfig, stage: str, src: Sources, rules: LifecycleRules
                   ) -> tuple[lc.Track, dict[str, ev.Scalar]]:
    """The record of a system's daemon in this stage, and how it compares with its shadow replay."""
    mode = stage_mode(stage, rules)
    path = src.store_of(system, mode)
    events = src.read_store(path) if path.exists() else []
    track = lc.track_from(events, system, config.symbol, config.timeframe, config.initial_capital, (mode,))
    shadow = None
    if len(track.times) >= 3 and src.md is not None:
        try:
            shadow = src.run(config, _span(track.times, config))
        except (MissingDataError, ValueError):
            shadow = None  # the demo's bars are not in market data yet (tradebus refresh fetches them)
    return track, against_shadow(track, shadow, rules.demo.alpha)


def stage_mode(stage: str, rules: LifecycleRules) -> str:
    """The daemon mode a trading stage runs in."""
    return rules.demo.mode if stage == "demo" else "live"


def decide(system: str, stage: str, config: SystemConfig, exp_id: str, trading: dict[str, SystemConfig],
           src: Sources, rules: LifecycleRules) -> lc.Decision:
    """The one rule that applies to a system at its stage, on its evidence."""
    if stage == "candidate":
        return lc.admission_gate(_runnable(config, src))
    if stage == "hygiene":
        return lc.hygiene_gate(src.run(config, "hygiene").metrics, rules.hygiene)
    if stage == "test":
        return _test_decision(system, config, exp_id, trading, src, rules)
    if stage in lc.TRADING:
        track, shadow = running_record(system, config, stage, src, rules)
        k = src.run(config, "test")
        r = lc.bar_returns(k.curve[:, 2])
        edge = (float(r.mean()), float(r.std(ddof=1))) if len(r) > 1 else (0.0, 0.0)
        d = lc.demotion(stage, track, shadow, edge, rules.demote)
        if d.to or stage != "demo":
            return d
        e = lc.demo_eligible(track, shadow, rules.demo)
        return lc.Decision("", e.rule, e.evidence, e.why)  # approval moves it, not this rule
    return lc.Decision("", "none", {}, "")  # out of the lifecycle (or waiting for a person): no rule moves it


@dataclass
class Row:
    system: str
    before: str
    after: str
    rule: str
    why: str


@dataclass
class Outcome:
    promotions: list[ev.Promotion]
    rows: list[Row]
    folded: lc.Folded
    configs: dict[str, SystemConfig]


def evaluate(promotions: list[ev.Promotion], src: Sources, rules: LifecycleRules, now: int, run: str) -> Outcome:
    """One pass over every system; nothing is written here."""
    folded = lc.fold(promotions)
    configs: dict[str, SystemConfig] = {}
    exp_ids: dict[str, str] = {}
    rows: list[Row] = []
    for system in sorted(folded.systems):
        try:
            configs[system], exp_ids[system] = admitted_config(promotions, system)
        except ConfigError as exc:
            rows.append(Row(system, folded.systems[system].status, folded.systems[system].status, "config", str(exc)))
    new: list[ev.Promotion] = []
    for system in sorted(configs):
        before = folded.systems[system].status
        whys: list[str] = []
        for _ in range(len(lc.PATH) + 1):  # as far as the evidence goes in one pass
            st = folded.systems[system]
            trading = {s: configs[s] for s, v in folded.systems.items() if v.status in lc.GATED and s in configs}
            try:
                d = decide(system, st.status, configs[system], exp_ids[system], trading, src, rules)
            except Exception as exc:  # one system's failure is its row; the others are still evaluated
                whys.append(f"{ERROR}: {type(exc).__name__}: {exc}")
                break
            if d.why:
                whys.append(d.why if not d.to else f"{st.status} -> {d.to}: {d.why}")
            if not d.to:
                break
            prev = _last_move_id(promotions + new, system)
            stamp = {"id": move_id(system, prev, d.to, d.rule), "ts_event": now, "ts_init": now, "run": run}
            evidence = {k: v for k, v in {**d.evidence, "why": d.why}.items()}
            p = lc.move(folded, stamp, system, d.to, d.rule, evidence)
            new.append(p)
            folded = lc.fold(promotions + new)
        failed = any(w.startswith(ERROR) for w in whys)
        rows.append(Row(system, before, folded.systems[system].status,
                        ERROR if failed else folded.systems[system].rule if folded.systems[system].status != before
                        else "-", " · ".join(whys)))
    return Outcome(new, rows, folded, configs)


def _last_move_id(promotions: list[ev.Promotion], system: str) -> str:
    ids = [p.id for p in promotions if p.system == system]
    return ids[-1] if ids else ""
