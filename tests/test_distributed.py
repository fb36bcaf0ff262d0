"""Sweeps over NATS JetStream: two real worker processes, one killed mid-task; its task is delivered
again, every trial lands once, and the table equals a local sweep's."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tradebus.bus.events import SweepResult
from tradebus.bus.nats import NatsBus
from tradebus.bus.natsserver import start_server
from tradebus.factory.distributed import _Markets, ensure_streams, run_queued_sweep, run_task, task_events
from tradebus.factory.experiments import Tracker
from tradebus.factory.sweep import parse_job, pending, run_sweep

from .proc import LineReader, tradebus, wait_dead
from .test_sweep import job

COMPARED = ("total_trades", "return_pct", "sharpe", "max_drawdown", "score", "block_stats", "job_trials")


def table(path) -> dict[str, tuple]:
    with Tracker.open(path, read_only=True) as t:
        return {e["id"]: tuple(e[c] for c in COMPARED) for e in t.top(1000, validated_only=False, min_trades=0)}


async def test_killed_worker_task_is_redelivered_and_nothing_is_counted_twice(md, tmp_path):  # noqa: F811
    spec = parse_job(job(job="t-queue"))
    with Tracker.open(tmp_path / "local.duckdb") as local:
        run_sweep(spec, md, local, workers=1)
    expected = table(tmp_path / "local.duckdb")
    db = md.path
    md.close()  # the workers open the market file themselves (read-only)
    from tradebus.engine.marketdata import MarketData

    server = await start_server(tmp_path / "nats")
    bus = await NatsBus.connect(server.url)
    workers = []
    try:
        with MarketData.open(db, read_only=True) as market, Tracker.open(tmp_path / "queued.duckdb") as tracker:
            # A worker that published its result and died before acknowledging, long enough ago that
            # JetStream's duplicate window no longer catches the second copy: the coordinator must.
            await ensure_streams(bus)
            work = pending(spec, market, tracker)
            first = task_events(work, 2)[0]
            outcomes, _ = run_task(first, _Markets(market), "ghost")
            for suffix in ("-result", "-result-late"):
                await bus.publish_durable(SweepResult(id=first.id + suffix, ts_event=1, ts_init=1, cause=first.id,
                                                      job=spec.job, worker="ghost", outcomes=outcomes))

            args = ["worker", "--nats-url", server.url, "--db", str(db), "--ack-wait", "2", "--idle-exit", "20"]
            workers = [tradebus(*args, "--name", n) for n in ("wa", "wb")]
            logs = [LineReader(w.stderr) for w in workers]
            coordinator = asyncio.create_task(run_queued_sweep(spec, market, tracker, bus, batch=2, idle_timeout=60))
            started = await asyncio.to_thread(logs[0].wait_for, "task started", 60)
            workers[0].send_signal(signal.SIGKILL)  # mid-task: the first task compiles the strategy for seconds
            assert wait_dead(workers[0].pid, 10)
            killed_task = started.split("task=")[1].split()[0]
            done, _ = await asyncio.wait({coordinator}, timeout=120)
            if not done:  # say what the surviving worker was doing (a coordinator's own error is raised as is)
                coordinator.cancel()
                raise AssertionError(f"the queued sweep did not finish; killed task {killed_task}; surviving "
                                     f"worker's log: {logs[1].drain()[-15:]}")
            report = coordinator.result()
            redelivered = await asyncio.to_thread(logs[1].wait_for, f"task={killed_task}", 30)
            assert "delivery=2" in redelivered or "delivery=3" in redelivered

        assert report.tasks == 7 and report.sweep.ran == 14 and not report.sweep.failed
        assert report.duplicates >= 1  # the late copy of the ghost's result was seen and ignored
        assert table(tmp_path / "queued.duckdb") == expected  # every trial once, equal to the local sweep
    finally:
        await bus.close()
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        server.stop()


def test_a_worker_with_other_candles_refuses_the_task(md, tmp_path):  # noqa: F811
    spec = parse_job(job(job="t-refuse"))
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        task = task_events(pending(spec, md, tracker), 4)[0]
    tampered = task.__class__(**{**{f: getattr(task, f) for f in task.__struct_fields__},
                                 "data": {s: "0" * 64 for s in task.data}})
    outcomes, refused = run_task(tampered, _Markets(md), "w1")
    assert refused and len(outcomes) == 4 and all("differ from the coordinator's" in o.error and not o.metrics for o in outcomes)
    good, refused = run_task(task, _Markets(md), "w1")
    assert not refused and all(not o.error and o.metrics["bars"] > 0 for o in good)


@pytest.mark.parametrize("cmd", [["worker"], ["sweep", "configs/sweeps/sma_cross_quick.yaml", "--queue"]])
def test_queue_commands_without_a_server_say_how_to_start_one(tmp_path, cmd):
    from tradebus.engine.marketdata import MarketData

    from .proc import run_tradebus

    MarketData.open(tmp_path / "m.duckdb").close()
    res = run_tradebus(*cmd, "--db", str(tmp_path / "m.duckdb"), env={"TRADEBUS_HOME": str(tmp_path),
                                                                      "TRADEBUS_NATS_URL": ""})
    assert res.returncode != 0
    assert "no NATS server to connect to" in res.stderr and "tradebus nats" in res.stderr
