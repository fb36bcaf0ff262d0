"""The experiments table (DuckDB, in the data home): every trial the factory ran, and what it concluded.

One row per trial, keyed by a hash of everything that decides its result (strategy, parameters and
config overrides, symbol, timeframe, window, the hash of the series it reads, cost model, fill rule, and
the digest of the code that computes it): running the same trial again is a lookup, not a second row,
and after a change to that code or those series it is a new trial. Each sweep records its job's plan
(``job_plans``): the trials it counts now. Rows of older code or data stay in the table but leave the
job's counts (the deflated Sharpe's N and spread, CSCV's matrix) and the default listings; validation
later fills the status columns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

from tradebus import duck, settings

COLUMNS: dict[str, str] = {
    "id": "VARCHAR PRIMARY KEY",
    "experiment_id": "VARCHAR",  # the group: a sweep job, an LLM iteration
    "job_id": "VARCHAR",
    "job_trials": "BIGINT",  # trials the job counted, for selection statistics
    "strategy": "VARCHAR",
    "strategy_source": "VARCHAR",  # existing / composable / llm_generated
    "symbol": "VARCHAR",
    "timeframe": "VARCHAR",
    "parameters": "VARCHAR",  # JSON: the varied strategy parameters and config overrides
    "config": "VARCHAR",  # JSON: the whole system config of the trial
    "return_pct": "DOUBLE",
    "annualised_return": "DOUBLE",
    "max_drawdown": "DOUBLE",
    "total_trades": "BIGINT",
    "trades_per_year": "DOUBLE",
    "win_rate": "DOUBLE",
    "profit_factor": "DOUBLE",
    "sharpe": "DOUBLE",
    "sortino": "DOUBLE",
    "score": "DOUBLE",  # NULL when disqualified
    "disqualified": "VARCHAR",  # why, or NULL
    "bars": "BIGINT",
    "block_stats": "DOUBLE[]",  # per time block: bars, sum and sum of squares of bar returns (CSCV)
    "train_period": "VARCHAR",
    "test_period": "VARCHAR",
    "test_return_pct": "DOUBLE",
    "validation_status": "VARCHAR",  # pending / passed / marginal / rejected
    "validation_details": "VARCHAR",  # JSON
    "parent_experiment_id": "VARCHAR",
    "created_at": "TIMESTAMP",
    "cost_model": "VARCHAR",  # JSON
    "fill": "VARCHAR",
    "data_sha256": "VARCHAR",
    "code_version": "VARCHAR",
}


def default_path() -> Path:
    return settings.data_home() / "experiments.duckdb"


@dataclass
class Experiment:
    """A row, as the tracker hands it out."""

    row: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.row[key]

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.row["parameters"])


_ARROW = {"VARCHAR PRIMARY KEY": pa.string(), "VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(),
          "DOUBLE[]": pa.list_(pa.float64()), "TIMESTAMP": pa.timestamp("us")}


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class Tracker(duck.Database):
    """The experiments table: record trials, query them."""

    SCHEMA = (f"CREATE TABLE IF NOT EXISTS experiments ({', '.join(f'{k} {t}' for k, t in COLUMNS.items())})",
              # Each job's trials as last planned: rows of older code or data stay, but only these count.
              "CREATE TABLE IF NOT EXISTS job_plans (job_id VARCHAR PRIMARY KEY, trial_ids VARCHAR[],"
              " planned_at TIMESTAMP)")

    @classmethod
    def open(cls, path: Path | str | None = None, *, read_only: bool = False) -> "Tracker":
        """Open (creating unless ``read_only``) the experiments file; ``path`` None means the data home's."""
        return cls._open(Path(path) if path is not None else default_path(), read_only)

    @classmethod
    def missing(cls, path: Path) -> Exception:
        return FileNotFoundError(f"no experiments at {path}: run `tradebus sweep JOB.yaml` first")

    # -- writing ---------------------------------------------------------------------------------

    def save(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert trials in one transaction; ones already stored (same id) are kept as they are."""
        if not rows:
            return 0
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        defaults = {"created_at": now, "validation_status": "pending"}
        # One Arrow table per batch, inserted by one statement: DuckDB's executemany binds row by row
        # (4 ms a row, the whole of a sweep's coordinator time before).
        table = pa.table({n: pa.array([_clean(r.get(n, defaults.get(n))) for r in rows], type=_ARROW[t])
                          for n, t in COLUMNS.items()})
        before = self.count()
        self._con.execute("BEGIN")
        try:
            self._con.register("incoming_trials", table)
            self._con.execute(f"INSERT INTO experiments ({', '.join(COLUMNS)}) SELECT * FROM incoming_trials"
                              " ON CONFLICT (id) DO NOTHING")
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        finally:
            self._con.unregister("incoming_trials")
        return self.count() - before

    def record_plan(self, job: str, trial_ids: list[str]) -> None:
        """Make ``trial_ids`` the job's trials: what its selection statistics count from now on."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        self._con.execute("INSERT OR REPLACE INTO job_plans VALUES (?, ?, ?)", [job, trial_ids, now])

    def update_validation(self, exp_id: str, status: str, details: dict[str, Any], *, test_return: float | None = None,
                          train_period: str | None = None, test_period: str | None = None) -> None:
        self._con.execute(
            "UPDATE experiments SET validation_status = ?, validation_details = ?, test_return_pct = ?,"
            " train_period = coalesce(?, train_period), test_period = coalesce(?, test_period) WHERE id = ?",
            [status, json.dumps(details, sort_keys=True, default=float), _clean(test_return), train_period,
             test_period, exp_id])

    def common_failures(self, limit: int = 8) -> list[tuple[str, str, int]]:
        """(strategy, why disqualified, how many), the commonest first."""
        return self._con.execute("SELECT strategy, disqualified, count(*) FROM experiments WHERE disqualified IS NOT"
                                 " NULL GROUP BY strategy, disqualified ORDER BY count(*) DESC LIMIT ?", [limit]).fetchall()

    def tried(self) -> set[tuple[str, str, str]]:
        """Every (strategy, symbol, timeframe) with a trial."""
        return set(self._con.execute("SELECT DISTINCT strategy, symbol, timeframe FROM experiments").fetchall())

    def mark_lineage(self, job: str, source: str, experiment_id: str, parent: str | None) -> None:
        """Say where a job's trials came from (an LLM iteration) and what they descend from."""
        self._con.execute("UPDATE experiments SET strategy_source = ?, experiment_id = ?, parent_experiment_id = ?"
                          " WHERE job_id = ?", [source, experiment_id, parent, job])

    # -- reading ---------------------------------------------------------------------------------

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[Experiment]:
        cur = self._con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [Experiment(dict(zip(names, r))) for r in cur.fetchall()]

    def count(self) -> int:
        return self._con.execute("SELECT count(*) FROM experiments").fetchone()[0]

    def existing(self, ids: Iterable[str], other_than_job: str | None = None) -> set[str]:
        """Which of these trial ids are already stored (work to skip); ``other_than_job``: stored by another job."""
        ids = list(ids)
        found: set[str] = set()
        for i in range(0, len(ids), 1000):
            chunk = ids[i:i + 1000]
            marks = ", ".join("?" * len(chunk))
            extra = "" if other_than_job is None else " AND job_id IS DISTINCT FROM ?"
            params = chunk + ([] if other_than_job is None else [other_than_job])
            found |= {r[0] for r in self._con.execute(f"SELECT id FROM experiments WHERE id IN ({marks}){extra}",
                                                      params).fetchall()}
        return found

    def has_been_tested(self, exp_id: str) -> bool:
        return bool(self.existing([exp_id]))

    def get(self, exp_id: str) -> Experiment | None:
        rows = self._rows("SELECT * FROM experiments WHERE id = ? OR id LIKE ? ORDER BY id LIMIT 2", [exp_id, exp_id + "%"])
        if len(rows) > 1 and rows[0]["id"] != exp_id:
            raise KeyError(f"experiment id prefix {exp_id!r} is ambiguous")
        return rows[0] if rows else None

    def top(self, n: int = 10, *, validated_only: bool = True, min_trades: int = 0, job: str | None = None,
            strategy: str | None = None, symbol: str | None = None, timeframe: str | None = None) -> list[Experiment]:
        """Best by score; by default only trials that passed validation. Rows of older code or data (no
        longer in their job's plan) are not listed."""
        where, params = ["score IS NOT NULL", "total_trades >= ?"], [min_trades]
        if self._has_plans():
            where.append("(job_id NOT IN (SELECT job_id FROM job_plans) OR id IN (SELECT unnest(trial_ids) FROM job_plans))")
        if validated_only:
            where.append("validation_status = 'passed'")
        for col, val in (("job_id", job), ("strategy", strategy), ("symbol", symbol), ("timeframe", timeframe)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        return self._rows(f"SELECT * FROM experiments WHERE {' AND '.join(where)} ORDER BY score DESC, id LIMIT ?",
                          [*params, n])

    def _has_plans(self) -> bool:
        return bool(self._con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'job_plans'").fetchone()[0])

    def _plan(self, job: str) -> list[str] | None:
        if not self._has_plans():
            return None
        row = self._con.execute("SELECT trial_ids FROM job_plans WHERE job_id = ?", [job]).fetchone()
        return None if row is None else list(row[0])

    def _of_job(self, job: str) -> tuple[str, list[Any]]:
        """WHERE clause for a job's current trials: its last plan's, else (a table from before plans were
        kept) every row recorded under the job."""
        if self._plan(job) is None:
            return "job_id = ?", [job]
        return "id IN (SELECT unnest(trial_ids) FROM job_plans WHERE job_id = ?)", [job]

    def job_trials(self, job: str) -> int:
        """The job's trial count: its last plan's (the deflated Sharpe's N)."""
        plan = self._plan(job)
        if plan is not None:
            return len(plan)
        n = self._con.execute("SELECT max(job_trials) FROM experiments WHERE job_id = ?", [job]).fetchone()[0]
        return int(n or 0)

    def stale(self, job: str) -> int:
        """Rows recorded under the job that its last plan no longer holds (older code or data)."""
        plan = self._plan(job)
        if plan is None:
            return 0
        return self._con.execute(
            "SELECT count(*) FROM experiments WHERE job_id = ? AND id NOT IN"
            " (SELECT unnest(trial_ids) FROM job_plans WHERE job_id = ?)", [job, job]).fetchone()[0]

    def job_rows(self, job: str) -> list[Experiment]:
        """Every current trial of a job (its last plan's; older code or data left out)."""
        where, params = self._of_job(job)
        return self._rows(f"SELECT * FROM experiments WHERE {where} ORDER BY id", params)

    def job_sharpes(self, job: str) -> list[float | None]:
        """The annualised Sharpe ratio of every current trial of a job (the DSR's spread of trials)."""
        where, params = self._of_job(job)
        return [r[0] for r in self._con.execute(f"SELECT sharpe FROM experiments WHERE {where}", params).fetchall()]

    def block_stats(self, job: str, symbol: str, timeframe: str, window: str) -> list[np.ndarray]:
        """Per current trial of a job on one series and window: its (blocks, 3) statistics, for CSCV."""
        where, params = self._of_job(job)
        rows = self._con.execute(
            f"SELECT block_stats FROM experiments WHERE {where} AND symbol = ? AND timeframe = ? AND train_period = ?"
            " AND len(block_stats) > 0 ORDER BY id", [*params, symbol, timeframe, window]).fetchall()
        return [np.asarray(r[0], dtype=np.float64).reshape(-1, 3) for r in rows]

    def parameter_values(self, job: str, strategy: str, symbol: str, timeframe: str) -> dict[str, list[Any]]:
        """Every value a job tried for each varied parameter of a strategy on one series."""
        out: dict[str, list[Any]] = {}
        for (text,) in self._con.execute(
                "SELECT DISTINCT parameters FROM experiments WHERE job_id = ? AND strategy = ? AND symbol = ?"
                " AND timeframe = ?", [job, strategy, symbol, timeframe]).fetchall():
            for k, v in json.loads(text).items():
                if v not in out.setdefault(k, []):
                    out[k].append(v)
        return out

    def failures(self, strategy: str, n: int = 50) -> list[Experiment]:
        """What did not work for a strategy: disqualified, rejected, or losing trials."""
        return self._rows(
            "SELECT * FROM experiments WHERE strategy = ? AND (disqualified IS NOT NULL OR validation_status = 'rejected'"
            " OR return_pct <= 0) ORDER BY coalesce(score, -1e300), id LIMIT ?", [strategy, n])

    def by_symbol(self, symbol: str) -> list[Experiment]:
        return self._rows("SELECT * FROM experiments WHERE symbol = ? ORDER BY created_at, id", [symbol])

    def untested(self, strategy: str, symbols: Sequence[str], timeframes: Sequence[str]) -> list[tuple[str, str]]:
        """The (symbol, timeframe) pairs a strategy has never been tried on."""
        tried = {tuple(r) for r in self._con.execute(
            "SELECT DISTINCT symbol, timeframe FROM experiments WHERE strategy = ?", [strategy]).fetchall()}
        return [(s, tf) for s in symbols for tf in timeframes if (s, tf) not in tried]

    def summary_for_llm(self, max_results: int = 10) -> str:
        """A concise text of what has been tried and what held up, for a research prompt (no secrets here:
        only strategy names, parameters and statistics)."""
        lines = []
        top = self.top(max_results)
        lines.append(f"TOP {len(top)} VALIDATED:" if top else "NO VALIDATED CANDIDATES YET.")
        for i, e in enumerate(top, 1):
            lines.append(f" {i}. {e['strategy']} {e['symbol']} {e['timeframe']} {e['parameters']}: "
                         f"return {e['return_pct']:+.1%}, Sharpe {e['sharpe']:.2f}, {e['total_trades']} trades")
        stats = self._con.execute(
            "SELECT strategy, count(*), count(*) FILTER (WHERE disqualified IS NOT NULL),"
            " count(*) FILTER (WHERE return_pct > 0), max(sharpe), list(DISTINCT symbol ORDER BY symbol)"
            " FROM experiments GROUP BY strategy ORDER BY strategy").fetchall()
        lines.append("TRIED (strategy: trials, disqualified, profitable, best Sharpe, symbols):")
        for strategy, n, dq, pos, best, syms in stats:
            best_s = "n/a" if best is None else f"{best:.2f}"
            lines.append(f" - {strategy}: {n}, {dq}, {pos}, {best_s}, {', '.join(syms)}")
        return "\n".join(lines)
