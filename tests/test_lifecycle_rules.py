"""Every lifecycle rule's promote and demote paths on hand-made evidence, the thresholds file's
validation, the guard and risk manager taking a lifecycle move (flatten, exits only, kept across a restart),
and allocations that can only shrink a system."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tradebus.bus import events as ev
from tradebus.components import lifecycle as lc
from tradebus.configs.lifecycle import LifecycleRules, load_rules
from tradebus.factory import overfit
from tradebus.factory.lifecycle import against_shadow, correlation, daily_returns
from tradebus.replay.checks import T0

from .proc import run_tradebus

R = LifecycleRules()
HOUR = 3_600 * 10**9


def metrics(**kw) -> dict:
    base = {"total_trades": 120, "trades_per_year": 60.0, "max_drawdown": -0.2, "sharpe": 1.1}
    return {**base, **kw}


def test_hygiene_promotes_a_system_that_trades_and_rejects_one_that_does_not():
    assert lc.hygiene_gate(metrics(), R.hygiene).to == "test"
    few = lc.hygiene_gate(metrics(total_trades=3), R.hygiene)
    deep = lc.hygiene_gate(metrics(max_drawdown=-0.6), R.hygiene)
    rare = lc.hygiene_gate(metrics(trades_per_year=2.0), R.hygiene)
    assert (few.to, few.rule) == ("rejected", "hygiene_failed") and "3 trades < 20" in few.why
    assert deep.to == "rejected" and "drawdown 60.0% > 35%" in deep.why
    assert rare.to == "rejected" and "2.0 trades a year < 6" in rare.why
    assert few.evidence["trades"] == 3 and deep.evidence["max_drawdown"] == 0.6


def test_test_gate_needs_validation_out_of_sample_sharpe_and_low_correlation():
    ok = lc.test_gate("passed", [], 0.8, {"other": 0.3}, R.test)
    assert (ok.to, ok.rule) == ("demo", "validated") and ok.evidence["max_correlation"] == 0.3
    assert lc.test_gate("rejected", ["holdout"], 0.8, {}, R.test).to == "rejected"
    marginal = lc.test_gate("marginal", ["DSR 0.4 < 0.95"], 0.8, {}, R.test)
    assert (marginal.to, marginal.rule) == ("rework_required", "validation_failed") and "DSR" in marginal.why
    loses = lc.test_gate("passed", [], -0.2, {}, R.test)
    assert (loses.to, loses.rule) == ("rework_required", "out_of_sample")
    twin = lc.test_gate("passed", [], 0.8, {"a": 0.2, "b": -0.85}, R.test)
    assert (twin.to, twin.rule) == ("rework_required", "correlated") and "with b" in twin.why
    nan = lc.test_gate("passed", [], math.nan, {}, R.test)  # no Sharpe is not a good Sharpe
    assert nan.to == "rework_required"


def track(equity, entries=12, rejections=0, breaches=0, hours=1) -> lc.Track:
    t = T0 + np.arange(len(equity), dtype=np.int64) * hours * HOUR
    return lc.Track(t, np.asarray(equity, dtype=np.float64), entries, rejections, breaches,
                    tuple(["cap"] * breaches))


class Shadow:
    """A kernel run's shape, as ``against_shadow`` reads it."""

    def __init__(self, times, equity):
        self.times = times
        self.curve = np.zeros((len(equity), 3))
        self.curve[:, 2] = equity


def test_demo_against_its_shadow_replay():
    rng = np.random.default_rng(5)
    eq = 10_000 * np.cumprod(1 + rng.normal(0.0002, 0.003, 24 * 20))
    t = track(eq)
    same = against_shadow(t, Shadow(t.times, eq), 0.05)
    assert same["worse"] is False and same["divergence"] == 0.0 and same["paired_bars"] == len(eq)
    assert 0 <= same["psr"] <= 1
    # Slippage the shadow does not have: 3 bp lost on every bar is significantly worse.
    slipped = track(eq * np.cumprod(np.full(len(eq), 1 - 0.0003)))
    worse = against_shadow(slipped, Shadow(t.times, eq), 0.05)
    assert worse["worse"] is True and worse["p_worse"] < 0.05 and worse["divergence"] > 0.1
    assert against_shadow(t, None, 0.05) == {}


