"""A forecast-driven composite (forecaster + policy + pool) in the lifecycle: admitted, run on its hygiene
window and validated against its own members and their blend by the event-driven replay (the sweep kernel
has no forecaster), every trial that built it counted, and held with the reason when its forecaster would
be in sample or is missing. Real DuckDB, a real LightGBM model in the registry, the CLI as a user runs it."""

from __future__ import annotations

import json

from tradebus.components.strategies import scaffold
from tradebus.configs.schema import load_config
from tradebus.engine.marketdata import MarketData, SeriesKey
from tradebus.replay.backtest import run_replay
from tradebus.replay.compare import trials_log

from .forecastkit import spec, train_and_promote, walk
from .proc import run_tradebus

N = 4_000  # 2025-01-01 .. mid-June, hourly
TRAINED = 1_400  # the model's data: the bars before 2025-02-28
COMPOSITE = """system: {system}
symbol: BTCUSDT
timeframe: 1h
forecaster: {{id: {model}}}
windows: {{hygiene: {{start: {hygiene}, end: 2025-04-15}}, test: {{start: 2025-04-16, end: 2025-06-10}}}}
policy: {{id: p1, regimes: {{trend_up: {{trend: 1}}, trend_down: {{trend: 1}}, chop: {{rev: 1}}, crash: {{}}}}}}
pool:
  trend: {{id: sma_cross, params: {{fast: 10, slow: 40, allow_short: true}}}}
  rev: {{id: bollinger_reversion, params: {{period: 20, k: 1.5, allow_short: true}}}}
risk: {{sizing: fixed_fraction, fraction: 0.5, stop: {{kind: none}}}}
"""
# Loose enough that the composite reaches every check of its validation (what it is tested for here).
RULES = """hygiene: {min_trades: 3, min_trades_per_year: 1, max_drawdown: 0.9}
validation:
  disqualify: {min_trades: 3, min_trades_per_year: 1, max_drawdown: 0.9, min_profit_factor: 0.0, min_win_rate: 0.0,
               max_win_rate: 1.0}
  min_test_return: -1.0
"""


def test_a_composite_is_validated_against_its_members_and_held_when_its_model_is_in_sample(tmp_path):
    home = tmp_path / "home"
    env = {"TRADEBUS_HOME": str(home)}
    btc, eth = walk(N, seed=1), walk(N, seed=2)
    with MarketData.open(home / "market.duckdb") as md:
        md.write(SeriesKey("bybit", "linear", "BTCUSDT", "1h"), btc)
        md.write(SeriesKey("bybit", "linear", "ETHUSDT", "1h"), eth)
    train_and_promote(home, {k: v[:TRAINED] for k, v in btc.items()},
                      spec("walk_1h", "BTCUSDT", "1h", symbols=["BTCUSDT", "ETHUSDT"]))
    configs = {"comp": COMPOSITE.format(system="comp", model="walk_1h", hygiene="2025-03-05"),
               "in_sample": COMPOSITE.format(system="in_sample", model="walk_1h", hygiene="2025-02-01"),
               "no_model": COMPOSITE.format(system="no_model", model="nobody_1h", hygiene="2025-03-05")}
    for name, text in configs.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        assert run_tradebus("lifecycle", "add", str(tmp_path / f"{name}.yaml"), env=env).returncode == 0
    (tmp_path / "rules.yaml").write_text(RULES)

    first = run_tradebus("lifecycle", "run", "--no-daemons", "--json", "--rules", str(tmp_path / "rules.yaml"),
                         env=env, timeout=300)
    again = run_tradebus("lifecycle", "run", "--no-daemons", "--json", "--rules", str(tmp_path / "rules.yaml"),
                         env=env, timeout=300)
    history = run_tradebus("lifecycle", "history", "comp", env=env)

    assert first.returncode == 0, first.stderr
    run = json.loads(first.stdout)
    rows = {r["system"]: r for r in run["systems"]}
    # The composite went as far as its evidence: runnable, hygiene on the event-driven replay, then the test gate.
    moves = [(m["from"], m["to"], m["rule"]) for m in run["moves"] if m["system"] == "comp"]
    assert moves[:2] == [("candidate", "hygiene", "runnable"), ("hygiene", "test", "hygiene_passed")]
    assert moves[2][0] == "test" and moves[2][2] in ("validated", "validation_failed", "out_of_sample")
    # Held, saying why: a forecaster that would forecast its own training bars, and one that does not exist.
    assert rows["in_sample"]["after"] == "candidate" and "in sample" in rows["in_sample"]["why"]
    assert rows["no_model"]["after"] == "candidate" and "nobody_1h" in rows["no_model"]["why"]
    # A second run on the same store and data moves nothing; the lifecycle logs no compare trial of its own.
    assert again.returncode == 0 and json.loads(again.stdout)["moves"] == []
    assert not trials_log(home, "walk_1h").exists()

    assert history.returncode == 0, history.stderr
    test_move = [line for line in history.stdout.splitlines() if "test -> " in line][0]
    assert "trials=1" in test_move, test_move  # one version of the forecaster x one composite
    assert "dsr=" in test_move and "pbo=" in test_move
    # The test Sharpe is the composite's own replay over the bars after the model's data, from the test window.
    config = load_config(tmp_path / "comp.yaml")
    with MarketData.open(home / "market.duckdb", read_only=True) as md:
        direct = run_replay(config, "2025-04-16:2025-06-10", md).metrics["sharpe"]
    got = float(test_move.split("test_sharpe=")[1].split(",")[0])
    assert abs(got - round(direct, 6)) < 1e-6
    assert "validation=" in test_move and "why=" in test_move  # the verdict and the sentence that says why


