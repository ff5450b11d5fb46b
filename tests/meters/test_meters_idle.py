"""Idle power and net energy."""

from __future__ import annotations

import pytest

from bench.meters.base import NullMeter
from bench.meters.idle import IDLE_DISABLED, IdleReading, measure_idle, merge_idle, net_energy
from tests.meters.replay import ReplayCounterMeter, ReplayPowerMeter


def stepping_clock(*times):
    it = iter(times)
    return lambda: next(it)


def test_measure_idle_gives_mean_power_per_scope():
    slept = []
    board = ReplayPowerMeter([0.0, 5.0, 10.0], [20.0, 20.0, 20.0], period_s=5.0, clock=stepping_clock(0.0, 10.0))
    counter = ReplayCounterMeter([0.0, 10.0], [0.0, 1250.0], clock=stepping_clock(0.0, 10.0))
    meters = {"fpga": board, "gpu": counter, "cpu": NullMeter("cpu", "RAPL unreadable")}
    idle = measure_idle(meters, 10.0, sleep=slept.append)
    assert slept == [10.0]
    assert idle["fpga"].watts == pytest.approx(20.0)
    assert idle["gpu"].watts == pytest.approx(125.0)
    assert idle["cpu"].watts is None and idle["cpu"].reason == "RAPL unreadable"


def test_idle_disabled_in_quick_mode_and_negative_rejected():
    idle = measure_idle({"gpu": NullMeter("gpu", "x")}, 0)
    assert idle["gpu"].watts is None and idle["gpu"].reason == IDLE_DISABLED
    with pytest.raises(ValueError):
        measure_idle({}, -1)


def test_merge_idle_mean_and_drift_warning():
    before, after = IdleReading(120.0, 30.0, "nvml_counter"), IdleReading(130.0, 30.0, "nvml_counter")
    merged = merge_idle(before, after)
    assert merged.watts == pytest.approx(125.0) and merged.seconds == 60.0 and not merged.warnings
    drifted = merge_idle(before, IdleReading(150.0, 30.0, "nvml_counter"))
    assert any("drifted" in w for w in drifted.warnings)
    one_side = merge_idle(IdleReading(None, 0.0, "nvml_counter", "disabled"), after)
    assert one_side.watts == 130.0 and any("only measured after" in w for w in one_side.warnings)


def test_net_energy():
    assert net_energy(500.0, 125.0, 2.0) == pytest.approx(250.0)
    assert net_energy(100.0, 125.0, 1.0) == pytest.approx(-25.0)  # not clamped
    assert net_energy(None, 125.0, 1.0) is None and net_energy(10.0, None, 1.0) is None