def test_demo_record_gate_for_a_persons_approval():
    rng = np.random.default_rng(6)
    eq = 10_000 * np.cumprod(1 + rng.normal(0.0002, 0.003, 24 * 20))
    t = track(eq)
    ok = lc.demo_eligible(t, against_shadow(t, Shadow(t.times, eq), 0.05), R.demo)
    assert (ok.to, ok.rule) == ("live_test", "demo_record") and ok.evidence["demo_days"] >= 14
    short = lc.demo_eligible(track(eq[:48]), against_shadow(track(eq[:48]), Shadow(t.times[:48], eq[:48]), 0.05),
                             R.demo)
    assert short.to == "" and "demo days < 14" in short.why
    idle = lc.demo_eligible(track(eq, entries=2), against_shadow(t, Shadow(t.times, eq), 0.05), R.demo)
    assert idle.to == "" and "2 entries < 10" in idle.why
    slipped = track(eq * np.cumprod(np.full(len(eq), 1 - 0.0003)))
    worse = lc.demo_eligible(slipped, against_shadow(slipped, Shadow(t.times, eq), 0.05), R.demo)
    assert worse.to == "" and "significantly worse than its shadow" in worse.why
    blind = lc.demo_eligible(t, {}, R.demo)
    assert blind.to == "" and "no shadow replay" in blind.why


def test_each_demotion_rule():
    flat = np.full(200, 10_000.0)
    edge = (0.0, 0.0)
    healthy = lc.demotion("production", track(flat), {"divergence": 0.0}, edge, R.demote)
    assert healthy.to == "" and healthy.rule == "healthy"
    breach = lc.demotion("production", track(flat, breaches=1), {}, edge, R.demote)
    assert (breach.to, breach.rule) == ("disabled", "risk_breach")
    dd = lc.demotion("production", track(np.r_[flat, 8_000.0]), {}, edge, R.demote)
    assert (dd.to, dd.rule) == ("live_test", "drawdown") and dd.evidence["max_drawdown"] == 0.2
    assert lc.demotion("live_test", track(np.r_[flat, 8_000.0]), {}, edge, R.demote).to == "demo"
    assert lc.demotion("demo", track(np.r_[flat, 8_000.0]), {}, edge, R.demote).to == "rework_required"
    rej = lc.demotion("production", track(flat, rejections=6), {}, edge, R.demote)
    assert (rej.to, rej.rule) == ("live_test", "rejections")
    div = lc.demotion("production", track(flat), {"divergence": 0.05}, edge, R.demote)
    assert (div.to, div.rule) == ("live_test", "shadow_divergence")
    # 40 days losing slowly (inside the drawdown cap): the rolling Sharpe demotes.
    slide = 10_000 * np.cumprod(np.full(24 * 40, 1 - 0.00005) + np.tile([0.0002, -0.0002], 24 * 20))
    roll = lc.demotion("production", track(slide), {}, edge, R.demote)
    assert (roll.to, roll.rule) == ("live_test", "rolling_sharpe") and roll.evidence["rolling_sharpe"] < -1
    # The backtest's edge, gone: CUSUM.
    rng = np.random.default_rng(9)
    noise = 10_000 * np.cumprod(1 + rng.normal(0.0, 0.004, 24 * 10))
    lost = lc.demotion("production", track(noise), {}, (0.002, 0.004), R.demote)
    assert (lost.to, lost.rule) == ("live_test", "edge_lost") and lost.evidence["alarm_bar"] > 0


def test_minimum_track_record_matches_the_worked_number():
    # The anchor (Bailey & López de Prado): a Sharpe of 1 needs about 990 daily observations at 95%.
    n = overfit.min_track_record(1 / math.sqrt(365), 0.0, 0.0, 3.0, 0.05)
    assert 985 < n < 995
    assert overfit.min_track_record(-0.1, 0.0, 0.0, 3.0) == math.inf


