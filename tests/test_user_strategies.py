"""A strategy of the user's own, in the user's own file: scaffolded with its test, run by replay and
sweeps from the command line, checked for look-ahead and kernel = replay, refused clearly when it is
wrong, and part of every id (an edited file is a new run). Paper: tests/test_live_equals_replay.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tradebus.bus import events as ev
from tradebus.components import strategies
from tradebus.configs.schema import ConfigError, load_config, parse_config
from tradebus.factory.sweep import parse_job
from tradebus.replay import checks
from tradebus.replay.backtest import run_replay

from .proc import run_tradebus

COMPILED, PLAIN = "user_trend:UserTrend", "user_trend_py:UserTrendPy"
PARAMS = {"fast": 10, "slow": 40, "allow_short": True}


def system(strategy_id: str, params: dict | None = None) -> dict:
    return {"system": "mine", "symbol": "BTCUSDT", "timeframe": "5m",
            "windows": {"hygiene": {"start": "2025-01-05", "end": "2025-01-15"},
                        "test": {"start": "2025-01-15", "end": "2025-01-21"}},
            "strategy": {"id": strategy_id, "params": PARAMS if params is None else params},
            "costs": {"taker_fee": 0.00055, "spread_bps": 1.0, "funding": False}}


def test_the_scaffold_writes_a_strategy_whose_own_tests_pass(tmp_path, monkeypatch):
    made = run_tradebus("strategies", "new", "my_breakout", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_breakout.py", "my_breakout.yaml", "test_my_breakout.py"]
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_breakout.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "5 passed" in ran.stdout, ran.stdout + ran.stderr
    # The config it wrote is valid as it stands, naming the strategy from that folder.
    monkeypatch.chdir(tmp_path)
    assert load_config("my_breakout.yaml").strategy.id == "my_breakout:MyBreakout"

    again = run_tradebus("strategies", "new", "my_breakout", "--dir", str(tmp_path))
    assert again.returncode == 1 and "already exist; nothing written" in again.stderr
    bad = run_tradebus("strategies", "new", "My-Thing", "--dir", str(tmp_path / "x"))
    assert bad.returncode == 1 and "a Python module name" in bad.stderr and not (tmp_path / "x").exists()
    assert "Traceback" not in again.stderr + bad.stderr


def test_a_user_strategy_replays_and_sweeps_from_the_command_line(user_strategies, md, tmp_path):
    md.close()
    db, folder = str(tmp_path / "m.duckdb"), user_strategies
    (folder / "mine.yaml").write_text(json.dumps(system(COMPILED)))
    replayed = run_tradebus("replay", "mine.yaml", "--db", db, "--no-store", "--out", str(tmp_path / "run"), cwd=folder)
    assert replayed.returncode == 0, replayed.stderr
    metrics = json.loads((tmp_path / "run" / "result.json").read_text())["metrics"]
    assert metrics["total_trades"] > 5

    job = {"job": "mine", "base": {"costs": {"funding": False}}, "score": {"min_trades": 1},
           "tasks": [{"strategy": COMPILED, "params": {"fast": [5, 10], "slow": [30, 40], "allow_short": True},
                      "symbols": ["BTCUSDT", "ETHUSDT"], "window": "2025-01-05:2025-01-15"}]}
    (folder / "job.yaml").write_text(json.dumps(job))
    swept = run_tradebus("sweep", "job.yaml", "--workers", "2", "--db", db, "--experiments",
                         str(tmp_path / "e.duckdb"), cwd=folder, timeout=300)
    assert swept.returncode == 0 and "ran 8, already done 0, failed 0" in swept.stdout, swept.stdout + swept.stderr

    # A plain-Python step runs in a replay; a sweep refuses it before anything runs, saying why.
    job["tasks"][0]["strategy"] = PLAIN
    (folder / "job.yaml").write_text(json.dumps(job))
    refused = run_tradebus("sweep", "job.yaml", "--db", db, "--experiments", str(tmp_path / "e.duckdb"), cwd=folder)
    assert refused.returncode == 1 and "plain-Python step" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("strategy", [COMPILED, PLAIN])
def test_user_strategies_pass_the_checks_every_strategy_must(user_strategies, strategy):
    config = checks.practice_config(strategy, PARAMS)
    assert checks.no_lookahead(config) > 50
    if config.strategy_def().compiled:
        assert checks.kernel_equals_replay(config) > 20
    else:
        with pytest.raises(strategies.StrategyError, match="plain-Python"):
            checks.kernel_equals_replay(config)


def test_the_plain_python_step_trades_exactly_as_its_compiled_twin(user_strategies):
    """The same decide, once compiled (quiet bars skipped) and once plain Python (every bar stepped)."""
    runs = []
    for strategy in (COMPILED, PLAIN):
        config = checks.practice_config(strategy, PARAMS)
        result = run_replay(config, "hygiene", checks.practice_market(config))
        runs.append([(e.ts_event, e.side, e.qty, e.price, e.fee) for e in result.events if isinstance(e, ev.Fill)])
    assert len(runs[0]) > 20 and runs[0] == runs[1]


def test_the_look_ahead_check_catches_a_step_that_sees_later_bars(user_strategies):
    """A plain-Python step that remembers every close it was handed: in the check's second replay it has
    seen the first replay's bars after the cut, and its decisions before the cut change."""
    (user_strategies / "peeker.py").write_text(
        "from tradebus.components.strategies import FLAT, LONG, Strategy, f\n"
        "SEEN = []\n"
        "class Peeker(Strategy):\n"
        "    compiled = False\n"
        "    @staticmethod\n"
        "    def features(p):\n"
        "        return {'close': f('close')}\n"
        "    @staticmethod\n"
        "    def decide(cur, prev, pos, p):\n"
        "        SEEN.append(cur.close)\n"
        "        return LONG if max(SEEN) > 1.02 * cur.close else FLAT\n")
    with pytest.raises(checks.CheckFailed, match="looks ahead"):
        checks.no_lookahead(checks.practice_config("peeker:Peeker"))


