"""The research loop against the fake Messages API (the real ``anthropic`` client, real DuckDB files, the
real kernel on synthetic candles): proposals validated and repaired, novelty, sweeps, validation with every
proposed trial counted, lineage and audit rows, exact token and cost accounting, retries, the budget, a
resumed run that pays for nothing twice, no secret in any prompt, and proposals that cannot touch costs,
windows, validation or risk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import yaml
import numpy as np
import pytest

from tradebus.configs.research import ResearchSettings
from tradebus.engine.marketdata import MarketData, SeriesKey
from tradebus.factory import research as R
from tradebus.factory.fake_messages import API_KEY, DEMO_SCRIPT, FakeMessages, FakeMessagesState, ScriptedResearcher
from tradebus.factory.llm import Client, cost
from tradebus.factory.experiments import Tracker

from .proc import run_tradebus

HOUR = 3_600 * 10**9
T0 = 1_735_689_600 * 10**9
SECRET = "sk-live-secret-DO-NOT-SEND-987654321"
SETTINGS = """
model: claude-sonnet-4-5
budget_usd: 1.0
symbols: [BTCUSDT, ETHUSDT]
timeframes: [1h]
score: {min_trades: 5}
validation:
  disqualify: {min_trades: 5, max_drawdown: 0.9, min_profit_factor: 0.0, min_win_rate: 0.0, max_win_rate: 1.0}
  walk_forward: {folds: 2, train_segments: 1}
