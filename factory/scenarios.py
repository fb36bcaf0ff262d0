"""Multi-test scenarios: what a finished sweep's best trials are worth once combined or shaken.

A scenario file names a job and lists scenarios, each built from the job's candidates (its best trials
by score) and run over the train window and the out-of-sample test window::

    job: trend_4h
    candidates: 24            # the job's best trials by score; re-ranked on the train window
    rank_by: sharpe
    scenarios:
      - {name: best, kind: single}
      - {name: top5, kind: ensemble, top: 5}
      - {name: adx_switch, kind: regime, regime: {indicator: adx, period: 14, threshold: 25}}
      - {name: best_sensitivity, kind: sensitivity}

- **single**: the candidate of a given rank, alone.
- **ensemble**: equal weight of the top N: each member trades 1/N of the capital in its own account
  (members on one timeframe), and the ensemble's equity is their sum.
- **regime**: a ``regime_switch`` system (``components.strategies.adaptive``) over the best candidate's strategy
  and series; for each side of the regime threshold it takes, from every parameter set the job scored
  on that series, the one that did best on the train window while trading only in that regime (none
  that made money: stay flat there).
- **sensitivity**: the best candidate with one parameter at a time set to each value the job tried
  for it (or to given values), the others held: a robust edge is a plateau, not a peak.

Every run goes through the kernel (equal to replay by test); selection looks at the train window only,
so the test column is out of sample for everything chosen here (though not for the sweep's own choice
of candidates if the job's window overlapped the test one: the report says when it does).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

import numpy as np
from pydantic import Field, model_validator

from tradebus.components.strict import StrictModel
from tradebus.components.strategies.adaptive import Regime
from tradebus.components.timeframes import tf_ns
from tradebus.configs.schema import SystemConfig, parse_config, parse_model, read_yaml
from tradebus.configs.yamlfile import dumps as dump_yaml
from tradebus.factory import scoring, sim
from tradebus.factory.experiments import Experiment, Tracker
from tradebus.factory.market import MemoryMarket
from tradebus.factory.sweep import run_trial
from tradebus.engine.marketdata import MarketData
from tradebus.engine import report
from tradebus.engine.artifacts import atomic_write, write_json
from tradebus.engine.metrics import sum_accounts, summarize
from tradebus.engine.market import load_market

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class _Scenario(StrictModel):
    name: Name
    enabled: bool = True


class Single(_Scenario):
    kind: Literal["single"]
    rank: int = Field(1, ge=1, description="which candidate, by the train-window ranking")


class Ensemble(_Scenario):
    kind: Literal["ensemble"]
    top: int = Field(5, ge=2, le=50)


class Adaptive(_Scenario):
    kind: Literal["regime"]
    regime: Regime
    flatten_on_switch: bool = False
    min_trades: int = Field(10, ge=0, description="a side's pick must trade this often on the train window")


class Sensitivity(_Scenario):
    kind: Literal["sensitivity"]
    rank: int = Field(1, ge=1)
    params: list[str] | None = Field(None, description="which parameters to vary; default every numeric one")
    values: dict[str, list[float]] = Field({}, description="values to try per parameter; default the job's")


Scenario = Annotated[Union[Single, Ensemble, Adaptive, Sensitivity], Field(discriminator="kind")]


class ScenarioFile(StrictModel):
    job: str
    strategy: str | None = None
    symbol: str | None = None
    timeframe: str | None = None
    candidates: int = Field(20, ge=1, le=1000)
    rank_by: Literal[scoring.SCORABLE] = "sharpe"  # type: ignore[valid-type]
    train: str | None = Field(None, description="window name or START:END; default each candidate's sweep window")
    test: str = "test"
    scenarios: list[Scenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "ScenarioFile":
        names = [s.name for s in self.scenarios]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"scenario names must be unique; repeated: {', '.join(dup)}")
        return self


def load_scenarios(path: Path | str) -> ScenarioFile:
    return parse_model(ScenarioFile, read_yaml(path), path, "a scenario file")


# --- runs ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One system (or an ensemble's sum) over one window, with the replay's full metrics."""

    times: np.ndarray
    equity: np.ndarray
    metrics: dict[str, Any]
    initial: float


