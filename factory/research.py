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
PROPOSAL_KEYS = {"name", "hypothesis", "strategy", "params", "combine"}


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
        "description": (f"Propose one sweep: a strategy from the catalogue (composable specs of entry, filter and "
                        f"exit blocks and regime_switch, one parameter set per market regime, included) and a grid "
                        f"of its own parameters "
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
                "params": {"type": "object", "description": (
                    "parameter name -> list of values to try. composable: entries, filters and exits are lists of "
                    "blocks, so each value is one such list. regime_switch: strategy (a catalogue strategy), "
                    "regime ({indicator, period, threshold}), below and above (that strategy's parameters on each "
                    "side, null = flat), each a list of values like any other parameter.")},
                "combine": {"type": "object", "description": (
                    "composable only: generate specs from blocks instead of listing them: entries (blocks), sizes "
                    "(how many entries each spec combines, all must agree), filters and exits (lists of block "
                    "lists). Every combination is a trial and counts.")},
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
        "Answer with exactly one tool call: propose_sweep (a catalogue strategy and a grid of its parameters) or "
        "propose_strategy (a new strategy as Python code through the strategy API, run in a sandbox).",
        "CATALOGUE (strategy, what it does, its parameters as JSON schema):",
        json.dumps(catalogue(), sort_keys=True),
    ])


def untested(tracker: Tracker | None, rs: ResearchSettings) -> list[str]:
    tried = set() if tracker is None else tracker.tried()
    return [f"{c['strategy']} {sym} {tf}" for c in catalogue() for sym in rs.symbols for tf in rs.timeframes
            if (c["strategy"], sym, tf) not in tried]


def user_prompt(tracker: Tracker | None, log: ResearchLog, run: str, rs: ResearchSettings) -> str:
    parts = ["WHAT THE EXPERIMENTS TABLE SAYS:"]
    parts.append(tracker.summary_for_llm(10) if tracker is not None else "nothing run yet")
    if tracker is not None:
        fails = tracker.common_failures(8)
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
    if proposal.get("combine") is not None:  # composable only: the sweep's own schema says so if not
        task["combine"] = proposal["combine"]
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
    status: str  # swept / refused / duplicate
    job: str = ""
    trials: int = 0
    best: str = ""
    verdict: str = ""
    reason: str = ""


def _tool_call(call: Call) -> dict | None:
    return next((b for b in call.content if b.get("type") == "tool_use" and b.get("name") in (TOOL, CODE_TOOL)), None)


def propose(client: Client, run: str, i: int, system: str, user: str, rs: ResearchSettings,
            accept: Callable[[dict], Any]) -> tuple[Any, dict | None, str, int]:
    """The conversation of one iteration: ``accept`` turns the model's tool call into what the iteration
    runs, or raises ``ProposalError``, whose words go back to the model (at most ``repair_turns`` times).
    Returns (accepted, the tool call, why refused, calls made)."""
    messages: list[dict] = [{"role": "user", "content": user}]
    why = ""
    tools = [tool_schema(rs), code_tool_schema(rs)]
    for turn in range(rs.repair_turns + 1):
        call = client.call(f"{run}:{i:03d}:{turn}", system, messages, tools)
        use = _tool_call(call)
        if use is None:
            why = "the model answered without a proposal"
            messages += [{"role": "assistant", "content": call.content},
                         {"role": "user", "content": "Answer with one propose_sweep or propose_strategy call."}]
            continue
        try:
            return accept(use), use, "", turn + 1
        except ProposalError as exc:
            why = str(exc)
            messages += [{"role": "assistant", "content": call.content},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                                       "is_error": True, "content": why}]}]
    return None, None, why, rs.repair_turns + 1


def _selection(tracker: Tracker, jobs: list[str]) -> SelectionStats:
    """The deflated Sharpe's N and spread: every trial of every job the run proposed so far."""
    sharpes = np.array([s for j in jobs for s in tracker.job_sharpes(j) if s is not None and np.isfinite(s)])
    trials = sum(max(tracker.job_trials(j), len(tracker.job_sharpes(j))) for j in jobs)
    return SelectionStats(max(trials, 1), float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0)


