"""Market data commands: import, delete, fetch, list, check."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from tradebus.cli.common import MarketOpt, data_app, err, fail, open_market, out, parse_day


@data_app.command("import")
def data_import(
    files: list[Path] = typer.Argument(..., help="Parquet, CSV or Arrow/feather files."),
    venue: str = typer.Option("bybit", "--venue", help="Venue the data is from."),
    market: str = typer.Option("linear", "--market", help="linear (USDT perpetuals), inverse or spot."),
    symbol: Optional[str] = typer.Option(None, "--symbol", help="Default: from each file's name (BTCUSDT.parquet, "
                                         "freqtrade's SOL_USDT_USDT-5m-futures.feather -> SOLUSDT)."),
    timeframe: Optional[str] = typer.Option(None, "--timeframe", help="Default: the rows' spacing (refused if it "
                                            "disagrees), else the name or folder (5m/, mark_1h/)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="candles, mark or funding. Default: the name or folder "
                                       "(mark, funding), else the columns (funding rate; volume: candles; else mark)."),
    db: Optional[Path] = MarketOpt,
) -> None:
    """Import market data files; re-importing the same data changes nothing."""
    from tradebus.components.timeframes import TimeframeError
    from tradebus.engine.marketdata import KINDS, MarketData, MarketDataError, SeriesRefused
    from tradebus.replay.importer import ImportFormatError, plan_import

    if kind is not None and kind not in KINDS:
        fail(f"--kind {kind!r}: allowed are {', '.join(KINDS)}")
    try:  # every file read and checked before anything is written; then one transaction for all
        plans = [plan_import(f, venue, market, symbol=symbol, timeframe=timeframe, kind=kind) for f in files]
    except (ImportFormatError, MarketDataError, TimeframeError) as exc:
        fail(f"{exc}; nothing imported")
    try:  # write_all checks every series before its one transaction
        with MarketData.open(db) as md:
            new = md.write_all([(p.key, p.cols) for p in plans])
    except SeriesRefused as exc:
        fail(f"{next(p.path for p in plans if p.key == exc.key)}: {exc}; nothing imported")
    except MarketDataError as exc:
        fail(f"{exc}; nothing imported")
    for p, n in zip(plans, new):
        how = f" ({', '.join(p.told)})" if p.told else ""
        out.print(f"{p.key}: {len(p.cols['open_time']):,} rows from {p.path.name}, {n:,} new{how}")


@data_app.command("delete")
def data_delete(
    symbol: str = typer.Option(..., "--symbol", help="e.g. BTCUSDT."),
    kind: str = typer.Option("candles", "--kind", help="candles, mark or funding."),
    timeframe: Optional[str] = typer.Option(None, "--timeframe", help="Candle length (required for candles and mark)."),
    venue: str = typer.Option("bybit", "--venue", help="Venue the data is from."),
    market: str = typer.Option("linear", "--market", help="linear (USDT perpetuals), inverse or spot."),
    start: Optional[str] = typer.Option(None, "--start", help="UTC date: delete from here (default: the first row)."),
    end: Optional[str] = typer.Option(None, "--end", help="UTC date, exclusive (default: after the last row)."),
    db: Optional[Path] = MarketOpt,
) -> None:
    """Delete a stored series, or the part of it in [--start, --end): to re-import what was stored wrong."""
    from tradebus.components.timeframes import TimeframeError
    from tradebus.engine.marketdata import MarketDataError, SeriesKey

    if kind != "funding" and timeframe is None:
        fail(f"--timeframe is needed for {kind} (see `tradebus data list`)")
    try:
        key = SeriesKey(venue, market, symbol, timeframe or "-", kind)
    except (MarketDataError, TimeframeError) as exc:
        fail(str(exc))
    lo = parse_day(start, "--start") if start else None
    hi = parse_day(end, "--end") if end else None
    md = open_market(db, read_only=False)
    with md:
        gone = md.delete(key, lo, hi)
    if not gone:
        fail(f"{key}: no rows stored in that range (see `tradebus data list`)")
    out.print(f"{key}: deleted {gone:,} rows")


@data_app.command("fetch")
def data_fetch(
    symbol: str = typer.Option(..., "--symbol", help="e.g. BTCUSDT."),
    start: str = typer.Option(..., "--start", help="UTC date, e.g. 2025-01-01."),
    end: str = typer.Option(..., "--end", help="UTC date (exclusive)."),
    timeframe: str = typer.Option("5m", "--timeframe", help="Candle length, e.g. 5m, 1h."),
    candles: bool = typer.Option(True, "--candles/--no-candles", help="Fetch trade candles."),
    mark: bool = typer.Option(False, "--mark", help="Also fetch mark-price candles."),
    mark_timeframe: str = typer.Option("1h", "--mark-timeframe", help="Mark-price candle length (funding is charged on 1h marks)."),
    funding: bool = typer.Option(False, "--funding", help="Also fetch funding rates."),
    venue: str = typer.Option("bybit", "--venue", help="Venue the data is from."),
    market: str = typer.Option("linear", "--market", help="linear (USDT perpetuals), inverse or spot."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", envvar="TRADEBUS_BYBIT_ENDPOINT",
                                           help="REST base URL (default Bybit mainnet)."),
    db: Optional[Path] = MarketOpt,
) -> None:
    """Fetch from Bybit's public API: paginated, resumable, with a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from tradebus.components.timeframes import TimeframeError
    from tradebus.engine.marketdata import MarketData, MarketDataError, SeriesKey
    from tradebus.live.bybit_public import BybitPublic, VenueError
    from tradebus.replay.fetch import fetch_funding, fetch_klines

    if venue != "bybit":
        fail(f"--venue {venue!r}: fetching is implemented for bybit only")
    start_ns, end_ns = parse_day(start, "--start"), parse_day(end, "--end")
    if end_ns <= start_ns:
        fail(f"--end {end} must be after --start {start}")
    try:
        jobs = ([SeriesKey(venue, market, symbol, timeframe)] if candles else []) + (
            [SeriesKey(venue, market, symbol, mark_timeframe, "mark")] if mark else []) + (
            [SeriesKey(venue, market, symbol, "-", "funding")] if funding else [])
    except (MarketDataError, TimeframeError) as exc:
        fail(str(exc))
    if not jobs:
        fail("nothing to fetch: drop --no-candles or add --mark / --funding")
    client = BybitPublic(endpoint=endpoint)
    with MarketData.open(db) as md, Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} pages"),
        TimeRemainingColumn(), console=err, transient=False,
    ) as bar:
        for key in jobs:
            task = bar.add_task(str(key), total=None)
            update = lambda done, total, t=task: bar.update(t, completed=done, total=total)  # noqa: E731
            fetcher = fetch_funding if key.kind == "funding" else fetch_klines
            try:
                result = fetcher(client, md, key, start_ns, end_ns, update)
            except VenueError as exc:
                fail(f"{key}: {exc}; what was fetched so far is kept, rerun to resume")
            bar.console.print(f"{key}: {result.new_rows:,} new rows ({result.skipped} of {result.chunks} pages already complete)")


