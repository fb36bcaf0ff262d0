"""The paper, demo and live daemons and their controls: kill, resume, status."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from tradebus import settings
from tradebus.cli.common import NatsUrlOpt, app, err, fail, out, stop_event

KEY_PREFIX = {"demo": "TRADEBUS_DEMO", "live": "TRADEBUS_LIVE"}


def _daemon_systems(path: Path) -> tuple[str, list]:
    """(name, system configs) of a system config, or of a portfolio file's systems (capital from their weights)."""
    from tradebus.configs.portfolio import is_portfolio, load_portfolio
    from tradebus.configs.schema import load_config, read_yaml

    if is_portfolio(read_yaml(path)):
        pf = load_portfolio(path)
        return pf.name, pf.systems
    config = load_config(path)
    return config.system, [config]


def _daemon(mode: str, config_path: Path, store: Optional[Path], nats_url: Optional[str], limits: Optional[Path],
            keys: Optional[Path], rest_url: Optional[str], public_ws: Optional[str], private_ws: Optional[str],
            heartbeat: float) -> None:
    from tradebus.bus.connect import open_bus
    from tradebus.bus.natsserver import NatsServerError
    from tradebus.configs.limits import DEMO_DEFAULTS, load_limits
    from tradebus.configs.schema import ConfigError
    from tradebus.eventstore.store import StoreError
    from tradebus.live.bybit import Credentials
    from tradebus.live.bybit_public import VenueError
    from tradebus.engine.wiring import forecast_model
    from tradebus.live.daemon import EXIT_FAIL_CLOSED, DaemonGroup, DaemonSettings, check_daemons

    try:
        name, configs = _daemon_systems(config_path)
        lim = load_limits(limits) if limits else DEMO_DEFAULTS
        creds = Credentials.load(KEY_PREFIX[mode], keys) if mode != "paper" else None
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if mode == "live":
        demo_key = os.environ.get("TRADEBUS_DEMO_API_KEY")
        if demo_key and demo_key == creds.key:
            fail("live needs its own API key: TRADEBUS_LIVE_API_KEY is the demo key")
    store_path = store or settings.default_store_path(mode)

    def daemon_settings(bus) -> list[DaemonSettings]:
        return [DaemonSettings(
            mode=mode, config=config, creds=creds, limits=lim, store_path=store_path, bus=bus,
            status_dir=settings.daemons_dir(), rest_url=rest_url, public_ws=public_ws, private_ws=private_ws,
            heartbeat_s=heartbeat,
            manifest={"config_path": str(config_path), "limits_path": str(limits) if limits else "demo defaults"})
            for config in configs]

    try:
        check_daemons(daemon_settings(None))
        for config in configs:  # a forecaster must load and cover the bars it is about to see
            if config.forecaster is not None:
                why = forecast_model(config).covers(time.time_ns())
                if why:
                    fail(f"{config_path}: {config.system}: {why}")
    except ValueError as exc:
        fail(f"{config_path}: {exc}")

    async def run() -> int:
        stop = stop_event()
        async with open_bus("nats", url=nats_url, name=f"tradebus-{mode}-{name}") as bus:
            feed = " · simulated exchange on the live public feed" if mode == "paper" else ""
            systems = ", ".join(f"{c.system} ({c.symbol} {c.timeframe})" for c in configs)
            err.print(f"{mode} daemon {systems}{feed} · store {store_path} · NATS {getattr(bus, 'url', '')} "
                      f"(tradebus tail --system SYSTEM)", style="dim")
            return await DaemonGroup(daemon_settings(bus)).run(stop)

    try:
        code = asyncio.run(run())
    except (StoreError, NatsServerError, VenueError) as exc:
        fail(str(exc))
    if code == EXIT_FAIL_CLOSED:
        fail("halted: the venue's position differs from the store's (see the log); nothing was traded. "
              "Fix the account or the store, then `tradebus resume` and restart", code=EXIT_FAIL_CLOSED)
    raise typer.Exit(code)


