"""Lifecycle commands: each system's stage as the store says, its history, admission, a person's approval."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path

import typer
from rich.table import Table
from tradebus import settings
from tradebus.cli.common import (
    HELP,
    MarketOpt,
    StoreOpt,
    app,
    err,
    fail,
    open_reader,
    out,
    read_experiments,
)
from tradebus.components.timeframes import day

lifecycle_app = typer.Typer(help="Systems' stages (candidate -> hygiene -> test -> demo -> live_test -> production), "
                            "folded from the store's Promotion events.", no_args_is_help=True, context_settings=HELP)
app.add_typer(lifecycle_app, name="lifecycle")


def _folded(store: Path | None):
    from tradebus.components.lifecycle import fold

    reader = open_reader(store)
    try:
        return fold(r.event for r in reader.read(types=["promotion"]))
    finally:
        reader.close()


def _evidence(evidence: dict) -> str:
    """A move's evidence on one line (an admitted config, kept whole in the store, by its hash only)."""
    from tradebus.factory.lifecycle import CONFIG_KEY

    return ", ".join(f"{k}={v}" for k, v in sorted(evidence.items()) if k != CONFIG_KEY)


def _record(store: Path | None, system: str, to: str, rule: str, evidence: dict) -> None:
    """Append the move (checked against the folded status) to the store."""
    from tradebus.bus.ids import IdGenerator
    from tradebus.components.lifecycle import Folded, LifecycleError, move
    from tradebus.eventstore.store import EventStore, StoreError

    path = store or settings.default_store_path()
    folded = _folded(path) if path.exists() else Folded()
    now = time.time_ns()
    stamp = {"id": IdGenerator(None).next(now), "ts_event": now, "ts_init": now, "run": "command-lifecycle"}
    try:
        event = move(folded, stamp, system, to, rule, evidence)
    except LifecycleError as exc:
        fail(f"{exc}; nothing recorded")
    try:
        with EventStore.open_writer(path) as st:
            st.append([event])
    except StoreError as exc:
        fail(f"{exc}; nothing recorded")
    moved = "admitted as a candidate" if rule == "admitted" and event.from_status == to else \
        f"{event.from_status} -> {to} ({rule})"
    out.print(f"{system}: {moved}, recorded in {path}")


@lifecycle_app.command("status")
def lifecycle_status(store: Path | None = StoreOpt,
                     as_json: bool = typer.Option(False, "--json", help="One JSON list instead of the table.")) -> None:
    """Every system's stage, since when, and the rule and evidence of its last move."""
    folded = _folded(store)
    rows = [{"system": s.system, "status": s.status, "since": day(s.since), "rule": s.rule, "evidence": s.evidence,
             "moves": s.moves} for s in sorted(folded.systems.values(), key=lambda s: s.system)]
    refused = [{"system": p.system, "to": p.to_status, "rule": p.rule, "why": why} for p, why in folded.refused]
    if as_json:
        out.print(json.dumps({"systems": rows, "refused": refused}, indent=2))
        return
    if not rows:
        out.print("no system has a lifecycle status yet; admit one: tradebus lifecycle add CONFIG")
    else:
        table = Table(title="lifecycle")
        for col in ("system", "status", "since", "rule", "evidence"):
            table.add_column(col, no_wrap=col != "evidence")
        for r in rows:
            table.add_row(r["system"], r["status"], r["since"], r["rule"], _evidence(r["evidence"]))
        out.print(table)
    for r in refused:
        out.print(f"[yellow]refused:[/] {r['system']} -> {r['to']} by {r['rule']!r}: {r['why']}")


@lifecycle_app.command("history")
def lifecycle_history(system: str = typer.Argument(..., help="The system's id."), store: Path | None = StoreOpt) -> None:
    """Every move of one system, oldest first, with its rule and evidence (refused ones marked)."""
    from tradebus.components.lifecycle import fold

    reader = open_reader(store)
    try:
        moves = [r.event for r in reader.read(types=["promotion"]) if r.event.system == system]
    finally:
        reader.close()
    if not moves:
        fail(f"{system}: no lifecycle moves in the store")
    refused = {id(p): why for p, why in fold(moves).refused}
    for p in moves:
        mark = f"  [yellow]refused: {refused[id(p)]}[/]" if id(p) in refused else ""
        evidence = _evidence(p.evidence)
        out.print(f"{day(p.ts_event)}  {p.from_status} -> {p.to_status}  {p.rule}  {evidence}{mark}")