@data_app.command("list")
def data_list(db: Optional[Path] = MarketOpt,
              as_json: bool = typer.Option(False, "--json", help="One JSON object per series.")) -> None:
    """List stored series with their ranges."""
    from tradebus import console as fmt

    md = open_market(db)
    table = Table("kind", "venue", "market", "symbol", "timeframe", "rows", "first open", "last open")
    with md:
        for c in md.series():
            if as_json:
                sys.stdout.write(json.dumps({"kind": c.key.kind, "venue": c.key.venue, "market": c.key.market,
                                             "symbol": c.key.symbol, "timeframe": c.key.timeframe, "rows": c.rows,
                                             "first_open_ns": c.first, "last_open_ns": c.last}) + "\n")
            table.add_row(c.key.kind, c.key.venue, c.key.market, c.key.symbol, c.key.timeframe, f"{c.rows:,}",
                          fmt.fmt_ns(c.first)[:16], fmt.fmt_ns(c.last)[:16])
    if not as_json:
        out.print(table)


@data_app.command("check")
def data_check(db: Optional[Path] = MarketOpt) -> None:
    """Check every stored series for gaps, misaligned times and inconsistent OHLC; exit 1 on problems."""
    from tradebus import console as fmt

    md = open_market(db)
    bad = 0
    with md:
        for cov in list(md.series()):
            report = md.check(cov.key)
            status = "[green]ok[/]" if report.ok else "[red]problems[/]"
            out.print(f"{cov.key}: {report.rows:,} rows {status}")
            for before, after in report.gaps[:10]:
                out.print(f"  gap after {fmt.fmt_ns(before)[:16]} until {fmt.fmt_ns(after)[:16]}")
            if len(report.gaps) > 10:
                out.print(f"  ... {len(report.gaps) - 10} more gaps ({report.missing_bars:,} bars missing in all)")
            if report.misaligned:
                out.print(f"  {report.misaligned} open times off the {cov.key.timeframe} grid")
            if report.ohlc_violations:
                out.print(f"  {len(report.ohlc_violations)} bars with inconsistent OHLC, first {fmt.fmt_ns(report.ohlc_violations[0])}")
            if not report.ok and report.likely_cause:
                out.print(f"  likely cause: {report.likely_cause}")
            bad += not report.ok
    if bad:
        fail(f"{bad} series with problems")


# --- replay --------------------------------------------------------------------------------------


def fetch_missing(md, keys, endpoint: str | None) -> None:
    """Fetch (key, start, end) ranges from Bybit with a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from tradebus.live.bybit_public import BybitPublic, VenueError
    from tradebus.replay.fetch import fetch_funding, fetch_klines

    client = BybitPublic(endpoint=endpoint)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} pages"),
                  TimeRemainingColumn(), console=err) as bar:
        for key, start, end in keys:
            task = bar.add_task(f"fetching {key}", total=None)
            update = lambda done, total, t=task: bar.update(t, completed=done, total=total)  # noqa: E731
            fetcher = fetch_funding if key.kind == "funding" else fetch_klines
            try:
                fetcher(client, md, key, start, end, update)
            except VenueError as exc:
                fail(f"{key}: {exc}; what was fetched is kept, rerun to resume")
