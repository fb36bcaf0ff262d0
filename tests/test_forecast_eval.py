"""Forecast scores and baselines (factory/forecast_eval.py) against independent references: hand-worked values,
closed forms, plain loops of the recursions, and simulated processes whose true parameters are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tradebus.factory import forecast_eval as fe

K = 4
H = 12


def _ns(stamp: str) -> int:
    return int(np.datetime64(stamp, "ns").astype(np.int64))


# ---------------------------------------------------------------------------------------------------------------
# Information coefficients


def test_ic_on_rows_with_nans_matches_numpy_corrcoef():
    rng = np.random.default_rng(1)
    pred, real = rng.normal(size=500), rng.normal(size=500)
    real += 0.3 * pred
    pred[::17], real[5::23] = np.nan, np.nan
    ok = np.isfinite(pred) & np.isfinite(real)

    assert fe.ic(pred, real) == pytest.approx(np.corrcoef(pred[ok], real[ok])[0, 1], abs=1e-12)


def test_rank_ic_matches_pearson_of_argsort_ranks():
    rng = np.random.default_rng(2)
    pred = rng.normal(size=400)
    real = np.exp(pred) + rng.normal(scale=0.5, size=400)  # monotone link: rank IC above Pearson
    pred[3], real[10] = np.nan, np.nan
    ok = np.isfinite(pred) & np.isfinite(real)
    ranks = [np.argsort(np.argsort(x[ok])).astype(float) for x in (pred, real)]

    assert fe.rank_ic(pred, real) == pytest.approx(np.corrcoef(*ranks)[0, 1], abs=1e-12)


def test_constant_or_too_few_predictions_give_nan_ic():
    real = np.arange(20.0)

    assert math.isnan(fe.ic(np.ones(20), real))
    assert math.isnan(fe.rank_ic(np.ones(20), real))
    assert math.isnan(fe.ic(np.array([1.0, np.nan]), np.array([2.0, 3.0])))


def test_monthly_ic_groups_by_utc_month_and_drops_thin_months():
    rng = np.random.default_rng(3)
    jan = np.linspace(_ns("2024-01-01T00:00"), _ns("2024-01-31T23:30"), 40).astype(np.int64)
    feb = np.linspace(_ns("2024-02-01T00:00"), _ns("2024-02-29T23:00"), 30).astype(np.int64)
    mar = np.linspace(_ns("2024-03-01T00:00"), _ns("2024-03-05T00:00"), 9).astype(np.int64)  # < 10 rows
    times = np.concatenate([jan, feb, mar])
    pred = rng.normal(size=len(times))
    real = pred * np.where(times < feb[0], 1.0, -1.0) + rng.normal(scale=0.5, size=len(times))
    pred[0] = np.nan  # January keeps 39 rows

    keys, ics, rank_ics = fe.monthly_ic(times, pred, real)

    assert keys.tolist() == [202401, 202402]
    assert ics[0] == pytest.approx(np.corrcoef(pred[1:40], real[1:40])[0, 1], abs=1e-12)
    assert ics[1] == pytest.approx(np.corrcoef(pred[40:70], real[40:70])[0, 1], abs=1e-12)
    assert rank_ics[0] > 0.5 and rank_ics[1] < -0.5


def test_icir_and_share_positive_match_hand_values():
    assert fe.icir(np.array([0.1, 0.3, np.nan])) == pytest.approx(0.2 / math.sqrt(0.02))
    assert math.isnan(fe.icir(np.array([0.1])))
    assert math.isnan(fe.icir(np.array([0.2, 0.2, 0.2])))
    assert fe.share_positive(np.array([0.1, -0.2, 0.3, np.nan, 0.0])) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------------------
# Variance scores


def test_qlike_of_a_perfect_forecast_is_zero():
    var = np.array([1e-4, 3e-4, 2e-5])

    assert fe.qlike(var, var) == pytest.approx(0.0, abs=1e-15)


def test_qlike_matches_a_hand_worked_example_and_skips_unusable_rows():
    real = np.array([1.0, 2.0, 4.0, 0.0, np.nan, 1.0])
    fc = np.array([1.0, 1.0, 2.0, 1.0, 1.0, -1.0])
    # ratios 1, 2, 2: losses 0, 1 - ln 2, 1 - ln 2; the zero, NaN and negative rows are left out.
    assert fe.qlike(real, fc) == pytest.approx(2 * (1 - math.log(2)) / 3, abs=1e-15)


def test_qlike_penalises_under_forecasts_more_than_over_forecasts():
    assert fe.qlike(np.array([2.0]), np.array([1.0])) > fe.qlike(np.array([1.0]), np.array([2.0]))


def test_rmse_matches_a_hand_value():
    assert fe.rmse(np.array([1.0, 2.0, np.nan, 4.0]), np.array([2.0, 0.0, 5.0, 4.0])) == pytest.approx(
        math.sqrt(5 / 3))


# ---------------------------------------------------------------------------------------------------------------
# Probability scores


def test_brier_matches_a_hand_computation_and_ignores_unlabelled_rows():
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])
    labels = np.array([0, 2, -1])
    row0 = 0.3 ** 2 + 3 * 0.1 ** 2
    row1 = 0.2 ** 2 + 0.5 ** 2 + 0.8 ** 2 + 0.1 ** 2

    assert fe.brier(probs, labels) == pytest.approx((row0 + row1) / 2)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.9, 1.0])
def test_brier_with_mass_split_between_truth_and_one_class_equals_closed_form(p):
    probs = np.array([[p, 1 - p, 0.0, 0.0], [0.0, 0.0, 1 - p, p]])
    labels = np.array([0, 3])

    assert fe.brier(probs, labels) == pytest.approx(2 * (1 - p) ** 2)


def test_brier_of_uniform_probs_is_one_minus_one_over_k_and_skill_follows():
    labels = np.array([0, 1, 2, 3, 3])
    uniform = np.full((5, K), 1 / K)
    model = fe.brier(np.eye(K)[labels] * 0.8 + 0.05, labels)  # 0.85 on the truth, 0.05 elsewhere

    assert fe.brier(uniform, labels) == pytest.approx(1 - 1 / K)
    assert model == pytest.approx(0.15 ** 2 + 3 * 0.05 ** 2)
    assert fe.brier_skill(model, fe.brier(uniform, labels)) == pytest.approx(1 - 0.03 / 0.75)
    assert math.isnan(fe.brier_skill(0.1, 0.0))


def test_log_loss_of_uniform_probs_is_log_k():
    labels = np.array([0, 1, 2, 3, 1, -1])

    assert fe.log_loss(np.full((6, K), 1 / K), labels) == pytest.approx(math.log(K))


def test_log_loss_clips_a_confident_miss_to_a_finite_cost():
    probs = np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.25, 0.25, 0.0]])
    eps = 1e-12
    # Row 0 after clipping and renormalising: eps / (1 + 3 eps) on the truth; row 1 is untouched but for eps.
    expected = (-math.log(eps / (1 + 3 * eps)) - math.log(0.25 / (1 + eps))) / 2

    assert fe.log_loss(probs, np.array([1, 1]), eps=eps) == pytest.approx(expected, rel=1e-9)


def test_calibration_error_of_a_calibrated_forecaster_is_small():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(K), size=200_000)
    labels = (rng.random(len(probs))[:, None] > probs.cumsum(axis=1)).sum(axis=1)  # drawn from probs

    assert fe.calibration_error(probs, labels) < 0.02


def test_calibration_error_of_a_confidently_wrong_forecaster_matches_hand_value():
    probs = np.tile([0.01, 0.97, 0.01, 0.01], (1000, 1))
    labels = np.zeros(1000, dtype=int)
    # class 0: |0.01 - 1|, class 1: |0.97 - 0|, classes 2 and 3: |0.01 - 0|; averaged over the classes.
    assert fe.calibration_error(probs, labels) == pytest.approx((0.99 + 0.97 + 0.01 + 0.01) / 4)


def test_calibration_error_weights_bins_by_their_rows():
    probs = np.array([[0.95, 0.05]] * 3 + [[0.15, 0.85]])
    labels = np.array([0, 0, 1, 1])
    # class 0: bin 9 holds 3 rows (pred .95, freq 2/3), bin 1 holds 1 (pred .15, freq 0);
    # class 1: bin 0 holds 3 rows (pred .05, freq 1/3), bin 8 holds 1 (pred .85, freq 1).
    c0 = 3 / 4 * abs(0.95 - 2 / 3) + 1 / 4 * 0.15
    c1 = 3 / 4 * abs(0.05 - 1 / 3) + 1 / 4 * 0.15

    assert fe.calibration_error(probs, labels) == pytest.approx((c0 + c1) / 2)


# ---------------------------------------------------------------------------------------------------------------
# Return and regime baselines


def test_momentum_equals_the_past_h_bar_return():
    close = 100 * np.exp(np.cumsum(np.random.default_rng(5).normal(scale=0.01, size=300)))
    expected = [math.nan] * H + [close[t] / close[t - H] - 1 for t in range(H, len(close))]

    np.testing.assert_allclose(fe.momentum(close, H), expected, rtol=1e-13)


def test_base_rate_is_laplace_smoothed_frequencies():
    np.testing.assert_allclose(fe.base_rate(np.array([0, 0, 1, -1]), k=4), np.array([3, 2, 1, 1]) / 7)


def test_markov_persistence_recovers_a_simulated_transition_matrix():
    truth = np.array([[0.80, 0.05, 0.10, 0.05],
                      [0.05, 0.75, 0.15, 0.05],
                      [0.20, 0.20, 0.55, 0.05],
                      [0.10, 0.30, 0.40, 0.20]])
    rng = np.random.default_rng(6)
    draws = rng.random(60_000)
    chain = np.empty(60_000, dtype=int)
    chain[0] = 2
    cum = truth.cumsum(axis=1)
    for t in range(1, len(chain)):
        chain[t] = int(np.searchsorted(cum[chain[t - 1]], draws[t], side="right"))
    prev, nxt = chain[:-1].copy(), chain[1:]
    prev[:50] = -1  # rows with no completed previous window carry no transition

    probs = fe.markov_persistence(prev, nxt, np.array([0, 1, 2, 3, -1]))

    np.testing.assert_allclose(probs[:4], truth, atol=0.02)
    np.testing.assert_allclose(probs[4], fe.base_rate(nxt))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Variance baselines


def test_ewma_matches_a_plain_loop_and_skips_nans():
    rng = np.random.default_rng(8)
    logret = rng.normal(scale=0.01, size=200)
    logret[[0, 7, 50, 51]] = np.nan
    valid = [i for i in range(200) if not math.isnan(logret[i])]
    expected = [math.nan] * 200
    sigma2 = sum(logret[i] ** 2 for i in valid[:30]) / 30
    for i in valid[30:]:
        sigma2 = 0.94 * sigma2 + 0.06 * logret[i] ** 2
        expected[i] = H * sigma2

    got = fe.ewma_variance(logret, H)

    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert np.isnan(got[:valid[30]]).all() and np.isfinite(got[valid[30]])


def _garch_path(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log returns (first NaN, as from closes) of a simulated GARCH(1,1) and the true conditional variance of
    the sum of the next H returns at each bar."""
    omega, alpha, beta = 0.03 * 2e-6, 0.07, 0.90
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    r, s = np.empty(n), np.empty(n + 1)
    s[0] = omega / (1 - alpha - beta)
    for t in range(n):
        r[t] = math.sqrt(s[t]) * z[t]
        s[t + 1] = omega + alpha * r[t] ** 2 + beta * s[t]
    # E_t[sigma2_{t+h}] = sbar + phi^(h-1) (sigma2_{t+1} - sbar), summed over h = 1..H.
    phi, sbar = alpha + beta, omega / (1 - alpha - beta)
    true_h = H * sbar + (s[1:] - sbar) * (1 - phi ** H) / (1 - phi)
    r[0] = np.nan
    return r, true_h


