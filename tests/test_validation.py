"""Validation: the deflated Sharpe ratio and PBO against the literature, simulation and direct formulas;
the pipeline's every run against a replay of the same config and window; verdicts written back."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from tradebus.configs.schema import ConfigError, parse_config
from tradebus.factory import overfit
from tradebus.factory.experiments import Tracker
from tradebus.factory.sweep import parse_job, run_sweep
from tradebus.factory.validation import (Disqualify, ValidationRules, WalkForward, disqualifications, fold_windows,
                                         history, load_rules, run_validation, select, span_window)
from tradebus.replay.backtest import run_replay
from tradebus.replay.importer import read_file
from tradebus.engine.marketdata import MarketData, SeriesKey
from tradebus.engine.market import resolve_window

from .conftest import SHARED_DATA
from .proc import run_tradebus
from .test_sweep import job

# --- deflated Sharpe ratio ------------------------------------------------------------------------


def test_deflated_sharpe_matches_the_papers_numerical_example():
    # Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", J. Portfolio Management 40(5), numerical
    # example: the best of N = 100 trials shows an annualised Sharpe of 2.5 over T = 1,250 daily returns with
    # skewness -3 and kurtosis 10; the trials' annualised Sharpe ratios have variance 1/2. SR0 is 0.1132 a
    # day and the DSR 0.9004: not significant at 95% despite the Sharpe of 2.5.
    day = math.sqrt(250)
    assert overfit.expected_max_sharpe(100, 0.5 / 250) == pytest.approx(0.1132, abs=5e-5)
    assert overfit.deflated_sharpe(2.5 / day, 1250, -3.0, 10.0, 100, 0.5 / 250) == pytest.approx(0.9004, abs=5e-5)


def test_expected_maximum_sharpe_approximates_the_exact_expected_maximum_of_noise():
    # E[max of N standard normals] = integral of x N phi(x) Phi(x)^(N-1); the paper's closed form is an
    # approximation that tightens as N grows (2.3% high at N = 10, under 1% from N = 100).
    for n, tol in ((10, 0.025), (100, 0.01), (1000, 0.01), (100_000, 0.01)):
        exact = integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -10, 12)[0]
        assert overfit.expected_max_sharpe(n, 0.3 ** 2) == pytest.approx(0.3 * exact, rel=tol)
    assert overfit.expected_max_sharpe(1, 1.0) == 0.0  # nothing was selected


def test_probabilistic_sharpe_is_calibrated_under_the_null():
    # Returns with a true Sharpe of exactly 0.05 a period: PSR against 0.05 exceeds 0.95 about 5% of the time.
    rng = np.random.default_rng(11)
    t = 750
    returns = 0.05 + rng.standard_t(df=6, size=(6000, t)) / math.sqrt(6 / 4)
    sr = returns.mean(1) / returns.std(1, ddof=1)
    skew = stats.skew(returns, axis=1)
    kurt = stats.kurtosis(returns, axis=1, fisher=False)
    psr = np.array([overfit.probabilistic_sharpe(a, 0.05, t, s, k) for a, s, k in zip(sr, skew, kurt)])
    assert np.mean(psr > 0.95) == pytest.approx(0.05, abs=0.012)
    assert np.mean(psr > 0.5) == pytest.approx(0.5, abs=0.03)


def test_moments_match_scipy():
    r = np.random.default_rng(3).standard_t(4, 5000) * 0.01 + 0.0004
    sr, skew, kurt = overfit.moments(r)
    assert sr == pytest.approx(r.mean() / r.std(ddof=1), rel=1e-12)
    assert skew == pytest.approx(stats.skew(r), rel=1e-10)
    assert kurt == pytest.approx(stats.kurtosis(r, fisher=False), rel=1e-10)


# --- probability of backtest overfitting ----------------------------------------------------------


def block_stats(returns: np.ndarray, n_blocks: int) -> np.ndarray:
    """(N, S, 3) from a (T, N) matrix of returns, as the sweep kernel accumulates them."""
    parts = np.array_split(returns, n_blocks, axis=0)
    return np.stack([[(len(p), p[:, j].sum(), (p[:, j] ** 2).sum()) for p in parts] for j in range(returns.shape[1])])


def cscv_reference(returns: np.ndarray, n_blocks: int) -> np.ndarray:
    """The paper's algorithm, literally: for each half of the blocks, concatenate the rows, rank by Sharpe."""
    parts = np.array_split(returns, n_blocks, axis=0)
    n = returns.shape[1]
    logits = []
    for chosen in itertools.combinations(range(n_blocks), n_blocks // 2):
        ins = np.concatenate([parts[i] for i in chosen])
        oos = np.concatenate([parts[i] for i in range(n_blocks) if i not in chosen])
        sr_in = ins.mean(0) / ins.std(0, ddof=1)
        sr_out = oos.mean(0) / oos.std(0, ddof=1)
        best = int(np.argmax(sr_in))
        rank = stats.rankdata(sr_out)[best]  # 1 = worst; ties share the average rank
        w = rank / (n + 1)
        logits.append(math.log(w / (1 - w)))
    return np.array(logits)


def test_pbo_from_block_statistics_equals_the_algorithm_on_raw_returns():
    rng = np.random.default_rng(5)
    returns = rng.normal(0.0002, 0.01, size=(1203, 9))  # blocks of unequal length too
    for s in (4, 6, 8):
        got = overfit.pbo_cscv(block_stats(returns, s))
        want = cscv_reference(returns, s)
        assert got.splits == math.comb(s, s // 2) == len(want)
        np.testing.assert_allclose(got.logits, want, rtol=1e-9, atol=1e-12)
        assert got.pbo == np.mean(want <= 0)


def test_pbo_of_pure_noise_is_a_coin_flip_and_of_a_real_edge_is_zero():
    # The paper's two limits: selecting among skill-less trials is overfitting half the time; a trial with
    # a real edge wins in sample and stays on top out of sample.
    rng = np.random.default_rng(17)
    noise = [overfit.pbo_cscv(block_stats(rng.normal(0, 0.01, size=(1600, 30)), 8)).pbo for _ in range(40)]
    assert np.mean(noise) == pytest.approx(0.5, abs=0.08)
    returns = rng.normal(0, 0.01, size=(1600, 30))
    returns[:, 4] += 0.004
    edge = overfit.pbo_cscv(block_stats(returns, 16))
    assert edge.pbo == 0.0 and edge.prob_oos_loss == 0.0 and edge.splits == 12870


def test_pbo_refuses_what_cscv_cannot_split():
    with pytest.raises(ValueError, match="even number"):
        overfit.pbo_cscv(np.ones((3, 5, 3)))
    with pytest.raises(ValueError, match="at least two"):
        overfit.pbo_cscv(np.ones((1, 4, 3)))


# --- rules and windows ----------------------------------------------------------------------------


def test_disqualification_names_each_broken_rule():
    m = {"total_trades": 12, "trades_per_year": 3.0, "max_drawdown": -0.4, "profit_factor": 0.9, "win_rate": 0.9}
    why = disqualifications(m, Disqualify())
    assert why == ["12 trades < 30", "3.0 trades a year < 6", "drawdown 40.0% > 25%", "profit factor 0.90 < 1.1",
                   "win rate 90.0% outside 35%..85%"]
    ok = {"total_trades": 80, "trades_per_year": 20.0, "max_drawdown": -0.1, "profit_factor": 1.4, "win_rate": 0.5}
    assert disqualifications(ok, Disqualify()) == []
    assert disqualifications({**ok, "profit_factor": math.nan}, Disqualify()) == ["profit factor nan < 1.1"]


def test_walk_forward_folds_tile_the_history_without_overlap():
    day = 86_400 * 10**9
    start, end = 0, 600 * day
    parse = lambda w: list(resolve_window(w, None, None))  # noqa: E731
    rolling = [(parse(a), parse(b)) for a, b in fold_windows(start, end, WalkForward(folds=4, train_segments=2))]
    assert [t for _, t in rolling] == [[200 * day, 300 * day], [300 * day, 400 * day], [400 * day, 500 * day],
                                       [500 * day, 600 * day]]
    assert all(tr == [te[0] - 200 * day, te[0]] for tr, te in rolling)
    anchored = [(parse(a), parse(b)) for a, b in fold_windows(start, end, WalkForward(folds=4, anchored=True))]
    assert all(tr == [0, te[0]] for tr, te in anchored)


def test_rules_file_errors_name_file_field_value_and_what_is_allowed(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("disqualify: {min_win_rate: 1.5}\nwalk_forward: {folds: 0}\nmax_pbo: nope\n")
    with pytest.raises(ConfigError) as exc:
        load_rules(bad)
    text = str(exc.value)
    assert f"{bad}: disqualify.min_win_rate" in text and "1.5" in text and "less than or equal to 1" in text
    assert "walk_forward.folds" in text and "max_pbo" in text and "'nope'" in text
    (tmp_path / "typo.yaml").write_text("min_dsr_typo: 0.9\n")
    with pytest.raises(ConfigError, match="min_dsr_typo"):
        load_rules(tmp_path / "typo.yaml")
    assert load_rules(None) == ValidationRules()


# --- the pipeline, against replays ----------------------------------------------------------------

LAX = ValidationRules(disqualify=Disqualify(min_trades=0, min_trades_per_year=0, max_drawdown=1.0, min_profit_factor=0,
                                            min_win_rate=0, max_win_rate=1), min_test_return=-1.0,
                      walk_forward=WalkForward(folds=3, train_segments=1, min_pass_rate=0.0),
                      min_positive_rate=0.0, min_dsr=0.0, max_pbo=1.0)  # every number computed, nothing fails


def test_every_validation_run_equals_a_replay_and_the_verdict_is_written_back(md, tmp_path):  # noqa: F811
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        report = run_sweep(parse_job(job()), md, tracker, workers=1)
        exps = select(tracker, [], "t-sweep", 2)
        results = run_validation(tracker, md, exps, LAX)
        assert [e["id"] for e, _ in results] == [e["id"] for e in exps]
        for e, v in results:
            d = v.details
            config = parse_config(json.loads(e["config"]))
            test = run_replay(config, "test", md).metrics
            assert v.test_return == pytest.approx(test["return_pct"], rel=1e-9, abs=1e-12)
            assert d["holdout"]["train"]["return_pct"] == pytest.approx(e["return_pct"], rel=1e-9, abs=1e-12)
            fold = d["walk_forward"]["folds"][-1]
            assert fold["test_return"] == pytest.approx(run_replay(config, fold["test"], md).metrics["return_pct"],
                                                        rel=1e-9, abs=1e-12)
            other = "ETHUSDT" if config.symbol == "BTCUSDT" else "BTCUSDT"
            assert set(d["multi_asset"]["results"]) == {other}
            swapped = config.model_copy(update={"symbol": other})
            whole = run_replay(swapped, span_window(*history(swapped, md)), md).metrics["return_pct"]
            assert d["multi_asset"]["results"][other] == pytest.approx(whole, rel=1e-9, abs=1e-12)
            assert d["dsr"]["trials"] == report.trials and 0.0 <= d["dsr"]["value"] <= 1.0
            assert d["dsr"]["bars"] == e["bars"]
            assert d["pbo"]["splits"] == math.comb(16, 8) and d["pbo"]["trials"] == report.trials // 2
            stored = tracker.get(e["id"])
            assert stored["validation_status"] == v.status in ("passed", "marginal")
            assert json.loads(stored["validation_details"])["reasons"] == v.reasons
            assert stored["test_return_pct"] == pytest.approx(v.test_return) and stored["test_period"] == "test"
        passed = [e["id"] for e, v in results if v.status == "passed"]
        assert passed  # under LAX rules: what `experiments top` shows is exactly these, by score
        assert [e["id"] for e in tracker.top(10, job="t-sweep")] == sorted(
            passed, key=lambda i: -tracker.get(i)["score"])


def test_default_rules_reject_with_the_rule_that_failed(md, tmp_path):  # noqa: F811
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        run_sweep(parse_job(job()), md, tracker, workers=1)
        (e, v), = run_validation(tracker, md, select(tracker, [], "t-sweep", 1), ValidationRules())
        assert v.status == "rejected" and v.reasons[0].startswith("disqualified: ")
        assert tracker.get(e["id"])["validation_status"] == "rejected"
        assert tracker.top(10, job="t-sweep") == []  # nothing validated to show


REAL = SHARED_DATA / "bybit" / "linear"


@pytest.mark.skipif(not (REAL / "5m" / "BTCUSDT.parquet").exists(), reason="../shared/data is absent")
def test_sweep_validate_top_on_real_perpetuals(tmp_path):
    """The issue's chain on the real 5m series: sweep, validate, experiments top."""
    db, exps = tmp_path / "m.duckdb", tmp_path / "e.duckdb"
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    with MarketData.open(db) as m:
        for s in symbols:
            m.write(SeriesKey("bybit", "linear", s, "5m"), read_file(REAL / "5m" / f"{s}.parquet"))
    (tmp_path / "job.yaml").write_text(json.dumps({
        "job": "real-trend", "base": {"risk": {"sizing": "risk_per_trade", "risk_per_trade": 0.01, "max_leverage": 2,
                                               "stop": {"kind": "atr", "atr_mult": 3.0}},
                                      "costs": {"taker_fee": 0.00055, "spread_bps": 1.0, "funding": False}},
        "score": {"min_trades": 10},
        "tasks": [{"strategy": "sma_cross", "params": {"fast": [10, 30], "slow": [60, 100], "allow_short": True},
                   "symbols": symbols, "timeframes": ["4h"]}]}))
    common = ["--db", str(db), "--experiments", str(exps)]
    swept = run_tradebus("sweep", str(tmp_path / "job.yaml"), "--workers", "1", *common, timeout=180)
    assert swept.returncode == 0, swept.stderr
    assert "12 trials" in swept.stdout
    checked = run_tradebus("validate", "--job", "real-trend", "--top", "3", *common, timeout=180, env={"COLUMNS": "250"})
    assert checked.returncode == 0, checked.stderr
    with Tracker.open(exps, read_only=True) as tracker:
        done = [e for e in tracker.top(12, validated_only=False) if e["validation_status"] != "pending"]
        assert len(done) == 3
        for e in done:
            assert e["id"][:12] in checked.stdout and e["validation_status"] in checked.stdout
            assert e["validation_status"] in ("passed", "marginal", "rejected")
        passed = [e for e in done if e["validation_status"] == "passed"]
    again = run_tradebus("validate", done[0]["id"], "--json", *common, timeout=180)  # one, for machines
    verdict = json.loads(again.stdout)
    assert verdict["id"] == done[0]["id"] and verdict["status"] == done[0]["validation_status"]
    assert verdict["reasons"] == json.loads(done[0]["validation_details"])["reasons"]
    listed = run_tradebus("experiments", "top", "--experiments", str(exps), env={"COLUMNS": "250"})
    assert listed.returncode == 0
    for e in passed:
        assert e["id"][:12] in listed.stdout
    if not passed:
        assert "none has passed validation yet" in listed.stdout
