"""What every command module shares: the app and its sub-apps, the consoles, common options and the
helpers that turn a user error into one line and an exit code."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from tradebus import settings
from tradebus.log import configure_logging

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(help="tradebus: event-sourced trading system and strategy factory.", no_args_is_help=True,
                  context_settings=HELP)
store_app = typer.Typer(help="Inspect, verify, export and query the event store.", no_args_is_help=True,
                        context_settings=HELP)
data_app = typer.Typer(help="Historical market data: import, fetch, list, check.", no_args_is_help=True,
                       context_settings=HELP)
app.add_typer(store_app, name="store")
app.add_typer(data_app, name="data")
experiments_app = typer.Typer(help="The experiments table: what the factory tried and what held up.",
                              no_args_is_help=True, context_settings=HELP)
app.add_typer(experiments_app, name="experiments")


def _console(stderr: bool) -> Console:
    """A terminal gets its width; a pipe or file gets whole lines (full ids, no cut table cells) unless
    COLUMNS says otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=4096 if piped else None)


out = _console(stderr=False)
err = _console(stderr=True)

StoreOpt = typer.Option(None, "--store", help="Event store file (default: $TRADEBUS_HOME/store/events.sqlite).")
NatsUrlOpt = typer.Option(None, "--nats-url", envvar="TRADEBUS_NATS_URL", help="NATS server URL.")


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.callback()
def _root(
    log_format: str = typer.Option(None, "--log-format", help="console or json (default $TRADEBUS_LOG_FORMAT)."),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning, error."),
) -> None:
    configure_logging(log_format, log_level)


def stop_event() -> asyncio.Event:
    """Return an event set by SIGINT/SIGTERM (graceful shutdown for long-running commands)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def open_reader(store: Optional[Path]):
    from tradebus.eventstore.store import EventStore, StoreError

    path = store or settings.default_store_path()
    try:
        return EventStore.open_reader(path)
    except StoreError as exc:
        fail(str(exc))


MarketOpt = typer.Option(None, "--db", help="Market data file (default: $TRADEBUS_HOME/market.duckdb).")


def parse_day(value: str, flag: str) -> int:
    """Parse YYYY-MM-DD[THH:MM] (UTC) to ns."""
    import numpy as np

    try:
        return int(np.datetime64(value, "ns").astype("int64"))
    except ValueError:
        fail(f"{flag} {value!r}: expected a UTC date like 2025-01-31 or 2025-01-31T12:00")
    raise AssertionError  # unreachable: _fail exits


def read_experiments(experiments: Optional[Path]):
    from tradebus.duck import DuckLockedError
    from tradebus.factory.experiments import Tracker

    try:
        return Tracker.open(experiments, read_only=True)
    except (FileNotFoundError, DuckLockedError) as exc:
        fail(str(exc))


def open_market(db: Optional[Path], *, read_only: bool = True):
    """The market database (writable when asked: a replay may fetch into it), or a clear error if it is
    missing or another process holds it."""
    from tradebus.duck import DuckLockedError
    from tradebus.engine.marketdata import MarketData, MarketDataError

    try:
        return MarketData.open(db, read_only=read_only)
    except (MarketDataError, DuckLockedError) as exc:
        fail(str(exc))


ExperimentsOpt = typer.Option(None, "--experiments", help="Experiments file (default: $TRADEBUS_HOME/experiments.duckdb).")


def write_new(directory: Path, texts: dict[str, str]) -> list[Path]:
    """Write new files into ``directory``, all or none: refused (one line, exit 1) if any exists or the folder
    cannot be written; each staged beside its place first, then all renamed."""
    paths = [directory / name for name in texts]
    taken = [str(p) for p in paths if p.exists()]
    if taken:
        one = len(taken) == 1
        fail(f"{', '.join(taken)} already exist{'s' if one else ''}; nothing written "
             f"(remove {'it' if one else 'them'}, or choose another name or --dir)")
    staged = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, text in zip(paths, texts.values()):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            staged.append((tmp, path))
    except OSError as exc:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        fail(f"--dir {directory}: cannot write there ({exc.strerror or exc}); nothing written")
    for tmp, path in staged:
        os.replace(tmp, path)
    return paths

