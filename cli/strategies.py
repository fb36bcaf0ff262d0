"""Strategy commands: list, new (scaffold your own), check."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from tradebus.cli.common import HELP, app, err, fail, out, write_new

strategies_app = typer.Typer(help="Strategies: list them, scaffold your own, check one.", invoke_without_command=True,
                              context_settings=HELP)
app.add_typer(strategies_app, name="strategies")


@strategies_app.callback()
def strategies(ctx: typer.Context) -> None:
    """List the built-in strategies (and those installed as entry points) with their parameters and defaults."""
    if ctx.invoked_subcommand is not None:
        return
    from importlib.metadata import entry_points

    from tradebus.components.strategies import ENTRY_POINTS, StrategyError, get, known

    defs = dict(known())
    for ep in entry_points(group=ENTRY_POINTS):
        try:
            defs[ep.name] = get(ep.name)
        except StrategyError as exc:
            err.print(f"[yellow]entry point {ep.name}: {exc}[/]")
    table = Table("strategy", "what it does", "params (default)", "step")
    for sid, defn in sorted(defs.items()):
        params = ", ".join(f"{name}={field.get_default(call_default_factory=True)!r}" if not field.is_required()
                           else f"{name} (required)"
                           for name, field in defn.params.model_fields.items())
        table.add_row(sid, defn.description, params, "compiled" if defn.compiled else "plain Python")
    out.print(table)
    out.print("Your own: tradebus strategies new NAME, then name it in a config as module:Class.")


@strategies_app.command("new")
def strategies_new(
    name: str = typer.Argument(..., help="Module name of the strategy (lowercase, e.g. my_breakout)."),
    directory: Path = typer.Option(Path("."), "--dir", help="Folder to write NAME.py, test_NAME.py and NAME.yaml into."),
) -> None:
    """Scaffold a strategy of your own: its module, a test (worked decisions, no look-ahead, kernel = replay)
    and a system config that runs it."""
    from tradebus.components.strategies import scaffold

    problem = scaffold.check_name(name)
    if problem:
        fail(problem)
    written = write_new(directory, scaffold.files(name))
    cls = scaffold.class_name(name)
    out.print(f"wrote {', '.join(map(str, written))}\n"
              f"  its tests:  cd {directory} && pytest test_{name}.py\n"
              f"  run it:     cd {directory} && tradebus replay {name}.yaml\n"
              f"  in configs and sweep jobs: strategy id {name}:{cls} (from {directory})")


@strategies_app.command("check")
def strategies_check(
    strategy: str = typer.Argument(..., help="Strategy id: built-in, module:Class or entry point."),
    params: str = typer.Option("{}", "--params", help="Parameters as JSON, e.g. '{\"fast\": 10}'."),
) -> None:
    """Run the checks every strategy must pass on a practice market: no look-ahead, and (for a compiled
    step) the sweep kernel trading it exactly as the replay does."""
    from tradebus.components.strategies import StrategyError
    from tradebus.configs.schema import ConfigError
    from tradebus.replay import checks

    try:
        values = json.loads(params)
    except json.JSONDecodeError as exc:
        fail(f"--params: not JSON ({exc.msg}); got {params!r}")
    if not isinstance(values, dict):
        fail(f"--params: a JSON object of parameter names and values; got {params!r}")
    try:
        config = checks.practice_config(strategy, values)
    except ConfigError as exc:
        fail(str(exc))
    runs = [("no look-ahead", checks.no_lookahead, "events")]
    if config.strategy_def().compiled:
        runs.append(("sweep kernel = replay", checks.kernel_equals_replay, "fills"))
    else:
        out.print("[yellow]skip[/] sweep kernel = replay: a plain-Python step is never swept")
    failed = False
    for title, check, unit in runs:
        try:
            n = check(config)
        except (checks.CheckFailed, StrategyError) as exc:  # StrategyError: a plain step returned no decision
            failed = True
            out.print(f"[red]FAIL[/] {title}: {exc}")
        else:
            out.print(f"[green]ok[/]   {title} ({n:,} {unit} compared)")
    if failed:
        raise typer.Exit(1)
