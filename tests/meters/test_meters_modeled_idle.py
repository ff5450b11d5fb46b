"""Modeled power (static + dynamic) and idle power / net energy."""

from __future__ import annotations

import pytest

from bench.errors import UsageError
from bench.meters.base import NullMeter
from bench.meters.idle import IDLE_DISABLED, IdleReading, measure_idle, merge_idle, net_energy
from bench.meters.modeled import ModeledPowerMeter
from bench.meters.replay import ReplayCounterMeter


def stepping_clock(*times):
    it = iter(times)
    return lambda: next(it)


def test_modeled_energy_is_static_times_window_plus_dynamic_times_busy():
    meter = ModeledPowerMeter(static_w=17.5, dynamic_w=42.0, source="u55c spec (DS1000)")
    meter._clock = stepping_clock(10.0, 12.5)  # 2.5 s window
    meter.begin()
    meter.add_busy(0.4)
    meter.add_busy(0.35)
    r = meter.end()
    assert r.joules == pytest.approx(17.5 * 2.5 + 42.0 * 0.75)
    assert r.provenance == "analytic" and r.method == "modeled" and r.scope == "fpga"
    assert "DS1000" in r.device and meter.describe()["source"] == "u55c spec (DS1000)"
    assert not r.warnings


def test_modeled_meter_flags_busy_beyond_window_and_bad_inputs():
    meter = ModeledPowerMeter(static_w=1.0, dynamic_w=1.0, source="spec")
    meter._clock = stepping_clock(0.0, 1.0)
    with pytest.raises(RuntimeError, match="outside a window"):
        meter.add_busy(0.1)
    meter.begin()
    with pytest.raises(ValueError, match=">= 0"):
        meter.add_busy(-1.0)
    meter.add_busy(1.5)
    assert any("exceeds" in w for w in meter.end().warnings)
    with pytest.raises(UsageError, match="static_w"):
        ModeledPowerMeter(static_w=-3.0, dynamic_w=1.0, source="spec")
    with pytest.raises(UsageError, match="source"):
        ModeledPowerMeter(static_w=3.0, dynamic_w=1.0, source=" ")


def test_measure_idle_gives_mean_power_per_scope():
    slept = []
    model = ModeledPowerMeter(static_w=20.0, dynamic_w=50.0, source="spec")
    counter = ReplayCounterMeter([0.0, 10.0], [0.0, 1250.0], clock=stepping_clock(0.0, 10.0))
    meters = {"fpga": model, "gpu": counter, "cpu": NullMeter("cpu", "RAPL unreadable")}
    idle = measure_idle(meters, 10.0, sleep=slept.append)
    assert slept == [10.0]
    assert idle["fpga"].watts == pytest.approx(20.0) and idle["fpga"].provenance == "analytic"
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
