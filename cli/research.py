"""The research loop: Claude proposes sweeps, the factory runs and validates them; its report."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tradebus.cli.common import HELP, MarketOpt, app, err, fail, out

research_app = typer.Typer(help="Claude proposes strategies from the experiments table; the factory tests them.",
                           context_settings=HELP, invoke_without_command=True)
app.add_typer(research_app, name="research")

SettingsOpt = typer.Option(None, "--settings", help="Research settings YAML (default: the shipped configs/research.yaml).")
ExpOpt = typer.Option(None, "--experiments", help="Experiments file (default: $TRADEBUS_HOME/experiments.duckdb).")


def _settings(path: Optional[Path], budget_usd: Optional[float] = None):
    from tradebus.configs.research import load_settings
    from tradebus.configs.schema import ConfigError

    try:
        rs = load_settings(path)
    except ConfigError as exc:
        fail(str(exc))
    return rs if budget_usd is None else rs.model_copy(update={"budget_usd": budget_usd})


@research_app.callback()
def research(ctx: typer.Context,
             iterations: int = typer.Option(3, "--iterations", min=1, max=1000, help="Iterations to run (or resume)."),
             budget_usd: Optional[float] = typer.Option(None, "--budget-usd", min=0.0001,
                                                        help="The run's hard spend limit in USD (default: the settings')."),
             run: Optional[str] = typer.Option(None, "--run", help="Resume this run (default: a new one)."),
             settings_path: Optional[Path] = SettingsOpt, db: Optional[Path] = MarketOpt,
             experiments: Optional[Path] = ExpOpt) -> None:
    """Run the loop: prompt from the experiments table -> a proposed sweep -> validated -> novelty -> sweep ->
    validation of its best -> recorded. Needs ANTHROPIC_API_KEY (ANTHROPIC_BASE_URL for another endpoint)."""
    if ctx.invoked_subcommand is not None:
        return
    import re

    from tradebus.duck import DuckLockedError
    from tradebus.engine.marketdata import MarketData, MarketDataError
    from tradebus.factory.experiments import Tracker
    from tradebus.factory.llm import Client, LlmError
    from tradebus.factory.research import ResearchLog, research as loop

    rs = _settings(settings_path, budget_usd)
    if run is not None and not re.fullmatch(r"[a-z0-9]{1,16}", run):
        fail(f"--run {run!r}: a run id is 1-16 lowercase letters and digits")
    run = run or secrets.token_hex(4)
    try:
        with MarketData.open(db, read_only=True) as md, Tracker.open(experiments) as tracker, ResearchLog.open() as log:
            log.run = run
            client = Client(rs.model, rs.max_tokens, rs.budget_usd, rs.budget_tokens, log, max_retries=rs.max_retries,
                            prices=(rs.price_per_mtok.input, rs.price_per_mtok.output) if rs.price_per_mtok else None)
            err.print(f"research run {run} · {rs.model} · budget ${rs.budget_usd:g} (resume: --run {run})", style="dim")
            try:
                outcomes = loop(client, log, md, tracker, rs, run, iterations, say=lambda m: err.print(m, style="dim"))
            except LlmError as exc:
                fail(f"run {run} stopped: {exc}; what was done is kept (resume: tradebus research --run {run})")
            spent = log.spent()
    except (MarketDataError, DuckLockedError, FileNotFoundError) as exc:
        fail(str(exc))
    table = Table(title=f"research run {run}: ${spent[1]:.4f}, {spent[0]:,} tokens")
    for col in ("#", "status", "job", "trials", "best", "verdict", "why"):
        table.add_column(col)
    for o in outcomes:
        table.add_row(str(o.iteration), o.status, o.job, str(o.trials), o.best[:12], o.verdict, o.reason)
    out.print(table)


@research_app.command("report")
def report(run: Optional[str] = typer.Option(None, "--run", help="The run (default: every run)."),
           as_json: bool = typer.Option(False, "--json", help="JSON instead of the table.")) -> None:
    """Iterations, valid proposals, survivors (validation passed), tokens and cost per survivor, per run."""
    from tradebus.factory.research import ResearchLog

    try:
        log = ResearchLog.open(read_only=True)
    except FileNotFoundError as exc:
        fail(str(exc))
    with log:
        rows = []
        for r in ([run] if run else log.runs()):
            its = log.iterations(r)
            calls = log.calls(r)
            usd = sum(c["usd"] for c in calls)
            survivors = sum(i["verdict"] == "passed" for i in its)
            rows.append({"run": r, "iterations": len(its), "valid_proposals": sum(i["status"] in ("swept", "duplicate")
                                                                                  for i in its),
                         "swept": sum(i["status"] == "swept" for i in its), "trials": sum(i["trials"] or 0 for i in its),
                         "survivors": survivors, "calls": len(calls),
                         "tokens": sum(c["input_tokens"] + c["output_tokens"] for c in calls), "usd": round(usd, 6),
                         "usd_per_survivor": round(usd / survivors, 6) if survivors else None})
    if as_json:
        out.print(json.dumps(rows, indent=2))
        return
    table = Table(title="research runs")
    for col in rows[0] if rows else ("run",):
        table.add_column(col)
    for r in rows:
        table.add_row(*("-" if v is None else str(v) for v in r.values()))
    out.print(table)


@research_app.command("baseline")
def research_baseline(run: str = typer.Option(..., "--run", help="The research run to compare."),
                      seed: int = typer.Option(0, "--seed", help="The random generator's seed."),
                      settings_path: Optional[Path] = SettingsOpt, db: Optional[Path] = MarketOpt,
                      experiments: Optional[Path] = ExpOpt) -> None:
    """The same budget in trials spent by a random-spec generator (run RUN + 'r'), through the same sweep,
    novelty and validation; then `research report` shows both."""
    from tradebus.duck import DuckLockedError
    from tradebus.engine.marketdata import MarketData, MarketDataError
    from tradebus.factory.experiments import Tracker
    from tradebus.factory.research import ResearchLog, baseline

    rs = _settings(settings_path)
    try:
        with MarketData.open(db, read_only=True) as md:
            with ResearchLog.open(read_only=True) as log:  # checked before anything is opened for writing
                known = bool(log.iterations(run))
            if not known:
                fail(f"--run {run!r}: no such research run (tradebus research report)")
            with Tracker.open(experiments) as tracker, ResearchLog.open() as log:
                outcomes = baseline(log, md, tracker, rs, run, seed, say=lambda m: err.print(m, style="dim"))
    except (MarketDataError, DuckLockedError, FileNotFoundError) as exc:
        fail(str(exc))
    passed = sum(o.verdict == "passed" for o in outcomes)
    out.print(f"baseline {run}r: {len(outcomes)} random proposals, {sum(o.trials for o in outcomes)} trials, "
              f"{passed} passed validation (tradebus research report)")