def run_full(config: SystemConfig, window: str, mem: MemoryMarket) -> Run:
    """A run with its curve; the same config over the same window (a candidate that is also a scenario's
    base) runs once."""
    def run() -> Run:
        k = sim.run_kernel(config, load_market(config, window, mem))
        return Run(k.times, k.curve[:, 2], k.metrics, config.initial_capital)

    return mem.remember(("full", config.config_hash(), window), run)


def combine(members: list[sim.KernelRun], initials: list[float], bar_ns: int) -> Run:
    """Sub-accounts summed on the union of their bar times; each holds its last equity between its bars,
    and its initial capital before its first."""
    times, equity, exposed = sum_accounts([(m.times, m.curve[:, 2], m.curve[:, 3]) for m in members], initials)
    trades = sorted((t for m in members for t in m.trades), key=lambda t: (t.exit_time, t.entry_time))
    fees = sum(float(m.stats["fees"]) for m in members)
    funding = sum(float(m.stats["funding"]) for m in members)
    total = float(sum(initials))
    metrics = summarize(times, equity, exposed, total, bar_ns, trades, fees, funding)
    return Run(times, equity, metrics, total)


@dataclass
class Candidate:
    exp: Experiment
    config: SystemConfig
    train_window: str
    train: dict[str, float]  # scoring metrics (the sweep's), for ranking
    score: float


@dataclass
class Result:
    name: str
    kind: str
    description: str
    train: Run | None = None
    test: Run | None = None
    configs: list[dict[str, Any]] = field(default_factory=list)  # what to replay, one per account
    members: list[str] = field(default_factory=list)  # experiment ids
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


def _rank_value(metrics: dict[str, float], by: str) -> float:
    v = metrics[by]
    return v if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def _experiments(spec: ScenarioFile, tracker: Tracker) -> list[Experiment]:
    exps = tracker.top(spec.candidates, validated_only=False, job=spec.job, strategy=spec.strategy,
                       symbol=spec.symbol, timeframe=spec.timeframe)
    if not exps:
        raise LookupError(f"job {spec.job!r} has no scored experiments"
                          + (" matching the file's strategy/symbol/timeframe" if spec.strategy or spec.symbol
                             or spec.timeframe else "") + "; run `tradebus sweep` on it first")
    return exps


def candidates(spec: ScenarioFile, exps: list[Experiment], mem: MemoryMarket) -> list[Candidate]:
    """The job's best trials by score, each run on its train window and ranked there."""
    out = []
    for e in exps:
        config = parse_config(json.loads(e["config"]), f"experiment {e['id']}")
        window = spec.train or e["train_period"] or "hygiene"
        metrics = run_trial(config, window, mem)[0]
        out.append(Candidate(e, config, window, metrics, _rank_value(metrics, spec.rank_by)))
    out.sort(key=lambda c: -c.score)
    return out


def _at_rank(cands: list[Candidate], rank: int) -> Candidate:
    if rank > len(cands):
        raise LookupError(f"rank {rank}: only {len(cands)} candidates")
    return cands[rank - 1]


def _config_dict(config: SystemConfig, **update: Any) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    data.update(update)
    return data


def _single(s: Single, cands: list[Candidate], spec: ScenarioFile, mem: MemoryMarket) -> Result:
    c = _at_rank(cands, s.rank)
    return Result(s.name, s.kind, f"rank {s.rank} by train {spec.rank_by}: {c.config.strategy.id} "
                  f"{c.config.symbol} {c.config.timeframe} {json.dumps(c.exp.params, sort_keys=True)}",
                  run_full(c.config, c.train_window, mem), run_full(c.config, spec.test, mem),
                  [_config_dict(c.config)], [c.exp["id"]])


def _ensemble(s: Ensemble, cands: list[Candidate], spec: ScenarioFile, mem: MemoryMarket) -> Result:
    tf = cands[0].config.timeframe
    chosen = [c for c in cands if c.config.timeframe == tf][:s.top]
    if len(chosen) < s.top:
        return Result(s.name, s.kind, "", skipped=f"{len(chosen)} candidates on {tf}, fewer than top {s.top}")
    n = len(chosen)
    configs = [c.config.model_copy(update={"initial_capital": c.config.initial_capital / n}) for c in chosen]
    runs = {}
    for which in ("train", "test"):
        kr = [sim.run_kernel(cfg, load_market(cfg, c.train_window if which == "train" else spec.test, mem))
              for cfg, c in zip(configs, chosen)]
        runs[which] = combine(kr, [cfg.initial_capital for cfg in configs], tf_ns(tf))
    names = ", ".join(f"{c.config.strategy.id} {c.config.symbol}" for c in chosen)
    return Result(s.name, s.kind, f"equal weight of the top {n} on {tf}: {names}", runs["train"], runs["test"],
                  [_config_dict(cfg, system=f"{s.name}-{i + 1}") for i, cfg in enumerate(configs)],
                  [c.exp["id"] for c in chosen])


