"""Sweeps across machines: a JetStream work queue of trial batches, ``tradebus worker`` processes that
pull them, and results that come back as events.

- The coordinator (``tradebus sweep JOB --queue``) plans the job against its stored candles, skips what the
  experiments table already holds, and publishes the rest as ``SweepTask`` events (batches of trials,
  each with its whole config) into the ``TB_WORK`` stream: a work queue, so each task is kept until one
  worker acknowledges it. A task's id hashes its trial ids, and JetStream drops a re-publish of the same
  id within its duplicate window.
- A worker pulls one task at a time through the shared durable consumer ``sweep-workers``, checks that
  its own stored candles hash as the coordinator's did (else every trial of the task fails, saying so),
  runs the trials in a thread while telling the server it is still busy, publishes a ``SweepResult``
  into ``TB_RESULTS`` (stored before the publish returns), and only then acknowledges the task. A worker
  killed before that acknowledgement leaves its task unacknowledged: the server delivers it again, to
  another worker, after ``ack_wait``.
- The coordinator reads results through its own durable consumer (so a restarted coordinator misses
  nothing) and writes them to the experiments table. A result's id derives from its task's, a task is
  taken once (later results for it are ignored) and a trial id is the table's primary key, so a task run
  twice is never counted twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

import structlog

from tradebus.bus import subjects
from tradebus.bus.events import SweepResult, SweepTask, TrialOutcome, TrialSpec
from tradebus.bus.nats import NatsBus, WorkItem
from tradebus.configs.schema import parse_config
from tradebus.factory.experiments import Tracker
from tradebus.factory.market import FeatureMemo, MemoryMarket
from tradebus.factory.sweep import (MEMO_BYTES, Collector, DataIds, Outcome, Pending, SweepJob, SweepReport, pending,
                                   run_trials)
from tradebus.engine.marketdata import MarketData

log = structlog.get_logger("tradebus.worker")

WORK_STREAM = "TB_WORK"
RESULT_STREAM = "TB_RESULTS"
WORKERS = "sweep-workers"
RESULT_AGE = 7 * 86_400.0  # results stay a week: enough for a coordinator to come back for them


async def ensure_streams(bus: NatsBus) -> None:
    await bus.ensure_stream(WORK_STREAM, [subjects.sweep_work(">")], work_queue=True)
    await bus.ensure_stream(RESULT_STREAM, [subjects.sweep_results(">")], max_age=RESULT_AGE)


def task_events(work: Pending, batch: int) -> list[SweepTask]:
    """The job's pending trials as work-queue tasks; a task's id hashes its trials, so it is the same on
    every resubmission of the same work."""
    data = {t.reads: t.data_id for t in work.todo}  # hashed once, when the job was planned
    now = time.time_ns()
    out = []
    for trials in work.batches(batch):
        key = hashlib.sha256(json.dumps([work.job.job, [t.id for t in trials]]).encode()).hexdigest()[:26]
        out.append(SweepTask(
            id=f"swt-{key}", ts_event=now, ts_init=now, system=work.job.job, job=work.job.job, venue=work.venue,
            market=work.market, data={r: data[r] for r in sorted({t.reads for t in trials})},
            trials=[TrialSpec(id=t.id, window=t.window, config=t.config.model_dump(mode="json")) for t in trials]))
    return out


def _outcomes(result: SweepResult) -> list[Outcome]:
    return [(o.id, None if o.error else dict(o.metrics), list(o.blocks), o.error) for o in result.outcomes]


@dataclass
class QueueReport:
    sweep: SweepReport
    tasks: int
    duplicates: int  # results for a task already taken (a redelivered task run twice)


async def run_queued_sweep(job: SweepJob, md: MarketData, tracker: Tracker, bus: NatsBus, *, batch: int = 16,
                           progress: Callable[[int, int], None] | None = None,
                           idle_timeout: float | None = None) -> QueueReport:
    """Queue ``job``'s pending trials for ``tradebus worker`` processes and collect their results.

    ``idle_timeout``: give up (TimeoutError, naming what is missing) after that long without a result."""
    await ensure_streams(bus)
    work = pending(job, md, tracker)
    tasks = task_events(work, batch)
    # Subscribe to results before any task goes out: a fast worker's answer must not precede us.
    results = await bus.pull(RESULT_STREAM, f"sweep-{job.job}", subjects.sweep_results(job.job), ack_wait=120.0)
    for task in tasks:
        await bus.publish_durable(task)
    collector = Collector(work, tracker, progress)
    open_tasks = {t.id: len(t.trials) for t in tasks}
    duplicates = 0
    last = time.monotonic()
    while open_tasks:
        items = await results.fetch(64, timeout=1.0)
        for item in items:
            result = item.event
            if isinstance(result, SweepResult) and result.cause in open_tasks:
                collector.take(_outcomes(result))  # one transaction; trial ids are the primary key
                del open_tasks[result.cause]
                last = time.monotonic()
            else:
                duplicates += 1
            await item.ack()
        if idle_timeout is not None and time.monotonic() - last > idle_timeout:
            raise TimeoutError(
                f"sweep {job.job}: no result for {idle_timeout:.0f}s; {len(open_tasks)} of {len(tasks)} tasks "
                f"({sum(open_tasks.values())} trials) outstanding. Is a `tradebus worker` running against this "
                "NATS server? Rerun the same command to keep collecting: finished trials are kept.")
    return QueueReport(collector.report(), len(tasks), duplicates)


# --- the worker ------------------------------------------------------------------------------------


@dataclass
class WorkerReport:
    tasks: int = 0
    trials: int = 0
    refused: int = 0  # tasks whose data did not match this worker's


class _Markets:
    """Candles held in memory per venue, market and symbol set, read from this machine's store."""

    def __init__(self, md: MarketData) -> None:
        self._md = md
        self._cache: dict[tuple[str, str, tuple[str, ...]], DataIds] = {}
        self.memo = FeatureMemo(MEMO_BYTES)  # indicator outputs shared by every task's trials on this worker

    def get(self, venue: str, market: str, symbols: list[str]) -> DataIds:
        key = (venue, market, tuple(sorted(symbols)))
        if key not in self._cache:
            self._cache[key] = DataIds(MemoryMarket.load(self._md, venue, market, list(key[2])))
        return self._cache[key]


