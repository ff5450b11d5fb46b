"""Statistics against known values: t quantiles, summaries, MAD outliers, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.stats import (
    bootstrap_ratio,
    outlier_indices,
    regularized_beta,
    summarize,
    t_quantile,
    t_sf,
)

# Two-sided 95% critical values t(0.975, df), to 15 digits (mpmath root of the t CDF; the same as R's
# qt(0.975, df) and printed tables: 12.706, 4.303, 2.776, 2.262, 2.042, 1.962).
T975 = {
    1: 12.7062047361747,
    2: 4.30265272974946,
    4: 2.77644510519779,
    9: 2.26215716279820,
    30: 2.04227245630124,
    1000: 1.96233908082641,
}


@pytest.mark.parametrize(("df", "expected"), sorted(T975.items()))
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-9)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-9)


def test_t_quantile_other_levels_and_closed_forms():
    assert t_quantile(0.995, 4) == pytest.approx(4.60409487134999, abs=1e-9)
    assert t_quantile(0.9, 30) == pytest.approx(1.31041502539140, abs=1e-9)
    assert t_quantile(0.5, 7) == 0.0
    for p in (0.6, 0.8, 0.95, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)  # Cauchy
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_quantile(0.9, 0)


@pytest.mark.parametrize("t", [-7.3, -1.0, -0.2, 0.0, 0.45, 2.0, 31.0])
def test_t_tail_closed_forms(t):
    # Upper tail P(T > t) for df = 1 (Cauchy) and df = 2, both closed forms; negative t uses the symmetry.
    assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-13)
    assert t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), abs=1e-13)


def test_regularized_beta_known_values():
    assert regularized_beta(0.3, 1.0, 1.0) == pytest.approx(0.3)  # uniform
    assert regularized_beta(0.3, 2.0, 1.0) == pytest.approx(0.09)  # x^a for b = 1
    assert regularized_beta(0.7, 2.5, 4.0) == pytest.approx(1 - regularized_beta(0.3, 4.0, 2.5), abs=1e-14)


def test_summary_hand_computed():
    s = summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert s.n == 8 and s.mean == 5.0 and s.median == 4.5 and s.min == 2.0 and s.max == 9.0
    assert s.std == pytest.approx(math.sqrt(32 / 7))
    assert s.se == pytest.approx(math.sqrt(32 / 7) / math.sqrt(8))
    assert s.t_critical == pytest.approx(2.36462425159278, abs=1e-9)  # t(0.975, 7)
    assert s.ci_low == pytest.approx(5.0 - s.t_critical * s.se)
    assert s.ci_high == pytest.approx(5.0 + s.t_critical * s.se)
    assert s.cv == pytest.approx(s.std / 5.0) and s.stability == "unstable"  # CV 43%
    assert s.samples == (2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0)


def test_stability_thresholds():
    rng = np.random.default_rng(3)
    base = rng.normal(size=9)
    base = (base - base.mean()) / base.std(ddof=1)
    assert summarize(100 + 5 * base).stability == "ok"  # CV 5%
    assert summarize(100 + 15 * base).stability == "warn"  # CV 15%
    assert summarize(100 + 25 * base).stability == "unstable"  # CV 25%
    assert summarize(100 + 25 * base).cv == pytest.approx(0.25)


def test_single_sample_and_zero_mean():
    one = summarize([3.2])
    assert one.std is None and one.ci_low is None and one.t_critical is None
    assert one.stability == "unknown" and "one trial" in one.reason
    zero = summarize([-1.0, 1.0])
    assert zero.cv is None and zero.stability == "unknown" and "CV undefined" in zero.reason
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, math.nan])


def test_mad_outliers_flagged_and_kept():
    values = [10.1, 9.9, 10.0, 10.2, 9.8, 10.05, 14.0, 9.95]
    s = summarize(values)
    assert s.outlier_indices == (6,)
    assert s.n == len(values) and s.max == 14.0  # kept
    # MAD = 0 (most values equal): mean absolute deviation takes over.
    assert outlier_indices([5.0] * 7 + [5.0001] + [9.0]) == (8,)
    assert outlier_indices([5.0] * 9) == ()
    assert outlier_indices([1.0, 100.0]) == ()  # too few to judge


def test_bootstrap_interval_contains_true_ratio_and_is_seeded():
    rng = np.random.default_rng(2024)
    base = rng.normal(1.0, 0.05, size=23)
    hetero = base * 0.5 * rng.normal(1.0, 0.03, size=23)  # paired, true speedup 2
    est = bootstrap_ratio(base, hetero, seed=5)
    assert est.method == "bootstrap-paired" and est.n_resamples == 10000
    assert est.ci_low < 2.0 < est.ci_high and est.ci_high - est.ci_low < 0.1
    assert est.ratio == pytest.approx(base.mean() / hetero.mean())
    assert est.verdict == "higher"
    again = bootstrap_ratio(base, hetero, seed=5)
    assert (again.ci_low, again.ci_high) == (est.ci_low, est.ci_high)
    other = bootstrap_ratio(base, hetero, seed=6)
    assert (other.ci_low, other.ci_high) != (est.ci_low, est.ci_high)
    assert bootstrap_ratio(hetero, base).verdict == "lower"


def test_bootstrap_coverage_near_nominal():
    rng = np.random.default_rng(99)
    hits = 0
    for seed in range(150):
        num = rng.normal(3.0, 0.3, size=20)
        den = rng.normal(2.0, 0.2, size=20)
        est = bootstrap_ratio(num, den, paired=False, n_resamples=1000, seed=seed)
        hits += est.ci_low <= 1.5 <= est.ci_high
    assert 0.85 <= hits / 150 <= 0.99


def test_bootstrap_independent_no_difference_and_insufficient():
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 1, size=9), rng.normal(10, 1, size=11)
    est = bootstrap_ratio(a, b)  # unequal lengths: independent even when paired is asked
    assert est.method == "bootstrap-independent" and est.verdict == "no significant difference"
    one = bootstrap_ratio([2.0], [1.0, 1.1])
    assert one.ci_low is None and one.verdict == "insufficient trials" and one.ratio == pytest.approx(2 / 1.05)
    with pytest.raises(ValueError, match="positive denominators"):
        bootstrap_ratio([1.0, 2.0], [1.0, 0.0])
