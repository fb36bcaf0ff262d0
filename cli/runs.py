"""Backtests and what frames them: replay, compare, init."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from tradebus import settings
from tradebus.cli.common import MarketOpt, NatsUrlOpt, StoreOpt, app, err, fail, open_market, out, write_new
from tradebus.cli.data import fetch_missing


@app.command()
def compare(
    first: Path = typer.Argument(..., metavar="RUN", help="A replay's output folder (runs/SYSTEM/WINDOW)."),
    second: Path = typer.Argument(..., metavar="RUN", help="Another one."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="HTML page (default runs/compare-RUN-RUN.html)."),
) -> None:
    """Two runs side by side: their metrics and the difference, and both equity curves on one page."""
    from tradebus.engine.artifacts import read_run
    from tradebus.engine.report import LABELS, Compared, fmt_metric, render_comparison

    try:
        runs = [read_run(first), read_run(second)]
    except ValueError as exc:
        fail(str(exc))
    a, b = runs
    table = Table("metric", f"{a.system} {a.window}", f"{b.system} {b.window}", "second - first")
    for key, (label, kind) in LABELS.items():
        x, y = a.metrics.get(key), b.metrics.get(key)
        diff = fmt_metric(None if x is None or y is None else y - x, kind, signed=True)
        table.add_row(label, fmt_metric(x, kind), fmt_metric(y, kind), diff)
    out.print(table)
    for r in runs:
        out.print(f"  {r.system} {r.window}: {r.start} -> {r.end} · run {r.run}")
    path = out_path or Path("runs") / f"compare-{a.run}-{b.run}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [Compared(f"{r.system} {r.window}", "run", f"{r.start} → {r.end} · run {r.run} · {r.path}", None, r.metrics,
                     (r.times, r.equity / r.equity[0]) if len(r.equity) else None) for r in runs]
    warn = [] if (a.start, a.end) == (b.start, b.end) else [
        f"the runs cover different dates ({a.start} → {a.end} and {b.start} → {b.end}): their metrics are not"
        " measured over the same market"]
    render_comparison(path, f"{a.system} {a.window} vs {b.system} {b.window}", "two runs", rows, [], warn,
                      what="run", test_name=a.window if a.window == b.window else "run")
    out.print(f"page: {path}")


@app.command()
def init(
    strategy: str = typer.Option("ema_rsi_atr", "--strategy", help="Strategy id: built-in, module:Class or entry point."),
    symbol: str = typer.Option("BTCUSDT", "--symbol", help="Bybit linear perpetual, e.g. BTCUSDT."),
    timeframe: str = typer.Option("1h", "--timeframe", help="Bars the strategy trades on, e.g. 15m, 1h."),
    directory: Path = typer.Option(Path("."), "--dir", help="Folder to write the config into."),
    days: int = typer.Option(365, "--days", min=30, help="History the printed fetch commands ask for (days to today)."),
    db: Optional[Path] = MarketOpt,
) -> None:
    """Start a system: write a config for a strategy, symbol and timeframe, and print the data commands it
    needs (what is stored already is not asked for again)."""
    from datetime import datetime, timezone

    from tradebus.configs.schema import ConfigError
    from tradebus.configs.starter import starter
    from tradebus.engine.market import data_needed
    from tradebus.engine.marketdata import MarketData, MarketDataError

    try:
        system, config, text = starter(strategy, symbol, timeframe)
    except ConfigError as exc:
        fail(str(exc))
    (path,) = write_new(directory, {f"{system}.yaml": text})
    out.print(f"wrote {path}")
    day_ns = 86_400 * 10**9
    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 10**9
    try:
        md = MarketData.open(db, read_only=True)
    except MarketDataError:
        md = None  # no market data file yet: everything is to fetch
    try:
        needed = data_needed(config, md, int(end) - days * day_ns, int(end))
    finally:
        if md is not None:
            md.close()
    missing = [cmd for _, _, cmd in needed if cmd]
    for key, rows, cmd in needed:
        out.print(f"  {key}: " + (f"{rows:,} rows stored" if rows else "none stored"))
    if missing:
        out.print("fetch what is missing (or import files you have: tradebus data import FILE...):")
        for cmd in missing:
            out.print(f"  {cmd}")
    out.print(f"then: tradebus replay {path}")


@app.command()
def replay(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="System config YAML."),
    window: str = typer.Option("hygiene", "--window", help="hygiene, test, or START:END (UTC dates)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Artifacts folder (default runs/SYSTEM/WINDOW)."),
    bus: str = typer.Option("local", "--bus", help="local (in-process) or nats."),
    nats_url: Optional[str] = NatsUrlOpt,
    fetch: bool = typer.Option(False, "--fetch", help="Fetch missing candles from Bybit's public API first."),
    events: bool = typer.Option(False, "--events", help="Also write events.jsonl."),
    log_features: bool = typer.Option(False, "--log-features", help="Also write training_rows.parquet."),
    horizon: int = typer.Option(12, "--horizon", min=1, help="Bars ahead for the training targets."),
    store: Optional[Path] = StoreOpt,
    no_store: bool = typer.Option(False, "--no-store", help="Do not append the run's events to the event store."),
    limits_path: Optional[Path] = typer.Option(None, "--limits", help="Risk limits the guard enforces (default: none)."),
    db: Optional[Path] = MarketOpt,
    endpoint: Optional[str] = typer.Option(None, "--endpoint", envvar="TRADEBUS_BYBIT_ENDPOINT", hidden=True,
                                           help="Bybit REST base URL for --fetch (default mainnet)."),
) -> None:
    """Backtest a system config with the same components that trade live; write artifacts and a report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from tradebus.components.strategies import StrategyError
    from tradebus.engine.wiring import ModelRefused
    from tradebus.configs.limits import load_limits
    from tradebus.configs.portfolio import is_portfolio
    from tradebus.configs.schema import ConfigError, load_config, read_yaml
    from tradebus.console import fmt_ns
    from tradebus.engine.market import MissingDataError, fill_command, funding_shortfall, load_market
    from tradebus.engine.marketdata import MarketDataError, SeriesKey
    from tradebus.eventstore.store import EventStore, StoreError
    from tradebus.replay.backtest import record, run_replay, write_outputs

    if bus not in ("local", "nats"):
        fail(f"--bus {bus!r}: allowed are local, nats")
    if window not in ("hygiene", "test") and ":" not in window:
        fail(f"--window {window!r}: use hygiene, test or START:END (e.g. 2025-01-01:2025-03-01)")
    try:
        limits = load_limits(limits_path) if limits_path is not None else None
        if is_portfolio(read_yaml(config_path)):
            if bus != "local" or fetch or log_features:
                fail("a portfolio replays in-process from stored candles: --bus nats, --fetch and --log-features "
                      "are for one system")
            return _replay_portfolio(config_path, window, out_dir, events, store, no_store, limits, db)
        config = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    with open_market(db, read_only=False) as md:
        try:
            m = load_market(config, window, md)
        except MissingDataError as exc:
            if not fetch or not exc.keys:
                fail(str(exc))
            fetch_missing(md, exc.keys, endpoint)
            try:
                m = load_market(config, window, md)
            except MissingDataError as again:
                fail(f"after fetching, data is still missing (the venue has none for part of the range): {again}")
        except (MarketDataError, ValueError) as exc:
            fail(str(exc))
        short = funding_shortfall(config, m)
        if short is not None:
            fkey = SeriesKey(config.venue, config.market, config.symbol, "-", "funding")
            if fetch:
                fetch_missing(md, [(fkey, m.start, m.end)], endpoint)
                m = load_market(config, window, md)
            else:
                err.print(f"[yellow]warning:[/] {short[0]} of about {short[1]} funding rates stored for"
                          f" {config.symbol} in this window, so funding is under-charged; fill them with:"
                          f" {fill_command(fkey, m.start, m.end)}")
        if m.start > m.requested_start:
            err.print(f"[yellow]note:[/] stored history starts too late for a full warm-up before"
                      f" {fmt_ns(m.requested_start)[:16]}; trading starts at {fmt_ns(m.start)[:16]}")
        with Progress(TextColumn(f"replay {config.system} {window}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("bars"), TimeRemainingColumn(), console=err, transient=True) as bar:
            task = bar.add_task("replay", total=None)
            try:
                result = run_replay(config, window, md, bus=bus, nats_url=nats_url, market=m, limits=limits,
                                    progress=lambda done, total: bar.update(task, completed=done, total=total))
            except (StrategyError, ModelRefused) as exc:  # a plain-Python step's bad return; a model out of range
                fail(f"{config_path}: {exc}; nothing written")
    dest = out_dir or Path("runs") / config.system / window.replace(":", "_")
    write_outputs(result, dest, events_jsonl=events, log_features=horizon if log_features else None)
    if not no_store:
        try:
            with EventStore.open_writer(store or settings.default_store_path()) as st:
                appended = record(result, st)
        except StoreError as exc:
            fail(f"{exc} (artifacts were written to {dest}; use --no-store to skip recording)")
        stored = f"{appended:,} events appended to the store" if appended else "events already in the store (same run)"
    else:
        stored = "store not written (--no-store)"
    mt = result.metrics
    table = Table(title=f"{config.system} · {window} · {result.manifest['start']} → {result.manifest['end']}",
                  show_header=False)
    for label, key, spec in (("total return", "return_pct", ".2%"), ("annualised", "annualised_return", ".2%"),
                             ("sharpe", "sharpe", ".2f"), ("max drawdown", "max_drawdown", ".2%"),
                             ("trades", "total_trades", ","), ("win rate", "win_rate", ".1%"),
                             ("profit factor", "profit_factor", ".2f"), ("fees", "fees_paid", ",.2f"),
                             ("funding", "funding_paid", ",.2f")):
        value = mt.get(key)
        table.add_row(label, "–" if value is None or value != value else format(value, spec))
    table.add_row("speed", f"{result.bars:,} bars in {result.seconds:.2f}s ({result.bars / max(result.seconds, 1e-9):,.0f} bars/s, bus {bus})")
    out.print(table)
    out.print(f"artifacts in {dest}/ (report.html) · {stored} · run {result.run}")


def _replay_portfolio(path: Path, window: str, out_dir: Optional[Path], events: bool, store: Optional[Path],
                      no_store: bool, limits, db: Optional[Path]) -> None:
    """``tradebus replay PORTFOLIO``: its systems on one clock and one account."""
    from tradebus.configs.portfolio import load_portfolio
    from tradebus.engine.market import MissingDataError
    from tradebus.engine.marketdata import MarketDataError
    from tradebus.eventstore.store import EventStore, StoreError
    from tradebus.replay.portfolio import run_portfolio, write_outputs

    pf = load_portfolio(path)
    with open_market(db) as md:
        try:
            result = run_portfolio(pf, window, md, limits=limits)
        except (MissingDataError, MarketDataError, ValueError) as exc:
            fail(str(exc))
    dest = out_dir or Path("runs") / pf.name / window.replace(":", "_")
    write_outputs(result, dest, events_jsonl=events)
    stored = "store not written (--no-store)"
    if not no_store:
        try:
            with EventStore.open_writer(store or settings.default_store_path()) as st:
                appended = st.append(result.events).appended
        except StoreError as exc:
            fail(f"{exc} (artifacts were written to {dest}; use --no-store to skip recording)")
        stored = f"{appended:,} events appended to the store" if appended else "events already in the store (same run)"
    from rich import box

    table = Table(title=f"{pf.name} · {window} · {result.manifest['start'][:10]} → {result.manifest['end'][:10]}",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
    for col in ("", "series", "capital", "return", "sharpe", "max dd", "trades", "fees"):
        table.add_column(col, justify="left" if col in ("", "series") else "right", no_wrap=col == "")
    rows = [("account", "", pf.initial_capital, result.metrics)]
    rows += [(s.config.system, f"{s.config.symbol} {s.config.timeframe}", s.config.initial_capital, s.metrics)
             for s in result.systems]
    for name, series, capital, mt in rows:
        cells = [format(mt.get(k), spec) if mt.get(k) == mt.get(k) else "–"
                 for k, spec in (("return_pct", ".1%"), ("sharpe", ".2f"), ("max_drawdown", ".1%"), ("total_trades", ","),
                                 ("fees_paid", ",.0f"))]
        table.add_row(name, series, f"{capital:,.0f}", *cells)
    out.print(table)
    out.print(f"artifacts in {dest}/ (report.html) · {stored} · run {result.run}")


# --- daemons -------------------------------------------------------------------------------------
