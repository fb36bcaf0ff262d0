"""Lifecycle commands: each system's stage as the store says, its history, admission, a person's approval."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from tradebus import settings
from tradebus.cli.common import HELP, StoreOpt, app, fail, open_reader, out
from tradebus.components.timeframes import day

lifecycle_app = typer.Typer(help="Systems' stages (candidate -> hygiene -> test -> demo -> live_test -> production), "
                            "folded from the store's Promotion events.", no_args_is_help=True, context_settings=HELP)
app.add_typer(lifecycle_app, name="lifecycle")


def _folded(store: Optional[Path]):
    from tradebus.components.lifecycle import fold

    reader = open_reader(store)
    try:
        return fold(r.event for r in reader.read(types=["promotion"]))
    finally:
        reader.close()


def _record(store: Optional[Path], system: str, to: str, rule: str, evidence: dict) -> None:
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
    out.print(f"{system}: {event.from_status} -> {to} ({rule}) recorded in {path}")


@lifecycle_app.command("status")
def lifecycle_status(store: Optional[Path] = StoreOpt,
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
            table.add_row(r["system"], r["status"], r["since"], r["rule"],
                          ", ".join(f"{k}={v}" for k, v in sorted(r["evidence"].items())))
        out.print(table)
    for r in refused:
        out.print(f"[yellow]refused:[/] {r['system']} -> {r['to']} by {r['rule']!r}: {r['why']}")


@lifecycle_app.command("history")
def lifecycle_history(system: str = typer.Argument(..., help="The system's id."), store: Optional[Path] = StoreOpt) -> None:
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
        evidence = ", ".join(f"{k}={v}" for k, v in sorted(p.evidence.items()))
        out.print(f"{day(p.ts_event)}  {p.from_status} -> {p.to_status}  {p.rule}  {evidence}{mark}")


@lifecycle_app.command("add")
def lifecycle_add(config_path: Path = typer.Argument(..., metavar="CONFIG", help="A system config to admit."),
                  store: Optional[Path] = StoreOpt) -> None:
    """Admit a system as a candidate (its config is validated first)."""
    from tradebus.components.lifecycle import ADMITTED
    from tradebus.configs.schema import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    _record(store, config.system, "candidate", ADMITTED, {"config": str(config_path),
                                                          "config_hash": config.config_hash()[:16]})


@lifecycle_app.command("approve")
def lifecycle_approve(system: str = typer.Argument(..., help="The system's id."),
                      to: str = typer.Option(..., "--to", help="live_test or production."),
                      by: Optional[str] = typer.Option(None, "--by", help="Who approves (default: this user)."),
                      reason: str = typer.Option("", "--reason", help="Why, kept in the evidence."),
                      store: Optional[Path] = StoreOpt) -> None:
    """A person's approval: the only way into live_test (from demo) and production (from live_test)."""
    from tradebus.components.lifecycle import APPROVED, GATED

    if to not in GATED:
        fail(f"--to {to!r}: approval moves a system into {' or '.join(GATED)}; the other stages follow the rules")
    who = (by or getpass.getuser()).strip()
    if not who:
        fail("--by: name the person approving")
    _record(store, system, to, APPROVED, {"approved_by": who, "reason": reason})


@lifecycle_app.command("disable")
def lifecycle_disable(system: str = typer.Argument(..., help="The system's id."),
                      reason: str = typer.Option(..., "--reason", help="Why, kept in the evidence."),
                      store: Optional[Path] = StoreOpt) -> None:
    """Take a system out of the lifecycle (any stage); it returns only as a candidate."""
    _record(store, system, "disabled", "disabled_by_person", {"by": getpass.getuser(), "reason": reason})
