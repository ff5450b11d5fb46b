"""FPGA board power: XRT/hwmon readers, integration, slow-sensor and failing-reader handling."""

from __future__ import annotations

import itertools
import time

import pytest

from bench.errors import DeviceUnavailableError
from bench.meters.fpga_power import XrtPowerMeter, hwmon_power_reader


def test_hwmon_reader_converts_microwatts(tmp_path):
    hwmon = tmp_path / "0000:3b:00.1" / "hwmon" / "hwmon4"
    hwmon.mkdir(parents=True)
    (hwmon / "power1_input").write_text("18250000\n")
    read = hwmon_power_reader("0000:3b:00.1", root=tmp_path)
    assert read() == pytest.approx(18.25)
    (hwmon / "power1_input").write_text("21000001\n")
    assert read() == pytest.approx(21.000001)


def test_hwmon_reader_absent_is_a_clear_error(tmp_path):
    (tmp_path / "0000:3b:00.0").mkdir()
    with pytest.raises(DeviceUnavailableError, match=r"ends in \.1"):
        hwmon_power_reader("0000:3b:00.0", root=tmp_path)


def test_xrt_meter_integrates_constant_power_and_syncs():
    syncs = []
    meter = XrtPowerMeter(lambda: 19.5, period_s=0.02, sync=lambda: syncs.append(time.perf_counter()))
    meter.begin()
    time.sleep(0.15)
    r = meter.end()
    assert r.method == "xrt_sensor" and r.scope == "fpga" and r.provenance == "measured"
    assert r.joules == pytest.approx(19.5 * r.seconds, rel=1e-9)
    assert len(syncs) == 2
    assert r.distinct_samples == 1 and any("distinct" in w for w in r.warnings)  # a flat sensor warns
    assert meter.describe()["period_s"] == 0.02


def test_slow_sensor_repeats_values_and_is_flagged():
    # A sensor that refreshes every 0.1 s, polled every 0.01 s: values repeat.
    start = time.perf_counter()
    meter = XrtPowerMeter(lambda: 15.0 + int((time.perf_counter() - start) / 0.1), period_s=0.01, source="hwmon")
    meter.begin()
    time.sleep(0.15)
    r = meter.end()
    assert r.method == "hwmon"
    assert r.samples >= 8 and r.distinct_samples <= 3 < r.samples
    assert any("sensor refreshes slower" in w for w in r.warnings)


def test_reader_raising_is_counted_and_window_still_measured():
    calls = itertools.count()

    def sometimes_broken() -> float:
        if next(calls) % 2:
            raise RuntimeError("xrt: electrical info unavailable")
        return 20.0

    meter = XrtPowerMeter(sometimes_broken, period_s=0.01)
    meter.begin()
    time.sleep(0.1)
    r = meter.end()
    assert r.failed_reads >= 3
    assert r.joules == pytest.approx(20.0 * r.seconds, rel=1e-9)
    assert any("RuntimeError: xrt: electrical info unavailable" in w for w in r.warnings)


def test_reader_always_failing_gives_null_reading():
    def dead() -> float:
        raise OSError("no such device")

    meter = XrtPowerMeter(dead, period_s=0.01)
    meter.begin()
    time.sleep(0.03)
    r = meter.end()
    assert r.joules is None and "reads failed" in r.reason and "OSError" in r.reason
    meter.begin()  # reusable after a failed window
    meter.close()
