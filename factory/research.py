"""The research loop: Claude proposes, the factory tests, every trial is counted and every call audited.

One iteration: a prompt built from live data (the experiments table's best and worst, what was never
tried, this run's earlier iterations, the fixed costs, and a catalogue generated from the strategy and block
registries) -> one ``propose_sweep`` tool call -> validated as a sweep job by the sweep's own schema (an
error goes back to the model, at most ``repair_turns`` times) -> a novelty check against every trial already
in the table (too close: refused before it runs) -> the sweep -> validation of its best trial, with the
deflated Sharpe counting every trial the run proposed so far -> the iteration's record.

The proposal names a strategy and its own parameters' values. Symbols, timeframes, window, costs, sizing,
scoring and validation come from the research settings a person wrote; a proposal that tries to set any of
them is refused, naming the field.

Resumable: each model call is kept whole in the ledger under (run, iteration, turn) and replayed from it
after a kill; a trial already in the table is never rerun (the sweep's own rule); an iteration with a
record is skipped.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tradebus import duck, settings
from tradebus.components.strategies import api as strategies
from tradebus.configs.research import ResearchSettings
from tradebus.configs.schema import ConfigError
from tradebus.engine.marketdata import MarketData
from tradebus.factory.experiments import Tracker
from tradebus.factory.llm import Call, Client
from tradebus.factory.sweep import SweepJob, parse_job, plan, run_sweep
from tradebus.factory.validation import SelectionStats, run_validation

TOOL = "propose_sweep"
PROPOSAL_KEYS = {"name", "hypothesis", "strategy", "params"}


class ProposalError(ValueError):
    """Why a proposal cannot be run as written (sent back to the model)."""


# --- the ledger and the iterations: research.duckdb ----------------------------------------------------


class ResearchLog(duck.Database):
    """Every model call (prompt, response, model, tokens, cost) and every iteration's outcome."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS llm_calls (key VARCHAR PRIMARY KEY, run VARCHAR, model VARCHAR,"
        " request VARCHAR, response VARCHAR, prompt_sha256 VARCHAR, input_tokens BIGINT, output_tokens BIGINT,"
        " usd DOUBLE, created_at TIMESTAMP)",
        "CREATE TABLE IF NOT EXISTS iterations (run VARCHAR, iteration INTEGER, status VARCHAR, proposal VARCHAR,"
        " job VARCHAR, trials BIGINT, best VARCHAR, verdict VARCHAR, reason VARCHAR, code_sha256 VARCHAR,"
        " calls BIGINT, usd DOUBLE, created_at TIMESTAMP, PRIMARY KEY (run, iteration))",
    )

    @classmethod
    def open(cls, path: Path | None = None, *, read_only: bool = False) -> "ResearchLog":
        return cls._open(path or settings.data_home() / "research.duckdb", read_only)

    @classmethod
    def missing(cls, path: Path) -> Exception:
        return FileNotFoundError(f"no research log at {path}: run `tradebus research` first")

    def __init__(self, con, path) -> None:
        super().__init__(con, path)
        self.run = ""  # the run whose spend counts against the budget

    def call(self, key: str) -> Call | None:
        row = self._con.execute("SELECT key, model, request, response, input_tokens, output_tokens, usd FROM llm_calls"
                                " WHERE key = ?", [key]).fetchone()
        if row is None:
            return None
        return Call(row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4], row[5], row[6])

    def record(self, call: Call) -> None:
        self._con.execute("INSERT INTO llm_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                          [call.key, call.key.split(":")[0], call.model, json.dumps(call.request),
                           json.dumps(call.response), hashlib.sha256(json.dumps(call.request, sort_keys=True)
                                                                     .encode()).hexdigest(),
                           call.input_tokens, call.output_tokens, call.usd, _now()])

    def spent(self) -> tuple[int, float]:
        tok, usd = self._con.execute("SELECT coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(usd), 0)"
                                     " FROM llm_calls WHERE run = ?", [self.run]).fetchone()
        return int(tok), float(usd)

    def iteration(self, run: str, i: int) -> dict | None:
        rows = self.iterations(run)
        return next((r for r in rows if r["iteration"] == i), None)

    def iterations(self, run: str) -> list[dict]:
        cur = self._con.execute("SELECT * FROM iterations WHERE run = ? ORDER BY iteration", [run])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def save_iteration(self, row: dict) -> None:
        self._con.execute("INSERT OR REPLACE INTO iterations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          [row["run"], row["iteration"], row["status"], row.get("proposal"), row.get("job"),
                           row.get("trials", 0), row.get("best"), row.get("verdict"), row.get("reason"),
                           row.get("code_sha256"), row.get("calls", 0), row.get("usd", 0.0), _now()])

    def calls(self, run: str) -> list[dict]:
        cur = self._con.execute("SELECT key, model, input_tokens, output_tokens, usd FROM llm_calls WHERE run = ?"
                                " ORDER BY key", [run])
        return [dict(zip(("key", "model", "input_tokens", "output_tokens", "usd"), r)) for r in cur.fetchall()]

    def runs(self) -> list[str]:
        return [r[0] for r in self._con.execute("SELECT DISTINCT run FROM iterations ORDER BY run").fetchall()]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# --- the prompt ------------------------------------------------------------------------------------------


