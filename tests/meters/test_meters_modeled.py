"""The modeled FPGA meter: static power over the window (and unwaited time), dynamic power while busy."""

from __future__ import annotations

import pytest

from bench.errors import UsageError
from bench.meters.modeled import ModeledPowerMeter


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
    assert r.joules == pytest.approx(17.5 * 2.5 + 42.0 * 0.75) and r.seconds == pytest.approx(2.5)
    assert r.provenance == "analytic" and r.method == "modeled" and r.scope == "fpga"
    assert "DS1000" in r.device and meter.describe()["source"] == "u55c spec (DS1000)"
    assert not r.warnings


def test_unwaited_time_extends_the_static_charge():
    # Analytic mode: 1 s of measured GPU window, 3 s of modeled FPGA time nobody waited for (2 s busy).
    meter = ModeledPowerMeter(static_w=20.0, dynamic_w=50.0, source="spec")
    meter._clock = stepping_clock(0.0, 1.0)
    meter.begin()
    meter.add_unwaited(3.0)
    meter.add_busy(2.0)
    r = meter.end()
    assert r.seconds == pytest.approx(4.0) and r.joules == pytest.approx(20.0 * 4.0 + 50.0 * 2.0)
    assert not r.warnings  # busy fits the composed 4 s
    meter._clock = stepping_clock(5.0, 6.0)
    meter.begin()  # a new window starts from zero
    assert meter.end().joules == pytest.approx(20.0)


def test_modeled_meter_flags_busy_beyond_window_and_bad_inputs():
    meter = ModeledPowerMeter(static_w=1.0, dynamic_w=1.0, source="spec")
    meter._clock = stepping_clock(0.0, 1.0)
    with pytest.raises(RuntimeError, match="outside a window"):
        meter.add_busy(0.1)
    with pytest.raises(RuntimeError, match="outside a window"):
        meter.add_unwaited(0.1)
    meter.begin()
    with pytest.raises(ValueError, match=">= 0"):
        meter.add_busy(-1.0)
    meter.add_busy(1.5)
    assert any("exceeds" in w for w in meter.end().warnings)
    with pytest.raises(UsageError, match="static_w"):
        ModeledPowerMeter(static_w=-3.0, dynamic_w=1.0, source="spec")
    with pytest.raises(UsageError, match="source"):
        ModeledPowerMeter(static_w=3.0, dynamic_w=1.0, source=" ")
