"""The capital allocator: weights, caps, turnover and leverage bounds, no look-ahead in its walk-forward,
1/N and inverse volatility against their direct formulas, and the out-of-sample comparison scoring exactly
the days after the pool was chosen."""

from __future__ import annotations

import numpy as np
import pytest

from tradebus.factory import allocator as al


def returns(n_days=400, vols=(0.01, 0.02, 0.04, 0.01), means=(0.001, 0.0, -0.001, 0.0005), seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.normal(m, v, n_days) for m, v in zip(means, vols)])


def test_inverse_vol_and_equal_are_their_formulas():
    r = returns()
    sd = r.std(axis=0, ddof=1)
    assert al.target(r, "inverse_vol") == pytest.approx((1 / sd) / (1 / sd).sum())
    assert al.target(r, "equal") == pytest.approx(np.full(4, 0.25))
    w = al.target(r, "sharpe_vol")
    assert w.sum() == pytest.approx(1.0) and w[2] == 0.0  # a losing system gets nothing
    with pytest.raises(ValueError, match="markowitz"):
        al.target(r, "markowitz")


@pytest.mark.parametrize("method", al.METHODS)
def test_weights_respect_the_caps(method):
    r = returns()
    w = al.allocate(r, np.zeros(4), method, max_weight=0.3, max_turnover=0.2)
    assert (w >= 0).all() and (w <= 0.3 + 1e-12).all() and w.sum() <= 1 + 1e-12
    old = np.array([0.3, 0.3, 0.1, 0.3])
    moved = al.allocate(r, old, method, max_weight=0.3, max_turnover=0.2)
    assert np.abs(moved - old).sum() <= 0.2 + 1e-12
    assert (moved <= 0.3 + 1e-12).all()


def test_capping_gives_the_excess_to_the_others_and_keeps_cash_when_nobody_has_room():
    assert al.capped(np.array([0.7, 0.2, 0.1]), 0.5) == pytest.approx([0.5, 0.2 + 0.2 * 2 / 3, 0.1 + 0.2 / 3])
    assert al.capped(np.array([0.5, 0.5]), 0.3) == pytest.approx([0.3, 0.3])  # 40% stays cash
    w = al.within_leverage(np.array([0.5, 0.5]), np.array([3.0, 2.0]), 1.5)
    assert (w * [3.0, 2.0]).sum() == pytest.approx(1.5)
    assert al.within_leverage(np.array([0.2, 0.2]), np.array([1.0, 1.0]), 3.0) == pytest.approx([0.2, 0.2])


def test_walk_forward_reads_no_future_and_equals_the_direct_sum():
    r = returns()
    bt = al.walk_forward(r, "inverse_vol", 60, 7, 0.5, 0.5)
    changed = r.copy()
    changed[300:] = 0.5  # whatever comes after day 300
    bt2 = al.walk_forward(changed, "inverse_vol", 60, 7, 0.5, 0.5)
    assert np.array_equal(bt.returns[:300 - 60], bt2.returns[:300 - 60])
    # 1/N rebalanced every day without a turnover bound is the mean of the day's returns.
    daily = al.walk_forward(r, "equal", 30, 1, 1.0, 2.0)
    assert daily.returns == pytest.approx(r[30:].mean(axis=1))


def test_the_comparison_scores_the_out_of_sample_days_only():
    r = returns(n_days=500)
    res = al.compare(r, oos_from=350, lookback=60, every=7, max_weight=0.5, max_turnover=0.5)
    assert set(res) == set(al.METHODS)
    assert all(len(bt.returns) == 150 for bt in res.values())
    # On the out-of-sample days, the inverse-volatility book is calmer than 1/N when one system is 4x as volatile.
    assert res["inverse_vol"].returns.std() < res["equal"].returns.std()
    e = np.cumprod(1 + res["equal"].returns)
    assert res["equal"].max_drawdown == pytest.approx(np.max(1 - e / np.maximum.accumulate(e)))