def research(client: Client, log: ResearchLog, md: MarketData, tracker: Tracker, rs: ResearchSettings, run: str,
             iterations: int, say: Callable[[str], None] = lambda _: None, sandbox_limits=None
             ) -> list[IterationOutcome]:
    """Run (or resume) ``iterations`` iterations of ``run``."""
    log.run = run
    system = system_prompt(rs)
    out: list[IterationOutcome] = []
    for i in range(1, iterations + 1):
        done = log.iteration(run, i)
        if done is not None:
            out.append(IterationOutcome(i, done["status"], done["job"] or "", done["trials"] or 0, done["best"] or "",
                                        done["verdict"] or "", done["reason"] or ""))
            continue
        job_name = f"llm_{run}_{i:03d}"
        before = log.spent()[1]
        earlier_jobs = [o.job for o in out if o.status == "swept"]
        earlier_code = [json.loads(r["proposal"]).get("code", "") for r in log.iterations(run)
                        if r["code_sha256"] and r["proposal"]]

        def accept(use: dict) -> Any:
            if use["name"] == CODE_TOOL:
                say(f"iteration {i}: running a proposed strategy in the sandbox")
                sel = _selection(tracker, earlier_jobs)
                rows, verdicts, digest = code_proposal(use["input"], rs, md, tracker, job_name, earlier_code,
                                                       SelectionStats(sel.trials + rs.max_trials, sel.sharpe_variance),
                                                       sandbox_limits)
                return ("code", rows, verdicts, digest)
            job = job_from(use["input"], rs, job_name)
            try:
                ids, count = _points(job, md)
            except ConfigError as exc:  # no parameter set makes a valid config: the model's to fix
                raise ProposalError(str(exc)) from None
            if count > rs.max_trials:
                raise ProposalError(f"{count} trials > max_trials {rs.max_trials}: a smaller grid")
            return ("sweep", job, ids, count)

        accepted, use, why, calls = propose(client, run, i, system, user_prompt(tracker, log, run, rs), rs, accept)
        row = {"run": run, "iteration": i, "proposal": json.dumps(use["input"], sort_keys=True) if use else None,
               "calls": calls, "code_sha256": None}
        if accepted is None:
            outcome = IterationOutcome(i, "refused", reason=why)
        elif accepted[0] == "code":
            _, rows, verdicts, digest = accepted
            row["code_sha256"] = digest
            parent = next((o.best for o in reversed(out) if o.best), None)
            tracker.mark_lineage(job_name, "llm_generated", f"research:{run}:{i:03d}", parent)
            v = verdicts[0] if verdicts else {}
            outcome = IterationOutcome(i, "swept", job_name, len(rows), v.get("id", ""), v.get("status", ""),
                                       "; ".join(v.get("reasons", [])) or "a proposed strategy, run in the sandbox")
        else:
            _, job, ids, count = accepted
            fresh = novelty(ids, tracker, job_name)
            if 1.0 - fresh >= rs.novelty:
                outcome = IterationOutcome(i, "duplicate", job_name, reason=f"{1 - fresh:.0%} of its {count} trials "
                                           f"were already tried (novelty threshold {rs.novelty:.0%})")
            else:
                say(f"iteration {i}: sweeping {job.tasks[0].strategy} ({count} trials)")
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
    sel = _selection(tracker, [o.job for o in earlier if o.status == "swept"] + [job.job])
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


# --- Python strategies: static checks, then only in the sandbox -----------------------------------------

CODE_TOOL = "propose_strategy"
CODE_KEYS = {"name", "hypothesis", "code", "params"}
MAX_CODE = 8_000  # bytes
MAX_NODES = 1_500  # AST nodes: a complexity cap
ALLOWED_IMPORTS = ("math", "numpy", "numba", "pydantic", "tradebus.components.strategies")
BANNED_NAMES = {"eval", "exec", "compile", "open", "__import__", "globals", "locals", "vars", "getattr", "setattr",
                "delattr", "input", "breakpoint", "memoryview", "help", "exit", "quit"}
MAX_SIMILARITY = 0.9  # to a built-in strategy or an earlier proposal's code