def run_task(task: SweepTask, markets: _Markets, worker: str) -> tuple[list[TrialOutcome], bool]:
    """Every trial of a task, or for each the reason it cannot run here; and whether this worker refused
    the task (the series its trials read differ from the coordinator's)."""
    batch = [(t.id, parse_config(t.config, f"task {task.id} trial {t.id}"), t.window) for t in task.trials]
    ids = markets.get(task.venue, task.market, sorted({c.symbol for _, c, _ in batch}))
    ours = dict(ids.of(c) for _, c, _ in batch)
    differ = sorted(r for r, d in task.data.items() if ours.get(r) != d)
    if differ:
        why = (f"worker {worker}: its stored {' and '.join(differ)} differ from the coordinator's "
               "(import the same data on every worker)")
        return [TrialOutcome(id=t.id, error=why) for t in task.trials], True
    mem = ids.mem
    return [TrialOutcome(id=tid, metrics={k: float(v) for k, v in (m or {}).items()}, blocks=b, error=e)
            for tid, m, b, e in run_trials(batch, mem, markets.memo)], False


async def _keep_alive(item: WorkItem, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await item.progress()


async def run_worker(bus: NatsBus, md: MarketData, *, name: str | None = None, ack_wait: float = 30.0,
                     idle_exit: float | None = None, stop: asyncio.Event | None = None) -> WorkerReport:
    """Pull and run sweep tasks until ``stop`` is set (or nothing came for ``idle_exit`` seconds)."""
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    await ensure_streams(bus)
    queue = await bus.pull(WORK_STREAM, WORKERS, subjects.sweep_work(), ack_wait=ack_wait)
    markets = _Markets(md)
    report = WorkerReport()
    idle_since = time.monotonic()
    while not (stop is not None and stop.is_set()):
        items = await queue.fetch(1, timeout=1.0)
        if not items:
            if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break
            continue
        item = items[0]
        task = item.event
        if not isinstance(task, SweepTask):
            log.error("not a sweep task on the work queue; dropped", type=type(task).__name__)
            await item.term()
            continue
        log.info("task started", task=task.id, job=task.job, trials=len(task.trials), delivery=item.deliveries)
        alive = asyncio.create_task(_keep_alive(item, ack_wait / 3))
        try:
            outcomes, refused = await asyncio.to_thread(run_task, task, markets, name)
        finally:
            alive.cancel()
        result = SweepResult(id=f"{task.id}-result", ts_event=task.ts_event, ts_init=time.time_ns(), system=task.system,
                             cause=task.id, job=task.job, worker=name, outcomes=outcomes)
        await bus.publish_durable(result)  # stored before the task is let go
        await item.ack()
        report.tasks += 1
        report.trials += len(outcomes)
        report.refused += refused
        log.info("task done", task=task.id, trials=len(outcomes), failed=sum(bool(o.error) for o in outcomes))
        idle_since = time.monotonic()
    return report
