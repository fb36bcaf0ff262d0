"""The ``tradebus`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tradebus import __version__, settings
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


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.callback()
def _root(
    log_format: str = typer.Option(None, "--log-format", help="console or json (default $TRADEBUS_LOG_FORMAT)."),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning, error."),
) -> None:
    configure_logging(log_format, log_level)


@app.command()
def version() -> None:
    """Print the tradebus version."""
    out.print(__version__)


def _stop_event() -> asyncio.Event:
    """Return an event set by SIGINT/SIGTERM (graceful shutdown for long-running commands)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


# --- nats ----------------------------------------------------------------------------------------


@app.command()
def nats(
    store_dir: Optional[Path] = typer.Option(None, "--dir", help="Server folder (default $TRADEBUS_HOME/nats)."),
    port: int = typer.Option(-1, "--port", help="Client port (-1: a free one)."),
) -> None:
    """Run the embedded nats-server in the foreground (for multi-process setups)."""
    from tradebus.bus.natsserver import NatsServerError, start_server

    async def run() -> None:
        stop = _stop_event()
        server = await start_server(store_dir or settings.nats_dir(), port=port, announce=True)
        try:
            out.print(f"nats-server ready at [bold]{server.url}[/] (pid {server.pid}, log {server.log_path})")
            out.print(f"export TRADEBUS_NATS_URL={server.url}")
            watch = asyncio.create_task(asyncio.to_thread(server.process.wait))
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({watch, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                _fail(f"nats-server exited with code {server.process.returncode}; see {server.log_path}")
            watch.cancel()
        finally:
            server.stop()
            out.print("nats-server stopped")

    try:
        asyncio.run(run())
    except NatsServerError as exc:
        _fail(str(exc))


# --- tail ----------------------------------------------------------------------------------------


@app.command()
def tail(
    pattern: str = typer.Argument("tb.>", help="Subject pattern, e.g. 'ord.>' or 'md.bar.bybit.BTCUSDT.*'."),
    system: Optional[str] = typer.Option(None, "--system", help="Only this system's events."),
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line."),
    nats_url: Optional[str] = NatsUrlOpt,
    count: int = typer.Option(0, "--count", help="Exit after this many events (0: run until Ctrl-C)."),
) -> None:
    """Follow events live from NATS, one line each."""
    from tradebus import console as fmt
    from tradebus.bus import codec, subjects
    from tradebus.bus.connect import require_nats_url
    from tradebus.bus.natsserver import NatsServerError
    from tradebus.bus.nats import NatsBus

    try:
        pat = subjects.qualify(subjects.system_pattern(system) if system and pattern == "tb.>" else pattern)
        url = require_nats_url(nats_url)
    except (ValueError, NatsServerError) as exc:
        _fail(str(exc))

    async def run() -> None:
        bus = await NatsBus.connect(url, name="tradebus-tail")
        stop = _stop_event()
        try:
            sub = await bus.subscribe(pat)
            err.print(f"tailing {pat} on {url}", style="dim")
            seen = 0
            reader = asyncio.ensure_future(sub.next())
            stopper = asyncio.ensure_future(stop.wait())
            while True:
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    reader.cancel()
                    break
                event = reader.result()
                reader = asyncio.ensure_future(sub.next())
                if system and event.system != system:
                    continue
                if as_json:
                    sys.stdout.write(codec.to_json(event).decode() + "\n")
                    sys.stdout.flush()
                else:
                    out.print(fmt.line(event), style=fmt.style_for(event), markup=False)
                seen += 1
                if count and seen >= count:
                    reader.cancel()
                    break
        finally:
            await bus.close()

    asyncio.run(run())


@app.command()
def record(
    store: Optional[Path] = StoreOpt,
    pattern: str = typer.Option("tb.>", "--pattern", help="Subjects to record."),
    nats_url: Optional[str] = NatsUrlOpt,
) -> None:
    """Record events from NATS into the store until Ctrl-C (the recorder as its own process)."""
    from tradebus.bus import subjects
    from tradebus.bus.connect import require_nats_url
    from tradebus.bus.nats import NatsBus
    from tradebus.bus.natsserver import NatsServerError
    from tradebus.eventstore.recorder import EVENT_STREAM, CaptureError, Recorder, capture_filter
    from tradebus.eventstore.store import EventStore, StoreError

    try:
        url = require_nats_url(nats_url)
        pat = subjects.qualify(pattern)
        capture_filter(pat)
        st = EventStore.open_writer(store or settings.default_store_path())
    except (ValueError, NatsServerError, StoreError) as exc:
        _fail(str(exc))

    async def run() -> None:
        stop = _stop_event()
        bus = await NatsBus.connect(url, name="tradebus-record")
        try:
            recorder = Recorder(bus, st, pattern=pat)
            await recorder.start()
            if recorder.gap is not None:
                err.print(f"[red]gap[/]: stream {EVENT_STREAM} dropped seq {recorder.gap[0]:,}..{recorder.gap[1]:,}"
                          " (its age or size limit) before this store recorded them; noted in the quarantine")
            err.print(f"recording {pat} from {url} (stream {EVENT_STREAM}, consumer {recorder.durable})"
                      f" into {st.path} (seq {st.last_seq:,})", style="dim")
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({stopping, recorder.task}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            try:
                await recorder.stop()
            except Exception as exc:  # the recorder died: say so and exit non-zero, nothing is hidden
                _fail(f"recorder stopped: {exc!r}; last committed seq {recorder.last_seq:,};"
                      " what it had not committed stays in the stream for the next recorder")
        finally:
            await bus.close()
        note = f", {recorder.quarantined:,} quarantined" if recorder.quarantined else ""
        err.print(f"recorded {recorder.appended:,} events ({recorder.duplicates:,} already stored{note});"
                  f" last seq {recorder.last_seq:,}")

    try:
        asyncio.run(run())
    except CaptureError as exc:
        _fail(str(exc))
    finally:
        st.close()


PUBLISH_WINDOW = 256


@app.command()
def publish(
    source: Path = typer.Argument(Path("-"), help="JSON events, one per line (as `tail --json` prints); - for stdin."),
    nats_url: Optional[str] = NatsUrlOpt,
) -> None:
    """Publish JSON events (what `tail --json` prints); every line is checked first, and it returns once the
    event stream holds each."""
    from tradebus.bus import codec, subjects
    from tradebus.bus.connect import require_nats_url
    from tradebus.bus.nats import NatsBus
    from tradebus.bus.natsserver import NatsServerError
    from tradebus.bus.base import BusError
    from tradebus.configs.yamlfile import clip
    from tradebus.eventstore.recorder import EVENT_STREAM, ensure_event_stream

    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_bytes().decode("utf-8")
    except OSError as exc:
        _fail(f"{source}: cannot read: {exc.strerror}; nothing published")
    except UnicodeDecodeError as exc:
        _fail(f"{source}: not UTF-8 text (byte {exc.start}); nothing published")
    lines = []  # (line number, event, encoded size): every line is checked before any is sent
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                event = codec.from_json(line)
                subjects.subject_for(event)  # a system or job NATS could not route
            except (codec.EventDecodeError, subjects.SubjectError) as exc:
                _fail(f"{source}:{n}: {clip(str(exc))}; nothing published")
            lines.append((n, event, len(codec.encode(event))))
    try:
        url = require_nats_url(nats_url)
    except NatsServerError as exc:
        _fail(str(exc))

    async def run() -> tuple[int, int]:
        async with await NatsBus.connect(url, name="tradebus-publish") as bus:
            for n, _, size in lines:
                if size > bus.max_payload:
                    _fail(f"{source}:{n}: {size:,} bytes encoded; the server takes at most {bus.max_payload:,}; "
                          "nothing published")
            await ensure_event_stream(bus)
            kept = stored = 0
            window: list = []

            async def settle() -> None:  # the window's acks, awaited together
                nonlocal kept, stored
                try:
                    stored += sum(await asyncio.gather(*(bus.publish_durable(e) for e in window)))
                except BusError as exc:
                    _fail(f"{exc}; {kept:,} events were acknowledged before it. Publishing the file again is"
                          " safe: the stream and the store skip what they hold")
                kept += len(window)
                window.clear()

            for _, event, _ in lines:  # in the file's order
                if subjects.captured(subjects.subject_for(event)):
                    window.append(event)
                    if len(window) == PUBLISH_WINDOW:
                        await settle()
                else:  # sweep work and results: their own streams, if a sweep made them
                    await settle()
                    await bus.publish(event)
            await settle()
            await bus.flush()
            return kept, stored

    kept, stored = asyncio.run(run())
    out.print(f"published {len(lines):,} events to {url}: {kept:,} acknowledged by stream {EVENT_STREAM}"
              f" ({kept - stored:,} it already held)")


# --- store ---------------------------------------------------------------------------------------


def _open_reader(store: Optional[Path]):
    from tradebus.eventstore.store import EventStore, StoreError

    path = store or settings.default_store_path()
    try:
        return EventStore.open_reader(path)
    except StoreError as exc:
        _fail(str(exc))


@store_app.command("info")
def store_info(store: Optional[Path] = StoreOpt, as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """Summarise the store (safe while a writer runs)."""
    from tradebus import console as fmt

    with _open_reader(store) as st:
        info = st.info()
    if as_json:
        out.print_json(json.dumps(info.__dict__))
        return
    table = Table(title=f"event store {info.path}", show_header=False)
    table.add_row("events", f"{info.count:,}")
    table.add_row("seq", f"{info.first_seq:,} .. {info.last_seq:,}")
    table.add_row("size", f"{info.size_bytes / 1e6:.1f} MB (+ {info.wal_bytes / 1e6:.1f} MB WAL)")
    if info.first_ts_init is not None:
        table.add_row("ts_init", f"{fmt.fmt_ns(info.first_ts_init)} .. {fmt.fmt_ns(info.last_ts_init)} (first, last event)")
    table.add_row("writer", f"pid {info.writer_pid}" if info.writer_pid else "none running")
    table.add_row("by type", ", ".join(f"{k} {v:,}" for k, v in info.by_type.items()) or "-")
    table.add_row("by system", ", ".join(f"{k or '-'} {v:,}" for k, v in info.by_system.items()) or "-")
    table.add_row("quarantined", f"[red]{info.quarantined:,}[/] (see `tradebus store quarantine`)"
                  if info.quarantined else "none")
    out.print(table)


@store_app.command("verify")
def store_verify(store: Optional[Path] = StoreOpt) -> None:
    """Check every event: integrity, gapless seq, CRCs, decoding. Exit 1 on any problem."""
    with _open_reader(store) as st:
        report = st.verify()
    if report.quarantined:
        err.print(f"[yellow]{report.quarantined:,} received message(s) quarantined[/] instead of stored"
                  " (see `tradebus store quarantine`)")
    if report.ok:
        out.print(f"[green]ok[/]: {report.count:,} events, seq gapless, every CRC and payload valid")
        return
    for problem in report.problems[:50]:
        err.print(f"[red]{problem}[/]")
    _fail(f"{len(report.problems)} problem(s) in {report.count:,} events")


@store_app.command("quarantine")
def store_quarantine(store: Optional[Path] = StoreOpt, as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON."),
                     limit: int = typer.Option(100, "--limit", min=1, help="At most this many rows.")) -> None:
    """List what the recorder received and could not store (poisoned events, capture gaps), with why."""
    from tradebus import console as fmt

    with _open_reader(store) as st:
        rows = st.quarantined(limit)
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row.__dict__) + "\n")
        return
    if not rows:
        out.print("quarantine is empty")
        return
    table = Table("received", "subject", "event id", "bytes", "reason")
    for row in rows:
        table.add_row(fmt.fmt_ns(row.ts), row.subject or "-", row.event_id or "-", f"{row.size:,}", row.reason)
    out.print(table)


@store_app.command("export")
def store_export(
    dest: Path = typer.Argument(..., help="Output file."),
    fmt_name: str = typer.Option("parquet", "--format", help="parquet, csv or jsonl."),
    store: Optional[Path] = StoreOpt,
    system: Optional[str] = typer.Option(None, "--system", help="Only this system's events."),
    types: Optional[list[str]] = typer.Option(None, "--type", help="Event type tag (repeatable)."),
) -> None:
    """Export events to Parquet/CSV/JSONL through DuckDB."""
    from tradebus.eventstore import analytics

    if fmt_name not in analytics.FORMATS:
        _fail(f"--format {fmt_name!r}: allowed are {', '.join(analytics.FORMATS)}")
    with _open_reader(store) as st:
        n = analytics.export(st, dest, fmt_name, system=system, types=types or None)
    out.print(f"wrote {n:,} events to {dest}")


@store_app.command("query")
def store_query(sql: str = typer.Argument(..., help="SQL over table `events`."), store: Optional[Path] = StoreOpt) -> None:
    """Run SQL over the store's events with DuckDB (table `events`, payload as JSON)."""
    from tradebus import duck
    from tradebus.eventstore import analytics

    with _open_reader(store) as st:
        try:
            columns, rows = analytics.query(st, sql)
        except duck.DuckError as exc:
            _fail(f"query failed: {exc}")
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)
    out.print(f"{len(rows)} row(s)", style="dim")


# --- data ----------------------------------------------------------------------------------------

MarketOpt = typer.Option(None, "--db", help="Market data file (default: $TRADEBUS_HOME/market.duckdb).")


def _parse_day(value: str, flag: str) -> int:
    """Parse YYYY-MM-DD[THH:MM] (UTC) to ns."""
    import numpy as np

    try:
        return int(np.datetime64(value, "ns").astype("int64"))
    except ValueError:
        _fail(f"{flag} {value!r}: expected a UTC date like 2025-01-31 or 2025-01-31T12:00")
    raise AssertionError  # unreachable: _fail exits


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
    from tradebus.replay.importer import ImportFormatError, plan_import
    from tradebus.engine.marketdata import KINDS, MarketData, MarketDataError, SeriesRefused

    if kind is not None and kind not in KINDS:
        _fail(f"--kind {kind!r}: allowed are {', '.join(KINDS)}")
    try:  # every file read and checked before anything is written; then one transaction for all
        plans = [plan_import(f, venue, market, symbol=symbol, timeframe=timeframe, kind=kind) for f in files]
    except (ImportFormatError, MarketDataError, TimeframeError) as exc:
        _fail(f"{exc}; nothing imported")
    try:  # write_all checks every series before its one transaction
        with MarketData.open(db) as md:
            new = md.write_all([(p.key, p.cols) for p in plans])
    except SeriesRefused as exc:
        _fail(f"{next(p.path for p in plans if p.key == exc.key)}: {exc}; nothing imported")
    except MarketDataError as exc:
        _fail(f"{exc}; nothing imported")
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
        _fail(f"--timeframe is needed for {kind} (see `tradebus data list`)")
    try:
        key = SeriesKey(venue, market, symbol, timeframe or "-", kind)
    except (MarketDataError, TimeframeError) as exc:
        _fail(str(exc))
    lo = _parse_day(start, "--start") if start else None
    hi = _parse_day(end, "--end") if end else None
    md = _open_market(db, read_only=False)
    with md:
        gone = md.delete(key, lo, hi)
    if not gone:
        _fail(f"{key}: no rows stored in that range (see `tradebus data list`)")
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
    from tradebus.live.bybit_public import BybitPublic, VenueError
    from tradebus.replay.fetch import fetch_funding, fetch_klines
    from tradebus.engine.marketdata import MarketData, MarketDataError, SeriesKey

    if venue != "bybit":
        _fail(f"--venue {venue!r}: fetching is implemented for bybit only")
    start_ns, end_ns = _parse_day(start, "--start"), _parse_day(end, "--end")
    if end_ns <= start_ns:
        _fail(f"--end {end} must be after --start {start}")
    try:
        jobs = ([SeriesKey(venue, market, symbol, timeframe)] if candles else []) + (
            [SeriesKey(venue, market, symbol, mark_timeframe, "mark")] if mark else []) + (
            [SeriesKey(venue, market, symbol, "-", "funding")] if funding else [])
    except (MarketDataError, TimeframeError) as exc:
        _fail(str(exc))
    if not jobs:
        _fail("nothing to fetch: drop --no-candles or add --mark / --funding")
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
                _fail(f"{key}: {exc}; what was fetched so far is kept, rerun to resume")
            bar.console.print(f"{key}: {result.new_rows:,} new rows ({result.skipped} of {result.chunks} pages already complete)")


def _read_experiments(experiments: Optional[Path]):
    from tradebus.duck import DuckLockedError
    from tradebus.factory.experiments import Tracker

    try:
        return Tracker.open(experiments, read_only=True)
    except (FileNotFoundError, DuckLockedError) as exc:
        _fail(str(exc))


def _open_market(db: Optional[Path], *, read_only: bool = True):
    """The market database (writable when asked: a replay may fetch into it), or a clear error if it is
    missing or another process holds it."""
    from tradebus.duck import DuckLockedError
    from tradebus.engine.marketdata import MarketData, MarketDataError

    try:
        return MarketData.open(db, read_only=read_only)
    except (MarketDataError, DuckLockedError) as exc:
        _fail(str(exc))


@data_app.command("list")
def data_list(db: Optional[Path] = MarketOpt,
              as_json: bool = typer.Option(False, "--json", help="One JSON object per series.")) -> None:
    """List stored series with their ranges."""
    from tradebus import console as fmt

    md = _open_market(db)
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

    md = _open_market(db)
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
        _fail(f"{bad} series with problems")


# --- replay --------------------------------------------------------------------------------------


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
        _fail(str(exc))
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
        _fail(str(exc))
    path = directory / f"{system}.yaml"
    if path.exists():
        _fail(f"{path} already exists; nothing written (remove it, or choose another --dir)")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
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
        _fail(problem)
    texts = scaffold.files(name)
    taken = [str(directory / n) for n in texts if (directory / n).exists()]
    if taken:
        _fail(f"{', '.join(taken)} already exist; nothing written (choose another name or --dir)")
    directory.mkdir(parents=True, exist_ok=True)
    staged = []
    for file_name, text in texts.items():  # every file staged, then all renamed: none or all appear
        tmp = directory / f".{file_name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        staged.append((tmp, directory / file_name))
    for tmp, final in staged:
        os.replace(tmp, final)
    cls = scaffold.class_name(name)
    out.print(f"wrote {', '.join(str(directory / n) for n in texts)}\n"
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
    from tradebus.configs.schema import ConfigError
    from tradebus.replay import checks

    try:
        values = json.loads(params)
    except json.JSONDecodeError as exc:
        _fail(f"--params: not JSON ({exc.msg}); got {params!r}")
    if not isinstance(values, dict):
        _fail(f"--params: a JSON object of parameter names and values; got {params!r}")
    try:
        config = checks.practice_config(strategy, values)
    except ConfigError as exc:
        _fail(str(exc))
    failed = False
    for title, check in (("no look-ahead", checks.no_lookahead), ("sweep kernel = replay", checks.kernel_equals_replay)):
        if check is checks.kernel_equals_replay and not config.strategy_def().compiled:
            out.print(f"[yellow]skip[/] {title}: a plain-Python step is never swept")
            continue
        try:
            n = check(config)
        except checks.CheckFailed as exc:
            failed = True
            out.print(f"[red]FAIL[/] {title}: {exc}")
        else:
            out.print(f"[green]ok[/]   {title} ({n:,} {'events' if check is checks.no_lookahead else 'fills'} compared)")
    if failed:
        raise typer.Exit(1)


def _fetch_missing(md, keys, endpoint: str | None) -> None:
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
                _fail(f"{key}: {exc}; what was fetched is kept, rerun to resume")


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
    from tradebus.configs.schema import ConfigError, load_config
    from tradebus.console import fmt_ns
    from tradebus.engine.market import MissingDataError, fill_command, load_market
    from tradebus.engine.marketdata import MarketDataError, SeriesKey
    from tradebus.eventstore.store import EventStore, StoreError
    from tradebus.replay.backtest import record, run_replay, write_outputs
    from tradebus.replay.fetch import FUNDING_INTERVAL

    from tradebus.configs.limits import load_limits
    from tradebus.configs.portfolio import is_portfolio
    from tradebus.configs.schema import read_yaml

    if bus not in ("local", "nats"):
        _fail(f"--bus {bus!r}: allowed are local, nats")
    if window not in ("hygiene", "test") and ":" not in window:
        _fail(f"--window {window!r}: use hygiene, test or START:END (e.g. 2025-01-01:2025-03-01)")
    try:
        limits = load_limits(limits_path) if limits_path is not None else None
        if is_portfolio(read_yaml(config_path)):
            if bus != "local" or fetch or log_features:
                _fail("a portfolio replays in-process from stored candles: --bus nats, --fetch and --log-features "
                      "are for one system")
            return _replay_portfolio(config_path, window, out_dir, events, store, no_store, limits, db)
        config = load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))
    with _open_market(db, read_only=False) as md:
        try:
            m = load_market(config, window, md)
        except MissingDataError as exc:
            if not fetch or not exc.keys:
                _fail(str(exc))
            _fetch_missing(md, exc.keys, endpoint)
            try:
                m = load_market(config, window, md)
            except MissingDataError as again:
                _fail(f"after fetching, data is still missing (the venue has none for part of the range): {again}")
        except (MarketDataError, ValueError) as exc:
            _fail(str(exc))
        expected_funding = (m.end - m.start) // FUNDING_INTERVAL
        if (config.costs.funding and config.market == "linear" and m.funding is not None
                and len(m.funding["open_time"]) < expected_funding):
            fkey = SeriesKey(config.venue, config.market, config.symbol, "-", "funding")
            if fetch:
                _fetch_missing(md, [(fkey, m.start, m.end)], endpoint)
                m = load_market(config, window, md)
            else:
                err.print(f"[yellow]warning:[/] {len(m.funding['open_time'])} of about {expected_funding} funding"
                          f" rates stored for {config.symbol} in this window, so funding is under-charged; fill"
                          f" them with: {fill_command(fkey, m.start, m.end)}")
        if m.start > m.requested_start:
            err.print(f"[yellow]note:[/] stored history starts too late for a full warm-up before"
                      f" {fmt_ns(m.requested_start)[:16]}; trading starts at {fmt_ns(m.start)[:16]}")
        with Progress(TextColumn(f"replay {config.system} {window}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("bars"), TimeRemainingColumn(), console=err, transient=True) as bar:
            task = bar.add_task("replay", total=None)
            try:
                result = run_replay(config, window, md, bus=bus, nats_url=nats_url, market=m, limits=limits,
                                    progress=lambda done, total: bar.update(task, completed=done, total=total))
            except StrategyError as exc:  # a plain-Python step that returned what is not a decision
                _fail(f"{config_path}: {exc}; nothing written")
    dest = out_dir or Path("runs") / config.system / window.replace(":", "_")
    write_outputs(result, dest, events_jsonl=events, log_features=horizon if log_features else None)
    if not no_store:
        try:
            with EventStore.open_writer(store or settings.default_store_path()) as st:
                appended = record(result, st)
        except StoreError as exc:
            _fail(f"{exc} (artifacts were written to {dest}; use --no-store to skip recording)")
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
    with _open_market(db) as md:
        try:
            result = run_portfolio(pf, window, md, limits=limits)
        except (MissingDataError, MarketDataError, ValueError) as exc:
            _fail(str(exc))
    dest = out_dir or Path("runs") / pf.name / window.replace(":", "_")
    write_outputs(result, dest, events_jsonl=events)
    stored = "store not written (--no-store)"
    if not no_store:
        try:
            with EventStore.open_writer(store or settings.default_store_path()) as st:
                appended = st.append(result.events).appended
        except StoreError as exc:
            _fail(f"{exc} (artifacts were written to {dest}; use --no-store to skip recording)")
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
    from tradebus.live.daemon import EXIT_FAIL_CLOSED, DaemonGroup, DaemonSettings, check_daemons

    try:
        name, configs = _daemon_systems(config_path)
        lim = load_limits(limits) if limits else DEMO_DEFAULTS
        creds = Credentials.load(KEY_PREFIX[mode], keys) if mode != "paper" else None
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    if mode == "live":
        demo_key = os.environ.get("TRADEBUS_DEMO_API_KEY")
        if demo_key and demo_key == creds.key:
            _fail("live needs its own API key: TRADEBUS_LIVE_API_KEY is the demo key")
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
    except ValueError as exc:
        _fail(f"{config_path}: {exc}")

    async def run() -> int:
        stop = _stop_event()
        async with open_bus("nats", url=nats_url, name=f"tradebus-{mode}-{name}") as bus:
            feed = " · simulated exchange on the live public feed" if mode == "paper" else ""
            systems = ", ".join(f"{c.system} ({c.symbol} {c.timeframe})" for c in configs)
            err.print(f"{mode} daemon {systems}{feed} · store {store_path} · NATS {getattr(bus, 'url', '')} "
                      f"(tradebus tail --system SYSTEM)", style="dim")
            return await DaemonGroup(daemon_settings(bus)).run(stop)

    try:
        code = asyncio.run(run())
    except (StoreError, NatsServerError, VenueError) as exc:
        _fail(str(exc))
    if code == EXIT_FAIL_CLOSED:
        _fail("halted: the venue's position differs from the store's (see the log); nothing was traded. "
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
        _fail(str(exc))
    if confirm != system:
        _fail(f"live trading spends real money: pass --confirm-live {system} to start it"
              + (f" (got {confirm!r})" if confirm else ""), code=2)
    if limits is None:
        _fail("live trading needs a limits file you wrote: --limits FILE (see configs/limits.example.yaml)", code=2)
    _daemon("live", config_path, store, nats_url, limits, keys, rest_url, public_ws, private_ws, heartbeat)


def _command(system: Optional[str], all_: bool, state: str, reason: str, nats_url: Optional[str],
             store: Optional[Path], wait: float) -> None:
    """Send a kill/resume: over NATS to a running daemon (which answers), else into its store."""
    from tradebus.bus import subjects
    from tradebus.bus.connect import find_nats_url
    from tradebus.bus.nats import NatsBus
    from tradebus.eventstore.store import EventStore, StoreError
    from tradebus.engine.guard import command

    if bool(system) == all_:
        _fail("name one SYSTEM or pass --all")
    cmd = command(system or "", state, f"{'kill' if state == 'halted' else 'resume'} by "
                  f"{os.environ.get('USER', 'user')}" + (f": {reason}" if reason else ""))
    url = find_nats_url(nats_url)

    async def over_nats() -> bool:
        async with await NatsBus.connect(url, name="tradebus-command") as bus:
            sub = await bus.subscribe(subjects.risk(">"))
            await bus.publish(cmd)
            await bus.flush()
            deadline = time.monotonic() + wait
            answered = False
            while time.monotonic() < deadline:
                try:
                    answer = await sub.next(max(0.05, deadline - time.monotonic()))
                except (asyncio.TimeoutError, TimeoutError):
                    break
                if answer.cause == cmd.id:  # every guard answers every command, changed or not
                    out.print(f"{answer.system or 'all systems'}: {answer.previous} -> {answer.state} ({answer.reason})")
                    if not answered:  # other daemons (and a system's own scope) answer within moments
                        answered, deadline = True, min(deadline, time.monotonic() + 1.0)
            return answered

    answered = False
    if url:
        try:
            answered = asyncio.run(over_nats())
        except Exception as exc:  # noqa: BLE001 - NATS unreachable: fall back to the store
            err.print(f"NATS at {url} unreachable ({exc}); writing to the store instead", style="yellow")
    if answered:
        return
    if store is not None and not store.exists():
        _fail(f"no daemon answered and there is no store at {store}: nothing to record the command in")
    paths = [store] if store else [p for p in (settings.default_store_path(m) for m in ("paper", "demo", "live"))
                                   if p.exists()]
    if not paths:
        _fail("no daemon answered and no daemon store exists: nothing to record the command in")
    for path in paths:
        try:
            with EventStore.open_writer(path) as st:
                st.append([cmd])
        except StoreError as exc:
            _fail(f"{path}: {exc}; a daemon holds the store but did not answer over NATS — stop it with SIGTERM")
        what = cmd.system or ("all systems (each system's own halt too)" if state == "active" else "all systems")
        out.print(f"no daemon answered; recorded in {path}: {what} -> {state} at next start")


@app.command()
def kill(
    system: Optional[str] = typer.Argument(None, help="The system to halt."),
    all_: bool = typer.Option(False, "--all", help="Halt every system trading in the account."),
    reason: str = typer.Option("", "--reason", help="Why: recorded in the risk event."),
    nats_url: Optional[str] = NatsUrlOpt, store: Optional[Path] = typer.Option(None, "--store", help="The daemon's store, used when no daemon answers over NATS."),
    wait: float = typer.Option(5.0, "--wait", help="Seconds to wait for the daemon's answer."),
) -> None:
    """Kill switch: halt a system (cancel its open orders, no new ones) until `tradebus resume`."""
    _command(system, all_, "halted", reason, nats_url, store, wait)


@app.command()
def resume(
    system: Optional[str] = typer.Argument(None, help="The system to resume."),
    all_: bool = typer.Option(False, "--all", help="Lift an account-wide halt."),
    reason: str = typer.Option("", "--reason", help="Why: recorded in the risk event."),
    nats_url: Optional[str] = NatsUrlOpt, store: Optional[Path] = typer.Option(None, "--store", help="The daemon's store, used when no daemon answers over NATS."),
    wait: float = typer.Option(5.0, "--wait", help="Seconds to wait for the daemon's answer."),
) -> None:
    """Lift a halt (kill switch, drawdown, failed reconciliation): the system trades again."""
    _command(system, all_, "active", reason, nats_url, store, wait)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """The paper, demo and live daemons on this machine: alive, position, equity, risk state."""
    from tradebus.console import fmt_ns
    from tradebus.eventstore.store import writer_pid

    folder = settings.daemons_dir()
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        # Alive: the process that wrote the file still holds its store (a reused pid does not count).
        alive = info.get("status") == "running" and writer_pid(Path(info.get("store", ""))) == info.get("pid")
        age = (time.time_ns() - int(info.get("heartbeat_ns", 0))) / 1e9
        info["alive"] = alive
        info["heartbeat_age_s"] = round(age, 1)
        if info.get("status") == "running" and not alive:
            info["status"] = "dead (no process)"
        rows.append(info)
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


# --- rebuild -------------------------------------------------------------------------------------


@app.command()
def rebuild(store: Optional[Path] = StoreOpt, as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """Replay the store through the projections; print a summary and the state hash."""
    from tradebus.eventstore.projections import rebuild as fold
    from tradebus.eventstore.projections import state_hash

    t0 = time.perf_counter()
    with _open_reader(store) as st:
        state = fold(st.read())
    digest = state_hash(state)
    elapsed = time.perf_counter() - t0
    if as_json:
        out.print_json(json.dumps({"events": state.events, "last_seq": state.last_seq, "state_hash": digest}))
        return
    table = Table(title="rebuilt state", show_header=False)
    table.add_row("events", f"{state.events:,} (through seq {state.last_seq:,}) in {elapsed:.2f}s")
    for system, book in sorted(state.positions.items()):
        for symbol, pos in sorted(book.items()):
            table.add_row(f"position {system or '-'} {symbol}", f"qty {pos.qty:.8g} avg {pos.avg_price:.8g} rPnL {pos.realized_pnl:.2f} fees {pos.fees:.2f}")
    for system, acct in sorted(state.accounts.items()):
        table.add_row(f"account {system or '-'}", f"equity {acct.equity:.2f} balance {acct.balance:.2f}")
    table.add_row("open orders", str(len(state.open_orders)))
    for system, status in sorted(state.lifecycle.items()):
        table.add_row(f"lifecycle {system}", status)
    for scope, level in sorted(state.risk.items()):
        table.add_row(f"risk {scope}", level)
    if state.duplicate_fills:
        table.add_row("duplicate fills ignored", str(state.duplicate_fills))
    out.print(table)
    out.print(f"state hash {digest}")


ExperimentsOpt = typer.Option(None, "--experiments", help="Experiments file (default: $TRADEBUS_HOME/experiments.duckdb).")


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from tradebus.bus.natsserver import NatsServerError
    from tradebus.configs.schema import ConfigError
    from tradebus.duck import DuckLockedError
    from tradebus.factory.experiments import Tracker
    from tradebus.factory.sweep import load_job, run_sweep
    from tradebus.engine.marketdata import MarketData, MarketDataError

    try:
        job = load_job(job_path)
    except ConfigError as exc:
        _fail(str(exc))
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
        _fail(str(exc))
    secs = time.perf_counter() - t0
    out.print(f"job {job.job}: {report.trials:,} trials ({report.invalid:,} refused combinations not counted); "
              f"ran {report.ran:,}, already done {report.skipped:,}, failed {len(report.failed):,} in {secs:.1f}s{note}")
    if report.stale:
        out.print(f"{report.stale:,} earlier trials of {job.job} were computed by other code or on other data:"
                  " kept in the table, no longer counted or listed")
    for tid, why in report.failed[:5]:
        out.print(f"  failed {tid}: {why}")
    if top:
        _experiments_table(top, f"best of {job.job} by score (not yet validated)")
    if report.failed:  # the table keeps what finished; the exit code says the job is not whole
        _fail(f"{len(report.failed):,} of {report.ran:,} trials run failed (first reasons above); the"
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
    from tradebus.factory.distributed import run_worker
    from tradebus.engine.marketdata import MarketData, MarketDataError

    async def run():
        stop = _stop_event()
        bus = await NatsBus.connect(require_nats_url(nats_url), name="tradebus-worker")
        try:
            with MarketData.open(db, read_only=True) as md:
                return await run_worker(bus, md, name=name, ack_wait=ack_wait, idle_exit=idle_exit, stop=stop)
        finally:
            await bus.close()

    try:
        report = asyncio.run(run())
    except (NatsServerError, MarketDataError, DuckLockedError) as exc:
        _fail(str(exc))
    out.print(f"worker: {report.tasks} tasks, {report.trials} trials, {report.refused} refused (different data)")


@app.command()
def validate(
    ids: Optional[list[str]] = typer.Argument(None, metavar="[ID]...", help="Experiment ids (unique prefixes do)."),
    job: Optional[str] = typer.Option(None, "--job", help="Without ids: candidates from this job."),
    top: int = typer.Option(5, "--top", min=1, help="Without ids: how many of the best by score."),
    rules_path: Optional[Path] = typer.Option(None, "--rules", help="Validation rules YAML (default: seed 002's)."),
    db: Optional[Path] = MarketOpt,
    experiments: Optional[Path] = ExperimentsOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per experiment: id, status, reasons, "
                                 "test return and every detail the verdict rests on."),
) -> None:
    """Holdout, walk-forward, multi-asset, deflated Sharpe and PBO; the verdict is written to the experiment."""
    from tradebus.configs.schema import ConfigError
    from tradebus.duck import DuckLockedError
    from tradebus.factory.experiments import Tracker
    from tradebus.factory.validation import load_rules, run_validation, select
    from tradebus.engine.marketdata import MarketData, MarketDataError
    from tradebus.engine.market import MissingDataError

    try:
        rules = load_rules(rules_path)
        with MarketData.open(db, read_only=True) as md, Tracker.open(experiments) as tracker:
            exps = select(tracker, ids or [], job, top)
            if not exps:
                _fail("no experiments to validate" + (f" in job {job!r}" if job else "") + "; run tradebus sweep JOB first")
            results = run_validation(tracker, md, exps, rules,
                                     progress=lambda d, t: err.print(f"validated {d}/{t}", highlight=False))
    except (DuckLockedError, ConfigError, MarketDataError, MissingDataError, KeyError) as exc:
        _fail(str(exc).strip("'\""))
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
    from tradebus.factory.experiments import Tracker
    from tradebus.factory.scenarios import load_scenarios, run_scenarios, write_outputs
    from tradebus.engine.marketdata import MarketData
    from tradebus.engine.market import MissingDataError

    try:
        spec = load_scenarios(path)
        with MarketData.open(db, read_only=True) as md, Tracker.open(experiments, read_only=True) as tracker, \
                Progress(TextColumn("scenarios {task.description}"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("", total=None)
            rep = run_scenarios(spec, tracker, md, progress=lambda what, done, total: bar.update(
                task, description=what, completed=done, total=total))
    except (DuckLockedError, LookupError, ValueError, FileNotFoundError, MissingDataError) as exc:  # ValueError: config, market data
        _fail(str(exc).strip("'\""))
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
    with _read_experiments(experiments) as tracker:
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
    from tradebus.factory.experiments import COLUMNS
    from tradebus.engine.report import parameter_grid, render_heatmap

    if metric not in COLUMNS or COLUMNS[metric] not in ("DOUBLE", "BIGINT"):
        _fail(f"--metric {metric!r}: a number column of the experiments table: "
              + ", ".join(k for k, t in COLUMNS.items() if t in ("DOUBLE", "BIGINT")))
    with _read_experiments(experiments) as tracker:
        rows = [e for e in tracker.job_rows(job) if symbol is None or e["symbol"] == symbol]
    if not rows:
        _fail(f"no trials of job {job!r}" + (f" on {symbol}" if symbol else "") + " (see `tradebus experiments top --all`)")
    varied = sorted({k for e in rows for k in e.params})
    for name, axis in ((x, "--x"), (y, "--y")):
        if name not in varied:
            _fail(f"{axis} {name!r}: job {job} varied {', '.join(varied) or 'nothing'}")
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
    with _read_experiments(experiments) as tracker:
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

    with _read_experiments(experiments) as tracker:
        try:
            e = tracker.get(exp_id)
        except KeyError as exc:
            _fail(str(exc))
    if e is None:
        _fail(f"no experiment {exp_id!r}")
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
    with _read_experiments(experiments) as tracker:
        out.print(tracker.summary_for_llm(n))


def main() -> None:
    """Entry point of the ``tradebus`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
