"""Commands of the event backbone: version, nats, tail, record, publish, store, rebuild."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from tradebus import __version__, settings
from tradebus.cli.common import NatsUrlOpt, StoreOpt, app, err, fail, open_reader, out, stop_event, store_app


@app.command()
def version() -> None:
    """Print the tradebus version."""
    out.print(__version__)


# --- nats ----------------------------------------------------------------------------------------


@app.command()
def nats(
    store_dir: Optional[Path] = typer.Option(None, "--dir", help="Server folder (default $TRADEBUS_HOME/nats)."),
    port: int = typer.Option(-1, "--port", help="Client port (-1: a free one)."),
) -> None:
    """Run the embedded nats-server in the foreground (for multi-process setups)."""
    from tradebus.bus.natsserver import NatsServerError, start_server

    async def run() -> None:
        stop = stop_event()
        server = await start_server(store_dir or settings.nats_dir(), port=port, announce=True)
        try:
            out.print(f"nats-server ready at [bold]{server.url}[/] (pid {server.pid}, log {server.log_path})")
            out.print(f"export TRADEBUS_NATS_URL={server.url}")
            watch = asyncio.create_task(asyncio.to_thread(server.process.wait))
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({watch, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                fail(f"nats-server exited with code {server.process.returncode}; see {server.log_path}")
            watch.cancel()
        finally:
            server.stop()
            out.print("nats-server stopped")

    try:
        asyncio.run(run())
    except NatsServerError as exc:
        fail(str(exc))


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
    from tradebus.bus.nats import NatsBus
    from tradebus.bus.natsserver import NatsServerError

    try:
        pat = subjects.qualify(subjects.system_pattern(system) if system and pattern == "tb.>" else pattern)
        url = require_nats_url(nats_url)
    except (ValueError, NatsServerError) as exc:
        fail(str(exc))

    async def run() -> None:
        bus = await NatsBus.connect(url, name="tradebus-tail")
        stop = stop_event()
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
        fail(str(exc))

    async def run() -> None:
        stop = stop_event()
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
                fail(f"recorder stopped: {exc!r}; last committed seq {recorder.last_seq:,};"
                      " what it had not committed stays in the stream for the next recorder")
        finally:
            await bus.close()
        note = f", {recorder.quarantined:,} quarantined" if recorder.quarantined else ""
        err.print(f"recorded {recorder.appended:,} events ({recorder.duplicates:,} already stored{note});"
                  f" last seq {recorder.last_seq:,}")

    try:
        asyncio.run(run())
    except CaptureError as exc:
        fail(str(exc))
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
    from tradebus.bus.base import BusError
    from tradebus.bus.connect import require_nats_url
    from tradebus.bus.nats import NatsBus
    from tradebus.bus.natsserver import NatsServerError
    from tradebus.configs.yamlfile import clip
    from tradebus.eventstore.recorder import EVENT_STREAM, ensure_event_stream

    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_bytes().decode("utf-8")
    except OSError as exc:
        fail(f"{source}: cannot read: {exc.strerror}; nothing published")
    except UnicodeDecodeError as exc:
        fail(f"{source}: not UTF-8 text (byte {exc.start}); nothing published")
    lines = []  # (line number, event, encoded size): every line is checked before any is sent
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                event = codec.from_json(line)
                subjects.subject_for(event)  # a system or job NATS could not route
            except (codec.EventDecodeError, subjects.SubjectError) as exc:
                fail(f"{source}:{n}: {clip(str(exc))}; nothing published")
            lines.append((n, event, len(codec.encode(event))))
    try:
        url = require_nats_url(nats_url)
    except NatsServerError as exc:
        fail(str(exc))

    async def run() -> tuple[int, int]:
        async with await NatsBus.connect(url, name="tradebus-publish") as bus:
            for n, _, size in lines:
                if size > bus.max_payload:
                    fail(f"{source}:{n}: {size:,} bytes encoded; the server takes at most {bus.max_payload:,}; "
                          "nothing published")
            await ensure_event_stream(bus)
            kept = stored = 0
            window: list = []

            async def settle() -> None:  # the window's acks, awaited together
                nonlocal kept, stored
                try:
                    stored += sum(await asyncio.gather(*(bus.publish_durable(e) for e in window)))
                except BusError as exc:
                    fail(f"{exc}; {kept:,} events were acknowledged before it. Publishing the file again is"
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


@store_app.command("info")
def store_info(store: Optional[Path] = StoreOpt, as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """Summarise the store (safe while a writer runs)."""
    from tradebus import console as fmt

    with open_reader(store) as st:
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
    with open_reader(store) as st:
        report = st.verify()
    if report.quarantined:
        err.print(f"[yellow]{report.quarantined:,} received message(s) quarantined[/] instead of stored"
                  " (see `tradebus store quarantine`)")
    if report.ok:
        out.print(f"[green]ok[/]: {report.count:,} events, seq gapless, every CRC and payload valid")
        return
    for problem in report.problems[:50]:
        err.print(f"[red]{problem}[/]")
    fail(f"{len(report.problems)} problem(s) in {report.count:,} events")


@store_app.command("quarantine")
def store_quarantine(store: Optional[Path] = StoreOpt, as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON."),
                     limit: int = typer.Option(100, "--limit", min=1, help="At most this many rows.")) -> None:
    """List what the recorder received and could not store (poisoned events, capture gaps), with why."""
    from tradebus import console as fmt

    with open_reader(store) as st:
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
        fail(f"--format {fmt_name!r}: allowed are {', '.join(analytics.FORMATS)}")
    with open_reader(store) as st:
        n = analytics.export(st, dest, fmt_name, system=system, types=types or None)
    out.print(f"wrote {n:,} events to {dest}")


@store_app.command("query")
def store_query(sql: str = typer.Argument(..., help="SQL over table `events`."), store: Optional[Path] = StoreOpt) -> None:
    """Run SQL over the store's events with DuckDB (table `events`, payload as JSON)."""
    from tradebus import duck
    from tradebus.eventstore import analytics

    with open_reader(store) as st:
        try:
            columns, rows = analytics.query(st, sql)
        except duck.DuckError as exc:
            fail(f"query failed: {exc}")
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)
    out.print(f"{len(rows)} row(s)", style="dim")


# --- rebuild -------------------------------------------------------------------------------------


@app.command()
def rebuild(store: Optional[Path] = StoreOpt, as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """Replay the store through the projections; print a summary and the state hash."""
    from tradebus.eventstore.projections import rebuild as fold
    from tradebus.eventstore.projections import state_hash

    t0 = time.perf_counter()
    with open_reader(store) as st:
        state = fold(st.read())
    digest = state_hash(state)
    elapsed = time.perf_counter() - t0
    if as_json:
        out.print_json(json.dumps({"events": state.events, "last_seq": state.last_seq, "state_hash": digest,
                                   "lifecycle": state.lifecycle}))
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
