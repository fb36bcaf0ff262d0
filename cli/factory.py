"""The strategy factory's commands: sweep, worker, validate, scenarios, experiments."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from tradebus.cli.common import (
    ExperimentsOpt,
    MarketOpt,
    NatsUrlOpt,
    app,
    err,
    experiments_app,
    fail,
    out,
    read_experiments,
    stop_event,
)


@app.command()
def sweep(
    job_path: Path = typer.Argument(..., metavar="JOB", help="Sweep job YAML (see configs/sweeps/)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes (default: one per core)."),
    queue: bool = typer.Option(False, "--queue", help="Queue the trials on NATS JetStream for `tradebus worker`s "
                               "(on any machine reaching the server) and collect their results."),
    batch: int = typer.Option(16, "--batch", min=1, help="--queue: trials per task."),
    idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", help="--queue: give up after this many "
                                                 "seconds without a result (default: wait)."),
    nats_url: Optional[str] = NatsUrlOpt,
    db: Optional[Path] = MarketOpt,
    experiments: Optional[Path] = ExperimentsOpt,
) -> None:
    """Run a sweep job's trials through the compiled loop into the experiments table (resumable)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from tradebus.bus.natsserver import NatsServerError
    from tradebus.configs.schema import ConfigError
    from tradebus.duck import DuckLockedError
    from tradebus.engine.marketdata import MarketData, MarketDataError
    from tradebus.factory.experiments import Tracker
    from tradebus.factory.sweep import load_job, run_sweep

    try:
        job = load_job(job_path)
    except ConfigError as exc:
        fail(str(exc))
    t0 = time.perf_counter()
    note = ""
    try:
        with MarketData.open(db, read_only=True) as md, Tracker.open(experiments) as tracker, Progress(
            TextColumn(f"sweep {job.job}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=err, transient=False,
        ) as bar:
            task = bar.add_task("trials", total=None)
            progress = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
            if queue:
                queued = asyncio.run(_queued_sweep(job, md, tracker, nats_url, batch, idle_timeout, progress))
                report = queued.sweep
                note = f" by workers over NATS ({queued.tasks} tasks, {queued.duplicates} repeated results ignored)"
            else:
                report = run_sweep(job, md, tracker, workers=workers, progress=progress)
            top = tracker.top(5, validated_only=False, job=job.job)
    except (DuckLockedError, ConfigError, MarketDataError, NatsServerError, TimeoutError) as exc:
        fail(str(exc))
    secs = time.perf_counter() - t0
    out.print(f"job {job.job}: {report.trials:,} trials ({report.invalid:,} refused combinations not counted); "
              f"ran {report.ran:,}, already done {report.skipped:,}, failed {len(report.failed):,} in {secs:.1f}s{note}")
    if report.features_computed:
        rate = report.ran / secs if secs > 0 else 0.0
        out.print(f"{rate:,.0f} trials/s; indicators computed {report.features_computed:,} times and shared "
                  f"{report.features_reused:,} times (largest worker memo {report.memo_peak_bytes / 2**20:,.0f} MB)",
                  style="dim")
    if report.stale:
        out.print(f"{report.stale:,} earlier trials of {job.job} were computed by other code or on other data:"
                  " kept in the table, no longer counted or listed")
    for tid, why in report.failed[:5]:
        out.print(f"  failed {tid}: {why}")
    if top:
        _experiments_table(top, f"best of {job.job} by score (not yet validated)")
    if report.failed:  # the table keeps what finished; the exit code says the job is not whole
        fail(f"{len(report.failed):,} of {report.ran:,} trials run failed (first reasons above); the"
              f" {report.ran - len(report.failed):,} that finished are in the table", code=2)


async def _queued_sweep(job, md, tracker, nats_url, batch, idle_timeout, progress):
    from tradebus.bus.connect import require_nats_url
    from tradebus.bus.nats import NatsBus
    from tradebus.factory.distributed import run_queued_sweep

    bus = await NatsBus.connect(require_nats_url(nats_url), name=f"sweep-{job.job}")
    try:
        return await run_queued_sweep(job, md, tracker, bus, batch=batch, progress=progress, idle_timeout=idle_timeout)
    finally:
        await bus.close()


@app.command()
def worker(
    nats_url: Optional[str] = NatsUrlOpt,
    db: Optional[Path] = MarketOpt,
    name: Optional[str] = typer.Option(None, "--name", help="How results name this worker (default host-pid)."),
    ack_wait: float = typer.Option(30.0, "--ack-wait", min=1.0, help="Seconds before an unacknowledged task goes "
                                   "to another worker (the consumer's setting: the first worker sets it)."),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", help="Exit after this many idle seconds."),
) -> None:
    """Pull sweep tasks from NATS JetStream and run them on this machine's candles, until Ctrl-C."""
    from tradebus.bus.connect import require_nats_url
    from tradebus.bus.nats import NatsBus
    from tradebus.bus.natsserver import NatsServerError
    from tradebus.duck import DuckLockedError
    from tradebus.engine.marketdata import MarketData, MarketDataError
    from tradebus.factory.distributed import run_worker

    async def run():
        stop = stop_event()
        bus = await NatsBus.connect(require_nats_url(nats_url), name="tradebus-worker")
        try:
            with MarketData.open(db, read_only=True) as md:
                return await run_worker(bus, md, name=name, ack_wait=ack_wait, idle_exit=idle_exit, stop=stop)
        finally:
            await bus.close()

    try:
        report = asyncio.run(run())
    except (NatsServerError, MarketDataError, DuckLockedError) as exc:
        fail(str(exc))
    out.print(f"worker: {report.tasks} tasks, {report.trials} trials, {report.refused} refused (different data)")


@app.command()
def validate(
    ids: Optional[list[str]] = typer.Argument(None, metavar="[ID]...", help="Experiment ids (unique prefixes do)."),
    job: Optional[str] = typer.Option(None, "--job", help="Without ids: candidates from this job."),
    top: int = typer.Option(5, "--top", min=1, help="Without ids: how many of the best by score."),
    rules_path: Optional[Path] = typer.Option(None, "--rules", help="Validation rules YAML (default: the thresholds in the README)."),
    db: Optional[Path] = MarketOpt,
    experiments: Optional[Path] = ExperimentsOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per experiment: id, status, reasons, "
                                 "test return and every detail the verdict rests on."),
) -> None:
    """Holdout, walk-forward, multi-asset, deflated Sharpe and PBO; the verdict is written to the experiment."""
    from tradebus.configs.schema import ConfigError
    from tradebus.duck import DuckLockedError
    from tradebus.engine.market import MissingDataError
    from tradebus.engine.marketdata import MarketData, MarketDataError
    from tradebus.factory.experiments import Tracker
    from tradebus.factory.validation import load_rules, run_validation, select

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        rules = load_rules(rules_path)
        with MarketData.open(db, read_only=True) as md, Tracker.open(experiments) as tracker:
            exps = select(tracker, ids or [], job, top)
            if not exps:
                fail("no experiments to validate" + (f" in job {job!r}" if job else "") + "; run tradebus sweep JOB first")
            with Progress(TextColumn("validating"), BarColumn(), MofNCompleteColumn(), TextColumn("experiments"),
                          TimeElapsedColumn(), console=err, transient=True) as bar:
                task = bar.add_task("validate", total=len(exps))
                results = run_validation(tracker, md, exps, rules,
                                         progress=lambda d, t: bar.update(task, completed=d, total=t))
    except (DuckLockedError, ConfigError, MarketDataError, MissingDataError, KeyError) as exc:
        fail(str(exc).strip("'\""))
    if as_json:
        for e, v in results:
            sys.stdout.write(json.dumps({"id": e["id"], "status": v.status, "reasons": v.reasons,
                                         "test_return": v.test_return, "test_period": v.test_period,
                                         "details": v.details}, default=float) + "\n")
        return
    table = Table(title="validation")
    for col in ("id", "strategy", "symbol", "parameters", "sharpe", "test return", "walk-fwd", "multi-asset", "DSR",
                "PBO", "status"):
        table.add_column(col)
    pct = lambda v: "-" if v is None or v != v else f"{v:.0%}"  # noqa: E731
    for e, v in results:
        d = v.details
        table.add_row(e["id"], e["strategy"], e["symbol"], " ".join(f"{k}={x}" for k, x in e.params.items()),
                      f"{e['sharpe']:.2f}" if e["sharpe"] is not None else "-",
                      "-" if v.test_return is None else f"{v.test_return:+.1%}",
                      pct(d.get("walk_forward", {}).get("pass_rate")), pct(d.get("multi_asset", {}).get("positive_rate")),
                      "-" if "dsr" not in d else f"{d['dsr']['value']:.3f}",
                      "-" if "pbo" not in d else f"{d['pbo']['value']:.2f}", v.status)
    out.print(table)
    for e, v in results:
        for why in v.reasons:
            out.print(f"  {e['id']} {v.status}: {why}")