def _switch(base: SystemConfig, s: Adaptive, below: dict | None, above: dict | None) -> SystemConfig:
    data = _config_dict(base, system=s.name)
    data["strategy"] = {"id": "regime_switch", "params": {
        "strategy": base.strategy.id, "regime": s.regime.model_dump(), "below": below, "above": above,
        "flatten_on_switch": s.flatten_on_switch}}
    return parse_config(data, f"scenario {s.name}")


def _series_pool(lead: Candidate, spec: ScenarioFile, tracker: Tracker) -> list[Candidate]:
    """Every scored trial of the job on the lead candidate's strategy and series (its whole grid)."""
    c = lead.config
    exps = tracker.top(tracker.count(), validated_only=False, job=spec.job, strategy=c.strategy.id, symbol=c.symbol,
                       timeframe=c.timeframe)
    return [Candidate(e, parse_config(json.loads(e["config"]), f"experiment {e['id']}"), lead.train_window, {},
                      math.nan) for e in exps]


def _adaptive(s: Adaptive, cands: list[Candidate], spec: ScenarioFile, mem: MemoryMarket,
              tracker: Tracker) -> Result:
    lead = cands[0]
    pool = _series_pool(lead, spec, tracker)
    picks: dict[str, tuple[float, Candidate] | None] = {}
    tried: dict[str, list[dict[str, Any]]] = {"below": [], "above": []}
    for side in ("below", "above"):
        best = None
        for c in pool:
            params = c.config.strategy.params
            cfg = _switch(c.config, s, params if side == "below" else None, params if side == "above" else None)
            m = run_trial(cfg, lead.train_window, mem)[0]
            value = _rank_value(m, spec.rank_by) if m["total_trades"] >= s.min_trades and m["return_pct"] > 0 else -math.inf
            tried[side].append({"experiment": c.exp["id"], "params": params, spec.rank_by: m[spec.rank_by],
                                "trades": m["total_trades"], "return_pct": m["return_pct"]})
            if value > -math.inf and (best is None or value > best[0]):
                best = (value, c)
        picks[side] = best
    details = {"regime": s.regime.model_dump(), "pool": len(pool), "tried": tried,
               "picked": {k: None if v is None else v[1].exp["id"] for k, v in picks.items()}}
    if picks["below"] is None and picks["above"] is None:
        return Result(s.name, s.kind, "", details=details,
                      skipped=f"no candidate made money with {s.min_trades}+ trades in either regime on the train window")
    cfg = _switch(lead.config, s, *(None if picks[k] is None else picks[k][1].config.strategy.params
                                    for k in ("below", "above")))
    r = s.regime
    desc = (f"{lead.config.strategy.id} {lead.config.symbol} {lead.config.timeframe}, {r.indicator}({r.period}) "
            f"< {r.threshold:g}: " + ("flat" if picks["below"] is None else json.dumps(picks["below"][1].exp.params))
            + f"; >= {r.threshold:g}: " + ("flat" if picks["above"] is None else json.dumps(picks["above"][1].exp.params)))
    return Result(s.name, s.kind, desc, run_full(cfg, lead.train_window, mem), run_full(cfg, spec.test, mem),
                  [cfg.model_dump(mode="json")], [p[1].exp["id"] for p in picks.values() if p is not None], details)


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sensitivity(s: Sensitivity, cands: list[Candidate], spec: ScenarioFile, mem: MemoryMarket,
                 tracker: Tracker) -> Result:
    c = _at_rank(cands, s.rank)
    base = c.config.params().model_dump()
    names = s.params if s.params is not None else [k for k, v in base.items() if _numeric(v)]
    unknown = [k for k in names + list(s.values) if k not in base or not _numeric(base[k])]
    if unknown:
        numeric = [k for k, v in base.items() if _numeric(v)]
        raise ValueError(f"scenario {s.name}: cannot vary {', '.join(unknown)}; {c.config.strategy.id}'s numeric "
                         f"parameters: {', '.join(numeric) or 'none'}")
    tried = tracker.parameter_values(spec.job, c.config.strategy.id, c.config.symbol, c.config.timeframe)
    scans: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        values = s.values.get(name) or sorted({v for v in tried.get(name, []) if _numeric(v)} | {base[name]})
        rows = []
        for value in values:
            data = _config_dict(c.config)
            data["strategy"] = {"id": c.config.strategy.id, "params": {**c.config.strategy.params, name: value}}
            try:
                cfg = parse_config(data, f"scenario {s.name}")
            except ValueError as exc:  # e.g. fast >= slow: not a system
                rows.append({"value": value, "invalid": str(exc).splitlines()[-1]})
                continue
            train, test = (run_trial(cfg, w, mem)[0] for w in (c.train_window, spec.test))
            rows.append({"value": value, "base": value == base[name], "train": _scan_metrics(train),
                         "test": _scan_metrics(test)})
        if len([r for r in rows if "train" in r]) > 1:
            scans[name] = rows
    ran = [r for rows in scans.values() for r in rows if "train" in r and not r["base"]]
    summary = {
        "variants": len(ran),
        "test_profitable": sum(r["test"]["return_pct"] > 0 for r in ran) / len(ran) if ran else math.nan,
        "train_profitable": sum(r["train"]["return_pct"] > 0 for r in ran) / len(ran) if ran else math.nan,
    }
    return Result(s.name, s.kind, f"{c.config.strategy.id} {c.config.symbol} {c.config.timeframe} around "
                  f"{json.dumps(c.exp.params, sort_keys=True)}", run_full(c.config, c.train_window, mem),
                  run_full(c.config, spec.test, mem), [_config_dict(c.config)], [c.exp["id"]],
                  {"scans": scans, "base": {k: base[k] for k in scans}, "rank_by": spec.rank_by, **summary})


