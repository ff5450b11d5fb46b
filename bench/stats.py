"""Statistics across trials: summaries with t-based confidence intervals, and ratio CIs.

Pure Python plus numpy (no scipy): Student's t distribution is computed here from the regularized
incomplete beta function. Raw samples are always kept; outliers are flagged, never dropped
(measurement.md §8).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Stability = Literal["ok", "warn", "unstable", "unknown"]
"""``warn``: CV > 10% ("consider more runs"); ``unstable``: CV > 20%; ``unknown``: fewer than 2 samples
or a zero mean, so CV is undefined (measurement.md §8)."""

CV_WARN = 0.10
CV_UNSTABLE = 0.20
OUTLIER_Z = 3.5
"""Modified z-score above which a sample is flagged (Iglewicz & Hoaglin 1993, the MAD rule hyperfine uses)."""

_MAD_SCALE = 0.6745  # standard normal 75th percentile: makes MAD comparable with a standard deviation
_MEAN_AD_SCALE = 1.253314  # sqrt(pi/2): the same for the mean absolute deviation, used when MAD is 0


@dataclass(frozen=True)
class Summary:
    """Summary of one metric across trials.

    Attributes:
        samples: The raw samples, in trial order (never filtered).
        n: Number of samples.
        mean: Arithmetic mean.
        median: Median.
        std: Sample standard deviation (n - 1); ``None`` when n = 1.
        cv: ``std / |mean|``; ``None`` when undefined.
        se: Standard error of the mean, ``std / sqrt(n)``.
        t_critical: Two-sided Student t quantile for ``confidence`` with n - 1 degrees of freedom.
        ci_low: Lower end of the t-based confidence interval of the mean.
        ci_high: Upper end.
        min: Smallest sample.
        max: Largest sample.
        outlier_indices: Indices of samples whose modified z-score exceeds 3.5 (kept, only flagged).
        stability: ``"ok"``, ``"warn"`` (CV > 10%), ``"unstable"`` (CV > 20%) or ``"unknown"``.
        confidence: Confidence level of the interval.
        reason: Why spread or interval are ``None`` or stability is unknown.
    """

    samples: tuple[float, ...]
    n: int
    mean: float
    median: float
    std: float | None
    cv: float | None
    se: float | None
    t_critical: float | None
    ci_low: float | None
    ci_high: float | None
    min: float
    max: float
    outlier_indices: tuple[int, ...]
    stability: Stability
    confidence: float = 0.95
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON-ready types."""
        data = asdict(self)
        data["samples"] = list(self.samples)
        data["outlier_indices"] = list(self.outlier_indices)
        return data


def outlier_indices(samples: Sequence[float], threshold: float = OUTLIER_Z) -> tuple[int, ...]:
    """Flag samples by modified z-score, ``|0.6745 (x - median) / MAD| > threshold``.

    When more than half the samples are equal MAD is 0; the mean absolute deviation takes its place
    (``z = (x - median) / (1.253314 MeanAD)``, the usual fallback). If both are 0 all samples are equal
    and none is an outlier.

    Args:
        samples: The values.
        threshold: Modified z-score limit (3.5 per Iglewicz & Hoaglin).

    Returns:
        Indices of the flagged samples, ascending.
    """
    if len(samples) < 3:
        return ()
    median = statistics.median(samples)
    deviations = [abs(x - median) for x in samples]
    mad = statistics.median(deviations)
    if mad > 0:
        scores = [_MAD_SCALE * d / mad for d in deviations]
    else:
        mean_ad = statistics.fmean(deviations)
        if mean_ad == 0:
            return ()
        scores = [d / (_MEAN_AD_SCALE * mean_ad) for d in deviations]
    return tuple(i for i, z in enumerate(scores) if z > threshold)


