"""Sweeps: trials equal replays, resume after an interruption, nothing run twice, clear job errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tradebus.configs.schema import ConfigError, parse_config
from tradebus.factory import space
from tradebus.factory.experiments import Tracker
from tradebus.factory.market import MemoryMarket
from tradebus.factory.sweep import parse_job, plan, run_sweep
from tradebus.replay.backtest import run_replay

from .proc import run_tradebus



def job(**overrides) -> dict:
    base = {
        "job": "t-sweep",
        "base": {"costs": {"taker_fee": 0.00055, "spread_bps": 1.0, "funding": False},
                 "risk": {"sizing": "fixed_fraction", "fraction": 0.9}, "initial_capital": 10_000},
        "score": {"min_trades": 5},
        "tasks": [{"strategy": "sma_cross", "params": {"fast": [5, 10, 20], "slow": [10, 30, 60], "allow_short": True},
                   "symbols": ["BTCUSDT", "ETHUSDT"], "window": "hygiene"}],
    }
    base.update(overrides)
    return base


def test_a_sweep_trial_equals_the_replay_of_its_config(md, tmp_path):
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        report = run_sweep(parse_job(job()), md, tracker, workers=1)
        rows = tracker.top(100, validated_only=False, min_trades=0)
        assert report.trials == 2 * 7 and report.invalid == 2 * 2  # fast >= slow is refused, not counted
        assert report.ran == report.trials and not report.failed
        assert tracker.count() == report.trials
        for e in rows[:3] + rows[-2:]:
            config = parse_config(json.loads(e["config"]))
            replayed = run_replay(config, "hygiene", md).metrics
            assert e["total_trades"] == replayed["total_trades"]
            assert e["return_pct"] == pytest.approx(replayed["return_pct"], rel=1e-9)
            assert e["sharpe"] == pytest.approx(replayed["sharpe"], rel=1e-9)
            assert e["max_drawdown"] == pytest.approx(replayed["max_drawdown"], rel=1e-9)
            assert e["job_trials"] == report.trials
            assert len(e["block_stats"]) == 16 * 3 and sum(e["block_stats"][0::3]) == replayed["bars"]


def test_an_interrupted_sweep_resumes_and_runs_nothing_twice(md, tmp_path):
    spec = parse_job(job())

    def interrupt(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(spec, md, tracker, workers=1, batch=2, progress=interrupt)
        saved = tracker.count()
        assert 4 <= saved < 14
        again = run_sweep(spec, md, tracker, workers=1, batch=2)
        assert (again.skipped, again.ran) == (saved, 14 - saved)
        assert tracker.count() == 14
        assert run_sweep(spec, md, tracker, workers=2).ran == 0


def test_disqualified_trials_keep_their_metrics_but_get_no_score(md, tmp_path):
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        run_sweep(parse_job(job(score={"min_trades": 10_000})), md, tracker, workers=1)
        assert tracker.top(10, validated_only=False) == []
        failures = tracker.failures("sma_cross")
        assert failures and all("min_trades 10000" in e["disqualified"] for e in failures)
        assert all(e["total_trades"] > 0 for e in failures)


def test_config_overrides_vary_the_risk_profile(md, tmp_path):
    spec = job(tasks=[{"strategy": "sma_cross", "params": {"fast": 10, "slow": 30, "risk.fraction": [0.5, 1.0]},
                       "symbols": ["BTCUSDT"]}])
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        run_sweep(parse_job(spec), md, tracker, workers=1)
        rows = tracker.top(10, validated_only=False, min_trades=0)
    fractions = sorted(json.loads(e["config"])["risk"]["fraction"] for e in rows)
    assert fractions == [0.5, 1.0]
    assert rows[0]["total_trades"] == rows[1]["total_trades"]  # same signals, different size
    assert rows[0]["return_pct"] != rows[1]["return_pct"]


@pytest.mark.parametrize("bad, needle", [
    ({"tasks": [{"strategy": "nope", "symbols": ["BTCUSDT"]}]}, "tasks.0.strategy: unknown strategy 'nope'"),
    ({"tasks": [{"strategy": "sma_cross", "symbols": ["BTCUSDT"], "timeframes": ["7m"]}]}, "tasks.0.timeframes"),
    ({"score": {"weights": {"luck": 1}}}, "score.weights: cannot score by luck"),
    ({"tasks": [{"strategy": "sma_cross", "symbols": ["BTCUSDT"], "space": "lhs", "samples": 0,
                 "params": {"fast": {"min": 2, "max": 5, "max2": 1}}}]}, "tasks.0.params.fast"),
])
def test_a_bad_job_names_the_field_and_what_is_allowed(bad, needle):
    with pytest.raises(ConfigError) as info:
        parse_job(job(**bad), "jobs/x.yaml")
    assert "jobs/x.yaml" in str(info.value) and needle in str(info.value)


def test_grid_random_and_latin_hypercube_spaces():
    decl = {"a": [1, 2, 3], "b": space.Range(min=0.5, max=1.5, step=0.5), "c": True}
    grid = space.expand(decl)
    assert len(grid) == space.grid_size(decl) == 9 and {g["c"] for g in grid} == {True}
    assert {(g["a"], g["b"]) for g in grid} == {(a, b) for a in (1, 2, 3) for b in (0.5, 1.0, 1.5)}
    x = space.Range(min=0, max=1)
    lhs = space.expand({"x": x, "y": x}, "lhs", 20, seed=3)
    for name in ("x", "y"):  # one draw in each of the 20 strata of every dimension
        assert sorted(int(d[name] * 20) for d in lhs) == list(range(20))
    assert lhs == space.expand({"x": x, "y": x}, "lhs", 20, seed=3)  # seeded: the same trials every run
    ints = space.expand({"n": space.Range(min=2, max=9, integer=True)}, "random", 200, seed=1)
    assert {d["n"] for d in ints} == set(range(2, 10))


def test_tracker_queries(md, tmp_path):
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        run_sweep(parse_job(job()), md, tracker, workers=1)
        best = tracker.top(1, validated_only=False)[0]
        assert tracker.top(5) == []  # nothing validated yet
        tracker.update_validation(best["id"], "passed", {"walk_forward_pass_rate": 0.75}, test_return=0.01)
        assert [e["id"] for e in tracker.top(5)] == [best["id"]]
        assert tracker.has_been_tested(best["id"]) and tracker.get(best["id"][:10])["id"] == best["id"]
        btc = tracker.by_symbol("BTCUSDT")  # everything tried on it, disqualified trials included
        assert len(btc) == tracker.count() // 2 and {e["symbol"] for e in btc} == {"BTCUSDT"}
        assert tracker.untested("sma_cross", ["BTCUSDT", "SOLUSDT"], ["5m", "1h"]) == [
            ("BTCUSDT", "1h"), ("SOLUSDT", "5m"), ("SOLUSDT", "1h")]
        text = tracker.summary_for_llm()
        assert "TOP 1 VALIDATED" in text and "sma_cross: 14," in text


def test_sweep_and_experiments_commands(md, tmp_path):
    md.close()
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(job()))  # JSON is YAML
    args = ["--db", str(tmp_path / "m.duckdb"), "--experiments", str(tmp_path / "e.duckdb")]
    ran = run_tradebus("sweep", str(path), "--workers", "2", *args)
    assert ran.returncode == 0, ran.stderr
    assert "14 trials (4 refused combinations not counted); ran 14, already done 0" in ran.stdout
    again = run_tradebus("sweep", str(path), *args)
    assert "ran 0, already done 14" in again.stdout
    top = run_tradebus("experiments", "top", "--all", "--experiments", str(tmp_path / "e.duckdb"))
    assert top.returncode == 0 and "sma_cross" in top.stdout
    assert "no trials match" in run_tradebus("experiments", "top", "--experiments", str(tmp_path / "e.duckdb")).stdout
    bad = run_tradebus("sweep", str(tmp_path / "missing.yaml"), *args)
    assert bad.returncode == 1 and "cannot read" in bad.stderr

    # Piped (no COLUMNS): whole ids that paste into `experiments show`, and the same rows as JSON.
    piped = {"COLUMNS": ""}
    rows = [json.loads(line) for line in run_tradebus(
        "experiments", "top", "--all", "-n", "3", "--json", "--experiments", str(tmp_path / "e.duckdb")).stdout.splitlines()]
    table = run_tradebus("experiments", "top", "--all", "-n", "3", "--experiments", str(tmp_path / "e.duckdb"),
                         env=piped).stdout
    assert len(rows) == 3 and all(r["id"] in table for r in rows) and "\u2026" not in table
    best = rows[0]
    shown = run_tradebus("experiments", "show", best["id"], "--experiments", str(tmp_path / "e.duckdb")).stdout
    as_json = json.loads(run_tradebus("experiments", "show", best["id"], "--json", "--experiments",
                                      str(tmp_path / "e.duckdb")).stdout)
    assert as_json["id"] == best["id"] and as_json["parameters"] == best["parameters"]
    assert f"{best['return_pct']:+.2%}" in shown and f"{best['max_drawdown']:.2%}" in shown

    # The job's Sharpe over its two parameters: each cell the mean of that pair's trials (both symbols).
    heat = run_tradebus("experiments", "heatmap", "--job", "t-sweep", "--x", "fast", "--y", "slow", "--out",
                        str(tmp_path / "heat.html"), "--experiments", str(tmp_path / "e.duckdb"))
    wrong = run_tradebus("experiments", "heatmap", "--job", "t-sweep", "--x", "fast", "--y", "nope",
                         "--experiments", str(tmp_path / "e.duckdb"))
    assert heat.returncode == 0 and "3 x 3 cells from 14 trials" in heat.stdout, heat.stdout + heat.stderr
    assert (tmp_path / "heat.html").stat().st_size > 1_000
    assert wrong.returncode == 1 and "varied allow_short, fast, slow" in wrong.stderr

    # A job whose every trial fails (no candles in its window) ends non-zero, saying so.
    path.write_text(json.dumps(job(job="t-none", tasks=[{**job()["tasks"][0], "window": "2031-01-01:2031-02-01"}])))
    failed = run_tradebus("sweep", str(path), "--workers", "1", *args)
    assert failed.returncode == 2 and "14 of 14 trials run failed" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr


def test_repeated_random_draws_are_one_trial(md):
    # 40 draws over 3 x 2 integer values: at most 6 distinct trials, each run and counted (DSR's N) once.
    j = parse_job(job(tasks=[{"strategy": "sma_cross", "space": "random", "samples": 40, "seed": 2,
                              "params": {"fast": {"min": 5, "max": 7, "integer": True},
                                         "slow": {"min": 30, "max": 31, "integer": True}},
                              "symbols": ["BTCUSDT"]}]))
    p = plan(j, MemoryMarket.load(md, "bybit", "linear", ["BTCUSDT"]))
    ids = [t.id for t in p.trials]
    assert len(ids) == len(set(ids)) == p.count <= 6 and p.count + p.repeated == 40
    assert {(t.config.params().fast, t.config.params().slow) for t in p.trials} == {
        (f, s) for f in (5, 6, 7) for s in (30, 31)}


def test_factory_commands_without_market_data_say_how_to_get_it(tmp_path):
    quick = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "sma_cross_quick.yaml"
    for args in (["sweep", str(quick)], ["validate"]):
        done = run_tradebus(*args, "--db", str(tmp_path / "none.duckdb"), "--experiments", str(tmp_path / "e.duckdb"))
        assert done.returncode == 1 and "no market data at" in done.stderr and "Traceback" not in done.stderr, args


def test_parameter_grid_means_each_cell_over_the_other_parameters():
    from tradebus.engine.report import parameter_grid

    rows = [({"fast": 5, "slow": 20, "k": 1}, 1.0), ({"fast": 5, "slow": 20, "k": 2}, 3.0),
            ({"fast": 10, "slow": 20, "k": 1}, -1.0), ({"fast": 10, "slow": 30, "k": 1}, None),
            ({"entry": 3}, 9.0)]

    xs, ys, mean, count = parameter_grid(rows, "fast", "slow")

    assert (xs, ys) == ([5, 10], [20, 30])
    assert mean[0].tolist() == [2.0, -1.0] and count.tolist() == [[2, 1], [0, 0]]
    assert all(v != v for v in mean[1])  # no trial with a value: empty, not zero


def test_shared_indicators_and_resampled_bars_change_no_result(md, tmp_path):
    """A sweep computes each indicator once per slice and each resampled slice once, and runs trials that
    share rows as one compiled batch; every trial's metrics and block statistics are those of the trial
    run alone, straight from the database, bit for bit."""
    from tradebus.factory.market import FeatureMemo
    from tradebus.factory.sweep import pending, run_trial, run_trials

    j = parse_job(job(tasks=[
        {"strategy": "stochrsi_mean_reversion", "params": {"rsi_period": [7, 14], "oversold": [20, 30],
                                                          "adx_threshold": [20, 30], "allow_short": True},
         "symbols": ["BTCUSDT", "ETHUSDT"], "timeframes": ["5m", "15m"], "window": "hygiene"},
        {"strategy": "regime_gated_trend", "params": {"fast": [5, 10], "slow": [20, 40], "regime_timeframe": ["1h"]},
         "symbols": ["BTCUSDT"], "timeframes": ["5m", "15m"], "window": "hygiene"}]))
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        work = pending(j, md, tracker)
        batch = [(t.id, t.config, t.window) for t in work.todo]
        # Each trial alone through the per-trial kernel call, every slice read and resampled from DuckDB.
        alone = [(tid, *run_trial(config, window, md), "") for tid, config, window in batch]
        memo = FeatureMemo()
        shared = run_trials(batch, work.mem, memo)
        report = run_sweep(j, md, tracker, workers=2)
        stored = {e["id"]: e for e in tracker.top(1000, validated_only=False, min_trades=0, job=j.job)}
    assert len(batch) == 8 * 2 * 2 + 4 * 2 and not any(err for *_, err in alone)
    assert shared == alone
    computed, reused, peak = memo.counts()
    assert reused > computed and 0 < peak < 200 * 2**20
    assert report.features_computed > 0 and report.features_reused > report.features_computed
    scored = [o for o in alone if o[1]["total_trades"] >= 5]
    assert scored and all(stored[tid]["sharpe"] == m["sharpe"] and stored[tid]["return_pct"] == m["return_pct"]
                          for tid, m, _, _ in scored)


def test_validation_and_scenarios_run_a_config_over_a_window_once(md, monkeypatch):
    """They ask for the same (config, window) more than once (a candidate's train run, a scan's base): a
    MemoryMarket keeps the result; another config or window runs, and the result is the same as fresh."""
    from tradebus.factory import sim
    from tradebus.factory.sweep import run_trial

    mem = MemoryMarket.load(md, "bybit", "linear", ["BTCUSDT", "ETHUSDT"])
    config = plan(parse_job(job()), mem).trials[0].config
    fresh = run_trial(config, "hygiene", md)
    calls = []
    real = sim.run_stats
    monkeypatch.setattr(sim, "run_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, again = run_trial(config, "hygiene", mem), run_trial(config, "hygiene", mem)
    other = run_trial(config, "test", mem)
    assert first == again == fresh and other != first and len(calls) == 2