@lifecycle_app.command("add")
def lifecycle_add(config_path: Path | None = typer.Argument(None, metavar="[CONFIG]", help="A system config to admit."),
                  experiment: str | None = typer.Option(None, "--experiment", help="Admit a sweep's trial (an "
                                                           "experiment id or unique prefix) instead of a config file."),
                  system: str | None = typer.Option(None, "--system", help="With --experiment: the system's id "
                                                       "(default: the strategy, symbol, timeframe and the id's first 8)."),
                  experiments: Path | None = typer.Option(None, "--experiments", help="Experiments file (default: "
                                                             "$TRADEBUS_HOME/experiments.duckdb)."),
                  store: Path | None = StoreOpt) -> None:
    """Admit a system as a candidate: a config file, or a sweep's trial (its job's trials are then counted in
    its deflated Sharpe). The config is validated first and kept whole in the store."""
    from tradebus.components.lifecycle import ADMITTED
    from tradebus.configs.schema import ConfigError, load_config, parse_config
    from tradebus.factory.lifecycle import admission_evidence

    if (config_path is None) == (experiment is None):
        fail("give a CONFIG file or --experiment ID (one of them)")
    try:
        if config_path is not None:
            config = load_config(config_path)
            if system:
                config = parse_config({**config.model_dump(mode="json"), "system": system}, config_path)
            source = str(config_path)
        else:
            tracker = read_experiments(experiments)
            try:
                exp = tracker.get(experiment)
            except KeyError as exc:
                fail(str(exc.args[0]))
            finally:
                tracker.close()
            if exp is None:
                fail(f"--experiment {experiment!r}: no such experiment (tradebus experiments top --all)")
            data = json.loads(exp["config"])
            data["system"] = system or f"{data['strategy']['id']}_{exp['symbol']}_{exp['timeframe']}_{exp['id'][:8]}".lower()
            config = parse_config(data, f"experiment {exp['id']}")
            experiment, source = exp["id"], f"experiment {exp['id']}"
    except ConfigError as exc:
        fail(str(exc))
    _record(store, config.system, "candidate", ADMITTED, admission_evidence(config, source, experiment or ""))


@lifecycle_app.command("approve")
def lifecycle_approve(system: str = typer.Argument(..., help="The system's id."),
                      to: str = typer.Option(..., "--to", help="live_test or production."),
                      by: str | None = typer.Option(None, "--by", help="Who approves (default: this user)."),
                      reason: str = typer.Option("", "--reason", help="Why, kept in the evidence."),
                      rules_path: Path | None = typer.Option(None, "--rules", help="Lifecycle thresholds YAML "
                                                                "(the demo record's minimum)."),
                      db: Path | None = MarketOpt, store: Path | None = StoreOpt) -> None:
    """A person's approval: the only way into live_test (from demo) and production (from live_test), and only
    once the record of the stage before is complete (days, trades, not significantly worse than its shadow)."""
    from tradebus.components.lifecycle import APPROVED, GATED, PATH

    if to not in GATED:
        fail(f"--to {to!r}: approval moves a system into {' or '.join(GATED)}; the other stages follow the rules")
    who = (by or getpass.getuser()).strip()
    if not who:
        fail("--by: name the person approving")
    path = store or settings.default_store_path()
    current = _folded(path).systems.get(system) if path.exists() else None
    record: dict = {}
    if current is not None and current.status == PATH[PATH.index(to) - 1]:
        record = _stage_record(system, current.status, _rules(rules_path), db, path)
    _record(store, system, to, APPROVED, {"approved_by": who, "reason": reason, **record})