@app.command()
def scenarios(
    path: Path = typer.Argument(..., help="Scenario file (configs/scenarios/*.yaml)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/scenarios-JOB)."),
    db: Optional[Path] = MarketOpt,
    experiments: Optional[Path] = ExperimentsOpt,
) -> None:
    """Ensembles, regime-adaptive systems and sensitivity scans from a finished sweep, compared in report.html."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from tradebus.duck import DuckLockedError
    from tradebus.engine.market import MissingDataError
    from tradebus.engine.marketdata import MarketData
    from tradebus.factory.experiments import Tracker
    from tradebus.factory.scenarios import load_scenarios, run_scenarios, write_outputs

    try:
        spec = load_scenarios(path)
        with MarketData.open(db, read_only=True) as md, Tracker.open(experiments, read_only=True) as tracker, \
                Progress(TextColumn("scenarios {task.description}"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("", total=None)
            rep = run_scenarios(spec, tracker, md, progress=lambda what, done, total: bar.update(
                task, description=what, completed=done, total=total))
    except (DuckLockedError, LookupError, ValueError, FileNotFoundError, MissingDataError) as exc:  # ValueError: config, market data
        fail(str(exc).strip("'\""))
    target = out_dir or Path("runs") / f"scenarios-{spec.job}"
    write_outputs(rep, target)
    table = Table(title=f"scenarios of {spec.job} (train -> test)")
    for col in ("scenario", "kind", "return", "sharpe", "max dd", "trades"):
        table.add_column(col)
    both = lambda r, k, f: f"{format(r.train.metrics[k], f)} -> {format(r.test.metrics[k], f)}"  # noqa: E731
    for r in rep.results:
        if r.skipped:
            table.add_row(r.name, r.kind, "skipped", "-", "-", "-")
            continue
        table.add_row(r.name, r.kind, both(r, "return_pct", "+.1%"), both(r, "sharpe", ".2f"),
                      both(r, "max_drawdown", ".1%"), both(r, "total_trades", "d"))
    out.print(table)
    for r in rep.results:
        out.print(f"  {r.name}: {'skipped: ' + r.skipped if r.skipped else r.description}", highlight=False)
    for w in rep.warnings:
        out.print(f"warning: {w}")
    out.print(f"report: {target / 'report.html'}")


def _experiments_table(rows, title: str, as_json: bool = False) -> None:
    """Rows as a table (full ids: they are what `experiments show` and `validate` take), or JSON lines."""
    if as_json:
        for e in rows:
            sys.stdout.write(json.dumps(_experiment_json(e), default=str) + "\n")
        return
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for col in ("strategy", "symbol", "tf", "parameters", "return", "sharpe", "max dd", "trades", "score", "status"):
        table.add_column(col)
    for e in rows:
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        params = " ".join(f"{k}={v}" for k, v in e.params.items())
        table.add_row(e["id"], e["strategy"], e["symbol"], e["timeframe"], params,
                      fmt(e["return_pct"], "+.1%"), fmt(e["sharpe"], ".2f"), fmt(e["max_drawdown"], ".1%"),
                      str(e["total_trades"]), fmt(e["score"], ".3f"), e["validation_status"] or "-")
    out.print(table)


def _experiment_json(e) -> dict:
    """A row for machines: JSON columns parsed, block statistics left out (`store query` has them)."""
    row = {k: v for k, v in e.row.items() if k != "block_stats"}
    for k in ("parameters", "config", "cost_model", "validation_details"):
        if isinstance(row.get(k), str):
            row[k] = json.loads(row[k])
    return row


@experiments_app.command("top")
def experiments_top(
    n: int = typer.Option(10, "-n", min=1, help="How many."),
    all_: bool = typer.Option(False, "--all", help="Include trials not validated (default: passed only)."),
    job: Optional[str] = typer.Option(None, "--job", help="Only this sweep job's trials."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Only this strategy."),
    symbol: Optional[str] = typer.Option(None, "--symbol", help="Only this symbol."),
    experiments: Optional[Path] = ExperimentsOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per trial."),
) -> None:
    """Best trials by score: validated ones only unless --all."""
    with read_experiments(experiments) as tracker:
        rows = tracker.top(n, validated_only=not all_, job=job, strategy=strategy, symbol=symbol)
    if not rows and not as_json:
        out.print("no trials match" + ("" if all_ else " (none has passed validation yet; --all shows every trial)"))
        return
    _experiments_table(rows, "top experiments" + (" (all)" if all_ else " (validated)"), as_json)


@experiments_app.command("heatmap")
def experiments_heatmap(
    job: str = typer.Option(..., "--job", help="The sweep job."),
    x: str = typer.Option(..., "--x", help="Parameter along the x axis (a strategy parameter or a dotted override)."),
    y: str = typer.Option(..., "--y", help="Parameter along the y axis."),
    metric: str = typer.Option("sharpe", "--metric", help="Column to show: sharpe, return_pct, max_drawdown, score, ..."),
    symbol: Optional[str] = typer.Option(None, "--symbol", help="Only this symbol's trials (default: all, averaged)."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="HTML page (default runs/heatmap-JOB-X-Y.html)."),
    experiments: Optional[Path] = ExperimentsOpt,
) -> None:
    """A sweep's metric over two of its parameters, as a heatmap page (other parameters averaged)."""
    from tradebus.engine.report import parameter_grid, render_heatmap
    from tradebus.factory.experiments import COLUMNS

    if metric not in COLUMNS or COLUMNS[metric] not in ("DOUBLE", "BIGINT"):
        fail(f"--metric {metric!r}: a number column of the experiments table: "
              + ", ".join(k for k, t in COLUMNS.items() if t in ("DOUBLE", "BIGINT")))
    with read_experiments(experiments) as tracker:
        rows = [e for e in tracker.job_rows(job) if symbol is None or e["symbol"] == symbol]
    if not rows:
        fail(f"no trials of job {job!r}" + (f" on {symbol}" if symbol else "") + " (see `tradebus experiments top --all`)")
    varied = sorted({k for e in rows for k in e.params})
    for name, axis in ((x, "--x"), (y, "--y")):
        if name not in varied:
            fail(f"{axis} {name!r}: job {job} varied {', '.join(varied) or 'nothing'}")
    both = [e for e in rows if x in e.params and y in e.params]
    xs, ys, mean, count = parameter_grid([(e.params, e[metric]) for e in both], x, y)
    path = out_path or Path("runs") / f"heatmap-{job}-{x}-{y}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    others = sorted({k for e in both for k in e.params} - {x, y})
    render_heatmap(path, f"{job}: {metric} by {x} and {y}",
                   f"{int(count.sum()):,} of the job's {len(both):,} trials that vary both have a {metric}"
                   + (f", on {symbol}" if symbol else "; every symbol and timeframe averaged")
                   + (f"; averaged over {', '.join(others)}" if others else ""), x, y, metric, xs, ys, mean, count)
    out.print(f"{len(xs)} x {len(ys)} cells from {int(count.sum()):,} trials; page: {path}")


