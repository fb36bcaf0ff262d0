"""The append-only event store: SQLite in WAL mode, one writer, any number of concurrent readers.

Why SQLite-WAL (docs/architecture.md has the measurements): readers in other processes never block the
writer and always see a consistent committed prefix; a commit is atomic and, with
``synchronous=FULL``, fsynced before ``append`` returns; the torn tail of an interrupted commit is
discarded by SQLite's WAL checksums, and it was never acknowledged. Secondary indexes give reads by
system, type and time without a second file format.

Guarantees:
- ``seq`` is the global position: 1, 2, 3, ... with no gap (it is the rowid, and rows are never removed);
- append is idempotent by event ``id``: re-appending an event already stored is a no-op reported in
  ``AppendResult.duplicates``; appending a *different* event under a stored id raises ``EventIdConflict``
  and stores nothing of the batch;
- nothing updates or deletes rows (triggers refuse it, even through raw SQL);
- one writer per store, enforced with a lock file (``StoreLockedError`` names the holder's pid);
- each payload carries a CRC-32 that every read checks: corruption raises ``StoreCorruptError``;
- a capture that must not stop (the recorder) appends with ``quarantine=True``: an event conflicting
  with a stored id, or a message that is no event at all, goes to the ``quarantine`` table with its
  reason in the same transaction, instead of failing the batch. Quarantine rows are keyed by a hash of
  what was received, so a poison message redelivered is quarantined once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

from tradebus.bus import codec, subjects
from tradebus.bus.events import Event, tag_of

FORMAT = "tradebus-events"
VERSION = "1"
TAIL_CHECK_ROWS = 1000

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE events (
        seq      INTEGER PRIMARY KEY,
        id       TEXT    NOT NULL UNIQUE,
        type     TEXT    NOT NULL,
        system   TEXT    NOT NULL,
        run      TEXT    NOT NULL,
        ts_event INTEGER NOT NULL,
        ts_init  INTEGER NOT NULL,
        crc      INTEGER NOT NULL,
        payload  BLOB    NOT NULL
    )""",
    "CREATE INDEX events_by_system ON events(system, seq)",
    "CREATE INDEX events_by_type ON events(type, seq)",
    "CREATE INDEX events_by_ts ON events(ts_event)",
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the event store is append-only: no UPDATE'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the event store is append-only: no DELETE'); END""",
)

_INSERT = (
    "INSERT INTO events (id, type, system, run, ts_event, ts_init, crc, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING"
)


# Added after version 1 shipped; a writer creates it on open, readers treat its absence as empty.
_QUARANTINE = """CREATE TABLE IF NOT EXISTS quarantine (
        key      TEXT    PRIMARY KEY,
        ts       INTEGER NOT NULL,
        subject  TEXT    NOT NULL,
        event_id TEXT    NOT NULL,
        reason   TEXT    NOT NULL,
        payload  BLOB    NOT NULL
    )"""


class StoreError(RuntimeError):
    """Base class of event store errors."""


class StoreLockedError(StoreError):
    """A second writer tried to open a store."""


class StoreCorruptError(StoreError):
    """The store's file is damaged, torn or not an event store."""


class EventIdConflict(StoreError):
    """A batch holds an event whose id is stored with different content."""


@dataclass(frozen=True)
class Rejected:
    """Something received that cannot be stored as an event: kept in quarantine with the reason."""

    subject: str
    payload: bytes
    reason: str
    event_id: str = ""


@dataclass(frozen=True)
class AppendResult:
    """What one ``append`` did: the seq range it wrote, the ids it found already stored, and (with
    ``quarantine=True``) how many it quarantined instead."""

    first_seq: int
    last_seq: int
    appended: int
    duplicates: tuple[str, ...] = ()
    quarantined: int = 0


@dataclass(frozen=True)
class Quarantined:
    """One quarantine row."""

    ts: int
    subject: str
    event_id: str
    reason: str
    size: int


class Record(NamedTuple):
    """One stored event and its global position."""

    seq: int
    event: Event


@dataclass
class StoreInfo:
    path: str
    size_bytes: int
    wal_bytes: int
    count: int
    first_seq: int
    last_seq: int
    first_ts_init: int | None
    last_ts_init: int | None
    by_type: dict[str, int] = field(default_factory=dict)
    by_system: dict[str, int] = field(default_factory=dict)
    writer_pid: int | None = None
    quarantined: int = 0


@dataclass
class VerifyReport:
    count: int
    problems: list[str]
    quarantined: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so a batch is exactly one transaction.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def writer_pid(path: Path) -> int | None:
    """Return the pid of the process writing the store, or None if no writer is running.

    Reads the pid the writer left in its lock file and checks that process is alive; it takes no lock,
    so it can never get in a starting writer's way.
    """
    lock_path = Path(str(path) + ".writer.lock")
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    return pid