def code_tool_schema(rs: ResearchSettings) -> dict:
    return {
        "name": CODE_TOOL,
        "description": ("Propose a new strategy as Python code through the strategy API (a Params model and a "
                        "Strategy subclass with features and a numba-compilable decide, as in the built-ins), and a "
                        f"grid of its parameters (at most {rs.max_trials} trials). It runs in a sandbox: imports "
                        f"only from {', '.join(ALLOWED_IMPORTS)}; no files, network or processes."),
        "input_schema": {"type": "object", "additionalProperties": False,
                         "required": ["name", "hypothesis", "code", "params"],
                         "properties": {"name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,39}$"},
                                        "hypothesis": {"type": "string", "maxLength": 600},
                                        "code": {"type": "string", "maxLength": MAX_CODE},
                                        "params": {"type": "object"}}},
    }


def _shape(tree) -> set[tuple[str, str, str]]:
    """A code's structure as node-type trigrams along the tree (names and constants left out): what an
    AST similarity compares."""
    import ast

    kinds = [type(n).__name__ for n in ast.walk(tree)]
    return {tuple(kinds[i:i + 3]) for i in range(len(kinds) - 2)}


def similarity(a: str, b: str) -> float:
    import ast

    sa, sb = _shape(ast.parse(a)), _shape(ast.parse(b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def _builtin_sources() -> list[str]:
    """Each built-in strategy as its parameters' class and its own, the unit a proposal is compared with."""
    import ast
    import inspect

    from tradebus.components.strategies import builtin

    src = inspect.getsource(builtin)
    classes = [ast.get_source_segment(src, n) or "" for n in ast.parse(src).body if isinstance(n, ast.ClassDef)]
    return [a + "\n\n" + b for a, b in zip(classes, classes[1:])]


def check_code(code: str, earlier: list[str]) -> str:
    """Why the code is refused before it runs ('' if it is not): size, syntax, imports, names that reach the
    interpreter's internals, a complexity cap, and originality against the built-ins and earlier proposals.
    A defence in depth: the sandbox is the boundary, not this."""
    import ast

    if len(code.encode()) > MAX_CODE:
        return f"code: {len(code.encode())} bytes > {MAX_CODE}"
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return f"code: syntax error at line {exc.lineno}: {exc.msg}"
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        return f"code: {nodes} syntax nodes > {MAX_NODES} (keep a strategy simple)"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if not any(m == ok or m.startswith(ok + ".") for ok in ALLOWED_IMPORTS):
                    return f"code line {node.lineno}: import {m!r} is not allowed (only {', '.join(ALLOWED_IMPORTS)})"
        if isinstance(node, ast.Name) and node.id in BANNED_NAMES:
            return f"code line {node.lineno}: {node.id} is not allowed"
        if isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr != "__init__":
            return f"code line {node.lineno}: the attribute {node.attr} is not allowed"
    for name, other in [("a built-in strategy", b) for b in _builtin_sources()] + [("an earlier proposal", e)
                                                                                     for e in earlier]:
        s = similarity(code, other)
        if s > MAX_SIMILARITY:
            return f"code: {s:.0%} like {name} (at most {MAX_SIMILARITY:.0%}): propose something new"
    return ""


_DRIVER = '''
import json, sys
sys.path.insert(0, "/sandbox")
out = {}
try:
    import numpy as np
    from tradebus.engine.marketdata import SeriesKey
    from tradebus.factory.experiments import Experiment
    from tradebus.factory.market import MemoryMarket
    from tradebus.factory.sweep import experiment_rows, parse_job, plan, run_trials
    from tradebus.factory.validation import SelectionStats, ValidationRules, validate
    from tradebus.replay import checks

    spec = json.load(open("spec.json"))
    data = np.load("market.npz")
    mem = MemoryMarket()
    for key in spec["series"]:
        k = SeriesKey(*key)
        cols = {c: data["|".join(key) + "|" + c] for c in spec["columns"]}
        mem.series[k] = cols
    job = parse_job(spec["job"], "proposal")
    first = job.tasks[0]
    practice = checks.practice_config(first.strategy, {k: v[0] if isinstance(v, list) else v for k, v in first.params.items()})
    out["checks"] = {"no_lookahead_events": checks.no_lookahead(practice), "kernel_fills": checks.kernel_equals_replay(practice)}
    p = plan(job, mem)
    results = run_trials([(t.id, t.config, t.window) for t in p.trials], mem)
    rows = experiment_rows(job, p, results, {t.id: t for t in p.trials})
    out["rows"] = [{k: v for k, v in r.items() if k != "created_at"} for r in rows]
    scored = sorted((r for r in rows if r["score"] is not None), key=lambda r: -r["score"])[: spec["validate_top"]]
    sel = SelectionStats(spec["trials"], spec["sharpe_variance"])
    out["verdicts"] = []
    for r in scored:
        v = validate(Experiment({**r, "job_id": None}), mem, ValidationRules.model_validate(spec["rules"]), sel, None)
        out["verdicts"].append({"id": r["id"], "status": v.status, "reasons": v.reasons,
                                "details": json.loads(json.dumps(v.details, default=float))})
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
json.dump(out, open("out.json", "w"), default=float)
'''


def _strategy_class(code: str) -> str | None:
    import ast

    for node in ast.parse(code).body:
        if isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", "")) == "Strategy"
                                                  for b in node.bases):
            return node.name
    return None


def _market_files(md: MarketData) -> tuple[bytes, list[list[str]], list[str]]:
    """Every stored series of the venue as one npz (what the sandbox's trials and validation read)."""
    import io

    from tradebus.factory.market import MemoryMarket

    symbols = sorted({c.key.symbol for c in md.series() if (c.key.venue, c.key.market) == ("bybit", "linear")})
    mem = MemoryMarket.load(md, "bybit", "linear", symbols)
    arrays, keys, columns = {}, [], set()
    for k, cols in mem.series.items():
        key = [k.venue, k.market, k.symbol, k.timeframe, k.kind]
        keys.append(key)
        for c, v in cols.items():
            arrays["|".join(key) + "|" + c] = np.asarray(v)
            columns.add(c)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue(), keys, sorted(columns)


ROW_NUMBERS = ("return_pct", "annualised_return", "max_drawdown", "trades_per_year", "win_rate", "profit_factor",
               "sharpe", "sortino", "score")


def _clean_rows(raw: Any, job: str, strategy: str, limit: int) -> list[dict]:
    """The sandbox's trial rows, checked before any is stored: shape, types, ids, and the fields that are
    ours to say (job, strategy, source) set here, not taken from it."""
    import re

    from tradebus.factory.experiments import COLUMNS

    if not isinstance(raw, list) or len(raw) > limit:
        raise ProposalError(f"the sandbox returned {type(raw).__name__} of {len(raw) if isinstance(raw, list) else '?'} "
                            f"rows (at most {limit})")
    out = []
    for r in raw:
        if not isinstance(r, dict) or not set(r) <= set(COLUMNS) or not re.fullmatch(r"[0-9a-f]{32}", str(r.get("id"))):
            raise ProposalError("the sandbox returned a malformed trial row")
        for k in ROW_NUMBERS:
            v = r.get(k)
            if v is not None and not (isinstance(v, (int, float)) and np.isfinite(v)):
                r[k] = None
        r.update(job_id=job, experiment_id=job, strategy=strategy, strategy_source="llm_generated")
        out.append(r)
    return out


def code_proposal(args: Any, rs: ResearchSettings, md: MarketData, tracker: Tracker, job: str, earlier: list[str],
                  sel: SelectionStats, limits=None) -> tuple[list[dict], list[dict], str]:
    """Run a proposed Python strategy in the sandbox: (stored trial rows, verdicts, the code's sha256), or
    ``ProposalError`` (sent back to the model)."""
    from tradebus.factory import sandbox

    if not isinstance(args, dict) or set(args) - CODE_KEYS:
        raise ProposalError(f"{', '.join(sorted(set(args) - CODE_KEYS)) if isinstance(args, dict) else 'input'}: "
                            f"only {', '.join(sorted(CODE_KEYS))}")
    code, params = args.get("code"), args.get("params")
    if not isinstance(code, str) or not isinstance(params, dict) or not params:
        raise ProposalError("code: a string; params: parameter name -> list of values")
    for name, values in params.items():
        if "." in name or not isinstance(values, list) or not values or len(values) > 50:
            raise ProposalError(f"params.{name}: the strategy's own parameter, a list of 1 to 50 values")
    why = check_code(code, earlier)
    if why:
        raise ProposalError(why)
    cls = _strategy_class(code)
    if cls is None:
        raise ProposalError("code: no class deriving from Strategy")
    digest = hashlib.sha256(code.encode()).hexdigest()
    module = f"llm_{digest[:12]}"
    strategy = f"{module}:{cls}"
    task = {"strategy": strategy, "space": "grid", "params": params, "symbols": rs.symbols,
            "timeframes": rs.timeframes, "window": rs.window}
    npz, keys, columns = _market_files(md)
    spec = {"job": {"job": job, "base": rs.base, "score": rs.score.model_dump(), "tasks": [task]}, "series": keys,
            "columns": columns, "validate_top": rs.validate_top, "trials": sel.trials, "sharpe_variance": sel.sharpe_variance,
            "rules": rs.validation.model_dump()}
    try:
        result = sandbox.run(_DRIVER, {f"{module}.py": code.encode(), "spec.json": json.dumps(spec).encode(),
                                       "market.npz": npz}, limits or sandbox.Limits())
    except sandbox.SandboxUnavailable as exc:
        raise ProposalError(f"Python proposals are not run on this machine ({exc}); propose a sweep instead") from None
    out = result.out or {}
    if result.timed_out or "error" in out or not result.ok:
        raise ProposalError(out.get("error") or ("timed out" if result.timed_out else
                                                 f"the sandbox ended with {result.returncode}: "
                                                 f"{result.stderr.strip().splitlines()[-1:] or ['no output']}"))
    rows = _clean_rows(out.get("rows"), job, strategy, rs.max_trials)
    tracker.save(rows)
    ids = {r["id"] for r in rows}
    verdicts = [v for v in out.get("verdicts", []) if isinstance(v, dict) and v.get("id") in ids
                and v.get("status") in ("passed", "marginal", "rejected")]
    for v in verdicts:
        tracker.update_validation(v["id"], v["status"], {"reasons": [str(x) for x in v.get("reasons", [])][:10],
                                                         "sandboxed": True, "code_sha256": digest})
    return rows, verdicts, digest


def baseline(log: ResearchLog, md: MarketData, tracker: Tracker, rs: ResearchSettings, run: str, seed: int = 0,
             say: Callable[[str], None] = lambda _: None) -> list[IterationOutcome]:
    """The comparison a research run is judged against: as many iterations as ``run`` swept, each a random
    grid of about the same number of trials over a random catalogue strategy, through the same sweep,
    novelty and validation (every trial counted the same way). Recorded as run ``{run}r`` (no model calls)."""
    rng = random.Random(seed)
    target = [it for it in log.iterations(run) if it["status"] == "swept"]
    name = f"{run}r"
    out: list[IterationOutcome] = []
    for i, it in enumerate(target, start=1):
        done = log.iteration(name, i)
        if done is not None:
            out.append(IterationOutcome(i, done["status"], done["job"] or "", done["trials"] or 0, done["best"] or "",
                                        done["verdict"] or ""))
            continue
        job_name = f"llm_{name}_{i:03d}"
        for _ in range(20):  # a draw that makes no valid grid is drawn again
            proposal = random_proposal(rng, rs, int(it["trials"] or 1))
            try:
                job = job_from(proposal, rs, job_name)
                ids, count = _points(job, md)
            except (ProposalError, ConfigError):
                continue
            if count <= rs.max_trials and 1.0 - novelty(ids, tracker, job_name) < rs.novelty:
                break
        else:
            out.append(IterationOutcome(i, "refused", reason="no valid random grid in 20 draws"))
            continue
        say(f"baseline {i}: {proposal['strategy']} ({count} trials)")
        outcome = _sweep_and_validate(i, job, md, tracker, rs, name, out)
        tracker.mark_lineage(job.job, "random_baseline", f"research:{name}:{i:03d}", None)
        log.save_iteration({"run": name, "iteration": i, "proposal": json.dumps(proposal, sort_keys=True),
                            "status": outcome.status, "job": outcome.job, "trials": outcome.trials, "best": outcome.best,
                            "verdict": outcome.verdict, "reason": outcome.reason, "calls": 0, "usd": 0.0})
        out.append(outcome)
    return out