@pytest.fixture(scope="module")
def garch_case():
    logret, true_h = _garch_path(20_000, seed=9)
    train = np.zeros(len(logret), dtype=bool)
    train[:14_000] = True
    return logret, true_h, train, fe.garch_variance(logret, train, H)


def test_garch_on_a_simulated_garch_path_is_near_truth_and_beats_ewma(garch_case):
    logret, true_h, train, fc = garch_case
    test = ~train
    garch_loss = fe.qlike(true_h[test], fc[test])

    assert np.isfinite(fc[test]).all()
    assert garch_loss < 0.005
    assert garch_loss < fe.qlike(true_h[test], fe.ewma_variance(logret, H)[test]) / 5


def test_garch_forecast_at_t_ignores_later_returns_and_uses_return_t(garch_case):
    logret, _, train, fc = garch_case
    t = 16_000
    later = logret.copy()
    later[t + 1:] = np.random.default_rng(10).normal(scale=0.05, size=len(later) - t - 1)
    shocked = logret.copy()
    shocked[t] *= 8

    fc_later = fe.garch_variance(later, train, H)
    fc_shocked = fe.garch_variance(shocked, train, H)

    np.testing.assert_array_equal(fc_later[:t + 1], fc[:t + 1])
    assert not np.allclose(fc_later[t + 1:], fc[t + 1:])
    np.testing.assert_array_equal(fc_shocked[:t], fc[:t])
    assert fc_shocked[t] > 1.5 * fc[t]


