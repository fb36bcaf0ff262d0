"""Sweep jobs: many parameter sets over many symbols, through the compiled loop, into the experiments table.

A job (YAML, ``configs/sweeps/``) holds tasks; a task names a strategy, a parameter space (grid, random
or Latin hypercube), symbols, timeframes and a window, and shares the job's ``base`` system config (risk,
costs, fill rule). A parameter named with a dot (``risk.stop.atr_mult``) varies that config field
instead of a strategy parameter. Each trial is a full ``SystemConfig``, validated like a replay's
(combinations the strategy refuses, such as fast >= slow, are counted and skipped), and run over the
same market slice ``tradebus replay`` would load. Candles are read from DuckDB once per job; worker
processes take batches of trials; each finished batch is written in one transaction, so a killed sweep
resumes where it stopped, and a trial already in the table (same id) is never run twice.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from tradebus.components import strategies
from tradebus.components.strategies import composable
from tradebus.components.strict import StrictModel
from tradebus.components.timeframes import tf_ns
from tradebus.configs.schema import ConfigError, StrategyId, SystemConfig, Timeframe, parse_config, parse_model, read_yaml
from tradebus.engine.metrics import from_stats
from tradebus.factory import scoring, sim
from tradebus.factory.experiments import Tracker
from tradebus.factory.market import FeatureMemo, MemoryMarket
from tradebus.factory.space import MAX_POINTS, Declared, Range, SpaceKind, expand, grid_size
from tradebus.engine.marketdata import MarketData, SeriesKey
from tradebus.engine.market import load_market, resolve_window, series_read
from tradebus.identity import code_digest

DEFAULT_WINDOWS = {"hygiene": {"preset": "first_70pct"}, "test": {"preset": "last_30pct"}}


def _blocks(blocks: list[dict[str, Any]], kind: Any) -> list[dict[str, Any]]:
    """Each block checked on its own before any spec is built (a misspelt block would otherwise only drop
    the specs holding it); kept as written, so trial ids do not change."""
    for block in blocks:
        TypeAdapter(kind).validate_python(block)
    return blocks


class Combine(StrictModel):
    """Composable specs to generate: every ``sizes``-subset of ``entries`` (all must agree), times each
    filter set and each exit set. Each block is validated here, each spec again with its trial's config."""

    entries: list[dict[str, Any]] = Field(min_length=1)
    sizes: list[int] = Field([1, 2], min_length=1)
    filters: list[list[dict[str, Any]]] = [[]]
    exits: list[list[dict[str, Any]]] = [[{"block": "opposite"}]]

    @field_validator("entries")
    @classmethod
    def _entries(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _blocks(v, composable.Entry)

    @field_validator("filters", "exits")
    @classmethod
    def _sets(cls, v: list[list[dict[str, Any]]], info) -> list[list[dict[str, Any]]]:
        kind = composable.Filter if info.field_name == "filters" else composable.Exit
        return [_blocks(blocks, kind) for blocks in v]

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError(f"sizes {v}: each is how many entry blocks a spec combines (>= 1)")
        return v


class SweepTask(StrictModel):
    strategy: StrategyId
    space: SpaceKind = "grid"
    samples: int = Field(0, ge=0, description="random / lhs: how many draws")
    seed: int = 0
    params: dict[str, Declared] = {}
    symbols: list[str] = Field(min_length=1)
    timeframes: list[Timeframe] = Field(["5m"], min_length=1)
    window: str = Field("hygiene", description="hygiene, test (from the base windows) or START:END")
    combine: Combine | None = Field(None, description="composable: specs generated from block lists")

    @model_validator(mode="after")
    def _compiled_step(self) -> "SweepTask":
        if not strategies.get(self.strategy).compiled:
            raise ValueError(f"strategy {self.strategy!r} has a plain-Python step (compiled = False); a sweep runs "
                             "the compiled kernel and needs a step numba compiles (replay and paper run it as is)")
        return self

    @model_validator(mode="after")
    def _combine_is_composable(self) -> "SweepTask":
        if self.combine is not None and self.strategy != "composable":
            raise ValueError(f"combine generates composable specs; strategy is {self.strategy!r}, use composable")
        return self

    @model_validator(mode="after")
    def _a_space_that_can_be_run(self) -> "SweepTask":
        """Refused here, before anything runs: a grid over a range without a step, draws without a count, more
        trials than a sweep should hold, a START:END window that is not one."""
        if self.space == "grid":
            unstepped = [k for k, d in self.params.items() if isinstance(d, Range) and d.step is None]
            if unstepped:
                raise ValueError(f"params.{unstepped[0]}: a grid needs a step for every range (or use space: "
                                 f"random or lhs with samples)")
            points = grid_size(self.params)
        else:
            if self.samples <= 0:
                raise ValueError(f"samples: a {self.space} space needs samples > 0")
            points = self.samples
        total = points * len(self.symbols) * len(self.timeframes)
        if total > MAX_POINTS:
            raise ValueError(f"{total:,} trials ({points:,} parameter sets x {len(self.symbols)} symbols x "
                             f"{len(self.timeframes)} timeframes): at most {MAX_POINTS:,} a task")
        if ":" in self.window:
            resolve_window(self.window, None, None)
        return self

    def specs(self) -> list[dict[str, Any]]:
        """Each combination of blocks (a single empty one without ``combine``)."""
        if self.combine is None:
            return [{}]
        c = self.combine
        return composable.combinations(c.entries, sizes=tuple(c.sizes), filters=c.filters, exits=c.exits)


class SweepJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    job: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    base: dict[str, Any] = {}
    score: scoring.ScoreSpec = scoring.ScoreSpec()
    tasks: list[SweepTask] = Field(min_length=1)


def load_job(path: Path | str) -> SweepJob:
    return parse_job(read_yaml(path), path)


def parse_job(data: Any, source: Path | str = "<job>") -> SweepJob:
    return parse_model(SweepJob, data, source, "a sweep job")


@dataclass
class Trial:
    id: str
    task: int
    config: SystemConfig
    window: str
    varied: dict[str, Any]
    data_id: str  # hash of the series it reads
    reads: str  # which series those are (reads_label)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"parameter {dotted!r}: {key!r} is not a section of the system config")
    node[leaf] = value


def trial_config(job: SweepJob, task: SweepTask, symbol: str, timeframe: str, values: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(job.base)
    data.setdefault("windows", copy.deepcopy(DEFAULT_WINDOWS))
    data.update(system=job.job, symbol=symbol, timeframe=timeframe)
    data["strategy"] = {"id": task.strategy, "params": {k: v for k, v in values.items() if "." not in k}}
    for k, v in values.items():
        if "." in k:
            _set_path(data, k, v)
    return data


def trial_id(config: SystemConfig, window: str, data_id: str) -> str:
    """What decides a trial's result, hashed: the config (its system name aside), window, the series it
    reads, and the code that computes it."""
    body = config.canonical()
    body.pop("system")
    key = msgspec.json.encode({"config": body, "window": window, "data": data_id, "code": code_digest()},
                              order="sorted")
    return hashlib.sha256(key).hexdigest()[:32]


def reads_label(keys: tuple[SeriesKey, ...]) -> str:
    """The series a trial reads, as one line (a queued task's data map is keyed by it)."""
    return "; ".join(map(str, keys))


def data_id(mem: MemoryMarket, keys: tuple[SeriesKey, ...]) -> str:
    """A hash of the whole stored series a trial reads (``engine.market.series_read``); the slice it takes
    follows from them and the config. Nothing else stored for the symbol enters it."""
    h = hashlib.sha256()
    for key in keys:
        h.update(str(key).encode())
        cols = mem.series.get(key, {})
        for name in sorted(cols):
            h.update(name.encode())
            h.update(np.ascontiguousarray(cols[name]).tobytes())
    return h.hexdigest()


class DataIds:
    """``data_id`` of each distinct set of series, hashed once however many trials read it."""

    def __init__(self, mem: MemoryMarket) -> None:
        self.mem = mem
        self._ids: dict[tuple[SeriesKey, ...], str] = {}

    def of(self, config: SystemConfig) -> tuple[str, str]:
        """(label, data id) of what ``config`` reads."""
        keys = series_read(config, self.mem)
        if keys not in self._ids:
            self._ids[keys] = data_id(self.mem, keys)
        return reads_label(keys), self._ids[keys]


@dataclass
class Plan:
    trials: list[Trial]
    invalid: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # refused combinations, why
    repeated: int = 0  # draws of a random or Latin hypercube space that gave a trial already planned

    @property
    def count(self) -> int:
        """The job's trial count: every valid trial it runs (the deflated Sharpe's N)."""
        return len(self.trials)


def plan(job: SweepJob, mem: MemoryMarket) -> Plan:
    """Every trial of the job. A symbol with no stored candles, or a task none of whose parameter sets makes a
    valid config (a bad base field, an override out of range), is a ConfigError, not a sweep of nothing."""
    out = Plan([])
    seen: set[str] = set()
    stored = {k.symbol for k in mem.series}
    for ti, task in enumerate(job.tasks):
        missing = sorted(set(task.symbols) - stored)
        if missing:
            raise ConfigError(f"job {job.job} task {ti + 1}: no stored candles for {', '.join(missing)}; import or "
                              f"fetch them first (tradebus data import / data fetch)")
    ids = DataIds(mem)
    for ti, task in enumerate(job.tasks):
        before = (len(out.trials), len(out.invalid))
        space_ = [{**spec, **v} for spec in task.specs() for v in expand(task.params, task.space, task.samples, task.seed)]
        for values, symbol, tf in itertools.product(space_, task.symbols, task.timeframes):
            try:
                config = parse_config(trial_config(job, task, symbol, tf, values), f"job {job.job} task {ti + 1}")
            except ConfigError as exc:
                out.invalid.append((values, str(exc)))
                continue
            reads, did = ids.of(config)
            tid = trial_id(config, task.window, did)
            if tid in seen:  # the same trial twice would be run twice and counted twice in the DSR's N
                out.repeated += 1
                continue
            seen.add(tid)
            out.trials.append(Trial(tid, ti, config, task.window, values, did, reads))
        if len(out.trials) == before[0] and len(out.invalid) > before[1]:
            raise ConfigError(f"job {job.job} task {ti + 1}: none of its {len(out.invalid) - before[1]:,} parameter "
                              f"sets makes a valid system config; the first:\n{out.invalid[before[1]][1]}")
    return out


# --- running -------------------------------------------------------------------------------------

_WORKER_MARKET: MemoryMarket | None = None
_WORKER_MEMO: FeatureMemo | None = None


def _init_worker(mem: MemoryMarket, memo_bytes: int) -> None:
    global _WORKER_MARKET, _WORKER_MEMO
    _WORKER_MARKET, _WORKER_MEMO = mem, FeatureMemo(memo_bytes)


def run_trial(config: SystemConfig, window: str, mem: MemoryMarket, memo: FeatureMemo | None = None
              ) -> tuple[dict[str, float], list[float]]:
    """Metrics and block statistics of one trial (indicator outputs shared through ``memo``); a
    ``MemoryMarket`` keeps them, so asking again for the same config and window runs nothing."""
    def run() -> tuple[dict[str, float], list[float]]:
        m = load_market(config, window, mem)
        stats, blocks = sim.run_stats(config, m, memo)
        return from_stats(stats, config.initial_capital, tf_ns(config.timeframe)), blocks.ravel().tolist()

    metrics, blocks = mem.remember(("trial", config.config_hash(), window), run)
    return dict(metrics), list(blocks)


Outcome = tuple[str, "dict[str, float] | None", list[float], str]  # trial id, metrics (None: failed), blocks, error


def run_trials(batch: list[tuple[str, SystemConfig, str]], mem: MemoryMarket, memo: FeatureMemo | None = None
               ) -> list[Outcome]:
    """Run trials (id, config, window), in input order; a trial that fails is reported, not raised.

    Trials that read the same rows (``memo`` shares them) over the same slice run as one compiled batch
    (``sim.run_stats_batch``): the per-trial Python work left is loading the slice and scoring.
    """
    done: dict[str, Outcome] = {}
    groups: dict[tuple, list[tuple[str, SystemConfig, tuple]]] = {}
    for tid, config, window in batch:
        try:
            m = load_market(config, window, mem)
            args = sim.kernel_inputs(config, m, False, memo)
        except Exception as exc:  # a trial's data problem is that trial's result, not the sweep's end
            done[tid] = (tid, None, [], f"{type(exc).__name__}: {exc}")
            continue
        # Same step, rows and ATR objects (the memo's), same slice: the same inputs but parameters and settings.
        key = (config.strategy_def(), id(args[0]), id(args[9]), m.source, config.timeframe, m.start, m.end, m.first)
        groups.setdefault(key, []).append((tid, config, args))
    for key, items in groups.items():
        try:
            stats, blocks = sim.run_stats_batch(key[0], [args for _, _, args in items])
        except Exception as exc:
            done.update((tid, (tid, None, [], f"{type(exc).__name__}: {exc}")) for tid, _, _ in items)
            continue
        for (tid, config, _), st, bl in zip(items, stats, blocks):
            done[tid] = (tid, from_stats(st, config.initial_capital, tf_ns(config.timeframe)), bl.ravel().tolist(), "")
    return [done[tid] for tid, _, _ in batch]


def _run_batch(batch: list[tuple[str, SystemConfig, str]]) -> tuple[list[Outcome], int, tuple[int, int, int]]:
    """A worker's batch: its outcomes, the worker's pid and its memo's counts so far (computed, reused, peak
    bytes)."""
    assert _WORKER_MARKET is not None and _WORKER_MEMO is not None
    return run_trials(batch, _WORKER_MARKET, _WORKER_MEMO), os.getpid(), _WORKER_MEMO.counts()


@dataclass
class SweepReport:
    job: str
    trials: int
    skipped: int  # already in the table
    ran: int
    failed: list[tuple[str, str]]
    invalid: int
    stale: int = 0  # rows of the job from older code or data: kept, no longer counted
    features_computed: int = 0  # indicator calls run over a slice (summed over workers)
    features_reused: int = 0  # ... and taken from a worker's memo instead
    memo_peak_bytes: int = 0  # the largest a worker's memo grew


def experiment_rows(job: SweepJob, plan_: Plan, results: list[Outcome], by_id: dict[str, Trial]) -> list[dict[str, Any]]:
    """Experiments-table rows of finished trials, scored by the job's rule (failed trials have none)."""
    rows = []
    for tid, metrics, blocks, error in results:
        if metrics is None:
            continue
        trial = by_id[tid]
        config = trial.config
        value, why = scoring.score(metrics, job.score)
        rows.append({
            "id": tid, "experiment_id": job.job, "job_id": job.job, "job_trials": plan_.count,
            "strategy": config.strategy.id, "strategy_source": "composable" if config.strategy.id == "composable" else "existing", "symbol": config.symbol,
            "timeframe": config.timeframe, "parameters": json.dumps(trial.varied, sort_keys=True),
            "config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
            **{k: metrics[k] for k in ("return_pct", "annualised_return", "max_drawdown", "total_trades",
                                       "trades_per_year", "win_rate", "profit_factor", "sharpe", "sortino", "bars")},
            "score": value, "disqualified": why, "block_stats": blocks,
            "train_period": trial.window, "cost_model": json.dumps(config.costs.model_dump(mode="json"), sort_keys=True),
            "fill": config.fill, "data_sha256": trial.data_id, "code_version": code_digest(),
        })
    return rows


@dataclass
class Pending:
    """A job planned against the stored data, and the trials the experiments table does not hold yet."""

    job: SweepJob
    venue: str
    market: str
    mem: MemoryMarket
    plan: Plan
    done: set[str]
    todo: list[Trial]

    @property
    def by_id(self) -> dict[str, Trial]:
        return {t.id: t for t in self.todo}

    def batches(self, size: int) -> Iterator[list[Trial]]:
        for i in range(0, len(self.todo), size):
            yield self.todo[i:i + size]


def pending(job: SweepJob, md: MarketData, tracker: Tracker) -> Pending:
    venue, market = job.base.get("venue", "bybit"), job.base.get("market", "linear")
    mem = MemoryMarket.load(md, venue, market, sorted({s for t in job.tasks for s in t.symbols}))
    p = plan(job, mem)
    tracker.record_plan(job.job, [t.id for t in p.trials])  # what the job counts now (the DSR's N)
    done = tracker.existing(t.id for t in p.trials)
    todo = [t for t in p.trials if t.id not in done]
    # Trials of one strategy and symbol together: each worker compiles a strategy's loop once.
    todo.sort(key=lambda t: (t.task, t.config.symbol, t.config.timeframe))
    return Pending(job, venue, market, mem, p, done, todo)


class Collector:
    """Scores finished trials and writes each batch to the experiments table, counting progress."""

    def __init__(self, work: Pending, tracker: Tracker, progress: Callable[[int, int], None] | None) -> None:
        self.work, self.tracker, self.progress = work, tracker, progress
        self.by_id = work.by_id
        self.failed: list[tuple[str, str]] = []
        self.finished = 0
        if progress is not None:
            progress(0, len(work.todo))

    def take(self, results: list[Outcome]) -> None:
        self.tracker.save(experiment_rows(self.work.job, self.work.plan, results, self.by_id))
        self.failed.extend((tid, err) for tid, m, _, err in results if m is None)
        self.finished += len(results)
        if self.progress is not None:
            self.progress(self.finished, len(self.work.todo))

    def report(self) -> SweepReport:
        w = self.work
        return SweepReport(w.job.job, w.plan.count, len(w.done), self.finished, self.failed, len(w.plan.invalid),
                           self.tracker.stale(w.job.job))


MEMO_BYTES = 1 << 30  # each worker's indicator memo, at most


def run_sweep(job: SweepJob, md: MarketData, tracker: Tracker, *, workers: int | None = None, batch: int = 32,
              progress: Callable[[int, int], None] | None = None, memo_bytes: int = MEMO_BYTES) -> SweepReport:
    """Run every trial of ``job`` not yet in ``tracker`` on this machine; return what happened."""
    work = pending(job, md, tracker)
    out = Collector(work, tracker, progress)
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    batches = [[(t.id, t.config, t.window) for t in b] for b in work.batches(batch)]
    memos: dict[int, tuple[int, int, int]] = {}  # per worker process: its memo's latest counts

    def collect(done: Iterator[tuple[list[Outcome], int, tuple[int, int, int]]]) -> None:
        for results, pid, counts in done:
            memos[pid] = counts
            out.take(results)

    if workers == 1 or not batches:
        _init_worker(work.mem, memo_bytes)
        collect(map(_run_batch, batches))
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(work.mem, memo_bytes)) as pool:
            collect(pool.map(_run_batch, batches))
    report = out.report()
    report.features_computed = sum(c for c, _, _ in memos.values())
    report.features_reused = sum(r for _, r, _ in memos.values())
    report.memo_peak_bytes = max((p for _, _, p in memos.values()), default=0)
    return report