def catalogue() -> list[dict]:
    """Every compiled strategy with its parameters' JSON schema, generated from the registry (it cannot
    drift from the code). ``composable``'s schema lists every block."""
    out = []
    for sid, defn in sorted(strategies.known().items()):
        if not defn.compiled:
            continue
        out.append({"strategy": sid, "what": defn.description, "params": defn.params.model_json_schema()})
    return out


def tool_schema(rs: ResearchSettings) -> dict:
    return {
        "name": TOOL,
        "description": (f"Propose one sweep: a strategy from the catalogue and a grid of its own parameters "
                        f"(each a list of values; at most {rs.max_trials} trials over {len(rs.symbols)} symbols x "
                        f"{len(rs.timeframes)} timeframes). Costs, sizing, symbols, windows and validation are "
                        f"fixed and cannot be set."),
        "input_schema": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "hypothesis", "strategy", "params"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9_]{1,40}$"},
                "hypothesis": {"type": "string", "maxLength": 600},
                "strategy": {"type": "string", "enum": [c["strategy"] for c in catalogue()]},
                "params": {"type": "object", "description": "parameter name -> list of values to try"},
            },
        },
    }


def system_prompt(rs: ResearchSettings) -> str:
    return "\n".join([
        "You are a quantitative researcher proposing trading-strategy experiments for crypto perpetual futures.",
        "Every proposal is swept through a backtest kernel and its best trial validated out of sample (holdout, "
        "walk-forward, multi-asset, deflated Sharpe counting every trial you proposed, PBO). Propose ideas that "
        "differ from what was tried; repeating a tried grid is refused before it runs.",
        f"Fixed for every trial: symbols {rs.symbols}, timeframes {rs.timeframes}, window {rs.window!r}, "
        f"costs/sizing/fills {json.dumps(rs.base, sort_keys=True)}.",
        "Answer with exactly one propose_sweep tool call.",
        "CATALOGUE (strategy, what it does, its parameters as JSON schema):",
        json.dumps(catalogue(), sort_keys=True),
    ])


def untested(tracker: Tracker | None, rs: ResearchSettings) -> list[str]:
    tried = set() if tracker is None else {(s, sym, tf) for s, sym, tf in tracker._con.execute(
        "SELECT DISTINCT strategy, symbol, timeframe FROM experiments").fetchall()}
    return [f"{c['strategy']} {sym} {tf}" for c in catalogue() for sym in rs.symbols for tf in rs.timeframes
            if (c["strategy"], sym, tf) not in tried]


def user_prompt(tracker: Tracker | None, log: ResearchLog, run: str, rs: ResearchSettings) -> str:
    parts = ["WHAT THE EXPERIMENTS TABLE SAYS:"]
    parts.append(tracker.summary_for_llm(10) if tracker is not None else "nothing run yet")
    if tracker is not None:
        fails = tracker._con.execute(
            "SELECT strategy, disqualified, count(*) FROM experiments WHERE disqualified IS NOT NULL"
            " GROUP BY strategy, disqualified ORDER BY count(*) DESC LIMIT 8").fetchall()
        if fails:
            parts.append("MOST COMMON FAILURES (strategy: reason x count):")
            parts += [f" - {s}: {why} x {n}" for s, why, n in fails]
    never = untested(tracker, rs)
    parts.append("NEVER TRIED (strategy symbol timeframe): " + (", ".join(never[:30]) or "none"))
    earlier = log.iterations(run)
    if earlier:
        parts.append("THIS RUN SO FAR:")
        for it in earlier:
            parts.append(f" {it['iteration']}. {it['status']}: {it['reason'] or ''} "
                         f"(proposal {it['proposal'] or '-'}, verdict {it['verdict'] or '-'})")
    parts.append("Propose the next sweep.")
    return "\n".join(parts)


