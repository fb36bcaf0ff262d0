"""DuckDB, the research database: the only module that imports ``duckdb``.

Everything else gets connections from here and catches ``DuckError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import duckdb

DuckError = duckdb.Error
Connection = duckdb.DuckDBPyConnection


def connect(path: Path | str | None = None, *, read_only: bool = False) -> Connection:
    """Open a DuckDB database file (or an in-memory one when ``path`` is None)."""
    if path is None:
        return duckdb.connect()
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DuckLockedError(
                f"{path} is open for writing by another process (DuckDB allows one writer and no readers"
                f" beside it); wait for it to finish: {exc}"
            ) from None
        raise


class DuckLockedError(RuntimeError):
    """Another process holds the DuckDB file."""


class Database:
    """A DuckDB file held by one object: opened (its schema created unless read-only), used, closed."""

    SCHEMA: tuple[str, ...] = ()

    def __init__(self, con: Connection, path: Path | None) -> None:
        self._con = con
        self.path = path

    @classmethod
    def missing(cls, path: Path) -> Exception:
        """The error for a read-only open of a file that does not exist (say how to create it)."""
        return FileNotFoundError(f"no database at {path}")

    @classmethod
    def _open(cls, path: Path, read_only: bool) -> Self:
        if read_only and not path.exists():
            raise cls.missing(path)  # DuckDB would say less, and a read must not create the file
        con = connect(path, read_only=read_only)
        if not read_only:
            for statement in cls.SCHEMA:
                con.execute(statement)
        return cls(con, path)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_parquet(tables: list, path: Path, order_by: str) -> None:
    """Stack Arrow tables (columns by name) ordered by ``order_by`` into one Parquet file (zstd), written to a
    temporary name and renamed: a reader never sees half a file."""
    con = duckdb.connect()
    try:
        for i, table in enumerate(tables):
            con.register(f"t{i}", table)
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM t{i}" for i in range(len(tables)))
        tmp = path.with_name(path.name + ".tmp")
        con.execute(f"COPY ({union} ORDER BY {order_by}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)")
        tmp.replace(path)
    finally:
        con.close()


def read_parquet(path: Path, where: str = "", params: list | None = None):
    """A Parquet file (or the rows matching ``where``) as an Arrow table."""
    con = duckdb.connect()
    try:
        sql = "SELECT * FROM read_parquet(?)" + (f" WHERE {where}" if where else "")
        rel = con.sql(sql, params=[str(path), *(params or [])])
        return (getattr(rel, "to_arrow_table", None) or rel.arrow)()  # DuckDB 2 / 1.x
    finally:
        con.close()
