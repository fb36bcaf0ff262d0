"""Multi-test scenarios and regime-adaptive systems.

The regime switch against the plain strategy it wraps and against its own rule (never in a position
through a regime it is flat in); each scenario's numbers against independent replays of the configs it
writes out (an ensemble against the sum of its members' replays); scenario-file errors; the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tradebus.bus import events as ev
from tradebus.components import indicators as ind
from tradebus.configs.schema import ConfigError, load_config, parse_config
from tradebus.factory import sim
from tradebus.factory.experiments import Tracker
from tradebus.factory.scenarios import load_scenarios, run_scenarios, write_outputs
from tradebus.factory.sweep import parse_job, run_sweep
from tradebus.replay.backtest import run_replay
from tradebus.engine.market import load_market

from .proc import run_tradebus
from .test_sweep import job

PLAIN = {"fast": 5, "slow": 20, "allow_short": True}


def system(params: dict, strategy: str = "regime_switch") -> dict:
    return {"system": "rs", "symbol": "BTCUSDT", "timeframe": "5m",
            # dated windows: the switch's ADX needs more warm-up than the plain strategy, the same start for both
            "windows": {"hygiene": {"start": "2025-01-02", "end": "2025-01-15"},
                        "test": {"start": "2025-01-15", "end": "2025-01-21"}},
            "strategy": {"id": strategy, "params": params}, "initial_capital": 10_000,
            "costs": {"taker_fee": 0.00055, "spread_bps": 1.0, "funding": False},
            "risk": {"sizing": "fixed_fraction", "fraction": 0.9}}


def fills(config, md):  # noqa: F811
    return [(e.ts_event, e.side, e.qty, e.price) for e in run_replay(config, "hygiene", md).events
            if isinstance(e, ev.Fill)]


def test_a_switch_whose_regime_never_changes_is_the_plain_strategy(md):  # noqa: F811
    plain = fills(parse_config(system(PLAIN, "sma_cross")), md)
    assert len(plain) > 20
    always_above = {"strategy": "sma_cross", "regime": {"indicator": "adx", "threshold": 0}, "above": PLAIN}
    always_below = {"strategy": "sma_cross", "regime": {"indicator": "adx", "threshold": 100}, "below": PLAIN,
                    "above": {"fast": 50, "slow": 60}}
    assert fills(parse_config(system(always_above)), md) == plain
    assert fills(parse_config(system(always_below)), md) == plain


def test_a_switch_trades_each_regime_by_its_own_rules_and_is_flat_where_told(md):  # noqa: F811
    thr = 25.0
    cfg = parse_config(system({"strategy": "sma_cross", "regime": {"indicator": "adx", "period": 14, "threshold": thr},
                               "below": PLAIN, "above": None}))
    m = load_market(cfg, "hygiene", md)
    run = sim.run_kernel(cfg, m)
    c = m.candles
    adx = ind.adx(c["high"], c["low"], c["close"], 14)[0][m.first:]
    qty = run.curve[:, 3]
    # Fills come at the next open: decided at bar i (ADX >= thr: flat), the position after bar i + 1 is 0.
    trending = np.flatnonzero(adx[:-1] >= thr)
    assert len(trending) > 100 and np.all(qty[trending + 1] == 0)
    ranging = adx[:-1] < thr
    assert np.count_nonzero(qty[1:][ranging]) > 100  # ... and it does trade while ranging

    # Both sides on: entries decided in each regime follow that regime's parameters.
    both = parse_config(system({"strategy": "sma_cross", "regime": {"indicator": "adx", "threshold": thr},
                                "below": PLAIN, "above": {"fast": 10, "slow": 40, "allow_short": True}}))
    fast_below, fast_above = (sim.run_kernel(parse_config(system(p, "sma_cross")), m).ledger
                              for p in (PLAIN, {"fast": 10, "slow": 40, "allow_short": True}))
    switched = sim.run_kernel(both, m)
    times = {r[1] for r in switched.ledger}
    assert times & {r[1] for r in fast_below} and times & {r[1] for r in fast_above}
    assert switched.ledger != fast_below and switched.ledger != fast_above


@pytest.mark.parametrize("params, expected", [
    ({"strategy": "nope", "below": {}}, "unknown strategy 'nope'"),
    ({"strategy": "regime_gated_trend", "below": {}}, "higher-timeframe"),
    ({"strategy": "sma_cross"}, "both null"),
    ({"strategy": "sma_cross", "below": {}, "allow_short": True}, "inside below/above"),
    ({"strategy": "sma_cross", "below": {"fast": 30, "slow": 10}}, "fast (30) must be < slow (10)"),
    ({"strategy": "sma_cross", "below": {}, "regime": {"indicator": "macd"}}, "'adx', 'chop' or 'rsi'"),
])
def test_switch_errors_name_the_field_and_what_is_allowed(params, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(system(params), "sys.yaml")
    assert "sys.yaml" in str(err.value) and expected in str(err.value)


SCENARIOS = {
    "job": "t-sweep", "candidates": 10, "rank_by": "sharpe",
    "scenarios": [
        {"name": "best", "kind": "single"},
        {"name": "top3", "kind": "ensemble", "top": 3},
        {"name": "adx", "kind": "regime", "regime": {"indicator": "adx", "threshold": 25}, "min_trades": 3},
        {"name": "shake", "kind": "sensitivity"},
        {"name": "off", "kind": "single", "rank": 2, "enabled": False},
    ],
}


def test_each_scenario_equals_replays_of_the_configs_it_writes(md, tmp_path):  # noqa: F811
    (tmp_path / "s.yaml").write_text(json.dumps(SCENARIOS))
    spec = load_scenarios(tmp_path / "s.yaml")
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        run_sweep(parse_job(job()), md, tracker, workers=1)
        rep = run_scenarios(spec, tracker, md)
        written = write_outputs(rep, tmp_path / "out")
        grid = tracker.parameter_values("t-sweep", "sma_cross", rep.candidates[0].config.symbol, "5m")
    by = {r.name: r for r in rep.results}
    assert list(by) == ["best", "top3", "adx", "shake"]
    assert [c.score for c in rep.candidates] == sorted((c.score for c in rep.candidates), reverse=True)
    out = tmp_path / "out" / "configs"

    for name in ("best", "adx"):
        r = by[name]
        assert not r.skipped, r.skipped
        config = load_config(out / f"{name}.yaml")
        for window, run in (("hygiene", r.train), ("test", r.test)):
            replayed = run_replay(config, window, md)
            assert np.array_equal(run.equity, replayed.curve[:, 2]) and run.metrics == replayed.metrics
    assert load_config(out / "adx.yaml").strategy.id == "regime_switch"

    # The ensemble is the sum of its members, each replayed with a third of the capital.
    ens = by["top3"]
    members = [load_config(out / f"top3-{i}.yaml") for i in (1, 2, 3)]
    assert [m.initial_capital for m in members] == [10_000 / 3] * 3
    curves = [run_replay(m, "test", md) for m in members]
    times = np.unique(np.concatenate([c.times for c in curves]))
    assert np.array_equal(ens.test.times, times)
    total = sum(np.interp(times, c.times, c.curve[:, 2]) for c in curves)  # same 5m grid: exact lookups
    assert np.allclose(ens.test.equity, total, rtol=1e-12)
    assert ens.test.metrics["total_trades"] == sum(c.metrics["total_trades"] for c in curves)
    assert ens.test.metrics["return_pct"] == pytest.approx(total[-1] / 10_000 - 1, rel=1e-12)

    # Sensitivity: every value the job tried for each parameter, each run equal to its own replay.
    shake = by["shake"]
    scans = shake.details["scans"]
    assert set(scans) == {"fast", "slow"}
    assert [row["value"] for row in scans["fast"]] == sorted(grid["fast"])
    best = rep.candidates[0].config
    for row in scans["slow"]:
        if "invalid" in row:
            assert row["value"] <= best.params().fast  # fast >= slow is not a system
            continue
        variant = parse_config({**best.model_dump(mode="json"),
                                "strategy": {"id": "sma_cross", "params": {**best.strategy.params, "slow": row["value"]}}})
        assert row["test"]["return_pct"] == pytest.approx(run_replay(variant, "test", md).metrics["return_pct"],
                                                          rel=1e-9, abs=1e-12)
    page = (tmp_path / "out" / "report.html").read_text()
    assert all(n in page for n in by) and "Parameter sensitivity" in page
    saved = json.loads((tmp_path / "out" / "scenarios.json").read_text())
    assert [s["name"] for s in saved["scenarios"]] == list(by)
    assert tmp_path / "out" / "report.html" in written


def test_scenario_file_errors_and_the_cli(md, tmp_path):  # noqa: F811
    bad = {**SCENARIOS, "scenarios": [{"name": "x", "kind": "ensemble", "top": 1}, {"name": "x", "kind": "single"}]}
    (tmp_path / "bad.yaml").write_text(json.dumps(bad))
    with pytest.raises(ConfigError) as err:
        load_scenarios(tmp_path / "bad.yaml")
    assert "bad.yaml" in str(err.value) and "top" in str(err.value) and "greater than or equal to 2" in str(err.value)
    (tmp_path / "s.yaml").write_text(json.dumps(SCENARIOS))
    md.close()
    env_db = ["--db", str(tmp_path / "m.duckdb"), "--experiments", str(tmp_path / "e.duckdb")]
    none = run_tradebus("scenarios", str(tmp_path / "s.yaml"), *env_db)
    assert none.returncode == 1 and "no experiments at" in none.stderr and "tradebus sweep" in none.stderr
    (tmp_path / "job.yaml").write_text(json.dumps(job()))
    # Each child compiles its kernels afresh (not cached on disk): the timeouts guard against a hang only.
    assert run_tradebus("sweep", str(tmp_path / "job.yaml"), "--workers", "1", *env_db, timeout=300).returncode == 0
    done = run_tradebus("scenarios", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), *env_db, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "top3" in done.stdout and (tmp_path / "o" / "report.html").exists()


def test_candidates_are_the_best_of_the_timeframe_asked_for(md, tmp_path):  # noqa: F811
    two = job()
    two["tasks"][0]["timeframes"] = ["5m", "15m"]
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        run_sweep(parse_job(two), md, tracker, workers=1)
        overall = [e["timeframe"] for e in tracker.top(3, validated_only=False, job="t-sweep")]
        tf = min(("5m", "15m"), key=overall.count)
        assert overall.count(tf) < 3  # so taking the best 3 and then filtering would come up short
        spec = load_scenarios_from(tmp_path, {"job": "t-sweep", "timeframe": tf, "candidates": 3,
                                              "scenarios": [{"name": "best", "kind": "single"}]})
        rep = run_scenarios(spec, tracker, md)
    assert len(rep.candidates) == 3 and {c.config.timeframe for c in rep.candidates} == {tf}


def load_scenarios_from(tmp_path, data: dict):
    (tmp_path / "s.yaml").write_text(json.dumps(data))
    return load_scenarios(tmp_path / "s.yaml")


def test_scenarios_test_every_candidate_over_the_same_dates(tmp_path):
    """ETH's data ends 4 days before BTC's: each symbol's last_30pct would start on another day, so the
    scenarios' test window is the whole days both share, and the configs they write say so."""
    from tradebus.engine.marketdata import MarketData, SeriesKey
    from tradebus.replay.checks import random_walk

    n = 12 * 24 * 20
    with MarketData.open(tmp_path / "m.duckdb") as m:
        m.write(SeriesKey("bybit", "linear", "BTCUSDT", "5m"), random_walk(n, seed=20))
        m.write(SeriesKey("bybit", "linear", "ETHUSDT", "5m"), random_walk(n - 12 * 24 * 4, seed=21))
        spec = load_scenarios_data({**SCENARIOS, "scenarios": [{"name": "best", "kind": "single"},
                                                                {"name": "top2", "kind": "ensemble", "top": 2}]},
                                   tmp_path)
        with Tracker.open(tmp_path / "e.duckdb") as tracker:
            run_sweep(parse_job(job()), m, tracker, workers=1)
            rep = run_scenarios(spec, tracker, m)
            write_outputs(rep, tmp_path / "out")
            symbols = {c.config.symbol for c in rep.candidates}
            own = {c.config.symbol: load_market(c.config, "test", m) for c in rep.candidates}
    assert symbols == {"BTCUSDT", "ETHUSDT"}
    assert len({o.requested_start for o in own.values()}) == 2, "each symbol's own test window differs"
    start = np.datetime64(rep.test_dates[0], "ns").astype(np.int64)
    end = np.datetime64(rep.test_dates[1], "ns").astype(np.int64)
    assert start >= max(o.requested_start for o in own.values()) and end <= min(o.end for o in own.values())
    for r in rep.results:
        assert r.test.times[0] - 5 * 60 * 10**9 >= start and r.test.times[-1] <= end
    assert len({(r.test.times[0], r.test.times[-1]) for r in rep.results}) == 1  # one span for every curve
    written = load_config(tmp_path / "out" / "configs" / "best.yaml")
    assert (str(written.windows["test"].start), str(written.windows["test"].end)) == rep.test_dates
    saved = json.loads((tmp_path / "out" / "scenarios.json").read_text())
    assert saved["test_window"] == "test" and saved["test_dates"] == list(rep.test_dates)


def load_scenarios_data(data: dict, folder):
    (folder / "s.yaml").write_text(json.dumps(data))
    return load_scenarios(folder / "s.yaml")
