"""Crash safety of the event store, with real processes and real files (no mocks).

A writer child process appends batches as fast as it can and prints one ``ACK`` line after each
``append`` returns (the store fsyncs before returning, so an ACK means "durable"). The test SIGKILLs it
at a random moment, reopens the store and checks what a crash is allowed to leave behind: every
acknowledged event, a gapless ``seq``, no duplicate id, every CRC valid, and whole batches only.
Restarting the child on the same file re-appends its last stored batch merged with the next one, which
proves that re-appending is idempotent (the stored part comes back in ``AppendResult.duplicates``).

The event stream is a pure function of a seed (``Stream`` below), shared verbatim by the child and
the test, so the test knows every event and every batch boundary the child could have written.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tradebus.bus import codec
from tradebus.eventstore.store import TAIL_CHECK_ROWS, EventStore, StoreCorruptError, StoreLockedError, writer_pid

from .storekit import CYCLES, WRITER_PAUSE_S, Stream


def _check_after_crash(path: Path, stream: Stream, prev: int, lines: list[str]) -> tuple[int, int, bool]:
    """Assert the crash invariants; return (stored count, last acknowledged seq, resumed)."""
    acked = prev
    resumed = False
    ack_ids: list[tuple[int, str]] = []
    for line in lines:
        word, *f = line.split()
        if word == "RESUME":
            last, ndup, appended, ok = map(int, f)
            j = stream.bound_index(prev)
            assert j is not None and j > 0, f"resume after {prev} events, which is no batch boundary"
            assert ok == 1, f"re-appended batch misreported: {line}"
            assert (last, ndup, appended) == (stream.bound(j + 1), prev - stream.bound(j - 1), last - prev), line
            acked, resumed = last, True
        elif word == "ACK":
            last, last_id, n = int(f[0]), f[1], int(f[2])
            j = stream.bound_index(last)
            assert j is not None and last > acked, f"ACK {last} after {acked}: not the next batch boundary"
            assert stream.bound(j - 1) == acked and n == last - acked, f"ACK skipped or split a batch: {line}"
            assert last_id == stream.events(last - 1, last)[0].id, f"ACK names an id the stream does not have: {line}"
            acked = last
            ack_ids.append((last, last_id))

    with EventStore.open_reader(path) as store:
        info = store.info()
        count = info.count
        # Gapless seq 1..N, nothing lost that was acknowledged, whole batches only.
        assert (info.first_seq, info.last_seq) == ((1, count) if count else (0, 0)), info
        assert store.last_seq == count
        assert count >= acked, f"acknowledged through seq {acked} but only {count} events survived"
        j = stream.bound_index(acked)
        assert count in (acked, stream.bound(j + 1)), (
            f"{count} events stored: not the last acknowledged boundary {acked} nor the next one "
            f"{stream.bound(j + 1)} (a torn batch)"
        )
        # Every acknowledged id is stored at the seq its ACK reported.
        for seq, eid in ack_ids:
            rec = store.get(eid)
            assert rec is not None and rec.seq == seq, f"acknowledged {eid} at seq {seq}, store has {rec}"
        # What the crashed run added is exactly the generator's continuation of the stored prefix.
        want = stream.events(prev, count)
        got = list(store.read_raw(from_seq=prev + 1))
        assert [s for s, _ in got] == list(range(prev + 1, count + 1))
        assert [p for _, p in got] == [codec.encode(e) for e in want]
        # Every row: SQLite integrity, CRC, decoding, unique id.
        report = store.verify()
        assert report.ok and report.count == count, report.problems[:5]
        assert info.writer_pid is None, f"lock still held by {info.writer_pid} after its holder died"
    return count, acked, resumed


def test_sigkilled_writer_restarted_25_times_loses_no_acknowledged_event(tmp_path, writers):
    # Arrange
    path = tmp_path / "events.sqlite"
    seed = "crash-1"
    stream = Stream(seed)
    rng = random.Random(20241121)
    count = 0
    resumes = surviving_unacked = early_kills = 0

    for cycle in range(CYCLES):
        # Act: start the writer on the same file and SIGKILL it at a random moment. Most kills are
        # timed from READY (the store is open and appending); some from spawn, which can land in
        # interpreter start-up, open_writer or the re-append of the last batch.
        early = cycle > 0 and rng.random() < 0.2
        delay = rng.uniform(0.0, 0.25) if early else rng.uniform(0.05, 0.4)
        w = writers(path, seed, pause=WRITER_PAUSE_S)
        if not early:
            _, pid, start_count = w.wait_for("READY")
            assert (int(pid), int(start_count)) == (w.proc.pid, count)
        time.sleep(delay)
        lines = w.kill()

        # Assert
        assert w.proc.returncode == -signal.SIGKILL, (
            f"cycle {cycle}: writer died on its own ({w.proc.returncode}):\n{w.stderr()}"
        )
        prev = count
        count, acked, resumed = _check_after_crash(path, stream, prev, lines)
        resumes += resumed
        surviving_unacked += count > acked
        early_kills += early
        w.close()

    with EventStore.open_writer(path) as store:  # the dead writers left the lock free
        assert store.last_seq == count
        result = store.append(stream.events(0, stream.bound(1)))  # batch 0 again: all duplicates
        assert (result.appended, len(result.duplicates)) == (0, stream.bound(1))
    with EventStore.open_reader(path) as store:
        assert [p for _, p in store.read_raw()] == [codec.encode(e) for e in stream.events(0, count)]
    # The run exercised what it claims to: restarts that re-appended, and a growing store.
    assert resumes >= CYCLES // 2, f"only {resumes} restarts got to re-append their last batch"
    assert count > 10 * 500, f"only {count} events written in {CYCLES} cycles"
    print(f"\n{CYCLES} kills ({early_kills} early): {count} events, {resumes} idempotent re-appends,"
          f" {surviving_unacked} kills after a commit but before its ACK")


def _snapshot(path: Path) -> dict[str, bytes]:
    names = [path, Path(f"{path}-wal"), Path(f"{path}.writer.lock")]
    return {p.name: p.read_bytes() for p in names if p.exists()}


def test_second_writer_while_child_writer_alive_raises_store_locked_naming_pid(tmp_path, writers):
    # Arrange: a child writer holds the store (appends 3 batches, then idles holding it open).
    path = tmp_path / "events.sqlite"
    w = writers(path, "lock-1", max_batches=3)
    _, idle_count = w.wait_for("IDLE")
    before = _snapshot(path)

    # Act
    with pytest.raises(StoreLockedError) as excinfo:
        EventStore.open_writer(path)

    # Assert: the error names the live holder, and the failed attempt changed nothing on disk.
    assert f"pid {w.proc.pid}" in str(excinfo.value)
    assert w.proc.poll() is None
    assert _snapshot(path) == before
    assert writer_pid(path) == w.proc.pid
    with EventStore.open_reader(path) as reader:
        assert reader.info().writer_pid == w.proc.pid
        assert reader.last_seq == int(idle_count) > 0
    w.kill()
    with EventStore.open_writer(path) as store:  # released once the holder is gone
        assert store.last_seq == int(idle_count)


def _store_with_marker(path: Path, n: int, marked: int) -> bytes:
    """Write events 0..n-1 of a stream, event ``marked`` carrying a unique symbol; return the marker."""
    import msgspec

    marker = b"ZZ-CORRUPT-ME-ZZ"
    events = Stream("corrupt-1").events(0, n)
    events[marked] = msgspec.structs.replace(events[marked], symbol=marker.decode())
    with EventStore.open_writer(path) as store:
        store.append(events)
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    assert path.read_bytes().count(marker) == 1
    return marker


def _flip_byte_in(path: Path, marker: bytes) -> int:
    data = bytearray(path.read_bytes())
    at = data.find(marker) + len(marker) // 2
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return at


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tradebus", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "10000"},
    )


def test_flipped_payload_byte_in_tail_open_raises_store_corrupt(tmp_path):
    # Arrange: 50 events, one byte of seq 37's payload flipped on disk (inside a string: still msgpack).
    path = tmp_path / "events.sqlite"
    marker = _store_with_marker(path, 50, marked=36)
    _flip_byte_in(path, marker)

    # Act / Assert: opening checks the tail, and says which event is bad.
    with pytest.raises(StoreCorruptError, match=r"seq 37 fails its CRC"):
        EventStore.open_reader(path)
    with pytest.raises(StoreCorruptError, match=r"seq 37 fails its CRC"):
        EventStore.open_writer(path)
    with EventStore.open_reader(path, check=False) as store:
        assert store.verify().problems == ["seq 37: CRC mismatch"]


def test_flipped_payload_byte_before_tail_read_and_verify_report_it(tmp_path):
    # Arrange: the damaged event (seq 5) is older than the tail that opening checks.
    path = tmp_path / "events.sqlite"
    marker = _store_with_marker(path, TAIL_CHECK_ROWS + 200, marked=4)
    _flip_byte_in(path, marker)

    # Act
    store = EventStore.open_reader(path)
    with pytest.raises(StoreCorruptError, match=r"seq 5 fails its CRC"):
        list(store.read())
    after = [r.seq for r in store.read(from_seq=6, to_seq=8)]
    report = store.verify()
    store.close()
    cli_verify = _cli("store", "verify", "--store", str(path))
    cli_rebuild = _cli("rebuild", "--store", str(path), "--json")

    # Assert: reported, never skipped; events after it stay readable on purpose.
    assert after == [6, 7, 8]
    assert report.problems == ["seq 5: CRC mismatch"] and report.count == TAIL_CHECK_ROWS + 200
    assert cli_verify.returncode == 1 and "seq 5: CRC mismatch" in cli_verify.stderr, cli_verify
    assert cli_rebuild.returncode != 0 and "state_hash" not in cli_rebuild.stdout, cli_rebuild


def test_zeroed_btree_page_read_and_verify_report_damage(tmp_path):
    # Arrange: zero the whole page holding one event's row (its b-tree header goes too).
    path = tmp_path / "events.sqlite"
    marker = _store_with_marker(path, 3000, marked=1500)
    page_size = 4096
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == page_size
    data = bytearray(path.read_bytes())
    page = data.find(marker) // page_size
    data[page * page_size : (page + 1) * page_size] = bytes(page_size)
    path.write_bytes(bytes(data))

    # Act: whichever step notices first must say so; none may return a shortened log as fine.
    try:
        with EventStore.open_reader(path) as store:
            try:
                stored = sum(1 for _ in store.read_raw())
            except StoreCorruptError:
                stored = None
            report = store.verify()
    except StoreCorruptError:
        return  # reported at open: fine

    # Assert
    assert stored is None, f"read {stored} of 3000 events from a damaged store without an error"
    assert not report.ok
    assert any("integrity" in p or "malformed" in p or "CRC" in p for p in report.problems), report.problems


def test_file_that_is_not_sqlite_open_raises_store_corrupt_and_file_untouched(tmp_path):
    # Arrange
    path = tmp_path / "events.sqlite"
    garbage = random.Random(7).randbytes(64 * 1024)
    path.write_bytes(garbage)

    # Act / Assert
    with pytest.raises(StoreCorruptError, match="not a readable"):
        EventStore.open_reader(path)
    with pytest.raises(StoreCorruptError, match="not a readable"):
        EventStore.open_writer(path)
    assert writer_pid(path) is None  # the failed open released its lock
    assert path.read_bytes() == garbage
    cli = _cli("store", "info", "--store", str(path), "--json")
    assert cli.returncode == 1 and "not a readable" in cli.stderr, cli


def _other_apps_sqlite(tmp_path: Path) -> Path:
    """A valid SQLite file that some other program owns."""
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('alice')")
    conn.close()
    return path


def test_sqlite_file_of_another_app_open_reader_raises_store_corrupt(tmp_path):
    # Arrange
    path = _other_apps_sqlite(tmp_path)

    # Act / Assert
    with pytest.raises(StoreCorruptError, match="not a tradebus event store"):
        EventStore.open_reader(path)


def test_sqlite_file_of_another_app_open_writer_raises_and_leaves_it_untouched(tmp_path):
    # Arrange
    path = _other_apps_sqlite(tmp_path)
    before = path.read_bytes()

    # Act
    with pytest.raises(StoreCorruptError):
        EventStore.open_writer(path).close()

    # Assert
    assert path.read_bytes() == before


def test_open_writer_failing_its_open_check_releases_the_writer_lock(tmp_path):
    # Arrange
    path = tmp_path / "events.sqlite"
    _flip_byte_in(path, _store_with_marker(path, 20, marked=7))

    # Act
    with pytest.raises(StoreCorruptError):
        EventStore.open_writer(path)

    # Assert: nobody holds the store, so a repair tool may open it without the check.
    assert writer_pid(path) is None
    EventStore.open_writer(path, check=False).close()


# Kills the child at the n-th "INSERT INTO meta" statement of its first open_writer: fault injection at
# an exact point of store creation (the store code itself runs unchanged).
KILL_IN_CREATE_SCRIPT = r'''
import os, signal, sys
import tradebus.eventstore.store as store_mod

path, kill_at = sys.argv[1], int(sys.argv[2])
real_connect = store_mod._connect
seen = []

def trace(sql):
    if sql.lstrip().upper().startswith("INSERT INTO META"):
        seen.append(sql)
        if len(seen) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

def connect(p):
    conn = real_connect(p)
    conn.set_trace_callback(trace)
    return conn

store_mod._connect = connect
store_mod.EventStore.open_writer(path)
print("OPENED", flush=True)
'''


def test_writer_killed_between_meta_rows_of_new_store_restart_opens_it(tmp_path):
    # Arrange: the first writer dies after the "format" row of a new store, before the "version" row.
    path = tmp_path / "events.sqlite"
    child = subprocess.run(
        [sys.executable, "-c", KILL_IN_CREATE_SCRIPT, str(path), "2"], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL and "OPENED" not in child.stdout, child

    # Act: the restarted writer opens the half-created store.
    with EventStore.open_writer(path) as store:
        result = store.append(Stream("create-1").events(0, 3))

    # Assert
    assert (result.first_seq, result.last_seq) == (1, 3)