def _stage_record(system: str, stage: str, rules, db: Path | None, store: Path) -> dict:
    """The record of the stage an approval ends (its daemon's store against its shadow replay); refuses the
    approval, naming what is missing, when it is not complete."""
    from tradebus.components.lifecycle import demo_eligible
    from tradebus.configs.schema import ConfigError
    from tradebus.engine.marketdata import MarketData, MarketDataError
    from tradebus.factory.lifecycle import Sources, admitted_config, running_record
    from tradebus.live import supervisor

    reader = open_reader(store)
    try:
        promotions = [r.event for r in reader.read(types=["promotion"])]
    finally:
        reader.close()
    try:
        config, _ = admitted_config(promotions, system)
    except ConfigError as exc:
        fail(f"{system}: {exc}; nothing recorded")
    try:
        with MarketData.open(db, read_only=True) as md:
            track, shadow = running_record(system, config, stage, Sources(md, None, supervisor.store_of,
                                                                          supervisor.read_store), rules)
    except (MarketDataError, FileNotFoundError):  # no market data: no shadow replay, which the rule reports
        track, shadow = running_record(system, config, stage, Sources(None, None, supervisor.store_of,
                                                                      supervisor.read_store), rules)
    d = demo_eligible(track, shadow, rules.demo)
    if not d.to:
        fail(f"{system}: the {stage} record is not complete: {d.why}; nothing recorded")
    return {k: v for k, v in d.evidence.items()}


@lifecycle_app.command("disable")
def lifecycle_disable(system: str = typer.Argument(..., help="The system's id."),
                      reason: str = typer.Option(..., "--reason", help="Why, kept in the evidence."),
                      store: Path | None = StoreOpt) -> None:
    """Take a system out of the lifecycle (any stage); it returns only as a candidate."""
    _record(store, system, "disabled", "disabled_by_person", {"by": getpass.getuser(), "reason": reason})


RulesOpt = typer.Option(None, "--rules", help="Lifecycle thresholds YAML (default: the shipped configs/lifecycle.yaml).")


def _rules(path: Path | None):
    from tradebus.configs.lifecycle import load_rules
    from tradebus.configs.schema import ConfigError

    try:
        return load_rules(path)
    except ConfigError as exc:
        fail(str(exc))


def _every(value: str | None) -> float | None:
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        n, unit = float(value[:-1]), value[-1]
        if unit not in units or not n > 0:
            raise ValueError
    except (ValueError, IndexError):
        fail(f"--every {value!r}: a positive number and a unit, like 30m, 1h or 1d")
    return n * units[unit]