def test_garch_warm_up_ends_when_the_recursion_seed_is_known(garch_case):
    logret, _, _, fc = garch_case
    # Bar 0 has no return, so the first 75 valid returns (arch's seed) sit at bars 1..75: bars 0..74 are NaN,
    # and the forecast at bar 75 is the first whose inputs are all known at its close.
    assert np.isnan(fc[:75]).all() and np.isfinite(fc[75:]).all()
    # Training on a late block leaves the fit blind to bars 76..9999; changing them must leave every forecast up
    # to bar 75 alone (no seed from later returns) and still give forecasts for the bars before the block.
    train_late = np.zeros(len(logret), dtype=bool)
    train_late[10_000:] = True
    bumped = logret.copy()
    bumped[76:10_000] *= 1.5

    base, moved = fe.garch_variance(logret, train_late, H), fe.garch_variance(bumped, train_late, H)

    assert np.isfinite(base[75:]).all()
    np.testing.assert_array_equal(base[:76], moved[:76])
    assert not np.allclose(base[76:10_000], moved[76:10_000])


def test_garch_rejects_a_training_mask_in_two_blocks():
    logret, _ = _garch_path(500, seed=11)
    mask = np.zeros(500, dtype=bool)
    mask[:100] = mask[200:300] = True

    with pytest.raises(ValueError, match="contiguous"):
        fe.garch_variance(logret, mask, H)