def test_track_from_a_store_marks_the_position_at_each_close():
    def env(i, system="s", run="r1"):
        return {"id": f"e{i}", "ts_event": T0 + i * HOUR, "ts_init": T0 + i * HOUR, "system": system, "run": run}

    def bar(i, close):
        return ev.BarClosed(**env(i, ""), venue="bybit", market="linear", symbol="BTCUSDT", timeframe="1h",
                            open_time=T0 + (i - 1) * HOUR, open=close, high=close, low=close, close=close, volume=1.0)

    events = [ev.RunStarted(**env(0), mode="paper"), ev.RunStarted(**env(99, run="other"), mode="replay"),
              bar(1, 100.0),
              ev.OrderIntent(**env(2), order_id="o1", venue="bybit", symbol="BTCUSDT", side="buy",
                             order_type="market", qty=10.0, label="entry"),
              ev.Fill(**env(3), order_id="o1", venue_order_id="v", exec_id="x", symbol="BTCUSDT", side="buy",
                      price=100.0, qty=10.0, fee=1.0, liquidity="taker", leaves_qty=0.0),
              ev.AccountState(**env(4), balance=999.0, equity=999.0),
              ev.PositionChanged(**env(5), symbol="BTCUSDT", qty=10.0, avg_price=100.0),
              bar(6, 110.0),
              ev.OrderRejected(**env(7), order_id="o2", reason="cap"),
              ev.RiskStateChanged(**env(8), state="reducing", previous="active", reason="daily loss 5%"),
              ev.RiskStateChanged(**env(9), state="reducing", previous="active", reason=f"{lc.LIFECYCLE} x"),
              ev.BarClosed(**{**env(10, ""), "run": "other"}, venue="bybit", market="linear", symbol="BTCUSDT", timeframe="1h",
                           open_time=T0, open=1, high=1, low=1, close=1.0, volume=1.0)]
    t = lc.track_from(events, "s", "BTCUSDT", "1h", 1_000.0, ("paper",))
    # bar 1 is marked after the fill it caused (stored after it): the fee is in, the position at cost
    assert t.equity.tolist() == [999.0, 999.0 + 10 * (110 - 100)]
    assert (t.entries, t.rejections, t.breaches) == (1, 1, 1)  # a lifecycle state is no cap breach


def test_daily_returns_and_their_correlation():
    days = T0 + np.arange(0, 30 * 24, dtype=np.int64) * HOUR
    eq = 100 * np.cumprod(1 + np.sin(np.arange(len(days)) / 7) * 0.001)
    a = daily_returns(days, eq)
    assert len(a) == 29
    first_day = int(days[0] // lc.DAY_NS)
    closes = {d: eq[(days // lc.DAY_NS) == d][-1] for d in range(first_day, first_day + 30)}
    assert a[first_day + 1] == pytest.approx(closes[first_day + 1] / closes[first_day] - 1)
    assert correlation(a, a) == pytest.approx(1.0)
    assert correlation(a, {d: -r for d, r in a.items()}) == pytest.approx(-1.0)
    assert math.isnan(correlation(a, {}))


def test_a_bad_thresholds_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("demote:\n  max_drawdown: 1.5\n")
    r = run_tradebus("lifecycle", "run", "--rules", str(bad), env={"TRADEBUS_HOME": str(tmp_path / "h")})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert str(bad) in r.stderr and "demote.max_drawdown" in r.stderr and "1.5" in r.stderr
    bad.write_text("allocator: {method: markowitz}\n")
    r = run_tradebus("lifecycle", "run", "--rules", str(bad), env={"TRADEBUS_HOME": str(tmp_path / "h")})
    assert r.returncode == 1 and "allocator.method" in r.stderr and "markowitz" in r.stderr
    assert load_rules() == LifecycleRules()  # the shipped file says what the defaults say
    every = run_tradebus("lifecycle", "run", "--every", "soon", env={"TRADEBUS_HOME": str(tmp_path / "h")})
    assert every.returncode == 1 and "--every 'soon'" in every.stderr