@lifecycle_app.command("run")
def lifecycle_run(rules_path: Path | None = RulesOpt, store: Path | None = StoreOpt, db: Path | None = MarketOpt,
                  experiments: Path | None = typer.Option(None, "--experiments", help="Experiments file (default: "
                                                             "$TRADEBUS_HOME/experiments.duckdb)."),
                  every: str | None = typer.Option(None, "--every", help="Run again every interval (30m, 1h, 1d) "
                                                      "until Ctrl-C; default: once (for cron)."),
                  no_daemons: bool = typer.Option(False, "--no-daemons", help="Record the moves; start and stop no daemon."),
                  live: bool = typer.Option(False, "--live", help="Let the lifecycle start live daemons for systems a "
                                            "person approved into live_test or production (needs --limits)."),
                  limits: Path | None = typer.Option(None, "--limits", help="Risk limits YAML for the daemons it "
                                                        "starts, and the account cap the allocator stays inside."),
                  nats_url: str | None = typer.Option(None, "--nats-url", envvar="TRADEBUS_NATS_URL",
                                                         help="NATS server URL (to tell daemons of moves)."),
                  as_json: bool = typer.Option(False, "--json", help="The run's moves as JSON.")) -> None:
    """Evaluate every system once: check and validate candidates, read running systems' records, record the
    promotions, demotions and allocations, and start or stop daemons to match. Idempotent."""
    interval = _every(every)
    rules = _rules(rules_path)
    lim = None
    if limits is not None:
        from tradebus.configs.limits import load_limits
        from tradebus.configs.schema import ConfigError

        try:
            lim = load_limits(limits)
        except ConfigError as exc:
            fail(str(exc))
    if live and lim is None:
        fail("--live needs --limits FILE: the caps a live daemon enforces")
    from tradebus.factory.lifecycle import ERROR

    while True:
        started = time.monotonic()
        report = _run_once(rules, store, db, experiments, not no_daemons, lim, limits, live, nats_url, as_json)
        failed = [r.system for r in report.rows if r.rule == ERROR]
        if failed:
            err.print(f"error: {len(failed)} system(s) could not be evaluated: {', '.join(failed)} (the table says why; "
                      "the others' moves are recorded)")
        if interval is None:
            if failed:
                raise typer.Exit(1)
            return
        err.print(f"next run in {interval:g} s (Ctrl-C to stop)", style="dim")
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def _run_once(rules, store, db, experiments, daemons, lim, limits_path, live, nats_url, as_json, quiet: bool = False):
    from tradebus.duck import DuckLockedError
    from tradebus.engine.marketdata import MarketData, MarketDataError
    from tradebus.eventstore.store import StoreError
    from tradebus.factory.experiments import Tracker, default_path
    from tradebus.factory.lifecycle import Sources
    from tradebus.live import supervisor

    path = store or settings.default_store_path()
    exp_path = experiments or default_path()
    try:
        with MarketData.open(db, read_only=True) as md:
            tracker = Tracker.open(exp_path) if exp_path.exists() else None
            try:
                src = Sources(md, tracker, supervisor.store_of, supervisor.read_store)
                report = supervisor.run_once(path, src, rules, daemons=daemons, limits=lim, limits_path=limits_path,
                                             live=live, nats_url=nats_url, say=lambda m: err.print(m, style="dim"))
            finally:
                if tracker is not None:
                    tracker.close()
    except (MarketDataError, DuckLockedError, StoreError, FileNotFoundError) as exc:
        fail(str(exc))
    if not quiet:
        _print_run(report, as_json)
    return report


def _print_run(report, as_json: bool) -> None:
    if as_json:
        out.print(json.dumps({"systems": [vars(r) for r in report.rows],
                              "moves": [{"system": p.system, "from": p.from_status, "to": p.to_status, "rule": p.rule}
                                        for p in report.promotions],
                              "allocations": {a.system: a.weight for a in report.allocations},
                              "started": report.started, "stopped": report.stopped, "notes": report.notes}, indent=2))
        return
    if not report.rows:
        out.print("no system has a lifecycle status yet; admit one: tradebus lifecycle add CONFIG")
        return
    table = Table(title=f"lifecycle run · {len(report.promotions)} moves · {len(report.allocations)} allocations")
    for col in ("system", "was", "now", "rule", "why / what is missing"):
        table.add_column(col, no_wrap=col != "why / what is missing")
    for r in report.rows:
        moved = r.after != r.before
        table.add_row(r.system, r.before, f"[bold]{r.after}[/]" if moved else r.after, r.rule, r.why)
    out.print(table)
    for a in report.allocations:
        out.print(f"allocation: {a.system} weight {a.weight:.3f} ({a.method})")
    for what, items in (("started", report.started), ("stopped", report.stopped)):
        if items:
            out.print(f"{what}: {', '.join(items)}")
    for n in report.notes:
        out.print(f"[yellow]note:[/] {n}")