# --- proposals -------------------------------------------------------------------------------------------


def job_from(proposal: Any, rs: ResearchSettings, job_name: str) -> SweepJob:
    """The sweep job a proposal asks for, or ``ProposalError`` saying why not (in words for the model)."""
    if not isinstance(proposal, dict):
        raise ProposalError("the tool input must be an object")
    extra = sorted(set(proposal) - PROPOSAL_KEYS)
    if extra:
        raise ProposalError(f"{', '.join(extra)}: not a proposal's to set (only {', '.join(sorted(PROPOSAL_KEYS))}; "
                            f"costs, risk, symbols, windows and validation are fixed)")
    params = proposal.get("params")
    if not isinstance(params, dict) or not params:
        raise ProposalError("params: an object of parameter name -> list of values")
    sid = proposal.get("strategy")
    if sid not in {c["strategy"] for c in catalogue()}:
        raise ProposalError(f"strategy {sid!r}: not in the catalogue")
    allowed = set(strategies.get(sid).params.model_fields)
    for name, values in params.items():
        if "." in name or name not in allowed:
            raise ProposalError(f"params.{name}: {sid} has no such parameter (it has {', '.join(sorted(allowed))}); "
                                f"config fields such as risk or costs cannot be set")
        if not isinstance(values, list) or not values or len(values) > 50:
            raise ProposalError(f"params.{name}: a list of 1 to 50 values")
    task = {"strategy": sid, "space": "grid", "params": params, "symbols": rs.symbols, "timeframes": rs.timeframes,
            "window": rs.window}
    try:
        job = parse_job({"job": job_name, "base": rs.base, "score": rs.score.model_dump(), "tasks": [task]},
                        f"proposal {proposal.get('name', '?')}")
    except ConfigError as exc:
        raise ProposalError(str(exc)) from None
    return job


def _points(job: SweepJob, md: MarketData) -> tuple[list[str], int]:
    """The trial ids a job plans (same config, window and data: the same id as any earlier trial)."""
    from tradebus.factory.market import MemoryMarket

    mem = MemoryMarket.load(md, "bybit", "linear", sorted({s for t in job.tasks for s in t.symbols}))
    p = plan(job, mem)
    return [t.id for t in p.trials], p.count


def novelty(ids: list[str], tracker: Tracker | None, job: str) -> float:
    """The share of a proposal's trials no other job has run (1: all new; its own, from a killed attempt
    of this iteration, are not held against it)."""
    if not ids or tracker is None:
        return 1.0
    return 1.0 - len(tracker.existing(ids, other_than_job=job)) / len(ids)


# --- the loop --------------------------------------------------------------------------------------------


@dataclass
class IterationOutcome:
    iteration: int
    status: str  # swept / refused / duplicate / failed
    job: str = ""
    trials: int = 0
    best: str = ""
    verdict: str = ""
    reason: str = ""


def _tool_call(call: Call) -> dict | None:
    return next((b for b in call.content if b.get("type") == "tool_use" and b.get("name") == TOOL), None)


def propose(client: Client, run: str, i: int, system: str, user: str, rs: ResearchSettings, job_name: str
            ) -> tuple[SweepJob | None, dict | None, str, int]:
    """The conversation of one iteration: (job, proposal, why refused, calls made)."""
    messages: list[dict] = [{"role": "user", "content": user}]
    why = ""
    for turn in range(rs.repair_turns + 1):
        call = client.call(f"{run}:{i:03d}:{turn}", system, messages, [tool_schema(rs)])
        use = _tool_call(call)
        if use is None:
            why = "the model answered without a propose_sweep call"
            content = call.content
            messages += [{"role": "assistant", "content": content},
                         {"role": "user", "content": "Answer with one propose_sweep tool call."}]
            continue
        try:
            return job_from(use["input"], rs, job_name), use["input"], "", turn + 1
        except ProposalError as exc:
            why = str(exc)
            messages += [{"role": "assistant", "content": call.content},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                                       "is_error": True, "content": why}]}]
    return None, None, why, rs.repair_turns + 1