def _har_series(n: int, coef: tuple[float, float, float, float], noise: float, seed: int) -> np.ndarray:
    """Per-period realised variance generated by the log HAR equation itself (H = 1 period)."""
    b0, b1, b5, b22 = coef
    rng = np.random.default_rng(seed)
    log_rv = np.full(n, b0 / (1 - b1 - b5 - b22))
    rv = np.exp(log_rv)
    for t in range(22, n - 1):
        log_rv[t + 1] = (b0 + b1 * log_rv[t] + b5 * math.log(rv[t - 4:t + 1].mean())
                         + b22 * math.log(rv[t - 21:t + 1].mean()) + noise * rng.standard_normal())
        rv[t + 1] = math.exp(log_rv[t + 1])
    return rv


def test_har_recovers_the_coefficients_of_data_from_the_har_equation():
    coef, noise = (-0.9, 0.35, 0.30, 0.20), 0.5
    rv = _har_series(12_000, coef, noise, seed=12)[200:]  # the start-up rows are not from the equation
    n = len(rv)
    past_h = rv.copy()
    past_5h = np.array([rv[t - 4:t + 1].sum() if t >= 4 else np.nan for t in range(n)])
    past_22h = np.array([rv[t - 21:t + 1].sum() if t >= 21 else np.nan for t in range(n)])
    target = np.r_[rv[1:], np.nan]
    train = np.arange(n) < 8_000
    test = ~train & np.isfinite(past_22h)

    pred = fe.har_variance(past_h, past_5h, past_22h, target, train)

    # log(pred) is exactly linear in the log regressors: its slopes are the fitted coefficients and its
    # intercept the fitted one plus the log smearing factor, E[exp(e)] = exp(noise^2 / 2) for normal noise.
    design = np.column_stack([np.ones(test.sum()), np.log(past_h[test]), np.log(past_5h[test] / 5),
                              np.log(past_22h[test] / 22)])
    implied, *_ = np.linalg.lstsq(design, np.log(pred[test]), rcond=None)
    np.testing.assert_allclose(implied[1:], coef[1:], atol=0.05)
    assert implied[0] == pytest.approx(coef[0] + noise ** 2 / 2, abs=0.15)
    # The smearing makes the forecast unbiased in levels (without it the mean would be ~12% low).
    live = test & np.isfinite(target)
    assert np.mean(target[live]) / np.mean(pred[live]) == pytest.approx(1.0, abs=0.04)
    assert np.isnan(pred[:21]).all()


def test_har_forecasts_do_not_depend_on_targets_outside_training():
    rv = _har_series(3_000, (-0.9, 0.35, 0.30, 0.20), 0.5, seed=13)[100:]
    n = len(rv)
    past_5h = np.array([rv[max(0, t - 4):t + 1].sum() for t in range(n)])
    past_22h = np.array([rv[max(0, t - 21):t + 1].sum() for t in range(n)])
    target = np.r_[rv[1:], np.nan]
    train = np.arange(n) < 2_000
    scrambled = target.copy()
    scrambled[~train] = np.random.default_rng(14).permutation(scrambled[~train])

    np.testing.assert_array_equal(fe.har_variance(rv, past_5h, past_22h, target, train),
                                  fe.har_variance(rv, past_5h, past_22h, scrambled, train))