"""

EMA = ("propose_sweep", {"name": "ema_pullback", "hypothesis": "trend with pullbacks", "strategy": "ema_rsi_atr",
                         "params": {"fast": [10, 20], "slow": [50, 80], "allow_short": [True]}})
TYPO = ("propose_sweep", {"name": "ema_pullback", "hypothesis": "trend with pullbacks", "strategy": "ema_rsi_atr",
                          "params": {"fast": [10, 20], "speed": [3]}})
DONCHIAN = ("propose_sweep", {"name": "breakout", "hypothesis": "breakouts", "strategy": "donchian_breakout",
                              "params": {"entry_period": [20, 40], "exit_period": [10], "allow_short": [True]}})


def script() -> ScriptedResearcher:
    """Iteration 1 asks for a parameter ema_rsi_atr lacks, then fixes it; 2 is new; 3 repeats 1."""
    return ScriptedResearcher(proposals=[TYPO, DONCHIAN, EMA], repairs=[EMA])


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("TRADEBUS_HOME", str(h))
    rng = np.random.default_rng(11)
    n = 400 * 24
    with MarketData.open(h / "market.duckdb") as md:
        for k, symbol in enumerate(("BTCUSDT", "ETHUSDT")):
            close = 1000 * (k + 1) * np.exp(np.cumsum(rng.normal(0, 0.006, n) + 0.0004 * np.sin(np.arange(n) / 300)))
            open_ = np.r_[close[0], close[:-1]]
            md.write(SeriesKey("bybit", "linear", symbol, "1h"), {
                "open_time": T0 + np.arange(n, dtype=np.int64) * HOUR, "open": open_, "close": close,
                "high": np.maximum(open_, close) * 1.002, "low": np.minimum(open_, close) * 0.998,
                "volume": np.full(n, 1e3), "turnover": close * 1e3})
    (h / "settings.yaml").write_text(SETTINGS)
    (h / "live.key").write_text(SECRET)  # a key file on the machine, as a user has one
    return h


@pytest.fixture
def fake(monkeypatch):
    state = FakeMessagesState(script())
    server = FakeMessages.start(state)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("TRADEBUS_LIVE_API_SECRET", SECRET)
    yield server
    server.stop()


def rows(home: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(home / sql.split("|")[0]), read_only=True)
    try:
        return con.execute(sql.split("|")[1]).fetchall()
    finally:
        con.close()


def test_three_iterations_propose_repair_sweep_validate_and_leave_an_audit(home, fake):
    r = run_tradebus("research", "--iterations", "3", "--run", "r1", "--settings", str(home / "settings.yaml"),
                     timeout=600, env={"TRADEBUS_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    its = rows(home, "research.duckdb|SELECT iteration, status, job, trials, best, verdict, calls, usd FROM iterations"
                     " WHERE run = 'r1' ORDER BY iteration")
    assert [(i[1], i[6]) for i in its] == [("swept", 2), ("swept", 1), ("duplicate", 1)]
    assert its[0][3] == 8 and its[1][3] == 4 and its[2][3] == 0  # 2 x 2 x 2 symbols; 2 x 2 symbols; refused
    assert all(i[5] in ("passed", "marginal", "rejected") for i in its[:2])

    # The repair: the model's second turn saw our error, naming the parameter.
    repair = fake.state.requests[1]["messages"][-1]["content"][0]
    assert repair["type"] == "tool_result" and repair["is_error"] and "params.speed" in repair["content"]

    # Lineage: every trial of an iteration is llm_generated, grouped by its iteration, descending from the best before.
    exps = rows(home, "experiments.duckdb|SELECT job_id, strategy_source, experiment_id, parent_experiment_id, "
                      "validation_status, validation_details FROM experiments WHERE job_id LIKE 'llm_r1_%'")
    assert {e[1] for e in exps} == {"llm_generated"}
    assert {e[2] for e in exps if e[0] == "llm_r1_001"} == {"research:r1:001"}
    assert {e[3] for e in exps if e[0] == "llm_r1_001"} == {None}
    assert {e[3] for e in exps if e[0] == "llm_r1_002"} == {its[0][4]}
    # The second iteration's deflated Sharpe counts the first's trials too (every proposed trial is counted).
    with Tracker.open(home / "experiments.duckdb", read_only=True) as t:
        assert R._selection(t, ["llm_r1_001", "llm_r1_002"]).trials == 12
    best2 = next(json.loads(e[5]) for e in exps if e[0] == "llm_r1_002" and e[4] != "pending")
    assert "dsr" not in best2 or best2["dsr"]["trials"] == 12  # disqualified bests stop before the DSR

    # Audit: every call's prompt, response, tokens and cost, exactly what the endpoint reported.
    calls = rows(home, "research.duckdb|SELECT key, request, response, input_tokens, output_tokens, usd FROM llm_calls"
                       " WHERE run = 'r1' ORDER BY key")
    assert len(calls) == len(fake.state.requests) == len(fake.state.usage) == 4
    assert sum(c[3] for c in calls) == sum(u["input_tokens"] for u in fake.state.usage)
    assert sum(c[4] for c in calls) == sum(u["output_tokens"] for u in fake.state.usage)
    assert sum(c[5] for c in calls) == pytest.approx(sum(cost(u, (3.0, 15.0)) for u in fake.state.usage), rel=1e-12)
    assert sum(i[7] for i in its) == pytest.approx(sum(c[5] for c in calls), rel=1e-9)
    for c in calls:
        assert json.loads(c[2])["content"]

    # No secret in a prompt, the audit or the output.
    sent = json.dumps(fake.state.requests)
    audit = json.dumps(rows(home, "research.duckdb|SELECT * FROM llm_calls"), default=str)
    for text in (sent, audit, r.stdout, r.stderr):
        assert SECRET not in text and API_KEY not in text

    report = run_tradebus("research", "report", "--json", env={"TRADEBUS_HOME": str(home)})
    rep = {r["run"]: r for r in json.loads(report.stdout)}
    assert rep["r1"]["iterations"] == 3 and rep["r1"]["swept"] == 2 and rep["r1"]["trials"] == 12
    assert rep["r1"]["calls"] == 4 and rep["r1"]["usd"] == pytest.approx(sum(c[5] for c in calls), abs=1e-6)


def test_a_resumed_run_pays_for_nothing_twice_and_reruns_no_trial(home, fake):
    rs = ResearchSettings.model_validate({**yaml.safe_load(SETTINGS), "validate_top": 0})  # sweeps only: quicker
    with R.ResearchLog.open() as log, MarketData.open(None, read_only=True) as md, Tracker.open() as tracker:
        client = Client(rs.model, rs.max_tokens, rs.budget_usd, rs.budget_tokens, log)
        R.research(client, log, md, tracker, rs, "r2", 2)
        sent, trials = len(fake.state.requests), tracker.count()
        # A kill after iteration 2's call and sweep, before its record: the record is gone, the call and trials stay.
        log._con.execute("DELETE FROM iterations WHERE run = 'r2' AND iteration = 2")
        again = R.research(client, log, md, tracker, rs, "r2", 2)
        assert len(fake.state.requests) == sent and tracker.count() == trials
        assert [o.status for o in again] == ["swept", "swept"]
        # The comparison: about the same trials spent by random specs, through the same pipeline, no model call.
        base = R.baseline(log, md, tracker, rs, "r2", seed=1)
        assert [o.status for o in base] == ["swept", "swept"] and all(o.trials > 0 for o in base)
        assert len(fake.state.requests) == sent and log.calls("r2r") == []
        sources = tracker._con.execute("SELECT DISTINCT strategy_source FROM experiments WHERE job_id LIKE 'llm_r2r_%'"
                                       ).fetchall()
        assert sources == [("random_baseline",)]


def test_the_budget_stops_a_call_before_it_is_sent(home, fake):
    r = run_tradebus("research", "--iterations", "1", "--budget-usd", "0.0001", "--settings", str(home / "settings.yaml"),
                     env={"TRADEBUS_HOME": str(home)})
    assert r.returncode == 1 and "could cost" in r.stderr and "Traceback" not in r.stderr
    assert fake.state.requests == []


def test_rate_limits_and_overload_are_retried_and_only_the_answer_is_counted(home, fake):
    fake.state.fail_next += [(429, "rate_limit_error", 0.05), (529, "overloaded_error", None)]
    with R.ResearchLog.open() as log:
        log.run = "r3"
        client = Client("claude-sonnet-4-5", 1024, 1.0, 10**6, log, max_retries=3)
        call = client.call("r3:001:0", "system", [{"role": "user", "content": "propose"}], [])
        assert call.input_tokens == fake.state.usage[0]["input_tokens"] and len(fake.state.usage) == 1
        assert log.spent() == (call.input_tokens + call.output_tokens, call.usd)
    fake.state.fail_next += [(401, "authentication_error", None)]
    with R.ResearchLog.open() as log:
        log.run = "r3"
        with pytest.raises(Exception, match="401"):
            Client("claude-sonnet-4-5", 1024, 1.0, 10**6, log, max_retries=0).call("r3:002:0", "s",
                                                                                    [{"role": "user", "content": "x"}], [])


@pytest.mark.parametrize("change,field", [
    ({"costs": {"taker_fee": 0.0}}, "costs"), ({"window": "2020-01-01:2030-01-01"}, "window"),
    ({"symbols": ["DOGEUSDT"]}, "symbols"), ({"validation": {"min_dsr": 0.0}}, "validation"),
    ({"params": {"fast": [10], "risk.stop.atr_mult": [9.0]}}, "risk.stop.atr_mult"),
    ({"params": {"fast": [10], "max_leverage": [50]}}, "max_leverage"),
    ({"strategy": "os:system"}, "strategy"),
])
def test_a_proposal_cannot_touch_what_a_person_fixed(change, field):
    rs = ResearchSettings()
    with pytest.raises(R.ProposalError, match=field.split(".")[0]):
        R.job_from({**EMA[1], **change}, rs, "llm_x_001")
    job = R.job_from(EMA[1], rs, "llm_x_001")
    assert job.base == rs.base and job.tasks[0].symbols == rs.symbols and job.tasks[0].window == rs.window


COMPOSABLE, REGIME = DEMO_SCRIPT.proposals[8], DEMO_SCRIPT.proposals[9]
MISSPELT = ("propose_sweep", {**COMPOSABLE[1], "combine": {**COMPOSABLE[1]["combine"], "entries": [
    {"block": "ma_trnd"}, *COMPOSABLE[1]["combine"]["entries"][1:]]}})


def test_composable_specs_and_regime_switches_are_proposed_validated_and_swept(home, fake):
    rs = ResearchSettings.model_validate({**yaml.safe_load(SETTINGS), "validate_top": 0})  # sweeps only: quicker
    fake.state.responder = ScriptedResearcher(proposals=[MISSPELT, REGIME], repairs=[COMPOSABLE])
    with R.ResearchLog.open() as log, MarketData.open(None, read_only=True) as md, Tracker.open() as tracker:
        client = Client(rs.model, rs.max_tokens, rs.budget_usd, rs.budget_tokens, log)
        out = R.research(client, log, md, tracker, rs, "r5", 2)
        # 3 entry pairs x 1 filter set x 2 symbols; 2 thresholds x 2 trend settings x 2 symbols.
        assert [(o.status, o.trials) for o in out] == [("swept", 6), ("swept", 8)]
        params = {job: [json.loads(p) for (p,) in tracker._con.execute(
            "SELECT parameters FROM experiments WHERE job_id = ?", [job]).fetchall()] for job in ("llm_r5_001", "llm_r5_002")}
    # The misspelt block went back to the model, naming it and what is allowed.
    repair = fake.state.requests[1]["messages"][-1]["content"][0]
    assert repair["is_error"] and "ma_trnd" in repair["content"] and "ma_trend" in repair["content"]
    specs, regimes = params["llm_r5_001"], params["llm_r5_002"]
    assert len(specs) == 6 and all(len(p["entries"]) == 2 and p["filters"][0]["block"] == "adx_min" for p in specs)
    assert len({json.dumps(p["entries"], sort_keys=True) for p in specs}) == 3
    assert len(regimes) == 8 and {p["regime"]["threshold"] for p in regimes} == {20, 25}
    assert all(p["below"] is None and p["above"]["fast"] in (10, 20) for p in regimes)


def test_combine_is_for_composable_only():
    with pytest.raises(R.ProposalError, match="combine generates composable specs"):
        R.job_from({**EMA[1], "combine": COMPOSABLE[1]["combine"]}, ResearchSettings(), "llm_x_001")


def test_the_catalogue_is_the_registry():
    from tradebus.components.strategies import api

    cat = {c["strategy"]: c for c in R.catalogue()}
    compiled = {sid: d for sid, d in api.known().items() if d.compiled}
    assert set(cat) == set(compiled)
    for sid, d in compiled.items():
        assert cat[sid]["params"] == d.params.model_json_schema()
    assert "entries" in json.dumps(cat["composable"]["params"])  # the blocks, from their models


def test_worst_case_cost_is_an_upper_bound_and_unknown_models_need_prices(home, fake):
    with R.ResearchLog.open() as log:
        log.run = "r4"
        c = Client("claude-sonnet-4-5", 512, 1.0, 10**6, log)
        req = {"system": "s" * 4000, "messages": [{"role": "user", "content": "x" * 4000}], "tools": []}
        tok, usd = c.worst_case(req)
        call = c.call("r4:001:0", req["system"], req["messages"], req["tools"])
        assert call.input_tokens + call.output_tokens <= tok and call.usd <= usd
        with pytest.raises(Exception, match="no known price"):
            Client("claude-future-9", 512, 1.0, 10**6, log)
        assert math.isclose(Client("claude-future-9", 512, 1.0, 10**6, log, prices=(1.0, 2.0)).prices[1], 2.0)


def test_bad_settings_are_one_clear_error(home):
    bad = home / "bad.yaml"
    bad.write_text("budget_usd: -1\n")
    r = run_tradebus("research", "--settings", str(bad), env={"TRADEBUS_HOME": str(home), "ANTHROPIC_API_KEY": "x"})
    assert r.returncode == 1 and "budget_usd" in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr
    assert "-1" in r.stderr


CODE = '''
from pydantic import model_validator

from tradebus.components.strategies import FLAT, HOLD, LONG, SHORT, Field, Params, Strategy, f, require_below


class ChannelMomentumParams(Params):
    fast: int = Field(10, ge=1)
    slow: int = Field(40, ge=2)

    @model_validator(mode="after")
    def _order(self):
        require_below(self, "fast", "slow")
        return self


class ChannelMomentum(Strategy):
    """Long while the fast EMA is above the slow one and rising; short while below and falling."""

    params = ChannelMomentumParams
    compiled = True

    @staticmethod
    def features(p):
        return {"fast": f("ema", p.fast), "slow": f("ema", p.slow)}

    @staticmethod
    def decide(cur, prev, pos, p):
        up = cur.fast > cur.slow and cur.fast > prev.fast
        down = cur.fast < cur.slow and cur.fast < prev.fast
        if up and pos != 1:
            return LONG
        if down and pos != -1:
            return SHORT if p.allow_short > 0 else FLAT
        return HOLD
'''
SNEAKY = CODE.replace("from pydantic import model_validator", "import os\nfrom pydantic import model_validator")


def test_a_python_strategy_is_checked_then_run_only_in_the_sandbox(home, fake):
    from tradebus.factory import sandbox

    if sandbox.available():
        pytest.skip(sandbox.available())
    code = ("propose_strategy", {"name": "channel_momentum", "hypothesis": "momentum inside a trend",
                                 "code": CODE, "params": {"fast": [8, 12], "slow": [40], "allow_short": [True]}})
    sneaky = ("propose_strategy", {**code[1], "code": SNEAKY})
    fake.state.responder = ScriptedResearcher(proposals=[sneaky], repairs=[code])
    rs = ResearchSettings.model_validate(yaml.safe_load(SETTINGS))
    with R.ResearchLog.open() as log, MarketData.open(None, read_only=True) as md, Tracker.open() as tracker:
        client = Client(rs.model, rs.max_tokens, rs.budget_usd, rs.budget_tokens, log)
        [o] = R.research(client, log, md, tracker, rs, "r5", 1)
        it = log.iteration("r5", 1)
        rows = tracker._con.execute("SELECT strategy, strategy_source, experiment_id, validation_status FROM experiments"
                                    " WHERE job_id = 'llm_r5_001'").fetchall()
    refusal = fake.state.requests[1]["messages"][-1]["content"][0]
    assert refusal["is_error"] and "import 'os' is not allowed" in refusal["content"]
    assert o.status == "swept", fake.state.requests[-1]["messages"][-1]["content"]
    assert o.trials == 4 and it["code_sha256"] == __import__("hashlib").sha256(
        CODE.encode()).hexdigest()
    assert len(rows) == 4 and {r[1] for r in rows} == {"llm_generated"} and {r[2] for r in rows} == {"research:r5:001"}
    assert all(r[0].startswith("llm_") and r[0].endswith(":ChannelMomentum") for r in rows)
    assert o.verdict in ("passed", "marginal", "rejected")


@pytest.mark.parametrize("code,why", [
    ("import subprocess\nclass X(Strategy): pass", "import 'subprocess'"),
    ("x = ().__class__.__base__.__subclasses__()", "the attribute __"),
    ("eval('1')", "eval"),
    ("open('/etc/passwd')", "open"),
    ("def f(:\n", "syntax error"),
    ("x = 1\n" * 2000, "bytes"),
])
def test_static_checks_refuse_before_anything_runs(code, why):
    assert why in R.check_code(code, [])


def test_originality_refuses_a_copy():
    assert "like an earlier proposal" in R.check_code(CODE, [CODE])
    copied = R._builtin_sources()[0].replace("Params(", "Params(").replace("class ", "class My", 1)
    assert "like a built-in strategy" in R.check_code("from tradebus.components.strategies import *\n" + copied, [])
    assert R.check_code(CODE, []) == ""  # the test's own strategy is new enough