@app.command("refresh")
def refresh(jobs: list[Path] = typer.Option([], "--job", help="A sweep job whose trials to bring up to date (repeat)."),
            model_paths: list[Path] = typer.Option([], "--model", help="A forecast model to retrain when its promoted "
                                                   "version has expired (repeat)."),
            rules_path: Path | None = RulesOpt, store: Path | None = StoreOpt, db: Path | None = MarketOpt,
            experiments: Path | None = typer.Option(None, "--experiments", help="Experiments file (default: "
                                                       "$TRADEBUS_HOME/experiments.duckdb)."),
            endpoint: str | None = typer.Option(None, "--endpoint", envvar="TRADEBUS_BYBIT_ENDPOINT",
                                                   help="Bybit REST base URL (default mainnet)."),
            no_daemons: bool = typer.Option(False, "--no-daemons", help="Run the lifecycle without starting or "
                                            "stopping daemons."),
            workers: int | None = typer.Option(None, "--workers", min=1, help="Sweep worker processes.")) -> None:
    """Bring everything up to date, once (cron it): fetch every stored series since its last bar, run the
    sweep trials the new data made, retrain expired forecasters, then the lifecycle. Idempotent and resumable:
    each step skips what is done, so a second run does nothing and a killed one picks up where it stopped."""
    from tradebus.configs.schema import ConfigError
    from tradebus.duck import DuckLockedError
    from tradebus.engine.marketdata import MarketData, MarketDataError
    from tradebus.factory.experiments import Tracker
    from tradebus.factory.sweep import load_job, run_sweep
    from tradebus.live.bybit_public import BybitPublic, VenueError

    rules = _rules(rules_path)
    try:
        parsed_jobs = [load_job(j) for j in jobs]
        specs = [_model_spec(m) for m in model_paths]
    except ConfigError as exc:
        fail(str(exc))
    summary: list[tuple[str, str, str]] = []
    try:
        with MarketData.open(db) as md:
            client = BybitPublic(endpoint=endpoint)
            for key, result in _fetch_new(md, client):
                summary.append(("fetch", str(key), f"{result.new_rows:,} new rows"))
        if parsed_jobs:
            with MarketData.open(db, read_only=True) as md, Tracker.open(experiments) as tracker:
                for job in parsed_jobs:
                    err.print(f"sweep {job.job}: planning", style="dim")
                    rep = run_sweep(job, md, tracker, workers=workers)
                    summary.append(("sweep", job.job, f"{rep.ran} run, {rep.skipped} already stored"
                                    + (f", {rep.stale} stale" if rep.stale else "")))
        for path, spec in zip(model_paths, specs):
            summary.append(("forecast", spec.model, _retrain_if_due(path, spec, db)))
    except (MarketDataError, DuckLockedError, VenueError) as exc:
        fail(f"{exc}; what was done so far is kept: rerun to resume")
    report = _run_once(rules, store, db, experiments, not no_daemons, None, None, False, None, False, quiet=True)
    moves = ", ".join(f"{p.system} {p.from_status}->{p.to_status}" for p in report.promotions) or "none"
    summary.append(("lifecycle", f"{len(report.rows)} systems", f"moves: {moves}; "
                    f"{len(report.allocations)} allocations"))
    table = Table(title="refresh")
    for col in ("step", "what", "done"):
        table.add_column(col)
    for row in summary:
        table.add_row(*row)
    out.print(table)
    for n in report.notes:
        out.print(f"[yellow]note:[/] {n}")


def _fetch_new(md, client):
    """Every stored series fetched from its last bar to now (what is complete is skipped)."""
    from tradebus.components.timeframes import tf_ns
    from tradebus.replay.fetch import fetch_funding, fetch_klines

    now = client.server_time_ms() * 1_000_000
    for cov in md.series():
        key = cov.key
        if key.venue != "bybit" or cov.last is None:
            continue
        step = 1 if key.kind == "funding" else tf_ns(key.timeframe)
        fetcher = fetch_funding if key.kind == "funding" else fetch_klines
        err.print(f"fetch {key} since its last bar", style="dim")
        yield key, fetcher(client, md, key, int(cov.last) + step, now)


def _model_spec(path: Path):
    from tradebus.configs.forecast import load_model_spec

    return load_model_spec(path)


def _retrain_if_due(path: Path, spec, db: Path | None) -> str:
    """Train a model with no version, retrain one whose promoted version expired; else nothing."""
    from tradebus.cli.forecast import _dataset, _train
    from tradebus.engine import models

    home = settings.data_home()
    try:
        frozen = models.load(home, spec.model, None)
    except models.RegistryError:
        frozen = None  # no promoted version: train one
    ds = _dataset(spec, db)
    last = int(ds.table["time"].to_numpy().max()) if ds.table.num_rows else 0
    if frozen is not None and last <= frozen.valid_until:
        return f"{frozen.version} valid until {day(frozen.valid_until)}: nothing to do"
    _train(path, spec, ds, None, False, frozen)
    return "retrained (tradebus forecast list; promote a version with tradebus forecast promote)"
