"""Event store throughput: durable appends, batching, decoded reads and a full projection rebuild."""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Sequence

from _common import (
    batched,
    console,
    consume,
    fmt_int,
    fmt_ratio,
    fmt_verdict,
    parser,
    print_header,
    print_table,
    resolve_n,
    store_mix,
    timed,
)

from tradebus.bus import codec
from tradebus.bus.events import Event, tag_of
from tradebus.eventstore.projections import State, rebuild, state_hash
from tradebus.eventstore.store import EventStore

BATCH = 5_000
SMALL_BATCHES = (100, 1_000, 5_000)
APPEND_TARGET = 100_000  # events/s, appended durably
REBUILD_TARGET_S = 10.0  # seconds to rebuild 1M events
MILLION = 1_000_000

Batches = list[Sequence[Event]]
PayloadBatches = list[list[bytes]]


# --- appending -----------------------------------------------------------------------------------


def append_store(path: Path, batches: Batches) -> float:
    """Append every batch to a new EventStore; return the seconds spent in ``append``."""
    with EventStore.open_writer(path) as store:
        seconds, results = timed(lambda: [store.append(batch) for batch in batches])
    appended = sum(r.appended for r in results)
    expected = sum(len(b) for b in batches)
    if appended != expected:
        raise AssertionError(f"EventStore.append stored {appended} of {expected} events")
    return seconds


def raw_sqlite_connect(path: Path) -> sqlite3.Connection:
    """Open a bare SQLite database with the store's durability settings (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    return conn


def append_raw_sqlite(path: Path, payloads: PayloadBatches) -> float:
    """Insert the payloads into a table with only a rowid and a blob, one commit per batch."""
    rows = [[(p,) for p in batch] for batch in payloads]
    conn = raw_sqlite_connect(path)
    try:
        t0 = time.perf_counter()
        for batch in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO events (payload) VALUES (?)", batch)
            conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


def append_file(path: Path, payloads: PayloadBatches) -> float:
    """Append the payloads to a plain file, one write and one fsync per batch."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        t0 = time.perf_counter()
        for batch in payloads:
            os.write(fd, b"".join(batch))
            os.fsync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def prepare_rows(batches: Batches) -> float:
    """Build the store's row tuples (msgpack encode + CRC-32) without a database; return seconds."""
    t0 = time.perf_counter()
    for batch in batches:
        rows = []
        for e in batch:
            payload = codec.encode(e)
            rows.append((e.id, tag_of(e), e.system, e.run, e.ts_event, e.ts_init, zlib.crc32(payload), payload))
    return time.perf_counter() - t0


# --- reading -------------------------------------------------------------------------------------


def read_decoded(path: Path) -> float:
    """Read every event back decoded through ``EventStore.read``; return seconds."""
    with EventStore.open_reader(path) as store:
        seconds, _ = timed(lambda: consume(store.read()))
    return seconds


def read_raw(path: Path) -> float:
    """Read every payload through ``EventStore.read_raw`` (CRC checked, not decoded); return seconds."""
    with EventStore.open_reader(path) as store:
        seconds, _ = timed(lambda: consume(store.read_raw()))
    return seconds


def read_raw_sqlite(path: Path) -> float:
    """Select every payload from the bare SQLite table in rowid order; return seconds."""
    conn = sqlite3.connect(path)
    try:
        seconds, _ = timed(lambda: consume(conn.execute("SELECT seq, payload FROM events ORDER BY seq")))
    finally:
        conn.close()
    return seconds


def rebuild_store(path: Path) -> tuple[float, State, str]:
    """Rebuild the projections from the whole store and hash them; return (seconds, state, hash)."""
    with EventStore.open_reader(path) as store:
        seconds, (state, digest) = timed(lambda: _rebuild_and_hash(store))
    return seconds, state, digest


def _rebuild_and_hash(store: EventStore) -> tuple[State, str]:
    """Fold the store into a fresh state and return it with its hash."""
    state = rebuild(store.read())
    return state, state_hash(state)


def check_state(state: State, events: Sequence[Event]) -> list[str]:
    """Return every way the rebuilt state disagrees with the events appended."""
    problems = []
    if state.events != len(events) or state.last_seq != len(events):
        problems.append(f"rebuild saw {state.events} events up to seq {state.last_seq}, appended {len(events)}")
    expected = Counter(tag_of(e) for e in events)
    if state.by_type != dict(expected):
        problems.append(f"rebuild counted {state.by_type}, appended {dict(expected)}")
    if state.duplicate_fills:
        problems.append(f"rebuild found {state.duplicate_fills} duplicate fills; the mix has none")
    return problems


# --- reporting -----------------------------------------------------------------------------------