@experiments_app.command("failures")
def experiments_failures(strategy: str = typer.Argument(..., help="Strategy id (see `tradebus strategies`)."),
                         n: int = typer.Option(20, "-n", min=1, help="How many."),
                         experiments: Optional[Path] = ExperimentsOpt) -> None:
    """What did not work for a strategy: disqualified, rejected or losing trials."""
    with read_experiments(experiments) as tracker:
        rows = tracker.failures(strategy, n)
    _experiments_table(rows, f"failures of {strategy}")
    for e in rows:
        if e["disqualified"]:
            out.print(f"  {e['id']}: {e['disqualified']}")


@experiments_app.command("show")
def experiments_show(exp_id: str = typer.Argument(..., help="Experiment id (a unique prefix is enough)."),
                     experiments: Optional[Path] = ExperimentsOpt,
                     as_json: bool = typer.Option(False, "--json", help="The row as one JSON object.")) -> None:
    """Every column of one trial (returns and drawdowns as percentages)."""
    from tradebus import console as fmt

    with read_experiments(experiments) as tracker:
        try:
            e = tracker.get(exp_id)
        except KeyError as exc:
            fail(str(exc))
    if e is None:
        fail(f"no experiment {exp_id!r}")
    if as_json:
        sys.stdout.write(json.dumps(_experiment_json(e), default=str) + "\n")
        return
    table = Table(show_header=False, title=f"experiment {e['id']}")
    for k, v in e.row.items():
        if k != "block_stats":
            table.add_row(k, fmt.metric(k, v))
    out.print(table)


@experiments_app.command("summary")
def experiments_summary(n: int = typer.Option(10, "-n", min=1, help="How many of the best trials it names."), experiments: Optional[Path] = ExperimentsOpt) -> None:
    """The concise text an LLM research prompt gets."""
    with read_experiments(experiments) as tracker:
        out.print(tracker.summary_for_llm(n))