LimitsOpt = typer.Option(None, "--limits", help="Risk limits YAML (required for live; paper and demo have defaults).")
KeysOpt = typer.Option(None, "--keys", help="Key file (JSON {key, secret} or two lines); default: environment.")
RestOpt = typer.Option(None, "--rest-url", envvar="TRADEBUS_BYBIT_REST", help="Venue REST base URL (a test venue).")
PublicWsOpt = typer.Option(None, "--public-ws", envvar="TRADEBUS_BYBIT_WS_PUBLIC", help="Public websocket URL.")
PrivateWsOpt = typer.Option(None, "--private-ws", envvar="TRADEBUS_BYBIT_WS_PRIVATE", help="Private websocket URL.")
HeartbeatOpt = typer.Option(5.0, "--heartbeat", min=0.1, help="Seconds between heartbeats.")


@app.command()
def paper(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="System config YAML, or a portfolio file (several systems, one process)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Event store (default $TRADEBUS_HOME/store/paper.sqlite)."),
    nats_url: Optional[str] = NatsUrlOpt, limits: Optional[Path] = LimitsOpt,
    rest_url: Optional[str] = RestOpt, public_ws: Optional[str] = PublicWsOpt, heartbeat: float = HeartbeatOpt,
) -> None:
    """Paper-trade a system (or a portfolio's) on Bybit's live public feed with the simulated exchange until
    Ctrl-C; no keys."""
    _daemon("paper", config_path, store, nats_url, limits, None, rest_url, public_ws, None, heartbeat)


@app.command()
def demo(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="System config YAML, or a portfolio file (several systems, one process)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Event store (default $TRADEBUS_HOME/store/demo.sqlite)."),
    nats_url: Optional[str] = NatsUrlOpt, limits: Optional[Path] = LimitsOpt, keys: Optional[Path] = KeysOpt,
    rest_url: Optional[str] = RestOpt, public_ws: Optional[str] = PublicWsOpt,
    private_ws: Optional[str] = PrivateWsOpt, heartbeat: float = HeartbeatOpt,
) -> None:
    """Trade a system on Bybit demo (api-demo.bybit.com) until Ctrl-C; keys: TRADEBUS_DEMO_API_KEY/_SECRET."""
    _daemon("demo", config_path, store, nats_url, limits, keys, rest_url, public_ws, private_ws, heartbeat)


@app.command()
def live(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="System config YAML, or a portfolio file (several systems, one process)."),
    confirm: str = typer.Option("", "--confirm-live", metavar="SYSTEM",
                                help="The system's id (a portfolio's: its name), typed out: live trading spends "
                                     "real money."),
    store: Optional[Path] = typer.Option(None, "--store", help="Event store (default $TRADEBUS_HOME/store/live.sqlite)."),
    nats_url: Optional[str] = NatsUrlOpt, limits: Optional[Path] = LimitsOpt, keys: Optional[Path] = KeysOpt,
    rest_url: Optional[str] = RestOpt, public_ws: Optional[str] = PublicWsOpt,
    private_ws: Optional[str] = PrivateWsOpt, heartbeat: float = HeartbeatOpt,
) -> None:
    """Trade a system with real money on Bybit; needs --confirm-live SYSTEM, --limits and its own key
    (TRADEBUS_LIVE_API_KEY/_SECRET)."""
    from tradebus.configs.schema import ConfigError

    try:
        system = _daemon_systems(config_path)[0]
    except ConfigError as exc:
        fail(str(exc))
    if confirm != system:
        fail(f"live trading spends real money: pass --confirm-live {system} to start it"
              + (f" (got {confirm!r})" if confirm else ""), code=2)
    if limits is None:
        fail("live trading needs a limits file you wrote: --limits FILE (see configs/limits.example.yaml)", code=2)
    _daemon("live", config_path, store, nats_url, limits, keys, rest_url, public_ws, private_ws, heartbeat)