def report_append(n: int, store_s: float, sqlite_s: float, file_s: float, prep_s: float) -> None:
    """Print durable append rates and their ratios to the store's."""
    rows = [
        ("EventStore.append", store_s),
        ("(a) raw sqlite3 executemany, rowid + blob", sqlite_s),
        ("(b) plain file write + fsync", file_s),
        ("encode + CRC-32 rows only, no I/O", prep_s),
    ]
    print_table(
        f"Durable append, {n:,} events in batches of {BATCH:,} (one run each)",
        ("writer", "events/s", "seconds", "rate vs store"),
        [(name, fmt_int(n / s), f"{s:.2f}", fmt_ratio(store_s / s)) for name, s in rows],
    )


def batching_table(events: Sequence[Event], tmp: Path) -> None:
    """Append the same events at several batch sizes, to the store and to the bare SQLite table."""
    rows = []
    for size in SMALL_BATCHES:
        batches = list(batched(events, size))
        payloads = [[codec.encode(e) for e in batch] for batch in batches]
        store_s = append_store(tmp / f"batch{size}.db", batches)
        sqlite_s = append_raw_sqlite(tmp / f"batch{size}-raw.db", payloads)
        n = len(events)
        rows.append((f"{size:,}", fmt_int(n / store_s), fmt_int(n / sqlite_s), fmt_ratio(sqlite_s / store_s)))
    print_table(f"Batching effect, {len(events):,} events (one run each)",
                ("batch", "store ev/s", "raw sqlite ev/s", "store / raw"), rows)


def report_reads(n: int, decoded_s: float, raw_s: float, sqlite_s: float, rebuild_s: float) -> None:
    """Print read and rebuild rates against a bare SQLite select of the same payloads."""
    rows = [
        ("EventStore.read (CRC + decode)", decoded_s),
        ("EventStore.read_raw (CRC, no decode)", raw_s),
        ("(a) raw sqlite3 SELECT payload", sqlite_s),
        ("rebuild + state_hash", rebuild_s),
    ]
    print_table(f"Reading {n:,} events (one run each)", ("reader", "events/s", "seconds", "vs raw sqlite"),
                [(name, fmt_int(n / s), f"{s:.2f}", fmt_ratio(sqlite_s / s)) for name, s in rows])


def report_targets(n: int, append_s: float, rebuild_s: float) -> None:
    """Print the targets with PASS or MISS; the rebuild time is projected to 1M events if n differs."""
    append_rate = n / append_s
    rebuild_1m = rebuild_s * MILLION / n
    how = "measured" if n == MILLION else f"projected from {n:,}"
    rows = [
        ("durable append", f">= {fmt_int(APPEND_TARGET)} ev/s", f"{fmt_int(append_rate)} ev/s",
         fmt_verdict(append_rate >= APPEND_TARGET)),
        (f"rebuild 1M events ({how})", f"< {REBUILD_TARGET_S:.0f} s", f"{rebuild_1m:.2f} s",
         fmt_verdict(rebuild_1m < REBUILD_TARGET_S)),
    ]
    print_table("Targets", ("target", "goal", "result", ""), rows)


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    """Run the event store benchmark."""
    p = parser(__doc__, default_n=MILLION, quick_n=200_000)
    p.add_argument("--batch-n", type=int, default=None, help="events for the batching table (default n/10)")
    args = p.parse_args()
    n = resolve_n(args)
    batch_n = args.batch_n or max(n // 10, 1_000)
    print_header("bench_store", f"n={n:,}: 80% BarClosed, 20% order lifecycles over 3 systems; sqlite "
                 f"{sqlite3.sqlite_version}")
    gen_s, events = timed(lambda: store_mix(n))
    batches = list(batched(events, BATCH))
    payloads = [[codec.encode(e) for e in batch] for batch in batches]
    payload_bytes = sum(len(p) for batch in payloads for p in batch)
    console.print(f"generated {n:,} events in {gen_s:.1f} s, {payload_bytes / n:.0f} bytes each")
    with tempfile.TemporaryDirectory(prefix="tradebus-bench-store-", dir="/tmp") as tmpdir:
        tmp = Path(tmpdir)
        store_path, raw_path = tmp / "events.db", tmp / "raw.db"
        append_s = append_store(store_path, batches)
        sqlite_s = append_raw_sqlite(raw_path, payloads)
        file_s = append_file(tmp / "events.bin", payloads)
        report_append(n, append_s, sqlite_s, file_s, prepare_rows(batches))
        batching_table(events[:batch_n], tmp)
        decoded_s, raw_s, sqlite_read_s = read_decoded(store_path), read_raw(store_path), read_raw_sqlite(raw_path)
        rebuild_s, state, digest = rebuild_store(store_path)
        report_reads(n, decoded_s, raw_s, sqlite_read_s, rebuild_s)
        console.print(f"state_hash {digest}")
        console.print(f"rebuilt: {len(state.positions)} systems with positions, {state.closed_orders:,} orders"
                      f" closed, {len(state.open_orders)} open")
    report_targets(n, append_s, rebuild_s)
    problems = check_state(state, events)
    for problem in problems:
        console.print(f"[red]problem:[/red] {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