def test_a_system_that_cannot_be_evaluated_is_its_own_row_and_the_run_exits_1(tmp_path):
    """A user's strategy with a bug (it divides by zero on its first cross) does not stop the other systems'
    moves; the run names it and exits 1 (cron sees it), without a traceback. The same strategy as plain Python
    is held: its validation would need the sweep kernel."""
    home = tmp_path / "home"
    env = {"TRADEBUS_HOME": str(home), "PYTHONPATH": str(tmp_path)}
    with MarketData.open(home / "market.duckdb") as md:
        md.write(SeriesKey("bybit", "linear", "BTCUSDT", "1h"), walk(N, seed=1))
    text = scaffold.files("buggy")["buggy.py"].replace("            return LONG", "            return LONG // 0")
    (tmp_path / "buggy.py").write_text(text)
    (tmp_path / "buggy_py.py").write_text(text.replace("compiled = True", "compiled = False"))
    system = ("system: {name}\nsymbol: BTCUSDT\ntimeframe: 1h\n"
              "strategy: {{id: '{sid}', params: {{fast: 10, slow: 40}}}}\n"
              "windows: {{hygiene: {{start: 2025-01-05, end: 2025-03-31}}, "
              "test: {{start: 2025-04-01, end: 2025-06-10}}}}\n")
    for name, sid in (("buggy_1h", "buggy:Buggy"), ("buggy_py_1h", "buggy_py:Buggy"), ("sma_1h", "sma_cross")):
        (tmp_path / f"{name}.yaml").write_text(system.format(name=name, sid=sid))
        assert run_tradebus("lifecycle", "add", str(tmp_path / f"{name}.yaml"), env=env).returncode == 0
    (tmp_path / "rules.yaml").write_text(RULES)

    r = run_tradebus("lifecycle", "run", "--no-daemons", "--json", "--rules", str(tmp_path / "rules.yaml"), env=env,
                     timeout=300)

    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "1 system(s) could not be evaluated: buggy_1h" in r.stderr
    rows = {row["system"]: row for row in json.loads(r.stdout)["systems"]}
    assert rows["buggy_1h"]["rule"] == "error" and "ZeroDivisionError" in rows["buggy_1h"]["why"]
    assert rows["buggy_1h"]["after"] == "hygiene"  # it moved as far as it could be evaluated
    assert rows["sma_1h"]["after"] not in ("candidate", "hygiene")  # the other system's moves are recorded
    assert rows["buggy_py_1h"]["after"] == "candidate" and "plain-Python step" in rows["buggy_py_1h"]["why"]
