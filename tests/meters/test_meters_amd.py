"""amdsmi meter through a fake amdsmi module: ticks x resolution, old key, resets, visibility."""

from __future__ import annotations

import sys

import pytest

from bench.meters.amd import AmdsmiEnergyMeter, visible_amd_index


def test_ticks_times_resolution_in_joules(fake_amdsmi):
    counts = [{"energy_accumulator": 1_000_000, "counter_resolution": 15.3, "timestamp": 1}]
    smi = fake_amdsmi(counts)
    meter = AmdsmiEnergyMeter(0)
    assert meter.available() and meter.method == "amdsmi_counter"
    assert "MI300X" in meter.device
    meter.begin()
    counts[0]["energy_accumulator"] += 2_000_000  # 2e6 ticks x 15.3 µJ = 30.6 J
    reading = meter.end()
    assert reading.joules == pytest.approx(30.6, rel=1e-12)
    meter.close()
    assert smi.calls["shut_down"] == 1


def test_old_power_key_and_reset(fake_amdsmi):
    counts = [{"power": 500, "counter_resolution": 15.259, "timestamp": 1}]
    fake_amdsmi(counts)
    meter = AmdsmiEnergyMeter(0)
    meter.begin()
    counts[0]["power"] = 100  # went backwards (ROCm/amdsmi #115)
    reading = meter.end()
    assert reading.joules is None and reading.reason == "counter reset"


def test_visibility_variables_map_to_physical_positions(fake_amdsmi, monkeypatch):
    counts = [{"energy_accumulator": 0, "counter_resolution": 1.0} for _ in range(4)]
    fake_amdsmi(counts)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "1,3")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")
    meter = AmdsmiEnergyMeter(0)  # HIP 0 -> ROCR position 1 -> physical 3
    meter.begin()
    counts[3]["energy_accumulator"] = 7_000_000
    counts[1]["energy_accumulator"] = 9_000_000
    assert meter.end().joules == pytest.approx(7.0)
    assert visible_amd_index(2, {"CUDA_VISIBLE_DEVICES": "0,2,5"}) == 5
    with pytest.raises(ValueError, match="non-integer"):
        visible_amd_index(0, {"HIP_VISIBLE_DEVICES": "GPU-abc"})


def test_missing_amdsmi_and_invisible_device_are_unavailable(fake_amdsmi, monkeypatch):
    fake_amdsmi([{"energy_accumulator": 0, "counter_resolution": 1.0}])
    assert "none at position 2" in AmdsmiEnergyMeter(2).unavailable_reason
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    meter = AmdsmiEnergyMeter(0)
    assert not meter.available() and "amdsmi is not installed" in meter.unavailable_reason