def _command(system: Optional[str], all_: bool, state: str, reason: str, nats_url: Optional[str],
             store: Optional[Path], wait: float) -> None:
    """Send a kill/resume: over NATS to a running daemon (which answers), else into its store."""
    from tradebus.bus.connect import find_nats_url
    from tradebus.engine.guard import command
    from tradebus.eventstore.store import StoreError
    from tradebus.live import control

    if bool(system) == all_:
        fail("name one SYSTEM or pass --all")
    cmd = command(system or "", state, f"{'kill' if state == 'halted' else 'resume'} by "
                  f"{os.environ.get('USER', 'user')}" + (f": {reason}" if reason else ""))
    url = find_nats_url(nats_url)
    answered = False
    if url:
        try:
            answered = asyncio.run(control.send(cmd, url, wait, lambda a: out.print(
                f"{a.system or 'all systems'}: {a.previous} -> {a.state} ({a.reason})")))
        except Exception as exc:  # noqa: BLE001 - NATS unreachable: fall back to the store
            err.print(f"NATS at {url} unreachable ({exc}); writing to the store instead", style="yellow")
    if answered:
        return
    if store is not None and not store.exists():
        fail(f"no daemon answered and there is no store at {store}: nothing to record the command in")
    paths = [store] if store else [p for p in (settings.default_store_path(m) for m in ("paper", "demo", "live"))
                                   if p.exists()]
    if not paths:
        fail("no daemon answered and no daemon store exists: nothing to record the command in")
    for path in paths:
        try:
            control.record(cmd, [path])
        except StoreError as exc:
            fail(f"{path}: {exc}; a daemon holds the store but did not answer over NATS — stop it with SIGTERM")
        what = cmd.system or ("all systems (each system's own halt too)" if state == "active" else "all systems")
        out.print(f"no daemon answered; recorded in {path}: {what} -> {state} at next start")


ReasonOpt = typer.Option("", "--reason", help="Why: recorded in the risk event.")
CommandStoreOpt = typer.Option(None, "--store", help="The daemon's store, used when no daemon answers over NATS.")
WaitOpt = typer.Option(5.0, "--wait", help="Seconds to wait for the daemon's answer.")


@app.command()
def kill(
    system: Optional[str] = typer.Argument(None, help="The system to halt."),
    all_: bool = typer.Option(False, "--all", help="Halt every system trading in the account."),
    reason: str = ReasonOpt, nats_url: Optional[str] = NatsUrlOpt, store: Optional[Path] = CommandStoreOpt,
    wait: float = WaitOpt,
) -> None:
    """Kill switch: halt a system (cancel its open orders, no new ones) until `tradebus resume`."""
    _command(system, all_, "halted", reason, nats_url, store, wait)


@app.command()
def resume(
    system: Optional[str] = typer.Argument(None, help="The system to resume."),
    all_: bool = typer.Option(False, "--all", help="Lift an account-wide halt."),
    reason: str = ReasonOpt, nats_url: Optional[str] = NatsUrlOpt, store: Optional[Path] = CommandStoreOpt,
    wait: float = WaitOpt,
) -> None:
    """Lift a halt (kill switch, drawdown, failed reconciliation): the system trades again."""
    _command(system, all_, "active", reason, nats_url, store, wait)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """The paper, demo and live daemons on this machine: alive, position, equity, risk state."""
    from tradebus.console import fmt_ns
    from tradebus.live.control import statuses

    rows = statuses(settings.daemons_dir())
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("no daemons have run on this machine (status files live in $TRADEBUS_HOME/daemons)")
        return
    table = Table(title="daemons")
    for col in ("system", "mode", "status", "pid", "position", "equity", "risk", "last bar", "heartbeat", "NATS"):
        table.add_column(col)
    for r in rows:
        last = r.get("last_bar_open_ns")
        table.add_row(r["system"], r["mode"], r["status"], str(r["pid"]), f"{r['position']:g}", f"{r['equity']:,.2f}",
                      r["risk"] + (f" ({r['risk_reason']})" if r.get("risk_reason") else ""),
                      fmt_ns(last)[:16] if last else "-", f"{r['heartbeat_age_s']:.0f}s ago",
                      "up" if r.get("nats_connected", True) else "down")
    out.print(table)