class EventStore:
    """An open event store. ``EventStore.open_writer`` appends; ``EventStore.open_reader`` only reads."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self._closed = False
        self._last_seq = self._max_seq()

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open_writer(cls, path: Path | str, *, check: bool = True) -> "EventStore":
        """Open (creating if needed) the store for appending; fails if another writer holds it.

        A file that is not an event store is refused before anything is written to it.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_writer_lock(path)
        try:
            conn = _connect(path)
        except BaseException:
            _release_lock(lock_fd)
            raise
        return cls._open(path, conn, lock_fd, check)

    @classmethod
    def open_reader(cls, path: Path | str, *, check: bool = True) -> "EventStore":
        """Open an existing store read-only; safe while a writer in another process appends."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no event store at {path}")
        return cls._open(path, _connect(path), None, check)

    @classmethod
    def _open(cls, path: Path, conn: sqlite3.Connection, lock_fd: int | None, check: bool) -> "EventStore":
        store = None
        try:
            try:
                if lock_fd is None:
                    conn.execute("PRAGMA query_only = ON")
                    _check_meta(conn, path)
                else:
                    fresh = not _tables(conn)
                    if not fresh:
                        _check_meta(conn, path)
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = FULL")
                    if fresh:
                        _create(conn)
                    conn.execute(_QUARANTINE)
            except sqlite3.DatabaseError as exc:
                raise StoreCorruptError(f"{path}: not a readable tradebus event store ({exc})") from None
            store = cls(path, conn, lock_fd)
            if check:
                store._check_open()
            return store
        except BaseException:
            # Release everything: a failed open must not leave the lock (or a connection) behind.
            if store is not None:
                store.close()
            else:
                conn.close()
                if lock_fd is not None:
                    _release_lock(lock_fd)
            raise

    def _check_open(self) -> None:
        """Cheap checks at open: the sequence is gapless and the last rows are intact."""
        try:
            count, lo, hi = self._conn.execute("SELECT count(*), min(seq), max(seq) FROM events").fetchone()
            if count and (lo != 1 or hi != count):
                raise StoreCorruptError(
                    f"{self.path}: sequence has gaps ({count} events but seq runs {lo}..{hi});"
                    " run `tradebus store verify`"
                )
            after = max(0, (hi or 0) - TAIL_CHECK_ROWS)
            for _ in self._iter_rows("", (), after=after, batch=TAIL_CHECK_ROWS):
                pass
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(f"{self.path}: damaged ({exc}); run `tradebus store verify`") from None

    def _max_seq(self) -> int:
        return self._conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    @property
    def writable(self) -> bool:
        return self._lock_fd is not None

    # -- writing ------------------------------------------------------------------------------

    def append(self, events: Sequence[Event], *, quarantine: bool = False,
               rejected: Sequence[Rejected] = ()) -> AppendResult:
        """Append a batch atomically and durably; return once it is fsynced.

        ``quarantine``: an event whose id is stored (or earlier in the batch) with other content is put in
        quarantine instead of failing the batch; ``rejected`` goes there too, in the same transaction."""
        if not self.writable:
            raise StoreError(f"{self.path} is open read-only")
        if not events and not rejected:
            return AppendResult(self._last_seq + 1, self._last_seq, 0)
        rows = []
        for e in events:
            payload = codec.encode(e)
            rows.append((e.id, tag_of(e), e.system, e.run, e.ts_event, e.ts_init, zlib.crc32(payload), payload))
        with self._mutex:
            if self._closed:
                raise StoreError(f"{self.path} is closed")
            conn = self._conn
            before = self._last_seq
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
                after = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
                appended = after - before
                duplicates: tuple[str, ...] = ()
                conflicts: list[Rejected] = []
                if appended != len(rows):
                    duplicates, conflicts = self._check_duplicates(rows, before)
                    if conflicts and not quarantine:
                        raise self._conflict(conflicts[0].event_id)
                held = [*rejected, *conflicts]
                if held:
                    conn.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
                                     [_quarantine_row(r) for r in held])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._last_seq = after
        return AppendResult(before + 1, after, appended, duplicates, len(held))

    def _check_duplicates(self, rows: list[tuple], before: int) -> tuple[tuple[str, ...], list[Rejected]]:
        """Sort the rows the insert skipped: already stored with the same content (duplicates), or with
        other content (conflicts, each returned as a ``Rejected``)."""
        seen: dict[str, bytes] = {}
        dup: list[str] = []
        conflicts: list[Rejected] = []

        def conflict(eid: str, payload: bytes, stored_seq: str) -> None:
            conflicts.append(Rejected(subject=subjects.subject_for(codec.decode(payload)), payload=payload, event_id=eid,
                                      reason=f"id {eid} is already stored {stored_seq} with different content"))

        ids: list[str] = []
        for row in rows:
            eid, payload = row[0], row[7]
            if eid in seen:  # repeated within this batch
                if seen[eid] == payload:
                    dup.append(eid)
                else:
                    conflict(eid, payload, "earlier in the same batch")
            else:
                seen[eid] = payload
                ids.append(eid)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT seq, id, payload FROM events WHERE seq <= ? AND id IN ({marks})"
            for seq, eid, stored in self._conn.execute(query, (before, *chunk)):
                if bytes(stored) == seen[eid]:
                    dup.append(eid)
                else:
                    conflict(eid, seen[eid], f"at seq {seq}")
        return tuple(dict.fromkeys(dup)), conflicts

    def quarantined(self, limit: int = 1000) -> list[Quarantined]:
        """The quarantine, oldest first (at most ``limit`` rows)."""
        if not self._has_quarantine():
            return []
        rows = self._conn.execute(
            "SELECT ts, subject, event_id, reason, length(payload) FROM quarantine ORDER BY ts, key LIMIT ?", (limit,))
        return [Quarantined(*row) for row in rows]

    def _has_quarantine(self) -> bool:
        return "quarantine" in _tables(self._conn)

    def _quarantine_count(self) -> int:
        return self._conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] if self._has_quarantine() else 0

    def _conflict(self, event_id: str) -> EventIdConflict:
        return EventIdConflict(
            f"{self.path}: event id {event_id} is already stored with different content; nothing appended"
        )

    # -- reading ------------------------------------------------------------------------------

    def _iter_rows(self, where: str, params: tuple, *, after: int = 0, batch: int) -> Iterator[tuple[int, bytes]]:
        """Yield (seq, payload) with seq > ``after`` in seq order, checking each CRC.

        Pages by keyset on ``seq`` alone, so each page starts where the last ended (an extra lower bound
        would make SQLite rescan from it on every page).
        """
        last = after
        while True:
            cur = self._conn.execute(
                f"SELECT seq, crc, payload FROM events WHERE seq > ? {where} ORDER BY seq LIMIT ?",
                (last, *params, batch),
            )
            rows = cur.fetchall()
            if not rows:
                return
            crc32 = zlib.crc32
            for seq, crc, payload in rows:
                if crc32(payload) != crc:
                    raise StoreCorruptError(
                        f"{self.path}: event at seq {seq} fails its CRC check; run `tradebus store verify`"
                    )
                yield seq, payload
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def read_raw(
        self,
        from_seq: int = 1,
        to_seq: int | None = None,
        *,
        system: str | None = None,
        types: Iterable[str] | None = None,
        run: str | None = None,
        ts_from: int | None = None,
        ts_to: int | None = None,
        batch: int = 20_000,
    ) -> Iterator[tuple[int, bytes]]:
        """Yield (seq, msgpack payload) for events matching every filter given, in seq order."""
        clauses: list[str] = []
        params: list = []
        for clause, value in (("seq <= ?", to_seq), ("system = ?", system), ("run = ?", run),
                              ("ts_event >= ?", ts_from), ("ts_event < ?", ts_to)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if types is not None:
            type_list = list(types)
            clauses.append(f"type IN ({','.join('?' * len(type_list))})")
            params.extend(type_list)
        try:
            where = "".join(f" AND {c}" for c in clauses)
            yield from self._iter_rows(where, tuple(params), after=from_seq - 1, batch=batch)
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(f"{self.path}: damaged ({exc}); run `tradebus store verify`") from None

    def read(self, from_seq: int = 1, to_seq: int | None = None, **filters) -> Iterator[Record]:
        """Yield decoded ``Record``s; filters as in ``read_raw``."""
        decode = codec.decode
        for seq, payload in self.read_raw(from_seq, to_seq, **filters):
            yield Record(seq, decode(payload))

    def get(self, event_id: str) -> Record | None:
        """Return the event stored under ``event_id``, if any."""
        row = self._conn.execute("SELECT seq, crc, payload FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            return None
        if zlib.crc32(row[2]) != row[1]:
            raise StoreCorruptError(f"{self.path}: event at seq {row[0]} fails its CRC check; run `tradebus store verify`")
        return Record(row[0], codec.decode(row[2]))

    @property
    def last_seq(self) -> int:
        """The highest seq committed (re-read from disk for readers)."""
        if self.writable:
            return self._last_seq
        return self._max_seq()

    def info(self) -> StoreInfo:
        """Summarise the store: size, counts by type and system, range, writer. The counts come from one
        read transaction, so they agree with each other while a writer appends."""
        c = self._conn
        with self._mutex:
            c.execute("BEGIN")  # a WAL reader's snapshot lasts until the transaction ends
            try:
                count, lo, hi = c.execute(
                    "SELECT count(*), coalesce(min(seq),0), coalesce(max(seq),0) FROM events").fetchone()
                first_ts = c.execute("SELECT ts_init FROM events WHERE seq = ?", (lo,)).fetchone()
                last_ts = c.execute("SELECT ts_init FROM events WHERE seq = ?", (hi,)).fetchone()
                by_type = dict(c.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type").fetchall())
                by_system = dict(c.execute(
                    "SELECT system, count(*) FROM events GROUP BY system ORDER BY system").fetchall())
                quarantined = self._quarantine_count()
            finally:
                c.execute("COMMIT")
        wal = Path(str(self.path) + "-wal")
        return StoreInfo(
            path=str(self.path),
            size_bytes=self.path.stat().st_size,
            wal_bytes=wal.stat().st_size if wal.exists() else 0,
            count=count,
            first_seq=lo,
            last_seq=hi,
            first_ts_init=first_ts[0] if first_ts else None,
            last_ts_init=last_ts[0] if last_ts else None,
            by_type=by_type,
            by_system=by_system,
            writer_pid=os.getpid() if self.writable else writer_pid(self.path),
            quarantined=quarantined,
        )

    def verify(self) -> VerifyReport:
        """Check everything: SQLite integrity, gapless seq, every CRC, every payload decodes and matches its row."""
        problems: list[str] = []
        c = self._conn
        try:
            for (msg,) in c.execute("PRAGMA integrity_check"):
                if msg != "ok":
                    problems.append(f"sqlite integrity: {msg}")
            expected = 1
            count = 0
            ids: Counter[str] = Counter()
            for seq, eid, typ, system, ts_event, crc, payload in c.execute(
                "SELECT seq, id, type, system, ts_event, crc, payload FROM events ORDER BY seq"
            ):
                count += 1
                if seq != expected:
                    problems.append(f"gap: expected seq {expected}, found {seq}")
                expected = seq + 1
                if zlib.crc32(payload) != crc:
                    problems.append(f"seq {seq}: CRC mismatch")
                    continue
                try:
                    event = codec.decode(payload)
                except codec.EventDecodeError as exc:
                    problems.append(f"seq {seq}: {exc}")
                    continue
                if (event.id, tag_of(event), event.system, event.ts_event) != (eid, typ, system, ts_event):
                    problems.append(f"seq {seq}: indexed columns disagree with the payload")
                ids[eid] += 1
            problems.extend(f"id {eid} stored {n} times" for eid, n in ids.items() if n > 1)
            quarantined = self._quarantine_count()
        except sqlite3.DatabaseError as exc:
            problems.append(f"sqlite error: {exc}")
            count, quarantined = -1, 0
        return VerifyReport(count=count, problems=problems, quarantined=quarantined)

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and release the writer lock."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
            if self._lock_fd is not None:
                _release_lock(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quarantine_row(r: Rejected) -> tuple:
    # What was received, not why: a poison message redelivered in another batch is one row.
    key = hashlib.sha256(b"\0".join((r.subject.encode(), r.event_id.encode(), r.payload)))
    return (key.hexdigest(), time.time_ns(), r.subject, r.event_id, r.reason, r.payload)


def _release_lock(fd: int) -> None:
    """Drop the writer lock, clearing the pid first so writer_pid() finds no stale one."""
    os.ftruncate(fd, 0)
    os.close(fd)


def _take_writer_lock(path: Path) -> int:
    lock_path = Path(str(path) + ".writer.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLockedError(
            f"{path} is already open for writing by pid {holder}: a store has one writer."
            " Read it from other processes (store info, tail, rebuild) while it runs."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _create(conn: sqlite3.Connection) -> None:
    """Create schema and meta in one transaction: a crash leaves either nothing or a whole store."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [("format", FORMAT), ("version", VERSION)])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _check_meta(conn: sqlite3.Connection, path: Path) -> None:
    tables = _tables(conn)
    if not {"meta", "events"} <= tables:
        raise StoreCorruptError(f"{path}: not a tradebus event store (tables: {', '.join(sorted(tables)) or 'none'})")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("format") != FORMAT:
        raise StoreCorruptError(f"{path}: not a tradebus event store (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise StoreError(f"{path}: store format version {meta.get('version')!r}; this tradebus reads {VERSION!r}")