def _module(folder, name: str, body: str) -> str:
    (folder / f"{name}.py").write_text(
        "from tradebus.components.strategies import FLAT, HOLD, LONG, Field, Params, Strategy, f\n" + body)
    return name


BROKEN = [
    ("class S(Strategy):\n    @staticmethod\n    def features(p):\n        return {'fast': f('ema', 10)}\n"
     "    @staticmethod\n    def decide(cur, prev, pos, p):\n        return LONG if cur.fsat > prev.fast else HOLD\n",
     "decide reads cur.fsat, which is not declared; its features: fast"),
    ("class S(Strategy):\n    @staticmethod\n    def features(p):\n        return {'fast': f('ema', 10)}\n"
     "    @staticmethod\n    def decide(cur, prev, pos, p):\n        return LONG if p.period > 1 else HOLD\n",
     "decide reads p.period, which is not declared; its numeric parameters: allow_short"),
    ("def _plain(x):\n    return x > 1\n"
     "class S(Strategy):\n    @staticmethod\n    def features(p):\n        return {'fast': f('ema', 10)}\n"
     "    @staticmethod\n    def decide(cur, prev, pos, p):\n        return LONG if _plain(cur.fast) else HOLD\n",
     "decide does not compile with numba"),
    ("class S(Strategy):\n    @staticmethod\n    def features(p):\n        return {'fast': f('ema', 10), 'x': 3}\n"
     "    @staticmethod\n    def decide(cur, prev, pos, p):\n        return HOLD\n",
     "features() returns a non-empty dict of name -> f(...)"),
    ("class S(Strategy):\n    @staticmethod\n    def features(p):\n        return {'_x': f('ema', 10)}\n"
     "    @staticmethod\n    def decide(cur, prev, pos, p):\n        return HOLD\n",
     "feature name '_x'"),
    ("raise RuntimeError('half-written module')\n", "raised RuntimeError: half-written module"),
    ("class S:\n    pass\n", "has no Strategy subclass 'S'"),
]


@pytest.mark.parametrize("case", range(len(BROKEN)), ids=["misspelt-feature", "undeclared-parameter", "uncompilable",
                                                           "not-a-feature", "private-name", "raises", "not-a-strategy"])
