"""Metrics against empyrical (the reference implementation used by pyfolio/zipline) and by hand."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pytest

from tradebus.components.timeframes import DAY, HOUR
from tradebus.engine.metrics import bar_returns, drawdown, summarize
from tradebus.engine.trades import Trade

PERIODS = 365 * 24  # hourly bars in a 365-day year


@pytest.fixture
def curve():
    rng = np.random.default_rng(4)
    returns = rng.normal(0.0002, 0.01, 3_000)
    equity = 10_000 * np.cumprod(1 + returns)
    times = np.arange(3_000, dtype=np.int64) * HOUR
    return times, equity, returns


def test_bar_returns_start_from_initial_capital(curve):
    _, equity, returns = curve

    np.testing.assert_allclose(bar_returns(equity, 10_000), returns, rtol=1e-10)


def test_sharpe_and_sortino_match_empyrical(curve):
    times, equity, _ = curve
    returns = bar_returns(equity, 10_000)

    m = summarize(times, equity, np.ones(len(equity)), 10_000, HOUR, [], 0.0, 0.0)

    assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(returns, annualization=PERIODS), rel=1e-10)
    assert m["sortino"] == pytest.approx(empyrical.sortino_ratio(returns, annualization=PERIODS), rel=1e-10)
    assert m["max_drawdown"] == pytest.approx(empyrical.max_drawdown(returns), rel=1e-10)


def test_max_drawdown_matches_empyrical_and_duration_is_measured(curve):
    times, equity, returns = curve

    dd, longest = drawdown(equity, times)

    # empyrical starts from a value of 1 before the first return; we start from the first equity point,
    # so compare on a curve whose first return is zero.
    assert dd == pytest.approx(empyrical.max_drawdown(bar_returns(equity, equity[0])), rel=1e-10)
    # Direct: walk the curve, time each peak-to-recovery span (an open one runs to the end).
    best, peak, peak_t, under = 0, equity[0], times[0], False
    for t, e in zip(times, equity):
        if e >= peak:
            if under:
                best = max(best, t - peak_t)
            peak, peak_t, under = e, t, False
        else:
            under = True
    if under:
        best = max(best, times[-1] - peak_t)
    assert longest == best > 0


def test_summary_trade_statistics_by_hand():
    trades = [Trade("X", "long", 0, 100, 1, 10 * HOUR, 110, gross=10), Trade("X", "short", 0, 100, 1, 2 * HOUR, 105, gross=-5),
              Trade("X", "long", 0, 100, 1, 4 * HOUR, 120, gross=20)]
    equity = np.array([10_000.0, 10_010, 10_005, 10_025])
    times = np.arange(4, dtype=np.int64) * DAY

    m = summarize(times, equity, np.array([1.0, 0, -1, 0]), 10_000.0, DAY, trades, fees=0.0, funding=0.0)

    assert m["total_trades"] == 3 and m["win_rate"] == pytest.approx(2 / 3)
    assert m["profit_factor"] == pytest.approx(30 / 5) and m["expectancy"] == pytest.approx(25 / 3)
    assert m["avg_holding_hours"] == pytest.approx((10 + 2 + 4) / 3)
    assert m["exposure"] == pytest.approx(0.5)
    assert m["return_pct"] == pytest.approx(0.0025)
    years = 4 / 365
    assert m["annualised_return"] == pytest.approx(1.0025 ** (1 / years) - 1)
    assert m["calmar"] == pytest.approx(m["annualised_return"] / abs(10_005 / 10_010 - 1))


def test_metrics_of_an_empty_run_are_defined():
    m = summarize(np.array([0], dtype=np.int64), np.array([100.0]), np.array([0.0]), 100.0, DAY, [], 0.0, 0.0)

    assert m["total_trades"] == 0 and m["return_pct"] == 0.0
    assert math.isnan(m["win_rate"]) and math.isnan(m["profit_factor"])