def _scan_metrics(m: dict[str, float]) -> dict[str, float]:
    return {k: m[k] for k in ("return_pct", "sharpe", "max_drawdown", "total_trades", "profit_factor")}


def _group(exps: list[Experiment]) -> dict[tuple[str, str], list[str]]:
    """The candidates' symbols by venue and market (what to read into memory)."""
    out: dict[tuple[str, str], set[str]] = {}
    for e in exps:
        config = json.loads(e["config"])
        out.setdefault((config["venue"], config["market"]), set()).add(e["symbol"])
    return {k: sorted(v) for k, v in out.items()}


@dataclass
class ScenarioReport:
    spec: ScenarioFile  # its ``test`` is the common dates every scenario's test run used
    candidates: list[Candidate]
    results: list[Result]
    warnings: list[str]
    test_dates: tuple[str, str]  # [start, end) dates of the test window (YYYY-MM-DD)
    test_name: str  # the test window as the scenario file named it


DAY_NS = 86_400 * 10**9


def common_test_dates(window: str, configs: list[SystemConfig], mem: MemoryMarket) -> tuple[str, str]:
    """The whole days every config's ``window`` covers (latest start, earliest end): a preset such as
    last_30pct is measured on each symbol's own data, and curves compared side by side must share dates."""
    spans = []
    for config in configs:
        m = load_market(config, window, mem)
        spans.append((m.requested_start, m.end))
    lo, hi = max(a for a, _ in spans), min(b for _, b in spans)
    lo, hi = -(-lo // DAY_NS) * DAY_NS, hi // DAY_NS * DAY_NS
    if hi <= lo:
        raise ValueError(f"the candidates' {window!r} windows share no whole day; give the scenario file a test: "
                         "START:END every candidate's data covers")
    day = lambda ns: str(np.datetime64(ns, "ns").astype("datetime64[D]"))  # noqa: E731
    return day(lo), day(hi)


def run_scenarios(spec: ScenarioFile, tracker: Tracker, md: MarketData,
                  progress: Callable[[str, int, int], None] | None = None) -> ScenarioReport:
    """Build and run every enabled scenario; nothing is written (``write_outputs`` does). ``progress`` is
    told (what, done, total) before the candidates are ranked and as each scenario starts and ends."""
    enabled = [s for s in spec.scenarios if s.enabled]
    tell = progress or (lambda what, done, total: None)
    tell("ranking candidates", 0, len(enabled))
    exps = _experiments(spec, tracker)
    mem = MemoryMarket()
    for (venue, market), symbols in _group(exps).items():
        mem.series.update(MemoryMarket.load(md, venue, market, symbols).series)
    cands = candidates(spec, exps, mem)
    warnings = []
    if any(c.train_window == spec.test or c.exp["train_period"] == spec.test for c in cands):
        warnings.append(f"the job ran its trials on the test window {spec.test!r}: candidates were chosen in sample")
    named = spec.test
    dates = common_test_dates(named, [c.config for c in cands], mem)
    spec = spec.model_copy(update={"test": f"{dates[0]}:{dates[1]}"})
    results = []
    for i, s in enumerate(enabled):
        tell(s.name, i, len(enabled))
        if isinstance(s, Single):
            results.append(_single(s, cands, spec, mem))
        elif isinstance(s, Ensemble):
            results.append(_ensemble(s, cands, spec, mem))
        elif isinstance(s, Adaptive):
            results.append(_adaptive(s, cands, spec, mem, tracker))
        else:
            results.append(_sensitivity(s, cands, spec, mem, tracker))
    tell("done", len(enabled), len(enabled))
    return ScenarioReport(spec, cands, results, warnings, dates, named)


# --- outputs ------------------------------------------------------------------------------------------


def _result_json(r: Result) -> dict[str, Any]:
    return {"name": r.name, "kind": r.kind, "description": r.description, "skipped": r.skipped,
            "members": r.members, "train": None if r.train is None else r.train.metrics,
            "test": None if r.test is None else r.test.metrics, "details": r.details}


def write_outputs(rep: ScenarioReport, out: Path) -> list[Path]:
    """scenarios.json, report.html and each scenario's system configs (``configs/NAME.yaml``, an
    ensemble's members as ``NAME-1.yaml`` ...), ready for ``tradebus replay``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(exist_ok=True)
    written = []
    for r in rep.results:
        for cfg in r.configs:
            path = out / "configs" / f"{cfg['system'] if r.kind == 'ensemble' else r.name}.yaml"
            data = {**cfg, "system": path.stem,  # its test window: the dates the scenario was tested on
                    "windows": {**cfg["windows"], "test": {"start": rep.test_dates[0], "end": rep.test_dates[1]}}}
            atomic_write(path, (f"# scenario {r.name} ({r.kind}) of job {rep.spec.job}: {r.description}\n"
                                + dump_yaml(data)).encode())
            written.append(path)
    write_json(out / "scenarios.json", {
        "job": rep.spec.job, "rank_by": rep.spec.rank_by, "test_window": rep.test_name,
        "test_dates": list(rep.test_dates), "warnings": rep.warnings,
        "candidates": [{"experiment": c.exp["id"], "strategy": c.config.strategy.id, "symbol": c.config.symbol,
                        "timeframe": c.config.timeframe, "params": c.exp.params, "train_window": c.train_window,
                        rep.spec.rank_by: c.train[rep.spec.rank_by]} for c in rep.candidates],
        "scenarios": [_result_json(r) for r in rep.results]})
    written.append(out / "scenarios.json")
    rows = [report.Compared(r.name, r.kind, r.description, r.train and r.train.metrics, r.test and r.test.metrics,
                            None if r.test is None else (r.test.times, r.test.equity / r.test.initial), r.skipped)
            for r in rep.results]
    scans = []
    for r in rep.results:
        for param, entries in r.details.get("scans", {}).items():
            ok = [e for e in entries if "train" in e]
            scans.append(report.Scan(r.name, param, [e["value"] for e in ok],
                                     [e["train"]["sharpe"] for e in ok], [e["test"]["sharpe"] for e in ok],
                                     r.details["base"][param], "Sharpe"))
    report.render_comparison(out / "report.html", f"Scenarios of job {rep.spec.job}",
                             f"{len(rep.candidates)} candidates ranked by train {rep.spec.rank_by}; "
                             f"test window {rep.test_name}: {rep.test_dates[0]} → {rep.test_dates[1]} for every "
                             "scenario (the dates all candidates' own share)", rows, scans, rep.warnings)
    written.append(out / "report.html")
    return written
