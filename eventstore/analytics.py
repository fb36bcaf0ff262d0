"""SQL and Parquet over the event store, through DuckDB.

The store is streamed into an in-memory DuckDB table ``events`` in chunks: the envelope as typed
columns, ``event_time`` as a timestamp, and the whole event as JSON in ``payload`` (query it with
``payload->>'symbol'`` or ``json_extract``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tradebus import duck
from tradebus.bus import codec
from tradebus.bus.events import tag_of
from tradebus.eventstore.store import EventStore

_CHUNK = 100_000
FORMATS = ("parquet", "csv", "jsonl")


def _chunks(store: EventStore, filters: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    cols: dict[str, list] = {k: [] for k in ("seq", "id", "type", "system", "run", "cause", "ts_event", "ts_init", "payload")}
    for seq, payload in store.read_raw(**filters):
        e = codec.decode(payload)
        cols["seq"].append(seq)
        cols["id"].append(e.id)
        cols["type"].append(tag_of(e))
        cols["system"].append(e.system)
        cols["run"].append(e.run)
        cols["cause"].append(e.cause)
        cols["ts_event"].append(e.ts_event)
        cols["ts_init"].append(e.ts_init)
        cols["payload"].append(codec.to_json(e).decode())
        if len(cols["seq"]) >= _CHUNK:
            yield _arrays(cols)
            cols = {k: [] for k in cols}
    if cols["seq"]:
        yield _arrays(cols)


def _arrays(cols: dict[str, list]) -> dict[str, np.ndarray]:
    ints = ("seq", "ts_event", "ts_init")
    return {k: np.asarray(v, dtype=np.int64) if k in ints else np.asarray(v, dtype=object) for k, v in cols.items()}


_SELECT = (
    "SELECT seq, id, type, system, run, cause, ts_event, ts_init,"
    " make_timestamp(ts_event // 1000) AS event_time, payload::JSON AS payload FROM chunk"
)
_EMPTY = (
    "CREATE TABLE events (seq BIGINT, id VARCHAR, type VARCHAR, system VARCHAR, run VARCHAR, cause VARCHAR,"
    " ts_event BIGINT, ts_init BIGINT, event_time TIMESTAMP, payload JSON)"
)


def load(store: EventStore, con: duck.Connection, **filters: Any) -> int:
    """Create table ``events`` in ``con`` from the store; return the row count."""
    con.execute(_EMPTY)
    n = 0
    for chunk in _chunks(store, filters):
        con.register("chunk", chunk)
        con.execute(f"INSERT INTO events {_SELECT}")
        con.unregister("chunk")
        n += len(chunk["seq"])
    return n


def query(store: EventStore, sql: str) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` against the store's events; return column names and rows."""
    con = duck.connect()
    try:
        load(store, con)
        cur = con.execute(sql)
        return [d[0] for d in cur.description or []], cur.fetchall()
    finally:
        con.close()


def export(store: EventStore, out: Path, fmt: str = "parquet", **filters: Any) -> int:
    """Write the store's events (optionally filtered) to ``out``; return the row count."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    con = duck.connect()
    try:
        n = load(store, con, **filters)
        options = {"parquet": "FORMAT parquet, COMPRESSION zstd", "csv": "FORMAT csv, HEADER", "jsonl": "FORMAT json"}[fmt]
        target = str(tmp).replace("'", "''")
        con.execute(f"COPY (SELECT * FROM events ORDER BY seq) TO '{target}' ({options})")
        tmp.replace(out)  # a reader never sees a half-written export
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    return n
