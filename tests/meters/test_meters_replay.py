"""Replay meters: recorded counter and power traces through the live meters' arithmetic."""

from __future__ import annotations

import random

import pytest

from tests.meters.replay import ReplayCounterMeter, ReplayPowerMeter


def fake_clock(times):
    it = iter(times)
    return lambda: next(it)


def test_counter_replay_reads_like_hardware_with_quantized_updates():
    # A counter that updates every 0.1 s at a steady 250 W.
    times = [round(0.1 * i, 10) for i in range(51)]
    energy = [25.0 * i for i in range(51)]
    meter = ReplayCounterMeter(times, energy)
    long = meter.window(0.05, 3.05)  # reads the 0.0 and 3.0 s updates
    assert long.joules == pytest.approx(750.0) and not long.warnings
    short = meter.window(1.01, 1.09)  # no update inside: the counter reads the same value twice
    assert short.joules == 0.0
    assert any("did not change" in w for w in short.warnings)
    assert any("shorter than the 1 s" in w for w in short.warnings)
    outside = meter.window(4.0, 6.0)
    assert outside.joules is None and "outside the recorded trace" in outside.reason


def test_counter_replay_reset_and_begin_end_on_a_clock():
    sync_calls = []
    meter = ReplayCounterMeter([0.0, 1.0, 2.0, 3.0], [100.0, 200.0, 5.0, 50.0], clock=fake_clock([0.5, 1.5, 1.5, 3.0]))
    meter.sync = lambda: sync_calls.append(1)  # type: ignore[method-assign]
    meter.begin()
    assert meter.end().joules == pytest.approx(100.0)
    meter.begin()
    reset = meter.end()
    assert reset.joules is None and reset.reason == "counter reset"
    assert len(sync_calls) == 4


def test_power_replay_matches_analytic_energy_and_counts_failed_reads():
    rng = random.Random(11)
    times = [0.1 * i for i in range(101)]
    watts = [None if rng.random() < 0.05 else 30.0 + 10.0 * (i % 2) for i in range(101)]
    watts[0] = watts[-1] = 30.0
    meter = ReplayPowerMeter(times, watts, period_s=0.1, method="hwmon")
    r = meter.window(0.0, 10.0)
    assert r.method == "hwmon" and r.provenance == "measured"
    assert r.failed_reads == sum(w is None for w in watts)
    assert r.joules == pytest.approx(350.0, rel=0.03)  # alternating 30/40 W averages 35 W


def test_power_replay_on_a_clock_and_gap_detection():
    times = [0.0, 0.1, 0.2, 0.9, 1.0]
    meter = ReplayPowerMeter(times, [10.0, 10.0, 10.0, 10.0, 10.0], period_s=0.1, clock=fake_clock([0.0, 1.0]))
    meter.begin()
    r = meter.end()
    assert r.joules == pytest.approx(10.0)
    assert r.sample_gaps == 1 and r.max_sample_gap_s == pytest.approx(0.7)


def test_replay_rejects_malformed_traces():
    with pytest.raises(ValueError, match="at least one"):
        ReplayCounterMeter([], [])
    with pytest.raises(ValueError, match="non-decreasing"):
        ReplayCounterMeter([0.0, 2.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="3 times but 2"):
        ReplayPowerMeter([0.0, 1.0, 2.0], [1.0, 2.0], period_s=1.0)
