"""Power sampling thread and the trapezoid arithmetic shared by every power-based meter."""

from __future__ import annotations

import itertools
import math
import random
import time

import pytest

from bench.meters.sampler import PowerSampler, integrate_trapezoid, power_reading


def test_trapezoid_is_exact_for_piecewise_linear_power():
    rng = random.Random(7)
    times = sorted(rng.uniform(0, 10) for _ in range(23))
    samples = [(t, 3.0 * t + 11.0) for t in times]
    rng.shuffle(samples)  # order must not matter
    t0, t1 = times[2] + 0.013, times[-3] - 0.071
    expected = 1.5 * (t1**2 - t0**2) + 11.0 * (t1 - t0)  # edges fall between samples: interpolated
    assert integrate_trapezoid(samples, t0, t1) == pytest.approx(expected, rel=1e-12)


def test_edges_outside_samples_hold_nearest_value():
    samples = [(1.0, 10.0), (2.0, 20.0)]
    # [0, 1]: held at 10 W; [1, 2]: trapezoid 15 W; [2, 3.5]: held at 20 W.
    assert integrate_trapezoid(samples, 0.0, 3.5) == pytest.approx(10 + 15 + 30)
    assert integrate_trapezoid([(5.0, 42.0)], 0.0, 2.5) == pytest.approx(105.0)  # one sample: constant
    assert integrate_trapezoid(samples, 1.5, 1.5) == 0.0


def test_trapezoid_rejects_bad_windows():
    with pytest.raises(ValueError, match="no power samples"):
        integrate_trapezoid([], 0.0, 1.0)
    with pytest.raises(ValueError, match="ends before"):
        integrate_trapezoid([(0.0, 1.0)], 2.0, 1.0)


def test_power_reading_counts_distinct_gaps_and_failures():
    # 0.1 s sampling of a sensor that refreshes every second: values repeat; one 0.5 s hole.
    times = [round(0.1 * i, 10) for i in range(31) if not 12 <= i <= 15]
    samples = [(t, 20.0 + math.floor(t)) for t in times]
    r = power_reading(
        samples,
        0.0,
        3.0,
        scope="fpga",
        method="xrt_sensor",
        period_s=0.1,
        failed_reads=4,
        first_error="RuntimeError: sensor busy",
    )
    assert r.samples == len(samples) and r.distinct_samples == 4  # 20, 21, 22, 23 W
    assert r.sample_gaps == 1 and r.max_sample_gap_s == pytest.approx(0.5)
    assert r.failed_reads == 4
    assert any("4 power read(s) failed (first: RuntimeError: sensor busy)" in w for w in r.warnings)
    assert any("sampling gap" in w for w in r.warnings)
    assert not any("distinct" in w for w in r.warnings)
    assert r.sample_period_s == pytest.approx(3.0 / (len(samples) - 1))
    assert r.mean_power_w == pytest.approx(r.joules / 3.0)
    assert r.trace[0] == (0.0, 20.0)


def test_power_reading_warns_on_few_distinct_and_handles_no_samples():
    r = power_reading(
        [(0.05, 18.0), (0.55, 18.0), (0.95, 19.0)], 0.0, 1.0, scope="fpga", method="xrt_sensor", period_s=0.5
    )
    assert r.distinct_samples == 2
    assert any("only 2 distinct power reading(s)" in w for w in r.warnings)
    empty = power_reading(
        [], 0.0, 1.0, scope="fpga", method="hwmon", period_s=0.1, failed_reads=10, first_error="OSError: gone"
    )
    assert empty.joules is None and "all 10 reads failed" in empty.reason


def test_power_reading_uses_neighbours_outside_the_window_for_edges():
    samples = [(0.0, 0.0), (10.0, 100.0)]  # linear ramp, no sample inside [4, 6]
    r = power_reading(samples, 4.0, 6.0, scope="gpu", method="power_integration", period_s=0.5)
    assert r.joules == pytest.approx(100.0)  # mean 50 W over 2 s
    assert r.sample_gaps == 1 and r.max_sample_gap_s == pytest.approx(2.0)


def test_sampler_survives_a_reader_that_raises_or_returns_none():
    calls = itertools.count()

    def flaky() -> float | None:
        i = next(calls)
        if i % 5 == 1:
            raise OSError("hwmon read failed")
        if i % 5 == 3:
            return None
        if i % 5 == 4:
            return float("nan")
        return 42.0

    sampler = PowerSampler(flaky, period_s=0.01)
    sampler.start()
    time.sleep(0.2)
    result = sampler.stop()
    total = len(result.samples) + result.failed_reads
    assert total >= 10
    assert result.failed_reads >= 3 * (total // 5) - 1
    assert result.first_error == "OSError: hwmon read failed"
    assert all(w == 42.0 for _, w in result.samples)
    assert not sampler.running and not result.stalled
    sampler.start()  # reusable after stop
    assert sampler.stop().samples


def test_sampler_keeps_its_period_without_drift():
    sampler = PowerSampler(lambda: 1.0, period_s=0.02)
    sampler.start()
    time.sleep(0.3)
    result = sampler.stop()
    times = [t for t, _ in result.samples[:-1]]  # the last sample is the synchronous one at stop()
    achieved = (times[-1] - times[0]) / (len(times) - 1)
    assert achieved == pytest.approx(0.02, rel=0.15)


def test_sampler_misuse_raises():
    sampler = PowerSampler(lambda: 1.0, period_s=0.05)
    with pytest.raises(RuntimeError, match="not running"):
        sampler.stop()
    sampler.start()
    with pytest.raises(RuntimeError, match="already running"):
        sampler.start()
    sampler.stop()
    with pytest.raises(ValueError, match="> 0"):
        PowerSampler(lambda: 1.0, period_s=0)