def research(client: Client, log: ResearchLog, md: MarketData, tracker: Tracker, rs: ResearchSettings, run: str,
             iterations: int, say: Callable[[str], None] = lambda _: None) -> list[IterationOutcome]:
    """Run (or resume) ``iterations`` iterations of ``run``."""
    log.run = run
    system = system_prompt(rs)
    out = []
    for i in range(1, iterations + 1):
        done = log.iteration(run, i)
        if done is not None:
            out.append(IterationOutcome(i, done["status"], done["job"] or "", done["trials"] or 0, done["best"] or "",
                                        done["verdict"] or "", done["reason"] or ""))
            continue
        job_name = f"llm_{run}_{i:03d}"
        before = log.spent()[1]
        job, proposal, why, calls = propose(client, run, i, system, user_prompt(tracker, log, run, rs), rs, job_name)
        row = {"run": run, "iteration": i, "proposal": json.dumps(proposal, sort_keys=True) if proposal else None,
               "calls": calls, "code_sha256": None}
        if job is None:
            outcome = IterationOutcome(i, "refused", reason=why)
        else:
            ids, count = _points(job, md)
            fresh = novelty(ids, tracker, job_name)
            if count > rs.max_trials:
                outcome = IterationOutcome(i, "refused", job_name, reason=f"{count} trials > max_trials {rs.max_trials}")
            elif 1.0 - fresh >= rs.novelty:
                outcome = IterationOutcome(i, "duplicate", job_name, reason=f"{1 - fresh:.0%} of its {count} trials "
                                           f"were already tried (novelty threshold {rs.novelty:.0%})")
            else:
                say(f"iteration {i}: sweeping {proposal['strategy']} ({count} trials)")
                outcome = _sweep_and_validate(i, job, md, tracker, rs, run, out)
        row.update(status=outcome.status, job=outcome.job, trials=outcome.trials, best=outcome.best,
                   verdict=outcome.verdict, reason=outcome.reason, usd=log.spent()[1] - before)
        log.save_iteration(row)
        say(f"iteration {i}: {outcome.status} {outcome.reason}".rstrip())
        out.append(outcome)
    return out


def _sweep_and_validate(i: int, job: SweepJob, md: MarketData, tracker: Tracker, rs: ResearchSettings, run: str,
                        earlier: list[IterationOutcome]) -> IterationOutcome:
    report = run_sweep(job, md, tracker, workers=1)
    parent = next((o.best for o in reversed(earlier) if o.best), None)
    tracker.mark_lineage(job.job, "llm_generated", f"research:{run}:{i:03d}", parent)
    best = tracker.top(rs.validate_top, validated_only=False, job=job.job) if rs.validate_top else []
    if not best:
        return IterationOutcome(i, "swept", job.job, report.trials, reason="no trial scored (all disqualified)")
    # Every trial the run proposed so far counts in the deflated Sharpe's N.
    jobs = [o.job for o in earlier if o.status == "swept"] + [job.job]
    sharpes = np.array([s for j in jobs for s in tracker.job_sharpes(j) if s is not None and np.isfinite(s)])
    trials = sum(tracker.job_trials(j) for j in jobs)
    sel = SelectionStats(max(trials, 1), float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0)
    verdicts = run_validation(tracker, md, best, rs.validation, selection=sel)
    top, verdict = verdicts[0]
    return IterationOutcome(i, "swept", job.job, report.trials, top["id"], verdict.status,
                            "; ".join(verdict.reasons) or f"best {top['strategy']} Sharpe {top['sharpe']:.2f}")


# --- the random baseline ---------------------------------------------------------------------------------


def random_proposal(rng: random.Random, rs: ResearchSettings, trials: int) -> dict:
    """A random grid over a random catalogue strategy's numeric parameters, about ``trials`` trials."""
    cat = [c for c in catalogue() if c["strategy"] != "composable"]
    c = rng.choice(cat)
    props = {k: v for k, v in c["params"].get("properties", {}).items() if v.get("type") in ("integer", "number")}
    per = max(1, round((trials / (len(rs.symbols) * len(rs.timeframes))) ** (1 / max(len(props), 1))))
    params = {}
    for name, spec in props.items():
        d = spec.get("default", 10)
        vals = sorted({round(d * rng.uniform(0.5, 1.5), 2) if spec["type"] == "number" else
                       max(1, int(round(d * rng.uniform(0.5, 1.5)))) for _ in range(per)})
        params[name] = vals
    return {"name": f"random_{c['strategy']}", "hypothesis": "random", "strategy": c["strategy"], "params": params}