def summarize(samples: Sequence[float], confidence: float = 0.95) -> Summary:
    """Summarize one metric's per-trial values.

    Args:
        samples: One value per trial (e.g. seconds, joules), at least one, all finite.
        confidence: Two-sided confidence level of the interval of the mean.

    Returns:
        The summary; with one sample, spread and interval are ``None`` and ``reason`` says why.

    Raises:
        ValueError: No samples, a non-finite sample, or ``confidence`` outside (0, 1).
    """
    values = tuple(float(x) for x in samples)
    if not values:
        raise ValueError("cannot summarize zero samples")
    if not all(math.isfinite(x) for x in values):
        raise ValueError(f"samples must be finite numbers, got {values}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(values)
    mean = statistics.fmean(values)
    common = {
        "samples": values,
        "n": n,
        "mean": mean,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "outlier_indices": outlier_indices(values),
        "confidence": confidence,
    }
    if n == 1:
        reason = "one trial: no spread or confidence interval; run at least 2 trials (5 recommended)"
        return Summary(
            **common,
            std=None,
            cv=None,
            se=None,
            t_critical=None,
            ci_low=None,
            ci_high=None,
            stability="unknown",
            reason=reason,
        )
    std = statistics.stdev(values)
    se = std / math.sqrt(n)
    t_crit = t_quantile(0.5 + confidence / 2, n - 1)
    cv = std / abs(mean) if mean != 0 else None
    reason = None if cv is not None else "mean is 0: CV undefined"
    stability: Stability
    if cv is None:
        stability = "unknown"
    elif cv > CV_UNSTABLE:
        stability = "unstable"
    elif cv > CV_WARN:
        stability = "warn"
    else:
        stability = "ok"
    return Summary(
        **common,
        std=std,
        cv=cv,
        se=se,
        t_critical=t_crit,
        ci_low=mean - t_crit * se,
        ci_high=mean + t_crit * se,
        stability=stability,
        reason=reason,
    )


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, evaluated by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 100_000):
        # Even step, then odd step, of the fraction's terms (Abramowitz & Stegun 26.5.8).
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            return result
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def regularized_beta(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta function ``I_x(a, b)``.

    Args:
        x: Upper limit in [0, 1].
        a: First shape parameter (> 0).
        b: Second shape parameter (> 0).

    Returns:
        ``I_x(a, b)`` in [0, 1].
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast only below the mean of the beta distribution; use symmetry above it.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """Upper tail ``P(T > t)`` of Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return tail if t >= 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t distribution: the ``t`` with ``P(T <= t) = p``.

    Bisection on :func:`t_sf` to machine precision (absolute error well under 1e-9 for the usual
    ``p`` and ``df``); e.g. ``t_quantile(0.975, 4) = 2.7764451``.

    Args:
        p: Probability in (0, 1).
        df: Degrees of freedom (> 0).

    Returns:
        The quantile.

    Raises:
        ValueError: ``p`` outside (0, 1) or ``df <= 0``.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class RatioEstimate:
    """A ratio of means with a bootstrap confidence interval.

    Attributes:
        ratio: ``mean(numerator) / mean(denominator)``.
        ci_low: Lower percentile bound; ``None`` with fewer than 2 trials a side.
        ci_high: Upper percentile bound.
        method: ``"bootstrap-paired"`` or ``"bootstrap-independent"`` (percentile intervals).
        n_resamples: Bootstrap resamples drawn (0 when no interval was computed).
        verdict: ``"higher"`` (CI above 1), ``"lower"`` (CI below 1), ``"no significant difference"``, or
            ``"insufficient trials"``. Callers name it: a speedup ``baseline_time / hetero_time`` that is
            ``"higher"`` means faster.
        confidence: Confidence level of the interval.
        seed: Seed of the resampling.
    """

    ratio: float
    ci_low: float | None
    ci_high: float | None
    method: str
    n_resamples: int
    verdict: str
    confidence: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Return the estimate as plain JSON-ready types."""
        return asdict(self)


def bootstrap_ratio(
    numerator: Sequence[float],
    denominator: Sequence[float],
    paired: bool = True,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RatioEstimate:
    """Estimate ``mean(numerator) / mean(denominator)`` with a percentile bootstrap interval.

    Paired: trial ``i`` of both sides ran back to back (ABAB interleaving), so trial indices are resampled
    jointly and drift shared by a pair cancels. Independent (or when the lengths differ): each side's
    trials are resampled separately.

    Args:
        numerator: Per-trial values of the numerator configuration.
        denominator: Per-trial values of the denominator configuration; all must be > 0 (times, energies).
        paired: Resample trial indices jointly when both sides have the same length.
        n_resamples: Bootstrap resamples (>= 100).
        confidence: Two-sided confidence level.
        seed: Seed of numpy's generator: the same inputs and seed give the same interval.

    Returns:
        The ratio, its interval and a verdict against 1.

    Raises:
        ValueError: Empty sides, non-finite values, a denominator value <= 0, ``n_resamples < 100`` or
            ``confidence`` outside (0, 1).
    """
    num = np.asarray(numerator, dtype=float)
    den = np.asarray(denominator, dtype=float)
    if num.size == 0 or den.size == 0:
        raise ValueError("bootstrap_ratio needs at least one trial on each side")
    if not (np.isfinite(num).all() and np.isfinite(den).all()):
        raise ValueError("bootstrap_ratio needs finite values")
    if (den <= 0).any():
        raise ValueError("ratios need positive denominators (times, energies); got a value <= 0")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be >= 100, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    is_paired = paired and num.size == den.size
    method = "bootstrap-paired" if is_paired else "bootstrap-independent"
    ratio = float(num.mean() / den.mean())
    if num.size < 2 or den.size < 2:
        return RatioEstimate(ratio, None, None, method, 0, "insufficient trials", confidence, seed)
    rng = np.random.default_rng(seed)
    num_idx = rng.integers(0, num.size, size=(n_resamples, num.size))
    den_idx = num_idx if is_paired else rng.integers(0, den.size, size=(n_resamples, den.size))
    ratios = num[num_idx].mean(axis=1) / den[den_idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = (float(q) for q in np.quantile(ratios, [alpha / 2, 1 - alpha / 2]))
    verdict = "higher" if low > 1 else "lower" if high < 1 else "no significant difference"
    return RatioEstimate(ratio, low, high, method, n_resamples, verdict, confidence, seed)