def test_a_broken_strategy_is_refused_when_its_config_is_read(user_strategies, case):
    body, needle = BROKEN[case]
    name = _module(user_strategies, f"broken_{case}", body)
    with pytest.raises(ConfigError) as caught:
        parse_config(system(f"{name}:S", {}), "mine.yaml")
    assert needle in str(caught.value) and str(caught.value).startswith("mine.yaml: strategy.id: ")


def test_a_plain_python_step_that_returns_no_decision_stops_the_replay_naming_it(user_strategies, md, tmp_path):
    md.close()
    name = _module(user_strategies, "says_buy", "class S(Strategy):\n    compiled = False\n    @staticmethod\n"
                   "    def features(p):\n        return {'close': f('close')}\n    @staticmethod\n"
                   "    def decide(cur, prev, pos, p):\n        return 'buy'\n")
    (user_strategies / "buy.yaml").write_text(json.dumps(system(f"{name}:S", {})))
    ran = run_tradebus("replay", "buy.yaml", "--db", str(tmp_path / "m.duckdb"), "--no-store", "--out",
                       str(tmp_path / "out"), cwd=user_strategies)
    assert ran.returncode == 1 and "decide returned 'buy'; allowed: LONG (1)" in ran.stderr
    assert "Traceback" not in ran.stderr and not (tmp_path / "out").exists()


def test_an_edited_strategy_file_makes_new_ids(user_strategies, md, tmp_path):
    """A rerun after the user edits the strategy is a new run (never the stored one reused); a rerun of the
    same file is the same run, already stored."""
    md.close()
    src = (user_strategies / "user_trend.py").read_text()
    (user_strategies / "edited.py").write_text(src)
    (user_strategies / "edited.yaml").write_text(json.dumps(system("edited:UserTrend")))
    args = ("replay", "edited.yaml", "--db", str(tmp_path / "m.duckdb"), "--store", str(tmp_path / "s.sqlite"),
            "--out", str(tmp_path / "out"))
    first = run_tradebus(*args, cwd=user_strategies)
    same = run_tradebus(*args, cwd=user_strategies)
    (user_strategies / "edited.py").write_text(src.replace("cur.rsi < p.rsi_max", "cur.rsi <= p.rsi_max"))
    edited = run_tradebus(*args, cwd=user_strategies)
    runs = [r.stdout.rsplit("run ", 1)[-1].strip() for r in (first, same, edited)]
    assert all(r.returncode == 0 for r in (first, same, edited)), edited.stderr
    assert runs[0] == runs[1] and "events already in the store (same run)" in same.stdout
    assert runs[2] != runs[0] and "events appended to the store" in edited.stdout


def test_sweep_jobs_name_user_strategies_and_refuse_plain_python_ones(user_strategies):
    base = {"job": "j", "tasks": [{"strategy": COMPILED, "params": {"fast": [5, 10]}, "symbols": ["BTCUSDT"]}]}
    assert parse_job(base).tasks[0].strategy == COMPILED
    with pytest.raises(ConfigError, match="plain-Python step"):
        parse_job({**base, "tasks": [{**base["tasks"][0], "strategy": PLAIN}]})


def test_the_strategy_modules_import_the_api_and_nothing_imports_them_back():
    """No cycle: ``api`` imports none of the strategy modules at import time (``known()`` loads them), and
    each of them imports ``api``, not the package or each other."""
    import ast
    from pathlib import Path

    folder = Path(strategies.__file__).parent
    top_level = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        froms = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module]
        top_level[path.stem] = {f"{n.module}.{a.name}" for n in froms for a in n.names} | {n.module for n in froms}
    siblings = {f"tradebus.components.strategies.{m}" for m in ("builtin", "composable", "adaptive", "scaffold")}
    assert not top_level["api"] & (siblings | {"tradebus.components.strategies"})
    for name in ("builtin", "composable", "adaptive"):
        assert "tradebus.components.strategies.api" in top_level[name]
        assert not top_level[name] & siblings, name
    assert set(strategies.known()) >= {"sma_cross", "composable", "regime_switch"}
